"""More kubectl (v1.32, default flags) flows against the sandbox, as a cluster user sees them.

The sandbox is an emulator for tests and demos; production is a real cluster. The
expected outputs come from the Kubernetes documentation (kubectl reference and
"Managing Kubernetes Objects" tasks), not from the emulator's code.
"""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from sandbox_support import Kubectl

from kwatt_sandbox.testing import Sandbox

pytestmark = pytest.mark.timeout(90)

MULTI = """\
apiVersion: v1
kind: Namespace
metadata:
  name: x
---
apiVersion: v1
kind: ConfigMap
metadata:
  name: cfg
data:
  a: "1"
---
apiVersion: batch/v1
kind: Job
metadata:
  name: hello
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: python:3.11
        command: ["python", "-c", "print('hi')"]
---
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gizmos.example.com
spec:
  group: example.com
  scope: Namespaced
  names: {plural: gizmos, singular: gizmo, kind: Gizmo, shortNames: [gz]}
  versions:
  - name: v1
    served: true
    storage: true
    subresources: {status: {}}
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec: {type: object, properties: {size: {type: integer}}}
          status: {type: object, x-kubernetes-preserve-unknown-fields: true}
---
apiVersion: example.com/v1
kind: Gizmo
metadata:
  name: g1
spec:
  size: 2
"""


def _json(kubectl: Kubectl, *args: str) -> Any:
    return json.loads(kubectl(*args, "-o", "json").stdout)


def test_imperative_create_sends_protobuf_and_is_decoded(kubectl: Kubectl) -> None:
    # kubectl's typed clients send application/vnd.kubernetes.protobuf bodies.
    assert kubectl("create", "namespace", "x").stdout.strip() == "namespace/x created"
    again = kubectl("create", "namespace", "x", check=False)
    assert again.returncode == 1
    assert 'Error from server (AlreadyExists): namespaces "x" already exists' in again.stderr
    kubectl("-n", "x", "create", "configmap", "c1", "--from-literal=a=b", "--from-literal=c=d")
    assert _json(kubectl, "-n", "x", "get", "cm", "c1")["data"] == {"a": "b", "c": "d"}
    kubectl("-n", "x", "create", "secret", "generic", "s1", "--from-literal=k=v")
    secret = _json(kubectl, "-n", "x", "get", "secret", "s1")
    assert secret["data"] == {"k": "dg=="} and secret["type"] == "Opaque"
    assert "serviceaccount/bot created" in kubectl("-n", "x", "create", "sa", "bot").stdout
    out = kubectl(
        "-n", "x", "create", "job", "j1", "--image=busybox", "--", "python", "-c", "print(1)"
    ).stdout
    assert out.strip() == "job.batch/j1 created"
    job = _json(kubectl, "-n", "x", "get", "job", "j1")
    pod_spec = job["spec"]["template"]["spec"]
    assert pod_spec["restartPolicy"] == "Never"
    (main,) = pod_spec["containers"]
    assert main["name"] == "j1" and main["image"] == "busybox"
    assert main["command"] == ["python", "-c", "print(1)"]
    assert "stdin" not in main and "workingDir" not in main  # empty proto fields are omitted
    kubectl("-n", "x", "run", "p1", "--image=busybox", "--restart=Never", "--env=E=1", "--", "a")
    pod = _json(kubectl, "-n", "x", "get", "pod", "p1")
    assert pod["metadata"]["labels"] == {"run": "p1"}
    assert pod["spec"]["containers"][0]["env"] == [{"name": "E", "value": "1"}]
    assert pod["spec"]["containers"][0]["args"] == ["a"]


def test_multi_document_apply_crd_and_cr_in_one_file(kubectl: Kubectl) -> None:
    # A real cluster cannot map the CR before its CRD exists: the first apply creates
    # everything else and reports the mapping error; the second one creates the CR.
    first = kubectl("-n", "x", "apply", "-f", "-", input=MULTI, check=False)
    assert first.returncode == 1
    assert first.stdout.splitlines() == [
        "namespace/x created",
        "configmap/cfg created",
        "job.batch/hello created",
        "customresourcedefinition.apiextensions.k8s.io/gizmos.example.com created",
    ]
    assert 'resource mapping not found for name: "g1"' in first.stderr
    assert "ensure CRDs are installed first" in first.stderr
    second = kubectl("-n", "x", "apply", "-f", "-", input=MULTI).stdout.splitlines()
    assert second[-1] == "gizmo.example.com/g1 created"
    assert all(line.endswith(" unchanged") for line in second[:-1])
    third = kubectl("-n", "x", "apply", "-f", "-", input=MULTI).stdout.splitlines()
    assert all(line.endswith(" unchanged") for line in third)
    server = kubectl("-n", "x", "apply", "--dry-run=server", "-f", "-", input=MULTI).stdout
    assert "gizmo.example.com/g1 unchanged (server dry run)" in server
    created = kubectl("-n", "x", "create", "-f", "-", input=MULTI, check=False)
    assert (
        'Error from server (AlreadyExists): error when creating "STDIN": '
        'configmaps "cfg" already exists' in created.stderr
    )
    deleted = kubectl("-n", "x", "delete", "-f", "-", input=MULTI, check=False).stdout
    assert 'namespace "x" deleted' in deleted
    assert 'customresourcedefinition.apiextensions.k8s.io "gizmos.example.com" deleted' in deleted


