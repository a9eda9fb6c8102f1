"""An admin's power cap survives a kwatt run: the limit a GPU has when the run begins is the
top of what the run may set and exactly what it puts back, on every exit path (docs/admin.md,
"What the sidecar restores, and an admin's own limits").

The simulated V100 ranges 100-250 W with a 250 W default; the "admin" caps it with
`simgpu.set_limit`, the simulated `nvidia-smi -pl`.
"""

from __future__ import annotations

import json
import logging
import signal
from pathlib import Path

import pytest
from sidecar_support import Lines, Node, make_node, start_sidecar

from kwatt_client import Kwatt
from kwatt_core import simgpu
from kwatt_core.report import decode
from kwatt_sidecar import config as configlib
from kwatt_sidecar.app import Sidecar
from kwatt_sidecar.gpu.simulated import SimulatedBackend

pytestmark = pytest.mark.timeout(60)


class SpyBackend(SimulatedBackend):
    """The simulated GPU, remembering every limit set; `fail_first` sets refused first."""

    def __init__(self, directory: Path, fail_first: int = 0) -> None:
        super().__init__(directory, "all")
        self.sets: list[tuple[str, float]] = []
        self.fail_first = fail_first

    def set_limit_w(self, uuid: str, watts: float) -> None:
        if self.fail_first:
            self.fail_first -= 1
            raise simgpu.DeviceError("The driver is busy (a transient error).")
        self.sets.append((uuid, watts))
        super().set_limit_w(uuid, watts)


def cap(node: Node, watts: float, uuid: str | None = None) -> None:
    """What `nvidia-smi -pl` does: the current limit, not the default."""
    simgpu.set_limit(node.gpu_dir, uuid or node.uuids[0], watts)


def sidecar(
    node: Node, tmp: Path, backend: SpyBackend | None = None, **env: str
) -> tuple[Sidecar, SpyBackend]:
    cfg = configlib.load(
        {
            "KWATT_TERMINATION_PATH": str(tmp / "term"),
            "KWATT_STATE_DIR": str(node.state_dir),
            "KWATT_WARMUP_STEPS": "1",
            "KWATT_MEASURE_STEPS": "2",
            **env,
        }
    )
    backend = backend or SpyBackend(node.gpu_dir)
    return Sidecar(cfg, backend), backend


def record(node: Node, uuid: str | None = None) -> dict[str, object]:
    return dict(json.loads((node.state_dir / f"{uuid or node.uuids[0]}.json").read_text()))


def profile_to_the_end(sc: Sidecar, node: Node) -> None:
    """Steps on the simulated GPU (time 0.1 s, power 90% of min(limit, 180 W)) until done."""
    for _ in range(200):
        for uuid in node.uuids:
            simgpu.run(node.gpu_dir, uuid, 1, lambda w: (0.1, min(w, 180.0) * 0.9))
        if not sc.step()["profiling"]:
            return
    raise AssertionError("Profiling did not finish.")


