"""Label and field selectors: parsing and matching, pure functions.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. The grammar follows the Kubernetes label-selector syntax (`=`, `==`, `!=`,
`in`, `notin`, `key`, `!key`, `>`, `<`) and the field-selector syntax (`=`, `==`,
`!=`), so that list and watch filter exactly as clients expect.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from kwatt_sandbox.errors import ApiError, bad_request

_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")


@dataclass(frozen=True)
class Requirement:
    """One clause of a label selector."""

    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!exists", "gt", "lt"
    values: tuple[str, ...] = ()

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!exists":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        if self.op in ("!=", "notin"):
            return not present or value not in self.values
        if self.op in ("gt", "lt"):
            try:
                number = int(value) if value is not None else None
            except ValueError:
                return False
            if number is None:
                return False
            bound = int(self.values[0])
            return number > bound if self.op == "gt" else number < bound
        return False


def _split_top_level(text: str) -> list[str]:
    """Split on commas that are not inside parentheses."""
    parts: list[str] = []
    depth = 0
    current: list[str] = []
    for char in text:
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        if char == "," and depth == 0:
            parts.append("".join(current))
            current = []
        else:
            current.append(char)
    parts.append("".join(current))
    return [p.strip() for p in parts if p.strip()]


def _check_key(key: str, clause: str) -> str:
    if not _KEY.match(key):
        raise bad_request(f"unable to parse requirement: invalid label key {key!r} in {clause!r}")
    return key


_SET_RE = re.compile(r"^(\S+)\s+(in|notin)\s*\((.*)\)$")


def parse_label_selector(text: str | None) -> tuple[Requirement, ...]:
    """Parse `labelSelector=`; raises a 400 `ApiError` on bad syntax."""
    if not text:
        return ()
    requirements: list[Requirement] = []
    for clause in _split_top_level(text):
        match = _SET_RE.match(clause)
        if match:
            key, op, raw = match.groups()
            values = tuple(v.strip() for v in raw.split(",") if v.strip())
            requirements.append(Requirement(_check_key(key, clause), op, values))
            continue
        if clause.startswith("!"):
            requirements.append(Requirement(_check_key(clause[1:].strip(), clause), "!exists"))
            continue
        for token, op in (("==", "="), ("!=", "!="), ("=", "="), (">", "gt"), ("<", "lt")):
            if token in clause:
                key, _, value = clause.partition(token)
                key, value = key.strip(), value.strip()
                if op in ("gt", "lt") and not value.lstrip("-").isdigit():
                    raise bad_request(f"unable to parse requirement: {clause!r}: not an integer")
                requirements.append(Requirement(_check_key(key, clause), op, (value,)))
                break
        else:
            requirements.append(Requirement(_check_key(clause, clause), "exists"))
    return tuple(requirements)


def labels_match(requirements: Iterable[Requirement], labels: Mapping[str, str] | None) -> bool:
    labels = labels or {}
    return all(r.matches(labels) for r in requirements)


@dataclass(frozen=True)
class FieldRequirement:
    """One clause of a field selector: a dotted field path compared with a value."""

    field: str
    negate: bool
    value: str


def parse_field_selector(text: str | None, allowed: Iterable[str]) -> tuple[FieldRequirement, ...]:
    """Parse `fieldSelector=`; unknown fields are a 400 as on the real server."""
    if not text:
        return ()
    allowed_set = set(allowed)
    result: list[FieldRequirement] = []
    for clause in _split_top_level(text):
        for token, negate in (("!=", True), ("==", False), ("=", False)):
            if token in clause:
                field, _, value = clause.partition(token)
                field = field.strip()
                if field not in allowed_set:
                    raise ApiError(400, f"field label not supported: {field}")
                result.append(FieldRequirement(field, negate, value.strip()))
                break
        else:
            raise bad_request(f"invalid selector: '{clause}'; can't understand '{clause}'")
    return tuple(result)


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string form of a field as the server compares it (missing -> empty string)."""
    current: Any = obj
    for part in path.split("."):
        if not isinstance(current, Mapping):
            return ""
        current = current.get(part)
    if current is None:
        return ""
    if isinstance(current, bool):
        return "true" if current else "false"
    return str(current)


FieldGetter = Callable[[Mapping[str, Any], str], str]


def fields_match(
    requirements: Iterable[FieldRequirement],
    obj: Mapping[str, Any],
    getter: FieldGetter = field_value,
) -> bool:
    for req in requirements:
        equal = getter(obj, req.field) == req.value
        if equal == req.negate:
            return False
    return True
