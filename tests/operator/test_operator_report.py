"""`kwatt report` without a cluster: the rows, totals and saving that
kwatt_operator.status_report reads from a TrainingJob's status, the table, the JSON and
the chart that kwatt_cli.report makes of them, and one sentence for every error.

Every status here is written by the operator's own reconcile pass (runs started, their
Jobs finished with a sidecar report in the Pod's status, recorded), not copied by hand,
so a change to the status format shows up here.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import subprocess
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from conftest import sample_trainingjob
from kwatt_cli.report import api_error, duration, energy_unit, render_table, write_chart
from kwatt_core.contract import SIDECAR_CONTAINER
from kwatt_core.policies import KwattPolicy
from kwatt_core.policies.base import Choice, State
from kwatt_core.report import ProfilePoint, Report, encode
from kwatt_operator.jobs import SidecarSettings
from kwatt_operator.reconcile import ANNOTATION_RUN_REQUEST, reconcile
from kwatt_operator.status_report import (
    NoRunsError,
    compare_with_default,
    job_report,
    report_json,
)

Obj = dict[str, Any]
SETTINGS = SidecarSettings(image="ghcr.io/kwatt/sidecar:0.1")
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=UTC)
DEFAULT = 16  # sample_trainingjob's default batch size (candidates 8, 16, 32)
MAX_W = 250


class ScriptedPolicy(KwattPolicy):
    """The kwatt policy, except that `choose` runs the batch sizes it is given, in order."""

    def __init__(self, sizes: Sequence[int]) -> None:
        super().__init__()
        self.sizes = list(sizes)

    def choose(self, state: State, in_flight: Sequence[int] = ()) -> tuple[Choice, State]:
        bs = self.sizes.pop(0) if self.sizes else DEFAULT
        return Choice(bs, state["limits"].get(str(bs)), None, "explore"), state


def report(
    bs: int,
    result: str = "reached",
    energy: float = 5000.0,
    seconds: float = 600.0,
    limit: int | None = 200,
    mode: str = "optimize",
    profile: tuple[ProfilePoint, ...] = (),
) -> Report:
    cost = 0.5 * energy + 0.5 * MAX_W * seconds
    return Report(
        result=result,  # type: ignore[arg-type]
        batch_size=bs,
        epochs=10,
        energy_j=energy,
        time_s=seconds,
        cost=cost,
        mode=mode,  # type: ignore[arg-type]
        limit_w=limit,
        profile_complete=limit is not None,
        epoch_cost=cost / 10,
        metric=0.61 if result == "reached" else 0.4,
        gpu_model="Tesla V100-SXM2-32GB",
        min_limit_w=100,
        max_limit_w=MAX_W,
        profile=profile,
    )


def observed(bs: int, energy: float, seconds: float, result: str = "reached") -> Report:
    """A run in observe mode: it ran at the GPU's highest limit, the default configuration
    when `bs` is the default batch size."""
    return report(bs, result, energy, seconds, limit=None, mode="observe")


def operated(
    runs: Sequence[tuple[int, Report | None]], *, in_flight: bool = False, **spec: Any
) -> Obj:
    """A TrainingJob after the operator ran `runs` (batch size, its sidecar's report; None:
    the Job failed without one), as the API server would return it: each run started by a
    reconcile pass, its Job finished, and recorded by the next pass."""
    policy = ScriptedPolicy([bs for bs, _ in runs] + ([DEFAULT] if in_flight else []))
    tj = sample_trainingjob(**spec)
    tj["metadata"].update(resourceVersion="1", annotations={})
    now = T0
    jobs: dict[str, Obj] = {}
    pods: dict[str, list[Obj]] = {}
    for n in range(len(runs) + 1):
        plan = reconcile(tj, list(jobs.values()), pods, now, SETTINGS, policy=policy)
        if plan.status is not None:
            tj["status"] = json.loads(json.dumps(plan.status))
        for job in plan.create:
            jobs[job["metadata"]["name"]] = copy.deepcopy(job)
        if n == len(runs):
            break
        # The run's Job ends; its Pod holds the sidecar's report, as on a cluster.
        (entry,) = tj["status"]["active"]
        name, (_, rep) = str(entry["job"]), runs[n]
        kind = "Complete" if rep is not None else "Failed"
        jobs[name]["status"] = {"conditions": [{"type": kind, "status": "True", "reason": kind}]}
        terminated: Obj = {"exitCode": 0}
        if rep is not None:
            terminated["message"] = encode(rep)
        pods[name] = [
            {
                "metadata": {"name": f"{name}-x", "creationTimestamp": "2025-03-01T12:00:00Z"},
                "status": {
                    "initContainerStatuses": [
                        {"name": SIDECAR_CONTAINER, "state": {"terminated": terminated}}
                    ]
                },
            }
        ]
        now += timedelta(hours=1)
        if n + 1 < len(runs) or in_flight:
            tj["metadata"]["annotations"][ANNOTATION_RUN_REQUEST] = str(n + 1)
    return tj


MEASURED = [
    (8, observed(8, 700.0, 70.0)),
    (32, observed(32, 3000.0, 300.0, "stopped")),
    (DEFAULT, observed(DEFAULT, 1000.0, 100.0)),
    (8, observed(8, 650.0, 65.0)),
    (DEFAULT, None),  # the Job failed without a report
    (DEFAULT, observed(DEFAULT, 1100.0, 110.0)),
    (32, observed(32, 900.0, 90.0)),
]


# --- the rows and the comparison -----------------------------------------------------------


def test_rows_follow_the_history_and_the_saving_is_the_operators() -> None:
    tj = operated(MEASURED)
    status = tj["status"]
    rep = job_report(tj)
    assert [r.run for r in rep.rows] == [1, 2, 3, 4, 5, 6, 7]
    assert [r.batch_size for r in rep.rows] == [bs for bs, _ in MEASURED]
    assert [r.result for r in rep.rows] == [h["result"] for h in status["history"]]
    assert [r.result for r in rep.rows][:5] == [
        "reached",
        "stopped",
        "reached",
        "reached",
        "noreport",
    ]
    assert [r.energy_j for r in rep.rows] == [700.0, 3000.0, 1000.0, 650.0, 0.0, 1100.0, 900.0]
    cumulative = [700.0, 3700.0, 4700.0, 5350.0, 5350.0, 6450.0, 7350.0]
    assert [r.cumulative_energy_j for r in rep.rows] == pytest.approx(cumulative)
    assert rep.total_energy_j == pytest.approx(status["totals"]["energyJoules"]) == 7350.0
    assert (rep.runs_started, rep.runs_recorded, rep.earlier_runs) == (7, 7, 0)
    assert rep.rows[4].note and "failed" in rep.rows[4].note
    assert rep.rows[0].metric == 0.61 and rep.rows[0].start_time == "2025-03-01T12:00:00Z"
    # The default configuration, measured on runs 3 and 6 (observe mode, default size):
    # (1000 + 1100) / 2 = 1050 J a run against the mean of the 5 runs that reached the
    # target, (700 + 1000 + 650 + 1100 + 900) / 5 = 870 J: 17.14 %, as status.savings says.
    c = rep.comparison
    assert c is not None and c.basis == "measured"
    assert (c.default_runs, c.runs) == (2, 5)
    assert c.default_energy_j == pytest.approx(1050.0) and c.energy_j == pytest.approx(870.0)
    assert c.savings() == status["savings"]
    assert status["savings"]["energyPercent"] == pytest.approx(17.14)
    assert rep.default_batch_size == DEFAULT and rep.max_limit_w == MAX_W
    assert rep.energy_saved_j == pytest.approx(5 * (1050.0 - 870.0))
    # Every recorded run's energy (the stopped run's 3,000 J too) over the 5 reached runs.
    assert rep.energy_percent_all_runs == pytest.approx(100 * (1 - 7350.0 / 5 / 1050.0), abs=0.01)


def test_estimated_basis_when_the_default_configuration_never_ran() -> None:
    """kwatt profiled the default size and kept 175 W: the run's own profile says what it
    would have cost at 250 W (0.5 J and 0.1 s a step against 0.4 J and 0.125 s): 5,000 J
    and 800 s; basis estimated."""
    profile = (ProfilePoint(250, 20.0, 4.0, 40), ProfilePoint(175, 16.0, 5.0, 40))
    first = dataclasses.replace(
        report(DEFAULT, energy=4000.0, seconds=1000.0, limit=175), profile=profile
    )
    tj = operated([(DEFAULT, first), (8, report(8, energy=3000.0, seconds=900.0, limit=150))])
    rep = job_report(tj)
    c = rep.comparison
    assert c is not None and c.basis == "estimated" and c.default_runs == 1
    assert (c.default_energy_j, c.default_seconds) == pytest.approx((5000.0, 800.0))
    assert c.savings() == tj["status"]["savings"]
    assert c.energy_percent == pytest.approx(30.0)  # (4000 + 3000) / 2 = 3500 against 5000
    assert [r.power_limit_w for r in rep.rows] == [175, 150]
    text = flat(render_table(rep))
    assert "estimated" in text and "profiles" in text
    assert "30.00% energy per run" in text and "time 18.75% longer" in text


def test_no_saving_before_a_default_size_run_reached_the_target() -> None:
    tj = operated([(8, report(8)), (DEFAULT, report(DEFAULT, "stopped"))])
    rep = job_report(tj)
    assert rep.comparison is None and "savings" not in tj["status"]
    data = report_json(rep)
    assert data["savings"] is None and data["defaultConfiguration"]["basis"] is None
    assert data["defaultConfiguration"]["batchSize"] == DEFAULT
    assert data["defaultConfiguration"]["powerLimitWatts"] == MAX_W
    assert "Saving: not known yet" in flat(render_table(rep))


def test_runs_beyond_the_history_limit_count_in_totals_and_cumulative_energy() -> None:
    runs = [(bs, observed(bs, e, e / 10)) for bs, e in [(DEFAULT, 1000.0), (8, 600.0), (32, 800.0)]]
    runs += [(8, observed(8, 500.0, 50.0))]
    tj = operated(runs, historyLimit=2)
    rep = job_report(tj)
    assert [r.run for r in rep.rows] == [3, 4]
    assert (rep.earlier_runs, rep.earlier_energy_j) == (2, pytest.approx(1600.0))
    assert [r.cumulative_energy_j for r in rep.rows] == pytest.approx([2400.0, 2900.0])
    assert rep.total_energy_j == pytest.approx(2900.0)
    # The comparison covers every recorded run, not only the listed ones.
    assert rep.comparison is not None and rep.comparison.runs == 4
    text = flat(render_table(rep))
    assert "2 earlier runs" in text and "spec.historyLimit 2" in text
    data = report_json(rep)
    assert data["earlierRuns"] == {"runs": 2, "energyJoules": pytest.approx(1600.0)}


def test_a_run_in_flight_is_a_row_without_energy() -> None:
    tj = operated([(DEFAULT, observed(DEFAULT, 1000.0, 100.0))], in_flight=True)
    rep = job_report(tj)
    assert [(r.run, r.result) for r in rep.rows] == [(1, "reached"), (2, "running")]
    running = rep.rows[1]
    assert running.energy_j is None and running.cumulative_energy_j is None
    assert running.note == "started on request" and rep.runs_started == 2
    line = next(x for x in render_table(rep).splitlines() if x.lstrip().startswith("2 "))
    assert "running" in line and "profiling" in line  # observe mode cached no limit for 16
    assert rep.total_energy_j == 1000.0


@pytest.mark.parametrize(
    ("status", "words"),
    [
        (None, "the operator has not written its status"),
        ({"state": "Suspended", "runs": 0}, "suspended"),
        (
            {
                "state": "Invalid",
                "conditions": [
                    {"type": "Ready", "status": "False", "message": "spec.target is missing."}
                ],
            },
            "its spec is invalid (spec.target is missing).",
        ),
    ],
)
def test_no_runs_yet_is_one_sentence(status: Obj | None, words: str) -> None:
    tj = sample_trainingjob()
    if status is not None:
        tj["status"] = status
    with pytest.raises(NoRunsError) as exc:
        job_report(tj)
    message = str(exc.value)
    assert message.startswith("TrainingJob ml/cifar has no runs yet") and words in message
    assert message.endswith(".") and "\n" not in message


def test_a_first_run_in_flight_is_no_report_yet() -> None:
    tj = operated([], in_flight=True)
    assert tj["status"]["active"] and not tj["status"].get("history")
    with pytest.raises(NoRunsError, match=r"has no finished run yet: run 1 is in flight\.$"):
        job_report(tj)


def test_a_garbled_status_does_not_crash_the_report() -> None:
    tj = operated(MEASURED[:3])
    tj["status"]["history"][0]["energyJoules"] = "lots"
    tj["status"]["history"][1]["batchSize"] = None
    tj["status"]["baseline"] = {"all": {"runs": "x"}}
    tj["status"]["gpu"] = "v100"
    rep = job_report(tj)
    assert rep.rows[0].energy_j == 0.0 and rep.rows[1].batch_size is None
    assert rep.comparison is None and rep.savings == tj["status"]["savings"]
    render_table(rep)
    json.dumps(report_json(rep))


def test_the_default_limit_comes_from_the_gpu_before_the_policys_placeholder() -> None:
    """status.gpu names the GPU's highest limit once a report told it; the policy's space
    keeps its own copy, which an older or reset status may lack or have at its placeholder
    0 (unknown). The report names the GPU's; with no state recorded, the state is Unknown."""
    tj = operated(MEASURED[:3])
    tj["status"]["policy"]["space"]["max_limit_w"] = 0
    del tj["status"]["state"]
    rep = job_report(tj)
    assert rep.max_limit_w == 250
    assert rep.state == "Unknown"
    assert render_table(rep).startswith("TrainingJob ml/cifar: Unknown,")


