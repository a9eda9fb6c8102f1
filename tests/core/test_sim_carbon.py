"""kwatt_core.sim.carbon: pricing runs in grams, and kwatt-carbon's runs that follow the grid.

Expected grams are worked out by hand (energy in kWh times g CO2/kWh, hour by hour)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwatt_core import carbon
from kwatt_core.policies.base import Choice
from kwatt_core.sim import carbon as sc
from kwatt_core.sim import simulator as sim
from kwatt_core.sim.bench import BenchConfig
from kwatt_core.sim.trace import WorkloadTrace, load_workloads

TRACES = Path(__file__).resolve().parents[2] / "traces" / "zeus" / "trace"
HOUR = 3600.0


def series(*values: float) -> carbon.Series:
    lines = ["datetime,g_co2_per_kwh"]
    lines += [f"2026-01-01T{h:02d}:00Z,{v}" for h, v in enumerate(values)]
    return carbon.parse_series("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def imagenet() -> WorkloadTrace:
    return load_workloads(TRACES, "v100", ["imagenet"])[0]


def test_integrate_prices_each_hour_at_its_intensity() -> None:
    s = series(100, 200)
    t0 = s.start_s
    # 1 kW for half an hour at 100 g/kWh and half an hour at 200: 50 g + 100 g.
    assert sc.integrate(s, t0 + 1800, t0 + 5400, 1000.0) == pytest.approx(150.0)
    # Past the end it wraps around: the third hour is the first again (100 g).
    assert sc.integrate(s, t0 + 2 * HOUR, t0 + 3 * HOUR, 1000.0) == pytest.approx(100.0)


def test_recurrence_runs_its_tries_back_to_back() -> None:
    s = series(100, 300)
    runs = [
        sim.RunResult(8, 100, 1.8e6, 1800.0, 0.0, False, 1, True, None, 0),  # 1 kW, 30 min
        sim.RunResult(8, 100, 3.6e6, 1800.0, 0.0, True, 1, True, None, 0),  # 2 kW, 30 min
    ]
    # The first try in the first hour (0.5 kWh x 100), the second in the second (1 kWh x 300).
    assert sc.recurrence_grams(s, s.start_s + 1800, runs) == pytest.approx(50 + 300)


def test_start_times_are_on_the_hour_within_the_series_and_common_to_policies() -> None:
    s = series(*range(100, 124))
    starts = sc.start_times(s, 3, 50)
    assert starts == sc.start_times(s, 3, 50)
    assert starts != sc.start_times(s, 4, 50)
    assert all(s.start_s <= t < s.start_s + s.span_s for t in starts)
    assert all((t - s.start_s) % HOUR == 0 for t in starts)
    assert len(set(starts)) > 10  # staggered, not one start hour


def runner(trace: WorkloadTrace, s: carbon.Series, **kw: object) -> sc.CarbonRunner:
    config = sim.SimConfig(noise=sim.NO_NOISE)
    return sc.CarbonRunner(
        trace,
        sim.cost_model_for(trace, 0.5),
        config,
        s,
        carbon.CarbonSettings(**kw),  # type: ignore[arg-type]
        [s.start_s] * 4,
    )


def test_a_run_at_a_cached_limit_without_a_curve_costs_what_the_trace_says(
    imagenet: WorkloadTrace,
) -> None:
    s = series(100, 250, 80, 300, 120)
    run = runner(imagenet, s)
    result = run(Choice(256, 175, None, "exploit"), 3.0, None, 0, 0)
    point = imagenet.power[(256, 175)]
    assert result.reached and result.epochs == 3
    assert result.energy_j == pytest.approx(3 * point.energy_per_epoch_j)
    assert result.time_s == pytest.approx(3 * point.time_per_epoch_s)
    # One limit all along: its grams are those of its mean power over the same hours.
    assert run.grams[(0, 0)] == pytest.approx(sc.recurrence_grams(s, s.start_s, [result]))


def test_a_run_with_a_curve_slows_down_in_dirty_hours_and_speeds_up_in_clean_ones(
    imagenet: WorkloadTrace,
) -> None:
    iters = imagenet.spec.iterations_per_epoch(256)
    curve = tuple(
        carbon.CurvePoint(
            p,
            imagenet.power[(256, p)].energy_per_epoch_j / iters,
            imagenet.power[(256, p)].time_per_epoch_s / iters,
        )
        for p in sorted(imagenet.limits_w, reverse=True)
    )
    # With a fixed reference of 100 g: an hour at 1000 g weighs energy 10x (-> the lowest
    # energy per epoch, 150 W), an hour at 10 g almost not at all (-> 250 W, the fastest).
    for value, expected in ((1000, 150), (10, 250)):
        s = series(*([value] * 24))
        run = runner(imagenet, s, reference_g=100.0)
        run.curves[256] = curve
        result = run(Choice(256, 175, None, "exploit"), 2.0, None, 0, 0)
        point = imagenet.power[(256, expected)]
        assert result.energy_j == pytest.approx(2 * point.energy_per_epoch_j)
        assert result.time_s == pytest.approx(2 * point.time_per_epoch_s)
        assert result.power_limit_w == 175  # what the policy caches: kwatt's ordinary limit
        assert run.grams[(0, 0)] == pytest.approx(carbon.grams(result.energy_j, value))


def test_a_run_that_profiles_caches_its_curve_for_the_next_run(imagenet: WorkloadTrace) -> None:
    run = runner(imagenet, series(*([150] * 24)))
    first = run(Choice(256, None, None, "explore"), 2.0, None, 0, 0)
    assert first.profiled_limit_w is not None
    assert run.curves[256][0].limit_w == 250
    assert run.grams[(0, 0)] > 0


def test_bench_carbon_compares_the_same_seeds_and_hours(imagenet: WorkloadTrace) -> None:
    s = carbon.parse_series((TRACES.parents[1] / "carbon" / "gb-2023q3-synthetic.csv").read_text())
    config = BenchConfig(seeds=2, recurrences=3, sim=sim.SimConfig(noise=sim.NO_NOISE))
    out = sc.bench_carbon(imagenet, config, s, carbon.CarbonSettings())
    base, aware = out["kwatt"], out[sc.ROW]
    assert base["carbon_g"] > 0 and aware["carbon_g"] > 0
    assert aware["seeds"] == 2
    for key in ("regret_pct", "cumulative_time_s", "cumulative_energy_j", "carbon_g_se"):
        assert key in aware
    comparison = out["comparison"]
    # The comparison is the mean of per-seed ratios, so it lies near the ratio of means.
    ratio = 100 * (1 - aware["carbon_g"] / base["carbon_g"])
    assert comparison["carbon_saved_pct"] == pytest.approx(ratio, abs=2.0)
    assert comparison["time_added_pct_se"] is not None


def test_under_a_steady_grid_kwatt_carbon_is_kwatt(imagenet: WorkloadTrace) -> None:
    """At one intensity every hour the forecast is the reference, so kwatt-carbon keeps
    kwatt's limit: with the realistic noise on, its runs must be kwatt's run for run (the
    same draws, the same windows for the policy), and its grams the energy at that
    intensity. Against the default configuration the carbon saved is then the energy
    saved: 1 - kWh(kwatt) / kWh(default), seed by seed."""
    steady = series(*([150] * 24))
    config = BenchConfig(seeds=2, recurrences=8)
    out = sc.bench_carbon(imagenet, config, steady, carbon.CarbonSettings())
    assert out["comparison"]["carbon_saved_pct"] == pytest.approx(0.0, abs=1e-9)
    assert out["comparison"]["time_added_pct"] == pytest.approx(0.0, abs=1e-9)
    kwatt_kwh, default_kwh = [], []
    for seed in range(2):
        for policy, sums in (("kwatt", kwatt_kwh), ("default", default_kwh)):
            history = sim.simulate_job(imagenet, sc.make_policy(policy), seed, 8, config.sim)
            sums.append(sum(r.energy_j for r in history) / 3.6e6)
        _, grams = sc.simulate_job_carbon(
            imagenet, sc.make_policy("kwatt"), seed, 8, config.sim, steady, carbon.CarbonSettings()
        )
        assert sum(grams) == pytest.approx(150 * kwatt_kwh[-1], rel=1e-9)
    saved = [100 * (1 - k / d) for k, d in zip(kwatt_kwh, default_kwh, strict=True)]
    against = out["against_default"]
    assert against["carbon_saved_pct"] == pytest.approx(sum(saved) / 2, rel=1e-9)
