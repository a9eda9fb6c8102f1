"""The protocol driven by hypothesis: arbitrary bytes and arbitrary call sequences.

Whatever arrives, the sidecar answers below 500 (or closes the connection), every limit
it asks the GPU for lies inside the GPU's range, observe mode asks for none, and at the
end the GPU is back at its default with no restore record left behind.
"""

from __future__ import annotations

import http.client
import json
import socket
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sidecar_support import make_node, served

from kwatt_core import simgpu
from kwatt_sidecar.gpu.simulated import SimulatedBackend

pytestmark = pytest.mark.timeout(300)
ROUTES = ["/v1/begin", "/v1/step", "/v1/epoch", "/v1/end", "/v1/should-stop"]

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner),
    max_leaves=12,
)


def encode(value: Any) -> bytes:
    return json.dumps(value, allow_nan=True).encode()


@st.composite
def http_requests(draw: st.DrawFn) -> bytes:
    """Requests that are nearly right, which reach deeper than random bytes do."""
    method = draw(st.sampled_from(["GET", "POST", "PUT", "HEAD", "PATCH", "BREW"]))
    path = draw(st.sampled_from([*ROUTES, "/", "/v1/", "/metrics"]) | st.text(max_size=12))
    body = draw(st.binary(max_size=64) | json_values.map(encode))
    headers = [b"Host: 127.0.0.1"] if draw(st.booleans()) else []
    length = draw(st.sampled_from(["right", "none", "huge", "junk", "negative"]))
    headers.append(
        {
            "right": b"Content-Length: %d" % len(body),
            "none": b"",
            "huge": b"Content-Length: 99999999999",
            "junk": b"Content-Length: twelve",
            "negative": b"Content-Length: -4",
        }[length]
    )
    if draw(st.booleans()):
        headers.append(b"Kwatt-Call: " + draw(st.binary(min_size=1, max_size=80)))
    if draw(st.booleans()):
        headers.append(b"Transfer-Encoding: chunked")
    line = f"{method} {path} HTTP/1.1".encode("utf-8", "replace")
    return line + b"\r\n" + b"\r\n".join(h for h in headers if h) + b"\r\n\r\n" + body


def first_answer(port: int, data: bytes) -> bytes:
    """The first response to `data`, or b"" if the server closed or waits for more."""
    with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
        s.sendall(data)
        s.settimeout(0.25)  # an incomplete request gets no answer until the idle timeout
        got = b""
        try:
            while chunk := s.recv(65536):
                got += chunk
                head, sep, body = got.partition(b"\r\n\r\n")
                if sep and len(body) >= _length(head):
                    break
        except TimeoutError:
            pass
    return got


def _length(head: bytes) -> int:
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"content-length":
            return int(value)
    return 0


def check_answer(raw: bytes) -> None:
    if not raw:
        return
    head, _, body = raw.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n")[0].split(b" ")
    status = int(status_line[1])
    assert status < 500, raw[:300]
    if status >= 400 and body:
        assert b"application/json" in head
        reply = json.loads(body)
        assert set(reply) == {"error"} and reply["error"].endswith(".")


def test_arbitrary_bytes_never_get_a_500(tmp_path: Path) -> None:
    node = make_node(tmp_path)
    with served(node, tmp_path, {"idle_timeout_s": 0.5}) as sc:

        @settings(max_examples=250, deadline=None)
        @given(st.binary(max_size=512) | http_requests())
        def check(data: bytes) -> None:
            check_answer(first_answer(sc.port, data))

        check()
        conn = http.client.HTTPConnection("127.0.0.1", sc.port, timeout=5)
        conn.request("GET", "/v1/should-stop")
        assert conn.getresponse().status in (200, 409)  # still serving
        conn.close()


class Spy(SimulatedBackend):
    """The simulated GPU, remembering every limit the sidecar asks for."""

    def __init__(self, directory: Path) -> None:
        super().__init__(directory, "all")
        self.asked: list[float] = []

    def set_limit_w(self, uuid: str, watts: float) -> None:
        self.asked.append(watts)
        super().set_limit_w(uuid, watts)


calls = st.one_of(
    st.tuples(st.just("POST"), st.just("/v1/step"), st.just(b"")),
    st.tuples(st.just("POST"), st.just("/v1/epoch"), json_values.map(lambda v: {"metric": v})),
    st.tuples(st.just("POST"), st.just("/v1/epoch"), json_values),
    st.tuples(st.just("GET"), st.just("/v1/should-stop"), st.just(b"")),
    st.tuples(
        st.just("POST"),
        st.just("/v1/end"),
        st.fixed_dictionaries({}, optional={"failed": json_values, "reached": json_values}),
    ),
    st.tuples(st.just("POST"), st.just("/v1/begin"), json_values),
    st.tuples(st.just("WORK"), st.just(""), st.integers(1, 20)),
)
ranges = st.tuples(
    st.integers(50_000, 200_000),  # mW
    st.integers(0, 300_000),
    st.sampled_from(["optimize", "observe", "fixed"]),
)


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(ranges, st.integers(1, 400), st.booleans(), st.lists(calls, max_size=40))
def test_arbitrary_call_sequences_keep_the_gpu_safe(
    gpu: tuple[int, int, str], fixed_w: int, with_uuids: bool, sequence: list[Any]
) -> None:
    low_mw, width_mw, mode = gpu
    # NVML reports limits in whole milliwatts, so the simulated GPU's are too.
    low, high = low_mw / 1000, (low_mw + width_mw) / 1000
    with tempfile.TemporaryDirectory() as tmp:
        node = make_node(Path(tmp))
        uuid = node.uuids[0]
        node.patch(uuid, min_limit_w=low, max_limit_w=high, default_limit_w=high, limit_w=high)
        env = {
            "KWATT_POWER_MODE": mode,
            "KWATT_FIXED_LIMIT_W": str(fixed_w),
            "KWATT_WARMUP_STEPS": "1",
            "KWATT_MEASURE_STEPS": "2",
        }
        if mode != "fixed":
            env.pop("KWATT_FIXED_LIMIT_W")
        with served(node, Path(tmp), {"idle_timeout_s": 5.0}, **env) as sc:
            spy = Spy(node.gpu_dir)
            sc.sidecar.backend = spy
            conn = http.client.HTTPConnection("127.0.0.1", sc.port, timeout=10)
            hello = {"gpu_uuids": node.uuids if with_uuids else []}
            for method, path, body in [("POST", "/v1/begin", hello), *sequence]:
                if method == "WORK":
                    simgpu.run(node.gpu_dir, uuid, body, lambda w: (0.1, min(w, 200.0) * 0.9))
                    continue
                payload = body if isinstance(body, bytes) else encode(body)
                conn.request(method, path, body=payload, headers={"Content-Type": "x"})
                response = conn.getresponse()
                data = response.read()
                assert response.status < 500, (path, payload, data)
                reply = json.loads(data)
                assert isinstance(reply, dict)
                limit = simgpu.read(node.gpu_dir, uuid).limit_w
                assert low <= limit <= high
            conn.close()
        # served() has finished the run: restored, reported, nothing left to restore later.
        assert all(low <= w <= high for w in spy.asked), spy.asked
        if mode == "observe" or not with_uuids:
            assert spy.asked == []
        after = simgpu.read(node.gpu_dir, uuid)
        assert after.limit_w == high  # the default
        assert list(node.state_dir.glob("*.json")) == []
        report = json.loads((Path(tmp) / "termination").read_text())
        assert report["result"] in {"reached", "stopped", "exhausted", "failed", "interrupted"}
        assert replace(after, limit_w=high) == after
