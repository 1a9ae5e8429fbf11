"""Small HTML tables for notebooks: the rich summaries (``_repr_html_``) and the panels share them."""

from __future__ import annotations

import html
from collections.abc import Iterable, Sequence
from typing import Any

_TH = "<th style='text-align:left;padding-right:1em'>{}</th>"
_TD = "<td style='text-align:left;padding-right:1em'>{}</td>"


def kv_table(rows: Iterable[tuple[str, str]], cls: str) -> str:
    """A two-column table of (label, HTML) rows."""
    body = "".join(f"<tr>{_TH.format(html.escape(k))}{_TD.format(v)}</tr>" for k, v in rows)
    return f"<table class='{cls}'>{body}</table>"


def table(header: Sequence[str], rows: Iterable[Sequence[str]], cls: str = "") -> str:
    """A table with a header; cells are HTML already."""
    head = "".join(_TH.format(html.escape(h)) for h in header)
    body = "".join("<tr>" + "".join(_TD.format(c) for c in r) + "</tr>" for r in rows)
    return f"<table class='{cls}'><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


class Listing(list):
    """A plain list of registry objects that a notebook shows as one table.

    Each item provides ``_html_header`` (class attribute) and ``_html_row()``."""

    def __init__(self, items: Iterable[Any] = (), empty: str = "nothing yet") -> None:
        super().__init__(items)
        self.empty = empty

    def _repr_html_(self) -> str:
        if not self:
            return f"<i>{html.escape(self.empty)}</i>"
        return table(type(self[0])._html_header, (item._html_row() for item in self), "mlops-lab-listing")
