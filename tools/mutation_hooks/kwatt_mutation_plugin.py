"""pytest plugin for mutation runs (`tools/mutation.py` loads it with `-p`).

- Deselects every test that needs the session's cluster (the `cluster` fixture, directly
  or through `sandbox`, `namespace`, `api_client`...): those start the sandbox's
  Kubernetes control plane, far too slow to run once per mutant. The exceptions are the
  test files listed in KWATT_MUTATION_CLUSTER_TESTS, which run against the cluster that
  `tools/mutation.py` started once for the part (KWATT_TEST_KUBECONFIG), and only for the
  mutants of the modules in KWATT_MUTATION_CLUSTER_MODULES. Also deselects the node
  ids listed, one a line, in KWATT_MUTATION_DESELECT (tests that cannot run under
  mutmut's trampolines; `tools/mutation.py` says why for each).
- Makes Hypothesis deterministic (derandomized, no example database), so a run's
  verdicts do not depend on what an earlier mutant taught the database.
- While mutmut collects its stats, credits each test with the functions that the
  processes it started reached (written by `sitecustomize.py` next to this file), and
  writes each test file's whole time (setup and teardown included, which mutmut's own
  figures leave out) to KWATT_MUTATION_DURATIONS.
- For each mutant, runs the cheapest test files first (a file's tests stay together, so
  module fixtures are set up once): with `-x`, a mutant that a cheap test kills costs
  only that test.
"""

from __future__ import annotations

import json
import os
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest

CLUSTER_FIXTURE = "cluster"
_seconds_by_file: defaultdict[str, float] = defaultdict(float)


def pytest_configure(config: pytest.Config) -> None:
    try:
        from hypothesis import settings
    except ImportError:
        return
    settings.register_profile("kwatt-mutation", derandomize=True, database=None, deadline=None)
    settings.load_profile("kwatt-mutation")


def _cluster_allowed() -> set[str]:
    """The test files that may use the cluster for the mutant under test (none without one)."""
    if not os.environ.get("KWATT_TEST_KUBECONFIG"):
        return set()
    files = set(os.environ.get("KWATT_MUTATION_CLUSTER_TESTS", "").split())
    modules = tuple(f"{m}." for m in os.environ.get("KWATT_MUTATION_CLUSTER_MODULES", "").split())
    mutant = os.environ.get("MUTANT_UNDER_TEST", "")
    # Stats, the clean run and the forced failure run them all; a mutant, only if they judge it.
    if "__mutmut_" in mutant and not mutant.startswith(modules):
        return set()
    return files


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    listed = set(os.environ.get("KWATT_MUTATION_DESELECT", "").split())
    cluster_files = _cluster_allowed()
    keep: list[pytest.Item] = []
    dropped: list[pytest.Item] = []
    for item in items:
        names = getattr(item, "fixturenames", ())
        needs_cluster = CLUSTER_FIXTURE in names and _file(item.nodeid) not in cluster_files
        if needs_cluster or item.nodeid in listed:
            dropped.append(item)
        else:
            keep.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
    items[:] = _cheapest_files_first(keep)


def _file(nodeid: str) -> str:
    return nodeid.removeprefix("mutants/").partition("::")[0]


def _cheapest_files_first(items: list[pytest.Item]) -> list[pytest.Item]:
    name = os.environ.get("KWATT_MUTATION_DURATIONS")
    if not name or not Path(name).exists():
        return items
    seconds: dict[str, float] = json.loads(Path(name).read_text())
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        first.setdefault(_file(item.nodeid), index)
    return sorted(
        items,
        key=lambda item: (seconds.get(_file(item.nodeid), float("inf")), first[_file(item.nodeid)]),
    )


def _collecting_stats() -> bool:
    return os.environ.get("MUTANT_UNDER_TEST") == "stats"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if _collecting_stats():
        _seconds_by_file[_file(report.nodeid)] += report.duration


def pytest_sessionfinish(session: pytest.Session) -> None:
    name = os.environ.get("KWATT_MUTATION_DURATIONS")
    if name and _collecting_stats() and _seconds_by_file:
        Path(name).write_text(json.dumps(_seconds_by_file, indent=1, sort_keys=True))


def _hits_file() -> Path | None:
    if not _collecting_stats():
        return None
    name = os.environ.get("KWATT_MUTATION_HITS")
    return Path(name) if name else None


def pytest_runtest_logstart(nodeid: str, location: Any) -> None:
    hits = _hits_file()
    if hits is not None:
        hits.write_text("")


def pytest_runtest_logfinish(nodeid: str, location: Any) -> None:
    """After the test's teardown (its processes are reaped by then): credit the test."""
    hits = _hits_file()
    if hits is None or not hits.exists():
        return
    from mutmut.state import state

    test = nodeid.removeprefix("mutants/")
    for name in set(hits.read_text(encoding="utf-8").split()):
        state().tests_by_mangled_function_name[name].add(test)
    hits.write_text("")
