"""The operator's Prometheus metrics: energy, time and outcome of each TrainingJob's runs.

Built on prometheus_client (its registry, its escaping, its HTTP server) rather
than hand-written exposition. Each `OperatorMetrics` owns a fresh registry, so
there is no global state and tests (or two operators in one process) never clash.

Cardinality is bounded on purpose: label values are Kubernetes names (validated,
length-capped by the API's own limits), `result` is mapped onto a fixed set, and
error reasons must be CamelCase words (optionally from a set fixed at
construction). `forget` drops a deleted TrainingJob's series, so churn does not grow
the exposition forever.

Design choices:

* The batch-size and power-limit gauges describe the TrainingJob's current run (the
  latest in flight, else the latest recorded: `status.currentBatchSize` and
  `status.currentPowerLimitWatts`), refreshed from the status on every reconcile pass,
  so they survive an operator restart; a run that profiled its limit shows the limit it
  kept once it is recorded.
* The saving gauges are `status.savings` as ratios (0.25 is 25%), labelled with its
  basis (`measured` or `estimated`), one series per TrainingJob; none while the status
  has no saving (no default-size run has reached the target yet).
* The profiling counters add up each recorded run's power-limit profile from its report:
  the energy and time of its measurement windows, and what those windows cost beyond
  the same steps at the limit the run kept (the profiling overhead proper).
* A run without a power limit (the profiling runs, or "observe" mode) has *no*
  `kwatt_trainingjob_power_limit_watts` sample rather than NaN: absence is what
  PromQL's `absent()`/`unless` expect, while NaN would poison `sum`/`avg`.
* Counters of a TrainingJob are created at 0 (every result) the first time it is
  seen, so `increase()` counts its first run too.
* Bad input raises ValueError: a counter cannot go down, and a free string in a
  label would be unbounded cardinality. Names from the API server always pass.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, start_http_server

from kwatt_core.report import RESULTS as REPORT_RESULTS

# What the trainer reports, plus the outcomes only the operator sees: the Job ended
# without a report, the TrainingJob was deleted, or its spec changed mid-run.
RESULTS: tuple[str, ...] = (*REPORT_RESULTS, "noreport", "deleted", "replaced")
OTHER_RESULT = "other"
_ALL_RESULTS: tuple[str, ...] = (*RESULTS, OTHER_RESULT)

MAX_NAMESPACE = 63  # a DNS-1123 label
MAX_NAME = 253  # a DNS-1123 subdomain (custom resource names)
MAX_REASON = 64
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_REASON = re.compile(r"[A-Z][A-Za-z0-9]*")

_TJ_LABELS = ("namespace", "trainingjob")
BASES: tuple[str, ...] = ("measured", "estimated")  # status.savings.basis


def _namespace(value: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAMESPACE or not _DNS_LABEL.fullmatch(value):
        raise ValueError(f"namespace must be a DNS-1123 label, got {value!r:.80}.")
    return value


def _trainingjob(value: str) -> str:
    if not isinstance(value, str) or len(value) > MAX_NAME or not _DNS_SUBDOMAIN.fullmatch(value):
        raise ValueError(f"TrainingJob name must be a DNS-1123 subdomain, got {value!r:.80}.")
    return value


def _amount(what: str, value: float) -> float:
    """A counter increment: finite and not negative (a counter never goes down)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{what} must be a number, got {value!r:.80}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{what} must be finite and >= 0, got {value!r}.")
    return float(value)


