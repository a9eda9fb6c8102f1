"""The sidecar process: a thin shell around kwatt_core.run.

It turns protocol calls into run events with fresh GPU readings, applies the
limits the run asks for, serves /metrics, and at exit (end of training, SIGTERM
or an exception) puts back the limits the GPUs had before the run and writes the
report to the termination message.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from kwatt_core import contract, run
from kwatt_core import report as reportlib
from kwatt_sidecar import config as configlib
from kwatt_sidecar.carbon import GridFollower, open_source
from kwatt_sidecar.gpu import GpuBackend, GpuDevice, GpuError, open_backend
from kwatt_sidecar.limits import PowerControl
from kwatt_sidecar.metrics import CONTENT_TYPE, GpuReading, Reading, render, trainingjob_name
from kwatt_sidecar.server import Conflict, Servers

log = logging.getLogger("kwatt.sidecar")

HIDDEN_ADVICE = (
    "set NVIDIA_VISIBLE_DEVICES=all and NVIDIA_DRIVER_CAPABILITIES=utility on the sidecar, "
    "or use a container runtime that honours them for unprivileged containers"
)


class Sidecar:
    """One run's sidecar. Every public method is thread-safe."""

    def __init__(self, cfg: configlib.SidecarConfig, backend: GpuBackend) -> None:
        self.cfg = cfg
        self.settings = cfg.settings
        self.backend = backend
        self.lock = threading.RLock()
        self.state: run.RunState | None = None
        self.devices: list[GpuDevice] = []
        self.control: PowerControl | None = None
        self.baseline: dict[str, float] = {}
        self.final: reportlib.Report | None = None
        self.notes: list[str] = [backend.note] if backend.note else []
        self.hello_uuids: list[str] = []
        # Carbon-aware limits (docs/carbon.md): None unless KWATT_CARBON_SOURCE is set.
        self.grid = GridFollower(cfg.carbon, open_source(cfg.carbon)) if cfg.carbon else None

    # -- readings ----------------------------------------------------------------------

    def _now(self) -> tuple[float, float]:
        energy = sum(self.backend.energy_j(d.uuid) for d in self.devices)
        return self.backend.clock(), energy

    def _apply(self, limit: int | None) -> None:
        if limit is None or self.control is None:
            return
        try:
            self.control.apply(limit)
        except GpuError as exc:
            log.warning("Setting %d W failed: %s", limit, exc)
            self._note(f"Setting {limit} W failed: {exc}")
        if self.control.record_problem:  # logged once where it happened
            self._note(self.control.record_problem)

    def _note(self, sentence: str) -> None:
        if sentence not in self.notes:
            self.notes.append(sentence)

    # -- the protocol --------------------------------------------------------------------

    def hello(
        self, uuids: list[str], steps_per_epoch: int | None, batch_size: int | None = None
    ) -> dict[str, Any]:
        """The trainer's GPUs: find them, restore leftovers, detect privilege, first limit.

        A second hello (a restarted trainer container, another worker) continues the same run
        and must name the same GPUs: a run measured on some GPUs cannot take on others."""
        with self.lock:
            if self.state is not None:
                if sorted(uuids) != sorted(self.hello_uuids):
                    named = ", ".join(self.hello_uuids) or "no GPUs"
                    raise Conflict(
                        f"This run already began with {named}; a later hello must name the same "
                        "GPUs (restart the Pod to measure others)."
                    )
                return self._status()
            self.hello_uuids = list(uuids)
            self._check_batch_size(batch_size)
            self.devices, missing = self._resolve(uuids)
            hw, why = self._hardware(uuids, missing)
            if self.devices:
                self.backend.use([d.uuid for d in self.devices])
                self.baseline = {d.uuid: self.backend.energy_j(d.uuid) for d in self.devices}
            now, energy = self._now()
            transition = run.begin(self.settings, replace(hw, note=why), now, energy)
            self.state = transition.state
            self._apply(transition.set_limit_w)
            log.info(
                "The trainer said hello: %d GPU(s) %s, mode %s, %s.",
                len(self.devices),
                ",".join(d.uuid for d in self.devices) or "-",
                self.state.mode,
                "profiling" if self.state.profiling else f"limit {self.state.limit_w or '-'} W",
                extra={"steps_per_epoch": steps_per_epoch},
            )
            return self._status()

    def _check_batch_size(self, batch_size: int | None) -> None:
        """Runs are reported under the operator's batch size; say so when the trainer's differs."""
        if batch_size is None or batch_size == self.settings.batch_size:
            return
        sentence = (
            f"The trainer says it trains with batch size {batch_size}, but this run was given "
            f"{self.settings.batch_size} ({contract.ENV_BATCH_SIZE}); the run is reported under "
            f"{self.settings.batch_size}, so read kw.batch_size in the training code."
        )
        log.warning(sentence)
        self._note(sentence)

    def _resolve(self, uuids: list[str]) -> tuple[list[GpuDevice], list[str]]:
        found, missing = [], []
        for uuid in uuids:
            try:
                found.append(self.backend.device(uuid))
            except GpuError:
                missing.append(uuid)
        return found, missing

    def _hardware(self, uuids: list[str], missing: list[str]) -> tuple[run.Hardware, str]:
        """The run's hardware and, when it cannot be limited, why (said once, in the log too)."""
        reasons = []
        if not uuids:
            reasons.append(
                "The trainer reported no GPU UUIDs, so nothing is measured; pass them to "
                "Kwatt(gpu_uuids=...) or give the trainer NVIDIA_VISIBLE_DEVICES with UUIDs."
            )
        elif missing:
            reasons.append(
                f"The sidecar cannot see the trainer's GPU(s) {', '.join(missing)}; "
                f"{HIDDEN_ADVICE}."
            )
        if not self.devices:
            hw = run.Hardware("", 0, 0.0, 0.0, can_limit=False)
        else:
            owner = (
                "/".join(p for p in (self.cfg.namespace, self.cfg.pod) if p) or f"pid {os.getpid()}"
            )
            self.control = PowerControl(
                self.backend,
                self.devices,
                self.cfg.state_dir,
                owner,
                observe=self.settings.mode == "observe",
            )
            for sentence in self.control.restore_leftovers():  # logged there, at their level
                self._note(sentence)
            low, high, no_range = self._common_range()
            why = ""
            if self.settings.mode != "observe":
                # The limits the GPUs have now (a predecessor's record honoured above) are what
                # the run puts back and never exceeds: an admin's cap stays a cap.
                why = self.control.can_limit() or no_range or self.control.read_start_limits()
            if why:
                log.warning(why)
                reasons.append(why)
            hw = run.Hardware(
                gpu_model=self.devices[0].model,
                gpu_count=len(self.devices),
                min_limit_w=low,
                max_limit_w=high,
                can_limit=not (why or no_range),
                start_limit_w=None if why else self.control.start_limit_w,
            )
        if not self.devices:
            for sentence in reasons:
                log.warning(sentence)
        return hw, " ".join(reasons)

    def _common_range(self) -> tuple[float, float, str]:
        """The limits every GPU of the run accepts, and why there are none ("" if there are).

        One limit goes on all of them, so the range is the highest minimum to the lowest
        maximum; a GPU reporting a range that is no range (NaN, infinite, not positive)
        leaves the run without one."""
        low = max(d.min_limit_w for d in self.devices)
        high = min(d.max_limit_w for d in self.devices)
        sane = all(
            math.isfinite(d.min_limit_w) and math.isfinite(d.max_limit_w) and d.min_limit_w > 0
            for d in self.devices
        )
        if sane and low <= high:
            return low, high, ""
        ranges = ", ".join(f"{d.uuid} {d.min_limit_w:g}-{d.max_limit_w:g} W" for d in self.devices)
        if not sane:  # max() and min() over a NaN depend on the order: no range at all
            low = high = math.nan
        return (
            low,
            high,
            f"The run's GPUs have no power-limit range in common ({ranges}), so one limit "
            "cannot be set on all of them and the run is measured only.",
        )

    def _require(self) -> run.RunState:
        if self.state is None:
            raise Conflict("The trainer has not said hello yet: POST /v1/begin first.")
        return self.state

    def step(self) -> dict[str, Any]:
        with self.lock:
            state = self._require()
            if state.profiling:
                now, energy = self._now()
                transition = run.step(state, now, energy)
                self.state = transition.state
                self._apply(transition.set_limit_w)
                if not transition.state.profiling:
                    self._log_profile_done()
                return {"profiling": transition.state.profiling}
            return {"profiling": False}

    def _log_profile_done(self) -> None:
        assert self.state is not None and self.state.prof is not None
        prof = self.state.prof
        log.info(
            "Profiling done (%s): %d limit(s) measured, keeping %s W.",
            prof.reason,
            len(prof.measurements),
            prof.chosen_w,
        )

    def epoch(self, metric: float | None) -> dict[str, Any]:
        with self.lock:
            state = self._require()
            if state.stage != "running":
                raise Conflict("The run has ended; no more epochs are counted.")
            now, energy = self._now()
            was_profiling = state.profiling
            transition = run.epoch_end(self.settings, state, now, energy, metric)
            self.state = transition.state
            self._apply(transition.set_limit_w)
            if was_profiling and not self.state.profiling:
                self._log_profile_done()
            if self.state.stop:
                log.info(
                    "Advising the trainer to stop after epoch %d: %s.",
                    self.state.epochs,
                    self.state.stop,
                )
            return {**self._advice(), "profiling": self.state.profiling}

    def _advice(self) -> dict[str, Any]:
        state = self.state
        if state is None:
            return {"stop": False, "reason": ""}
        if state.stage != "running":
            return {"stop": True, "reason": "ended"}
        return {"stop": bool(state.stop), "reason": state.stop}

    def should_stop(self) -> dict[str, Any]:
        with self.lock:
            return self._advice()

    def end(self, failed: bool, reached: bool | None) -> dict[str, Any]:
        with self.lock:
            state = self._require()
            self.state = run.end(state, failed=failed, reached=reached)
            report = self.finish()
            return {"result": report.result}

    def _status(self) -> dict[str, Any]:
        assert self.state is not None
        return {
            "profiling": self.state.profiling,
            "mode": self.state.mode,
            "gpus": [d.uuid for d in self.devices],
            "limit_w": self.state.limit_w,
        }

    # -- the end -----------------------------------------------------------------------

    def finish(self, failure: str = "") -> reportlib.Report:
        """Restore the limits and write the report, once; later calls return the same report."""
        with self.lock:
            if self.final is not None:
                return self.final
            if failure:
                self._note(f"The sidecar failed: {failure}")
            problems = self.control.restore() if self.control is not None else []
            for sentence in problems:  # each a WARNING from restore(), which logs successes too
                self._note(sentence)
            note = " ".join(self.notes)
            if self.state is None:
                report = run.no_run_report(
                    self.settings, (note + " The trainer never said hello.").strip()
                )
            else:
                self.state = run.interrupt(self.state)
                try:
                    now, energy = self._now()
                except GpuError as exc:
                    now, energy = self.state.epoch_start_s, self.state.epoch_start_j
                    note = f"{note} The last GPU reading failed: {exc}".strip()
                report = run.report(self.settings, self.state, now, energy, note)
                report = self._with_carbon(report, now, energy)
            self.final = report
            self._write(report)
            log.info(
                "Run report: %s after %d epoch(s), %.1f J, %.1f s, limit %s W.",
                report.result,
                report.epochs,
                report.energy_j,
                report.time_s,
                report.limit_w,
            )
            return report

    def _write(self, report: reportlib.Report) -> None:
        try:
            self.cfg.termination_path.write_text(reportlib.encode(report), encoding="utf-8")
        except OSError as exc:
            log.error(
                "The run report cannot be written to %s: %s.",
                self.cfg.termination_path,
                exc.strerror,
            )

    # -- metrics -----------------------------------------------------------------------

    def metrics(self) -> tuple[bytes, str]:
        """The Prometheus exposition of this moment, and its content type."""
        with self.lock:
            gpus = []
            for dev in self.devices:
                try:
                    gpus.append(
                        GpuReading(
                            dev.uuid,
                            self.backend.energy_j(dev.uuid) - self.baseline.get(dev.uuid, 0.0),
                            self.backend.power_w(dev.uuid),
                            self.backend.limit_w(dev.uuid),
                        )
                    )
                except GpuError:
                    continue
            cost = None
            if self.final is not None:
                cost = self.final.cost
            elif self.state is not None:
                with contextlib.suppress(GpuError):
                    cost = run.cost(self.state, *self._now())
            reading = Reading(
                namespace=self.cfg.namespace,
                pod=self.cfg.pod,
                trainingjob=trainingjob_name(self.cfg.job),
                run=self.cfg.run,
                carbon=self.grid.reading() if self.grid is not None else None,
                phase="waiting" if self.state is None else self.state.phase,
                epochs=0 if self.state is None else self.state.epochs,
                cost=cost,
                gpus=gpus,
                restore_failures=dict(self.control.failures) if self.control is not None else {},
            )
        return render(reading), CONTENT_TYPE

    def poll(self) -> None:
        """The idle loop's beat: check that the GPUs still answer (an error ends the sidecar)."""
        with self.lock:
            if self.devices and self.final is None:
                now, energy = self._now()
                if self.grid is not None and self.state is not None:
                    # Re-pick the limit from the profiled curve when an interval is due.
                    self._apply(self.grid.beat(self.state, now, energy))

    def _with_carbon(self, report: reportlib.Report, now: float, energy: float) -> reportlib.Report:
        """The report with the run's grams of CO2 (and the baseline's), if any reading came."""
        if self.grid is None or self.state is None:
            return report
        # A short bound: the trainer's last call waits on this report.
        self.grid.last_reading(self.state, now, energy, min(self.grid.cfg.timeout_s, 2.0))
        return self.grid.with_carbon(report)


