"""Restore records under bad input, observe mode and failed restores (issue 9).

The state directory is a node folder shared by every sidecar that ever ran there, so its
records are input: a corrupt one must neither be honoured nor break a later hello, and an
observe-mode sidecar must leave every limit (and record) as it found them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from sidecar_support import Lines, Node, make_node, request, sample, start_sidecar

from kwatt_client import Kwatt
from kwatt_sidecar import config as configlib
from kwatt_sidecar.app import Sidecar
from kwatt_sidecar.gpu.simulated import SimulatedBackend
from kwatt_sidecar.limits import PowerControl

pytestmark = pytest.mark.timeout(60)


class SpyBackend(SimulatedBackend):
    """The simulated GPU, remembering every limit the sidecar tried to set."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "all")
        self.sets: list[tuple[str, float]] = []

    def set_limit_w(self, uuid: str, watts: float) -> None:
        self.sets.append((uuid, watts))
        super().set_limit_w(uuid, watts)


def write_record(node: Node, text: str, uuid: str | None = None) -> Path:
    uuid = uuid or node.uuids[0]
    node.state_dir.mkdir(parents=True, exist_ok=True)
    path = node.state_dir / f"{uuid}.json"
    path.write_text(text, encoding="utf-8")
    return path


def record_text(value: object, uuid: str, key: str = "restore_limit_w") -> str:
    """A record as this sidecar writes it, or with `key="default_limit_w"` as older ones did."""
    return json.dumps({"uuid": uuid, key: value, "owner": "ns0/dead-pod"})


def control(node: Node, observe: bool = False) -> tuple[PowerControl, SpyBackend]:
    backend = SpyBackend(node.gpu_dir)
    devices = [backend.device(u) for u in node.uuids]
    return PowerControl(backend, devices, node.state_dir, "ns1/pod", observe=observe), backend


def sidecar(node: Node, tmp: Path, **env: str) -> Sidecar:
    cfg = configlib.load(
        {
            "KWATT_TERMINATION_PATH": str(tmp / "term"),
            "KWATT_STATE_DIR": str(node.state_dir),
            **env,
        }
    )
    return Sidecar(cfg, SimulatedBackend(node.gpu_dir, "all"))


CORRUPT = [
    '"NaN"',
    '"Infinity"',
    "NaN",  # JSON extensions Python's json accepts
    "Infinity",
    "-Infinity",
    "1e400",  # a JSON number that overflows to inf
    '"abc"',
    '"200"',  # a number in a string is not a number
    "null",
    "true",
    "[200]",
    "-5",
    "0",
    "99.9",  # below the V100's 100 W minimum
    "250.5",  # above its 250 W maximum
]


@pytest.mark.parametrize("key", ["restore_limit_w", "default_limit_w"])
@pytest.mark.parametrize("value", CORRUPT)
def test_corrupt_record_is_removed_and_nvml_default_restored(
    tmp_path: Path, lines: Lines, value: str, key: str
) -> None:
    node = make_node(tmp_path)
    uuid = node.uuids[0]
    node.patch(uuid, limit_w=120.0)  # the lowered limit a killed predecessor left
    path = write_record(node, f'{{"uuid": "{uuid}", "{key}": {value}, "owner": "ns0/dead"}}')
    pc, backend = control(node)
    said = pc.restore_leftovers()
    assert node.device().limit_w == 250.0  # NVML's own default, not the record's value
    assert backend.sets == [(uuid, 250.0)]
    assert not path.exists()
    warnings = lines.at(logging.WARNING)
    assert len(warnings) == 1 and uuid in warnings[0] and "corrupt" in warnings[0]
    assert pc.restore_failures == 0 and len(said) == 1
    assert pc.restore_leftovers() == []  # nothing left to restore the second time


@pytest.mark.parametrize(
    "text", ["{not json", "[1, 2]", '"a string"', "", "[" * 100_000, '{"default_limit_w": 200}x']
)
def test_unreadable_record_is_removed_and_nvml_default_restored(
    tmp_path: Path, lines: Lines, text: str
) -> None:
    node = make_node(tmp_path)
    node.patch(node.uuids[0], limit_w=120.0)
    path = write_record(node, text)
    pc, _ = control(node)
    pc.restore_leftovers()
    assert node.device().limit_w == 250.0 and not path.exists()
    assert node.uuids[0] in lines.at(logging.WARNING)[0]


