"""`kwatt bench` as a user runs it: output shape, and one clear sentence for bad input."""

from __future__ import annotations

import dataclasses
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from kwatt_cli.bench import _print_summary
from kwatt_core.sim.simulator import NO_NOISE, Noise

from .conftest import TRACE_DIR

KEYS = {
    "cumulative_energy_j",
    "cumulative_time_s",
    "cumulative_cost",
    "regret",
    "regret_se",
    "regret_first20",
    "regret_first20_se",
    "regret_pct_se",
    "regret_first20_pct_se",
    "last10_energy_saving_pct",
    "last10_energy_saving_pct_se",
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
    assert report["noise"] == dataclasses.asdict(Noise())  # the realistic world by default
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
    row = next(line for line in out.stdout.splitlines() if policy_row(line, "kwatt"))
    assert "±" not in row  # one seed: no standard error
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


def summary_lines(stdout: str) -> tuple[dict[str, str], list[str]]:
    """The kwatt-against-zeus summary: its lines by first word, and its n/a footnotes."""
    tail = [line for line in stdout.split("kwatt against zeus", 1)[1].splitlines()[1:] if line]
    notes = [line for line in tail if line.split()[0] == "n/a"]
    return {line.split()[0]: line for line in tail if line not in notes}, notes


def test_one_seed_summary_prints_no_meaningless_regret_ratio() -> None:
    """With one seed a policy can beat the oracle's expected cost by luck (regret below
    zero): a ratio to a regret that is not clearly positive means nothing, so the summary
    says n/a and why, and the mean leaves that workload out and says so."""
    args = ["bench", "--trace-dir", str(TRACE_DIR), "--gpu", "v100", "--seeds", "1"]
    text, data = kwatt(*args), kwatt(*args, "--json")
    assert text.returncode == 0 and data.returncode == 0, text.stderr + data.stderr
    lines, notes = summary_lines(text.stdout)
    shown: dict[str, list[float]] = {"regret": [], "first": []}
    left_out = {"regret": 0, "first": 0}
    for wl in json.loads(data.stdout)["workloads"]:
        line = lines[wl["name"]]
        cells = {
            "regret": line.split("regret", 1)[1].split()[0],
            "first": line.split("first 20", 1)[1].split()[0],
        }
        for cell, key in (("regret", "regret"), ("first", "regret_first20")):
            zeus, kw = wl["policies"]["zeus"][key], wl["policies"]["kwatt"][key]
            if zeus <= 0 or kw < 0:
                assert cells[cell] == "n/a", (wl["name"], cell, line)
            if cells[cell] == "n/a":
                left_out[cell] += 1
                assert any(wl["name"] in note for note in notes), f"why is {wl['name']} n/a?"
            else:
                assert float(cells[cell]) >= 0.0, line
                shown[cell].append(float(cells[cell]))
    # squad's zeus regret (0.14 kWh of 42.7) is below what the oracle itself loses or
    # gains by luck of the draws (-0.89 kWh): no ratio to it is meaningful.
    assert lines["squad"].split("regret", 1)[1].split()[0] == "n/a"
    assert left_out["regret"] >= 1
    mean = lines["mean"]
    assert float(mean.split("regret", 1)[1].split()[0]) == pytest.approx(
        sum(shown["regret"]) / len(shown["regret"]), abs=0.01
    )
    assert float(mean.split("first 20", 1)[1].split()[0]) == pytest.approx(
        sum(shown["first"]) / len(shown["first"]), abs=0.01
    )
    assert f"{left_out['regret']} of 6" in mean


def workload(name: str, zeus: float, kwatt: float) -> dict[str, Any]:
    """A 100-recurrence workload whose oracle costs 1 kWh a recurrence; regrets in kWh."""
    figures = {
        policy: {
            "regret": regret * 3.6e6,
            "regret_first20": regret * 3.6e6 / 5,
            "last10_energy_saving_pct": 10.0,
        }
        for policy, regret in (("zeus", zeus), ("kwatt", kwatt))
    }
    return {
        "name": name,
        "recurrences": 100,
        "oracle": {"expected_cost": 3.6e6},
        "policies": figures,
    }


def test_ratio_only_to_a_clearly_positive_zeus_regret() -> None:
    """A ratio needs zeus's regret clearly above zero: not below zero, not a sliver of
    what the oracle itself spends (0.02 kWh of 100 kWh is luck of the draws, and a
    ratio to it could be anything), and kwatt's regret not below zero either."""
    report = {
        "workloads": [
            workload("clear", zeus=10.0, kwatt=4.0),
            workload("sliver", zeus=0.02, kwatt=0.01),
            workload("negative", zeus=-1.0, kwatt=2.0),
            workload("lucky", zeus=10.0, kwatt=-0.5),
            workload("half", zeus=10.0, kwatt=5.0),
        ]
    }
    out = io.StringIO()
    _print_summary(report, out)
    lines, notes = summary_lines(out.getvalue())
    assert lines["clear"].split()[1:5] == ["regret", "0.40", "first", "20"]
    assert lines["half"].split()[2] == "0.50"
    for name in ("sliver", "negative", "lucky"):
        assert lines[name].split()[2] == "n/a", lines[name]
        assert lines[name].split()[5] == "n/a", lines[name]
        assert sum(name in note for note in notes) == 2, notes
    mean = lines["mean"].split()
    assert mean[2] == "0.45" and mean[5] == "0.45"  # (0.40 + 0.50) / 2
    assert "3 of 5" in lines["mean"]


def policy_row(line: str, policy: str) -> bool:
    """Whether a line of the table is `policy`'s row (not the heading, which names kwatt)."""
    words = line.split()
    return words[:1] == [policy] and words[1:2] != ["bench:"]


def test_without_noise_and_with_standard_errors() -> None:
    """--noise none replays the trace's exact figures; with two seeds or more every regret
    and last-10 figure carries its standard error, in the JSON and in the table."""
    args = ["bench", "--gpu", "v100", "--workload", "sentiment140", "--recurrences", "12"]
    exact = kwatt(*args, "--seeds", "2", "--noise", "none", "--json")
    assert exact.returncode == 0, exact.stderr
    report = json.loads(exact.stdout)
    assert report["noise"] == dataclasses.asdict(NO_NOISE)
    oracle = report["workloads"][0]["policies"]["oracle"]
    # Sentiment140's seed runs all need 3 epochs: without noise the oracle's luck is nil.
    assert oracle["regret"] == pytest.approx(0.0, abs=1e-6) and oracle["regret_se"] == 0.0
    table = kwatt(*args, "--seeds", "3")
    assert "noisy epochs and profiling windows" in table.stdout
    kwatt_row = next(line for line in table.stdout.splitlines() if policy_row(line, "kwatt"))
    assert kwatt_row.count("±") == 4  # regret %, regret@20 %, last-10 saving and time
