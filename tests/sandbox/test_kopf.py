"""kopf (the framework kwatt's operator is built on) runs against the sandbox's real
kube-apiserver through the fault proxy, and survives the faults a real cluster throws.

The sandbox is a test and demo harness; production is a real cluster. A small kopf
operator runs as a subprocess (`kopf run --standalone --namespace NS`), restricted to
the test's namespace, with every setting that matters here set explicitly. Its traffic
goes through the fault proxy; what the tests assert they read straight from the API
server, never through the proxy.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from kwatt_sandbox.testing import Cluster, eventually

pytestmark = pytest.mark.timeout(90)

MANIFEST = Path(__file__).parent / "manifests" / "widget-crd.yaml"
CRD = "widgets.example.kwatt.dev"
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"
KOPF_START_S = 30.0
HANDLED_S = 20.0

OPERATOR = """
import logging

import kopf
import kubernetes

GROUP, VERSION, PLURAL = "example.kwatt.dev", "v1", "widgets"


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_):
    # Explicit, so the tests do not depend on kopf's defaults.
    settings.peering.standalone = True
    settings.scanning.disabled = True  # the CRD exists before kopf starts
    settings.posting.enabled = True
    settings.posting.level = logging.INFO
    settings.persistence.finalizer = "kopf.zalando.org/KopfFinalizerMarker"
    # Annotations only: the Widget schema would prune kopf's default status.kopf.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage()
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage()
    settings.networking.request_timeout = 15
    settings.networking.connect_timeout = 5
    settings.networking.error_backoffs = [0.2, 0.5, 1, 1, 2, 3]
    settings.watching.initial_streaming = False  # list, then watch
    settings.watching.reconnect_backoff = 0.1
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 5
    settings.queueing.idle_timeout = 1
    settings.queueing.exit_timeout = 2


@kopf.on.create(GROUP, VERSION, PLURAL)
def created(body, spec, patch, **_):
    patch.status["handled"] = {"created": spec["size"]}
    kopf.info(body, reason="Handled", message=f"created with size {spec['size']}")


@kopf.on.update(GROUP, VERSION, PLURAL, field="spec.size")
def updated(new, status, patch, **_):
    handled = dict(status.get("handled") or {})
    handled["updated"] = new
    patch.status["handled"] = handled


@kopf.on.delete(GROUP, VERSION, PLURAL)
def deleted(name, namespace, meta, **_):
    # What the handler saw: the object held by the finalizer, being deleted.
    seen = {
        "deletionTimestamp": meta.get("deletionTimestamp") or "",
        "finalizers": ",".join(meta.get("finalizers", [])),
    }
    kubernetes.config.load_kube_config()  # KUBECONFIG: through the fault proxy too
    kubernetes.client.CoreV1Api().create_namespaced_config_map(
        namespace, {"metadata": {"name": f"deleted-{name}"}, "data": seen}
    )
