"""A training Job on a simulated GPU node: the real sidecar and client, end to end.

The pod is what the kwatt operator will build: the trainer (here the sandbox's
trace-driven trainer, which trains through the real kwatt client) requests the
GPU, and the sidecar runs beside it as a native sidecar. Expectations come from
DESIGN.md's contracts: the pod completes, the sidecar's report arrives in its
termination message, and the GPU is back at its default limit.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest
from nodes_support import job, job_pods, node_sandbox, wait_condition

from kwatt_core.policies import KwattPolicy, SearchSpace
from kwatt_core.report import decode
from kwatt_sandbox.gpu import device
from kwatt_sandbox.gpu.provider import SimulatedGpuProvider
from kwatt_sandbox.nodes import NodeSpec


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def env(values: dict[str, str]) -> list[dict[str, str]]:
    return [{"name": k, "value": v} for k, v in values.items()]


def training_job(name: str, batch_size: int, extra_sidecar_env: dict[str, str]) -> dict[str, Any]:
    port, metrics_port = str(free_port()), free_port()
    sidecar = {
        "name": "kwatt-sidecar",
        "image": "ignored:1",
        "restartPolicy": "Always",
        "command": ["python", "-m", "kwatt_sidecar"],
        # The trainer starts only once the sidecar answers, so its client finds it.
        "startupProbe": {
            "httpGet": {"path": "/healthz", "port": metrics_port},
            "periodSeconds": 1,
            "failureThreshold": 30,
        },
        "env": env(
            {
                "KWATT_PORT": port,
                "KWATT_METRICS_PORT": str(metrics_port),
                "KWATT_BATCH_SIZE": str(batch_size),
                "KWATT_ETA": "0.5",
                "KWATT_TARGET_METRIC": "0.6",
                "KWATT_TARGET_HIGHER_IS_BETTER": "true",
                "KWATT_MAX_EPOCHS": "100",
                "KWATT_POWER_MODE": "optimize",
                "KWATT_TERMINATION_PATH": "/dev/termination-log",
                "NVIDIA_VISIBLE_DEVICES": "all",
                **extra_sidecar_env,
            }
        ),
    }
    trainer = {
        "name": "trainer",
        "image": "ignored:1",
        "command": ["python", "-m", "kwatt_sandbox.gpu.trainer"],
        "args": [
            "--workload",
            "cifar100",
            "--gpu",
            "v100",
            "--seed-run",
            "1",
            "--time-scale",
            "0.0005",
        ],
        "env": env({"KWATT_PORT": port, "KWATT_BATCH_SIZE": str(batch_size)}),
        "resources": {"limits": {"nvidia.com/gpu": 1}},
    }
    manifest = job(name, [trainer], backoffLimit=0, pod={"initContainers": [sidecar]})
    return manifest


def sidecar_report(pod: dict[str, Any]) -> dict[str, Any]:
    (status,) = [s for s in pod["status"]["initContainerStatuses"] if s["name"] == "kwatt-sidecar"]
    message: str = status["state"]["terminated"]["message"]
    return {"text": message, "report": decode(message)}


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    ("batch_size", "extra", "profiled"),
    [(256, {}, True), (1024, {"KWATT_CACHED_LIMIT_W": "175"}, False)],
)
def test_training_job_profiles_reports_and_restores(
    tmp_path: Path, batch_size: int, extra: dict[str, str], profiled: bool
) -> None:
    provider = SimulatedGpuProvider(tmp_path / "gpus")
    nodes = [NodeSpec(name="gpu-0", gpu_model="v100", gpu_count=1)]
    with node_sandbox(tmp_path, nodes=nodes, gpu_provider=provider) as sb:
        sb.create(training_job("train-1", batch_size, extra))
        done = wait_condition(sb, "train-1", "Complete", timeout=80)
        assert done["status"]["succeeded"] == 1
        (pod,) = job_pods(sb, "train-1")
        assert pod["status"]["phase"] == "Succeeded"
        found = sidecar_report(pod)
        report = found["report"]
        assert len(found["text"].encode()) <= 4096
        # Seed run 1 of CIFAR-100 reaches 0.6 at a trace epoch; the sidecar saw it happen.
        assert report.result == "reached" and report.epochs > 0
        assert report.batch_size == batch_size and report.gpu_count == 1
        assert report.energy_j > 0 and report.time_s > 0
        if profiled:
            assert report.profile_complete and len(report.profile) >= 3
            assert report.limit_w in [m.limit_w for m in report.profile]
        else:
            assert report.limit_w == 175 and not report.profile
        # Whatever the run did to the limit, the GPU is back at its default.
        directory = provider.node_dir("gpu-0")
        (gpu,) = [device.read(directory, uuid) for uuid in device.list_uuids(directory)]
        assert gpu.limit_w == gpu.default_limit_w == 250
        json.loads(found["text"])  # compact JSON, as the operator reads it
        # What the operator does next: the policy learns from the report and caches the limit.
        policy = KwattPolicy()
        space = SearchSpace((256, 512, 1024), 1024, 250)
        state = policy.observe(policy.init(space, 0), report.outcome())
        expected = {str(batch_size): report.limit_w} if profiled else {}
        assert state["limits"] == expected
