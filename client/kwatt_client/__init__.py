"""The kwatt trainer client: the few lines a training loop adds to talk to the kwatt sidecar.

    kw = kwatt_client.Kwatt()
    batch_size = kw.batch_size or 128
    for epoch in range(max_epochs):
        for batch in loader:
            kw.step()
            ...
        kw.epoch_end(val_accuracy)
        if kw.should_stop():
            break
    kw.end()

It never breaks or slows training: without a sidecar, or with a dead or slow
one, a call costs at most one short timeout and the client then goes quiet
(every call a no-op, `should_stop` False). Steps are reported only while the
sidecar is profiling. Standard library only.

Framework helpers live in submodules that import their framework when imported:
`kwatt_client.pytorch`, `kwatt_client.hf` (transformers) and
`kwatt_client.lightning`.
"""

from __future__ import annotations

from kwatt_client.client import DEFAULT_TIMEOUT_S, Kwatt, visible_gpu_uuids

__all__ = ["DEFAULT_TIMEOUT_S", "Kwatt", "visible_gpu_uuids"]
__version__ = "0.1.0"
