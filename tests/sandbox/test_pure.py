"""Unit tests of the sandbox's pure parts: patches, selectors, schemas, tables."""

from __future__ import annotations

import pytest

from kwatt_sandbox.errors import ApiError
from kwatt_sandbox.patch import PatchError, json_patch, merge_patch, strategic_merge
from kwatt_sandbox.resources import JOB_META, POD_META
from kwatt_sandbox.schema import apply_defaults, process, prune, validate
from kwatt_sandbox.selectors import (
    fields_match,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)
from kwatt_sandbox.tables import human_duration, jsonpath

# --- RFC 7386 (examples from the RFC's appendix) ---------------------------------------------


@pytest.mark.parametrize(
    ("target", "patch", "expected"),
    [
        ({"a": "b"}, {"a": "c"}, {"a": "c"}),
        ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
        ({"a": "b"}, {"a": None}, {}),
        ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
        ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
        ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
        ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
        ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
        ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
        ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
    ],
)
def test_merge_patch_rfc7386(target: object, patch: object, expected: object) -> None:
    assert merge_patch(target, patch) == expected


# --- RFC 6902 --------------------------------------------------------------------------------


def test_json_patch_operations() -> None:
    doc = {"spec": {"list": [1, 2], "a": "x"}}
    out = json_patch(
        doc,
        [
            {"op": "add", "path": "/spec/list/-", "value": 3},
            {"op": "add", "path": "/spec/list/0", "value": 0},
            {"op": "replace", "path": "/spec/a", "value": "y"},
            {"op": "copy", "from": "/spec/a", "path": "/spec/b"},
            {"op": "move", "from": "/spec/b", "path": "/spec/c"},
            {"op": "remove", "path": "/spec/list/1"},
            {"op": "test", "path": "/spec/c", "value": "y"},
            {"op": "add", "path": "/metadata~1x", "value": {"k~": 1}},
        ],
    )
    assert out == {"spec": {"list": [0, 2, 3], "a": "y", "c": "y"}, "metadata/x": {"k~": 1}}
    assert doc == {"spec": {"list": [1, 2], "a": "x"}}, "input must not change"


def test_json_patch_failures_have_server_codes() -> None:
    with pytest.raises(PatchError) as failed_test:
        json_patch({"a": 1}, [{"op": "test", "path": "/a", "value": 2}])
    assert failed_test.value.code == 422
    with pytest.raises(PatchError) as missing:
        json_patch({"a": 1}, [{"op": "remove", "path": "/b"}])
    assert missing.value.code == 422
    with pytest.raises(PatchError) as malformed:
        json_patch({"a": 1}, {"op": "add"})
    assert malformed.value.code == 400


# --- strategic merge patch ---------------------------------------------------------------------


def _pod() -> dict:
    return {
        "metadata": {"finalizers": ["a"], "labels": {"x": "1"}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "img:1",
                    "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}],
                    "ports": [{"containerPort": 80}],
                    "volumeMounts": [{"mountPath": "/data", "name": "data"}],
                },
                {"name": "side", "image": "side:1"},
            ],
            "volumes": [{"name": "data", "emptyDir": {}}],
            "tolerations": [{"key": "a"}],
        },
    }


def test_strategic_merge_by_merge_keys() -> None:
    patch = {
        "metadata": {"finalizers": ["b", "a"], "labels": {"y": "2"}},
        "spec": {
            "containers": [
                {
                    "name": "main",
                    "image": "img:2",
                    "env": [{"name": "B", "value": "3"}, {"name": "C", "value": "4"}],
                    "ports": [{"containerPort": 81}],
                    "volumeMounts": [{"mountPath": "/data", "readOnly": True}],
                }
            ],
            "tolerations": [{"key": "b"}],
        },
    }
    out = strategic_merge(_pod(), patch, POD_META)
    main, side = out["spec"]["containers"]
    assert main["image"] == "img:2"
    assert main["env"] == [
        {"name": "A", "value": "1"},
        {"name": "B", "value": "3"},
        {"name": "C", "value": "4"},
    ]
    assert [p["containerPort"] for p in main["ports"]] == [80, 81]
    assert main["volumeMounts"] == [{"mountPath": "/data", "name": "data", "readOnly": True}]
    assert side == {"name": "side", "image": "side:1"}
    assert out["metadata"]["finalizers"] == ["a", "b"]
    assert out["metadata"]["labels"] == {"x": "1", "y": "2"}
    assert out["spec"]["tolerations"] == [{"key": "b"}], "no merge key: replaced"


