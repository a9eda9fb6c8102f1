"""The Zeus peer's one-time build, offline: pip installs stand-in wheels of every pinned
requirement from a local folder (PIP_NO_INDEX, PIP_FIND_LINKS), so the build runs as it
does for real (a virtual environment, pip, the import check) without the package index.

About 10 s, most of it the virtual environment's own pip; a build without the index is
tested in test_peer.py."""

from __future__ import annotations

import io
import json
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from kwatt_core import cache
from kwatt_core.sim import peer


def wheel(folder: Path, requirement: str) -> None:
    """A pure-Python wheel of `name==version` holding an empty package (and, for zeus, the
    module the build imports to check it)."""
    name, version = requirement.split("==")
    dist = name.replace("-", "_")
    package = {"scikit-learn": "sklearn", "python-dateutil": "dateutil"}.get(name, dist)
    files = {f"{package}/__init__.py": ""}
    if name == "zeus":
        files["zeus/_legacy/__init__.py"] = ""
        files["zeus/_legacy/simulate.py"] = "SIMULATOR = 'stand-in'\n"
    info = f"{dist}-{version}.dist-info"
    files[f"{info}/METADATA"] = f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
    files[f"{info}/WHEEL"] = (
        "Wheel-Version: 1.0\nGenerator: kwatt-tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    )
    files[f"{info}/RECORD"] = "".join(f"{path},,\n" for path in [*files, f"{info}/RECORD"])
    with zipfile.ZipFile(folder / f"{dist}-{version}-py3-none-any.whl", "w") as whl:
        for path, text in files.items():
            whl.writestr(path, text)


@pytest.fixture
def local_index(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for requirement in peer.REQUIREMENTS:
        wheel(wheels, requirement)
    monkeypatch.setenv("KWATT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_FIND_LINKS", str(wheels))
    return tmp_path / "cache"


def test_the_build_installs_the_pins_and_replaces_what_a_dead_build_left(
    local_index: Path,
) -> None:
    final = peer.env_dir()
    # What an interrupted build leaves: a half-filled environment (no record) and a
    # temporary folder beside it.
    (final / "bin").mkdir(parents=True)
    (final / "leftover").write_text("half a build")
    stale = final.parent / f".{final.name}.tmp-dead"
    stale.mkdir()
    assert peer.find_env() is None
    out = io.StringIO()
    started = time.monotonic()
    env = peer.ensure_env(out=out)
    took = time.monotonic() - started
    assert env == peer.PeerEnv(final) and peer.find_env() == env
    assert not (final / "leftover").exists()  # the half build went, the new one took its place
    assert [p.name for p in final.parent.iterdir() if p.name.startswith(".")] == []
    record = json.loads((final / peer.RECORD).read_text())
    assert record["requirements"] == list(peer.REQUIREMENTS)
    assert record["python"] == sys.version and took - 1.0 < record["build_s"] <= took + 0.1
    said = out.getvalue().splitlines()
    assert said[0].startswith("Building the Zeus peer once") and str(final) in said[0]
    assert said[-1].startswith("Built the Zeus peer in ") and said[-1].endswith(" s.")
    again = io.StringIO()
    assert peer.ensure_env(out=again) == env and again.getvalue() == ""  # built once


def test_a_second_builder_waits_and_uses_the_first_ones_build(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `kwatt bench --peer zeus` at once: the second waits on the lock, says so, and
    then uses what the first built instead of building again."""
    monkeypatch.setenv("KWATT_CACHE_DIR", str(tmp_path / "cache"))
    final = peer.env_dir()
    final.parent.mkdir(parents=True)
    lock = final.parent / f"{final.name}.lock"
    second_out = io.StringIO()
    got: list[peer.PeerEnv] = []
    with cache.locked(lock, io.StringIO(), "the Zeus peer"):  # the first build holds it
        waiter = threading.Thread(target=lambda: got.append(peer.ensure_env(out=second_out)))
        waiter.start()
        deadline = time.monotonic() + 10
        while "Waiting" not in second_out.getvalue() and time.monotonic() < deadline:
            time.sleep(0.01)
        assert "Waiting for another build of the Zeus peer" in second_out.getvalue()
        (final / "bin").mkdir(parents=True)  # the first build completes meanwhile
        (final / "bin" / "python").write_text("")
        (final / peer.RECORD).write_text("{}")
    waiter.join(10)
    assert got == [peer.PeerEnv(final)]
    assert "Building" not in second_out.getvalue()
