"""`kwatt demo`: kwatt end to end on the sandbox cluster, in about two minutes.

What it does, in order, printing each step:

1. finds (or builds once, with progress) the sandbox's control plane and Helm 3, both built
   from their Go modules into the per-machine cache (kwatt_sandbox.controlplane);
2. starts the sandbox cluster (`kwatt sandbox`: a real Kubernetes control plane on
   127.0.0.1) with a CPU node and a GPU node holding one simulated V100;
3. installs kwatt with its Helm chart (charts/kwatt): the operator runs as a Pod, as the
   chart's ServiceAccount, bound to the chart's RBAC, as on a real cluster;
4. applies two TrainingJobs over Zeus's traces (examples/sandbox-simulated.yaml and
   examples/sandbox-squad.yaml) and asks each for `--runs` recurrences the way a person
   would, with the `kwatt.dev/run-requested` annotation, keeping one request pending so
   that the next run starts the moment the last one ends; a line per finished run;
5. prints each job's table and saving (kwatt_cli.report.render_table, the very text of
   `kwatt report`), writes its chart (kwatt_cli.report.write_chart) and table to `--out`;
6. stops the cluster (also on Ctrl-C, SIGTERM or SIGHUP) and checks that nothing it
   started is left running.

The runs are real: the operator's Jobs, the scheduler, the node agent's processes, the
sidecar's profiling and report, the policy. Only the GPU is simulated, and the trainer
runs its simulated seconds faster than real time (its `--time-scale`): energy and time in
the tables are the simulated GPU's, as the traces measured them.

The sandbox's Pods share the host's network, so two runs' sidecars would want the same port
at once; the GPU node has one V100, and the real scheduler runs the two jobs' runs in turn.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, TextIO

import yaml

from kwatt_cli.errors import CommandError, UsageError
from kwatt_cli.report import (
    WIDTH,
    connect,
    duration,
    energy_unit,
    render_table,
    write_chart,
)
from kwatt_operator.crd import GROUP, PLURAL, VERSION
from kwatt_operator.reconcile import ANNOTATION_RUN_REQUEST
from kwatt_operator.status_report import RUNNING, JobReport, NoRunsError, RunRow, job_report

if TYPE_CHECKING:
    from kwatt_sandbox.testing import Cluster

HELP = (
    "Run kwatt end to end on the sandbox cluster: the control plane, kwatt installed with "
    "its Helm chart, two TrainingJobs over Zeus's traces for 20 recurrences each, then a "
    "table, the saving and a chart per job."
)
REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kwatt"
MANIFESTS = (REPO / "examples" / "sandbox-simulated.yaml", REPO / "examples" / "sandbox-squad.yaml")
NAMESPACE = "kwatt-demo"  # the TrainingJobs'
RELEASE, RELEASE_NAMESPACE = "kwatt", "kwatt-system"
NODES = ("cpu-0", "gpu-0=v100x1")
HELM = "helm3"
POLL_S = 0.5  # off the critical path: a request is pending long before it is needed
STALL_S = 120.0  # no run recorded for this long: something is wrong, say what
INSTALL_TIMEOUT_S = 180


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runs", type=int, default=20, help="recurrences of each TrainingJob (default 20)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("out") / "demo",
        help="where the charts, tables, Helm values and the cluster's kubeconfig go "
        "(default ./out/demo)",
    )


def run(args: argparse.Namespace) -> int:
    runs: int = args.runs
    if not 1 <= runs <= 100:
        raise UsageError(f"--runs must be between 1 and 100, not {runs}.")
    if not CHART.is_dir() or not all(m.is_file() for m in MANIFESTS):
        raise UsageError(
            f"kwatt demo runs from a checkout of kwatt's repository (it installs charts/kwatt "
            f"and applies examples/); {CHART} is not there."
        )
    out_dir: Path = args.out.resolve()
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {args.out} is a file; give a folder.")
    try:  # the charts need matplotlib: say so before anything starts
        import matplotlib  # noqa: F401
    except ModuleNotFoundError:
        raise UsageError(
            "kwatt demo draws charts with matplotlib: pip install 'kwatt[plot]'."
        ) from None
    from kwatt_sandbox.nodes.shim import namespaces_problem

    problem = namespaces_problem()
    if problem is not None:
        raise UsageError(problem)
    jobs = [load_manifest(path) for path in MANIFESTS]
    demo = Demo(out_dir, runs, jobs)
    with _signals_as_interrupts():
        return demo.main()


# --- the TrainingJobs ----------------------------------------------------------------------


@dataclass(frozen=True)
class Manifest:
    path: Path
    name: str
    workload: str
    gpu: str
    time_scale: float | None
    candidates: tuple[int, ...]
    default: int
    target: str

    def describe(self) -> str:
        sizes = f"{self.candidates[0]}-{self.candidates[-1]}" if self.candidates else "?"
        speed = f", trained {1 / self.time_scale:,.0f}x faster" if self.time_scale else ""
        return (
            f"{self.name}: Zeus's {self.workload} trace on a simulated {self.gpu.upper()}, "
            f"{len(self.candidates)} batch sizes {sizes} (default {self.default}), target "
            f"{self.target}{speed}"
        )


def load_manifest(path: Path) -> Manifest:
    """What the demo says about an example TrainingJob (its trainer's flags, its spec)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    spec = doc["spec"]
    container = spec["template"]["spec"]["containers"][0]
    flags: dict[str, str] = {}
    for arg in [str(a) for a in container.get("args") or []]:
        key, _, value = arg.partition("=")
        flags[key.lstrip("-")] = value
    scale = flags.get("time-scale")
    target = spec["target"]
    return Manifest(
        path=path,
        name=str(doc["metadata"]["name"]),
        workload=flags.get("workload", "?"),
        gpu=flags.get("gpu", "?"),
        time_scale=float(scale) if scale else None,
        candidates=tuple(sorted(int(b) for b in spec["batchSizes"]["candidates"])),
        default=int(spec["batchSizes"]["default"]),
        target=f"{target['metric']} {target['value']}",
    )


# --- driving the recurrences: pure, tested without a cluster -------------------------------


def next_request(started: int, requested: int, wanted: int) -> int | None:
    """The run to ask for now, if any. `started` is status.runs, `requested` the highest
    run asked for so far (1: the run a TrainingJob starts when created). One request is kept
    pending: once the last one asked for has started, the next is asked for, and the
    operator starts it the moment the run in flight ends (concurrencyPolicy Forbid)."""
    if requested < wanted and started >= requested:
        return requested + 1
    return None


def progress_line(elapsed_s: float, name: str, width: int, row: RunRow, wanted: int) -> str:
    """One finished run: job, run, batch size, power limit, energy, time, result."""
    limit = f"{row.power_limit_w} W" if row.power_limit_w is not None else "-"
    energy = row.energy_j or 0.0
    unit, size = energy_unit(energy)
    batch = "-" if row.batch_size is None else str(row.batch_size)
    return (
        f"[{_clock(elapsed_s)}] {name:<{width}}  run {row.run:>{len(str(wanted))}}/{wanted}  "
        f"batch {batch:>5}  limit {limit:>5}  energy {energy / size:8.2f} {unit:<2}  "
        f"time {duration(row.seconds):>7}  {row.result}"
    )


def finished(report: JobReport, wanted: int) -> bool:
    return report.runs_recorded >= wanted and not any(r.result == RUNNING for r in report.rows)


def saving_line(report: JobReport) -> str:
    c = report.comparison
    if c is None:
        return "saving not known yet (no default-size run reached the target)"
    span = (
        f"{c.time_percent:.1f}% shorter"
        if c.time_percent >= 0
        else f"{-c.time_percent:.1f}% longer"
    )
    energy = (
        f"{c.energy_percent:.1f}% less"
        if c.energy_percent >= 0
        else f"{-c.energy_percent:.1f}% more"
    )
    return f"{energy} energy per run than the default configuration ({c.basis}), time {span}"


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    return f"{minutes}:{secs:02d}"


# --- the demo ------------------------------------------------------------------------------


@dataclass
class Demo:
    out_dir: Path
    runs: int
    jobs: list[Manifest]
    out: TextIO = field(default_factory=lambda: sys.stdout)
    began: float = field(default_factory=time.monotonic)
    phases: dict[str, float] = field(default_factory=dict)

    def say(self, text: str = "", *, stamp: bool = True) -> None:
        """A line; a stamped one (elapsed time first) is wrapped, paths kept whole."""
        if stamp and text:
            prefix = f"[{_clock(time.monotonic() - self.began)}] "
            text = textwrap.fill(
                prefix + text,
                width=WIDTH,
                subsequent_indent=" " * len(prefix),
                break_long_words=False,
                break_on_hyphens=False,
            )
        self.out.write(text + "\n")
        self.out.flush()

    def note(self, text: str) -> None:
        """A line that belongs to the stamped one above it."""
        self.say("        " + text, stamp=False)

    def main(self) -> int:
        from kwatt_sandbox.controlplane.build import BuildError, ensure_binaries
        from kwatt_sandbox.controlplane.tools import ensure_tool

        self.say(
            f"kwatt demo: kwatt on a real Kubernetes control plane with simulated GPUs, "
            f"{len(self.jobs)} recurring TrainingJobs, {self.runs} runs each.",
            stamp=False,
        )
        self.say()
        self.out_dir.mkdir(parents=True, exist_ok=True)
        started = time.monotonic()
        try:
            binaries = ensure_binaries(self.out)
            self.say(f"Control plane (Kubernetes, built once from Go): {binaries.directory}")
            helm = ensure_tool(HELM, self.out)
            self.say(f"Helm 3 (built once from Go): {helm}")
        except BuildError as exc:
            raise UsageError(str(exc)) from exc
        self.phases["builds"] = time.monotonic() - started
        from kwatt_sandbox.testing import SandboxError, running_sandbox

        cluster_dir = self.out_dir / "cluster"
        shutil.rmtree(cluster_dir, ignore_errors=True)  # a stale ready file would be believed
        started = time.monotonic()
        self.say(
            "Starting the sandbox cluster: etcd, kube-apiserver, kube-controller-manager, "
            "kube-scheduler, and simulated nodes ..."
        )
        try:
            with running_sandbox(cluster_dir, nodes=list(NODES), stop_with_parent=True) as cluster:
                self.phases["cluster"] = time.monotonic() - started
                try:
                    reports = self._on_cluster(cluster, helm)
                except KeyboardInterrupt:
                    self.say("Interrupted.")
                    raise
                finally:
                    self._stop(cluster)
        except SandboxError as exc:
            raise CommandError(f"The sandbox cluster did not start: {exc}") from None
        self._summary(reports)
        return 0

    # -- on the cluster -------------------------------------------------------------------

    def _on_cluster(self, cluster: Cluster, helm: Path) -> list[JobReport]:
        kubectl = cluster.kubectl_path
        kubeconfig = cluster.kubeconfig
        self.say(
            f"Sandbox cluster up in {duration(self.phases['cluster'])}: {cluster.state['url']}, "
            f"nodes cpu-0 and gpu-0 (one simulated V100)."
        )
        self.note("Watch it from another terminal:")
        self.note(f"  KUBECONFIG={kubeconfig} {kubectl} get tj -n {NAMESPACE} -w")
        self.note("or, for every kubectl command:")
        self.note(f"  export KUBECONFIG={kubeconfig} PATH={Path(kubectl).parent}:$PATH")
        # The namespace first: its `default` ServiceAccount exists by the time runs start.
        cluster.kubectl("create", "namespace", NAMESPACE)
        self._install(cluster, helm)
        self._apply(cluster)
        started = time.monotonic()
        reports = self._drive(cluster)
        self.phases["runs"] = time.monotonic() - started
        self.say()
        for report in reports:
            self._write(report)
        return reports

    def _install(self, cluster: Cluster, helm: Path) -> None:
        from kwatt_sandbox.controlplane.cluster import free_port

        started = time.monotonic()
        values_file = self.out_dir / "values.yaml"
        values_file.write_text(
            "# Helm values of `kwatt demo` on the sandbox (docs/sandbox.md): its nodes ignore\n"
            "# images and run `command`, and Pods share the host's network, hence free ports.\n"
            + yaml.safe_dump(self._values(free_port), sort_keys=False)
        )
        args = [
            "install",
            RELEASE,
            str(CHART),
            "-n",
            RELEASE_NAMESPACE,
            "--create-namespace",
            "-f",
            str(values_file),
            "--wait",
            "--timeout",
            f"{INSTALL_TIMEOUT_S}s",
        ]
        shown = ["helm", *[_relative(a) for a in args[:-2]]]
        self.say(f"Installing kwatt with its Helm chart: {shlex.join(shown)}")
        with tempfile.TemporaryDirectory(prefix="kwatt-demo-helm-") as home:
            env = cluster.env()
            for var in ("HELM_CACHE_HOME", "HELM_CONFIG_HOME", "HELM_DATA_HOME"):
                env[var] = os.path.join(home, var.lower())
            result = subprocess.run(
                [str(helm), *args],
                env=env,
                capture_output=True,
                text=True,
                timeout=INSTALL_TIMEOUT_S + 30,
            )
        if result.returncode != 0:
            said = _tail(result.stderr or result.stdout, 15)
            raise CommandError(
                f"helm install failed ({result.returncode}):\n{said}\n"
                + self._operator_log(cluster)
            )
        self.phases["install"] = time.monotonic() - started
        pods = cluster.kubectl(
            "get",
            "pods",
            "-n",
            RELEASE_NAMESPACE,
            "-l",
            f"app.kubernetes.io/instance={RELEASE}",
            "-o",
            "jsonpath={.items[*].metadata.name} {.items[*].spec.serviceAccountName}",
        ).stdout.split()
        pod, account = [*pods, "?", "?"][:2]
        self.say(
            f"kwatt installed in {duration(self.phases['install'])}: the operator runs as Pod "
            f"{RELEASE_NAMESPACE}/{pod}, ServiceAccount {account}, ClusterRole "
            f"{RELEASE}-operator."
        )

    def _values(self, free_port: Callable[[], int]) -> dict[str, Any]:
        return {
            "command": ["python", "-m", "kwatt_cli.main", "operator"],
            "health": {"port": free_port()},
            "metrics": {"port": free_port()},
            "sidecar": {
                "port": free_port(),
                "metricsPort": free_port(),
                "stateDir": str(self.out_dir / "cluster" / "sidecar-state"),
            },
            "readinessProbe": {"initialDelaySeconds": 0, "periodSeconds": 1},
            "livenessProbe": {"initialDelaySeconds": 5, "periodSeconds": 5},
            "tests": {"host": "127.0.0.1"},
        }

    def _apply(self, cluster: Cluster) -> None:
        from kwatt_sandbox.testing import eventually

        eventually(
            lambda: (
                cluster.kubectl(
                    "get", "serviceaccount", "default", "-n", NAMESPACE, check=False
                ).returncode
                == 0
            ),
            timeout=30,
            interval=0.1,
        )
        args = ["apply", "-n", NAMESPACE]
        for job in self.jobs:
            args += ["-f", str(job.path)]
        self.say(f"Applying two TrainingJobs: {shlex.join(['kubectl', *map(_relative, args)])}")
        cluster.kubectl(*args)
        for job in self.jobs:
            self.note(job.describe())
        self.say(
            "Each starts its first run when it is created. The demo asks for every next one as "
            f"you would, `kubectl annotate tj/NAME {ANNOTATION_RUN_REQUEST}=N`, as soon as the "
            "last one has started, so it starts the moment that one ends; the two jobs' runs "
            "take turns on the one GPU. Energy and time are the simulated V100's, as the Zeus "
            "traces measured them."
        )

    def _drive(self, cluster: Cluster) -> list[JobReport]:
        """Keep one run request pending per TrainingJob until each has `runs` recorded
        runs; print each run as it is recorded. Returns the final reports."""
        from kubernetes.client import CustomObjectsApi

        conn = connect(str(cluster.kubeconfig), None)
        api = CustomObjectsApi(conn.api)
        names = [job.name for job in self.jobs]
        width = max(len(n) for n in names)
        requested = dict.fromkeys(names, 1)
        shown: dict[str, set[int]] = {n: set() for n in names}
        reports: dict[str, JobReport] = {}
        last_progress = time.monotonic()
        with conn.api:
            while True:
                if cluster.proc is not None and cluster.proc.poll() is not None:
                    raise CommandError(
                        "The sandbox cluster stopped by itself; its log ends:\n"
                        + _tail(cluster.sandbox_log(), 20)
                    )
                listing: Any = api.list_namespaced_custom_object(
                    GROUP, VERSION, NAMESPACE, PLURAL, _request_timeout=(10, 30)
                )
                for obj in listing["items"]:
                    name = obj["metadata"]["name"]
                    if name not in shown:
                        continue
                    status = obj.get("status") or {}
                    ask = next_request(int(status.get("runs") or 0), requested[name], self.runs)
                    if ask is not None:
                        patch = {"metadata": {"annotations": {ANNOTATION_RUN_REQUEST: str(ask)}}}
                        api.patch_namespaced_custom_object(
                            GROUP, VERSION, NAMESPACE, PLURAL, name, patch
                        )
                        requested[name] = ask
                    with contextlib.suppress(NoRunsError):
                        reports[name] = report = job_report(obj)
                        for row in sorted(report.rows, key=lambda r: r.run):
                            if row.result == RUNNING or row.run in shown[name]:
                                continue
                            shown[name].add(row.run)
                            last_progress = time.monotonic()
                            elapsed = time.monotonic() - self.began
                            line = progress_line(elapsed, name, width, row, self.runs)
                            self.say(line, stamp=False)
                if all(n in reports and finished(reports[n], self.runs) for n in names):
                    return [reports[n] for n in names]
                if time.monotonic() - last_progress > STALL_S:
                    raise CommandError(
                        f"No run finished in {STALL_S:.0f} s; the operator's log ends:\n"
                        + self._operator_log(cluster)
                        + "\nPods:\n"
                        + cluster.kubectl("get", "pods", "-A", check=False).stdout
                    )
                time.sleep(POLL_S)

    def _write(self, report: JobReport) -> None:
        self.say(f"=== {report.name} " + "=" * max(0, 70 - len(report.name)), stamp=False)
        table = render_table(report)
        self.out.write(table)
        chart = self.out_dir / f"{report.name}.png"
        write_chart(report, chart)
        (self.out_dir / f"{report.name}.txt").write_text(table)
        self.say(f"Chart: {chart}", stamp=False)
        self.say()

    def _operator_log(self, cluster: Cluster) -> str:
        result = cluster.kubectl(
            "logs", "-n", RELEASE_NAMESPACE, f"deployment/{RELEASE}", "--tail=30", check=False
        )
        return _tail(result.stdout or result.stderr, 30)

    # -- the end ----------------------------------------------------------------------------

    def _stop(self, cluster: Cluster) -> None:
        """Stop the sandbox (its Pods, the operator among them, then the control plane) and
        check that nothing it started is left; Ctrl-C again does not cut this short."""
        from kwatt_sandbox.testing import stop_sandbox

        with _signals_ignored():
            self.say("Stopping the sandbox cluster ...")
            directory = str(cluster.state.get("directory") or "")
            code = stop_sandbox(cluster.proc) if cluster.proc is not None else 0
            left = leftover_processes(directory) if directory else []
            for pid in left:  # never expected: the sandbox's children die with it
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGKILL)
            for name in ("kubeconfig", "proxy.kubeconfig"):  # a stopped cluster's credentials
                with contextlib.suppress(OSError):
                    (self.out_dir / "cluster" / name).unlink()
            if left:
                self.say(f"Stopped (exit {code}); killed {len(left)} process(es) left behind.")
            else:
                self.say("Sandbox cluster stopped; nothing it started is left running.")

    def _summary(self, reports: Sequence[JobReport]) -> None:
        total = time.monotonic() - self.began
        builds = self.phases.get("builds", 0.0)
        parts = [f"builds {duration(builds)}"] if builds >= 1 else []
        parts += [
            f"cluster up {duration(self.phases.get('cluster'))}",
            f"kwatt installed {duration(self.phases.get('install'))}",
            f"{self.runs * len(reports)} runs {duration(self.phases.get('runs'))}",
        ]
        self.say()
        self.say(f"Done in {duration(total)} ({', '.join(parts)}).", stamp=False)
        width = max(len(r.name) for r in reports)
        for report in reports:
            self.say(f"  {report.name:<{width}}  {saving_line(report)}", stamp=False)
        self.say(
            f"Charts and tables in {self.out_dir}/: "
            + ", ".join(f"{r.name}.png" for r in reports)
            + ". Fewer or more runs: kwatt demo --runs N (make demo DEMO_ARGS=...).",
            stamp=False,
        )


