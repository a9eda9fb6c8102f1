"""Conformance of the sandbox as a whole: what a newcomer tries with kubectl, checked
against Kubernetes' documented behaviour rather than against kwatt's own code.

The sandbox is a test and demo harness (a real control plane, simulated kubelets and
GPUs); production is a real cluster. Most tests share the session's sandbox (one
namespace each); the stopping tests start sandboxes of their own.
"""

from __future__ import annotations

import json
import os
import queue
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from kwatt_sandbox.testing import Cluster, eventually, running_sandbox

REPO = Path(__file__).resolve().parents[2]
CRD = REPO / "crds" / "trainingjob.yaml"
SA_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"
Obj = dict[str, Any]


# --- helpers -------------------------------------------------------------------------------


def apply(cluster: Cluster, *objects: Obj) -> None:
    """`kubectl apply -f -` of manifests given as dicts."""
    cluster.kubectl(
        "apply", "-f", "-", input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects})
    )


def wait_default_account(cluster: Cluster, namespace: str) -> None:
    """Pods need their ServiceAccount, which a controller makes just after the namespace."""

    def exists() -> bool:
        found = cluster.kubectl("get", "serviceaccount", "default", "-n", namespace, check=False)
        return found.returncode == 0

    eventually(exists, timeout=30)


def pod(name: str, namespace: str, containers: list[Obj], **spec: Any) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {"restartPolicy": "Never", "containers": containers, **spec},
    }


def container(name: str, *command: str, **extra: Any) -> Obj:
    return {"name": name, "image": "example.invalid/ignored:1", "command": list(command), **extra}


def wait_phase(cluster: Cluster, namespace: str, name: str, phase: str) -> None:
    cluster.kubectl(
        "wait",
        "-n",
        namespace,
        f"pod/{name}",
        f"--for=jsonpath={{.status.phase}}={phase}",
        "--timeout=60s",
        timeout=70,
    )


def statuses(cluster: Cluster, namespace: str, name: str) -> dict[str, Obj]:
    """Container name -> its status, init containers included."""
    status = cluster.kubectl_json("get", "pod", name, "-n", namespace)["status"]
    items = (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or [])
    return {s["name"]: s for s in items}


def ca_context(cluster: Cluster) -> ssl.SSLContext:
    """Trusts the sandbox's CA and presents no client certificate."""
    return ssl.create_default_context(
        cafile=str(Path(cluster.state["directory"]) / "pki" / "kwatt-sandbox-ca.crt")
    )


def http(
    url: str,
    context: ssl.SSLContext,
    *,
    method: str = "GET",
    body: bytes | None = None,
    **headers: str,
) -> tuple[int, bytes]:
    """One HTTPS request with no credentials; (status, body), errors included."""
    request = urllib.request.Request(url, data=body, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, context=context, timeout=15) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def processes_with(text: str) -> list[int]:
    """PIDs of processes (on the whole machine) whose command line contains `text`."""
    found = []
    needle = text.encode()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry.name))
    return found


def install_crd(cluster: Cluster) -> None:
    cluster.apply_crd(CRD, "trainingjobs.kwatt.dev", timeout=60)


class LineReader:
    """Lines of a subprocess's stdout, read in a thread so that tests can wait with a timeout."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.lines: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        stdout = proc.stdout

        def pump() -> None:
            for line in stdout:
                self.lines.put(line.rstrip("\n"))
            self.lines.put(None)

        threading.Thread(target=pump, daemon=True).start()

    def next(self, timeout: float = 20) -> str | None:
        return self.lines.get(timeout=timeout)


# --- the API server and the nodes ------------------------------------------------------------


def test_kubectl_version_is_1_37_2_on_both_sides(sandbox: Cluster) -> None:
    """`kubectl version` reports v1.37.2 for the server and for the sandbox's own kubectl."""
    version = sandbox.kubectl_json("version")
    assert version["serverVersion"]["gitVersion"] == "v1.37.2"
    assert version["clientVersion"]["gitVersion"] == "v1.37.2"


