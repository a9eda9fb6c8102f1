"""What the Helm chart's tests share: the chart's folder, a helm executable run with private
caches, and reading rendered objects."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "kwatt"


@dataclass(frozen=True)
class Helm:
    """One helm executable, run with its caches and settings in a private folder."""

    name: str  # helm3 or helm4
    path: Path
    home: Path

    def env(self, base: dict[str, str] | None = None) -> dict[str, str]:
        env = dict(os.environ if base is None else base)
        for var, sub in (
            ("HELM_CACHE_HOME", "cache"),
            ("HELM_CONFIG_HOME", "config"),
            ("HELM_DATA_HOME", "data"),
        ):
            env[var] = str(self.home / sub)
        return env

    def run(
        self,
        *args: str,
        check: bool = True,
        env: dict[str, str] | None = None,
        input: str | None = None,
        timeout: float = 60,
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [str(self.path), *args],
            env=self.env(env),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(
                f"{self.name} {' '.join(args)} failed ({result.returncode}):\n{result.stderr}"
            )
        return result

    def template(self, *args: str, namespace: str = "kwatt-system") -> str:
        """`helm template kwatt charts/kwatt` with `args`; the rendered YAML."""
        return self.run("template", "kwatt", str(CHART), "-n", namespace, *args).stdout


def objects(rendered: str) -> list[dict[str, Any]]:
    """The objects in a multi-document YAML text, empty documents left out."""
    return [doc for doc in yaml.safe_load_all(rendered) if doc]


def find(docs: list[dict[str, Any]], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [
        d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)
    ]
    assert len(found) == 1, f"{len(found)} {kind} {name or ''} in {[d['kind'] for d in docs]}"
    return found[0]


def operator_support() -> ModuleType:
    """tests/operator/operator_support.py (its TrainingJob on the simulated V100, `kwatt
    operator` as a subprocess), loaded by path so that this folder's tests run alone too."""
    name = "operator_support"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, REPO / "tests" / "operator" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
