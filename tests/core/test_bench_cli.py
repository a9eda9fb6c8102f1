"""`kwatt bench` as a user runs it: output shape, and one clear sentence for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import TRACE_DIR

KEYS = {
    "cumulative_energy_j",
    "cumulative_time_s",
    "cumulative_cost",
    "regret",
    "regret_first20",
    "last10_energy_saving_pct",
    "last10_time_change_pct",
    "converged_at",
    "profiling_steps",
}


def kwatt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kwatt_cli.main", *args], capture_output=True, text=True, timeout=120
    )


def test_json_has_every_figure_per_policy() -> None:
    args = ["bench", "--trace-dir", str(TRACE_DIR), "--gpu", "v100", "--workload", "squad"]
    args += ["--seeds", "2", "--recurrences", "25", "--json"]
    out = kwatt(*args)
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    (workload,) = report["workloads"]
    assert workload["name"] == "squad"
    assert set(workload["policies"]) == {"default", "zeus", "kwatt", "oracle"}
    for figures in workload["policies"].values():
        assert set(figures) >= KEYS
    again = kwatt(*args)
    first, second = json.loads(out.stdout), json.loads(again.stdout)
    first.pop("elapsed_s"), second.pop("elapsed_s")
    assert first == second  # same seed, same numbers


def test_table_and_plot(tmp_path: Path) -> None:
    plot = tmp_path / "regret.png"
    out = kwatt(
        "bench",
        "--gpu",
        "p100",
        "--workload",
        "sentiment140",
        "--seeds",
        "1",
        "--recurrences",
        "12",
        "--plot",
        str(plot),
    )
    assert out.returncode == 0, out.stderr
    assert "sentiment140" in out.stdout and "kwatt" in out.stdout
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def write_bad_trace(tmp_path: Path, kind: str) -> Path:
    for name in ("summary_train.csv", "summary_power_v100.csv"):
        (tmp_path / name).write_text((TRACE_DIR / name).read_text())
    if kind == "missing":
        (tmp_path / "summary_train.csv").unlink()
    elif kind == "malformed":
        power = tmp_path / "summary_power_v100.csv"
        lines = power.read_text().splitlines()
        lines[5] = lines[5].rsplit(",", 1)[0] + ",lots"
        power.write_text("\n".join(lines) + "\n")
    return tmp_path


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--gpu", "a100"], "Unknown GPU 'a100'"),
        (["--workload", "mnist"], "Unknown workload 'mnist'"),
        (["--eta", "1.5"], "--eta must be between 0 and 1"),
        (["--eta", "-0.1"], "--eta must be between 0 and 1"),
        (["--seeds", "0"], "--seeds must be at least 1"),
        (["--beta", "1"], "--beta must be greater than 1"),
        (["--plot", "out.jpg"], "--plot needs a .png"),
    ],
)
def test_bad_arguments_give_one_sentence(args: list[str], message: str) -> None:
    out = kwatt("bench", "--trace-dir", str(TRACE_DIR), *args)
    assert out.returncode == 2
    assert message in out.stderr
    assert "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        ("missing", "summary_train.csv does not exist"),
        ("malformed", "line 6: column 'average_power' should be a number, got 'lots'"),
    ],
)
def test_bad_trace_files_are_named(tmp_path: Path, kind: str, message: str) -> None:
    out = kwatt("bench", "--trace-dir", str(write_bad_trace(tmp_path, kind)), "--gpu", "v100")
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr


def test_missing_directory() -> None:
    out = kwatt("bench", "--trace-dir", "/nonexistent/traces")
    assert out.returncode == 2 and "does not exist" in out.stderr
