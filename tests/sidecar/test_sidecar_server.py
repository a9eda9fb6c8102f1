"""The protocol server under load, stalls and odd requests, over real HTTP in this process."""

from __future__ import annotations

import json
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sidecar_support import call, make_node, raw_exchange, served

from kwatt_client import Kwatt

pytestmark = pytest.mark.timeout(60)
JSON = {"Content-Type": "application/json"}


def is_sentence(reply: object) -> bool:
    if not isinstance(reply, dict) or set(reply) != {"error"}:
        return False
    text = reply["error"]
    return isinstance(text, str) and text[:1].isupper() and text.endswith(".")


def test_two_hundred_concurrent_calls_are_all_answered(tmp_path: Path) -> None:
    """A trainer with many dataloader workers: every call answered, none reset or dropped."""
    node = make_node(tmp_path)
    with served(node, tmp_path, KWATT_WARMUP_STEPS="100000") as sc:
        assert call(sc.port, "POST", "/v1/begin", json.dumps({"gpu_uuids": node.uuids}).encode())[0]
        kinds = [
            ("GET", "/v1/should-stop", None),
            ("POST", "/v1/step", None),
            ("POST", "/v1/epoch", b'{"metric": 0.5}'),
        ]
        start = threading.Barrier(200)

        def one(i: int) -> int:
            method, path, body = kinds[i % 3]
            start.wait()
            return call(sc.port, method, path, body, JSON, timeout=30)[0]

        with ThreadPoolExecutor(200) as pool:
            statuses = list(pool.map(one, range(200)))
        assert statuses == [200] * 200
        epochs = sum(1 for i in range(200) if i % 3 == 2)
        assert sc.sidecar.state is not None and sc.sidecar.state.epochs == epochs


