"""The simulated GPU's device file survives its writers being killed (a trainer's container
killed mid-step): readers always find a whole device, never a truncated file."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

from kwatt_core import simgpu

WRITER = """
import sys
from dataclasses import replace
from pathlib import Path
from kwatt_core import simgpu
directory, uuid = Path(sys.argv[1]), sys.argv[2]
print("ready", flush=True)
while True:
    simgpu.update(directory, uuid, lambda d: replace(d, energy_mj=d.energy_mj + 1.0))
"""


def test_a_writer_killed_mid_update_leaves_a_whole_device(tmp_path: Path) -> None:
    uuid = "GPU-test"
    simgpu.create(
        tmp_path,
        simgpu.Device(uuid, "v100", 100.0, 250.0, 250.0, 250.0),
    )
    last = 0.0
    for attempt in range(15):
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(tmp_path), uuid], stdout=subprocess.PIPE
        )
        assert proc.stdout is not None and proc.stdout.readline().strip() == b"ready"
        time.sleep(0.02 + 0.007 * attempt)  # killed at a different point of an update each time
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        device = simgpu.read(tmp_path, uuid)  # raises DeviceError on a truncated file
        assert device.energy_mj >= last and device.limit_w == 250.0
        last = device.energy_mj
    assert last > 0
    assert simgpu.list_uuids(tmp_path) == [uuid]
