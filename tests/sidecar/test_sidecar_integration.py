"""The sidecar and the simulated trainer as real processes on a simulated GPU node."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from sidecar_support import make_node, request, run_trainer, sample, start_sidecar, wait_for

from kwatt_client import Kwatt
from kwatt_core.report import decode

pytestmark = pytest.mark.timeout(60)
FAST = ("--time-scale", "0.0002")


def test_profiles_across_short_epochs_and_reaches_target(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(node, KWATT_TARGET_METRIC="0.6", KWATT_MAX_EPOCHS="100")
    done = run_trainer(node, sc, "--workload", "cifar100", "--seed-run", "0", *FAST)
    assert done.returncode == 0, done.stderr
    assert sc.stop() == 0
    report = decode(sc.termination.read_text())
    assert report.result == "reached"
    assert report.epochs == 74
    assert report.profile_complete and len(report.profile) >= 3
    # cifar100 has 49 steps an epoch, fewer than 10 + 40 + 1: the window shrank to fit.
    assert all(p.steps < 40 for p in report.profile)
    assert report.limit_w is not None and 100 <= report.limit_w < 250
    assert 500 < report.time_s < 800  # trace seconds, not wall seconds
    assert report.energy_j > 0 and report.epoch_cost is not None
    # The GPU's power range, read from the device: the V100 trace's 100-250 W.
    assert (report.gpu_model, report.gpu_count) == (node.device().model, 1)
    assert (report.min_limit_w, report.max_limit_w) == (100, 250)
    assert node.device().limit_w == 250.0  # default restored
    assert not list(node.state_dir.glob("*.json"))  # the restore record is gone
    log = sc.log()
    assert "backend simulated" in log and "Profiling done" in log
    assert log.count("\n") < 15  # quiet: no per-step lines
    # docs/sidecar.md, "Logs": one JSON object a line; the start (backend, mode, visible
    # GPUs), the hello, and INFO for the decisions, each naming what it decided.
    lines = [json.loads(line) for line in log.splitlines()]
    assert all(isinstance(x["ts"], float) and x["level"] == "INFO" for x in lines)
    assert all(x["msg"][:1].isupper() or x["msg"].startswith("kwatt ") for x in lines)
    start, hello, *decisions, last = lines
    assert (start["backend"], start["mode"], start["gpus"]) == ("simulated", "optimize", node.uuids)
    assert f"ports {sc.port} and {sc.metrics_port}" in start["msg"]
    assert "hello" in hello["msg"] and node.uuids[0] in hello["msg"]
    assert "mode optimize, profiling" in hello["msg"] and "steps_per_epoch" in hello
    said = [x["msg"] for x in decisions]
    kept = f"{report.limit_w} W"
    assert any(m.startswith("Profiling done") and kept in m for m in said), said
    assert any("stop after epoch 74: reached" in m for m in said), said
    restored = [m for m in said if m.startswith("Restored")]
    assert len(restored) == 1 and node.uuids[0] in restored[0] and "250 W" in restored[0]
    assert any(m.startswith("Run report: reached after 74 epoch") and kept in m for m in said)
    assert "SIGTERM" in last["msg"]  # then sc.stop() ended it


def test_two_gpus_same_limit_and_summed_energy(tmp_path: Path) -> None:
    node = make_node(tmp_path, count=2)
    sc = start_sidecar(node, KWATT_FIXED_LIMIT_W="150", KWATT_POWER_MODE="fixed")
    kw = Kwatt(port=sc.port, gpu_uuids=node.uuids)
    assert [node.device(u).limit_w for u in node.uuids] == [150.0, 150.0]
    kw.epoch_end(0.1)
    kw.end()
    wait_for(lambda: sc.termination.exists(), what="the report")
    report = sc.report()
    assert report["gpu_count"] == 2 and report["mode"] == "fixed" and report["limit_w"] == 150
    assert [node.device(u).limit_w for u in node.uuids] == [250.0, 250.0]
    sc.stop()


def test_cached_optimum_skips_profiling(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(node, KWATT_CACHED_LIMIT_W="175", KWATT_TARGET_METRIC="0.6")
    done = run_trainer(node, sc, "--workload", "cifar100", "--seed-run", "0", *FAST)
    assert done.returncode == 0, done.stderr
    sc.stop()
    report = decode(sc.termination.read_text())
    assert report.result == "reached" and report.limit_w == 175
    assert not report.profile and not report.profile_complete
    assert report.epoch_cost is not None
    assert node.device().limit_w == 250.0


def test_early_stop_for_cost(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(
        node, KWATT_CACHED_LIMIT_W="250", KWATT_COST_THRESHOLD="20000", KWATT_TARGET_METRIC="0.6"
    )
    done = run_trainer(node, sc, "--workload", "cifar100", "--seed-run", "0", *FAST)
    assert done.returncode == 0, done.stderr
    sc.stop()
    report = decode(sc.termination.read_text())
    assert report.result == "stopped"
    assert 5 < report.epochs < 74
    assert report.cost <= 20000


def test_max_epochs_exhausted(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(node, KWATT_MAX_EPOCHS="3", KWATT_TARGET_METRIC="0.6")
    done = run_trainer(node, sc, "--workload", "cifar100", *FAST)
    assert done.returncode == 0, done.stderr
    sc.stop()
    report = decode(sc.termination.read_text())
    assert (report.result, report.epochs) == ("exhausted", 3)
    assert not report.profile_complete  # three short epochs are not enough for seven limits


def test_sigterm_restores_and_reports_interrupted(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(node, KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="125")
    kw = Kwatt(port=sc.port, gpu_uuids=node.uuids)
    assert node.device().limit_w == 125.0
    assert (node.state_dir / f"{node.uuids[0]}.json").exists()
    kw.epoch_end(0.2)
    assert sc.stop(signal.SIGTERM) == 0
    assert node.device().limit_w == 250.0
    report = sc.report()
    assert report["result"] == "interrupted" and report["epochs"] == 1
    assert not (node.state_dir / f"{node.uuids[0]}.json").exists()


def test_sigterm_after_stop_advice_is_a_normal_end(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(node, KWATT_TARGET_METRIC="0.5", KWATT_POWER_MODE="observe")
    kw = Kwatt(port=sc.port, gpu_uuids=node.uuids)
    kw.epoch_end(0.7)
    assert kw.should_stop() and kw.stop_reason == "reached"
    sc.stop()  # the trainer exited without calling end(); the pod then stops the sidecar
    assert sc.report()["result"] == "reached"


def test_sigkilled_predecessor_limit_restored_by_successor(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    first = start_sidecar(node, tag="first", KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="100")
    Kwatt(port=first.port, gpu_uuids=node.uuids)
    assert node.device().limit_w == 100.0
    first.stop(signal.SIGKILL)
    assert node.device().limit_w == 100.0  # nothing ran at exit
    # The successor may change limits (observe mode leaves the record: test_sidecar_restore).
    second = start_sidecar(node, tag="second", KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="150")
    Kwatt(port=second.port, gpu_uuids=node.uuids)
    assert node.device().limit_w == 150.0  # restored first, then its own limit
    assert "Restored the limit 250 W" in second.log()
    second.stop()
    assert node.device().limit_w == 250.0
    assert not list(node.state_dir.glob("*.json"))
    assert "Restored the limit 250 W" in second.report()["note"]


def test_refused_limit_means_observe_mode_said_once(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    node.patch(node.uuids[0], allow_set=False)
    sc = start_sidecar(node, KWATT_TARGET_METRIC="0.6", KWATT_MAX_EPOCHS="5")
    done = run_trainer(node, sc, "--workload", "cifar100", *FAST)
    assert done.returncode == 0, done.stderr
    sc.stop()
    report = sc.report()
    assert report["mode"] == "observe" and report["limit_w"] is None
    # Not allowed to change it, the range is still the GPU's: the operator learns it.
    assert (report["min_limit_w"], report["max_limit_w"]) == (100, 250)
    assert "NVML_ERROR_NO_PERMISSION" in report["note"]
    assert report["energy_j"] > 0 and report["result"] == "exhausted"
    assert sc.log().count("may not change the GPU power limit") == 1


def test_hidden_gpus_are_reported_with_the_fix(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(node, NVIDIA_VISIBLE_DEVICES="")
    kw = Kwatt(port=sc.port, gpu_uuids=node.uuids)
    assert not kw.profiling and not kw.quiet
    kw.end()
    wait_for(lambda: sc.termination.exists(), what="the report")
    note = sc.report()["note"]
    assert "cannot see the trainer's GPU" in note and "NVIDIA_VISIBLE_DEVICES=all" in note
    assert sc.report()["mode"] == "observe"
    assert (sc.report()["min_limit_w"], sc.report()["max_limit_w"]) == (None, None)  # no GPU
    sc.stop()


def test_trainer_failure_is_reported_failed(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(node)
    done = run_trainer(node, sc, "--workload", "cifar100", "--fail-at-epoch", "2", *FAST)
    assert done.returncode == 1
    sc.stop()
    assert sc.report()["result"] == "failed"
    assert node.device().limit_w == 250.0


def test_malformed_requests_get_4xx_sentences(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(node)
    json_h = {"Content-Type": "application/json"}
    assert request(sc, "POST", "/v1/step")[0] == 409  # before hello
    cases = [
        ("GET", "/v1/nope", None, 404),
        ("GET", "/v1/begin", None, 405),
        ("POST", "/v1/should-stop", None, 405),
        ("POST", "/v1/begin", b"{not json", 400),
        ("POST", "/v1/begin", b"[1, 2]", 400),
        ("POST", "/v1/begin", json.dumps({"gpu_uuids": "GPU-1"}).encode(), 400),
        ("POST", "/v1/begin", json.dumps({"gpu_uuids": [], "steps_per_epoch": -3}).encode(), 400),
        ("POST", "/v1/begin", b"x" * (16 * 1024 + 1), 413),
    ]
    for method, path, body, status in cases:
        code, reply = request(sc, method, path, body, json_h)
        assert code == status, (path, body, reply)
        assert reply["error"].endswith(".") and reply["error"][0].isupper()
    code, _ = request(sc, "POST", "/v1/begin", json.dumps({"gpu_uuids": node.uuids}).encode())
    assert code == 200
    code, reply = request(sc, "POST", "/v1/epoch", b'{"metric": "high"}', json_h)
    assert code == 400 and "metric" in reply["error"]
    code, reply = request(sc, "POST", "/v1/end", b'{"failed": "yes"}', json_h)
    assert code == 400
    code, reply = request(
        sc, "POST", "/v1/epoch", b"2\r\n{}\r\n0\r\n\r\n", {"Transfer-Encoding": "chunked"}
    )
    assert code == 411
    assert request(sc, "GET", "/v1/should-stop")[1] == {"stop": False, "reason": ""}
    sc.stop()


def test_metrics_exposition(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(node)
    Kwatt(port=sc.port, gpu_uuids=node.uuids)
    text = sc.metrics()
    uuid = node.uuids[0]
    assert "# TYPE kwatt_gpu_energy_joules_total counter" in text
    run = {"namespace": "ns1", "pod": "job-1-abc"}
    assert sample(text, "kwatt_gpu_power_limit_watts", **run, UUID=uuid) == 250.0
    assert sample(text, "kwatt_profiling_phase", **run, phase="warmup") == 1
    assert sample(text, "kwatt_profiling_phase", **run, phase="measure") == 0
    assert "kwatt_run_cost{" in text
    for line in text.splitlines():
        assert line.startswith("#") or len(line.split(" ")) == 2
    sc.stop()
