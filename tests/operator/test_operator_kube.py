"""The operator's shell against a real API server (the session's cluster), without kopf:
what kube.py reads and writes, and what handlers.py does with one reconcile pass and its
failures. Each test takes a second or two, so mutation runs keep them for the mutants of
kube.py and handlers.py (tools/mutation.py)."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from operator_support import ACCOUNT, service_account_kubeconfig
from test_operator_handlers import taken, unreachable

from conftest import sample_trainingjob
from kwatt_core.contract import SIDECAR_CONTAINER
from kwatt_core.report import ProfilePoint, Report, encode
from kwatt_operator.crd import CRD_NAME, crd_path
from kwatt_operator.handlers import OperatorConfig, _reconcile_once, _report, _work
from kwatt_operator.jobs import LABEL_TRAININGJOB, SidecarSettings
from kwatt_operator.kube import Conflict, Gone, Kube, Snapshot
from kwatt_operator.metrics import OperatorMetrics
from kwatt_operator.reconcile import ANNOTATION_RUN_REQUEST, reconcile
from kwatt_operator.workqueue import WorkQueue
from kwatt_sandbox.testing import Cluster, eventually

pytestmark = pytest.mark.timeout(120)

Obj = dict[str, Any]
SETTINGS = SidecarSettings(image="ghcr.io/kwatt/sidecar:0.1")
NOWHERE = {"kwatt.dev/test-node": "none"}  # no node has it: the Pods stay Pending


@pytest.fixture(scope="module")
def crd(cluster: Cluster) -> None:
    cluster.apply_crd(crd_path(), CRD_NAME)


@pytest.fixture
def kube(api_client: Any) -> Kube:
    return Kube(api_client)


def create(cluster: Cluster, obj: Obj) -> Obj:
    """Create `obj` with kubectl, as a user would; the object as the API server stored it."""
    out = cluster.kubectl("create", "-f", "-", "-o", "json", input=json.dumps(obj)).stdout
    created: Obj = json.loads(out)
    return created


def get(cluster: Cluster, namespace: str, kind: str, name: str) -> Obj | None:
    result = cluster.kubectl("get", kind, name, "-n", namespace, "-o", "json", check=False)
    return json.loads(result.stdout) if result.returncode == 0 else None


def new_trainingjob(cluster: Cluster, namespace: str, name: str = "cifar") -> Obj:
    tj = sample_trainingjob()
    tj["metadata"] = {"name": name, "namespace": namespace, "labels": {"team": "vision"}}
    tj["spec"]["template"]["spec"]["nodeSelector"] = NOWHERE
    return create(cluster, tj)


def job(namespace: str, name: str, owner: Obj | None, tj_name: str = "cifar") -> Obj:
    """A suspended Job (no Pods) labelled as kwatt labels its runs, owned by `owner`."""
    meta: Obj = {"name": name, "namespace": namespace, "labels": {LABEL_TRAININGJOB: tj_name}}
    if owner is not None:
        meta["ownerReferences"] = [
            {
                "apiVersion": owner["apiVersion"],
                "kind": owner["kind"],
                "name": owner["metadata"]["name"],
                "uid": owner["metadata"]["uid"],
                "controller": True,
            }
        ]
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": meta,
        "spec": {
            "suspend": True,
            "template": {
                "spec": {
                    "restartPolicy": "Never",
                    "nodeSelector": NOWHERE,
                    "containers": [{"name": "train", "image": "example.com/train:1"}],
                }
            },
        },
    }


def pod(namespace: str, name: str, labels: dict[str, str]) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "nodeSelector": NOWHERE,
            "containers": [{"name": "train", "image": "example.com/train:1"}],
        },
    }


def events_about(cluster: Cluster, namespace: str, uid: str) -> list[Obj]:
    listed = cluster.kubectl_json(
        "get", "events", "-n", namespace, "--field-selector", f"involvedObject.uid={uid}"
    )
    items: list[Obj] = listed["items"]
    return items


# --- kube.py: reading -------------------------------------------------------------------------


def test_read_gives_the_trainingjob_its_own_jobs_and_their_pods(
    cluster: Cluster, namespace: str, crd: None, kube: Kube
) -> None:
    tj = new_trainingjob(cluster, namespace)
    other = new_trainingjob(cluster, namespace, "other")
    run_1 = {LABEL_TRAININGJOB: "cifar", "batch.kubernetes.io/job-name": "cifar-run-1"}
    run_2 = {LABEL_TRAININGJOB: "cifar", "job-name": "cifar-run-2"}  # the label before 1.27
    stray = {LABEL_TRAININGJOB: "cifar", "batch.kubernetes.io/job-name": "cifar-stray"}
    objects = [
        job(namespace, "cifar-run-1", tj),
        job(namespace, "cifar-run-2", tj),
        job(namespace, "cifar-stray", None),  # its label, but not its Job
        job(namespace, "other-run-1", other, "other"),
        pod(namespace, "run-1-pod", run_1),
        pod(namespace, "run-2-pod", run_2),
        pod(namespace, "stray-pod", stray),
    ]
    cluster.kubectl(
        "create",
        "-f",
        "-",
        input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
    )

    snapshot = asyncio.run(kube.read(namespace, "cifar"))

    assert snapshot.trainingjob["metadata"]["uid"] == tj["metadata"]["uid"]
    assert snapshot.trainingjob["spec"] == tj["spec"]
    assert sorted(j["metadata"]["name"] for j in snapshot.jobs) == ["cifar-run-1", "cifar-run-2"]
    assert {k: [p["metadata"]["name"] for p in v] for k, v in snapshot.pods.items()} == {
        "cifar-run-1": ["run-1-pod"],
        "cifar-run-2": ["run-2-pod"],
    }
    alone = asyncio.run(kube.read(namespace, "other"))
    assert [j["metadata"]["name"] for j in alone.jobs] == ["other-run-1"]
    assert alone.pods == {}


def test_a_pass_lists_only_its_trainingjobs_jobs_and_pods(
    cluster: Cluster, namespace: str, crd: None, kube: Kube
) -> None:
    """Jobs and Pods are listed by the TrainingJob's label, so the API server sends only
    those: a pass costs the same in a namespace full of other Jobs and Pods. Seen in the
    sandbox's audit log."""
    if not cluster.state.get("logs"):
        pytest.skip("needs the sandbox's audit log")
    tj = new_trainingjob(cluster, namespace)
    create(cluster, job(namespace, "cifar-run-1", tj))  # a Job of its own: Pods are listed too
    asyncio.run(kube.read(namespace, "cifar"))
    prefixes = (
        f"/apis/batch/v1/namespaces/{namespace}/jobs",
        f"/api/v1/namespaces/{namespace}/pods",
    )

    def lists() -> list[str]:
        return [
            e["requestURI"]
            for e in cluster.audit_events()
            if e.get("verb") == "list" and e["requestURI"].startswith(prefixes)
        ]

    uris = eventually(lambda: len(lists()) == 2 and lists(), timeout=30)
    for uri in uris:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(uri).query)
        assert query.get("labelSelector") == [f"{LABEL_TRAININGJOB}=cifar"], uri


