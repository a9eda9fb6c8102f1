"""Loaded by every Python process that a mutation run's tests start (`tools/mutation.py`
puts this folder on PYTHONPATH); a no-op everywhere else.

mutmut runs each test in-process and learns which tests reach which function from its
trampolines. Much of kwatt is tested through real processes (the sidecar, the `kwatt`
command, the simulated trainer), which import the mutated copy through PYTHONPATH too.
In those processes this module:

- imports mutmut's trampoline up front, so a test that compares the modules loaded
  before and after an import sees no difference that mutation testing made;
- while mutmut collects its stats, writes each function the process reaches to the file
  named by KWATT_MUTATION_HITS, one name a line, so the pytest plugin next to this file
  can credit the test that started the process (mutmut's own record stays in-process);
- asks the kernel to kill the process when its parent dies, so a mutant's test that
  mutmut stops for taking too long leaves no sidecar behind.
"""

from __future__ import annotations

import os


def _die_with_parent() -> None:
    import contextlib
    import ctypes
    import signal

    pr_set_pdeathsig = 1
    with contextlib.suppress(OSError, AttributeError):  # not Linux: nothing to do
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def _record_hits_to(path: str) -> None:
    import mutmut.mutation.trampoline as trampoline

    seen: set[str] = set()

    def record(name: str, caller: str | None = None) -> None:
        if name in seen:
            return
        seen.add(name)
        # One short append per new function: lines from concurrent processes stay whole.
        with open(path, "a", encoding="utf-8") as f:
            f.write(name + "\n")

    setattr(trampoline, "record_trampoline_hit", record)  # noqa: B010 (not re-exported)


def _setup() -> None:
    hits = os.environ.get("KWATT_MUTATION_HITS")
    if not hits or "MUTANT_UNDER_TEST" not in os.environ:
        return
    _die_with_parent()
    try:
        import mutmut.mutation.trampoline  # noqa: F401
    except ImportError:  # a process started without the virtual environment's packages
        return
    if os.environ.get("MUTANT_UNDER_TEST") == "stats":
        _record_hits_to(hits)


_setup()
