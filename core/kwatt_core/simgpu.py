"""A simulated GPU: one JSON file per device, shared by the trainer and the sidecar.

The sidecar sets limits and reads the energy counter; the simulated trainer
advances the device's clock and counter by what its steps cost at the current
limit. Both are separate processes, so every read-modify-write holds an fcntl
lock (a sibling lock file) and replaces the file atomically. Times are simulated
(trace) seconds, energy is millijoules as NVML reports it. Standard library only:
the sidecar's simulated backend and the sandbox both import it, so the sidecar
image needs nothing of the test harness.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

__all__ = [
    "ENV_DIR",
    "ENV_HIDDEN",
    "SUFFIX",
    "VERSION",
    "Device",
    "DeviceError",
    "DevicePermissionError",
    "create",
    "list_uuids",
    "path_of",
    "read",
    "run",
    "set_limit",
    "set_running",
    "update",
]

ENV_DIR = "KWATT_SIM_GPU_DIR"  # the node's device directory
ENV_HIDDEN = "KWATT_SIM_HIDDEN"  # "1": this container sees no device (a hardened runtime)
SUFFIX = ".gpu.json"
VERSION = 1


class DeviceError(RuntimeError):
    """A simulated device is missing, unreadable or was asked something invalid."""


class DevicePermissionError(DeviceError):
    """Setting the limit is refused, like NVML_ERROR_NO_PERMISSION."""


@dataclass(frozen=True)
class Device:
    """The state of one simulated GPU."""

    uuid: str
    model: str
    min_limit_w: float
    max_limit_w: float
    default_limit_w: float
    limit_w: float
    energy_mj: float = 0.0
    clock_s: float = 0.0
    power_w: float = 0.0
    workload: str = ""
    batch_size: int = 0
    allow_set: bool = True
    mig: bool = False
    version: int = VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Device:
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in data.items() if k in known})


def path_of(directory: Path, uuid: str) -> Path:
    return directory / f"{uuid}{SUFFIX}"


def create(directory: Path, device: Device, overwrite: bool = False) -> None:
    """Write a new device file (kept as it is if it exists, unless `overwrite`)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = path_of(directory, device.uuid)
    if path.exists() and not overwrite:
        return
    _write(path, device)


def _write(path: Path, device: Device) -> None:
    """Replace the file atomically: a writer killed half-way leaves the old state."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(device.to_json(), encoding="utf-8")
    os.replace(tmp, path)


def list_uuids(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in directory.glob(f"*{SUFFIX}"))


@contextmanager
def _locked(directory: Path, uuid: str, exclusive: bool) -> Iterator[Path]:
    """Hold the device's lock (a sibling lock file, so that the data file itself can be
    replaced atomically) and give the data file's path."""
    path = path_of(directory, uuid)
    if not path.exists():
        raise DeviceError(f"Simulated GPU {uuid} does not exist in {directory}.")
    with open(path.with_name(path.name + ".lock"), "a+") as lock:
        fcntl.flock(lock.fileno(), fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield path
        finally:
            fcntl.flock(lock.fileno(), fcntl.LOCK_UN)


def _parse(path: Path, uuid: str) -> Device:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DeviceError(f"Simulated GPU {uuid} does not exist in {path.parent}.") from None
    try:
        return Device.from_dict(json.loads(text))
    except (json.JSONDecodeError, TypeError) as exc:
        raise DeviceError(f"Simulated GPU file of {uuid} is corrupt: {exc}.") from None


def read(directory: Path, uuid: str) -> Device:
    with _locked(directory, uuid, exclusive=False) as path:
        return _parse(path, uuid)


def update(directory: Path, uuid: str, change: Callable[[Device], Device]) -> Device:
    """Apply `change` under an exclusive lock; the new state replaces the file atomically,
    so a process killed mid-update (a trainer whose container is killed) leaves the old
    state, never a truncated file."""
    with _locked(directory, uuid, exclusive=True) as path:
        new = change(_parse(path, uuid))
        _write(path, new)
        return new


def set_limit(directory: Path, uuid: str, watts: float) -> Device:
    """What the sidecar does through the simulated backend: checked like NVML checks it."""

    def change(dev: Device) -> Device:
        if not dev.allow_set:
            raise DevicePermissionError(
                f"Setting the power limit of simulated GPU {uuid} is not permitted."
            )
        if dev.mig:
            raise DeviceError(f"Simulated GPU {uuid} is in MIG mode; its limit cannot be set.")
        if not dev.min_limit_w <= watts <= dev.max_limit_w:
            raise DeviceError(
                f"{watts:g} W is outside the range {dev.min_limit_w:g}-{dev.max_limit_w:g} W "
                f"of simulated GPU {uuid}."
            )
        return replace(dev, limit_w=float(watts))

    return update(directory, uuid, change)


def run(
    directory: Path,
    uuid: str,
    steps: int,
    step_cost: Callable[[float], tuple[float, float]],
) -> Device:
    """Advance the device by `steps` steps: `step_cost(limit_w)` gives (seconds, watts) per step."""

    def change(dev: Device) -> Device:
        seconds, watts = step_cost(dev.limit_w)
        elapsed = seconds * steps
        return replace(
            dev,
            clock_s=dev.clock_s + elapsed,
            energy_mj=dev.energy_mj + elapsed * watts * 1000.0,
            power_w=watts,
        )

    return update(directory, uuid, change)


def set_running(directory: Path, uuid: str, workload: str, batch_size: int) -> Device:
    """Say what runs on the device ("" when it goes idle: its power drops to zero)."""
    return update(
        directory,
        uuid,
        lambda d: replace(
            d, workload=workload, batch_size=batch_size, power_w=d.power_w if workload else 0.0
        ),
    )
