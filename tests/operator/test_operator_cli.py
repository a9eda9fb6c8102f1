"""`kwatt operator`'s sidecar flags that the Helm chart passes: pull policy and resources."""

from __future__ import annotations

import argparse

import pytest

from kwatt_cli import operator as operator_cli
from kwatt_cli.errors import UsageError


def parse(*args: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(exit_on_error=False)
    operator_cli.add_arguments(parser)
    return parser.parse_args(list(args))


def test_defaults_leave_the_sidecar_settings_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("KWATT_SIDECAR_IMAGE_PULL_POLICY", "KWATT_SIDECAR_RESOURCES"):
        monkeypatch.delenv(name, raising=False)
    args = parse()
    assert args.sidecar_image_pull_policy is None
    assert args.sidecar_resources is None


def test_flags_and_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    args = parse("--sidecar-image-pull-policy", "Always", "--sidecar-resources", "{}")
    assert args.sidecar_image_pull_policy == "Always"
    assert operator_cli.parse_resources(args.sidecar_resources) == {}
    monkeypatch.setenv("KWATT_SIDECAR_IMAGE_PULL_POLICY", "Never")
    monkeypatch.setenv("KWATT_SIDECAR_RESOURCES", '{"limits": {"memory": "1Gi"}}')
    args = parse()
    assert args.sidecar_image_pull_policy == "Never"
    assert operator_cli.parse_resources(args.sidecar_resources) == {"limits": {"memory": "1Gi"}}


def test_an_unknown_pull_policy_is_refused() -> None:
    with pytest.raises(argparse.ArgumentError, match="invalid choice"):
        parse("--sidecar-image-pull-policy", "Sometimes")


def test_resources_are_read_and_checked() -> None:
    text = '{"requests": {"cpu": "50m", "memory": "64Mi"}, "limits": {"cpu": 1}}'
    assert operator_cli.parse_resources(text) == {
        "requests": {"cpu": "50m", "memory": "64Mi"},
        "limits": {"cpu": 1},
    }


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "must be a JSON object: "),
        ("[1]", "must be a JSON object, not '[1]'"),
        ('{"request": {}}', "may have only requests, limits, claims, not request"),
        ('{"limits": {"cpu": true}}', "limits must map resource names to quantities"),
        ('{"requests": "50m"}', "requests must map resource names to quantities"),
    ],
)
def test_bad_resources_are_one_sentence(text: str, message: str) -> None:
    with pytest.raises(UsageError, match="--sidecar-resources") as caught:
        operator_cli.parse_resources(text)
    assert message in str(caught.value)
