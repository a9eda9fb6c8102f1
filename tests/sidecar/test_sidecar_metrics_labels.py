"""The sidecar's series carry their TrainingJob: `namespace`, `trainingjob` and `run` beside
`pod` (and `UUID`), so a dashboard groups a job's runs by the same `trainingjob` label as
the operator's series, whatever the Pod is called (a long TrainingJob name gives Job and Pod
names shortened with a hash, docs/operator.md). The operator hands the sidecar its
TrainingJob as KWATT_JOB=`namespace/name` and the run as KWATT_RUN (jobs.sidecar_env).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from sidecar_support import make_node, sample, start_sidecar

from kwatt_client import Kwatt
from kwatt_core.policies.base import Choice
from kwatt_sidecar.metrics import GpuReading, Reading, render, trainingjob_name

pytestmark = pytest.mark.timeout(60)
LONG = "nightly-retraining-of-the-recommendation-model-for-the-europe-region"  # > 63


def test_every_series_has_the_trainingjob_and_the_run() -> None:
    reading = Reading(
        namespace="ml",
        pod="cifar-run-3-x7k2p",
        trainingjob="cifar",
        run="3",
        phase="measure",
        epochs=2,
        cost=12.5,
        gpus=[GpuReading("GPU-a", 10.0, 180.0, 200.0)],
    )
    text = render(reading)
    run = {"namespace": "ml", "trainingjob": "cifar", "run": "3", "pod": "cifar-run-3-x7k2p"}
    assert sample(text, "kwatt_gpu_energy_joules_total", **run, UUID="GPU-a") == 10.0
    assert sample(text, "kwatt_gpu_power_watts", **run, UUID="GPU-a") == 180.0
    assert sample(text, "kwatt_gpu_power_limit_watts", **run, UUID="GPU-a") == 200.0
    assert sample(text, "kwatt_sidecar_restore_failures_total", **run, UUID="GPU-a") == 0
    assert sample(text, "kwatt_profiling_phase", **run, phase="measure") == 1
    assert sample(text, "kwatt_profiling_phase", **run, phase="warmup") == 0
    assert sample(text, "kwatt_run_epochs", **run) == 2
    assert sample(text, "kwatt_run_cost", **run) == 12.5


def test_without_a_trainingjob_the_labels_are_the_pods_only() -> None:
    """A sidecar not started by the operator (no KWATT_JOB) has no empty labels."""
    text = render(Reading(namespace="ml", pod="p", phase="waiting", epochs=0)).decode()
    assert "trainingjob=" not in text and "run=" not in text
    assert sample(text, "kwatt_run_epochs", namespace="ml", pod="p") == 0


def test_the_name_is_kwatt_jobs_after_the_namespace() -> None:
    assert trainingjob_name("ml/cifar") == "cifar"
    assert trainingjob_name("cifar") == "cifar"
    assert trainingjob_name("") == ""


def test_the_operator_hands_the_full_name_even_when_pod_names_are_shortened() -> None:
    """The Job (and so its Pods) gets a shortened name, the sidecar the TrainingJob's own:
    the `trainingjob` label then equals the operator's series' label."""
    from kwatt_operator.jobs import SidecarSettings, build_job

    trainingjob = {
        "metadata": {"name": LONG, "namespace": "ml", "uid": "u-1"},
        "spec": {
            "template": {"spec": {"containers": [{"name": "train", "image": "t:1"}]}},
            "batchSizes": {"candidates": [16], "default": 16},
            "target": {"metric": "accuracy", "value": 0.6},
        },
    }
    job = build_job(trainingjob, 2, Choice(16, None, None, "explore"), SidecarSettings(image="s"))
    (sidecar,) = job["spec"]["template"]["spec"]["initContainers"]
    env = {e["name"]: e.get("value") for e in sidecar["env"]}
    assert len(job["metadata"]["name"]) <= 63 and not job["metadata"]["name"].startswith(LONG)
    assert trainingjob_name(env["KWATT_JOB"]) == LONG
    assert env["KWATT_JOB"] == f"ml/{LONG}" and env["KWATT_RUN"] == "2"


def test_a_real_sidecar_labels_its_series(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    sc = start_sidecar(node, KWATT_JOB="ns1/cifar", KWATT_RUN="7")
    try:
        Kwatt(port=sc.port, gpu_uuids=node.uuids)
        text = sc.metrics()
        run = {"namespace": "ns1", "trainingjob": "cifar", "run": "7", "pod": "job-1-abc"}
        uuid = node.uuids[0]
        assert sample(text, "kwatt_gpu_power_limit_watts", **run, UUID=uuid) == 250.0
        assert sample(text, "kwatt_profiling_phase", **run, phase="warmup") == 1
        assert sample(text, "kwatt_run_epochs", **run) == 0
    finally:
        sc.stop()
