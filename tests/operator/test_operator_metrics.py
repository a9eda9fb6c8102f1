"""The operator's Prometheus metrics, read back the way Prometheus does: over HTTP, parsed."""

from __future__ import annotations

import math
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from kwatt_operator.metrics import MAX_NAME, RESULTS, OperatorMetrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def metrics() -> Iterator[OperatorMetrics]:
    m = OperatorMetrics()
    stop = m.serve("127.0.0.1", 0)
    yield m
    stop()


def scrape(m: OperatorMetrics) -> tuple[str, Samples]:
    """The exposition text and its samples keyed by (name, labels)."""
    assert m.port is not None
    url = f"http://127.0.0.1:{m.port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return text, samples


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


TJ = {"namespace": "ml", "trainingjob": "cifar"}


def test_counters_add_up_across_runs(metrics: OperatorMetrics) -> None:
    metrics.run_finished("ml", "cifar", "reached", 1000.0, 60.0)
    metrics.run_finished("ml", "cifar", "stopped", 250.5, 10)
    metrics.run_finished("ml", "cifar", "reached", 0, 0.0)
    metrics.run_finished("ml", "other-tj", "failed", 5.0, 1.0)
    _, s = scrape(metrics)
    assert value(s, "kwatt_trainingjob_energy_joules_total", **TJ) == pytest.approx(1250.5)
    assert value(s, "kwatt_trainingjob_seconds_total", **TJ) == pytest.approx(70.0)
    assert value(s, "kwatt_trainingjob_runs_total", **TJ, result="reached") == 2
    assert value(s, "kwatt_trainingjob_runs_total", **TJ, result="stopped") == 1
    # Every result exists from the first run on, at 0, so increase() sees the first one.
    assert value(s, "kwatt_trainingjob_runs_total", **TJ, result="failed") == 0
    assert value(s, "kwatt_trainingjob_runs_total", **TJ, result="other") == 0
    other = {"namespace": "ml", "trainingjob": "other-tj"}
    assert value(s, "kwatt_trainingjob_energy_joules_total", **other) == 5.0
    assert value(s, "kwatt_trainingjob_runs_total", **other, result="failed") == 1


def test_results_map_to_the_bounded_set(metrics: OperatorMetrics) -> None:
    for result in RESULTS:
        metrics.run_finished("ml", "cifar", result, 1.0, 1.0)
    metrics.run_finished("ml", "cifar", 'a free string } " \n from input', 1.0, 1.0)
    metrics.run_finished("ml", "cifar", "REACHED", 1.0, 1.0)
    _, s = scrape(metrics)
    seen = {
        dict(labels)["result"]: v
        for (name, labels), v in s.items()
        if name == "kwatt_trainingjob_runs_total"
    }
    assert set(RESULTS) == {
        "reached",
        "stopped",
        "exhausted",
        "failed",
        "interrupted",
        "noreport",
        "deleted",
        "replaced",
    }
    assert seen == {**dict.fromkeys(RESULTS, 1.0), "other": 2.0}


def test_gauges_follow_the_last_run(metrics: OperatorMetrics) -> None:
    metrics.run_started("ml", "cifar", 32, 250)
    _, s = scrape(metrics)
    assert value(s, "kwatt_trainingjob_batch_size", **TJ) == 32
    assert value(s, "kwatt_trainingjob_power_limit_watts", **TJ) == 250
    metrics.run_started("ml", "cifar", 16, 175)
    _, s = scrape(metrics)
    assert value(s, "kwatt_trainingjob_batch_size", **TJ) == 16
    assert value(s, "kwatt_trainingjob_power_limit_watts", **TJ) == 175
    # A profiling run sets no limit: no sample (not NaN), the batch size still shown.
    metrics.run_started("ml", "cifar", 8, None)
    _, s = scrape(metrics)
    assert value(s, "kwatt_trainingjob_batch_size", **TJ) == 8
    assert value(s, "kwatt_trainingjob_power_limit_watts", **TJ) is None
    assert not any(math.isnan(v) for v in s.values())
    # The gauges outlive the run's end.
    metrics.run_finished("ml", "cifar", "reached", 1.0, 1.0)
    _, s = scrape(metrics)
    assert value(s, "kwatt_trainingjob_batch_size", **TJ) == 8


