"""The NVML backend against a fake `pynvml`: counters, permissions, MIG, several GPUs."""

from __future__ import annotations

import subprocess
import sys
import time
import types
from pathlib import Path
from typing import Any

import pytest

from kwatt_core.run import RunSettings
from kwatt_sidecar.app import Sidecar
from kwatt_sidecar.config import SidecarConfig
from kwatt_sidecar.gpu import LimitPermissionError
from kwatt_sidecar.gpu.nvml import Integrator, NvmlBackend

pytestmark = pytest.mark.timeout(30)


class NVMLError(Exception):
    def __init__(self, value: int) -> None:
        super().__init__(f"NVML error {value}")
        self.value = value


class FakeGpu:
    def __init__(self, uuid: str, counter: bool = True, mig: bool = False) -> None:
        self.uuid = uuid
        self.counter = counter
        self.mig = mig
        self.limit_mw = 300_000
        self.energy_mj = 1_000_000
        self.power_mw = 200_000
        self.allow_set = True
        self.set_calls: list[int] = []


def fake_pynvml(gpus: list[FakeGpu]) -> Any:
    m = types.ModuleType("pynvml")
    m.NVMLError = NVMLError  # type: ignore[attr-defined]
    m.NVML_ERROR_NOT_SUPPORTED = 3  # type: ignore[attr-defined]
    m.NVML_ERROR_NO_PERMISSION = 4  # type: ignore[attr-defined]
    by_uuid = {g.uuid: g for g in gpus}

    def handle_by_uuid(uuid: str) -> FakeGpu:
        if uuid not in by_uuid:
            raise NVMLError(13)
        return by_uuid[uuid]

    def energy(g: FakeGpu) -> int:
        if not g.counter:
            raise NVMLError(3)
        return g.energy_mj

    def set_limit(g: FakeGpu, mw: int) -> None:
        if not g.allow_set:
            raise NVMLError(4)
        g.set_calls.append(mw)
        g.limit_mw = mw

    def mig_mode(g: FakeGpu) -> tuple[int, int]:
        return (1, 1) if g.mig else (0, 0)

    funcs = {
        "nvmlInit": lambda: None,
        "nvmlShutdown": lambda: None,
        "nvmlDeviceGetCount": lambda: len(gpus),
        "nvmlDeviceGetHandleByIndex": lambda i: gpus[i],
        "nvmlDeviceGetUUID": lambda g: g.uuid.encode(),  # old bindings return bytes
        "nvmlDeviceGetHandleByUUID": handle_by_uuid,
        "nvmlDeviceIsMigDeviceHandle": lambda g: False,
        "nvmlDeviceGetMigMode": mig_mode,
        "nvmlDeviceGetPowerManagementLimitConstraints": lambda g: (100_000, 300_000),
        "nvmlDeviceGetPowerManagementDefaultLimit": lambda g: 300_000,
        "nvmlDeviceGetName": lambda g: "Tesla V100-SXM2-16GB",
        "nvmlDeviceGetTotalEnergyConsumption": energy,
        "nvmlDeviceGetPowerUsage": lambda g: g.power_mw,
        "nvmlDeviceGetPowerManagementLimit": lambda g: g.limit_mw,
        "nvmlDeviceSetPowerManagementLimit": set_limit,
    }
    for name, fn in funcs.items():
        setattr(m, name, fn)
    return m


def sidecar_for(tmp: Path, gpus: list[FakeGpu], mode: str = "optimize") -> Sidecar:
    module = fake_pynvml(gpus)
    backend = NvmlBackend(sample_interval_s=0.01, nvml=module)
    cfg = SidecarConfig(
        settings=RunSettings(batch_size=8, mode=mode, fixed_limit_w=150),  # type: ignore[arg-type]
        port=0,
        metrics_port=0,
        termination_path=tmp / "term",
        state_dir=tmp / "state",
        namespace="ns",
        pod="p",
        job="",
        run="",
    )
    return Sidecar(cfg, backend)


