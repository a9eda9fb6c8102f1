"""The sidecar shell in-process: restore on an exception, config errors, metrics text."""

from __future__ import annotations

import math
import threading
from pathlib import Path

import pytest
from sidecar_support import make_node

from kwatt_core.report import decode
from kwatt_sidecar import config as configlib
from kwatt_sidecar.app import Sidecar, main, serve
from kwatt_sidecar.gpu.simulated import SimulatedBackend

pytestmark = pytest.mark.timeout(30)


def sidecar_on(node_dir: Path, tmp: Path, **env: str) -> Sidecar:
    cfg = configlib.load(
        {
            "KWATT_TERMINATION_PATH": str(tmp / "term"),
            "KWATT_STATE_DIR": str(tmp / "state"),
            "KWATT_POWER_MODE": "fixed",
            "KWATT_FIXED_LIMIT_W": "130",
            **env,
        }
    )
    return Sidecar(cfg, SimulatedBackend(node_dir, "all"))


def test_exception_in_the_loop_restores_and_reports(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = sidecar_on(node.gpu_dir, tmp_path)
    sc.hello(node.uuids, None)
    assert node.device().limit_w == 130.0

    def boom() -> None:
        raise RuntimeError("the GPU fell off the bus")

    sc.poll = boom  # type: ignore[method-assign]
    with pytest.raises(RuntimeError):
        serve(sc, threading.Event(), poll_s=0.01)
    assert node.device().limit_w == 250.0
    report = decode((tmp_path / "term").read_text())
    assert report.result == "interrupted" and "fell off the bus" in report.note


def test_config_errors_are_sentences() -> None:
    for env, word in [
        ({"KWATT_POWER_MODE": "turbo"}, "KWATT_POWER_MODE"),
        ({"KWATT_POWER_MODE": "fixed"}, "KWATT_FIXED_LIMIT_W"),
        ({"KWATT_ETA": "x"}, "KWATT_ETA"),
        ({"KWATT_PORT": "99999"}, "KWATT_PORT"),
        ({"KWATT_TARGET_HIGHER_IS_BETTER": "maybe"}, "KWATT_TARGET_HIGHER_IS_BETTER"),
    ]:
        with pytest.raises(configlib.ConfigError, match=word):
            configlib.load(env)


def test_main_refuses_bad_config_with_a_message(tmp_path: Path) -> None:
    term = tmp_path / "term"
    assert main({"KWATT_POWER_MODE": "turbo", "KWATT_TERMINATION_PATH": str(term)}) == 2
    assert "KWATT_POWER_MODE" in term.read_text()


def test_report_fits_4k_with_a_long_note(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = sidecar_on(node.gpu_dir, tmp_path)
    sc.notes.append("x" * 9000)
    sc.hello(node.uuids, None)
    sc.finish()
    assert len((tmp_path / "term").read_bytes()) <= 4096


def test_report_carries_the_range_every_gpu_supports(tmp_path: Path) -> None:
    """One limit is set on all the run's GPUs, so the reported range is the one each of them
    accepts: the highest minimum and the lowest maximum, in whole watts inside it."""
    node = make_node(tmp_path, count=2)
    node.patch(node.uuids[0], min_limit_w=100.0, max_limit_w=250.0)
    node.patch(node.uuids[1], min_limit_w=125.5, max_limit_w=230.9)
    sc = sidecar_on(node.gpu_dir, tmp_path)
    sc.hello(node.uuids, None)
    report = sc.finish()
    assert (report.gpu_count, report.min_limit_w, report.max_limit_w) == (2, 126, 230)
    written = decode((tmp_path / "term").read_text())
    assert (written.min_limit_w, written.max_limit_w) == (126, 230)


def test_no_hello_means_no_range(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    report = sidecar_on(node.gpu_dir, tmp_path).finish()
    assert report.result == "interrupted"
    assert (report.min_limit_w, report.max_limit_w) == (None, None)


@pytest.mark.parametrize(
    "second",
    [
        (260.0, 300.0),
        (float("nan"), 250.0),
        (float("inf"), float("inf")),
        (100.0, float("inf")),  # a maximum that is no number: no range, however low the rest
        (0.0, 0.0),
    ],
)
def test_gpus_without_a_common_range_are_measured_not_refused(
    tmp_path: Path, second: tuple[float, float]
) -> None:
    """One limit goes on every GPU of the run; if none fits them all, measure and say why."""
    node = make_node(tmp_path, count=2)
    low, high = second
    current = high if math.isfinite(high) and high > 0 else 250.0
    node.patch(
        node.uuids[1], min_limit_w=low, max_limit_w=high, limit_w=current, default_limit_w=current
    )
    sc = sidecar_on(node.gpu_dir, tmp_path, KWATT_POWER_MODE="optimize")
    answer = sc.hello(node.uuids, None)
    assert answer["mode"] == "observe" and answer["limit_w"] is None
    sc.epoch(None)
    report = sc.finish()
    assert "measured only" in report.note and node.uuids[1] in report.note
    if second == (260.0, 300.0):  # each GPU accepts its own limit, no limit suits both
        assert "no power-limit range in common" in report.note
    assert report.min_limit_w is None and report.max_limit_w is None
    assert [node.device(u).limit_w for u in node.uuids] == [250.0, current]
