"""The client tests start real sidecars with the sidecar tests' helpers, and reap them."""

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "sidecar"))

from sidecar_support import reap


@pytest.fixture(autouse=True)
def _reap_sidecars() -> Iterator[None]:
    yield
    reap()
