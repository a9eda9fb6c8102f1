"""The protocol's request rules (docs/sidecar.md, "Protocol"): what each body may hold, and
the Kwatt-Call header. The body checks are pure functions; the header goes through the
real server in this process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sidecar_support import call, make_node, served

from kwatt_sidecar.server import HttpError, decode, parse_begin, parse_end, parse_epoch

pytestmark = pytest.mark.timeout(60)
TOP = 2**31 - 1


def refused(fn: object, body: object, field: str) -> None:
    with pytest.raises(HttpError) as err:
        fn(body)  # type: ignore[operator]
    assert err.value.status == 400
    message = str(err.value)
    assert field in message and message[:1].isupper() and message.endswith(".")


def test_begin_reads_the_gpus_the_steps_and_the_batch_size() -> None:
    assert parse_begin({}) == ([], None, None)
    assert parse_begin({"gpu_uuids": [], "steps_per_epoch": None}) == ([], None, None)
    body = {"gpu_uuids": ["GPU-b", "GPU-a", "GPU-b"], "steps_per_epoch": 390, "batch_size": 128}
    assert parse_begin(body) == (["GPU-b", "GPU-a"], 390, 128)  # a repeat counts once


def test_begin_takes_integers_from_1_to_2_to_the_31_minus_1() -> None:
    for field in ("steps_per_epoch", "batch_size"):
        for good in (1, TOP):
            assert good in parse_begin({field: good})[1:]
        for bad in (0, -1, TOP + 1, 2.5, 1.0, "7", True, False, [1]):
            refused(parse_begin, {field: bad}, field)


def test_begin_takes_up_to_64_uuids_of_1_to_128_printable_characters() -> None:
    longest = "G" * 128
    many = [f"GPU-{i}" for i in range(64)]
    assert parse_begin({"gpu_uuids": [longest]})[0] == [longest]
    assert parse_begin({"gpu_uuids": many})[0] == many
    for bad in (["G" * 129], [""], ["GPU-\n1"], ["GPU-\x00"], [7], [None], "GPU-a", {"a": 1}):
        refused(parse_begin, {"gpu_uuids": bad}, "gpu_uuids")
    refused(parse_begin, {"gpu_uuids": [*many, "GPU-64"]}, "64")


def test_epoch_takes_a_finite_number_or_null() -> None:
    assert parse_epoch({}) is None
    assert parse_epoch({"metric": None}) is None
    assert parse_epoch({"metric": 1}) == 1.0 and isinstance(parse_epoch({"metric": 1}), float)
    assert parse_epoch({"metric": -0.25}) == -0.25
    # Python's JSON reads NaN and Infinity: a diverged run must not send them as metrics.
    for bad in (float("nan"), float("inf"), float("-inf"), True, "0.9", [0.9]):
        refused(parse_epoch, {"metric": bad}, "metric")
    assert decode(b'{"metric": NaN}') != {}  # decoded, then refused above


def test_end_takes_failed_and_reached_as_booleans() -> None:
    assert parse_end({}) == (False, None)
    assert parse_end({"failed": True, "reached": False}) == (True, False)
    assert parse_end({"reached": True, "failed": False}) == (False, True)
    assert parse_end({"reached": None}) == (False, None)
    for failed in (1, 0, "true", None):
        refused(parse_end, {"failed": failed}, "failed")
    for reached in (1, "yes", [True]):
        refused(parse_end, {"reached": reached}, "reached")


def test_every_body_is_a_json_object() -> None:
    for parse in (parse_begin, parse_epoch, parse_end):
        for body in ([], "x", 3, None):
            refused(parse, body, "JSON object")


def test_bodies_decode_as_json_and_nothing_else() -> None:
    assert decode(b"") == {} and decode(b"  \r\n ") == {}
    assert decode(b'{"a": [1, 2]}') == {"a": [1, 2]}
    assert decode('{"gpu": "GPU-é"}'.encode()) == {"gpu": "GPU-é"}
    for bad in (b"{", b"{'a': 1}", b"\xff\xfe{}", b"nul"):
        with pytest.raises(HttpError) as err:
            decode(bad)
        assert err.value.status == 400 and str(err.value) == "The request body is not valid JSON."
    with pytest.raises(HttpError, match="nested too deeply"):
        decode(b"[" * 100_000 + b"]" * 100_000)


def test_a_call_is_named_with_1_to_64_printable_ascii_characters(tmp_path: Path) -> None:
    """A retried call carries the first one's name; a name that breaks the rule is a 400
    naming the header, and the call is not counted."""
    node = make_node(tmp_path)
    with served(node, tmp_path) as sc:
        hello = json.dumps({"gpu_uuids": node.uuids}).encode()
        assert call(sc.port, "POST", "/v1/begin", hello)[0] == 200
        for good in ("a", "x" * 64, "r4nd0m-id-17"):
            status, _, _ = call(sc.port, "POST", "/v1/epoch", b"{}", {"Kwatt-Call": good})
            assert status == 200, good
        for bad in ("", "x" * 65, "caf\u00e9-1", "a\tb"):
            # http.client sends a str header as Latin-1, as a trainer's library would.
            status, _, reply = call(sc.port, "POST", "/v1/epoch", b"{}", {"Kwatt-Call": bad})
            assert status == 400 and "Kwatt-Call" in reply["error"], bad
        assert sc.sidecar.state is not None and sc.sidecar.state.epochs == 3
