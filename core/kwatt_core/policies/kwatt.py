"""kwatt's batch-size policy: a local walk, then Thompson sampling on a shared model.

Why it beats upstream on the traces:
- A run's cost is (cost of one epoch) x (epochs to reach the target). The first
  factor is measured exactly in one run at the limit the profiler kept; only the
  second is noisy. kwatt learns the noisy part alone, in log space, with an
  unknown noise variance pooled across arms (a normal-inverse-gamma prior of
  `prior_sd` with `prior_dof` pseudo-observations), and lets neighbouring batch
  sizes inform each other: an arm's mean log-epochs has a prior centred on its
  neighbours' (weighted by distance in octaves), so one unlucky run does not
  condemn it, nor does one lucky run crown it.
- Cost against batch size is close to unimodal, so instead of two full pruning
  sweeps it walks from the default towards cheaper neighbours and turns back as
  soon as a neighbour is predicted to cost clearly more than the best
  (`walk_tol`), or one step later when the miss came from the noisy factor alone;
  it walks the other way only if the default is still near the best.
- Exploratory runs stop once they cost `explore_stop` times the best prediction
  (never later than `beta` times it): such a run cannot be the best arm.
- Sampling draws from the posterior with its spread halved (`exploration_scale`):
  the pooled model already shares what every run teaches, and full-width draws
  kept re-trying arms a few percent worse long after the model knew better.
- Power-limit profiles are cached per batch size, so only new sizes profile, and
  near-ties between limits go to the one that uses less energy.
State stays bounded: per arm one epoch cost and the last `window` observations.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from kwatt_core.policies.base import (
    Choice,
    Outcome,
    SearchSpace,
    State,
    base_state,
    cached_limit,
    check_batch_size,
    push_window,
    remember_limit,
    rng,
    space_of,
    track_min_cost,
)
from kwatt_core.profiler import KWATT_PROFILING


@dataclass(frozen=True)
class KwattSettings:
    """Tuning of the kwatt policy (defaults chosen on the Zeus V100 and P100 traces)."""

    walk_tol: float = 0.10
    explore_stop: float = 1.5
    keep_tol: float = 1.0
    prior_sd: float = 0.10
    prior_dof: float = 2.0
    neighbour_sd: float = 0.20
    min_neighbour_sd: float = 0.06
    max_neighbour_sd: float = 0.5
    min_arms_for_spread: int = 3
    neighbour_octaves: float = 1.0
    failure_penalty: float = 1.5
    window: int = 25
    exploration_scale: float = 0.5
    tie_tolerance: float = 0.005


@dataclass(frozen=True)
class ArmBelief:
    """Posterior of one arm's mean log-epochs, and its known epoch cost."""

    epoch_cost: float
    mean: float
    sd: float

    @property
    def expected_cost(self) -> float:
        return self.epoch_cost * math.exp(self.mean)


