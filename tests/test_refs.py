"""Names and references are parsed in one place, and every bad one gets a precise error."""

from __future__ import annotations

import pytest

from mlops_lab import InvalidName, InvalidReference, ModelRef, parse_ref
from mlops_lab.refs import check_alias, check_name


@pytest.mark.parametrize(
    "text, expected",
    [
        ("churn", ModelRef("churn")),
        ("churn:3", ModelRef("churn", 3)),
        ("churn@production", ModelRef("churn", alias="production")),
        ("churn@latest", ModelRef("churn")),
        ("a.b-c_d:12", ModelRef("a.b-c_d", 12)),
        ("  churn:2 ", ModelRef("churn", 2)),
    ],
)
def test_parse_ref(text, expected):
    assert parse_ref(text) == expected
    assert str(parse_ref(str(expected))) == str(expected)


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("churn:0", "not a positive integer"),
        ("churn:x", "not a positive integer"),
        ("churn:", "not a positive integer"),
        ("churn:1@prod", "not both"),
        ("churn@", "must not be empty"),
        ("churn@bad alias", "contains ' '"),
        ("../etc", "contains '/'"),
        ("", "must not be empty"),
        (":3", "must not be empty"),
        (3, "expected a string"),
    ],
)
def test_bad_references(text, fragment):
    with pytest.raises(InvalidReference) as info:
        parse_ref(text)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    "name, fragment",
    [
        ("", "must not be empty"),
        ("a" * 65, "65 characters"),
        ("a/b", "contains '/'"),
        ("a\\b", "contains '\\\\'"),
        ("..", "starting with a letter or a digit"),
        (".hidden", "starting with a letter or a digit"),
        ("-x", "starting with a letter or a digit"),
        ("caf\u00e9", "contains '\u00e9'"),
        ("a b", "contains ' '"),
        ("a\x00b", "contains '\\x00'"),
        (None, "must be a string"),
    ],
)
def test_bad_names_are_refused(name, fragment):
    with pytest.raises(InvalidName) as info:
        check_name(name)
    assert fragment in str(info.value)


def test_good_names():
    for name in ("a", "A9", "churn-model_v2.1", "x" * 64, "9lives"):
        assert check_name(name) == name


@pytest.mark.parametrize("alias", ["3", "latest", "LATEST"])
def test_reserved_aliases(alias):
    with pytest.raises(InvalidName):
        check_alias(alias)
