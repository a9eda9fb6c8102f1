"""The sidecar's environment, read as docs/sidecar.md's table says: each variable's default,
the edges of its accepted range (taken), the values just outside (refused, naming the
variable), and empty as unset. Pure: `config.load` on a dict, no process."""

from __future__ import annotations

from pathlib import Path

import pytest

from kwatt_sidecar import config as configlib
from kwatt_sidecar.config import ConfigError, failure_report, load


def test_an_empty_environment_gives_the_documented_defaults() -> None:
    cfg = load({})
    s = cfg.settings
    assert s.mode == "optimize"
    assert (s.cached_limit_w, s.fixed_limit_w) == (None, None)
    assert s.batch_size == 1
    assert s.eta == 0.5
    assert s.cost_threshold is None
    assert (s.target_metric, s.higher_is_better) == (None, True)
    assert s.max_epochs is None
    assert (s.warmup_steps, s.measure_steps) == (10, 40)
    assert (cfg.port, cfg.metrics_port) == (8931, 8932)
    assert cfg.termination_path == Path("/dev/termination-log")
    assert cfg.state_dir == Path("/var/run/kwatt")
    assert cfg.sample_interval_s == 0.1
    assert cfg.log_level == "INFO"
    assert (cfg.namespace, cfg.pod, cfg.job, cfg.run) == ("", "", "", "")


def test_empty_values_mean_unset() -> None:
    names = [
        "KWATT_POWER_MODE",
        "KWATT_CACHED_LIMIT_W",
        "KWATT_BATCH_SIZE",
        "KWATT_ETA",
        "KWATT_COST_THRESHOLD",
        "KWATT_TARGET_METRIC",
        "KWATT_TARGET_HIGHER_IS_BETTER",
        "KWATT_MAX_EPOCHS",
        "KWATT_WARMUP_STEPS",
        "KWATT_MEASURE_STEPS",
        "KWATT_PORT",
        "KWATT_METRICS_PORT",
        "KWATT_TERMINATION_PATH",
        "KWATT_STATE_DIR",
        "KWATT_SAMPLE_INTERVAL_S",
        "KWATT_LOG_LEVEL",
    ]
    assert load(dict.fromkeys(names, "")) == load({})


def test_values_are_read_as_given() -> None:
    cfg = load(
        {
            "KWATT_POWER_MODE": "observe",
            "KWATT_CACHED_LIMIT_W": "175",
            "KWATT_BATCH_SIZE": "512",
            "KWATT_ETA": "0.25",
            "KWATT_COST_THRESHOLD": "1234.5",
            "KWATT_TARGET_METRIC": "-0.75",
            "KWATT_TARGET_HIGHER_IS_BETTER": "no",
            "KWATT_MAX_EPOCHS": "90",
            "KWATT_WARMUP_STEPS": "3",
            "KWATT_MEASURE_STEPS": "7",
            "KWATT_PORT": "9000",
            "KWATT_METRICS_PORT": "9001",
            "KWATT_TERMINATION_PATH": "/tmp/report",
            "KWATT_STATE_DIR": "/srv/kwatt",
            "KWATT_SAMPLE_INTERVAL_S": "2.5",
            "KWATT_LOG_LEVEL": "warning",
            "POD_NAMESPACE": "ml",
            "POD_NAME": "cifar-run-1-abcde",
            "KWATT_JOB": "ml/cifar",
            "KWATT_RUN": "1",
        }
    )
    s = cfg.settings
    assert (s.mode, s.cached_limit_w, s.batch_size) == ("observe", 175, 512)
    assert (s.eta, s.cost_threshold) == (0.25, 1234.5)
    assert (s.target_metric, s.higher_is_better, s.max_epochs) == (-0.75, False, 90)
    assert (s.warmup_steps, s.measure_steps) == (3, 7)
    assert (cfg.port, cfg.metrics_port) == (9000, 9001)
    assert cfg.termination_path == Path("/tmp/report")
    assert cfg.state_dir == Path("/srv/kwatt")
    assert (cfg.sample_interval_s, cfg.log_level) == (2.5, "WARNING")
    assert (cfg.namespace, cfg.pod) == ("ml", "cifar-run-1-abcde")
    assert (cfg.job, cfg.run) == ("ml/cifar", "1")


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("yes", True), ("false", False), ("0", False), ("no", False)],
)
def test_higher_is_better_takes_the_six_words(text: str, expected: bool) -> None:
    assert load({"KWATT_TARGET_HIGHER_IS_BETTER": text}).settings.higher_is_better is expected


def test_limits_are_rounded_to_whole_watts() -> None:
    fixed = load({"KWATT_POWER_MODE": "fixed", "KWATT_FIXED_LIMIT_W": "130.6"}).settings
    assert (fixed.mode, fixed.fixed_limit_w) == ("fixed", 131)
    assert load({"KWATT_CACHED_LIMIT_W": "174.4"}).settings.cached_limit_w == 174


def test_the_log_level_may_be_written_in_any_case() -> None:
    for text, level in [("debug", "DEBUG"), ("Info", "INFO"), ("ERROR", "ERROR")]:
        assert load({"KWATT_LOG_LEVEL": text}).log_level == level