def test_record_for_another_gpu_is_not_honoured(tmp_path: Path, lines: Lines) -> None:
    node = make_node(tmp_path)
    node.patch(node.uuids[0], limit_w=120.0)
    path = write_record(node, record_text(200, "GPU-someone-else"))
    pc, _ = control(node)
    pc.restore_leftovers()
    assert node.device().limit_w == 250.0 and not path.exists()
    assert "another GPU" in lines.at(logging.WARNING)[0]


def test_record_that_names_no_gpu_is_not_honoured(tmp_path: Path, lines: Lines) -> None:
    """docs/sidecar.md: a record must be a JSON object naming its GPU; one that names none is
    corrupt (removed, NVML's default restored), whatever file it is in."""
    node = make_node(tmp_path)
    node.patch(node.uuids[0], limit_w=120.0)
    path = write_record(node, json.dumps({"restore_limit_w": 200, "owner": "ns0/dead-pod"}))
    pc, _ = control(node)
    pc.restore_leftovers()
    assert node.device().limit_w == 250.0 and not path.exists()
    assert "names no GPU" in lines.at(logging.WARNING)[0]


def test_valid_record_is_honoured_once_then_removed(tmp_path: Path, lines: Lines) -> None:
    node = make_node(tmp_path)
    uuid = node.uuids[0]
    node.patch(uuid, limit_w=120.0)
    path = write_record(node, record_text(200, uuid))  # in range, though not NVML's default
    pc, _ = control(node)
    said = pc.restore_leftovers()
    assert node.device().limit_w == 200.0 and not path.exists()
    assert said == [
        f"Restored the limit 200 W on GPU {uuid}, which an earlier run (ns0/dead-pod) had "
        "changed and not put back."
    ]
    assert not lines.at(logging.WARNING)
    node.patch(uuid, limit_w=130.0)  # someone else's limit since: not ours to touch again
    assert pc.restore_leftovers() == []
    assert node.device().limit_w == 130.0


def test_corrupt_record_no_longer_breaks_begin(tmp_path: Path) -> None:
    """The issue's case as processes: a "NaN" record made every /v1/begin answer 500."""
    node = make_node(tmp_path)
    uuid = node.uuids[0]
    node.patch(uuid, limit_w=120.0)
    path = write_record(node, record_text("NaN", uuid))
    sc = start_sidecar(node, KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="150")
    code, reply = request(sc, "POST", "/v1/begin", json.dumps({"gpu_uuids": [uuid]}).encode())
    assert code == 200, reply
    assert node.device().limit_w == 150.0  # restored to 250 W, then the run's own limit
    assert json.loads(path.read_text())["restore_limit_w"] == 250.0  # this sidecar's record
    request(sc, "POST", "/v1/end", b"{}", {"Content-Type": "application/json"})
    assert sc.stop() == 0
    assert node.device().limit_w == 250.0 and not path.exists()
    warning = [line for line in sc.log().splitlines() if '"WARNING"' in line]
    assert len(warning) == 1 and uuid in warning[0] and "corrupt" in warning[0]


def test_observe_never_changes_a_limit_even_from_a_record(tmp_path: Path) -> None:
    """The issue's case: a 100 W record on a 250 W GPU set it to 100 W in observe mode."""
    node = make_node(tmp_path)
    uuid = node.uuids[0]
    path = write_record(node, record_text(100, uuid))
    sc = start_sidecar(node, KWATT_POWER_MODE="observe")
    kw = Kwatt(port=sc.port, gpu_uuids=node.uuids)
    assert node.device().limit_w == 250.0
    kw.epoch_end(0.1)
    kw.end()
    assert sc.stop() == 0
    assert node.device().limit_w == 250.0
    assert path.exists()  # left for a sidecar that may change limits
    log = sc.log()
    assert "Restored" not in log and "Restored" not in sc.report()["note"]
    assert uuid in log and "observe mode changes no limit" in log


