"""The node agents' connection to the API server: REST calls and watches as a kubelet makes them.

Part of the sandbox cluster (a test and demo harness; production is a real cluster).
Each node agent authenticates with its own client certificate (user
`system:node:NAME`, group `system:nodes`), so the Node authorizer and the
NodeRestriction admission plugin hold it to what a real kubelet may do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import AsyncIterator
from typing import Any

import aiohttp

log = logging.getLogger(__name__)
Obj = dict[str, Any]
MERGE_PATCH = "application/merge-patch+json"
STRATEGIC_PATCH = "application/strategic-merge-patch+json"


class ApiError(Exception):
    """The API server refused a request; `code` is the HTTP status."""

    def __init__(self, code: int, reason: str, message: str) -> None:
        super().__init__(f"{code} {reason}: {message}")
        self.code = code
        self.reason = reason
        self.message = message


class ApiClient:
    """A small async client for one identity; `close()` when done."""

    def __init__(self, url: str, context: ssl.SSLContext, user_agent: str) -> None:
        self.url = url.rstrip("/")
        self._context = context
        self._headers = {"User-Agent": user_agent, "Accept": "application/json"}
        self._session: aiohttp.ClientSession | None = None

    def _http(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._context, limit=20)
            self._session = aiohttp.ClientSession(
                connector=connector, headers=self._headers, read_bufsize=2**21
            )
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def request(
        self,
        method: str,
        path: str,
        body: Obj | None = None,
        *,
        params: dict[str, str] | None = None,
        content_type: str = "application/json",
        timeout: float = 30.0,
    ) -> Obj:
        """One call; the decoded JSON answer, or ApiError with the server's Status."""
        data = None if body is None else json.dumps(body).encode()
        headers = {"Content-Type": content_type} if data is not None else {}
        async with self._http().request(
            method,
            self.url + path,
            data=data,
            params=params,
            headers=headers,
            timeout=aiohttp.ClientTimeout(total=timeout),
        ) as response:
            text = await response.text()
            if response.status >= 400:
                raise _error(response.status, text)
            result: Obj = json.loads(text) if text else {}
            return result

    async def get(self, path: str, params: dict[str, str] | None = None) -> Obj:
        return await self.request("GET", path, params=params)

    async def create(self, path: str, body: Obj) -> Obj:
        return await self.request("POST", path, body)

    async def patch(self, path: str, body: Obj, content_type: str = MERGE_PATCH) -> Obj:
        return await self.request("PATCH", path, body, content_type=content_type)

    async def delete(self, path: str, body: Obj | None = None) -> Obj:
        return await self.request("DELETE", path, body)

    async def watch(
        self, path: str, params: dict[str, str] | None = None
    ) -> AsyncIterator[tuple[str, Obj]]:
        """List, then watch from the list's resourceVersion: yields ("ADDED"|"MODIFIED"|
        "DELETED", object) forever. A dropped watch resumes; 410 Gone lists again:
        every listed object comes again as ADDED (consumers treat events as level),
        followed by ("SYNCED", {"uids": [...]}) so that a consumer can forget the
        objects that went away while it was not watching."""
        params = dict(params or {})
        while True:
            try:
                listing = await self.get(path, params)
            except (ApiError, aiohttp.ClientError, TimeoutError) as exc:
                log.debug("List of %s failed (%s); retrying.", path, exc)
                await asyncio.sleep(1.0)
                continue
            version = str(listing.get("metadata", {}).get("resourceVersion", ""))
            items = listing.get("items") or []
            for item in items:
                yield "ADDED", item
            yield "SYNCED", {"uids": [i.get("metadata", {}).get("uid") for i in items]}
            while True:
                query = {
                    **params,
                    "watch": "true",
                    "resourceVersion": version,
                    "allowWatchBookmarks": "true",
                    "timeoutSeconds": "300",
                }
                try:
                    async for kind, obj in self._stream(path, query):
                        rv = str(obj.get("metadata", {}).get("resourceVersion", ""))
                        version = rv or version
                        if kind == "ERROR":
                            raise ApiError(int(obj.get("code", 500)), str(obj.get("reason")), "")
                        if kind != "BOOKMARK":
                            yield kind, obj
                except ApiError as exc:
                    if exc.code == 410:
                        break  # too old: list again
                    await asyncio.sleep(0.5)
                except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
                    log.debug("Watch of %s ended (%s); resuming.", path, exc)
                    await asyncio.sleep(0.2)

    async def _stream(self, path: str, params: dict[str, str]) -> AsyncIterator[tuple[str, Obj]]:
        async with self._http().get(
            self.url + path,
            params=params,
            timeout=aiohttp.ClientTimeout(total=None, sock_connect=10, sock_read=330),
        ) as response:
            if response.status >= 400:
                raise _error(response.status, await response.text())
            async for line in response.content:
                if line.strip():
                    event = json.loads(line)
                    yield str(event.get("type", "")), event.get("object") or {}


def _error(code: int, text: str) -> ApiError:
    try:
        status = json.loads(text)
        return ApiError(code, str(status.get("reason", "")), str(status.get("message", "")))
    except ValueError:
        return ApiError(code, "", text[:200])


def now_micro() -> str:
    """A MicroTime as Leases and events.k8s.io want it."""
    import datetime

    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_rfc3339() -> str:
    import datetime

    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = [
    "MERGE_PATCH",
    "STRATEGIC_PATCH",
    "ApiClient",
    "ApiError",
    "now_micro",
    "now_rfc3339",
]
