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
import os
import time
from pathlib import Path

from kwatt_sidecar.gpu import GpuBackend, GpuDevice, GpuError, LimitPermissionError

log = logging.getLogger("kwatt.sidecar")


class PowerControl:
    """The run's GPUs as one: the same limit on each, restored to their defaults at the end."""

    def __init__(
        self, backend: GpuBackend, devices: list[GpuDevice], state_dir: Path, owner: str = ""
    ) -> None:
        self.backend = backend
        self.devices = devices
        self.state_dir = state_dir
        self.owner = owner
        self.changed: set[str] = set()
        self.warned_state_dir = False

    def _record_path(self, uuid: str) -> Path:
        return self.state_dir / f"{uuid}.json"

    def restore_leftovers(self) -> list[str]:
        """Put back the default limit a killed predecessor left behind; sentences saying what."""
        said = []
        for dev in self.devices:
            path = self._record_path(dev.uuid)
            record: dict[str, object] = {}
            try:
                loaded = json.loads(path.read_text(encoding="utf-8"))
                record = loaded if isinstance(loaded, dict) else {}
                default = float(str(record.get("default_limit_w", dev.default_limit_w)))
            except FileNotFoundError:
                continue
            except (OSError, ValueError, AttributeError):
                default = dev.default_limit_w
            try:
                self.backend.set_limit_w(dev.uuid, default)
            except GpuError as exc:
                said.append(
                    f"GPU {dev.uuid} still has a limit left by an earlier run and it could not "
                    f"be restored to {default:g} W: {exc}"
                )
                continue
            self._forget(dev.uuid)
            said.append(
                f"Restored the default limit {default:g} W on GPU {dev.uuid}, left behind by an "
                f"earlier run ({record.get('owner') or 'owner unknown'})."
            )
        return said

    def can_limit(self) -> str:
        """ "" if every GPU's limit may be changed, else why not (a sentence).

        Setting the limit it already has is the only harmless way to ask NVML."""
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
        for dev in self.devices:
            if dev.uuid not in self.changed:
                self._remember(dev)
                self.changed.add(dev.uuid)
            self.backend.set_limit_w(dev.uuid, watts)

    def restore(self) -> list[str]:
        """Default limits back on every GPU this sidecar changed. Never raises; problems as
        sentences."""
        problems = []
        for dev in self.devices:
            if dev.uuid not in self.changed:
                continue
            try:
                self.backend.set_limit_w(dev.uuid, dev.default_limit_w)
            except Exception as exc:  # restoring must go on to the next GPU whatever happens
                problems.append(f"The default limit of GPU {dev.uuid} was not restored: {exc}")
                continue
            self.changed.discard(dev.uuid)
            self._forget(dev.uuid)
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
