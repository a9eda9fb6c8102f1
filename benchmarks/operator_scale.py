"""Scale benchmark of the operator: a burst of TrainingJobs on the sandbox, and status size.

Not a timed test: `make bench` runs it. It reports

- burst: on a fresh sandbox (`running_sandbox`), `kwatt operator` (the real command, as a
  subprocess, as the sandbox's admin) and --trainingjobs TrainingJobs created at once by
  8 client threads; the time from the first create until every one has its first Job
  (target < 10 s), with the spread of the per-TrainingJob times, and the operator
  process's peak RSS over the whole burst (VmHWM, and VmRSS polled every 20 ms; target
  < 150 MiB). The runs' Pods select a node that does not exist, so they stay Pending:
  only the operator's side is measured, not 100 simulated trainers on this machine;
- status: `reconcile.reconcile` driven in-process (no cluster) for --runs recurrences,
  each run's report made by the trace simulator (cifar100 on the V100, every batch size
  of the trace a candidate) from the choice the pass made; the status's JSON size after
  the last run (with the default historyLimit and the largest allowed), the largest it
  ever was, and the time of one pass. etcd refuses objects over about 1.5 MiB.

    .venv/bin/python benchmarks/operator_scale.py [--trainingjobs 100] [--runs 1000]
        [--json PATH]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np

from kwatt_core.contract import SIDECAR_CONTAINER
from kwatt_core.policies import KwattPolicy
from kwatt_core.report import Report, Result, encode
from kwatt_core.sim.simulator import SimConfig, cost_model_for, run_once
from kwatt_core.sim.trace import WorkloadTrace, load_workloads
from kwatt_operator import reconcile
from kwatt_operator.crd import GROUP, PLURAL, VERSION, crd_path
from kwatt_operator.jobs import LABEL_TRAININGJOB, SidecarSettings, choice_of_job
from kwatt_operator.spec import DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT
from kwatt_sandbox.gpu.provider import default_trace_dir
from kwatt_sandbox.testing import Cluster, running_sandbox

NAMESPACE = "bench"
FIRST_JOBS_TARGET_S = 10.0
PEAK_RSS_TARGET_MIB = 150.0
ETCD_LIMIT_BYTES = 1_572_864  # etcd's default --max-request-bytes (1.5 MiB)
BURST_TIMEOUT_S = 120.0
SETTLE_S = 3.0  # RSS is still sampled this long after the last first Job
SIDECAR = SidecarSettings(image="ghcr.io/kwatt/sidecar:0.1")
UID = "6f1c1f0e-0000-4000-8000-00000000b001"


# --- the burst --------------------------------------------------------------------------


def trainingjob(name: str) -> dict[str, Any]:
    """A TrainingJob whose run Pods never schedule: the burst measures the operator alone."""
    trainer = {
        "name": "train",
        "image": "ignored:1",
        "command": ["python", "-c", "pass"],
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    }
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": NAMESPACE},
        "spec": {
            "template": {
                "spec": {
                    "nodeSelector": {"kwatt.dev/bench": "nowhere"},
                    "containers": [trainer],
                }
            },
            "batchSizes": {"candidates": [256, 512, 1024], "default": 1024},
            "target": {"metric": "accuracy", "value": 0.6, "maxEpochs": 100},
            "backoffLimit": 0,
        },
    }


def proc_status(pid: int, field: str) -> float:
    """A `kB` field of /proc/PID/status (VmRSS, VmHWM) in MiB; 0 once the process is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class RssSampler:
    """Polls a process's VmRSS in a thread; VmHWM (the kernel's own peak) is read at stop."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval = pid, interval
        self.peak = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, proc_status(self.pid, "VmRSS"))
            self._stop.wait(self.interval)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, proc_status(self.pid, "VmHWM"))


def start_operator(cluster: Cluster, log: Path, workers: int) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "kwatt_cli.main",
                "operator",
                "--namespace",
                NAMESPACE,
                "--sidecar-image",
                "ignored:1",
                "--metrics-port",
                "-1",
                "--workers",
                str(workers),
            ],
            env=cluster.env(),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    deadline = time.monotonic() + 60
    while "kwatt operator started" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise SystemExit(f"`kwatt operator` did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)
    return proc


def burst(cluster: Cluster, count: int, log: Path, workers: int) -> dict[str, Any]:
    """Create `count` TrainingJobs at once; time until each has its first Job."""
    from kubernetes import client

    cluster.kubectl("apply", "--server-side", "--force-conflicts", "-f", str(crd_path()))
    cluster.kubectl("wait", "--for=condition=Established", f"crd/{PLURAL}.{GROUP}")
    cluster.kubectl("create", "namespace", NAMESPACE)
    proc = start_operator(cluster, log, workers)
    try:
        time.sleep(1.0)  # let the watches settle before measuring the idle footprint
        idle_rss = proc_status(proc.pid, "VmRSS")
        cpu_before = cpu_seconds(proc.pid)
        names = [f"tj-{i:03d}" for i in range(count)]
        first: dict[str, float] = {}
        with cluster.api_client() as api, RssSampler(proc.pid) as rss:
            custom, batch = client.CustomObjectsApi(api), client.BatchV1Api(api)

            def create(name: str) -> None:
                custom.create_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, trainingjob(name)
                )

            began = time.monotonic()
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(create, names))
            created_s = time.monotonic() - began
            while len(first) < count and time.monotonic() - began < BURST_TIMEOUT_S:
                jobs = batch.list_namespaced_job(NAMESPACE, label_selector=LABEL_TRAININGJOB)
                seen = time.monotonic() - began
                for job in jobs.items:
                    labels = (job.metadata.labels if job.metadata else None) or {}
                    owner = labels.get(LABEL_TRAININGJOB)
                    if owner is not None and owner not in first:
                        first[owner] = seen
                if proc.poll() is not None:
                    raise SystemExit(f"`kwatt operator` exited:\n{log.read_text()[-3000:]}")
                time.sleep(0.1)
            time.sleep(SETTLE_S)
        after_rss = proc_status(proc.pid, "VmRSS")
        cpu_s = cpu_seconds(proc.pid) - cpu_before
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    times = sorted(first.values())
    return {
        "trainingjobs": count,
        "operator_workers": workers,
        "with_first_job": len(first),
        "create_all_s": created_s,
        "first_jobs_all_s": times[-1] if len(times) == count else None,
        "first_job_p50_s": statistics.median(times) if times else None,
        "first_job_p90_s": times[int(0.9 * (len(times) - 1))] if times else None,
        "operator_idle_rss_mib": idle_rss,
        "operator_peak_rss_mib": rss.peak,
        "operator_rss_after_mib": after_rss,
        "operator_cpu_s": cpu_s,
    }


# --- the status after many runs ---------------------------------------------------------


def trace_report(trace: WorkloadTrace, job: dict[str, Any], luck: float) -> Report:
    """What the sidecar would report for the run of `job`, from the trace simulator."""
    choice = choice_of_job(job)
    assert choice is not None
    policy = KwattPolicy()
    model = cost_model_for(trace, SimConfig().eta)
    seeds = trace.paths[choice.batch_size]
    path = seeds[min(int(luck * len(seeds)), len(seeds) - 1)]
    run = run_once(trace, model, choice, path, SimConfig(), policy.profiling)
    result: Result = "reached" if run.reached else "stopped" if run.stopped_early else "exhausted"
    return Report(
        result=result,
        batch_size=run.batch_size,
        epochs=run.epochs,
        energy_j=run.energy_j,
        time_s=run.time_s,
        cost=run.cost,
        limit_w=run.power_limit_w,
        profile_complete=run.profiled_limit_w is not None,
        epoch_cost=run.epoch_cost,
        kept_epochs=run.kept_epochs or None,
        metric=0.61 if run.reached else 0.42,
        gpu_model="Tesla V100-SXM2-32GB",
        min_limit_w=min(trace.limits_w),
        max_limit_w=max(trace.limits_w),
    )


def sidecar_pod(job: dict[str, Any], report: Report) -> dict[str, Any]:
    terminated = {"exitCode": 0, "reason": "Completed", "message": encode(report)}
    return {
        "metadata": {"name": job["metadata"]["name"] + "-x", "creationTimestamp": "t"},
        "status": {
            "initContainerStatuses": [
                {"name": SIDECAR_CONTAINER, "state": {"terminated": terminated}}
            ]
        },
    }


def status_growth(trace: WorkloadTrace, runs: int, history_limit: int) -> dict[str, Any]:
    """Drive the pure pass through `runs` recurrences; the status goes through JSON each time,
    as it does through the API server."""
    container = {"name": "train", "image": "example.com/train:1", "command": ["python", "t.py"]}
    tj: dict[str, Any] = {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "TrainingJob",
        "metadata": {"name": "cifar", "namespace": "ml", "uid": UID, "generation": 1},
        "spec": {
            "template": {"spec": {"containers": [container]}},
            "batchSizes": {
                "candidates": list(trace.batch_sizes),
                "default": trace.default_batch_size,
            },
            "target": {"metric": "accuracy", "value": 0.6, "maxEpochs": trace.spec.max_epochs},
            "historyLimit": history_limit,
        },
    }
    luck = np.random.default_rng(7).random(runs + 1)
    now = datetime(2025, 3, 1, tzinfo=UTC)
    status: dict[str, Any] = {}
    jobs: list[dict[str, Any]] = []
    pods: dict[str, list[dict[str, Any]]] = {}
    sizes: list[int] = []
    pass_s: list[float] = []
    for n in range(1, runs + 2):  # the last pass only records run `runs`
        current = copy.deepcopy(tj)
        if n <= runs:
            current["metadata"]["annotations"] = {reconcile.ANNOTATION_RUN_REQUEST: str(n)}
        current["status"] = status
        began = time.perf_counter()
        plan = reconcile.reconcile(current, jobs, pods, now + timedelta(hours=n), SIDECAR)
        pass_s.append(time.perf_counter() - began)
        assert plan.status is not None, f"pass {n} changed nothing"
        status = json.loads(json.dumps(plan.status))
        sizes.append(len(json.dumps(status)))
        jobs, pods = [], {}
        for job in plan.create:
            job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
            jobs.append(job)
            pods[job["metadata"]["name"]] = [sidecar_pod(job, trace_report(trace, job, luck[n]))]
    assert status["recordedRuns"] == runs, status.get("recordedRuns")
    return {
        "runs": runs,
        "history_limit": history_limit,
        "status_bytes": sizes[-1],
        "status_bytes_max": max(sizes),
        "policy_bytes": len(json.dumps(status["policy"])),
        "history_bytes": len(json.dumps(status["history"])),
        "pass_ms_mean": 1000 * statistics.fmean(pass_s),
        "pass_ms_max": 1000 * max(pass_s),
    }


# --- the report -------------------------------------------------------------------------


def _row(label: str, value: str) -> str:
    return f"  {label:<52} {value}"


def _s(value: float | None) -> str:
    return "not reached" if value is None else f"{value:.2f} s"


def table(report: dict[str, Any]) -> str:
    b = report["burst"]
    lines = [
        f"Burst: {b['trainingjobs']} TrainingJobs created at once (8 client threads), "
        f"`kwatt operator --workers {b['operator_workers']}`"
    ]
    lines.append(_row("all created (API calls)", _s(b["create_all_s"])))
    lines.append(_row("TrainingJobs with their first Job", f"{b['with_first_job']}"))
    spread = f"{_s(b['first_job_p50_s'])} / {_s(b['first_job_p90_s'])}"
    lines.append(_row("first Job of each: p50 / p90", spread))
    ok = report["first_jobs_all_s"] is not None and report["first_jobs_all_s"] < FIRST_JOBS_TARGET_S
    lines.append(
        _row(
            f"first Job of every one (target < {FIRST_JOBS_TARGET_S:.0f} s)",
            f"{_s(report['first_jobs_all_s'])} {'ok' if ok else 'MISSED'}",
        )
    )
    peak = report["operator_peak_rss_mib"]
    lines += [
        _row("operator RSS idle / after", f"{b['operator_idle_rss_mib']:.0f} / ")
        + f"{b['operator_rss_after_mib']:.0f} MiB",
        _row(
            f"operator peak RSS (target < {PEAK_RSS_TARGET_MIB:.0f} MiB)",
            f"{peak:.0f} MiB {'ok' if peak < PEAK_RSS_TARGET_MIB else 'MISSED'}",
        ),
        _row("operator CPU during the burst", f"{b['operator_cpu_s']:.1f} s"),
        "",
    ]
    for s in report["status"]:
        lines.append(
            f"Status after {s['runs']} recurrences (cifar100/V100 trace, historyLimit "
            f"{s['history_limit']})"
        )
        lines += [
            _row("status JSON: at the end / largest", f"{s['status_bytes']:,} / ")
            + f"{s['status_bytes_max']:,} bytes",
            _row("of which policy / history", f"{s['policy_bytes']:,} / ")
            + f"{s['history_bytes']:,} bytes",
            _row("one reconcile pass: mean / max", f"{s['pass_ms_mean']:.1f} / ")
            + f"{s['pass_ms_max']:.1f} ms",
        ]
    lines.append(_row("etcd's object limit", f"{ETCD_LIMIT_BYTES:,} bytes"))
    m = report["machine"]
    lines.append(f"Machine: {m['cpus']} CPUs, load {m['load_before']:.1f} before, ")
    lines[-1] += f"{m['load_after']:.1f} after"
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--trainingjobs", type=int, default=100, help="created at once")
    parser.add_argument("--runs", type=int, default=1000, help="recurrences for the status")
    parser.add_argument(
        "--workers", type=int, default=4, help="the operator's --workers (default 4, its own)"
    )
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON to PATH")
    args = parser.parse_args(argv)
    if args.trainingjobs < 1 or args.runs < 1:
        parser.error("--trainingjobs and --runs must be at least 1")

    load_before = os.getloadavg()[0]
    (trace,) = load_workloads(default_trace_dir(), "v100", ["cifar100"])
    growth = [
        status_growth(trace, args.runs, h) for h in (DEFAULT_HISTORY_LIMIT, MAX_HISTORY_LIMIT)
    ]
    with (
        tempfile.TemporaryDirectory(prefix="kwatt-operator-bench-") as tmp,
        running_sandbox(Path(tmp) / "sandbox") as cluster,
    ):
        burst_figures = burst(cluster, args.trainingjobs, Path(tmp) / "operator.log", args.workers)
    report: dict[str, Any] = {
        "first_jobs_all_s": burst_figures["first_jobs_all_s"],
        "operator_peak_rss_mib": burst_figures["operator_peak_rss_mib"],
        "status_bytes_after_1000_runs": growth[0]["status_bytes"],
        "machine": {
            "cpus": os.cpu_count(),
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
        },
        "targets": {"first_jobs_all_s": FIRST_JOBS_TARGET_S, "peak_rss_mib": PEAK_RSS_TARGET_MIB},
        "burst": burst_figures,
        "status": growth,
    }
    if args.runs != 1000:
        report[f"status_bytes_after_{args.runs}_runs"] = report.pop("status_bytes_after_1000_runs")
    print(table(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    return 0 if burst_figures["with_first_job"] == args.trainingjobs else 1


if __name__ == "__main__":
    sys.exit(main())
