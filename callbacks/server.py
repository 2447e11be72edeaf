"""Server forecast callbacks: picker, facts, accuracy, risk, charts, and the on-demand re-forecast.

Re-forecasting with Prophet takes a second or two, so it runs as a background callback
(polled by the browser; app.background: a local process, or with CAPFC_REDIS_URL a Celery
worker any web instance can poll) with a progress bar and a cancel button; its result goes to
a store and the charts are updated with ``Patch``es of the forecast traces only (DESIGN.md §6).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Sequence
from typing import Any

import dash_bootstrap_components as dbc
import numpy as np
import pandas as pd
from dash import ALL, ClientsideFunction, Dash, Input, Output, State, ctx, dcc, html
from dash.exceptions import PreventUpdate

from app import get_context, ids
from app.decisions import decisions_of
from app.errors import report, user_message
from app.filters import FilterState
from app.pages.server import PROGRESS_SHOWN
from app.readmodel import (
    MODEL_CHOICES,
    Plan,
    ReadModel,
    ReadModelError,
    breach_markers,
    quarter_end_spans,
    reforecast,
)
from components.figures import GRAPH_CONFIG, GRAPH_STYLE, patch_forecast, server_forecast_figure
from components.grid import (
    Column,
    plain_table,
    records,
)
from components.layout import (
    empty_state,
    facts_table,
    format_money,
    metric_label,
    no_run_state,
    not_in_run,
)
from forecasting.plan import BAND_80, BAND_95
from forecasting.records.decisions import attach_decisions
from forecasting.sources import StoreError

log = logging.getLogger(__name__)

PICKER_LIMIT = 50
HIDDEN = {"display": "none"}
SHOWN: dict[str, str] = {}
FORECAST_FIELDS = ["metric", "timestamp", "yhat", BAND_95[0], BAND_80[0], BAND_80[1], BAND_95[1]]
BREACH_KINDS = ("optimistic", "expected", "pessimistic")
HISTORY_SHOWN = {"daily": pd.Timedelta(days=365), "hourly": pd.Timedelta(days=28)}


# --------------------------------------------------------------------------- picker


def picker_options(rm: ReadModel, search: str | None, value: str | None, data: Any) -> list[dict[str, str]]:
    """Up to PICKER_LIMIT servers matching the typed text (id or hostname) under the filters."""
    plan = rm.snapshot().plan
    if plan is None:
        return []
    found = plan.search_servers(search, FilterState.from_data(data), limit=PICKER_LIMIT)
    options = [_option(r) for r in found.itertuples(index=False)]
    if value and plan.position(value) is not None and all(o["value"] != value for o in options):
        row = plan.inventory.iloc[plan.position(value)]
        options.insert(0, _option(row))
    return options


def _option(row: Any) -> dict[str, str]:
    return {"label": f"{row.server_id} · {row.hostname} · {row.business_unit}", "value": str(row.server_id)}


# --------------------------------------------------------------------------- page content


def server_view(rm: ReadModel, server_id: Any) -> tuple[Any, Any, Any, Any, Any, dict]:
    """(message, facts, accuracy, risk, charts, body style) for the server in the path."""
    snap = rm.snapshot()
    plan = snap.plan
    nothing = (None, None, None, None)
    if plan is None:
        return (no_run_state(snap.status.message or ""), *nothing, HIDDEN)
    if not isinstance(server_id, str) or not server_id:
        msg = empty_state(
            "Choose a server",
            "Search by server id or hostname in the picker above, or open one from the overview's top risks.",
        )
        return (msg, *nothing, HIDDEN)
    if plan.position(server_id) is None:
        shown = server_id if len(server_id) <= 60 else server_id[:59] + "…"
        msg = dbc.Alert(
            [
                html.Strong("Unknown server. "),
                html.Span(f"There is no server “{shown}” in this fleet's plan (run {plan.run_id}). "),
                html.Span(
                    "It may have been decommissioned, or the link is mistyped: search for a server above."
                ),
            ],
            color="warning",
            id=ids.SRV_UNKNOWN,
        )
        return (msg, *nothing, HIDDEN)

    message = None
    try:
        history = rm.server_history(plan, server_id)
    except (StoreError, OSError) as e:
        ref = report(log, f"history of {server_id} could not be read", e, level=logging.WARNING)
        history = pd.DataFrame(columns=["server_id", "timestamp"])
        message = dbc.Alert(
            user_message("The history of this server could not be read", ref) + " Showing the forecast only.",
            color="warning",
        )
    try:
        backtest = rm.server_table(plan, "backtest", server_id)
    except (StoreError, OSError) as e:
        ref = report(log, f"backtest of {server_id} could not be read", e, level=logging.WARNING)
        backtest = pd.DataFrame(columns=["server_id", "metric", "model"])
        message = dbc.Alert(
            user_message("The backtest of this server could not be read", ref), color="warning"
        )
    try:
        forecast = rm.server_forecast(plan, server_id)
    except (StoreError, ReadModelError, OSError) as e:
        ref = report(log, f"forecast of {server_id} could not be read", e, level=logging.WARNING)
        forecast = None
        message = dbc.Alert(
            user_message("The forecast of this server could not be read", ref), color="warning"
        )
    return (
        message,
        facts_view(plan, server_id),
        accuracy_view(plan, server_id, backtest),
        risk_view(plan, server_id, decisions_of(rm).current(plan)),
        charts_view(plan, server_id, history, forecast),
        SHOWN,
    )


def facts_view(plan: Plan, server_id: str) -> Any:
    s = plan.server(server_id) or {}
    rows: list[tuple[str, Any]] = [
        ("Server id", s.get("server_id")),
        ("Hostname", s.get("hostname")),
        ("Business unit", s.get("business_unit")),
        ("Region", s.get("region")),
        ("Environment", s.get("environment")),
        ("Criticality", s.get("criticality")),
        ("Server type", s.get("server_type")),
        ("Size", _size(s)),
        ("Monthly cost", format_money(_num(s.get("monthly_cost_usd")))),
    ]
    placement = placement_text(s)
    if placement:
        rows.append(("Placement", placement))
    recs = plan.server_rows("recommendations", server_id)
    if recs is not None and len(recs):
        r = recs.iloc[0]
        savings = _num(r.get("monthly_savings"))
        action = str(r.get("action") or "")
        text = action + (f" (saves {format_money(savings)}/month)" if savings and savings > 0 else "")
        rows.append(
            (
                "Recommendation",
                html.Span([html.Strong(text), html.Br(), html.Small(str(r.get("reason") or ""))]),
            )
        )
    return facts_table(rows)


def _text(v: Any) -> str:
    """A present inventory string ('' for missing / NA)."""
    return "" if v is None or (not isinstance(v, str) and pd.isna(v)) else str(v).strip()


def placement_text(s: dict) -> str:
    """The placement facts the policy obeys, in words ('' when the inventory says none)."""
    parts = []
    role, partner = _text(s.get("dr_role")), _text(s.get("dr_partner_id"))
    if role or partner:
        parts.append(f"DR {role or 'pair'}" + (f" (partner {partner})" if partner else ""))
    group = _text(s.get("anti_affinity_group"))
    if group:
        parts.append(f"anti-affinity group {group}: never shares a host with its members")
    pinned = s.get("pinned")
    if pinned is True or (isinstance(pinned, np.bool_) and bool(pinned)):
        parts.append("pinned: never moved or resized")
    return " · ".join(parts)


def _num(v: Any) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


def _size(s: dict) -> str:
    cores, mem, disk = _num(s.get("cpu_cores")), _num(s.get("memory_gb")), _num(s.get("disk_gb"))
    parts = []
    if cores is not None:
        parts.append(f"{cores:g} vCPU")
    if mem is not None:
        parts.append(f"{mem:g} GB RAM")
    if disk is not None:
        parts.append(f"{disk:,.0f} GB disk")
    return " · ".join(parts) or "—"


def trust(mase: float | None, coverage_80: float | None) -> tuple[str, str]:
    """A plain verdict on backtest scores: (level good|fair|poor|unknown, sentence)."""
    if mase is None or not math.isfinite(mase):
        return "unknown", "not backtested"
    calibrated = coverage_80 is not None and 0.65 <= coverage_80 <= 0.95
    if mase < 0.8 and calibrated:
        return "good", "good: clearly beats the naive baseline, bands well calibrated"
    if mase < 1.0:
        return "fair", "fair: beats the naive baseline" + ("" if calibrated else ", but the bands are off")
    return "poor", "poor: no better than repeating last week"


ACCURACY_COLUMNS = [
    Column("metric_label", "Metric"),
    Column("mase", "MASE", "number", decimals=2),
    Column("naive_mase", "Naive baseline MASE", "number", decimals=2),
    Column("coverage_80", "80 % band held", "number", suffix=" %"),
    Column("coverage_95", "95 % band held", "number", suffix=" %"),
    Column("verdict", "Verdict"),
]


def accuracy_view(plan: Plan, server_id: str, bt: pd.DataFrame | None) -> Any:
    """Backtest scores of the run's model on this server per metric, beside the naive baseline
    (``bt``: the server's backtest rows, ReadModel.server_table; None when not in the run)."""
    if bt is None:
        return not_in_run("Backtest accuracy", "backtest")
    if bt.empty:
        return empty_state(
            "This server was not backtested", "Too little history, or it joined the fleet after the cut-offs."
        )
    models = list(dict.fromkeys(bt["model"].astype(str)))
    model = plan.model if plan.model in models else next((m for m in models if m != "naive"), models[0])
    mine = bt[bt["model"] == model].drop_duplicates("metric").set_index("metric")
    naive = bt[bt["model"] == "naive"].drop_duplicates("metric").set_index("metric")["mase"]
    metrics = [m for m in plan.metrics if m in mine.index] + [m for m in mine.index if m not in plan.metrics]
    rows = []
    for m in metrics:
        r = mine.loc[m]
        mase, cov80 = _num(r["mase"]), _num(r["coverage_80"])
        level, sentence = trust(mase, cov80) if model != "naive" else ("unknown", "the baseline itself")
        rows.append(
            {
                "metric": m,
                "metric_label": metric_label(m),
                "mase": mase,
                "naive_mase": _num(naive.get(m)) if model != "naive" else None,
                "coverage_80": None if cov80 is None else round(cov80 * 100),
                "coverage_95": None
                if _num(r["coverage_95"]) is None
                else round(float(r["coverage_95"]) * 100),
                "verdict": sentence,
            }
        )
    frame = pd.DataFrame(rows)
    mase_med = float(np.nanmedian(frame["mase"].to_numpy(dtype=float)))
    cov_mean = (
        float(np.nanmean(pd.to_numeric(frame["coverage_80"], errors="coerce").to_numpy(dtype=float))) / 100
    )
    level, sentence = (
        trust(mase_med, cov_mean) if model != "naive" else ("unknown", "the seasonal-naive baseline")
    )
    name = MODEL_CHOICES.get(model, model)
    summary = [
        html.Span(f"{name}{' (the run’s model)' if model == plan.model else ''}: "),
        html.Span(sentence, className=f"trust-{level}"),
        html.Span(
            f" — median MASE {mase_med:.2f}; its 80 % band held {cov_mean * 100:.0f} % of actual values."
        ),
    ]
    explain = (
        "MASE compares the forecast error with a seasonal-naive forecast (repeat last week) on the same "
        "history: below 1 the model is better. “Band held” is how often actual values fell inside the "
        "band during the backtest; an 80 % band should hold about 80 %."
    )
    return html.Div(
        [
            html.P(summary, className="mb-2"),
            plain_table(
                ids.SRV_ACCURACY_TABLE, records(frame, [c.field for c in ACCURACY_COLUMNS]), ACCURACY_COLUMNS
            ),
            html.P(explain, className="small text-muted mt-2 mb-0"),
        ]
    )


RISK_COLUMNS = [
    Column("metric_label", "Metric"),
    Column("severity", "Severity", "severity"),
    Column("threshold", "Threshold", "number"),
    Column("current_p95", "Current p95", "number", decimals=1),
    Column("forecast_peak", "Forecast peak", "number", decimals=1),
    Column("breach_optimistic", "Breach (optimistic)", "date"),
    Column("breach_expected", "Breach (expected)", "date"),
    Column("breach_pessimistic", "Breach (pessimistic)", "date"),
    Column("probability", "P(breach)", "number", suffix=" %"),
    Column("act_by", "Act by", "date"),
    Column("decision", "Decision"),
    Column("reason", "Reason"),
]


def risk_view(plan: Plan, server_id: str, decisions: pd.DataFrame | None = None) -> Any:
    """The server's risk rows with the planners' decisions in force (recorded on the risk page)."""
    risk = plan.server_rows("risk", server_id)
    if risk is None:
        return not_in_run("Breach risk", "risk")
    if risk.empty:
        return empty_state("No risk rows for this server", "It had no forecastable metric in this run.")
    frame = risk.assign(
        metric_label=risk["metric"].map(metric_label),
        probability=(risk["breach_probability"] * 100).round(0),
    )
    if decisions is not None:
        frame = attach_decisions(frame, decisions, "risk")
    else:
        frame["decision"] = ""
    return plain_table(ids.SRV_RISK_TABLE, records(frame, [c.field for c in RISK_COLUMNS]), RISK_COLUMNS)


def _plan_breaches(
    plan: Plan, server_id: str, metric: str, forecast: pd.DataFrame, risk: pd.DataFrame | None = None
) -> dict[str, Any]:
    """Breach dates from the risk table when the run has it (the planners' numbers), else from the paths."""
    risk = plan.server_rows("risk", server_id) if risk is None else risk
    if risk is not None:
        row = risk[risk["metric"] == metric]
        if len(row):
            r = row.iloc[0]
            return {
                k: (None if pd.isna(r[f"breach_{k}"]) else pd.Timestamp(r[f"breach_{k}"]))
                for k in BREACH_KINDS
            }
    return breach_markers(forecast, plan.threshold(server_id, metric))


def charts_view(plan: Plan, server_id: str, history: pd.DataFrame, fc: pd.DataFrame | None) -> Any:
    """One chart per metric: history, the run's forecast (``fc``: ReadModel.server_forecast),
    bands, threshold, breaches, quarter-ends."""
    fc_metrics = set(fc["metric"]) if fc is not None else set()
    metrics = [m for m in plan.metrics if m in fc_metrics or (m in history and history[m].notna().any())]
    if not metrics:
        return empty_state(
            "No history or forecast for this server", "Nothing was measured or forecast for it."
        )
    if fc is None:
        fc = pd.DataFrame(columns=FORECAST_FIELDS)
    origin = plan.origin
    if origin is None and len(history):
        origin = pd.Timestamp(history["timestamp"].max())
    x_start = origin - HISTORY_SHOWN.get(plan.freq, HISTORY_SHOWN["daily"]) if origin is not None else None
    end = pd.to_datetime(fc["timestamp"], utc=True).max() if len(fc) else origin
    spans = quarter_end_spans(x_start, end) if x_start is not None and end is not None else []
    model_label = "plan: " + MODEL_CHOICES.get(plan.model, plan.model or "batch")
    risk = plan.server_rows("risk", server_id)
    by_metric = dict(tuple(fc.groupby("metric", sort=False))) if len(fc) else {}
    empty = fc.iloc[0:0]
    graphs = []
    for m in metrics:
        f = by_metric.get(m, empty)
        fig = server_forecast_figure(
            m,
            history,
            f,
            threshold=plan.threshold(server_id, m),
            breaches=_plan_breaches(plan, server_id, m, f, risk),
            quarter_spans=spans,
            model_label=model_label,
            x_start=x_start,
        )
        graphs.append(
            dbc.Col(
                dbc.Card(
                    dbc.CardBody(
                        dcc.Graph(
                            id={"type": ids.SRV_GRAPH_TYPE, "index": m},
                            figure=fig,
                            config=GRAPH_CONFIG,
                            style=GRAPH_STYLE,
                        )
                    ),
                    className="section-card",
                ),
                xl=6,
                className="mb-3",
            )
        )
    return dbc.Row(graphs, className="g-3")


# --------------------------------------------------------------------------- re-forecast


def reforecast_job(
    rm: ReadModel, server_id: Any, model: Any, set_progress: Callable[[tuple[int, str]], None] | None = None
) -> tuple[dict[str, Any] | None, Any]:
    """Run in the background process: fit ``model`` on this server, return (store data, status)."""
    plan = rm.snapshot().plan
    if plan is None or not isinstance(server_id, str) or plan.position(server_id) is None:
        return None, ""
    if model == "plan" or model not in MODEL_CHOICES:
        return {"server_id": server_id, "model": "plan"}, ""
    label = MODEL_CHOICES[model]
    started = time.perf_counter()

    def progress(i: int, n: int, metric: str) -> None:
        if set_progress is not None:
            set_progress((int(100 * i / n), f"{metric_label(metric)} ({i}/{n})"))

    try:
        history = rm.server_history(plan, server_id)
        fc = reforecast(history, model, plan.freq, plan.horizon, progress=progress)
    except Exception as e:  # a model failing on one server must read as a message, not break the page
        ref = report(log, f"re-forecast of {server_id} with {model} failed", e)
        alert = dbc.Alert(
            user_message(f"{label} could not forecast this server", ref),
            color="danger",
            className="mb-0 py-1",
        )
        return None, alert
    seconds = time.perf_counter() - started
    breaches = {}
    for m, f in fc.groupby("metric", sort=False):
        b = breach_markers(f, plan.threshold(server_id, m))
        breaches[str(m)] = {k: (v.isoformat() if v is not None else None) for k, v in b.items()}
    payload = {
        "server_id": server_id,
        "model": model,
        "forecast": {c: _column(fc[c]) for c in FORECAST_FIELDS},
        "breaches": breaches,
        "seconds": round(seconds, 2),
    }
    status = f"{label} re-forecast in {seconds:.1f} s: the dashed line, bands and breach markers now show it."
    return payload, status


def _column(s: pd.Series) -> list[Any]:
    if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(s.dtype):
        return [t.isoformat() for t in pd.to_datetime(s, utc=True)]
    if pd.api.types.is_numeric_dtype(s.dtype):
        return [round(float(v), 4) if math.isfinite(v) else None for v in s.to_numpy(dtype=float)]
    return [str(v) for v in s]


def patches_view(rm: ReadModel, data: Any, server_id: Any, metrics: Sequence[str]) -> list[Any]:
    """One Patch per chart (in ``metrics`` order): the re-forecast's traces, or the plan's again."""
    plan = rm.snapshot().plan
    if plan is None or not isinstance(data, dict) or data.get("server_id") != server_id:
        raise PreventUpdate
    if data.get("model") == "plan":
        fc = rm.server_forecast(plan, server_id)
        fc = fc if fc is not None else pd.DataFrame(columns=FORECAST_FIELDS)
        label = "plan: " + MODEL_CHOICES.get(plan.model, plan.model or "batch")
        return [
            patch_forecast(
                fc[fc["metric"] == m],
                threshold=plan.threshold(server_id, m),
                breaches=_plan_breaches(plan, server_id, m, fc[fc["metric"] == m]),
                model_label=label,
                metric=m,
            )
            for m in metrics
        ]
    model = data.get("model")
    if model not in MODEL_CHOICES or not isinstance(data.get("forecast"), dict):
        raise PreventUpdate
    fc = pd.DataFrame(data["forecast"])
    fc["timestamp"] = pd.to_datetime(fc["timestamp"], utc=True)
    label = MODEL_CHOICES[model]
    out = []
    for m in metrics:
        b = (data.get("breaches") or {}).get(m) or {}
        breaches = {k: (pd.Timestamp(b[k]) if b.get(k) else None) for k in BREACH_KINDS}
        out.append(
            patch_forecast(
                fc[fc["metric"] == m],
                threshold=plan.threshold(server_id, m),
                breaches=breaches,
                model_label=label,
                metric=m,
            )
        )
    return out


# --------------------------------------------------------------------------- registration


def register(app: Dash) -> None:
    rm = get_context(app).readmodel

    @app.callback(
        Output(ids.SRV_PICKER, "options"),
        Input(ids.SRV_PICKER, "search_value"),
        State(ids.SRV_PICKER, "value"),
        State(ids.FILTERS, "data"),
    )
    def _options(search: str | None, value: str | None, data: Any) -> list[dict[str, str]]:
        return picker_options(rm, search, value, data)

    app.clientside_callback(
        ClientsideFunction(namespace="capfc", function_name="openServer"),
        Output(ids.URL, "href"),
        Input(ids.SRV_PICKER, "value"),
        State(ids.SRV_ID, "data"),
        prevent_initial_call=True,
    )

    @app.callback(
        Output(ids.SRV_MESSAGE, "children"),
        Output(ids.SRV_FACTS, "children"),
        Output(ids.SRV_ACCURACY, "children"),
        Output(ids.SRV_RISK, "children"),
        Output(ids.SRV_CHARTS, "children"),
        Output(ids.SRV_BODY, "style"),
        Input(ids.SRV_ID, "data"),
    )
    def _server(server_id: Any) -> tuple[Any, ...]:
        return server_view(rm, server_id)

    @app.callback(
        Output(ids.SRV_REFORECAST, "data"),
        Output(ids.SRV_MODEL_STATUS, "children"),
        Input(ids.SRV_MODEL, "value"),
        State(ids.SRV_ID, "data"),
        background=True,
        running=[(Output(ids.SRV_PROGRESS_WRAP, "style"), PROGRESS_SHOWN, HIDDEN)],
        progress=[Output(ids.SRV_PROGRESS, "value"), Output(ids.SRV_PROGRESS, "label")],
        progress_default=[0, ""],
        cancel=[Input(ids.SRV_CANCEL, "n_clicks")],
        interval=300,
        prevent_initial_call=True,
    )
    def _reforecast(set_progress: Callable, model: Any, server_id: Any) -> tuple[Any, Any]:
        return reforecast_job(rm, server_id, model, set_progress)

    @app.callback(
        Output({"type": ids.SRV_GRAPH_TYPE, "index": ALL}, "figure"),
        Input(ids.SRV_REFORECAST, "data"),
        State(ids.SRV_ID, "data"),
        prevent_initial_call=True,
    )
    def _patch(data: Any, server_id: Any) -> list[Any]:
        metrics = [o["id"]["index"] for o in ctx.outputs_list]
        return patches_view(rm, data, server_id, metrics)
