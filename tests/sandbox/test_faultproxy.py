"""The sandbox's fault proxy, over real HTTPS, in front of a fake TLS API server.

The fake upstream demands the front-proxy client certificate and echoes what it got,
so these tests see exactly which identity headers cross the proxy, which faults are
answered without the API server, and how watches are cut. Self-contained (no
conftest, no pytest-asyncio): the servers run on an event loop in a background thread
and the tests are plain blocking HTTPS clients, like kubectl or kopf would be.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import re
import socket
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from aiohttp import web

from kwatt_sandbox.controlplane.pki import ADMIN_USER, ClusterPki, KeyPair, make_cluster_pki
from kwatt_sandbox.faultproxy import FaultProxy, request_target
from kwatt_sandbox.faults import Faults, RequestTarget

T = TypeVar("T")


class LoopThread:
    """An event loop in a daemon thread, for servers the blocking tests talk to."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 10.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


class FakeApiServer:
    """Answers like a tiny API server: echoes each request (with the identity headers and
    the TLS peer), streams watches as chunked JSON lines, follows logs forever."""

    def __init__(self, pki: ClusterPki) -> None:
        self.pki = pki
        self.requests: list[dict[str, Any]] = []
        self.open_streams = 0
        self.url = ""
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        context = ssl.create_default_context(
            ssl.Purpose.CLIENT_AUTH, cafile=self.pki.front_proxy_ca
        )
        context.verify_mode = ssl.CERT_REQUIRED  # only the proxy may talk to it
        context.load_cert_chain(self.pki.apiserver.cert, self.pki.apiserver.key)
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=context)
        await site.start()
        self.url = f"https://127.0.0.1:{self._runner.addresses[0][1]}"

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peercert") if request.transport else None
        subject = dict(rdn[0] for rdn in (peer or {}).get("subject", ()))
        record = {
            "method": request.method,
            "path": request.raw_path,
            "headers": [[k, v] for k, v in request.headers.items()],
            "body": (await request.read()).decode(),
            "peer": subject.get("commonName"),
        }
        self.requests.append(record)
        if request.query.get("watch") in ("true", "1") or "/watch/" in request.path:
            return await self._watch(request)
        if request.path.endswith("/log"):
            return await self._follow_log(request)
        if "missing" in request.path:
            status = {"kind": "Status", "status": "Failure", "reason": "NotFound", "code": 404}
            return web.json_response(status, status=404)
        return web.json_response(record, headers={"Audit-Id": "a-1", "Keep-Alive": "timeout=9"})

    async def _watch(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        response.enable_chunked_encoding()
        await response.prepare(request)
        ends_at = time.monotonic() + float(request.query.get("timeoutSeconds", "600"))
        cut_at = time.monotonic() + float(request.query.get("cutAfter", "600"))
        self.open_streams += 1
        try:
            i = 0
            while time.monotonic() < ends_at:
                if time.monotonic() >= cut_at and request.transport is not None:
                    request.transport.abort()  # the API server's side of the network fails
                    return response
                event = {"type": "ADDED", "object": {"metadata": {"name": f"w{i}"}}}
                line = json.dumps(event).encode() + b"\n"
                # one event in two chunks: the proxy must not cut between them
                await response.write(line[:7])
                await asyncio.sleep(0.005)
                await response.write(line[7:])
                i += 1
                await asyncio.sleep(0.03)
            await response.write_eof()
            return response
        finally:
            self.open_streams -= 1

    async def _follow_log(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "text/plain"
        await response.prepare(request)
        self.open_streams += 1
        try:
            for i in range(100_000):
                await response.write(f"log line {i}\n".encode())
                await asyncio.sleep(0.05)
            return response
        finally:
            self.open_streams -= 1

    def headers(self, index: int = -1) -> list[tuple[str, str]]:
        return [(k, v) for k, v in self.requests[index]["headers"]]

    def header_values(self, name: str, index: int = -1) -> list[str]:
        return [v for k, v in self.headers(index) if k.lower() == name.lower()]


# --- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def loop() -> Iterator[LoopThread]:
    thread = LoopThread()
    yield thread
    thread.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPki:
    return make_cluster_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def api(loop: LoopThread, pki: ClusterPki) -> Iterator[FakeApiServer]:
    server = FakeApiServer(pki)
    loop.run(server.start())
    yield server
    loop.run(server.stop())


@pytest.fixture(scope="module")
def shared_faults() -> Faults:
    return Faults()


@pytest.fixture(scope="module")
def controls() -> list[dict[str, Any]]:
    return []


@pytest.fixture(scope="module")
def proxy(
    loop: LoopThread,
    api: FakeApiServer,
    pki: ClusterPki,
    shared_faults: Faults,
    controls: list[dict[str, Any]],
) -> Iterator[FaultProxy]:
    fault_proxy = FaultProxy(api.url, pki, shared_faults, on_control=controls.append)
    loop.run(fault_proxy.start())
    yield fault_proxy
    loop.run(fault_proxy.stop())


@pytest.fixture
def faults(
    shared_faults: Faults, api: FakeApiServer, controls: list[dict[str, Any]]
) -> Iterator[Faults]:
    shared_faults.clear()
    api.requests.clear()
    controls.clear()
    yield shared_faults
    shared_faults.clear()


# --- blocking HTTPS clients -----------------------------------------------------------------


def _connection(
    url: str, pki: ClusterPki, cert: KeyPair | None, timeout: float = 5.0
) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=pki.ca)
    if cert is not None:
        context.load_cert_chain(cert.cert, cert.key)
    port = int(url.rsplit(":", 1)[1])
    return http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=timeout)


