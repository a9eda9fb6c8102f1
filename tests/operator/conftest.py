"""Fixtures for the operator's tests: a sample TrainingJob and a sandbox API server.

The sandbox is the project's Kubernetes API emulator (tests and demos only).
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from kwatt_sandbox.testing import Sandbox, running_sandbox
from kwatt_sandbox.testing import eventually as eventually  # re-exported for the tests

KUBECTL = "/usr/bin/kubectl"
TJ_UID = "0b7c5d5e-5a4b-4c7e-9a11-1f0f3f0a2b3c"


def sample_trainingjob(**spec: Any) -> dict[str, Any]:
    """A TrainingJob as the API server returns it (metadata with a uid), spec overridable."""
    base: dict[str, Any] = {
        "template": {
            "metadata": {"labels": {"app": "cifar"}},
            "spec": {
                "containers": [
                    {
                        "name": "train",
                        "image": "example.com/train:1",
                        "command": ["python", "train.py"],
                        "env": [{"name": "EPOCHS", "value": "10"}],
                        "resources": {"limits": {"nvidia.com/gpu": 1}},
                    }
                ]
            },
        },
        "batchSizes": {"candidates": [8, 16, 32], "default": 16},
        "target": {"metric": "accuracy", "value": 0.6, "maxEpochs": 50},
    }
    base.update(copy.deepcopy(spec))
    return {
        "apiVersion": "kwatt.dev/v1alpha1",
        "kind": "TrainingJob",
        "metadata": {
            "name": "cifar",
            "namespace": "ml",
            "uid": TJ_UID,
            "generation": 1,
            "labels": {"kueue.x-k8s.io/queue-name": "gpu-queue", "team": "vision"},
        },
        "spec": base,
    }


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with running_sandbox(tmp_path) as sb:
        yield sb


@pytest.fixture
def api_client(sandbox: Sandbox) -> Iterator[Any]:
    """A `kubernetes.client.ApiClient` pointed at the sandbox through its kubeconfig."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(sandbox.kubeconfig), client_configuration=configuration)
    with client.ApiClient(configuration) as api:
        yield api