def test_observe_leaves_a_lowered_limit_for_the_next_limiting_sidecar(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    uuid = node.uuids[0]
    node.patch(uuid, limit_w=150.0)
    path = write_record(node, record_text(250, uuid))
    backend = SpyBackend(node.gpu_dir)
    sc = sidecar(node, tmp_path, KWATT_POWER_MODE="observe")
    sc.backend = backend
    sc.hello(node.uuids, None)
    sc.finish()
    assert backend.sets == [] and node.device().limit_w == 150.0 and path.exists()
    # A sidecar that may change limits then honours the record.
    pc, _ = control(node)
    pc.restore_leftovers()
    assert node.device().limit_w == 250.0 and not path.exists()


def test_observe_control_refuses_every_change(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    write_record(node, record_text("NaN", node.uuids[0]))
    pc, backend = control(node, observe=True)
    pc.restore_leftovers()
    assert pc.can_limit() != ""
    with pytest.raises(Exception, match="Observe"):
        pc.apply(150)
    assert pc.restore() == []
    assert backend.sets == []
    assert (node.state_dir / f"{node.uuids[0]}.json").exists()


def test_observe_run_does_not_claim_a_restore(tmp_path: Path, lines: Lines) -> None:
    node = make_node(tmp_path)
    sc = sidecar(node, tmp_path, KWATT_POWER_MODE="observe")
    sc.hello(node.uuids, None)
    sc.finish()
    assert "Restored" not in lines.text()


def test_failed_leftover_restore_is_a_warning_and_a_metric(tmp_path: Path, lines: Lines) -> None:
    node = make_node(tmp_path)
    uuid = node.uuids[0]
    node.patch(uuid, limit_w=120.0, allow_set=False)
    path = write_record(node, record_text(250, uuid))
    sc = sidecar(node, tmp_path, KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="150")
    failures = "kwatt_sidecar_restore_failures_total"
    assert sample(sc.metrics()[0], failures, namespace="", pod="", UUID=uuid) is None  # no hello
    sc.hello(node.uuids, None)  # answers; the run is observed only
    assert any(uuid in w and "could not be restored" in w for w in lines.at(logging.WARNING))
    text = sc.metrics()[0].decode()
    assert "# TYPE kwatt_sidecar_restore_failures_total counter" in text
    assert sample(text, failures, namespace="", pod="", UUID=uuid) == 1
    assert path.exists()  # a later sidecar with the privilege tries again
    assert "could not be restored" in sc.finish().note


def test_failed_restore_of_a_corrupt_record_leaves_a_valid_one(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    uuid = node.uuids[0]
    node.patch(uuid, limit_w=120.0, allow_set=False)
    path = write_record(node, record_text("Infinity", uuid))
    pc, _ = control(node)
    pc.restore_leftovers()
    assert pc.restore_failures == 1
    assert json.loads(path.read_text())["restore_limit_w"] == 250.0


def test_failed_restore_at_the_end_is_a_warning_and_a_metric(tmp_path: Path, lines: Lines) -> None:
    node = make_node(tmp_path)
    uuid = node.uuids[0]
    sc = sidecar(node, tmp_path, KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="150")
    sc.hello(node.uuids, None)
    assert node.device().limit_w == 150.0
    node.patch(uuid, allow_set=False)
    report = sc.finish()
    assert "was not restored" in report.note
    warnings = lines.at(logging.WARNING)
    assert len(warnings) == 1 and uuid in warnings[0]
    assert "Restored" not in lines.text()
    failures = "kwatt_sidecar_restore_failures_total"
    assert sample(sc.metrics()[0], failures, namespace="", pod="", UUID=uuid) == 1


def test_restore_failures_are_counted_per_gpu(tmp_path: Path) -> None:
    """An alert must say which GPU stayed lowered: only the one that refused counts."""
    node = make_node(tmp_path, count=2)
    stuck, fine = node.uuids
    sc = sidecar(node, tmp_path, KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="150")
    sc.hello(node.uuids, None)
    node.patch(stuck, allow_set=False)
    sc.finish()
    text, content_type = sc.metrics()
    assert content_type.startswith("text/plain; version=0.0.4")
    failures = "kwatt_sidecar_restore_failures_total"
    assert sample(text, failures, namespace="", pod="", UUID=stuck) == 1
    assert sample(text, failures, namespace="", pod="", UUID=fine) == 0
    assert node.device(fine).limit_w == 250.0 and node.device(stuck).limit_w == 150.0
