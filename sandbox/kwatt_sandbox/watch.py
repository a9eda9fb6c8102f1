"""Watch streams: newline-delimited JSON events, resumable by resourceVersion.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. Semantics follow the API Concepts page: without a resourceVersion (or
with "0") the stream starts with synthetic ADDED events for the current objects;
with one it replays every change after it, or, if that part of the history was
compacted, sends an ERROR event carrying a 410 Status. BOOKMARKs (when asked for)
carry only the kind, apiVersion and resourceVersion. Objects that start or stop
matching a selector are reported as ADDED or DELETED, as the real watch cache does.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from kwatt_sandbox.errors import ApiError
from kwatt_sandbox.faults import Faults, RequestTarget
from kwatt_sandbox.resources import ResourceInfo
from kwatt_sandbox.selectors import FieldRequirement, Requirement
from kwatt_sandbox.store import Store, WatchEvent

Render = Callable[[dict[str, Any]], dict[str, Any]]


@dataclass
class WatchOptions:
    """The query parameters of one watch request."""

    namespace: str | None
    labels: tuple[Requirement, ...]
    fields: tuple[FieldRequirement, ...]
    resource_version: str
    bookmarks: bool
    timeout: float | None
    send_initial_events: bool


@dataclass
class WatchTiming:
    """How often bookmarks go out; the first one comes soon so clients see progress."""

    first_bookmark: float = 0.1
    bookmark_interval: float = 5.0
    poll: float = 0.2


def _dumps(event: dict[str, Any]) -> bytes:
    return (json.dumps(event, separators=(",", ":")) + "\n").encode()


class WatchStream:
    """One client's watch: filters store events and writes them to the response."""

    def __init__(
        self,
        store: Store,
        info: ResourceInfo,
        options: WatchOptions,
        render: Render,
        faults: Faults,
        target: RequestTarget,
        timing: WatchTiming,
        closing: Callable[[], bool] = lambda: False,
    ) -> None:
        self.store = store
        self.info = info
        self.options = options
        self.render = render
        self.faults = faults
        self.target = target
        self.timing = timing
        self.closing = closing
        self.queue: asyncio.Queue[WatchEvent] = asyncio.Queue()

    def _listener(self, event: WatchEvent) -> None:
        if event.storage == self.info.storage:
            self.queue.put_nowait(event)

    def _in_scope(self, obj: dict[str, Any] | None) -> bool:
        if obj is None:
            return False
        ns = self.options.namespace
        if ns and self.info.namespaced and (obj.get("metadata") or {}).get("namespace") != ns:
            return False
        return self.store.matches(self.info, obj, self.options.labels, self.options.fields)

    def translate(self, event: WatchEvent) -> dict[str, Any] | None:
        """The event this watcher sees, or None (selectors can turn MODIFIED into ADDED/DELETED)."""
        now = self._in_scope(event.obj)
        before = self._in_scope(event.old)
        kind = event.type
        if kind == "ADDED" and not now:
            return None
        if kind == "MODIFIED":
            if now and not before:
                kind = "ADDED"
            elif before and not now:
                kind = "DELETED"
            elif not now:
                return None
        if kind == "DELETED" and not (now or before):
            return None
        obj = self.store.to_served(event.obj, self.info)
        return {"type": kind, "object": self.render(obj)}

    def _bookmark(self, initial_end: bool = False) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(self.store.resource_version)}
        if initial_end:
            meta["annotations"] = {"k8s.io/initial-events-end": "true"}
        return {
            "type": "BOOKMARK",
            "object": {
                "kind": self.info.kind,
                "apiVersion": self.info.api_version,
                "metadata": meta,
            },
        }

    async def serve(self, request: web.Request) -> web.StreamResponse:
        options = self.options
        unsubscribe = self.store.subscribe(self._listener)
        opening: list[dict[str, Any]] = []
        error: ApiError | None = None
        rv = options.resource_version
        try:
            if rv in ("", "0") or options.send_initial_events:
                for obj in self.store.list_objects(
                    self.info, options.namespace, options.labels, options.fields
                ):
                    opening.append({"type": "ADDED", "object": self.render(obj)})
                if options.send_initial_events and options.bookmarks:
                    opening.append(self._bookmark(initial_end=True))
            else:
                try:
                    start = int(rv)
                except ValueError:
                    unsubscribe()
                    raise ApiError(400, f'invalid resource version "{rv}"') from None
                try:
                    for event in self.store.events_after(start):
                        if event.storage == self.info.storage:
                            translated = self.translate(event)
                            if translated is not None:
                                opening.append(translated)
                except ApiError as exc:
                    error = exc
            response = web.StreamResponse(
                status=200,
                headers={"Content-Type": "application/json", "Cache-Control": "no-cache"},
            )
            response.enable_chunked_encoding()
            await response.prepare(request)
            if error is not None:
                await response.write(_dumps({"type": "ERROR", "object": error.to_status()}))
                await response.write_eof()
                return response
            for item in opening:
                await response.write(_dumps(item))
            await self._follow(request, response)
            return response
        finally:
            unsubscribe()

    async def _follow(self, request: web.Request, response: web.StreamResponse) -> None:
        options, timing = self.options, self.timing
        started = time.monotonic()
        epoch = self.faults.drop_epoch
        rule = self.faults.take(self.target, ("drop_watch", "gone_watch"))
        cut_at = started + rule.after if rule is not None else None
        next_bookmark = started + timing.first_bookmark
        deadline = started + options.timeout if options.timeout else None
        while True:
            now = time.monotonic()
            if request.transport is None or request.transport.is_closing():
                return  # the client went away
            if self.closing():
                await response.write_eof()
                return
            if deadline is not None and now >= deadline:
                await response.write_eof()
                return
            how = self.faults.open_watch_action(self.target, epoch)
            if how is None and cut_at is not None and rule is not None and now >= cut_at:
                how = "drop" if rule.kind == "drop_watch" else "gone"
            if how == "gone":
                status = ApiError(
                    410,
                    f"too old resource version: {options.resource_version or 0} "
                    f"({self.store.resource_version})",
                    reason="Expired",
                ).to_status()
                await response.write(_dumps({"type": "ERROR", "object": status}))
                await response.write_eof()
                return
            if how == "drop":
                if request.transport is not None:
                    request.transport.close()
                return
            wait = timing.poll
            if options.bookmarks:
                wait = min(wait, max(next_bookmark - now, 0.0))
            if deadline is not None:
                wait = min(wait, max(deadline - now, 0.0))
            if cut_at is not None:
                wait = min(wait, max(cut_at - now, 0.0))
            try:
                event = await asyncio.wait_for(self.queue.get(), timeout=max(wait, 0.001))
            except TimeoutError:
                if options.bookmarks and time.monotonic() >= next_bookmark and self.queue.empty():
                    await response.write(_dumps(self._bookmark()))
                    next_bookmark = time.monotonic() + timing.bookmark_interval
                continue
            batch = [event]
            while not self.queue.empty():
                batch.append(self.queue.get_nowait())
            chunks = [self.translate(e) for e in batch]
            data = b"".join(_dumps(c) for c in chunks if c is not None)
            if data:
                await response.write(data)
