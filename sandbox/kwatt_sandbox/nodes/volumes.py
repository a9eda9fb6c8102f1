"""A pod's volumes on a simulated node: files in the pod's folder, bind-mounted into containers.

Part of the sandbox cluster (a test and demo harness; production is a real cluster).
What a kubelet's volume manager does for the volume types a training pod uses:
`emptyDir`, `hostPath`, `configMap`, `secret`, `downwardAPI` and `projected` (which is
how every pod gets its ServiceAccount token, the cluster CA and its namespace at
/var/run/secrets/kubernetes.io/serviceaccount). The token is a real one, requested
from the API server with the pod as its bound object, so a process in the pod acts
as the pod's ServiceAccount and nothing more. Other volume types are refused with a
sentence (the pod then stays ContainerCreating, with a FailedMount event).
"""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

from kwatt_sandbox.nodes.api import ApiClient, ApiError
from kwatt_sandbox.nodes.podspec import field_ref
from kwatt_sandbox.nodes.shim import Mount

Obj = dict[str, Any]
SUPPORTED = ("emptyDir", "hostPath", "configMap", "secret", "downwardAPI", "projected")


class VolumeError(Exception):
    """A volume cannot be set up (yet): a missing ConfigMap, an unsupported type."""


def _safe_relative(path: str) -> str:
    parts = Path(path).parts
    if not path or Path(path).is_absolute() or ".." in parts:
        raise VolumeError(f"The volume path {path!r} must be relative and must not contain '..'.")
    return path


def _write_files(directory: Path, files: dict[str, bytes], mode: int) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in files.items():
        target = directory / _safe_relative(name)
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.tmp")
        tmp.write_bytes(data)
        os.chmod(tmp, mode)
        os.replace(tmp, target)


def _object_files(obj: Obj, kind: str) -> dict[str, bytes]:
    files = {str(k): str(v).encode() for k, v in (obj.get("data") or {}).items()}
    if kind == "Secret":
        files = {k: base64.b64decode(v) for k, v in files.items()}
    else:
        for key, value in (obj.get("binaryData") or {}).items():
            files[str(key)] = base64.b64decode(str(value))
    return files


def _select(files: dict[str, bytes], items: list[Obj] | None, label: str) -> dict[str, bytes]:
    if not items:
        return files
    chosen = {}
    for item in items:
        key = str(item.get("key", ""))
        if key not in files:
            raise VolumeError(f"{label} has no key {key!r}.")
        chosen[str(item.get("path") or key)] = files[key]
    return chosen


