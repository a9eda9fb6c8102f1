"""Load the TrainingJob CRD from its one file, so operator, chart and tests agree.

`crds/trainingjob.yaml` at the repository root is the source of truth; the
package carries it as `kwatt_operator/crds/trainingjob.yaml` (a link in the
source tree, a copy in a wheel), so an installed operator finds it too.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import yaml

GROUP = "kwatt.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "TrainingJob"
PLURAL = "trainingjobs"
CRD_NAME = f"{PLURAL}.{GROUP}"
CRD_FILE = "trainingjob.yaml"


def crd_path() -> Path:
    """Where the CRD file is: the packaged copy, else the repository's `crds/`."""
    packaged = Path(__file__).resolve().parent / "crds" / CRD_FILE
    if packaged.is_file():
        return packaged
    repo = Path(__file__).resolve().parents[2] / "crds" / CRD_FILE
    if repo.is_file():
        return repo
    raise FileNotFoundError(
        f"The TrainingJob CRD ({CRD_FILE}) is neither packaged with kwatt_operator nor at {repo}."
    )


@cache
def _load() -> dict[str, Any]:
    data = yaml.safe_load(crd_path().read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("kind") != "CustomResourceDefinition":
        raise ValueError(f"{crd_path()} does not hold a CustomResourceDefinition.")
    return data


def load_crd() -> dict[str, Any]:
    """The CRD as a dict; a fresh copy each call, so callers may change it."""
    return copy.deepcopy(_load())


def openapi_schema(version: str = VERSION) -> dict[str, Any]:
    """The openAPIV3Schema of one served version (for defaults and validation in tests)."""
    for entry in load_crd()["spec"]["versions"]:
        if entry["name"] == version:
            schema: dict[str, Any] = entry["schema"]["openAPIV3Schema"]
            return schema
    raise KeyError(f"The TrainingJob CRD has no version {version}.")
