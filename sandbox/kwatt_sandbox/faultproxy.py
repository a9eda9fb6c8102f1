"""The fault proxy: a reverse proxy on 127.0.0.1 in front of the sandbox's kube-apiserver
that injects API faults (errors, 409 storms, slow answers, dropped or expired watches).

Part of the sandbox cluster, a test and demo harness; production is a real cluster and
has no such proxy. The real API server cannot be told to fail on request, so every
client of the sandbox talks to this proxy instead. It terminates TLS with its own
certificate and forwards over a second TLS connection that presents the front-proxy
client certificate, passing the caller's identity in `X-Remote-User`/`X-Remote-Group`
headers (Kubernetes' request-header authentication); the API server still authenticates
tokens and authorizes everything itself. `/sandbox/faults` on the proxy is the control
endpoint through which tests outside this process add faults.
"""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from kwatt_sandbox.controlplane.pki import LOOPBACK, ClusterPki
from kwatt_sandbox.faults import Faults, RequestTarget, Rule

log = logging.getLogger(__name__)

CONTROL_PATH = "/sandbox/faults"
DROP_OPEN_WATCHES_PATH = "/sandbox/faults/drop-open-watches"
MASTERS = "system:masters"
MAX_CONTROL_BODY = 64 * 1024
# Above the API server's own 3 MiB request limit, so that it is the one that says no.
MAX_FORWARD_BODY = 16 * 1024 * 1024
CONNECT_TIMEOUT = 10.0
WATCH_POLL = 0.05  # how often an open watch looks for drop_open_watches
SHUTDOWN_GRACE = 1.0
# Long label selectors and Warning headers exceed aiohttp's default 8 KiB lines.
MAX_HEADER_LINE = 64 * 1024

# Hop-by-hop headers (RFC 9110 7.6.1) plus the ones this proxy sets itself.
_HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "host",
        "content-length",
        "expect",
    }
)
_IDENTITY_PREFIX = "x-remote-"
# Without these, aiohttp would add its own User-Agent, Accept-Encoding and Content-Type,
# and the API server could answer gzip to a client that never asked for it.
_SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept-Encoding", "Content-Type"})

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    501: "NotImplemented",
    503: "ServiceUnavailable",
    504: "Timeout",
}

# --- request attributes, as kube-apiserver's RequestInfo derives them ---------------------

_SPECIAL_VERBS = ("proxy", "watch")
_NAMESPACE_SUBRESOURCES = ("status", "finalize")
_METHOD_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


def _query_flag(value: str | None) -> bool:
    """A boolean query parameter the way the API server reads one."""
    return value is not None and value not in ("", "0") and value.lower() != "false"


def _name_from_field_selector(selector: str) -> str:
    """The object a list or watch is limited to by `metadata.name=NAME`, else ""."""
    for term in selector.split(","):
        if "!=" in term:
            continue
        field, sep, value = term.partition("==") if "==" in term else term.partition("=")
        if sep and field.strip() == "metadata.name":
            value = value.strip()
            if value not in ("", ".", "..") and "/" not in value and "%" not in value:
                return value
    return ""


def request_target(method: str, path: str, query: Mapping[str, str]) -> RequestTarget:
    """What a request acts on, parsed like the API server's RequestInfo so that fault
    rules match the same verbs and resources as the audit log and RBAC do."""
    trimmed = path.strip("/")
    parts = trimmed.split("/") if trimmed else []
    non_resource = RequestTarget(method.lower(), "", "", "", "", "")
    if len(parts) < 3 or parts[0] not in ("api", "apis"):
        return non_resource
    rest = parts[1:]
    group = ""
    if parts[0] == "apis":
        if len(rest) < 3:
            return non_resource
        group, rest = rest[0], rest[1:]
    rest = rest[1:]  # the version
    if rest[0] in _SPECIAL_VERBS:
        if len(rest) < 2:
            return non_resource
        verb, rest = rest[0], rest[1:]
    else:
        verb = _METHOD_VERBS.get(method.upper(), method.lower())
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 and verb != "proxy" else ""
    if not name and verb == "get":
        verb = "watch" if _query_flag(query.get("watch")) else "list"
        name = _name_from_field_selector(query.get("fieldSelector", ""))
    if not name and verb == "delete":
        verb = "deletecollection"
    return RequestTarget(verb, group, resource, subresource, namespace, name)