def test_strategic_merge_directives() -> None:
    out = strategic_merge(
        _pod(),
        {
            "metadata": {"$deleteFromPrimitiveList/finalizers": ["a"]},
            "spec": {
                "containers": [{"name": "side", "$patch": "delete"}],
                "volumes": [{"$patch": "replace"}, {"name": "other", "emptyDir": {}}],
            },
        },
        POD_META,
    )
    assert [c["name"] for c in out["spec"]["containers"]] == ["main"]
    assert out["spec"]["volumes"] == [{"name": "other", "emptyDir": {}}]
    assert out["metadata"]["finalizers"] == []
    replaced = strategic_merge(
        _pod(), {"metadata": {"labels": {"$patch": "replace", "z": "9"}}}, POD_META
    )
    assert replaced["metadata"]["labels"] == {"z": "9"}
    deleted = strategic_merge(_pod(), {"spec": {"$patch": "delete"}}, POD_META)
    assert "spec" not in deleted
    retained = strategic_merge(
        {"spec": {"strategy": {"type": "A", "rollingUpdate": {"x": 1}}}},
        {"spec": {"strategy": {"$retainKeys": ["type"], "type": "B"}}},
        POD_META,
    )
    assert retained["spec"]["strategy"] == {"type": "B"}


def test_strategic_merge_set_element_order_and_job_conditions() -> None:
    job = {
        "status": {
            "conditions": [{"type": "A", "status": "True"}, {"type": "B", "status": "False"}]
        }
    }
    out = strategic_merge(
        job,
        {
            "status": {
                "$setElementOrder/conditions": [{"type": "B"}, {"type": "A"}],
                "conditions": [{"type": "B", "status": "True"}],
            }
        },
        JOB_META,
    )
    assert out["status"]["conditions"] == [
        {"type": "B", "status": "True"},
        {"type": "A", "status": "True"},
    ]
    with pytest.raises(PatchError):
        strategic_merge(_pod(), {"spec": {"containers": [{"image": "x"}]}}, POD_META)


# --- selectors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("selector", "labels", "expected"),
    [
        ("app=web", {"app": "web"}, True),
        ("app==web", {"app": "db"}, False),
        ("app!=web", {}, True),
        ("app!=web", {"app": "web"}, False),
        ("env in (prod, staging)", {"env": "prod"}, True),
        ("env in (prod,staging),tier", {"env": "prod"}, False),
        ("env notin (prod)", {"env": "dev"}, True),
        ("env notin (prod)", {}, True),
        ("tier", {"tier": ""}, True),
        ("!tier", {"tier": "x"}, False),
        ("!tier", {}, True),
        ("example.com/app=web,x=1", {"example.com/app": "web", "x": "1"}, True),
        ("n>3", {"n": "5"}, True),
        ("n<3", {"n": "5"}, False),
        ("", {"a": "b"}, True),
    ],
)
def test_label_selectors(selector: str, labels: dict[str, str], expected: bool) -> None:
    assert labels_match(parse_label_selector(selector), labels) is expected


def test_bad_label_selector_is_400() -> None:
    with pytest.raises(ApiError) as err:
        parse_label_selector("a b c")
    assert err.value.code == 400


def test_field_selectors() -> None:
    allowed = ("metadata.name", "status.phase")
    obj = {"metadata": {"name": "p"}, "status": {"phase": "Running"}}
    assert fields_match(parse_field_selector("metadata.name=p,status.phase!=Failed", allowed), obj)
    assert not fields_match(parse_field_selector("status.phase==Pending", allowed), obj)
    with pytest.raises(ApiError) as err:
        parse_field_selector("spec.other=x", allowed)
    assert err.value.code == 400
    assert "field label not supported: spec.other" in err.value.message


# --- structural schemas ---------------------------------------------------------------------

SCHEMA = {
    "type": "object",
    "properties": {
        "spec": {
            "type": "object",
            "required": ["eta"],
            "properties": {
                "eta": {"type": "number", "minimum": 0, "maximum": 1},
                "beta": {"type": "number", "default": 2, "exclusiveMinimum": True, "minimum": 1},
                "mode": {"type": "string", "enum": ["optimize", "observe"], "default": "optimize"},
                "name": {"type": "string", "maxLength": 4, "minLength": 2, "pattern": "^[a-z]+$"},
                "sizes": {
                    "type": "array",
                    "maxItems": 2,
                    "minItems": 1,
                    "items": {"type": "integer"},
                },
                "port": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "gone": {"type": "string", "default": "d"},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                "map": {"type": "object", "additionalProperties": {"type": "integer"}},
                "pod": {"type": "object", "x-kubernetes-embedded-resource": True, "properties": {}},
            },
        }
    },
}


