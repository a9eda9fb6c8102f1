"""kwatt's node agents as kubelets of a real control plane: what a pod's containers see and
how their lives are reported, through the real API server.

The sandbox (a test and demo harness; production is a real cluster) runs the real
apiserver, scheduler and controllers; only the kubelets and GPUs are kwatt's own. Each
test creates pods in a fresh namespace and reads back what a user would: the pod's
status, its events, `kubectl logs`, and what the container printed about itself.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import pytest

from kwatt_core import simgpu as device
from kwatt_sandbox.controlplane.cluster import free_port
from kwatt_sandbox.testing import Cluster, eventually, running_sandbox

pytestmark = pytest.mark.timeout(60)
Obj = dict[str, Any]

# What a container was started with: its environment as exec'd (/proc/self/environ, not
# os.environ, to which Python's own C-locale coercion adds LC_CTYPE), args, cwd and files.
REPORT = (
    "import json, os, sys\n"
    "raw = open('/proc/self/environ', 'rb').read().decode().split(chr(0))\n"
    "env = dict(item.split('=', 1) for item in raw if '=' in item)\n"
    "print(json.dumps({'env': env, 'argv': sys.argv[1:], 'cwd': os.getcwd(),"
    " 'files': os.listdir('.')}))"
)


def container(name: str, code: str, *args: str, **extra: Any) -> Obj:
    """A container whose process is `python -c code args...` (images are ignored)."""
    return {
        "name": name,
        "image": "ignored:1",
        "command": ["python", "-c", code, *args],
        **extra,
    }


def pod(name: str, containers: list[Obj], *, labels: Obj | None = None, **spec: Any) -> Obj:
    body = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1, **spec}
    body["containers"] = containers
    meta: Obj = {"name": name, "labels": labels or {}}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": body}


def stamps(text: str) -> dict[str, float]:
    """`word time` lines of a container's log as {word: time}."""
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line}


@dataclass
class Pods:
    """One test's namespace on the sandbox: create pods and read them back."""

    cluster: Cluster
    namespace: str
    core: Any

    def create(self, manifest: Obj) -> Obj:
        kind = manifest["kind"]
        body = json.dumps(manifest)
        out = self.cluster.kubectl(
            "create", "-n", self.namespace, "-o", "json", "-f", "-", input=body
        )
        created: Obj = json.loads(out.stdout)
        assert created["kind"] == kind
        return created

    def get(self, name: str) -> Obj:
        response = self.core.read_namespaced_pod(name, self.namespace, _preload_content=False)
        found: Obj = json.loads(response.data)
        return found

    def status(self, name: str) -> Obj:
        status: Obj = self.get(name).get("status") or {}
        return status

    def wait_phase(self, name: str, *phases: str, timeout: float = 20) -> Obj:
        def reached() -> Obj | None:
            status = self.status(name)
            return status if status.get("phase") in phases else None

        try:
            found: Obj = eventually(reached, timeout=timeout)
        except AssertionError as exc:
            raise AssertionError(f"{name}: {json.dumps(self.status(name))[:3000]}") from exc
        return found

    def container_status(self, name: str, container: str) -> Obj:
        status = self.status(name)
        everything = status.get("initContainerStatuses", []) + status.get("containerStatuses", [])
        (found,) = [s for s in everything if s["name"] == container]
        return dict(found)

    def logs(self, name: str, container: str, *, previous: bool = False) -> str:
        args = ["logs", "-n", self.namespace, name, "-c", container]
        return self.cluster.kubectl(*args, *(["--previous"] if previous else [])).stdout

    def report(self, name: str, container: str) -> Obj:
        """What a container running REPORT printed about itself."""
        found: Obj = json.loads(self.logs(name, container))
        return found

    def events(self, name: str) -> list[Obj]:
        response = self.core.list_namespaced_event(
            self.namespace, field_selector=f"involvedObject.name={name}", _preload_content=False
        )
        items: list[Obj] = json.loads(response.data)["items"]
        return items

    def delete_and_watch(self, name: str, timeout: float = 15) -> tuple[float, Obj]:
        """Delete a pod gracefully; seconds until it is gone, and its last status."""
        from kubernetes import watch

        version = self.get(name)["metadata"]["resourceVersion"]
        started = time.monotonic()
        self.core.delete_namespaced_pod(name, self.namespace)
        last: Obj = {}
        watcher = watch.Watch()  # type: ignore[no-untyped-call]
        stream = watcher.stream(  # type: ignore[no-untyped-call]
            self.core.list_namespaced_pod,
            self.namespace,
            field_selector=f"metadata.name={name}",
            resource_version=version,
            timeout_seconds=int(timeout),
        )
        for event in stream:
            if event["type"] == "DELETED":
                return time.monotonic() - started, last
            last = event["raw_object"].get("status") or {}
        raise AssertionError(f"{name} was not deleted within {timeout}s: {last}")


