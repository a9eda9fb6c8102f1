"""Trace reading: hand-computed expectations and clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwatt_core.cost import CostModel
from kwatt_core.sim.trace import TraceError, load_workloads

from .conftest import TRACE_DIR


def test_tiny_trace_joins_power_and_seed_runs(tiny_trace: Path) -> None:
    (trace,) = load_workloads(tiny_trace, "t4")
    assert trace.spec.name == "cifar100"
    assert trace.batch_sizes == (64, 128)
    assert trace.limits_w == (200, 250) and trace.max_limit_w == 250
    # Only rows of the workload's target metric (0.6) count; an empty epoch is a miss.
    assert trace.paths[64] == (10.0, 20.0, None)
    # The default 1024 is not in this GPU's trace: the largest size below it stands in.
    assert trace.default_batch_size == 128


def test_expected_cost_counts_misses_and_retries(tiny_trace: Path) -> None:
    (trace,) = load_workloads(tiny_trace, "t4")
    model = CostModel(0.5, 250.0)
    cost, energy, time = trace.expected(model, 64, 200)
    # Epochs per try: 10, 20 and a miss that burns all 100; 2 in 3 tries reach the target.
    # time = (130 / 3) * 2 s / (2 / 3) = 130 s; energy = 130 s * 100 W.
    assert time == pytest.approx(130.0)
    assert energy == pytest.approx(13_000.0)
    assert cost == pytest.approx(0.5 * 13_000.0 + 0.5 * 250.0 * 130.0)
    # 128 @ 200 W: 30 epochs of 1 s at 150 W, always reached: 0.5*4500 + 125*30 = 6000.
    assert trace.expected(model, 128, 200)[0] == pytest.approx(6000.0)
    assert trace.best_config(model) == (128, 200, pytest.approx(6000.0))


def test_bundled_traces_hold_the_six_workloads() -> None:
    v100 = {t.spec.name: t for t in load_workloads(TRACE_DIR, "v100")}
    assert sorted(v100) == sorted(
        ["cifar100", "imagenet", "squad", "librispeech", "movielens-1m", "sentiment140"]
    )
    assert v100["cifar100"].limits_w == (100, 125, 150, 175, 200, 225, 250)
    assert len(v100["librispeech"].batch_sizes) == 15
    p100 = {t.spec.name: t for t in load_workloads(TRACE_DIR, "p100")}
    assert p100["imagenet"].default_batch_size == 128  # 256 did not fit the P100


def test_missing_directory(tmp_path: Path) -> None:
    with pytest.raises(TraceError, match="does not exist"):
        load_workloads(tmp_path / "nowhere", "v100")


def test_unknown_gpu_lists_the_known_ones(tiny_trace: Path) -> None:
    with pytest.raises(TraceError, match=r"Unknown GPU 'a100'.*GPUs in .*: t4"):
        load_workloads(tiny_trace, "a100")


def test_unknown_workload(tiny_trace: Path) -> None:
    with pytest.raises(TraceError, match="Unknown workload 'mnist'"):
        load_workloads(tiny_trace, "t4", ["mnist"])


def test_missing_train_file_is_named(tiny_trace: Path) -> None:
    (tiny_trace / "summary_train.csv").unlink()
    with pytest.raises(TraceError, match=r"summary_train\.csv does not exist"):
        load_workloads(tiny_trace, "t4")


def test_bad_number_names_file_line_and_column(tiny_trace: Path) -> None:
    power = tiny_trace / "summary_power_t4.csv"
    power.write_text(power.read_text().replace("1.5,160.0", "fast,160.0"))
    with pytest.raises(TraceError, match=r"summary_power_t4\.csv line 3: column 'time_per_epoch'"):
        load_workloads(tiny_trace, "t4")


def test_missing_column_is_named(tiny_trace: Path) -> None:
    power = tiny_trace / "summary_power_t4.csv"
    power.write_text(power.read_text().replace("average_power", "avg_power"))
    with pytest.raises(TraceError, match="lacks the column"):
        load_workloads(tiny_trace, "t4")


def test_a_size_traced_at_few_limits_is_left_out_with_a_note(tiny_trace: Path) -> None:
    power = tiny_trace / "summary_power_t4.csv"
    # A third size traced at 250 W only: keeping it would cut 200 W from every size.
    power.write_text(power.read_text() + "cifar100,shufflenetv2,256,adadelta,250,0.5,220.0\n")
    train = tiny_trace / "summary_train.csv"
    train.write_text(train.read_text() + "cifar100,shufflenetv2,256,adadelta,1e-1,1,0.6,40\n")
    (trace,) = load_workloads(tiny_trace, "t4")
    assert trace.batch_sizes == (64, 128) and trace.limits_w == (200, 250)
    assert trace.notes == ("cifar100: batch size 256 left out, traced at 1 of 2 power limits",)


@pytest.mark.parametrize(
    ("old", "new", "line"),
    [
        ("64,adadelta,200,2.0", "0,adadelta,200,2.0", 2),  # a batch size of 0
        ("128,adadelta,250,0.9", "128,adadelta,0,0.9", 5),  # a power limit of 0
        ("200,1.0,150.0", "200,0,150.0", 4),  # an epoch that takes no time
    ],
)
def test_a_zero_where_a_size_goes_is_refused_with_its_line(
    tiny_trace: Path, old: str, new: str, line: int
) -> None:
    power = tiny_trace / "summary_power_t4.csv"
    assert old in power.read_text()
    power.write_text(power.read_text().replace(old, new))
    with pytest.raises(TraceError, match=rf"line {line}: batch_size, power_limit and time_per"):
        load_workloads(tiny_trace, "t4")


def test_a_named_workload_the_trace_lacks_is_named(tiny_trace: Path) -> None:
    """SQuAD's power is traced here, but none of its seed runs."""
    power = tiny_trace / "summary_power_t4.csv"
    power.write_text(power.read_text() + "squad,bert_base_uncased,32,adamw,200,10.0,150.0\n")
    with pytest.raises(TraceError, match="Workload 'squad' has no batch size in both"):
        load_workloads(tiny_trace, "t4", ["squad"])


def test_when_most_sizes_lack_a_limit_the_limit_goes_instead(tiny_trace: Path) -> None:
    """Sizes are left out only when at least half cover every limit; here one of three
    does, so the limits not traced for every size are left out instead."""
    power = tiny_trace / "summary_power_t4.csv"
    rows = [
        "cifar100,shufflenetv2,256,adadelta,200,0.6,190.0",
        "cifar100,shufflenetv2,128,adadelta,150,1.2,120.0",
    ]
    # 64: 200 and 250 W; 128: 150, 200 and 250 W; 256: 200 W only.
    power.write_text(power.read_text() + "\n".join(rows) + "\n")
    train = tiny_trace / "summary_train.csv"
    train.write_text(train.read_text() + "cifar100,shufflenetv2,256,adadelta,1e-1,1,0.6,40\n")
    (trace,) = load_workloads(tiny_trace, "t4")
    assert trace.batch_sizes == (64, 128, 256) and trace.limits_w == (200,)
    assert trace.notes == ("cifar100: limits [150, 250] left out, not traced for every batch size",)


def test_iterations_per_epoch_round_up() -> None:
    """A last, partial batch is a step too; a batch larger than the dataset is one step."""
    from kwatt_core.sim.workloads import WORKLOADS

    cifar = next(w for w in WORKLOADS if w.name == "cifar100")  # 50,000 images
    assert cifar.iterations_per_epoch(64) == 782
    assert cifar.iterations_per_epoch(50_000) == 1
    assert cifar.iterations_per_epoch(1_000_000) == 1
