"""The client proper: one keep-alive HTTP connection to the sidecar on 127.0.0.1."""

from __future__ import annotations

import http.client
import json
import logging
import math
import os
import secrets
import select
import socket
from collections.abc import Mapping
from types import TracebackType
from typing import Any

# The names below are kwatt_core.contract's; the client imports nothing outside the
# standard library, so they are repeated here and a test checks that they agree.
ENV_PORT = "KWATT_PORT"
ENV_BATCH_SIZE = "KWATT_BATCH_SIZE"
ENV_TARGET_METRIC_NAME = "KWATT_TARGET_METRIC_NAME"
DEFAULT_PORT = 8931
DEFAULT_TIMEOUT_S = 0.2
MAX_METRIC_NAME = 256

log = logging.getLogger("kwatt_client")


def visible_gpu_uuids(env: Mapping[str, str] | None = None) -> list[str]:
    """GPU UUIDs this process sees: CUDA_VISIBLE_DEVICES, else NVIDIA_VISIBLE_DEVICES.

    Only UUID entries count (GPU-… or MIG-…); indices cannot be matched by the sidecar.
    """
    env = os.environ if env is None else env
    for name in ("CUDA_VISIBLE_DEVICES", "NVIDIA_VISIBLE_DEVICES"):
        entries = [e.strip() for e in env.get(name, "").split(",") if e.strip()]
        uuids = [e for e in entries if e.startswith(("GPU-", "MIG-"))]
        if uuids:
            return uuids
    return []


def _batch_size(env: Mapping[str, str], name: str) -> int | None:
    text = env.get(name, "").strip()
    try:
        value = int(text)
    except ValueError:
        return None
    return value if value > 0 else None


def _metric_name(env: Mapping[str, str]) -> str | None:
    """The target metric's name (spec.target.metric), or None when absent or unusable."""
    raw = env.get(ENV_TARGET_METRIC_NAME)
    text = raw.strip() if isinstance(raw, str) else ""
    if not text:
        return None
    if len(text) > MAX_METRIC_NAME or not text.isprintable():
        log.warning("kwatt: %s=%.40r is not a metric name; ignored.", ENV_TARGET_METRIC_NAME, text)
        return None
    return text


def _hung_up(sock: socket.socket) -> bool:
    """True when an idle keep-alive socket is readable: the peer closed it (or sent bytes
    nobody asked for); either way it cannot carry the next call."""
    try:
        if hasattr(select, "poll"):  # poll has no FD_SETSIZE limit; trainers open many files
            poller = select.poll()
            poller.register(sock, select.POLLIN)
            return bool(poller.poll(0))
        return bool(select.select([sock], [], [], 0)[0])
    except (OSError, ValueError):
        return True


def _stop_reason(reply: Mapping[str, Any]) -> str:
    """Why the sidecar says to stop: "" unless it says stop, and when it gives no reason."""
    return str(reply.get("reason") or "") if reply.get("stop") else ""


def _answered(path: str, status: int, reply: Mapping[str, Any]) -> str:
    """A refusal or a server error, with the sidecar's sentence when it sent one."""
    error = reply.get("error")
    return f"{path} answered {status}: {error}" if error else f"{path} answered {status}"