def _ratio(what: str, value: float) -> float:
    """A saving: finite (negative when kwatt did worse than the default configuration)."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ValueError(f"{what} must be a finite number, got {value!r:.80}.")
    return float(value)


def _positive_int(what: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{what} must be a positive integer, got {value!r:.80}.")
    return value


def result_label(result: str) -> str:
    """`result` if it is one of RESULTS, else "other": never a free string as a label."""
    return result if result in RESULTS else OTHER_RESULT


def _check_reason(reason: str) -> str:
    if not isinstance(reason, str) or len(reason) > MAX_REASON or not _REASON.fullmatch(reason):
        raise ValueError(f"Error reason must be a CamelCase word, got {reason!r:.80}.")
    return reason


class OperatorMetrics:
    """The operator's metrics in their own registry, with an optional HTTP exposition."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        error_reasons: Iterable[str] | None = None,
    ) -> None:
        """`error_reasons`, when given, is the only set `reconcile_error` accepts."""
        self.registry = registry if registry is not None else CollectorRegistry()
        self._reasons = (
            None if error_reasons is None else frozenset(_check_reason(r) for r in error_reasons)
        )
        self._lock = threading.Lock()
        self._seen_reasons: dict[tuple[str, str], set[str]] = {}
        self._known: set[tuple[str, str]] = set()
        self._server: Callable[[], None] | None = None
        self.address: str | None = None
        self.port: int | None = None  # the bound port while serving (useful with port 0)

        reg = self.registry
        self.energy = Counter(
            "kwatt_trainingjob_energy",
            "GPU energy used by a TrainingJob's finished runs, in joules.",
            _TJ_LABELS,
            unit="joules",
            registry=reg,
        )
        self.seconds = Counter(
            "kwatt_trainingjob",
            "Wall-clock time of a TrainingJob's finished runs, in seconds.",
            _TJ_LABELS,
            unit="seconds",
            registry=reg,
        )
        self.runs = Counter(
            "kwatt_trainingjob_runs",
            "Finished runs of a TrainingJob by result (a count; results: "
            + ", ".join(_ALL_RESULTS)
            + ").",
            (*_TJ_LABELS, "result"),
            registry=reg,
        )
        self.batch_size = Gauge(
            "kwatt_trainingjob_batch_size",
            "Batch size of a TrainingJob's current run, in samples per batch.",
            _TJ_LABELS,
            registry=reg,
        )
        self.power_limit = Gauge(
            "kwatt_trainingjob_power_limit",
            "GPU power limit of a TrainingJob's current run, in watts "
            "(no sample while profiling or when the limit is left alone).",
            _TJ_LABELS,
            unit="watts",
            registry=reg,
        )
        self.profiling_energy = Counter(
            "kwatt_trainingjob_profiling_energy",
            "GPU energy of the power-limit profiling windows of a TrainingJob's finished runs, "
            "in joules (the measured windows; warm-up steps are not in them).",
            _TJ_LABELS,
            unit="joules",
            registry=reg,
        )
        self.profiling_seconds = Counter(
            "kwatt_trainingjob_profiling",
            "Wall-clock time of the power-limit profiling windows of a TrainingJob's finished "
            "runs, in seconds.",
            _TJ_LABELS,
            unit="seconds",
            registry=reg,
        )
        self.profiling_extra_energy = Counter(
            "kwatt_trainingjob_profiling_extra_energy",
            "GPU energy the profiling windows of a TrainingJob's finished runs used beyond the "
            "same steps at the limit each run kept, in joules (profiling overhead).",
            _TJ_LABELS,
            unit="joules",
            registry=reg,
        )
        self.profiling_extra_seconds = Counter(
            "kwatt_trainingjob_profiling_extra",
            "Time the profiling windows of a TrainingJob's finished runs took beyond the same "
            "steps at the limit each run kept, in seconds (profiling overhead).",
            _TJ_LABELS,
            unit="seconds",
            registry=reg,
        )
        self.energy_saving = Gauge(
            "kwatt_trainingjob_energy_saving_ratio",
            "Energy saved per run against the default configuration (status.savings), as a "
            "ratio: 0.25 is 25% less (basis: measured or estimated).",
            (*_TJ_LABELS, "basis"),
            registry=reg,
        )
        self.time_saving = Gauge(
            "kwatt_trainingjob_time_saving_ratio",
            "Time saved per run against the default configuration (status.savings), as a "
            "ratio: negative when runs take longer (basis: measured or estimated).",
            (*_TJ_LABELS, "basis"),
            registry=reg,
        )
        self.errors = Counter(
            "kwatt_reconcile_errors",
            "Reconcile errors of a TrainingJob by reason (a count).",
            (*_TJ_LABELS, "reason"),
            registry=reg,
        )

    def _touch(self, key: tuple[str, str]) -> None:
        """Create a TrainingJob's counters at 0 once, so its first increment is visible."""
        with self._lock:
            if key in self._known:
                return
            self._known.add(key)
        for counter in self._counters():
            counter.labels(*key)
        for result in _ALL_RESULTS:
            self.runs.labels(*key, result)

    def _counters(self) -> tuple[Counter, ...]:
        """The counters labelled by TrainingJob alone."""
        return (
            self.energy,
            self.seconds,
            self.profiling_energy,
            self.profiling_seconds,
            self.profiling_extra_energy,
            self.profiling_extra_seconds,
        )

    def run_finished(
        self,
        namespace: str,
        trainingjob: str,
        result: str,
        energy_j: float,
        seconds: float,
        *,
        profiling_energy_j: float = 0.0,
        profiling_seconds: float = 0.0,
        profiling_extra_energy_j: float = 0.0,
        profiling_extra_seconds: float = 0.0,
    ) -> None:
        """Count a finished run: its energy, its time, its result (unknown → "other") and
        what its power-limit profiling took (0 for a run that did not profile)."""
        key = (_namespace(namespace), _trainingjob(trainingjob))
        amounts = (
            _amount("energy_j", energy_j),
            _amount("seconds", seconds),
            _amount("profiling_energy_j", profiling_energy_j),
            _amount("profiling_seconds", profiling_seconds),
            _amount("profiling_extra_energy_j", profiling_extra_energy_j),
            _amount("profiling_extra_seconds", profiling_extra_seconds),
        )
        if not isinstance(result, str):
            raise ValueError(f"result must be a string, got {result!r:.80}.")
        self._touch(key)
        for counter, amount in zip(self._counters(), amounts, strict=True):
            counter.labels(*key).inc(amount)
        self.runs.labels(*key, result_label(result)).inc()

    def run_started(
        self, namespace: str, trainingjob: str, batch_size: int, power_limit_w: int | None
    ) -> None:
        """Show the new run's choice; no power-limit sample when it sets none."""
        self.current(namespace, trainingjob, batch_size, power_limit_w)

    def current(
        self, namespace: str, trainingjob: str, batch_size: int, power_limit_w: int | None
    ) -> None:
        """Show the current run's batch size and power limit (no power-limit sample when it
        has none: profiling, or the limit left alone)."""
        key = (_namespace(namespace), _trainingjob(trainingjob))
        size = _positive_int("batch_size", batch_size)
        limit = None if power_limit_w is None else _positive_int("power_limit_w", power_limit_w)
        self._touch(key)
        self.batch_size.labels(*key).set(size)
        if limit is None:
            self.power_limit.remove(*key)
        else:
            self.power_limit.labels(*key).set(limit)

    def savings(
        self,
        namespace: str,
        trainingjob: str,
        energy_ratio: float | None,
        time_ratio: float | None,
        basis: str = "measured",
    ) -> None:
        """Show the saving against the default configuration (ratios; None: no saving
        known, which drops the series); `basis` is one of BASES."""
        key = (_namespace(namespace), _trainingjob(trainingjob))
        if basis not in BASES:
            raise ValueError(f"basis must be one of {', '.join(BASES)}, got {basis!r:.80}.")
        values = (
            (self.energy_saving, None if energy_ratio is None else _ratio("energy", energy_ratio)),
            (self.time_saving, None if time_ratio is None else _ratio("time", time_ratio)),
        )
        for gauge, value in values:
            for other in BASES:  # one series per TrainingJob: the basis may change
                if other != basis or value is None:
                    gauge.remove(*key, other)
            if value is not None:
                gauge.labels(*key, basis).set(value)

    def reconcile_error(self, namespace: str, trainingjob: str, reason: str) -> None:
        """Count a failed reconcile under a CamelCase reason from a bounded set."""
        key = (_namespace(namespace), _trainingjob(trainingjob))
        _check_reason(reason)
        if self._reasons is not None and reason not in self._reasons:
            raise ValueError(f"Unknown error reason {reason!r}; known: {sorted(self._reasons)}.")
        with self._lock:
            self._seen_reasons.setdefault(key, set()).add(reason)
        self.errors.labels(*key, reason).inc()

    def forget(self, namespace: str, trainingjob: str) -> None:
        """Drop every series of a deleted TrainingJob (bounded cardinality under churn)."""
        key = (_namespace(namespace), _trainingjob(trainingjob))
        with self._lock:
            self._known.discard(key)
            reasons = self._seen_reasons.pop(key, set())
        # remove() of an absent series is a no-op, so this is safe to repeat.
        for metric in (*self._counters(), self.batch_size, self.power_limit):
            metric.remove(*key)
        for basis in BASES:
            self.energy_saving.remove(*key, basis)
            self.time_saving.remove(*key, basis)
        for result in _ALL_RESULTS:
            self.runs.remove(*key, result)
        for reason in reasons:
            self.errors.remove(*key, reason)

    def serve(self, address: str, port: int) -> Callable[[], None]:
        """Expose /metrics with prometheus_client's own server; return its stop function.

        Binds only `address` (the CLI defaults to 127.0.0.1); port 0 picks a free port,
        then found in `self.port`. One server at a time; stopping twice is harmless.
        """
        if self._server is not None:
            raise RuntimeError(f"Already serving metrics on {self.address}:{self.port}.")
        if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
            raise ValueError(f"port must be in 0..65535, got {port!r}.")
        httpd, thread = start_http_server(port, addr=address, registry=self.registry)
        self.address = str(httpd.server_address[0])
        self.port = int(httpd.server_address[1])
        stopped = threading.Event()

        def stop() -> None:
            if stopped.is_set():
                return
            stopped.set()
            httpd.shutdown()
            httpd.server_close()
            thread.join(timeout=5)
            if self._server is stop:
                self._server = None
                self.address = None
                self.port = None

        self._server = stop
        return stop