def test_port_zero_means_any_free_port_for_both() -> None:
    cfg = load({"KWATT_PORT": "0", "KWATT_METRICS_PORT": "0"})
    assert (cfg.port, cfg.metrics_port) == (0, 0)
    # One port given, the other left to its default: they must still differ.
    with pytest.raises(ConfigError, match="KWATT_METRICS_PORT"):
        load({"KWATT_PORT": "8932"})
    with pytest.raises(ConfigError, match="KWATT_PORT"):
        load({"KWATT_METRICS_PORT": "8931"})


# The accepted column, both edges: (variable, lowest, highest) taken, beyond refused.
EDGES = [
    ("KWATT_CACHED_LIMIT_W", "1", "10000", "0.9", "10000.1"),
    ("KWATT_BATCH_SIZE", "1", "2147483647", "0", "2147483648"),
    ("KWATT_ETA", "0", "1", "-0.001", "1.001"),
    ("KWATT_COST_THRESHOLD", "1e-9", "1e15", "0", "1.0001e15"),
    ("KWATT_MAX_EPOCHS", "1", "1000000", "0", "1000001"),
    ("KWATT_WARMUP_STEPS", "0", "1000000", "-1", "1000001"),
    ("KWATT_MEASURE_STEPS", "1", "1000000", "0", "1000001"),
    ("KWATT_PORT", "1", "65535", "-1", "65536"),
    ("KWATT_METRICS_PORT", "1", "65535", "-1", "65536"),
    ("KWATT_SAMPLE_INTERVAL_S", "0.01", "60", "0.0099", "60.01"),
]


@pytest.mark.parametrize(
    ("name", "low", "high", "below", "above"), EDGES, ids=[e[0] for e in EDGES]
)
def test_each_range_is_taken_to_its_edges_and_no_further(
    name: str, low: str, high: str, below: str, above: str
) -> None:
    for text in (low, high):
        load({name: text})
    for text in (below, above):
        with pytest.raises(ConfigError) as refused:
            load({name: text})
        sentence = str(refused.value)
        assert sentence.startswith(f"{name}=") and sentence.endswith(".")


def test_the_fixed_limit_has_the_same_range_as_the_cached_one() -> None:
    for text in ("1", "10000"):
        load({"KWATT_POWER_MODE": "fixed", "KWATT_FIXED_LIMIT_W": text})
    for text in ("0.9", "10000.1"):
        with pytest.raises(ConfigError, match=r"^KWATT_FIXED_LIMIT_W="):
            load({"KWATT_POWER_MODE": "fixed", "KWATT_FIXED_LIMIT_W": text})
    with pytest.raises(ConfigError, match="KWATT_FIXED_LIMIT_W"):
        load({"KWATT_POWER_MODE": "fixed"})


def test_the_documented_sentence() -> None:
    with pytest.raises(ConfigError) as refused:
        load({"KWATT_MEASURE_STEPS": "0"})
    assert str(refused.value) == "KWATT_MEASURE_STEPS=0 is outside the range 1 to 1000000."


@pytest.mark.parametrize(
    ("name", "text", "words"),
    [
        ("KWATT_BATCH_SIZE", "64.0", "is not an integer"),
        ("KWATT_BATCH_SIZE", "many", "is not an integer"),
        ("KWATT_ETA", "half", "is not a number"),
        ("KWATT_TARGET_METRIC", "nan", "is not a finite number"),
        ("KWATT_TARGET_METRIC", "inf", "is not a finite number"),
        ("KWATT_TARGET_METRIC", "-inf", "is not a finite number"),
        ("KWATT_ETA", "NaN", "is not a finite number"),
        ("KWATT_TARGET_HIGHER_IS_BETTER", "maybe", "must be true or false"),
        ("KWATT_POWER_MODE", "turbo", "is not a power mode"),
        ("KWATT_LOG_LEVEL", "verbose", "is not a log level"),
        ("KWATT_PORT", "http", "is not an integer"),
    ],
)
def test_words_where_numbers_go_are_refused_by_name(name: str, text: str, words: str) -> None:
    with pytest.raises(ConfigError) as refused:
        load({name: text})
    sentence = str(refused.value)
    assert sentence.startswith(name) and words in sentence and sentence.endswith(".")


def test_a_start_failure_is_a_failed_run_of_this_batch_size_and_mode() -> None:
    report = failure_report(
        {"KWATT_BATCH_SIZE": "64", "KWATT_POWER_MODE": "Observe"}, "KWATT_ETA=2 is out."
    )
    assert (report.result, report.epochs, report.energy_j, report.time_s) == ("failed", 0, 0, 0)
    assert (report.batch_size, report.mode, report.note) == (64, "observe", "KWATT_ETA=2 is out.")
    # A batch size or mode that is itself the problem: the defaults, never a second failure.
    bad = failure_report({"KWATT_BATCH_SIZE": "0", "KWATT_POWER_MODE": "turbo"}, "Bad.")
    assert (bad.batch_size, bad.mode) == (1, "optimize")
    assert failure_report({}, "Bad.").batch_size == 1


def test_the_termination_path_is_read_even_when_the_rest_is_bad() -> None:
    env = {"KWATT_TERMINATION_PATH": "/tmp/here", "KWATT_ETA": "2"}
    assert configlib.termination_path(env) == Path("/tmp/here")
    assert configlib.termination_path({}) == Path("/dev/termination-log")