@pytest.fixture
def pods(sandbox: Cluster, namespace: str) -> Iterator[Pods]:
    from kubernetes import client

    with sandbox.api_client() as api:
        core = client.CoreV1Api(api)
        # Pods can only be created once the namespace's default ServiceAccount exists.
        eventually(lambda: core.read_namespaced_service_account("default", namespace), 20)
        yield Pods(sandbox, namespace, core)


def config_objects(pods: Pods) -> None:
    pods.create(
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "cfg"},
            "data": {"lr": "0.1", "epochs": "3"},
        }
    )
    pods.create(
        {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "sec"},
            "stringData": {"token": "s3cret"},
        }
    )


# --- environment ---------------------------------------------------------------------------


def test_env_from_downward_api_config_maps_secrets_and_expansion(pods: Pods) -> None:
    """Downward API fields, ConfigMap/Secret keys, envFrom with prefixes, optional keys
    and `$(VAR)` expansion in env and args reach the container's process."""
    config_objects(pods)

    def field(name: str, path: str) -> Obj:
        return {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    def key(name: str, source: str, ref: Obj) -> Obj:
        return {"name": name, "valueFrom": {source: ref}}

    env = [
        field("NAME", "metadata.name"),
        field("NS", "metadata.namespace"),
        field("UID", "metadata.uid"),
        field("TEAM", "metadata.labels['team']"),
        field("NODE", "spec.nodeName"),
        field("IP", "status.podIP"),
        key("LR", "configMapKeyRef", {"name": "cfg", "key": "lr"}),
        key("TOKEN", "secretKeyRef", {"name": "sec", "key": "token"}),
        key("MAYBE", "configMapKeyRef", {"name": "cfg", "key": "absent", "optional": True}),
        key("NOCFG", "configMapKeyRef", {"name": "nope", "key": "x", "optional": True}),
        {"name": "GREETING", "value": "hello $(NAME) on $(NODE)"},
        {"name": "LITERAL", "value": "$$(NAME)"},
        {"name": "UNKNOWN", "value": "$(NOT_SET)"},
    ]
    env_from = [
        {"configMapRef": {"name": "cfg"}, "prefix": "CFG_"},
        {"secretRef": {"name": "sec"}, "prefix": "SEC_"},
        {"configMapRef": {"name": "nope", "optional": True}},
    ]
    main = container("main", REPORT, "lr=$(LR)", env=env, envFrom=env_from)
    created = pods.create(pod("envy", [main], labels={"team": "ml"}))
    status = pods.wait_phase("envy", "Succeeded")
    seen = pods.report("envy", "main")
    got = seen["env"]
    node = pods.get("envy")["spec"]["nodeName"]
    assert node in ("cpu-0", "gpu-0")
    expected = {
        "NAME": "envy",
        "NS": pods.namespace,
        "UID": created["metadata"]["uid"],
        "TEAM": "ml",
        "NODE": node,
        "IP": status["podIP"],
        "LR": "0.1",
        "TOKEN": "s3cret",
        "GREETING": f"hello envy on {node}",
        "LITERAL": "$(NAME)",
        "UNKNOWN": "$(NOT_SET)",
        "CFG_lr": "0.1",
        "CFG_epochs": "3",
        "SEC_token": "s3cret",
    }
    assert {k: got.get(k) for k in expected} == expected
    assert "MAYBE" not in got and "NOCFG" not in got
    assert seen["argv"] == ["lr=0.1"]


def test_env_is_minimal_and_cwd_private(pods: Pods, tmp_path: Path) -> None:
    """A container gets PATH, HOME, HOSTNAME (the pod's name) and the KUBERNETES_SERVICE_*
    variables, nothing of the sandbox's own environment; its cwd is a private empty
    directory unless workingDir says otherwise."""
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "data.txt").write_text("x")
    own = [{"name": "MINE", "value": "1"}]
    containers = [
        container("main", REPORT, env=own),
        container("peer", REPORT),
        container("workdir", REPORT, workingDir=str(workdir)),
    ]
    pods.create(pod("plain", containers))
    pods.wait_phase("plain", "Succeeded")
    main, peer, chosen = (pods.report("plain", n) for n in ("main", "peer", "workdir"))
    env = main["env"]
    assert env["HOSTNAME"] == "plain" and env["MINE"] == "1"
    assert env["PATH"] and env["HOME"] == "/root"
    assert env["KUBERNETES_SERVICE_HOST"] == "127.0.0.1"
    assert env["KUBERNETES_SERVICE_PORT"].isdigit()
    for name in ("KUBECONFIG", "VIRTUAL_ENV", "PYTEST_CURRENT_TEST", "PYTHONPATH"):
        assert name not in env
    # Anything else is the kubelet's (KUBERNETES_*) or the GPU provider's (KWATT_*).
    others = set(env) - {"PATH", "HOME", "HOSTNAME", "MINE"}
    assert all(k.startswith(("KUBERNETES_", "KWATT_")) for k in others), sorted(others)
    # Nothing of the sandbox process's own environment leaks in.
    assert pods.cluster.proc is not None
    sandbox_pid = pods.cluster.proc.pid
    raw = Path(f"/proc/{sandbox_pid}/environ").read_bytes().split(b"\0")
    sandbox_env = dict(item.decode().split("=", 1) for item in raw if b"=" in item)
    leaked = {k for k in set(sandbox_env) & set(env) if k not in ("PATH", "HOME")}
    assert not leaked
    assert env["HOSTNAME"] != sandbox_env.get("HOSTNAME")
    # cwd: a fresh directory per container, not the sandbox's own.
    sandbox_cwd = os.readlink(f"/proc/{sandbox_pid}/cwd")
    assert main["files"] == [] and peer["files"] == []
    assert main["cwd"] != peer["cwd"] and sandbox_cwd not in (main["cwd"], peer["cwd"])
    assert chosen["cwd"] == str(workdir) and chosen["files"] == ["data.txt"]


