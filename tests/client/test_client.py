"""The trainer client: stdlib only, never slows training, framework callbacks with fakes."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sidecar_support import make_node, start_sidecar

import kwatt_client
from kwatt_client import Kwatt, client
from kwatt_core import contract
from kwatt_core import simgpu as device

pytestmark = pytest.mark.timeout(30)
CLIENT_ROOT = Path(kwatt_client.__file__).resolve().parents[1]


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])  # closed again: nothing listens


def test_imports_only_the_standard_library() -> None:
    code = (
        "import sys; before = set(sys.modules); import kwatt_client, kwatt_client.pytorch; "
        "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
        "bad = sorted(m for m in new if m not in sys.stdlib_module_names and m != 'kwatt_client');"
        "print(bad); sys.exit(1 if bad else 0)"
    )
    done = subprocess.run(
        [
            sys.executable,
            "-I",
            "-S",
            "-c",
            f"import sys; sys.path.insert(0, {str(CLIENT_ROOT)!r}); {code}",
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stdout + done.stderr


def test_names_agree_with_the_contract() -> None:
    assert client.ENV_PORT == contract.ENV_PORT
    assert client.ENV_BATCH_SIZE == contract.DEFAULT_BATCH_SIZE_ENV
    assert client.DEFAULT_PORT == contract.DEFAULT_PORT
    assert client.ENV_TARGET_METRIC_NAME == contract.ENV_TARGET_METRIC_NAME


def test_no_sidecar_costs_at_most_one_short_timeout() -> None:
    start = time.monotonic()
    kw = Kwatt(port=dead_port(), gpu_uuids=["GPU-x"])
    for _ in range(250):
        kw.step()
        kw.epoch_end(0.5)
        assert kw.should_stop() is False
    kw.end()
    elapsed = time.monotonic() - start
    assert kw.quiet
    assert elapsed < 0.2 + 0.3  # one timeout at most, plus slack; never per call


def test_a_sidecar_that_never_answers_costs_one_timeout() -> None:
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)  # accepts connections but never replies
    try:
        start = time.monotonic()
        kw = Kwatt(port=server.getsockname()[1], gpu_uuids=[], timeout_s=0.2)
        for _ in range(1000):
            kw.should_stop()
        elapsed = time.monotonic() - start
        assert kw.quiet and 0.15 < elapsed < 0.7
    finally:
        server.close()


def test_batch_size_and_uuids_from_env() -> None:
    env = {
        "KWATT_BATCH_SIZE": "256",
        "MY_BS": "32",
        "CUDA_VISIBLE_DEVICES": "0,1",
        "NVIDIA_VISIBLE_DEVICES": "GPU-aaa,GPU-bbb",
        "KWATT_PORT": str(dead_port()),
    }
    kw = Kwatt(env=env, connect=False)
    assert kw.batch_size == 256 and kw.gpu_uuids == ["GPU-aaa", "GPU-bbb"]
    assert Kwatt(env=env, batch_size_env="MY_BS", connect=False).batch_size == 32
    assert Kwatt(env={"KWATT_BATCH_SIZE": "lots"}, connect=False).batch_size is None
    assert kwatt_client.visible_gpu_uuids({"CUDA_VISIBLE_DEVICES": "MIG-1"}) == ["MIG-1"]
    bad = Kwatt(env={"KWATT_PORT": "eighty"}, connect=False)
    assert bad.quiet and bad.should_stop() is False


def test_steps_stop_after_profiling_and_context_manager_reports(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(node, KWATT_WARMUP_STEPS="1", KWATT_MEASURE_STEPS="2")
    with Kwatt(port=sc.port, gpu_uuids=node.uuids) as kw:
        assert kw.profiling
        calls = 0
        while kw.profiling:
            kw.step()
            device.run(node.gpu_dir, node.uuids[0], 1, lambda w: (0.1, w * 0.9))
            calls += 1
            assert calls < 100
        assert calls == 1 + 7 * 3  # first warm-up step, then 3 steps per limit
        kw.step()  # a no-op now
        kw.epoch_end(0.5)
    sc.stop()
    assert sc.report()["result"] == "exhausted" and sc.report()["profile_complete"]


def test_exception_in_with_block_reports_failed(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(node, KWATT_POWER_MODE="observe")
    with pytest.raises(ValueError), Kwatt(port=sc.port, gpu_uuids=node.uuids):
        raise ValueError("loss is NaN")
    sc.stop()
    assert sc.report()["result"] == "failed"


class Recorder:
    """A stand-in for Kwatt that records calls."""

    def __init__(self, stop_after: int = 99) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.stop_after = stop_after

    def step(self) -> None:
        self.calls.append(("step", None))

    def epoch_end(self, metric: float | None = None) -> None:
        self.calls.append(("epoch", metric))

    def should_stop(self) -> bool:
        return sum(c[0] == "epoch" for c in self.calls) >= self.stop_after

    def end(self, failed: bool = False) -> None:
        self.calls.append(("end", failed))


@pytest.fixture
def fake_frameworks(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    transformers = types.ModuleType("transformers")
    transformers.TrainerCallback = type("TrainerCallback", (), {})  # type: ignore[attr-defined]
    lightning = types.ModuleType("lightning")
    pytorch = types.ModuleType("lightning.pytorch")
    pytorch.Callback = type("Callback", (), {})  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "transformers", transformers)
    monkeypatch.setitem(sys.modules, "lightning", lightning)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", pytorch)
    for name in ("kwatt_client.hf", "kwatt_client.lightning"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    yield


def test_frameworks_are_not_imported_by_the_client() -> None:
    assert "transformers" not in sys.modules or "kwatt_client.hf" not in sys.modules
    import importlib

    with pytest.raises(ImportError):
        importlib.import_module("kwatt_client.hf")  # transformers is not installed here


def test_hugging_face_callback(fake_frameworks: None) -> None:
    from kwatt_client.hf import KwattCallback

    rec = Recorder(stop_after=2)
    cb = KwattCallback(kw=rec, metric_key="eval_f1")  # type: ignore[arg-type]
    control = types.SimpleNamespace(should_training_stop=False)
    cb.on_step_begin(None, None, control)
    cb.on_evaluate(None, None, control, metrics={"eval_f1": 0.5})
    assert not control.should_training_stop
    cb.on_evaluate(None, None, control, metrics={"eval_loss": 1.0})
    assert control.should_training_stop
    cb.on_train_end(None, None, control)
    assert rec.calls == [("step", None), ("epoch", 0.5), ("epoch", None), ("end", False)]


def test_lightning_callback(fake_frameworks: None) -> None:
    from kwatt_client.lightning import KwattCallback

    rec = Recorder(stop_after=1)
    cb = KwattCallback(kw=rec, monitor="val_acc")  # type: ignore[arg-type]
    trainer = types.SimpleNamespace(
        sanity_checking=True, callback_metrics={"val_acc": 0.7}, should_stop=False
    )
    cb.on_validation_epoch_end(trainer, None)  # sanity check: not an epoch
    trainer.sanity_checking = False
    cb.on_train_batch_start(trainer, None, None, 0)
    cb.on_validation_epoch_end(trainer, None)
    assert trainer.should_stop
    cb.on_exception(trainer, None, RuntimeError())
    assert rec.calls == [("step", None), ("epoch", 0.7), ("end", True)]


def test_pytorch_helper() -> None:
    from kwatt_client.pytorch import epoch_done, steps

    rec = Recorder(stop_after=1)
    assert list(steps([1, 2, 3], rec)) == [1, 2, 3]  # type: ignore[arg-type]
    assert epoch_done(rec, 0.9)  # type: ignore[arg-type]
    assert rec.calls == [("step", None), ("step", None), ("step", None), ("epoch", 0.9)]


def test_thread_safety_is_not_required_but_calls_do_not_crash() -> None:
    kw = Kwatt(port=dead_port(), gpu_uuids=[])
    threads = [threading.Thread(target=kw.should_stop) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert kw.quiet


# --- the target metric's name (spec.target.metric, KWATT_TARGET_METRIC_NAME) -----------------


class NamedRecorder(Recorder):
    """A Recorder that also carries the name the operator handed the trainer."""

    def __init__(self, target_metric: str | None, stop_after: int = 99) -> None:
        super().__init__(stop_after)
        self.target_metric = target_metric


def test_target_metric_name_from_env() -> None:
    name = contract.ENV_TARGET_METRIC_NAME
    assert Kwatt(env={name: "accuracy"}, connect=False).target_metric == "accuracy"
    assert Kwatt(env={name: " eval_f1\n"}, connect=False).target_metric == "eval_f1"
    assert Kwatt(env={}, connect=False).target_metric is None


@pytest.mark.parametrize("value", ["", "   ", "acc\x00uracy", "a\tb", "x" * 257])
def test_a_bad_target_metric_name_is_ignored_not_an_error(value: str) -> None:
    """The client never breaks training: an unusable name is as good as none."""
    kw = Kwatt(env={contract.ENV_TARGET_METRIC_NAME: value, "KWATT_PORT": "8931"}, connect=False)
    assert kw.target_metric is None and not kw.quiet


def _evaluate(cb: Any, metrics: dict[str, float]) -> float | None:
    control = types.SimpleNamespace(should_training_stop=False)
    cb.on_evaluate(None, None, control, metrics=metrics)
    epochs = [c for c in cb.kw.calls if c[0] == "epoch"]
    return epochs[-1][1]  # type: ignore[no-any-return]


# The Trainer reports compute_metrics' `f1` as `eval_f1` (and `eval_loss` as is):
EVALUATION = {"eval_loss": 0.9, "eval_f1": 81.5, "eval_accuracy": 0.7, "f1": -1.0}


@pytest.mark.parametrize(
    ("name", "explicit", "expected"),
    [
        ("f1", None, 81.5),  # without the prefix: the Trainer's eval_ rule applies
        ("eval_f1", None, 81.5),  # with it: used as is, never eval_eval_f1
        ("loss", None, 0.9),
        (None, None, 0.7),  # no name: eval_accuracy, as before
        ("f1", "eval_accuracy", 0.7),  # an explicit key wins over the TrainingJob's name
        ("f1", "f1", -1.0),  # ... and is used exactly as given
        ("recall", None, None),  # a name the evaluation lacks: an epoch without a metric
        ("", None, 0.7),  # a blank name is no name
    ],
)
def test_hugging_face_callback_looks_the_target_metric_up_by_name(
    fake_frameworks: None, name: str | None, explicit: str | None, expected: float | None
) -> None:
    from kwatt_client.hf import KwattCallback

    rec = NamedRecorder(name)
    cb = KwattCallback(kw=rec, metric_key=explicit)  # type: ignore[arg-type]
    assert _evaluate(cb, EVALUATION) == expected


def test_hugging_face_callback_reads_the_name_from_the_environment(
    fake_frameworks: None,
) -> None:
    """From the variable the operator sets, through a real Kwatt, to the Trainer's key."""
    from kwatt_client.hf import KwattCallback

    env = {contract.ENV_TARGET_METRIC_NAME: "f1", "KWATT_PORT": str(dead_port())}
    assert KwattCallback(kw=Kwatt(env=env, connect=False)).metric_key == "eval_f1"
    bad = {contract.ENV_TARGET_METRIC_NAME: "\x07", "KWATT_PORT": str(dead_port())}
    assert KwattCallback(kw=Kwatt(env=bad, connect=False)).metric_key == "eval_accuracy"


