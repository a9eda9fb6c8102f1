"""Fixtures shared by every test folder: one cluster per test session.

By default that is the sandbox (`kwatt sandbox`: a real Kubernetes control plane
with simulated GPU nodes, a test harness; production is a real cluster), started on
first use and stopped at the end. With KWATT_TEST_KUBECONFIG set, the same tests run
against that cluster instead; tests that need the sandbox's fault proxy or its
simulated nodes skip there.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kwatt_sandbox.testing import Cluster, external_cluster, running_sandbox

EXTERNAL = "KWATT_TEST_KUBECONFIG"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    external = os.environ.get(EXTERNAL)
    if external:
        yield external_cluster(Path(external))
        return
    with running_sandbox(tmp_path_factory.mktemp("sandbox")) as sandbox:
        yield sandbox


@pytest.fixture
def sandbox(cluster: Cluster) -> Iterator[Cluster]:
    """The session's cluster when it is the sandbox; faults are cleared after each test."""
    if not cluster.is_sandbox:
        pytest.skip(f"needs the sandbox's fault proxy and simulated nodes ({EXTERNAL} is set)")
    yield cluster
    assert cluster.faults is not None
    cluster.faults.clear()


@pytest.fixture
def namespace(cluster: Cluster) -> Iterator[str]:
    """A fresh namespace for one test, deleted (without waiting) afterwards."""
    name = f"t-{uuid.uuid4().hex[:10]}"
    cluster.kubectl("create", "namespace", name)
    yield name
    cluster.kubectl("delete", "namespace", name, "--wait=false", check=False)