def test_compare_with_default_needs_both_sums() -> None:
    assert compare_with_default(None) is None
    assert compare_with_default({"all": {"runs": 2, "energyJoules": 10.0, "seconds": 1.0}}) is None
    only_default = {"default": {"runs": 1, "energyJoules": 10.0, "seconds": 1.0}}
    assert compare_with_default(only_default) is None
    zero = {**only_default, "all": {"runs": 1, "energyJoules": 0.0, "seconds": 0.0}}
    zero["default"] = {"runs": 1, "energyJoules": 0.0, "seconds": 1.0}
    assert compare_with_default(zero) is None  # no energy to compare with


# --- the table, the JSON and the chart ----------------------------------------------------


def test_table_has_a_row_per_run_and_the_saving() -> None:
    text = render_table(job_report(operated(MEASURED)))
    lines = text.splitlines()
    assert lines[0].startswith("TrainingJob ml/cifar: Idle, 7 runs started, 7 recorded.")
    assert lines[1] == "GPU: Tesla V100-SXM2-32GB x1, power limits 100-250 W."
    header = next(x for x in lines if x.startswith("RUN"))
    for column in ("BATCH", "LIMIT W", "RESULT", "EPOCHS", "ENERGY kJ", "CUMULATIVE kJ", "TIME"):
        assert column in header
    rows = [x.split() for x in lines if x[:3].strip().isdigit()]
    assert [r[0] for r in rows] == ["1", "2", "3", "4", "5", "6", "7"]
    assert rows[2][1] == "16*" and rows[0][1] == "8"
    assert rows[1][3] == "stopped" and rows[4][3] == "noreport"
    assert rows[0][5] == "0.70" and rows[6][6] == "7.35"
    text = flat(text)
    assert "Total: 7 recorded runs, 7.35 kJ, 12m15s of GPU time." in text
    assert "Default configuration: batch size 16 at 250 W" in text
    assert "measured: the mean of 2 runs that ran it" in text
    assert "17.14% energy per run (0.90 kJ saved over those 5 runs)" in text
    assert "time 17.14% shorter" in text  # 87 s a run against 105 s
    assert "Counting the energy of all 7 recorded runs, the 2 that did not reach" in text
    assert "the target too: -40.00%." in text
    assert all(len(x) <= 100 for x in lines)


