"""Batch-size policies behind one interface (see `base.Policy`)."""

from kwatt_core.policies.base import (
    Choice,
    Outcome,
    Policy,
    PolicyError,
    SearchSpace,
    State,
    Window,
)
from kwatt_core.policies.fixed import DefaultPolicy, OraclePolicy
from kwatt_core.policies.kwatt import KwattPolicy, KwattSettings
from kwatt_core.policies.zeus import ZeusPolicy

LEARNING_POLICIES = ("default", "zeus", "kwatt")


def make_policy(name: str) -> Policy:
    """A policy that needs nothing but its name (the oracle needs hindsight: build it directly)."""
    if name == "default":
        return DefaultPolicy()
    if name == "zeus":
        return ZeusPolicy()
    if name == "kwatt":
        return KwattPolicy()
    raise PolicyError(f"Unknown policy '{name}'; choose one of {', '.join(LEARNING_POLICIES)}.")


__all__ = [
    "LEARNING_POLICIES",
    "Choice",
    "DefaultPolicy",
    "KwattPolicy",
    "KwattSettings",
    "OraclePolicy",
    "Outcome",
    "Policy",
    "PolicyError",
    "SearchSpace",
    "State",
    "Window",
    "ZeusPolicy",
    "make_policy",
]