def test_reading_a_trainingjob_that_is_gone_says_so(
    cluster: Cluster, namespace: str, crd: None, kube: Kube
) -> None:
    with pytest.raises(Gone):
        asyncio.run(kube.read(namespace, "never-created"))


# --- kube.py: writing -------------------------------------------------------------------------


def test_the_status_is_written_only_over_the_version_read(
    cluster: Cluster, namespace: str, crd: None, kube: Kube
) -> None:
    new_trainingjob(cluster, namespace)
    first = asyncio.run(kube.read(namespace, "cifar"))
    written = asyncio.run(kube.write_status(first.trainingjob, {"state": "Idle", "runs": 0}))
    assert written["status"] == {"state": "Idle", "runs": 0}
    stored = get(cluster, namespace, "trainingjob", "cifar")
    assert stored is not None and stored["status"] == {"state": "Idle", "runs": 0}
    assert stored["spec"] == first.trainingjob["spec"]  # the status write leaves the spec
    # A pass that read before that write must not overwrite it: read again.
    with pytest.raises(Conflict):
        asyncio.run(kube.write_status(first.trainingjob, {"state": "Running", "runs": 1}))
    stored = get(cluster, namespace, "trainingjob", "cifar")
    assert stored is not None and stored["status"]["runs"] == 0
    cluster.kubectl("delete", "trainingjob", "cifar", "-n", namespace)
    with pytest.raises(Gone):
        asyncio.run(kube.write_status(stored, {"state": "Idle", "runs": 0}))