def test_default_nodes_are_ready_with_gpus_and_leases(sandbox: Cluster) -> None:
    """The default nodes cpu-0 and gpu-0 are Ready, gpu-0 advertises two V100s in its
    capacity and labels, and each node renews its Lease in kube-node-lease."""
    assert set(sandbox.state["nodes"]) == {"cpu-0", "gpu-0"}
    table = sandbox.kubectl("get", "nodes").stdout
    assert "cpu-0" in table and "gpu-0" in table

    def all_ready() -> bool:
        nodes = {n["metadata"]["name"]: n for n in sandbox.kubectl_json("get", "nodes")["items"]}
        for name in sandbox.state["nodes"]:
            conditions = nodes[name]["status"]["conditions"]
            ready = next(c for c in conditions if c["type"] == "Ready")
            if ready["status"] != "True":
                return False
        return True

    eventually(all_ready, timeout=30)
    gpu = sandbox.kubectl_json("get", "node", "gpu-0")
    assert gpu["status"]["capacity"]["nvidia.com/gpu"] == "2"
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.product"] == "v100"
    assert gpu["metadata"]["labels"]["nvidia.com/gpu.count"] == "2"
    cpu = sandbox.kubectl_json("get", "node", "cpu-0")
    assert "nvidia.com/gpu" not in cpu["status"]["capacity"]

    def renew_times() -> dict[str, str]:
        leases = sandbox.kubectl_json("get", "leases", "-n", "kube-node-lease")["items"]
        return {lease["metadata"]["name"]: lease["spec"]["renewTime"] for lease in leases}

    first = renew_times()
    assert set(sandbox.state["nodes"]) <= set(first)
    # RFC 3339 times with microseconds in UTC compare as strings.
    eventually(lambda: all(renew_times()[n] > first[n] for n in sandbox.state["nodes"]), timeout=15)


# --- pods, jobs, logs and events ----------------------------------------------------------


SIDECAR = """
import signal, sys, time
def stop(*_):
    print("sidecar got SIGTERM", flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print("sidecar up", flush=True)
open("/shared/up", "w").close()
while True:
    time.sleep(0.05)
"""
# Waits (at most 30 s) until the sidecar has set up its SIGTERM handler, so that the
# sidecar's stop is its handler's doing even on a busy machine.
MAIN = (
    "for i in $(seq 1 600); do [ -e /shared/up ] && break; sleep 0.05; done; "
    "for i in 1 2 3 4 5 6; do echo main line $i; sleep 0.05; done"
)


@pytest.mark.timeout(120)
def test_job_with_native_sidecar_completes_and_shows_logs_and_events(
    sandbox: Cluster, namespace: str
) -> None:
    """A batch/v1 Job whose pod has a native sidecar completes; the sidecar is stopped
    with SIGTERM once the main container has exited; `kubectl logs -c` and `--tail` show
    each container's output; events record Scheduled and Started."""
    wait_default_account(sandbox, namespace)
    shared = {"name": "shared", "mountPath": "/shared"}
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "with-sidecar", "namespace": namespace},
        "spec": {
            "backoffLimit": 0,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "terminationGracePeriodSeconds": 10,
                    "initContainers": [
                        container(
                            "side",
                            "python",
                            "-c",
                            SIDECAR,
                            restartPolicy="Always",
                            volumeMounts=[shared],
                        )
                    ],
                    "containers": [container("main", "sh", "-c", MAIN, volumeMounts=[shared])],
                    "volumes": [{"name": "shared", "emptyDir": {}}],
                }
            },
        },
    }
    apply(sandbox, job)
    sandbox.kubectl(
        "wait",
        "-n",
        namespace,
        "job/with-sidecar",
        "--for=condition=Complete",
        "--timeout=90s",
        timeout=100,
    )
    pods = sandbox.kubectl_json("get", "pods", "-n", namespace, "-l", "job-name=with-sidecar")
    [item] = pods["items"]
    name = item["metadata"]["name"]
    assert item["status"]["phase"] == "Succeeded"

    found = statuses(sandbox, namespace, name)
    main, side = found["main"]["state"]["terminated"], found["side"]["state"]["terminated"]
    assert main["exitCode"] == 0
    assert side["finishedAt"] >= main["finishedAt"]

    main_log = sandbox.kubectl("logs", "-n", namespace, name, "-c", "main").stdout
    assert main_log.splitlines() == [f"main line {i}" for i in range(1, 7)]
    side_log = sandbox.kubectl("logs", "-n", namespace, name, "-c", "side").stdout
    assert side_log.splitlines() == ["sidecar up", "sidecar got SIGTERM"]
    tail = sandbox.kubectl("logs", "-n", namespace, name, "-c", "main", "--tail=2").stdout
    assert tail.splitlines() == ["main line 5", "main line 6"]

    def events() -> set[tuple[str, str]]:
        items = sandbox.kubectl_json("get", "events", "-n", namespace)["items"]
        return {
            (e["reason"], e.get("message", ""))
            for e in items
            if e["involvedObject"].get("kind") == "Pod" and e["involvedObject"]["name"] == name
        }

    def has_events() -> bool:
        seen = events()
        reasons = {reason for reason, _ in seen}
        started = " ".join(message for reason, message in seen if reason == "Started")
        return {"Scheduled", "Started"} <= reasons and "main" in started and "side" in started

    eventually(has_events, timeout=20)
    table = sandbox.kubectl("get", "events", "-n", namespace).stdout
    assert "Scheduled" in table and "Started" in table


