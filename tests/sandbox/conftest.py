"""Fixtures for the sandbox cluster's tests (the sandbox is a test/demo emulator)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "sandbox"))

from sandbox_support import KUBECTL, MANIFESTS, Kubectl

from kwatt_sandbox.testing import Sandbox, running_sandbox


@pytest.fixture
def sandbox(tmp_path: Path) -> Iterator[Sandbox]:
    with running_sandbox(tmp_path) as sb:
        yield sb


@pytest.fixture
def api(sandbox: Sandbox) -> Iterator[Any]:
    """A `kubernetes.client.ApiClient` configured from the sandbox's kubeconfig."""
    from kubernetes import client, config

    configuration = client.Configuration()
    config.load_kube_config(config_file=str(sandbox.kubeconfig), client_configuration=configuration)
    with client.ApiClient(configuration) as api_client:
        yield api_client


@pytest.fixture
def kubectl(sandbox: Sandbox) -> Kubectl:
    if not Path(KUBECTL).exists():
        pytest.skip("kubectl is not installed")
    return Kubectl(sandbox)


@pytest.fixture
def widget_crd(sandbox: Sandbox) -> dict[str, Any]:
    """Registers widgets.example.kwatt.dev (bypassing HTTP) and returns the CRD."""
    import yaml

    crd = yaml.safe_load((MANIFESTS / "widget-crd.yaml").read_text())
    return sandbox.create(crd)
