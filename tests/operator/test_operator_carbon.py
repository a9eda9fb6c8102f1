"""spec.objective.carbon: parsing with sentences, what it adds to a run's Pod, what the status
keeps and what `kwatt report` says of it (docs/carbon.md)."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from conftest import sample_trainingjob
from kwatt_core import contract
from kwatt_core.policies.base import Choice
from kwatt_core.report import ProfilePoint, Report
from kwatt_operator import carbon
from kwatt_operator.jobs import SidecarSettings, build_job, pod_template, with_carbon
from kwatt_operator.spec import SpecError, parse_spec

SETTINGS = SidecarSettings(image="example.com/kwatt-sidecar:1")
CRD = Path(__file__).resolve().parents[2] / "crds" / "trainingjob.yaml"


def parsed(value: Any) -> carbon.Carbon | None:
    problems: list[str] = []
    out = carbon.parse_carbon(value, problems)
    assert not problems, problems
    return out


def problems_of(value: Any) -> str:
    problems: list[str] = []
    assert carbon.parse_carbon(value, problems) is None
    return " ".join(problems)


def test_absent_is_off_and_the_defaults_are_documented() -> None:
    assert parsed(None) is None
    uk = parsed({"source": {"kind": "uk"}})
    assert uk == carbon.Carbon(carbon.CarbonSource("uk"), 30.0, "last", 180.0, None)


def test_every_source_kind_with_what_it_needs() -> None:
    em = parsed(
        {
            "source": {"kind": "electricitymaps", "zone": "DE", "secretName": "em-token"},
            "intervalMinutes": 15,
            "forecast": "daily",
            "maxAgeMinutes": 90,
            "referenceGramsPerKWh": 120,
        }
    )
    assert em is not None and em.source.secret_name == "em-token" and em.interval_minutes == 15
    assert (em.forecast, em.max_age_minutes, em.reference_g_per_kwh) == ("daily", 90, 120)
    wt = parsed({"source": {"kind": "watttime", "zone": "CAISO_NORTH", "secretName": "wt"}})
    assert wt is not None and wt.source.zone == "CAISO_NORTH"
    csv = parsed({"source": {"kind": "csv", "configMap": {"name": "grid", "key": "gb.csv"}}})
    assert csv is not None and (csv.source.config_map, csv.source.key) == ("grid", "gb.csv")


@pytest.mark.parametrize(
    ("value", "sentence"),
    [
        ("uk", "spec.objective.carbon must be an object"),
        ({}, "spec.objective.carbon.source is required"),
        ({"source": {"kind": "coal"}}, "source.kind must be one of uk, electricitymaps"),
        (
            {"source": {"kind": "electricitymaps", "zone": "DE"}},
            "secretName is required for electricitymaps: the Secret holding its token",
        ),
        (
            {"source": {"kind": "watttime", "secretName": "wt"}},
            "zone is required for watttime",
        ),
        ({"source": {"kind": "file"}}, "configMap is required for file"),
        (
            {"source": {"kind": "csv", "configMap": {"name": "grid"}}},
            "configMap needs both name and key",
        ),
        ({"source": {"kind": "uk", "url": "ftp://x"}}, "must be an http or https URL"),
        ({"source": {"kind": "uk", "secretName": "Bad_Name"}}, "not a valid Secret name"),
        ({"source": {"kind": "uk"}, "intervalMinutes": 0}, "intervalMinutes must be between 1"),
        ({"source": {"kind": "uk"}, "intervalMinutes": "30"}, "must be a number"),
        ({"source": {"kind": "uk"}, "forecast": "tarot"}, "forecast must be one of last, daily"),
        ({"source": {"kind": "uk"}, "referenceGramsPerKWh": 0}, "must be above 0"),
        ({"source": {"kind": "uk"}, "referenceGramsPerKWh": 5000}, "between 0 and 2000"),
        ({"source": {"kind": "uk"}, "token": "abc"}, "unknown field(s) token"),
    ],
)
def test_bad_settings_are_sentences_naming_the_field(value: Any, sentence: str) -> None:
    assert sentence in problems_of(value)


def test_a_bad_carbon_setting_makes_the_spec_invalid() -> None:
    spec = sample_trainingjob(objective={"carbon": {"source": {"kind": "watttime"}}})["spec"]
    with pytest.raises(SpecError, match=r"spec\.objective\.carbon\.source\.zone is required"):
        parse_spec(spec)


def test_the_crd_describes_the_same_fields() -> None:
    crd = yaml.safe_load(CRD.read_text())
    schema = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    objective = schema["properties"]["spec"]["properties"]["objective"]["properties"]
    fields = objective["carbon"]["properties"]
    assert set(fields) == {
        "source",
        "intervalMinutes",
        "forecast",
        "maxAgeMinutes",
        "referenceGramsPerKWh",
    }
    assert fields["source"]["properties"]["kind"]["enum"] == list(carbon.KINDS)
    assert "default" not in objective["carbon"]  # off unless asked for
    status = schema["properties"]["status"]["properties"]
    assert "carbonGrams" in status["history"]["items"]["properties"]
    assert set(status["carbon"]["properties"]["totals"]["properties"]) == {
        "runs",
        "grams",
        "baselineGrams",
        "seconds",
        "baselineSeconds",
    }


# --- the run's Pod ---------------------------------------------------------------------------


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def job_for(
    carbon_spec: dict[str, Any], status: dict[str, Any] | None = None, **choice: Any
) -> dict[str, Any]:
    tj = sample_trainingjob(objective={"carbon": carbon_spec})
    if status is not None:
        tj["status"] = status
    pick = Choice(
        **{
            "batch_size": 16,
            "power_limit_w": None,
            "cost_threshold": None,
            "stage": "explore",
            **choice,
        }
    )
    return build_job(tj, 3, pick, SETTINGS)


def containers(job: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    pod = job["spec"]["template"]["spec"]
    (sidecar,) = [c for c in pod["initContainers"] if c["name"] == contract.SIDECAR_CONTAINER]
    return pod["containers"][0], sidecar


def test_the_sidecar_gets_the_settings_and_the_secret_read_only() -> None:
    job = job_for(
        {
            "source": {"kind": "electricitymaps", "zone": "DE", "secretName": "em-token"},
            "intervalMinutes": 15,
            "referenceGramsPerKWh": 120.5,
        }
    )
    trainer, sidecar = containers(job)
    env = env_of(sidecar)
    assert env[contract.ENV_CARBON_SOURCE] == "electricitymaps"
    assert env[contract.ENV_CARBON_ZONE] == "DE"
    assert env[contract.ENV_CARBON_INTERVAL] == "900"
    assert env[contract.ENV_CARBON_MAX_AGE] == "10800"
    assert env[contract.ENV_CARBON_FORECAST] == "last"
    assert env[contract.ENV_CARBON_REFERENCE] == "120.5"
    assert env[contract.ENV_CARBON_SECRET_DIR] == contract.CARBON_SECRET_DIR
    assert contract.ENV_CARBON_URL not in env and contract.ENV_CARBON_PROFILE not in env
    assert not any("token" in str(v).lower() for v in env.values())  # only a path
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes[carbon.SECRET_VOLUME]["secret"]["secretName"] == "em-token"
    mount = next(m for m in sidecar["volumeMounts"] if m["name"] == carbon.SECRET_VOLUME)
    assert mount == {
        "name": carbon.SECRET_VOLUME,
        "mountPath": contract.CARBON_SECRET_DIR,
        "readOnly": True,
    }
    # The trainer sees neither the Secret nor the carbon settings.
    assert not any(m["name"] == carbon.SECRET_VOLUME for m in trainer.get("volumeMounts", []))
    assert not any(k.startswith("KWATT_CARBON") for k in env_of(trainer))


def test_an_observe_mode_sidecar_can_read_the_secret() -> None:
    """Kubernetes writes a Secret volume's files owned by root (no fsGroup here), and the
    observe-mode sidecar runs as a non-root user: the files' mode must let others read
    them, or every fetch fails on the token. Nothing may write them."""
    spec = {"source": {"kind": "watttime", "zone": "CAISO_NORTH", "secretName": "wt"}}
    tj = sample_trainingjob(objective={"carbon": spec}, powerLimit={"mode": "observe"})
    job = build_job(tj, 1, Choice(16, None, None, "explore"), SETTINGS)
    _, sidecar = containers(job)
    user = sidecar["securityContext"].get("runAsUser")
    assert user not in (None, 0)  # the premise: a non-root sidecar
    assert "fsGroup" not in (job["spec"]["template"]["spec"].get("securityContext") or {})
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    mode = volumes[carbon.SECRET_VOLUME]["secret"]["defaultMode"]
    assert mode & 0o004, oct(mode)  # others may read
    assert not mode & 0o222, oct(mode)  # nobody may write


def test_a_series_comes_from_a_configmap_key() -> None:
    job = job_for({"source": {"kind": "csv", "configMap": {"name": "grid", "key": "gb.csv"}}})
    _, sidecar = containers(job)
    assert env_of(sidecar)[contract.ENV_CARBON_FILE] == f"{contract.CARBON_CONFIG_DIR}/gb.csv"
    volumes = {v["name"]: v for v in job["spec"]["template"]["spec"]["volumes"]}
    assert volumes[carbon.CONFIG_VOLUME]["configMap"] == {
        "name": "grid",
        "items": [{"key": "gb.csv", "path": "gb.csv"}],
    }


def test_a_run_that_skips_profiling_gets_its_batch_sizes_cached_curve() -> None:
    curve = [[250, 150.0, 0.7], [175, 128.0, 0.77]]
    status = {"carbon": {"curves": {"16": curve, "8": [[250, 1.0, 1.0]]}}}
    _, sidecar = containers(job_for({"source": {"kind": "uk"}}, status, power_limit_w=175))
    assert json.loads(env_of(sidecar)[contract.ENV_CARBON_PROFILE]) == curve
    # A run that profiles measures its own.
    _, sidecar = containers(job_for({"source": {"kind": "uk"}}, status))
    assert contract.ENV_CARBON_PROFILE not in env_of(sidecar)


def test_no_carbon_adds_nothing() -> None:
    tj = sample_trainingjob()
    job = build_job(tj, 1, Choice(16, None, None, "explore"), SETTINGS)
    _, sidecar = containers(job)
    assert not any(k.startswith("KWATT_CARBON") for k in env_of(sidecar))
    names = [v["name"] for v in job["spec"]["template"]["spec"]["volumes"]]
    assert carbon.SECRET_VOLUME not in names and carbon.CONFIG_VOLUME not in names


def test_adding_carbon_leaves_the_template_it_was_given_alone() -> None:
    """Objects are built by pure functions: the template without carbon, built first, is
    not changed by adding the carbon settings, and the result has them in the sidecar."""
    tj = sample_trainingjob(objective={"carbon": {"source": {"kind": "uk"}, "intervalMinutes": 15}})
    spec = parse_spec(tj["spec"])
    pick = Choice(16, None, None, "explore")
    template = pod_template("ml", "cifar", 1, spec, pick, SETTINGS)
    before = copy.deepcopy(template)
    added = with_carbon(template, spec, pick, None)
    assert template == before
    (sidecar,) = [
        x for x in added["spec"]["initContainers"] if x["name"] == contract.SIDECAR_CONTAINER
    ]
    assert float(env_of(sidecar)["KWATT_CARBON_INTERVAL_S"]) == 900  # 15 minutes


def test_the_templates_own_volumes_stay_beside_the_carbon_ones() -> None:
    """A trainer's own volume (data, a cache) is kept when carbon adds the Secret's."""
    carbon_spec = {"source": {"kind": "electricitymaps", "zone": "DE", "secretName": "em"}}
    tj = sample_trainingjob(objective={"carbon": carbon_spec})
    tj["spec"]["template"]["spec"]["volumes"] = [{"name": "data", "emptyDir": {}}]
    job = build_job(tj, 1, Choice(16, None, None, "explore"), SETTINGS)
    names = [v["name"] for v in job["spec"]["template"]["spec"]["volumes"]]
    assert "data" in names and carbon.SECRET_VOLUME in names


def test_a_volume_named_like_kwatts_is_refused() -> None:
    tj = sample_trainingjob(
        objective={"carbon": {"source": {"kind": "watttime", "zone": "X", "secretName": "wt"}}}
    )
    tj["spec"]["template"]["spec"]["volumes"] = [{"name": carbon.SECRET_VOLUME, "emptyDir": {}}]
    with pytest.raises(SpecError, match="kwatt-carbon-secret"):
        build_job(tj, 1, Choice(16, None, None, "explore"), SETTINGS)


# --- the status and the report -----------------------------------------------------------------


def report(**fields: Any) -> Report:
    base: dict[str, Any] = {
        "result": "reached",
        "batch_size": 16,
        "epochs": 3,
        "energy_j": 3.6e6,
        "time_s": 1000.0,
        "cost": 1.0,
        "limit_w": 175,
    }
    return Report(**{**base, **fields})


def test_record_keeps_the_curve_per_step_and_the_grams() -> None:
    status: dict[str, Any] = {}
    item: dict[str, Any] = {}
    profile = (ProfilePoint(250, 880.0, 4.0, 40), ProfilePoint(175, 700.0, 4.4, 40))
    carbon.record(status, item, report(profile=profile, profile_complete=True))
    assert status["carbon"]["curves"] == {"16": [[250, 22.0, 0.1], [175, 17.5, 0.11]]}
    assert item == {}  # not carbon-aware: no grams
    carbon.record(
        status,
        item,
        report(carbon_g=300.0, carbon_baseline_g=330.0, carbon_baseline_time_s=950.0),
    )
    assert item == {"carbonGrams": 300.0, "carbonBaselineGrams": 330.0}
    carbon.record(
        status,
        {},
        report(carbon_g=100.0, carbon_baseline_g=110.0, time_s=500.0, carbon_baseline_time_s=500.0),
    )
    totals = status["carbon"]["totals"]
    assert totals == {
        "runs": 2,
        "grams": 400.0,
        "baselineGrams": 440.0,
        "seconds": 1500.0,
        "baselineSeconds": 1450.0,
    }
    summary = carbon.summary(status)
    assert summary == {
        "runs": 2,
        "grams": 400.0,
        "baselineGrams": 440.0,
        "savedPercent": round(100 * (1 - 400 / 440), 2),
        "timeAddedPercent": round(100 * (1500 / 1450 - 1), 2),
    }
    assert carbon.summary({}) is None


def test_a_failing_source_becomes_a_warning_event() -> None:
    events = carbon.record({}, {"run": 4}, report(carbon_g=10.0, carbon_failures=3))
    assert events == [
        (
            "Warning",
            "CarbonSourceFailed",
            "Run 4: the carbon-intensity source failed or answered nonsense 3 time(s); the run "
            "kept its last good power limit each time (the sidecar's log says why).",
        )
    ]
    assert carbon.record({}, {"run": 5}, report(carbon_g=10.0, carbon_failures=0)) == []


def test_the_curves_kept_are_bounded() -> None:
    status: dict[str, Any] = {}
    for bs in range(1, carbon.MAX_CURVES + 10):
        point = (ProfilePoint(250, 10.0, 1.0, 10),)
        carbon.record(status, {}, report(batch_size=bs, profile=point, profile_complete=True))
    curves = status["carbon"]["curves"]
    assert len(curves) == carbon.MAX_CURVES
    assert str(carbon.MAX_CURVES + 9) in curves and "1" not in curves


def test_kwatt_report_says_the_carbon_saved_and_the_time_added() -> None:
    from kwatt_cli.report import render_table
    from kwatt_operator.status_report import job_report, report_json

    tj = sample_trainingjob(objective={"carbon": {"source": {"kind": "uk"}}})
    tj["status"] = {
        "state": "Idle",
        "runs": 1,
        "recordedRuns": 1,
        "history": [
            {
                "run": 1,
                "job": "cifar-run-1",
                "batchSize": 16,
                "powerLimitWatts": 175,
                "result": "reached",
                "epochs": 3,
                "energyJoules": 3.6e6,
                "seconds": 1500.0,
                "carbonGrams": 400.0,
                "carbonBaselineGrams": 440.0,
            }
        ],
        "totals": {"energyJoules": 3.6e6, "seconds": 1500.0, "runs": 1},
        "carbon": {
            "totals": {
                "runs": 1,
                "grams": 400.0,
                "baselineGrams": 440.0,
                "seconds": 1500.0,
                "baselineSeconds": 1450.0,
            }
        },
    }
    report = job_report(tj)
    assert report_json(report)["carbon"]["savedPercent"] == 9.09  # 1 - 400/440
    text = " ".join(render_table(report).split())
    assert (
        "Carbon: 0.40 kg CO2 over 1 carbon-aware run; the same work at kwatt's limit without "
        "carbon awareness, over the same hours: 0.44 kg, 9.09% less carbon, time 3.45% longer."
    ) in text
