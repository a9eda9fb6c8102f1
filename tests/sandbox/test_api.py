"""Conformance of the sandbox API server, through the official `kubernetes` client.

Expectations come from the Kubernetes documentation (API Concepts, Custom
Resources, Finalizers, Garbage Collection, kubectl patch), not from the emulator's
code. The sandbox is an emulator for tests and demos; production is a real cluster.
"""

from __future__ import annotations

import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from sandbox_support import eventually

pytestmark = pytest.mark.timeout(60)

GROUP, VERSION, PLURAL = "example.kwatt.dev", "v1", "widgets"


def widget(name: str, size: int = 3, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "Widget",
        "metadata": {"name": name, "labels": {"app": "demo"}},
        "spec": {"size": size, **spec},
    }


def raw(
    sandbox: Any, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    """A plain HTTP request to the sandbox (for media types the generated client lacks)."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        sandbox.url + path, data=data, method=method, headers=headers or {}
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


def status_of(exc: ApiException) -> dict[str, Any]:
    return json.loads(exc.body)


def expect_error(code: int, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> dict[str, Any]:
    with pytest.raises(ApiException) as info:
        fn(*args, **kwargs)
    assert info.value.status == code, info.value.body
    body = status_of(info.value)
    assert body["kind"] == "Status" and body["code"] == code
    return body


def stream_events(resp: Any, until: Callable[[list[dict[str, Any]]], bool]) -> list[dict[str, Any]]:
    """Read a raw watch response until `until(events)` or the stream ends."""
    events: list[dict[str, Any]] = []
    buffer = b""
    try:
        for chunk in resp.stream(1024, decode_content=False):
            buffer += chunk
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                if line.strip():
                    events.append(json.loads(line))
                    if until(events):
                        return events
    finally:
        resp.release_conn()
    return events


@pytest.fixture
def core(api: client.ApiClient) -> client.CoreV1Api:
    return client.CoreV1Api(api)


@pytest.fixture
def custom(api: client.ApiClient, widget_crd: dict[str, Any]) -> client.CustomObjectsApi:
    return client.CustomObjectsApi(api)


# --- discovery --------------------------------------------------------------------------------


def test_discovery_lists_builtins_and_crds(
    api: client.ApiClient, custom: client.CustomObjectsApi
) -> None:
    version = client.VersionApi(api).get_code()
    assert version.major == "1"
    core_resources = {r.name: r for r in client.CoreV1Api(api).get_api_resources().resources}
    assert {"pods", "pods/status", "pods/log", "namespaces", "events", "configmaps"} <= set(
        core_resources
    )
    assert core_resources["pods"].namespaced and "po" in core_resources["pods"].short_names
    groups = {g.name: g for g in client.ApisApi(api).get_api_versions().groups}
    for group in ("batch", "apiextensions.k8s.io", "coordination.k8s.io", "events.k8s.io", GROUP):
        assert group in groups
    assert groups[GROUP].preferred_version.version == "v1"
    resources = custom.get_api_resources(GROUP, VERSION).resources
    by_name = {r.name: r for r in resources}
    assert by_name["widgets"].short_names == ["wd"]
    assert by_name["widgets"].categories == ["kwatt"]
    assert by_name["widgets"].kind == "Widget"
    assert "widgets/status" in by_name


def test_default_namespaces_exist(core: client.CoreV1Api) -> None:
    names = {ns.metadata.name for ns in core.list_namespace().items}
    assert {"default", "kube-system"} <= names


# --- CRUD and server-set metadata -------------------------------------------------------------


def test_create_get_conflict_and_not_found(custom: client.CustomObjectsApi) -> None:
    created = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, widget("w1")
    )
    meta = created["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z")
    assert meta["generation"] == 1 and meta["namespace"] == "default"
    assert int(meta["resourceVersion"]) > 0
    got = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    assert got == created
    body = expect_error(
        409, custom.create_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, widget("w1")
    )
    assert body["reason"] == "AlreadyExists"
    assert body["message"] == 'widgets.example.kwatt.dev "w1" already exists'
    body = expect_error(
        404, custom.get_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, "nope"
    )
    assert body["reason"] == "NotFound"
    assert body["details"] == {"name": "nope", "group": GROUP, "kind": "widgets"}


def test_namespace_must_exist_and_names_are_validated(
    core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    body = expect_error(
        404, custom.create_namespaced_custom_object, GROUP, VERSION, "missing", PLURAL, widget("w1")
    )
    assert body["message"] == 'namespaces "missing" not found'
    body = expect_error(
        422,
        custom.create_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        widget("Bad_Name"),
    )
    assert body["reason"] == "Invalid"
    assert body["details"]["causes"][0]["field"] == "metadata.name"
    assert "RFC 1123 subdomain" in body["message"]
    cm = client.V1ConfigMap(metadata=client.V1ObjectMeta(generate_name="cfg-"), data={"a": "b"})
    made = core.create_namespaced_config_map("default", cm)
    assert made.metadata.name.startswith("cfg-") and len(made.metadata.name) == len("cfg-") + 5


def test_resource_version_is_global_and_monotonic(
    core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    a = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("a"))
    cm = core.create_namespaced_config_map(
        "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"))
    )
    b = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("b"))
    rvs = [
        int(a["metadata"]["resourceVersion"]),
        int(cm.metadata.resource_version),
        int(b["metadata"]["resourceVersion"]),
    ]
    assert rvs == sorted(rvs) and len(set(rvs)) == 3
    listing = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert int(listing["metadata"]["resourceVersion"]) >= rvs[-1]


def test_replace_optimistic_concurrency_and_generation(custom: client.CustomObjectsApi) -> None:
    obj = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1"))
    stale = json.loads(json.dumps(obj))
    obj["spec"]["size"] = 4
    updated = custom.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", obj)
    assert updated["metadata"]["generation"] == 2
    stale["spec"]["size"] = 5
    body = expect_error(
        409, custom.replace_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, "w1", stale
    )
    assert body["reason"] == "Conflict"
    assert "the object has been modified" in body["message"]
    # PUT without resourceVersion is an unconditional update.
    del stale["metadata"]["resourceVersion"]
    forced = custom.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", stale)
    assert forced["spec"]["size"] == 5 and forced["metadata"]["generation"] == 3
    # Metadata-only changes do not bump generation; a no-op does not bump resourceVersion.
    forced["metadata"]["labels"]["extra"] = "1"
    labelled = custom.replace_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", forced
    )
    assert labelled["metadata"]["generation"] == 3
    same = custom.replace_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", labelled
    )
    assert same["metadata"]["resourceVersion"] == labelled["metadata"]["resourceVersion"]


def test_status_subresource_is_kept_apart(custom: client.CustomObjectsApi) -> None:
    obj = widget("w1")
    obj["status"] = {"phase": "ignored-on-create"}
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, obj)
    assert "status" not in created
    created["status"] = {"phase": "ignored"}
    created["spec"]["size"] = 5
    main = custom.replace_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1", created)
    assert "status" not in main and main["metadata"]["generation"] == 2
    status = custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "w1",
        {"status": {"phase": "Ready", "observedGeneration": 2}, "spec": {"size": 9}},
    )
    assert status["status"]["phase"] == "Ready"
    assert status["spec"]["size"] == 5, "spec changes through /status are ignored"
    assert status["metadata"]["generation"] == 2, "status writes do not bump generation"
    main = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", {"status": {"phase": "x"}}
    )
    assert main["status"]["phase"] == "Ready"
    got = custom.get_namespaced_custom_object_status(GROUP, VERSION, "default", PLURAL, "w1")
    assert got["status"]["phase"] == "Ready"


def test_pod_status_subresource_and_builtin_generation(
    api: client.ApiClient, core: client.CoreV1Api
) -> None:
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="p"),
        spec=client.V1PodSpec(containers=[client.V1Container(name="main", image="busybox:1")]),
        status=client.V1PodStatus(phase="Running"),
    )
    made = core.create_namespaced_pod("default", pod)
    assert made.status.phase == "Pending", "status is reset on create"
    patched = core.patch_namespaced_pod_status(
        "p", "default", {"status": {"phase": "Running", "podIP": "10.0.0.1"}}
    )
    assert patched.status.phase == "Running"
    core.patch_namespaced_pod("p", "default", {"status": {"phase": "Failed"}})
    assert core.read_namespaced_pod("p", "default").status.phase == "Running"
    batch = client.BatchV1Api(api)
    job = client.V1Job(
        metadata=client.V1ObjectMeta(name="j"),
        spec=client.V1JobSpec(
            template=client.V1PodTemplateSpec(
                spec=client.V1PodSpec(
                    restart_policy="Never", containers=[client.V1Container(name="m", image="x:1")]
                )
            )
        ),
    )
    made_job = batch.create_namespaced_job("default", job)
    assert made_job.metadata.generation == 1
    assert made_job.spec.backoff_limit == 6 and made_job.spec.completions == 1
    uid = made_job.metadata.uid
    assert made_job.spec.selector.match_labels == {"batch.kubernetes.io/controller-uid": uid}
    assert made_job.spec.template.metadata.labels["job-name"] == "j"
    done = batch.patch_namespaced_job_status(
        "j",
        "default",
        {"status": {"succeeded": 1, "conditions": [{"type": "Complete", "status": "True"}]}},
    )
    assert done.status.succeeded == 1 and done.metadata.generation == 1


# --- schema enforcement -----------------------------------------------------------------------


def test_schema_validation_errors_name_the_field(custom: client.CustomObjectsApi) -> None:
    body = expect_error(
        422,
        custom.create_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        widget("w1", size=11),
    )
    assert body["message"] == (
        'Widget.example.kwatt.dev "w1" is invalid: spec.size: Invalid value: 11: '
        "spec.size in body should be less than or equal to 10"
    )
    assert body["details"]["causes"] == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: 11: spec.size in body should be less than or equal to 10",
            "field": "spec.size",
        }
    ]
    body = expect_error(
        422,
        custom.create_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        widget("w2", color="pink", ratio=0, label="toolongxx", tags=["a", "b", "c", "d"], port=1.5),
    )
    fields = {c["field"]: c for c in body["details"]["causes"]}
    assert fields["spec.color"]["reason"] == "FieldValueNotSupported"
    assert (
        fields["spec.ratio"]["message"]
        == "Invalid value: 0: spec.ratio in body should be greater than 0"
    )
    assert fields["spec.label"]["reason"] == "FieldValueTooLong"
    assert fields["spec.tags"]["message"] == "Too many: 4: must have at most 3 items"
    assert "spec.port" in fields
    assert body["message"].startswith('Widget.example.kwatt.dev "w2" is invalid: [')
    missing = widget("w3")
    del missing["spec"]["size"]
    body = expect_error(
        422, custom.create_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, missing
    )
    assert body["details"]["causes"][0] == {
        "reason": "FieldValueRequired",
        "message": "Required value",
        "field": "spec.size",
    }
    body = expect_error(
        422,
        custom.create_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        widget("w4", label="a1"),
    )
    assert "spec.label in body should match '^[a-z]+$'" in body["message"]


def test_defaulting_and_pruning(custom: client.CustomObjectsApi) -> None:
    obj = widget(
        "w1",
        bogus=1,
        note=None,
        extra={"free": {"form": 1}},
        limits={"cpu": 2},
        template={"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": {}},
    )
    created = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, obj)
    spec = created["spec"]
    assert "bogus" not in spec, "unknown fields are pruned"
    assert spec["color"] == "green" and spec["nested"] == {"depth": 3}, "defaults applied"
    assert spec["note"] is None, "nullable keeps null"
    assert spec["extra"] == {"free": {"form": 1}}, "x-kubernetes-preserve-unknown-fields"
    assert spec["template"]["metadata"] == {"name": "x"}, "embedded resource keeps metadata"
    body = expect_error(
        400,
        custom.create_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        widget("w2", bogus=1),
        field_validation="Strict",
    )
    assert 'strict decoding error: unknown field "spec.bogus"' in body["message"]
    body = expect_error(
        422,
        custom.create_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        widget("w3", limits={"cpu": -1}),
    )
    assert body["details"]["causes"][0]["field"] == "spec.limits.cpu"


# --- list, selectors, pagination --------------------------------------------------------------


def test_label_and_field_selectors(core: client.CoreV1Api, custom: client.CustomObjectsApi) -> None:
    for name, labels in (("a", {"env": "prod", "tier": "web"}), ("b", {"env": "dev"}), ("c", {})):
        obj = widget(name)
        obj["metadata"]["labels"] = labels
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, obj)

    def names(**kw: Any) -> list[str]:
        items = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, **kw)[
            "items"
        ]
        return [i["metadata"]["name"] for i in items]

    assert names(label_selector="env=prod") == ["a"]
    assert names(label_selector="env==prod") == ["a"]
    assert names(label_selector="env!=prod") == ["b", "c"]
    assert names(label_selector="env in (prod,dev)") == ["a", "b"]
    assert names(label_selector="env notin (prod)") == ["b", "c"]
    assert names(label_selector="tier") == ["a"]
    assert names(label_selector="!env") == ["c"]
    assert names(field_selector="metadata.name=b") == ["b"]
    assert names(field_selector="metadata.namespace=default,metadata.name!=b") == ["a", "c"]
    expect_error(
        400,
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        field_selector="spec.size=3",
    )
    pod = client.V1Pod(
        metadata=client.V1ObjectMeta(name="p1"),
        spec=client.V1PodSpec(
            node_name="gpu-1", containers=[client.V1Container(name="m", image="x:1")]
        ),
    )
    core.create_namespaced_pod("default", pod)
    assert [
        p.metadata.name
        for p in core.list_pod_for_all_namespaces(field_selector="spec.nodeName=gpu-1").items
    ] == ["p1"]
    assert core.list_namespaced_pod("default", field_selector="status.phase=Running").items == []
    assert (
        len(core.list_namespaced_pod("default", field_selector="status.phase=Pending").items) == 1
    )


def test_limit_and_continue(core: client.CoreV1Api) -> None:
    for i in range(5):
        core.create_namespaced_config_map(
            "default", client.V1ConfigMap(metadata=client.V1ObjectMeta(name=f"cm{i}"))
        )
    first = core.list_namespaced_config_map("default", limit=2)
    assert [c.metadata.name for c in first.items] == ["cm0", "cm1"]
    assert first.metadata._continue and first.metadata.remaining_item_count == 3
    second = core.list_namespaced_config_map("default", limit=2, _continue=first.metadata._continue)
    assert [c.metadata.name for c in second.items] == ["cm2", "cm3"]


# --- watch ------------------------------------------------------------------------------------


def test_watch_without_rv_sends_current_state_then_follows(custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("old"))
    resp = custom.list_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, watch=True, timeout_seconds=10, _preload_content=False
    )
    threading.Timer(
        0.3,
        lambda: custom.create_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, widget("new")
        ),
    ).start()
    events = stream_events(resp, lambda ev: len(ev) >= 2)
    assert [(e["type"], e["object"]["metadata"]["name"]) for e in events] == [
        ("ADDED", "old"),
        ("ADDED", "new"),
    ]


def test_watch_resumes_from_resource_version(custom: client.CustomObjectsApi) -> None:
    start = custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)["metadata"][
        "resourceVersion"
    ]
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1"))
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"size": 4}}
    )
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    resp = custom.list_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        watch=True,
        resource_version=start,
        timeout_seconds=5,
        _preload_content=False,
    )
    events = stream_events(resp, lambda ev: len(ev) >= 3)
    assert [e["type"] for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in events]
    assert rvs == sorted(rvs) and rvs[0] > int(start)


def test_watch_bookmarks_and_timeout(custom: client.CustomObjectsApi) -> None:
    began = time.monotonic()
    resp = custom.list_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        watch=True,
        allow_watch_bookmarks=True,
        timeout_seconds=1,
        _preload_content=False,
    )
    events = stream_events(resp, lambda ev: False)
    elapsed = time.monotonic() - began
    assert 0.9 <= elapsed < 5, "timeoutSeconds ends the stream"
    bookmarks = [e for e in events if e["type"] == "BOOKMARK"]
    assert bookmarks, "a bookmark comes soon after the watch starts"
    assert set(bookmarks[0]["object"]) == {"kind", "apiVersion", "metadata"}
    assert set(bookmarks[0]["object"]["metadata"]) == {"resourceVersion"}


def test_watch_with_compacted_rv_gets_410_error_event(
    sandbox: Any, custom: client.CustomObjectsApi
) -> None:
    old = custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1"))
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"size": 5}}
    )
    sandbox.compact()
    resp = custom.list_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        watch=True,
        resource_version=old["metadata"]["resourceVersion"],
        timeout_seconds=5,
        _preload_content=False,
    )
    assert resp.status == 200
    events = stream_events(resp, lambda ev: True)
    assert events[0]["type"] == "ERROR"
    assert events[0]["object"]["code"] == 410 and events[0]["object"]["reason"] == "Expired"
    expect_error(
        410,
        custom.list_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        resource_version=old["metadata"]["resourceVersion"],
        resource_version_match="Exact",
    )


def test_watch_label_selector_transitions(custom: client.CustomObjectsApi) -> None:
    resp = custom.list_namespaced_custom_object(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        watch=True,
        label_selector="pick=yes",
        timeout_seconds=10,
        _preload_content=False,
    )

    def churn() -> None:
        custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1"))
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, "w1", {"metadata": {"labels": {"pick": "yes"}}}
        )
        custom.patch_namespaced_custom_object(
            GROUP, VERSION, "default", PLURAL, "w1", {"metadata": {"labels": {"pick": "no"}}}
        )

    threading.Timer(0.2, churn).start()
    events = stream_events(resp, lambda ev: len(ev) >= 2)
    assert [e["type"] for e in events] == ["ADDED", "DELETED"]


# --- patch flavours ---------------------------------------------------------------------------


def test_patch_flavours_on_custom_resources(sandbox: Any, custom: client.CustomObjectsApi) -> None:
    custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, widget("w1", tags=["a", "b"])
    )
    merged = custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"tags": ["c"], "color": None}}
    )
    assert (
        merged["spec"]["tags"] == ["c"] and merged["spec"]["color"] == "green"
    )  # removed, then defaulted
    path = f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}/w1"

    def raw_patch(body: Any, ctype: str) -> tuple[int, Any]:
        return raw(sandbox, "PATCH", path, body, {"Content-Type": ctype})

    code, patched = raw_patch(
        [
            {"op": "test", "path": "/spec/size", "value": 3},
            {"op": "replace", "path": "/spec/size", "value": 7},
        ],
        "application/json-patch+json",
    )
    assert code == 200 and patched["spec"]["size"] == 7
    code, failed = raw_patch(
        [{"op": "test", "path": "/spec/size", "value": 3}], "application/json-patch+json"
    )
    assert code == 422 and failed["reason"] == "Invalid"
    assert failed["message"] == "the server rejected our request due to an error in our request"
    code, smp = raw_patch({"spec": {"size": 1}}, "application/strategic-merge-patch+json")
    assert code == 415 and smp["reason"] == "UnsupportedMediaType"
    code, stale = raw_patch(
        {"metadata": {"resourceVersion": "1"}, "spec": {"size": 2}}, "application/merge-patch+json"
    )
    assert code == 409 and stale["reason"] == "Conflict"


def test_strategic_merge_patch_on_pods(core: client.CoreV1Api) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "containers": [
                {"name": "main", "image": "a:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "b:1"},
            ]
        },
    }
    core.create_namespaced_pod("default", pod)
    patched = core.patch_namespaced_pod(
        "p",
        "default",
        {
            "spec": {
                "containers": [
                    {"name": "main", "image": "a:2", "env": [{"name": "B", "value": "2"}]}
                ]
            }
        },
    )
    containers = {c.name: c for c in patched.spec.containers}
    assert containers["main"].image == "a:2" and containers["side"].image == "b:1"
    assert [e.name for e in containers["main"].env] == ["A", "B"]


# --- finalizers, deletion, garbage collection -------------------------------------------------


def test_finalizers_and_deletion_timestamp(custom: client.CustomObjectsApi) -> None:
    obj = widget("w1")
    obj["metadata"]["finalizers"] = ["example.kwatt.dev/cleanup"]
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, obj)
    deleting = custom.delete_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", grace_period_seconds=0
    )
    meta = deleting["metadata"]
    assert meta["deletionTimestamp"] and meta["deletionGracePeriodSeconds"] == 0
    assert meta["generation"] == 2
    got = custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    assert got["metadata"]["deletionTimestamp"]
    body = expect_error(
        422,
        custom.patch_namespaced_custom_object,
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "w1",
        {"metadata": {"finalizers": ["example.kwatt.dev/cleanup", "another"]}},
    )
    assert body["details"]["causes"][0]["field"] == "metadata.finalizers"
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", {"metadata": {"finalizers": None}}
    )
    expect_error(404, custom.get_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, "w1")


def _owned_cm(name: str, owner: dict[str, Any], block: bool = False) -> client.V1ConfigMap:
    ref = client.V1OwnerReference(
        api_version=f"{GROUP}/{VERSION}",
        kind="Widget",
        name=owner["metadata"]["name"],
        uid=owner["metadata"]["uid"],
        block_owner_deletion=block or None,
    )
    return client.V1ConfigMap(metadata=client.V1ObjectMeta(name=name, owner_references=[ref]))


def _cm_names(core: client.CoreV1Api) -> set[str]:
    return {c.metadata.name for c in core.list_namespaced_config_map("default").items}


def test_garbage_collection_background_and_orphan(
    core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    owner = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, widget("owner")
    )
    core.create_namespaced_config_map("default", _owned_cm("child", owner))
    custom.delete_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "owner", propagation_policy="Background"
    )
    eventually(lambda: "child" not in _cm_names(core))
    keeper = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, widget("keeper")
    )
    core.create_namespaced_config_map("default", _owned_cm("orphan", keeper))
    custom.delete_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "keeper", propagation_policy="Orphan"
    )
    orphan = core.read_namespaced_config_map("orphan", "default")
    assert not orphan.metadata.owner_references
    time.sleep(0.2)
    assert "orphan" in _cm_names(core)


def test_garbage_collection_foreground(
    core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    owner = custom.create_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, widget("owner")
    )
    child = _owned_cm("child", owner, block=True)
    child.metadata.finalizers = ["example.kwatt.dev/hold"]
    core.create_namespaced_config_map("default", child)
    result = custom.delete_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "owner", propagation_policy="Foreground"
    )
    assert "foregroundDeletion" in result["metadata"]["finalizers"]
    eventually(
        lambda: core.read_namespaced_config_map("child", "default").metadata.deletion_timestamp
    )
    assert custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "owner"), (
        "owner waits for the child"
    )
    core.patch_namespaced_config_map("child", "default", {"metadata": {"finalizers": None}})

    def owner_gone() -> bool:
        try:
            custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "owner")
        except ApiException as exc:
            return exc.status == 404
        return False

    eventually(owner_gone)


def test_namespace_and_crd_deletion_cascade(
    api: client.ApiClient, core: client.CoreV1Api, custom: client.CustomObjectsApi
) -> None:
    core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="team")))
    held = widget("held")
    held["metadata"]["finalizers"] = ["example.kwatt.dev/hold"]
    custom.create_namespaced_custom_object(GROUP, VERSION, "team", PLURAL, held)
    custom.create_namespaced_custom_object(GROUP, VERSION, "team", PLURAL, widget("w1"))
    core.create_namespaced_config_map(
        "team", client.V1ConfigMap(metadata=client.V1ObjectMeta(name="c"))
    )
    core.delete_namespace("team")
    eventually(
        lambda: "c" not in {c.metadata.name for c in core.list_namespaced_config_map("team").items}
    )
    assert core.read_namespace("team").status.phase == "Terminating"
    body = expect_error(
        403,
        core.create_namespaced_config_map,
        "team",
        client.V1ConfigMap(metadata=client.V1ObjectMeta(name="d")),
    )
    assert body["reason"] == "Forbidden"
    custom.patch_namespaced_custom_object(
        GROUP, VERSION, "team", PLURAL, "held", {"metadata": {"finalizers": None}}
    )
    eventually(lambda: not _exists_ns(core, "team"))
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w2"))
    ext = client.ApiextensionsV1Api(api)
    ext.delete_custom_resource_definition("widgets.example.kwatt.dev")
    eventually(
        lambda: (
            "widgets.example.kwatt.dev"
            not in {c.metadata.name for c in ext.list_custom_resource_definition().items}
        )
    )
    expect_error(404, custom.list_namespaced_custom_object, GROUP, VERSION, "default", PLURAL)


def _exists_ns(core: client.CoreV1Api, name: str) -> bool:
    try:
        core.read_namespace(name)
    except ApiException as exc:
        if exc.status == 404:
            return False
        raise
    return True


# --- events, leases, logs, tables -------------------------------------------------------------


def test_events_in_both_apis_and_involved_object_selectors(
    api: client.ApiClient, core: client.CoreV1Api
) -> None:
    core.create_namespaced_event(
        "default",
        client.CoreV1Event(
            metadata=client.V1ObjectMeta(name="e1"),
            involved_object=client.V1ObjectReference(
                kind="Widget", name="w1", namespace="default", uid="u1"
            ),
            reason="Created",
            message="hello",
            type="Normal",
            event_time="2025-01-01T00:00:00.000000Z",
        ),
    )
    found = core.list_namespaced_event(
        "default",
        field_selector="involvedObject.name=w1,involvedObject.kind=Widget,involvedObject.uid=u1",
    )
    assert [e.message for e in found.items] == ["hello"]
    new_api = client.EventsV1Api(api).list_namespaced_event("default")
    assert new_api.items[0].note == "hello" and new_api.items[0].regarding.name == "w1"


def test_leases(api: client.ApiClient) -> None:
    coord = client.CoordinationV1Api(api)
    lease = client.V1Lease(
        metadata=client.V1ObjectMeta(name="kwatt"), spec=client.V1LeaseSpec(holder_identity="me")
    )
    made = coord.create_namespaced_lease("kube-system", lease)
    made.spec.holder_identity = "you"
    assert (
        coord.replace_namespaced_lease("kwatt", "kube-system", made).spec.holder_identity == "you"
    )


def test_pod_logs(sandbox: Any, core: client.CoreV1Api) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "p"},
        "spec": {
            "containers": [{"name": "main", "image": "a:1"}, {"name": "side", "image": "b:1"}]
        },
    }
    core.create_namespaced_pod("default", pod)
    sandbox.write_log("default", "p", "main", "line 1\nline 2\n")
    assert core.read_namespaced_pod_log("p", "default", container="main") == "line 1\nline 2\n"
    assert (
        core.read_namespaced_pod_log("p", "default", container="main", tail_lines=1) == "line 2\n"
    )
    with pytest.raises(ApiException) as err:
        core.read_namespaced_pod_log("p", "default")
    assert (
        err.value.status == 400
        and "a container name must be specified" in status_of(err.value)["message"]
    )


def test_table_output_for_custom_and_builtin_resources(
    sandbox: Any, custom: client.CustomObjectsApi
) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1", size=4))
    custom.patch_namespaced_custom_object_status(
        GROUP,
        VERSION,
        "default",
        PLURAL,
        "w1",
        {"status": {"phase": "Ready", "conditions": [{"type": "Ready", "status": "True"}]}},
    )
    table_accept = {"Accept": "application/json;as=Table;v=v1;g=meta.k8s.io,application/json"}
    _, table = raw(
        sandbox, "GET", f"/apis/{GROUP}/{VERSION}/namespaces/default/{PLURAL}", headers=table_accept
    )
    assert table["kind"] == "Table" and table["apiVersion"] == "meta.k8s.io/v1"
    assert [c["name"] for c in table["columnDefinitions"]] == [
        "Name",
        "Size",
        "Color",
        "Phase",
        "Ready",
        "Age",
    ]
    cells = table["rows"][0]["cells"]
    assert cells[:5] == ["w1", 4, "green", "Ready", "True"] and cells[5].endswith("s")
    assert table["rows"][0]["object"]["kind"] == "PartialObjectMetadata"
    _, pods = raw(sandbox, "GET", "/api/v1/namespaces/default/pods", headers=table_accept)
    assert [c["name"] for c in pods["columnDefinitions"]][:5] == [
        "Name",
        "Ready",
        "Status",
        "Restarts",
        "Age",
    ]


# --- audit and faults -------------------------------------------------------------------------


def test_audit_log_names_verbs_like_rbac(sandbox: Any, custom: client.CustomObjectsApi) -> None:
    sandbox.audit.clear()
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1"))
    custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    custom.patch_namespaced_custom_object_status(
        GROUP, VERSION, "default", PLURAL, "w1", {"status": {"phase": "x"}}
    )
    custom.delete_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    usage = sandbox.audit.rbac_usage()
    assert usage == {
        (GROUP, "widgets", "create"),
        (GROUP, "widgets", "list"),
        (GROUP, "widgets/status", "patch"),
        (GROUP, "widgets", "delete"),
    }
    record = sandbox.audit.records()[0]
    assert (record.namespace, record.name, record.version) == ("default", "", "v1")
    assert "OpenAPI-Generator" in record.user_agent or record.user_agent


def test_faults_errors_conflicts_slowness_and_expiry(
    sandbox: Any, custom: client.CustomObjectsApi
) -> None:
    custom.create_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, widget("w1"))
    rule = sandbox.faults.error(503, verb="get", resource="widgets", name="w1", count=2)
    expect_error(503, custom.get_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, "w1")
    expect_error(503, custom.get_namespaced_custom_object, GROUP, VERSION, "default", PLURAL, "w1")
    assert custom.get_namespaced_custom_object(GROUP, VERSION, "default", PLURAL, "w1")
    assert rule.hits == 2
    sandbox.faults.conflicts("widgets", count=2)
    for _ in range(2):
        expect_error(
            409,
            custom.patch_namespaced_custom_object,
            GROUP,
            VERSION,
            "default",
            PLURAL,
            "w1",
            {"spec": {"size": 4}},
        )
    assert custom.patch_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, "w1", {"spec": {"size": 4}}
    )
    sandbox.faults.slow(0.5, resource="widgets", verb="list")
    began = time.monotonic()
    custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL)
    assert time.monotonic() - began >= 0.5
    sandbox.faults.error(500, resource="widgets", count=None, ttl=0.3)
    expect_error(500, custom.list_namespaced_custom_object, GROUP, VERSION, "default", PLURAL)
    eventually(
        lambda: custom.list_namespaced_custom_object(GROUP, VERSION, "default", PLURAL), timeout=3
    )


def test_faults_drop_and_expire_watches(sandbox: Any, custom: client.CustomObjectsApi) -> None:
    sandbox.faults.drop_watches(resource="widgets", after=0.2)
    resp = custom.list_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, watch=True, timeout_seconds=10, _preload_content=False
    )
    began = time.monotonic()
    with pytest.raises(Exception):  # noqa: B017 - the connection is cut mid-stream
        events = stream_events(resp, lambda ev: False)
        raise AssertionError(f"stream ended cleanly with {events}")
    assert time.monotonic() - began < 5
    sandbox.faults.expire_watches(resource="widgets", after=0.1)
    resp = custom.list_namespaced_custom_object(
        GROUP, VERSION, "default", PLURAL, watch=True, timeout_seconds=10, _preload_content=False
    )
    events = stream_events(resp, lambda ev: ev[-1]["type"] == "ERROR")
    assert events[-1]["object"]["code"] == 410
