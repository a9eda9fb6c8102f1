"""Helpers shared by the sandbox tests (kept out of conftest so tests can import them)."""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
MANIFESTS = Path(__file__).parent / "manifests"
KUBECTL = shutil.which("kubectl") or "/usr/bin/kubectl"


def eventually(check: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    """Poll `check` until it returns a truthy value (or stops raising) before the deadline."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except AssertionError as exc:
            last = exc
        except Exception as exc:
            last = exc
        time.sleep(interval)
    if last is not None:
        raise AssertionError(f"condition not met within {timeout}s: {last!r}") from last
    raise AssertionError(f"condition not met within {timeout}s")


class Kubectl:
    """Runs kubectl against the sandbox and returns the completed process."""

    def __init__(self, sandbox: Any) -> None:
        self.sandbox = sandbox

    def __call__(
        self, *args: str, input: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [KUBECTL, *args],
            env=self.sandbox.env(),
            capture_output=True,
            text=True,
            input=input,
            timeout=60,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result
