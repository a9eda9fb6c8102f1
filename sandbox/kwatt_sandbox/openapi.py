"""OpenAPI documents, just enough for kubectl's apply and validation paths.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. `/openapi/v3` lists one document per group-version; each describes the
resources' operations with their `x-kubernetes-group-version-kind` and the
`fieldValidation` query parameter, so kubectl leaves validation to the server
(which enforces CRD schemas). PATCH bodies list no strategic-merge type: kubectl
then computes strategic patches from its compiled-in built-in types, and merge
patches for custom resources, exactly as it does against a real cluster.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from kwatt_sandbox.resources import Registry, ResourceInfo

_PATCH_TYPES = (
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/apply-patch+yaml",
)


def _gv_path(group: str, version: str) -> str:
    return f"apis/{group}/{version}" if group else f"api/{version}"


def _schema_name(info: ResourceInfo) -> str:
    group = ".".join(reversed(info.group.split("."))) if info.group else "io.k8s.api.core"
    return f"{group}.{info.version}.{info.kind}"


def _gvk(info: ResourceInfo) -> list[dict[str, str]]:
    return [{"group": info.group, "version": info.version, "kind": info.kind}]


def _param(name: str) -> dict[str, Any]:
    return {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}


def _operations(info: ResourceInfo) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{_schema_name(info)}"}
    body = {"content": {"application/json": {"schema": ref}}, "required": True}
    ok = {"200": {"description": "OK", "content": {"application/json": {"schema": ref}}}}
    write_params = [_param("dryRun"), _param("fieldManager"), _param("fieldValidation")]
    ext = {"x-kubernetes-group-version-kind": _gvk(info)[0]}
    return {
        "get": {
            "operationId": f"read{info.kind}",
            "responses": ok,
            **ext,
            "x-kubernetes-action": "get",
        },
        "put": {
            "operationId": f"replace{info.kind}",
            "parameters": write_params,
            "requestBody": body,
            "responses": ok,
            **ext,
            "x-kubernetes-action": "put",
        },
        "patch": {
            "operationId": f"patch{info.kind}",
            "parameters": [*write_params, _param("force")],
            "requestBody": {
                "content": {t: {"schema": {"type": "object"}} for t in _PATCH_TYPES},
                "required": True,
            },
            "responses": ok,
            **ext,
            "x-kubernetes-action": "patch",
        },
        "delete": {
            "operationId": f"delete{info.kind}",
            "responses": ok,
            **ext,
            "x-kubernetes-action": "delete",
        },
    }


def _collection(info: ResourceInfo) -> dict[str, Any]:
    ref = {"$ref": f"#/components/schemas/{_schema_name(info)}"}
    ext = {"x-kubernetes-group-version-kind": _gvk(info)[0]}
    return {
        "get": {
            "operationId": f"list{info.kind}",
            "responses": {"200": {"description": "OK"}},
            **ext,
            "x-kubernetes-action": "list",
        },
        "post": {
            "operationId": f"create{info.kind}",
            "parameters": [_param("dryRun"), _param("fieldManager"), _param("fieldValidation")],
            "requestBody": {"content": {"application/json": {"schema": ref}}, "required": True},
            "responses": {"201": {"description": "Created"}},
            **ext,
            "x-kubernetes-action": "post",
        },
    }


def _component(info: ResourceInfo) -> dict[str, Any]:
    schema: dict[str, Any] = (
        dict(info.schema)
        if info.schema
        else {
            "type": "object",
            "x-kubernetes-preserve-unknown-fields": True,
        }
    )
    schema["x-kubernetes-group-version-kind"] = _gvk(info)
    return schema


def gv_document(registry: Registry, group: str, version: str) -> dict[str, Any] | None:
    infos = [i for i in registry if i.group == group and i.version == version]
    if not infos:
        return None
    paths: dict[str, Any] = {}
    components: dict[str, Any] = {}
    prefix = "/" + _gv_path(group, version)
    for info in infos:
        base = (
            f"{prefix}/namespaces/{{namespace}}/{info.plural}"
            if info.namespaced
            else f"{prefix}/{info.plural}"
        )
        paths[base] = _collection(info)
        paths[f"{base}/{{name}}"] = _operations(info)
        if info.has_status:
            paths[f"{base}/{{name}}/status"] = _operations(info)
        components[_schema_name(info)] = _component(info)
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes (kwatt sandbox emulator)", "version": "v1.32.0"},
        "paths": paths,
        "components": {"schemas": components},
    }


def _hash(doc: dict[str, Any]) -> str:
    return hashlib.sha512(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:64].upper()


def v3_root(registry: Registry) -> dict[str, Any]:
    paths = {}
    for group, versions in registry.groups().items():
        for version in versions:
            doc = gv_document(registry, group, version)
            if doc is None:
                continue
            rel = _gv_path(group, version)
            paths[rel] = {"serverRelativeURL": f"/openapi/v3/{rel}?hash={_hash(doc)}"}
    return {"paths": paths}


def v2_document(registry: Registry) -> dict[str, Any]:
    """A minimal Swagger 2.0 document (JSON only) listing the kinds."""
    definitions = {}
    for info in registry:
        definitions[_schema_name(info)] = {
            "type": "object",
            "x-kubernetes-group-version-kind": _gvk(info),
        }
    return {
        "swagger": "2.0",
        "info": {"title": "Kubernetes (kwatt sandbox emulator)", "version": "v1.32.0"},
        "paths": {},
        "definitions": definitions,
    }
