"""The trainer's localhost protocol and /metrics, on two small stdlib HTTP servers.

Protocol (127.0.0.1 only, HTTP/1.1 keep-alive, JSON bodies of at most 16 KiB):
POST /v1/begin, POST /v1/step, POST /v1/epoch, GET /v1/should-stop, POST /v1/end.
Anything malformed gets a 4xx with {"error": "<sentence>"}. /metrics and /healthz
listen on all addresses on the metrics port (a startupProbe can use /healthz).
"""

from __future__ import annotations

import json
import logging
import math
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from kwatt_sidecar.app import Sidecar

MAX_BODY = 16 * 1024
MAX_GPUS = 64
log = logging.getLogger("kwatt.sidecar")


class HttpError(Exception):
    """A request the sidecar refuses; `status` and a sentence for {"error": ...}."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class Conflict(HttpError):
    status = 409


def _obj(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise HttpError("The request body must be a JSON object.")
    return body


def parse_begin(body: Any) -> tuple[list[str], int | None]:
    data = _obj(body)
    uuids = data.get("gpu_uuids", [])
    if not isinstance(uuids, list) or not all(
        isinstance(u, str) and 0 < len(u) <= 128 for u in uuids
    ):
        raise HttpError("Field 'gpu_uuids' must be a list of GPU UUID strings.")
    if len(uuids) > MAX_GPUS:
        raise HttpError(f"Field 'gpu_uuids' lists more than {MAX_GPUS} GPUs.")
    steps = data.get("steps_per_epoch")
    if steps is not None and (isinstance(steps, bool) or not isinstance(steps, int) or steps < 1):
        raise HttpError("Field 'steps_per_epoch' must be a positive integer.")
    return list(dict.fromkeys(uuids)), steps


def parse_epoch(body: Any) -> float | None:
    data = _obj(body)
    metric = data.get("metric")
    if metric is None:
        return None
    if isinstance(metric, bool) or not isinstance(metric, int | float) or not math.isfinite(metric):
        raise HttpError("Field 'metric' must be a finite number or null.")
    return float(metric)


def parse_end(body: Any) -> tuple[bool, bool | None]:
    data = _obj(body)
    failed = data.get("failed", False)
    reached = data.get("reached")
    if not isinstance(failed, bool):
        raise HttpError("Field 'failed' must be true or false.")
    if reached is not None and not isinstance(reached, bool):
        raise HttpError("Field 'reached' must be true, false or absent.")
    return failed, reached


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server_version = "kwatt-sidecar"
    sys_version = ""
    sidecar: Sidecar

    def log_message(self, format: str, *args: Any) -> None:
        pass  # no per-request logs

    def _send(self, status: int, payload: bytes, content_type: str, close: bool = False) -> None:
        head = (
            f"HTTP/1.1 {status} {self.responses.get(status, ('',))[0]}\r\n"
            f"Content-Type: {content_type}\r\nContent-Length: {len(payload)}\r\n"
            + ("Connection: close\r\n" if close else "")
            + "\r\n"
        )
        # One write: headers and body in the same segment.
        self.wfile.write(head.encode("latin-1") + payload)
        if close:
            self.close_connection = True

    def _json(self, status: int, data: dict[str, Any], close: bool = False) -> None:
        self._send(status, json.dumps(data).encode(), "application/json", close)

    def _body(self) -> Any:
        if self.headers.get("Transfer-Encoding"):
            raise HttpError("Send a Content-Length; chunked bodies are not accepted.", 411)
        text = self.headers.get("Content-Length", "0") or "0"
        try:
            length = int(text)
        except ValueError:
            raise HttpError("The Content-Length header is not a number.") from None
        if length < 0:
            raise HttpError("The Content-Length header is negative.")
        if length > MAX_BODY:
            raise HttpError(f"The request body is larger than {MAX_BODY} bytes.", 413)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            raise HttpError("The request body is not valid JSON.") from None


class ProtocolHandler(_Handler):
    def _route(self, method: str) -> None:
        path = self.path.split("?", 1)[0]
        try:
            routes = {
                "/v1/begin": "POST",
                "/v1/step": "POST",
                "/v1/epoch": "POST",
                "/v1/end": "POST",
                "/v1/should-stop": "GET",
            }
            if path not in routes:
                raise HttpError(f"There is no {path} here; see docs/sidecar.md.", 404)
            if routes[path] != method:
                raise HttpError(f"Use {routes[path]} for {path}, not {method}.", 405)
            body = self._body() if method == "POST" else None
            if path == "/v1/begin":
                uuids, steps = parse_begin(body)
                reply = self.sidecar.hello(uuids, steps)
            elif path == "/v1/step":
                reply = self.sidecar.step()
            elif path == "/v1/epoch":
                reply = self.sidecar.epoch(parse_epoch(body))
            elif path == "/v1/end":
                failed, reached = parse_end(body)
                reply = self.sidecar.end(failed, reached)
            else:
                reply = self.sidecar.should_stop()
        except HttpError as exc:
            # After a refused body the connection's bytes are out of step: close it.
            self._json(exc.status, {"error": str(exc)}, close=exc.status in (411, 413))
            return
        except Exception as exc:  # a GPU error must not kill the server: say it and go on
            log.error("Handling %s %s failed: %s", method, path, exc)
            self._json(500, {"error": f"The sidecar failed to handle {path}: {exc}"})
            return
        self._json(200, reply)

    def do_GET(self) -> None:
        self._route("GET")

    def do_POST(self) -> None:
        self._route("POST")

    def do_PUT(self) -> None:
        self._route("PUT")

    def do_DELETE(self) -> None:
        self._route("DELETE")


class MetricsHandler(_Handler):
    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/metrics":
            try:
                text = self.sidecar.metrics()
            except Exception as exc:
                self._json(500, {"error": f"Metrics cannot be read: {exc}"})
                return
            self._send(200, text.encode(), "text/plain; version=0.0.4; charset=utf-8")
        elif path == "/healthz":
            self._send(200, b"ok\n", "text/plain")
        else:
            self._json(404, {"error": f"There is no {path} here; try /metrics."})


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True


class Servers:
    """Both servers on background threads; port 0 picks a free port (tests)."""

    def __init__(self, sidecar: Sidecar, port: int, metrics_port: int) -> None:
        proto = type("BoundProtocol", (ProtocolHandler,), {"sidecar": sidecar})
        metrics = type("BoundMetrics", (MetricsHandler,), {"sidecar": sidecar})
        self.protocol = _Server(("127.0.0.1", port), proto)
        try:
            self.metrics_server = _Server(("0.0.0.0", metrics_port), metrics)
        except OSError:
            self.protocol.server_close()
            raise
        self.port = self.protocol.server_address[1]
        self.metrics_port = self.metrics_server.server_address[1]
        self.threads: list[threading.Thread] = []

    def start(self) -> None:
        for server in (self.protocol, self.metrics_server):
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.25})
            thread.daemon = True
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        """Stop both at once (each shutdown waits up to one poll interval)."""
        waiters = [
            threading.Thread(target=server.shutdown)
            for server in (self.protocol, self.metrics_server)
        ]
        for waiter in waiters:
            waiter.start()
        for waiter in waiters:
            waiter.join()
        for server in (self.protocol, self.metrics_server):
            server.server_close()
