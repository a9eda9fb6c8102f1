"""Parse a TrainingJob's spec into typed, frozen values, or say in sentences what is wrong.

The API server already defaults and validates against the CRD schema, but the
operator must not trust that (older objects, a CRD installed without its schema,
rules the schema cannot express), so everything is checked again here and every
problem is one sentence that names the field. The defaults here equal the CRD's
(a test holds them together), except eta and beta: the CRD has no default for them, so
that the operator's own (`ObjectiveDefaults`, from `kwatt operator --default-eta` and
`--default-beta`, the Helm chart's `defaultObjective`) fill in what a spec leaves out.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, cast

from kwatt_core.contract import DEFAULT_BATCH_SIZE_ENV, SIDECAR_CONTAINER
from kwatt_core.policies.base import SearchSpace
from kwatt_operator.carbon import Carbon, parse_carbon
from kwatt_operator.fields import show as _show
from kwatt_operator.schedule import ScheduleError, parse_schedule, parse_time_zone

PowerMode = Literal["optimize", "observe", "fixed"]
ConcurrencyPolicy = Literal["Allow", "Forbid", "Replace"]

DEFAULT_ETA = 0.5
DEFAULT_BETA = 2.0
DEFAULT_HIGHER_IS_BETTER = True
DEFAULT_POWER_MODE: PowerMode = "optimize"
DEFAULT_WARMUP_STEPS = 10
DEFAULT_MEASURE_STEPS = 40
DEFAULT_CONCURRENCY: ConcurrencyPolicy = "Forbid"
DEFAULT_SUSPEND = False
DEFAULT_HISTORY_LIMIT = 20
MAX_HISTORY_LIMIT = 100
POWER_MODES: tuple[PowerMode, ...] = ("optimize", "observe", "fixed")
CONCURRENCY_POLICIES: tuple[ConcurrencyPolicy, ...] = ("Allow", "Forbid", "Replace")
_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class SpecError(ValueError):
    """A TrainingJob spec that cannot be run; `problems` holds one sentence per field."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(" ".join(self.problems))


@dataclass(frozen=True)
class BatchSizes:
    candidates: tuple[int, ...]  # sorted, no repeats
    default: int
    env: str = DEFAULT_BATCH_SIZE_ENV


@dataclass(frozen=True)
class Target:
    metric: str
    value: float
    higher_is_better: bool = DEFAULT_HIGHER_IS_BETTER
    max_epochs: int | None = None


@dataclass(frozen=True)
class Objective:
    eta: float = DEFAULT_ETA
    beta: float = DEFAULT_BETA
    carbon: Carbon | None = None  # carbon-aware limits (docs/carbon.md); None: off


@dataclass(frozen=True)
class ObjectiveDefaults:
    """The eta and beta of every TrainingJob whose spec.objective leaves them out: the
    operator's settings, not the CRD's (the API server would fill a schema default in
    before the operator could apply its own)."""

    eta: float = DEFAULT_ETA
    beta: float = DEFAULT_BETA

    def __post_init__(self) -> None:
        """Bounds as spec.objective's in the CRD: eta in [0, 1], beta above 1."""
        eta, beta = self.eta, self.beta
        if isinstance(eta, bool) or not isinstance(eta, int | float) or not 0.0 <= eta <= 1.0:
            raise ValueError(f"The default eta must be a number from 0 to 1, got {eta!r}.")
        if (
            isinstance(beta, bool)
            or not isinstance(beta, int | float)
            or not math.isfinite(beta)
            or beta <= 1.0
        ):
            raise ValueError(f"The default beta must be a finite number above 1, got {beta!r}.")


@dataclass(frozen=True)
class PowerLimit:
    mode: PowerMode = DEFAULT_POWER_MODE
    fixed_watts: int | None = None
    warmup_steps: int = DEFAULT_WARMUP_STEPS
    measure_steps: int = DEFAULT_MEASURE_STEPS