def test_missing_config_map_holds_container_until_created(pods: Pods) -> None:
    """A required ConfigMap that does not exist leaves the container waiting with
    CreateContainerConfigError; it starts once the ConfigMap is created."""
    env = [{"name": "LATE", "valueFrom": {"configMapKeyRef": {"name": "late", "key": "k"}}}]
    code = "import os; print(os.environ['LATE'])"
    pods.create(pod("waits", [container("main", code, env=env)]))

    def config_error() -> Obj | None:
        waiting = pods.container_status("waits", "main")["state"].get("waiting") or {}
        return waiting if waiting.get("reason") == "CreateContainerConfigError" else None

    waiting = eventually(config_error, timeout=15)
    assert waiting["message"] == 'configmap "late" not found'
    assert pods.status("waits")["phase"] == "Pending"
    pods.create(
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "late"}, "data": {"k": "v"}}
    )
    pods.wait_phase("waits", "Succeeded")
    assert pods.logs("waits", "main") == "v\n"


# --- volumes -----------------------------------------------------------------------------

VOLUMES_MAIN = """
import errno, json, os, sys, time
cfg, scratch, host, ro = sys.argv[1:5]
shared = os.path.join(scratch, 'hello.txt')
deadline = time.time() + 10
while not os.path.exists(shared) and time.time() < deadline:
    time.sleep(0.02)
with open(os.path.join(host, 'made.txt'), 'w') as f:
    f.write('from main')
try:
    open(os.path.join(ro, 'nope.txt'), 'w').close()
    refused = ''
except OSError as exc:
    refused = errno.errorcode[exc.errno]
print(json.dumps({
    'lr': open(os.path.join(cfg, 'lr')).read(),
    'epochs': open(os.path.join(cfg, 'epochs')).read(),
    'shared': open(shared).read(),
    'ro_files': sorted(os.listdir(ro)),
    'refused': refused,
}))
"""
VOLUMES_SIDECAR = (
    "import os, sys, time\n"
    "open(os.path.join(sys.argv[1], 'hello.txt'), 'w').write('from sidecar')\n"
    "time.sleep(60)\n"
)


def test_volumes_config_map_empty_dir_host_path_and_read_only(pods: Pods, tmp_path: Path) -> None:
    """ConfigMap files appear at the mountPath only inside the container, an emptyDir is
    shared by a sidecar and the main container, hostPath DirectoryOrCreate makes the
    directory on the node, and a readOnly mount refuses writes (EROFS)."""
    config_objects(pods)
    mnt = tmp_path / "mnt"
    host_dir, ro_dir = tmp_path / "host" / "made", tmp_path / "ro"
    ro_dir.mkdir()
    (ro_dir / "keep.txt").write_text("kept")
    paths = {n: str(mnt / n) for n in ("cfg", "scratch", "host", "ro")}
    volumes = [
        {"name": "cfg", "configMap": {"name": "cfg"}},
        {"name": "scratch", "emptyDir": {}},
        {"name": "host", "hostPath": {"path": str(host_dir), "type": "DirectoryOrCreate"}},
        {"name": "ro", "hostPath": {"path": str(ro_dir), "type": "Directory"}},
    ]
    mounts = [{"name": n, "mountPath": p, "readOnly": n == "ro"} for n, p in paths.items()]
    sidecar = container(
        "writer",
        VOLUMES_SIDECAR,
        paths["scratch"],
        restartPolicy="Always",
        volumeMounts=[{"name": "scratch", "mountPath": paths["scratch"]}],
    )
    main = container("main", VOLUMES_MAIN, *paths.values(), volumeMounts=mounts)
    pods.create(pod("vols", [main], initContainers=[sidecar], volumes=volumes))
    pods.wait_phase("vols", "Succeeded")
    seen = json.loads(pods.logs("vols", "main"))
    assert seen == {
        "lr": "0.1",
        "epochs": "3",
        "shared": "from sidecar",
        "ro_files": ["keep.txt"],
        "refused": "EROFS",
    }
    assert (host_dir / "made.txt").read_text() == "from main"
    assert sorted(p.name for p in ro_dir.iterdir()) == ["keep.txt"]
    # On the node itself the mount points are empty: the files lived in the container's view.
    for name in ("cfg", "scratch", "host"):
        assert not list((mnt / name).iterdir()), name


