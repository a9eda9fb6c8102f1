"""Setting one limit on all the run's GPUs, and always putting back the limit each had before.

A power limit outlives the process that set it. At the trainer's hello the sidecar reads
each GPU's limit (an admin's `nvidia-smi -pl` cap, or the default) and never sets one above
it. Before changing a GPU's limit it writes a record of that pre-run limit (one JSON file
per GPU UUID) in a node directory, so that if it is killed (SIGKILL, OOM, node pressure)
the next sidecar given that GPU puts it back before anything else. The record goes away
once the limit is back.
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

from kwatt_core import contract
from kwatt_sidecar.gpu import GpuBackend, GpuDevice, GpuError, LimitPermissionError

log = logging.getLogger("kwatt.sidecar")

RECORD_KEY = "restore_limit_w"  # the limit the GPU had before the run that wrote the record
OLD_RECORD_KEY = "default_limit_w"  # older sidecars recorded NVML's default limit instead


class PowerControl:
    """The run's GPUs as one: the same limit on each, each put back to its pre-run limit.

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
        # Per GPU, the limit to put back: what it had when the run began, after a predecessor's
        # record was honoured (or what that record says, when honouring it failed).
        self.start: dict[str, float] = {}
        self.warned_state_dir = False
        self.record_problem = ""  # a sentence once a restore record could not be written
        self.failures: Counter[str] = Counter()  # failed restores by GPU UUID, for metrics

    @property
    def restore_failures(self) -> int:
        return sum(self.failures.values())

    @property
    def start_limit_w(self) -> float | None:
        """The lowest pre-run limit of the run's GPUs: the top of what the run may set."""
        return min(self.start.values()) if self.start else None

    def _record_path(self, uuid: str) -> Path:
        return self.state_dir / f"{uuid}.json"

    def _read_record(self, dev: GpuDevice, path: Path) -> tuple[float | None, str, str, bool]:
        """(limit to restore or None if corrupt, owner, why corrupt, an older kwatt's record);
        FileNotFoundError if there is none.

        The state directory is a shared node folder that outlives every sidecar, so a record
        is input, not trust: only a finite number within the GPU's NVML range is honoured;
        anything else would set a limit NVML refuses (or raise) on every later hello. A record
        of an older kwatt holds NVML's default limit (`default_limit_w`), what it restored."""
        try:
            loaded = json.loads(path.read_text(encoding="utf-8"))
        except (FileNotFoundError, NotADirectoryError):
            raise FileNotFoundError(path) from None
        except (OSError, ValueError, RecursionError) as exc:
            return None, "", f"it cannot be read ({type(exc).__name__})", False
        if not isinstance(loaded, dict):
            return None, "", "it is not a JSON object", False
        owner = loaded.get("owner")
        owner = owner if isinstance(owner, str) else ""
        named = loaded.get("uuid")
        if named != dev.uuid:  # docs/sidecar.md: a record must name its GPU
            return None, owner, f"it names {'no GPU' if named is None else 'another GPU'}", False
        old = RECORD_KEY not in loaded
        key = OLD_RECORD_KEY if old else RECORD_KEY
        value = loaded.get(key)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None, owner, f"its {key} {value!r:.40} is not a number", old
        watts = float(value)
        if not math.isfinite(watts) or not dev.min_limit_w <= watts <= dev.max_limit_w:
            return (
                None,
                owner,
                f"its {key} {watts:g} W is outside the GPU's range "
                f"{dev.min_limit_w:g}-{dev.max_limit_w:g} W",
                old,
            )
        return watts, owner, "", old

    def restore_leftovers(self) -> list[str]:
        """Put back the limit a killed predecessor found; sentences saying what.

        A valid record is honoured once and removed. A corrupt one is removed and the GPU gets
        NVML's own default instead (the best guess left). A restore that fails leaves a valid
        record behind (the corrupt one replaced) so that the next sidecar on that GPU tries
        again, and that limit is the one this run restores too. Never raises."""
        said = []
        for dev in self.devices:
            path = self._record_path(dev.uuid)
            try:
                recorded, owner, corrupt, old = self._read_record(dev, path)
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
            target = dev.default_limit_w if recorded is None else recorded
            if corrupt:
                log.warning(
                    "The restore record of GPU %s is corrupt (%s); it is removed and NVML's "
                    "default limit %g W is restored instead.",
                    dev.uuid,
                    corrupt,
                    target,
                )
                self._forget(dev.uuid)
            try:
                self.backend.set_limit_w(dev.uuid, target)
            except Exception as exc:  # a GPU error or worse must not fail the trainer's hello
                self.failures[dev.uuid] += 1
                self.start[dev.uuid] = target  # still owed: this run puts it back, not less
                sentence = (
                    f"GPU {dev.uuid} still has a limit left by an earlier run and it could not "
                    f"be restored to {target:g} W: {exc}"
                )
                log.warning(sentence)
                said.append(sentence)
                if corrupt:
                    self._remember(dev, target)  # a valid record in place of the corrupt one
                continue
            self._forget(dev.uuid)
            older = " (an older kwatt's record, which holds NVML's default limit)" if old else ""
            sentence = (
                f"Restored the limit {target:g} W on GPU {dev.uuid}, which an earlier run "
                f"({owner or 'owner unknown'}) had changed and not put back{older}."
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

    def read_start_limits(self) -> str:
        """Read each GPU's limit as the run begins (after `restore_leftovers`): "" when every
        one is a limit that can be put back, else why not (a sentence; nothing is changed).

        It is the limit restored at the end, and the top of what the run may set, so a cap an
        admin set stays a cap. A GPU whose own limit is owed by a failed leftover restore keeps
        that one."""
        for dev in self.devices:
            if dev.uuid in self.start:
                continue
            try:
                watts = self.backend.limit_w(dev.uuid)
            except GpuError as exc:
                return (
                    f"The power limit of GPU {dev.uuid} cannot be read ({exc}), so it could not "
                    "be put back; the run is measured only."
                )
            if not (math.isfinite(watts) and dev.min_limit_w <= watts <= dev.max_limit_w):
                return (
                    f"GPU {dev.uuid} reports its power limit as {watts:g} W, outside its range "
                    f"{dev.min_limit_w:g}-{dev.max_limit_w:g} W, so it could not be put back; "
                    "the run is measured only."
                )
            self.start[dev.uuid] = watts
        return ""

    def _start_of(self, dev: GpuDevice) -> float:
        """The limit to put back on `dev`, read now if `read_start_limits` was not called."""
        if dev.uuid not in self.start:
            why = self.read_start_limits()
            if why:
                raise GpuError(why)
        return self.start[dev.uuid]

    def apply(self, watts: float) -> None:
        """Set `watts` on every GPU of the run, recording each one's pre-run limit first."""
        if self.observe:
            raise LimitPermissionError("Observe mode changes no limit.")
        for dev in self.devices:
            if dev.uuid not in self.changed:
                self._remember(dev, self._start_of(dev))
                self.changed.add(dev.uuid)
            self.backend.set_limit_w(dev.uuid, watts)

    def restore(self) -> list[str]:
        """Each GPU this sidecar changed back at its pre-run limit. Never raises; problems as
        sentences, each also a WARNING naming the GPU and counted in `restore_failures`.

        "Restored" is logged only when a limit was really put back: a run that changed none
        (observe mode, or a refused limit) says nothing about restoring."""
        problems = []
        restored: list[str] = []
        for dev in self.devices:
            if dev.uuid not in self.changed:
                continue
            target = self.start.get(dev.uuid, dev.default_limit_w)
            try:
                self.backend.set_limit_w(dev.uuid, target)
            except Exception as exc:  # restoring must go on to the next GPU whatever happens
                self.failures[dev.uuid] += 1
                sentence = (
                    f"The limit of GPU {dev.uuid} was not restored to {target:g} W, the limit it "
                    f"had before the run: {exc}"
                )
                log.warning(sentence)
                problems.append(sentence)
                continue
            restored.append(f"{dev.uuid} {target:g} W")
            self.changed.discard(dev.uuid)
            self._forget(dev.uuid)
        if restored:
            log.info("Restored the limit each GPU had before the run: %s.", ", ".join(restored))
        return problems

    def _remember(self, dev: GpuDevice, watts: float) -> None:
        record = {
            "uuid": dev.uuid,
            RECORD_KEY: watts,
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
                self.record_problem = (
                    f"The restore record cannot be written in {self.state_dir} "
                    f"({exc.strerror or exc}); if this sidecar is killed, the GPU keeps the "
                    f"limit it set until an admin resets it. Optimize and fixed modes need "
                    f"{contract.ENV_STATE_DIR} to be a writable node folder (the operator "
                    "mounts one)."
                )
                log.warning(self.record_problem)

    def _forget(self, uuid: str) -> None:
        with contextlib.suppress(OSError):
            self._record_path(uuid).unlink()
