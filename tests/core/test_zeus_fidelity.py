"""The `zeus` policy against real Zeus (issue 11): its regret within two standard errors.

Real Zeus's figures are PyPI zeus==0.16.0's own legacy simulator on the bundled traces,
made by the command stored with them in data/zeus_upstream.json (regenerate with
`.venv/bin/python benchmarks/zeus_peer_figures.py`, which builds the peer environment
once), so this test needs no Zeus environment. Our side runs the `zeus` policy in
kwatt's simulator with upstream's charge (`--charge upstream`: what upstream's
simulator charges for profiling and early stops), the same workloads, eta, beta,
recurrence count and seed numbers, and the same noise (the benchmark's default, which
the peer's runner gives upstream's simulator too; stored with the figures). The two draw
different random numbers, so each mean is an estimate with a standard error over seeds;
"within two standard errors" is of their difference, sqrt(se_ours^2 + se_zeus^2).
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from kwatt_core.policies import ZeusPolicy
from kwatt_core.sim.bench import regret_pct_per_seed
from kwatt_core.sim.peer import find_env, recurrences_of, run_peer
from kwatt_core.sim.simulator import Noise, SimConfig, cost_model_for, simulate_job
from kwatt_core.sim.trace import load_workloads

from .conftest import TRACE_DIR

DATA = Path(__file__).parent / "data" / "zeus_upstream.json"
ROUNDING = 1e-5  # stored per-seed figures have 6 decimals (percentage points)
# Our side runs the first 50 of the stored seeds: its standard error is then about 1.4x
# real Zeus's (stored at 100 seeds), and the test takes half the time. Both enter the
# allowed difference, so the check stays a fair two-standard-error test.
OUR_SEEDS = 50


@pytest.fixture(scope="module")
def stored() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DATA.read_text())
    return data


def mean_se(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) / math.sqrt(len(values))


def test_stored_figures_are_of_these_traces(stored: dict[str, Any]) -> None:
    assert "benchmarks/zeus_peer_figures.py" in stored["command"]
    assert stored["versions"]["zeus"] == "0.16.0"
    assert stored["noise"] == dataclasses.asdict(Noise())  # the benchmark's world
    assert set(stored["gpus"]) == {"v100", "p100"}
    for gpu, workloads in stored["gpus"].items():
        traces = load_workloads(TRACE_DIR, gpu)
        assert set(workloads) == {t.spec.name for t in traces}, gpu
        for trace in traces:
            figures = workloads[trace.spec.name]
            _, _, oracle = trace.best_config(cost_model_for(trace, stored["eta"]))
            assert figures["batch_sizes"] == list(trace.batch_sizes)
            assert figures["power_limits_w"] == list(trace.limits_w)
            assert figures["recurrences"] == 2 * len(trace.batch_sizes) * len(trace.limits_w)
            assert figures["oracle_expected_cost"] == pytest.approx(oracle, rel=1e-12)
            assert len(figures["regret_pct"]) == len(stored["seeds"])


@pytest.mark.parametrize("gpu", ["v100", "p100"])
def test_zeus_regret_is_within_two_standard_errors_of_real_zeus(
    stored: dict[str, Any], gpu: str
) -> None:
    sim = SimConfig(stored["eta"], stored["beta"], "upstream", Noise(**stored["noise"]))
    misses = []
    for trace in load_workloads(TRACE_DIR, gpu):
        real = stored["gpus"][gpu][trace.spec.name]
        runs = [
            simulate_job(trace, ZeusPolicy(), seed, real["recurrences"], sim)
            for seed in stored["seeds"][:OUR_SEEDS]
        ]
        (ours, ours_se) = mean_se(regret_pct_per_seed(runs, real["oracle_expected_cost"]))
        (zeus, zeus_se) = mean_se(real["regret_pct"])
        allowed = 2.0 * math.hypot(ours_se, zeus_se) + ROUNDING
        if abs(ours - zeus) > allowed:
            misses.append(
                f"{trace.spec.name}: zeus {ours:.2f}% ± {ours_se:.2f}, real Zeus "
                f"{zeus:.2f}% ± {zeus_se:.2f}"
            )
    assert not misses, misses


def test_stored_runs_convert_like_the_benchmark_converts_them(tiny_trace: Path) -> None:
    """The stored regret is what `regret_pct_per_seed` makes of the peer's recurrences."""
    (trace,) = load_workloads(tiny_trace, "t4")
    model = cost_model_for(trace, 0.5)
    job = {"max_power_w": 250, "seeds": {"0": {"runs": [[128, 200, 150.0 * 30, 30.0, True]]}}}
    (history,) = recurrences_of(job, trace, model, 1, {"cifar100": 1})
    _, _, oracle = trace.best_config(model)
    (regret,) = regret_pct_per_seed([history], oracle)
    assert regret == pytest.approx(100.0 * (model.cost(4500.0, 30.0) - oracle) / oracle)


@pytest.mark.skipif(find_env() is None, reason="the Zeus peer is not built on this machine")
def test_the_peer_makes_the_stored_figures_again(stored: dict[str, Any]) -> None:
    (trace,) = load_workloads(TRACE_DIR, "p100", ["imagenet"])
    real = stored["gpus"]["p100"]["imagenet"]
    counts = {"imagenet": real["recurrences"]}
    noise = Noise(**stored["noise"])
    peer = run_peer(
        [trace], TRACE_DIR, 3, counts, stored["eta"], stored["beta"], noise=noise, workers=1
    )
    again = regret_pct_per_seed(peer.runs["imagenet"], real["oracle_expected_cost"])
    assert again == pytest.approx(real["regret_pct"][:3], abs=ROUNDING)
