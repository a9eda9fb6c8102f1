"""The three PATCH flavours of the Kubernetes API, as pure functions on JSON values.

Part of the sandbox cluster, an emulator for tests and demos; production is a real
cluster. `merge_patch` is RFC 7386, `json_patch` RFC 6902, and `strategic_merge`
the Kubernetes strategic merge patch driven by a `PatchMeta` tree that says which
lists merge by which key (the `patchMergeKey`/`patchStrategy` tags of the Go types).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any


class PatchError(Exception):
    """A patch that cannot be applied; `code` is the HTTP status the server answers."""

    def __init__(self, message: str, code: int = 422) -> None:
        super().__init__(message)
        self.code = code


# --- RFC 7386 ---------------------------------------------------------------------------


def merge_patch(target: Any, patch: Any) -> Any:
    """Apply a JSON merge patch: objects merge, `null` deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


# --- RFC 6902 ---------------------------------------------------------------------------


def _pointer(path: str) -> list[str]:
    if path == "":
        return []
    if not path.startswith("/"):
        raise PatchError(f"invalid JSON pointer {path!r}", 400)
    return [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]


def _index(container: list[Any], token: str, allow_end: bool) -> int:
    if token == "-" and allow_end:
        return len(container)
    if not token.isdigit() or (len(token) > 1 and token.startswith("0")):
        raise PatchError(f"invalid array index {token!r}")
    idx = int(token)
    limit = len(container) if allow_end else len(container) - 1
    if idx > limit:
        raise PatchError(f"array index {idx} out of bounds")
    return idx


def _parent(doc: Any, tokens: list[str], path: str) -> Any:
    current = doc
    for token in tokens[:-1]:
        if isinstance(current, dict):
            if token not in current:
                raise PatchError(f"doc is missing path: {path!r}: missing value")
            current = current[token]
        elif isinstance(current, list):
            current = current[_index(current, token, False)]
        else:
            raise PatchError(f"doc is missing path: {path!r}: missing value")
    return current


def _get(doc: Any, path: str) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return doc
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"doc is missing path: {path!r}: missing value")
        return parent[last]
    if isinstance(parent, list):
        return parent[_index(parent, last, False)]
    raise PatchError(f"doc is missing path: {path!r}: missing value")


def _add(doc: Any, path: str, value: Any) -> Any:
    tokens = _pointer(path)
    if not tokens:
        return value
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        parent[last] = value
    elif isinstance(parent, list):
        parent.insert(_index(parent, last, True), value)
    else:
        raise PatchError(f"doc is missing path: {path!r}: missing value")
    return doc


def _remove(doc: Any, path: str) -> tuple[Any, Any]:
    tokens = _pointer(path)
    if not tokens:
        raise PatchError("cannot remove the whole document")
    parent = _parent(doc, tokens, path)
    last = tokens[-1]
    if isinstance(parent, dict):
        if last not in parent:
            raise PatchError(f"Unable to remove nonexistent key: {last}: missing value")
        return doc, parent.pop(last)
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, last, False))
    raise PatchError(f"doc is missing path: {path!r}: missing value")


def json_patch(doc: Any, operations: Any) -> Any:
    """Apply RFC 6902 operations; a failed `test` or missing path is a 422 as on the server."""
    if not isinstance(operations, list):
        raise PatchError("json patch must be a list of operations", 400)
    result = copy.deepcopy(doc)
    for op in operations:
        if not isinstance(op, dict) or "op" not in op or "path" not in op:
            raise PatchError(f"invalid JSON patch operation: {op!r}", 400)
        kind, path = op["op"], op["path"]
        if kind in ("add", "replace", "test") and "value" not in op:
            raise PatchError(f"missing value in {kind} operation", 400)
        if kind == "add":
            result = _add(result, path, copy.deepcopy(op["value"]))
        elif kind == "remove":
            result, _ = _remove(result, path)
        elif kind == "replace":
            _get(result, path)
            if _pointer(path):
                result, _ = _remove(result, path)
            result = _add(result, path, copy.deepcopy(op["value"]))
        elif kind in ("move", "copy"):
            if "from" not in op:
                raise PatchError(f"missing from in {kind} operation", 400)
            if kind == "move":
                result, value = _remove(result, op["from"])
            else:
                value = copy.deepcopy(_get(result, op["from"]))
            result = _add(result, path, value)
        elif kind == "test":
            try:
                current = _get(result, path)
            except PatchError:
                current = None
            same = current == op["value"] and (
                type(current) is type(op["value"])
                or (_is_number(current) and _is_number(op["value"]))
            )
            if not same:
                raise PatchError(f"testing value {path} failed: test failed")
        else:
            raise PatchError(f"Unexpected kind: {kind}", 400)
    return result


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


# --- strategic merge patch --------------------------------------------------------------


