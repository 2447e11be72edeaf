"""Exports of what a grid shows: CSV and Excel that are safe to open in a spreadsheet, and
the grid's own view (quick search, column filters, sort) re-applied on the server.

**Injection (OWASP "CSV Injection").** A cell that begins with ``=``, ``+``, ``-`` or ``@`` (or a
tab, carriage return, line feed or NUL, which some spreadsheets skip before looking) is read by
Excel as a formula: a hostname or a reason crafted as ``=HYPERLINK(...)`` would run on a
planner's machine. Every *text* cell is cleaned in this order: control characters are stripped
first (so ``"\x01=HYPERLINK(…)"`` cannot hide its ``=`` behind one), then a cell whose first
character (or first after leading spaces) is one of those gets a leading single quote. Numbers
stay numbers, so a negative saving is still a negative number in the spreadsheet. CSV fields
are quoted by the csv module (every text field), and the comment lines saying what the export
holds are CSV rows too: ``# Filters,"<value>"`` with the value cleaned like any cell.

**Authority.** The rows never come from the browser: callbacks recompute them from the run,
the filters and the scenario. Only the grid's view may come from the browser (quick search
text, column filter model, sort); :func:`apply_view` validates it and re-applies it here.

Builders are pure (rows in, bytes out); the page callbacks hand the bytes to ``dcc.Download``.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import dash_bootstrap_components as dbc
import pandas as pd
from dash import dcc, html

# the escaping and the file builders live in the engine (the command line exports too): one rule
from forecasting.exports import (  # noqa: F401 (re-exported: the app's callbacks and tests import them here)
    FORMULA_PREFIXES,
    MAX_SHEET_TITLE,
    clean_text,
    csv_bytes,
    excel_book,
    excel_bytes,
    export_name,
    neutralise,
    neutralise_frame,
    one_line,
)


def rows_frame(rows: Iterable[Mapping[str, Any]] | None, columns: Sequence[tuple[str, str]]) -> pd.DataFrame:
    """Grid rows (AG Grid ``virtualRowData``: the filtered, sorted rows) as a frame with the
    grid's headers, in the grid's column order. Missing fields become empty cells."""
    fields = [f for f, _ in columns]
    data = [[_cell(r.get(f)) for f in fields] for r in (rows or []) if isinstance(r, Mapping)]
    frame = pd.DataFrame(data, columns=[h for _, h in columns], dtype=object)
    for col in frame.columns:  # numbers stay numbers (None as missing)
        values = frame[col].tolist()
        if values and all(
            v is None or (isinstance(v, int | float) and not isinstance(v, bool)) for v in values
        ):
            frame[col] = pd.to_numeric(frame[col], errors="coerce")
    return frame


def _cell(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, list | tuple):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dict):
        return str(value)
    return value


def export_bar(*, csv_id: str, excel_id: str, download_id: str, search_id: str, note_id: str) -> html.Div:
    """Quick search box, a row count, and the two export buttons (with their dcc.Download)."""
    return html.Div(
        [
            html.Label("Search the table", htmlFor=search_id, className="visually-hidden"),
            dbc.Input(
                id=search_id,
                type="search",
                placeholder="Quick search…",
                debounce=300,
                size="sm",
                className="grid-search",
                style={"maxWidth": "260px"},
            ),
            html.Div(id=note_id, className="small text-muted flex-grow-1", **{"aria-live": "polite"}),
            dbc.ButtonGroup(
                [
                    dbc.Button("Export CSV", id=csv_id, color="primary", outline=True, size="sm"),
                    dbc.Button("Export Excel", id=excel_id, color="primary", outline=True, size="sm"),
                ],
                className="export-buttons",
            ),
            dcc.Download(id=download_id),
        ],
        className="d-flex align-items-center flex-wrap gap-2 mb-2",
    )


# ---------------------------------------------------------------- the grid's view, re-applied

MAX_SEARCH_CHARS = 200
MAX_FILTER_CHARS = 200
TEXT_TYPES = {"contains", "notContains", "equals", "notEqual", "startsWith", "endsWith", "blank", "notBlank"}
NUMBER_TYPES = {
    "equals",
    "notEqual",
    "greaterThan",
    "greaterThanOrEqual",
    "lessThan",
    "lessThanOrEqual",
    "inRange",
    "blank",
    "notBlank",
}
DATE_TYPES = {"equals", "notEqual", "greaterThan", "lessThan", "inRange", "blank", "notBlank"}
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True)
class GridView:
    """The part of a grid's state an export may take from the browser, validated: the quick
    search text, the column filters (AG Grid's filter model: text, number and date filters on
    known columns) and the sort (known columns, asc/desc). Anything else is dropped."""

    search: str = ""
    filters: tuple[tuple[str, dict[str, Any]], ...] = ()
    sort: tuple[tuple[str, bool], ...] = ()  # (field, ascending), highest priority first
    dropped: tuple[str, ...] = field(default=())

    @classmethod
    def from_browser(
        cls, search: Any, filter_model: Any, column_state: Any, fields: Sequence[str]
    ) -> GridView:
        known = set(fields)
        dropped: list[str] = []
        text = clean_text(search).strip()[:MAX_SEARCH_CHARS] if isinstance(search, str) else ""
        filters: list[tuple[str, dict[str, Any]]] = []
        if isinstance(filter_model, Mapping):
            for col, spec in list(filter_model.items())[: len(fields)]:
                ok = _filter_spec(spec) if col in known else None
                if ok is None:
                    dropped.append(f"filter on {str(col)[:40]!r}")
                else:
                    filters.append((str(col), ok))
        sort: list[tuple[int, str, bool]] = []
        if isinstance(column_state, list):
            for i, c in enumerate(column_state[: 4 * len(fields)]):
                if not isinstance(c, Mapping) or c.get("sort") not in ("asc", "desc"):
                    continue
                if c.get("colId") not in known:
                    dropped.append(f"sort on {str(c.get('colId'))[:40]!r}")
                    continue
                idx = c.get("sortIndex")
                rank = idx if isinstance(idx, int) and not isinstance(idx, bool) else 1000 + i
                sort.append((rank, str(c["colId"]), c["sort"] == "asc"))
        sort.sort()
        return cls(text, tuple(filters), tuple((f, asc) for _, f, asc in sort), tuple(dropped))

    def describe(self) -> str:
        parts = []
        if self.search:
            parts.append(f"quick search {self.search!r}")
        parts += [f"{f} {spec.get('type', 'filter')}" for f, spec in self.filters]
        if self.sort:
            parts.append(
                "sorted by " + ", ".join(f"{f} {'ascending' if a else 'descending'}" for f, a in self.sort)
            )
        return "; ".join(parts) if parts else "none"


def _filter_spec(spec: Any) -> dict[str, Any] | None:
    """A validated copy of one column's AG Grid filter model, or None if it is not one."""
    if not isinstance(spec, Mapping):
        return None
    kind = spec.get("filterType")
    if "conditions" in spec:
        conds = spec.get("conditions")
        op = spec.get("operator")
        if op not in ("AND", "OR") or not isinstance(conds, list) or not 1 <= len(conds) <= 4:
            return None
        checked = [_condition(kind, c) for c in conds]
        if any(c is None for c in checked):
            return None
        return {"filterType": kind, "type": op.lower(), "operator": op, "conditions": checked}
    return _condition(kind, spec)