def test_validation_messages_match_the_api_server() -> None:
    causes = validate({"spec": {"eta": 1.5}}, SCHEMA, root=True)
    assert [(c.field, c.message) for c in causes] == [
        ("spec.eta", "Invalid value: 1.5: spec.eta in body should be less than or equal to 1")
    ]
    causes = validate(
        {
            "spec": {
                "eta": "x",
                "beta": 1,
                "mode": "fast",
                "name": "abcde",
                "sizes": [1, 2, 3],
                "port": 1.5,
            }
        },
        SCHEMA,
        root=True,
    )
    messages = {c.field: c.message for c in causes}
    assert (
        messages["spec.eta"]
        == 'Invalid value: "string": spec.eta in body must be of type number: "string"'
    )
    assert messages["spec.beta"] == "Invalid value: 1: spec.beta in body should be greater than 1"
    assert (
        messages["spec.mode"]
        == 'Unsupported value: "fast": supported values: "optimize", "observe"'
    )
    assert messages["spec.name"] == "Too long: may not be longer than 4"
    assert messages["spec.sizes"] == "Too many: 3: must have at most 2 items"
    assert "spec.port" in messages
    required = validate({"spec": {}}, SCHEMA, root=True)
    assert [(c.field, c.reason) for c in required] == [("spec.eta", "FieldValueRequired")]
    pattern = validate({"spec": {"eta": 0, "name": "a1"}}, SCHEMA, root=True)
    assert {c.message for c in pattern} == {
        "Invalid value: \"a1\": spec.name in body should match '^[a-z]+$'"
    }


def test_defaulting_pruning_nullable_and_int_or_string() -> None:
    obj = {
        "apiVersion": "x/v1",
        "kind": "X",
        "metadata": {"name": "n", "anything": 1},
        "spec": {
            "eta": 0.5,
            "unknown": 1,
            "note": None,
            "gone": None,
            "port": "http",
            "free": {"a": {"b": 1}},
            "map": {"a": 1},
            "pod": {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}, "junk": 1},
        },
        "status": {"x": 1},
    }
    out, dropped, causes = process(obj, SCHEMA)
    assert causes == []
    assert sorted(dropped) == ["spec.pod.junk", "spec.unknown", "status"]
    assert out["metadata"] == {"name": "n", "anything": 1}
    spec = out["spec"]
    assert spec["beta"] == 2 and spec["mode"] == "optimize"
    assert spec["note"] is None, "nullable null kept"
    assert spec["gone"] == "d", "non-nullable null is dropped, then defaulted"
    assert spec["free"] == {"a": {"b": 1}}
    assert spec["pod"] == {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "p"}}
    assert validate({"spec": {"eta": 0, "port": 8080}}, SCHEMA, root=True) == []
    assert prune({"a": 1}, {"type": "object"})[0] == {}
    assert apply_defaults(
        {}, {"properties": {"a": {"default": {}, "properties": {"b": {"default": 1}}}}}
    ) == {"a": {"b": 1}}


# --- tables -------------------------------------------------------------------------------------


def test_jsonpath_subset() -> None:
    obj = {
        "status": {
            "conditions": [{"type": "A", "status": "False"}, {"type": "Ready", "status": "True"}]
        }
    }
    assert jsonpath(obj, '.status.conditions[?(@.type=="Ready")].status') == ["True"]
    assert jsonpath(obj, "{.status.conditions[0].type}") == ["A"]
    assert jsonpath(obj, ".status.conditions[*].type") == ["A", "Ready"]
    assert jsonpath(obj, ".spec.missing") == []


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (5, "5s"),
        (119, "119s"),
        (150, "2m30s"),
        (600, "10m"),
        (7500, "125m"),
        (4 * 3600 + 300, "4h5m"),
        (30 * 3600, "30h"),
        (3 * 86400 + 3600, "3d1h"),
        (20 * 86400, "20d"),
        (3 * 365 * 86400, "3y"),
    ],
)
def test_human_duration(seconds: int, text: str) -> None:
    assert human_duration(seconds) == text