def test_on_a_capped_gpu_the_default_configuration_is_the_cap() -> None:
    """An admin capped the GPU at 200 W (250 W maximum): the job ran at 200 W before kwatt,
    so that is the default configuration the report names, and the header says the cap."""
    capped = [
        (bs, dataclasses.replace(rep, start_limit_w=200, limit_w=200))
        for bs, rep in MEASURED
        if rep is not None
    ]
    tj = operated(capped)
    assert tj["status"]["gpu"]["startLimitWatts"] == 200
    text = flat(render_table(job_report(tj)))
    assert "power limits 100-250 W, capped at 200 W before kwatt." in text
    assert "Default configuration: batch size 16 at 200 W, the limit the GPU had before" in text
    assert report_json(job_report(tj))["defaultConfiguration"]["powerLimitWatts"] == 200
    uncapped = flat(render_table(job_report(operated(MEASURED))))
    assert "capped" not in uncapped and "at 250 W, the GPU's highest power limit" in uncapped


def flat(text: str) -> str:
    """The text with its wrapped lines joined, for phrases that a wrap may split."""
    return " ".join(text.split())


def test_json_is_the_same_data() -> None:
    tj = operated(MEASURED)
    data = report_json(job_report(tj))
    json.dumps(data)
    assert data["trainingJob"] == {"namespace": "ml", "name": "cifar"}
    assert data["state"] == "Idle" and (data["runsStarted"], data["runsRecorded"]) == (7, 7)
    history = tj["status"]["history"]
    for row, item in zip(data["runs"], history, strict=True):
        for key in ("run", "job", "batchSize", "powerLimitWatts", "result", "energyJoules"):
            assert row[key] == item.get(key), key
        assert row["seconds"] == item["seconds"] and row["startTime"] == item["startTime"]
    assert data["totals"] == {"runs": 7, "energyJoules": 7350.0, "seconds": 735.0}
    default = data["defaultConfiguration"]
    assert (default["batchSize"], default["powerLimitWatts"], default["basis"]) == (
        16,
        250,
        "measured",
    )
    assert default["runs"] == 2 and default["energyJoulesPerRun"] == pytest.approx(1050.0)
    assert data["reached"]["runs"] == 5
    assert data["savings"]["energyPercent"] == tj["status"]["savings"]["energyPercent"]
    assert data["savings"]["timePercent"] == tj["status"]["savings"]["timePercent"]
    assert data["savings"]["energySavedJoules"] == pytest.approx(900.0)


