"""The sandbox API server: Kubernetes REST semantics over real HTTP (aiohttp).

This is an emulator for tests and demos; production is a real cluster. It serves
discovery, OpenAPI, CRUD, list/watch, patch, the status and log subresources, and
two debug endpoints (`/sandbox/audit`, `/sandbox/faults`). Background controllers
(the garbage collector now; a Job controller or kubelet later) are coroutines
registered with `add_controller`; they run on the server's loop and use the store.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import yaml
from aiohttp import web

from kwatt_sandbox import discovery, openapi, protobuf
from kwatt_sandbox.audit import AuditLog, AuditRecord
from kwatt_sandbox.errors import ApiError, bad_request, gone
from kwatt_sandbox.faults import Faults, RequestTarget
from kwatt_sandbox.gc import GarbageCollector
from kwatt_sandbox.nodes.gpus import GpuProvider
from kwatt_sandbox.nodes.nodes import NodeSpec
from kwatt_sandbox.resources import ResourceInfo
from kwatt_sandbox.selectors import parse_field_selector, parse_label_selector
from kwatt_sandbox.store import PATCH_TYPES, Store
from kwatt_sandbox.tables import render_table
from kwatt_sandbox.watch import WatchOptions, WatchStream, WatchTiming

log = logging.getLogger("kwatt_sandbox")

HARNESS_NOTICE = "emulator for tests and demos; production is a real cluster"

if TYPE_CHECKING:
    from kwatt_sandbox.nodes import SimulatedCluster

Controller = Callable[["SandboxServer"], Awaitable[None]]
_JSON = "application/json"


@dataclass
class SandboxConfig:
    """How to run one sandbox API server."""

    host: str = "127.0.0.1"
    port: int = 0
    history_size: int = 5000
    first_bookmark: float = 0.1
    bookmark_interval: float = 5.0
    # Simulated nodes (kwatt_sandbox.nodes): none keeps a bare API server.
    nodes: list[NodeSpec] = field(default_factory=list)
    gpu_provider: GpuProvider | None = None  # default: PlainGpuProvider
    pod_dir: Path | None = None  # per-pod files (termination messages); default: a temp dir


def _json_response(body: Any, status: int = 200, warnings: list[str] | None = None) -> web.Response:
    headers = {}
    if warnings:
        headers["Warning"] = ", ".join(f'299 - "{w}"'.replace('\\"', '"') for w in warnings)
    return web.Response(
        body=json.dumps(body, separators=(",", ":")).encode(),
        status=status,
        content_type=_JSON,
        headers=headers,
    )


def _flag(value: str | None) -> bool:
    return (value or "").lower() in ("1", "true", "yes")


def _wants_table(request: web.Request) -> bool:
    accept = request.headers.get("Accept", "")
    return any(
        "as=Table" in part and "g=meta.k8s.io" in part and "v=v1" in part.replace("v=v1beta1", "")
        for part in accept.split(",")
    )


@dataclass
class Route:
    """A resource URL taken apart the way the API server's RequestInfo does."""

    group: str
    version: str
    resource: str
    subresource: str
    namespace: str
    name: str
    watch_prefix: bool


def parse_route(path: str) -> Route | None:
    parts = [unquote(p) for p in path.split("/") if p]
    if len(parts) >= 3 and parts[0] == "api":
        group, version, rest = "", parts[1], parts[2:]
    elif len(parts) >= 4 and parts[0] == "apis":
        group, version, rest = parts[1], parts[2], parts[3:]
    else:
        return None
    watch_prefix = bool(rest) and rest[0] == "watch"
    if watch_prefix:
        rest = rest[1:]
    namespace = ""
    if len(rest) > 2 and rest[0] == "namespaces" and rest[2] not in ("status", "finalize"):
        namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3:
        return None
    return Route(
        group,
        version,
        rest[0],
        rest[2] if len(rest) > 2 else "",
        namespace,
        rest[1] if len(rest) > 1 else "",
        watch_prefix,
    )


def _verb(method: str, route: Route, query: Any) -> str:
    if method == "GET":
        if route.name:
            return "get"
        return "watch" if route.watch_prefix or _flag(query.get("watch")) else "list"
    return {
        "POST": "create",
        "PUT": "update",
        "PATCH": "patch",
        "DELETE": "delete" if route.name else "deletecollection",
    }.get(method, method.lower())


