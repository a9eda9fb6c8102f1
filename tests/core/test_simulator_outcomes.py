"""What the simulator hands the policy is what each run did, and the runs the threshold
kept from starting cost nothing; a profiling window's energy is its time times its power."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest

from kwatt_core.cost import CostModel
from kwatt_core.policies import Choice, DefaultPolicy, Outcome, ZeusPolicy
from kwatt_core.sim.simulator import NO_NOISE, Noise, RunLuck, SimConfig, run_once, simulate_job
from kwatt_core.sim.trace import WorkloadTrace, load_workloads

MODEL = CostModel(0.5, 250.0)


def tiny(tiny_trace: Path) -> WorkloadTrace:
    (trace,) = load_workloads(tiny_trace, "t4")
    return trace


class Recording(DefaultPolicy):
    """The default policy, keeping every outcome it is told."""

    def __init__(self) -> None:
        self.outcomes: list[Outcome] = []

    def observe(self, state: Any, outcome: Outcome) -> Any:
        self.outcomes.append(outcome)
        return super().observe(state, outcome)


@pytest.mark.parametrize("charge", ["step", "upstream"])
def test_the_policy_learns_what_each_run_measured(tiny_trace: Path, charge: str) -> None:
    policy = Recording()
    history = simulate_job(tiny(tiny_trace), policy, 1, 6, SimConfig(charge=charge))  # type: ignore[arg-type]
    runs = [r for rec in history for r in rec.runs]
    assert len(policy.outcomes) == len(runs) >= 6
    for run, outcome in zip(runs, policy.outcomes, strict=True):
        assert (outcome.batch_size, outcome.cost, outcome.reached) == (
            run.batch_size,
            run.cost,
            run.reached,
        )
        assert (outcome.energy_j, outcome.time_s, outcome.epochs) == (
            run.energy_j,
            run.time_s,
            run.epochs,
        )
        assert outcome.epoch_cost == run.epoch_cost and outcome.epoch_cost is not None
        assert outcome.kept_epochs == run.kept_epochs
        assert (outcome.started, outcome.stopped_early) == (run.started, run.stopped_early)
        assert outcome.power_limit_w == run.profiled_limit_w
        assert outcome.kept_limit_w == run.power_limit_w


def test_a_run_the_threshold_keeps_from_starting_costs_nothing(tiny_trace: Path) -> None:
    """Upstream's charge: one epoch of 128 at 200 W costs 200, past a threshold of 100."""
    config = SimConfig(charge="upstream", noise=NO_NOISE)
    result = run_once(tiny(tiny_trace), MODEL, Choice(128, None, 100.0, "explore"), 30.0, config)
    assert not result.started and result.epochs == 0
    assert (result.energy_j, result.time_s, result.cost) == (0.0, 0.0, 0.0)
    assert result.reached is False and result.stopped_early  # stopped by the threshold
    assert result.epoch_cost is None  # no epoch ran: nothing to learn about one


def test_an_upstream_run_reports_one_epoch_at_its_limit(tiny_trace: Path) -> None:
    """128 at 200 W: 150 J and 1 s an epoch, 0.5 * 150 + 125 * 1 = 200 per epoch."""
    config = SimConfig(charge="upstream", noise=NO_NOISE)
    result = run_once(tiny(tiny_trace), MODEL, Choice(128, 200, None, "exploit"), 30.0, config)
    assert result.reached and result.epochs == 30
    assert result.epoch_cost == pytest.approx(200.0) and result.kept_epochs == 30
    # A run that profiles spends its first epoch doing so: 29 are left at the kept limit.
    profiled = run_once(tiny(tiny_trace), MODEL, Choice(128, None, None, "explore"), 30.0, config)
    assert profiled.reached and profiled.kept_epochs == 29


def test_a_windows_energy_is_its_time_times_its_power() -> None:
    """Mean-one log-normal factors exp(sd z - sd^2 / 2); a 10-step window strays twice as
    far as a 40-step one (sqrt(40 / 10))."""
    noise = Noise(epoch_time_sd=0.0, window_time_sd=0.1, window_power_sd=0.2, window_steps=40)
    luck = RunLuck(epoch=(), window=((0.5, -1.0),))
    time, energy = luck.window_factors(noise, 0, 40)
    assert time == pytest.approx(math.exp(0.1 * 0.5 - 0.005))
    assert energy / time == pytest.approx(math.exp(0.2 * -1.0 - 0.02))
    time, energy = luck.window_factors(noise, 0, 10)
    assert time == pytest.approx(math.exp(0.2 * 0.5 - 0.02))
    assert energy / time == pytest.approx(math.exp(0.4 * -1.0 - 0.08))
    assert luck.window_factors(noise, 1, 40) == (1.0, 1.0)  # no draw for it: exact


def test_zeus_policy_runs_whole_jobs_in_the_simulator(tiny_trace: Path) -> None:
    """Every recurrence ends reached or after its tries, and is the sum of its runs."""
    history = simulate_job(tiny(tiny_trace), ZeusPolicy(), 0, 8, SimConfig())
    for rec in history:
        assert rec.cost == pytest.approx(sum(r.cost for r in rec.runs))
        assert rec.reached == rec.runs[-1].reached
