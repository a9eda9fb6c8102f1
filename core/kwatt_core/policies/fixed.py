"""Policies that never learn: today's setting and the best setting in hindsight."""

from __future__ import annotations

from collections.abc import Sequence

from kwatt_core.policies.base import (
    Choice,
    Outcome,
    PolicyError,
    SearchSpace,
    State,
    base_state,
    check_batch_size,
    space_of,
)
from kwatt_core.profiler import KWATT_PROFILING


class DefaultPolicy:
    """The default batch size at the GPU's maximum limit: what runs without kwatt."""

    name = "default"
    profiling = KWATT_PROFILING  # never used: the limit is fixed

    def init(self, space: SearchSpace, seed: int) -> State:
        return base_state(self.name, space, seed)

    def choose(self, state: State, in_flight: Sequence[int] = ()) -> tuple[Choice, State]:
        space = space_of(state)
        return Choice(space.default_batch_size, space.max_limit_w, None, "default"), state

    def observe(self, state: State, outcome: Outcome) -> State:
        check_batch_size(state, outcome.batch_size)
        return state


class OraclePolicy:
    """The cheapest configuration in expectation, known in advance (for regret only)."""

    name = "oracle"
    profiling = KWATT_PROFILING  # never used: the limit is fixed

    def __init__(self, batch_size: int, power_limit_w: int) -> None:
        self.batch_size = batch_size
        self.power_limit_w = power_limit_w

    def init(self, space: SearchSpace, seed: int) -> State:
        if self.batch_size not in space.batch_sizes:
            raise PolicyError(f"The oracle's batch size {self.batch_size} is not a candidate.")
        return base_state(self.name, space, seed)

    def choose(self, state: State, in_flight: Sequence[int] = ()) -> tuple[Choice, State]:
        return Choice(self.batch_size, self.power_limit_w, None, "oracle"), state

    def observe(self, state: State, outcome: Outcome) -> State:
        check_batch_size(state, outcome.batch_size)
        return state