def test_a_runs_job_is_created_once(
    cluster: Cluster, namespace: str, crd: None, kube: Kube
) -> None:
    tj = new_trainingjob(cluster, namespace)
    run_job = job(namespace, "cifar-run-1", tj)
    assert asyncio.run(kube.create_job(run_job)) is True
    created = get(cluster, namespace, "job", "cifar-run-1")
    assert created is not None
    assert created["metadata"]["ownerReferences"][0]["uid"] == tj["metadata"]["uid"]
    # An earlier pass made it already: no error, no second Job.
    assert asyncio.run(kube.create_job(run_job)) is False
    # A Job the API server refuses is an error, not "already there".
    bad = copy.deepcopy(run_job)
    bad["metadata"]["name"] = "cifar-run-2"
    bad["spec"]["template"]["spec"]["containers"] = []
    with pytest.raises(Exception) as refused:
        asyncio.run(kube.create_job(bad))
    assert getattr(refused.value, "status", None) == 422


def test_a_deleted_job_takes_its_pods_and_deleting_it_again_is_harmless(
    cluster: Cluster, namespace: str, crd: None, kube: Kube
) -> None:
    """A replaced run's Job goes with its Pods (a Job deleted through the API without a
    propagation policy would leave them running on the GPU)."""
    tj = new_trainingjob(cluster, namespace)
    running = job(namespace, "cifar-run-1", tj)
    running["spec"]["suspend"] = False  # its Pod is made, and stays Pending
    create(cluster, running)

    def pods() -> list[Obj]:
        listed = cluster.kubectl_json(
            "get", "pods", "-n", namespace, "-l", "batch.kubernetes.io/job-name=cifar-run-1"
        )
        items: list[Obj] = listed["items"]
        return items

    eventually(pods, timeout=30)
    asyncio.run(kube.delete_job(namespace, "cifar-run-1"))
    eventually(lambda: get(cluster, namespace, "job", "cifar-run-1") is None, timeout=30)
    eventually(lambda: pods() == [], timeout=30)
    asyncio.run(kube.delete_job(namespace, "cifar-run-1"))


def test_an_event_is_about_the_trainingjob(
    cluster: Cluster, namespace: str, crd: None, kube: Kube
) -> None:
    """What `kubectl describe tj` shows: an Event whose involved object is the TrainingJob
    (kind, apiVersion, name, namespace and uid), from the operator, its message cut to the
    1 KiB that Events hold."""
    tj = new_trainingjob(cluster, namespace)
    message = "Run 1 started with batch size 16. " + "x" * 2000
    asyncio.run(kube.post_event(tj, "Warning", "RunStarted", message))
    (event,) = events_about(cluster, namespace, tj["metadata"]["uid"])
    involved = event["involvedObject"]
    assert involved == {
        "apiVersion": "kwatt.dev/v1alpha1",
        "kind": "TrainingJob",
        "name": "cifar",
        "namespace": namespace,
        "uid": tj["metadata"]["uid"],
    }
    assert (event["type"], event["reason"]) == ("Warning", "RunStarted")
    assert event["message"] == message[:1024]
    assert event["source"]["component"] == "kwatt-operator"
    assert event["count"] == 1 and event["metadata"]["name"].startswith("cifar.")
    # Its age, as `kubectl describe` shows it: first and last seen now.
    for stamp in (event["firstTimestamp"], event["lastTimestamp"]):
        seen = datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
        assert abs((datetime.now(UTC) - seen).total_seconds()) < 120


# --- handlers.py: one pass, and what it reports -------------------------------------------------


def sample_value(metrics: OperatorMetrics, name: str, namespace: str, **labels: str) -> Any:
    return metrics.registry.get_sample_value(
        name, {"namespace": namespace, "trainingjob": "cifar", **labels}
    )


