"""Fixtures for the operator's tests: a sample TrainingJob and a client of the session's
cluster (the sandbox, a test harness: see tests/conftest.py)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest

from kwatt_sandbox.testing import Cluster

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
def api_client(cluster: Cluster) -> Iterator[Any]:
    """A `kubernetes.client.ApiClient` pointed at the cluster through its kubeconfig."""
    with cluster.api_client() as api:
        yield api
