"""Helpers for the simulated-node tests (the sandbox is a test/demo emulator)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sandbox_support import eventually

from kwatt_sandbox.nodes import NodeSpec
from kwatt_sandbox.server import SandboxConfig
from kwatt_sandbox.testing import Sandbox, running_sandbox

NODES = [NodeSpec(name="gpu-0", gpu_model="v100", gpu_count=2), NodeSpec(name="cpu-0")]


@contextmanager
def node_sandbox(tmp_path: Path, **config: Any) -> Iterator[Sandbox]:
    config.setdefault("nodes", NODES)
    with running_sandbox(tmp_path, config=SandboxConfig(**config)) as sb:
        yield sb


def py(code: str) -> list[str]:
    """A container command running `code` with `python` (the kubelet maps it to this venv)."""
    return ["python", "-c", code]


def job(name: str, containers: list[dict[str, Any]], **spec: Any) -> dict[str, Any]:
    pod_spec = {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1}
    pod_spec.update(spec.pop("pod", {}))
    pod_spec["containers"] = containers
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": name, "namespace": "default"},
        "spec": {"template": {"spec": pod_spec}, **spec},
    }


def container(name: str, code: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "image": "ignored:1", "command": py(code), **extra}


def get_job(sb: Sandbox, name: str) -> dict[str, Any]:
    return sb.get("batch/v1", "Job", name, "default")


def job_pods(sb: Sandbox, name: str) -> list[dict[str, Any]]:
    def do() -> list[dict[str, Any]]:
        info = sb.store.resolve("", "v1", "pods")
        pods = sb.store.list_objects(info, "default")
        return [p for p in pods if p["metadata"].get("labels", {}).get("job-name") == name]

    return sb.call(do)


def pods(sb: Sandbox, namespace: str = "default") -> list[dict[str, Any]]:
    return sb.call(lambda: sb.store.list_objects(sb.store.resolve("", "v1", "pods"), namespace))


def condition(obj: dict[str, Any], kind: str) -> dict[str, Any] | None:
    return next(
        (c for c in (obj.get("status") or {}).get("conditions") or [] if c["type"] == kind), None
    )


def wait_condition(sb: Sandbox, name: str, kind: str, timeout: float = 15) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        found = get_job(sb, name)
        cond = condition(found, kind)
        return found if cond and cond["status"] == "True" else None

    result: dict[str, Any] = eventually(check, timeout=timeout)
    return result


def events(sb: Sandbox, name: str) -> list[tuple[str, str, str]]:
    def do() -> list[dict[str, Any]]:
        return sb.store.list_objects(sb.store.resolve("", "v1", "events"), "default")

    return [
        (e["type"], e["reason"], e["message"])
        for e in sb.call(do)
        if e["involvedObject"]["name"] == name
    ]


PYTHON = sys.executable