SECRET_MAIN = """
import errno, json, os, stat, sys
d = sys.argv[1]
try:
    open(os.path.join(d, 'token'), 'w').close()
    refused = ''
except OSError as exc:
    refused = errno.errorcode[exc.errno]
print(json.dumps({
    'files': sorted(os.listdir(d)),
    'token': open(os.path.join(d, 'token')).read(),
    'mode': oct(stat.S_IMODE(os.stat(os.path.join(d, 'token')).st_mode)),
    'refused': refused,
}))
"""


def test_secret_volume_projects_its_keys_with_their_mode_read_only(pods: Pods) -> None:
    """A Secret volume, as kwatt's carbon-aware sidecar mounts its provider's token: the
    chosen key appears decoded at the mountPath, with the volume's defaultMode, and a
    readOnly mount refuses writes (EROFS), as on a kubelet."""
    config_objects(pods)
    volumes = [
        {
            "name": "creds",
            "secret": {
                "secretName": "sec",
                "defaultMode": 0o444,
                "items": [{"key": "token", "path": "token"}],
            },
        }
    ]
    mounts = [{"name": "creds", "mountPath": "/var/run/secrets/kwatt-test", "readOnly": True}]
    main = container("main", SECRET_MAIN, "/var/run/secrets/kwatt-test", volumeMounts=mounts)
    pods.create(pod("secret", [main], volumes=volumes))
    pods.wait_phase("secret", "Succeeded")
    seen = json.loads(pods.logs("secret", "main"))
    assert seen == {"files": ["token"], "token": "s3cret", "mode": "0o444", "refused": "EROFS"}


def test_unsupported_volume_type_is_a_failed_mount(pods: Pods) -> None:
    """An nfs volume is refused with a FailedMount event that says why; the pod stays
    Pending (ContainerCreating) and can still be deleted."""
    volumes = [{"name": "data", "nfs": {"server": "nfs.example.com", "path": "/exports"}}]
    main = container("main", "print('never')", volumeMounts=[{"name": "data", "mountPath": "/d"}])
    pods.create(pod("nfs", [main], volumes=volumes))

    def failed_mount() -> Obj | None:
        return next((e for e in pods.events("nfs") if e["reason"] == "FailedMount"), None)

    event = eventually(failed_mount, timeout=15)
    assert event["type"] == "Warning" and event["source"]["component"] == "kubelet"
    message = event["message"]
    assert message.startswith("MountVolume.SetUp failed: The volume 'data' is of type nfs")
    assert "do not support" in message and message.endswith(".")
    status = pods.status("nfs")
    assert status["phase"] == "Pending"
    waiting = status["containerStatuses"][0]["state"]["waiting"]
    assert waiting["reason"] == "ContainerCreating"
    seconds, _ = pods.delete_and_watch("nfs")
    assert seconds < 10


# --- container order ---------------------------------------------------------------------

INIT = "import sys, time; print('start', time.time()); time.sleep(0.2); print('end', time.time())"
PROBED_SIDECAR = """
import http.server, signal, sys, threading, time
def stop(*_):
    print('term', time.time(), flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print('start', time.time(), flush=True)
time.sleep(1.0)
class Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        self.send_response(200)
        self.end_headers()
    def log_message(self, *args):
        pass
server = http.server.HTTPServer(('127.0.0.1', int(sys.argv[1])), Ok)
print('serving', time.time(), flush=True)
threading.Thread(target=server.serve_forever, daemon=True).start()
while True:
    time.sleep(0.02)
"""
MAIN = "import time; print('start', time.time()); time.sleep(0.3); print('end', time.time())"


