"""Where kwatt keeps what it builds once per machine, and the lock that builds it once.

The sandbox's Go tools and the benchmark's Zeus peer both live under this root, each
built by one process while others wait on a lock file beside it. Standard library only.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO


class CacheError(ValueError):
    """The cache's location is configured wrongly; the message says how to fix it."""


def cache_root() -> Path:
    """$KWATT_CACHE_DIR (absolute), else $XDG_CACHE_HOME/kwatt, else ~/.cache/kwatt."""
    configured = os.environ.get("KWATT_CACHE_DIR")
    if configured:
        root = Path(configured).expanduser()
        if not root.is_absolute():
            raise CacheError(
                f"KWATT_CACHE_DIR must be an absolute path, not {configured!r}; "
                "set it to one, or unset it to use ~/.cache/kwatt."
            )
        return root
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec says to ignore a relative XDG_CACHE_HOME.
    base = Path(xdg) if xdg and Path(xdg).is_absolute() else Path.home() / ".cache"
    return base / "kwatt"


@contextlib.contextmanager
def locked(lock_path: Path, out: TextIO, what: str) -> Iterator[None]:
    """Hold `lock_path` exclusively, saying on `out` when another build of `what` holds it."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            out.write(f"Waiting for another build of {what} (lock {lock_path})…\n")
            out.flush()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # closing the only descriptor releases the lock
