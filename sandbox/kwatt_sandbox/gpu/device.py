"""The simulated GPU device file: kwatt_core.simgpu, re-exported under its sandbox name.

The format lives in kwatt_core so that the sidecar's simulated backend does not
import the sandbox (the test harness); the sandbox keeps this name for its callers.
"""

from __future__ import annotations

from kwatt_core.simgpu import (
    ENV_DIR,
    ENV_HIDDEN,
    SUFFIX,
    VERSION,
    Device,
    DeviceError,
    DevicePermissionError,
    create,
    list_uuids,
    path_of,
    read,
    run,
    set_limit,
    set_running,
    update,
)

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