@dataclass(frozen=True)
class TrainingJobSpec:
    """A valid TrainingJob spec. `template` is a private deep copy; copy it again to change it."""

    template: Mapping[str, Any] = field(repr=False)
    trainer: str  # resolved: the name of the trainer container
    trainer_index: int  # its index in template.spec.containers
    batch_sizes: BatchSizes
    target: Target
    objective: Objective = Objective()
    power_limit: PowerLimit = PowerLimit()
    schedule: str | None = None  # cron, as CronJob's; parse_schedule(schedule, time_zone)
    time_zone: str | None = None  # IANA name; None means UTC (not the machine's zone)
    starting_deadline_seconds: int | None = None  # older scheduled times are not started
    concurrency_policy: ConcurrencyPolicy = DEFAULT_CONCURRENCY
    suspend: bool = DEFAULT_SUSPEND
    history_limit: int = DEFAULT_HISTORY_LIMIT
    backoff_limit: int | None = None
    active_deadline_seconds: int | None = None
    ttl_seconds_after_finished: int | None = None

    def search_space(self, max_limit_w: int) -> SearchSpace:
        """The core policy's space; `max_limit_w` is the GPU's highest limit (from a report)."""
        return SearchSpace(
            batch_sizes=self.batch_sizes.candidates,
            default_batch_size=self.batch_sizes.default,
            max_limit_w=int(max_limit_w),
            beta=self.objective.beta,
        )