def setup_logging(env: Mapping[str, str]) -> None:
    """One JSON object per line on stderr: quiet, and readable by any log pipeline."""

    class JsonFormatter(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            data: dict[str, Any] = {
                "ts": round(record.created, 3),
                "level": record.levelname,
                "msg": record.getMessage(),
            }
            for key in ("backend", "mode", "gpus", "steps_per_epoch"):
                if key in record.__dict__:
                    data[key] = record.__dict__[key]
            return json.dumps(data, ensure_ascii=False)

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger("kwatt")
    root.handlers[:] = [handler]
    level = env.get(contract.ENV_LOG_LEVEL, "").strip().upper()
    # A bad level is refused by configlib.load, and said at ERROR, which every level shows.
    root.setLevel(level if level in configlib.LOG_LEVELS else "INFO")
    root.propagate = False


def serve(sidecar: Sidecar, stop: threading.Event, poll_s: float = 1.0) -> reportlib.Report:
    """Wait for the stop event, polling; restore and report whatever ends the wait."""
    failure = ""
    try:
        while not stop.wait(poll_s):
            sidecar.poll()
    except BaseException as exc:
        failure = f"{type(exc).__name__}: {exc}"
        log.error("The sidecar failed: %s", failure)
        raise
    finally:
        report = sidecar.finish(failure)
    return report


def cannot_start(env: Mapping[str, str], sentence: str) -> int:
    """Exit code 2, the sentence in the log and, as a failed run's note, the termination message."""
    log.error("The sidecar cannot start: %s", sentence)
    report = configlib.failure_report(env, f"The kwatt sidecar could not start: {sentence}")
    path = configlib.termination_path(env)
    try:
        path.write_text(reportlib.encode(report), encoding="utf-8")
    except OSError as exc:
        log.error("The run report cannot be written to %s: %s.", path, exc.strerror)
    return 2


def busy_port(cfg: configlib.SidecarConfig, exc: OSError) -> str:
    """A sentence naming the port variable whose port could not be bound (probed again)."""
    why = exc.strerror or str(exc)
    for name, host, port in (
        (contract.ENV_PORT, "127.0.0.1", cfg.port),
        (contract.ENV_METRICS_PORT, "0.0.0.0", cfg.metrics_port),
    ):
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((host, port))
            except OSError as busy:
                return f"{name}={port} cannot be bound on {host}: {busy.strerror or busy}."
    return (
        f"{contract.ENV_PORT}={cfg.port} or {contract.ENV_METRICS_PORT}={cfg.metrics_port} "
        f"cannot be bound: {why}."
    )


def main(env: Mapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    setup_logging(env)
    try:
        cfg = configlib.load(env)
        backend = open_backend(env, cfg.sample_interval_s)
    except (configlib.ConfigError, GpuError) as exc:
        return cannot_start(env, str(exc))
    sidecar = Sidecar(cfg, backend)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        del frame
        log.info("Received %s; restoring and reporting.", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        servers = Servers(sidecar, cfg.port, cfg.metrics_port)
        servers.start()
    except OSError as exc:
        backend.close()
        return cannot_start(env, busy_port(cfg, exc))
    try:
        visible = backend.visible()
    except GpuError as exc:
        visible = []
        sidecar.notes.append(str(exc))
    log.info(
        "kwatt sidecar started: backend %s, mode %s, %d visible GPU(s), ports %d and %d.%s",
        backend.name,
        cfg.settings.mode,
        len(visible),
        servers.port,
        servers.metrics_port,
        f" {backend.note}" if backend.note else "",
        extra={"backend": backend.name, "mode": cfg.settings.mode, "gpus": visible},
    )
    try:
        serve(sidecar, stop, poll_s=1.0)
    finally:
        servers.stop()
        backend.close()
        time.sleep(0)
    return 0
