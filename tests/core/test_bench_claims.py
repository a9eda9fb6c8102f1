"""The benchmark's acceptance figures (issue 2), checked on the bundled traces.

Expectations come from outside the code: Zeus's published last-10 savings on the
V100 trace (docs/benchmark.md) and the bar the issue sets for kwatt against Zeus.
Not a timed test: the speed target lives in `make bench`.
"""

from __future__ import annotations

import pytest

from kwatt_core.sim.bench import BenchConfig, bench_workload
from kwatt_core.sim.simulator import SimConfig
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


def test_zeus_under_upstream_charge_matches_its_published_savings() -> None:
    config = BenchConfig(seeds=5, sim=SimConfig(charge="upstream"), policies=("zeus",))
    for trace in load_workloads(TRACE_DIR, "v100"):
        saving = bench_workload(trace, config)["policies"]["zeus"]["last10_energy_saving_pct"]
        assert saving == pytest.approx(ZEUS_PUBLISHED[trace.spec.name], abs=3.0), trace.spec.name


@pytest.fixture(scope="module")
def results() -> dict[str, dict[str, dict[str, float]]]:
    config = BenchConfig(seeds=5, policies=("zeus", "kwatt"))
    out = {}
    for gpu in ("v100", "p100"):
        for trace in load_workloads(TRACE_DIR, gpu):
            out[f"{gpu}/{trace.spec.name}"] = bench_workload(trace, config)["policies"]
    return out


def test_kwatt_has_lower_regret_than_zeus_everywhere(results: dict) -> None:  # type: ignore[type-arg]
    for name, figures in results.items():
        for key in ("regret", "regret_first20"):
            assert figures["kwatt"][key] < figures["zeus"][key], f"{name} {key}"


def test_kwatt_regret_is_at_most_half_of_zeus_on_average(results: dict) -> None:  # type: ignore[type-arg]
    for key in ("regret", "regret_first20"):
        for gpu in ("v100", "p100"):
            ratios = [
                f["kwatt"][key] / f["zeus"][key] for n, f in results.items() if n.startswith(gpu)
            ]
            assert sum(ratios) / len(ratios) <= 0.5, f"{gpu} {key}"


def test_kwatt_saves_as_much_energy_as_zeus_in_the_end(results: dict) -> None:  # type: ignore[type-arg]
    for name, figures in results.items():
        kwatt = figures["kwatt"]["last10_energy_saving_pct"]
        zeus = figures["zeus"]["last10_energy_saving_pct"]
        assert kwatt >= zeus - 1.0, name