def test_init_containers_then_probed_sidecar_then_main(pods: Pods) -> None:
    """Init containers run to completion in order; a native sidecar's startupProbe holds
    the main container until it passes; after the main exits, sidecars get SIGTERM and
    their exit codes (0, or 143 for one that does not trap it) do not fail the pod."""
    port = free_port()
    probe = {"httpGet": {"path": "/healthz", "port": port}, "periodSeconds": 1}
    inits = [
        container("init-a", INIT),
        container("init-b", INIT),
        container("probed", PROBED_SIDECAR, str(port), restartPolicy="Always", startupProbe=probe),
        container("plain", "import time; time.sleep(60)", restartPolicy="Always"),
    ]
    pods.create(pod("order", [container("main", MAIN)], initContainers=inits))
    status = pods.wait_phase("order", "Succeeded", timeout=25)
    a, b, side, main = (
        stamps(pods.logs("order", n)) for n in ("init-a", "init-b", "probed", "main")
    )
    assert a["end"] <= b["start"] and b["end"] <= side["start"]
    assert side["serving"] - side["start"] >= 0.9
    assert side["serving"] <= main["start"]  # held by the startupProbe
    assert main["end"] <= side["term"]
    inits_status = {s["name"]: s for s in status["initContainerStatuses"]}
    for name in ("init-a", "init-b", "probed"):
        terminated = inits_status[name]["state"]["terminated"]
        assert (terminated["exitCode"], terminated["reason"]) == (0, "Completed"), name
    assert inits_status["plain"]["state"]["terminated"]["exitCode"] == 143
    (main_status,) = status["containerStatuses"]
    assert main_status["state"]["terminated"]["reason"] == "Completed"
    conditions = {c["type"]: c for c in status["conditions"]}
    assert conditions["Initialized"]["status"] == "True"
    assert conditions["Ready"]["reason"] == "PodCompleted"


def test_sidecar_and_main_running_and_ready(pods: Pods, tmp_path: Path) -> None:
    """While the main container runs, the pod is Running and Ready, with its native
    sidecar running, started and ready beside it."""
    flag = tmp_path / "done"
    waiter = "import os, sys, time\nwhile not os.path.exists(sys.argv[1]):\n    time.sleep(0.02)"
    side = container("side", "import time; time.sleep(60)", restartPolicy="Always")
    pods.create(pod("live", [container("main", waiter, str(flag))], initContainers=[side]))
    try:
        status = pods.wait_phase("live", "Running")
        eventually(lambda: pods.container_status("live", "main")["ready"], timeout=10)
        status = pods.status("live")
        (side_status,) = status["initContainerStatuses"]
        assert "running" in side_status["state"]
        assert side_status["started"] and side_status["ready"]
        conditions = {c["type"]: c["status"] for c in status["conditions"]}
        assert conditions["Initialized"] == conditions["Ready"] == "True"
        assert conditions["ContainersReady"] == "True"
    finally:
        flag.touch()
    pods.wait_phase("live", "Succeeded")


def test_failing_init_container_fails_the_pod(pods: Pods) -> None:
    """With restartPolicy Never, an init container that fails fails the pod and the main
    container never starts."""
    inits = [container("setup", "import sys; print('no data'); sys.exit(3)")]
    pods.create(pod("broken", [container("main", "print('ran')")], initContainers=inits))
    status = pods.wait_phase("broken", "Failed")
    (setup,) = status["initContainerStatuses"]
    assert setup["state"]["terminated"]["exitCode"] == 3
    assert setup["state"]["terminated"]["reason"] == "Error"
    (main,) = status["containerStatuses"]
    assert main["state"]["waiting"]["reason"] == "PodInitializing"
    assert main["restartCount"] == 0
    assert pods.logs("broken", "setup") == "no data\n"


# --- restarts ----------------------------------------------------------------------------

FLAKY = """
import os, sys
counter = os.path.join(sys.argv[1], 'count')
n = int(open(counter).read()) + 1 if os.path.exists(counter) else 1
open(counter, 'w').write(str(n))
print('attempt', n)
sys.exit(0 if n >= 3 else 4)
"""


def test_on_failure_restarts_and_keeps_previous_logs(pods: Pods) -> None:
    """restartPolicy OnFailure restarts a failing container (restartCount, lastState and
    `kubectl logs --previous` show the earlier run); Never does not restart it."""
    volumes = [{"name": "scratch", "emptyDir": {}}]
    mounts = [{"name": "scratch", "mountPath": "/scratch"}]

    def flaky(name: str, policy: str) -> Obj:
        main = container("main", FLAKY, "/scratch", volumeMounts=mounts)
        return pod(name, [main], restartPolicy=policy, volumes=volumes)

    pods.create(flaky("again", "OnFailure"))
    pods.create(flaky("once", "Never"))
    pods.wait_phase("again", "Succeeded")
    main = pods.container_status("again", "main")
    assert main["restartCount"] == 2
    assert main["state"]["terminated"]["exitCode"] == 0
    last = main["lastState"]["terminated"]
    assert (last["exitCode"], last["reason"]) == (4, "Error")
    assert pods.logs("again", "main") == "attempt 3\n"
    assert pods.logs("again", "main", previous=True) == "attempt 2\n"
    pods.wait_phase("once", "Failed")
    once = pods.container_status("once", "main")
    assert once["restartCount"] == 0 and once["state"]["terminated"]["exitCode"] == 4
    assert pods.logs("once", "main") == "attempt 1\n"


