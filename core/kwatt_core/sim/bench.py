"""The benchmark: every policy on every workload of a trace, side by side.

Figures per workload and policy (means over seeds):
- cumulative energy (J), time (s) and cost over all recurrences;
- regret: cumulative cost minus N times the oracle's expected recurrence cost,
  over all N recurrences and over the first 20 alone;
- energy saving and time change over the last 10 recurrences against the
  default configuration's expected recurrence (%), with the run that reached the
  target counted at its configuration's expectation (see `_expected_recurrence`);
- converged_at: the recurrence from which every run's configuration stays within
  5% of the oracle's expected cost (None if some seed never gets there);
- profiling steps spent.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kwatt_core.policies import OraclePolicy, Policy, make_policy
from kwatt_core.sim.simulator import Recurrence, SimConfig, cost_model_for, simulate_job
from kwatt_core.sim.trace import WorkloadTrace

POLICIES = ("default", "zeus", "kwatt", "oracle")
FIRST = 20
LAST = 10
CONVERGED_WITHIN = 0.05

# (batch size, limit) -> expected (cost, energy, time) of a recurrence at that configuration
Expected = dict[tuple[int, int], tuple[float, float, float]]


class BenchError(ValueError):
    """Bad benchmark parameters."""


@dataclass(frozen=True)
class BenchConfig:
    seeds: int = 5
    recurrences: int | None = None  # None: 2 * |batch sizes| * |power limits|
    sim: SimConfig = field(default_factory=SimConfig)
    policies: tuple[str, ...] = POLICIES

    def __post_init__(self) -> None:
        if self.seeds < 1:
            raise BenchError(f"--seeds must be at least 1, got {self.seeds}.")
        if self.recurrences is not None and self.recurrences < 1:
            raise BenchError(f"--recurrences must be at least 1, got {self.recurrences}.")
        if not 0.0 <= self.sim.eta <= 1.0:
            raise BenchError(f"--eta must be between 0 and 1, got {self.sim.eta}.")
        if self.sim.beta <= 1.0:
            raise BenchError(f"--beta must be greater than 1, got {self.sim.beta}.")
        unknown = [p for p in self.policies if p not in POLICIES]
        if unknown:
            raise BenchError(f"Unknown policy {unknown[0]!r}; choose from {', '.join(POLICIES)}.")


def recurrences_for(trace: WorkloadTrace, config: BenchConfig) -> int:
    if config.recurrences is not None:
        return config.recurrences
    return 2 * len(trace.batch_sizes) * len(trace.limits_w)


def _policy(name: str, trace: WorkloadTrace, eta: float) -> Policy:
    if name == "oracle":
        bs, limit, _ = trace.best_config(cost_model_for(trace, eta))
        return OraclePolicy(bs, limit)
    return make_policy(name)


def bench_workload(
    trace: WorkloadTrace, config: BenchConfig, progress: Callable[[], None] | None = None
) -> dict[str, Any]:
    """All policies on one workload; returns the JSON-able figures."""
    model = cost_model_for(trace, config.sim.eta)
    n = recurrences_for(trace, config)
    oracle_bs, oracle_limit, oracle_cost = trace.best_config(model)
    default_limit = max(trace.limits_w)
    _, default_energy, default_time = trace.expected(model, trace.default_batch_size, default_limit)
    expected = {
        (b, p): trace.expected(model, b, p) for b in trace.batch_sizes for p in trace.limits_w
    }
    policies: dict[str, Any] = {}
    for name in config.policies:
        runs = []
        for seed in range(config.seeds):
            runs.append(
                simulate_job(trace, _policy(name, trace, config.sim.eta), seed, n, config.sim)
            )
            if progress is not None:
                progress()
        policies[name] = _figures(runs, oracle_cost, default_energy, default_time, expected)
    return {
        "name": trace.spec.name,
        "gpu": trace.gpu,
        "recurrences": n,
        "batch_sizes": list(trace.batch_sizes),
        "notes": list(trace.notes),
        "power_limits_w": list(trace.limits_w),
        "default": {
            "batch_size": trace.default_batch_size,
            "power_limit_w": default_limit,
            "expected_energy_j": default_energy,
            "expected_time_s": default_time,
        },
        "oracle": {
            "batch_size": oracle_bs,
            "power_limit_w": oracle_limit,
            "expected_cost": oracle_cost,
        },
        "policies": policies,
    }


def _figures(
    runs: Sequence[list[Recurrence]],
    oracle_cost: float,
    default_energy: float,
    default_time: float,
    expected: Expected,
) -> dict[str, Any]:
    n = len(runs[0])
    first = min(FIRST, n)
    last = min(LAST, n)
    cost = np.array([[r.cost for r in run] for run in runs])
    energy = np.array([[r.energy_j for r in run] for run in runs])
    time = np.array([[r.time_s for r in run] for run in runs])
    chosen = np.array([[_expected_recurrence(r, expected) for r in run[-last:]] for run in runs])
    converged = [_converged_at(run, oracle_cost, expected) for run in runs]
    return {
        "cumulative_energy_j": float(energy.sum(axis=1).mean()),
        "cumulative_time_s": float(time.sum(axis=1).mean()),
        "cumulative_cost": float(cost.sum(axis=1).mean()),
        "regret": float(cost.sum(axis=1).mean() - n * oracle_cost),
        "regret_first20": float(cost[:, :first].sum(axis=1).mean() - first * oracle_cost),
        "last10_energy_saving_pct": float(100.0 * (1.0 - chosen[:, :, 0].mean() / default_energy)),
        "last10_time_change_pct": float(100.0 * (chosen[:, :, 1].mean() / default_time - 1.0)),
        "converged_at": None
        if None in converged
        else float(np.mean([c for c in converged if c is not None])),
        "profiling_steps": float(
            np.mean([sum(x.profiling_steps for r in run for x in r.runs) for run in runs])
        ),
        "unreached_recurrences": float(np.mean([sum(not r.reached for r in run) for run in runs])),
    }


def _expected_recurrence(rec: Recurrence, expected: Expected) -> tuple[float, float]:
    """Energy and time of a recurrence with its successful run at its configuration's expectation.

    Failed tries count as they happened; the run that reached the target counts at the
    mean over the trace's seed runs, so that the luck of the drawn seed does not mask
    the choice of configuration (which is what the last-10 figures judge).
    """
    energy = time = 0.0
    for run in rec.runs:
        if run.reached:
            _, e, t = expected[(run.batch_size, run.power_limit_w)]
            energy, time = energy + e, time + t
        else:
            energy, time = energy + run.energy_j, time + run.time_s
    return energy, time


def _converged_at(run: list[Recurrence], oracle_cost: float, expected: Expected) -> int | None:
    """1-based recurrence from which every run stays within 5% of the oracle's expected cost."""
    limit = (1.0 + CONVERGED_WITHIN) * oracle_cost
    since: int | None = None
    for i, rec in enumerate(run):
        ok = all(expected[(x.batch_size, x.power_limit_w)][0] <= limit for x in rec.runs)
        if not ok:
            since = None
        elif since is None:
            since = i + 1
    return since


def summary_row(figures: dict[str, Any]) -> list[str]:
    """Human-readable cells for one policy (used by the CLI table)."""

    def num(value: float | None, fmt: str) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return format(value, fmt)

    return [
        num(figures["cumulative_energy_j"] / 3.6e6, ".2f"),
        num(figures["cumulative_time_s"] / 3600.0, ".1f"),
        num(figures["cumulative_cost"] / 3.6e6, ".2f"),
        num(figures["regret"] / 3.6e6, ".2f"),
        num(figures["regret_first20"] / 3.6e6, ".2f"),
        num(figures["last10_energy_saving_pct"], "+.1f"),
        num(figures["last10_time_change_pct"], "+.1f"),
        num(figures["converged_at"], ".1f"),
        num(figures["profiling_steps"], ".0f"),
    ]
