"""A Job built by kwatt_operator.jobs really runs: on the sandbox's simulated GPU node the
trainer (the sandbox's trace-driven trainer, using the real client) and the injected
sidecar run to completion, and the sidecar's report decodes for the policy.

The sandbox is the project's API emulator with simulated nodes (tests and demos only).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

import pytest
from conftest import eventually

from kwatt_core import contract
from kwatt_core.policies.base import Choice
from kwatt_core.report import decode
from kwatt_operator.crd import load_crd
from kwatt_operator.jobs import SidecarSettings, build_job
from kwatt_sandbox.gpu.provider import SimulatedGpuProvider
from kwatt_sandbox.nodes import NodeSpec
from kwatt_sandbox.server import SandboxConfig
from kwatt_sandbox.testing import running_sandbox


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def trainingjob() -> dict[str, Any]:
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
        "metadata": {"name": "cifar", "namespace": "default", "labels": {"team": "vision"}},
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


@pytest.mark.timeout(90)
def test_built_job_completes_and_reports(tmp_path: Path) -> None:
    provider = SimulatedGpuProvider(tmp_path / "gpus")
    config = SandboxConfig(
        nodes=[NodeSpec(name="gpu-0", gpu_model="v100", gpu_count=1)], gpu_provider=provider
    )
    with running_sandbox(tmp_path, config=config) as sb:
        sb.create(load_crd())
        tj = eventually(lambda: sb.create(trainingjob()))
        settings = SidecarSettings(
            image="ignored:1",
            port=free_port(),
            metrics_port=free_port(),
            state_dir_host_path=str(tmp_path / "state"),
        )
        job = build_job(tj, 1, Choice(256, None, None, "explore"), settings)
        sb.create(job)

        def complete() -> dict[str, Any] | None:
            found = sb.get("batch/v1", "Job", "cifar-run-1", "default")
            conds = (found.get("status") or {}).get("conditions") or []
            failed = [c for c in conds if c["type"] == "Failed" and c["status"] == "True"]
            assert not failed, failed
            done = any(c["type"] == "Complete" and c["status"] == "True" for c in conds)
            return found if done else None

        done = eventually(complete, timeout=80)
        assert done["status"]["succeeded"] == 1
        assert done["metadata"]["ownerReferences"][0]["uid"] == tj["metadata"]["uid"]

        def pods() -> list[dict[str, Any]]:
            info = sb.store.resolve("", "v1", "pods")
            return [
                p
                for p in sb.store.list_objects(info, "default")
                if p["metadata"].get("labels", {}).get("kwatt.dev/run") == "1"
            ]

        (pod,) = sb.call(pods)
        assert pod["status"]["phase"] == "Succeeded"
        (status,) = [
            s
            for s in pod["status"]["initContainerStatuses"]
            if s["name"] == contract.SIDECAR_CONTAINER
        ]
        report = decode(status["state"]["terminated"]["message"])
        assert report.result == "reached" and report.batch_size == 256
        assert report.mode == "optimize" and report.profile_complete
        assert report.energy_j > 0 and report.epochs > 0
