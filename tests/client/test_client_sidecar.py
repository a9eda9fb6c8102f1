"""The client's side of the protocol (docs/sidecar.md) against a real sidecar in this process:
what each call tells the sidecar, what the trainer learns back, one keep-alive connection,
and what it says when it goes quiet."""

from __future__ import annotations

import json
import logging
import os
import resource
import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from client_support import LoopbackServer, read_message
from sidecar_support import Node, Served, make_node, served
from test_client_retry import LossyLink

from kwatt_client import Kwatt, visible_gpu_uuids

pytestmark = pytest.mark.timeout(60)


@contextmanager
def sidecar(tmp_path: Path, idle_s: float = 30.0, **env: str) -> Iterator[tuple[Served, Node]]:
    node = make_node(tmp_path)
    with served(node, tmp_path, {"idle_timeout_s": idle_s}, **env) as sc:
        yield sc, node


@contextmanager
def linked(sc: Served) -> Iterator[LossyLink]:
    link = LossyLink(sc.port)
    try:
        yield link
    finally:
        link.close()


@contextmanager
def records(name: str) -> Iterator[list[logging.LogRecord]]:
    """The records of one logger, whatever propagation the process has set up."""
    seen: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record)

    handler = Keep(logging.DEBUG)
    logger = logging.getLogger(name)
    before = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield seen
    finally:
        logger.removeHandler(handler)
        logger.setLevel(before)


def warnings(seen: list[logging.LogRecord]) -> list[str]:
    return [r.getMessage() for r in seen if r.levelno == logging.WARNING]


def dead_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- what the hello says -------------------------------------------------------------------


def test_the_hello_names_the_batch_size_and_the_steps_per_epoch(tmp_path: Path) -> None:
    """The sidecar reports a run under the operator's batch size (1024 here) and notes a
    trainer that says it trains with another; it logs the steps per epoch it was told."""
    with sidecar(tmp_path) as (sc, node), records("kwatt.sidecar") as seen:
        env = {"KWATT_BATCH_SIZE": "256", "KWATT_PORT": str(sc.port)}
        kw = Kwatt(env=env, gpu_uuids=node.uuids, steps_per_epoch=50)
        assert not kw.quiet and kw.batch_size == 256
        assert any("batch size 256" in n for n in sc.sidecar.notes), sc.sidecar.notes
        (hello,) = [r for r in seen if "said hello" in r.getMessage()]
        assert hello.__dict__["steps_per_epoch"] == 50


def test_a_hello_without_them_leaves_the_sidecar_nothing_to_note(tmp_path: Path) -> None:
    with sidecar(tmp_path) as (sc, node), records("kwatt.sidecar") as seen:
        Kwatt(env={"KWATT_PORT": str(sc.port)}, gpu_uuids=node.uuids)
        assert not any("batch size" in n for n in sc.sidecar.notes), sc.sidecar.notes
        (hello,) = [r for r in seen if "said hello" in r.getMessage()]
        assert hello.__dict__["steps_per_epoch"] is None


def test_hello_is_said_once_and_never_by_a_quiet_client(tmp_path: Path) -> None:
    with sidecar(tmp_path) as (sc, node), linked(sc) as link:
        kw = Kwatt(port=link.port, gpu_uuids=node.uuids)
        kw.begin()  # a second begin() is a no-op
        assert link.paths == ["/v1/begin"]
        later = Kwatt(port=link.port, gpu_uuids=node.uuids, connect=False)
        link.fail = ["/v1/should-stop", "/v1/should-stop"]
        assert later.should_stop() is False and later.quiet
        later.begin()
        assert link.paths == ["/v1/begin", "/v1/should-stop", "/v1/should-stop"]


# --- profiling: steps only while the sidecar profiles ---------------------------------------


