"""`kwatt report` against a real API server: the sandbox (a test harness: a real control
plane, simulated GPU nodes) runs a TrainingJob's recurrences under `kwatt operator`, then
`kwatt report` and `kubectl kwatt report` (the real kubectl finding the `kubectl-kwatt`
plugin on PATH) read it with a user's kubeconfig, as a user would, and say what its status
says. Missing objects, missing rights and a job without runs are one sentence each.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_support import create, request_run, running_operator, status_of, trainingjob

from kwatt_sandbox.testing import Cluster, eventually

pytestmark = pytest.mark.timeout(300)
VENV_BIN = Path(sys.executable).parent  # where `kwatt` and `kubectl-kwatt` are installed


def kwatt_report(
    cluster: Cluster, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kwatt_cli.main", "report", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env=env or cluster.env(),
        stdin=subprocess.DEVNULL,
    )


def one_sentence(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 1, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr and result.stdout == ""
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("kwatt report: ") and line.endswith("."), line
    return line


def user_kubeconfig(cluster: Cluster, path: Path, **context: str) -> Path:
    """A copy of the cluster's kubeconfig with fields set on its current context (namespace)
    or, with `token`, a user that authenticates with that bearer token."""
    config = yaml.safe_load(cluster.kubeconfig.read_text())
    current = next(c for c in config["contexts"] if c["name"] == config["current-context"])
    token = context.pop("token", None)
    current["context"].update(context)
    if token is not None:
        config["users"] = [{"name": "someone", "user": {"token": token}}]
        current["context"]["user"] = "someone"
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


def test_report_says_what_the_status_says(sandbox: Cluster, namespace: str, tmp_path: Path) -> None:
    with running_operator(sandbox, namespace, tmp_path) as operator:
        create(sandbox, trainingjob(namespace, history_limit=5))
        held = trainingjob(namespace, "held")
        held["spec"]["suspend"] = True
        create(sandbox, held)

        def recorded(n: int) -> dict[str, Any] | None:
            assert operator.alive()
            status = status_of(sandbox, namespace)
            return status if int(status.get("recordedRuns") or 0) >= n else None

        eventually(lambda: recorded(1), timeout=120, interval=0.5)
        request_run(sandbox, namespace, "again")
        eventually(lambda: recorded(2), timeout=120, interval=0.5)
        eventually(lambda: status_of(sandbox, namespace, "held").get("state") == "Suspended")
    status = status_of(sandbox, namespace)  # the operator is gone: the status stays so
    assert [h["run"] for h in status["history"]] == [1, 2]

    # The table, through --kubeconfig and -n.
    table = kwatt_report(sandbox, "cifar", "-n", namespace, "--kubeconfig", str(sandbox.kubeconfig))
    assert table.returncode == 0, table.stderr
    assert table.stderr == ""
    text = table.stdout
    print(text)
    lines = text.splitlines()
    assert lines[0] == f"TrainingJob {namespace}/cifar: Idle, 2 runs started, 2 recorded."
    gpu = status["gpu"]
    assert lines[1] == (
        f"GPU: {gpu['model']} x1, power limits {gpu['minLimitWatts']}-{gpu['maxLimitWatts']} W."
    )
    rows = [line.split() for line in lines if line[:3].strip().isdigit()]
    assert len(rows) == 2
    for row, item in zip(rows, status["history"], strict=True):
        assert row[0] == str(item["run"])
        assert row[1].rstrip("*") == str(item["batchSize"])
        assert row[1].endswith("*") == (item["batchSize"] == 1024)  # the default batch size
        assert row[2] == str(item["powerLimitWatts"])
        assert (row[3], row[4]) == (item["result"], str(item["epochs"]))
    flat = " ".join(text.split())
    assert "Default configuration: batch size 1024 at 250 W" in flat
    savings = status["savings"]
    assert savings["basis"] == "estimated"  # run 1 profiled the default size, kept a lower limit
    assert f"Saving (estimated): {savings['energyPercent']:.2f}% energy per run" in flat

    # The same as JSON, through `kubectl kwatt` (the plugin on PATH), KUBECONFIG, and the
    # namespace of the kubeconfig's context, as kubectl takes it.
    plugin = VENV_BIN / "kubectl-kwatt"
    assert plugin.is_file(), f"{plugin} is missing: reinstall the project (make venv)"
    env = sandbox.env()
    env["PATH"] = f"{VENV_BIN}{os.pathsep}{env['PATH']}"
    env["KUBECONFIG"] = str(user_kubeconfig(sandbox, tmp_path / "user", namespace=namespace))
    chart = tmp_path / "energy.png"
    out = subprocess.run(
        [sandbox.kubectl_path, "kwatt", "report", "cifar", "--json", "--plot", str(chart)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        stdin=subprocess.DEVNULL,
    )
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["trainingJob"] == {"namespace": namespace, "name": "cifar"}
    assert (data["runsStarted"], data["runsRecorded"]) == (2, 2)
    for row, item in zip(data["runs"], status["history"], strict=True):
        for key in ("run", "job", "batchSize", "powerLimitWatts", "result", "epochs"):
            assert row[key] == item[key], key
        assert (row["energyJoules"], row["seconds"]) == (item["energyJoules"], item["seconds"])
    assert data["runs"][-1]["cumulativeEnergyJoules"] == pytest.approx(
        status["totals"]["energyJoules"]
    )
    assert data["totals"]["energyJoules"] == status["totals"]["energyJoules"]
    for key in ("energyPercent", "timePercent", "basis"):
        assert data["savings"][key] == savings[key]
    default = data["defaultConfiguration"]
    assert (default["batchSize"], default["powerLimitWatts"], default["basis"]) == (
        1024,
        250,
        "estimated",
    )
    assert chart.read_bytes()[:4] == b"\x89PNG"

    # Errors: one sentence each, exit 1.
    missing = one_sentence(kwatt_report(sandbox, "nosuch", "-n", namespace))
    assert f"TrainingJob {namespace}/nosuch not found" in missing
    held_line = one_sentence(kwatt_report(sandbox, "tj/held", "-n", namespace))
    assert held_line == (
        f"kwatt report: TrainingJob {namespace}/held has no runs yet: it is suspended "
        "(spec.suspend)."
    )
    sandbox.kubectl("create", "serviceaccount", "nobody", "-n", namespace)
    token = sandbox.kubectl("create", "token", "nobody", "-n", namespace).stdout.strip()
    nobody = user_kubeconfig(sandbox, tmp_path / "nobody", token=token)
    denied = kwatt_report(sandbox, "cifar", "-n", namespace, "--kubeconfig", str(nobody))
    line = one_sentence(denied)
    assert line.startswith(f"kwatt report: Not allowed to read TrainingJob {namespace}/cifar: ")
    assert "nobody" in line