def _condition(kind: Any, c: Any) -> dict[str, Any] | None:
    if not isinstance(c, Mapping) or c.get("filterType", kind) != kind:
        return None
    typ = c.get("type")
    if kind == "text" and typ in TEXT_TYPES:
        value = c.get("filter")
        if typ in ("blank", "notBlank"):
            return {"filterType": kind, "type": typ}
        if not isinstance(value, str | int | float) or isinstance(value, bool):
            return None
        text = clean_text(str(value))
        if len(text) > MAX_FILTER_CHARS:  # refused, not cut: a shortened filter would match other rows
            return None
        return {"filterType": kind, "type": typ, "filter": text}
    if kind == "number" and typ in NUMBER_TYPES:
        if typ in ("blank", "notBlank"):
            return {"filterType": kind, "type": typ}
        lo, hi = _number(c.get("filter")), _number(c.get("filterTo"))
        if lo is None or (typ == "inRange" and hi is None):
            return None
        return {"filterType": kind, "type": typ, "filter": lo, "filterTo": hi}
    if kind == "date" and typ in DATE_TYPES:
        if typ in ("blank", "notBlank"):
            return {"filterType": kind, "type": typ}
        lo, hi = _date(c.get("dateFrom")), _date(c.get("dateTo"))
        if lo is None or (typ == "inRange" and hi is None):
            return None
        return {"filterType": kind, "type": typ, "dateFrom": lo, "dateTo": hi}
    return None


