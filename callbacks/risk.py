"""Utilization risk callbacks: KPIs and the risk grid under the filters and the what-if scenario.

The scenario's results come from app.whatif (the plan itself, or the engine's what-if cached
per run and scenario); this module only masks, sorts and formats.
"""

from __future__ import annotations

import json
from typing import Any

import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import Dash, Input, Output, html, no_update
from dash.exceptions import PreventUpdate

from app import get_context, ids
from app.decisions import DECISION_EXPORT_COLUMNS, decisions_of, with_decisions
from app.filters import FilterState
from app.pages.risk import RISK_COLUMN_DEFS
from app.readmodel import SEVERITY_RANK, Plan, ReadModel
from app.servergrid import FrameCache, GridRows, paged
from app.whatif import ScenarioState, ScenarioView, WhatIfScopeError, scenario_view, scope_alert
from components.grid import records
from components.kpi import kpi_card, severity_badges
from components.layout import (
    empty_state,
    metric_label,
    metric_unit,
    no_match_state,
    no_run_state,
    not_in_run,
)

from .grids import register_paged_grid
from .whatif import OPEN_SERVER_JS, register_grid_tools

ACT_WINDOW_DAYS = 30
# What the export holds (field, header): the grid's columns plus the identifying extras.
EXPORT_COLUMNS: list[tuple[str, str]] = [
    ("server_id", "Server"),
    ("hostname", "Hostname"),
    ("business_unit", "Business unit"),
    ("environment", "Environment"),
    ("criticality", "Criticality"),
    ("metric_label", "Metric"),
    ("current_p95", "Current p95"),
    ("threshold", "Threshold"),
    ("unit", "Unit"),
    ("breach_expected", "Expected breach"),
    ("breach_optimistic", "Breach (optimistic)"),
    ("breach_pessimistic", "Breach (pessimistic)"),
    ("probability", "P(breach) %"),
    ("act_by", "Act by"),
    ("severity", "Severity"),
    ("score", "Score"),
    ("reason", "Reason"),
    *DECISION_EXPORT_COLUMNS,
]
GRID_FIELDS = [
    "row_id",
    "server_id",
    "hostname",
    "business_unit",
    "environment",
    "criticality",
    "metric",
    "metric_label",
    "unit",
    "current_p95",
    "threshold",
    "breach_expected",
    "breach_optimistic",
    "breach_pessimistic",
    "breach_range",
    "probability",
    "act_by",
    "days_to_breach",
    "severity",
    "score",
    "reason",
    "decision",
    "decision_by",
    "decision_at",
]


def at_risk(frame: pd.DataFrame) -> pd.DataFrame:
    """Rows with a severity (low or worse), worst first: severity, then score, then server."""
    sev = frame["severity"].astype(str)
    out = frame[(sev != "none").to_numpy()]
    rank = out["severity"].astype(str).map(SEVERITY_RANK).fillna(len(SEVERITY_RANK)).to_numpy()
    order = np.lexsort((out["server_id"].astype(str).to_numpy(), -out["score"].to_numpy(dtype=float), rank))
    return out.iloc[order].reset_index(drop=True)


def _dates(s: pd.Series) -> np.ndarray:
    ts = pd.to_datetime(s, utc=True)
    return np.where(ts.isna(), "", ts.dt.strftime("%Y-%m-%d").fillna("")).astype(object)


def grid_rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    """JSON rows for the grid (and so for the export)."""
    return records(grid_frame(frame), GRID_FIELDS)


def grid_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """The grid's fields of every row, vectorised (a server-paged grid converts one block)."""
    metric = frame["metric"].astype(str)
    lo, hi = _dates(frame["breach_optimistic"]), _dates(frame["breach_pessimistic"])
    rng = np.where(
        (lo == "") & (hi == ""), "", np.char.add(np.char.add(lo.astype(str), " – "), hi.astype(str))
    )
    rng = np.where((lo == "") & (hi != ""), np.char.add("by ", hi.astype(str)), rng)
    shown = frame.assign(
        row_id=frame["server_id"].astype(str) + "/" + metric,
        metric_label=metric.map(metric_label),
        unit=metric.map(metric_unit),
        breach_range=rng.astype(object),
        probability=(frame["breach_probability"].to_numpy(dtype=float) * 100).round(0),
        score=frame["score"].to_numpy(dtype=float).round(1),
    )
    for col in GRID_FIELDS:
        if col not in shown:
            shown[col] = None
    return shown[GRID_FIELDS].reset_index(drop=True)


