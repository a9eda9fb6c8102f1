"""The trainer's localhost protocol and /metrics, served by aiohttp's low-level server.

Protocol (127.0.0.1 only, HTTP/1.1 keep-alive, JSON bodies of at most 16 KiB):
POST /v1/begin, POST /v1/step, POST /v1/epoch, GET /v1/should-stop, POST /v1/end.
Anything refused gets a 4xx with {"error": "<sentence>"}, unparsable requests too.
/metrics and /healthz listen on all addresses on the metrics port (a startupProbe
can use /healthz).

One event loop on a background thread serves both ports, so idle and stalled
connections cost no thread; calls into the Sidecar (which take its lock and may
wait on NVML) run on a small bounded pool, so a slow GPU never stalls the loop.
Idle and half-sent connections are closed after `idle_timeout_s`, bodies must
arrive within `read_timeout_s`.

A POST may carry a `Kwatt-Call` header naming the call; a retry with the same name
gets the first answer instead of counting a step or an epoch twice (the client
retries once when a connection drops mid-call).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
import math
import socket
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aiohttp import web

if TYPE_CHECKING:
    from kwatt_sidecar.app import Sidecar

MAX_BODY = 16 * 1024
MAX_GPUS = 64
MAX_BATCH_SIZE = 2**31 - 1
CALL_HEADER = "Kwatt-Call"
MAX_CALL_ID = 64
REMEMBERED_CALLS = 256  # answers kept for retries; a retry follows its call within a second
BACKLOG = 1024  # a trainer's dataloader workers may all connect at once
IDLE_TIMEOUT_S = 30.0
READ_TIMEOUT_S = 5.0
WORKERS = 4
ROUTES = {
    "/v1/begin": "POST",
    "/v1/step": "POST",
    "/v1/epoch": "POST",
    "/v1/end": "POST",
    "/v1/should-stop": "GET",
}
log = logging.getLogger("kwatt.sidecar")

Answer = tuple[int, dict[str, Any]]


class HttpError(Exception):
    """A request the sidecar refuses; `status` and a sentence for {"error": ...}."""

    status = 400

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        if status is not None:
            self.status = status


class Conflict(HttpError):
    status = 409


# -- request bodies ------------------------------------------------------------------------


def _obj(body: Any) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise HttpError("The request body must be a JSON object.")
    return body


def _positive_int(data: dict[str, Any], name: str, high: int) -> int | None:
    value = data.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= high:
        raise HttpError(f"Field '{name}' must be an integer from 1 to {high}.")
    return value


def parse_begin(body: Any) -> tuple[list[str], int | None, int | None]:
    """(GPU UUIDs without repeats, steps per epoch, the trainer's batch size)."""
    data = _obj(body)
    uuids = data.get("gpu_uuids", [])
    if not isinstance(uuids, list) or not all(
        isinstance(u, str) and 0 < len(u) <= 128 and u.isprintable() for u in uuids
    ):
        raise HttpError("Field 'gpu_uuids' must be a list of GPU UUID strings.")
    if len(uuids) > MAX_GPUS:
        raise HttpError(f"Field 'gpu_uuids' lists more than {MAX_GPUS} GPUs.")
    steps = _positive_int(data, "steps_per_epoch", 2**31 - 1)
    batch_size = _positive_int(data, "batch_size", MAX_BATCH_SIZE)
    return list(dict.fromkeys(uuids)), steps, batch_size


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


def decode(raw: bytes) -> Any:
    """The body's JSON ({} when empty); a 400 for anything else, however deep or odd."""
    if not raw.strip():
        return {}
    try:
        return json.loads(raw)
    except RecursionError:
        raise HttpError("The request body's JSON is nested too deeply.") from None
    except (ValueError, UnicodeDecodeError):
        raise HttpError("The request body is not valid JSON.") from None


# -- responses -----------------------------------------------------------------------------


def _json(status: int, data: dict[str, Any], close: bool = False) -> web.Response:
    resp = web.Response(
        status=status, body=json.dumps(data).encode(), content_type="application/json"
    )
    if close:
        resp.force_close()
    return resp


def _error(status: int, sentence: str, close: bool = False, **headers: str) -> web.Response:
    resp = _json(status, {"error": sentence}, close)
    resp.headers.update(headers)
    return resp


class _JsonErrors(web.RequestHandler):
    """aiohttp's connection handler, answering unparsable requests in JSON, not text."""

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        log.debug("Refused a request that cannot be parsed (%d): %s", status, message or exc)
        phrase = HTTPStatus(status).phrase if status in set(HTTPStatus) else ""
        # aiohttp's parser messages run over lines and quote the offending bytes: keep the gist.
        text = (message or phrase or "it is malformed").strip().splitlines()[0]
        detail = text.split(": b'")[0].rstrip(" :.")[:200]
        return _error(status, f"The request cannot be handled: {detail}.", close=True)


class _Server(web.Server):
    def __call__(self) -> web.RequestHandler:
        # web.Server's own factory, with the JSON error handler (same arguments).
        return _JsonErrors(self, loop=self._loop, **self._kwargs)


# -- the two handlers ------------------------------------------------------------------------


class Protocol:
    """The trainer's calls: routing, body checks and retry de-duplication on the loop,
    the Sidecar's work on the pool."""

    def __init__(self, sidecar: Sidecar, pool: ThreadPoolExecutor, read_timeout_s: float) -> None:
        self.sidecar = sidecar
        self.pool = pool
        self.read_timeout_s = read_timeout_s
        self.calls: OrderedDict[str, asyncio.Future[Answer]] = OrderedDict()

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        path, method = request.path, request.method
        want = ROUTES.get(path)
        if want is None:
            return _error(404, f"There is no {path[:200]} here; see docs/sidecar.md.")
        if method != want:
            return _error(405, f"Use {want} for {path}, not {method[:20]}.", Allow=want)
        try:
            body = await self._body(request) if method == "POST" else None
            call = self._call_id(request) if method == "POST" else None
        except HttpError as exc:
            # After a refused body the connection's bytes are out of step: close it.
            return _error(exc.status, str(exc), close=exc.status in (408, 411, 413))
        name = None if call is None else f"{path} {call}"  # a name means one call to one path
        status, data = await self._once(name, functools.partial(self._dispatch, path, body))
        return _json(status, data)

    async def _body(self, request: web.BaseRequest) -> Any:
        if "Transfer-Encoding" in request.headers:
            raise HttpError("Send a Content-Length; chunked bodies are not accepted.", 411)
        length = request.content_length or 0
        if length > MAX_BODY:
            raise HttpError(f"The request body is larger than {MAX_BODY} bytes.", 413)
        try:
            async with asyncio.timeout(self.read_timeout_s):
                raw = await request.read()
        except TimeoutError:
            raise HttpError(
                f"The request body did not arrive within {self.read_timeout_s:g} s.", 408
            ) from None
        return decode(raw)

    @staticmethod
    def _call_id(request: web.BaseRequest) -> str | None:
        call = request.headers.get(CALL_HEADER)
        if call is not None and not (
            0 < len(call) <= MAX_CALL_ID and call.isascii() and call.isprintable()
        ):
            raise HttpError(f"The {CALL_HEADER} header must be 1 to {MAX_CALL_ID} characters.")
        return call

    async def _once(self, call: str | None, work: Callable[[], Answer]) -> Answer:
        """Run `work` on the pool; a call named again (a retry) gets the first answer."""
        loop = asyncio.get_running_loop()
        if call is None:
            return await loop.run_in_executor(self.pool, work)
        first = self.calls.get(call)
        if first is not None:
            return await asyncio.shield(first)
        answer: asyncio.Future[Answer] = loop.create_future()
        self.calls[call] = answer
        while len(self.calls) > REMEMBERED_CALLS:
            self.calls.popitem(last=False)
        try:
            result = await asyncio.shield(loop.run_in_executor(self.pool, work))
        except BaseException:  # the loop is stopping: a retry waiting on this one stops too
            self.calls.pop(call, None)
            answer.cancel()
            raise
        if result[0] >= 500:  # nothing was counted; a retry may try again
            self.calls.pop(call, None)
        answer.set_result(result)
        return result

    def _dispatch(self, path: str, body: Any) -> Answer:
        """On the pool: the Sidecar's answer, or an error sentence; never raises."""
        try:
            if path == "/v1/begin":
                uuids, steps, batch_size = parse_begin(body)
                return 200, self.sidecar.hello(uuids, steps, batch_size)
            if path == "/v1/step":
                return 200, self.sidecar.step()
            if path == "/v1/epoch":
                return 200, self.sidecar.epoch(parse_epoch(body))
            if path == "/v1/end":
                return 200, self.sidecar.end(*parse_end(body))
            return 200, self.sidecar.should_stop()
        except HttpError as exc:
            return exc.status, {"error": str(exc)}
        except Exception as exc:  # a GPU error must not kill the server: say it and go on
            log.error("Handling %s failed: %s", path, exc)
            return 500, {"error": f"The sidecar failed to handle {path}: {exc}"}


class Metrics:
    """/metrics (Prometheus text format) and /healthz."""

    def __init__(self, sidecar: Sidecar, pool: ThreadPoolExecutor) -> None:
        self.sidecar = sidecar
        self.pool = pool

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        if request.path not in ("/metrics", "/healthz"):
            return _error(404, f"There is no {request.path[:200]} here; try /metrics.")
        if request.method not in ("GET", "HEAD"):
            return _error(405, f"Use GET for {request.path}.", Allow="GET, HEAD")
        if request.path == "/healthz":
            return web.Response(text="ok\n")
        loop = asyncio.get_running_loop()
        try:
            body, content_type = await loop.run_in_executor(self.pool, self.sidecar.metrics)
        except Exception as exc:
            return _error(500, f"Metrics cannot be read: {exc}")
        return web.Response(body=body, headers={"Content-Type": content_type})


# -- the servers ---------------------------------------------------------------------------


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket now, so a busy port fails at startup, in the caller's thread."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
    except OSError:
        sock.close()
        raise
    sock.setblocking(False)
    return sock


class Servers:
    """Both servers on one event loop in a background thread; port 0 picks a free port."""

    def __init__(
        self,
        sidecar: Sidecar,
        port: int,
        metrics_port: int,
        *,
        idle_timeout_s: float = IDLE_TIMEOUT_S,
        read_timeout_s: float = READ_TIMEOUT_S,
        workers: int = WORKERS,
    ) -> None:
        self.protocol_sock = _listen("127.0.0.1", port)
        try:
            self.metrics_sock = _listen("0.0.0.0", metrics_port)
        except OSError:
            self.protocol_sock.close()
            raise
        self.port = int(self.protocol_sock.getsockname()[1])
        self.metrics_port = int(self.metrics_sock.getsockname()[1])
        self.idle_timeout_s = idle_timeout_s
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="kwatt-sidecar")
        self.handlers: list[tuple[socket.socket, Callable[[web.BaseRequest], Awaitable[Any]]]] = [
            (self.protocol_sock, Protocol(sidecar, self.pool, read_timeout_s)),
            (self.metrics_sock, Metrics(sidecar, self.pool)),
        ]
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="kwatt-http", daemon=True)
        self.runners: list[web.ServerRunner] = []

    def start(self) -> None:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(timeout=30)

    async def _start(self) -> None:
        for sock, handler in self.handlers:
            server = _Server(handler, keepalive_timeout=self.idle_timeout_s, access_log=None)
            runner = web.ServerRunner(server, handle_signals=False, shutdown_timeout=1.0)
            await runner.setup()
            self.runners.append(runner)
            await web.SockSite(runner, sock, backlog=BACKLOG).start()

    async def _stop(self) -> None:
        for runner in self.runners:
            await runner.cleanup()
        # Connections still open (idle keep-alives) have handler tasks: end them here, so that
        # none is left pending when the loop closes.
        rest = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in rest:
            task.cancel()
        await asyncio.gather(*rest, return_exceptions=True)

    def stop(self) -> None:
        """Close both servers and their connections; calls in flight get up to a second."""
        if self.thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(self._stop(), self.loop).result(timeout=10)
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(timeout=10)
        if not self.loop.is_running():
            self.loop.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        for sock, _ in self.handlers:
            sock.close()
