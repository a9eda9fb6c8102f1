"""Prometheus text format 0.0.4, by hand: a handful of series, labels join-able with DCGM.

Labels are `namespace`, `pod` (downward API) and `UUID` (the GPU UUID, spelled
as the DCGM exporter spells its label). The profiling phase is one series per
phase (six at most) with 1 on the current one.
"""

from __future__ import annotations

PHASES = ("waiting", "warmup", "measure", "done", "observe", "ended")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    inner = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + inner + "}"


def _num(value: float) -> str:
    return repr(float(value))


def render(
    namespace: str,
    pod: str,
    gpus: list[tuple[str, float, float, float]],
    phase: str,
    cost: float | None,
    epochs: int,
    restore_failures: int = 0,
) -> str:
    """`gpus`: (UUID, energy J since the run began, power W, limit W) per GPU.

    `restore_failures` counts default limits this sidecar failed to put back (its own or a
    predecessor's): a GPU left below its default slows whatever runs on it next, so it is
    worth an alert, not only a log line."""
    out: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        out.append(f"# HELP {name} {help_text}")
        out.append(f"# TYPE {name} {kind}")

    family(
        "kwatt_gpu_energy_joules_total",
        "counter",
        "Energy used by the GPU since the trainer said hello.",
    )
    for uuid, energy, _, _ in gpus:
        out.append(
            f"kwatt_gpu_energy_joules_total{_labels(namespace=namespace, pod=pod, UUID=uuid)} "
            f"{_num(energy)}"
        )
    family("kwatt_gpu_power_watts", "gauge", "Power draw of the GPU.")
    for uuid, _, power, _ in gpus:
        out.append(
            f"kwatt_gpu_power_watts{_labels(namespace=namespace, pod=pod, UUID=uuid)} {_num(power)}"
        )
    family("kwatt_gpu_power_limit_watts", "gauge", "Power limit of the GPU.")
    for uuid, _, _, limit in gpus:
        out.append(
            f"kwatt_gpu_power_limit_watts{_labels(namespace=namespace, pod=pod, UUID=uuid)} "
            f"{_num(limit)}"
        )
    family("kwatt_profiling_phase", "gauge", "1 for the phase the run is in, 0 for the others.")
    for name in PHASES:
        value = 1 if name == phase else 0
        out.append(
            f"kwatt_profiling_phase{_labels(namespace=namespace, pod=pod, phase=name)} {value}"
        )
    family("kwatt_run_epochs", "gauge", "Epochs the trainer has reported.")
    out.append(f"kwatt_run_epochs{_labels(namespace=namespace, pod=pod)} {epochs}")
    family(
        "kwatt_sidecar_restore_failures_total",
        "counter",
        "Default power limits the sidecar failed to restore (the log names the GPU).",
    )
    out.append(
        f"kwatt_sidecar_restore_failures_total{_labels(namespace=namespace, pod=pod)} "
        f"{restore_failures}"
    )
    if cost is not None:
        family("kwatt_run_cost", "gauge", "Energy-time cost of the run so far (joule-equivalents).")
        out.append(f"kwatt_run_cost{_labels(namespace=namespace, pod=pod)} {_num(cost)}")
    return "\n".join(out) + "\n"