FOLLOWED = """
import os, time
print("first line", flush=True)
deadline = time.time() + 60
while not os.path.exists("/trigger/go") and time.time() < deadline:
    time.sleep(0.05)
print("second line", flush=True)
"""


@pytest.mark.timeout(120)
def test_kubectl_wait_and_logs_follow_stream_a_running_pod(
    sandbox: Cluster, namespace: str, tmp_path: Path
) -> None:
    """`kubectl wait --for=condition=Ready` returns once the pod runs; `kubectl logs -f`
    shows each line as the container prints it and ends when the container exits."""
    wait_default_account(sandbox, namespace)
    trigger = tmp_path / "trigger"
    trigger.mkdir()
    manifest = pod(
        "follow",
        namespace,
        [
            container(
                "main",
                "python",
                "-c",
                FOLLOWED,
                volumeMounts=[{"name": "trigger", "mountPath": "/trigger"}],
            )
        ],
        volumes=[{"name": "trigger", "hostPath": {"path": str(trigger), "type": "Directory"}}],
    )
    apply(sandbox, manifest)
    sandbox.kubectl(
        "wait", "-n", namespace, "pod/follow", "--for=condition=Ready", "--timeout=60s", timeout=70
    )
    assert (
        sandbox.kubectl_json("get", "pod", "follow", "-n", namespace)["status"]["phase"]
        == "Running"
    )
    proc = subprocess.Popen(
        [sandbox.kubectl_path, "logs", "-f", "-n", namespace, "follow"],
        env=sandbox.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        reader = LineReader(proc)
        assert reader.next() == "first line"
        time.sleep(0.3)
        assert proc.poll() is None, "kubectl logs -f ended while the container still runs"
        (trigger / "go").touch()
        assert reader.next() == "second line"
        assert reader.next() is None
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()


@pytest.mark.timeout(120)
def test_termination_messages(sandbox: Cluster, namespace: str) -> None:
    """What a container writes to /dev/termination-log becomes state.terminated.message;
    with FallbackToLogsOnError a failing container without one gets the end of its log
    (at most 80 lines); with the default policy it gets none."""
    wait_default_account(sandbox, namespace)
    noisy = "for i in $(seq 1 100); do echo noise $i; done; echo 'fatal: out of memory' >&2; exit 3"
    manifest = pod(
        "messages",
        namespace,
        [
            container("writes", "sh", "-c", "printf 'all done: 42' > /dev/termination-log"),
            container(
                "falls-back", "sh", "-c", noisy, terminationMessagePolicy="FallbackToLogsOnError"
            ),
            container("quiet", "sh", "-c", noisy),
        ],
    )
    apply(sandbox, manifest)
    wait_phase(sandbox, namespace, "messages", "Failed")
    found = statuses(sandbox, namespace, "messages")
    writes = found["writes"]["state"]["terminated"]
    assert (writes["exitCode"], writes["message"]) == (0, "all done: 42")
    falls_back = found["falls-back"]["state"]["terminated"]
    assert falls_back["exitCode"] == 3
    message = falls_back["message"]
    assert message.endswith("noise 100\nfatal: out of memory\n")
    assert len(message.splitlines()) <= 80 and "noise 1\n" not in message
    quiet = found["quiet"]["state"]["terminated"]
    assert quiet["exitCode"] == 3 and not quiet.get("message")
    # The file was the container's own, not the host's.
    host = Path("/dev/termination-log")
    assert not host.is_file() or "all done" not in host.read_text(errors="replace")


# --- custom resources and server-side apply -------------------------------------------------


@pytest.mark.timeout(120)
def test_trainingjob_crd_explain_short_name_and_validation(
    cluster: Cluster, namespace: str
) -> None:
    """After the TrainingJob CRD is applied and Established, `kubectl explain` lists the
    spec's fields, `kubectl get tj` uses the short name, and the API server enforces the
    CRD's validation rules."""
    install_crd(cluster)

    def explained() -> str:
        result = cluster.kubectl("explain", "trainingjob.spec", check=False)
        return result.stdout if result.returncode == 0 else ""

    text = eventually(explained, timeout=30, interval=0.5)
    for field in ("batchSizes", "target", "objective", "powerLimit", "template", "schedule"):
        assert f"  {field}\t" in text, field

    assert "No resources found" in cluster.kubectl("get", "tj", "-n", namespace).stderr
    trainingjob = {
        "apiVersion": "kwatt.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "cifar", "namespace": namespace},
        "spec": {
            "suspend": True,
            "template": {"spec": {"containers": [{"name": "train", "image": "x"}]}},
            "batchSizes": {"candidates": [8, 16], "default": 16},
            "target": {"metric": "accuracy", "value": 0.6, "maxEpochs": 5},
        },
    }
    apply(cluster, trainingjob)
    listed = cluster.kubectl("get", "tj", "-n", namespace).stdout
    assert "cifar" in listed.splitlines()[1]
    assert (
        cluster.kubectl("get", "trainingjobs.kwatt.dev", "cifar", "-n", namespace).returncode == 0
    )

    bad = json.loads(json.dumps(trainingjob))
    bad["metadata"]["name"] = "bad"
    bad["spec"]["batchSizes"]["default"] = 12
    rejected = cluster.kubectl("apply", "-f", "-", input=json.dumps(bad), check=False)
    assert rejected.returncode != 0
    assert "spec.batchSizes.default must be one of spec.batchSizes.candidates" in rejected.stderr


def test_server_side_apply_conflicts_and_force(cluster: Cluster, namespace: str) -> None:
    """A second field manager's server-side apply of a field another manager owns
    conflicts; --force-conflicts takes the field over, and managedFields lists both."""

    def configmap(data: dict[str, str]) -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "ConfigMap",
                "metadata": {"name": "shared", "namespace": namespace},
                "data": data,
            }
        )

    cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=alice",
        "-f",
        "-",
        input=configmap({"a": "1", "b": "alice"}),
    )
    conflict = cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=bob",
        "-f",
        "-",
        input=configmap({"a": "2"}),
        check=False,
    )
    assert conflict.returncode != 0
    assert "conflict" in conflict.stderr.lower() and "alice" in conflict.stderr
    assert cluster.kubectl_json("get", "configmap", "shared", "-n", namespace)["data"]["a"] == "1"

    cluster.kubectl(
        "apply",
        "--server-side",
        "--field-manager=bob",
        "--force-conflicts",
        "-f",
        "-",
        input=configmap({"a": "2"}),
    )
    live = cluster.kubectl_json(
        "get", "configmap", "shared", "-n", namespace, "--show-managed-fields"
    )
    assert live["data"] == {"a": "2", "b": "alice"}
    managers = {m["manager"]: m for m in live["metadata"]["managedFields"]}
    assert {"alice", "bob"} <= set(managers)
    assert managers["alice"]["operation"] == managers["bob"]["operation"] == "Apply"
    assert set(managers["bob"]["fieldsV1"]["f:data"]) == {"f:a"}
    assert set(managers["alice"]["fieldsV1"]["f:data"]) == {"f:b"}


