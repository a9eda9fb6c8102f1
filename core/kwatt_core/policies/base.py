"""What every batch-size policy shares: its inputs, its outputs and its state rules.

A policy is three pure functions over a JSON-able state (a plain dict that the
operator stores in the TrainingJob's status): `init`, `choose` and `observe`.
State stays bounded however many recurrences pass, since etcd caps an object
near 1.5 MiB: per-arm observation windows or sufficient statistics (count, mean,
spread), never the history itself.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal, Protocol

import numpy as np

from kwatt_core.profiler import ProfilerStyle

State = dict[str, Any]
# A profiling window as a policy gets it: (limit W, cost per step, steps, average power W).
Window = tuple[int, float, int, float]
Stage = Literal["default", "oracle", "explore", "exploit", "concurrent"]


class PolicyError(ValueError):
    """A policy was given input it cannot use (unknown batch size, bad space)."""


@dataclass(frozen=True)
class SearchSpace:
    """The knobs a policy may turn for one recurring job."""

    batch_sizes: tuple[int, ...]
    default_batch_size: int
    max_limit_w: int
    beta: float = 2.0

    def __post_init__(self) -> None:
        if not self.batch_sizes:
            raise PolicyError("The list of candidate batch sizes is empty.")
        if any(b <= 0 for b in self.batch_sizes):
            raise PolicyError(f"Batch sizes must be positive, got {list(self.batch_sizes)}.")
        if tuple(sorted(set(self.batch_sizes))) != self.batch_sizes:
            raise PolicyError("Batch sizes must be given sorted and without repeats.")
        if self.default_batch_size not in self.batch_sizes:
            raise PolicyError(
                f"The default batch size {self.default_batch_size} is not among the "
                f"candidates {list(self.batch_sizes)}."
            )
        if self.beta <= 1.0:
            raise PolicyError(f"beta must be greater than 1, got {self.beta}.")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["batch_sizes"] = list(self.batch_sizes)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SearchSpace:
        return cls(**{**data, "batch_sizes": tuple(data["batch_sizes"])})


@dataclass(frozen=True)
class Choice:
    """The configuration of the next run.

    `power_limit_w` None means "profile the power limit in this run";
    `cost_threshold` None means "no early stop".
    """

    batch_size: int
    power_limit_w: int | None
    cost_threshold: float | None
    stage: Stage


@dataclass(frozen=True)
class Outcome:
    """What one finished run teaches the policy.

    `power_limit_w` is the limit that a completed profile chose in this run (None
    when the run did not profile or did not finish profiling). `started` is False
    when the early-stop threshold did not allow even one epoch. `epochs` is how
    many epochs ran, `epoch_cost` the cost of one epoch at the limit the run
    kept (the mean of the `kept_epochs` epochs run wholly at it, after profiling),
    and `stopped_early` tells a stop for cost from a run that used up its epoch
    budget without reaching the target.
    `kept_limit_w` is the limit the run ran at once any profiling was over (None if
    unknown), and `profile` its profiling windows (`Window`), costed with the run's own
    cost model.
    """

    batch_size: int
    cost: float
    reached: bool
    energy_j: float = 0.0
    time_s: float = 0.0
    power_limit_w: int | None = None
    started: bool = True
    epochs: int = 0
    epoch_cost: float | None = None
    kept_epochs: int = 1
    stopped_early: bool = False
    kept_limit_w: int | None = None
    profile: tuple[Window, ...] = ()


class Policy(Protocol):
    """A batch-size policy: pure functions of a JSON-able state, and how it profiles limits."""

    name: str
    profiling: ProfilerStyle

    def init(self, space: SearchSpace, seed: int) -> State: ...

    def choose(self, state: State, in_flight: Sequence[int] = ()) -> tuple[Choice, State]: ...

    def observe(self, state: State, outcome: Outcome) -> State: ...


def base_state(name: str, space: SearchSpace, seed: int) -> State:
    """Fields every policy keeps: who it is, its space, its random stream, its power cache."""
    return {
        "policy": name,
        "space": space.to_dict(),
        "seed": int(seed),
        "draws": 0,
        "limits": {},
        "min_cost": None,
        "pending_cost": 0.0,
    }


def space_of(state: State) -> SearchSpace:
    return SearchSpace.from_dict(state["space"])


def rng(state: State) -> tuple[np.random.Generator, State]:
    """A generator derived from (seed, draws): deterministic, and the state stays JSON."""
    gen = np.random.default_rng([int(state["seed"]), int(state["draws"])])
    return gen, {**state, "draws": int(state["draws"]) + 1}


def cached_limit(state: State, batch_size: int) -> int | None:
    limit = state["limits"].get(str(batch_size))
    return None if limit is None else int(limit)


def remember_limit(state: State, outcome: Outcome) -> State:
    """Keep the limit a completed profile chose, so the next run of that size skips profiling."""
    if outcome.power_limit_w is None:
        return state
    return {**state, "limits": {**state["limits"], str(outcome.batch_size): outcome.power_limit_w}}


def track_min_cost(state: State, outcome: Outcome) -> State:
    """Lowest cost of a recurrence that reached the target, retries of that recurrence included."""
    if not outcome.reached:
        return {**state, "pending_cost": float(state["pending_cost"]) + outcome.cost}
    total = float(state["pending_cost"]) + outcome.cost
    current = state["min_cost"]
    best = total if current is None else min(float(current), total)
    return {**state, "min_cost": best, "pending_cost": 0.0}


def check_batch_size(state: State, batch_size: int) -> None:
    if batch_size not in space_of(state).batch_sizes:
        raise PolicyError(
            f"Batch size {batch_size} is not a candidate of this job "
            f"({list(state['space']['batch_sizes'])})."
        )