def test_current_choice_and_savings_follow_the_status(metrics: OperatorMetrics) -> None:
    # A profiling run has no limit; once recorded, the status shows the one it kept.
    metrics.current("ml", "cifar", 1024, None)
    _, s = scrape(metrics)
    assert value(s, "kwatt_trainingjob_batch_size", **TJ) == 1024
    assert value(s, "kwatt_trainingjob_power_limit_watts", **TJ) is None
    # Created at 0 at first sight, so increase() counts the first finished run.
    assert value(s, "kwatt_trainingjob_profiling_energy_joules_total", **TJ) == 0
    metrics.current("ml", "cifar", 1024, 175)
    metrics.savings("ml", "cifar", 0.2, -0.25, "estimated")
    _, s = scrape(metrics)
    assert value(s, "kwatt_trainingjob_power_limit_watts", **TJ) == 175
    assert value(s, "kwatt_trainingjob_energy_saving_ratio", **TJ, basis="estimated") == 0.2
    assert value(s, "kwatt_trainingjob_time_saving_ratio", **TJ, basis="estimated") == -0.25
    # The basis changes: one series per TrainingJob, never two.
    metrics.savings("ml", "cifar", 0.1, 0.05, "measured")
    text, s = scrape(metrics)
    assert value(s, "kwatt_trainingjob_energy_saving_ratio", **TJ, basis="measured") == 0.1
    assert 'basis="estimated"' not in text
    # No saving known: no series (not NaN).
    metrics.savings("ml", "cifar", None, None)
    text, _ = scrape(metrics)
    assert "saving_ratio{" not in text
    with pytest.raises(ValueError):
        metrics.savings("ml", "cifar", 0.1, 0.1, "guessed")
    with pytest.raises(ValueError):
        metrics.savings("ml", "cifar", math.nan, 0.1, "measured")


def test_profiling_counters_add_up(metrics: OperatorMetrics) -> None:
    for _ in range(2):
        metrics.run_finished(
            "ml",
            "cifar",
            "reached",
            1000.0,
            100.0,
            profiling_energy_j=50.0,
            profiling_seconds=5.0,
            profiling_extra_energy_j=4.0,
            profiling_extra_seconds=0.5,
        )
    metrics.run_finished("ml", "cifar", "reached", 1000.0, 100.0)  # a run that did not profile
    _, s = scrape(metrics)
    assert value(s, "kwatt_trainingjob_profiling_energy_joules_total", **TJ) == 100.0
    assert value(s, "kwatt_trainingjob_profiling_seconds_total", **TJ) == 10.0
    assert value(s, "kwatt_trainingjob_profiling_extra_energy_joules_total", **TJ) == 8.0
    assert value(s, "kwatt_trainingjob_profiling_extra_seconds_total", **TJ) == 1.0
    with pytest.raises(ValueError):
        metrics.run_finished("ml", "cifar", "reached", 1.0, 1.0, profiling_energy_j=-1.0)
    _, again = scrape(metrics)
    assert value(again, "kwatt_trainingjob_energy_joules_total", **TJ) == 3000.0  # nothing half


def test_reconcile_errors_count_by_reason(metrics: OperatorMetrics) -> None:
    metrics.reconcile_error("ml", "cifar", "InvalidSpec")
    metrics.reconcile_error("ml", "cifar", "InvalidSpec")
    metrics.reconcile_error("ml", "cifar", "JobCreateFailed")
    _, s = scrape(metrics)
    assert value(s, "kwatt_reconcile_errors_total", **TJ, reason="InvalidSpec") == 2
    assert value(s, "kwatt_reconcile_errors_total", **TJ, reason="JobCreateFailed") == 1


def test_reasons_can_be_bounded_at_construction() -> None:
    m = OperatorMetrics(error_reasons=["InvalidSpec"])
    m.reconcile_error("ml", "cifar", "InvalidSpec")
    with pytest.raises(ValueError, match="Unknown error reason"):
        m.reconcile_error("ml", "cifar", "SomethingElse")
    with pytest.raises(ValueError, match="CamelCase"):
        OperatorMetrics(error_reasons=["not camel"])