def test_profiling_starts_at_the_admins_cap_and_puts_it_back(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    cap(node, 200.0)
    sc, spy = sidecar(node, tmp_path)
    status = sc.hello(node.uuids, None)
    # The first window is at the cap, not at the 250 W maximum.
    assert status["profiling"] and status["limit_w"] == 200
    assert record(node)["restore_limit_w"] == 200.0  # what a successor would put back
    profile_to_the_end(sc, node)
    sc.epoch(None)
    report = sc.finish()
    assert [w for _, w in spy.sets] and max(w for _, w in spy.sets) == 200.0
    assert report.profile and report.profile[0].limit_w == 200
    assert all(p.limit_w <= 200 for p in report.profile)
    # The range stays the GPU's (MaxPower of the cost); the run's top is said apart.
    assert (report.min_limit_w, report.max_limit_w, report.start_limit_w) == (100, 250, 200)
    assert decode((tmp_path / "term").read_text()).start_limit_w == 200
    assert sc.state is not None and sc.state.cost_model.max_power_w == 250.0
    assert node.device().limit_w == 200.0  # the cap, not NVML's 250 W default
    assert not list(node.state_dir.glob("*.json"))


def test_without_a_cap_the_top_is_the_maximum(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc, _ = sidecar(node, tmp_path)
    assert sc.hello(node.uuids, None)["limit_w"] == 250
    report = sc.finish()
    assert report.start_limit_w == 250 and node.device().limit_w == 250.0


@pytest.mark.parametrize(
    ("mode", "asked"), [("fixed", "230"), ("optimize", "230")], ids=["fixed", "cached"]
)
def test_a_limit_above_the_cap_is_lowered_to_it_with_a_note(
    tmp_path: Path, mode: str, asked: str
) -> None:
    node = make_node(tmp_path)
    cap(node, 200.0)
    variable = "KWATT_FIXED_LIMIT_W" if mode == "fixed" else "KWATT_CACHED_LIMIT_W"
    sc, spy = sidecar(node, tmp_path, KWATT_POWER_MODE=mode, **{variable: asked})
    assert sc.hello(node.uuids, None)["limit_w"] == 200
    assert node.device().limit_w == 200.0
    report = sc.finish()
    kind = "fixed" if mode == "fixed" else "cached"
    assert f"The {kind} limit 230 W is above the limit the GPUs had" in report.note
    assert "200 W" in report.note
    assert all(w <= 200.0 for _, w in spy.sets)
    assert node.device().limit_w == 200.0


def test_a_fixed_limit_below_the_cap_is_used_and_the_cap_put_back(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    cap(node, 200.0)
    sc, _ = sidecar(node, tmp_path, KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="150")
    sc.hello(node.uuids, None)
    assert node.device().limit_w == 150.0
    report = sc.finish()
    assert report.limit_w == 150 and "above the limit" not in report.note
    assert node.device().limit_w == 200.0


def test_sigterm_puts_the_cap_back(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    cap(node, 200.0)
    sc = start_sidecar(node, KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="150")
    Kwatt(port=sc.port, gpu_uuids=node.uuids)
    assert node.device().limit_w == 150.0
    assert sc.stop(signal.SIGTERM) == 0
    assert node.device().limit_w == 200.0
    assert sc.report()["start_limit_w"] == 200
    assert not list(node.state_dir.glob("*.json"))


def test_a_killed_run_leaves_the_cap_for_its_successor(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    cap(node, 180.0)
    first = start_sidecar(node, tag="first", KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="120")
    Kwatt(port=first.port, gpu_uuids=node.uuids)
    assert node.device().limit_w == 120.0
    assert record(node)["restore_limit_w"] == 180.0
    first.stop(signal.SIGKILL)
    second = start_sidecar(node, tag="second", KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="230")
    Kwatt(port=second.port, gpu_uuids=node.uuids)
    # The record was honoured first (180 W), so the successor's top is the cap too.
    assert node.device().limit_w == 180.0
    assert "Restored the limit 180 W" in second.log()
    assert second.stop() == 0
    assert node.device().limit_w == 180.0
    assert not list(node.state_dir.glob("*.json"))
    assert second.report()["limit_w"] == 180


def test_a_failed_leftover_restore_keeps_the_pre_run_limit_owed(tmp_path: Path) -> None:
    """A predecessor's record says 200 W; putting it back fails once (a transient error), so
    the GPU is still at 120 W when the run begins. The run's own record and its restore must
    say 200 W, never the lowered 120 W it found."""
    node = make_node(tmp_path)
    uuid = node.uuids[0]
    cap(node, 120.0)
    node.state_dir.mkdir(parents=True, exist_ok=True)
    (node.state_dir / f"{uuid}.json").write_text(
        json.dumps({"uuid": uuid, "restore_limit_w": 200, "owner": "ns0/dead"})
    )
    spy = SpyBackend(node.gpu_dir, fail_first=1)
    sc, _ = sidecar(node, tmp_path, spy, KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="230")
    sc.hello(node.uuids, None)
    assert record(node)["restore_limit_w"] == 200.0
    assert node.device().limit_w == 200.0  # the fixed 230 W, topped at the owed 200 W
    report = sc.finish()
    assert "could not be restored to 200 W" in report.note
    assert node.device().limit_w == 200.0
    assert not list(node.state_dir.glob("*.json"))


def test_an_older_kwatts_record_is_honoured(tmp_path: Path) -> None:
    """Before this version a record held NVML's default (`default_limit_w`): it is put back,
    within the GPU's range as any record, and the run then starts from it."""
    node = make_node(tmp_path)
    uuid = node.uuids[0]
    cap(node, 130.0)
    node.state_dir.mkdir(parents=True, exist_ok=True)
    (node.state_dir / f"{uuid}.json").write_text(
        json.dumps({"uuid": uuid, "default_limit_w": 250.0, "owner": "ns0/old", "since": 1.0})
    )
    sc, _ = sidecar(node, tmp_path, KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="150")
    sc.hello(node.uuids, None)
    assert record(node)["restore_limit_w"] == 250.0
    report = sc.finish()
    assert "Restored the limit 250 W" in report.note and "older kwatt" in report.note
    assert node.device().limit_w == 250.0


def test_each_gpu_gets_its_own_limit_back_under_the_lowest_cap(tmp_path: Path) -> None:
    node = make_node(tmp_path, count=2)
    cap(node, 200.0, node.uuids[0])
    cap(node, 180.0, node.uuids[1])
    sc, spy = sidecar(node, tmp_path)
    assert sc.hello(node.uuids, None)["limit_w"] == 180
    assert [record(node, u)["restore_limit_w"] for u in node.uuids] == [200.0, 180.0]
    profile_to_the_end(sc, node)
    # After the privilege check's no-op re-sets (200 W and 180 W), nothing above 180 W.
    assert spy.sets[:2] == [(node.uuids[0], 200.0), (node.uuids[1], 180.0)]
    assert max(w for _, w in spy.sets[2:]) == 180.0
    report = sc.finish()
    assert report.start_limit_w == 180 and all(p.limit_w <= 180 for p in report.profile)
    assert [node.device(u).limit_w for u in node.uuids] == [200.0, 180.0]


def test_caps_that_leave_no_common_limit_are_measured_only(tmp_path: Path) -> None:
    """One GPU capped at 150 W, the other accepting 160-250 W: no limit suits both without
    exceeding the cap, so nothing is changed."""
    node = make_node(tmp_path, count=2)
    cap(node, 150.0, node.uuids[0])
    node.patch(node.uuids[1], min_limit_w=160.0)
    sc, spy = sidecar(node, tmp_path)
    assert sc.hello(node.uuids, None)["mode"] == "observe"
    report = sc.finish()
    assert "measured only" in report.note and "150 W" in report.note
    # Only the no-op re-set that detects the privilege ever reached the GPUs.
    assert [w for _, w in spy.sets] == [150.0, 250.0]
    assert [node.device(u).limit_w for u in node.uuids] == [150.0, 250.0]


def test_observe_mode_needs_no_state_dir(tmp_path: Path, lines: Lines) -> None:
    """The operator mounts no node folder in observe mode: a missing one is no problem and
    is never created."""
    node = make_node(tmp_path)
    missing = tmp_path / "no" / "such" / "dir"
    cfg = configlib.load(
        {
            "KWATT_TERMINATION_PATH": str(tmp_path / "term"),
            "KWATT_STATE_DIR": str(missing),
            "KWATT_POWER_MODE": "observe",
        }
    )
    sc = Sidecar(cfg, SimulatedBackend(node.gpu_dir, "all"))
    assert sc.hello(node.uuids, None)["mode"] == "observe"
    sc.epoch(0.1)
    report = sc.finish()
    assert report.mode == "observe" and report.start_limit_w is None
    assert "record" not in report.note and not lines.at(logging.WARNING)
    assert not (tmp_path / "no").exists()


def test_an_unwritable_state_dir_is_said_in_the_report(tmp_path: Path, lines: Lines) -> None:
    """Optimize and fixed modes need the node folder; without it the run still goes on, and
    the log and the report say which variable and what is at stake."""
    node = make_node(tmp_path)
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    cfg = configlib.load(
        {
            "KWATT_TERMINATION_PATH": str(tmp_path / "term"),
            "KWATT_STATE_DIR": str(blocker / "state"),
            "KWATT_POWER_MODE": "fixed",
            "KWATT_FIXED_LIMIT_W": "150",
        }
    )
    sc = Sidecar(cfg, SimulatedBackend(node.gpu_dir, "all"))
    sc.hello(node.uuids, None)
    assert node.device().limit_w == 150.0
    report = sc.finish()
    assert node.device().limit_w == 250.0
    warnings = [w for w in lines.at(logging.WARNING) if "restore record cannot be written" in w]
    assert len(warnings) == 1 and "KWATT_STATE_DIR" in warnings[0]
    assert "KWATT_STATE_DIR" in report.note and "killed" in report.note
