"""The node agent's kubelet API for `kubectl logs`: GET /containerLogs over mutual TLS.

Part of the sandbox test harness (production is a real cluster, whose kubelets serve
this). kube-apiserver proxies `kubectl logs` to
`https://<node InternalIP>:<kubeletEndpoint port>/containerLogs/{namespace}/{pod}/{container}`
with its `apiserver-kubelet-client` certificate, and checks this server's certificate
against the cluster CA. Only that client (by certificate CN) may read logs; exec, attach,
port-forward and run answer 501.

Log files hold one JSON object per line, as Docker's json-file driver does:
`{"t": "<RFC3339 UTC, 9 fraction digits>", "s": "stdout"|"stderr", "log": "<text>"}`.
`append_log` splits text after each newline, so a record holds at most one line (the
last may be partial); readers reassemble the text. The options follow the kubelet:
`tailLines` counts text lines, `sinceSeconds`/`sinceTime` filter records by time,
`limitBytes` cuts the output (timestamps included), `timestamps` prefixes each line
with its first record's time, `stream` (Stdout/Stderr/All) picks a stream, `previous`
reads the last terminated instance, and `follow` streams until the instance stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

from aiohttp import web
from aiohttp.typedefs import Handler

from kwatt_sandbox.controlplane.pki import KUBELET_CLIENT_USER, LOOPBACK, KeyPair

log = logging.getLogger(__name__)

STREAMS = ("stdout", "stderr")
POLL_SECONDS = 0.1  # how often `follow` looks for new lines
_STREAM_PARAM = {"All": None, "Stdout": "stdout", "Stderr": "stderr"}
_TRUE, _FALSE = ("1", "t", "true"), ("0", "f", "false")  # Go's strconv.ParseBool
_INT_LIMIT = 2**63
_TIMESTAMP = re.compile(
    r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", re.IGNORECASE
)
_NOT_IMPLEMENTED = ("exec", "attach", "portForward", "run")


@dataclass(frozen=True)
class ContainerLog:
    """Where one container's logs are, as the node agent's lookup answers."""

    current: Path | None  # this instance's log file (None: never started)
    previous: Path | None  # the last terminated instance's log file, if it restarted
    running: Callable[[], bool]  # whether the current instance still runs (for follow)


LogLookup = Callable[[str, str, str], ContainerLog | None]  # (namespace, pod, container)


class Record(NamedTuple):
    """One line of a log file: a chunk of one stream's text, at most one line long."""

    ns: int  # nanoseconds since the epoch
    stream: str
    text: str


# --- the log file format -----------------------------------------------------------


def format_time(ns: int) -> str:
    """RFC3339 in UTC with 9 fraction digits, as the kubelet prints timestamps."""
    seconds, fraction = divmod(ns, 10**9)
    when = datetime.datetime.fromtimestamp(seconds, datetime.UTC)
    return f"{when:%Y-%m-%dT%H:%M:%S}.{fraction:09d}Z"


def parse_time(text: str) -> int:
    """Nanoseconds since the epoch of an RFC3339 time; ValueError if it is not one."""
    match = _TIMESTAMP.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not an RFC3339 time")
    zone = "+00:00" if match[3].upper() == "Z" else match[3]
    seconds = int(datetime.datetime.fromisoformat(match[1] + zone).timestamp())
    return seconds * 10**9 + int((match[2] or "").ljust(9, "0"))


def _now_ns(now: datetime.datetime | None) -> int:
    if now is None:
        return time.time_ns()
    aware = now if now.tzinfo is not None else now.astimezone()
    since_epoch = aware - datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
    return since_epoch // datetime.timedelta(microseconds=1) * 1000


def _pieces(text: str) -> list[str]:
    """`text` cut after each newline (and only there: a lone \\r is no line end)."""
    parts = text.split("\n")
    pieces = [part + "\n" for part in parts[:-1]]
    if parts[-1]:
        pieces.append(parts[-1])
    return pieces


def append_log(
    path: Path, text: str, now: datetime.datetime | None = None, *, stream: str = "stdout"
) -> None:
    """Append `stream`'s `text` to the log file at `path` (owner-only), one line a record.

    One write per call, on a file opened for appending: a reader never sees records of
    two calls interleaved, only (for a moment) an unfinished last line, which it skips.
    """
    if stream not in STREAMS:
        raise ValueError(f"stream must be one of {STREAMS}, not {stream!r}")
    if not text:
        return
    stamp = format_time(_now_ns(now))
    data = "".join(
        json.dumps({"t": stamp, "s": stream, "log": chunk}, separators=(",", ":")) + "\n"
        for chunk in _pieces(text)
    ).encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _record(line: bytes) -> Record | None:
    try:
        obj = json.loads(line)
        text, stream = obj["log"], obj["s"]
        if isinstance(text, str) and stream in STREAMS:
            return Record(parse_time(obj["t"]), stream, text)
    except (ValueError, TypeError, KeyError):
        pass
    log.debug("Skipping a malformed log line: %r", line[:200])
    return None


def _records(data: bytes) -> list[Record]:
    return [r for line in data.split(b"\n") if line and (r := _record(line)) is not None]


