"""Zeus's batch-size policy, re-implemented from its description (docs/benchmark.md).

Two rounds of pruning, then Gaussian Thompson sampling over the survivors, with
early stopping at `beta` times the lowest recurrence cost seen. Faithful to
upstream (`zeus==0.16.0`, `PruningGTSBatchSizeOptimizer` with its defaults) on
purpose, quirks included:
- every observation of an arm counts, pruning runs and failures included
  (upstream's default `window_size=0` keeps its whole history);
- a flat prior (mean 0, precision 0) and a plug-in reward precision of
  1 / var(rewards), the population variance: the posterior of an arm's mean
  reward is N(mean, var / n), and zero variance means no exploration at all;
- arms with fewer than two observations are pulled first, in random order;
- a run that the threshold kept from starting counts as a failure costing
  100 times the threshold.
Upstream keeps the whole history; this posterior needs only each arm's count,
mean and sum of squared deviations (updated with Welford's recurrence, which
stays exact where the rewards are all equal), so the state stays bounded while
the history does not.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from kwatt_core.policies.base import (
    Choice,
    Outcome,
    SearchSpace,
    State,
    base_state,
    cached_limit,
    check_batch_size,
    remember_limit,
    rng,
    space_of,
    track_min_cost,
)
from kwatt_core.profiler import UPSTREAM_PROFILING

PRUNING_ROUNDS = 2
EXPLORATION_PULLS = 2


@dataclass(frozen=True)
class RewardStats:
    """What the posterior of one arm needs from all its rewards (minus costs).

    `m2` is the sum of squared deviations from the mean: the population variance
    is m2 / count, as upstream's `np.var` over the whole history.
    """

    count: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, reward: float) -> RewardStats:
        count = self.count + 1
        delta = float(reward) - self.mean
        mean = self.mean + delta / count
        return RewardStats(count, mean, self.m2 + delta * (float(reward) - mean))

    @property
    def variance(self) -> float:
        return max(self.m2, 0.0) / self.count if self.count else 0.0

    def posterior_sd(self) -> float:
        """Spread of the arm's mean reward: flat prior, known precision 1 / variance."""
        return math.sqrt(self.variance / self.count) if self.count else math.inf

    def to_dict(self) -> dict[str, Any]:
        return {"count": self.count, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> RewardStats:
        if data is None:
            return cls()
        return cls(int(data["count"]), float(data["mean"]), float(data["m2"]))


def _round(candidates: list[int], default: int, number: int) -> dict[str, Any]:
    """One pruning round: walk down from the default, then up from the next larger size."""
    idx = candidates.index(default)
    return {
        "number": number,
        "candidates": candidates,
        "default": default,
        "down": sorted(candidates[: idx + 1], reverse=True),
        "up": sorted(candidates[idx + 1 :]),
        "direction": "down",
        "good": [],
        "best_cost": None,
    }


def _expecting(pruning: dict[str, Any]) -> int | None:
    queue = pruning[pruning["direction"]]
    return int(queue[0]) if queue else None


class ZeusPolicy:
    """Pruning plus Gaussian Thompson sampling, as upstream does it."""

    name = "zeus"
    profiling = UPSTREAM_PROFILING

    def init(self, space: SearchSpace, seed: int) -> State:
        state = base_state(self.name, space, seed)
        state["stage"] = "explore"
        state["pruning"] = _round(list(space.batch_sizes), space.default_batch_size, 0)
        state["arms"] = []
        state["rewards"] = {}  # batch size -> RewardStats.to_dict()
        state["best_seen"] = None
        return _settle(state)

    def choose(self, state: State, in_flight: Sequence[int] = ()) -> tuple[Choice, State]:
        space = space_of(state)
        threshold = None if state["min_cost"] is None else space.beta * float(state["min_cost"])
        if state["stage"] == "explore":
            bs = _expecting(state["pruning"])
            assert bs is not None  # _settle never leaves an empty queue in the explore stage
            if bs in in_flight:
                best = _best_known(state)
                return Choice(best, cached_limit(state, best), threshold, "concurrent"), state
            return Choice(bs, cached_limit(state, bs), threshold, "explore"), state
        bs, state = _thompson(state)
        return Choice(bs, cached_limit(state, bs), threshold, "exploit"), state

    def observe(self, state: State, outcome: Outcome) -> State:
        check_batch_size(state, outcome.batch_size)
        space = space_of(state)
        cost, reached = outcome.cost, outcome.reached
        if not outcome.started:
            # Upstream: a run that the threshold kept from starting is a failure at 100x it.
            min_cost = state["min_cost"]
            cost = 100.0 * space.beta * (float(min_cost) if min_cost is not None else 0.0)
            reached = False
        else:
            state = track_min_cost(state, outcome)
        state = remember_limit(state, outcome)
        key = str(outcome.batch_size)
        stats = RewardStats.from_dict(state["rewards"].get(key)).add(-cost)
        rewards = {**state["rewards"], key: stats.to_dict()}
        state = {**state, "rewards": rewards, "best_seen": _best_seen(state, outcome, reached)}
        if state["stage"] != "explore":
            return state
        pruning = dict(state["pruning"])
        if _expecting(pruning) != outcome.batch_size:
            return state  # a concurrent run's result: recorded, but pruning waits for its own
        direction = pruning["direction"]
        pruning[direction] = pruning[direction][1:]
        if reached:
            if pruning["best_cost"] is None or cost < pruning["best_cost"]:
                pruning["best_cost"] = cost
                pruning["default"] = outcome.batch_size
            pruning["good"] = [*pruning["good"], outcome.batch_size]
        else:
            pruning[direction] = []  # a failure ends this direction
        return _settle({**state, "pruning": pruning})


def _settle(state: State) -> State:
    """Move past finished directions and rounds until a batch size is expected or TS begins."""
    pruning = dict(state["pruning"])
    while _expecting(pruning) is None:
        if pruning["direction"] == "down":
            pruning["direction"] = "up"
            continue
        survivors = sorted(pruning["good"])
        number = pruning["number"] + 1
        if not survivors:
            # Upstream gives up here; keeping the default lets the job go on.
            survivors = [space_of(state).default_batch_size]
        if number >= PRUNING_ROUNDS:
            return {**state, "stage": "exploit", "arms": survivors, "pruning": pruning}
        pruning = _round(survivors, pruning["default"], number)
    return {**state, "pruning": pruning}


def _best_seen(state: State, outcome: Outcome, reached: bool) -> dict[str, Any] | None:
    best: dict[str, Any] | None = state.get("best_seen")
    if reached and (best is None or outcome.cost < best["cost"]):
        return {"batch_size": outcome.batch_size, "cost": outcome.cost}
    return best


def _best_known(state: State) -> int:
    best = state.get("best_seen")
    return int(best["batch_size"]) if best else space_of(state).default_batch_size


def _thompson(state: State) -> tuple[int, State]:
    """Pull arms with too few observations first, then sample each arm's posterior mean."""
    gen, state = rng(state)
    arms = [int(a) for a in state["arms"]]
    stats = {arm: RewardStats.from_dict(state["rewards"].get(str(arm))) for arm in arms}
    for arm in gen.permutation(arms):
        if stats[int(arm)].count < EXPLORATION_PULLS:
            return int(arm), state
    samples = {}
    for arm in arms:
        # Flat prior, known precision 1/var(rewards): the posterior mean is N(mean, var/n).
        sd = stats[arm].posterior_sd()
        samples[arm] = float(gen.normal(stats[arm].mean, sd)) if sd > 0 else stats[arm].mean
    return max(samples, key=lambda a: samples[a]), state
