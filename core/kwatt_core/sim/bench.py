"""The benchmark: every policy on every workload of a trace, side by side.

Figures per workload and policy (means over seeds):
- cumulative energy (J), time (s) and cost over all recurrences;
- regret: cumulative cost minus N times the oracle's expected recurrence cost,
  over all N recurrences and over the first 20 alone; also as a percentage of the
  oracle's expected cost over those recurrences;
- energy saving and time change over the last 10 recurrences against the
  default configuration's expected recurrence (%), with the run that reached the
  target counted at its configuration's expectation (see `_expected_recurrence`);
- the standard error over seeds of the regrets and the last-10 figures (`*_se`);
- converged_at: the recurrence from which every run's configuration stays within
  5% of the oracle's expected cost (None if some seed never gets there);
- profiling steps spent.

A peer (real Zeus, `kwatt_core.sim.peer`) comes in as recurrences it ran, and gets the
same figures under its own row name.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
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
    seeds: int = 20
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
    trace: WorkloadTrace,
    config: BenchConfig,
    progress: Callable[[], None] | None = None,
    peers: Mapping[str, Sequence[list[Recurrence]]] | None = None,
) -> dict[str, Any]:
    """All policies on one workload, and the peers' runs of it; returns JSON-able figures.

    A peer's row comes right after `zeus` (or last, without it)."""
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
    for row, peer_runs in (peers or {}).items():
        if len(peer_runs) != config.seeds or any(len(run) != n for run in peer_runs):
            raise BenchError(f"The peer {row} ran other seeds or recurrences than asked.")
        policies[row] = _figures(peer_runs, oracle_cost, default_energy, default_time, expected)
    if "zeus" in policies:
        order = [*config.policies]
        at = order.index("zeus") + 1
        order[at:at] = list(peers or {})
        policies = {name: policies[name] for name in order}
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
    regret = cost.sum(axis=1) - n * oracle_cost  # per seed
    regret20 = cost[:, :first].sum(axis=1) - first * oracle_cost
    saving = 100.0 * (1.0 - chosen[:, :, 0].mean(axis=1) / default_energy)  # per seed
    slower = 100.0 * (chosen[:, :, 1].mean(axis=1) / default_time - 1.0)
    return {
        "seeds": len(runs),
        "cumulative_energy_j": float(energy.sum(axis=1).mean()),
        "cumulative_time_s": float(time.sum(axis=1).mean()),
        "cumulative_cost": float(cost.sum(axis=1).mean()),
        "regret": float(regret.mean()),
        "regret_se": _standard_error(regret),
        "regret_first20": float(regret20.mean()),
        "regret_first20_se": _standard_error(regret20),
        "regret_pct": _pct(regret.mean(), n * oracle_cost),
        "regret_pct_se": _pct(_standard_error(regret), n * oracle_cost),
        "regret_first20_pct": _pct(regret20.mean(), first * oracle_cost),
        "regret_first20_pct_se": _pct(_standard_error(regret20), first * oracle_cost),
        "last10_energy_saving_pct": float(saving.mean()),
        "last10_energy_saving_pct_se": _standard_error(saving),
        "last10_time_change_pct": float(slower.mean()),
        "last10_time_change_pct_se": _standard_error(slower),
        "converged_at": None
        if None in converged
        else float(np.mean([c for c in converged if c is not None])),
        "profiling_steps": float(
            np.mean([sum(x.profiling_steps for r in run for x in r.runs) for run in runs])
        ),
        "unreached_recurrences": float(np.mean([sum(not r.reached for r in run) for run in runs])),
    }


def _standard_error(values: np.ndarray) -> float | None:
    """Standard error of the mean over seeds (None with a single seed)."""
    if len(values) < 2:
        return None
    return float(np.std(values, ddof=1) / math.sqrt(len(values)))


def _pct(value: float | None, of: float) -> float | None:
    return None if value is None else float(100.0 * value / of)


def regret_pct_per_seed(runs: Sequence[list[Recurrence]], oracle_cost: float) -> list[float]:
    """Each seed's regret over all its recurrences, as % of the oracle's expected cost."""
    return [
        100.0 * (sum(r.cost for r in run) - len(run) * oracle_cost) / (len(run) * oracle_cost)
        for run in runs
    ]


def last10_saving_pct_per_seed(
    runs: Sequence[list[Recurrence]], trace: WorkloadTrace, eta: float
) -> list[float]:
    """Each seed's last-10 energy saving against the default (%), as `_figures` counts it."""
    model = cost_model_for(trace, eta)
    _, default_energy, _ = trace.expected(model, trace.default_batch_size, max(trace.limits_w))
    expected = {
        (b, p): trace.expected(model, b, p) for b in trace.batch_sizes for p in trace.limits_w
    }
    savings = []
    for run in runs:
        energy = np.mean([_expected_recurrence(r, expected)[0] for r in run[-LAST:]])
        savings.append(float(100.0 * (1.0 - energy / default_energy)))
    return savings


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

    def with_se(key: str, fmt: str, se_fmt: str) -> str:
        cell = num(figures.get(key), fmt)
        if figures.get(f"{key}_se") is not None and cell != "-":
            cell += "±" + num(figures[f"{key}_se"], se_fmt)
        return cell

    return [
        num(figures["cumulative_energy_j"] / 3.6e6, ".2f"),
        num(figures["cumulative_time_s"] / 3600.0, ".1f"),
        num(figures["cumulative_cost"] / 3.6e6, ".2f"),
        num(figures["regret"] / 3.6e6, ".2f"),
        with_se("regret_pct", ".2f", ".2f"),
        with_se("regret_first20_pct", ".2f", ".2f"),
        with_se("last10_energy_saving_pct", "+.1f", ".1f"),
        with_se("last10_time_change_pct", "+.1f", ".1f"),
        num(figures["converged_at"], ".1f"),
        num(figures["profiling_steps"], ".0f"),
    ]
