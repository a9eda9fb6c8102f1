"""The simulated GPU's device file survives its writers being killed (a trainer's container
killed mid-step): readers always find a whole device, never a truncated file."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

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


def v100(uuid: str = "GPU-a", **kw: object) -> simgpu.Device:
    args: dict[str, object] = {
        "uuid": uuid,
        "model": "v100",
        "min_limit_w": 100.0,
        "max_limit_w": 250.0,
        "default_limit_w": 250.0,
        "limit_w": 250.0,
    }
    args.update(kw)
    return simgpu.Device(**args)  # type: ignore[arg-type]


def test_create_keeps_a_device_that_exists_unless_told_to_overwrite(tmp_path: Path) -> None:
    """A node's devices are created once; a second provider start must not reset a limit
    a sidecar set meanwhile (nor its energy counter)."""
    simgpu.create(tmp_path, v100())
    simgpu.set_limit(tmp_path, "GPU-a", 150)
    simgpu.create(tmp_path, v100())
    assert simgpu.read(tmp_path, "GPU-a").limit_w == 150.0
    simgpu.create(tmp_path, v100(), overwrite=True)
    assert simgpu.read(tmp_path, "GPU-a").limit_w == 250.0


def test_set_limit_is_checked_like_nvml(tmp_path: Path) -> None:
    simgpu.create(tmp_path, v100())
    simgpu.create(tmp_path, v100("GPU-locked", allow_set=False))
    simgpu.create(tmp_path, v100("MIG-slice", mig=True))
    assert simgpu.set_limit(tmp_path, "GPU-a", 100).limit_w == 100.0  # the bounds are allowed
    assert simgpu.set_limit(tmp_path, "GPU-a", 250).limit_w == 250.0
    for watts in (99.5, 250.5):
        with pytest.raises(simgpu.DeviceError, match="outside the range 100-250 W"):
            simgpu.set_limit(tmp_path, "GPU-a", watts)
    with pytest.raises(simgpu.DevicePermissionError, match="not permitted"):
        simgpu.set_limit(tmp_path, "GPU-locked", 200)
    with pytest.raises(simgpu.DeviceError, match="MIG"):
        simgpu.set_limit(tmp_path, "MIG-slice", 200)
    assert simgpu.read(tmp_path, "GPU-locked").limit_w == 250.0
    assert simgpu.read(tmp_path, "MIG-slice").limit_w == 250.0


def test_steps_advance_the_clock_and_the_energy_counter(tmp_path: Path) -> None:
    """10 steps of 0.5 s at 200 W: 5 s and 1000 J, which NVML reports as 1,000,000 mJ."""
    simgpu.create(tmp_path, v100())
    simgpu.set_limit(tmp_path, "GPU-a", 200)
    seen: list[float] = []

    def cost(limit_w: float) -> tuple[float, float]:
        seen.append(limit_w)
        return 0.5, limit_w

    dev = simgpu.run(tmp_path, "GPU-a", 10, cost)
    assert seen == [200.0]
    assert dev.clock_s == pytest.approx(5.0) and dev.energy_mj == pytest.approx(1e6)
    assert dev.power_w == 200.0
    assert simgpu.read(tmp_path, "GPU-a") == dev


def test_an_idle_device_draws_nothing(tmp_path: Path) -> None:
    simgpu.create(tmp_path, v100())
    simgpu.run(tmp_path, "GPU-a", 1, lambda w: (1.0, 180.0))
    busy = simgpu.set_running(tmp_path, "GPU-a", "cifar100", 128)
    assert (busy.workload, busy.batch_size, busy.power_w) == ("cifar100", 128, 180.0)
    idle = simgpu.set_running(tmp_path, "GPU-a", "", 0)
    assert idle.power_w == 0.0 and idle.energy_mj == busy.energy_mj


def test_missing_and_corrupt_devices_are_named(tmp_path: Path) -> None:
    assert simgpu.list_uuids(tmp_path / "nowhere") == []
    with pytest.raises(simgpu.DeviceError, match="GPU-none does not exist"):
        simgpu.read(tmp_path, "GPU-none")
    simgpu.create(tmp_path, v100())
    simgpu.path_of(tmp_path, "GPU-a").write_text("{")
    with pytest.raises(simgpu.DeviceError, match="GPU-a is corrupt"):
        simgpu.read(tmp_path, "GPU-a")
    with pytest.raises(simgpu.DeviceError, match="GPU-a is corrupt"):
        simgpu.set_limit(tmp_path, "GPU-a", 200)


def test_a_device_file_from_a_newer_writer_still_reads(tmp_path: Path) -> None:
    """Fields this version does not know are ignored, so a node's files outlive upgrades."""
    data = json.loads(v100().to_json())
    data["fan_speed"] = 40
    simgpu.path_of(tmp_path, "GPU-a").write_text(json.dumps(data))
    assert simgpu.read(tmp_path, "GPU-a") == v100()


def test_a_node_directory_is_made_as_deep_as_needed(tmp_path: Path) -> None:
    node = tmp_path / "sim" / "nodes" / "gpu-0"
    simgpu.create(node, v100())
    assert simgpu.list_uuids(node) == ["GPU-a"]


ADDER = """
import sys
from dataclasses import replace
from pathlib import Path
from kwatt_core import simgpu
for _ in range(int(sys.argv[3])):
    simgpu.update(Path(sys.argv[1]), sys.argv[2], lambda d: replace(d, energy_mj=d.energy_mj + 1))
"""


def test_writers_at_the_same_time_lose_no_update(tmp_path: Path) -> None:
    """The trainer and the sidecar update one device file from two processes: each
    read-modify-write holds the lock, so no increment is lost."""
    simgpu.create(tmp_path, v100())
    procs = [
        subprocess.Popen([sys.executable, "-c", ADDER, str(tmp_path), "GPU-a", "300"])
        for _ in range(3)
    ]
    for proc in procs:
        assert proc.wait(timeout=60) == 0
    assert simgpu.read(tmp_path, "GPU-a").energy_mj == 900.0
