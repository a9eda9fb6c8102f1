"""`kwatt sandbox` on the command line: bad options are one sentence and exit 2, and a
plain run gives the default nodes and stops cleanly on SIGTERM.

The sandbox is a test and demo harness (a real control plane, simulated nodes and
GPUs); production is a real cluster. The option checks need no cluster: they fail
before anything starts.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from kwatt_sandbox.controlplane.build import ensure_binaries
from kwatt_sandbox.nodes import MAX_GPUS
from kwatt_sandbox.testing import eventually

KWATT = [sys.executable, "-m", "kwatt_cli.main", "sandbox"]


def kwatt_sandbox(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*KWATT, *args], capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL
    )


def one_sentence(stderr: str) -> str:
    """The error, checked to be a single line that ends a sentence, without a traceback."""
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    [line] = lines
    assert line.startswith("kwatt sandbox: ") and line.endswith("."), line
    return line


@pytest.mark.parametrize("node", ["gpu-0=h999x2", "gpu-0=v100x0", "gpu-0=v100x999", "GPU_0"])
def test_malformed_node_is_one_sentence_naming_models_and_bounds(node: str, tmp_path: Path) -> None:
    """A bad --node exits 2 with one sentence that names the GPU models of the bundled
    traces (v100, p100) and the allowed GPU count."""
    result = kwatt_sandbox("--kubeconfig", str(tmp_path / "kubeconfig"), "--node", node)
    assert result.returncode == 2
    line = one_sentence(result.stderr)
    assert repr(node) in line
    assert "v100" in line and "p100" in line
    assert f"from 1 to {MAX_GPUS}" in line
    assert not (tmp_path / "kubeconfig").exists()


def test_duplicate_node_names_are_one_sentence(tmp_path: Path) -> None:
    """Two --node options with the same name exit 2 with one sentence naming it."""
    result = kwatt_sandbox(
        "--kubeconfig",
        str(tmp_path / "kubeconfig"),
        "--node",
        "gpu-0=v100x2",
        "--node",
        "gpu-0=p100",
    )
    assert result.returncode == 2
    assert "gpu-0" in one_sentence(result.stderr)


def test_kubeconfig_directory_is_one_sentence(tmp_path: Path) -> None:
    """--kubeconfig naming a directory exits 2 with one sentence, before anything starts."""
    result = kwatt_sandbox("--kubeconfig", str(tmp_path))
    assert result.returncode == 2
    line = one_sentence(result.stderr)
    assert "--kubeconfig" in line and "directory" in line


def test_port_out_of_range_is_one_sentence(tmp_path: Path) -> None:
    """--port 70000 exits 2 with one sentence giving the valid range."""
    result = kwatt_sandbox("--kubeconfig", str(tmp_path / "kubeconfig"), "--port", "70000")
    assert result.returncode == 2
    line = one_sentence(result.stderr)
    assert "70000" in line and "65535" in line


@pytest.mark.timeout(600)  # builds the control plane first on a machine that lacks it
def test_plain_run_has_default_nodes_and_stops_on_sigterm(tmp_path: Path) -> None:
    """`kwatt sandbox --kubeconfig F --ready-file R` with no --node gives the nodes cpu-0
    and gpu-0, reachable with kubectl through F, and exits 0 on SIGTERM."""
    kubectl = str(ensure_binaries(sys.stderr).path("kubectl"))
    kubeconfig, ready = tmp_path / "kubeconfig", tmp_path / "ready.json"
    output = (tmp_path / "sandbox.out").open("wb")
    proc = subprocess.Popen(
        [*KWATT, "--kubeconfig", str(kubeconfig), "--ready-file", str(ready)],
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
    )
    try:
        eventually(lambda: ready.exists() or proc.poll() is not None, timeout=120, interval=0.1)
        assert proc.poll() is None, (tmp_path / "sandbox.out").read_text()
        state = json.loads(ready.read_text())
        assert state["nodes"] == ["cpu-0", "gpu-0"]
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        result = subprocess.run(
            [kubectl, "get", "nodes", "-o", "json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        nodes = {n["metadata"]["name"] for n in json.loads(result.stdout)["items"]}
        assert nodes == {"cpu-0", "gpu-0"}
        started = time.monotonic()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
        assert time.monotonic() - started < 30
        assert not Path(state["directory"]).exists()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        output.close()
