"""The simulator: runs worked out by hand, determinism per seed."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwatt_core.cost import CostModel
from kwatt_core.policies import Choice, KwattPolicy, ZeusPolicy
from kwatt_core.sim.simulator import SimConfig, run_once, simulate_job
from kwatt_core.sim.trace import load_workloads

from .conftest import TRACE_DIR

MODEL = CostModel(0.5, 250.0)


def tiny(tiny_trace: Path):  # type: ignore[no-untyped-def]
    return load_workloads(tiny_trace, "t4")[0]


def test_fixed_run_charges_whole_epochs(tiny_trace: Path) -> None:
    trace = tiny(tiny_trace)
    result = run_once(trace, MODEL, Choice(64, 200, None, "exploit"), 10.0, SimConfig())
    assert result.reached and result.epochs == 10
    assert result.time_s == pytest.approx(20.0) and result.energy_j == pytest.approx(2000.0)
    assert result.cost == pytest.approx(0.5 * 2000 + 125 * 20)
    assert result.profiling_steps == 0 and result.profiled_limit_w is None


def test_miss_runs_the_whole_epoch_budget(tiny_trace: Path) -> None:
    trace = tiny(tiny_trace)
    result = run_once(trace, MODEL, Choice(64, 200, None, "exploit"), None, SimConfig())
    assert not result.reached and result.epochs == 100 and not result.stopped_early


def test_early_stop_before_the_epoch_that_would_cross(tiny_trace: Path) -> None:
    trace = tiny(tiny_trace)
    # One epoch of 64 @ 200 W costs 0.5*200 + 125*2 = 350; a threshold of 1000 allows 2 epochs.
    result = run_once(trace, MODEL, Choice(64, 200, 1000.0, "explore"), 10.0, SimConfig())
    assert (result.epochs, result.reached, result.stopped_early) == (2, False, True)
    assert result.cost == pytest.approx(700.0)


def test_profiling_run_is_charged_step_by_step(tiny_trace: Path) -> None:
    trace = tiny(tiny_trace)
    # CIFAR-100 at batch 64: 782 iterations per epoch, enough for both 50-step windows.
    result = run_once(trace, MODEL, Choice(64, None, None, "explore"), 10.0, SimConfig())
    # Per epoch: 250 W costs 0.5*240 + 125*1.5 = 307.5, 200 W costs 0.5*200 + 125*2 = 350.
    assert result.profiled_limit_w == 250
    # 250 W is profiled first (steps 1-50), 200 W next (steps 51-100); the 101st step begin
    # closes the last window and goes back to 250 W. So 50 of 7820 steps ran at 200 W.
    assert result.profiling_steps == 101
    assert result.energy_j == pytest.approx(10 * 240.0 + 50 * (200.0 - 240.0) / 782)
    assert result.time_s == pytest.approx(10 * 1.5 + 50 * (2.0 - 1.5) / 782)


def test_upstream_charge_is_first_epoch_at_the_mean(tiny_trace: Path) -> None:
    trace = tiny(tiny_trace)
    result = run_once(
        trace, MODEL, Choice(128, None, None, "explore"), 30.0, SimConfig(charge="upstream")
    )
    # 128: 200 W costs 0.5*150 + 125*1.0 = 200 per epoch; 250 W: 0.5*180 + 112.5 = 202.5.
    assert result.profiled_limit_w == 200
    # First epoch at the mean of both limits: time (1.0 + 0.9) / 2, energy (150 + 180) / 2.
    assert result.time_s == pytest.approx(29 * 1.0 + 0.95)
    assert result.energy_j == pytest.approx(29 * 150.0 + 165.0)


@pytest.mark.parametrize("policy", [ZeusPolicy, KwattPolicy])
def test_same_seed_same_numbers(policy: type) -> None:
    (trace,) = load_workloads(TRACE_DIR, "v100", ["sentiment140"])
    first = simulate_job(trace, policy(), 3, 30, SimConfig())
    again = simulate_job(trace, policy(), 3, 30, SimConfig())
    other = simulate_job(trace, policy(), 4, 30, SimConfig())
    assert first == again
    assert [r.cost for r in first] != [r.cost for r in other] or first == other


def test_upstream_charge_keeps_the_profile_of_a_run_that_could_not_start(
    tiny_trace: Path,
) -> None:
    """Upstream profiles a new batch size before it finds that not one epoch fits under
    the threshold, and keeps that limit: the next run of the size does not profile again."""
    trace = tiny(tiny_trace)
    result = run_once(
        trace, MODEL, Choice(128, None, 100.0, "explore"), 30.0, SimConfig(charge="upstream")
    )
    assert not result.started and result.cost == 0.0
    assert result.profiled_limit_w == 200  # 200 per epoch at 200 W, 202.5 at 250 W