def read_records(path: Path) -> list[Record]:
    """Every complete record of a log file (none if it does not exist yet)."""
    data = _read_from(path, 0)
    return _records(data[: data.rfind(b"\n") + 1])


def _lines(records: Iterable[Record]) -> list[tuple[int, str]]:
    """Reassemble text lines: (time of the record the line starts in, the line)."""
    lines: list[tuple[int, list[str]]] = []  # pieces joined once: a line may be long
    open_line = False
    for record in records:
        for piece in _pieces(record.text):
            if open_line:
                lines[-1][1].append(piece)
            else:
                lines.append((record.ns, [piece]))
            open_line = not piece.endswith("\n")
    return [(ns, "".join(pieces)) for ns, pieces in lines]


def read_log(path: Path) -> list[tuple[str, str]]:
    """The text lines of a log file (both streams) as (RFC3339 time, line) pairs."""
    return [(format_time(ns), line) for ns, line in _lines(read_records(path))]


def log_text(path: Path) -> str:
    """The whole text of a log file, both streams (for FallbackToLogsOnError)."""
    return "".join(record.text for record in read_records(path))


def _read_from(path: Path, offset: int) -> bytes:
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


# --- the request's options and its output ------------------------------------------


class BadRequest(ValueError):
    """A query parameter the kubelet would refuse."""


def _bool(query: Mapping[str, str], name: str) -> bool:
    value = query.get(name)
    if value is None:
        return False
    if value.lower() in _TRUE:
        return True
    if value.lower() in _FALSE:
        return False
    raise BadRequest(f"{name} must be true or false, not {value!r}")


def _count(query: Mapping[str, str], name: str) -> int | None:
    value = query.get(name)
    if value is None:
        return None
    if not (value.isascii() and value.isdigit()) or int(value) >= _INT_LIMIT:
        raise BadRequest(f"{name} must be a non-negative integer, not {value!r}")
    return int(value)


@dataclass(frozen=True)
class LogOptions:
    """The query of a /containerLogs request (PodLogOptions, as the apiserver sends it)."""

    follow: bool = False
    previous: bool = False
    timestamps: bool = False
    tail_lines: int | None = None
    limit_bytes: int | None = None
    since_ns: int | None = None  # only records at or after this time
    stream: str | None = None  # None: both

    @classmethod
    def parse(cls, query: Mapping[str, str], now_ns: int) -> LogOptions:
        """The options of `query`; BadRequest names the parameter at fault."""
        since_seconds = _count(query, "sinceSeconds")
        since_time = query.get("sinceTime")
        if since_seconds is not None and since_time is not None:
            raise BadRequest("at most one of sinceSeconds or sinceTime may be given")
        since_ns = None
        if since_seconds is not None:
            since_ns = now_ns - since_seconds * 10**9
        elif since_time is not None:
            try:
                since_ns = parse_time(since_time)
            except ValueError:
                raise BadRequest(f"sinceTime must be an RFC3339 time, not {since_time!r}") from None
        stream = query.get("stream", "All")
        if stream not in _STREAM_PARAM:
            raise BadRequest(f"stream must be one of All, Stdout, Stderr, not {stream!r}")
        return cls(
            follow=_bool(query, "follow"),
            previous=_bool(query, "previous"),
            timestamps=_bool(query, "timestamps"),
            tail_lines=_count(query, "tailLines"),
            limit_bytes=_count(query, "limitBytes"),
            since_ns=since_ns,
            stream=_STREAM_PARAM[stream],
        )


class _Renderer:
    """Turns records into the response's bytes: filters, timestamps, the byte limit."""

    def __init__(self, options: LogOptions) -> None:
        self.options = options
        self.left = options.limit_bytes
        self.at_line_start = True

    @property
    def exhausted(self) -> bool:
        return self.left is not None and self.left <= 0

    def keep(self, record: Record) -> bool:
        opts = self.options
        return (opts.stream is None or record.stream == opts.stream) and (
            opts.since_ns is None or record.ns >= opts.since_ns
        )

    def first(self, records: list[Record]) -> bytes:
        """What is there when the request comes: the last tailLines lines of it."""
        lines = _lines(r for r in records if self.keep(r))
        tail = self.options.tail_lines
        if tail is not None:
            lines = lines[len(lines) - tail :] if tail else []
        return self._emit((ns, text) for ns, text in lines)

    def more(self, records: list[Record]) -> bytes:
        """Records that came later, for follow."""
        return self._emit((r.ns, r.text) for r in records if self.keep(r))

    def _emit(self, chunks: Iterable[tuple[int, str]]) -> bytes:
        parts: list[str] = []
        for ns, text in chunks:
            for piece in _pieces(text):
                if self.options.timestamps and self.at_line_start:
                    parts.append(format_time(ns) + " ")
                parts.append(piece)
                self.at_line_start = piece.endswith("\n")
        data = "".join(parts).encode(errors="replace")
        if self.left is not None:
            data = data[: max(self.left, 0)]
            self.left -= len(data)
        return data


# --- the server --------------------------------------------------------------------


