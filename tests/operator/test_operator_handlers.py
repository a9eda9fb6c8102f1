"""The kopf shell's own decisions, without a cluster: kopf's settings, what a failed pass
does (an API server that does not answer is a real one, unreachable), and the gauges a
pass mirrors from the status. Passes against a real API server are in test_operator_kube.py."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import kopf
import pytest

from kwatt_operator.handlers import OperatorConfig, _status_metrics, _work, configure
from kwatt_operator.jobs import SidecarSettings
from kwatt_operator.kube import Kube
from kwatt_operator.metrics import OperatorMetrics
from kwatt_operator.workqueue import WorkQueue

pytestmark = pytest.mark.timeout(60)
SETTINGS = SidecarSettings(image="ghcr.io/kwatt/sidecar:0.1")
TJ = {"namespace": "ml", "trainingjob": "cifar"}


def test_kopf_runs_standalone_without_crd_scanning_and_posts_events() -> None:
    """docs/operator.md: one replica without peering, no CRD scanning (the CRD is there
    before the operator), events posted, watch timeouts and an error backoff."""
    settings = kopf.OperatorSettings()
    configure(settings)
    assert settings.peering.standalone is True
    assert settings.scanning.disabled is True
    assert settings.posting.enabled is True
    assert settings.posting.level <= logging.INFO
    # The finalizer an old kopf-based version may have left (docs say how to remove it).
    assert settings.persistence.finalizer == "kwatt.dev/kopf"
    # Nothing of kopf's in the status, which the CRD's schema owns.
    assert isinstance(settings.persistence.progress_storage, kopf.AnnotationsProgressStorage)
    assert isinstance(settings.persistence.diffbase_storage, kopf.AnnotationsDiffBaseStorage)
    # Every watch and request is bounded; a watch ends by the server's timeout, not the
    # client's cutting it mid-stream.
    watching = settings.watching
    assert watching.server_timeout is not None and watching.client_timeout is not None
    assert 0 < watching.server_timeout < watching.client_timeout
    assert watching.connect_timeout is not None and watching.connect_timeout > 0
    assert settings.networking.request_timeout is not None
    assert 0 < settings.networking.request_timeout <= watching.server_timeout
    delays = list(settings.queueing.error_delays)
    assert delays and delays == sorted(delays) and delays[0] > 0


def unreachable() -> Kube:
    """A Kube whose API server does not answer: a port that nothing listens on."""
    from kubernetes import client

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    configuration = client.Configuration()
    configuration.host = f"https://127.0.0.1:{port}"
    configuration.retries = 0
    return Kube(client.ApiClient(configuration))


def taken(queue: WorkQueue, key: tuple[str, str]) -> float | None:
    """When the queue would bring `key` back; then the key as a worker takes it, its timer
    spent (what the queue does when the timer fires)."""
    due = queue.due_in(key)
    queue.forget(key)
    return due


def test_failed_passes_are_logged_counted_and_retried_with_backoff(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A pass that fails comes back after 2 s, then 4, 8... at most the 60 s resync, with
    one WARNING each naming the TrainingJob and why, and a count in the metrics."""
    key = ("ml", "cifar")
    metrics = OperatorMetrics()
    config = OperatorConfig(SETTINGS, metrics=metrics)
    kube = unreachable()

    async def main() -> list[float | None]:
        queue = WorkQueue()
        due = []
        for _ in range(7):
            await _work(key, kube, config, queue)
            due.append(taken(queue, key))
        await queue.stop()
        return due

    with caplog.at_level(logging.WARNING, logger="kwatt_operator.handlers"):
        due = asyncio.run(main())
    expected = [2, 4, 8, 16, 32, 60, 60]
    assert due == [pytest.approx(d, abs=0.5) for d in expected]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 7
    for line, delay in zip(lines, expected, strict=True):
        assert line.startswith("Reconciling TrainingJob ml/cifar failed (MaxRetryError: ")
        assert line.endswith(f"); retrying in {delay} s.")
        assert "\n" not in line and len(line) < 400  # one line, not the whole exception
    errors = metrics.registry.get_sample_value(
        "kwatt_reconcile_errors_total", {**TJ, "reason": "ApiError"}
    )
    assert errors == 7


def test_a_failed_pass_without_metrics_is_still_retried() -> None:
    key = ("ml", "cifar")
    config = OperatorConfig(SETTINGS)  # --metrics-port -1

    async def main() -> float | None:
        queue = WorkQueue()
        await _work(key, unreachable(), config, queue)
        due = queue.due_in(key)
        await queue.stop()
        return due

    assert asyncio.run(main()) == pytest.approx(2, abs=0.5)


def test_a_hand_written_limit_of_zero_is_no_limit() -> None:
    """The status's limit 0 (nothing the operator writes) shows no limit; the batch size
    and the saving still show."""
    metrics = OperatorMetrics()
    status = {
        "currentBatchSize": 512,
        "currentPowerLimitWatts": 0,
        "savings": {"energyPercent": 20, "timePercent": 5, "basis": "measured"},
    }
    _status_metrics(metrics, "ml", "cifar", status)
    value = metrics.registry.get_sample_value
    assert value("kwatt_trainingjob_batch_size", TJ) == 512
    assert value("kwatt_trainingjob_power_limit_watts", TJ) is None
    assert value("kwatt_trainingjob_energy_saving_ratio", {**TJ, "basis": "measured"}) == 0.2
    assert value("kwatt_trainingjob_time_saving_ratio", {**TJ, "basis": "measured"}) == 0.05


def test_outside_a_pod_the_api_client_comes_from_kubeconfig(tmp_path: Path) -> None:
    """No in-cluster ServiceAccount: the client is the one KUBECONFIG describes (its server
    and credentials). A process of its own, as `kwatt operator` is: the kubernetes package
    reads KUBECONFIG when it is imported."""
    kubeconfig: dict[str, Any] = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": "https://kwatt.example:6443"}}],
        "users": [{"name": "u", "user": {"token": "t0ken"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig"
    path.write_text(json.dumps(kubeconfig))
    env = {k: v for k, v in os.environ.items() if not k.startswith("KUBERNETES_SERVICE")}
    env["KUBECONFIG"] = str(path)
    code = (
        "from kwatt_operator.handlers import _api_client\n"
        "c = _api_client().configuration\n"
        "print(c.host, c.api_key.get('authorization') or c.api_key.get('BearerToken'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["https://kwatt.example:6443", "Bearer", "t0ken"]
