"""A thin helper for a plain PyTorch loop (it needs no torch itself: any iterable works).

kw = Kwatt()
for epoch in range(epochs):
    for batch in steps(loader, kw):
        ...
    if epoch_done(kw, val_acc):
        break
kw.end()
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

from kwatt_client.client import Kwatt

T = TypeVar("T")


def steps(batches: Iterable[T], kw: Kwatt) -> Iterator[T]:
    """Yield the batches, telling the sidecar each time a step begins (while it profiles)."""
    for batch in batches:
        kw.step()
        yield batch


def epoch_done(kw: Kwatt, metric: float | None = None) -> bool:
    """Report the epoch's validation metric; True when training should stop."""
    kw.epoch_end(metric)
    return kw.should_stop()
