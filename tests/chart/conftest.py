"""Fixtures for the Helm chart's tests: helm 3 and helm 4 and kubecheck, each built once per
machine from its Go module (kwatt_sandbox.controlplane.tools; `make helm` builds them ahead)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from chart_support import Helm

from kwatt_sandbox.controlplane.tools import ensure_tool


@pytest.fixture(scope="session")
def helm_home(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("helm")


@pytest.fixture(scope="session", params=["helm3", "helm4"])
def helm(request: pytest.FixtureRequest, helm_home: Path) -> Iterator[Helm]:
    """Helm 3 and Helm 4: every test that takes it runs under both."""
    name = request.param
    yield Helm(name, ensure_tool(name), helm_home / name)


@pytest.fixture(scope="session")
def helm3(helm_home: Path) -> Helm:
    return Helm("helm3", ensure_tool("helm3"), helm_home / "helm3")


@pytest.fixture(scope="session")
def helm4(helm_home: Path) -> Helm:
    return Helm("helm4", ensure_tool("helm4"), helm_home / "helm4")


@pytest.fixture(scope="session")
def kubecheck() -> Path:
    """kwatt's strict offline check against the oldest supported Kubernetes' API types."""
    return ensure_tool("kubecheck")