def test_one_pass_writes_the_status_creates_the_run_and_says_so(
    cluster: Cluster, namespace: str, crd: None, kube: Kube
) -> None:
    tj = new_trainingjob(cluster, namespace)
    config = OperatorConfig(SETTINGS, metrics=OperatorMetrics())
    requeue = asyncio.run(_reconcile_once((namespace, "cifar"), kube, config))
    assert requeue is None  # no schedule: the next look is the resync
    stored = get(cluster, namespace, "trainingjob", "cifar")
    assert stored is not None
    status = stored["status"]
    assert status["runs"] == 1 and status["state"] == "Running"
    (entry,) = status["active"]
    assert entry["job"] == "cifar-run-1" and entry["batchSize"] == 16  # the default size
    run_job = get(cluster, namespace, "job", "cifar-run-1")
    assert run_job is not None
    owner = run_job["metadata"]["ownerReferences"][0]
    assert owner["uid"] == tj["metadata"]["uid"] and owner["controller"] is True
    reasons = [e["reason"] for e in events_about(cluster, namespace, tj["metadata"]["uid"])]
    assert reasons == ["RunStarted"]
    metrics = config.metrics
    assert sample_value(metrics, "kwatt_trainingjob_batch_size", namespace) == 16
    # The pass again, as after a restart: nothing new, still one run and one Job.
    asyncio.run(_reconcile_once((namespace, "cifar"), kube, config))
    stored = get(cluster, namespace, "trainingjob", "cifar")
    assert stored is not None and stored["status"]["runs"] == 1
    jobs = cluster.kubectl_json("get", "jobs", "-n", namespace)["items"]
    assert [j["metadata"]["name"] for j in jobs] == ["cifar-run-1"]


def test_a_pass_that_replaces_a_run_deletes_its_job(
    cluster: Cluster, namespace: str, crd: None, kube: Kube
) -> None:
    """concurrencyPolicy Replace and a run request: the run in flight is recorded as
    replaced, its Job deleted, and the new run's Job created, in one pass."""
    new_trainingjob(cluster, namespace)
    cluster.kubectl(
        "patch", "tj", "cifar", "-n", namespace, "--type=merge",
        "-p", json.dumps({"spec": {"concurrencyPolicy": "Replace"}}),
    )  # fmt: skip
    config = OperatorConfig(SETTINGS)
    asyncio.run(_reconcile_once((namespace, "cifar"), kube, config))
    assert get(cluster, namespace, "job", "cifar-run-1") is not None
    cluster.kubectl("annotate", "tj", "cifar", "-n", namespace, f"{ANNOTATION_RUN_REQUEST}=1")
    asyncio.run(_reconcile_once((namespace, "cifar"), kube, config))
    stored = get(cluster, namespace, "trainingjob", "cifar")
    assert stored is not None
    assert [(h["run"], h["result"]) for h in stored["status"]["history"]] == [(1, "replaced")]
    assert get(cluster, namespace, "job", "cifar-run-2") is not None
    eventually(lambda: get(cluster, namespace, "job", "cifar-run-1") is None, timeout=30)


def finished_run(snapshot: Snapshot, rep: Report) -> tuple[list[Obj], dict[str, list[Obj]]]:
    """The snapshot's run Job as the Job controller leaves it when it completes, and its Pod
    with the sidecar's report as its termination message."""
    (run_job,) = copy.deepcopy(snapshot.jobs)
    run_job["status"] = {"conditions": [{"type": "Complete", "status": "True"}]}
    name = run_job["metadata"]["name"]
    terminated = {"exitCode": 0, "reason": "Completed", "message": encode(rep)}
    run_pod = {
        "metadata": {"name": f"{name}-abcde", "creationTimestamp": "2025-03-01T12:00:00Z"},
        "status": {
            "initContainerStatuses": [
                {"name": SIDECAR_CONTAINER, "state": {"terminated": terminated}}
            ]
        },
    }
    return [run_job], {name: [run_pod]}