def call(
    proxy: FaultProxy,
    pki: ClusterPki,
    method: str,
    path: str,
    *,
    cert: KeyPair | None = None,
    headers: dict[str, str] | None = None,
    body: bytes | None = None,
) -> tuple[int, http.client.HTTPMessage, bytes]:
    conn = _connection(proxy.url, pki, cert)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, response.headers, response.read()
    finally:
        conn.close()


def call_json(*args: Any, **kwargs: Any) -> tuple[int, Any]:
    status, _, body = call(*args, **kwargs)
    return status, json.loads(body)


class Watch:
    """A watch opened through the proxy, read line by line."""

    def __init__(self, proxy: FaultProxy, pki: ClusterPki, path: str) -> None:
        self.conn = _connection(proxy.url, pki, pki.admin)
        self.conn.request("GET", path)
        self.response = self.conn.getresponse()
        assert self.response.status == 200
        self.buffer = b""
        self.ended_cleanly: bool | None = None  # None while the stream is open

    def _line(self) -> bytes:
        """The next line, b"" at the end. http.client's own readline cannot tell a cut
        chunked stream from a finished one, but read1 raises IncompleteRead on a cut."""
        while b"\n" not in self.buffer and self.ended_cleanly is None:
            try:
                chunk = self.response.read1(65536)
            except (http.client.IncompleteRead, ConnectionError, ssl.SSLError):
                self.ended_cleanly = False
                break
            if not chunk:
                self.ended_cleanly = True
            self.buffer += chunk
        line, newline, self.buffer = self.buffer.partition(b"\n")
        return line + newline

    def event(self) -> dict[str, Any]:
        line = self._line()
        assert line.endswith(b"\n"), line
        event: dict[str, Any] = json.loads(line)
        return event

    def rest(self) -> tuple[list[dict[str, Any]], bool]:
        """The remaining events, and whether the stream ended cleanly (not cut)."""
        events = []
        while line := self._line():
            assert line.endswith(b"\n"), line  # never half an event
            events.append(json.loads(line))
        return events, bool(self.ended_cleanly)

    def close(self) -> None:
        self.conn.close()


