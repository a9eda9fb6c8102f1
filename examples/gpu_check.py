"""Check kwatt on a real NVIDIA GPU: a small model trained through the client and a real sidecar.

    .venv/bin/python examples/gpu_check.py        (make gpu-check)

Trains a small PyTorch model (if torch is importable; otherwise the GPU idles
and only idle power is measured) on one GPU, with the sidecar subprocess on the
NVML backend profiling the power limit. Prints the energy measured per limit,
the limit chosen, the profiling overhead and whether the default limit was
restored. Exits 1 if anything failed, 0 after a pass or when there is no GPU.
Changing limits needs root or CAP_SYS_ADMIN; without it the run is observed only.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def first_gpu() -> tuple[Any, str, float] | None:
    """(pynvml, UUID, default limit W) of the first GPU, or None when there is none."""
    try:
        import pynvml
    except ImportError:
        print("gpu-check: skipped, nvidia-ml-py (pynvml) is not installed.")
        return None
    try:
        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() == 0:
            print("gpu-check: skipped, NVML sees no GPU.")
            return None
        handle = pynvml.nvmlDeviceGetHandleByIndex(0)
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        uuid = uuid.decode() if isinstance(uuid, bytes) else str(uuid)
        default = pynvml.nvmlDeviceGetPowerManagementDefaultLimit(handle) / 1000.0
    except pynvml.NVMLError as exc:
        print(f"gpu-check: skipped, no usable NVIDIA GPU here ({exc}).")
        return None
    return pynvml, uuid, default


def make_training(uuid: str) -> tuple[Any, str]:
    """A step function that keeps the GPU busy, and what it is."""
    os.environ["CUDA_VISIBLE_DEVICES"] = uuid
    try:
        import torch
    except ImportError:
        return (lambda: time.sleep(0.01)), "no torch: the GPU idles (idle power only)"
    if not torch.cuda.is_available():
        return (lambda: time.sleep(0.01)), "torch without CUDA: the GPU idles (idle power only)"
    dev = torch.device("cuda")
    model = torch.nn.Sequential(
        torch.nn.Linear(4096, 4096), torch.nn.ReLU(), torch.nn.Linear(4096, 4096)
    ).to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.randn(2048, 4096, device=dev)

    def step() -> None:
        opt.zero_grad()
        loss = model(x).square().mean()
        loss.backward()
        opt.step()
        torch.cuda.synchronize()

    return step, f"torch {torch.__version__}: a 2-layer MLP, batch 2048"


def main() -> int:
    found = first_gpu()
    if found is None:
        return 0
    pynvml, uuid, default_w = found
    sys.path.insert(0, str(REPO / "client"))
    from kwatt_client import Kwatt

    step, what = make_training(uuid)
    tmp = Path(tempfile.mkdtemp(prefix="kwatt-gpu-check-"))
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        "KWATT_GPU_BACKEND": "nvml",
        "KWATT_PORT": str(port),
        "KWATT_METRICS_PORT": str(metrics_port),
        "KWATT_TERMINATION_PATH": str(tmp / "termination"),
        "KWATT_STATE_DIR": str(tmp / "state"),
        "KWATT_BATCH_SIZE": "2048",
        "KWATT_WARMUP_STEPS": "5",
        "KWATT_MEASURE_STEPS": "20",
        "NVIDIA_VISIBLE_DEVICES": "all",
    }
    env.pop("CUDA_VISIBLE_DEVICES", None)
    sidecar = subprocess.Popen([sys.executable, "-m", "kwatt_sidecar"], env=env)
    failures: list[str] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=0.5)
                break
            except OSError:
                if time.monotonic() > deadline or sidecar.poll() is not None:
                    print("gpu-check: FAILED, the sidecar did not start.")
                    return 1
                time.sleep(0.1)
        print(f"gpu-check: GPU {uuid}, default limit {default_w:g} W; {what}.")
        for _ in range(3):
            step()  # compile and warm caches before anything is measured
        kw = Kwatt(port=port, gpu_uuids=[uuid], timeout_s=2.0)
        start, profiling_steps = time.monotonic(), 0
        while kw.profiling and profiling_steps < 5000:
            kw.step()
            step()
            profiling_steps += 1
        profiling_s = time.monotonic() - start
        t = time.monotonic()
        for _ in range(50):
            kw.step()  # a no-op now
            step()
        steady_step_s = (time.monotonic() - t) / 50
        kw.epoch_end(None)
        kw.end()
        if kw.quiet:
            failures.append("the client lost the sidecar")
    finally:
        sidecar.send_signal(signal.SIGTERM)
        sidecar.wait(timeout=30)
    try:
        report = json.loads((tmp / "termination").read_text())
    except (OSError, ValueError) as exc:
        print(f"gpu-check: FAILED, no report ({exc}).")
        return 1
    handle = pynvml.nvmlDeviceGetHandleByUUID(uuid)
    now_w = pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0
    restored = abs(now_w - default_w) < 0.5
    print(f"gpu-check: mode {report['mode']}, result {report['result']}.")
    for limit, energy, secs, steps in report.get("profile", []):
        print(
            f"  {limit:4d} W: {energy / steps:8.2f} J/step  {secs / steps * 1000:7.2f} ms/step"
            f"  ({steps} steps)"
        )
    print(f"gpu-check: chosen limit {report.get('limit_w')} W.")
    overhead = profiling_s - profiling_steps * steady_step_s
    print(
        f"gpu-check: profiling took {profiling_steps} steps in {profiling_s:.2f} s, "
        f"{overhead:+.2f} s against the same steps at the chosen limit."
    )
    print(f"gpu-check: limit now {now_w:g} W; default restored: {'yes' if restored else 'NO'}.")
    if report.get("note"):
        print(f"gpu-check: note: {report['note']}")
    if not restored:
        failures.append("the default limit was not restored")
    if report["mode"] == "optimize" and not report.get("profile_complete"):
        failures.append("profiling did not complete")
    if report["mode"] == "observe":
        print("gpu-check: observe only (no permission to set limits); run as root to check limits.")
    if failures:
        print(f"gpu-check: FAILED: {'; '.join(failures)}.")
        return 1
    print("gpu-check: passed.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