"""


@dataclass
class Kopf:
    """The running kopf subprocess and where its output goes."""

    proc: subprocess.Popen[bytes]
    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def check_alive(self) -> None:
        if self.proc.poll() is not None:
            raise AssertionError(f"kopf exited with {self.proc.returncode}:\n{self.output()}")


@pytest.fixture
def widget_crd(cluster: Cluster) -> None:
    """Apply the Widget CRD server-side: idempotent, as other tests of the session apply it.
    Served, too: kopf (scanning off) resolves it once, from discovery, when it starts."""
    cluster.apply_crd(MANIFEST, CRD)


@pytest.fixture
def kopf(sandbox: Cluster, widget_crd: None, namespace: str, tmp_path: Path) -> Iterator[Kopf]:
    """kopf through the fault proxy, in `namespace` only; always stopped, and its output
    printed (pytest shows it when a test fails)."""
    script = tmp_path / "operator.py"
    script.write_text(OPERATOR)
    log = tmp_path / "kopf.log"
    argv = [sys.executable, "-m", "kopf", "run", "--standalone", "--verbose"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*argv, "--namespace", namespace, str(script)],
            env=sandbox.env(proxy=True),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    running = Kopf(proc, log)
    try:
        # kopf has resolved the resource and begins to list and watch it.
        eventually(lambda: _started(running), timeout=KOPF_START_S, interval=0.1)
        yield running
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        print(f"--- kopf output (exit {proc.returncode}) ---\n{running.output()}")
        _release_widgets(sandbox, namespace)


def _started(kopf: Kopf) -> bool:
    kopf.check_alive()
    return "Starting the watch-stream for widgets.v1.example.kwatt.dev" in kopf.output()


def _release_widgets(cluster: Cluster, namespace: str) -> None:
    """Strip kopf's finalizer from what is left, so the namespace can go once kopf is gone."""
    listed = cluster.kubectl("get", "widgets", "-n", namespace, "-o", "name", check=False)
    for name in listed.stdout.split():
        unset = '{"metadata":{"finalizers":null}}'
        cluster.kubectl("patch", "-n", namespace, name, "--type=merge", "-p", unset, check=False)


def widget(name: str, size: int = 3) -> str:
    return json.dumps(
        {
            "apiVersion": "example.kwatt.dev/v1",
            "kind": "Widget",
            "metadata": {"name": name},
            "spec": {"size": size},
        }
    )


def create(cluster: Cluster, namespace: str, name: str, size: int = 3) -> None:
    cluster.kubectl("create", "-n", namespace, "-f", "-", input=widget(name, size))


def resize(cluster: Cluster, namespace: str, name: str, size: int) -> None:
    patch = json.dumps({"spec": {"size": size}})
    cluster.kubectl("patch", "-n", namespace, f"widget/{name}", "--type=merge", "-p", patch)


def get(cluster: Cluster, namespace: str, name: str) -> dict[str, Any] | None:
    """The Widget as the API server (not the proxy) has it; None once it is gone."""
    result = cluster.kubectl("get", "-n", namespace, f"widget/{name}", "-o", "json", check=False)
    if result.returncode != 0:
        if "NotFound" in result.stderr:
            return None
        raise AssertionError(result.stderr)
    obj: dict[str, Any] = json.loads(result.stdout)
    return obj


def handled(cluster: Cluster, namespace: str, name: str) -> dict[str, Any]:
    obj = get(cluster, namespace, name) or {}
    return dict((obj.get("status") or {}).get("handled") or {})


def wait_handled(
    cluster: Cluster, kopf: Kopf, namespace: str, name: str, expected: dict[str, Any]
) -> None:
    """Poll the API server until kopf has written `expected`; fail early if kopf died."""

    def check() -> bool:
        kopf.check_alive()
        return handled(cluster, namespace, name) == expected

    try:
        eventually(check, timeout=HANDLED_S, interval=0.1)
    except AssertionError as exc:
        now = handled(cluster, namespace, name)
        raise AssertionError(f"{name}: status.handled is {now}, not {expected}: {exc}") from exc


def events(cluster: Cluster, namespace: str, name: str) -> list[dict[str, Any]]:
    selector = f"involvedObject.kind=Widget,involvedObject.name={name}"
    items: list[dict[str, Any]] = cluster.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", selector
    )["items"]
    return items


def proxy_log(cluster: Cluster) -> str:
    """The sandbox's own output, where the fault proxy logs each fault it carries out."""
    return cluster.sandbox_log()


