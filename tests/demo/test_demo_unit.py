"""`kwatt demo`'s pure parts, without a cluster: when it asks for the next run, what a
progress line and the saving line say, what it reads from the example manifests, and how
it finds processes left behind."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kwatt_cli import demo
from kwatt_cli.main import main
from kwatt_operator.status_report import RunRow, job_report


@pytest.mark.parametrize(
    ("started", "requested", "wanted", "ask"),
    [
        (0, 1, 20, None),  # the run its creation asks for has not started yet
        (1, 1, 20, 2),  # it has: ask for the next, which waits for it (Forbid)
        (1, 2, 20, None),  # one request pending is enough
        (2, 2, 20, 3),
        (19, 19, 20, 20),
        (20, 20, 20, None),  # all asked for
        (1, 1, 1, None),  # --runs 1: creation's run is the only one
    ],
)
def test_one_request_is_kept_pending(
    started: int, requested: int, wanted: int, ask: int | None
) -> None:
    assert demo.next_request(started, requested, wanted) == ask


def row(run: int, **kw: Any) -> RunRow:
    values: dict[str, Any] = {
        "run": run,
        "job": f"cifar100-sim-run-{run}",
        "batch_size": 256,
        "power_limit_w": 150,
        "result": "reached",
        "stage": "explore",
        "epochs": 40,
        "energy_j": 50642.0,
        "seconds": 426.25,
        "cumulative_energy_j": 50642.0,
        "metric": 0.6,
        "start_time": None,
        "completion_time": None,
        "note": "",
        **kw,
    }
    return RunRow(**values)


def test_a_progress_line_names_job_run_batch_limit_energy_time_and_result() -> None:
    line = demo.progress_line(75.0, "cifar100-sim", 12, row(3), 20)
    assert line == (
        "[1:15] cifar100-sim  run  3/20  batch   256  limit 150 W  energy    50.64 kJ  "
        "time   7m06s  reached"
    )
    stopped = demo.progress_line(5.0, "squad", 12, row(12, power_limit_w=None, result="failed"), 20)
    assert "limit     -" in stopped and stopped.endswith("failed")
    assert "energy" in demo.progress_line(0, "x", 1, row(1, energy_j=2.5e6), 3)
    assert "2.50 MJ" in demo.progress_line(0, "x", 1, row(1, energy_j=2.5e6), 3)


def trainingjob(baseline: dict[str, Any] | None) -> dict[str, Any]:
    history = [
        {"run": 1, "job": "j-run-1", "batchSize": 1024, "powerLimitWatts": 175,
         "result": "reached", "energyJoules": 84627.6, "seconds": 607.0, "epochs": 74},
        {"run": 2, "job": "j-run-2", "batchSize": 512, "powerLimitWatts": 175,
         "result": "reached", "energyJoules": 57024.4, "seconds": 433.3, "epochs": 49},
    ]  # fmt: skip
    status: dict[str, Any] = {
        "runs": 2,
        "recordedRuns": 2,
        "history": history,
        "totals": {"runs": 2, "energyJoules": 141652.0, "seconds": 1040.3},
    }
    if baseline is not None:
        status["baseline"] = baseline
    return {
        "metadata": {"name": "j", "namespace": "kwatt-demo"},
        "spec": {"batchSizes": {"candidates": [512, 1024], "default": 1024}},
        "status": status,
    }


def test_the_saving_line_is_the_reports_comparison() -> None:
    report = job_report(
        trainingjob(
            {
                "all": {"runs": 2, "energyJoules": 141652.0, "seconds": 1040.3},
                "estimated": {"runs": 1, "energyJoules": 106740.0, "seconds": 563.0},
            }
        )
    )
    assert report.comparison is not None
    line = demo.saving_line(report)
    assert line.startswith(f"{report.comparison.energy_percent:.1f}% less energy per run")
    assert "(estimated), time 7.6% shorter" in line  # 520 s a run against 563 s
    unknown = demo.saving_line(job_report(trainingjob(None)))
    assert unknown.startswith("saving not known yet")
    assert demo.finished(report, 2) and not demo.finished(report, 3)


def test_the_demo_reads_its_two_example_manifests() -> None:
    jobs = [demo.load_manifest(p) for p in demo.MANIFESTS]
    assert [j.name for j in jobs] == ["cifar100-sim", "squad-sim"]
    assert {j.workload for j in jobs} == {"cifar100", "squad"}  # two different workloads
    for job in jobs:
        assert job.gpu == "v100" and job.time_scale and job.default in job.candidates
        assert job.describe().startswith(f"{job.name}: Zeus's {job.workload} trace")


def test_leftover_processes_finds_one_working_in_the_folder(tmp_path: Path) -> None:
    inside = tmp_path / "pods" / "a"
    inside.mkdir(parents=True)
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], cwd=inside)
    try:
        assert proc.pid in demo.leftover_processes(str(tmp_path))
        assert proc.pid not in demo.leftover_processes(str(tmp_path / "pods" / "b"))
    finally:
        proc.kill()
        proc.wait()
    assert proc.pid not in demo.leftover_processes(str(tmp_path))
    assert demo.leftover_processes("") == []


@pytest.mark.parametrize("runs", ["0", "101"])
def test_runs_out_of_range_is_a_usage_error(runs: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--runs", runs]) == 2
    assert "--runs must be between 1 and 100" in capsys.readouterr().err
