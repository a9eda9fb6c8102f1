"""One reader of a number from the sidecar's environment, for its settings and its carbon
settings alike: blank is unset, anything else must be a finite number (or an integer)."""

from __future__ import annotations

from collections.abc import Mapping


def env_number(
    env: Mapping[str, str],
    name: str,
    kind: type[float] | type[int],
    error: type[ValueError],
) -> float | None:
    """`env[name]` as `kind`, None when unset or blank; `error` with one sentence otherwise."""
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise error(
            f"{name}={text!r} is not a{'n integer' if kind is int else ' number'}."
        ) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise error(f"{name}={text!r} is not a finite number.")
    return value
