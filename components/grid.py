"""Dash AG Grid builders with one set of defaults, and column helpers that format in the browser.

Rows go to the browser as plain JSON (NaN → null, dates → 'YYYY-MM-DD') via :func:`records`;
numbers stay numbers so sorting is numeric, and formatting happens in AG Grid value
formatters. The ``ServerLink`` cell renderer (assets/dashAgGridComponentFunctions.js) makes
a server id a real link that navigates inside the app and keeps the filter query string.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import dash_ag_grid as dag
import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import html

DEFAULT_COL_DEF = {
    "sortable": True,
    "resizable": True,
    "filter": True,
    "minWidth": 90,
    "suppressHeaderMenuButton": False,
}


def data_grid(
    grid_id: str | dict,
    rows: list[dict[str, Any]],
    column_defs: list[dict[str, Any]],
    *,
    height: int | None = 420,
    row_id_field: str | None = "server_id",
    options: dict[str, Any] | None = None,
    class_name: str = "",
) -> dag.AgGrid:
    """A read-only grid with consistent look, sorting/filtering and stable row ids.

    ``height=None`` lets the grid size itself (use with ``options={"domLayout": "autoHeight"}``
    for short tables).
    """
    grid_options = {
        "animateRows": False,
        "suppressCellFocus": False,
        "enableCellTextSelection": True,
        "ensureDomOrder": True,
        **(options or {}),
    }
    kw: dict[str, Any] = {}
    if row_id_field:
        kw["getRowId"] = f"params.data.{row_id_field}"
    return dag.AgGrid(
        id=grid_id,
        rowData=rows,
        columnDefs=column_defs,
        defaultColDef=DEFAULT_COL_DEF,
        columnSize="responsiveSizeToFit",
        dashGridOptions=grid_options,
        style={"height": f"{height}px", "width": "100%"} if height else {"width": "100%"},
        className=f"app-grid {class_name}".strip(),
        **kw,
    )


COMPACT_COL_DEF = {
    "sortable": True,
    "resizable": True,
    "filter": False,
    "wrapHeaderText": True,
    "autoHeaderHeight": True,
    "suppressHeaderMenuButton": True,
    "minWidth": 80,
}


def compact_grid(
    grid_id: str | dict,
    rows: list[dict[str, Any]],
    column_defs: list[dict[str, Any]],
    *,
    row_id_field: str | None = "server_id",
    options: dict[str, Any] | None = None,
) -> dag.AgGrid:
    """A short table (a handful of rows): sized to its rows, sortable, no filter menus.

    Give columns fixed ``width``s and one ``flex`` column (long text) to take the rest.
    """
    grid = data_grid(
        grid_id,
        rows,
        column_defs,
        height=None,
        row_id_field=row_id_field,
        options={"domLayout": "autoHeight", "tooltipShowDelay": 300, **(options or {})},
        class_name="compact-grid",
    )
    grid.defaultColDef = COMPACT_COL_DEF
    grid.columnSize = None  # fixed widths plus one flex column fill the width exactly
    return grid


def server_link_column(field: str = "server_id", header: str = "Server", **extra: Any) -> dict[str, Any]:
    return {"field": field, "headerName": header, "cellRenderer": "ServerLink", "minWidth": 120, **extra}


def text_column(field: str, header: str, **extra: Any) -> dict[str, Any]:
    return {"field": field, "headerName": header, **extra}


def number_column(
    field: str, header: str, *, decimals: int = 0, suffix: str = "", **extra: Any
) -> dict[str, Any]:
    """Right-aligned number with thousands separators and an optional unit suffix."""
    fmt = f"params.value == null ? '—' : d3.format(',.{decimals}f')(params.value) + '{suffix}'"
    return {
        "field": field,
        "headerName": header,
        "type": "rightAligned",
        "valueFormatter": {"function": fmt},
        **extra,
    }


def money_column(field: str, header: str, **extra: Any) -> dict[str, Any]:
    fmt = "params.value == null ? '—' : '$' + d3.format(',.0f')(params.value)"
    return {
        "field": field,
        "headerName": header,
        "type": "rightAligned",
        "valueFormatter": {"function": fmt},
        **extra,
    }


def date_column(field: str, header: str, **extra: Any) -> dict[str, Any]:
    """ISO date strings sort correctly as text; missing dates read '—'."""
    return {
        "field": field,
        "headerName": header,
        "valueFormatter": {"function": "params.value || '—'"},
        **extra,
    }


def severity_column(field: str = "severity", header: str = "Severity", **extra: Any) -> dict[str, Any]:
    """Coloured severity badge, sorted by seriousness rather than alphabetically."""
    order = "{critical: 0, high: 1, medium: 2, low: 3, none: 4}"
    return {
        "field": field,
        "headerName": header,
        "cellRenderer": "SeverityBadge",
        "comparator": {"function": f"({order}[valueA] ?? 9) - ({order}[valueB] ?? 9)"},
        "minWidth": 110,
        **extra,
    }


def records(frame: pd.DataFrame, columns: Sequence[str] | None = None) -> list[dict[str, Any]]:
    """JSON-safe rows: NaN/NaT → None, timestamps → 'YYYY-MM-DD', numpy scalars → Python.

    Column by column through plain Python lists (numpy and Arrow scalars are slow to iterate):
    a 10,000-row grid takes tens of milliseconds.
    """
    cols = list(columns) if columns is not None else list(frame.columns)
    out: list[list[Any]] = []
    for c in cols:
        s = frame[c]
        if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(s.dtype):
            text = s.dt.strftime("%Y-%m-%d")
            out.append(text.astype(object).where(text.notna(), None).tolist())
        elif pd.api.types.is_bool_dtype(s.dtype):
            out.append([bool(v) for v in s.tolist()])
        elif pd.api.types.is_numeric_dtype(s.dtype):
            vals = s.to_numpy(dtype=float, na_value=np.nan).tolist()
            out.append(
                [
                    None if not math.isfinite(v) else (int(v) if v.is_integer() and abs(v) < 2**53 else v)
                    for v in vals
                ]
            )
        else:
            vals = s.to_numpy(dtype=object).tolist()
            out.append(
                [
                    None if (v is None or v is pd.NA or (isinstance(v, float) and math.isnan(v))) else str(v)
                    for v in vals
                ]
            )
    return (
        [dict(zip(cols, row, strict=True)) for row in zip(*out, strict=True)]
        if cols
        else [{} for _ in range(len(frame))]
    )


@dataclass(frozen=True)
class Column:
    """A column of :func:`plain_table`: how a value reads (text, number, date or severity)."""

    field: str
    header: str
    kind: str = "text"  # text | number | date | severity
    decimals: int = 0
    suffix: str = ""


SEVERITY_CLASSES = {"critical", "high", "medium", "low", "none"}


def _plain_cell(col: Column, value: Any) -> Any:
    if value is None or value == "":
        return "" if col.kind in ("text", "severity") else "—"
    if col.kind == "number":
        return f"{float(value):,.{col.decimals}f}{col.suffix}"
    if col.kind == "severity":
        return html.Span(
            str(value), className=f"sev-badge sev-{value if value in SEVERITY_CLASSES else 'none'}"
        )
    return str(value)


def plain_table(table_id: str, rows: Sequence[dict[str, Any]], columns: Sequence[Column]) -> dbc.Table:
    """A handful of rows (one server's metrics) as a plain HTML table.

    A data grid earns its set-up cost with sorting and filtering over many rows; for five rows
    the two small grids of the server page cost the browser ~0.4 s of its first render.
    Numbers are right-aligned with thousands separators; missing numbers and dates read '—'.
    """
    align = {
        c.field: "text-end text-nowrap"
        if c.kind == "number"
        else ("text-nowrap" if c.kind != "text" else None)
        for c in columns
    }
    head = html.Thead(html.Tr([html.Th(c.header, className=align[c.field]) for c in columns]))
    body = html.Tbody(
        [
            html.Tr([html.Td(_plain_cell(c, r.get(c.field)), className=align[c.field]) for c in columns])
            for r in rows
        ]
    )
    return dbc.Table(
        [head, body], id=table_id, hover=True, size="sm", className="mb-0 small-table plain-table"
    )