# --- termination -------------------------------------------------------------------------

TRAPS_TERM = """
import signal, sys, time
def stop(*_):
    open('/dev/termination-log', 'w').write('got SIGTERM')
    print('bye', flush=True)
    sys.exit(0)
signal.signal(signal.SIGTERM, stop)
print('ready', flush=True)
while True:
    time.sleep(0.02)
"""
IGNORES_TERM = """
import signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
print('ready', flush=True)
while True:
    time.sleep(0.02)
"""


def test_graceful_delete_sends_sigterm(pods: Pods) -> None:
    """`kubectl delete pod` SIGTERMs the container, which can still write its termination
    message; the pod is gone once it exits, well before the grace period ends."""
    main = container("main", TRAPS_TERM)
    pods.create(pod("polite", [main], terminationGracePeriodSeconds=30))
    eventually(lambda: pods.logs("polite", "main") == "ready\n", timeout=15)
    seconds, last = pods.delete_and_watch("polite")
    assert seconds < 10
    terminated = last["containerStatuses"][0]["state"]["terminated"]
    assert terminated["exitCode"] == 0 and terminated["message"] == "got SIGTERM"


def test_ignored_sigterm_gets_sigkill_after_grace(pods: Pods) -> None:
    """A container that ignores SIGTERM is SIGKILLed (exit 137) once the pod's
    terminationGracePeriodSeconds are over, and the pod goes away."""
    pods.create(pod("stubborn", [container("main", IGNORES_TERM)], terminationGracePeriodSeconds=2))
    eventually(lambda: pods.logs("stubborn", "main") == "ready\n", timeout=15)
    seconds, last = pods.delete_and_watch("stubborn")
    assert 1.9 <= seconds < 8
    terminated = last["containerStatuses"][0]["state"]["terminated"]
    assert (terminated["exitCode"], terminated["reason"]) == (137, "Error")


def test_exit_codes_reasons_and_termination_messages(pods: Pods, tmp_path: Path) -> None:
    """Exit 0 is Completed, exit N is Error with code N, a container killed by the
    kill_container fault reports 137; messages come from terminationMessagePath or,
    with FallbackToLogsOnError, from the end of the log."""
    assert pods.cluster.faults is not None
    pods.cluster.faults.kill_container(
        namespace=pods.namespace, pod="codes", container="victim", after=0.3
    )
    report_path = str(tmp_path / "msg" / "report.json")
    ok = container(
        "ok",
        f"open({report_path!r}, 'w').write('{{\"outcome\": \"done\"}}')",
        terminationMessagePath=report_path,
    )
    bad = container(
        "bad",
        "import sys; print('loading'); print('boom: out of memory'); sys.exit(3)",
        terminationMessagePolicy="FallbackToLogsOnError",
    )
    victim = container("victim", "import time; time.sleep(30)")
    pods.create(pod("codes", [ok, bad, victim]))
    status = pods.wait_phase("codes", "Failed", timeout=20)
    states = {s["name"]: s["state"]["terminated"] for s in status["containerStatuses"]}
    assert (states["ok"]["exitCode"], states["ok"]["reason"]) == (0, "Completed")
    assert states["ok"]["message"] == '{"outcome": "done"}'
    assert (states["bad"]["exitCode"], states["bad"]["reason"]) == (3, "Error")
    assert states["bad"]["message"] == "loading\nboom: out of memory\n"
    assert (states["victim"]["exitCode"], states["victim"]["reason"]) == (137, "Error")
    assert Path(report_path).read_text() == ""  # the message file lived in the container


# --- faults ------------------------------------------------------------------------------