def _plain(status: int, sentence: str) -> web.Response:
    return web.Response(status=status, text=sentence + "\n", content_type="text/plain")


def _common_name(peercert: object) -> str | None:
    if not isinstance(peercert, dict):
        return None
    for rdn in peercert.get("subject", ()):
        for key, value in rdn:
            if key == "commonName":
                return str(value)
    return None


class LogServer:
    """One node agent's HTTPS endpoint for the apiserver's `kubectl logs` proxying."""

    def __init__(
        self,
        serving: KeyPair,
        ca: Path,
        lookup: LogLookup,
        *,
        allowed_users: frozenset[str] = frozenset({KUBELET_CLIENT_USER}),
    ) -> None:
        self.serving = serving
        self.ca = ca
        self.lookup = lookup
        self.allowed_users = allowed_users
        self.port = 0
        self._runner: web.AppRunner | None = None
        self._closing = asyncio.Event()

    def _ssl_context(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.serving.cert, self.serving.key)
        context.load_verify_locations(cafile=self.ca)
        context.verify_mode = ssl.CERT_REQUIRED  # no client certificate, no handshake
        return context

    async def start(self, port: int = 0) -> int:
        """Serve on 127.0.0.1 only (the node's InternalIP); the port it got."""
        app = web.Application(middlewares=[self._authorize])
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get(
            "/containerLogs/{namespace}/{pod}/{container}", self._container_logs, allow_head=False
        )
        for name in _NOT_IMPLEMENTED:
            app.router.add_route("*", f"/{name}/{{rest:.*}}", self._not_implemented)
        self._closing.clear()
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await runner.setup()
        site = web.TCPSite(runner, LOOPBACK, port, ssl_context=self._ssl_context())
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self.port

    async def stop(self) -> None:
        """Stop serving; streams that follow a log end at once."""
        self._closing.set()
        if self._runner is not None:
            runner, self._runner = self._runner, None
            await runner.cleanup()

    @web.middleware
    async def _authorize(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        transport = request.transport
        user = _common_name(transport.get_extra_info("peercert") if transport else None)
        if user not in self.allowed_users:
            return _plain(403, f"Forbidden: user {user!r} may not use this kubelet's API.")
        try:
            return await handler(request)
        except web.HTTPNotFound:
            return _plain(404, f"No such kubelet API path: {request.path}.")
        except web.HTTPMethodNotAllowed:
            return _plain(405, f"{request.method} is not allowed on {request.path}.")

    async def _healthz(self, _request: web.Request) -> web.Response:
        return web.Response(text="ok", content_type="text/plain")

    async def _not_implemented(self, request: web.Request) -> web.Response:
        name = request.path.split("/")[1]
        return _plain(501, f"The sandbox's node agents do not implement {name}; only logs.")

    async def _container_logs(self, request: web.Request) -> web.StreamResponse:
        namespace = request.match_info["namespace"]
        pod, container = request.match_info["pod"], request.match_info["container"]
        try:
            options = LogOptions.parse(request.query, time.time_ns())
        except BadRequest as exc:
            return _plain(400, f"{exc}.")
        found = self.lookup(namespace, pod, container)
        if found is None:
            return _plain(
                404, f'container "{container}" in pod "{namespace}/{pod}" is not on this node.'
            )
        if options.previous:
            if found.previous is None:
                return _plain(
                    400, f'previous terminated container "{container}" in pod "{pod}" not found'
                )
            path, running = found.previous, _never
        else:
            if found.current is None:
                return _plain(400, f'container "{container}" in pod "{pod}" is waiting to start')
            path, running = found.current, found.running
        response = web.StreamResponse(headers={"Content-Type": "text/plain; charset=utf-8"})
        await response.prepare(request)
        try:
            await self._stream(response, request, path, options, running)
        except ConnectionError:  # the client went away
            return response
        await response.write_eof()
        return response

    async def _stream(
        self,
        response: web.StreamResponse,
        request: web.Request,
        path: Path,
        options: LogOptions,
        running: Callable[[], bool],
    ) -> None:
        renderer = _Renderer(options)
        data = await asyncio.to_thread(_read_from, path, 0)
        offset = data.rfind(b"\n") + 1
        first = renderer.first(_records(data[:offset]))
        if first:
            await response.write(first)
        while options.follow and not renderer.exhausted and not self._closing.is_set():
            transport = request.transport
            if transport is None or transport.is_closing():
                return
            was_running = running()
            data = _read_from(path, offset)
            end = data.rfind(b"\n") + 1
            if end:
                offset += end
                more = renderer.more(_records(data[:end]))
                if more:
                    await response.write(more)
                await asyncio.sleep(0)
            elif not was_running:
                return  # stopped, and everything it wrote is out
            else:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._closing.wait(), POLL_SECONDS)


def _never() -> bool:
    return False


__all__ = [
    "POLL_SECONDS",
    "STREAMS",
    "ContainerLog",
    "LogLookup",
    "LogOptions",
    "LogServer",
    "Record",
    "append_log",
    "format_time",
    "log_text",
    "parse_time",
    "read_log",
    "read_records",
]
