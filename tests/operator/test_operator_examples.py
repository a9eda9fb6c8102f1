"""The manifests in examples/ are what users copy, so each must work as shipped: the
operator's parser takes it, the real API server takes it (schema and CEL rules, by a
server-side dry run), and so does the Job kwatt builds from it. The sandbox example
must also really run on the simulated GPUs, since the docs and the demo rely on it.
"""

from __future__ import annotations

import json
import py_compile
import re
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from operator_support import create_returning, sandbox_sidecar

from kwatt_core import contract
from kwatt_core.policies.base import Choice
from kwatt_core.report import decode
from kwatt_operator.crd import API_VERSION, CRD_NAME, KIND, crd_path
from kwatt_operator.jobs import SidecarSettings, build_job, job_name
from kwatt_operator.spec import parse_spec
from kwatt_sandbox.testing import Cluster, eventually

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
MANIFESTS = sorted(EXAMPLES.glob("*.yaml"))
SCRIPTS = sorted(EXAMPLES.glob("*.py"))
SETTINGS = SidecarSettings(image="ghcr.io/kwatt/sidecar:0.1")
FAKE_UID = "5f0c2a9e-1d3b-4f6a-8c7e-2b9d0e4a6f11"  # where a dry run hands back no uid
VAR_REF = re.compile(r"(?<!\$)\$\(([-._a-zA-Z][-._a-zA-Z0-9]*)\)")  # Kubernetes' $(VAR)


def _ids(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


def _load(path: Path) -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d is not None]
    assert len(docs) == 1, f"{path.name} should hold one TrainingJob, has {len(docs)} documents"
    doc: dict[str, Any] = docs[0]
    return doc


def _default_choice(doc: dict[str, Any]) -> Choice:
    """What a first run gets: the default batch size, no cached limit yet."""
    return Choice(parse_spec(doc["spec"]).batch_sizes.default, None, None, "explore")


@pytest.fixture(scope="module")
def crd_installed(cluster: Cluster) -> Cluster:
    cluster.apply_crd(crd_path(), CRD_NAME)
    return cluster


def test_there_are_examples_and_the_readme_lists_each() -> None:
    assert len(MANIFESTS) >= 5
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    for path in [*MANIFESTS, *SCRIPTS]:
        assert f"{path.name}" in readme, f"examples/README.md does not mention {path.name}"


@pytest.mark.parametrize("path", MANIFESTS, ids=_ids(MANIFESTS))
def test_example_is_a_trainingjob_the_parser_accepts(path: Path) -> None:
    doc = _load(path)
    assert (doc["apiVersion"], doc["kind"]) == (API_VERSION, KIND)
    assert doc["metadata"]["name"]
    assert "namespace" not in doc["metadata"], "examples go where `kubectl -n` puts them"
    spec = parse_spec(doc["spec"])
    assert spec.target.metric and spec.batch_sizes.default in spec.batch_sizes.candidates
    assert "# " in path.read_text(encoding="utf-8"), "say in comments what a user changes"


@pytest.mark.parametrize("path", MANIFESTS, ids=_ids(MANIFESTS))
def test_api_server_accepts_example_and_the_job_built_from_it(
    crd_installed: Cluster, namespace: str, path: Path
) -> None:
    cluster = crd_installed
    dry_run = ("apply", "--dry-run=server", "-n", namespace, "-f", str(path), "-o", "json")
    # A just-Established CRD can take a moment to be served, hence `eventually`.
    served = json.loads(eventually(lambda: cluster.kubectl(*dry_run).stdout, timeout=30))
    # The object as the API server would store it, CRD defaults filled in.
    assert served["metadata"]["namespace"] == namespace
    assert served["spec"]["powerLimit"]["mode"] in ("optimize", "observe", "fixed")
    served["metadata"]["uid"] = served["metadata"].get("uid") or FAKE_UID
    job = build_job(served, 1, _default_choice(served), SETTINGS)
    assert job["metadata"]["name"] == job_name(served["metadata"]["name"], 1)
    for key, value in (served["metadata"].get("labels") or {}).items():
        assert job["metadata"]["labels"][key] == value  # Kueue's queue label among them

    # Each $(VAR) in the trainer's command and args names a variable of its env, so
    # Kubernetes substitutes it (kwatt's batch size, say) instead of passing it as is.
    pod = job["spec"]["template"]["spec"]
    trainer = pod["containers"][parse_spec(served["spec"]).trainer_index]
    env = {e["name"] for e in trainer.get("env", [])}
    for word in [*trainer.get("command", []), *trainer.get("args", [])]:
        for var in VAR_REF.findall(word):
            assert var in env, f"{path.name}: $({var}) is not in the trainer's env"

    created = cluster.kubectl(
        "create", "--dry-run=server", "-o", "json", "-f", "-", input=json.dumps(job)
    )
    stored = json.loads(created.stdout)
    assert stored["metadata"]["namespace"] == namespace
    assert contract.SIDECAR_CONTAINER in [
        c["name"] for c in stored["spec"]["template"]["spec"]["initContainers"]
    ]


@pytest.mark.parametrize("path", SCRIPTS, ids=_ids(SCRIPTS))
def test_example_script_compiles(path: Path, tmp_path: Path) -> None:
    py_compile.compile(str(path), cfile=str(tmp_path / "out.pyc"), doraise=True)


@pytest.mark.timeout(120)
def test_sandbox_example_runs_to_its_target(
    sandbox: Cluster, namespace: str, tmp_path: Path
) -> None:
    """The sandbox example's first run (default batch size, limits profiled) trains on a
    simulated V100 through the injected sidecar and reaches the trace's target."""
    doc = _load(EXAMPLES / "sandbox-simulated.yaml")
    sandbox.apply_crd(crd_path(), CRD_NAME)
    tj = create_returning(sandbox, doc, namespace)
    settings = sandbox_sidecar(tmp_path)
    job = build_job(tj, 1, _default_choice(tj), settings)
    name = job["metadata"]["name"]
    started = time.monotonic()
    sandbox.kubectl("create", "-f", "-", input=json.dumps(job))
    wait = ("wait", "-n", namespace, "--for=condition=Complete", f"job/{name}", "--timeout=90s")
    sandbox.kubectl(*wait, timeout=100)
    took = time.monotonic() - started
    (pod,) = sandbox.kubectl_json("get", "pods", "-n", namespace, "-l", "kwatt.dev/run=1")["items"]
    (status,) = [
        s for s in pod["status"]["initContainerStatuses"] if s["name"] == contract.SIDECAR_CONTAINER
    ]
    report = decode(status["state"]["terminated"]["message"])
    assert report.result == "reached", report
    assert report.batch_size == doc["spec"]["batchSizes"]["default"]
    assert report.profile_complete and report.energy_j > 0
    assert took < 60, f"a run of the sandbox example took {took:.0f} s; the demo wants seconds"
