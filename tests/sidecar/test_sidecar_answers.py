"""What the sidecar answers and says at the edges of a run (docs/sidecar.md): should-stop
before the trainer's hello, a step once profiling is over, and a limit the GPU refuses in
the middle of a run. The Sidecar in this process, on a simulated GPU."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from sidecar_support import Node, call, make_node, served

from kwatt_core import simgpu
from kwatt_sidecar import config as configlib
from kwatt_sidecar.app import Sidecar, main
from kwatt_sidecar.gpu.simulated import SimulatedBackend

pytestmark = pytest.mark.timeout(30)


def sidecar_on(node_dir: Path, tmp: Path, **env: str) -> Sidecar:
    cfg = configlib.load(
        {
            "KWATT_TERMINATION_PATH": str(tmp / "term"),
            "KWATT_STATE_DIR": str(tmp / "state"),
            **env,
        }
    )
    return Sidecar(cfg, SimulatedBackend(node_dir, "all"))


def tick(node: Node) -> None:
    """One training step on the simulated GPU: a second and 200 J."""
    dev = node.device()
    node.patch(dev.uuid, clock_s=dev.clock_s + 1.0, energy_mj=dev.energy_mj + 200_000)


def lines_at(level: int) -> Iterator[list[str]]:
    """The sidecar's log lines at `level`, whatever an earlier in-process main() did to its
    logger."""
    seen: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno == level:
                seen.append(record.getMessage())

    handler = Keep()
    logger = logging.getLogger("kwatt.sidecar")
    logger.addHandler(handler)
    yield seen
    logger.removeHandler(handler)


@pytest.fixture
def warnings() -> Iterator[list[str]]:
    yield from lines_at(logging.WARNING)


@pytest.fixture
def errors() -> Iterator[list[str]]:
    yield from lines_at(logging.ERROR)


def test_before_the_hello_there_is_no_advice_to_stop(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = sidecar_on(node.gpu_dir, tmp_path)
    assert sc.should_stop() == {"stop": False, "reason": ""}


def test_a_step_after_profiling_says_profiling_is_over(tmp_path: Path) -> None:
    """`{"profiling": false}` tells the trainer to stop reporting steps."""
    node = make_node(tmp_path)
    fixed = sidecar_on(node.gpu_dir, tmp_path, KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="150")
    assert fixed.hello(node.uuids, None)["profiling"] is False
    assert fixed.step() == {"profiling": False}
    fixed.finish()
    other = make_node(tmp_path / "other")
    sc = sidecar_on(
        other.gpu_dir, tmp_path / "other", KWATT_WARMUP_STEPS="0", KWATT_MEASURE_STEPS="1"
    )
    assert sc.hello(other.uuids, None)["profiling"] is True
    answers = []
    for _ in range(30):
        tick(other)
        answers.append(sc.step())
    assert answers[0] == {"profiling": True}
    assert answers[-1] == {"profiling": False}  # a few limits, one step each: done by now
    assert sc.state is not None and sc.state.prof is not None
    assert len(sc.state.prof.measurements) > 1
    sc.finish()


def test_a_limit_the_gpu_refuses_mid_run_is_a_warning_and_a_note(
    tmp_path: Path, warnings: list[str]
) -> None:
    """The run goes on at whatever limit the GPU has; the log and the report say which
    limit could not be set and why."""
    node = make_node(tmp_path)
    sc = sidecar_on(node.gpu_dir, tmp_path, KWATT_WARMUP_STEPS="0", KWATT_MEASURE_STEPS="1")
    sc.hello(node.uuids, None)
    node.patch(node.uuids[0], allow_set=False)
    for _ in range(3):
        tick(node)
        sc.step()
    failed = [w for w in warnings if w.startswith("Setting ")]
    assert failed, warnings
    assert all(" W failed: " in w and "not permitted" in w for w in failed)
    report = sc.finish()
    assert failed[0] in report.note


def test_a_gpu_error_during_a_call_is_a_500_and_the_server_goes_on(
    tmp_path: Path, errors: list[str]
) -> None:
    """docs/sidecar.md: a GPU error while handling a call is a 500 (the client retries once,
    then goes quiet); it never stops the server. The ERROR line names the call."""
    node = make_node(tmp_path)
    with served(node, tmp_path) as sc:
        hello = json.dumps({"gpu_uuids": node.uuids}).encode()
        assert call(sc.port, "POST", "/v1/begin", hello)[0] == 200
        simgpu.path_of(node.gpu_dir, node.uuids[0]).unlink()  # the GPU is gone
        status, _, reply = call(sc.port, "POST", "/v1/epoch", b'{"metric": 0.5}')
        assert status == 500 and "/v1/epoch" in reply["error"]
        assert reply["error"][:1].isupper()
        assert call(sc.port, "GET", "/v1/should-stop")[0] == 200
    (line,) = errors
    assert line.startswith("Handling /v1/epoch failed: ")


def test_the_end_of_a_run_answers_its_result(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with served(node, tmp_path) as sc:
        hello = json.dumps({"gpu_uuids": node.uuids}).encode()
        assert call(sc.port, "POST", "/v1/begin", hello)[0] == 200
        status, _, reply = call(sc.port, "POST", "/v1/end", b'{"failed": true}')
        assert (status, reply) == (200, {"result": "failed"})


def test_an_epochs_answer_says_stop_reason_and_profiling(tmp_path: Path) -> None:
    """POST /v1/epoch answers `{"stop", "reason", "profiling"}` (docs/sidecar.md)."""
    node = make_node(tmp_path)
    sc = sidecar_on(node.gpu_dir, tmp_path, KWATT_MAX_EPOCHS="2")
    sc.hello(node.uuids, None)
    tick(node)
    assert sc.epoch(0.1) == {"stop": False, "reason": "", "profiling": True}
    tick(node)
    answer = sc.epoch(0.2)
    assert answer["stop"] is True and answer["reason"] == "max epochs"
    assert set(answer) == {"stop", "reason", "profiling"}
    sc.finish()


def test_a_trainer_with_another_batch_size_gets_a_warning(
    tmp_path: Path, warnings: list[str]
) -> None:
    node = make_node(tmp_path)
    sc = sidecar_on(node.gpu_dir, tmp_path, KWATT_BATCH_SIZE="1024")
    sc.hello(node.uuids, None, batch_size=64)
    (line,) = warnings
    assert "batch size 64" in line and "1024" in line and "KWATT_BATCH_SIZE" in line
    assert line in sc.finish().note


def test_a_hello_without_gpus_says_how_to_name_them(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = sidecar_on(node.gpu_dir, tmp_path)
    sc.hello([], None)
    note = sc.finish().note
    assert "no GPU UUIDs" in note and "Kwatt(gpu_uuids=...)" in note


def test_every_gpu_the_sidecar_cannot_see_is_named(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = sidecar_on(node.gpu_dir, tmp_path)
    sc.hello(["GPU-x", "GPU-y"], None)
    note = sc.finish().note
    assert "GPU(s) GPU-x, GPU-y;" in note and "NVIDIA_VISIBLE_DEVICES=all" in note


def test_a_last_reading_that_fails_is_in_the_report(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = sidecar_on(node.gpu_dir, tmp_path)
    sc.hello(node.uuids, None)
    simgpu.path_of(node.gpu_dir, node.uuids[0]).unlink()  # the GPU is gone
    report = sc.finish()
    assert report.result == "interrupted" and "The last GPU reading failed: " in report.note


def test_a_report_that_cannot_be_written_at_start_names_the_path(
    tmp_path: Path, errors: list[str]
) -> None:
    """A sidecar that cannot start still says so (exit 2, one ERROR), and when its report
    cannot be written either, an ERROR names where it tried."""
    where = tmp_path / "missing" / "termination"
    assert main({"KWATT_POWER_MODE": "turbo", "KWATT_TERMINATION_PATH": str(where)}) == 2
    assert any(line.startswith("The sidecar cannot start: KWATT_POWER_MODE=") for line in errors)
    (failed,) = [line for line in errors if "cannot be written" in line]
    assert str(where) in failed and "No such file or directory" in failed
