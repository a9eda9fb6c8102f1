"""Run Pods under Pod Security admission, enforced by the real kube-apiserver.

docs/admin.md ("Hardened runtimes"): in observe mode the sidecar has no hostPath volume and
no added capability, runs as a non-root user with the runtime's seccomp profile, so a run's
Pod passes `baseline` whatever the trainer is, and `restricted` when the trainer (the user's
container, which kwatt never changes) meets it too. Optimize and fixed modes need the node
folder and SYS_ADMIN, which `baseline` refuses.

Admission enforces on Pods (a Job is only warned about), so each check is a server-side dry
run of the Pod that the Job controller would create from the built Job's template.
"""

from __future__ import annotations

import json
import subprocess
from typing import Any

import pytest

from conftest import sample_trainingjob
from kwatt_core.policies.base import Choice
from kwatt_operator.jobs import SidecarSettings, build_job
from kwatt_sandbox.testing import Cluster, eventually

pytestmark = pytest.mark.timeout(120)

SETTINGS = SidecarSettings(image="ghcr.io/kwatt/sidecar:0.1")
CHOICE = Choice(batch_size=16, power_limit_w=None, cost_threshold=None, stage="explore")
RESTRICTED_TRAINER = {
    "runAsNonRoot": True,
    "runAsUser": 1000,
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "seccompProfile": {"type": "RuntimeDefault"},
}


def enforce(cluster: Cluster, namespace: str, level: str) -> None:
    cluster.kubectl("label", "namespace", namespace, f"pod-security.kubernetes.io/enforce={level}")


def run_pod(namespace: str, mode: str, trainer_security: dict[str, Any] | None = None) -> Any:
    """The Pod of run 1 of a TrainingJob in `mode`, as the Job controller would create it."""
    power: dict[str, Any] = {"mode": mode, **({"fixedWatts": 200} if mode == "fixed" else {})}
    tj = sample_trainingjob(powerLimit=power)
    tj["metadata"]["namespace"] = namespace
    if trainer_security is not None:
        tj["spec"]["template"]["spec"]["containers"][0]["securityContext"] = trainer_security
    template = build_job(tj, 1, CHOICE, SETTINGS)["spec"]["template"]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "cifar-run-1-pod", "labels": template["metadata"]["labels"]},
        "spec": template["spec"],
    }


def dry_run(cluster: Cluster, namespace: str, pod: Any) -> subprocess.CompletedProcess[str]:
    """Create the Pod server-side without storing it; retried only while the namespace's
    default ServiceAccount (which a Pod needs) is still being created."""

    def attempt() -> subprocess.CompletedProcess[str] | None:
        result = cluster.kubectl(
            "create", "-n", namespace, "--dry-run=server", "-o", "json", "-f", "-",
            input=json.dumps(pod), check=False,
        )  # fmt: skip
        return None if 'serviceaccount "default" not found' in result.stderr else result

    result: subprocess.CompletedProcess[str] = eventually(attempt, timeout=30)
    return result


def test_an_observe_mode_run_passes_baseline(cluster: Cluster, namespace: str) -> None:
    enforce(cluster, namespace, "baseline")
    admitted = dry_run(cluster, namespace, run_pod(namespace, "observe"))
    assert admitted.returncode == 0, admitted.stderr
    stored = json.loads(admitted.stdout)
    (sidecar,) = [c for c in stored["spec"]["initContainers"] if c["name"] == "kwatt-sidecar"]
    assert "add" not in sidecar["securityContext"]["capabilities"]
    assert not any("hostPath" in v for v in stored["spec"].get("volumes", []))


@pytest.mark.parametrize("mode", ["optimize", "fixed"])
def test_modes_that_change_limits_are_refused_by_baseline(
    cluster: Cluster, namespace: str, mode: str
) -> None:
    """What baseline forbids, it names: the node folder and the capability, on kwatt's
    sidecar. (This also shows that the API server does enforce the label.)"""
    enforce(cluster, namespace, "baseline")
    refused = dry_run(cluster, namespace, run_pod(namespace, mode))
    assert refused.returncode != 0
    assert 'violates PodSecurity "baseline' in refused.stderr
    assert "kwatt-state" in refused.stderr and "SYS_ADMIN" in refused.stderr


def test_an_observe_mode_run_passes_restricted_with_a_restricted_trainer(
    cluster: Cluster, namespace: str
) -> None:
    enforce(cluster, namespace, "restricted")
    admitted = dry_run(cluster, namespace, run_pod(namespace, "observe", RESTRICTED_TRAINER))
    assert admitted.returncode == 0, admitted.stderr


def test_under_restricted_only_the_users_trainer_is_named(cluster: Cluster, namespace: str) -> None:
    """The sample trainer sets no securityContext: restricted refuses the Pod for it alone,
    never for kwatt's sidecar."""
    enforce(cluster, namespace, "restricted")
    refused = dry_run(cluster, namespace, run_pod(namespace, "observe"))
    assert refused.returncode != 0
    assert 'violates PodSecurity "restricted' in refused.stderr
    assert 'container "train"' in refused.stderr
    assert "kwatt-sidecar" not in refused.stderr
