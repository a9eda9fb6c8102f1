"""A Hugging Face `transformers.TrainerCallback` (importing this module imports transformers).

Evaluate once per epoch (`eval_strategy="epoch"`): each evaluation is reported
as an epoch end with `metric_key` from its metrics, and a stop from the sidecar
sets `control.should_training_stop`.
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback  # type: ignore[import-not-found]

from kwatt_client.client import Kwatt


class KwattCallback(TrainerCallback):  # type: ignore[misc]
    """Reports steps, evaluations and the end of training to the kwatt sidecar."""

    def __init__(self, kw: Kwatt | None = None, metric_key: str = "eval_accuracy") -> None:
        super().__init__()
        self.kw = kw if kw is not None else Kwatt()
        self.metric_key = metric_key

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.kw.step()
        return control

    def on_evaluate(
        self, args: Any, state: Any, control: Any, metrics: dict[str, Any] | None = None, **kw: Any
    ) -> Any:
        value = (metrics or {}).get(self.metric_key)
        self.kw.epoch_end(float(value) if isinstance(value, int | float) else None)
        if self.kw.should_stop():
            control.should_training_stop = True
        return control

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> Any:
        self.kw.end()
        return control
