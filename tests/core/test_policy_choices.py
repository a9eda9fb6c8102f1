"""What each policy's choice says: the stage the operator records with every run
(`base.Stage`), the batch size a concurrent run gets, and how sure the kwatt policy is
after one run."""

from __future__ import annotations

import pytest

from kwatt_core.policies import (
    DefaultPolicy,
    KwattPolicy,
    OraclePolicy,
    Outcome,
    PolicyError,
    SearchSpace,
    make_policy,
)

SPACE = SearchSpace(batch_sizes=(8, 16, 32, 64), default_batch_size=32, max_limit_w=250)


def reached(bs: int, cost: float, epochs: int = 10) -> Outcome:
    return Outcome(bs, cost, True, epochs=epochs, epoch_cost=cost / epochs)


def test_the_fixed_policies_say_what_they_are() -> None:
    default, _ = DefaultPolicy().choose(DefaultPolicy().init(SPACE, 0))
    assert (default.batch_size, default.power_limit_w, default.stage) == (32, 250, "default")
    oracle = OraclePolicy(16, 175)
    choice, _ = oracle.choose(oracle.init(SPACE, 0))
    assert (choice.batch_size, choice.power_limit_w, choice.stage) == (16, 175, "oracle")


def test_an_unknown_policy_lists_the_known_ones() -> None:
    with pytest.raises(PolicyError, match="choose one of default, zeus, kwatt"):
        make_policy("fastest")


def test_kwatt_explores_from_the_default_and_profiles_it() -> None:
    policy = KwattPolicy()
    choice, _ = policy.choose(policy.init(SPACE, 0))
    assert (choice.batch_size, choice.power_limit_w, choice.stage) == (32, None, "explore")
    assert choice.cost_threshold is None  # nothing known yet to stop against


def test_a_concurrent_run_gets_the_best_size_known_so_far() -> None:
    """While the walk's next size runs, another recurrence that starts meanwhile runs the
    cheapest size seen so far, not the default."""
    policy = KwattPolicy()
    state = policy.init(SPACE, 0)
    first, state = policy.choose(state)
    state = policy.observe(state, reached(first.batch_size, 100.0))
    second, state = policy.choose(state)
    assert second.batch_size == 16  # the walk goes down from 32
    state = policy.observe(state, reached(16, 50.0))
    walking, state = policy.choose(state)
    assert walking.batch_size == 8 and walking.stage == "explore"
    concurrent, _ = policy.choose(state, in_flight=[8])
    assert (concurrent.batch_size, concurrent.stage) == (16, "concurrent")


def test_one_run_leaves_the_prior_spread() -> None:
    """One run of one size says nothing about the run-to-run noise: the belief about that
    size's log-epochs has the prior's spread, `prior_sd`."""
    policy = KwattPolicy()
    state = policy.init(SPACE, 0)
    state = policy.observe(state, reached(32, 100.0))
    (belief,) = policy.beliefs(state).values()
    assert belief.sd == pytest.approx(policy.settings.prior_sd)


def test_a_run_whose_epoch_cost_is_zero_still_teaches_without_error() -> None:
    """A report may say 0 for the kept epoch's cost (no epoch timed at the kept limit):
    the policy learns from the run's own cost per epoch instead of failing."""
    policy = KwattPolicy()
    state = policy.init(SPACE, 0)
    outcome = Outcome(32, 100.0, True, power_limit_w=200, epochs=10, epoch_cost=0.0)
    state = policy.observe(state, outcome)
    (belief,) = policy.beliefs(state).values()
    assert belief.expected_cost > 0


def test_an_excluded_size_has_no_belief() -> None:
    """A run out of its epoch budget beyond the best size excludes its size and the sizes
    past it (docs/benchmark.md): the model no longer counts them."""
    policy = KwattPolicy()
    state = policy.init(SPACE, 0)
    state = policy.observe(state, reached(32, 100.0))
    state = policy.observe(state, Outcome(16, 300.0, False, epochs=30, epoch_cost=10.0))
    assert set(state["excluded"]) == {8, 16}
    assert set(policy.beliefs(state)) == {32}
