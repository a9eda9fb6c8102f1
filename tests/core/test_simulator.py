"""The simulator: runs worked out by hand, its noise, determinism per seed."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from kwatt_core.cost import CostModel
from kwatt_core.policies import Choice, KwattPolicy, ZeusPolicy
from kwatt_core.sim import peer
from kwatt_core.sim.simulator import (
    NO_NOISE,
    NOISE_STREAM,
    Noise,
    RunLuck,
    SimConfig,
    run_luck,
    run_once,
    simulate_job,
)
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


def test_noise_factors_have_mean_one_and_the_documented_spreads() -> None:
    """Every factor is log-normal with mean one, so the trace's expectations (and the
    oracle) stay as they are; a window of s steps strays sqrt(40 / s) times a 40-step one."""
    noise = Noise()
    luck = RunLuck.draw(np.random.default_rng(0), 40_000, 0)
    paces = np.array([luck.epoch_factor(noise, e) for e in range(40_000)])
    assert paces.mean() == pytest.approx(1.0, abs=0.001)
    assert np.log(paces).std() == pytest.approx(noise.epoch_time_sd, rel=0.02)
    assert noise.window_sds(10) == pytest.approx(
        (2 * noise.window_time_sd, 2 * noise.window_power_sd)
    )
    assert (
        not NO_NOISE.enabled and run_luck(squad_v100(), SimConfig(noise=NO_NOISE), 0, 0, 0) is None
    )


def squad_v100():  # type: ignore[no-untyped-def]
    (trace,) = load_workloads(TRACE_DIR, "v100", ["squad"])
    return trace


def test_the_same_try_meets_the_same_noise_whatever_the_policy() -> None:
    """Recurrence r, try t of a seed draws its noise from (seed, r, t) alone: policies are
    compared on the same luck, and the peer's runner draws the very same numbers."""
    trace, config = squad_v100(), SimConfig()
    first, again = run_luck(trace, config, 3, 5, 1), run_luck(trace, config, 3, 5, 1)
    assert first == again and first != run_luck(trace, config, 3, 5, 2)
    assert first is not None and len(first.epoch) == trace.spec.max_epochs
    assert len(first.window) == len(trace.limits_w)
    z = np.random.default_rng([3, NOISE_STREAM, 5, 1]).standard_normal(6 + 2 * 7)
    assert first.epoch == pytest.approx(z[:6]) and first.window[1] == pytest.approx(z[8:10])


def test_the_profiler_sees_noisy_windows_and_the_run_pays_the_truth(tiny_trace: Path) -> None:
    """250 W is cheaper (307.5 an epoch against 350 at 200 W), but its window reads 2.4 x
    slower: the profile keeps 200 W. The run is charged what it truly ran: steps 1-50 at
    250 W, the other 7770 of its ten 782-step epochs at 200 W."""
    trace = tiny(tiny_trace)
    noise = Noise(epoch_time_sd=0.0, window_time_sd=0.5, window_power_sd=0.0)
    luck = RunLuck(epoch=(0.0,) * 100, window=((2.0, 0.0), (0.0, 0.0)))
    result = run_once(
        trace,
        MODEL,
        Choice(64, None, None, "explore"),
        10.0,
        SimConfig(noise=noise),
        luck=luck,
    )
    assert result.profiled_limit_w == 200
    assert result.time_s == pytest.approx(50 * 1.5 / 782 + 7770 * 2.0 / 782)
    assert result.energy_j == pytest.approx(50 * 240.0 / 782 + 7770 * 200.0 / 782)
    slow = math.exp(0.5 * 2.0 - 0.125)  # the 250 W window's time factor
    (w250, w200) = result.windows
    # Per step, as measured: 250 W costs 307.5 / 782 per step, times the slow window.
    assert w250[:3] == (250, pytest.approx(307.5 / 782 * slow), 40)
    assert w200[:3] == (200, pytest.approx(350.0 / 782 * math.exp(-0.125)), 40)
    assert w250[3] == pytest.approx(160.0) and w200[3] == pytest.approx(100.0)  # watts


def test_the_policy_learns_the_mean_cost_of_the_whole_epochs_at_the_kept_limit(
    tiny_trace: Path,
) -> None:
    """As the sidecar reports it: each epoch has its pace, and the epoch cost the policy
    gets is the mean of the epochs run wholly at the kept limit, with how many they were;
    none if profiling took every epoch."""
    trace = tiny(tiny_trace)
    noise = Noise(epoch_time_sd=0.1, window_time_sd=0.0, window_power_sd=0.0)
    luck = RunLuck(epoch=(1.0, -1.0, 0.5) + (0.0,) * 97, window=())
    fixed = run_once(
        trace, MODEL, Choice(64, 200, None, "exploit"), 3.0, SimConfig(noise=noise), luck=luck
    )
    paces = [math.exp(0.1 * z - 0.005) for z in (1.0, -1.0, 0.5)]
    assert fixed.time_s == pytest.approx(2.0 * sum(paces))
    assert fixed.epoch_cost == pytest.approx(350.0 * sum(paces) / 3)
    assert fixed.kept_epochs == 3
    # 128 (391 steps an epoch) profiles within its first epoch: the next two are whole.
    profiled = run_once(
        trace, MODEL, Choice(128, None, None, "explore"), 3.0, SimConfig(noise=noise), luck=luck
    )
    point = trace.power[(128, profiled.power_limit_w)]
    per_epoch = MODEL.cost(point.energy_per_epoch_j, point.time_per_epoch_s)
    assert profiled.kept_epochs == 2
    assert profiled.epoch_cost == pytest.approx(per_epoch * (paces[1] + paces[2]) / 2)
    once = run_once(
        trace, MODEL, Choice(128, None, None, "explore"), 1.0, SimConfig(noise=noise), luck=luck
    )
    assert once.reached and once.epochs == 1 and once.epoch_cost is None
    assert once.kept_epochs == 0


def test_the_peer_gets_the_noise_of_its_40_step_windows() -> None:
    trace = squad_v100()
    request = peer.request_for([trace], TRACE_DIR, 2, {"squad": 10}, 0.5, 2.0, Noise())
    assert request["noise"] == {
        "epoch_time_sd": Noise().epoch_time_sd,
        "window_time_sd": Noise().window_time_sd,
        "window_power_sd": Noise().window_power_sd,
    }
    quiet = peer.request_for([trace], TRACE_DIR, 2, {"squad": 10}, 0.5, 2.0)
    assert not any(quiet["noise"].values())