def test_kopf_handlers_run_against_the_real_server(
    sandbox: Cluster, kopf: Kopf, namespace: str
) -> None:
    """Create, update and delete handlers act on real objects: status patched, an Event
    posted, and the finalizer holds deletion until the delete handler has run."""
    create(sandbox, namespace, "w1")
    wait_handled(sandbox, kopf, namespace, "w1", {"created": 3})
    obj = get(sandbox, namespace, "w1")
    assert obj is not None and FINALIZER in obj["metadata"]["finalizers"]

    posted = eventually(
        lambda: [e for e in events(sandbox, namespace, "w1") if e["reason"] == "Handled"],
        timeout=HANDLED_S,
    )
    assert posted[0]["message"] == "created with size 3"
    assert posted[0]["involvedObject"]["uid"] == obj["metadata"]["uid"]
    assert posted[0]["source"]["component"] == "kopf"

    resize(sandbox, namespace, "w1", 4)
    wait_handled(sandbox, kopf, namespace, "w1", {"created": 3, "updated": 4})

    sandbox.kubectl("delete", "-n", namespace, "widget/w1", "--wait=false")
    eventually(lambda: get(sandbox, namespace, "w1") is None, timeout=HANDLED_S, interval=0.1)
    seen = sandbox.kubectl_json("get", "-n", namespace, "configmap/deleted-w1")["data"]
    assert seen["deletionTimestamp"], "on.delete ran on the object being deleted"
    assert FINALIZER in seen["finalizers"].split(","), "and before the finalizer went"


def test_kopf_survives_dropped_and_expired_watches(
    sandbox: Cluster, kopf: Kopf, namespace: str
) -> None:
    """A cut watch (kopf resumes from its last resourceVersion) and a 410 Gone (kopf lists
    again, then watches) both leave kopf handling what comes after."""
    assert sandbox.faults is not None
    watch_path = f"/apis/example.kwatt.dev/v1/namespaces/{namespace}/widgets?"
    create(sandbox, namespace, "w1")
    wait_handled(sandbox, kopf, namespace, "w1", {"created": 3})
    # Handled through the watch, not the initial list: the watch is open now.
    resize(sandbox, namespace, "w1", 4)
    wait_handled(sandbox, kopf, namespace, "w1", {"created": 3, "updated": 4})

    sandbox.faults.drop_open_watches("widgets")
    eventually(lambda: f"Fault: dropping watch {watch_path}" in proxy_log(sandbox))
    resize(sandbox, namespace, "w1", 5)
    wait_handled(sandbox, kopf, namespace, "w1", {"created": 3, "updated": 5})

    sandbox.faults.drop_open_watches("widgets", how="gone")
    eventually(lambda: f"Fault: ending watch {watch_path}" in proxy_log(sandbox))
    eventually(lambda: "Restarting the watch-stream for widgets" in kopf.output())
    create(sandbox, namespace, "w2", size=7)
    wait_handled(sandbox, kopf, namespace, "w2", {"created": 7})
    resize(sandbox, namespace, "w2", 8)
    wait_handled(sandbox, kopf, namespace, "w2", {"created": 7, "updated": 8})


def test_kopf_retries_failed_patches(sandbox: Cluster, kopf: Kopf, namespace: str) -> None:
    """A burst of 500s and 429s on Widget PATCHes: kopf retries and still writes the status."""
    assert sandbox.faults is not None
    burst = [
        sandbox.faults.error(500, resource="widgets", verb="patch", namespace=namespace, count=2),
        sandbox.faults.error(429, resource="widgets", verb="patch", namespace=namespace, count=2),
    ]
    create(sandbox, namespace, "w3", size=5)
    wait_handled(sandbox, kopf, namespace, "w3", {"created": 5})
    live = {rule["id"] for rule in sandbox.faults.rules()}
    assert not live & {rule["id"] for rule in burst}, "every injected error was served"
    retried = [line for line in kopf.output().splitlines() if "failed; will retry: PATCH" in line]
    assert sum("APIServerError(" in line for line in retried) == 2
    assert sum("APITooManyRequestsError(" in line for line in retried) == 2
    obj = get(sandbox, namespace, "w3")
    assert obj is not None and FINALIZER in obj["metadata"]["finalizers"]
    eventually(lambda: any(e["reason"] == "Handled" for e in events(sandbox, namespace, "w3")))