@pytest.mark.parametrize(
    ("name", "explicit", "expected"),
    [
        ("val_f1", None, 0.8),  # the name as logged with self.log(...), no prefix added
        (None, None, 0.7),  # no name: val_acc, as before
        ("val_f1", "val_acc", 0.7),  # an explicit monitor wins
        ("f1", None, None),  # Lightning has no eval_ rule: `f1` is not `val_f1`
        ("", None, 0.7),  # a blank name is no name
    ],
)
def test_lightning_callback_monitors_the_target_metric_by_name(
    fake_frameworks: None, name: str | None, explicit: str | None, expected: float | None
) -> None:
    from kwatt_client.lightning import KwattCallback

    rec = NamedRecorder(name)
    cb = KwattCallback(kw=rec, monitor=explicit)  # type: ignore[arg-type]
    trainer = types.SimpleNamespace(
        sanity_checking=False, callback_metrics={"val_acc": 0.7, "val_f1": 0.8}, should_stop=False
    )
    cb.on_validation_epoch_end(trainer, None)
    assert rec.calls == [("epoch", expected)]


@pytest.mark.parametrize("framework", ["hf", "lightning"])
def test_callbacks_make_their_own_client_from_the_environment(
    fake_frameworks: None, monkeypatch: pytest.MonkeyPatch, framework: str
) -> None:
    """`KwattCallback()` alone: a client from the operator's variables, and its metric name."""
    import importlib

    monkeypatch.setenv("KWATT_PORT", str(dead_port()))
    monkeypatch.setenv(contract.ENV_TARGET_METRIC_NAME, "val_f1")
    cb = importlib.import_module(f"kwatt_client.{framework}").KwattCallback()
    assert isinstance(cb.kw, Kwatt) and cb.kw.quiet  # nothing listens: quiet, no error
    key = cb.metric_key if framework == "hf" else cb.monitor
    assert key == ("eval_val_f1" if framework == "hf" else "val_f1")


