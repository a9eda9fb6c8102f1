"""A Lightning `Callback` (importing this module imports lightning or pytorch_lightning).

Each validation epoch (sanity checks excepted) is reported as an epoch end with
`monitor` from `trainer.callback_metrics`; a stop from the sidecar sets
`trainer.should_stop`. An explicit `monitor` is used as given; without one, the
TrainingJob's `spec.target.metric` (the client's `Kwatt().target_metric`), as
logged with `self.log(...)`; without either, `val_acc`.
"""

from __future__ import annotations

from typing import Any

try:
    from lightning.pytorch import Callback  # type: ignore[import-not-found]
except ImportError:
    from pytorch_lightning import Callback  # type: ignore[import-not-found]

from kwatt_client.client import Kwatt

DEFAULT_MONITOR = "val_acc"


class KwattCallback(Callback):  # type: ignore[misc]
    """Reports steps, validation epochs and the end of training to the kwatt sidecar."""

    def __init__(self, kw: Kwatt | None = None, monitor: str | None = None) -> None:
        super().__init__()
        self.kw = kw if kw is not None else Kwatt()
        if monitor is None:
            name = getattr(self.kw, "target_metric", None)
            monitor = name if isinstance(name, str) and name else DEFAULT_MONITOR
        self.monitor = monitor

    def on_train_batch_start(self, trainer: Any, pl_module: Any, batch: Any, idx: int) -> None:
        self.kw.step()

    def on_validation_epoch_end(self, trainer: Any, pl_module: Any) -> None:
        if getattr(trainer, "sanity_checking", False):
            return
        value = trainer.callback_metrics.get(self.monitor)
        try:
            metric = None if value is None else float(value)
        except (TypeError, ValueError):
            metric = None
        self.kw.epoch_end(metric)
        if self.kw.should_stop():
            trainer.should_stop = True

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        self.kw.end()

    def on_exception(self, trainer: Any, pl_module: Any, exception: BaseException) -> None:
        self.kw.end(failed=True)
