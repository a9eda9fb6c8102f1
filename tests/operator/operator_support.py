"""What the operator's end-to-end tests share: a TrainingJob on the sandbox's simulated V100,
the ServiceAccount the operator runs as (bound to operator/rbac/clusterrole.yaml and nothing
else), and `kwatt operator` as a subprocess that a test can SIGKILL and start again."""

from __future__ import annotations

import json
import re
import signal
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import yaml

from kwatt_operator.crd import crd_path
from kwatt_operator.jobs import SidecarSettings
from kwatt_operator.reconcile import ANNOTATION_RUN_REQUEST
from kwatt_sandbox.controlplane.cluster import free_port
from kwatt_sandbox.testing import Cluster, eventually

REPO = Path(__file__).resolve().parents[2]
RBAC = REPO / "operator" / "rbac" / "clusterrole.yaml"
ACCOUNT = "kwatt-operator"


def trainingjob(
    namespace: str, name: str = "cifar", *, time_scale: float = 0.0005, history_limit: int = 1
) -> dict[str, Any]:
    """A TrainingJob whose runs are the simulated trainer (a run takes a few seconds)."""
    trainer = {
        "name": "train",
        "image": "ignored:1",
        "command": ["python", "-m", "kwatt_sandbox.gpu.trainer"],
        "args": ["--workload", "cifar100", "--gpu", "v100", "--time-scale", str(time_scale)],
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    }
    return {
        "apiVersion": "kwatt.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": name, "namespace": namespace, "labels": {"team": "vision"}},
        "spec": {
            "template": {"spec": {"terminationGracePeriodSeconds": 1, "containers": [trainer]}},
            "batchSizes": {"candidates": [256, 512, 1024], "default": 1024},
            "target": {"metric": "accuracy", "value": 0.6, "maxEpochs": 100},
            "backoffLimit": 0,
            "historyLimit": history_limit,
        },
    }


def service_account_kubeconfig(
    cluster: Cluster, namespace: str, path: Path, *, proxy: bool = False
) -> Path:
    """A kubeconfig for the ServiceAccount `kwatt-operator`, bound to the operator's
    ClusterRole only: the operator gets exactly the rights the chart gives it. With
    `proxy`, it talks to the API server through the sandbox's fault proxy (which passes
    the bearer token on), so that it feels the faults a test injects."""
    cluster.kubectl("apply", "--server-side", "-f", str(RBAC))
    cluster.kubectl("create", "serviceaccount", ACCOUNT, "-n", namespace)
    cluster.kubectl(
        "create",
        "clusterrolebinding",
        f"{ACCOUNT}-{namespace}",
        f"--clusterrole={ACCOUNT}",
        f"--serviceaccount={namespace}:{ACCOUNT}",
    )
    token = cluster.kubectl("create", "token", ACCOUNT, "-n", namespace).stdout.strip()
    source = cluster.proxy_kubeconfig if proxy else cluster.kubeconfig
    assert source is not None, "the cluster has no fault proxy"
    admin = yaml.safe_load(source.read_text())
    server = admin["clusters"][0]["cluster"]
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "sandbox", "cluster": server}],
        "users": [{"name": ACCOUNT, "user": {"token": token}}],
        "contexts": [{"name": ACCOUNT, "context": {"cluster": "sandbox", "user": ACCOUNT}}],
        "current-context": ACCOUNT,
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path