def test_stalled_connections_hold_no_thread_and_do_not_delay_a_call(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with served(node, tmp_path, {"idle_timeout_s": 1.0}) as sc:
        kw = Kwatt(port=sc.port, gpu_uuids=node.uuids)  # default 0.2 s timeout
        kw.should_stop()  # the pool's threads exist from here on
        threads = threading.active_count()
        stalled = []
        for i in range(30):
            s = socket.create_connection(("127.0.0.1", sc.port))
            if i % 2:
                s.sendall(b"POST /v1/epoch HTTP/1.1\r\nHost: x\r\nContent-Le")  # half-sent headers
            else:
                s.sendall(b"POST /v1/epoch HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{")
            stalled.append(s)
        time.sleep(0.2)
        assert threading.active_count() == threads  # an event loop, not a thread per socket
        for _ in range(20):
            assert kw.should_stop() is False
        kw.epoch_end(0.5)
        assert not kw.quiet  # every call answered within the client's 0.2 s
        # The server closes them: idle and half-sent after 1 s, a late body with a 408.
        answers = []
        for s in stalled:
            s.settimeout(10)
            answers.append(s.recv(65536))
            s.close()
        assert all(a == b"" or a.startswith(b"HTTP/1.1 408") for a in answers), answers
        assert any(a.startswith(b"HTTP/1.1 408") for a in answers)
        assert kw.should_stop() is False and not kw.quiet  # the client's own socket was idle too
        kw.end()


@pytest.mark.parametrize("method", ["PATCH", "OPTIONS", "PUT", "DELETE"])
def test_other_methods_get_a_json_405_naming_the_right_one(tmp_path: Path, method: str) -> None:
    node = make_node(tmp_path)
    with served(node, tmp_path) as sc:
        status, headers, reply = call(sc.port, method, "/v1/epoch", b"{}", JSON)
        assert status == 405 and headers["allow"] == "POST" and is_sentence(reply)
        assert headers["content-type"].startswith("application/json")
        status, headers, reply = call(sc.metrics_port, method, "/metrics")
        assert status == 405 and is_sentence(reply)


def test_head_gets_a_405_without_a_body(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with served(node, tmp_path) as sc:
        status, headers, reply = call(sc.port, "HEAD", "/v1/should-stop")
        assert status == 405 and headers["allow"] == "GET" and reply is None
        assert headers["content-type"].startswith("application/json")


def test_unparsable_requests_get_json_sentences(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with served(node, tmp_path) as sc:
        big = b"GET /v1/should-stop HTTP/1.1\r\nX-Big: " + b"a" * 20000 + b"\r\n\r\n"
        both = (
            b"POST /v1/epoch HTTP/1.1\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\n{}"
        )
        for raw in (
            big,
            both,
            b"\x16\x03\x01\x02\x00 tls hello\r\n\r\n",
            b"GET / HTTP/9.9\r\n\r\n",
        ):
            head, _, body = raw_exchange(sc.port, raw).partition(b"\r\n\r\n")
            assert head.split(b"\r\n")[0][:10] in (b"HTTP/1.0 4", b"HTTP/1.1 4"), head
            assert b"application/json" in head
            assert is_sentence(json.loads(body))


def test_json_nested_thousands_deep_is_a_400(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with served(node, tmp_path) as sc:
        deep = b"[" * 7000 + b"]" * 7000
        assert len(deep) <= 16 * 1024
        status, _, reply = call(sc.port, "POST", "/v1/begin", deep, JSON)
        assert status == 400 and "nested" in reply["error"] and is_sentence(reply)
        status, _, _ = call(sc.port, "POST", "/v1/begin", b'{"gpu_uuids": []}', JSON)
        assert status == 200  # the server is fine afterwards


def test_a_retried_call_is_counted_once(tmp_path: Path) -> None:
    """A client that lost the answer sends the call again under the same name."""
    node = make_node(tmp_path)
    with served(node, tmp_path) as sc:
        call(sc.port, "POST", "/v1/begin", json.dumps({"gpu_uuids": node.uuids}).encode())
        named = {**JSON, "Kwatt-Call": "abc-7"}
        first = call(sc.port, "POST", "/v1/epoch", b'{"metric": 0.1}', named)
        again = call(sc.port, "POST", "/v1/epoch", b'{"metric": 0.1}', named)
        assert first[0] == again[0] == 200 and first[2] == again[2]
        assert sc.sidecar.state is not None and sc.sidecar.state.epochs == 1
        call(sc.port, "POST", "/v1/epoch", b'{"metric": 0.1}', {**JSON, "Kwatt-Call": "abc-8"})
        assert sc.sidecar.state.epochs == 2
        status, _, reply = call(sc.port, "POST", "/v1/epoch", b"{}", {"Kwatt-Call": "x" * 65})
        assert status == 400 and "Kwatt-Call" in reply["error"]


def test_begin_checks_the_batch_size(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with served(node, tmp_path) as sc:
        for bad in (0, -1, "64", 2.5, True, 2**31):
            body = json.dumps({"gpu_uuids": node.uuids, "batch_size": bad}).encode()
            status, _, reply = call(sc.port, "POST", "/v1/begin", body, JSON)
            assert status == 400 and "batch_size" in reply["error"], bad
        body = json.dumps({"gpu_uuids": node.uuids, "batch_size": 64}).encode()
        assert call(sc.port, "POST", "/v1/begin", body, JSON)[0] == 200
    report = json.loads((tmp_path / "termination").read_text())
    assert report["batch_size"] == 1024  # the operator's, which the policy learns under
    assert "batch size 64" in report["note"] and "1024" in report["note"]


def test_a_later_hello_must_name_the_same_gpus(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with served(node, tmp_path) as sc:
        assert call(sc.port, "POST", "/v1/begin", b'{"gpu_uuids": []}', JSON)[0] == 200
        body = json.dumps({"gpu_uuids": node.uuids}).encode()
        status, _, reply = call(sc.port, "POST", "/v1/begin", body, JSON)
        assert status == 409 and "same GPUs" in reply["error"]
        assert call(sc.port, "POST", "/v1/begin", b'{"gpu_uuids": []}', JSON)[0] == 200


def test_metrics_are_served_with_their_content_type(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with served(node, tmp_path) as sc:
        status, _, _ = call(sc.metrics_port, "GET", "/healthz")
        assert status == 200
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{sc.metrics_port}/metrics") as r:
            assert r.headers["Content-Type"].startswith("text/plain; version=0.0.4")
            assert b"kwatt_profiling_phase" in r.read()
        status, _, reply = call(sc.metrics_port, "GET", "/nope")
        assert status == 404 and is_sentence(reply)