def test_steps_follow_the_profiling_flag_of_every_answer(tmp_path: Path) -> None:
    """1 warm-up and 2 measured steps per limit: an epoch of 2 steps is too short to ever
    hold a window (under 3 steps), so the sidecar ends profiling at that epoch's end and
    the client stops reporting steps there; an epoch end before any step changes nothing."""
    short = sidecar(tmp_path, KWATT_WARMUP_STEPS="1", KWATT_MEASURE_STEPS="2")
    with short as (sc, node), linked(sc) as link:
        kw = Kwatt(port=link.port, gpu_uuids=node.uuids)
        assert kw.profiling
        kw.epoch_end(None)
        assert kw.profiling
        kw.step()
        kw.step()
        assert kw.profiling
        kw.epoch_end(0.1)
        assert not kw.profiling
        sent = len(link.paths)
        kw.step()
        kw.step()
        assert len(link.paths) == sent  # no call at all
        assert link.paths.count("/v1/step") == 2


def test_when_the_sidecar_vanishes_the_training_goes_on_unreported(tmp_path: Path) -> None:
    """While profiling: the step that finds no sidecar returns, the client goes quiet and
    stops profiling (a `while kw.profiling` loop ends), and nothing raises."""
    node = make_node(tmp_path)
    sc = served(node, tmp_path, {}, KWATT_WARMUP_STEPS="1000")
    with sc:
        kw = Kwatt(port=sc.port, gpu_uuids=node.uuids)
        other = Kwatt(port=sc.port, gpu_uuids=node.uuids)
        assert kw.profiling and other.profiling
    with records("kwatt_client") as seen:
        kw.step()
        assert kw.quiet and kw.profiling is False
        assert other.should_stop() is False and other.quiet and not other.profiling
        kw.end()
    said = warnings(seen)
    assert len(said) == 2  # one per client, once each
    assert all(f"127.0.0.1:{sc.port}" in s and "training goes on" in s for s in said), said


# --- stopping -------------------------------------------------------------------------------


def test_should_stop_says_when_and_why(tmp_path: Path) -> None:
    with sidecar(tmp_path, KWATT_POWER_MODE="observe", KWATT_MAX_EPOCHS="2") as (sc, node):
        kw = Kwatt(port=sc.port, gpu_uuids=node.uuids)
        kw.epoch_end(0.1)
        assert kw.should_stop() is False and kw.stop_reason == ""
        kw.epoch_end(0.2)
        assert kw.stop_reason == "max epochs"  # the epoch's own answer says it already
        assert kw.should_stop() is True and kw.stop_reason == "max epochs"
        kw.end()
        assert kw.should_stop() is True and kw.stop_reason == "ended"


# --- the end --------------------------------------------------------------------------------


def test_end_reports_an_ordinary_end_once(tmp_path: Path) -> None:
    with sidecar(tmp_path, KWATT_POWER_MODE="observe") as (sc, node), linked(sc) as link:
        kw = Kwatt(port=link.port, gpu_uuids=node.uuids)
        kw.epoch_end(0.5)
        kw.end()
        kw.end()
        assert link.paths.count("/v1/end") == 1 and not kw.quiet
        assert sc.sidecar.final is not None and sc.sidecar.final.result == "exhausted"


def test_end_passes_on_the_trainers_own_verdict(tmp_path: Path) -> None:
    """Without a target in the TrainingJob, the trainer's `reached` decides the result."""
    with sidecar(tmp_path, KWATT_POWER_MODE="observe") as (sc, node):
        kw = Kwatt(port=sc.port, gpu_uuids=node.uuids)
        kw.epoch_end(0.5)
        kw.end(reached=True)
        assert sc.sidecar.final is not None and sc.sidecar.final.result == "reached"


def test_after_the_end_steps_make_no_call(tmp_path: Path) -> None:
    with sidecar(tmp_path) as (sc, node), linked(sc) as link:
        kw = Kwatt(port=link.port, gpu_uuids=node.uuids)
        assert kw.profiling
        kw.end()
        assert not kw.profiling
        kw.step()
        assert link.paths == ["/v1/begin", "/v1/end"]


# --- one keep-alive connection --------------------------------------------------------------


