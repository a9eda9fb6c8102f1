"""Kubernetes protobuf request bodies, for the kinds kubectl sends that way.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. kubectl's typed clients (`kubectl create namespace|configmap|secret|job|
serviceaccount`, `kubectl run`, `kubectl auth can-i`) send
`application/vnd.kubernetes.protobuf` bodies and never fall back to JSON, so the
sandbox decodes the envelope (`k8s\\0` + runtime.Unknown) and the fields of the
kinds below, by their field numbers in k8s.io/api's generated.proto. Fields the
tables do not name are dropped. The module also encodes the smallest OpenAPI v2
document (gnostic protobuf) that kubectl's client-side validation accepts.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

MAGIC = b"k8s\x00"
CONTENT_TYPE = "application/vnd.kubernetes.protobuf"
OPENAPI_V2_PROTOBUF = "application/com.github.proto-openapi.spec.v2.v1.0+protobuf"


class ProtobufError(ValueError):
    """A body that is not a Kubernetes protobuf message the sandbox understands."""


# A field is (json name, type, repeated). Types: "string", "int", "bool", "bytes",
# "map" (string -> string), "bytesmap" (string -> base64), "quantitymap",
# "time", "intorstring", or the name of a message in MESSAGES.
Field = tuple[str, str, bool]

_S, _I, _B = "string", "int", "bool"


def _f(name: str, kind: str = _S, repeated: bool = False) -> Field:
    return (name, kind, repeated)


MESSAGES: dict[str, dict[int, Field]] = {
    "TypeMeta": {1: _f("apiVersion"), 2: _f("kind")},
    "ObjectMeta": {
        1: _f("name"),
        2: _f("generateName"),
        3: _f("namespace"),
        5: _f("uid"),
        6: _f("resourceVersion"),
        7: _f("generation", _I),
        8: _f("creationTimestamp", "time"),
        11: _f("labels", "map"),
        12: _f("annotations", "map"),
        13: _f("ownerReferences", "OwnerReference", True),
        14: _f("finalizers", _S, True),
    },
    "OwnerReference": {
        1: _f("kind"),
        3: _f("name"),
        4: _f("uid"),
        5: _f("apiVersion"),
        6: _f("controller", _B),
        7: _f("blockOwnerDeletion", _B),
    },
    "LabelSelector": {1: _f("matchLabels", "map")},
    "Namespace": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "NamespaceSpec")},
    "NamespaceSpec": {1: _f("finalizers", _S, True)},
    "ConfigMap": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("data", "map"),
        3: _f("binaryData", "bytesmap"),
        4: _f("immutable", _B),
    },
    "Secret": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("data", "bytesmap"),
        3: _f("type"),
        4: _f("stringData", "map"),
        5: _f("immutable", _B),
    },
    "ServiceAccount": {
        1: _f("metadata", "ObjectMeta"),
        4: _f("automountServiceAccountToken", _B),
    },
    "Pod": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "PodSpec")},
    "PodTemplateSpec": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "PodSpec")},
    "PodSpec": {
        2: _f("containers", "Container", True),
        3: _f("restartPolicy"),
        4: _f("terminationGracePeriodSeconds", _I),
        5: _f("activeDeadlineSeconds", _I),
        6: _f("dnsPolicy"),
        7: _f("nodeSelector", "map"),
        8: _f("serviceAccountName"),
        10: _f("nodeName"),
        19: _f("schedulerName"),
        20: _f("initContainers", "Container", True),
        24: _f("priorityClassName"),
    },
    "Container": {
        1: _f("name"),
        2: _f("image"),
        3: _f("command", _S, True),
        4: _f("args", _S, True),
        5: _f("workingDir"),
        6: _f("ports", "ContainerPort", True),
        7: _f("env", "EnvVar", True),
        8: _f("resources", "ResourceRequirements"),
        13: _f("terminationMessagePath"),
        14: _f("imagePullPolicy"),
        16: _f("stdin", _B),
        17: _f("stdinOnce", _B),
        18: _f("tty", _B),
        20: _f("terminationMessagePolicy"),
    },
    "ContainerPort": {
        1: _f("name"),
        2: _f("hostPort", _I),
        3: _f("containerPort", _I),
        4: _f("protocol"),
    },
    "EnvVar": {1: _f("name"), 2: _f("value")},
    "ResourceRequirements": {1: _f("limits", "quantitymap"), 2: _f("requests", "quantitymap")},
    "Job": {1: _f("metadata", "ObjectMeta"), 2: _f("spec", "JobSpec")},
    "JobSpec": {
        1: _f("parallelism", _I),
        2: _f("completions", _I),
        3: _f("activeDeadlineSeconds", _I),
        4: _f("selector", "LabelSelector"),
        5: _f("manualSelector", _B),
        6: _f("template", "PodTemplateSpec"),
        7: _f("backoffLimit", _I),
        8: _f("ttlSecondsAfterFinished", _I),
        9: _f("completionMode"),
        10: _f("suspend", _B),
    },
    "SelfSubjectAccessReview": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("spec", "SelfSubjectAccessReviewSpec"),
    },
    "SelfSubjectAccessReviewSpec": {
        1: _f("resourceAttributes", "ResourceAttributes"),
        2: _f("nonResourceAttributes", "NonResourceAttributes"),
    },
    "ResourceAttributes": {
        1: _f("namespace"),
        2: _f("verb"),
        3: _f("group"),
        4: _f("version"),
        5: _f("resource"),
        6: _f("subresource"),
        7: _f("name"),
    },
    "NonResourceAttributes": {1: _f("path"), 2: _f("verb")},
    "SelfSubjectRulesReview": {
        1: _f("metadata", "ObjectMeta"),
        2: _f("spec", "SelfSubjectRulesReviewSpec"),
    },
    "SelfSubjectRulesReviewSpec": {1: _f("namespace")},
}

# Pointer fields (`*bool`, `*int64`): their zero values are meaningful and kept. The
# Go marshaller writes every other scalar even when empty, which JSON omits.
KEEP_ZERO = frozenset(
    {
        "immutable",
        "automountServiceAccountToken",
        "suspend",
        "manualSelector",
        "parallelism",
        "completions",
        "backoffLimit",
        "activeDeadlineSeconds",
        "ttlSecondsAfterFinished",
        "terminationGracePeriodSeconds",
        "controller",
        "blockOwnerDeletion",
    }
)

# Top-level kinds by (apiVersion, kind).
TOP_LEVEL = {
    ("v1", "Namespace"),
    ("v1", "ConfigMap"),
    ("v1", "Secret"),
    ("v1", "ServiceAccount"),
    ("v1", "Pod"),
    ("batch/v1", "Job"),
    ("authorization.k8s.io/v1", "SelfSubjectAccessReview"),
    ("authorization.k8s.io/v1", "SelfSubjectRulesReview"),
}


# --- wire format ----------------------------------------------------------------------------


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if pos >= len(data):
            raise ProtobufError("truncated varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ProtobufError("varint too long")


def fields(data: bytes) -> list[tuple[int, int | bytes]]:
    """The (field number, value) pairs of one message: ints for varints, bytes otherwise."""
    out: list[tuple[int, int | bytes]] = []
    pos = 0
    while pos < len(data):
        key, pos = _varint(data, pos)
        number, wire = key >> 3, key & 7
        value: int | bytes
        if wire == 0:
            value, pos = _varint(data, pos)
        elif wire == 2:
            length, pos = _varint(data, pos)
            if pos + length > len(data):
                raise ProtobufError("truncated field")
            value, pos = data[pos : pos + length], pos + length
        elif wire == 1:
            value, pos = int.from_bytes(data[pos : pos + 8], "little"), pos + 8
        elif wire == 5:
            value, pos = int.from_bytes(data[pos : pos + 4], "little"), pos + 4
        else:
            raise ProtobufError(f"unsupported wire type {wire}")
        out.append((number, value))
    return out


def _signed(value: int) -> int:
    return value - (1 << 64) if value >= 1 << 63 else value


def _text(value: int | bytes) -> str:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a length-delimited field")
    return value.decode("utf-8")


def _entry(value: int | bytes) -> tuple[str, bytes]:
    if not isinstance(value, bytes):
        raise ProtobufError("expected a map entry")
    key, val = "", b""
    for number, item in fields(value):
        if number == 1:
            key = _text(item)
        elif number == 2 and isinstance(item, bytes):
            val = item
    return key, val


def _time(value: bytes) -> str | None:
    seconds = next((v for n, v in fields(value) if n == 1 and isinstance(v, int)), 0)
    if not seconds:
        return None
    moment = datetime.fromtimestamp(_signed(seconds), UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def _scalar(kind: str, value: int | bytes) -> Any:
    if kind == _S:
        return _text(value)
    if kind == _I:
        if not isinstance(value, int):
            raise ProtobufError("expected a varint")
        return _signed(value)
    if kind == _B:
        return bool(value)
    if not isinstance(value, bytes):
        raise ProtobufError(f"expected a message for {kind}")
    if kind == "bytes":
        return base64.b64encode(value).decode()
    if kind == "time":
        return _time(value)
    if kind == "intorstring":
        parts = dict(fields(value))
        if parts.get(1, 0) == 1:
            return _text(parts.get(3, b""))
        return _signed(int(parts.get(2, 0)))
    return decode_message(kind, value)


def decode_message(name: str, data: bytes) -> dict[str, Any]:
    """Decode one message of `MESSAGES[name]` to its JSON form (unknown fields dropped)."""
    table = MESSAGES[name]
    out: dict[str, Any] = {}
    for number, value in fields(data):
        spec = table.get(number)
        if spec is None:
            continue
        key, kind, repeated = spec
        if kind in ("map", "bytesmap", "quantitymap"):
            entry_key, raw = _entry(value)
            if kind == "map":
                item: Any = raw.decode("utf-8")
            elif kind == "bytesmap":
                item = base64.b64encode(raw).decode()
            else:  # Quantity: {string: 1}
                item = next((_text(v) for n, v in fields(raw) if n == 1), "0")
            out.setdefault(key, {})[entry_key] = item
            continue
        decoded = _scalar(kind, value)
        if repeated:
            out.setdefault(key, []).append(decoded)
        elif decoded is not None and (key in KEEP_ZERO or decoded not in ("", 0, False)):
            out[key] = decoded
    return out


def decode_object(body: bytes) -> dict[str, Any]:
    """Decode a `k8s\\0`-prefixed runtime.Unknown envelope to a JSON-shaped object."""
    if not body.startswith(MAGIC):
        raise ProtobufError("the protobuf body lacks the k8s magic prefix")
    type_meta: dict[str, Any] = {}
    raw = b""
    for number, value in fields(body[len(MAGIC) :]):
        if number == 1 and isinstance(value, bytes):
            type_meta = decode_message("TypeMeta", value)
        elif number == 2 and isinstance(value, bytes):
            raw = value
    api_version, kind = str(type_meta.get("apiVersion", "")), str(type_meta.get("kind", ""))
    if (api_version, kind) not in TOP_LEVEL:
        raise ProtobufError(
            f"the sandbox decodes protobuf only for {sorted(k for _, k in TOP_LEVEL)}, "
            f"not {api_version} {kind}; send application/json"
        )
    return {"apiVersion": api_version, "kind": kind, **decode_message(kind, raw)}


# --- encoding (OpenAPI v2 for kubectl's validator) ------------------------------------------


def _encode_varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def encode_field(number: int, payload: bytes) -> bytes:
    """One length-delimited field."""
    return _encode_varint(number << 3 | 2) + _encode_varint(len(payload)) + payload


def openapi_v2_document(title: str, version: str) -> bytes:
    """gnostic openapi_v2.Document{swagger: "2.0", info: {title, version}}, no definitions.

    With no definitions kubectl's client-side validation finds no schema and leaves
    the check to the server, which is where the sandbox validates (fieldValidation).
    """
    info = encode_field(1, title.encode()) + encode_field(2, version.encode())
    return encode_field(1, b"2.0") + encode_field(2, info)