class Operator:
    """`kwatt operator` watching one namespace as its ServiceAccount; `kill()` is SIGKILL
    (no cleanup of any kind), `start()` runs the very same command again."""

    def __init__(self, cluster: Cluster, namespace: str, directory: Path, kubeconfig: Path):
        self.cluster = cluster
        self.log_path = directory / "operator.log"
        self.argv = [
            sys.executable,
            "-m",
            "kwatt_cli.main",
            "operator",
            "--kubeconfig",
            str(kubeconfig),
            "--namespace",
            namespace,
            "--sidecar-image",
            "ignored:1",
            "--sidecar-state-dir",
            str(directory / "state"),
            # Sandbox pods share the host's network: sidecar ports of this operator's own,
            # so that sidecars of other sandboxes on the machine never answer its trainers.
            "--sidecar-port",
            str(free_port()),
            "--sidecar-metrics-port",
            str(free_port()),
            "--metrics-port",
            "0",
            "--liveness",
            f"http://127.0.0.1:{free_port()}/healthz",
        ]
        self.proc: subprocess.Popen[str] | None = None
        self._log: IO[str] | None = None
        self.starts = 0

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        if self._log is None:
            self._log = self.log_path.open("a")
        self.starts += 1
        self._log.write(f"--- start {self.starts} ---\n")
        self._log.flush()
        self.proc = subprocess.Popen(
            self.argv,
            env=self.cluster.env(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def alive(self) -> bool:
        """True while it runs; a test's poll fails at once if it exited by itself."""
        assert self.proc is not None and self.proc.poll() is None, (
            f"the operator exited:\n{self.log()[-3000:]}"
        )
        return True

    def kill(self) -> None:
        """SIGKILL: the operator stops between any two instructions, as a crash would."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""


@contextmanager
def running_operator(
    cluster: Cluster, namespace: str, directory: Path, *, proxy: bool = False, start: bool = True
) -> Iterator[Operator]:
    """The CRD installed, the ServiceAccount made, and `kwatt operator` started (unless not
    `start`); stopped, its binding removed and its log's end printed afterwards."""
    cluster.apply_crd(crd_path(), "trainingjobs.kwatt.dev")
    kubeconfig = service_account_kubeconfig(
        cluster, namespace, directory / "operator.kubeconfig", proxy=proxy
    )
    operator = Operator(cluster, namespace, directory, kubeconfig)
    if start:
        operator.start()
    try:
        yield operator
    finally:
        cluster.kubectl("delete", "clusterrolebinding", f"{ACCOUNT}-{namespace}", check=False)
        operator.stop()
        print(operator.log()[-6000:])


def create_returning(cluster: Cluster, obj: dict[str, Any], namespace: str) -> dict[str, Any]:
    """Create `obj` in `namespace` and return it as the API server stored it (uid and
    defaults), retrying while a just-established CRD is not yet served."""
    created: dict[str, Any] = eventually(
        lambda: json.loads(
            cluster.kubectl(
                "create", "-n", namespace, "-o", "json", "-f", "-", input=json.dumps(obj)
            ).stdout
        ),
        timeout=30,
    )
    return created


def sandbox_sidecar(tmp_path: Path) -> SidecarSettings:
    """Sidecar settings for runs on the sandbox: free ports (pods share the host's
    network there) and a state folder of the test's own."""
    return SidecarSettings(
        image="ignored:1",
        port=free_port(),
        metrics_port=free_port(),
        state_dir_host_path=str(tmp_path / "state"),
    )


def create(cluster: Cluster, obj: dict[str, Any]) -> None:
    cluster.kubectl("create", "-f", "-", input=json.dumps(obj))


def request_run(cluster: Cluster, namespace: str, value: str, name: str = "cifar") -> None:
    """Ask for one more run: a new value of the run-request annotation."""
    annotation = f"{ANNOTATION_RUN_REQUEST}={value}"
    cluster.kubectl("annotate", "--overwrite", "-n", namespace, f"tj/{name}", annotation)


def status_of(cluster: Cluster, namespace: str, name: str = "cifar") -> dict[str, Any]:
    """The TrainingJob's status, read straight from the API server (never the proxy)."""
    tj = cluster.kubectl_json("get", "trainingjob", name, "-n", namespace)
    status: dict[str, Any] = tj.get("status") or {}
    return status


def jobs_of(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json("get", "jobs", "-n", namespace)["items"]
    return items


def pods_of(cluster: Cluster, namespace: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = cluster.kubectl_json("get", "pods", "-n", namespace)["items"]
    return items


def condition(status: dict[str, Any], kind: str) -> dict[str, Any]:
    found: list[dict[str, Any]] = [c for c in status.get("conditions") or [] if c["type"] == kind]
    assert found, f"no {kind} condition in {status.get('conditions')}"
    return found[0]


def metrics(log: Path) -> dict[tuple[str, str], float]:
    """The operator's Prometheus metrics, found through the address it logged."""
    from prometheus_client.parser import text_string_to_metric_families

    found = re.findall(r"Metrics on (http://127\.0\.0\.1:\d+/metrics)", log.read_text())
    assert found, log.read_text()[-2000:]
    with urllib.request.urlopen(found[-1], timeout=10) as response:
        text = response.read().decode()
    values = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[(sample.name, sample.labels.get("result", ""))] = sample.value
    return values


def allowed(rules: list[dict[str, Any]], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule["apiGroups"] and resource in rule["resources"] and verb in rule["verbs"]
        for rule in rules
    )


def check_rbac(cluster: Cluster, namespace: str) -> None:
    """Every request the operator made was allowed by the role, and the role has no rule
    (group, resource, verb) that the operator did not use."""
    rules = yaml.safe_load(RBAC.read_text())["rules"]
    user = f"system:serviceaccount:{namespace}:{ACCOUNT}"
    used: set[tuple[str, str, str]] = set()
    for event in eventually(lambda: cluster.audit_events(user), timeout=10):
        ref = event.get("objectRef")
        if ref is None:
            continue  # discovery (non-resource URLs), allowed to every authenticated user
        resource = ref["resource"] + (f"/{ref['subresource']}" if ref.get("subresource") else "")
        key = (ref.get("apiGroup", ""), resource, event["verb"])
        assert event["responseStatus"]["code"] != 403, (key, event["responseStatus"])
        assert allowed(rules, *key), f"the operator used {key}, which the role does not grant"
        used.add(key)
    granted = {
        (group, resource, verb)
        for rule in rules
        for group in rule["apiGroups"]
        for resource in rule["resources"]
        for verb in rule["verbs"]
    }
    assert granted <= used, f"rules the operator never used: {sorted(granted - used)}"