def test_chart_is_a_png(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    path = tmp_path / "energy.png"
    write_chart(job_report(operated(MEASURED, historyLimit=5)), path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_units() -> None:
    assert energy_unit(999.0) == ("J", 1.0) and energy_unit(1500.0) == ("kJ", 1e3)
    assert energy_unit(2.5e6) == ("MJ", 1e6) and energy_unit(3e9)[0] == "GJ"
    assert duration(42.04) == "42.0s" and duration(754) == "12m34s" and duration(11040) == "3h04m"


# --- errors: one sentence, a non-zero exit ------------------------------------------------


def kwatt(
    *args: str, env: dict[str, str] | None = None, code: str = ""
) -> subprocess.CompletedProcess[str]:
    run = f"{code}\nimport sys\nfrom kwatt_cli.main import main\nsys.exit(main(sys.argv[1:]))"
    return subprocess.run(
        [sys.executable, "-c", run, *args], capture_output=True, text=True, timeout=60, env=env
    )


def one_sentence(stderr: str) -> str:
    assert "Traceback" not in stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1, stderr
    assert lines[0].startswith("kwatt report: ") and lines[0].endswith("."), lines[0]
    return lines[0]


def kubeconfig(path: Path, server: str = "https://127.0.0.1:1", namespace: str = "") -> Path:
    context: Obj = {"cluster": "c", "user": "u"}
    if namespace:
        context["namespace"] = namespace
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": server}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "here", "context": context}],
        "current-context": "here",
    }
    path.write_text(json.dumps(config))
    return path


def test_unreachable_cluster_is_one_sentence(tmp_path: Path) -> None:
    out = kwatt("report", "cifar", "--kubeconfig", str(kubeconfig(tmp_path / "k")))
    assert out.returncode == 1, out
    line = one_sentence(out.stderr)
    assert "Cannot reach the cluster at https://127.0.0.1:1: connection refused." in line


def test_kubeconfig_problems_are_one_sentence(tmp_path: Path) -> None:
    missing = kwatt("report", "cifar", "--kubeconfig", str(tmp_path / "nope"))
    assert missing.returncode == 2 and "does not exist" in one_sentence(missing.stderr)
    config = kubeconfig(tmp_path / "k")
    context = kwatt("report", "cifar", "--kubeconfig", str(config), "--context", "there")
    assert context.returncode == 2
    assert "has no context 'there'" in one_sentence(context.stderr)
    # No kubeconfig anywhere, not in a Pod: KUBECONFIG names nothing that exists.
    env = {k: v for k, v in os.environ.items() if k != "KUBERNETES_SERVICE_HOST"}
    env["KUBECONFIG"] = str(tmp_path / "none")
    nothing = kwatt("report", "cifar", env=env)
    assert nothing.returncode == 1
    assert "No cluster to read from" in one_sentence(nothing.stderr)


def test_no_matplotlib_is_one_sentence_and_exit_2(tmp_path: Path) -> None:
    block = "import sys\nsys.modules['matplotlib'] = None"
    config = str(kubeconfig(tmp_path / "k"))
    out = kwatt("report", "cifar", "--kubeconfig", config, "--plot", "x.png", code=block)
    assert out.returncode == 2
    assert one_sentence(out.stderr) == (
        "kwatt report: --plot needs matplotlib: pip install 'kwatt[plot]'."
    )
    bad = kwatt("report", "cifar", "--kubeconfig", config, "--plot", "x.svg")
    assert bad.returncode == 2 and ".png" in one_sentence(bad.stderr)


class _Conn:
    server, context = "https://k8s:6443", "prod"


def test_api_errors_are_sentences() -> None:
    found = {"kind": "Status", "reason": "NotFound", "details": {"name": "cifar"}}
    conn: Any = _Conn()
    assert api_error(404, "Not Found", json.dumps(found), "ml", "cifar", conn) == (
        "TrainingJob ml/cifar not found (context 'prod', cluster https://k8s:6443)."
    )
    assert "kwatt's CRD is not installed" in api_error(
        404, "", "404 page not found", "ml", "cifar", conn
    )
    forbidden = {
        "message": 'trainingjobs.kwatt.dev "cifar" is forbidden: User "bob" cannot get resource'
        ' "trainingjobs" in API group "kwatt.dev" in the namespace "ml"'
    }
    line = api_error(403, "Forbidden", json.dumps(forbidden), "ml", "cifar", conn)
    assert line.startswith("Not allowed to read TrainingJob ml/cifar: ") and 'User "bob"' in line
    assert "401 Unauthorized" in api_error(401, "Unauthorized", "", "ml", "cifar", conn)
    other = api_error(
        500, "Internal Server Error", '{"message": "etcd\\nis down."}', "ml", "x", conn
    )
    assert (
        other == "The cluster at https://k8s:6443 answered 500 Internal Server Error: etcd is down."
    )