TARGET = web.RequestKey("target", RequestTarget)
ROUTE: web.RequestKey[Route | None] = web.RequestKey("route", object)  # type: ignore[arg-type]


class SandboxServer:
    """One sandbox cluster's API server: store, audit log, faults and controllers."""

    def __init__(self, config: SandboxConfig | None = None) -> None:
        self.config = config or SandboxConfig()
        self.store = Store(history_size=self.config.history_size)
        self.audit = AuditLog()
        self.faults = Faults()
        self.gc = GarbageCollector(self.store)
        self.timing = WatchTiming(self.config.first_bookmark, self.config.bookmark_interval)
        self._controllers: list[tuple[str, Controller]] = [("garbage-collector", _run_gc)]
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._runner: web.AppRunner | None = None
        self._closing = False
        self.port = 0
        self.app = web.Application(middlewares=[self._middleware], client_max_size=8 * 1024 * 1024)
        self.app.router.add_route("*", "/{tail:.*}", self._dispatch)
        self.cluster: SimulatedCluster | None = None
        if self.config.nodes:
            from kwatt_sandbox.nodes import install

            self.cluster = install(self)

    # --- lifecycle ----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.config.host}:{self.port}"

    @property
    def closing(self) -> bool:
        return self._closing

    def add_controller(self, name: str, controller: Controller) -> None:
        """Run `controller(server)` as a background task on the loop (now if started)."""
        self._controllers.append((name, controller))
        if self._runner is not None:
            self._start_controller(name, controller)

    def _start_controller(self, name: str, controller: Controller) -> None:
        async def guarded() -> None:
            try:
                await controller(self)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("Sandbox controller %s stopped with an error.", name)

        self._tasks[name] = asyncio.get_running_loop().create_task(guarded(), name=name)

    async def start(self) -> str:
        runner = web.AppRunner(
            self.app, access_log=None, handle_signals=False, shutdown_timeout=0.5
        )
        await runner.setup()
        site = web.TCPSite(runner, self.config.host, self.config.port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        self.port = int(sockets[0].getsockname()[1]) if sockets else self.config.port
        self._runner = runner
        for name, controller in self._controllers:
            self._start_controller(name, controller)
        log.info("Sandbox cluster API server at %s (%s).", self.url, HARNESS_NOTICE)
        return self.url

    async def stop(self) -> None:
        self._closing = True
        for task in self._tasks.values():
            task.cancel()
        for task in self._tasks.values():
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # --- middleware: audit, faults, errors ------------------------------------------------------

    @web.middleware
    async def _middleware(
        self, request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        route = parse_route(request.path)
        verb = _verb(request.method, route, request.query) if route else request.method.lower()
        target = RequestTarget(
            verb,
            route.group if route else "",
            route.resource if route else "",
            route.subresource if route else "",
            route.namespace if route else "",
            route.name if route else "",
        )
        request[TARGET] = target
        request[ROUTE] = route
        record = AuditRecord(
            time.time(),
            request.method,
            request.path_qs,
            verb,
            target.group,
            route.version if route else "",
            target.resource,
            target.subresource,
            target.namespace,
            target.name,
            request.headers.get("User-Agent", ""),
        )
        self.audit.add(record)
        try:
            if route is not None:
                delay = self.faults.take(target, ("delay",))
                if delay is not None:
                    await asyncio.sleep(delay.delay)
                fault = self.faults.take(target, ("error",))
                if fault is not None:
                    raise ApiError(fault.code, fault.message, reason=fault.reason)
            response = await handler(request)
            record.code = response.status
            return response
        except ApiError as exc:
            record.code = exc.code
            return _json_response(exc.to_status(), exc.code)
        except web.HTTPException as exc:
            record.code = exc.status
            raise
        except (ConnectionResetError, asyncio.CancelledError):
            record.code = 499
            raise
        except Exception as exc:
            record.code = 500
            log.exception("Sandbox request %s %s failed.", request.method, request.path)
            err = ApiError(500, f"Internal error in the sandbox: {exc}")
            return _json_response(err.to_status(), 500)

    # --- dispatch ---------------------------------------------------------------------------

    async def _dispatch(self, request: web.Request) -> web.StreamResponse:
        route: Route | None = request[ROUTE]
        if route is None:
            return await self._non_resource(request)
        if request.method not in ("GET", "POST", "PUT", "PATCH", "DELETE"):
            raise ApiError(405, "the server does not allow this method on the requested resource")
        info = self.store.resolve(route.group, route.version, route.resource)
        if route.namespace and not info.namespaced:
            raise ApiError(404, "the server could not find the requested resource")
        if route.subresource and route.subresource not in info.subresources:
            raise ApiError(404, "the server could not find the requested resource")
        verb: str = request[TARGET].verb
        handler = {
            "get": self._get,
            "list": self._list,
            "watch": self._watch,
            "create": self._create,
            "update": self._update,
            "patch": self._patch,
            "delete": self._delete,
            "deletecollection": self._delete_collection,
        }.get(verb)
        if handler is None or (verb == "create" and (route.name or route.subresource)):
            raise ApiError(405, "the server does not allow this method on the requested resource")
        if (
            info.namespaced
            and not route.namespace
            and verb in ("create", "get", "update", "patch", "delete")
        ):
            raise ApiError(404, "the server could not find the requested resource")
        return await handler(request, info, route)

    async def _non_resource(self, request: web.Request) -> web.StreamResponse:
        path = request.path.rstrip("/") or "/"
        registry = self.store.registry
        if request.method == "GET":
            if path == "/version":
                return _json_response(discovery.VERSION_INFO)
            if path in ("/healthz", "/readyz", "/livez"):
                return web.Response(text="ok")
            if path == "/api":
                return _json_response(discovery.api_versions(f"{self.config.host}:{self.port}"))
            if path == "/apis":
                return _json_response(discovery.api_group_list(registry))
            parts = [p for p in path.split("/") if p]
            if len(parts) == 2 and parts[0] == "api":
                doc = discovery.api_resource_list(registry, "", parts[1])
                if doc is not None:
                    return _json_response(doc)
            if len(parts) == 2 and parts[0] == "apis":
                group = discovery.api_group(registry, parts[1])
                if group is not None:
                    return _json_response(group)
            if len(parts) == 3 and parts[0] == "apis":
                doc = discovery.api_resource_list(registry, parts[1], parts[2])
                if doc is not None:
                    return _json_response(doc)
            if path == "/openapi/v2":
                accept = request.headers.get("Accept", "")
                if "protobuf" in accept and "json" not in accept:
                    body = protobuf.openapi_v2_document(
                        "Kubernetes (kwatt sandbox emulator)", discovery.VERSION_INFO["gitVersion"]
                    )
                    return web.Response(
                        body=body, headers={"Content-Type": protobuf.OPENAPI_V2_PROTOBUF}
                    )
                if accept and "json" not in accept and "*/*" not in accept:
                    raise ApiError(406, "only JSON and protobuf are served for /openapi/v2")
                return _json_response(openapi.v2_document(registry))
            if path == "/openapi/v3":
                return _json_response(openapi.v3_root(registry))
            if path.startswith("/openapi/v3/"):
                rel = [p for p in path[len("/openapi/v3/") :].split("/") if p]
                doc = None
                if len(rel) == 2 and rel[0] == "api":
                    doc = openapi.gv_document(registry, "", rel[1])
                elif len(rel) == 3 and rel[0] == "apis":
                    doc = openapi.gv_document(registry, rel[1], rel[2])
                if doc is not None:
                    return _json_response(doc)
            if path == "/sandbox/audit":
                return _json_response({"items": [r.to_dict() for r in self.audit.records()]})
            if path == "/sandbox/faults":
                return _json_response({"items": [r.to_dict() for r in self.faults.rules()]})
        if path == "/sandbox/faults" and request.method == "POST":
            try:
                rule = self.faults.add_from_dict(await request.json())
            except (ValueError, TypeError) as exc:
                raise bad_request(str(exc)) from exc
            return _json_response(rule.to_dict(), 201)
        if path == "/sandbox/faults" and request.method == "DELETE":
            self.faults.clear()
            return _json_response({"items": []})
        raise ApiError(404, "the server could not find the requested resource")

    # --- helpers ------------------------------------------------------------------------------

    async def _body(self, request: web.Request) -> Any:
        raw = await request.read()
        ctype = request.content_type
        if not raw:
            return None
        if "protobuf" in ctype:
            try:
                return protobuf.decode_object(raw)
            except protobuf.ProtobufError as exc:
                raise ApiError(415, str(exc), reason="UnsupportedMediaType") from exc
        try:
            if "yaml" in ctype:
                return yaml.safe_load(raw)
            return json.loads(raw)
        except (ValueError, yaml.YAMLError) as exc:
            raise bad_request(f"the body of the request could not be decoded: {exc}") from exc

    def _list_meta(self, rv: int, cont: str = "", remaining: int | None = None) -> dict[str, Any]:
        meta: dict[str, Any] = {"resourceVersion": str(rv)}
        if cont:
            meta["continue"] = cont
        if remaining:
            meta["remainingItemCount"] = remaining
        return meta

    def _render(
        self, request: web.Request, info: ResourceInfo
    ) -> Callable[[dict[str, Any]], dict[str, Any]]:
        if not _wants_table(request):
            return lambda obj: obj
        include = request.query.get("includeObject", "Metadata")

        def table(obj: dict[str, Any]) -> dict[str, Any]:
            rv = (obj.get("metadata") or {}).get("resourceVersion", "")
            return render_table(info, [obj], {"resourceVersion": rv}, include)

        return table

    def _respond_object(
        self,
        request: web.Request,
        info: ResourceInfo,
        obj: dict[str, Any],
        status: int = 200,
        warnings: list[str] | None = None,
    ) -> web.Response:
        if _wants_table(request):
            rv = (obj.get("metadata") or {}).get("resourceVersion", "")
            include = request.query.get("includeObject", "Metadata")
            return _json_response(
                render_table(info, [obj], {"resourceVersion": rv}, include), status
            )
        return _json_response(obj, status, warnings)

    def _selectors(self, request: web.Request, info: ResourceInfo) -> tuple[Any, Any]:
        labels = parse_label_selector(request.query.get("labelSelector"))
        fields = parse_field_selector(request.query.get("fieldSelector"), info.selectable)
        return labels, fields

    @staticmethod
    def _field_validation(request: web.Request) -> str:
        value = request.query.get("fieldValidation", "")
        if value and value not in ("Strict", "Warn", "Ignore"):
            raise bad_request(
                f"fieldValidation parameter unsupported: {value}, valid values are Strict, "
                "Warn, Ignore"
            )
        return value

    # --- verbs --------------------------------------------------------------------------------

    async def _get(
        self, request: web.Request, info: ResourceInfo, route: Route
    ) -> web.StreamResponse:
        if route.subresource == "log":
            return await self._log(request, info, route)
        obj = self.store.get(info, route.namespace, route.name)
        return self._respond_object(request, info, obj)

    async def _list(
        self, request: web.Request, info: ResourceInfo, route: Route
    ) -> web.StreamResponse:
        labels, fields = self._selectors(request, info)
        query = request.query
        rv_param = query.get("resourceVersion", "")
        current = self.store.resource_version
        if rv_param and rv_param != "0":
            try:
                wanted = int(rv_param)
            except ValueError:
                raise bad_request(f'invalid resource version "{rv_param}"') from None
            if wanted > current:
                raise ApiError(
                    504,
                    f"Too large resource version: {wanted}, current: {current}",
                    reason="Timeout",
                )
            if (
                query.get("resourceVersionMatch") == "Exact"
                and wanted < self.store.oldest_resumable
            ):
                raise gone(f"too old resource version: {wanted} ({self.store.oldest_resumable})")
        items = self.store.list_objects(info, route.namespace or None, labels, fields)
        start = 0
        token = query.get("continue", "")
        if token:
            try:
                state = json.loads(base64.urlsafe_b64decode(token.encode()))
                start_key = tuple(state["start"])
                token_rv = int(state["rv"])
            except (ValueError, KeyError, TypeError):
                raise bad_request("continue key is not valid") from None
            if token_rv < self.store.oldest_resumable:
                raise gone(
                    "The provided continue parameter is too old to display a consistent list "
                    "result. You can start a new list without the continue parameter."
                )
            start = next(
                (
                    i
                    for i, o in enumerate(items)
                    if (o["metadata"].get("namespace", ""), o["metadata"]["name"]) >= start_key
                ),
                len(items),
            )
        limit = int(query.get("limit", "0") or 0)
        page = items[start:]
        cont = ""
        remaining = None
        if limit > 0 and len(page) > limit:
            nxt = page[limit]["metadata"]
            cont = base64.urlsafe_b64encode(
                json.dumps(
                    {"rv": current, "start": [nxt.get("namespace", ""), nxt["name"]]}
                ).encode()
            ).decode()
            remaining = len(page) - limit
            page = page[:limit]
        meta = self._list_meta(current, cont, remaining)
        if _wants_table(request):
            include = query.get("includeObject", "Metadata")
            return _json_response(render_table(info, page, meta, include))
        return _json_response(
            {
                "kind": info.list_kind,
                "apiVersion": info.api_version,
                "metadata": meta,
                "items": page,
            }
        )

    async def _watch(
        self, request: web.Request, info: ResourceInfo, route: Route
    ) -> web.StreamResponse:
        labels, fields = self._selectors(request, info)
        query = request.query
        timeout = query.get("timeoutSeconds")
        options = WatchOptions(
            namespace=route.namespace or None,
            labels=labels,
            fields=fields,
            resource_version=query.get("resourceVersion", ""),
            bookmarks=_flag(query.get("allowWatchBookmarks")),
            timeout=float(timeout) if timeout else None,
            send_initial_events=_flag(query.get("sendInitialEvents")),
        )
        if route.name:  # /watch/namespaces/ns/pods/name: a watch of one object
            extra = parse_field_selector(f"metadata.name={route.name}", info.selectable)
            options.fields = options.fields + extra
        stream = WatchStream(
            self.store,
            info,
            options,
            self._render(request, info),
            self.faults,
            request[TARGET],
            self.timing,
            lambda: self._closing,
        )
        return await stream.serve(request)

    async def _create(
        self, request: web.Request, info: ResourceInfo, route: Route
    ) -> web.StreamResponse:
        body = await self._body(request)
        if info.group == "authorization.k8s.io":
            return _json_response(access_review(body), 201)
        obj, warnings = self.store.create_with_warnings(
            info,
            route.namespace,
            body,
            request.query.get("dryRun") == "All",
            self._field_validation(request),
        )
        return self._respond_object(request, info, obj, 201, warnings)

    async def _update(
        self, request: web.Request, info: ResourceInfo, route: Route
    ) -> web.StreamResponse:
        body = await self._body(request)
        obj, warnings = self.store.update_with_warnings(
            info,
            route.namespace,
            route.name,
            body,
            route.subresource,
            request.query.get("dryRun") == "All",
            self._field_validation(request),
        )
        return self._respond_object(request, info, obj, 200, warnings)

    async def _patch(
        self, request: web.Request, info: ResourceInfo, route: Route
    ) -> web.StreamResponse:
        patch_type = PATCH_TYPES.get(request.content_type)
        if patch_type is None or patch_type == "apply":
            raise ApiError(
                415,
                "the body of the request was in an unknown format - accepted media types include: "
                "application/json-patch+json, application/merge-patch+json"
                + (", application/strategic-merge-patch+json" if info.patch_meta else ""),
                reason="UnsupportedMediaType",
            )
        body = await self._body(request)
        obj, warnings = self.store.patch_with_warnings(
            info,
            route.namespace,
            route.name,
            patch_type,
            body,
            route.subresource,
            request.query.get("dryRun") == "All",
            self._field_validation(request),
        )
        return self._respond_object(request, info, obj, 200, warnings)

    def _delete_options(self, request: web.Request, body: Any) -> dict[str, Any]:
        options: dict[str, Any] = dict(body) if isinstance(body, dict) else {}
        query = request.query
        if "propagationPolicy" in query:
            options["propagationPolicy"] = query["propagationPolicy"]
        if "gracePeriodSeconds" in query:
            options["gracePeriodSeconds"] = int(query["gracePeriodSeconds"])
        if "orphanDependents" in query:
            options["orphanDependents"] = _flag(query["orphanDependents"])
        if query.get("dryRun") == "All":
            options["dryRun"] = ["All"]
        if options.get("orphanDependents") is not None and not options.get("propagationPolicy"):
            options["propagationPolicy"] = "Orphan" if options["orphanDependents"] else "Background"
        return options

    async def _delete(
        self, request: web.Request, info: ResourceInfo, route: Route
    ) -> web.StreamResponse:
        options = self._delete_options(request, await self._body(request))
        obj, gone_now = self.store.delete(
            info,
            route.namespace,
            route.name,
            propagation=options.get("propagationPolicy"),
            grace_period=options.get("gracePeriodSeconds"),
            preconditions=options.get("preconditions"),
            dry_run="All" in (options.get("dryRun") or []),
        )
        # The real server answers 202 only for the legacy orphanDependents=false.
        status = 200
        if not gone_now and options.get("orphanDependents") is False:
            status = 202
        return self._respond_object(request, info, obj, status)

    async def _delete_collection(
        self, request: web.Request, info: ResourceInfo, route: Route
    ) -> web.StreamResponse:
        options = self._delete_options(request, await self._body(request))
        labels, fields = self._selectors(request, info)
        deleted = []
        for obj in self.store.list_objects(info, route.namespace or None, labels, fields):
            meta = obj["metadata"]
            try:
                result, _ = self.store.delete(
                    info,
                    meta.get("namespace", ""),
                    meta["name"],
                    propagation=options.get("propagationPolicy"),
                    grace_period=options.get("gracePeriodSeconds"),
                    dry_run="All" in (options.get("dryRun") or []),
                )
                deleted.append(result)
            except ApiError as exc:
                if exc.code != 404:
                    raise
        return _json_response(
            {
                "kind": info.list_kind,
                "apiVersion": info.api_version,
                "metadata": self._list_meta(self.store.resource_version),
                "items": deleted,
            }
        )

    async def _log(
        self, request: web.Request, info: ResourceInfo, route: Route
    ) -> web.StreamResponse:
        pod = self.store.get(info, route.namespace, route.name)
        containers = [
            c.get("name", "")
            for key in ("containers", "initContainers")
            for c in (pod.get("spec") or {}).get(key) or []
        ]
        main = [c.get("name", "") for c in (pod.get("spec") or {}).get("containers") or []]
        container = request.query.get("container", "")
        if not container:
            if len(main) != 1:
                raise bad_request(
                    f"a container name must be specified for pod {route.name}, choose one of: "
                    f"[{' '.join(main)}]"
                )
            container = main[0]
        if container not in containers:
            raise bad_request(f"container {container} is not valid for pod {route.name}")
        if _flag(request.query.get("previous")) and not _restarted(pod, container):
            raise bad_request(
                f'previous terminated container "{container}" in pod "{route.name}" not found'
            )
        logs = self.store.logs
        ns = route.namespace
        text = logs.read(ns, route.name, container)
        tail = request.query.get("tailLines")
        if tail is not None:
            lines = text.splitlines(keepends=True)
            text = "".join(lines[-int(tail) :]) if int(tail) > 0 else ""
        limit = request.query.get("limitBytes")
        if limit is not None:
            text = text[: int(limit)]
        if not _flag(request.query.get("follow")):
            return web.Response(text=text, content_type="text/plain")
        response = web.StreamResponse(headers={"Content-Type": "text/plain"})
        response.enable_chunked_encoding()
        await response.prepare(request)
        await response.write(text.encode())
        offset = len(logs.read(ns, route.name, container))
        while not self._closing:
            current = logs.read(ns, route.name, container)
            if len(current) > offset:
                await response.write(current[offset:].encode())
                offset = len(current)
            if logs.closed(ns, route.name, container):
                break
            try:
                self.store.get(info, ns, route.name)
            except ApiError:
                break
            if request.transport is None or request.transport.is_closing():
                break
            await asyncio.sleep(0.05)
        await response.write_eof()
        return response


def _restarted(pod: dict[str, Any], container: str) -> bool:
    """Whether `container` has a previous (terminated) instance, i.e. restarted."""
    status = pod.get("status") or {}
    return any(
        s.get("name") == container and int(s.get("restartCount") or 0) > 0
        for key in ("containerStatuses", "initContainerStatuses")
        for s in status.get(key) or []
    )


def access_review(body: Any) -> dict[str, Any]:
    """Answer a SelfSubject{Access,Rules}Review: the sandbox allows everything."""
    review = dict(body) if isinstance(body, dict) else {}
    review.setdefault("metadata", {}).setdefault("creationTimestamp", None)
    if review.get("kind") == "SelfSubjectRulesReview":
        review["status"] = {
            "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
            "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
            "incomplete": False,
        }
    else:
        review["status"] = {"allowed": True, "reason": "the sandbox authorizes every request"}
    return review


async def _run_gc(server: SandboxServer) -> None:
    await server.gc.run()