# --- identity ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Identity:
    """A client certificate's user (its CN) and groups (its O values), as Kubernetes reads
    them."""

    user: str
    groups: tuple[str, ...]


def peer_identity(request: web.BaseRequest) -> Identity | None:
    """The identity of a client that presented a certificate the cluster CA signed; the
    TLS layer has already verified it (CERT_OPTIONAL), so its presence is the proof."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return None
    user = ""
    groups: list[str] = []
    for rdn in cert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                user = value  # the last CN wins, as in Go's pkix.Name
            elif key == "organizationName":
                groups.append(value)
    return Identity(user, tuple(groups)) if user else None


def _connection_tokens(headers: CIMultiDictProxy[str]) -> set[str]:
    tokens: set[str] = set()
    for value in headers.getall("Connection", ()):
        tokens.update(t.strip().lower() for t in value.split(",") if t.strip())
    return tokens


def _is_hop_by_hop(key: str, connection_tokens: set[str]) -> bool:
    lower = key.lower()
    return lower in _HOP_BY_HOP or lower.startswith("proxy-") or lower in connection_tokens


def upstream_headers(request: web.BaseRequest, identity: Identity | None) -> CIMultiDict[str]:
    """The headers to send upstream: the client's, minus hop-by-hop and any identity
    the client claims for itself, plus the identity its certificate proves."""
    tokens = _connection_tokens(request.headers)
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in request.headers.items():
        if _is_hop_by_hop(key, tokens) or key.lower().startswith(_IDENTITY_PREFIX):
            continue
        headers.add(key, value)
    if identity is not None:
        headers.add("X-Remote-User", identity.user)
        for group in identity.groups:
            headers.add("X-Remote-Group", group)
    return headers


def _response_headers(upstream: aiohttp.ClientResponse, *, keep_length: bool) -> CIMultiDict[str]:
    tokens = _connection_tokens(upstream.headers)
    headers: CIMultiDict[str] = CIMultiDict()
    for key, value in upstream.headers.items():
        kept_length = keep_length and key.lower() == "content-length"
        if kept_length or not _is_hop_by_hop(key, tokens):
            headers.add(key, value)
    return headers


# --- Status bodies -----------------------------------------------------------------------


def status_body(code: int, message: str, reason: str = "") -> dict[str, Any]:
    """A `Status` object as the API server returns it with an error."""
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason or _REASONS.get(code, ""),
        "code": code,
    }
    if code == 429:
        body["details"] = {"retryAfterSeconds": 1}
    return body


def status_response(code: int, message: str, reason: str = "") -> web.Response:
    """An error answered by the proxy itself, shaped so clients handle it like the API
    server's own (client-go backs off on 429 only with Retry-After)."""
    response = web.json_response(status_body(code, message, reason), status=code)
    if code == 429:
        response.headers["Retry-After"] = "1"
    return response


def _json(body: Any, status: int = 200) -> web.Response:
    return web.json_response(body, status=status)


class _ControlError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


# --- the proxy ---------------------------------------------------------------------------


class _Stream:
    """One forwarded response in flight, so that `stop` can cut it."""

    def __init__(self, request: web.BaseRequest, upstream: aiohttp.ClientResponse) -> None:
        self.request = request
        self.upstream = upstream

    def abort(self) -> None:
        self.upstream.close()
        if self.request.transport is not None:
            self.request.transport.abort()


