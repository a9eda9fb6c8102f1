"""Running the Zeus peer, with a stand-in for Zeus's runner: the request it gets, the
histories it returns, their cache, and one sentence when it fails.

The stand-in is a real process started as the peer environment's `python`, like Zeus's own
runner; it answers every recurrence with one run at the default batch size and the top
limit, which reached the target, and keeps each request it was sent."""

from __future__ import annotations

import json
import os
import stat
import sys
from pathlib import Path
from typing import Any

import pytest

from kwatt_core.sim import peer
from kwatt_core.sim.trace import WorkloadTrace, load_workloads

RUNNER = """
import json, os, sys
request = json.load(sys.stdin)
with open(os.environ["FAKE_RUNNER_LOG"], "a") as log:
    log.write(json.dumps(request) + "\\n")
mode = os.environ.get("FAKE_RUNNER_MODE", "ok")
if mode == "fail":
    print("Traceback (most recent call last):", file=sys.stderr)
    print("RuntimeError: the legacy simulator fell over", file=sys.stderr)
    sys.exit(3)
if mode == "hang":
    import time
    time.sleep(30)
if mode == "garbage":
    print("Simulating...")
    sys.exit(0)
jobs = {}
for job in request["jobs"]:
    run = [job["default_batch_size"], max(job["limits_w"]), 3000.0, 20.0, True]
    jobs[job["name"]] = {
        "max_power_w": 250.0,
        "seeds": {str(s): {"runs": [run] * job["recurrences"]} for s in job["seeds"]},
    }
json.dump({"versions": {"zeus": "0.16.0", "numpy": "2.4.6"}, "jobs": jobs}, sys.stdout)
"""


@pytest.fixture
def fake_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A complete peer environment whose `python` is the stand-in; returns its request log."""
    monkeypatch.setenv("KWATT_CACHE_DIR", str(tmp_path / "cache"))
    log = tmp_path / "requests.jsonl"
    monkeypatch.setenv("FAKE_RUNNER_LOG", str(log))
    monkeypatch.delenv("FAKE_RUNNER_MODE", raising=False)
    runner = tmp_path / "fake_runner.py"
    runner.write_text(RUNNER)
    directory = peer.env_dir()
    (directory / "bin").mkdir(parents=True)
    python = directory / "bin" / "python"
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{runner}"\n')
    python.chmod(python.stat().st_mode | stat.S_IXUSR)
    (directory / peer.RECORD).write_text("{}")
    return log


def requests(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def tiny(tiny_trace: Path) -> WorkloadTrace:
    (trace,) = load_workloads(tiny_trace, "t4")
    return trace


def run(trace: WorkloadTrace, trace_dir: Path, **kw: Any) -> peer.PeerRuns:
    args: dict[str, Any] = {"seeds": 2, "recurrences": {"cifar100": 3}, "eta": 0.5, "beta": 2.0}
    args.update(kw)
    return peer.run_peer([trace], trace_dir, **args)


def test_the_peer_runs_once_and_its_histories_are_reused(fake_env: Path, tiny_trace: Path) -> None:
    trace = tiny(tiny_trace)
    first = run(trace, tiny_trace, workers=3)
    assert not first.cached and first.versions["zeus"] == "0.16.0"
    assert first.env == peer.env_dir()
    histories = first.runs["cifar100"]
    assert len(histories) == 2 and all(len(h) == 3 for h in histories)
    assert all(r.reached and r.runs[0].batch_size == 128 for h in histories for r in h)
    (sent,) = requests(fake_env)
    assert (
        sent["workers"] == 3 and sent["gpu"] == "t4" and (sent["eta"], sent["beta"]) == (0.5, 2.0)
    )
    assert sent["jobs"][0]["seeds"] == [0, 1] and sent["jobs"][0]["recurrences"] == 3
    again = run(trace, tiny_trace, workers=3)
    assert again.cached and again.runs == first.runs
    assert len(requests(fake_env)) == 1  # the runner was not started again
    run(trace, tiny_trace, eta=0.7)  # other knobs: another run
    assert len(requests(fake_env)) == 2


def test_without_a_worker_count_the_runner_gets_this_machines_cpus(
    fake_env: Path, tiny_trace: Path
) -> None:
    run(tiny(tiny_trace), tiny_trace)
    (sent,) = requests(fake_env)
    assert sent["workers"] == len(os.sched_getaffinity(0))


@pytest.mark.parametrize(
    ("mode", "message"),
    [
        ("fail", "Zeus's simulator failed .*: RuntimeError: the legacy simulator fell over"),
        ("garbage", "Zeus's simulator printed something other than JSON"),
    ],
)
def test_a_runner_that_fails_is_one_sentence_and_nothing_is_kept(
    fake_env: Path, tiny_trace: Path, monkeypatch: pytest.MonkeyPatch, mode: str, message: str
) -> None:
    trace = tiny(tiny_trace)
    monkeypatch.setenv("FAKE_RUNNER_MODE", mode)
    with pytest.raises(peer.PeerError, match=message):
        run(trace, tiny_trace)
    monkeypatch.setenv("FAKE_RUNNER_MODE", "ok")
    assert not run(trace, tiny_trace).cached  # the failure left no cached answer
    assert len(requests(fake_env)) == 2


def test_a_runner_that_hangs_is_stopped_and_said(
    fake_env: Path, tiny_trace: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The runner gets an hour; one that never answers is stopped then, in one sentence."""
    monkeypatch.setenv("FAKE_RUNNER_MODE", "hang")
    monkeypatch.setattr(peer, "_RUN_TIMEOUT_S", 1.0)
    with pytest.raises(peer.PeerError, match=r"could not run .* timed out after 1"):
        run(tiny(tiny_trace), tiny_trace)