@contextmanager
def many_open_files(count: int) -> Iterator[None]:
    """Hold `count` descriptors, so that sockets opened meanwhile get numbers above 1024
    (select()'s FD_SETSIZE), as in a trainer with many data files open."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = count + 256
    if hard != resource.RLIM_INFINITY and hard < want:
        pytest.skip(f"needs {want} open files, the hard limit is {hard}")
    if soft != resource.RLIM_INFINITY and soft < want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(count)]
    try:
        yield
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("many_files", [False, True], ids=["few-files", "fd-over-1024"])
@pytest.mark.parametrize("poll", [True, False], ids=["poll", "select-only"])
def test_one_connection_and_an_idle_close_costs_no_retry(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, poll: bool, many_files: bool
) -> None:
    """Calls share one connection; when the sidecar has closed it while idle the client
    opens a new one before the call, so the call's one retry is still there for a lost
    answer. Where the idle socket cannot be checked (no poll(), and a descriptor beyond
    select()'s reach) each call takes a new connection rather than risk a dead one."""
    if not poll:
        monkeypatch.delattr(select, "poll")
    with sidecar(tmp_path, idle_s=30.0) as (sc, node), linked(sc) as link:
        link.idle_s = 0.5
        with many_open_files(1100 if many_files else 0):
            kw = Kwatt(port=link.port, gpu_uuids=node.uuids)
            for _ in range(3):
                assert kw.should_stop() is False
            checkable = poll or not many_files
            if checkable:
                assert link.connections == 1
            time.sleep(1.0)  # the link has closed the idle connection meanwhile
            link.lose = ["/v1/epoch"]  # the answer is lost: the retry is needed for it
            kw.epoch_end(0.5)
            assert not kw.quiet
            assert sc.sidecar.state is not None and sc.sidecar.state.epochs == 1
            if checkable:
                assert link.connections == 3  # after the idle close, and after the loss
            kw.close()


class ClosingSidecar(LoopbackServer):
    """A sidecar stand-in that answers each connection's first request with
    `Connection: close` and then, as HTTP lets a server do, reads nothing more on it; it
    records any request sent there anyway. Its answers are empty objects."""

    def __init__(
        self, body: bytes = b"{}", answers: dict[str, bytes | tuple[int, bytes]] | None = None
    ) -> None:
        self.body = body
        self.answers = answers or {}  # per path, instead of `body`: a body, or (status, body)
        self.paths: list[str] = []
        self.requests: list[bytes] = []
        self.ignored: list[bytes] = []
        super().__init__()

    def handle(self, conn: socket.socket) -> None:
        with conn:
            request = read_message(conn.makefile("rb"))
            if request is None:
                return
            path = request.split(b" ", 2)[1].decode()
            self.paths.append(path)
            self.requests.append(request)
            answer = self.answers.get(path, self.body)
            status, body = answer if isinstance(answer, tuple) else (200, answer)
            conn.sendall(
                b"HTTP/1.1 %d Whatever\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (status, len(body), body)
            )
            conn.settimeout(0.5)
            try:
                late = conn.recv(65536)
            except OSError:
                return
            if late:
                self.ignored.append(late)

    def close(self) -> None:
        self.listener.close()


@pytest.mark.parametrize("body", [b"{}", b""], ids=["empty-object", "no-body"])
def test_a_connection_the_sidecar_closes_is_not_used_again(body: bytes) -> None:
    """Also: a sidecar that answers empty objects (or nothing) never makes the trainer report
    steps or stop: nothing is read into an answer that it does not hold."""
    fake = ClosingSidecar(body)
    try:
        kw = Kwatt(port=fake.port, gpu_uuids=[])
        assert not kw.profiling
        kw.step()
        assert kw.should_stop() is False and kw.stop_reason == ""
        kw.epoch_end(0.5)
        assert kw.stop_reason == "" and not kw.profiling
        assert not kw.quiet
        time.sleep(0.6)
        assert fake.ignored == []
        assert fake.paths == ["/v1/begin", "/v1/should-stop", "/v1/epoch"]
        # Bodies as the protocol has them: JSON for the hello and the epoch, none to ask.
        begin, ask, epoch = (r.split(b"\r\n\r\n", 1)[1] for r in fake.requests)
        assert json.loads(begin) == {"gpu_uuids": []} and json.loads(epoch) == {"metric": 0.5}
        assert ask == b""
    finally:
        fake.close()


def test_an_answer_that_is_not_a_json_object_makes_the_client_quiet() -> None:
    fake = ClosingSidecar(b"<html>Bad gateway</html>")
    try:
        with records("kwatt_client") as seen:
            kw = Kwatt(port=fake.port, gpu_uuids=[])
            assert kw.quiet and kw.should_stop() is False
        (said,) = warnings(seen)
        assert "/v1/begin answered with something that is not a JSON object" in said
        assert fake.paths == ["/v1/begin"]  # not retried: the sidecar did answer
    finally:
        fake.close()


def test_a_step_answer_that_does_not_say_profiling_ends_the_steps() -> None:
    """Steps are reported only while the sidecar says it profiles: an answer that does not
    say so (another sidecar version, a proxy's empty object) is not a yes."""
    fake = ClosingSidecar(answers={"/v1/begin": b'{"profiling": true}'})
    try:
        kw = Kwatt(port=fake.port, gpu_uuids=[])
        assert kw.profiling
        kw.step()
        assert not kw.profiling
        kw.step()
        assert fake.paths == ["/v1/begin", "/v1/step"] and not kw.quiet
    finally:
        fake.close()


def test_an_answer_keeps_to_what_it_says() -> None:
    """A stop without a reason has the reason "" (never a made-up word), a reason without a
    stop is no stop, and an epoch answer that does not mention profiling leaves the steps
    as they were."""
    fake = ClosingSidecar(
        answers={
            "/v1/begin": b'{"profiling": true}',
            "/v1/epoch": b'{"stop": true}',
            "/v1/should-stop": b'{"stop": false, "reason": "cost"}',
        }
    )
    try:
        kw = Kwatt(port=fake.port, gpu_uuids=[])
        kw.epoch_end(0.5)
        assert kw.profiling and kw.stop_reason == ""
        assert kw.should_stop() is False and kw.stop_reason == ""
        fake.answers["/v1/should-stop"] = b'{"stop": true, "reason": null}'
        assert kw.should_stop() is True and kw.stop_reason == ""
        assert not kw.quiet
    finally:
        fake.close()


@pytest.mark.parametrize(("status", "path"), [(409, "/v1/begin"), (503, "/v1/begin")])
def test_a_refusal_without_a_sentence_is_said_with_its_status(status: int, path: str) -> None:
    fake = ClosingSidecar(answers={path: (status, b"{}")})
    try:
        with records("kwatt_client") as seen:
            kw = Kwatt(port=fake.port, gpu_uuids=[])
        assert kw.quiet
        (said,) = warnings(seen)
        assert f"({path} answered {status})" in said, said
    finally:
        fake.close()


def test_a_bad_port_is_said_naming_the_variable() -> None:
    with records("kwatt_client") as seen:
        kw = Kwatt(env={"KWATT_PORT": "eighty"})
    assert kw.quiet
    (said,) = warnings(seen)
    assert "KWATT_PORT='eighty'" in said and "not a port number" in said


# --- what the client says when it goes quiet ---------------------------------------------


def test_no_sidecar_is_said_once_with_the_address(tmp_path: Path) -> None:
    port = dead_port()
    with records("kwatt_client") as seen:
        kw = Kwatt(port=port, gpu_uuids=[])
        kw.should_stop()
        kw.epoch_end(0.5)
    (said,) = warnings(seen)
    assert "sidecar cannot be used" in said and "training goes on without it" in said
    assert f"127.0.0.1:{port}" in said and "refused" in said


def test_a_request_the_sidecar_refuses_makes_the_client_quiet(tmp_path: Path) -> None:
    """A 400 (here a steps-per-epoch of 0, which the protocol refuses) is not retried."""
    with sidecar(tmp_path) as (sc, node), records("kwatt_client") as seen:
        kw = Kwatt(port=sc.port, gpu_uuids=node.uuids, steps_per_epoch=0)
        assert kw.quiet and sc.sidecar.state is None
    (said,) = warnings(seen)
    assert "/v1/begin answered 400" in said and "steps_per_epoch" in said


def test_a_refusal_is_said_with_the_sidecars_own_sentence(tmp_path: Path) -> None:
    """A second hello naming other GPUs is refused (409); the client goes quiet saying why."""
    with sidecar(tmp_path) as (sc, node), records("kwatt_client") as seen:
        Kwatt(port=sc.port, gpu_uuids=node.uuids)
        other = Kwatt(port=sc.port, gpu_uuids=["GPU-someone-else"])
        assert other.quiet
    (said,) = warnings(seen)
    assert "/v1/begin answered 409" in said and "must name the same GPUs" in said


def test_two_server_errors_are_said_with_the_sidecars_sentence(tmp_path: Path) -> None:
    with sidecar(tmp_path) as (sc, node), linked(sc) as link, records("kwatt_client") as seen:
        kw = Kwatt(port=link.port, gpu_uuids=node.uuids)
        link.fail = ["/v1/step", "/v1/step"]
        kw.step()
        assert kw.quiet
    (said,) = warnings(seen)
    assert "/v1/step answered 500" in said and "The simulated NVML call failed." in said


def test_a_bad_metric_is_said_once_naming_the_value(tmp_path: Path) -> None:
    with sidecar(tmp_path) as (sc, node), records("kwatt_client") as seen:
        kw = Kwatt(port=sc.port, gpu_uuids=node.uuids)
        kw.epoch_end(float("nan"))
        kw.epoch_end(float("inf"))
        kw.epoch_end(0.5)
    (said,) = warnings(seen)
    assert "nan" in said and "not a finite number" in said and "no metric" in said


# --- the environment ------------------------------------------------------------------------


def test_the_gpus_come_from_the_process_environment_by_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "GPU-1,GPU-2")
    assert visible_gpu_uuids() == ["GPU-1", "GPU-2"]
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    monkeypatch.setenv("NVIDIA_VISIBLE_DEVICES", "GPU-3")
    assert visible_gpu_uuids() == ["GPU-3"]


