"""Names and model references, parsed and checked in exactly one place.

A reference names one model version:

* ``"churn"``: the latest version of ``churn``;
* ``"churn:3"``: version 3;
* ``"churn@production"``: the version the alias ``production`` points to.

Names (of models, aliases and deployments) are 1 to 64 characters from letters, digits, ``-``,
``_`` and ``.``, starting with a letter or a digit, so that no name can ever spell a path.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .errors import InvalidName, InvalidReference

__all__ = ["ModelRef", "parse_ref", "check_name", "check_alias", "check_tag_key", "MAX_NAME"]

MAX_NAME = 64
_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")
_NAME_RULE = (
    f"use 1 to {MAX_NAME} letters, digits, '-', '_' or '.', starting with a letter or a digit"
)
#: Alias that always means "the newest version"; it cannot be set.
LATEST = "latest"


def check_name(value: object, kind: str = "model name") -> str:
    """Return ``value`` if it is a valid name, else raise :class:`InvalidName`."""
    if not isinstance(value, str):
        raise InvalidName(kind, value, f"must be a string, not {type(value).__name__}")
    if not value:
        raise InvalidName(kind, value, "must not be empty; " + _NAME_RULE)
    if len(value) > MAX_NAME:
        raise InvalidName(kind, value, f"is {len(value)} characters long; {_NAME_RULE}")
    if not _NAME_RE.fullmatch(value):
        bad = sorted({c for c in value if not (c.isascii() and (c.isalnum() or c in "._-"))})
        why = f"contains {', '.join(repr(c) for c in bad)}; " if bad else ""
        raise InvalidName(kind, value, why + _NAME_RULE)
    return value


def check_alias(value: object) -> str:
    """Return ``value`` if it can be set as an alias, else raise :class:`InvalidName`."""
    alias = check_name(value, "alias")
    if alias.isdigit():
        raise InvalidName("alias", value, "must not be a number (it would read as a version)")
    if alias.lower() == LATEST:
        raise InvalidName("alias", value, "'latest' is reserved: it always means the newest version")
    return alias


def check_tag_key(value: object, kind: str = "tag key") -> str:
    """Tag and property keys: non-empty strings of at most 250 characters."""
    if not isinstance(value, str) or not value or len(value) > 250:
        raise InvalidName(kind, value, "must be a non-empty string of at most 250 characters")
    return value


@dataclass(frozen=True)
class ModelRef:
    """A parsed reference: ``name`` plus at most one of ``version`` and ``alias``."""

    name: str
    version: int | None = None
    alias: str | None = None

    def __str__(self) -> str:
        if self.version is not None:
            return f"{self.name}:{self.version}"
        if self.alias is not None:
            return f"{self.name}@{self.alias}"
        return self.name


def parse_ref(ref: object) -> ModelRef:
    """Parse a model reference.

    Accepts a string (``"churn"``, ``"churn:3"``, ``"churn@production"``), a :class:`ModelRef`, or
    any object with ``name`` and ``version`` attributes (such as a ``ModelVersion``).

    Examples
    --------
    >>> parse_ref("churn:3")
    ModelRef(name='churn', version=3, alias=None)
    >>> parse_ref("churn@production").alias
    'production'
    """
    if isinstance(ref, ModelRef):
        return ref
    if not isinstance(ref, str):
        name = getattr(ref, "name", None)
        version = getattr(ref, "version", None)
        if isinstance(name, str) and isinstance(version, int):
            return ModelRef(check_name(name), version)
        raise InvalidReference(ref, f"expected a string, got {type(ref).__name__}")
    text = ref.strip()
    if ":" in text and "@" in text:
        raise InvalidReference(ref, "give a version or an alias, not both")
    if ":" in text:
        name, _, version_text = text.partition(":")
        _check_ref_name(ref, name)
        if not version_text.isdigit() or int(version_text) < 1:
            raise InvalidReference(ref, f"version {version_text!r} is not a positive integer")
        return ModelRef(name, int(version_text))
    if "@" in text:
        name, _, alias = text.partition("@")
        _check_ref_name(ref, name)
        if alias.lower() == LATEST:
            return ModelRef(name)
        try:
            check_name(alias, "alias")
        except InvalidName as exc:
            raise InvalidReference(ref, exc.message) from None
        return ModelRef(name, alias=alias)
    _check_ref_name(ref, text)
    return ModelRef(text)


def _check_ref_name(ref: object, name: str) -> None:
    try:
        check_name(name)
    except InvalidName as exc:
        raise InvalidReference(ref, exc.message) from None
