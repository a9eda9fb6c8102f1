"""kubectl (v1.32, default flags) against the sandbox: apply, get, describe, patch, ...

The sandbox is an emulator for tests and demos; production is a real cluster.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
import yaml
from sandbox_support import MANIFESTS, Kubectl, eventually

pytestmark = pytest.mark.timeout(90)


def _widget_yaml(size: int = 3, extra: str = "") -> str:
    return (MANIFESTS / "widget.yaml").read_text().replace("size: 3", f"size: {size}{extra}")


def test_apply_get_describe_and_printer_columns(kubectl: Kubectl) -> None:
    out = kubectl("apply", "-f", str(MANIFESTS / "widget-crd.yaml")).stdout
    assert "customresourcedefinition.apiextensions.k8s.io/widgets.example.kwatt.dev created" in out
    assert (
        "widget.example.kwatt.dev/w1 created"
        in kubectl("apply", "-f", "-", input=_widget_yaml()).stdout
    )
    assert "configured" in kubectl("apply", "-f", "-", input=_widget_yaml(4)).stdout
    assert "unchanged" in kubectl("apply", "-f", "-", input=_widget_yaml(4)).stdout
    table = kubectl("get", "wd").stdout.splitlines()
    assert table[0].split() == ["NAME", "SIZE", "COLOR", "PHASE", "READY", "AGE"]
    assert table[1].split()[:3] == ["w1", "4", "red"]
    assert kubectl("get", "kwatt").stdout.splitlines()[0].startswith("NAME")
    obj = json.loads(kubectl("get", "widget", "w1", "-o", "json").stdout)
    assert obj["spec"] == {"size": 4, "color": "red", "nested": {"depth": 3}}
    assert "kubectl.kubernetes.io/last-applied-configuration" in obj["metadata"]["annotations"]
    assert (
        yaml.safe_load(kubectl("get", "widgets.example.kwatt.dev/w1", "-o", "yaml").stdout)["kind"]
        == "Widget"
    )
    described = kubectl("describe", "wd", "w1").stdout
    assert "Name:         w1" in described and "Size:" in described and "Events:" in described


def test_apply_reports_schema_errors_like_the_real_server(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(MANIFESTS / "widget-crd.yaml"))
    bad = kubectl("apply", "-f", "-", input=_widget_yaml(44), check=False)
    assert bad.returncode != 0
    assert (
        'The Widget "w1" is invalid: spec.size: Invalid value: 44: '
        "spec.size in body should be less than or equal to 10" in bad.stderr
    )
    unknown = kubectl("apply", "-f", "-", input=_widget_yaml(4, "\n  bogus: 1"), check=False)
    assert 'strict decoding error: unknown field "spec.bogus"' in unknown.stderr


def test_patch_label_annotate_delete(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(MANIFESTS / "widget-crd.yaml"))
    kubectl("apply", "-f", "-", input=_widget_yaml())
    kubectl("patch", "wd", "w1", "--type=merge", "-p", '{"spec":{"size":5}}')
    kubectl(
        "patch",
        "wd",
        "w1",
        "--type=json",
        "-p",
        '[{"op":"replace","path":"/spec/color","value":"blue"}]',
    )
    smp = kubectl("patch", "wd", "w1", "-p", '{"spec":{"size":6}}', check=False)
    assert (
        smp.returncode != 0
        and "application/strategic-merge-patch+json is not supported" in smp.stderr
    )
    kubectl("label", "wd", "w1", "tier=gold")
    kubectl("annotate", "wd", "w1", "note=hi")
    obj = json.loads(kubectl("get", "wd", "-l", "tier=gold", "-o", "json").stdout)["items"][0]
    assert obj["spec"]["size"] == 5 and obj["spec"]["color"] == "blue"
    assert obj["metadata"]["annotations"]["note"] == "hi"
    assert 'widget.example.kwatt.dev "w1" deleted' in kubectl("delete", "wd", "w1").stdout
    assert "No resources found" in kubectl("get", "wd").stderr


def test_builtin_pods_jobs_strategic_patch_describe_and_logs(
    sandbox: Any, kubectl: Kubectl
) -> None:
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "trainer", "labels": {"app": "t"}},
        "spec": {
            "containers": [
                {"name": "main", "image": "train:1", "env": [{"name": "A", "value": "1"}]},
                {"name": "side", "image": "side:1"},
            ]
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(pod))
    kubectl(
        "patch",
        "pod",
        "trainer",
        "-p",
        '{"spec":{"containers":[{"name":"main","image":"train:2"}]}}',
    )
    got = json.loads(kubectl("get", "pod", "trainer", "-o", "json").stdout)
    assert [c["image"] for c in got["spec"]["containers"]] == ["train:2", "side:1"]
    pod["spec"]["containers"][0]["env"].append({"name": "B", "value": "2"})
    pod["spec"]["containers"][0]["image"] = "train:2"
    kubectl("apply", "-f", "-", input=json.dumps(pod))
    got = json.loads(kubectl("get", "pod", "trainer", "-o", "json").stdout)
    assert [e["name"] for e in got["spec"]["containers"][0]["env"]] == ["A", "B"]
    table = kubectl("get", "pods").stdout.splitlines()
    assert table[0].split() == ["NAME", "READY", "STATUS", "RESTARTS", "AGE"]
    assert table[1].split()[:3] == ["trainer", "0/2", "Pending"]
    described = kubectl("describe", "pod", "trainer").stdout
    assert "Name:" in described and "trainer" in described and "main:" in described
    sandbox.write_log("default", "trainer", "main", "epoch 1\nepoch 2\n")
    assert kubectl("logs", "trainer", "-c", "main").stdout == "epoch 1\nepoch 2\n"
    assert kubectl("logs", "trainer", "-c", "main", "--tail=1").stdout == "epoch 2\n"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "run-1"},
        "spec": {
            "template": {
                "spec": {"restartPolicy": "Never", "containers": [{"name": "m", "image": "x:1"}]}
            }
        },
    }
    kubectl("apply", "-f", "-", input=json.dumps(job))
    jobs = kubectl("get", "jobs").stdout.splitlines()
    assert jobs[0].split()[:3] == ["NAME", "STATUS", "COMPLETIONS"]
    assert jobs[1].split()[:3] == ["run-1", "Running", "0/1"]
    assert "run-1" in kubectl("describe", "job", "run-1").stdout
    kubectl("delete", "pod", "trainer")
    kubectl("delete", "job", "run-1")
    eventually(lambda: "No resources found" in kubectl("get", "pods,jobs").stderr)


def test_logs_follow_streams_until_the_container_exits(sandbox: Any, kubectl: Kubectl) -> None:
    import subprocess
    import threading

    kubectl("run", "p", "--image=busybox:1", "--restart=Never")
    sandbox.write_log("default", "p", "p", "first\n")

    def finish() -> None:
        sandbox.write_log("default", "p", "p", "second\n")
        sandbox.call(sandbox.store.logs.close, "default", "p", "p")

    threading.Timer(0.5, finish).start()
    result = subprocess.run(
        ["kubectl", "logs", "-f", "p"],
        env=sandbox.env(),
        capture_output=True,
        text=True,
        timeout=20,
    )
    assert result.stdout == "first\nsecond\n"
