"""kwatt's batch-size policy: a local walk, then Thompson sampling on a shared model.

A run's cost is (cost of one epoch at its limit) x (epochs to reach the target), and
kwatt learns the two factors apart:
- Epochs to target depend on the batch size alone and are the noisy factor. kwatt
  learns their log per arm with an unknown noise variance pooled across arms (a
  normal-inverse-gamma prior of `prior_sd` with `prior_dof` pseudo-observations), and
  lets neighbouring batch sizes inform each other: an arm's mean log-epochs has a prior
  centred on its neighbours' (weighted by distance in octaves), so one unlucky run does
  not condemn it, nor does one lucky run crown it.
- The cost of one epoch depends on the batch size and the power limit, and is measured
  with noise: a profiling window (40 steps) strays by about `window_sd`, one epoch by
  about `epoch_sd`, a run of n epochs at one limit by `epoch_sd` / sqrt(n) (the spreads
  of real windows and epochs, docs/benchmark.md). Per batch size and limit kwatt keeps a
  Gaussian belief of the log epoch cost: the profile's windows place every limit
  relative to the kept one, whose epochs the run measured, and each later run at a limit
  measures it again, far better than a window can; a limit between two that runs measured
  costs at most the dearer of them (`_bounded`). The limit of a run is drawn by
  Thompson sampling on those beliefs, so a limit that one noisy window put ahead or
  behind gets tried while it may still be the best, and no more once it cannot.
- Cost against batch size is close to unimodal, so instead of two full pruning sweeps
  it walks from the default towards cheaper neighbours (down first, up first when the
  GPU is starved: `_starved`) and turns back as soon as a neighbour is predicted to
  cost clearly more than the best (`walk_tol`); one step later when the miss came from
  the noisy factor alone, and as many as it takes while the epoch cost keeps falling
  clearly below the best's. It walks the other way only if the default is still near
  the best.
- Exploratory runs stop once they cost (1 + `walk_tol`) x the best prediction times two
  spreads of a run's luck (`_explore_stop`; never later than `beta` times it): such a
  run is not good by the walk's own measure.
- Sampling draws from the posteriors with their spread halved (`exploration_scale`).
Every setting's reason: docs/benchmark.md. State stays bounded: per arm the count, mean
and spread of its log-epochs (the count capped at `window`, so old observations fade)
and per limit a mean, a variance and how many runs measured it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
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
from kwatt_core.profiler import KWATT_PROFILING


@dataclass(frozen=True)
class KwattSettings:
    """Tuning of the kwatt policy (each setting's reason: docs/benchmark.md)."""

    walk_tol: float = 0.10
    explore_stop: float | None = None  # None: derived from the noise (see `_explore_stop`)
    luck_sds: float = 2.0
    keep_tol: float | None = None  # None: beta - 1 (see `_start_exploiting`)
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
    window_sd: float = 0.045
    window_steps: int = 40
    epoch_sd: float = 0.025
    rise_margin: float = 0.19


UNKNOWN_LIMIT = 0  # the key of what runs at a limit nobody reported teach


@dataclass(frozen=True)
class ArmBelief:
    """Posterior of one arm's mean log-epochs, and its epoch cost at its best known limit."""

    epoch_cost: float
    mean: float
    sd: float
    epoch_cost_sd: float = 0.0  # of the log epoch cost at that limit

    @property
    def expected_cost(self) -> float:
        return self.epoch_cost * math.exp(self.mean)


# Per observed arm: (epoch cost at its best limit, spread of its log), log-epochs statistics.
_Observed = dict[int, tuple[tuple[float, float], "_Epochs"]]


@dataclass(frozen=True)
class _Epochs:
    """Sufficient statistics of an arm's log-epochs: count, mean, sum of squared deviations."""

    count: float
    mean: float
    m2: float


class KwattPolicy:
    """Unimodal walk, then Thompson sampling on an epoch cost x shared-noise epochs model."""

    name = "kwatt"

    def __init__(self, settings: KwattSettings | None = None) -> None:
        self.settings = settings or KwattSettings()
        self.profiling = replace(
            KWATT_PROFILING,
            tie_tolerance=self.settings.tie_tolerance,
            rise_margin=self.settings.rise_margin,
        )

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
                    threshold = min(space.beta, self._explore_stop(state)) * best[1]
                limit, state = self._limit(state, bs)
                return Choice(bs, limit, threshold, "explore"), state
            known = best[0] if best else space.default_batch_size
            return Choice(
                known, cached_limit(state, known), self._threshold(best, space), "concurrent"
            ), state
        bs, state = self._thompson(state, beliefs)
        limit, state = self._limit(state, bs)
        return Choice(bs, limit, self._threshold(best, space), "exploit"), state

    def observe(self, state: State, outcome: Outcome) -> State:
        check_batch_size(state, outcome.batch_size)
        state = remember_limit(state, outcome)
        if outcome.started:
            state = track_min_cost(state, outcome)
        walking = state["stage"] == "explore" and outcome.batch_size == state["walk"]["next"]
        before = _best(self.beliefs(state), exclude=outcome.batch_size) if walking else None
        state = self._record(state, outcome)
        if walking:
            state = self._walk(state, outcome, before)
        return state

    def beliefs(self, state: State) -> dict[int, ArmBelief]:
        """Posterior mean and spread of every observed, non-excluded arm."""
        observed, noise_var, priors = self._model(state)
        if not observed:
            return {}
        spread = self._neighbour_spread(observed, priors, noise_var)
        beliefs = {}
        for bs, (cost, e) in observed.items():
            precision = e.count / noise_var
            weighted = precision * e.mean
            prior = priors[bs]
            if prior is not None:
                precision += 1.0 / spread
                weighted += prior / spread
            mean, sd = weighted / precision, math.sqrt(1.0 / precision)
            beliefs[bs] = ArmBelief(cost[0], mean, sd, cost[1])
        return beliefs

    def _model(self, state: State) -> tuple[_Observed, float, dict[int, float | None]]:
        """Observed arms ((epoch cost, its log spread), log-epochs statistics), the pooled
        noise variance of a run's log-epochs, and each arm's neighbour prior."""
        s = self.settings
        observed: _Observed = {}
        # In the order of the sizes, not of the keys: a state that went through the API
        # server comes back with its keys sorted as strings, and the sums must not change.
        for key, arm in sorted(state["info"].items(), key=lambda item: int(item[0])):
            cost = _epoch_cost(arm)
            if arm["epochs"] is not None and cost is not None and int(key) not in state["excluded"]:
                observed[int(key)] = (cost, _Epochs(*arm["epochs"]))
        squares = sum(e.m2 for _, e in observed.values())
        dof = s.prior_dof + sum(e.count - 1.0 for _, e in observed.values())
        noise_var = (s.prior_dof * s.prior_sd**2 + squares) / dof
        priors = {bs: self._neighbour_prior(bs, observed) for bs in observed}
        return observed, noise_var, priors

    def _neighbour_spread(
        self,
        observed: _Observed,
        priors: dict[int, float | None],
        noise_var: float,
    ) -> float:
        """How far arms stray from their neighbours (empirical Bayes), as a prior variance.

        Where neighbours need about as many epochs (SQuAD, Sentiment140) the prior is
        tight and the epoch costs decide; where epochs change fast with the batch size
        (CIFAR-100) it is loose and each arm speaks for itself.
        """
        s = self.settings
        gaps = [
            (e.mean - prior) ** 2 - noise_var / e.count
            for bs, (_, e) in observed.items()
            if (prior := priors[bs]) is not None
        ]
        if len(gaps) < s.min_arms_for_spread:
            return s.neighbour_sd**2
        return min(max(sum(gaps) / len(gaps), s.min_neighbour_sd**2), s.max_neighbour_sd**2)

    def _neighbour_prior(self, bs: int, observed: _Observed) -> float | None:
        """Distance-weighted mean log-epochs of the other observed arms (None if none is near)."""
        total = weight_sum = 0.0
        for other, (_, e) in observed.items():
            if other == bs:
                continue
            octaves = math.log2(other / bs)
            weight = math.exp(-0.5 * (octaves / self.settings.neighbour_octaves) ** 2) * e.count
            total += weight * e.mean
            weight_sum += weight
        return total / weight_sum if weight_sum > 1e-3 else None

    def _record(self, state: State, outcome: Outcome) -> State:
        """Learn the run's epoch cost at its limit(s) and its (possibly censored) epochs."""
        key = str(outcome.batch_size)
        info = dict(state["info"])
        arm = dict(info.get(key, {"epochs": None, "limits": {}}))
        kept = (
            outcome.kept_limit_w or outcome.power_limit_w or cached_limit(state, outcome.batch_size)
        )
        arm["limits"] = self._learn_limits(dict(arm["limits"]), outcome, kept or UNKNOWN_LIMIT)
        if outcome.epochs > 0:
            epochs = float(outcome.epochs)
            if not outcome.reached:
                # Censored: it needed more than this; count it as needing half again as much.
                epochs *= self.settings.failure_penalty
            arm["epochs"] = list(self._add_epochs(arm["epochs"], math.log(epochs)))
        if not arm["limits"]:
            return state
        info[key] = arm
        return {**state, "info": info}

    def _add_epochs(self, stats: list[float] | None, value: float) -> tuple[float, float, float]:
        """Welford's update, the count capped at `window` so that old observations fade."""
        count, mean, m2 = (0.0, 0.0, 0.0) if stats is None else stats
        if count >= self.settings.window:
            m2 *= (count - 1.0) / count
            count -= 1.0
        count += 1.0
        delta = value - mean
        mean += delta / count
        return count, mean, m2 + delta * (value - mean)

    def _learn_limits(
        self, limits: dict[str, list[float]], outcome: Outcome, kept: int
    ) -> dict[str, Any]:
        """Update the beliefs (mean, variance) of the log epoch cost at each limit."""
        s = self.settings
        if outcome.epochs <= 0 or outcome.cost <= 0:
            return limits  # nothing ran, or nothing was measured: nothing to learn
        if outcome.power_limit_w is None:
            if outcome.profile:
                return limits  # a profile cut short: its epochs ran at several limits
            # The whole run at one limit: its mean epoch cost, as exact as its epochs are many.
            level = outcome.cost / outcome.epochs
            return _update(limits, kept, math.log(level), s.epoch_sd**2 / outcome.epochs)
        if outcome.epoch_cost is not None and outcome.epoch_cost > 0:
            level, variance = outcome.epoch_cost, s.epoch_sd**2 / max(outcome.kept_epochs, 1)
        else:
            # No epoch ran wholly at the kept limit: the run's mean, profiling included.
            level, variance = outcome.cost / outcome.epochs, (2.0 * s.window_sd) ** 2
        windows = {limit: (cost, steps) for limit, cost, steps, _ in outcome.profile if cost > 0}
        if kept in windows:
            base_cost, base_steps = windows[kept]
            for limit, (cost, steps) in windows.items():
                if limit != kept and str(limit) not in limits:
                    spread = self._window_var(steps) + self._window_var(base_steps) + variance
                    value = math.log(level * cost / base_cost)
                    limits = _update(limits, limit, value, spread, run=False)
        return _update(limits, kept, math.log(level), variance)

    def _window_var(self, steps: int) -> float:
        """Variance of a window's log cost: `window_sd` at `window_steps`, wider when shorter."""
        return self.settings.window_sd**2 * self.settings.window_steps / max(steps, 1)

    def _limit(self, state: State, bs: int) -> tuple[int | None, State]:
        """The limit to run `bs` at: Thompson sampling on the limit beliefs (None: profile)."""
        limits = _known_limits(state, bs)
        if not limits:
            return cached_limit(state, bs), state
        if len(limits) == 1:
            return int(next(iter(limits))), state
        gen, state = rng(state)
        limit, _ = self._sample_limit(gen, limits)
        return limit, state

    def _sample_limit(self, gen: Any, limits: dict[str, list[float]]) -> tuple[int, float]:
        """One draw of every limit's log epoch cost: the cheapest limit and its draw.

        A near-tie goes to the lower limit, which draws less power: kwatt is there to save
        energy, as the profiler's tie-break (`tie_tolerance`)."""
        samples = {
            int(p): float(gen.normal(mean, self.settings.exploration_scale * math.sqrt(var)))
            for p, (mean, var, _) in sorted(limits.items(), key=lambda item: int(item[0]))
        }
        least = min(samples.values())
        limit = min(
            p
            for p, value in samples.items()
            if value <= least + math.log1p(self.settings.tie_tolerance)
        )
        return limit, samples[limit]

    def _explore_stop(self, state: State) -> float:
        """How many times the best prediction an exploratory run may cost before it stops.

        A good arm (within `walk_tol` of the best) costs at most (1 + walk_tol) x the best,
        times its run's luck: `luck_sds` spreads of a run's log-epochs (the pooled noise).
        A run past that is not good by the walk's own measure, finished or not."""
        if self.settings.explore_stop is not None:
            return self.settings.explore_stop
        _, noise_var, _ = self._model(state)
        luck = math.exp(self.settings.luck_sds * math.sqrt(noise_var))
        return (1.0 + self.settings.walk_tol) * luck

    def _threshold(self, best: tuple[int, float] | None, space: SearchSpace) -> float | None:
        return None if best is None else space.beta * best[1]

    def _walk(self, state: State, outcome: Outcome, before: tuple[int, float] | None) -> State:
        """Decide where the walk goes after the run it asked for."""
        s = self.settings
        space = space_of(state)
        sizes = list(space.batch_sizes)
        walk = dict(state["walk"])
        excluded = list(state["excluded"])
        bs = outcome.batch_size
        if before is None and bs == space.default_batch_size and _starved(outcome):
            walk["direction"] = "up"
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
        # its epoch cost is still competitive: then look one further. And while the epoch
        # cost (the exact factor) keeps falling clearly below the best arm's, beyond two
        # epochs' measurement noise, the sizes further on may need as few epochs as the
        # best and cost less per epoch: bad steps there are the epochs' luck, and the walk
        # goes on, whether the run reached the target or was stopped for cost.
        beliefs = self.beliefs(state)
        carry_on = good or (
            belief is not None
            and (outcome.reached or outcome.stopped_early)
            and (
                _epoch_cost_competitive(belief, beliefs, math.expm1(-2.0 * s.epoch_sd))
                or (
                    outcome.reached
                    and walk["bad_steps"] == 0
                    and _epoch_cost_competitive(belief, beliefs, s.walk_tol)
                )
            )
        )
        walk["bad_steps"] = 0 if good else walk["bad_steps"] + 1
        nxt = _neighbour(sizes, bs, step, excluded, state["info"]) if carry_on else None
        if nxt is None and not walk["turned"]:
            walk["bad_steps"] = 0
            walk["turned"] = True
            walk["direction"] = "up" if walk["direction"] == "down" else "down"
            if self._default_still_competitive(state):
                nxt = _neighbour(sizes, space.default_batch_size, -step, excluded, state["info"])
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
            # An arm past beta x the best is stopped before it can finish: no use sampling it.
            keep = self.settings.keep_tol
            limit = (space_of(state).beta if keep is None else 1.0 + keep) * best[1]
            arms = [bs for bs, b in beliefs.items() if b.expected_cost <= limit]
        return {**state, "stage": "exploit", "arms": sorted(arms)}

    def _thompson(self, state: State, beliefs: dict[int, ArmBelief]) -> tuple[int, State]:
        """Sample each arm's log-cost from its posterior; run the cheapest sample."""
        gen, state = rng(state)
        arms = [int(a) for a in state["arms"]]
        unseen = [a for a in arms if a not in beliefs]
        if unseen:
            return int(gen.choice(unseen)), state
        scale = self.settings.exploration_scale
        samples = {
            a: float(gen.normal(math.log(beliefs[a].epoch_cost), scale * beliefs[a].epoch_cost_sd))
            + float(gen.normal(beliefs[a].mean, scale * beliefs[a].sd))
            for a in arms
        }
        return min(samples, key=lambda a: samples[a]), state


def _known_limits(state: State, bs: int) -> dict[str, list[float]]:
    """The beliefs of `bs`'s limits that a run can be set to (not the unknown one)."""
    arm = state["info"].get(str(bs))
    return _bounded({p: v for p, v in (arm["limits"] if arm else {}).items() if int(p) > 0})


def _bounded(limits: dict[str, list[float]]) -> dict[str, list[float]]:
    """The limit beliefs with each limit that only a window measured, between two that runs
    measured, held at or below the dearer of the two.

    An epoch's cost against the power limit falls, then rises (one minimum, what the
    profiler's descent assumes), so a limit between two costs at most what the dearer of
    them does. A window strays by several times a run's spread; without this, one window
    misread high keeps a limit between two good ones from ever being tried (a tie that
    could have gone to the lower limit, and its energy, goes to the higher one)."""
    measured = sorted((int(p), v[0]) for p, v in limits.items() if v[2] and int(p) > 0)
    bounded = dict(limits)
    for p, (mean, var, runs) in limits.items():
        below = [m for q, m in measured if q < int(p)]
        above = [m for q, m in measured if q > int(p)]
        if not runs and below and above:
            bounded[p] = [min(mean, max(below[-1], above[0])), var, runs]
    return bounded


def _update(
    limits: dict[str, Any], limit: int, value: float, variance: float, run: bool = True
) -> dict[str, Any]:
    """A Gaussian belief [mean, variance, runs that measured it] with one more observation."""
    old = limits.get(str(limit))
    if old is None:
        mean, var, runs = value, variance, 0
    else:
        var = 1.0 / (1.0 / old[1] + 1.0 / variance)
        mean, runs = var * (old[0] / old[1] + value / variance), int(old[2])
    return {**limits, str(limit): [mean, var, runs + int(run)]}


WINDOW_ONLY_SDS = 1.0  # how far above its mean a limit that only a window measured counts


def _epoch_cost(arm: dict[str, Any]) -> tuple[float, float] | None:
    """An arm's epoch cost at its best limit and the spread of its log, a limit that only
    a window measured counted at `WINDOW_ONLY_SDS` standard deviations above its mean.

    The least of several noisy windows flatters an arm; one standard deviation keeps a
    limit that its window shows clearly cheaper, and drops one within the noise."""
    best: tuple[float, float] | None = None
    for mean, var, runs in arm["limits"].values():
        sd = math.sqrt(var)
        level = mean if runs else mean + WINDOW_ONLY_SDS * sd
        if best is None or level < best[0]:
            best = (level, sd)
    return None if best is None else (math.exp(best[0]), best[1])


def _starved(outcome: Outcome) -> bool:
    """Whether the GPU drew, at the highest limit it profiled, less than the lowest one.

    No limit kwatt could set binds then: the GPU waits on its input or on per-step
    overheads most of the time, and a larger batch does more per step for the same
    overheads, so the walk looks at larger batches first. (A profile that stopped
    early saw the cost rise as the limit fell: the limits bind, and it is not starved.)"""
    if not outcome.profile:
        return False
    top = max(outcome.profile)
    return top[3] < min(limit for limit, _, _, _ in outcome.profile)


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
