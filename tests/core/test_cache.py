"""Where kwatt keeps what it builds once per machine, and the lock that builds it once."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

import pytest

from kwatt_core import cache


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    monkeypatch.delenv("KWATT_CACHE_DIR", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    return tmp_path


def test_the_root_is_kwatt_cache_dir_then_xdg_then_home(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert cache.cache_root() == clean_env / "home" / ".cache" / "kwatt"
    monkeypatch.setenv("XDG_CACHE_HOME", str(clean_env / "xdg"))
    assert cache.cache_root() == clean_env / "xdg" / "kwatt"
    monkeypatch.setenv("KWATT_CACHE_DIR", str(clean_env / "mine"))
    assert cache.cache_root() == clean_env / "mine"  # used as given, no "kwatt" added


def test_a_relative_xdg_cache_home_is_ignored(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The XDG base directory spec: a relative path in XDG_CACHE_HOME is invalid and ignored."""
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/xdg")
    assert cache.cache_root() == clean_env / "home" / ".cache" / "kwatt"


def test_kwatt_cache_dir_may_start_with_a_tilde(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KWATT_CACHE_DIR", "~/builds")
    assert cache.cache_root() == clean_env / "home" / "builds"


def test_a_relative_kwatt_cache_dir_is_refused_with_how_to_fix_it(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KWATT_CACHE_DIR", "builds")
    with pytest.raises(cache.CacheError, match="KWATT_CACHE_DIR must be an absolute path") as e:
        cache.cache_root()
    assert "'builds'" in str(e.value) and "unset it to use ~/.cache/kwatt" in str(e.value)


def test_a_second_builder_waits_for_the_first_and_says_so(tmp_path: Path) -> None:
    lock = tmp_path / "thing.lock"
    order: list[str] = []
    first_out, second_out = io.StringIO(), io.StringIO()
    held = threading.Event()
    release = threading.Event()

    def first() -> None:
        with cache.locked(lock, first_out, "the thing"):
            order.append("first in")
            held.set()
            release.wait(10)
            order.append("first out")

    def second() -> None:
        with cache.locked(lock, second_out, "the thing"):
            order.append("second in")

    a = threading.Thread(target=first)
    a.start()
    assert held.wait(10)
    b = threading.Thread(target=second)
    b.start()
    deadline = time.monotonic() + 10
    while "Waiting" not in second_out.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    said = second_out.getvalue()
    assert "Waiting for another build of the thing" in said and str(lock) in said
    assert order == ["first in"]  # the second is still outside
    release.set()
    a.join(10)
    b.join(10)
    assert order == ["first in", "first out", "second in"]
    assert first_out.getvalue() == ""  # a free lock is taken without a word
    with cache.locked(lock, first_out, "the thing"):  # and is free again afterwards
        pass
    assert first_out.getvalue() == ""