def test_forget_removes_the_trainingjobs_series(metrics: OperatorMetrics) -> None:
    for name in ("cifar", "keep"):
        metrics.run_started("ml", name, 32, 250)
        metrics.run_finished("ml", name, "reached", 10.0, 2.0, profiling_energy_j=1.0)
        metrics.savings("ml", name, 0.2, 0.1, "measured")
        metrics.reconcile_error("ml", name, "InvalidSpec")
    metrics.forget("ml", "cifar")
    metrics.forget("ml", "cifar")  # harmless twice
    metrics.forget("ml", "never-seen")
    text, s = scrape(metrics)
    assert 'trainingjob="cifar"' not in text
    assert any(dict(labels).get("trainingjob") == "keep" for _, labels in s)
    assert value(s, "kwatt_trainingjob_energy_joules_total", namespace="ml", trainingjob="keep")
    # A TrainingJob recreated under the same name starts again from 0.
    metrics.run_finished("ml", "cifar", "failed", 1.0, 1.0)
    _, s = scrape(metrics)
    assert value(s, "kwatt_trainingjob_energy_joules_total", **TJ) == 1.0
    assert value(s, "kwatt_trainingjob_runs_total", **TJ, result="reached") == 0


def test_help_texts_say_the_unit(metrics: OperatorMetrics) -> None:
    text, _ = scrape(metrics)
    helps = {
        line.split()[2]: line for line in text.splitlines() if line.startswith("# HELP kwatt_")
    }
    assert "joules" in helps["kwatt_trainingjob_energy_joules_total"]
    assert "seconds" in helps["kwatt_trainingjob_seconds_total"]
    assert "watts" in helps["kwatt_trainingjob_power_limit_watts"]
    assert "samples" in helps["kwatt_trainingjob_batch_size"]
    assert "count" in helps["kwatt_trainingjob_runs_total"]
    assert "count" in helps["kwatt_reconcile_errors_total"]
    assert "joules" in helps["kwatt_trainingjob_profiling_energy_joules_total"]
    assert "joules" in helps["kwatt_trainingjob_profiling_extra_energy_joules_total"]
    assert "seconds" in helps["kwatt_trainingjob_profiling_seconds_total"]
    assert "seconds" in helps["kwatt_trainingjob_profiling_extra_seconds_total"]


@pytest.mark.parametrize(
    "energy, seconds",
    [(-1.0, 1.0), (1.0, -0.5), (math.nan, 1.0), (1.0, math.inf), (True, 1.0), ("5", 1.0)],
)
def test_bad_amounts_are_refused(energy: object, seconds: object) -> None:
    m = OperatorMetrics()
    with pytest.raises(ValueError):
        m.run_finished("ml", "cifar", "reached", energy, seconds)  # type: ignore[arg-type]
    # Nothing half-counted.
    assert m.registry.get_sample_value(
        "kwatt_trainingjob_energy_joules_total", {"namespace": "ml", "trainingjob": "cifar"}
    ) in (None, 0.0)


@pytest.mark.parametrize(
    "namespace, name",
    [
        ("ML", "cifar"),
        ("ml", 'x"} 1\nkwatt_fake 9'),
        ("ml", "a" * (MAX_NAME + 1)),
        ("n" * 64, "cifar"),
        ("ml.dot", "cifar"),
        ("", "cifar"),
        ("ml", ""),
        ("ml", "-cifar"),
        ("ml", " cifar"),
    ],
)
def test_hostile_names_are_refused(namespace: str, name: str) -> None:
    m = OperatorMetrics()
    with pytest.raises(ValueError):
        m.run_finished(namespace, name, "reached", 1.0, 1.0)
    with pytest.raises(ValueError):
        m.run_started(namespace, name, 8, None)
    with pytest.raises(ValueError):
        m.reconcile_error(namespace, name, "InvalidSpec")
    with pytest.raises(ValueError):
        m.forget(namespace, name)


def test_longest_valid_names_pass() -> None:
    m = OperatorMetrics()
    long_name = ".".join(["a" * 63] * 3) + "." + "b" * 61
    assert len(long_name) == MAX_NAME
    m.run_finished("n" * 63, long_name, "reached", 1.0, 1.0)


@pytest.mark.parametrize("reason", ["", "invalidSpec", "Invalid Spec", "Bad}", "A" * 65, 3])
def test_bad_reasons_are_refused(reason: str) -> None:
    with pytest.raises(ValueError):
        OperatorMetrics().reconcile_error("ml", "cifar", reason)


@pytest.mark.parametrize(
    "batch_size, limit", [(0, None), (-8, 250), (8.0, None), (True, None), (8, 0), (8, 250.5)]
)
def test_bad_choices_are_refused(batch_size: int, limit: int | None) -> None:
    with pytest.raises(ValueError):
        OperatorMetrics().run_started("ml", "cifar", batch_size, limit)


