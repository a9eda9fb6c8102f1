"""The node agent's /containerLogs server over real mutual TLS, and its log file format.

Self-contained (no conftest): the server runs on an event loop in a background thread,
and the tests speak HTTPS to it with http.client and the sandbox's own certificates.
"""

from __future__ import annotations

import asyncio
import datetime
import http.client
import json
import socket
import ssl
import threading
import time
from collections.abc import Coroutine, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import pytest

from kwatt_sandbox.controlplane.pki import ClusterPki, KeyPair, make_cluster_pki
from kwatt_sandbox.nodes.logserver import (
    ContainerLog,
    LogServer,
    append_log,
    format_time,
    log_text,
    parse_time,
    read_log,
    read_records,
)

pytestmark = pytest.mark.timeout(30)
T = TypeVar("T")
UTC = datetime.UTC


class Loop:
    """An event loop in a background thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout=10)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(timeout=5)
        self.loop.close()


@dataclass
class Node:
    """A running LogServer and the containers its lookup knows."""

    server: LogServer
    pki: ClusterPki
    port: int
    logs: dict[tuple[str, str, str], ContainerLog] = field(default_factory=dict)

    def request(
        self, path: str, client: KeyPair | None = None, timeout: float = 5.0
    ) -> tuple[int, str, str]:
        """(status, content type, body) of a GET, as the apiserver's kubelet client."""
        conn = self.connect(client, timeout)
        try:
            conn.request("GET", path)
            response = conn.getresponse()
            return response.status, response.getheader("Content-Type", ""), response.read().decode()
        finally:
            conn.close()

    def connect(
        self, client: KeyPair | None = None, timeout: float = 5.0
    ) -> http.client.HTTPSConnection:
        context = ssl.create_default_context(cafile=str(self.pki.ca))
        client = client or self.pki.apiserver_kubelet_client
        context.load_cert_chain(client.cert, client.key)
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=context, timeout=timeout)


@pytest.fixture(scope="module")
def loop() -> Iterator[Loop]:
    background = Loop()
    yield background
    background.close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> ClusterPki:
    return make_cluster_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def node(loop: Loop, pki: ClusterPki) -> Iterator[Node]:
    logs: dict[tuple[str, str, str], ContainerLog] = {}
    _client, serving = pki.node("node-a")
    server = LogServer(serving, pki.ca, lambda ns, pod, c: logs.get((ns, pod, c)))
    port = loop.run(server.start())
    yield Node(server, pki, port, logs)
    loop.run(server.stop())


def at(seconds_ago: float) -> datetime.datetime:
    return datetime.datetime.now(UTC) - datetime.timedelta(seconds=seconds_ago)


@pytest.fixture
def sample(tmp_path: Path, node: Node) -> Path:
    """Pod ns/p, container c: four lines over 100 s, one on stderr, one in two records."""
    path = tmp_path / "c.log"
    append_log(path, "one\n", at(100))
    append_log(path, "two\n", at(50), stream="stderr")
    append_log(path, "three\nfo", at(20))
    append_log(path, "ur\n", at(2))
    node.logs[("ns", "p", "c")] = ContainerLog(current=path, previous=None, running=lambda: False)
    return path


# --- the file format ---------------------------------------------------------------


