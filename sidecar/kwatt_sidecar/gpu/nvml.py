"""NVML backend (nvidia-ml-py, `import pynvml`). Only NVML calls here, no policy.

Energy comes from the total-energy counter (mJ, Volta and newer); where NVML says
NOT_SUPPORTED, a thread samples the power and integrates it (trapezoids). MIG
slices are measured through their parent GPU and never limited.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any

from kwatt_sidecar.gpu import GpuDevice, GpuError, GpuNotFoundError, LimitPermissionError


class Integrator:
    """Energy from power samples by the trapezoid rule: what a counterless GPU needs."""

    def __init__(self) -> None:
        self.energy_j = 0.0
        self._last: tuple[float, float] | None = None

    def add(self, t_s: float, power_w: float) -> float:
        if self._last is not None:
            t0, p0 = self._last
            if t_s > t0:
                self.energy_j += (p0 + power_w) / 2.0 * (t_s - t0)
        self._last = (t_s, power_w)
        return self.energy_j


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


class NvmlBackend:
    name = "nvml"
    note = ""

    def __init__(self, sample_interval_s: float = 0.1, nvml: Any = None) -> None:
        if nvml is None:
            try:
                import pynvml

                nvml = pynvml
            except ImportError:
                raise GpuError("The nvidia-ml-py package (pynvml) is not installed.") from None
        self.nvml = nvml
        try:
            nvml.nvmlInit()
        except nvml.NVMLError as exc:
            raise GpuError(f"NVML cannot be initialised: {exc}.") from None
        self.sample_interval_s = sample_interval_s
        self._handles: dict[str, Any] = {}
        self._mig: dict[str, bool] = {}
        self._integrators: dict[str, Integrator] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._sampler: threading.Thread | None = None

    def _code(self, exc: Exception) -> Any:
        return getattr(exc, "value", None)

    def visible(self) -> list[str]:
        nvml = self.nvml
        try:
            count = nvml.nvmlDeviceGetCount()
            return [
                _text(nvml.nvmlDeviceGetUUID(nvml.nvmlDeviceGetHandleByIndex(i)))
                for i in range(count)
            ]
        except nvml.NVMLError as exc:
            raise GpuError(f"NVML cannot list the GPUs: {exc}.") from None

    def _handle(self, uuid: str) -> Any:
        """The handle that measures and limits `uuid`: a MIG slice's is its parent GPU's."""
        if uuid in self._handles:
            return self._handles[uuid]
        nvml = self.nvml
        try:
            handle = nvml.nvmlDeviceGetHandleByUUID(uuid)
        except nvml.NVMLError as exc:
            raise GpuNotFoundError(f"No visible GPU has UUID {uuid} ({exc}).") from None
        mig = False
        try:
            if nvml.nvmlDeviceIsMigDeviceHandle(handle):
                handle = nvml.nvmlDeviceGetDeviceHandleFromMigDeviceHandle(handle)
                mig = True
            else:
                current, _pending = nvml.nvmlDeviceGetMigMode(handle)
                mig = bool(current)
        except nvml.NVMLError:
            pass  # GPUs without MIG say NOT_SUPPORTED
        self._handles[uuid] = handle
        self._mig[uuid] = mig
        return handle

    def device(self, uuid: str) -> GpuDevice:
        nvml = self.nvml
        handle = self._handle(uuid)
        try:
            min_mw, max_mw = nvml.nvmlDeviceGetPowerManagementLimitConstraints(handle)
            default_mw = nvml.nvmlDeviceGetPowerManagementDefaultLimit(handle)
            model = _text(nvml.nvmlDeviceGetName(handle))
        except nvml.NVMLError as exc:
            raise GpuError(f"NVML cannot read the power limits of GPU {uuid}: {exc}.") from None
        return GpuDevice(
            uuid=uuid,
            model=model,
            min_limit_w=min_mw / 1000.0,
            max_limit_w=max_mw / 1000.0,
            default_limit_w=default_mw / 1000.0,
            mig=self._mig[uuid],
            energy_counter=self._has_counter(handle),
        )

    def _has_counter(self, handle: Any) -> bool:
        try:
            self.nvml.nvmlDeviceGetTotalEnergyConsumption(handle)
            return True
        except self.nvml.NVMLError as exc:
            if self._code(exc) == self.nvml.NVML_ERROR_NOT_SUPPORTED:
                return False
            raise GpuError(f"NVML cannot read the energy counter: {exc}.") from None

    def use(self, uuids: list[str]) -> None:
        counterless = [u for u in uuids if not self._has_counter(self._handle(u))]
        with self._lock:
            for uuid in counterless:
                self._integrators.setdefault(uuid, Integrator())
        if counterless and self._sampler is None:
            self._sample_once()
            self._sampler = threading.Thread(target=self._sample, name="nvml-power", daemon=True)
            self._sampler.start()

    def _sample_once(self) -> None:
        with self._lock:
            for uuid, integrator in self._integrators.items():
                integrator.add(time.monotonic(), self.power_w(uuid))

    def _sample(self) -> None:
        while not self._stop.wait(self.sample_interval_s):
            try:
                self._sample_once()
            except GpuError:
                continue

    def clock(self) -> float:
        return time.monotonic()

    def energy_j(self, uuid: str) -> float:
        with self._lock:
            integrator = self._integrators.get(uuid)
            if integrator is not None:
                # Close the trapezoid at the moment of the reading.
                return integrator.add(time.monotonic(), self.power_w(uuid))
        try:
            return float(self.nvml.nvmlDeviceGetTotalEnergyConsumption(self._handle(uuid))) / 1e3
        except self.nvml.NVMLError as exc:
            raise GpuError(f"NVML cannot read the energy of GPU {uuid}: {exc}.") from None

    def power_w(self, uuid: str) -> float:
        try:
            return float(self.nvml.nvmlDeviceGetPowerUsage(self._handle(uuid))) / 1e3
        except self.nvml.NVMLError as exc:
            raise GpuError(f"NVML cannot read the power of GPU {uuid}: {exc}.") from None

    def limit_w(self, uuid: str) -> float:
        try:
            return float(self.nvml.nvmlDeviceGetPowerManagementLimit(self._handle(uuid))) / 1e3
        except self.nvml.NVMLError as exc:
            raise GpuError(f"NVML cannot read the power limit of GPU {uuid}: {exc}.") from None

    def set_limit_w(self, uuid: str, watts: float) -> None:
        nvml = self.nvml
        handle = self._handle(uuid)
        if self._mig.get(uuid):
            raise LimitPermissionError(f"GPU {uuid} is a MIG slice; MIG GPUs are not limited.")
        try:
            nvml.nvmlDeviceSetPowerManagementLimit(handle, round(watts * 1000))
        except nvml.NVMLError as exc:
            if self._code(exc) == nvml.NVML_ERROR_NO_PERMISSION:
                raise LimitPermissionError(
                    f"Setting the power limit of GPU {uuid} is not permitted "
                    "(NVML_ERROR_NO_PERMISSION; it needs CAP_SYS_ADMIN)."
                ) from None
            raise GpuError(f"NVML cannot set GPU {uuid} to {watts:g} W: {exc}.") from None

    def close(self) -> None:
        self._stop.set()
        if self._sampler is not None:
            self._sampler.join(timeout=1.0)
        with contextlib.suppress(self.nvml.NVMLError):
            self.nvml.nvmlShutdown()
