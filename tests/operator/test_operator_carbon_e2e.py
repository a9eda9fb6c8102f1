"""Carbon awareness end to end on the sandbox (a test harness: a real control plane,
simulated V100s): `kwatt operator` turns a TrainingJob with `spec.objective.carbon` into a
run whose sidecar reads its intensity from a ConfigMap mounted read-only by the node agent,
as a kubelet mounts one; the run's report reaches the status with its grams of CO2 and
`kwatt report` prints them. A ConfigMap that holds nonsense leaves its run going to its
target, with a `CarbonSourceFailed` Warning on the TrainingJob (docs/carbon.md).

One run per TrainingJob, in compressed time: the sandbox's trainer runs Zeus's CIFAR-100
trace about 2,000 times faster than the V100 did, on the simulated clock the sidecar reads,
so an hour of the replayed series passes in about two seconds.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from operator_support import create, running_operator, status_of, trainingjob

from kwatt_sandbox.testing import Cluster, eventually

pytestmark = pytest.mark.timeout(120)

G_PER_KWH = 200.0  # the replayed series' one value
J_PER_KWH = 3.6e6


def config_map(namespace: str, name: str, key: str, text: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {key: text},
    }


def carbon_aware(namespace: str, name: str, source: dict[str, Any]) -> dict[str, Any]:
    """The operator tests' TrainingJob, following the grid at every interval (one minute of
    the simulated clock, the shortest allowed), with a fixed reference."""
    tj = trainingjob(namespace, name, time_scale=0.001)
    tj["spec"]["objective"] = {
        "carbon": {
            "source": source,
            "intervalMinutes": 1,
            "referenceGramsPerKWh": G_PER_KWH,
        }
    }
    return tj


def test_a_carbon_aware_run_is_priced_in_grams_and_a_bad_source_never_stops_one(
    sandbox: Cluster, namespace: str, tmp_path: Path
) -> None:
    # A replayed series whose every hour is 200 g CO2/kWh: the run's carbon is then its
    # energy times 200 g/kWh, and with the reference at 200 g/kWh every decision is kwatt's
    # ordinary limit, so the same work without carbon awareness emits exactly as much.
    series = "datetime,g_co2_per_kwh\n" + "".join(
        f"2026-01-01T{h:02d}:00Z,{G_PER_KWH:.0f}\n" for h in range(24)
    )
    create(sandbox, config_map(namespace, "grid", "series.csv", series))
    # A file source that another system filled with garbage: every reading is refused.
    create(sandbox, config_map(namespace, "garbage", "intensity", "lots of carbon, honestly"))
    with running_operator(sandbox, namespace, tmp_path) as operator:

        def recorded(name: str) -> dict[str, Any] | None:
            assert operator.alive()
            status = status_of(sandbox, namespace, name)
            return status if int(status.get("recordedRuns") or 0) >= 1 else None

        # One after the other: the sandbox's pods share the host's network, and two
        # sidecars of one operator would want the same port.
        good = {"kind": "csv", "configMap": {"name": "grid", "key": "series.csv"}}
        create(sandbox, carbon_aware(namespace, "cifar", good))
        status = eventually(lambda: recorded("cifar"), timeout=60, interval=0.5)
        bad = {"kind": "file", "configMap": {"name": "garbage", "key": "intensity"}}
        create(sandbox, carbon_aware(namespace, "garbled", bad))
        garbled = eventually(lambda: recorded("garbled"), timeout=60, interval=0.5)

    # The node agent mounted the ConfigMap where the operator said, read-only, in the
    # sidecar alone; the sidecar read the series and priced every joule at it.
    (pod,) = sandbox.kubectl_json(
        "get", "pods", "-n", namespace, "-l", "kwatt.dev/trainingjob=cifar"
    )["items"]
    spec = pod["spec"]
    (volume,) = [v for v in spec["volumes"] if "configMap" in v]
    assert volume["configMap"]["name"] == "grid"
    (sidecar,) = [x for x in spec["initContainers"] if x["name"] == "kwatt-sidecar"]
    mounts = {m["name"]: m for m in sidecar["volumeMounts"]}
    assert mounts[volume["name"]]["readOnly"] is True
    (trainer,) = spec["containers"]
    assert volume["name"] not in {m["name"] for m in trainer.get("volumeMounts") or []}

    (run,) = status["history"]
    assert run["result"] == "reached" and run["energyJoules"] > 0
    expected = run["energyJoules"] / J_PER_KWH * G_PER_KWH
    # The report carries grams to 4 decimals, energy to 4 decimals of a joule.
    assert run["carbonGrams"] == pytest.approx(expected, abs=1e-4)
    assert run["carbonBaselineGrams"] == pytest.approx(run["carbonGrams"], abs=1e-4)
    totals = status["carbon"]["totals"]
    assert totals["runs"] == 1
    assert totals["grams"] == pytest.approx(run["carbonGrams"])
    assert totals["seconds"] == pytest.approx(run["seconds"])
    # The run profiled its batch size: the status keeps that curve for later runs.
    assert str(run["batchSize"]) in status["carbon"]["curves"]
    events = sandbox.kubectl_json("get", "events", "-n", namespace)["items"]
    about = {
        name: [e["reason"] for e in events if e["involvedObject"]["name"] == name]
        for name in ("cifar", "garbled")
    }
    assert "CarbonSourceFailed" not in about["cifar"]

    report = subprocess.run(
        [sys.executable, "-m", "kwatt_cli.main", "report", "cifar", "-n", namespace],
        capture_output=True,
        text=True,
        timeout=60,
        env=sandbox.env(),
        stdin=subprocess.DEVNULL,
    )
    assert report.returncode == 0, report.stderr
    flat = " ".join(report.stdout.split())
    kg = run["carbonGrams"] / 1000
    assert (
        f"Carbon: {kg:,.2f} kg CO2 over 1 carbon-aware run; the same work at kwatt's limit "
        f"without carbon awareness, over the same hours: {kg:,.2f} kg, 0.00% less carbon, "
        "time 0.00% longer."
    ) in flat, report.stdout
    as_json = subprocess.run(
        [sys.executable, "-m", "kwatt_cli.main", "report", "cifar", "-n", namespace, "--json"],
        capture_output=True,
        text=True,
        timeout=60,
        env=sandbox.env(),
        stdin=subprocess.DEVNULL,
    )
    carbon = json.loads(as_json.stdout)["carbon"]
    assert carbon["runs"] == 1 and carbon["grams"] == pytest.approx(run["carbonGrams"])

    # The garbled source: the run went on to its target, with no grams (no reading was
    # usable), and the TrainingJob carries a Warning that says what happened.
    (bad_run,) = garbled["history"]
    assert bad_run["result"] == "reached" and bad_run["epochs"] > 0
    assert "carbonGrams" not in bad_run
    assert "totals" not in (garbled.get("carbon") or {})
    (warning,) = [
        e
        for e in events
        if e["involvedObject"]["name"] == "garbled" and e["reason"] == "CarbonSourceFailed"
    ]
    assert warning["type"] == "Warning"
    assert warning["message"].startswith(
        "Run 1: the carbon-intensity source failed or answered nonsense "
    )
