"""Parsing a TrainingJob spec: typed values with the CRD's defaults, and sentences naming
the field for every problem (docs/design.md, "The TrainingJob")."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from conftest import sample_trainingjob
from kwatt_core.policies.base import SearchSpace
from kwatt_operator.spec import SpecError, find_trainer, parse_spec


def _spec(**overrides: Any) -> dict[str, Any]:
    spec: dict[str, Any] = sample_trainingjob(**overrides)["spec"]
    return spec


def _problems(spec: dict[str, Any]) -> str:
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    return str(info.value)


def test_minimal_spec_gets_the_documented_defaults() -> None:
    parsed = parse_spec(_spec())
    assert parsed.trainer == "train" and parsed.trainer_index == 0
    assert parsed.batch_sizes.candidates == (8, 16, 32)
    assert parsed.batch_sizes.default == 16
    assert parsed.batch_sizes.env == "KWATT_BATCH_SIZE"
    assert parsed.target.metric == "accuracy" and parsed.target.value == 0.6
    assert parsed.target.higher_is_better is True and parsed.target.max_epochs == 50
    assert (parsed.objective.eta, parsed.objective.beta, parsed.objective.carbon) == (0.5, 2, None)
    pl = parsed.power_limit
    assert (pl.mode, pl.fixed_watts, pl.warmup_steps, pl.measure_steps) == (
        "optimize",
        None,
        10,
        40,
    )
    assert parsed.schedule is None and parsed.concurrency_policy == "Forbid"
    assert parsed.suspend is False and parsed.history_limit == 20
    assert parsed.backoff_limit is None and parsed.active_deadline_seconds is None
    assert parsed.ttl_seconds_after_finished is None


def test_everything_set_is_read() -> None:
    parsed = parse_spec(
        _spec(
            batchSizes={"candidates": [32, 8, 16], "default": 32, "env": "BS"},
            target={"metric": "loss", "value": 0.1, "higherIsBetter": False},
            objective={"eta": 1, "beta": 3.5, "carbon": {"source": {"kind": "uk"}}},
            powerLimit={"mode": "fixed", "fixedWatts": 200, "warmupSteps": 0, "measureSteps": 5},
            schedule="0 3 * * *",
            concurrencyPolicy="Replace",
            suspend=True,
            historyLimit=0,
            backoffLimit=2,
            activeDeadlineSeconds=3600,
            ttlSecondsAfterFinished=600,
        )
    )
    assert parsed.batch_sizes.candidates == (8, 16, 32)  # sorted for the core
    assert parsed.batch_sizes.env == "BS"
    assert parsed.target.higher_is_better is False and parsed.target.max_epochs is None
    assert parsed.objective.eta == 1.0 and parsed.objective.carbon is not None
    assert parsed.objective.carbon.source.kind == "uk"
    assert parsed.power_limit.mode == "fixed" and parsed.power_limit.fixed_watts == 200
    assert (parsed.power_limit.warmup_steps, parsed.power_limit.measure_steps) == (0, 5)
    assert (parsed.schedule, parsed.concurrency_policy, parsed.suspend) == (
        "0 3 * * *",
        "Replace",
        True,
    )
    assert (parsed.history_limit, parsed.backoff_limit) == (0, 2)
    assert parsed.active_deadline_seconds == 3600 and parsed.ttl_seconds_after_finished == 600


def test_search_space_is_the_cores() -> None:
    space = parse_spec(_spec(objective={"beta": 3})).search_space(max_limit_w=250)
    assert space == SearchSpace((8, 16, 32), 16, 250, beta=3.0)


def test_default_batch_size_must_be_a_candidate() -> None:
    spec = _spec(batchSizes={"candidates": [8, 16, 32], "default": 48})
    assert (
        "spec.batchSizes.default 48 is not among spec.batchSizes.candidates [8, 16, 32]."
        in _problems(spec)
    )


@pytest.mark.parametrize(
    ("change", "sentence"),
    [
        ({"objective": {"eta": 1.5}}, "spec.objective.eta must be between 0 and 1, got 1.5."),
        ({"objective": {"beta": 1}}, "spec.objective.beta must be greater than 1, got 1.0."),
        ({"objective": {"eta": "high"}}, "spec.objective.eta must be a number, got 'high'."),
        (
            {"powerLimit": {"mode": "turbo"}},
            "spec.powerLimit.mode must be one of optimize, observe, fixed, got 'turbo'.",
        ),
        (
            {"powerLimit": {"mode": "fixed"}},
            "spec.powerLimit.fixedWatts is required when spec.powerLimit.mode is fixed.",
        ),
        (
            {"batchSizes": {"candidates": [8, 8], "default": 8}},
            "spec.batchSizes.candidates lists 8 twice.",
        ),
        (
            {"batchSizes": {"candidates": [8, 0], "default": 8}},
            "spec.batchSizes.candidates[1] must be a positive integer, got 0.",
        ),
        (
            {"batchSizes": {"candidates": [8, True], "default": 8}},
            "spec.batchSizes.candidates[1] must be a positive integer, got True.",
        ),
        ({"batchSizes": {"candidates": [], "default": 8}}, "spec.batchSizes.candidates must"),
        ({"batchSizes": {"candidates": [8]}}, "spec.batchSizes.default is required"),
        (
            {"batchSizes": {"candidates": [8], "default": 8, "env": "1 BAD"}},
            "spec.batchSizes.env '1 BAD' is not a valid environment variable name.",
        ),
        ({"target": {"value": 0.5}}, "spec.target.metric is required"),
        ({"target": {"metric": "acc"}}, "spec.target.value is required"),
        (
            {"target": {"metric": "acc", "value": "high"}},
            "spec.target.value must be a number, got 'high'.",
        ),
        (
            {"powerLimit": {"measureSteps": 0}},
            "spec.powerLimit.measureSteps must be at least 1, got 0.",
        ),
        (
            {"powerLimit": {"warmupSteps": -1}},
            "spec.powerLimit.warmupSteps must be at least 0, got -1.",
        ),
        ({"powerLimit": "fast"}, "spec.powerLimit must be an object, got 'fast'."),
        ({"objective": 0.5}, "spec.objective must be an object, got 0.5."),
        ({"batchSizes": [8, 16]}, "spec.batchSizes must be an object, got [8, 16]."),
        (
            {"batchSizes": {"candidates": [8, 16], "default": 0}},
            "spec.batchSizes.default must be at least 1, got 0.",
        ),
        (
            {"ttlSecondsAfterFinished": -1},
            "spec.ttlSecondsAfterFinished must be at least 0, got -1.",
        ),
        (
            {"template": {"spec": {"containers": [{"image": "t:1"}]}}},
            "spec.template.spec.containers[0] must be a container with a name.",
        ),
        (
            {"target": {"metric": "acc", "value": 1, "maxEpochs": 0}},
            "spec.target.maxEpochs must be at least 1, got 0.",
        ),
        ({"historyLimit": 101}, "spec.historyLimit must be at most 100, got 101."),
        ({"backoffLimit": -1}, "spec.backoffLimit must be at least 0, got -1."),
        ({"concurrencyPolicy": "Sometimes"}, "spec.concurrencyPolicy must be one of Allow"),
        ({"suspend": "yes"}, "spec.suspend must be true or false, got 'yes'."),
        ({"schedule": "soon"}, "spec.schedule 'soon' is not a cron schedule"),
        ({"template": {"spec": {"containers": []}}}, "spec.template.spec.containers must list"),
        ({"template": None}, "spec.template is required"),
    ],
)
def test_problems_are_sentences_naming_the_field(change: dict[str, Any], sentence: str) -> None:
    spec = _spec()
    spec.update(change)
    if change.get("template", 1) is None:
        del spec["template"]
    text = _problems(spec)
    assert sentence in text
    assert text.endswith(".")


def test_all_problems_are_reported_at_once() -> None:
    spec = _spec(objective={"eta": 2, "beta": 0.5}, historyLimit=-1)
    with pytest.raises(SpecError) as info:
        parse_spec(spec)
    assert len(info.value.problems) == 3
    assert all(p.startswith("spec.") and p.endswith(".") for p in info.value.problems)


def test_missing_spec_and_required_sections() -> None:
    with pytest.raises(SpecError, match="spec is missing"):
        parse_spec(None)
    text = _problems({})
    for field in ("spec.template", "spec.batchSizes", "spec.target"):
        assert f"{field} is required" in text


def test_trainer_by_name_or_the_only_container() -> None:
    two = {
        "spec": {"containers": [{"name": "loader", "image": "a"}, {"name": "train", "image": "b"}]}
    }
    assert find_trainer(two, "train") == (1, "train")
    with pytest.raises(SpecError, match=r"spec\.trainer is required when .* \(loader, train\)"):
        find_trainer(two, None)
    with pytest.raises(SpecError, match=r"spec\.trainer 'trainer' names no container .*loader"):
        find_trainer(two, "trainer")
    parsed = parse_spec(_spec(template=two, trainer="train"))
    assert (parsed.trainer, parsed.trainer_index) == ("train", 1)


@pytest.mark.parametrize("key", ["containers", "initContainers"])
def test_a_container_named_like_the_sidecar_is_refused(key: str) -> None:
    spec = _spec()
    pod = spec["template"]["spec"]
    pod.setdefault(key, []).append({"name": "kwatt-sidecar", "image": "mine:1"})
    if key == "containers":
        spec["trainer"] = "train"
    text = _problems(spec)
    assert f"spec.template.spec.{key}[" in text and "'kwatt-sidecar'" in text


def test_parsing_does_not_change_or_share_the_input() -> None:
    spec = _spec()
    before = copy.deepcopy(spec)
    parsed = parse_spec(spec)
    assert spec == before
    spec["template"]["spec"]["containers"][0]["name"] = "changed"
    assert parsed.template["spec"]["containers"][0]["name"] == "train"