def _number(v: Any) -> float | None:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        return None
    try:
        out = float(v)
    except ValueError:
        return None
    return out if math.isfinite(out) else None


def _date(v: Any) -> str | None:
    return v[:10] if isinstance(v, str) and _DATE.match(v) else None


def js_text(value: Any) -> str:
    """A value as the browser's grid turns it into text (93.0 → '93', None → '')."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _passes(value: Any, spec: Mapping[str, Any]) -> bool:
    if "conditions" in spec:
        results = (_passes(value, c) for c in spec["conditions"])
        return all(results) if spec["operator"] == "AND" else any(results)
    typ = spec["type"]
    blank = value is None or value == "" or (isinstance(value, float) and not math.isfinite(value))
    if typ == "blank":
        return blank
    if typ == "notBlank":
        return not blank
    if blank:
        return False
    kind = spec["filterType"]
    if kind == "text":
        v, f = js_text(value).lower(), spec["filter"].lower()
        return {
            "contains": f in v,
            "notContains": f not in v,
            "equals": v == f,
            "notEqual": v != f,
            "startsWith": v.startswith(f),
            "endsWith": v.endswith(f),
        }[typ]
    if kind == "number":
        x = _number(value)
        if x is None:
            return False
        lo, hi = spec["filter"], spec["filterTo"]
        return {
            "equals": lambda: x == lo,
            "notEqual": lambda: x != lo,
            "greaterThan": lambda: x > lo,
            "greaterThanOrEqual": lambda: x >= lo,
            "lessThan": lambda: x < lo,
            "lessThanOrEqual": lambda: x <= lo,
            "inRange": lambda: lo < x < hi,
        }[typ]()
    d = _date(js_text(value))
    if d is None:
        return False
    lo, hi = spec["dateFrom"], spec["dateTo"]
    return {
        "equals": lambda: d == lo,
        "notEqual": lambda: d != lo,
        "greaterThan": lambda: d > lo,
        "lessThan": lambda: d < lo,
        "inRange": lambda: lo < d < hi,
    }[typ]()


def apply_view(
    rows: Sequence[Mapping[str, Any]],
    view: GridView,
    fields: Sequence[str],
    orders: Mapping[str, Mapping[str, int]] | None = None,
) -> list[Mapping[str, Any]]:
    """``rows`` (computed on the server) narrowed and ordered as the grid shows them: AG Grid's
    quick filter (every word of the search, case-insensitive, in some column of the row), the
    column filters, then the sort (``orders`` ranks columns sorted by meaning, e.g. severity;
    missing values first, as the grid does)."""
    out = list(rows)
    words = [w.lower() for w in view.search.split() if w]
    if words:

        def haystack(r: Mapping[str, Any]) -> str:
            return "\n".join(js_text(r.get(f)) for f in fields).lower()

        out = [r for r in out if all(w in haystack(r) for w in words)]
    for col, spec in view.filters:
        out = [r for r in out if _passes(r.get(col), spec)]
    for col, ascending in reversed(view.sort):
        rank = (orders or {}).get(col)

        def key(r: Mapping[str, Any], col: str = col, rank: Mapping[str, int] | None = rank) -> tuple:
            v = r.get(col)
            if rank is not None:
                return (1, rank.get(str(v), 9))
            if v is None or (isinstance(v, float) and not math.isfinite(v)):
                return (0, 0)
            return (1, v) if isinstance(v, int | float) and not isinstance(v, bool) else (1, str(v))

        try:
            out.sort(key=key, reverse=not ascending)
        except TypeError:  # numbers and text mixed in one column: compare as text
            out.sort(key=lambda r, col=col: js_text(r.get(col)), reverse=not ascending)
    return out