# --- signals and leftovers -----------------------------------------------------------------

_STOP_SIGNALS = (signal.SIGTERM, signal.SIGHUP)


@contextlib.contextmanager
def _signals_as_interrupts() -> Iterator[None]:
    """SIGTERM and SIGHUP (a closed terminal) stop the demo as Ctrl-C does: cleanly."""

    def interrupt(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in _STOP_SIGNALS}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextlib.contextmanager
def _signals_ignored() -> Iterator[None]:
    sigs = (signal.SIGINT, *_STOP_SIGNALS)
    previous = {sig: signal.signal(sig, signal.SIG_IGN) for sig in sigs}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def leftover_processes(directory: str) -> list[int]:
    """Processes (other than this one) whose command line or working directory lies in
    `directory`: the sandbox's control plane names its folder, and every container runs in
    a folder of it."""
    if not directory:
        return []
    root = directory.rstrip("/")
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        try:
            cwd = os.readlink(entry / "cwd")
        except OSError:
            cwd = ""
        if root in cmdline or cwd == root or cwd.startswith(root + "/"):
            found.append(int(entry.name))
    return found


def _relative(text: str) -> str:
    """A path in the repository as a newcomer would type it from its root."""
    with contextlib.suppress(ValueError):
        return str(Path(text).resolve().relative_to(Path.cwd()))
    return text


def _tail(text: str, lines: int) -> str:
    return "\n".join(("  " + line) for line in text.strip().splitlines()[-lines:])


__all__ = [
    "Manifest",
    "finished",
    "leftover_processes",
    "load_manifest",
    "next_request",
    "progress_line",
    "saving_line",
]
