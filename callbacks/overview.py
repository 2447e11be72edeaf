"""Fleet overview callbacks: each reads the filter store, asks the read model, builds one output."""

from __future__ import annotations

from typing import Any

from dash import Dash, Input, Output, html
from dash.exceptions import PreventUpdate

from app import get_context, ids
from app.filters import FilterState
from app.readmodel import Plan, ReadModel
from components.figures import (
    Figure,
    empty_figure,
    fleet_trend,
    utilization_distribution,
    utilization_heatmap,
)
from components.grid import (
    compact_grid,
    date_column,
    number_column,
    records,
    server_link_column,
    severity_column,
    text_column,
)
from components.kpi import overview_kpis
from components.layout import metric_label, no_match_state, no_run_state, not_in_run
from forecasting.schema import METRICS

DEFAULT_METRIC = "cpu_p95"
TOP_RISKS = 10
NO_MATCH = "No servers match these filters"


def _resolve(rm: ReadModel, data: Any) -> tuple[Plan | None, FilterState, str | None]:
    snap = rm.snapshot()
    message = None if snap.plan is not None else (snap.status.message or "No forecast run to show.")
    return snap.plan, FilterState.from_data(data), message


def _metric(metric: Any) -> str:
    return metric if isinstance(metric, str) and metric in METRICS else DEFAULT_METRIC


def kpis_view(rm: ReadModel, data: Any) -> tuple[Any, Any]:
    """KPI cards and the page-level empty state (no run / no matching servers)."""
    plan, filters, message = _resolve(rm, data)
    if plan is None:
        return None, no_run_state(message or "")
    k = plan.kpis(filters)
    cards = overview_kpis(
        servers=k.servers,
        at_risk=k.at_risk,
        breach_within=k.breach_within,
        idle=k.idle,
        idle_threshold=k.idle_threshold,
        monthly_savings=k.monthly_savings,
        id_prefix=ids.OV_KPIS,
    )
    return cards, (no_match_state() if k.servers == 0 else None)


def heatmap_view(rm: ReadModel, data: Any) -> Figure:
    plan, filters, message = _resolve(rm, data)
    title = "Utilization by business unit"
    if plan is None:
        return empty_figure(message or "", title=title)
    mask = plan.mask(filters)
    if not mask.any():
        return empty_figure(NO_MATCH, title=title)
    return utilization_heatmap(plan.utilization_by_bu(filters), plan.metrics)


def distribution_view(rm: ReadModel, data: Any, metric: Any) -> Figure:
    plan, filters, message = _resolve(rm, data)
    metric = _metric(metric)
    title = f"Distribution of current {metric_label(metric)}"
    if plan is None:
        return empty_figure(message or "", title=title)
    if not plan.mask(filters).any():
        return empty_figure(NO_MATCH, title=title)
    if metric not in plan.metrics:
        return empty_figure(f"{metric_label(metric)} is not in this run", title=title)
    threshold = plan.thresholds.get(metric)
    return utilization_distribution(plan.current_values(metric, filters), metric, threshold)


def trend_view(rm: ReadModel, data: Any, metric: Any) -> Figure:
    plan, filters, message = _resolve(rm, data)
    metric = _metric(metric)
    title = f"Fleet trend by business unit — {metric_label(metric)}"
    if plan is None:
        return empty_figure(message or "", title=title)
    if not plan.mask(filters).any():
        return empty_figure(NO_MATCH, title=title)
    bucket = "weekly" if plan.freq == "daily" else "daily"
    return fleet_trend(plan.bu_trend(metric, filters), metric, bucket=bucket)


TOP_RISK_COLUMNS = [
    server_link_column(width=110),
    text_column("hostname", "Hostname", width=150),
    text_column("business_unit", "Business unit", width=150),
    text_column("metric_label", "Metric", width=120),
    severity_column(width=95),
    date_column("breach_expected", "Expected breach", width=115),
    number_column("probability", "P(breach)", suffix=" %", width=90),
    text_column("reason", "Reason", minWidth=250, flex=1, tooltipField="reason"),
]


def top_risks_view(rm: ReadModel, data: Any) -> tuple[Any, str]:
    """The riskiest filtered servers as a grid with server links, and a one-line note."""
    plan, filters, _ = _resolve(rm, data)
    if plan is None:
        return None, ""
    top = plan.top_risks(filters, TOP_RISKS)
    if top is None:
        return not_in_run("Breach risk", "risk"), ""
    if not plan.mask(filters).any():
        return no_match_state(), ""
    if top.empty:
        return (
            html.Div(
                "No server under these filters is forecast to breach a threshold.", className="empty-state"
            ),
            "",
        )
    frame = top.assign(
        metric_label=top["metric"].map(metric_label),
        probability=(top["breach_probability"] * 100).round(0),
    )
    cols = [
        "server_id",
        "hostname",
        "business_unit",
        "environment",
        "criticality",
        "metric_label",
        "severity",
        "score",
        "breach_expected",
        "days_to_breach",
        "probability",
        "reason",
    ]
    n_risk = int(plan.summary["at_risk"].to_numpy()[plan.mask(filters)].sum())
    note = f"{len(frame)} of {n_risk:,} servers at risk under these filters, worst first."
    grid = compact_grid(ids.OV_TOP_RISKS_GRID, records(frame, cols), TOP_RISK_COLUMNS)
    return grid, note


def register(app: Dash) -> None:
    rm = get_context(app).readmodel

    def need(data: Any) -> None:
        if data is None:  # the shell has not resolved the URL's filters yet
            raise PreventUpdate

    @app.callback(
        Output(ids.OV_KPIS, "children"), Output(ids.OV_EMPTY, "children"), Input(ids.FILTERS, "data")
    )
    def _kpis(data: Any) -> tuple[Any, Any]:
        need(data)
        return kpis_view(rm, data)

    @app.callback(Output(ids.OV_HEATMAP, "figure"), Input(ids.FILTERS, "data"))
    def _heatmap(data: Any) -> Figure:
        need(data)
        return heatmap_view(rm, data)

    @app.callback(
        Output(ids.OV_DISTRIBUTION, "figure"), Input(ids.FILTERS, "data"), Input(ids.OV_METRIC, "value")
    )
    def _distribution(data: Any, metric: Any) -> Figure:
        need(data)
        return distribution_view(rm, data, metric)

    @app.callback(Output(ids.OV_TREND, "figure"), Input(ids.FILTERS, "data"), Input(ids.OV_METRIC, "value"))
    def _trend(data: Any, metric: Any) -> Figure:
        need(data)
        return trend_view(rm, data, metric)

    @app.callback(
        Output(ids.OV_TOP_RISKS, "children"),
        Output(ids.OV_TOP_RISKS_NOTE, "children"),
        Input(ids.FILTERS, "data"),
    )
    def _top(data: Any) -> tuple[Any, str]:
        need(data)
        return top_risks_view(rm, data)