def eventually(predicate: Any, timeout: float = 3.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


WIDGETS = "/apis/kwatt.dev/v1/namespaces/default/widgets"
PODS = "/api/v1/namespaces/default/pods"


# --- identity -------------------------------------------------------------------------------


def test_certificate_identity_crosses_as_request_headers(
    proxy: FaultProxy, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    status, headers, body = call(proxy, pki, "GET", PODS + "?limit=5", cert=pki.admin)
    assert status == 200
    assert api.header_values("X-Remote-User") == [ADMIN_USER]
    assert api.header_values("X-Remote-Group") == ["system:masters"]
    record = json.loads(body)
    assert record["peer"] == "front-proxy-client"
    assert record["path"] == PODS + "?limit=5"
    assert api.header_values("Host") == [api.url.removeprefix("https://")]
    assert headers["Audit-Id"] == "a-1"
    assert headers["Keep-Alive"] is None  # hop-by-hop: not passed back


def test_every_organization_becomes_a_group_and_claims_are_replaced(
    proxy: FaultProxy, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    alice = pki._authority.issue("alice", "alice", organizations=("team-a", "team-b"), client=True)
    claims = {"X-Remote-User": "system:admin", "x-remote-group": "system:masters"}
    status, _, _ = call(proxy, pki, "GET", PODS, cert=alice, headers=claims)
    assert status == 200
    assert api.header_values("X-Remote-User") == ["alice"]
    assert api.header_values("X-Remote-Group") == ["team-a", "team-b"]


def test_a_certificate_from_another_authority_is_refused(
    proxy: FaultProxy, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    # The front-proxy client certificate is what the API server believes X-Remote-* from;
    # the proxy must not accept it (or anything not signed by the cluster CA) from a client.
    with pytest.raises((ssl.SSLError, ConnectionError)):
        call(proxy, pki, "GET", PODS, cert=pki.front_proxy_client)
    assert api.requests == []


def test_without_a_certificate_no_identity_is_claimed_and_tokens_pass(
    proxy: FaultProxy, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    headers = {
        "X-Remote-User": "system:admin",
        "x-remote-group": "system:masters",
        "X-REMOTE-EXTRA-scopes": "everything",
        "Authorization": "Bearer sa-token",
        "Impersonate-User": "bob",
        "Proxy-Authorization": "Basic c2VjcmV0",
        "Connection": "X-Hop-Token",
        "X-Hop-Token": "hop",
        "X-Kept": "kept",
    }
    status, _, _ = call(proxy, pki, "GET", PODS, headers=headers)
    assert status == 200
    names = {k.lower() for k, _ in api.headers()}
    assert not any(n.startswith("x-remote-") for n in names)
    assert {"proxy-authorization", "x-hop-token", "connection"}.isdisjoint(names)
    assert api.header_values("Authorization") == ["Bearer sa-token"]
    assert api.header_values("Impersonate-User") == ["bob"]
    assert api.header_values("X-Kept") == ["kept"]


def test_bodies_and_upstream_errors_pass_through(
    proxy: FaultProxy, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    obj = json.dumps({"metadata": {"name": "cm"}}).encode()
    json_type = {"Content-Type": "application/json"}
    status, record = call_json(
        proxy, pki, "POST", "/api/v1/namespaces/default/configmaps", body=obj, headers=json_type
    )
    assert status == 200
    assert record["body"] == obj.decode()
    assert api.header_values("Content-Length") == [str(len(obj))]
    status, body = call_json(proxy, pki, "GET", "/api/v1/namespaces/default/configmaps/missing")
    assert (status, body["reason"]) == (404, "NotFound")
    odd = PODS + "/a%2Fb?labelSelector=app+in+%28a%2Cb%29&fieldSelector=x%3Dy"
    status, record = call_json(proxy, pki, "GET", odd)
    assert record["path"] == odd  # not re-encoded on the way
    eviction = PODS + "/p/eviction"
    assert call(proxy, pki, "POST", eviction, headers={"Content-Length": "0"})[0] == 200
    assert api.header_values("Content-Length") == ["0"]


def test_upgrade_requests_are_refused(
    proxy: FaultProxy, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    headers = {"Connection": "Upgrade", "Upgrade": "SPDY/3.1"}
    status, body = call_json(
        proxy, pki, "POST", PODS + "/p/exec?command=sh", cert=pki.admin, headers=headers
    )
    assert status == 501
    assert body["kind"] == "Status" and body["code"] == 501
    assert api.requests == []


# --- request faults ------------------------------------------------------------------------------


def test_error_rule_answers_without_the_api_server_until_used_up(
    proxy: FaultProxy, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    rule = faults.error(503, verb="list", resource="pods", count=1)
    assert call(proxy, pki, "GET", PODS + "/p1", cert=pki.admin)[0] == 200  # a get: no match
    status, body = call_json(proxy, pki, "GET", PODS, cert=pki.admin)
    assert status == 503
    assert body == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": body["message"],
        "reason": "ServiceUnavailable",
        "code": 503,
    }
    assert len(api.requests) == 1
    assert call(proxy, pki, "GET", PODS, cert=pki.admin)[0] == 200
    assert rule.hits == 1


def test_too_many_requests_carries_retry_after(
    proxy: FaultProxy, pki: ClusterPki, faults: Faults
) -> None:
    faults.error(429, resource="pods")
    status, headers, body = call(proxy, pki, "GET", PODS)
    assert (status, headers["Retry-After"]) == (429, "1")
    assert json.loads(body)["reason"] == "TooManyRequests"


def test_conflicts_hit_only_writes(
    proxy: FaultProxy, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    faults.conflicts("widgets.kwatt.dev", count=2)
    w1 = WIDGETS + "/w1"
    assert call(proxy, pki, "GET", w1, cert=pki.admin)[0] == 200
    status, body = call_json(proxy, pki, "PUT", w1, cert=pki.admin, body=b"{}")
    assert (status, body["reason"]) == (409, "Conflict")
    headers = {"Content-Type": "application/merge-patch+json"}
    assert call(proxy, pki, "PATCH", w1 + "/status", body=b"{}", headers=headers)[0] == 409
    assert call(proxy, pki, "PUT", w1, cert=pki.admin, body=b"{}")[0] == 200
    assert [r["method"] for r in api.requests] == ["GET", "PUT"]


def test_slow_rule_delays_then_forwards(
    proxy: FaultProxy, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    faults.slow(0.3, resource="pods", count=1)
    started = time.monotonic()
    assert call(proxy, pki, "GET", PODS)[0] == 200
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    assert call(proxy, pki, "GET", PODS)[0] == 200
    assert time.monotonic() - started < 0.3
    assert len(api.requests) == 2


def test_non_resource_paths_are_forwarded_and_untouched_by_resource_rules(
    proxy: FaultProxy, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    faults.error(500, resource="pods", count=None, ttl=5)
    assert call(proxy, pki, "GET", "/version")[0] == 200
    assert call(proxy, pki, "GET", "/apis/kwatt.dev/v1")[0] == 200
    assert [r["path"] for r in api.requests] == ["/version", "/apis/kwatt.dev/v1"]


def test_a_failing_fault_engine_answers_a_status_without_traceback(
    proxy: FaultProxy, pki: ClusterPki, faults: Faults, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any) -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(faults, "take", broken)
    status, _, body = call(proxy, pki, "GET", PODS)
    assert status == 500
    assert json.loads(body)["reason"] == "InternalError"
    assert b"Traceback" not in body and b"secret" not in body


# --- watches -------------------------------------------------------------------------------------


def test_watch_streams_whole_event_lines_and_ends_cleanly(
    proxy: FaultProxy, pki: ClusterPki, faults: Faults
) -> None:
    watch = Watch(proxy, pki, WIDGETS + "?watch=true&timeoutSeconds=0.3")
    try:
        assert watch.event()["object"]["metadata"]["name"] == "w0"
        events, clean = watch.rest()
    finally:
        watch.close()
    assert clean and len(events) >= 2
    assert all(e["type"] == "ADDED" for e in events)


def test_a_watch_the_api_server_cuts_stays_cut(
    proxy: FaultProxy, pki: ClusterPki, faults: Faults
) -> None:
    watch = Watch(proxy, pki, WIDGETS + "?watch=true&cutAfter=0.15")
    try:
        events, clean = watch.rest()
    finally:
        watch.close()
    assert events and not clean  # not a clean end the client would take for a timeout


def test_drop_watch_cuts_the_stream_after_a_while(
    proxy: FaultProxy, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    faults.drop_watches(resource="widgets", after=0.3)
    started = time.monotonic()
    watch = Watch(proxy, pki, WIDGETS + "?watch=true")
    try:
        events, clean = watch.rest()
    finally:
        watch.close()
    assert not clean
    assert 0.3 <= time.monotonic() - started < 2.0
    assert events and all(e["type"] == "ADDED" for e in events)
    eventually(lambda: api.open_streams == 0 and not proxy._streams)


def test_gone_watch_ends_with_a_410_event(
    proxy: FaultProxy, pki: ClusterPki, faults: Faults
) -> None:
    faults.expire_watches(resource="widgets", after=0.2)
    watch = Watch(proxy, pki, WIDGETS + "?watch=true&resourceVersion=42")
    try:
        events, clean = watch.rest()
    finally:
        watch.close()
    assert clean
    last = events[-1]
    assert last["type"] == "ERROR"
    assert (last["object"]["code"], last["object"]["reason"]) == (410, "Expired")
    assert "too old resource version: 42" in last["object"]["message"]
    assert len(events) > 1 and all(e["type"] == "ADDED" for e in events[:-1])
    second = Watch(proxy, pki, WIDGETS + "?watch=true")  # the one count is used up
    try:
        assert second.event()["type"] == "ADDED"
        assert second.event()["type"] == "ADDED"
    finally:
        second.close()


def test_drop_open_watches_acts_on_the_open_ones_only(
    proxy: FaultProxy, pki: ClusterPki, faults: Faults
) -> None:
    widgets = Watch(proxy, pki, WIDGETS + "?watch=true")
    pods = Watch(proxy, pki, "/api/v1/watch/namespaces/default/pods")
    try:
        widgets.event()
        pods.event()
        faults.drop_open_watches("widgets", how="gone")
        events, clean = widgets.rest()
        assert clean and events[-1]["type"] == "ERROR"
        assert events[-1]["object"]["code"] == 410
        assert pods.event()["type"] == "ADDED"  # another resource: still open
        faults.drop_open_watches()
        assert pods.rest()[1] is False
        later = Watch(proxy, pki, PODS + "?watch=1")  # opened afterwards: unaffected
        try:
            later.event()
            time.sleep(0.15)
            assert later.event()["type"] == "ADDED"
        finally:
            later.close()
    finally:
        widgets.close()
        pods.close()


def test_a_client_leaving_a_stream_releases_the_upstream(
    proxy: FaultProxy, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    watch = Watch(proxy, pki, WIDGETS + "?watch=true")
    logs = _connection(proxy.url, pki, pki.admin)
    logs.request("GET", PODS + "/p1/log?follow=true")
    follow = logs.getresponse()
    assert follow.readline() == b"log line 0\n"  # streamed before the end, which never comes
    watch.event()
    eventually(lambda: api.open_streams == 2)
    watch.close()
    logs.close()
    eventually(lambda: api.open_streams == 0 and not proxy._streams)


# --- the control endpoint ----------------------------------------------------------------------


def test_control_endpoint_needs_a_masters_certificate(
    proxy: FaultProxy, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    spec = json.dumps({"kind": "error", "code": 500}).encode()
    status, body = call_json(proxy, pki, "POST", "/sandbox/faults", body=spec)
    assert (status, body["reason"]) == (401, "Unauthorized")
    bearer = {"Authorization": "Bearer sa-token"}
    assert call(proxy, pki, "GET", "/sandbox/faults", headers=bearer)[0] == 401
    node_client, _ = pki.node("n1")
    status, body = call_json(proxy, pki, "POST", "/sandbox/faults", cert=node_client, body=spec)
    assert (status, body["reason"]) == (403, "Forbidden")
    assert "system:node:n1" in body["message"]
    assert faults.rules() == [] and api.requests == []


@pytest.mark.parametrize(
    ("body", "code", "words"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"kind": "error", "code": "500"}).encode(), 400, "'code'"),
        (json.dumps({"kind": "slow", "delay": -1}).encode(), 400, "'delay'"),
        (b"[" * 5000 + b"]" * 5000, 400, "not valid JSON"),
        (json.dumps({"message": "x" * 70_000}).encode(), 413, "65536 bytes"),
    ],
)
def test_control_endpoint_rejects_bad_bodies(
    proxy: FaultProxy, pki: ClusterPki, faults: Faults, body: bytes, code: int, words: str
) -> None:
    status, reply = call_json(proxy, pki, "POST", "/sandbox/faults", cert=pki.admin, body=body)
    assert (status, reply["kind"], reply["code"]) == (code, "Status", code)
    assert words in reply["message"]
    assert faults.rules() == []


def test_control_endpoint_adds_lists_and_clears_faults(
    proxy: FaultProxy,
    pki: ClusterPki,
    api: FakeApiServer,
    faults: Faults,
    controls: list[dict[str, Any]],
) -> None:
    spec = {"kind": "error", "code": 500, "resource": "pods", "verb": "list", "count": 1}
    status, rule = call_json(
        proxy, pki, "POST", "/sandbox/faults", cert=pki.admin, body=json.dumps(spec).encode()
    )
    assert status == 201 and rule["kind"] == "error" and rule["remaining"] == 1
    assert controls == [spec]
    faults.conflicts("widgets")  # a rule with extras must list as JSON too
    status, listed = call_json(proxy, pki, "GET", "/sandbox/faults", cert=pki.admin)
    assert status == 200 and [r["kind"] for r in listed["items"]] == ["error", "error"]
    status, body = call_json(proxy, pki, "GET", PODS)
    assert (status, body["reason"]) == (500, "InternalError")
    assert call(proxy, pki, "DELETE", "/sandbox/faults", cert=pki.admin)[0] == 200
    assert faults.rules() == []
    assert api.requests == []  # neither the control requests nor the faulted one went on


def test_control_endpoint_drops_open_watches(
    proxy: FaultProxy, pki: ClusterPki, faults: Faults, controls: list[dict[str, Any]]
) -> None:
    path = "/sandbox/faults/drop-open-watches"
    bad = json.dumps({"resource": "widgets", "how": "sideways"}).encode()
    status, body = call_json(proxy, pki, "POST", path, cert=pki.admin, body=bad)
    assert status == 400 and "'how'" in body["message"]
    watch = Watch(proxy, pki, WIDGETS + "?watch=true")
    try:
        watch.event()
        good = json.dumps({"resource": "widgets", "how": "drop"}).encode()
        assert call(proxy, pki, "POST", path, cert=pki.admin, body=good)[0] == 200
        assert watch.rest()[1] is False
    finally:
        watch.close()
    assert controls == [{"kind": "drop_open_watches", "resource": "widgets", "how": "drop"}]


# --- lifecycle -----------------------------------------------------------------------------------


def test_proxy_listens_on_loopback_only(proxy: FaultProxy) -> None:
    assert proxy.url.startswith("https://127.0.0.1:")
    port = int(proxy.url.rsplit(":", 1)[1])
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", port), timeout=2).close()


def test_an_unreachable_api_server_is_a_503(
    loop: LoopThread, pki: ClusterPki, faults: Faults
) -> None:
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        dead_port = probe.getsockname()[1]
    lonely = FaultProxy(f"https://127.0.0.1:{dead_port}", pki, faults)
    loop.run(lonely.start())
    try:
        status, body = call_json(lonely, pki, "GET", PODS)
    finally:
        loop.run(lonely.stop())
    assert (status, body["reason"]) == (503, "ServiceUnavailable")


def test_stop_cuts_open_streams(
    loop: LoopThread, pki: ClusterPki, api: FakeApiServer, faults: Faults
) -> None:
    second = FaultProxy(api.url, pki, faults)
    loop.run(second.start())
    watch = Watch(second, pki, WIDGETS + "?watch=true")
    try:
        watch.event()
        started = time.monotonic()
        loop.run(second.stop())
        assert time.monotonic() - started < 3.0
        assert watch.rest()[1] is False
    finally:
        watch.close()
    eventually(lambda: api.open_streams == 0)


# --- request attributes ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("method", "path", "query", "expected"),
    [
        ("GET", "/api/v1/pods", {}, ("list", "", "pods", "", "", "")),
        ("HEAD", "/api/v1/pods", {}, ("list", "", "pods", "", "", "")),
        ("GET", PODS, {"watch": "true"}, ("watch", "", "pods", "", "default", "")),
        ("GET", PODS, {"watch": "false"}, ("list", "", "pods", "", "default", "")),
        ("GET", PODS, {"watch": "1"}, ("watch", "", "pods", "", "default", "")),
        ("GET", "/api/v1/watch/namespaces/d/pods", {}, ("watch", "", "pods", "", "d", "")),
        ("GET", "/api/v1/watch/namespaces/d/pods/p", {}, ("watch", "", "pods", "", "d", "p")),
        ("GET", PODS + "/p", {"watch": "true"}, ("get", "", "pods", "", "default", "p")),
        (
            "GET",
            PODS,
            {"watch": "true", "fieldSelector": "metadata.name=p"},
            ("watch", "", "pods", "", "default", "p"),
        ),
        ("GET", PODS + "/p/log", {}, ("get", "", "pods", "log", "default", "p")),
        ("POST", PODS, {}, ("create", "", "pods", "", "default", "")),
        ("DELETE", PODS, {}, ("deletecollection", "", "pods", "", "default", "")),
        ("DELETE", "/api/v1/nodes/n1", {}, ("delete", "", "nodes", "", "", "n1")),
        (
            "PUT",
            WIDGETS + "/w/status",
            {},
            ("update", "kwatt.dev", "widgets", "status", "default", "w"),
        ),
        (
            "PATCH",
            "/apis/batch/v1/namespaces/d/jobs/j",
            {},
            ("patch", "batch", "jobs", "", "d", "j"),
        ),
        ("GET", "/api/v1/namespaces", {}, ("list", "", "namespaces", "", "", "")),
        ("GET", "/api/v1/namespaces/d", {}, ("get", "", "namespaces", "", "d", "d")),
        (
            "PUT",
            "/api/v1/namespaces/d/finalize",
            {},
            ("update", "", "namespaces", "finalize", "d", "d"),
        ),
        (
            "GET",
            "/api/v1/namespaces/d/services/s/proxy/a/b",
            {},
            ("get", "", "services", "proxy", "d", "s"),
        ),
        (
            "GET",
            "/api/v1/proxy/namespaces/d/services/s/x",
            {},
            ("proxy", "", "services", "", "d", "s"),
        ),
        ("GET", "/version", {}, ("get", "", "", "", "", "")),
        ("GET", "/apis/apps/v1", {}, ("get", "", "", "", "", "")),
        ("GET", "/api/v1", {}, ("get", "", "", "", "", "")),
        ("POST", "/openapi/v3", {}, ("post", "", "", "", "", "")),
    ],
)
def test_request_target_follows_request_info(
    method: str, path: str, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    assert request_target(method, path, query) == RequestTarget(*expected)


# --- Faults.add_from_dict -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ([], "JSON object"),
        ({"kind": "explode"}, "'kind'"),
        ({"kind": 3}, "'kind'"),
        ({"code": "500"}, "'code'"),
        ({"code": 200}, "'code'"),
        ({"code": 600}, "'code'"),
        ({"code": True}, "'code'"),
        ({"code": 500.0}, "'code'"),
        ({"count": 0}, "'count'"),
        ({"count": -1}, "'count'"),
        ({"count": 1.5}, "'count'"),
        ({"count": True}, "'count'"),
        ({"count": "2"}, "'count'"),
        ({"count": None}, "'ttl'"),
        ({"ttl": -1}, "'ttl'"),
        ({"ttl": float("nan")}, "'ttl'"),
        ({"ttl": float("inf")}, "'ttl'"),
        ({"ttl": 10**400}, "'ttl'"),
        ({"ttl": "5"}, "'ttl'"),
        ({"ttl": False}, "'ttl'"),
        ({"kind": "slow", "delay": -0.1}, "'delay'"),
        ({"kind": "slow", "delay": None}, "'delay'"),
        ({"kind": "drop_watch", "after": "soon"}, "'after'"),
        ({"kind": "gone_watch", "after": float("inf")}, "'after'"),
        ({"verb": 1}, "'verb'"),
        ({"resource": ["pods"]}, "'resource'"),
        ({"namespace": {}}, "'namespace'"),
        ({"name": 5}, "'name'"),
        ({"message": 7}, "'message'"),
        ({"reason": 7}, "'reason'"),
        ({"kind": "kill_container", "container": 5}, "'container'"),
        ({"kind": "kill_container", "name": "a", "pod": "b"}, "'pod'"),
        ({"kind": "conflicts"}, "'resource'"),
        ({"kind": "conflicts", "resource": None}, "'resource'"),
        ({"kind": "stop_heartbeat"}, "'node'"),
        ({"kind": "stop_heartbeat", "node": 1}, "'node'"),
        ({"kind": "stop_heartbeat", "node": "n1", "ttl": None}, "'ttl'"),
        ({"kind": "drop_watch", "verb": "get"}, "'verb'"),
        ({"kind": "error", "delay": 1}, "'delay'"),
        ({"cuont": 1}, "'cuont'"),
    ],
)
def test_add_from_dict_rejects_bad_fields(spec: Any, field: str) -> None:
    faults = Faults()
    with pytest.raises(ValueError, match=re.escape(field)):
        faults.add_from_dict(spec)
    assert faults.rules() == []


def test_add_from_dict_builds_each_kind() -> None:
    faults = Faults()
    error = faults.add_from_dict({"code": 503, "resource": "pods", "ttl": 5, "count": None})
    assert (error.kind, error.code, error.remaining) == ("error", 503, None)
    conflict = faults.add_from_dict({"kind": "conflicts", "resource": "widgets", "count": 2})
    assert (conflict.code, conflict.extra["verbs"]) == (409, ("update", "patch"))
    slow = faults.add_from_dict({"kind": "slow", "delay": 0.5, "verb": "list"})
    assert (slow.kind, slow.delay) == ("delay", 0.5)
    drop = faults.add_from_dict({"kind": "drop_watch", "resource": "pods", "after": 2})
    assert (drop.kind, drop.after, drop.match.verb) == ("drop_watch", 2.0, "watch")
    gone = faults.add_from_dict({"kind": "gone_watch"})
    assert gone.kind == "gone_watch"
    kill = faults.add_from_dict({"kind": "kill_container", "pod": "p", "container": "main"})
    assert (kill.match.name, kill.extra["container"]) == ("p", "main")
    beat = faults.add_from_dict({"kind": "stop_heartbeat", "node": "n1"})
    assert (beat.kind, beat.remaining, beat.expires is not None) == ("stop_heartbeat", None, True)
    assert len(faults.rules()) == 7
    json.dumps([r.to_dict() for r in faults.rules()])


def test_stop_heartbeat_is_counted_or_timed() -> None:
    faults = Faults()
    faults.stop_heartbeat("n1", count=2, ttl=None)
    assert [faults.take_heartbeat_stop("n1") for _ in range(3)] == [True, True, False]
    timed = faults.stop_heartbeat("n2", ttl=0.2)
    assert faults.take_heartbeat_stop("n1") is False
    assert all(faults.take_heartbeat_stop("n2") for _ in range(5))
    assert (timed.remaining, timed.hits) == (None, 5)
    time.sleep(0.25)
    assert faults.take_heartbeat_stop("n2") is False
    with pytest.raises(ValueError, match="'ttl'"):
        faults.stop_heartbeat("n3", ttl=None)
