"""Reading Zeus-format traces: `summary_train.csv` and `summary_power_<gpu>.csv`.

Any directory holding those files in upstream's format works, for any GPU. Every
problem with a file is reported as a `TraceError` that names the file, the line
and the column, so that a user sees one sentence instead of a traceback.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from kwatt_core.cost import CostModel
from kwatt_core.sim.workloads import WORKLOADS, WorkloadSpec

TRAIN_FILE = "summary_train.csv"
POWER_PREFIX = "summary_power_"
TRAIN_COLUMNS = (
    "dataset",
    "network",
    "batch_size",
    "optimizer",
    "run",
    "target_metric",
    "target_epoch",
)
POWER_COLUMNS = (
    "dataset",
    "network",
    "batch_size",
    "optimizer",
    "power_limit",
    "time_per_epoch",
    "average_power",
)


class TraceError(ValueError):
    """A trace file is missing, malformed or lacks what was asked of it."""


@dataclass(frozen=True)
class PowerPoint:
    """One (batch size, power limit) measurement: deterministic in the traces."""

    time_per_epoch_s: float
    average_power_w: float

    @property
    def energy_per_epoch_j(self) -> float:
        return self.time_per_epoch_s * self.average_power_w


@dataclass(frozen=True)
class WorkloadTrace:
    """Everything the simulator needs about one workload on one GPU."""

    spec: WorkloadSpec
    gpu: str
    batch_sizes: tuple[int, ...]
    default_batch_size: int
    limits_w: tuple[int, ...]  # ascending
    max_limit_w: int
    power: dict[tuple[int, int], PowerPoint]
    paths: dict[int, tuple[float | None, ...]]  # target epoch of each seed run; None: never
    notes: tuple[str, ...] = ()  # what the loader had to leave out, as sentences

    def epochs_to_target(self, batch_size: int, path: float | None) -> int | None:
        """Epochs a seed run needs, or None if it misses the target within max epochs."""
        if path is None or path > self.spec.max_epochs:
            return None
        return math.ceil(path)

    def expected(
        self, cost_model: CostModel, batch_size: int, limit_w: int
    ) -> tuple[float, float, float]:
        """Expected (cost, energy, time) of one recurrence run at a fixed config, retries included.

        A run that misses the target costs its full epoch budget and is run again,
        so the expectation is the mean over seed runs divided by the chance to reach.
        """
        point = self.power[(batch_size, limit_w)]
        epochs = [self.epochs_to_target(batch_size, p) for p in self.paths[batch_size]]
        reach = sum(e is not None for e in epochs) / len(epochs)
        if reach == 0:
            return math.inf, math.inf, math.inf
        mean_epochs = sum(self.spec.max_epochs if e is None else e for e in epochs) / len(epochs)
        time = mean_epochs * point.time_per_epoch_s / reach
        energy = mean_epochs * point.energy_per_epoch_j / reach
        return cost_model.cost(energy, time), energy, time

    def best_config(self, cost_model: CostModel) -> tuple[int, int, float]:
        """The configuration with the least expected cost: the oracle's choice."""
        best = min(
            (
                (self.expected(cost_model, b, p)[0], b, p)
                for b in self.batch_sizes
                for p in self.limits_w
            ),
        )
        return best[1], best[2], best[0]


def available_gpus(trace_dir: Path) -> list[str]:
    return sorted(p.name[len(POWER_PREFIX) : -4] for p in trace_dir.glob(f"{POWER_PREFIX}*.csv"))


def _rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    try:
        handle = path.open(newline="", encoding="utf-8")
    except FileNotFoundError:
        raise TraceError(f"Trace file {path} does not exist.") from None
    except OSError as exc:
        raise TraceError(f"Trace file {path} cannot be read: {exc.strerror}.") from None
    with handle:
        reader = csv.DictReader(handle)
        header = reader.fieldnames or []
        missing = [c for c in columns if c not in header]
        if missing:
            raise TraceError(f"Trace file {path} lacks the column(s) {', '.join(missing)}.")
        try:
            for row in reader:
                yield reader.line_num, row
        except (csv.Error, UnicodeDecodeError) as exc:
            raise TraceError(
                f"Trace file {path} line {reader.line_num} is not valid CSV: {exc}."
            ) from None


def _number(
    path: Path, line: int, row: dict[str, str], column: str, *, optional: bool = False
) -> float | None:
    text = (row.get(column) or "").strip()
    if optional and text.lower() in ("", "nan"):
        return None
    try:
        value = float(text)
    except ValueError:
        raise TraceError(
            f"Trace file {path} line {line}: column '{column}' should be a number, got '{text}'."
        ) from None
    if not math.isfinite(value) or value < 0:
        raise TraceError(
            f"Trace file {path} line {line}: column '{column}' should be a non-negative "
            f"number, got '{text}'."
        )
    return value


def _key(spec: WorkloadSpec, row: dict[str, str]) -> bool:
    return (row["dataset"], row["network"], row["optimizer"]) == (
        spec.dataset,
        spec.network,
        spec.optimizer,
    )


