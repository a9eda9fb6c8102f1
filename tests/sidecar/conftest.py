"""No sidecar process outlives its test, even a failed one; `lines` collects the
in-process sidecar's log records."""

import logging
from collections.abc import Iterator

import pytest
from sidecar_support import Lines, reap


@pytest.fixture(autouse=True)
def _reap_sidecars() -> Iterator[None]:
    yield
    reap()


@pytest.fixture
def lines() -> Iterator[Lines]:
    handler = Lines()
    logger = logging.getLogger("kwatt.sidecar")
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    yield handler
    logger.removeHandler(handler)
    logger.setLevel(old_level)