def test_auth_can_i_and_cluster_info(kubectl: Kubectl, sandbox: Sandbox) -> None:
    assert kubectl("auth", "can-i", "create", "pods").stdout.strip() == "yes"
    assert kubectl("auth", "can-i", "delete", "jobs", "-A").stdout.strip() == "yes"
    listed = kubectl("auth", "can-i", "--list").stdout.splitlines()
    assert listed[0].split()[:2] == ["Resources", "Non-Resource"]
    info = kubectl("cluster-info").stdout
    assert f"Kubernetes control plane is running at {sandbox.url}" in info
    assert kubectl("get", "services", "-A").stderr.strip() == "No resources found"


def _seed(sandbox: Sandbox) -> None:
    now = "2025-01-01T00:00:00Z"
    sandbox.create(
        {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {"name": "n1", "labels": {"node-role.kubernetes.io/worker": ""}},
            "status": {
                "conditions": [{"type": "Ready", "status": "True"}],
                "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}],
                "nodeInfo": {"kubeletVersion": "v1.32.0", "osImage": "Linux"},
            },
        }
    )
    sandbox.create(
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "p", "namespace": "default"},
            "spec": {"containers": [{"name": "main", "image": "busybox"}]},
        }
    )
    sandbox.create(
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "p.1", "namespace": "default"},
            "involvedObject": {"kind": "Pod", "name": "p", "namespace": "default"},
            "reason": "Scheduled",
            "type": "Normal",
            "message": "Successfully assigned default/p to n1",
            "source": {"component": "default-scheduler"},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
    )
    sandbox.create(
        {
            "apiVersion": "batch/v1",
            "kind": "Job",
            "metadata": {"name": "j", "namespace": "default"},
            "spec": {
                "template": {
                    "spec": {
                        "restartPolicy": "Never",
                        "containers": [{"name": "main", "image": "busybox"}],
                    }
                }
            },
        }
    )


def _header(kubectl: Kubectl, *args: str) -> list[str]:
    line = kubectl("get", *args).stdout.splitlines()[0]
    return re.split(r"\s{2,}", line.strip())


def test_get_columns_match_the_real_printers(kubectl: Kubectl, sandbox: Sandbox) -> None:
    _seed(sandbox)
    assert _header(kubectl, "jobs") == ["NAME", "STATUS", "COMPLETIONS", "DURATION", "AGE"]
    assert _header(kubectl, "jobs", "-o", "wide")[-3:] == ["CONTAINERS", "IMAGES", "SELECTOR"]
    assert _header(kubectl, "nodes") == ["NAME", "STATUS", "ROLES", "AGE", "VERSION"]
    node = kubectl("get", "nodes").stdout.splitlines()[1].split()
    assert node[:3] == ["n1", "Ready", "worker"] and node[-1] == "v1.32.0"
    wide = _header(kubectl, "nodes", "-o", "wide")
    assert wide[5:8] == ["INTERNAL-IP", "EXTERNAL-IP", "OS-IMAGE"]
    assert _header(kubectl, "pods", "-o", "wide") == [
        "NAME",
        "READY",
        "STATUS",
        "RESTARTS",
        "AGE",
        "IP",
        "NODE",
        "NOMINATED NODE",
        "READINESS GATES",
    ]
    assert _header(kubectl, "events") == ["LAST SEEN", "TYPE", "REASON", "OBJECT", "MESSAGE"]
    row = kubectl("get", "events", "--field-selector", "involvedObject.name=p").stdout
    assert "Scheduled" in row and "pod/p" in row
    assert _header(kubectl, "events", "-o", "wide")[-1] == "NAME"
    assert _header(kubectl, "events", "-A")[:2] == ["NAMESPACE", "LAST SEEN"]


def test_logs_previous_needs_a_restarted_container(kubectl: Kubectl, sandbox: Sandbox) -> None:
    _seed(sandbox)
    sandbox.write_log("default", "p", "main", "hello\n")
    assert kubectl("logs", "p").stdout == "hello\n"
    previous = kubectl("logs", "p", "--previous", check=False)
    assert previous.returncode == 1
    assert 'previous terminated container "main" in pod "p" not found' in previous.stderr