class FaultProxy:
    """Forwards every request to `upstream` (the API server's URL) after consulting
    `faults`; `on_control` is told of each fault a control request adds (for logging)."""

    def __init__(
        self,
        upstream: str,
        pki: ClusterPki,
        faults: Faults,
        *,
        on_control: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.upstream = upstream.rstrip("/")
        self.pki = pki
        self.faults = faults
        self.on_control = on_control
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._streams: set[_Stream] = set()
        self._closing = False

    # --- lifecycle -----------------------------------------------------------------------

    def _server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(self.pki.ca))
        context.verify_mode = ssl.CERT_OPTIONAL  # no certificate: a token, or anonymous
        context.load_cert_chain(self.pki.fault_proxy.cert, self.pki.fault_proxy.key)
        context.set_alpn_protocols(["http/1.1"])  # Go clients would otherwise try h2
        return context

    def _client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.pki.ca))
        client = self.pki.front_proxy_client
        context.load_cert_chain(client.cert, client.key)
        return context

    async def start(self, port: int = 0) -> str:
        """Listen on 127.0.0.1 only (never a wider address: it passes identities on)."""
        if self._runner is not None:
            raise RuntimeError("The fault proxy is already running.")
        self._closing = False
        self._session = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(ssl=self._client_context(), limit=0),
            # Watches and `logs -f` legitimately stream for minutes: no read timeout.
            timeout=aiohttp.ClientTimeout(
                total=None, connect=CONNECT_TIMEOUT, sock_connect=CONNECT_TIMEOUT, sock_read=None
            ),
            auto_decompress=False,  # bytes pass through as the API server encoded them
            cookie_jar=aiohttp.DummyCookieJar(),  # never carry one client's cookie to another
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
        )
        app = web.Application(client_max_size=MAX_FORWARD_BODY)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        runner = web.AppRunner(
            app,
            handler_cancellation=True,  # a client that leaves cancels its upstream request
            access_log=None,
            shutdown_timeout=SHUTDOWN_GRACE,
            auto_decompress=False,  # request bodies too pass through byte for byte
            max_line_size=MAX_HEADER_LINE,
            max_field_size=MAX_HEADER_LINE,
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, LOOPBACK, port, ssl_context=self._server_context())
            await site.start()
        except BaseException:
            await runner.cleanup()
            await self._session.close()
            self._session = None
            raise
        self._runner = runner
        self.url = f"https://{LOOPBACK}:{runner.addresses[0][1]}"
        return self.url

    async def stop(self) -> None:
        """Stop listening and cut every open stream (watches, log follows) at once."""
        self._closing = True
        for stream in list(self._streams):
            stream.abort()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        if self._session is not None:
            await self._session.close()
            self._session = None

    # --- dispatch ------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        try:
            if request.path == CONTROL_PATH or request.path.startswith(CONTROL_PATH + "/"):
                return await self._control(request)
            if "upgrade" in _connection_tokens(request.headers):
                response = status_response(
                    501,
                    "The sandbox fault proxy does not forward upgraded connections "
                    "(exec, attach, port-forward).",
                )
                response.force_close()
                return response
            return await self._forward(request)
        except _ControlError as exc:
            # aiohttp reads and discards any unread rest of a too large body (lingering
            # close), so the client gets this answer rather than a reset connection.
            return status_response(exc.code, exc.message)
        except web.HTTPRequestEntityTooLarge:
            return status_response(
                413, f"The request body is over the fault proxy's {MAX_FORWARD_BODY} bytes."
            )
        except (asyncio.CancelledError, ConnectionError):
            raise  # the client went away: nobody to answer
        except Exception as exc:
            log.exception("The fault proxy failed on %s %s.", request.method, request.path)
            return status_response(500, f"The sandbox fault proxy failed: {type(exc).__name__}.")

    # --- the control endpoint ------------------------------------------------------------

    async def _control(self, request: web.Request) -> web.StreamResponse:
        identity = peer_identity(request)
        if identity is None:
            raise _ControlError(
                401, "The fault control endpoint needs a client certificate (the admin's)."
            )
        if MASTERS not in identity.groups:
            raise _ControlError(
                403,
                f'User "{identity.user}" cannot use the fault control endpoint: '
                f"it needs the group {MASTERS}.",
            )
        path, method = request.path.rstrip("/"), request.method
        if path == CONTROL_PATH:
            if method == "GET":
                return _json({"items": [r.to_dict() for r in self.faults.rules()]})
            if method == "POST":
                body = await self._read_json(request)
                try:
                    rule = self.faults.add_from_dict(body)
                except ValueError as exc:
                    raise _ControlError(400, str(exc)) from None
                self._notify(body)
                return _json(rule.to_dict(), 201)
            if method == "DELETE":
                self.faults.clear()
                return _json({"items": []})
            raise _ControlError(405, f"{CONTROL_PATH} takes GET, POST and DELETE.")
        if path == DROP_OPEN_WATCHES_PATH:
            if method != "POST":
                raise _ControlError(405, f"{DROP_OPEN_WATCHES_PATH} takes POST.")
            resource, how = _drop_spec(await self._read_json(request))
            self.faults.drop_open_watches(resource, how)
            self._notify({"kind": "drop_open_watches", "resource": resource, "how": how})
            return _json({"resource": resource, "how": how})
        raise _ControlError(404, f"No such fault control endpoint: {request.path}.")

    async def _read_json(self, request: web.Request) -> Any:
        """The JSON body, read no further than MAX_CONTROL_BODY bytes."""
        too_large = _ControlError(
            413, f"A fault control request body must be at most {MAX_CONTROL_BODY} bytes."
        )
        if request.content_length is not None and request.content_length > MAX_CONTROL_BODY:
            raise too_large
        data = bytearray()
        while len(data) <= MAX_CONTROL_BODY:
            chunk = await request.content.read(MAX_CONTROL_BODY + 1 - len(data))
            if not chunk:
                break
            data += chunk
        if len(data) > MAX_CONTROL_BODY:
            raise too_large
        try:
            return json.loads(data)
        except (ValueError, RecursionError) as exc:
            raise _ControlError(400, f"The request body is not valid JSON: {exc}.") from None

    def _notify(self, body: dict[str, Any]) -> None:
        if self.on_control is None:
            return
        try:
            self.on_control(body)
        except Exception:
            log.exception("The fault proxy's on_control callback failed.")

    # --- forwarding ----------------------------------------------------------------------

    async def _forward(self, request: web.Request) -> web.StreamResponse:
        session = self._session
        if session is None or self._closing:
            return status_response(503, "The sandbox fault proxy is stopping.")
        identity = peer_identity(request)
        target = request_target(request.method, request.path, request.query)
        watch = target.verb == "watch"
        epoch = self.faults.drop_epoch  # drop_open_watches from now on applies to this one
        slow = self.faults.take(target, ("delay",))
        if slow is not None:
            await asyncio.sleep(slow.delay)
        fault = self.faults.take(target, ("error",))
        if fault is not None:
            return status_response(fault.code, fault.message, fault.reason)
        body = await request.read() if request.body_exists else None
        url = URL(self.upstream + request.rel_url.raw_path_qs, encoded=True)
        try:
            upstream = await session.request(
                request.method,
                url,
                headers=upstream_headers(request, identity),
                data=body,
                allow_redirects=False,
                skip_auto_headers=_SKIP_AUTO_HEADERS,
            )
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:
            log.warning("The fault proxy could not reach %s: %r", self.upstream, exc)
            return status_response(
                503,
                f"The sandbox fault proxy could not reach the API server ({type(exc).__name__}).",
            )
        stream = _Stream(request, upstream)
        self._streams.add(stream)
        complete = False
        try:
            is_watch = watch and upstream.status == 200
            response = web.StreamResponse(
                status=upstream.status,
                reason=upstream.reason,
                headers=_response_headers(upstream, keep_length=not is_watch),
            )
            await response.prepare(request)
            if is_watch:
                rule = self.faults.take(target, ("drop_watch", "gone_watch"))
                complete = await self._pump_watch(request, response, upstream, target, rule, epoch)
            else:
                complete = await self._pump(request, response, upstream)
            return response
        except BaseException:
            _abort(request)  # a cut stream must never look finished to the client
            raise
        finally:
            self._streams.discard(stream)
            if complete:
                upstream.release()
            else:
                upstream.close()  # a half-read response must not go back to the pool

    async def _pump(
        self, request: web.Request, response: web.StreamResponse, upstream: aiohttp.ClientResponse
    ) -> bool:
        """Copy the body chunk by chunk; True if the upstream body was read to its end."""
        try:
            async for chunk in upstream.content.iter_any():
                await response.write(chunk)
            await response.write_eof()
            return True
        except (aiohttp.ClientError, OSError, TimeoutError) as exc:  # incl. the client leaving
            log.debug("Stream for %s ended early: %r", request.path, exc)
            _abort(request)  # show the client a cut stream, never a clean but short one
            return False

    async def _pump_watch(
        self,
        request: web.Request,
        response: web.StreamResponse,
        upstream: aiohttp.ClientResponse,
        target: RequestTarget,
        rule: Rule | None,
        epoch: int,
    ) -> bool:
        """Copy a watch stream event by event while watching for faults; True if the
        upstream stream ended by itself."""
        encoding = upstream.headers.get("Content-Encoding", "identity").lower()
        # JSON watch events are one per line, so a 410 event can be slipped in between two;
        # other framings (protobuf) cannot take one, so "gone" drops them instead.
        lines = upstream.content_type == "application/json" and encoding == "identity"
        cut_at = time.monotonic() + rule.after if rule is not None else None
        pending = b""
        try:
            while True:
                if self._closing:
                    _abort(request)
                    return False
                if request.transport is None or request.transport.is_closing():
                    return False  # the client went away
                how = self.faults.open_watch_action(target, epoch)
                now = time.monotonic()
                if how is None and rule is not None and cut_at is not None and now >= cut_at:
                    how = "drop" if rule.kind == "drop_watch" else "gone"
                if how == "gone" and lines:
                    log.info("Fault: ending watch %s with 410 Gone.", request.path_qs)
                    await response.write(_gone_event(request.query.get("resourceVersion")))
                    await response.write_eof()
                    return False
                if how is not None:
                    log.info("Fault: dropping watch %s.", request.path_qs)
                    _abort(request)
                    return False
                wait = WATCH_POLL if cut_at is None else min(WATCH_POLL, max(cut_at - now, 0))
                try:
                    chunk = await asyncio.wait_for(upstream.content.readany(), max(wait, 0.001))
                except TimeoutError:
                    continue
                if not chunk:  # the API server ended the watch (its own timeout)
                    if pending:
                        await response.write(pending)
                    await response.write_eof()
                    return True
                if not lines:
                    await response.write(chunk)
                    continue
                complete, newline, pending = (pending + chunk).rpartition(b"\n")
                if newline:
                    await response.write(complete + newline)
        except (aiohttp.ClientError, OSError) as exc:  # incl. the client leaving
            log.debug("Watch %s ended early: %r", request.path, exc)
            _abort(request)
            return False