def test_append_log_writes_one_record_per_line(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    when = datetime.datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    append_log(path, "a\nb\n\nc", when)
    append_log(path, "\r", when)  # a carriage return does not end a line
    append_log(path, "", when)  # nothing to write
    append_log(path, "d\n", when, stream="stderr")
    raw = [json.loads(line) for line in path.read_text().splitlines()]
    assert raw == [
        {"t": "2024-05-01T12:00:00.123456000Z", "s": "stdout", "log": text}
        for text in ("a\n", "b\n", "\n", "c", "\r")
    ] + [{"t": "2024-05-01T12:00:00.123456000Z", "s": "stderr", "log": "d\n"}]
    assert path.stat().st_mode & 0o777 == 0o600
    assert log_text(path) == "a\nb\n\nc\rd\n"
    stamp = "2024-05-01T12:00:00.123456000Z"
    assert read_log(path) == [(stamp, "a\n"), (stamp, "b\n"), (stamp, "\n"), (stamp, "c\rd\n")]
    assert log_text(tmp_path / "missing.log") == "" and read_log(tmp_path / "missing.log") == []
    with pytest.raises(ValueError, match="stream"):
        append_log(path, "x", stream="stdin")


def test_readers_skip_an_unfinished_or_broken_line(tmp_path: Path) -> None:
    path = tmp_path / "x.log"
    append_log(path, "ok\n")
    with path.open("a") as f:
        f.write('not json\n{"t": "2024-01-01T00:00:00Z", "s": "stdout", "log": "half')
    assert log_text(path) == "ok\n"
    assert len(read_records(path)) == 1


def test_times_round_trip() -> None:
    ns = 1_714_564_800_123_456_789
    assert format_time(ns) == "2024-05-01T12:00:00.123456789Z"
    assert parse_time("2024-05-01T12:00:00.123456789Z") == ns
    assert parse_time("2024-05-01T14:00:00.123456789+02:00") == ns
    assert parse_time("2024-05-01T12:00:00Z") == ns - 123_456_789
    with pytest.raises(ValueError):
        parse_time("yesterday")


def test_a_naive_time_is_local_time(tmp_path: Path) -> None:
    naive = datetime.datetime(2024, 5, 1, 12, 0, 0, 5)  # as Python reads naive times
    append_log(tmp_path / "x.log", "naive\n", naive)
    append_log(tmp_path / "x.log", "aware\n", naive.astimezone(UTC))
    (first, _), (second, _) = read_log(tmp_path / "x.log")
    assert first == second and first.endswith(".000005000Z")


# --- who may ask ---------------------------------------------------------------------


def test_the_apiserver_kubelet_client_reads_the_log(node: Node, sample: Path) -> None:
    status, content_type, body = node.request("/containerLogs/ns/p/c")
    assert (status, body) == (200, "one\ntwo\nthree\nfour\n")
    assert content_type.startswith("text/plain")
    assert node.request("/healthz") == (200, "text/plain; charset=utf-8", "ok")


def test_other_users_are_forbidden(node: Node, sample: Path) -> None:
    status, _, body = node.request("/containerLogs/ns/p/c", client=node.pki.admin)
    assert status == 403
    assert body == "Forbidden: user 'kwatt-sandbox-admin' may not use this kubelet's API.\n"


def test_no_client_certificate_no_handshake(node: Node, sample: Path) -> None:
    context = ssl.create_default_context(cafile=str(node.pki.ca))
    conn = http.client.HTTPSConnection("127.0.0.1", node.port, context=context, timeout=5)
    with pytest.raises((ssl.SSLError, ConnectionError)):
        conn.request("GET", "/containerLogs/ns/p/c")
        conn.getresponse()
    conn.close()


def test_the_server_must_present_a_certificate_of_the_cluster(
    node: Node, sample: Path, tmp_path: Path
) -> None:
    other = make_cluster_pki(tmp_path / "other-pki")
    context = ssl.create_default_context(cafile=str(other.ca))
    context.load_cert_chain(
        node.pki.apiserver_kubelet_client.cert, node.pki.apiserver_kubelet_client.key
    )
    conn = http.client.HTTPSConnection("127.0.0.1", node.port, context=context, timeout=5)
    with pytest.raises(ssl.SSLCertVerificationError):
        conn.request("GET", "/healthz")
    conn.close()


def test_binds_loopback_only(node: Node) -> None:
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.2", node.port), timeout=2).close()
    with socket.create_connection(("127.0.0.1", node.port), timeout=2):
        pass


# --- the options ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "body"),
    [
        ("tailLines=2", "three\nfour\n"),
        ("tailLines=0", ""),
        ("tailLines=99", "one\ntwo\nthree\nfour\n"),
        ("limitBytes=6", "one\ntw"),
        ("limitBytes=0", ""),
        ("sinceSeconds=30", "three\nfour\n"),
        ("sinceSeconds=10", "ur\n"),  # records, as the kubelet filters: half a line
        ("stream=Stderr", "two\n"),
        ("stream=Stdout&tailLines=1", "four\n"),
        ("follow=false&previous=0&timestamps=FALSE", "one\ntwo\nthree\nfour\n"),
    ],
)
def test_options(node: Node, sample: Path, query: str, body: str) -> None:
    assert node.request(f"/containerLogs/ns/p/c?{query}") == (
        200,
        "text/plain; charset=utf-8",
        body,
    )


def test_timestamps_prefix_each_line_with_the_time_it_began(node: Node, sample: Path) -> None:
    status, _, body = node.request("/containerLogs/ns/p/c?timestamps=true&tailLines=2")
    assert status == 200
    stamp = format_time(parse_time(read_log(sample)[2][0]))
    assert body == f"{stamp} three\n{stamp} four\n"  # "four" began in the "three" record
    status, _, body = node.request("/containerLogs/ns/p/c?timestamps=1&limitBytes=39")
    assert body == read_log(sample)[0][0] + " one\n" + read_log(sample)[1][0][:4]


