"""The sandbox's protobuf decoding of kubectl's request bodies (pure functions).

The sandbox is an emulator for tests and demos; production is a real cluster. The
bodies are built by hand from the Kubernetes protobuf encoding (the `k8s\\0` magic,
a runtime.Unknown envelope, fields by their numbers in k8s.io/api's generated.proto).
"""

from __future__ import annotations

import pytest

from kwatt_sandbox import protobuf
from kwatt_sandbox.protobuf import encode_field as f


def _varint_field(number: int, value: int) -> bytes:
    return bytes([number << 3, value])  # small numbers and values only


def _envelope(api_version: str, kind: str, raw: bytes) -> bytes:
    type_meta = f(1, api_version.encode()) + f(2, kind.encode())
    return (
        protobuf.MAGIC + f(1, type_meta) + f(2, raw) + f(4, b"application/vnd.kubernetes.protobuf")
    )


def test_decodes_a_namespace_with_labels() -> None:
    label = f(1, b"team") + f(2, b"ml")
    meta = f(1, b"x") + f(11, label) + f(8, b"")  # creationTimestamp zero: dropped
    obj = protobuf.decode_object(_envelope("v1", "Namespace", f(1, meta)))
    assert obj == {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": "x", "labels": {"team": "ml"}},
    }


def test_decodes_a_job_with_container_command_and_pointer_zeroes() -> None:
    container = f(1, b"main") + f(2, b"busybox") + f(3, b"python") + f(3, b"-c") + f(5, b"")
    container += f(8, b"")  # resources: {}
    pod_spec = f(2, container) + f(3, b"Never")
    template = f(1, b"") + f(2, pod_spec)
    spec = f(6, template) + _varint_field(7, 0) + _varint_field(10, 0)
    obj = protobuf.decode_object(_envelope("batch/v1", "Job", f(1, f(1, b"j")) + f(2, spec)))
    assert obj["spec"]["backoffLimit"] == 0  # a *int32: an explicit zero is kept
    assert obj["spec"]["suspend"] is False
    assert obj["spec"]["template"]["spec"] == {
        "containers": [
            {"name": "main", "image": "busybox", "command": ["python", "-c"], "resources": {}}
        ],
        "restartPolicy": "Never",
    }


def test_secret_data_is_base64_and_unknown_kinds_are_refused() -> None:
    entry = f(1, b"k") + f(2, b"v")
    obj = protobuf.decode_object(_envelope("v1", "Secret", f(1, f(1, b"s")) + f(2, entry)))
    assert obj["data"] == {"k": "dg=="}
    with pytest.raises(protobuf.ProtobufError, match="send application/json"):
        protobuf.decode_object(_envelope("apps/v1", "Deployment", b""))
    with pytest.raises(protobuf.ProtobufError, match="magic"):
        protobuf.decode_object(b"{}")


def test_openapi_v2_document_is_a_swagger_2_header() -> None:
    doc = protobuf.openapi_v2_document("t", "v1")
    assert protobuf.fields(doc) == [(1, b"2.0"), (2, f(1, b"t") + f(2, b"v1"))]
