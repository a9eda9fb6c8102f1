"""Small pieces the spec's checks and the objects the operator builds share."""

from __future__ import annotations

from typing import Any


def show(value: Any) -> str:
    """A value as a message quotes it: strings in quotes, at most 60 characters."""
    text = repr(value) if isinstance(value, str) else str(value)
    return text if len(text) <= 60 else text[:57] + "..."


def env_var(name: str, value: Any) -> dict[str, Any]:
    """A container's environment variable (its value as text)."""
    return {"name": name, "value": str(value)}
