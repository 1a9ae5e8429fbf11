"""``KEY=VALUE`` arguments, parsed once for the CLI and the magics."""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidInput


def key_values(pairs: list[str] | None, example: str = "--tag stage=staging") -> dict[str, str]:
    """``["a=1", "b=x"]`` -> ``{"a": "1", "b": "x"}``; anything else is an error naming the item."""
    out: dict[str, str] = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise InvalidInput(f"{pair!r} is not KEY=VALUE", hint=f"e.g. {example}")
        out[key] = value
    return out


def options(pairs: list[str] | None) -> dict[str, Any]:
    """Target settings: values are JSON when they parse as JSON (``replicas=2``,
    ``autoscale={"min": 1}``), strings otherwise."""
    out: dict[str, Any] = {}
    for key, value in key_values(pairs, "-o base_image=python:3.11-slim").items():
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out
