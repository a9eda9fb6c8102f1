"""The benchmark's figures against their definitions (docs/benchmark.md, `sim.bench`):
each percentage is its figure over the oracle's expected cost, the per-seed figures average
to the table's, and the table shows what is not a number as "-"."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from kwatt_core.policies import KwattPolicy
from kwatt_core.sim.bench import (
    POLICIES,
    BenchConfig,
    BenchError,
    bench_workload,
    last10_saving_pct_per_seed,
    regret_pct_per_seed,
    summary_row,
)
from kwatt_core.sim.simulator import simulate_job
from kwatt_core.sim.trace import load_workloads

SEEDS, N = 3, 24


@pytest.fixture
def figures(tiny_trace: Path) -> tuple[dict[str, object], list[float], list[float]]:
    """The kwatt policy's runs of the tiny trace, as the figures of a peer row, and the
    per-seed regret and last-10 saving of the same runs."""
    (trace,) = load_workloads(tiny_trace, "t4")
    config = BenchConfig(seeds=SEEDS, recurrences=N, policies=("oracle",))
    runs = [simulate_job(trace, KwattPolicy(), s, N, config.sim) for s in range(SEEDS)]
    report = bench_workload(trace, config, peers={"ours": runs})
    oracle_cost = report["oracle"]["expected_cost"]
    per_seed = regret_pct_per_seed(runs, oracle_cost)
    savings = last10_saving_pct_per_seed(runs, trace, config.sim.eta)
    return {**report["policies"]["ours"], "oracle_cost": oracle_cost}, per_seed, savings


def test_percentages_are_of_the_oracles_expected_cost(
    figures: tuple[dict[str, float], list[float], list[float]],
) -> None:
    fig, _, _ = figures
    oracle = fig["oracle_cost"]
    assert fig["regret_pct"] == pytest.approx(100 * fig["regret"] / (N * oracle))
    assert fig["regret_first20_pct"] == pytest.approx(100 * fig["regret_first20"] / (20 * oracle))
    assert fig["regret_pct_se"] == pytest.approx(100 * fig["regret_se"] / (N * oracle))
    assert fig["regret_first20_pct_se"] == pytest.approx(
        100 * fig["regret_first20_se"] / (20 * oracle)
    )


def test_per_seed_figures_average_to_the_tables(
    figures: tuple[dict[str, float], list[float], list[float]],
) -> None:
    fig, per_seed, savings = figures
    assert len(per_seed) == len(savings) == SEEDS
    assert np.mean(per_seed) == pytest.approx(fig["regret_pct"])
    assert np.mean(savings) == pytest.approx(fig["last10_energy_saving_pct"])
    se = np.std(savings, ddof=1) / math.sqrt(SEEDS)
    assert fig["last10_energy_saving_pct_se"] == pytest.approx(se)


def test_one_seed_has_no_standard_error(tiny_trace: Path) -> None:
    (trace,) = load_workloads(tiny_trace, "t4")
    report = bench_workload(trace, BenchConfig(seeds=1, recurrences=4, policies=("default",)))
    fig = report["policies"]["default"]
    assert all(fig[k] is None for k in fig if k.endswith("_se"))
    assert "±" not in "".join(summary_row(fig))


def test_an_unknown_policy_lists_the_known_ones() -> None:
    known = ", ".join(POLICIES)
    with pytest.raises(BenchError, match=f"Unknown policy 'fast'; choose from {known}"):
        BenchConfig(policies=("kwatt", "fast"))


def row(**changes: float | None) -> list[str]:
    fig: dict[str, float | None] = {
        "cumulative_energy_j": 7.2e6,
        "cumulative_time_s": 5400.0,
        "cumulative_cost": 3.6e6,
        "regret": 1.8e6,
        "regret_pct": 12.345,
        "regret_pct_se": 0.5,
        "regret_first20_pct": 20.0,
        "regret_first20_pct_se": None,
        "last10_energy_saving_pct": 31.25,
        "last10_energy_saving_pct_se": 2.04,
        "last10_time_change_pct": -3.0,
        "last10_time_change_pct_se": 0.26,
        "converged_at": None,
        "profiling_steps": 1234.4,
    }
    fig.update(changes)
    return summary_row(fig)


def test_the_table_row() -> None:
    assert row() == [
        "2.00",  # kWh
        "1.5",  # h
        "1.00",
        "0.50",
        "12.35±0.50",
        "20.00",  # no standard error, no ±
        "+31.2±2.0",
        "-3.0±0.3",
        "-",  # never converged
        "1234",
    ]


def test_a_figure_that_is_not_a_number_shows_as_a_dash_alone() -> None:
    assert row(regret_pct=float("nan"))[4] == "-"
    assert row(last10_time_change_pct=None)[7] == "-"
