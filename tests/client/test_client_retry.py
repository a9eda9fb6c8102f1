"""The client against a real sidecar behind a lossy connection: one retry, counted once,
and nothing a training loop hands it ever raises back."""

from __future__ import annotations

import math
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from client_support import LoopbackServer, read_message
from sidecar_support import Served, make_node, served

from kwatt_client import Kwatt

pytestmark = pytest.mark.timeout(60)


class LossyLink(LoopbackServer):
    """A TCP relay between client and sidecar that loses chosen answers: after forwarding a
    call on `lose`'s list it closes the client's connection (the sidecar did the work), or
    answers a 500 itself for a path on `fail`'s list (the sidecar never saw it). Like the
    sidecar, it closes a client connection idle for `idle_s`. `connections` counts the
    client connections accepted."""

    def __init__(self, target: int, idle_s: float = 0.5) -> None:
        self.target = target
        self.idle_s = idle_s
        self.lose: list[str] = []
        self.fail: list[str] = []
        self.paths: list[str] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        upstream = socket.create_connection(("127.0.0.1", self.target))
        conn.settimeout(self.idle_s)
        down, up = conn.makefile("rb"), upstream.makefile("rb")
        try:
            while (request := read_message(down)) is not None:
                path = request.split(b" ", 2)[1].decode()
                self.paths.append(path)
                if path in self.fail:
                    self.fail.remove(path)
                    body = b'{"error": "The simulated NVML call failed."}'
                    conn.sendall(
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json"
                        b"\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body)
                    )
                    continue
                upstream.sendall(request)
                answer = read_message(up)
                if answer is None:
                    return
                if path in self.lose:
                    self.lose.remove(path)
                    return  # the answer is lost with the connection
                conn.sendall(answer)
        except OSError:
            pass
        finally:
            conn.close()
            upstream.close()

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def sidecar(tmp_path: Path) -> Iterator[tuple[Served, list[str]]]:
    node = make_node(tmp_path)
    with served(node, tmp_path, {"idle_timeout_s": 0.5}, KWATT_WARMUP_STEPS="1000") as sc:
        yield sc, node.uuids


@pytest.fixture
def link(sidecar: tuple[Served, list[str]]) -> Iterator[LossyLink]:
    relay = LossyLink(sidecar[0].port)
    yield relay
    relay.close()


def epochs(sc: Served) -> int:
    assert sc.sidecar.state is not None
    return sc.sidecar.state.epochs


def test_a_lost_answer_is_retried_and_the_epoch_counted_once(
    sidecar: tuple[Served, list[str]], link: LossyLink
) -> None:
    sc, uuids = sidecar
    kw = Kwatt(port=link.port, gpu_uuids=uuids)
    link.lose = ["/v1/epoch"]
    kw.epoch_end(0.5)
    assert not kw.quiet
    assert link.paths.count("/v1/epoch") == 2  # sent twice
    assert epochs(sc) == 1  # counted once
    kw.epoch_end(0.6)
    assert epochs(sc) == 2 and not kw.quiet


def test_a_500_is_retried_once(sidecar: tuple[Served, list[str]], link: LossyLink) -> None:
    sc, uuids = sidecar
    kw = Kwatt(port=link.port, gpu_uuids=uuids)
    assert kw.profiling
    link.fail = ["/v1/step"]
    kw.step()
    assert not kw.quiet and kw.profiling
    state = sc.sidecar.state
    assert state is not None and state.prof is not None and state.prof.profiling_steps == 1


def test_two_failures_in_a_row_make_the_client_quiet_not_the_training_fail(
    sidecar: tuple[Served, list[str]], link: LossyLink
) -> None:
    sc, uuids = sidecar
    kw = Kwatt(port=link.port, gpu_uuids=uuids)
    link.lose = ["/v1/epoch", "/v1/epoch"]
    kw.epoch_end(0.5)
    assert kw.quiet
    assert epochs(sc) == 1  # the sidecar saw the epoch; the client just stopped talking
    sent = len(link.paths)
    kw.step()
    kw.epoch_end(0.7)
    assert kw.should_stop() is False
    kw.end()
    assert len(link.paths) == sent  # quiet means no more calls


def test_an_idle_close_does_not_use_up_the_retry(
    sidecar: tuple[Served, list[str]], link: LossyLink
) -> None:
    """The sidecar closes idle connections (0.5 s here, 30 s by default); a long epoch
    must not leave the client one failure away from silence."""
    sc, uuids = sidecar
    kw = Kwatt(port=sc.port, gpu_uuids=uuids)
    kw.should_stop()
    time.sleep(1.0)  # the sidecar has closed the client's connection meanwhile
    kw.epoch_end(0.5)
    assert not kw.quiet and epochs(sc) == 1
    via = Kwatt(port=link.port, gpu_uuids=uuids)
    via.should_stop()
    time.sleep(1.0)  # the link has closed this one
    link.lose = ["/v1/epoch"]  # the one retry is needed for this, not for the idle close
    via.epoch_end(0.5)
    assert not via.quiet and epochs(sc) == 2


class Unconvertible:
    def __float__(self) -> float:
        raise RuntimeError("a tensor on a device that went away")


@pytest.mark.parametrize(
    "metric", [math.inf, -math.inf, math.nan, "abc", Unconvertible(), [0.5], {"acc": 1}]
)
def test_epoch_end_takes_anything_and_counts_the_epoch(
    sidecar: tuple[Served, list[str]], metric: object
) -> None:
    sc, uuids = sidecar
    kw = Kwatt(port=sc.port, gpu_uuids=uuids)
    kw.epoch_end(metric)
    kw.epoch_end(metric)
    assert not kw.quiet and epochs(sc) == 2
    kw.epoch_end(0.25)
    assert sc.sidecar.state is not None and sc.sidecar.state.metric == 0.25
    assert not kw.quiet


def test_numbers_of_other_types_are_sent_as_floats(sidecar: tuple[Served, list[str]]) -> None:
    sc, uuids = sidecar
    kw = Kwatt(port=sc.port, gpu_uuids=uuids)
    kw.epoch_end("0.75")  # float() of a string a logger produced
    assert sc.sidecar.state is not None and sc.sidecar.state.metric == 0.75
    kw.epoch_end(True)  # bool is an int; float(True) == 1.0, sent as a number
    assert sc.sidecar.state.metric == 1.0 and not kw.quiet
