"""Bad settings stop the real sidecar process at start: exit 2, one sentence naming the
variable in the log and, as a failed run's note, in the termination message."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from sidecar_support import free_port, make_node, start_sidecar

from kwatt_core.report import decode

pytestmark = pytest.mark.timeout(120)


def run_sidecar(tmp: Path, **env: str) -> tuple[int, str, Path]:
    """Start `python -m kwatt_sidecar` on a simulated node; its exit code, stderr, report path."""
    termination = tmp / "termination"
    full = {
        **os.environ,
        "KWATT_GPU_BACKEND": "simulated",
        "KWATT_SIM_GPU_DIR": str(tmp / "gpus"),
        "KWATT_STATE_DIR": str(tmp / "state"),
        "KWATT_TERMINATION_PATH": str(termination),
        "KWATT_PORT": str(free_port()),
        "KWATT_METRICS_PORT": str(free_port()),
        "KWATT_BATCH_SIZE": "64",
        **env,
    }
    done = subprocess.run(
        [sys.executable, "-m", "kwatt_sidecar"],
        env=full,
        capture_output=True,
        text=True,
        timeout=20,  # a sidecar that accepts the setting serves until stopped: a failure here
    )
    return done.returncode, done.stderr, termination


def assert_refused(tmp: Path, variable: str, **env: str) -> str:
    code, stderr, termination = run_sidecar(tmp, **env)
    assert code == 2, stderr
    assert "Traceback" not in stderr, stderr
    lines = [json.loads(line) for line in stderr.splitlines() if line.strip()]
    errors = [line["msg"] for line in lines if line["level"] == "ERROR"]
    assert len(errors) == 1, lines
    sentence = errors[0]
    assert variable in sentence and sentence.endswith(".") and "\n" not in sentence
    report = decode(termination.read_text())
    assert report.result == "failed" and report.epochs == 0 and report.energy_j == 0.0
    assert variable in report.note and "could not start" in report.note
    assert sentence.split(": ", 1)[1] in report.note  # the same sentence in both
    return sentence


BAD = [
    ("KWATT_SAMPLE_INTERVAL_S", "abc"),
    ("KWATT_SAMPLE_INTERVAL_S", "0"),
    ("KWATT_SAMPLE_INTERVAL_S", "-1"),
    ("KWATT_SAMPLE_INTERVAL_S", "nan"),
    ("KWATT_SAMPLE_INTERVAL_S", "inf"),
    ("KWATT_SAMPLE_INTERVAL_S", "1e9"),
    ("KWATT_LOG_LEVEL", "verbose"),
    ("KWATT_MEASURE_STEPS", "0"),
    ("KWATT_MEASURE_STEPS", "2000000"),
    ("KWATT_WARMUP_STEPS", "-1"),
    ("KWATT_BATCH_SIZE", "0"),
    ("KWATT_BATCH_SIZE", "-5"),
    ("KWATT_BATCH_SIZE", "1.5"),
    ("KWATT_MAX_EPOCHS", "0"),
    ("KWATT_ETA", "2"),
    ("KWATT_ETA", "nan"),
    ("KWATT_COST_THRESHOLD", "0"),
    ("KWATT_COST_THRESHOLD", "-3"),
    ("KWATT_TARGET_METRIC", "nan"),
    ("KWATT_CACHED_LIMIT_W", "0"),
    ("KWATT_CACHED_LIMIT_W", "1e6"),
    ("KWATT_PORT", "70000"),
    ("KWATT_METRICS_PORT", "-1"),
]


@pytest.mark.parametrize(("variable", "value"), BAD, ids=[f"{k}={v}" for k, v in BAD])
def test_bad_setting_exits_2_with_one_sentence(tmp_path: Path, variable: str, value: str) -> None:
    assert_refused(tmp_path, variable, **{variable: value})


def test_bad_fixed_limit(tmp_path: Path) -> None:
    assert_refused(
        tmp_path, "KWATT_FIXED_LIMIT_W", KWATT_POWER_MODE="fixed", KWATT_FIXED_LIMIT_W="0"
    )


def test_failed_report_keeps_the_runs_batch_size_and_mode(tmp_path: Path) -> None:
    assert_refused(tmp_path, "KWATT_LOG_LEVEL", KWATT_LOG_LEVEL="loud", KWATT_POWER_MODE="observe")
    report = decode((tmp_path / "termination").read_text())
    assert (report.batch_size, report.mode) == (64, "observe")


def test_same_port_twice(tmp_path: Path) -> None:
    port = str(free_port())
    sentence = assert_refused(tmp_path, "KWATT_PORT", KWATT_PORT=port, KWATT_METRICS_PORT=port)
    assert "KWATT_METRICS_PORT" in sentence


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    """A port some other process listens on, on all addresses."""
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        yield held


def test_protocol_port_in_use(tmp_path: Path, listening: socket.socket) -> None:
    port = str(listening.getsockname()[1])
    sentence = assert_refused(tmp_path, f"KWATT_PORT={port}", KWATT_PORT=port)
    assert "KWATT_METRICS_PORT" not in sentence


def test_metrics_port_in_use(tmp_path: Path, listening: socket.socket) -> None:
    port = str(listening.getsockname()[1])
    assert_refused(tmp_path, f"KWATT_METRICS_PORT={port}", KWATT_METRICS_PORT=port)


def test_settings_at_the_edges_of_their_ranges_start(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(
        node,
        KWATT_SAMPLE_INTERVAL_S="0.5",
        KWATT_LOG_LEVEL="debug",
        KWATT_MEASURE_STEPS="1",
        KWATT_WARMUP_STEPS="0",
        KWATT_BATCH_SIZE="1",
        KWATT_ETA="1",
    )
    assert sc.stop() == 0
    assert sc.report()["result"] == "interrupted"


def test_the_sidecar_imports_nothing_of_the_sandbox() -> None:
    code = (
        "import sys, kwatt_sidecar.app, kwatt_sidecar.gpu.simulated;"
        "from kwatt_sidecar.gpu import open_backend;"
        "open_backend({'KWATT_GPU_BACKEND': 'simulated', 'KWATT_SIM_GPU_DIR': '/nonexistent'});"
        "bad = sorted(m for m in sys.modules if m.startswith('kwatt_sandbox'));"
        "assert not bad, bad"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