def test_since_time(node: Node, sample: Path) -> None:
    since = quote(format_time(int(at(60).timestamp() * 10**9)))
    assert node.request(f"/containerLogs/ns/p/c?sinceTime={since}")[2] == "two\nthree\nfour\n"


def test_previous(node: Node, sample: Path, tmp_path: Path) -> None:
    status, _, body = node.request("/containerLogs/ns/p/c?previous=true")
    assert (status, body) == (400, 'previous terminated container "c" in pod "p" not found\n')
    old = tmp_path / "c-0.log"
    append_log(old, "the first run\n")
    node.logs[("ns", "p", "c")] = ContainerLog(sample, old, running=lambda: True)
    assert node.request("/containerLogs/ns/p/c?previous=true")[2] == "the first run\n"
    # follow on a terminated instance ends once its file is out
    assert node.request("/containerLogs/ns/p/c?previous=true&follow=true")[2] == "the first run\n"


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ("tailLines=-1", "tailLines"),
        ("limitBytes=ten", "limitBytes"),
        ("sinceSeconds=1.5", "sinceSeconds"),
        ("follow=yes", "follow"),
        ("previous=", "previous"),
        ("timestamps=2", "timestamps"),
        ("sinceTime=yesterday", "sinceTime"),
        ("sinceSeconds=1&sinceTime=2024-01-01T00:00:00Z", "sinceSeconds or sinceTime"),
        ("stream=Both", "stream"),
    ],
)
def test_bad_parameters_are_400(node: Node, sample: Path, query: str, parameter: str) -> None:
    status, _, body = node.request(f"/containerLogs/ns/p/c?{query}")
    assert status == 400
    assert parameter in body and body.endswith(".\n") and body.count("\n") == 1


def test_unknown_and_unsupported_paths(node: Node, sample: Path) -> None:
    status, _, body = node.request("/containerLogs/ns/p/nope")
    assert (status, body) == (404, 'container "nope" in pod "ns/p" is not on this node.\n')
    assert node.request("/containerLogs/ns/p")[0] == 404
    assert node.request("/pods")[0] == 404
    status, _, body = node.request("/exec/ns/p/c?command=ls")
    assert status == 501 and "exec" in body
    assert node.request("/portForward/ns/p")[0] == 501
    node.logs[("ns", "waiting", "c")] = ContainerLog(None, None, running=lambda: False)
    status, _, body = node.request("/containerLogs/ns/waiting/c")
    assert (status, body) == (400, 'container "c" in pod "waiting" is waiting to start\n')


# --- follow --------------------------------------------------------------------------


def test_follow_streams_new_lines_until_the_container_stops(node: Node, tmp_path: Path) -> None:
    path = tmp_path / "f.log"
    append_log(path, "before\n")
    running = threading.Event()
    running.set()
    node.logs[("ns", "f", "c")] = ContainerLog(path, None, running=running.is_set)
    conn = node.connect()
    try:
        conn.request("GET", "/containerLogs/ns/f/c?follow=true&timestamps=true")
        response = conn.getresponse()
        assert response.status == 200
        assert response.readline().decode().endswith(" before\n")
        append_log(path, "after 1\n")
        assert response.readline().decode().endswith(" after 1\n")
        append_log(path, "after")
        append_log(path, " 2\n")
        line = response.readline().decode()
        assert line.endswith("Z after 2\n") and line.count("Z ") == 1  # one stamp a line
        append_log(path, "last words\n")
        running.clear()
        started = time.monotonic()
        assert response.read().decode().endswith(" last words\n")  # then the stream ends
        assert time.monotonic() - started < 2
    finally:
        conn.close()


def test_follow_ends_when_the_server_stops(loop: Loop, pki: ClusterPki, tmp_path: Path) -> None:
    path = tmp_path / "s.log"
    append_log(path, "hello\n")
    _client, serving = pki.node("node-b")
    log = ContainerLog(path, None, running=lambda: True)
    server = LogServer(serving, pki.ca, lambda *_: log)
    node = Node(server, pki, loop.run(server.start()))
    conn = node.connect()
    conn.request("GET", "/containerLogs/ns/s/c?follow=1")
    response = conn.getresponse()
    assert response.readline() == b"hello\n"
    started = time.monotonic()
    loop.run(server.stop())
    assert time.monotonic() - started < 3
    assert response.read() == b""  # the stream ended cleanly
    conn.close()
