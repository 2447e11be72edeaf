"""Exports of what a grid shows: CSV and Excel that are safe to open in a spreadsheet.

A cell that begins with ``=``, ``+``, ``-`` or ``@`` (or a tab / carriage return, which some
spreadsheets strip before looking) is read by Excel as a formula: a hostname or a reason
crafted as ``=HYPERLINK(...)`` would run on a planner's machine (CSV injection, OWASP). Every
string cell is therefore neutralised with a leading single quote; numbers stay numbers, so a
negative saving is still a negative number in the spreadsheet.

Builders are pure (rows in, bytes out); the page callbacks hand the bytes to ``dcc.Download``.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import dash_bootstrap_components as dbc
import pandas as pd
from dash import dcc, html

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")
# Excel cannot hold these control characters in a cell (openpyxl refuses them).
_ILLEGAL_XLSX = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
MAX_SHEET_TITLE = 31


def neutralise(value: Any) -> Any:
    """A string a spreadsheet would run as a formula gets a leading ``'``; anything else as is."""
    if isinstance(value, str) and value.startswith(FORMULA_PREFIXES):
        return "'" + value
    return value


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells (and column names) are neutralised; numeric columns untouched."""
    out = frame.copy()
    for col in out.columns:
        s = out[col]
        if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
            continue
        out[col] = s.map(neutralise).astype(object)
    out.columns = [neutralise(str(c)) for c in out.columns]
    return out


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


def csv_bytes(frame: pd.DataFrame, comments: Sequence[str] = ()) -> bytes:
    """UTF-8 CSV (with a BOM, so Excel reads accents right) after ``# `` comment lines that say
    what the export is (the scenario, the filters, when); cells neutralised."""
    buf = io.StringIO()
    for line in comments:
        buf.write("# " + " ".join(str(line).splitlines()) + "\n")
    safe = neutralise_frame(frame)
    safe.to_csv(buf, index=False, quoting=csv.QUOTE_MINIMAL, lineterminator="\n", float_format="%.6g")
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def _xlsx_text(value: Any) -> Any:
    return _ILLEGAL_XLSX.sub("", value) if isinstance(value, str) else value


def excel_bytes(frame: pd.DataFrame, *, sheet: str, about: Sequence[tuple[str, str]] = ()) -> bytes:
    """An .xlsx with the rows on ``sheet`` and a 'Scenario' sheet of (setting, value) pairs.

    Text cells are neutralised (openpyxl would otherwise store ``=…`` as a live formula).
    """
    safe = neutralise_frame(frame)
    for col in safe.columns:
        if safe[col].dtype == object:
            safe[col] = safe[col].map(_xlsx_text)
    meta = pd.DataFrame(
        [(neutralise(_xlsx_text(str(k))), neutralise(_xlsx_text(str(v)))) for k, v in about],
        columns=["Setting", "Value"],
    )
    buf = io.BytesIO()
    with pd.ExcelWriter(buf, engine="openpyxl") as writer:
        safe.to_excel(writer, sheet_name=sheet[:MAX_SHEET_TITLE], index=False)
        meta.to_excel(writer, sheet_name="Scenario", index=False)
        for ws in writer.sheets.values():
            ws.freeze_panes = "A2"
            for column in ws.columns:
                width = max((len(str(c.value)) for c in column[:200] if c.value is not None), default=8)
                ws.column_dimensions[column[0].column_letter].width = min(max(width + 2, 8), 60)
    return buf.getvalue()


def export_name(stem: str, ext: str, now: datetime | None = None) -> str:
    """'risk-20260805-0612.csv' (a safe file name: letters, digits and dashes only)."""
    when = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M")
    clean = re.sub(r"[^A-Za-z0-9-]+", "-", stem).strip("-") or "export"
    return f"{clean}-{when}.{ext}"


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