def test_imports_pynvml_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml([FakeGpu("GPU-a")]))
    assert NvmlBackend().visible() == ["GPU-a"]


def test_counter_missing_falls_back_to_sampling(tmp_path: Path) -> None:
    gpu = FakeGpu("GPU-old", counter=False)
    backend = NvmlBackend(sample_interval_s=0.01, nvml=fake_pynvml([gpu]))
    assert backend.device("GPU-old").energy_counter is False
    backend.use(["GPU-old"])
    first = backend.energy_j("GPU-old")
    time.sleep(0.1)
    later = backend.energy_j("GPU-old")
    assert 200.0 * 0.05 < later - first < 200.0 * 0.5  # ~200 W over ~0.1 s
    backend.close()


@pytest.mark.parametrize(("interval", "fewest", "most"), [(0.02, 8, 40), (0.3, 1, 4)])
def test_a_counterless_gpu_is_sampled_every_sample_interval(
    interval: float, fewest: int, most: int
) -> None:
    """KWATT_SAMPLE_INTERVAL_S is the sampling period: over half a second, about 25
    samples at 0.02 s, two or three at 0.3 s."""
    gpu = FakeGpu("GPU-old", counter=False)
    module = fake_pynvml([gpu])
    reads: list[float] = []
    power = module.nvmlDeviceGetPowerUsage

    def counted(g: FakeGpu) -> int:
        reads.append(time.monotonic())
        return int(power(g))

    module.nvmlDeviceGetPowerUsage = counted
    backend = NvmlBackend(sample_interval_s=interval, nvml=module)
    backend.use(["GPU-old"])
    time.sleep(0.5)
    backend.close()
    assert fewest <= len(reads) <= most, len(reads)


def test_integrator_trapezoids() -> None:
    integ = Integrator()
    integ.add(0.0, 100.0)
    integ.add(1.0, 200.0)
    assert integ.add(3.0, 200.0) == pytest.approx(150.0 + 400.0)


def test_no_permission_means_observe(tmp_path: Path) -> None:
    gpu = FakeGpu("GPU-a")
    gpu.allow_set = False
    sc = sidecar_for(tmp_path, [gpu])
    status = sc.hello(["GPU-a"], None)
    assert status["mode"] == "observe" and not status["profiling"]
    report = sc.finish()
    assert report.mode == "observe" and "NO_PERMISSION" in report.note
    assert gpu.set_calls == []


def test_mig_is_observed_never_limited(tmp_path: Path) -> None:
    gpu = FakeGpu("GPU-mig", mig=True)
    sc = sidecar_for(tmp_path, [gpu])
    assert sc.hello(["GPU-mig"], None)["mode"] == "observe"
    assert gpu.set_calls == []
    assert "MIG" in sc.finish().note
    with pytest.raises(LimitPermissionError):
        sc.backend.set_limit_w("GPU-mig", 200)


def test_several_gpus_same_limit_summed_energy_default_restored(tmp_path: Path) -> None:
    gpus = [FakeGpu("GPU-a"), FakeGpu("GPU-b"), FakeGpu("GPU-other")]
    sc = sidecar_for(tmp_path, gpus, mode="fixed")
    sc.hello(["GPU-a", "GPU-b"], None)
    assert [g.limit_mw for g in gpus] == [150_000, 150_000, 300_000]
    assert gpus[2].set_calls == []  # another pod's GPU is never touched
    for g in gpus[:2]:
        g.energy_mj += 5_000  # 5 J each
    report = sc.finish()
    assert report.energy_j == pytest.approx(10.0)
    assert report.gpu_count == 2
    assert [g.limit_mw for g in gpus[:2]] == [300_000, 300_000]
    assert not list((tmp_path / "state").glob("*.json"))
    # MaxPower counts every GPU: 300 W x 2.
    assert sc.state is not None and sc.state.cost_model.max_power_w == 600.0


