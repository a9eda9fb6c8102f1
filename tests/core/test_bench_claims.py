"""The benchmark's claims (docs/benchmark.md), checked on the bundled traces.

Expectations come from outside the code under test: Zeus's published last-10 savings on
the V100 trace (its own noise-free simulator), real Zeus's per-seed figures in the noisy
benchmark world (data/zeus_upstream.json: zeus==0.16.0's simulator with the same noise,
100 seeds, made by benchmarks/zeus_peer_figures.py), and the bar issue 11 sets for kwatt:
at most half of real Zeus's regret over all recurrences and over the first 20, and a
last-10 saving at most a point below real Zeus's. kwatt runs as `kwatt bench` runs it
(step charge, realistic noise, 20 seeds) at eta 0.5, the eta of the stored figures.
Not a timed test: the speed target lives in `make bench`.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from pathlib import Path
from typing import Any

import pytest

from kwatt_core.policies import KwattSettings
from kwatt_core.sim.bench import BenchConfig, bench_workload
from kwatt_core.sim.simulator import NO_NOISE, SimConfig, cost_model_for
from kwatt_core.sim.trace import load_workloads

from .conftest import TRACE_DIR

# Zeus's own simulator, V100, eta 0.5, beta 2: mean energy saving of the last 10 recurrences.
ZEUS_PUBLISHED = {
    "cifar100": 74.6,
    "movielens-1m": 66.3,
    "librispeech": 39.1,
    "sentiment140": 20.9,
    "imagenet": 18.4,
    "squad": 18.2,
}
REAL_ZEUS = Path(__file__).parent / "data" / "zeus_upstream.json"
# Where docs/benchmark.md shows that half of real Zeus's regret is out of reach at eta 0.5.
EXCEPTIONS = {"p100/imagenet", "p100/squad"}


def test_zeus_under_upstream_charge_matches_its_published_savings() -> None:
    """Published figures come from upstream's simulator, which has no noise."""
    sim = SimConfig(charge="upstream", noise=NO_NOISE)
    config = BenchConfig(seeds=5, sim=sim, policies=("zeus",))
    for trace in load_workloads(TRACE_DIR, "v100"):
        saving = bench_workload(trace, config)["policies"]["zeus"]["last10_energy_saving_pct"]
        assert saving == pytest.approx(ZEUS_PUBLISHED[trace.spec.name], abs=3.0), trace.spec.name


@pytest.fixture(scope="module")
def real_zeus() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(REAL_ZEUS.read_text())
    assert data["eta"] == 0.5 and data["noise"] == dataclasses.asdict(SimConfig().noise)
    return data


@pytest.fixture(scope="module")
def kwatt() -> dict[str, dict[str, Any]]:
    config = BenchConfig(seeds=20, policies=("kwatt",))
    return {
        f"{gpu}/{trace.spec.name}": bench_workload(trace, config)
        for gpu in ("v100", "p100")
        for trace in load_workloads(TRACE_DIR, gpu)
    }


def ratios(kwatt: dict[str, Any], real: dict[str, Any]) -> dict[str, float]:
    mine = kwatt["policies"]["kwatt"]
    return {
        key: mine[f"{key}_pct"] / statistics.fmean(real[f"{key}_pct"])
        for key in ("regret", "regret_first20")
    }


def test_kwatt_has_at_most_half_of_real_zeus_regret(
    kwatt: dict[str, dict[str, Any]], real_zeus: dict[str, Any]
) -> None:
    for name, figures in kwatt.items():
        gpu, workload = name.split("/")
        for key, ratio in ratios(figures, real_zeus["gpus"][gpu][workload]).items():
            assert ratio < (1.0 if name in EXCEPTIONS else 0.5), f"{name} {key}: {ratio:.2f}"


def test_kwatt_saves_as_much_energy_as_real_zeus_in_the_end(
    kwatt: dict[str, dict[str, Any]], real_zeus: dict[str, Any]
) -> None:
    for name, figures in kwatt.items():
        gpu, workload = name.split("/")
        mine = figures["policies"]["kwatt"]["last10_energy_saving_pct"]
        real = statistics.fmean(real_zeus["gpus"][gpu][workload]["last10_energy_saving_pct"])
        assert mine >= real - 1.0, f"{name}: {mine:.1f}% against {real:.1f}%"


def test_p100_imagenet_pays_for_its_one_other_batch_size(real_zeus: dict[str, Any]) -> None:
    """The P100 trace holds two ImageNet sizes, and 64 never reaches the target: whoever
    tries it pays for a run stopped by its threshold, kwatt's 1.1 x exp(2 x 10%) = 1.34 x
    the best cost known (the default's, within 4% of the oracle's). That alone is more than
    half of real Zeus's whole regret, so half is out of reach whatever else kwatt does."""
    (trace,) = load_workloads(TRACE_DIR, "p100", ["imagenet"])
    assert trace.batch_sizes == (64, 128) and all(p is None for p in trace.paths[64])
    model = cost_model_for(trace, 0.5)
    _, _, oracle = trace.best_config(model)
    default = trace.expected(model, 128, max(trace.limits_w))[0] / oracle
    settings = KwattSettings()
    stop = (1.0 + settings.walk_tol) * math.exp(2.0 * settings.prior_sd) * default
    real = trace_regret_units(real_zeus["gpus"]["p100"]["imagenet"])
    assert stop / real > 0.5


def trace_regret_units(figures: dict[str, Any]) -> float:
    """Real Zeus's mean regret over all recurrences, in oracle recurrences."""
    return statistics.fmean(figures["regret_pct"]) / 100.0 * figures["recurrences"]
