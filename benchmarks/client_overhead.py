"""What kwatt costs a training loop, against a live sidecar on a simulated GPU.

    .venv/bin/python benchmarks/client_overhead.py [--steps 2000] [--idle-seconds 5]

Prints the client's time per step while profiling (one HTTP round trip) and
after it (no call at all), the per-epoch calls, and the sidecar's CPU and
memory while it idles (from /proc/<pid>/stat and /proc/<pid>/status).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from kwatt_client import Kwatt
from kwatt_sandbox.gpu.provider import SimulatedGpuProvider


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def per_call_us(fn: object, n: int) -> tuple[float, float]:
    samples = []
    for _ in range(n):
        t = time.perf_counter()
        fn()  # type: ignore[operator]
        samples.append((time.perf_counter() - t) * 1e6)
    samples.sort()
    return statistics.median(samples), samples[int(0.99 * (n - 1))]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--idle-seconds", type=float, default=5.0)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="kwatt-bench-"))
    provider = SimulatedGpuProvider(tmp)
    uuids = provider.devices("bench", "v100", 1)
    port, metrics_port = free_port(), free_port()
    env = {
        **os.environ,
        **provider.container_env("bench", uuids, []),
        "NVIDIA_VISIBLE_DEVICES": "all",
        "KWATT_PORT": str(port),
        "KWATT_METRICS_PORT": str(metrics_port),
        "KWATT_TERMINATION_PATH": str(tmp / "termination"),
        "KWATT_WARMUP_STEPS": str(10 * args.steps),  # stay in warm-up: profiling all along
        "KWATT_BATCH_SIZE": "1024",
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "kwatt_sidecar"], env=env, stderr=subprocess.DEVNULL
    )
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/healthz", timeout=0.5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        kw = Kwatt(port=port, gpu_uuids=uuids)
        assert kw.profiling, "the sidecar should be profiling"
        step_med, step_p99 = per_call_us(kw.step, args.steps)
        stop_med, stop_p99 = per_call_us(kw.should_stop, 500)
        epoch_med, epoch_p99 = per_call_us(lambda: kw.epoch_end(0.1), 200)
        kw.profiling = False  # what the client does once the sidecar says profiling is over
        off_med, off_p99 = per_call_us(kw.step, args.steps)

        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        time.sleep(args.idle_seconds)
        idle_cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
        cpu0, t0 = cpu_seconds(proc.pid), time.monotonic()
        end = t0 + args.idle_seconds
        while time.monotonic() < end:  # a Prometheus scrape every second
            urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=1).read()
            time.sleep(1.0)
        scrape_cpu = (cpu_seconds(proc.pid) - cpu0) / (time.monotonic() - t0) * 100
        rss = rss_mib(proc.pid)
        kw.end()
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    print(f"client step while profiling   median {step_med:8.1f} us   p99 {step_p99:8.1f} us")
    print(f"client step after profiling   median {off_med:8.3f} us   p99 {off_p99:8.3f} us")
    print(f"client should_stop            median {stop_med:8.1f} us   p99 {stop_p99:8.1f} us")
    print(f"client epoch_end              median {epoch_med:8.1f} us   p99 {epoch_p99:8.1f} us")
    print(f"sidecar idle CPU              {idle_cpu:6.2f} % of one core")
    print(f"sidecar CPU, scraped each 1 s {scrape_cpu:6.2f} % of one core")
    print(f"sidecar resident memory       {rss:6.1f} MiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