def _abort(request: web.BaseRequest) -> None:
    """Cut the client's connection the way a lost network would."""
    if request.transport is not None:
        request.transport.abort()


def _gone_event(resource_version: str | None) -> bytes:
    status = status_body(
        410, f"too old resource version: {resource_version or 0} (injected fault)", "Expired"
    )
    return json.dumps({"type": "ERROR", "object": status}, separators=(",", ":")).encode() + b"\n"


def _drop_spec(body: Any) -> tuple[str | None, str]:
    """The checked fields of a `drop-open-watches` request."""
    if not isinstance(body, dict):
        raise _ControlError(400, 'The body must be a JSON object, such as {"how": "drop"}.')
    for key in body:
        if key not in ("resource", "how"):
            raise _ControlError(
                400, f"Field {key[:60]!r} is unknown here: give 'resource' and 'how'."
            )
    resource = body.get("resource")
    if resource is not None and not isinstance(resource, str):
        raise _ControlError(400, "Field 'resource' must be a string or null.")
    how = body.get("how", "drop")
    if how not in ("drop", "gone"):
        raise _ControlError(400, 'Field \'how\' must be "drop" or "gone".')
    return resource, str(how)


__all__ = [
    "CONTROL_PATH",
    "DROP_OPEN_WATCHES_PATH",
    "FaultProxy",
    "Identity",
    "peer_identity",
    "request_target",
    "status_body",
    "status_response",
    "upstream_headers",
]
