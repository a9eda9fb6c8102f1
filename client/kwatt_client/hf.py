"""A Hugging Face `transformers.TrainerCallback` (importing this module imports transformers).

Evaluate once per epoch (`eval_strategy="epoch"`): each evaluation is reported
as an epoch end with `metric_key` from its metrics, and a stop from the sidecar
sets `control.should_training_stop`.

Which key: an explicit `metric_key` is used as given. Without one, the
TrainingJob's `spec.target.metric` (the client's `Kwatt().target_metric`) is used
the way the Trainer names evaluation metrics: it prefixes every metric with
`eval_` unless the name already starts with it, so `f1` and `eval_f1` both mean
the key `eval_f1`. Without either, `eval_accuracy`. (With several evaluation
datasets the Trainer prefixes `eval_<dataset>_`: pass `metric_key` then.)
"""

from __future__ import annotations

from typing import Any

from transformers import TrainerCallback  # type: ignore[import-not-found]

from kwatt_client.client import Kwatt

EVAL_PREFIX = "eval_"
DEFAULT_METRIC_KEY = "eval_accuracy"


def eval_key(name: str) -> str:
    """The key the Trainer gives metric `name` in an evaluation's metrics (its `eval_` rule)."""
    return name if name.startswith(EVAL_PREFIX) else EVAL_PREFIX + name


class KwattCallback(TrainerCallback):  # type: ignore[misc]
    """Reports steps, evaluations and the end of training to the kwatt sidecar."""

    def __init__(self, kw: Kwatt | None = None, metric_key: str | None = None) -> None:
        super().__init__()
        self.kw = kw if kw is not None else Kwatt()
        if metric_key is None:
            name = getattr(self.kw, "target_metric", None)
            metric_key = eval_key(name) if isinstance(name, str) and name else DEFAULT_METRIC_KEY
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
