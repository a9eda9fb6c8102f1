"""The sidecar's Prometheus series, rendered by prometheus-client from one reading.

Labels are `namespace`, `pod` (downward API) and `UUID` (the GPU UUID, spelled
as the DCGM exporter spells its label), so kwatt's series join DCGM's; and, when the
operator started the sidecar (KWATT_JOB, KWATT_RUN), `trainingjob` and `run`, the
TrainingJob's name as the operator's own series spell it and the run's number, so a
dashboard groups a job's runs without matching Pod names. The profiling phase is one
series per phase (six at most) with 1 on the current one.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

PHASES = ("waiting", "warmup", "measure", "done", "observe", "ended")
# generate_latest writes the classic text format; say so whatever the library's default.
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass(frozen=True)
class GpuReading:
    uuid: str
    energy_j: float  # since the trainer's hello
    power_w: float
    limit_w: float


@dataclass(frozen=True)
class Reading:
    """Everything one scrape shows, read under the Sidecar's lock."""

    namespace: str
    pod: str
    phase: str
    epochs: int
    cost: float | None = None
    gpus: list[GpuReading] = field(default_factory=list)
    restore_failures: Mapping[str, int] = field(default_factory=dict)  # by GPU UUID
    trainingjob: str = ""  # the TrainingJob's name; empty: not started by the operator
    run: str = ""  # the run's number
    carbon: CarbonReading | None = None  # carbon-aware runs only


@dataclass(frozen=True)
class CarbonReading:
    """The run's carbon awareness (docs/carbon.md): what the grid said, what the run emitted."""

    intensity_g_per_kwh: float | None  # the last good reading; None before any
    grams: float  # CO2 of the run so far (priced once a reading came)
    baseline_grams: float  # the same work at kwatt's ordinary limit over the same hours
    failures: int  # fetches that failed or answered nonsense


def trainingjob_name(job: str) -> str:
    """The name in KWATT_JOB's `namespace/name` (the whole value when it has no slash)."""
    return job.rpartition("/")[2]


class _Snapshot:
    """A collector that yields the families of one reading (a registry per scrape)."""

    def __init__(self, reading: Reading) -> None:
        self.reading = reading

    def collect(self) -> Iterator[Metric]:
        r = self.reading
        # The same label names on every series of one sidecar: with its TrainingJob when known.
        names = (
            ["namespace", "trainingjob", "run", "pod"] if r.trainingjob else ["namespace", "pod"]
        )
        run = [r.namespace, r.trainingjob, r.run, r.pod] if r.trainingjob else [r.namespace, r.pod]
        gpu_labels = [*names, "UUID"]
        energy = CounterMetricFamily(
            "kwatt_gpu_energy_joules",
            "Energy used by the GPU since the trainer said hello.",
            labels=gpu_labels,
        )
        power = GaugeMetricFamily(
            "kwatt_gpu_power_watts", "Power draw of the GPU.", labels=gpu_labels
        )
        limit = GaugeMetricFamily(
            "kwatt_gpu_power_limit_watts", "Power limit of the GPU.", labels=gpu_labels
        )
        for gpu in r.gpus:
            energy.add_metric([*run, gpu.uuid], gpu.energy_j)
            power.add_metric([*run, gpu.uuid], gpu.power_w)
            limit.add_metric([*run, gpu.uuid], gpu.limit_w)
        yield from (energy, power, limit)
        phase = GaugeMetricFamily(
            "kwatt_profiling_phase",
            "1 for the phase the run is in, 0 for the others.",
            labels=[*names, "phase"],
        )
        for name in PHASES:
            phase.add_metric([*run, name], 1 if name == r.phase else 0)
        yield phase
        epochs = GaugeMetricFamily(
            "kwatt_run_epochs", "Epochs the trainer has reported.", labels=names
        )
        epochs.add_metric(run, r.epochs)
        yield epochs
        failures = CounterMetricFamily(
            "kwatt_sidecar_restore_failures",
            "Default power limits the sidecar failed to restore on the GPU (its own or a "
            "predecessor's); the GPU is left below its default.",
            labels=gpu_labels,
        )
        for uuid in sorted({g.uuid for g in r.gpus} | set(r.restore_failures)):
            failures.add_metric([*run, uuid], r.restore_failures.get(uuid, 0))
        yield failures
        if r.cost is not None:
            cost = GaugeMetricFamily(
                "kwatt_run_cost",
                "Energy-time cost of the run so far (joule-equivalents).",
                labels=names,
            )
            cost.add_metric(run, r.cost)
            yield cost
        if r.carbon is not None:
            yield from _carbon(r.carbon, names, run)


def _carbon(c: CarbonReading, names: list[str], run: list[str]) -> Iterator[Metric]:
    if c.intensity_g_per_kwh is not None:
        intensity = GaugeMetricFamily(
            "kwatt_carbon_intensity_grams_per_kwh",
            "The grid's carbon intensity the run last read (g CO2/kWh).",
            labels=names,
        )
        intensity.add_metric(run, c.intensity_g_per_kwh)
        yield intensity
    for name, text, value in (
        ("kwatt_carbon_emissions_grams", "CO2 of the run's GPU energy (g).", c.grams),
        (
            "kwatt_carbon_baseline_emissions_grams",
            "CO2 of the same work at kwatt's limit without carbon awareness, same hours (g).",
            c.baseline_grams,
        ),
        (
            "kwatt_carbon_source_failures",
            "Carbon-intensity fetches that failed or answered nonsense; the limit stayed.",
            float(c.failures),
        ),
    ):
        family = CounterMetricFamily(name, text, labels=names)
        family.add_metric(run, value)
        yield family


def render(reading: Reading) -> bytes:
    """The text exposition format (0.0.4) of one reading."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Snapshot(reading))
    return generate_latest(registry)