def test_a_metric_name_of_256_characters_is_still_a_name() -> None:
    """docs/sidecar.md: a name over 256 characters is ignored; 256 itself is fine."""
    name = "m" * 256
    kw = Kwatt(env={"KWATT_TARGET_METRIC_NAME": name}, connect=False)
    assert kw.target_metric == name


@pytest.mark.parametrize(
    ("text", "expected"),
    [("1", 1), ("128", 128), (" 64 ", 64), ("0", None), ("-8", None), ("", None)],
)
def test_the_batch_size_from_the_environment(text: str, expected: int | None) -> None:
    """A batch size is a whole number from 1 up; anything else is as good as none."""
    assert Kwatt(env={"KWATT_BATCH_SIZE": text}, connect=False).batch_size == expected


def test_a_bad_metric_name_is_said_naming_the_variable() -> None:
    with records("kwatt_client") as seen:
        kw = Kwatt(env={"KWATT_TARGET_METRIC_NAME": "acc\x00"}, connect=False)
    assert kw.target_metric is None
    (said,) = warnings(seen)
    assert "KWATT_TARGET_METRIC_NAME" in said and "acc" in said and "ignored" in said


def test_a_new_client_before_its_hello() -> None:
    """The documented default port; no steps reported and no stop reason before the
    sidecar has answered the hello."""
    port = dead_port()
    assert Kwatt(env={}, connect=False).port == 8931
    kw = Kwatt(env={"KWATT_PORT": str(port)}, connect=False)
    assert kw.port == port and not kw.quiet
    assert not kw.profiling and kw.stop_reason == ""
    kw.step()  # nothing listens there: a call would make it quiet
    assert not kw.quiet
