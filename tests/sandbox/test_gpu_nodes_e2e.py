"""A training run on the sandbox's simulated V100 that reuses a cached power limit.

tests/operator/test_operator_run_e2e.py already runs a profiling run (the operator's
Job, the trace-driven trainer, the injected sidecar) to completion on gpu-0. This one
covers what differs for a run with a cached limit, as the policy's exploit stage
chooses: the sidecar caps the simulated GPU at that limit while the trainer trains,
reports it without profiling, and leaves the GPU at its default limit afterwards.
The sandbox is a test and demo harness; production is a real cluster.
"""

from __future__ import annotations

import contextlib
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from kwatt_core import contract
from kwatt_core import simgpu as device
from kwatt_core.policies import KwattPolicy, SearchSpace
from kwatt_core.policies.base import Choice
from kwatt_core.report import decode
from kwatt_operator.jobs import SidecarSettings, build_job
from kwatt_sandbox.controlplane.cluster import free_port
from kwatt_sandbox.testing import Cluster, eventually

CACHED_W = 175


def trainingjob(namespace: str) -> dict[str, Any]:
    """A TrainingJob as the API server would return it (never created: the Job is
    built from it directly, without an owner the garbage collector would look for)."""
    trainer = {
        "name": "train",
        "image": "ignored:1",
        "command": ["python", "-m", "kwatt_sandbox.gpu.trainer"],
        "args": [
            *("--workload", "cifar100", "--gpu", "v100", "--seed-run", "1"),
            *("--time-scale", "0.0005"),
        ],
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    }
    return {
        "apiVersion": "kwatt.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "cached", "namespace": namespace, "uid": "not-created"},
        "spec": {
            "template": {"spec": {"terminationGracePeriodSeconds": 1, "containers": [trainer]}},
            "batchSizes": {"candidates": [256, 512, 1024], "default": 1024},
            "target": {"metric": "accuracy", "value": 0.6, "maxEpochs": 100},
            "backoffLimit": 0,
        },
    }


class LimitWatcher:
    """Samples the power limits of a node's simulated GPUs while a run goes on."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.seen: set[float] = set()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.wait(0.02):
            for uuid in device.list_uuids(self.directory):
                with contextlib.suppress(OSError, ValueError, device.DeviceError):
                    self.seen.add(device.read(self.directory, uuid).limit_w)


@pytest.mark.timeout(120)
def test_cached_limit_run_caps_the_gpu_and_restores_it(
    sandbox: Cluster, namespace: str, tmp_path: Path
) -> None:
    """With a cached limit the sidecar holds the GPU at that limit during training,
    reports the run without a profile, and puts the GPU back at its default limit."""
    gpus = Path(sandbox.state["directory"]) / "gpus" / "gpu-0" / "gpus"
    before = {u: device.read(gpus, u) for u in device.list_uuids(gpus)}
    assert len(before) == 2 and all(d.limit_w == d.default_limit_w == 250 for d in before.values())
    settings = SidecarSettings(
        image="ignored:1",
        port=free_port(),
        metrics_port=free_port(),
        state_dir_host_path=str(tmp_path / "state"),
    )
    job = build_job(trainingjob(namespace), 1, Choice(1024, CACHED_W, None, "exploit"), settings)
    job["metadata"].pop("ownerReferences")
    watcher = LimitWatcher(gpus)
    watcher.thread.start()
    try:
        eventually(lambda: sandbox.kubectl("create", "-f", "-", input=json.dumps(job)), timeout=20)
        sandbox.kubectl(
            "wait",
            "-n",
            namespace,
            "--for=condition=Complete",
            "job/cached-run-1",
            "--timeout=100s",
            timeout=110,
        )
    finally:
        watcher.stop.set()
        watcher.thread.join()
    (pod,) = sandbox.kubectl_json("get", "pods", "-n", namespace, "-l", "kwatt.dev/run=1")["items"]
    assert pod["status"]["phase"] == "Succeeded" and pod["spec"]["nodeName"] == "gpu-0"
    (status,) = [
        s for s in pod["status"]["initContainerStatuses"] if s["name"] == contract.SIDECAR_CONTAINER
    ]
    message = status["state"]["terminated"]["message"]
    assert len(message.encode()) <= 4096
    json.loads(message)  # compact JSON, as the operator reads it
    report = decode(message)
    assert report.result == "reached" and report.epochs > 0
    assert report.batch_size == 1024 and report.gpu_count == 1
    assert report.limit_w == CACHED_W and not report.profile
    assert report.energy_j > 0 and report.time_s > 0
    # The cap was on the simulated GPU during the run, and is gone after it.
    assert float(CACHED_W) in watcher.seen
    after = {u: device.read(gpus, u) for u in device.list_uuids(gpus)}
    assert all(d.limit_w == d.default_limit_w == 250 for d in after.values())
    # What the operator does next: a run that did not profile teaches no new limit.
    policy = KwattPolicy()
    space = SearchSpace((256, 512, 1024), 1024, 250)
    state = policy.observe(policy.init(space, 0), report.outcome())
    assert state["limits"] == {}