# --- authentication, authorization, exposure ------------------------------------------------


def _listeners(port: int) -> list[str]:
    """Local addresses (hex, as /proc/net shows them) that listen on TCP `port`."""
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, hex_port = fields[1].rsplit(":", 1)
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.append(address)
    return found


def _outside_address() -> str | None:
    """An IPv4 address of this machine that is not loopback, if it has one."""
    candidates = set()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))  # no packet is sent: this only picks a route
            candidates.add(s.getsockname()[0])
        except OSError:
            pass
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET):
            candidates.add(str(info[4][0]))
    except OSError:
        pass
    outside = sorted(a for a in candidates if not a.startswith("127.") and a != "0.0.0.0")
    return outside[0] if outside else None


def test_audit_log_records_who_did_what(sandbox: Cluster, namespace: str) -> None:
    """Every request reaches the API server's audit log with its user, verb, resource and
    answer, so a test can check what a client really did (e.g. an operator's RBAC)."""
    sandbox.kubectl("create", "configmap", "audited", "-n", namespace)
    sandbox.kubectl("delete", "configmap", "audited", "-n", namespace)

    def seen() -> list[tuple[str, int]]:
        return [
            (e["verb"], e["responseStatus"]["code"])
            for e in sandbox.audit_events("kwatt-sandbox-admin")
            if (e.get("objectRef") or {}).get("name") == "audited"
            and e["objectRef"].get("namespace") == namespace
        ]

    verbs = eventually(lambda: len(seen()) >= 2 and seen(), timeout=15)
    assert ("create", 201) in verbs and ("delete", 200) in verbs