class Kwatt:
    """Talks to the sidecar. Every method is safe to call whatever the sidecar's state.

    `batch_size` and `target_metric` (the name of the TrainingJob's target metric,
    spec.target.metric, as the framework callbacks look it up) come from the
    environment the operator sets; each is None when absent or unusable.
    """

    def __init__(
        self,
        *,
        port: int | None = None,
        batch_size_env: str = ENV_BATCH_SIZE,
        gpu_uuids: list[str] | None = None,
        steps_per_epoch: int | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        env: Mapping[str, str] | None = None,
        connect: bool = True,
    ) -> None:
        env = os.environ if env is None else env
        self.batch_size: int | None = _batch_size(env, batch_size_env)
        self.target_metric: str | None = _metric_name(env)
        self.gpu_uuids = list(gpu_uuids) if gpu_uuids is not None else visible_gpu_uuids(env)
        self.steps_per_epoch = steps_per_epoch
        self.timeout_s = timeout_s
        self.profiling = False
        self.stop_reason = ""
        self.quiet = False
        self._ended = False
        self._began = False
        self._warned_metric = False
        self._client_id = secrets.token_hex(6)
        self._calls = 0
        self._conn: http.client.HTTPConnection | None = None
        port_text = env.get(ENV_PORT, "")
        try:
            self.port = port if port is not None else int(port_text or DEFAULT_PORT)
        except ValueError:
            self._go_quiet(f"{ENV_PORT}={port_text!r} is not a port number")
            self.port = DEFAULT_PORT
        if connect:
            self.begin()

    # -- the protocol ------------------------------------------------------------------

    def begin(self) -> None:
        """Say hello: which GPUs the trainer uses. Called by the constructor."""
        if self._began or self.quiet:
            return
        self._began = True
        body: dict[str, Any] = {"gpu_uuids": self.gpu_uuids}
        if self.batch_size is not None:
            body["batch_size"] = self.batch_size
        if self.steps_per_epoch is not None:
            body["steps_per_epoch"] = self.steps_per_epoch
        reply = self._call("POST", "/v1/begin", body)
        if reply is not None:
            self.profiling = bool(reply.get("profiling"))

    def step(self) -> None:
        """A training step begins. A no-op (no call at all) once profiling is over."""
        if not self.profiling or self.quiet:
            return
        reply = self._call("POST", "/v1/step", None)
        self.profiling = bool(reply.get("profiling")) if reply is not None else False

    def epoch_end(self, metric: Any = None) -> None:
        """An epoch ended, with its validation metric if there is one.

        Anything that is not a finite number (NaN, infinity, a string, a tensor that will
        not convert) is sent as "no metric": the epoch still counts, nothing is made up and
        training is never interrupted."""
        if self.quiet:
            return
        reply = self._call("POST", "/v1/epoch", {"metric": self._metric(metric)})
        if reply is not None:
            self.profiling = bool(reply.get("profiling", self.profiling))
            if reply.get("stop"):
                self.stop_reason = _stop_reason(reply)

    def _metric(self, metric: Any) -> float | None:
        if metric is None:
            return None
        try:
            value = float(metric)
        except Exception:  # whatever the object raises, the training loop must not see it
            value = math.nan
        if math.isfinite(value):
            return value
        if not self._warned_metric:
            self._warned_metric = True
            log.warning(
                "kwatt: the epoch metric %.40r is not a finite number; it is sent as no metric "
                "(said once).",
                metric,
            )
        return None

    def should_stop(self) -> bool:
        """True when the target is reached, the run's cost passed its threshold or its epochs
        are used up. False whenever the sidecar cannot say."""
        if self.quiet:
            return False
        reply = self._call("GET", "/v1/should-stop", None)
        if reply is None:
            return False
        self.stop_reason = _stop_reason(reply)
        return bool(reply.get("stop"))

    def end(self, failed: bool = False, reached: bool | None = None) -> None:
        """Training finished (or failed). Safe to call more than once."""
        if self._ended:
            return
        self._ended = True
        self.profiling = False
        if not self.quiet:
            body: dict[str, Any] = {"failed": bool(failed)}
            if reached is not None:
                body["reached"] = bool(reached)
            self._call("POST", "/v1/end", body)
        self.close()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def __enter__(self) -> Kwatt:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # KeyboardInterrupt is the user stopping the run, not the training failing.
        failed = exc_type is not None and not issubclass(exc_type, KeyboardInterrupt)
        self.end(failed=failed)

    # -- transport -----------------------------------------------------------------------

    def _go_quiet(self, why: str) -> None:
        if not self.quiet:
            self.quiet = True
            self.profiling = False
            log.warning("kwatt: the sidecar cannot be used (%s); training goes on without it.", why)
        self.close()

    def _connection(self) -> http.client.HTTPConnection:
        """The keep-alive connection, or a new one if the sidecar has closed it meanwhile
        (it closes idle connections): a readable idle socket means the peer hung up."""
        conn = self._conn
        if conn is not None and conn.sock is not None and _hung_up(conn.sock):
            self.close()
            conn = None
        if conn is None or conn.sock is None:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=self.timeout_s)
            self._conn = conn
            conn.connect()
            conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return conn

    def _exchange(
        self, method: str, path: str, payload: bytes, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        conn = self._connection()
        conn.request(method, path, body=payload, headers=headers)
        # An answer with `Connection: close` makes http.client drop the socket itself
        # (conn.sock is None then), so the next call opens a new connection.
        response = conn.getresponse()
        return response.status, response.read()

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any] | None:
        """One call, tried twice at most: a lost connection, a timeout or a 5xx is retried
        once (under the same call name, so the sidecar counts it once) before going quiet."""
        payload = b"" if body is None else json.dumps(body, separators=(",", ":")).encode()
        self._calls += 1
        headers = {
            "Content-Type": "application/json",  # http.client adds the Content-Length
            "Kwatt-Call": f"{self._client_id}-{self._calls}",
        }
        why = ""
        for _ in range(2):
            try:
                status, data = self._exchange(method, path, payload, headers)
            except (OSError, http.client.HTTPException) as exc:
                self.close()
                why = f"{path} on 127.0.0.1:{self.port} failed: {exc or type(exc).__name__}"
                continue
            try:
                reply = json.loads(data) if data else {}
            except ValueError:
                reply = None
            if not isinstance(reply, dict):
                self._go_quiet(f"{path} answered with something that is not a JSON object")
                return None
            if status >= 500:
                why = _answered(path, status, reply)
                continue
            if status >= 400:
                self._go_quiet(_answered(path, status, reply))
                return None
            return reply
        self._go_quiet(why)
        return None
