"""The sandbox's simulated GPU behind the sidecar's GPU interface.

Device files are kwatt_core.simgpu's (the format the sandbox writes; nothing here imports
the sandbox); time is the device's simulated clock, so a report's time is in trace
seconds however fast the simulation runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from kwatt_core import contract
from kwatt_core import simgpu as simdev
from kwatt_sidecar.gpu import GpuDevice, GpuError, GpuNotFoundError, LimitPermissionError

NOTE = "Simulated GPU (kwatt sandbox): energy and time follow the Zeus traces."


class SimulatedBackend:
    name = "simulated"
    note = NOTE

    def __init__(self, directory: Path, visible_devices: str | None, hidden: bool = False) -> None:
        self.directory = directory
        self.visible_devices = visible_devices
        self.hidden = hidden
        self._clock_uuid: str | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> SimulatedBackend:
        return cls(
            Path(env.get(contract.ENV_SIM_GPU_DIR, "")),
            env.get("NVIDIA_VISIBLE_DEVICES"),
            hidden=env.get(simdev.ENV_HIDDEN, "") == "1",
        )

    def visible(self) -> list[str]:
        """Like the NVIDIA runtime: `all`, a list of UUIDs, or nothing when unset."""
        spec = (self.visible_devices or "").strip()
        if self.hidden or spec in ("", "void", "none"):
            return []
        present = simdev.list_uuids(self.directory)
        if spec == "all":
            return present
        wanted = [s.strip() for s in spec.split(",")]
        return [u for u in present if u in wanted]

    def _read(self, uuid: str) -> simdev.Device:
        try:
            return simdev.read(self.directory, uuid)
        except simdev.DeviceError as exc:
            raise GpuError(str(exc)) from None

    def device(self, uuid: str) -> GpuDevice:
        if uuid not in self.visible():
            raise GpuNotFoundError(f"No visible simulated GPU has UUID {uuid}.")
        dev = self._read(uuid)
        return GpuDevice(
            uuid=uuid,
            model=dev.model,
            min_limit_w=dev.min_limit_w,
            max_limit_w=dev.max_limit_w,
            default_limit_w=dev.default_limit_w,
            mig=dev.mig,
        )

    def use(self, uuids: list[str]) -> None:
        self._clock_uuid = uuids[0] if uuids else None

    def clock(self) -> float:
        if self._clock_uuid is None:
            return 0.0
        return self._read(self._clock_uuid).clock_s

    def energy_j(self, uuid: str) -> float:
        return self._read(uuid).energy_mj / 1000.0

    def power_w(self, uuid: str) -> float:
        return self._read(uuid).power_w

    def limit_w(self, uuid: str) -> float:
        return self._read(uuid).limit_w

    def set_limit_w(self, uuid: str, watts: float) -> None:
        try:
            simdev.set_limit(self.directory, uuid, watts)
        except simdev.DevicePermissionError as exc:
            raise LimitPermissionError(str(exc)) from None
        except simdev.DeviceError as exc:
            raise GpuError(str(exc)) from None

    def close(self) -> None:
        pass