def test_a_finished_run_is_counted_in_the_metrics_and_posted_as_an_event(
    cluster: Cluster, namespace: str, crd: None, kube: Kube
) -> None:
    tj = new_trainingjob(cluster, namespace)
    config = OperatorConfig(SETTINGS, metrics=OperatorMetrics())
    asyncio.run(_reconcile_once((namespace, "cifar"), kube, config))
    snapshot = asyncio.run(kube.read(namespace, "cifar"))
    # Profiled at 250 W then 175 W (40 steps each), kept 175 W.
    rep = Report(
        result="reached",
        batch_size=16,
        epochs=12,
        energy_j=90_000.0,
        time_s=600.0,
        cost=50_000.0,
        limit_w=175,
        profile_complete=True,
        epoch_cost=4_000.0,
        metric=0.61,
        gpu_model="v100",
        profile=(ProfilePoint(250, 1_000.0, 4.0, 40), ProfilePoint(175, 800.0, 5.0, 40)),
    )
    jobs, pods = finished_run(snapshot, rep)
    plan = reconcile(snapshot.trainingjob, jobs, pods, datetime.now(UTC), SETTINGS)
    asyncio.run(_report(snapshot.trainingjob, plan, config, kube))
    m = config.metrics
    assert sample_value(m, "kwatt_trainingjob_energy_joules_total", namespace) == 90_000.0
    assert sample_value(m, "kwatt_trainingjob_seconds_total", namespace) == 600.0
    assert sample_value(m, "kwatt_trainingjob_runs_total", namespace, result="reached") == 1
    # The windows: 1,800 J and 9 s; beyond the same 80 steps at 175 W's 20 J and 0.125 s a
    # step (1,600 J, 10 s): 200 J, and no time (the 250 W window was quicker).
    assert sample_value(m, "kwatt_trainingjob_profiling_energy_joules_total", namespace) == 1_800
    assert sample_value(m, "kwatt_trainingjob_profiling_seconds_total", namespace) == 9.0
    extra_energy = "kwatt_trainingjob_profiling_extra_energy_joules_total"
    assert sample_value(m, extra_energy, namespace) == 200.0
    assert sample_value(m, "kwatt_trainingjob_profiling_extra_seconds_total", namespace) == 0.0
    # The gauges mirror the status the pass wrote: run 1 at 16, keeping 175 W.
    assert sample_value(m, "kwatt_trainingjob_batch_size", namespace) == 16
    assert sample_value(m, "kwatt_trainingjob_power_limit_watts", namespace) == 175
    posted = events_about(cluster, namespace, tj["metadata"]["uid"])
    kinds = sorted((e["type"], e["reason"]) for e in posted)
    assert kinds == [("Normal", "RunStarted"), ("Normal", "TargetReached")]


def test_an_event_that_cannot_be_posted_is_logged_and_the_pass_goes_on(
    cluster: Cluster, namespace: str, crd: None, kube: Kube, caplog: pytest.LogCaptureFixture
) -> None:
    new_trainingjob(cluster, namespace)
    config = OperatorConfig(SETTINGS, metrics=OperatorMetrics())
    snapshot = asyncio.run(kube.read(namespace, "cifar"))
    plan = reconcile(snapshot.trainingjob, [], {}, datetime.now(UTC), SETTINGS)
    # A namespace being deleted takes no new objects: the Event is refused.
    cluster.kubectl("delete", "namespace", namespace, "--wait=false")
    with caplog.at_level(logging.WARNING, logger="kwatt_operator.handlers"):
        asyncio.run(_report(snapshot.trainingjob, plan, config, kube))
    (line,) = [r.getMessage() for r in caplog.records]
    assert line.startswith("Event RunStarted about cifar not posted: ")
    m = config.metrics
    assert sample_value(m, "kwatt_trainingjob_batch_size", namespace) == 16  # metrics still


# --- handlers.py: a pass that fails -------------------------------------------------------------