def test_kill_container_fault_restarts_a_job_pod(pods: Pods) -> None:
    """The kill_container fault SIGKILLs a running container of a Job's pod; with
    restartPolicy OnFailure it restarts in place and the Job completes."""
    assert pods.cluster.faults is not None
    pods.cluster.faults.kill_container(
        namespace=pods.namespace, container="main", count=1, after=0.3
    )
    code = "import time; print('try', flush=True); time.sleep(1)"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "flaky"},
        "spec": {
            "backoffLimit": 2,
            "template": {
                "spec": {
                    "restartPolicy": "OnFailure",
                    "terminationGracePeriodSeconds": 1,
                    "containers": [container("main", code)],
                }
            },
        },
    }
    pods.create(job)
    pods.cluster.kubectl(
        "wait", "-n", pods.namespace, "--for=condition=Complete", "job/flaky", "--timeout=30s"
    )
    done = pods.cluster.kubectl_json("get", "-n", pods.namespace, "job/flaky")
    assert done["status"]["succeeded"] == 1 and done["status"].get("failed", 0) == 0
    (found,) = pods.cluster.kubectl_json(
        "get", "pods", "-n", pods.namespace, "-l", "batch.kubernetes.io/job-name=flaky"
    )["items"]
    (main,) = found["status"]["containerStatuses"]
    assert main["restartCount"] == 1
    assert main["lastState"]["terminated"]["exitCode"] == 137
    assert main["state"]["terminated"]["reason"] == "Completed"
    name = found["metadata"]["name"]
    assert pods.logs(name, "main", previous=True) == "try\n"


def node_ready(cluster: Cluster, node: str) -> Obj:
    found = cluster.kubectl_json("get", "node", node)
    ready: Obj = next(c for c in found["status"]["conditions"] if c["type"] == "Ready")
    return {**ready, "taints": [t["key"] for t in found["spec"].get("taints") or []]}


@pytest.mark.timeout(90)
def test_stopped_heartbeat_makes_node_not_ready_until_it_resumes(tmp_path: Path) -> None:
    """A node whose agent stops renewing its Lease is marked Ready=Unknown (and tainted
    unreachable) by the real node-lifecycle controller; when the heartbeat resumes, the
    agent reports Ready again. A sandbox of its own, so the shared one stays healthy."""
    with running_sandbox(tmp_path / "hb", nodes=["hb-0"]) as sb:
        assert sb.faults is not None
        eventually(lambda: node_ready(sb, "hb-0")["status"] == "True", timeout=20)
        stopped = time.monotonic()
        sb.faults.stop_heartbeat("hb-0", ttl=12)

        def unknown() -> Obj | None:
            ready = node_ready(sb, "hb-0")
            return ready if ready["status"] == "Unknown" else None

        ready = eventually(unknown, timeout=15, interval=0.3)
        assert time.monotonic() - stopped >= 7  # NODE_GRACE_S of silence first
        assert ready["reason"] == "NodeStatusUnknown"
        # The controller taints the node in a write of its own after the condition's, so
        # the taint may land a moment later (a clean-clone run read the node in between).
        eventually(
            lambda: "node.kubernetes.io/unreachable" in node_ready(sb, "hb-0")["taints"],
            timeout=4,
            interval=0.2,
        )

        def back() -> Obj | None:
            ready = node_ready(sb, "hb-0")
            return ready if ready["status"] == "True" else None

        ready = eventually(back, timeout=20, interval=0.3)
        assert time.monotonic() - stopped >= 11.5
        assert ready["reason"] == "KubeletReady"
        eventually(lambda: not node_ready(sb, "hb-0")["taints"], timeout=10, interval=0.3)


# --- nodes and GPUs ----------------------------------------------------------------------


def test_node_objects_and_leases(sandbox: Cluster) -> None:
    """The agents register Ready nodes with GPU feature discovery's labels and the GPU
    capacity, and renew their Leases every second."""
    gpu = sandbox.kubectl_json("get", "node", "gpu-0")
    labels = gpu["metadata"]["labels"]
    assert labels["nvidia.com/gpu.product"] == "v100"
    assert labels["nvidia.com/gpu.count"] == "2"
    assert labels["kubernetes.io/hostname"] == "gpu-0"
    assert gpu["status"]["capacity"]["nvidia.com/gpu"] == "2"
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    cpu = sandbox.kubectl_json("get", "node", "cpu-0")
    assert "nvidia.com/gpu" not in cpu["status"]["capacity"]
    assert "nvidia.com/gpu.product" not in cpu["metadata"]["labels"]
    for node in ("cpu-0", "gpu-0"):
        assert node_ready(sandbox, node)["status"] == "True"
    table = sandbox.kubectl("get", "nodes", "--no-headers").stdout.split("\n")
    assert {tuple(line.split()[:2]) for line in table if line} >= {
        ("cpu-0", "Ready"),
        ("gpu-0", "Ready"),
    }

    def renewed() -> str:
        lease = sandbox.kubectl_json("get", "lease", "-n", "kube-node-lease", "gpu-0")
        assert lease["spec"]["holderIdentity"] == "gpu-0"
        return str(lease["spec"]["renewTime"])

    first = renewed()
    eventually(lambda: renewed() != first, timeout=5, interval=0.2)


GPU_WAITER = """
import os, time
print(os.environ.get('NVIDIA_VISIBLE_DEVICES'), flush=True)
flag = os.path.join(os.environ['FLAGS'], os.environ['HOSTNAME'])
while not os.path.exists(flag):
    time.sleep(0.02)
"""


