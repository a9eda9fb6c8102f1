"""`kwatt bench --carbon`: the kwatt-carbon row beside kwatt, and one sentence for bad input."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import TRACE_DIR

SERIES = TRACE_DIR.parents[1] / "carbon" / "gb-2023q3-synthetic.csv"


def kwatt(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "kwatt_cli.main", *args], capture_output=True, text=True, timeout=120
    )


BASE = ["bench", "--trace-dir", str(TRACE_DIR), "--gpu", "v100", "--workload", "movielens-1m"]
BASE += ["--seeds", "2", "--recurrences", "4", "--policy", "kwatt"]


def test_json_puts_kwatt_carbon_after_kwatt_with_carbon_and_time() -> None:
    out = kwatt(*BASE, "--carbon", str(SERIES), "--carbon-reference", "80", "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert report["carbon"]["reference_g_per_kwh"] == 80
    assert report["carbon"]["interval_s"] == 1800
    (wl,) = report["workloads"]
    assert list(wl["policies"]) == ["kwatt", "kwatt-carbon"]
    for row in wl["policies"].values():
        assert row["carbon_g"] > 0 and row["cumulative_time_s"] > 0
    assert {"carbon_saved_pct", "time_added_pct", "carbon_saved_pct_se"} <= set(wl["carbon"])
    assert {"carbon_saved_pct", "time_added_pct"} <= set(wl["carbon"]["against_default"])


def test_the_table_ends_with_carbon_saved_and_time_added() -> None:
    out = kwatt(*BASE, "--carbon", str(SERIES))
    assert out.returncode == 0, out.stderr
    assert "kwatt-carbon" in out.stdout
    *_, line, last = out.stdout.strip().splitlines()
    assert line.lstrip().startswith("movielens-1m") and "saved" in line and "time added" in line
    assert last.lstrip().startswith("against the default configuration: saved")
    assert "time added" in last


def test_a_bad_series_is_one_sentence_before_anything_runs(tmp_path: Path) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("datetime,g_co2_per_kwh\n2026-01-01T00:00Z,-5\n")
    out = kwatt(*BASE, "--carbon", str(bad))
    assert out.returncode == 2
    assert "line 2 gave a negative intensity" in out.stderr
    out = kwatt(*BASE, "--carbon", str(tmp_path / "missing.csv"))
    assert out.returncode == 2 and "cannot be read" in out.stderr