class VolumeBuilder:
    """Sets up one pod's volumes under `directory`, asking the API server as its node."""

    def __init__(self, api: ApiClient, pod: Obj, directory: Path) -> None:
        self.api = api
        self.pod = pod
        self.directory = directory
        self.namespace = str(pod["metadata"]["namespace"])

    async def build(self) -> dict[str, str]:
        """Volume name -> host path, every volume ready; VolumeError if one is not."""
        paths: dict[str, str] = {}
        for volume in (self.pod.get("spec") or {}).get("volumes") or []:
            name = str(volume.get("name", ""))
            kinds = [k for k in SUPPORTED if k in volume]
            if not kinds:
                other = next((k for k in volume if k != "name"), "unknown")
                raise VolumeError(
                    f"The volume {name!r} is of type {other}, which the sandbox's nodes do "
                    f"not support ({', '.join(SUPPORTED)})."
                )
            paths[name] = await self._one(name, kinds[0], volume[kinds[0]] or {})
        return paths

    async def _one(self, name: str, kind: str, source: Obj) -> str:
        target = self.directory / "volumes" / name
        mode = int(source.get("defaultMode", 0o644)) & 0o777
        if kind == "hostPath":
            return self._host_path(name, source)
        if kind == "emptyDir":
            target.mkdir(parents=True, exist_ok=True)
        elif kind in ("configMap", "secret"):
            files = await self._from_object(
                "ConfigMap" if kind == "configMap" else "Secret", source
            )
            _write_files(target, files, mode)
        elif kind == "downwardAPI":
            _write_files(target, self._downward(source.get("items") or []), mode)
        else:
            files = {}
            for projection in source.get("sources") or []:
                files.update(await self._projection(projection))
            _write_files(target, files, mode)
        return str(target)

    def _host_path(self, name: str, source: Obj) -> str:
        path = str(source.get("path", ""))
        if not path.startswith("/"):
            raise VolumeError(f"The hostPath of volume {name!r} must be an absolute path.")
        kind = str(source.get("type") or "")
        if kind == "DirectoryOrCreate":
            os.makedirs(path, exist_ok=True)
        elif kind == "Directory" and not os.path.isdir(path):
            raise VolumeError(f"hostPath type check failed: {path} is not a directory")
        elif kind in ("File", "FileOrCreate") and not os.path.isfile(path):
            if kind == "File":
                raise VolumeError(f"hostPath type check failed: {path} is not a file")
            Path(path).touch()
        return path

    async def _from_object(self, kind: str, source: Obj) -> dict[str, bytes]:
        name = str(source.get("name") or source.get("secretName") or "")
        plural = "configmaps" if kind == "ConfigMap" else "secrets"
        try:
            obj = await self.api.get(f"/api/v1/namespaces/{self.namespace}/{plural}/{name}")
        except ApiError as exc:
            if exc.code == 404 and source.get("optional"):
                return {}
            raise VolumeError(f'{kind.lower()} "{name}" not found ({exc.code})') from exc
        return _select(_object_files(obj, kind), source.get("items"), f'{kind} "{name}"')

    def _downward(self, items: list[Obj]) -> dict[str, bytes]:
        files = {}
        for item in items:
            ref = item.get("fieldRef")
            if not ref:
                raise VolumeError("Only fieldRef items are supported in downwardAPI volumes.")
            try:
                value = field_ref(self.pod, str(ref.get("fieldPath", "")))
            except Exception as exc:
                raise VolumeError(str(exc)) from exc
            files[str(item.get("path", ""))] = value.encode()
        return files

    async def _projection(self, projection: Obj) -> dict[str, bytes]:
        if "serviceAccountToken" in projection:
            token = projection["serviceAccountToken"] or {}
            return {str(token.get("path") or "token"): await self._token(token)}
        if "configMap" in projection:
            return await self._from_object("ConfigMap", projection["configMap"] or {})
        if "secret" in projection:
            return await self._from_object("Secret", projection["secret"] or {})
        if "downwardAPI" in projection:
            return self._downward((projection["downwardAPI"] or {}).get("items") or [])
        raise VolumeError(f"The projected source {sorted(projection)} is not supported.")

    async def _token(self, source: Obj) -> bytes:
        """A TokenRequest bound to this pod, as the kubelet makes one."""
        meta = self.pod["metadata"]
        account = str((self.pod.get("spec") or {}).get("serviceAccountName") or "default")
        spec: Obj = {
            "expirationSeconds": int(source.get("expirationSeconds") or 3607),
            "boundObjectRef": {
                "apiVersion": "v1",
                "kind": "Pod",
                "name": meta["name"],
                "uid": meta["uid"],
            },
        }
        if source.get("audience"):
            spec["audiences"] = [str(source["audience"])]
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": spec}
        try:
            answer = await self.api.create(
                f"/api/v1/namespaces/{self.namespace}/serviceaccounts/{account}/token", body
            )
        except ApiError as exc:
            raise VolumeError(
                f"The token of ServiceAccount {account!r} could not be requested: {exc}"
            ) from exc
        return str(answer.get("status", {}).get("token", "")).encode()


def container_mounts(container: Obj, volume_paths: dict[str, str]) -> list[Mount]:
    """The bind mounts for one container's volumeMounts (subPath included)."""
    mounts = []
    for item in container.get("volumeMounts") or []:
        name = str(item.get("name", ""))
        if name not in volume_paths:
            raise VolumeError(f"The volumeMount {name!r} names no volume of the pod.")
        source = volume_paths[name]
        if item.get("subPath"):
            source = os.path.join(source, _safe_relative(str(item["subPath"])))
        target = str(item.get("mountPath", ""))
        if not target.startswith("/"):
            raise VolumeError(f"The mountPath of volume {name!r} must be an absolute path.")
        mounts.append(Mount(source, target, bool(item.get("readOnly"))))
    return mounts


__all__ = ["SUPPORTED", "VolumeBuilder", "VolumeError", "container_mounts"]