@dataclass
class PatchMeta:
    """What the Go struct tags say about a field: nested fields and list strategy.

    `merge_key` set: a list of objects merged by that key. `set_merge`: a list of
    primitives merged as a set (e.g. finalizers). Otherwise lists are replaced.
    `values` describes the values of a map (e.g. labels) or the items of a list.
    """

    fields: dict[str, PatchMeta] = field(default_factory=dict)
    merge_key: str | None = None
    set_merge: bool = False
    retain_keys: bool = False

    def child(self, name: str) -> PatchMeta:
        return self.fields.get(name, EMPTY_META)


EMPTY_META = PatchMeta()

_DIRECTIVE = "$patch"
_DELETE_PRIMITIVE = "$deleteFromPrimitiveList/"
_SET_ORDER = "$setElementOrder/"
_RETAIN = "$retainKeys"


def strategic_merge(original: Any, patch: Any, meta: PatchMeta) -> Any:
    """Apply a strategic merge patch to `original` using `meta` for list semantics."""
    if not isinstance(patch, dict):
        raise PatchError("strategic merge patch must be a JSON object", 400)
    return _merge_map(original if isinstance(original, dict) else {}, patch, meta)


def _merge_map(original: dict[str, Any], patch: dict[str, Any], meta: PatchMeta) -> Any:
    directive = patch.get(_DIRECTIVE)
    if directive == "delete":
        return None
    if directive == "replace":
        return {k: copy.deepcopy(v) for k, v in patch.items() if k != _DIRECTIVE}
    if directive not in (None, "merge"):
        raise PatchError(f"Unknown patch type: {directive}", 400)
    result = dict(original)
    deletions: dict[str, list[Any]] = {}
    orders: dict[str, list[Any]] = {}
    retain: list[str] | None = None
    for key, value in patch.items():
        if key == _DIRECTIVE:
            continue
        if key.startswith(_DELETE_PRIMITIVE):
            deletions[key[len(_DELETE_PRIMITIVE) :]] = list(value or [])
            continue
        if key.startswith(_SET_ORDER):
            orders[key[len(_SET_ORDER) :]] = list(value or [])
            continue
        if key == _RETAIN:
            retain = list(value or [])
            continue
        if value is None:
            result.pop(key, None)
            continue
        sub = meta.child(key)
        current = result.get(key)
        if isinstance(value, dict):
            merged = _merge_map(current if isinstance(current, dict) else {}, value, sub)
            if merged is None:
                result.pop(key, None)
            else:
                result[key] = merged
        elif isinstance(value, list):
            result[key] = _merge_list(current if isinstance(current, list) else [], value, sub)
        else:
            result[key] = copy.deepcopy(value)
    for key, values in deletions.items():
        if isinstance(result.get(key), list):
            result[key] = [v for v in result[key] if v not in values]
    for key, order in orders.items():
        if isinstance(result.get(key), list):
            result[key] = _apply_order(result[key], order, meta.child(key).merge_key)
    if retain is not None:
        result = {k: v for k, v in result.items() if k in retain}
    return result


def _merge_list(original: list[Any], patch: list[Any], meta: PatchMeta) -> list[Any]:
    if any(isinstance(i, dict) and i.get(_DIRECTIVE) == "replace" for i in patch):
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and _DIRECTIVE in i)]
    if meta.set_merge:
        result = list(original)
        for item in patch:
            if item not in result:
                result.append(copy.deepcopy(item))
        return result
    key = meta.merge_key
    if key is None:
        return [copy.deepcopy(i) for i in patch if not (isinstance(i, dict) and _DIRECTIVE in i)]
    result = [copy.deepcopy(i) for i in original]
    for item in patch:
        if not isinstance(item, dict):
            raise PatchError(f"expected a map with merge key {key!r} in list", 400)
        if key not in item:
            raise PatchError(f"map: {item} does not contain declared merge key: {key}", 400)
        positions = [
            i for i, o in enumerate(result) if isinstance(o, dict) and o.get(key) == item[key]
        ]
        if item.get(_DIRECTIVE) == "delete":
            result = [o for i, o in enumerate(result) if i not in positions]
            continue
        if positions:
            merged = _merge_map(result[positions[0]], item, meta)
            result[positions[0]] = merged
        else:
            merged = _merge_map({}, item, meta)
            result.append(merged)
    return [i for i in result if i is not None]


def _apply_order(items: list[Any], order: list[Any], key: str | None) -> list[Any]:
    """Honour `$setElementOrder`: listed items first in that order, others after."""

    def ident(item: Any) -> Any:
        if key is not None and isinstance(item, dict):
            return item.get(key)
        if isinstance(item, dict) and len(item) == 1 and key is None:
            return next(iter(item.values()))
        return item

    wanted = [ident(o) for o in order]
    ranked = sorted(
        enumerate(items),
        key=lambda pair: (
            wanted.index(ident(pair[1])) if ident(pair[1]) in wanted else len(wanted),
            pair[0],
        ),
    )
    return [item for _, item in ranked]