def test_callbacks_take_a_client_that_knows_no_metric_name(fake_frameworks: None) -> None:
    """A stand-in client without `target_metric` (an older client, a wrapper): defaults."""
    from kwatt_client import hf, lightning

    assert hf.KwattCallback(kw=Recorder()).metric_key == "eval_accuracy"  # type: ignore[arg-type]
    assert lightning.KwattCallback(kw=Recorder()).monitor == "val_acc"  # type: ignore[arg-type]


def test_lightning_callback_without_sanity_checks_or_with_odd_values(
    fake_frameworks: None,
) -> None:
    """A trainer that has no `sanity_checking` (older Lightning) reports every validation
    epoch; a logged value that is no number is an epoch without a metric."""
    from kwatt_client.lightning import KwattCallback

    rec = Recorder()
    cb = KwattCallback(kw=rec)  # type: ignore[arg-type]
    trainer = types.SimpleNamespace(callback_metrics={"val_acc": 0.7}, should_stop=False)
    cb.on_validation_epoch_end(trainer, None)
    trainer.callback_metrics = {"val_acc": "n/a"}
    cb.on_validation_epoch_end(trainer, None)
    cb.on_train_end(trainer, None)
    assert rec.calls == [("epoch", 0.7), ("epoch", None), ("end", False)]
    assert not trainer.should_stop