def test_own_registry_by_default_or_the_given_one() -> None:
    a, b = OperatorMetrics(), OperatorMetrics()  # no duplicate-registration clash
    a.run_finished("ml", "cifar", "reached", 7.0, 1.0)
    labels = {"namespace": "ml", "trainingjob": "cifar"}
    assert b.registry.get_sample_value("kwatt_trainingjob_energy_joules_total", labels) is None
    registry = CollectorRegistry()
    c = OperatorMetrics(registry)
    assert c.registry is registry
    c.run_finished("ml", "cifar", "reached", 3.0, 1.0)
    assert registry.get_sample_value("kwatt_trainingjob_energy_joules_total", labels) == 3.0


def _other_address() -> str | None:
    """A non-loopback IPv4 address of this host, if it has one."""
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
            s.connect(("192.0.2.1", 9))  # TEST-NET-1; UDP connect sends nothing
            addr = str(s.getsockname()[0])
    except OSError:
        return None
    return None if addr.startswith("127.") or addr == "0.0.0.0" else addr


def test_server_binds_loopback_only_and_stops() -> None:
    m = OperatorMetrics()
    stop = m.serve("127.0.0.1", 0)
    port = m.port
    assert m.address == "127.0.0.1"
    assert port is not None and port > 0
    with pytest.raises(RuntimeError, match="Already serving"):
        m.serve("127.0.0.1", 0)
    scrape(m)
    other = _other_address()
    if other is not None:
        with pytest.raises(OSError):
            socket.create_connection((other, port), timeout=2).close()
    stop()
    stop()  # harmless twice
    assert m.port is None
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)
    # It can serve again after stopping.
    stop2 = m.serve("127.0.0.1", 0)
    try:
        scrape(m)
    finally:
        stop2()


def test_bad_port_is_refused() -> None:
    with pytest.raises(ValueError):
        OperatorMetrics().serve("127.0.0.1", 70000)


def test_each_pass_mirrors_the_status_into_the_gauges(metrics: OperatorMetrics) -> None:
    """What the kopf shell does after every pass (handlers._status_metrics): the current
    choice and the saving from the status, so they are back after an operator restart."""
    from kwatt_operator.handlers import _status_metrics

    status = {
        "currentBatchSize": 512,
        "currentPowerLimitWatts": 175,
        "savings": {"energyPercent": 33.5, "timePercent": -7.5, "basis": "estimated"},
    }
    _status_metrics(metrics, "ml", "cifar", status)
    _, s = scrape(metrics)
    assert value(s, "kwatt_trainingjob_batch_size", **TJ) == 512
    assert value(s, "kwatt_trainingjob_power_limit_watts", **TJ) == 175
    assert value(s, "kwatt_trainingjob_energy_saving_ratio", **TJ, basis="estimated") == 0.335
    assert value(s, "kwatt_trainingjob_time_saving_ratio", **TJ, basis="estimated") == -0.075
    # A run in flight that profiles: no limit; the saving stays until the status drops it.
    _status_metrics(metrics, "ml", "cifar", {**status, "currentPowerLimitWatts": None})
    _, s = scrape(metrics)
    assert value(s, "kwatt_trainingjob_power_limit_watts", **TJ) is None
    _status_metrics(metrics, "ml", "cifar", {"currentBatchSize": 512})
    text, _ = scrape(metrics)
    assert "saving_ratio{" not in text
    # A status edited by hand never breaks the pass.
    _status_metrics(metrics, "ml", "cifar", {"currentBatchSize": True, "savings": "lots"})
    _status_metrics(
        metrics, "ml", "cifar", {"savings": {"energyPercent": True, "basis": "measured"}}
    )
    _status_metrics(metrics, "ml", "cifar", {})


def test_a_refused_value_is_named() -> None:
    """The operator logs these when a status written by hand holds them (handlers.py)."""
    m = OperatorMetrics()
    with pytest.raises(ValueError, match=r"seconds must be finite and >= 0, got -1\.0"):
        m.run_finished("ml", "cifar", "reached", 1.0, -1.0)
    with pytest.raises(ValueError, match="time must be a finite number, got nan"):
        m.savings("ml", "cifar", 0.1, math.nan, "measured")