def _resolve(rm: ReadModel, data: Any, scenario: Any) -> tuple[Plan | None, FilterState, ScenarioState, str]:
    snap = rm.snapshot()
    return (
        snap.plan,
        FilterState.from_data(data),
        ScenarioState.from_data(scenario),
        snap.status.message or "No forecast run to show.",
    )


def risk_kpis(plan: Plan, view: ScenarioView, shown: pd.DataFrame, base_count: int | None) -> list[Any]:
    """At-risk rows (with the change against the plan), servers, breaches and actions due soon."""
    sev = shown["severity"].astype(str).value_counts()
    n_rows = len(shown)
    change = None
    if base_count is not None and not view.state.is_base:
        d = n_rows - base_count
        change = f"{d:+,} vs plan ({base_count:,})" if d else f"same as plan ({base_count:,})"
    origin = plan.origin
    days = shown["days_to_breach"].to_numpy(dtype=float)
    status = shown["status"].astype(str).to_numpy()
    breach_30 = shown["server_id"][(days <= ACT_WINDOW_DAYS) | (status == "already_over")].nunique()
    act_by = pd.to_datetime(shown["act_by"], utc=True)
    act_soon = (
        int((act_by <= origin + pd.Timedelta(days=ACT_WINDOW_DAYS)).sum()) if origin is not None else None
    )
    cards = [
        kpi_card(
            "At risk (server × metric)",
            f"{n_rows:,}",
            [severity_badges({s: int(sev.get(s, 0)) for s in ("critical", "high", "medium", "low")})]
            + ([html.Div(change, className="kpi-detail mt-1")] if change else []),
            tone="danger" if n_rows else "default",
            card_id=ids.RISK_COUNT,
        ),
        kpi_card("Servers at risk", f"{shown['server_id'].nunique():,}", "with at least one metric at risk"),
        kpi_card(
            f"Breaching within {ACT_WINDOW_DAYS} days",
            f"{breach_30:,}",
            "servers: expected path crosses, or already over",
            tone="danger" if breach_30 else "default",
        ),
        kpi_card(
            f"Act within {ACT_WINDOW_DAYS} days",
            "—" if act_soon is None else f"{act_soon:,}",
            "rows whose act-by date (breach − lead time) is that near",
            tone="warning" if act_soon else "default",
        ),
    ]
    return [dbc.Row([dbc.Col(c, xs=6, xl=3, className="mb-3") for c in cards], className="g-3 kpi-row")]


def risk_rows(rm: ReadModel, data: Any, scenario: Any) -> tuple[pd.DataFrame | None, Any, Any, str]:
    """(rows at risk with decisions, KPI cards, page-level empty state, note) for the filters
    and scenario; rows None when there is nothing to list."""
    plan, filters, state, message = _resolve(rm, data, scenario)
    if plan is None:
        return None, None, no_run_state(message), ""
    if not plan.has("risk") and state.is_base:
        return None, None, not_in_run("Breach risk", "risk"), ""
    mask = plan.mask(filters)
    if not mask.any():
        return None, None, no_match_state(), "0 rows"
    try:
        view = scenario_view(rm, plan, state, filters=filters)
    except WhatIfScopeError as e:
        return None, None, scope_alert(e), ""
    frame = view.risk_rows(plan, filters)
    if frame is None:
        return None, None, not_in_run("Breach risk", "risk"), ""
    shown = with_decisions(rm, plan, at_risk(frame), "risk")
    base_count = None
    if not state.is_base and plan.has("risk"):
        base = plan.table("risk", filters)
        base_count = int((base["severity"].astype(str) != "none").sum()) if base is not None else None
    kpis = risk_kpis(plan, view, shown, base_count)
    note = f"{len(shown):,} rows at risk of {len(frame):,} server × metric rows" + (
        f" · what-if computed in {view.seconds:.2f} s" if view.seconds else ""
    )
    if view.scope_note:
        note += f" · {view.scope_note}"
    empty = None
    if shown.empty:
        empty = empty_state(
            "No server is at risk under these filters and this scenario",
            "Every forecast stays below its threshold within the horizon.",
        )
    return shown, kpis, empty, note