def test_unknown_uuid_is_hidden_gpu(tmp_path: Path) -> None:
    sc = sidecar_for(tmp_path, [FakeGpu("GPU-a")])
    assert sc.hello(["GPU-zzz"], None)["gpus"] == []
    assert "NVIDIA_DRIVER_CAPABILITIES=utility" in sc.finish().note


def test_an_admins_cap_read_through_nvml_is_the_top_and_put_back(tmp_path: Path) -> None:
    """`nvidia-smi -pl 220` leaves the management limit at 220 W while NVML's default stays
    300 W: profiling starts at 220 W, and 220 W is what the end puts back."""
    gpu = FakeGpu("GPU-a")
    gpu.limit_mw = 220_000
    sc = sidecar_for(tmp_path, [gpu])
    status = sc.hello(["GPU-a"], None)
    assert status["profiling"] and status["limit_w"] == 220
    # The privilege check's no-op re-set, then the first window's limit.
    assert gpu.set_calls == [220_000, 220_000]
    record = (tmp_path / "state" / "GPU-a.json").read_text()
    assert '"restore_limit_w": 220.0' in record
    report = sc.finish()
    assert report.start_limit_w == 220 and report.max_limit_w == 300
    assert gpu.limit_mw == 220_000 and max(gpu.set_calls) == 220_000


def test_a_limit_nvml_reports_outside_the_range_is_not_trusted(tmp_path: Path) -> None:
    """A limit that could not be put back is no starting point: the run is measured only."""
    gpu = FakeGpu("GPU-a")
    gpu.limit_mw = 350_000  # above the 300 W maximum: a driver reporting nonsense
    sc = sidecar_for(tmp_path, [gpu], mode="fixed")
    assert sc.hello(["GPU-a"], None)["mode"] == "observe"
    report = sc.finish()
    assert "350 W" in report.note and "measured only" in report.note
    assert gpu.set_calls == [350_000]  # only the privilege check's no-op re-set
    assert not list((tmp_path / "state").glob("*.json"))


def test_a_limit_nvml_cannot_read_is_named_in_the_report(tmp_path: Path) -> None:
    """The run is measured only, and the report says which GPU and what NVML said."""
    gpu = FakeGpu("GPU-a")
    module = fake_pynvml([gpu])

    def unreadable(g: FakeGpu) -> int:
        raise NVMLError(999)

    module.nvmlDeviceGetPowerManagementLimit = unreadable
    sc = sidecar_for(tmp_path, [gpu])
    sc.backend = NvmlBackend(sample_interval_s=0.01, nvml=module)
    assert sc.hello(["GPU-a"], None)["mode"] == "observe"
    note = sc.finish().note
    assert "cannot read the power limit of GPU GPU-a: NVML error 999" in note
    assert gpu.set_calls == []


def test_the_power_sampler_never_keeps_the_sidecar_alive() -> None:
    """A process that ends without closing the backend (its main loop died) still exits:
    the sampling thread of a counterless GPU does not hold it."""
    code = """
import types
from kwatt_sidecar.gpu.nvml import NvmlBackend

class NVMLError(Exception):
    value = 3

def no_counter(handle):
    raise NVMLError()

m = types.ModuleType("pynvml")
m.NVMLError = NVMLError
m.NVML_ERROR_NOT_SUPPORTED = 3
m.nvmlInit = lambda: None
m.nvmlDeviceGetHandleByUUID = lambda uuid: uuid
m.nvmlDeviceIsMigDeviceHandle = lambda handle: False
m.nvmlDeviceGetMigMode = lambda handle: (0, 0)
m.nvmlDeviceGetTotalEnergyConsumption = no_counter
m.nvmlDeviceGetPowerUsage = lambda handle: 200_000
backend = NvmlBackend(sample_interval_s=0.01, nvml=m)
backend.use(["GPU-old"])
print("sampling", flush=True)
"""
    # A thread that held it would keep it running: subprocess.TimeoutExpired.
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=20)
    assert done.returncode == 0 and done.stdout.strip() == "sampling", done.stderr
