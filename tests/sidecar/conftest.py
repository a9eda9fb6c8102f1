"""No sidecar process outlives its test, even a failed one."""

from collections.abc import Iterator

import pytest
from sidecar_support import reap


@pytest.fixture(autouse=True)
def _reap_sidecars() -> Iterator[None]:
    yield
    reap()
