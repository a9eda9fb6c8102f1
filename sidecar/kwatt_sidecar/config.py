"""The sidecar's configuration, from the environment only (names in kwatt_core.contract)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kwatt_core import contract
from kwatt_core.report import MODES
from kwatt_core.run import RunError, RunSettings


class ConfigError(ValueError):
    """An environment variable has a value the sidecar cannot use; the message says which."""


@dataclass(frozen=True)
class SidecarConfig:
    settings: RunSettings
    port: int
    metrics_port: int
    termination_path: Path
    state_dir: Path
    namespace: str
    pod: str
    job: str
    run: str


def _number(env: Mapping[str, str], name: str, kind: type[float] | type[int]) -> float | None:
    text = env.get(name, "").strip()
    if not text:
        return None
    try:
        value = kind(text)
    except ValueError:
        raise ConfigError(
            f"{name}={text!r} is not a{'n integer' if kind is int else ' number'}."
        ) from None
    if value != value or value in (float("inf"), float("-inf")):
        raise ConfigError(f"{name}={text!r} is not a finite number.")
    return value


def _int(env: Mapping[str, str], name: str, default: int | None = None) -> int | None:
    value = _number(env, name, int)
    return default if value is None else int(value)


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    port = _int(env, name, default)
    assert port is not None
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}={port} is not a TCP port.")
    return port


def _bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    text = env.get(name, "").strip().lower()
    if not text:
        return default
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise ConfigError(f"{name}={text!r} must be true or false.")


def load(env: Mapping[str, str]) -> SidecarConfig:
    """Parse and check the environment; ConfigError names the variable."""
    mode = env.get(contract.ENV_POWER_MODE, "optimize").strip().lower() or "optimize"
    if mode not in MODES:
        raise ConfigError(
            f"{contract.ENV_POWER_MODE}={mode!r} is not a power mode; use one of "
            f"{', '.join(MODES)}."
        )
    fixed = _number(env, contract.ENV_FIXED_LIMIT, float)
    if mode == "fixed" and fixed is None:
        raise ConfigError(f"Power mode fixed needs {contract.ENV_FIXED_LIMIT} (watts).")
    cached = _number(env, contract.ENV_CACHED_LIMIT, float)
    eta = _number(env, contract.ENV_ETA, float)
    try:
        settings = RunSettings(
            batch_size=_int(env, contract.ENV_BATCH_SIZE, 1) or 1,
            mode=mode,  # type: ignore[arg-type]
            eta=0.5 if eta is None else eta,
            cost_threshold=_number(env, contract.ENV_COST_THRESHOLD, float),
            target_metric=_number(env, contract.ENV_TARGET_METRIC, float),
            higher_is_better=_bool(env, contract.ENV_TARGET_HIGHER, True),
            max_epochs=_int(env, contract.ENV_MAX_EPOCHS),
            cached_limit_w=None if cached is None else round(cached),
            fixed_limit_w=None if fixed is None else round(fixed),
            warmup_steps=_int(env, contract.ENV_WARMUP_STEPS, 10) or 0,
            measure_steps=_int(env, contract.ENV_MEASURE_STEPS, 40) or 40,
        )
    except RunError as exc:
        raise ConfigError(str(exc)) from None
    if settings.warmup_steps < 0 or settings.measure_steps < 1:
        raise ConfigError(
            f"{contract.ENV_WARMUP_STEPS} must be >= 0 and {contract.ENV_MEASURE_STEPS} >= 1."
        )
    return SidecarConfig(
        settings=settings,
        port=_port(env, contract.ENV_PORT, contract.DEFAULT_PORT),
        metrics_port=_port(env, contract.ENV_METRICS_PORT, contract.DEFAULT_METRICS_PORT),
        termination_path=Path(
            env.get(contract.ENV_TERMINATION_PATH) or contract.DEFAULT_TERMINATION_PATH
        ),
        state_dir=Path(env.get(contract.ENV_STATE_DIR) or contract.DEFAULT_STATE_DIR),
        namespace=env.get(contract.ENV_POD_NAMESPACE, ""),
        pod=env.get(contract.ENV_POD_NAME, ""),
        job=env.get(contract.ENV_JOB, ""),
        run=env.get(contract.ENV_RUN, ""),
    )
