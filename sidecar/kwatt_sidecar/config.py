"""The sidecar's configuration, from the environment only (names in kwatt_core.contract)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from kwatt_core import contract
from kwatt_core.report import MODES, Report
from kwatt_core.run import RunError, RunSettings
from kwatt_sidecar.carbon import CarbonConfig, CarbonConfigError
from kwatt_sidecar.carbon import load_config as load_carbon
from kwatt_sidecar.envnumber import env_number

# The ranges every numeric setting is checked against (docs/sidecar.md lists them).
MAX_BATCH_SIZE = 2**31 - 1
MAX_EPOCHS = 1_000_000
MAX_STEPS = 1_000_000  # warmup and measure windows, in steps
MAX_LIMIT_W = 10_000  # cached and fixed limits; clamped to the GPU's own range later
MAX_COST_THRESHOLD = 1e15
DEFAULT_SAMPLE_INTERVAL_S = 0.1
SAMPLE_INTERVAL_RANGE_S = (0.01, 60.0)
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


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
    sample_interval_s: float = DEFAULT_SAMPLE_INTERVAL_S
    log_level: str = "INFO"
    carbon: CarbonConfig | None = None  # carbon-aware limits (docs/carbon.md); None: off


def _number(env: Mapping[str, str], name: str, kind: type[float] | type[int]) -> float | None:
    return env_number(env, name, kind, ConfigError)


def _int(
    env: Mapping[str, str], name: str, low: int, high: int, default: int | None = None
) -> int | None:
    """An integer in [low, high], or `default` when unset or blank."""
    value = _number(env, name, int)
    if value is None:
        return default
    if not low <= value <= high:
        raise ConfigError(f"{name}={value} is outside the range {low} to {high}.")
    return int(value)


def _float(
    env: Mapping[str, str], name: str, low: float, high: float, open_low: bool = False
) -> float | None:
    """A finite number in [low, high] (or (low, high] with `open_low`), or None when unset."""
    value = _number(env, name, float)
    if value is None:
        return None
    if value > high or value < low or (open_low and value == low):
        bound = f"above {low:g}" if open_low else f"at least {low:g}"
        raise ConfigError(f"{name}={value:g} must be {bound} and at most {high:g}.")
    return float(value)


def _port(env: Mapping[str, str], name: str, default: int) -> int:
    port = _number(env, name, int)
    if port is None:
        return default
    if not 0 <= port <= 65535:
        raise ConfigError(f"{name}={port} is not a TCP port (0 to 65535).")
    return int(port)


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
    """Parse and check the environment; ConfigError names the variable in one sentence."""
    mode = env.get(contract.ENV_POWER_MODE, "optimize").strip().lower() or "optimize"
    if mode not in MODES:
        raise ConfigError(
            f"{contract.ENV_POWER_MODE}={mode!r} is not a power mode; use one of "
            f"{', '.join(MODES)}."
        )
    fixed = _float(env, contract.ENV_FIXED_LIMIT, 1, MAX_LIMIT_W)
    if mode == "fixed" and fixed is None:
        raise ConfigError(f"Power mode fixed needs {contract.ENV_FIXED_LIMIT} (watts).")
    cached = _float(env, contract.ENV_CACHED_LIMIT, 1, MAX_LIMIT_W)
    eta = _float(env, contract.ENV_ETA, 0.0, 1.0)
    level = env.get(contract.ENV_LOG_LEVEL, "").strip().upper() or "INFO"
    if level not in LOG_LEVELS:
        raise ConfigError(
            f"{contract.ENV_LOG_LEVEL}={level!r} is not a log level; use one of "
            f"{', '.join(LOG_LEVELS)}."
        )
    low_s, high_s = SAMPLE_INTERVAL_RANGE_S
    interval = _float(env, contract.ENV_SAMPLE_INTERVAL, low_s, high_s)
    port = _port(env, contract.ENV_PORT, contract.DEFAULT_PORT)
    metrics_port = _port(env, contract.ENV_METRICS_PORT, contract.DEFAULT_METRICS_PORT)
    if port == metrics_port and port != 0:
        raise ConfigError(
            f"{contract.ENV_PORT} and {contract.ENV_METRICS_PORT} are both {port}; "
            "the protocol and the metrics need two ports."
        )
    batch_size = _int(env, contract.ENV_BATCH_SIZE, 1, MAX_BATCH_SIZE, 1)
    warmup = _int(env, contract.ENV_WARMUP_STEPS, 0, MAX_STEPS, 10)
    measure = _int(env, contract.ENV_MEASURE_STEPS, 1, MAX_STEPS, 40)
    assert batch_size is not None and warmup is not None and measure is not None
    try:
        settings = RunSettings(
            batch_size=batch_size,
            mode=mode,  # type: ignore[arg-type]
            eta=0.5 if eta is None else eta,
            cost_threshold=_float(
                env, contract.ENV_COST_THRESHOLD, 0.0, MAX_COST_THRESHOLD, open_low=True
            ),
            target_metric=_number(env, contract.ENV_TARGET_METRIC, float),
            higher_is_better=_bool(env, contract.ENV_TARGET_HIGHER, True),
            max_epochs=_int(env, contract.ENV_MAX_EPOCHS, 1, MAX_EPOCHS),
            cached_limit_w=None if cached is None else round(cached),
            fixed_limit_w=None if fixed is None else round(fixed),
            warmup_steps=warmup,
            measure_steps=measure,
        )
    except RunError as exc:  # every field is checked above; kept as a last line of defence
        raise ConfigError(str(exc)) from None
    try:
        carbon = load_carbon(env)
    except CarbonConfigError as exc:
        raise ConfigError(str(exc)) from None
    return SidecarConfig(
        settings=settings,
        port=port,
        metrics_port=metrics_port,
        termination_path=termination_path(env),
        state_dir=Path(env.get(contract.ENV_STATE_DIR) or contract.DEFAULT_STATE_DIR),
        namespace=env.get(contract.ENV_POD_NAMESPACE, ""),
        pod=env.get(contract.ENV_POD_NAME, ""),
        job=env.get(contract.ENV_JOB, ""),
        run=env.get(contract.ENV_RUN, ""),
        sample_interval_s=DEFAULT_SAMPLE_INTERVAL_S if interval is None else interval,
        log_level=level,
        carbon=carbon,
    )


def termination_path(env: Mapping[str, str]) -> Path:
    return Path(env.get(contract.ENV_TERMINATION_PATH) or contract.DEFAULT_TERMINATION_PATH)


def failure_report(env: Mapping[str, str], sentence: str) -> Report:
    """The report of a sidecar that could not start: result failed, the sentence as its note.

    Batch size and mode are the environment's where they parse, so the operator files it
    under the right run; nothing was measured and no limit was changed.
    """
    try:
        batch_size = _int(env, contract.ENV_BATCH_SIZE, 1, MAX_BATCH_SIZE, 1) or 1
    except ConfigError:
        batch_size = 1
    mode = env.get(contract.ENV_POWER_MODE, "").strip().lower()
    return Report(
        result="failed",
        batch_size=batch_size,
        epochs=0,
        energy_j=0.0,
        time_s=0.0,
        cost=0.0,
        mode=mode if mode in MODES else "optimize",  # type: ignore[arg-type]
        note=sentence,
    )
