"""A Job built by kwatt_operator.jobs really runs: the real Job controller and scheduler
place it on the sandbox's simulated V100 node, where the trainer (the sandbox's
trace-driven trainer, using the real client) and the injected native sidecar run to
completion, and the sidecar's report, read from the Pod's status, decodes for the policy.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from operator_support import create_returning, sandbox_sidecar

from kwatt_core import contract
from kwatt_core.policies.base import Choice
from kwatt_core.report import decode
from kwatt_operator.crd import crd_path
from kwatt_operator.jobs import build_job
from kwatt_sandbox.testing import Cluster


def trainingjob(namespace: str) -> dict[str, Any]:
    trainer = {
        "name": "train",
        "image": "ignored:1",
        "command": ["python", "-m", "kwatt_sandbox.gpu.trainer"],
        "args": ["--workload", "cifar100", "--gpu", "v100", "--seed-run", "1"],
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    }
    return {
        "apiVersion": "kwatt.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {"name": "cifar", "namespace": namespace, "labels": {"team": "vision"}},
        "spec": {
            "template": {
                "spec": {
                    "terminationGracePeriodSeconds": 1,
                    "containers": [
                        {**trainer, "args": [*trainer["args"], "--time-scale", "0.0005"]}
                    ],
                }
            },
            "batchSizes": {"candidates": [256, 512, 1024], "default": 1024},
            "target": {"metric": "accuracy", "value": 0.6, "maxEpochs": 100},
            "backoffLimit": 0,
        },
    }


@pytest.mark.timeout(120)
def test_built_job_completes_and_reports(sandbox: Cluster, namespace: str, tmp_path: Path) -> None:
    sandbox.apply_crd(crd_path(), "trainingjobs.kwatt.dev")
    tj = create_returning(sandbox, trainingjob(namespace), namespace)
    settings = sandbox_sidecar(tmp_path)
    job = build_job(tj, 1, Choice(256, None, None, "explore"), settings)
    sandbox.kubectl("create", "-f", "-", input=json.dumps(job))
    sandbox.kubectl(
        "wait",
        "-n",
        namespace,
        "--for=condition=Complete",
        "job/cifar-run-1",
        "--timeout=100s",
        timeout=110,
    )
    done = sandbox.kubectl_json("get", "-n", namespace, "job/cifar-run-1")
    assert done["status"]["succeeded"] == 1
    assert done["metadata"]["ownerReferences"][0]["uid"] == tj["metadata"]["uid"]
    (pod,) = sandbox.kubectl_json("get", "pods", "-n", namespace, "-l", "kwatt.dev/run=1")["items"]
    assert pod["status"]["phase"] == "Succeeded"
    assert pod["spec"]["nodeName"] == "gpu-0"  # the real scheduler found the GPU node
    (status,) = [
        s for s in pod["status"]["initContainerStatuses"] if s["name"] == contract.SIDECAR_CONTAINER
    ]
    report = decode(status["state"]["terminated"]["message"])
    assert report.result == "reached" and report.batch_size == 256
    assert report.mode == "optimize" and report.profile_complete
    assert report.energy_j > 0 and report.epochs > 0
    assert "v100" in report.gpu_model.lower()
