"""OpenAPI v3 structural schemas of CRDs: pruning, defaulting and validation.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. The functions are pure. Error wording copies the real API server's
(`spec.x: Invalid value: 1.5: spec.x in body should be less than or equal to 1`)
so that tests written against the sandbox read like production failures.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping
from typing import Any

from kwatt_sandbox.errors import Cause

Schema = Mapping[str, Any]

_ROOT_KEEP = ("apiVersion", "kind", "metadata")


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _go_value(value: Any) -> str:
    """Format a value as Go's `%v`/`%q` does in field errors."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if value is None:
        return "null"
    if isinstance(value, dict | list):
        return json.dumps(value, separators=(",", ":"))
    return str(value)


def _bound(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _preserves(schema: Schema) -> bool:
    return bool(schema.get("x-kubernetes-preserve-unknown-fields"))


# --- pruning ------------------------------------------------------------------------------


def prune(value: Any, schema: Schema, path: str = "", root: bool = False) -> tuple[Any, list[str]]:
    """Drop fields the schema does not declare; returns the value and the dropped paths."""
    dropped: list[str] = []
    return _prune(value, schema, path, root, dropped), dropped


def _prune(value: Any, schema: Schema, path: str, root: bool, dropped: list[str]) -> Any:
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        embedded = bool(schema.get("x-kubernetes-embedded-resource"))
        out: dict[str, Any] = {}
        for key, item in value.items():
            if (root or embedded) and key in _ROOT_KEEP:
                out[key] = item
                continue
            if key in props:
                out[key] = _prune(item, props[key], _join(path, key), False, dropped)
            elif isinstance(additional, Mapping):
                out[key] = _prune(item, additional, _join(path, key), False, dropped)
            elif additional is True or _preserves(schema):
                out[key] = item
            else:
                dropped.append(_join(path, key))
        return out
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            return [_prune(v, items, f"{path}[{i}]", False, dropped) for i, v in enumerate(value)]
    return value


# --- defaulting ---------------------------------------------------------------------------


def apply_defaults(value: Any, schema: Schema) -> Any:
    """Fill `default:` values for absent fields (and non-nullable nulls), recursively."""
    if isinstance(value, dict):
        props: Mapping[str, Any] = schema.get("properties") or {}
        out = dict(value)
        for key, sub in props.items():
            if key in out and out[key] is None and not sub.get("nullable"):
                del out[key]
            if key not in out and "default" in sub:
                out[key] = copy.deepcopy(sub["default"])
            if key in out:
                out[key] = apply_defaults(out[key], sub)
        additional = schema.get("additionalProperties")
        if isinstance(additional, Mapping):
            for key in list(out):
                if key not in props:
                    out[key] = apply_defaults(out[key], additional)
        return out
    if isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            return [apply_defaults(v, items) for v in value]
    return value


# --- validation ---------------------------------------------------------------------------


def _type_ok(value: Any, schema: Schema) -> bool:
    if schema.get("x-kubernetes-int-or-string"):
        return (isinstance(value, int) and not isinstance(value, bool)) or isinstance(value, str)
    expected = schema.get("type")
    if not expected:
        return True
    if expected == "integer":
        if isinstance(value, float) and value.is_integer():
            return True
        return isinstance(value, int) and not isinstance(value, bool)
    if expected == "number":
        return isinstance(value, int | float) and not isinstance(value, bool)
    if expected == "string":
        return isinstance(value, str)
    if expected == "boolean":
        return isinstance(value, bool)
    if expected == "array":
        return isinstance(value, list)
    if expected == "object":
        return isinstance(value, dict)
    return True


def validate(value: Any, schema: Schema, path: str = "", root: bool = False) -> list[Cause]:
    """Check a value against a structural schema; returns causes like the real server's."""
    causes: list[Cause] = []
    _validate(value, schema, path, root, causes)
    return causes


def _invalid(causes: list[Cause], path: str, value: Any, detail: str) -> None:
    causes.append(Cause("FieldValueInvalid", f"Invalid value: {_go_value(value)}: {detail}", path))


def _validate(value: Any, schema: Schema, path: str, root: bool, causes: list[Cause]) -> None:
    body = path or "body"
    if value is None:
        if schema.get("nullable") or not (
            schema.get("type") or schema.get("x-kubernetes-int-or-string")
        ):
            return
        expected = "string" if schema.get("x-kubernetes-int-or-string") else schema.get("type")
        causes.append(
            Cause(
                "FieldValueTypeInvalid",
                f'Invalid value: "null": {body} in body must be of type {expected}: "null"',
                path,
            )
        )
        return
    if not _type_ok(value, schema):
        actual = _type_name(value)
        causes.append(
            Cause(
                "FieldValueTypeInvalid",
                f'Invalid value: "{actual}": {body} in body must be of type '
                f'{schema.get("type")}: "{actual}"',
                path,
            )
        )
        return
    enum = schema.get("enum")
    if enum is not None and value not in enum:
        supported = ", ".join(_go_value(v) for v in enum)
        causes.append(
            Cause(
                "FieldValueNotSupported",
                f"Unsupported value: {_go_value(value)}: supported values: {supported}",
                path,
            )
        )
    if isinstance(value, int | float) and not isinstance(value, bool):
        _validate_number(value, schema, path, body, causes)
    if isinstance(value, str):
        _validate_string(value, schema, path, body, causes)
    if isinstance(value, list):
        _validate_array(value, schema, path, body, causes)
    if isinstance(value, dict):
        _validate_object(value, schema, path, root, causes)


def _validate_number(
    value: float, schema: Schema, path: str, body: str, causes: list[Cause]
) -> None:
    maximum = schema.get("maximum")
    if maximum is not None:
        if schema.get("exclusiveMaximum") and value >= maximum:
            _invalid(causes, path, value, f"{body} in body should be less than {_bound(maximum)}")
        elif value > maximum:
            _invalid(
                causes,
                path,
                value,
                f"{body} in body should be less than or equal to {_bound(maximum)}",
            )
    minimum = schema.get("minimum")
    if minimum is not None:
        if schema.get("exclusiveMinimum") and value <= minimum:
            _invalid(
                causes, path, value, f"{body} in body should be greater than {_bound(minimum)}"
            )
        elif value < minimum:
            _invalid(
                causes,
                path,
                value,
                f"{body} in body should be greater than or equal to {_bound(minimum)}",
            )
    multiple = schema.get("multipleOf")
    if multiple and (value / multiple) != int(value / multiple):
        _invalid(causes, path, value, f"{body} in body should be a multiple of {_bound(multiple)}")


def _validate_string(value: str, schema: Schema, path: str, body: str, causes: list[Cause]) -> None:
    max_length = schema.get("maxLength")
    if max_length is not None and len(value) > max_length:
        causes.append(
            Cause("FieldValueTooLong", f"Too long: may not be longer than {max_length}", path)
        )
    min_length = schema.get("minLength")
    if min_length is not None and len(value) < min_length:
        _invalid(causes, path, value, f"{body} in body should be at least {min_length} chars long")
    pattern = schema.get("pattern")
    if pattern is not None and not re.search(pattern, value):
        _invalid(causes, path, value, f"{body} in body should match '{pattern}'")


def _validate_array(
    value: list[Any], schema: Schema, path: str, body: str, causes: list[Cause]
) -> None:
    max_items = schema.get("maxItems")
    if max_items is not None and len(value) > max_items:
        causes.append(
            Cause(
                "FieldValueTooMany",
                f"Too many: {len(value)}: must have at most {max_items} items",
                path,
            )
        )
    min_items = schema.get("minItems")
    if min_items is not None and len(value) < min_items:
        _invalid(causes, path, value, f"{body} in body should have at least {min_items} items")
    if schema.get("uniqueItems"):
        seen: list[Any] = []
        for item in value:
            if item in seen:
                causes.append(
                    Cause("FieldValueDuplicate", f"Duplicate value: {_go_value(item)}", path)
                )
                break
            seen.append(item)
    items = schema.get("items")
    if isinstance(items, Mapping):
        for i, item in enumerate(value):
            _validate(item, items, f"{path}[{i}]", False, causes)


def _validate_object(
    value: dict[str, Any], schema: Schema, path: str, root: bool, causes: list[Cause]
) -> None:
    props: Mapping[str, Any] = schema.get("properties") or {}
    for name in schema.get("required") or []:
        if name not in value:
            causes.append(Cause("FieldValueRequired", "Required value", _join(path, name)))
    for key, item in value.items():
        if (root or schema.get("x-kubernetes-embedded-resource")) and key == "metadata":
            continue
        if key in props:
            _validate(item, props[key], _join(path, key), False, causes)
        elif isinstance(schema.get("additionalProperties"), Mapping):
            _validate(item, schema["additionalProperties"], _join(path, key), False, causes)
    max_props = schema.get("maxProperties")
    if max_props is not None and len(value) > max_props:
        causes.append(
            Cause(
                "FieldValueTooMany",
                f"Too many: {len(value)}: must have at most {max_props} items",
                path,
            )
        )
    min_props = schema.get("minProperties")
    if min_props is not None and len(value) < min_props:
        _invalid(
            causes,
            path,
            value,
            f"{path or 'body'} in body should have at least {min_props} properties",
        )


def process(obj: dict[str, Any], schema: Schema) -> tuple[dict[str, Any], list[str], list[Cause]]:
    """Prune, default and validate a whole custom object (the CRD decode path)."""
    pruned, dropped = prune(obj, schema, root=True)
    defaulted = apply_defaults(pruned, schema)
    return defaulted, dropped, validate(defaulted, schema, root=True)