def test_requests_without_credentials_are_refused(sandbox: Cluster, namespace: str) -> None:
    """Anonymous requests get 401 and change nothing, including a browser's cross-site
    `text/plain` POST, directly and through the fault proxy; identity headers a client
    sends itself count for nothing; both servers listen on 127.0.0.1 only."""
    context = ca_context(sandbox)
    direct, proxy = sandbox.state["url"], sandbox.state["proxy_url"]
    configmap = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "anonymous"},
        "data": {"a": "1"},
    }
    evil = pod("evil", namespace, [container("c", "sh", "-c", "echo pwned")])
    for base in (direct, proxy):
        code, _ = http(
            f"{base}/api/v1/namespaces/{namespace}/configmaps",
            context,
            method="POST",
            body=json.dumps(configmap).encode(),
            **{"Content-Type": "application/json"},
        )
        assert code == 401, base
        assert http(f"{base}/api/v1/namespaces", context)[0] == 401
        code, answer = http(
            f"{base}/api/v1/namespaces/{namespace}/pods",
            context,
            method="POST",
            body=json.dumps(evil).encode(),
            **{
                "Content-Type": "text/plain",
                "Origin": "https://evil.example",
                "Host": "evil.example",
            },
        )
        assert code == 401, (base, answer)
        assert json.loads(answer)["reason"] == "Unauthorized"
    code, _ = http(
        f"{proxy}/api/v1/namespaces/{namespace}/configmaps",
        context,
        method="POST",
        body=json.dumps(configmap).encode(),
        **{
            "Content-Type": "application/json",
            "X-Remote-User": "system:admin",
            "X-Remote-Group": "system:masters",
        },
    )
    assert code == 401
    assert http(f"{proxy}/sandbox/faults", context)[0] == 401
    assert sandbox.kubectl("get", "pod", "evil", "-n", namespace, check=False).returncode != 0
    assert (
        "NotFound"
        in sandbox.kubectl("get", "configmap", "anonymous", "-n", namespace, check=False).stderr
    )

    for url in (direct, proxy):
        parts = urlsplit(url)
        assert parts.hostname == "127.0.0.1"
        assert parts.port is not None
        assert _listeners(parts.port) == ["0100007F"], url  # 127.0.0.1, IPv4 only
    outside = _outside_address()
    if outside is None:
        return
    for url in (direct, proxy):
        port = urlsplit(url).port
        assert port is not None
        with pytest.raises(OSError), socket.create_connection((outside, port), timeout=5):
            pass


IN_CLUSTER = """
import json, os, ssl, sys, time, urllib.error, urllib.request
sa = "/var/run/secrets/kubernetes.io/serviceaccount"
token = open(sa + "/token").read()
namespace = open(sa + "/namespace").read()
context = ssl.create_default_context(cafile=sa + "/ca.crt")
host, port = os.environ["KUBERNETES_SERVICE_HOST"], os.environ["KUBERNETES_SERVICE_PORT"]
base = "https://%s:%s" % (host, port)

def call(path, body):
    request = urllib.request.Request(base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": "Bearer " + token, "Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())

review = {"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}
code, answer = call("/apis/authentication.k8s.io/v1/selfsubjectreviews", review)
print("whoami", code, answer.get("status", {}).get("userInfo", {}).get("username"), flush=True)
configmap = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "from-pod"}}
last = None
deadline = time.time() + 60
while time.time() < deadline:
    code, _ = call("/api/v1/namespaces/%s/configmaps" % namespace, configmap)
    if code != last:
        print("create configmap", code, flush=True)
        last = code
    if code == 201:
        sys.exit(0)
    time.sleep(0.1)
sys.exit(1)
"""


