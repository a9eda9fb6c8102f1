"""kopf (1.45) runs against the sandbox with no special flags and survives faults.

The sandbox is an emulator for tests and demos; production is a real cluster.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sandbox_support import eventually

pytestmark = pytest.mark.timeout(90)

OPERATOR = """
import kopf
import kubernetes


@kopf.on.create("example.kwatt.dev", "v1", "widgets")
def created(body, spec, patch, **_):
    patch.status["handled"] = {"created": spec["size"]}
    kopf.info(body, reason="Handled", message="created")


@kopf.on.update("example.kwatt.dev", "v1", "widgets")
def updated(spec, status, patch, **_):
    handled = dict(status.get("handled") or {})
    handled["updated"] = spec["size"]
    patch.status["handled"] = handled


@kopf.on.delete("example.kwatt.dev", "v1", "widgets")
def deleted(name, namespace, **_):
    kubernetes.config.load_kube_config()
    kubernetes.client.CoreV1Api().create_namespaced_config_map(
        namespace, {"metadata": {"name": f"deleted-{name}"}}
    )
"""


def widget(name: str, size: int = 3) -> dict[str, Any]:
    return {
        "apiVersion": "example.kwatt.dev/v1",
        "kind": "Widget",
        "metadata": {"name": name},
        "spec": {"size": size},
    }


@pytest.fixture
def operator(
    sandbox: Any, widget_crd: Any, tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[subprocess.Popen[str]]:
    path = tmp_path / "operator.py"
    path.write_text(OPERATOR)
    flags = getattr(request, "param", ["--standalone"])
    log = (tmp_path / "kopf.log").open("w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "kopf", "run", *flags, "--all-namespaces", str(path)],
        env=sandbox.env(),
        stdout=log,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        eventually(
            lambda: any(
                r.verb == "watch" and r.resource == "widgets" for r in sandbox.audit.records()
            ),
            timeout=30,
        )
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def handled(sandbox: Any, name: str) -> dict[str, Any]:
    obj = sandbox.get("example.kwatt.dev/v1", "Widget", name, "default")
    return dict((obj.get("status") or {}).get("handled") or {})


def _exists(sandbox: Any, api_version: str, kind: str, name: str) -> bool:
    try:
        sandbox.get(api_version, kind, name, "default")
    except Exception:
        return False
    return True


def test_kopf_handles_create_update_delete_and_survives_faults(sandbox: Any, operator: Any) -> None:
    sandbox.create(widget("w1"))
    eventually(lambda: handled(sandbox, "w1") == {"created": 3}, timeout=20)
    obj = sandbox.get("example.kwatt.dev/v1", "Widget", "w1", "default")
    assert "kopf.zalando.org/KopfFinalizerMarker" in obj["metadata"]["finalizers"]
    eventually(lambda: any(e.get("reason") == "Handled" for e in _events(sandbox)), timeout=20)

    def bump(size: int) -> None:
        def do() -> None:
            store = sandbox.store
            info = store.resolve("example.kwatt.dev", "v1", "widgets")
            store.patch(info, "default", "w1", "merge", {"spec": {"size": size}})

        sandbox.call(do)

    bump(4)
    eventually(lambda: handled(sandbox, "w1").get("updated") == 4, timeout=20)

    # A dropped watch connection: kopf reconnects and sees the next change.
    sandbox.faults.drop_open_watches("widgets")
    bump(5)
    eventually(lambda: handled(sandbox, "w1").get("updated") == 5, timeout=30)

    # 410 Gone on the open watch after the history was compacted: kopf re-lists.
    sandbox.compact()
    sandbox.faults.drop_open_watches("widgets", how="gone")
    sandbox.create(widget("w2", size=7))
    eventually(lambda: handled(sandbox, "w2") == {"created": 7}, timeout=30)
    records = sandbox.audit.records(lambda r: r.resource == "widgets" and "kopf" in r.user_agent)
    assert sum(1 for r in records if r.verb == "watch") >= 3, "kopf re-watched after each fault"
    assert sum(1 for r in records if r.verb == "list") >= 2, "kopf re-listed after the 410"

    def delete() -> None:
        store = sandbox.store
        store.delete(store.resolve("example.kwatt.dev", "v1", "widgets"), "default", "w1")

    sandbox.call(delete)
    eventually(lambda: not _exists(sandbox, "example.kwatt.dev/v1", "Widget", "w1"), timeout=20)
    assert _exists(sandbox, "v1", "ConfigMap", "deleted-w1"), (
        "the on.delete handler ran before the finalizer went"
    )


@pytest.mark.parametrize("operator", [[]], indirect=True)
def test_kopf_without_standalone_goes_on_without_peering(sandbox: Any, operator: Any) -> None:
    sandbox.create(widget("w1"))
    eventually(lambda: handled(sandbox, "w1") == {"created": 3}, timeout=20)


def _events(sandbox: Any) -> list[dict[str, Any]]:
    def do() -> list[dict[str, Any]]:
        store = sandbox.store
        return store.list_objects(store.resolve("", "v1", "events"), "default")

    return sandbox.call(do)
