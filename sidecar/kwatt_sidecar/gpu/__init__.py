"""GPU access through one interface, with an NVML backend and the sandbox's simulated GPU.

Nothing here decides anything: a backend reads energy, power and limits, sets a
limit when allowed, and gives the clock in which its energy is meaningful (wall
time for NVML, simulated time for the simulated GPU).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Protocol

from kwatt_core import contract


class GpuError(RuntimeError):
    """A GPU call failed; the message is a sentence for the log and the report."""


class GpuNotFoundError(GpuError):
    """No visible device has this UUID."""


class LimitPermissionError(GpuError):
    """Setting the power limit is not permitted (NVML_ERROR_NO_PERMISSION)."""


@dataclass(frozen=True)
class GpuDevice:
    """One GPU of the run. `mig` devices are observed only, never limited."""

    uuid: str
    model: str
    min_limit_w: float
    max_limit_w: float
    default_limit_w: float
    mig: bool = False
    energy_counter: bool = True


class GpuBackend(Protocol):
    """What the sidecar needs of a GPU library."""

    name: str
    note: str  # said once in the start log line and in the report; "" for real GPUs

    def visible(self) -> list[str]:
        """UUIDs of the devices this container sees."""
        ...

    def device(self, uuid: str) -> GpuDevice:
        """Describe a device; GpuNotFoundError if it is not visible."""
        ...

    def use(self, uuids: list[str]) -> None:
        """The run's devices: the clock and any power sampling follow them."""
        ...

    def clock(self) -> float:
        """Seconds in the clock of the energy readings (monotonic)."""
        ...

    def energy_j(self, uuid: str) -> float:
        """Energy counter of a device in joules (monotonic, any origin)."""
        ...

    def power_w(self, uuid: str) -> float: ...

    def limit_w(self, uuid: str) -> float: ...

    def set_limit_w(self, uuid: str, watts: float) -> None:
        """Set the power limit; LimitPermissionError without the privilege."""
        ...

    def close(self) -> None: ...


class NoGpuBackend:
    """No GPU library could be loaded: a run is observed with nothing to observe."""

    name = "none"

    def __init__(self, why: str) -> None:
        self.note = why

    def visible(self) -> list[str]:
        return []

    def device(self, uuid: str) -> GpuDevice:
        raise GpuNotFoundError(f"No GPU is visible to the sidecar ({self.note}).")

    def use(self, uuids: list[str]) -> None:
        pass

    def clock(self) -> float:
        import time

        return time.monotonic()

    def energy_j(self, uuid: str) -> float:
        return 0.0

    def power_w(self, uuid: str) -> float:
        return 0.0

    def limit_w(self, uuid: str) -> float:
        return 0.0

    def set_limit_w(self, uuid: str, watts: float) -> None:
        raise LimitPermissionError("There is no GPU to limit.")

    def close(self) -> None:
        pass


def open_backend(env: Mapping[str, str], sample_interval_s: float = 0.1) -> GpuBackend:
    """The backend the environment asks for: simulated where a simulated GPU dir is given.

    `sample_interval_s` is the checked KWATT_SAMPLE_INTERVAL_S (kwatt_sidecar.config)."""
    name = env.get(contract.ENV_GPU_BACKEND, "").strip().lower()
    if not name:
        name = "simulated" if env.get(contract.ENV_SIM_GPU_DIR) else "nvml"
    if name == "simulated":
        from kwatt_sidecar.gpu.simulated import SimulatedBackend

        return SimulatedBackend.from_env(env)
    if name == "nvml":
        from kwatt_sidecar.gpu.nvml import NvmlBackend

        try:
            return NvmlBackend(sample_interval_s=sample_interval_s)
        except GpuError as exc:
            return NoGpuBackend(str(exc))
    raise GpuError(
        f"{contract.ENV_GPU_BACKEND}={name!r} is not a GPU backend; use 'nvml' or 'simulated'."
    )
