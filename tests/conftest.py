"""Fixtures shared by every test folder: one cluster per test session.

By default that is the sandbox (`kwatt sandbox`: a real Kubernetes control plane
with simulated GPU nodes, a test harness; production is a real cluster), started on
first use and stopped at the end. With KWATT_TEST_KUBECONFIG set, the same tests run
against that cluster instead; tests that need the sandbox's fault proxy or its
simulated nodes skip there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kwatt_sandbox.testing import Cluster, external_cluster, running_sandbox

EXTERNAL = "KWATT_TEST_KUBECONFIG"
# With EXTERNAL, the ready file of the sandbox it points at, when it is one (tools/mutation.py
# starts one for a part's cluster tests): tests can then read its audit log.
SANDBOX_STATE = "KWATT_TEST_SANDBOX_STATE"


@pytest.fixture(scope="session")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    external = os.environ.get(EXTERNAL)
    if external:
        cluster = external_cluster(Path(external))
        ready = os.environ.get(SANDBOX_STATE)
        if ready:  # a sandbox started elsewhere: its state (the audit log's folder) too
            cluster = dataclasses.replace(cluster, state=json.loads(Path(ready).read_text()))
        yield cluster
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


# With pytest-xdist (`make test` runs two workers), every test that needs the session's
# cluster, or starts clusters of its own (the sandbox's and the demo's tests), goes to one
# worker: one sandbox per run, as without workers, and no two tests' clusters, operators or
# demos side by side. The rest (the pure core, the client, the sidecar's processes, the
# images' builds, the chart's offline checks, the operator's pure tests) go to whichever
# worker is free, so they run beside the cluster's tests.
OWN_CLUSTERS = ("demo", "sandbox")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(__file__).parent
    for item in items:
        folder = Path(str(item.path)).relative_to(root).parts[0]
        if folder in OWN_CLUSTERS or "cluster" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.xdist_group("cluster"))
