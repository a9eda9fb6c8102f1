"""`kwatt sandbox`: foreground server, kubeconfig, clean stop on SIGTERM/Ctrl-C."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from sandbox_support import ROOT, eventually

pytestmark = pytest.mark.timeout(60)


def _kwatt(*args: str) -> list[str]:
    code = "import sys; from kwatt_cli.main import main; sys.exit(main(sys.argv[1:]))"
    return [sys.executable, "-c", code, *args]


def _env() -> dict[str, str]:
    import os

    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(
        [str(ROOT / "cli"), str(ROOT / "sandbox"), env.get("PYTHONPATH", "")]
    )
    return env


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_writes_kubeconfig_and_stops(tmp_path: Path, sig: signal.Signals) -> None:
    kubeconfig = tmp_path / "kc" / "config"
    proc = subprocess.Popen(
        _kwatt("sandbox", "--kubeconfig", str(kubeconfig)),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        eventually(kubeconfig.exists, timeout=20)
        result = subprocess.run(
            ["kubectl", "--kubeconfig", str(kubeconfig), "get", "ns", "-o", "name"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert "namespace/default" in result.stdout
    finally:
        time.sleep(0.1)
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out
    assert "emulator for tests and demos; production is a real cluster" in out
    assert "http://127.0.0.1:" in out


def test_cli_help_says_it_is_an_emulator_and_rejects_bad_ports(tmp_path: Path) -> None:
    help_text = subprocess.run(
        _kwatt("sandbox", "--help"), env=_env(), capture_output=True, text=True
    ).stdout
    assert "emulator for tests and demos" in help_text
    bad = subprocess.run(
        _kwatt("sandbox", "--kubeconfig", str(tmp_path / "k"), "--port", "70000"),
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert bad.stderr.strip() == "kwatt sandbox: The port must be between 0 and 65535, not 70000."


def test_cli_nodes_run_pods(tmp_path: Path) -> None:
    kubeconfig = tmp_path / "config"
    proc = subprocess.Popen(
        _kwatt(
            "sandbox", "--kubeconfig", str(kubeconfig), "--node", "gpu-0=v100x2", "--node", "cpu-0"
        ),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        eventually(kubeconfig.exists, timeout=20)
        kubectl = ["kubectl", "--kubeconfig", str(kubeconfig)]
        nodes = subprocess.run(
            [*kubectl, "get", "nodes", "-o", "name"], capture_output=True, text=True, timeout=30
        )
        assert nodes.stdout.split() == ["node/cpu-0", "node/gpu-0"]
        subprocess.run(
            [
                *kubectl,
                "run",
                "hi",
                "--image=ignored",
                "--restart=Never",
                "--command",
                "--",
                "python",
                "-c",
                "print('hello from a node')",
            ],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        )

        def logs() -> bool:
            out = subprocess.run(
                [*kubectl, "logs", "hi"], capture_output=True, text=True, timeout=30
            ).stdout
            return out == "hello from a node\n"

        eventually(logs, timeout=20)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=20)
    assert proc.returncode == 0, out


def test_cli_rejects_bad_nodes(tmp_path: Path) -> None:
    bad = subprocess.run(
        _kwatt("sandbox", "--kubeconfig", str(tmp_path / "k"), "--node", "gpu-0=v100x0"),
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2
    assert "NAME=MODELxCOUNT" in bad.stderr
