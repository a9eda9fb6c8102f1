"""The kopf shell as `kwatt operator` runs it (handlers.register), in this process against the
session's cluster: kopf watches, the handlers queue keys, the work queue runs the passes.
One test of a few seconds; the recurrences themselves are test_operator_e2e.py's."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from typing import Any

import kopf
import pytest

from conftest import sample_trainingjob
from kwatt_operator.crd import CRD_NAME, crd_path
from kwatt_operator.handlers import OperatorConfig, register
from kwatt_operator.jobs import SidecarSettings
from kwatt_operator.metrics import OperatorMetrics
from kwatt_sandbox.testing import Cluster, eventually

pytestmark = pytest.mark.timeout(120)
SETTINGS = SidecarSettings(image="ghcr.io/kwatt/sidecar:0.1")
NOWHERE = {"kwatt.dev/test-node": "none"}  # no node has it: run Pods stay Pending


@pytest.fixture
def operator(
    cluster: Cluster, namespace: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[OperatorMetrics]:
    """kopf with the operator's handlers, watching `namespace`, until the test ends."""
    cluster.apply_crd(crd_path(), CRD_NAME)
    monkeypatch.setenv("KUBECONFIG", str(cluster.kubeconfig))
    registry = kopf.OperatorRegistry()
    kopf.on.login(registry=registry)(kopf.login_with_kubeconfig)
    metrics = OperatorMetrics()
    with cluster.api_client() as api:
        register(registry, OperatorConfig(SETTINGS, workers=2, api=api, metrics=metrics))
        stop, ready = threading.Event(), threading.Event()
        failure: list[BaseException] = []

        def run() -> None:
            try:
                asyncio.run(
                    kopf.operator(
                        registry=registry,
                        standalone=True,
                        namespaces=[namespace],
                        stop_flag=stop,
                        ready_flag=ready,
                    )
                )
            except BaseException as exc:  # said by the test, not lost in the thread
                failure.append(exc)

        thread = threading.Thread(target=run, name="kopf", daemon=True)
        thread.start()
        try:
            assert ready.wait(30), f"kopf did not start: {failure}"
            yield metrics
        finally:
            stop.set()
            thread.join(30)
    assert not failure, failure


def tj_status(cluster: Cluster, namespace: str) -> dict[str, Any]:
    result = cluster.kubectl("get", "tj", "cifar", "-n", namespace, "-o", "json", check=False)
    if result.returncode != 0:
        return {}
    status: dict[str, Any] = json.loads(result.stdout).get("status") or {}
    return status


def series(metrics: OperatorMetrics, namespace: str) -> list[str]:
    """The operator's series about this TrainingJob."""
    return [
        s.name
        for family in metrics.registry.collect()
        for s in family.samples
        if s.labels.get("namespace") == namespace and s.labels.get("trainingjob") == "cifar"
    ]


def test_the_operator_acts_on_trainingjob_and_job_events(
    cluster: Cluster, namespace: str, operator: OperatorMetrics
) -> None:
    tj = sample_trainingjob()
    tj["metadata"] = {"name": "cifar", "namespace": namespace}
    tj["spec"]["template"]["spec"]["nodeSelector"] = NOWHERE
    cluster.kubectl("create", "-f", "-", input=json.dumps(tj))
    # Created: the first run starts, its Job made.
    eventually(lambda: tj_status(cluster, namespace).get("runs") == 1, timeout=30)
    eventually(
        lambda: (
            cluster.kubectl("get", "job", "cifar-run-1", "-n", namespace, check=False).returncode
            == 0
        ),
        timeout=30,
    )
    # The Job deleted by hand: its event brings the TrainingJob back at once (not at the
    # next resync, a minute away), and the run is recorded as deleted.
    cluster.kubectl("delete", "job", "cifar-run-1", "-n", namespace, "--wait=false")

    def recorded() -> list[dict[str, Any]]:
        history: list[dict[str, Any]] = tj_status(cluster, namespace).get("history") or []
        return history

    (entry,) = eventually(recorded, timeout=30)
    assert entry["run"] == 1 and entry["result"] == "deleted"
    labels = {"namespace": namespace, "trainingjob": "cifar"}
    runs = operator.registry.get_sample_value(
        "kwatt_trainingjob_runs_total", {**labels, "result": "deleted"}
    )
    assert runs == 1
    # Deleted: its series go with it.
    cluster.kubectl("delete", "tj", "cifar", "-n", namespace)
    eventually(lambda: not series(operator, namespace), timeout=30)