def gpu_pod(name: str, flags: Path) -> Obj:
    main = container(
        "main",
        GPU_WAITER,
        env=[{"name": "FLAGS", "value": str(flags)}],
        resources={"limits": {"nvidia.com/gpu": 1}},
    )
    return pod(name, [main])


def gpu_devices(cluster: Cluster, node: str) -> list[str]:
    """The UUIDs of the simulated GPUs of `node` (files in the sandbox's GPU directory)."""
    return device.list_uuids(Path(cluster.state["directory"]) / "gpus" / node / "gpus")


@pytest.mark.timeout(90)
def test_gpu_pods_get_their_own_device_and_wait_for_a_free_one(pods: Pods, tmp_path: Path) -> None:
    """Two pods asking for one GPU each get different devices of gpu-0; a third stays
    Pending (the scheduler reports Insufficient nvidia.com/gpu) until one finishes, and
    then gets the device that was freed."""
    flags = tmp_path / "flags"
    flags.mkdir()
    (flags / "gpu-c").touch()  # the third one finishes as soon as it starts
    pods.create(gpu_pod("gpu-a", flags))
    pods.create(gpu_pod("gpu-b", flags))
    try:
        for name in ("gpu-a", "gpu-b"):
            pods.wait_phase(name, "Running")
        seen = {n: eventually(partial(pods.logs, n, "main")).strip() for n in ("gpu-a", "gpu-b")}
        assert seen["gpu-a"] != seen["gpu-b"]
        assert sorted(seen.values()) == sorted(gpu_devices(pods.cluster, "gpu-0"))
        assert all(v.startswith("GPU-") for v in seen.values())
        for name in ("gpu-a", "gpu-b"):
            assert pods.get(name)["spec"]["nodeName"] == "gpu-0"
        pods.create(gpu_pod("gpu-c", flags))

        def failed_scheduling() -> Obj | None:
            events = pods.events("gpu-c")
            return next((e for e in events if e["reason"] == "FailedScheduling"), None)

        event = eventually(failed_scheduling, timeout=15)
        assert event["type"] == "Warning"
        assert "Insufficient nvidia.com/gpu" in event["message"]
        status = pods.status("gpu-c")
        assert status["phase"] == "Pending"
        scheduled = next(c for c in status["conditions"] if c["type"] == "PodScheduled")
        assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
        (flags / "gpu-a").touch()
        pods.wait_phase("gpu-a", "Succeeded")
        pods.wait_phase("gpu-c", "Succeeded", timeout=30)
        assert pods.logs("gpu-c", "main").strip() == seen["gpu-a"]
    finally:
        for name in ("gpu-a", "gpu-b", "gpu-c"):
            (flags / name).touch()
    pods.wait_phase("gpu-b", "Succeeded")


GPU_REPORT = """
import json, os
visible = os.environ.get('NVIDIA_VISIBLE_DEVICES')
directory = os.environ.get('KWATT_SIM_GPU_DIR', '')
files = sorted(os.listdir(directory)) if os.path.isdir(directory) else []
print(json.dumps({'visible': visible, 'files': files}))
"""


def test_gpu_env_only_for_containers_that_ask(pods: Pods) -> None:
    """Only a container that requests nvidia.com/gpu gets NVIDIA_VISIBLE_DEVICES (one
    UUID, whose simulated device it can see); a container of the same pod that asks for
    nothing gets none, and one whose spec says `all` gets every GPU of the node. A pod
    with nodeSelector nvidia.com/gpu.product=v100 lands on gpu-0."""
    one_gpu = {"limits": {"nvidia.com/gpu": 1}}
    everything = [{"name": "NVIDIA_VISIBLE_DEVICES", "value": "all"}]
    containers = [
        container("gpu", GPU_REPORT, resources=one_gpu),
        container("plain", GPU_REPORT),
        container("all", GPU_REPORT, env=everything),
    ]
    pods.create(pod("mixed", containers))
    selected = [container("main", GPU_REPORT)]
    pods.create(pod("selected", selected, nodeSelector={"nvidia.com/gpu.product": "v100"}))
    pods.wait_phase("mixed", "Succeeded")
    pods.wait_phase("selected", "Succeeded")
    devices = gpu_devices(pods.cluster, "gpu-0")
    gpu, plain, every = (pods.report("mixed", n) for n in ("gpu", "plain", "all"))
    assert gpu["visible"] in devices
    assert any(gpu["visible"] in name for name in gpu["files"])
    assert plain["visible"] is None
    assert sorted(every["visible"].split(",")) == sorted(devices)
    assert pods.get("mixed")["spec"]["nodeName"] == "gpu-0"
    assert pods.get("selected")["spec"]["nodeName"] == "gpu-0"
    assert pods.report("selected", "main")["visible"] is None
