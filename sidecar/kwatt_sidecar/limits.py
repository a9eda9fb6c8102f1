"""Setting one limit on all the run's GPUs, and always putting the default back.

A power limit outlives the process that set it. Before changing a GPU's limit the
sidecar writes a record (one JSON file per GPU UUID) in a node directory, so
that if it is killed (SIGKILL, OOM, node pressure) the next sidecar given that
GPU restores the default from the record before anything else. The record goes
away once the default is back.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections import Counter
from pathlib import Path

from kwatt_sidecar.gpu import GpuBackend, GpuDevice, GpuError, LimitPermissionError

log = logging.getLogger("kwatt.sidecar")


class PowerControl:
    """The run's GPUs as one: the same limit on each, restored to their defaults at the end.

    With `observe` set it never changes a limit, not even to restore a predecessor's: observe
    mode promises the GPU is left as found, and its sidecar may lack the privilege anyway. A
    predecessor's record is then left in place for the next sidecar that may change limits.
    """

    def __init__(
        self,
        backend: GpuBackend,
        devices: list[GpuDevice],
        state_dir: Path,
        owner: str = "",
        observe: bool = False,
    ) -> None:
        self.backend = backend
        self.devices = devices
        self.state_dir = state_dir
        self.owner = owner
        self.observe = observe
        self.changed: set[str] = set()
        self.warned_state_dir = False
        self.failures: Counter[str] = Counter()  # failed restores by GPU UUID, for metrics

    @property
    def restore_failures(self) -> int:
        return sum(self.failures.values())

    def _record_path(self, uuid: str) -> Path:
        return self.state_dir / f"{uuid}.json"

    def _read_record(self, dev: GpuDevice, path: Path) -> tuple[float | None, str, str]:
        """(default to restore or None if corrupt, owner, why corrupt); FileNotFoundError if none.

        The state directory is a shared node folder that outlives every sidecar, so a record
        is input, not trust: only a finite number within the GPU's NVML range is honoured;
        anything else would set a limit NVML refuses (or raise) on every later hello."""
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise
        except (OSError, ValueError, RecursionError) as exc:
            return None, "", f"it cannot be read ({type(exc).__name__})"
        if not isinstance(loaded, dict):
            return None, "", "it is not a JSON object"
        owner = loaded.get("owner")
        owner = owner if isinstance(owner, str) else ""
        if loaded.get("uuid", dev.uuid) != dev.uuid:
            return None, owner, "it names another GPU"
        value = loaded.get("default_limit_w")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, owner, f"its default_limit_w {value!r:.40} is not a number"
        watts = float(value)
        if not math.isfinite(watts) or not dev.min_limit_w <= watts <= dev.max_limit_w:
            return (
                None,
                owner,
                f"its default_limit_w {watts:g} W is outside the GPU's range "
                f"{dev.min_limit_w:g}-{dev.max_limit_w:g} W",
            )
        return watts, owner, ""

    def restore_leftovers(self) -> list[str]:
        """Put back the default limit a killed predecessor left behind; sentences saying what.

        A valid record is honoured once and removed. A corrupt one is removed and the GPU gets
        NVML's own default instead. A restore that fails leaves a valid record behind (the
        corrupt one replaced) so that the next sidecar on that GPU tries again. Never raises."""
        said = []
        for dev in self.devices:
            path = self._record_path(dev.uuid)
            try:
                recorded, owner, corrupt = self._read_record(dev, path)
            except FileNotFoundError:
                continue
            if self.observe:
                sentence = (
                    f"GPU {dev.uuid} has a restore record left by an earlier run "
                    f"({owner or 'owner unknown'}); observe mode changes no limit, so its limit "
                    f"({self._current(dev.uuid)}) is left for the next sidecar that may change it."
                )
                log.warning(sentence)
                said.append(sentence)
                continue
            default = dev.default_limit_w if recorded is None else recorded
            if corrupt:
                log.warning(
                    "The restore record of GPU %s is corrupt (%s); it is removed and NVML's "
                    "default limit %g W is restored instead.",
                    dev.uuid,
                    corrupt,
                    default,
                )
                self._forget(dev.uuid)
            try:
                self.backend.set_limit_w(dev.uuid, default)
            except Exception as exc:  # a GPU error or worse must not fail the trainer's hello
                self.failures[dev.uuid] += 1
                sentence = (
                    f"GPU {dev.uuid} still has a limit left by an earlier run and it could not "
                    f"be restored to {default:g} W: {exc}"
                )
                log.warning(sentence)
                said.append(sentence)
                if corrupt:
                    self._remember(dev)  # a valid record in place of the corrupt one
                continue
            self._forget(dev.uuid)
            sentence = (
                f"Restored the default limit {default:g} W on GPU {dev.uuid}, left behind by an "
                f"earlier run ({owner or 'owner unknown'})."
            )
            log.info(sentence)
            said.append(sentence)
        return said

    def _current(self, uuid: str) -> str:
        try:
            return f"{self.backend.limit_w(uuid):g} W"
        except GpuError:
            return "unknown"

    def can_limit(self) -> str:
        """ "" if every GPU's limit may be changed, else why not (a sentence).

        Setting the limit it already has is the only harmless way to ask NVML."""
        if self.observe:
            return "Observe mode changes no limit."
        for dev in self.devices:
            if dev.mig:
                return (
                    f"GPU {dev.uuid} is in MIG mode; MIG slices cannot be power-limited, so the "
                    "run is measured only."
                )
            try:
                self.backend.set_limit_w(dev.uuid, self.backend.limit_w(dev.uuid))
            except LimitPermissionError:
                return (
                    "The sidecar may not change the GPU power limit (NVML_ERROR_NO_PERMISSION), "
                    "so the run is measured only; give the sidecar CAP_SYS_ADMIN to optimise."
                )
            except GpuError as exc:
                return f"The GPU power limit cannot be changed ({exc}); the run is measured only."
        return ""

    def apply(self, watts: float) -> None:
        """Set `watts` on every GPU of the run, recording each default first."""
        if self.observe:
            raise LimitPermissionError("Observe mode changes no limit.")
        for dev in self.devices:
            if dev.uuid not in self.changed:
                self._remember(dev)
                self.changed.add(dev.uuid)
            self.backend.set_limit_w(dev.uuid, watts)

    def restore(self) -> list[str]:
        """Default limits back on every GPU this sidecar changed. Never raises; problems as
        sentences, each also a WARNING naming the GPU and counted in `restore_failures`.

        "Restored" is logged only when a limit was really put back: a run that changed none
        (observe mode, or a refused limit) says nothing about restoring."""
        problems = []
        restored = 0
        for dev in self.devices:
            if dev.uuid not in self.changed:
                continue
            try:
                self.backend.set_limit_w(dev.uuid, dev.default_limit_w)
            except Exception as exc:  # restoring must go on to the next GPU whatever happens
                self.failures[dev.uuid] += 1
                sentence = f"The default limit of GPU {dev.uuid} was not restored: {exc}"
                log.warning(sentence)
                problems.append(sentence)
                continue
            restored += 1
            self.changed.discard(dev.uuid)
            self._forget(dev.uuid)
        if restored:
            log.info("Restored the default power limit on %d GPU(s).", restored)
        return problems

    def _remember(self, dev: GpuDevice) -> None:
        record = {
            "uuid": dev.uuid,
            "default_limit_w": dev.default_limit_w,
            "owner": self.owner,
            "since": time.time(),
        }
        path = self._record_path(dev.uuid)
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(record), encoding="utf-8")
            os.replace(tmp, path)
        except OSError as exc:
            if not self.warned_state_dir:
                self.warned_state_dir = True
                log.warning(
                    "The restore record cannot be written in %s (%s); if this sidecar is killed, "
                    "the GPU keeps its limit until an admin resets it.",
                    self.state_dir,
                    exc.strerror,
                )

    def _forget(self, uuid: str) -> None:
        with contextlib.suppress(OSError):
            self._record_path(uuid).unlink()