def test_a_refused_pass_says_the_api_servers_status_and_reason(
    cluster: Cluster, namespace: str, crd: None, api_client: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """The warning names the HTTP status and reason, not the response's headers."""
    from kubernetes import client

    new_trainingjob(cluster, namespace)
    anonymous = client.Configuration()
    anonymous.host = api_client.configuration.host
    anonymous.ssl_ca_cert = api_client.configuration.ssl_ca_cert
    config = OperatorConfig(SETTINGS)

    async def main() -> None:
        queue = WorkQueue()
        await _work((namespace, "cifar"), Kube(client.ApiClient(anonymous)), config, queue)
        await queue.stop()

    with caplog.at_level(logging.WARNING, logger="kwatt_operator.handlers"):
        asyncio.run(main())
    (line,) = [r.getMessage() for r in caplog.records]
    assert line == (
        f"Reconciling TrainingJob {namespace}/cifar failed (HTTP 401 Unauthorized); "
        "retrying in 2 s."
    )


def test_the_operators_service_account_can_do_every_call(
    cluster: Cluster, namespace: str, crd: None, tmp_path: Path
) -> None:
    """In a Pod the operator authenticates with its ServiceAccount's token (a bearer token,
    not a client certificate) and has only operator/rbac/clusterrole.yaml's rights."""
    from kubernetes import client, config

    path = service_account_kubeconfig(cluster, namespace, tmp_path / "operator.kubeconfig")
    try:
        configuration = client.Configuration()
        config.load_kube_config(  # type: ignore[no-untyped-call]
            config_file=str(path), client_configuration=configuration
        )
        kube = Kube(client.ApiClient(configuration))
        tj = new_trainingjob(cluster, namespace)
        snapshot = asyncio.run(kube.read(namespace, "cifar"))
        asyncio.run(kube.write_status(snapshot.trainingjob, {"state": "Idle"}))
        assert asyncio.run(kube.create_job(job(namespace, "cifar-run-1", tj))) is True
        asyncio.run(kube.post_event(tj, "Normal", "RunStarted", "Run 1 started."))
        asyncio.run(kube.delete_job(namespace, "cifar-run-1"))
        stored = get(cluster, namespace, "trainingjob", "cifar")
        assert stored is not None and stored["status"] == {"state": "Idle"}
        assert [e["reason"] for e in events_about(cluster, namespace, tj["metadata"]["uid"])] == [
            "RunStarted"
        ]
    finally:
        cluster.kubectl("delete", "clusterrolebinding", f"{ACCOUNT}-{namespace}", check=False)


def test_after_a_good_pass_the_backoff_starts_again_and_a_gone_trainingjob_is_dropped(
    cluster: Cluster, namespace: str, crd: None, kube: Kube
) -> None:
    new_trainingjob(cluster, namespace)
    key = (namespace, "cifar")
    config = OperatorConfig(SETTINGS)
    down = unreachable()

    async def main() -> list[float | None]:
        queue = WorkQueue()
        due = []
        for k in (down, down, kube, down):
            await _work(key, k, config, queue)
            due.append(taken(queue, key))
        cluster.kubectl("delete", "trainingjob", "cifar", "-n", namespace)
        await _work(key, kube, config, queue)
        due.append(queue.due_in(key))
        await queue.stop()
        return due

    due = asyncio.run(main())
    # 2 s, 4 s; then a good pass: the resync, 60 s; then 2 s again; gone: nothing.
    assert due[:4] == [pytest.approx(d, abs=0.5) for d in (2, 4, 60, 2)]
    assert due[4] is None


def test_a_pass_that_lost_a_race_is_run_again_at_once(
    cluster: Cluster, namespace: str, crd: None, api_client: Any
) -> None:
    """Someone wrote the TrainingJob between the pass's read and its status write: the
    write is refused (409), nothing is created, and the key is queued again at once."""
    new_trainingjob(cluster, namespace)

    class Raced(Kube):
        async def read(self, namespace: str, name: str) -> Snapshot:
            snapshot = await super().read(namespace, name)
            cluster.kubectl("label", "trainingjob", name, "-n", namespace, "raced=yes")
            return snapshot

    key = (namespace, "cifar")
    config = OperatorConfig(SETTINGS)
    worked: list[tuple[str, str]] = []

    async def main() -> None:
        queue = WorkQueue()
        await _work(key, Raced(api_client), config, queue)
        assert queue.due_in(key) is None  # not a retry with backoff

        async def record(k: tuple[str, str]) -> None:
            worked.append(k)

        queue.start(record, 1)
        for _ in range(100):
            if worked:
                break
            await asyncio.sleep(0.01)
        await queue.stop()

    asyncio.run(main())
    assert worked == [key]
    stored = get(cluster, namespace, "trainingjob", "cifar")
    assert stored is not None and "status" not in stored
    assert get(cluster, namespace, "job", "cifar-run-1") is None