def risk_view(rm: ReadModel, data: Any, scenario: Any) -> tuple[list[dict[str, Any]], Any, Any, str]:
    """(grid rows, KPI cards, page-level empty state, note) for the filters and scenario."""
    shown, kpis, empty, note = risk_rows(rm, data, scenario)
    return ([] if shown is None else grid_rows(shown)), kpis, empty, note


def server_side(rm: ReadModel, plan: Plan | None) -> bool:
    """Whether the risk grid is paged on the server (app.servergrid.paged: the plan's risk table
    is larger than ``grid_client_max_rows``)."""
    return paged(plan, "risk", rm.settings)


_ROWS = FrameCache()


def cached_rows(rm: ReadModel, data: Any, scenario: Any) -> GridRows | None:
    """The grid's rows for the filters and scenario (kept per process, so paging only slices);
    None when the page lists nothing."""
    plan = rm.snapshot().plan
    if plan is None:
        return None
    filters, state = FilterState.from_data(data), ScenarioState.from_data(scenario)
    decided = id(decisions_of(rm).all())  # a new decision list is a new object
    key = (
        rm._key("risk-grid"),
        plan.run_id,
        json.dumps(filters.to_data(), sort_keys=True),
        state.key(),
        decided,
    )

    def build() -> GridRows:
        shown = risk_rows(rm, filters.to_data(), state.to_data())[0]
        frame = grid_frame(shown) if shown is not None else pd.DataFrame(columns=GRID_FIELDS)
        return GridRows(frame, tuple(c["field"] for c in RISK_COLUMN_DEFS))

    return _ROWS.get(key, build)


def register(app: Dash) -> None:
    rm = get_context(app).readmodel

    @app.callback(
        Output(ids.RISK_GRID, "rowData"),
        Output(ids.RISK_KPIS, "children"),
        Output(ids.RISK_EMPTY, "children"),
        Output(ids.RISK_NOTE, "children"),
        Input(ids.FILTERS, "data"),
        Input(ids.WHATIF_STATE, "data"),
        Input(ids.DECIDE_SAVED, "data"),
    )
    def _risk(data: Any, scenario: Any, _saved: Any = None) -> tuple[Any, ...]:
        if data is None:  # the shell has not resolved the URL's filters yet
            raise PreventUpdate
        if server_side(rm, rm.snapshot().plan):  # the grid fetches its blocks itself (_rows)
            _shown, kpis, empty, note = risk_rows(rm, data, scenario)
            return no_update, kpis, empty, note
        return risk_view(rm, data, scenario)

    register_paged_grid(
        app,
        rm,
        grid_id=ids.RISK_GRID,
        alert_id=ids.RISK_GRID_ALERT,
        purge_id=ids.RISK_GRID_PURGE,
        search_id=ids.RISK_SEARCH,
        rows_fn=cached_rows,
        view_fields=[c["field"] for c in RISK_COLUMN_DEFS],
        row_fields=GRID_FIELDS,
        orders={"severity": SEVERITY_RANK},
        refresh=[(ids.DECIDE_SAVED, "data")],
    )

    app.clientside_callback(
        OPEN_SERVER_JS,
        Output(ids.URL, "href", allow_duplicate=True),
        Input(ids.RISK_GRID, "cellClicked"),
        prevent_initial_call=True,
    )
    register_grid_tools(
        app,
        grid_id=ids.RISK_GRID,
        search_id=ids.RISK_SEARCH,
        csv_id=ids.RISK_EXPORT_CSV,
        excel_id=ids.RISK_EXPORT_XLSX,
        download_id=ids.RISK_DOWNLOAD,
        columns=EXPORT_COLUMNS,
        rows_fn=export_rows,
        grid_fields=[c["field"] for c in RISK_COLUMN_DEFS],
        orders={"severity": SEVERITY_RANK},
        title="Utilization risk",
        stem="utilization-risk",
    )


def export_rows(rm: ReadModel, data: Any, scenario: Any) -> list[dict[str, Any]] | GridRows:
    """The risk grid's rows for the filters and the scenario, as its own callback computes them
    (a server-paged grid's: its cached rows, which the export narrows and orders vectorised)."""
    if server_side(rm, rm.snapshot().plan):
        rows = cached_rows(rm, data, scenario)
        return rows if rows is not None else []
    return risk_view(rm, data, scenario)[0]