@pytest.mark.timeout(120)
def test_in_cluster_clients_act_as_their_service_account(sandbox: Cluster, namespace: str) -> None:
    """A pod's projected token, CA and KUBERNETES_SERVICE_* env make an in-cluster client
    that is its ServiceAccount: refused (403) until a RoleBinding grants the verb, then
    allowed (201). The token is mounted in the container only, never on the host."""
    sandbox.kubectl("create", "serviceaccount", "worker", "-n", namespace)
    manifest = pod(
        "client",
        namespace,
        [container("main", "python", "-c", IN_CLUSTER)],
        serviceAccountName="worker",
    )
    apply(sandbox, manifest)

    def log() -> str:
        return sandbox.kubectl("logs", "-n", namespace, "client", check=False).stdout

    eventually(lambda: "create configmap 403" in log(), timeout=60, interval=0.2)
    assert f"whoami 201 system:serviceaccount:{namespace}:worker" in log()
    assert (
        sandbox.kubectl("get", "configmap", "from-pod", "-n", namespace, check=False).returncode
        != 0
    )
    sandbox.kubectl(
        "create",
        "role",
        "make-configmaps",
        "-n",
        namespace,
        "--verb=create",
        "--resource=configmaps",
    )
    sandbox.kubectl(
        "create",
        "rolebinding",
        "worker-makes-configmaps",
        "-n",
        namespace,
        "--role=make-configmaps",
        f"--serviceaccount={namespace}:worker",
    )
    wait_phase(sandbox, namespace, "client", "Succeeded")
    lines = [line for line in log().splitlines() if line.startswith("create configmap")]
    assert lines == ["create configmap 403", "create configmap 201"]
    sandbox.kubectl("get", "configmap", "from-pod", "-n", namespace)
    assert not Path(SA_DIR, "token").exists()
    assert not Path(SA_DIR, "ca.crt").exists()


# --- stopping the sandbox ---------------------------------------------------------------------


MARKED = "import time; time.sleep(1000)"


def _start_marked_pod(cluster: Cluster) -> str:
    """A pod whose process carries a unique marker in its command line; the marker."""
    marker = f"kwatt-marker-{uuid.uuid4().hex}"
    wait_default_account(cluster, "default")
    apply(cluster, pod("marked", "default", [container("main", "python", "-c", MARKED, marker)]))
    eventually(lambda: processes_with(marker), timeout=60, interval=0.1)
    return marker


@pytest.mark.timeout(180)
def test_sigterm_stops_the_sandbox_and_everything_it_started(tmp_path: Path) -> None:
    """SIGTERM (as Ctrl-C) makes `kwatt sandbox` exit 0 within seconds, with no container
    process and no control-plane process left behind."""
    with running_sandbox(tmp_path, nodes=["cpu-0"]) as cluster:
        assert cluster.proc is not None
        directory = cluster.state["directory"]
        tree = directory + "/"  # in every control-plane command line, and the containers'
        marker = _start_marked_pod(cluster)
        assert len(processes_with(tree)) >= 4  # etcd, apiserver, controllers, scheduler
        started = time.monotonic()
        cluster.proc.send_signal(signal.SIGTERM)
        assert cluster.proc.wait(timeout=20) == 0
        assert time.monotonic() - started < 20
        eventually(lambda: not processes_with(marker) and not processes_with(tree), timeout=5)
        assert not Path(directory).exists()


@pytest.mark.timeout(180)
def test_sigkill_of_the_sandbox_leaves_no_process_behind(tmp_path: Path) -> None:
    """Even when `kwatt sandbox` is killed with SIGKILL, its containers and its control
    plane die with it within seconds."""
    with running_sandbox(tmp_path, nodes=["cpu-0"]) as cluster:
        assert cluster.proc is not None
        directory = cluster.state["directory"]
        tree = directory + "/"
        try:
            marker = _start_marked_pod(cluster)
            assert processes_with(tree)
            cluster.proc.kill()
            assert cluster.proc.wait(timeout=10) == -signal.SIGKILL
            eventually(lambda: not processes_with(marker) and not processes_with(tree), timeout=10)
        finally:
            shutil.rmtree(directory, ignore_errors=True)
