"""kwatt_operator.fields: how a message quotes a value, and an environment variable."""

from __future__ import annotations

from pathlib import PurePosixPath

from kwatt_operator.fields import env_var, show


def test_show_quotes_strings_and_writes_other_values_as_text() -> None:
    assert show("abc") == "'abc'"
    assert show(5) == "5"
    assert show(PurePosixPath("/data")) == "/data"  # str, not repr's PurePosixPath('/data')


def test_show_keeps_60_characters_and_cuts_longer_text_to_60() -> None:
    exactly = "x" * 58  # quoted: 60 characters
    assert show(exactly) == f"'{exactly}'"
    longer = show("x" * 59)  # quoted: 61 characters
    assert len(longer) == 60
    assert longer == "'" + "x" * 56 + "..."


def test_env_var_holds_its_value_as_text() -> None:
    assert env_var("KWATT_PORT", 8931) == {"name": "KWATT_PORT", "value": "8931"}
