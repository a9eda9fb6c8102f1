"""`kwatt demo` end to end, as `make demo` runs it but with 3 recurrences a job: its own
sandbox cluster, kwatt installed with the Helm chart, the two example TrainingJobs, a
progress line per run, each job's table (report.py's, also written beside the chart), the
saving, a PNG chart per job, and at the end nothing of the cluster left running. And
Ctrl-C in the middle: exit 130, and again nothing left running.

Each test starts a sandbox of its own (the demo's), next to the session's if there is one:
every port is a free one.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kwatt_cli.demo import leftover_processes
from kwatt_sandbox.nodes.shim import namespaces_problem
from kwatt_sandbox.testing import eventually

REPO = Path(__file__).resolve().parents[2]
JOBS = ("cifar100-sim", "squad-sim")
PNG = b"\x89PNG\r\n\x1a\n"

pytestmark = pytest.mark.skipif(namespaces_problem() is not None, reason=str(namespaces_problem()))


def demo_command(out: Path, runs: int) -> list[str]:
    return [sys.executable, "-m", "kwatt_cli.main", "demo", "--runs", str(runs), "--out", str(out)]


def running(pid: int) -> bool:
    """Alive and not a zombie (an orphan's exit waits for PID 1 to reap it)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def assert_nothing_left(out: Path) -> None:
    """The sandbox the demo started (its ready file says which) is gone, with every process
    it started (the control plane names its folder; containers work in it) and its folder;
    the stopped cluster's kubeconfig is removed."""
    state: dict[str, Any] = json.loads((out / "cluster" / "ready.json").read_text())
    assert not running(int(state["pid"]))
    assert leftover_processes(state["directory"]) == []
    assert not Path(state["directory"]).exists()
    assert not (out / "cluster" / "kubeconfig").exists()


@pytest.mark.timeout(240)
def test_the_demo_runs_both_jobs_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    result = subprocess.run(
        demo_command(out, 3), cwd=REPO, capture_output=True, text=True, timeout=220
    )
    text = result.stdout
    assert result.returncode == 0, f"{text[-4000:]}\n{result.stderr[-4000:]}"
    print(text)

    # Where to watch from: a kubeconfig and the cached kubectl.
    found = re.search(r"KUBECONFIG=(\S+) (\S+/kubectl) get tj -n kwatt-demo -w", text)
    assert found, text
    assert Path(found.group(1)) == out / "cluster" / "kubeconfig"
    assert os.access(found.group(2), os.X_OK)
    operator = (
        r"the\s+operator\s+runs\s+as\s+Pod\s+kwatt-system/kwatt-\S+,\s+ServiceAccount\s+kwatt,"
    )
    assert re.search(operator, text), text  # (stamped lines are wrapped)

    for name in JOBS:
        # A line per finished run, in order.
        runs = re.findall(
            rf"^\[\d+:\d\d\] {name}\s+run (\d)/3  batch\s+\d+  limit\s+(?:\d+ W|-)  "
            rf"energy\s+[\d.]+ (?:J|kJ|MJ)\s+time\s+\S+  (\w+)$",
            text,
            re.MULTILINE,
        )
        assert [int(r[0]) for r in runs] == [1, 2, 3], runs
        # The table is report.py's, printed and written beside the chart.
        table = (out / f"{name}.txt").read_text()
        assert table in text
        assert f"TrainingJob kwatt-demo/{name}: Idle, 3 runs started, 3 recorded." in table
        assert re.search(r"^RUN  BATCH  LIMIT W  RESULT  +EPOCHS  ENERGY", table, re.MULTILINE)
        assert len(re.findall(r"^ +[123] +\d+\*? +\d+ +\w+ ", table, re.MULTILINE)) == 3
        assert re.search(r"^Saving \((measured|estimated)\): -?[\d.]+% energy per run", table, re.M)
        chart = out / f"{name}.png"
        assert chart.read_bytes()[:8] == PNG and chart.stat().st_size > 10_000
        assert f"Chart: {chart}" in text
        assert re.search(
            rf"^  {name}\s+[\d.]+% (less|more) energy per run than the default configuration",
            text,
            re.MULTILINE,
        )
    assert "Sandbox cluster stopped; nothing it started is left running." in text
    assert re.search(
        r"^Done in \S+ \(cluster up \S+, kwatt installed \S+, 6 runs \S+\)", text, re.M
    )
    assert_nothing_left(out)


def interruptible() -> None:
    """In the child: SIGINT as a terminal gives it. A shell that starts a job in the
    background (`make test &`) has it ignored, and Python then never raises
    KeyboardInterrupt, which is not the Ctrl-C this test is about."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.timeout(180)
def test_ctrl_c_stops_the_cluster_and_everything_in_it(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    proc = subprocess.Popen(
        demo_command(out, 20),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=interruptible,
    )
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # until the first run is recorded: every part is running
            seen.append(line)
            if re.search(r"run +1/20", line):
                break
        assert proc.poll() is None, "".join(seen)
        proc.send_signal(signal.SIGINT)
        rest, _ = proc.communicate(timeout=90)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    text = "".join(seen) + rest
    assert proc.returncode == 130, text
    assert "Interrupted." in rest and "Stopping the sandbox cluster" in rest
    assert "Sandbox cluster stopped; nothing it started is left running." in rest
    assert_nothing_left(out)


@pytest.mark.timeout(120)
def test_a_killed_demo_still_takes_its_cluster_down(tmp_path: Path) -> None:
    """SIGKILL leaves the demo no say; the kernel's parent-death signal stops the sandbox."""
    out = tmp_path / "demo"
    proc = subprocess.Popen(
        demo_command(out, 20),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []
    try:
        assert proc.stdout is not None
        for line in proc.stdout:  # until the operator Pod runs on the cluster
            seen.append(line)
            if "kwatt installed" in line:
                break
        assert proc.poll() is None, "".join(seen)
    finally:
        proc.kill()
        proc.communicate()
    state = json.loads((out / "cluster" / "ready.json").read_text())
    eventually(lambda: not Path(state["directory"]).exists(), timeout=60, interval=0.2)
    eventually(lambda: leftover_processes(state["directory"]) == [], timeout=30, interval=0.2)
    eventually(lambda: not running(int(state["pid"])), timeout=30, interval=0.2)