class _Reader:
    """Reads typed fields and collects one sentence per problem instead of stopping at the first."""

    def __init__(self) -> None:
        self.problems: list[str] = []

    def fail(self, sentence: str) -> None:
        self.problems.append(sentence)

    def obj(self, data: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = data.get(key)
        if value is None:
            return {}
        if not isinstance(value, Mapping):
            self.fail(f"{path} must be an object, got {_show(value)}.")
            return {}
        return value

    def integer(
        self,
        data: Mapping[str, Any],
        key: str,
        path: str,
        default: int | None = None,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        value = data.get(key)
        if value is None:
            return default
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            self.fail(f"{path} must be an integer, got {_show(value)}.")
            return default
        if minimum is not None and value < minimum:
            self.fail(f"{path} must be at least {minimum}, got {value}.")
        elif maximum is not None and value > maximum:
            self.fail(f"{path} must be at most {maximum}, got {value}.")
        return value

    def number(self, data: Mapping[str, Any], key: str, path: str, default: float) -> float:
        value = data.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float):
            self.fail(f"{path} must be a number, got {_show(value)}.")
            return default
        if not math.isfinite(value):
            self.fail(f"{path} must be a finite number, got {value}.")
            return default
        return float(value)

    def string(self, data: Mapping[str, Any], key: str, path: str) -> str | None:
        value = data.get(key)
        if value is None:
            return None
        if not isinstance(value, str) or not value:
            self.fail(f"{path} must be a non-empty string, got {_show(value)}.")
            return None
        return value

    def boolean(self, data: Mapping[str, Any], key: str, path: str, default: bool) -> bool:
        value = data.get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            self.fail(f"{path} must be true or false, got {_show(value)}.")
            return default
        return value

    def choice(
        self, data: Mapping[str, Any], key: str, path: str, allowed: Sequence[str], default: str
    ) -> str:
        value = data.get(key)
        if value is None:
            return default
        if value not in allowed:
            self.fail(f"{path} must be one of {', '.join(allowed)}, got {_show(value)}.")
            return default
        return str(value)


def parse_spec(
    spec: Mapping[str, Any] | None, defaults: ObjectiveDefaults | None = None
) -> TrainingJobSpec:
    """Check a TrainingJob's `spec` (a plain dict) and return it typed; SpecError otherwise.

    `defaults` gives the eta and beta a spec leaves out (the operator's; built-in 0.5 and 2)."""
    if not isinstance(spec, Mapping):
        raise SpecError(["spec is missing or is not an object."])
    r = _Reader()
    template = _template(r, spec)
    trainer_name = r.string(spec, "trainer", "spec.trainer")
    trainer: tuple[int, str] | None = None
    if template is not None:
        try:
            trainer = find_trainer(template, trainer_name)
        except SpecError as exc:
            r.problems.extend(exc.problems)
    batch_sizes = _batch_sizes(r, spec)
    target = _target(r, spec)
    objective = _objective(r, spec, defaults or ObjectiveDefaults())
    power_limit = _power_limit(r, spec)
    schedule = r.string(spec, "schedule", "spec.schedule")
    time_zone = r.string(spec, "timeZone", "spec.timeZone")
    _check_schedule(r, schedule, time_zone)
    starting_deadline = r.integer(
        spec, "startingDeadlineSeconds", "spec.startingDeadlineSeconds", None, 0
    )
    concurrency = r.choice(
        spec,
        "concurrencyPolicy",
        "spec.concurrencyPolicy",
        CONCURRENCY_POLICIES,
        DEFAULT_CONCURRENCY,
    )
    suspend = r.boolean(spec, "suspend", "spec.suspend", DEFAULT_SUSPEND)
    history_limit = r.integer(
        spec, "historyLimit", "spec.historyLimit", DEFAULT_HISTORY_LIMIT, 0, MAX_HISTORY_LIMIT
    )
    backoff = r.integer(spec, "backoffLimit", "spec.backoffLimit", None, 0)
    deadline = r.integer(spec, "activeDeadlineSeconds", "spec.activeDeadlineSeconds", None, 1)
    ttl = r.integer(spec, "ttlSecondsAfterFinished", "spec.ttlSecondsAfterFinished", None, 0)
    if r.problems or template is None or trainer is None or batch_sizes is None or target is None:
        raise SpecError(r.problems or ["spec is incomplete."])
    return TrainingJobSpec(
        template=template,
        trainer=trainer[1],
        trainer_index=trainer[0],
        batch_sizes=batch_sizes,
        target=target,
        objective=objective,
        power_limit=power_limit,
        schedule=schedule,
        time_zone=time_zone,
        starting_deadline_seconds=starting_deadline,
        concurrency_policy=cast(ConcurrencyPolicy, concurrency),
        suspend=suspend,
        history_limit=DEFAULT_HISTORY_LIMIT if history_limit is None else history_limit,
        backoff_limit=backoff,
        active_deadline_seconds=deadline,
        ttl_seconds_after_finished=ttl,
    )


def _check_schedule(r: _Reader, schedule: str | None, time_zone: str | None) -> None:
    """Read spec.schedule and spec.timeZone as CronJob does, reporting a bad one of each."""
    zone_ok = True
    if time_zone is not None:
        try:
            parse_time_zone(time_zone)
        except ScheduleError as exc:
            r.fail(str(exc))
            zone_ok = False
    if schedule is not None:
        try:
            parse_schedule(schedule, time_zone if zone_ok else None)
        except ScheduleError as exc:
            r.fail(str(exc))


def _template(r: _Reader, spec: Mapping[str, Any]) -> dict[str, Any] | None:
    raw = spec.get("template")
    if raw is None:
        r.fail("spec.template is required: a Pod template with the trainer container.")
        return None
    if not isinstance(raw, Mapping):
        r.fail(f"spec.template must be a Pod template object, got {_show(raw)}.")
        return None
    template = copy.deepcopy(dict(raw))
    pod = template.get("spec")
    if not isinstance(pod, Mapping):
        r.fail("spec.template.spec is required: the Pod spec with the trainer container.")
        return None
    containers = pod.get("containers")
    if not isinstance(containers, list) or not containers:
        r.fail("spec.template.spec.containers must list at least one container.")
        return None
    ok = True
    for key in ("containers", "initContainers"):
        items = pod.get(key) or []
        if not isinstance(items, list):
            r.fail(f"spec.template.spec.{key} must be a list.")
            ok = False
            continue
        for i, c in enumerate(items):
            if not isinstance(c, Mapping) or not isinstance(c.get("name"), str) or not c["name"]:
                r.fail(f"spec.template.spec.{key}[{i}] must be a container with a name.")
                ok = False
            elif c["name"] == SIDECAR_CONTAINER:
                r.fail(
                    f"spec.template.spec.{key}[{i}] is named {SIDECAR_CONTAINER!r}, the name "
                    "kwatt gives its own sidecar; rename that container."
                )
                ok = False
    return template if ok else None


def find_trainer(template: Mapping[str, Any], trainer: str | None) -> tuple[int, str]:
    """Index and name of the trainer container: the one named `trainer`, or the only one."""
    containers = (template.get("spec") or {}).get("containers") or []
    names = [str(c.get("name")) for c in containers if isinstance(c, Mapping)]
    if trainer is not None:
        if trainer in names:
            return names.index(trainer), trainer
        raise SpecError(
            [
                f"spec.trainer {trainer!r} names no container of spec.template.spec.containers "
                f"({', '.join(names) or 'none'})."
            ]
        )
    if len(names) == 1:
        return 0, names[0]
    raise SpecError(
        [
            "spec.trainer is required when spec.template.spec.containers has more than one "
            f"container ({', '.join(names) or 'none'}): name the one that trains."
        ]
    )


def _batch_sizes(r: _Reader, spec: Mapping[str, Any]) -> BatchSizes | None:
    if spec.get("batchSizes") is None:
        r.fail("spec.batchSizes is required: the candidate batch sizes and the default one.")
        return None
    data = r.obj(spec, "batchSizes", "spec.batchSizes")
    raw = data.get("candidates")
    candidates: list[int] = []
    if not isinstance(raw, list) or not raw:
        r.fail("spec.batchSizes.candidates must list at least one batch size.")
    else:
        for i, value in enumerate(raw):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                r.fail(
                    f"spec.batchSizes.candidates[{i}] must be a positive integer, "
                    f"got {_show(value)}."
                )
            elif value in candidates:
                r.fail(f"spec.batchSizes.candidates lists {value} twice.")
            else:
                candidates.append(value)
    default = r.integer(data, "default", "spec.batchSizes.default", None, 1)
    if "default" not in data:
        r.fail("spec.batchSizes.default is required: today's batch size, one of the candidates.")
    env = r.string(data, "env", "spec.batchSizes.env") or DEFAULT_BATCH_SIZE_ENV
    if not _ENV_NAME.match(env):
        r.fail(f"spec.batchSizes.env {env!r} is not a valid environment variable name.")
    ordered = sorted(candidates)
    if default is not None and ordered and default not in ordered:
        r.fail(
            f"spec.batchSizes.default {default} is not among spec.batchSizes.candidates {ordered}."
        )
        return None
    if default is None or not ordered:
        return None
    return BatchSizes(tuple(ordered), default, env)


def _target(r: _Reader, spec: Mapping[str, Any]) -> Target | None:
    if spec.get("target") is None:
        r.fail("spec.target is required: the validation metric and the value that counts as done.")
        return None
    data = r.obj(spec, "target", "spec.target")
    metric = r.string(data, "metric", "spec.target.metric")
    if "metric" not in data:
        r.fail("spec.target.metric is required: the name of the validation metric.")
    if data.get("value") is None:
        r.fail("spec.target.value is required: the metric value that counts as converged.")
    value = r.number(data, "value", "spec.target.value", math.nan)
    higher = r.boolean(data, "higherIsBetter", "spec.target.higherIsBetter", True)
    max_epochs = r.integer(data, "maxEpochs", "spec.target.maxEpochs", None, 1)
    if metric is None or math.isnan(value):
        return None
    return Target(metric, value, higher, max_epochs)


def _objective(r: _Reader, spec: Mapping[str, Any], defaults: ObjectiveDefaults) -> Objective:
    data = r.obj(spec, "objective", "spec.objective")
    eta = r.number(data, "eta", "spec.objective.eta", float(defaults.eta))
    if not 0.0 <= eta <= 1.0:
        r.fail(f"spec.objective.eta must be between 0 and 1, got {eta}.")
    beta = r.number(data, "beta", "spec.objective.beta", float(defaults.beta))
    if beta <= 1.0:
        r.fail(f"spec.objective.beta must be greater than 1, got {beta}.")
    return Objective(eta, beta, parse_carbon(data.get("carbon"), r.problems))


def _power_limit(r: _Reader, spec: Mapping[str, Any]) -> PowerLimit:
    data = r.obj(spec, "powerLimit", "spec.powerLimit")
    mode = cast(
        PowerMode,
        r.choice(data, "mode", "spec.powerLimit.mode", POWER_MODES, DEFAULT_POWER_MODE),
    )
    fixed = r.integer(data, "fixedWatts", "spec.powerLimit.fixedWatts", None, 1)
    if mode == "fixed" and data.get("fixedWatts") is None:
        r.fail("spec.powerLimit.fixedWatts is required when spec.powerLimit.mode is fixed.")
    warmup = r.integer(data, "warmupSteps", "spec.powerLimit.warmupSteps", DEFAULT_WARMUP_STEPS, 0)
    measure = r.integer(
        data, "measureSteps", "spec.powerLimit.measureSteps", DEFAULT_MEASURE_STEPS, 1
    )
    return PowerLimit(
        mode,
        fixed,
        DEFAULT_WARMUP_STEPS if warmup is None else warmup,
        DEFAULT_MEASURE_STEPS if measure is None else measure,
    )
