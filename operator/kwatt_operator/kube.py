"""The operator's calls to the API server: read a TrainingJob and what it owns, write back.

Thin on purpose: everything decided is decided in reconcile.py. The `kubernetes`
client is synchronous, so each call runs in a worker thread; a 409 on the status
write means "someone wrote since we read: read again and recompute", never an error.
"""

from __future__ import annotations

import asyncio
import datetime
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from kwatt_operator.crd import GROUP, PLURAL, VERSION
from kwatt_operator.jobs import LABEL_TRAININGJOB, label_value

Obj = dict[str, Any]
COMPONENT = "kwatt-operator"


class Conflict(Exception):
    """The TrainingJob changed since it was read (409): reconcile again."""


class Gone(Exception):
    """The TrainingJob no longer exists (404): nothing to do."""


@dataclass(frozen=True)
class Snapshot:
    """A TrainingJob and what it owns, read in one pass."""

    trainingjob: Obj
    jobs: list[Obj]
    pods: dict[str, list[Obj]]  # Job name -> its Pods


class Kube:
    """API calls for one reconcile; `api` is a `kubernetes.client.ApiClient`.

    Requests and answers are plain JSON dicts (the client's transport, TLS and
    credentials, without its typed models): a user's pod template goes to the API
    server exactly as written, and the API server is the one that validates it.
    """

    def __init__(self, api: Any) -> None:
        self.api = api

    def _request(
        self, method: str, path: str, body: Obj | None = None, query: dict[str, str] | None = None
    ) -> Obj:
        from kubernetes.client.exceptions import ApiException

        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        method, url, headers, body, _ = self.api.param_serialize(
            method,
            path,
            query_params=list((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api.call_api(method, url, header_params=headers, body=body)
        response.read()
        text = response.data.decode() if response.data else ""
        if not 200 <= response.status <= 299:
            raise ApiException.from_response(http_resp=response, body=text, data=None)
        return cast(Obj, json.loads(text)) if text else {}

    async def read(self, namespace: str, name: str) -> Snapshot:
        return await asyncio.to_thread(self._read, namespace, name)

    def _read(self, namespace: str, name: str) -> Snapshot:
        from kubernetes.client.exceptions import ApiException

        try:
            tj = self._request("GET", f"{_tj_path(namespace)}/{name}")
        except ApiException as exc:
            if exc.status == 404:
                raise Gone(f"{namespace}/{name}") from exc
            raise
        uid = tj["metadata"]["uid"]
        selector = {"labelSelector": f"{LABEL_TRAININGJOB}={label_value(name)}"}
        listed = self._request("GET", f"/apis/batch/v1/namespaces/{namespace}/jobs", query=selector)
        jobs = [j for j in listed.get("items") or [] if _owned_by(j, uid)]
        pods: dict[str, list[Obj]] = {}
        if jobs:
            listed_pods = self._request(
                "GET", f"/api/v1/namespaces/{namespace}/pods", query=selector
            )
            names = {j["metadata"]["name"] for j in jobs}
            for pod in listed_pods.get("items") or []:
                labels = pod["metadata"].get("labels") or {}
                job = str(labels.get("batch.kubernetes.io/job-name") or labels.get("job-name"))
                if job in names:
                    pods.setdefault(job, []).append(pod)
        return Snapshot(tj, jobs, pods)

    async def write_status(self, trainingjob: Mapping[str, Any], status: Obj) -> Obj:
        """Replace the status, only if nobody wrote since `trainingjob` was read."""
        return await asyncio.to_thread(self._write_status, trainingjob, status)

    def _write_status(self, trainingjob: Mapping[str, Any], status: Obj) -> Obj:
        from kubernetes.client.exceptions import ApiException

        meta = trainingjob["metadata"]
        body = {
            "apiVersion": trainingjob["apiVersion"],
            "kind": trainingjob["kind"],
            "metadata": {
                "name": meta["name"],
                "namespace": meta["namespace"],
                "resourceVersion": meta["resourceVersion"],
            },
            "status": status,
        }
        path = f"{_tj_path(meta['namespace'])}/{meta['name']}/status"
        try:
            return self._request("PUT", path, body)
        except ApiException as exc:
            if exc.status == 409:
                raise Conflict(meta["name"]) from exc
            if exc.status == 404:
                raise Gone(meta["name"]) from exc
            raise

    async def create_job(self, job: Obj) -> bool:
        """Create a run's Job; False if it exists already (an earlier pass made it)."""
        return await asyncio.to_thread(self._create_job, job)

    def _create_job(self, job: Obj) -> bool:
        from kubernetes.client.exceptions import ApiException

        namespace = job["metadata"]["namespace"]
        try:
            self._request("POST", f"/apis/batch/v1/namespaces/{namespace}/jobs", job)
            return True
        except ApiException as exc:
            if exc.status == 409:
                return False
            raise

    async def delete_job(self, namespace: str, name: str) -> None:
        await asyncio.to_thread(self._delete_job, namespace, name)

    def _delete_job(self, namespace: str, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        body = {"apiVersion": "v1", "kind": "DeleteOptions", "propagationPolicy": "Background"}
        try:
            self._request("DELETE", f"/apis/batch/v1/namespaces/{namespace}/jobs/{name}", body)
        except ApiException as exc:
            if exc.status != 404:
                raise

    async def post_event(
        self, obj: Mapping[str, Any], type_: str, reason: str, message: str
    ) -> None:
        """A core/v1 Event about `obj` from the operator (what `kubectl describe` shows)."""
        await asyncio.to_thread(self._post_event, obj, type_, reason, message)

    def _post_event(self, obj: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        meta = obj["metadata"]
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{meta['name']}.", "namespace": meta["namespace"]},
            "involvedObject": {
                "apiVersion": obj.get("apiVersion"),
                "kind": obj.get("kind"),
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta.get("uid"),
            },
            "type": type_,
            "reason": reason,
            "message": message[:1024],
            "source": {"component": COMPONENT},
            "reportingComponent": COMPONENT,
            "reportingInstance": COMPONENT,
            "firstTimestamp": stamp,
            "lastTimestamp": stamp,
            "count": 1,
        }
        self._request("POST", f"/api/v1/namespaces/{meta['namespace']}/events", body)


def _tj_path(namespace: str) -> str:
    return f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{PLURAL}"


def _owned_by(obj: Mapping[str, Any], uid: str) -> bool:
    return any(
        ref.get("uid") == uid and ref.get("controller")
        for ref in (obj.get("metadata") or {}).get("ownerReferences") or []
    )


__all__ = ["Conflict", "Gone", "Kube", "Snapshot"]