def load_workloads(
    trace_dir: Path, gpu: str, names: list[str] | None = None
) -> list[WorkloadTrace]:
    """Read the traces of the known workloads that this directory holds for `gpu`."""
    if not trace_dir.is_dir():
        raise TraceError(f"Trace directory {trace_dir} does not exist.")
    power_file = trace_dir / f"{POWER_PREFIX}{gpu}.csv"
    if not power_file.exists():
        gpus = available_gpus(trace_dir)
        known = ", ".join(gpus) if gpus else "none"
        raise TraceError(
            f"Unknown GPU '{gpu}': {power_file} does not exist (GPUs in {trace_dir}: {known})."
        )
    known_names = [w.name for w in WORKLOADS]
    for name in names or []:
        if name not in known_names:
            raise TraceError(
                f"Unknown workload '{name}'; known workloads are {', '.join(known_names)}."
            )
    specs = [w for w in WORKLOADS if names is None or w.name in names]

    power: dict[str, dict[tuple[int, int], PowerPoint]] = defaultdict(dict)
    for line, row in _rows(power_file, POWER_COLUMNS):
        for spec in specs:
            if _key(spec, row):
                bs = int(_number(power_file, line, row, "batch_size") or 0)
                limit = int(_number(power_file, line, row, "power_limit") or 0)
                tpe = _number(power_file, line, row, "time_per_epoch") or 0.0
                watts = _number(power_file, line, row, "average_power") or 0.0
                if bs <= 0 or limit <= 0 or tpe <= 0:
                    raise TraceError(
                        f"Trace file {power_file} line {line}: batch_size, power_limit and "
                        f"time_per_epoch must be positive."
                    )
                power[spec.name][(bs, limit)] = PowerPoint(tpe, watts)

    train_file = trace_dir / TRAIN_FILE
    paths: dict[str, dict[int, list[float | None]]] = defaultdict(lambda: defaultdict(list))
    for line, row in _rows(train_file, TRAIN_COLUMNS):
        for spec in specs:
            if _key(spec, row):
                target = _number(train_file, line, row, "target_metric")
                if target is None or not math.isclose(target, spec.target_metric):
                    continue
                bs = int(_number(train_file, line, row, "batch_size") or 0)
                paths[spec.name][bs].append(
                    _number(train_file, line, row, "target_epoch", optional=True)
                )

    all_limits = [p for table in power.values() for (_, p) in table]
    if not all_limits:
        wanted = ", ".join(s.name for s in specs)
        raise TraceError(f"Trace file {power_file} holds none of the workloads {wanted}.")
    gpu_max = max(all_limits)
    traces = []
    for spec in specs:
        table = power.get(spec.name, {})
        runs = paths.get(spec.name, {})
        sizes = sorted({b for (b, _) in table} & set(runs))
        if not sizes:
            if names is not None:
                raise TraceError(
                    f"Workload '{spec.name}' has no batch size in both {train_file} "
                    f"and {power_file}."
                )
            continue
        sizes, limits, notes = _grid(spec.name, sizes, table)
        if not limits:
            raise TraceError(
                f"Workload '{spec.name}' in {power_file} has no power limit common "
                "to its batch sizes."
            )
        traces.append(
            WorkloadTrace(
                spec=spec,
                gpu=gpu,
                batch_sizes=tuple(sizes),
                default_batch_size=_default_for(spec.default_batch_size, sizes),
                limits_w=tuple(limits),
                max_limit_w=gpu_max,
                power={k: v for k, v in table.items() if k[0] in sizes and k[1] in limits},
                paths={b: tuple(runs[b]) for b in sizes},
                notes=tuple(notes),
            )
        )
    return traces


def _grid(
    name: str, sizes: list[int], table: dict[tuple[int, int], PowerPoint]
) -> tuple[list[int], list[int], list[str]]:
    """Batch sizes and limits forming a full grid, and what had to be left out.

    A size traced at only some limits would otherwise shrink every size's limit range
    (one incomplete row in upstream's RTX 6000 trace leaves two limits of ten), so
    such sizes are dropped when most sizes cover every limit.
    """
    limit_sets = {bs: {p for (b, p) in table if b == bs} for bs in sizes}
    every = set().union(*limit_sets.values())
    full = [bs for bs in sizes if limit_sets[bs] == every]
    if full and 2 * len(full) >= len(sizes):
        notes = [
            f"{name}: batch size {bs} left out, traced at {len(limit_sets[bs])} of "
            f"{len(every)} power limits"
            for bs in sizes
            if bs not in full
        ]
        return full, sorted(every), notes
    common = set.intersection(*limit_sets.values())
    notes = [f"{name}: limits {sorted(every - common)} left out, not traced for every batch size"]
    return sizes, sorted(common), notes if every - common else []


def _default_for(default: int, sizes: list[int]) -> int:
    """The workload's default, or the largest size below it that this GPU's trace holds.

    Smaller GPUs (P100) were traced without the larger sizes, which did not fit in
    memory: a user of that GPU would run the largest size that does.
    """
    if default in sizes:
        return default
    below = [b for b in sizes if b < default]
    return max(below) if below else min(sizes)