class KwattPolicy:
    """Unimodal walk, then Thompson sampling on epoch cost x shared-noise epochs model."""

    name = "kwatt"

    def __init__(self, settings: KwattSettings | None = None) -> None:
        self.settings = settings or KwattSettings()
        self.profiling = replace(KWATT_PROFILING, tie_tolerance=self.settings.tie_tolerance)

    def init(self, space: SearchSpace, seed: int) -> State:
        state = base_state(self.name, space, seed)
        state.update(
            stage="explore",
            walk={
                "direction": "down",
                "next": space.default_batch_size,
                "turned": False,
                "bad_steps": 0,
            },
            info={},
            excluded=[],
            arms=[],
        )
        return state

    def choose(self, state: State, in_flight: Sequence[int] = ()) -> tuple[Choice, State]:
        space = space_of(state)
        beliefs = self.beliefs(state)
        best = _best(beliefs)
        if state["stage"] == "explore":
            bs = int(state["walk"]["next"])
            if bs not in in_flight:
                threshold = None
                if best is not None:
                    threshold = min(space.beta, self.settings.explore_stop) * best[1]
                return Choice(bs, cached_limit(state, bs), threshold, "explore"), state
            known = best[0] if best else space.default_batch_size
            return Choice(
                known, cached_limit(state, known), self._threshold(best, space), "concurrent"
            ), state
        bs, state = self._thompson(state, beliefs)
        return Choice(bs, cached_limit(state, bs), self._threshold(best, space), "exploit"), state

    def observe(self, state: State, outcome: Outcome) -> State:
        check_batch_size(state, outcome.batch_size)
        state = remember_limit(state, outcome)
        if outcome.started:
            state = track_min_cost(state, outcome)
        before = _best(self.beliefs(state), exclude=outcome.batch_size)
        state = self._record(state, outcome)
        if state["stage"] == "explore" and outcome.batch_size == state["walk"]["next"]:
            state = self._walk(state, outcome, before)
        return state

    def beliefs(self, state: State) -> dict[int, ArmBelief]:
        """Posterior mean and spread of every observed, non-excluded arm."""
        s = self.settings
        observed = {
            int(k): (float(v["epoch_cost"]), np.asarray(v["log_epochs"], dtype=float))
            for k, v in state["info"].items()
            if v["log_epochs"] and int(k) not in state["excluded"]
        }
        if not observed:
            return {}
        squares = sum(float(((y - y.mean()) ** 2).sum()) for _, y in observed.values())
        dof = s.prior_dof + sum(y.size - 1 for _, y in observed.values())
        noise_var = (s.prior_dof * s.prior_sd**2 + squares) / dof
        priors = {bs: self._neighbour_prior(bs, observed) for bs in observed}
        spread = self._neighbour_spread(observed, priors, noise_var)
        beliefs = {}
        for bs, (epoch_cost, y) in observed.items():
            precision = y.size / noise_var
            weighted = precision * float(y.mean())
            prior = priors[bs]
            if prior is not None:
                precision += 1.0 / spread
                weighted += prior / spread
            beliefs[bs] = ArmBelief(epoch_cost, weighted / precision, math.sqrt(1.0 / precision))
        return beliefs

    def _neighbour_spread(
        self,
        observed: dict[int, tuple[float, Any]],
        priors: dict[int, float | None],
        noise_var: float,
    ) -> float:
        """How far arms stray from their neighbours (empirical Bayes), as a prior variance.

        Where neighbours need about as many epochs (SQuAD, Sentiment140) the prior is
        tight and the exact epoch costs decide; where epochs change fast with the
        batch size (CIFAR-100) it is loose and each arm speaks for itself.
        """
        s = self.settings
        gaps = [
            (float(y.mean()) - prior) ** 2 - noise_var / y.size
            for bs, (_, y) in observed.items()
            if (prior := priors[bs]) is not None
        ]
        if len(gaps) < s.min_arms_for_spread:
            return s.neighbour_sd**2
        return min(max(float(np.mean(gaps)), s.min_neighbour_sd**2), s.max_neighbour_sd**2)

    def _neighbour_prior(self, bs: int, observed: dict[int, tuple[float, Any]]) -> float | None:
        """Distance-weighted mean log-epochs of the other observed arms (None if none is near)."""
        total = weight_sum = 0.0
        for other, (_, y) in observed.items():
            if other == bs:
                continue
            octaves = math.log2(other / bs)
            weight = math.exp(-0.5 * (octaves / self.settings.neighbour_octaves) ** 2) * y.size
            total += weight * float(y.mean())
            weight_sum += weight
        return total / weight_sum if weight_sum > 1e-3 else None

    def _record(self, state: State, outcome: Outcome) -> State:
        """Store the run's epoch cost and its (possibly censored) epochs to target."""
        key = str(outcome.batch_size)
        info = dict(state["info"])
        arm = dict(info.get(key, {"epoch_cost": None, "log_epochs": []}))
        if outcome.epochs > 0:
            arm["epoch_cost"] = outcome.epoch_cost or outcome.cost / outcome.epochs
            epochs = float(outcome.epochs)
            if not outcome.reached:
                # Censored: it needed more than this; count it as needing half again as much.
                epochs *= self.settings.failure_penalty
            arm["log_epochs"] = push_window(
                arm["log_epochs"], math.log(epochs), self.settings.window
            )
        if arm["epoch_cost"] is None:
            return state
        info[key] = arm
        return {**state, "info": info}

    def _threshold(self, best: tuple[int, float] | None, space: SearchSpace) -> float | None:
        return None if best is None else space.beta * best[1]

    def _walk(self, state: State, outcome: Outcome, before: tuple[int, float] | None) -> State:
        """Decide where the walk goes after the run it asked for."""
        space = space_of(state)
        sizes = list(space.batch_sizes)
        walk = dict(state["walk"])
        excluded = list(state["excluded"])
        bs = outcome.batch_size
        belief = self.beliefs(state).get(bs)
        good = (
            outcome.reached
            and belief is not None
            and (
                before is None or belief.expected_cost <= (1.0 + self.settings.walk_tol) * before[1]
            )
        )
        if not outcome.reached and not outcome.stopped_early and before is not None:
            # Not converging within the epoch budget only gets worse further out.
            beyond = [b for b in sizes if (b <= bs if walk["direction"] == "down" else b >= bs)]
            excluded = sorted(set(excluded) | set(beyond))
        state = {**state, "excluded": excluded}
        step = -1 if walk["direction"] == "down" else 1
        # One bad step may be bad luck in its epochs to target (the noisy factor) when
        # its epoch cost (the exact factor) is still competitive: then look one further.
        carry_on = good or (
            outcome.reached
            and walk["bad_steps"] == 0
            and belief is not None
            and _epoch_cost_competitive(belief, self.beliefs(state), self.settings.walk_tol)
        )
        walk["bad_steps"] = 0 if good else walk["bad_steps"] + 1
        nxt = _neighbour(sizes, bs, step, excluded, state["info"]) if carry_on else None
        if nxt is None and not walk["turned"]:
            walk["bad_steps"] = 0
            walk["turned"] = True
            walk["direction"] = "up"
            if self._default_still_competitive(state):
                nxt = _neighbour(sizes, space.default_batch_size, 1, excluded, state["info"])
        walk["next"] = nxt
        state = {**state, "walk": walk}
        return self._start_exploiting(state) if nxt is None else state

    def _default_still_competitive(self, state: State) -> bool:
        beliefs = self.beliefs(state)
        best = _best(beliefs)
        default = beliefs.get(space_of(state).default_batch_size)
        if best is None or default is None:
            return True
        return default.expected_cost <= (1.0 + self.settings.walk_tol) * best[1]

    def _start_exploiting(self, state: State) -> State:
        beliefs = self.beliefs(state)
        best = _best(beliefs)
        if best is None:
            arms = [space_of(state).default_batch_size]
        else:
            limit = (1.0 + self.settings.keep_tol) * best[1]
            arms = [bs for bs, b in beliefs.items() if b.expected_cost <= limit]
        return {**state, "stage": "exploit", "arms": sorted(arms)}

    def _thompson(self, state: State, beliefs: dict[int, ArmBelief]) -> tuple[int, State]:
        """Sample each arm's log-cost from its posterior; run the cheapest sample."""
        gen, state = rng(state)
        arms = [int(a) for a in state["arms"]]
        unseen = [a for a in arms if a not in beliefs]
        if unseen:
            return int(gen.choice(unseen)), state
        samples = {
            a: math.log(beliefs[a].epoch_cost)
            + float(gen.normal(beliefs[a].mean, self.settings.exploration_scale * beliefs[a].sd))
            for a in arms
        }
        return min(samples, key=lambda a: samples[a]), state


def _epoch_cost_competitive(belief: ArmBelief, beliefs: dict[int, ArmBelief], tol: float) -> bool:
    best = _best(beliefs)
    return best is None or belief.epoch_cost <= (1.0 + tol) * beliefs[best[0]].epoch_cost


def _best(beliefs: dict[int, ArmBelief], exclude: int | None = None) -> tuple[int, float] | None:
    """The arm with the least expected cost, and that cost."""
    options = [(b.expected_cost, bs) for bs, b in beliefs.items() if bs != exclude]
    if not options:
        return None
    cost, bs = min(options)
    return bs, cost


def _neighbour(
    sizes: list[int], bs: int, step: int, excluded: list[int], info: dict[str, Any]
) -> int | None:
    """The next size in this direction that is neither excluded nor already observed."""
    i = sizes.index(bs) + step
    while 0 <= i < len(sizes):
        if sizes[i] in excluded:
            return None
        if str(sizes[i]) not in info:
            return sizes[i]
        i += step
    return None
