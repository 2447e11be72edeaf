"""Track record (/track-record): pickers, the path-vs-actuals chart, coverage over time, tables.

Thin: the figures were computed by forecasting.records.track and saved beside each run; this
module reads them (once per run and record), one server's forecast and actuals for the chart,
and formats.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import dash_bootstrap_components as dbc
import pandas as pd
from dash import Dash, Input, Output

from app import get_context, ids
from app.errors import report, user_message
from app.filters import FilterState
from app.readmodel import ReadModel
from components.figures import empty_figure
from components.grid import records
from components.kpi import kpi_card
from components.layout import error_alert, metric_label
from components.records import OUTCOME_WORDS, coverage_figure, track_path_figure
from forecasting.records.track import breakdown, load_series, load_summaries, load_summary
from forecasting.sources import MetricsQuery, Store, StoreError

log = logging.getLogger(__name__)

CALL_OUTCOMES = ("hit", "missed", "false_alarm", "pending", "already_over")
HISTORY_SHOWN = pd.Timedelta(days=90)
MAX_RUNS = 60  # runs looked at for records (one listing each): the newest
_cache: OrderedDict[tuple[str, str, str], pd.DataFrame] = OrderedDict()
_lock = threading.Lock()
NO_RECORD = (
    "No run has a track record yet. A track record needs a run whose horizon has partly elapsed: after new "
    "data has arrived, run `python -m forecasting track-record` (e.g. after each batch run)."
)


def series_of(store: Store, run_id: str, record: str) -> pd.DataFrame | None:
    """The per-series rows of a run's saved record (cached by run and record name)."""
    key = (store.uri, run_id, record)
    with _lock:
        if key in _cache:
            return _cache[key]
    frame = load_series(store, run_id)
    if frame is not None:
        frame = frame.copy()
        frame["metric_label"] = frame["metric"].astype(str).map(metric_label)
        frame["outcome_label"] = frame["outcome"].map(OUTCOME_WORDS).fillna(frame["outcome"])
        frame["row_id"] = frame["server_id"].astype(str) + "/" + frame["metric"].astype(str)
        with _lock:
            _cache[key] = frame
            while len(_cache) > 6:
                _cache.popitem(last=False)
    return frame


def run_pickers(rm: ReadModel) -> tuple[list[dict[str, str]], str | None]:
    try:
        summaries = load_summaries(rm.store, MAX_RUNS)
    except StoreError as e:
        report(log, "listing track records failed", e)
        return [], None
    options = [
        {
            "label": f"{s['run_id']} · from {str(s['forecast_origin'])[:10]} · {s['elapsed_periods']}/{s['horizon']} elapsed",
            "value": s["run_id"],
        }
        for s in reversed(summaries)
    ]
    return options, (options[0]["value"] if options else None)


def _series(rm: ReadModel, run_id: str | None) -> tuple[dict | None, pd.DataFrame | None]:
    if not run_id:
        return None, None
    summary = load_summary(rm.store, run_id)
    if summary is None:
        return None, None
    return summary, series_of(rm.store, run_id, str(summary.get("record", "")))


def server_pickers(rm: ReadModel, run_id: str | None) -> tuple[list[dict[str, str]], str | None]:
    """Servers of the run, those with a call or a crossing first (they are the interesting ones)."""
    try:
        _, s = _series(rm, run_id)
    except StoreError:
        return [], None
    if s is None or s.empty:
        return [], None
    rank = s["outcome"].map({o: i for i, o in enumerate(CALL_OUTCOMES)}).fillna(len(CALL_OUTCOMES))
    order = s.assign(rank=rank).sort_values(["rank", "server_id"]).drop_duplicates("server_id")
    labels = order["server_id"] + order["outcome"].map(
        lambda o: "" if o == "quiet" else f" · {OUTCOME_WORDS.get(o, o)}"
    )
    options = [{"label": lab, "value": sid} for lab, sid in zip(labels, order["server_id"], strict=True)]
    return options, options[0]["value"]


def metric_pickers(
    rm: ReadModel, run_id: str | None, server_id: str | None
) -> tuple[list[dict[str, str]], str | None]:
    try:
        _, s = _series(rm, run_id)
    except StoreError:
        return [], None
    if s is None or not server_id:
        return [], None
    rows = s[s["server_id"] == server_id]
    if rows.empty:
        return [], None
    rank = rows["outcome"].map({o: i for i, o in enumerate(CALL_OUTCOMES)}).fillna(len(CALL_OUTCOMES))
    rows = rows.assign(rank=rank).sort_values(["rank", "metric"])
    options = [{"label": metric_label(m), "value": m} for m in rows["metric"]]
    return options, options[0]["value"]


def _pct(v: Any) -> float | None:
    return None if v is None else round(100 * float(v), 1)


def run_rows(summaries: list[dict]) -> list[dict[str, Any]]:
    out = []
    for s in reversed(summaries):
        c = s.get("calls") or {}
        out.append(
            {
                "run_id": s["run_id"],
                "forecast_origin": str(s["forecast_origin"])[:10],
                "as_of": str(s["as_of"])[:10],
                "elapsed": f"{s['elapsed_periods']} / {s['horizon']}",
                "series": s.get("series"),
                "mase_mean": s.get("mase_mean"),
                "mase_median": s.get("mase_median"),
                "coverage_80": _pct(s.get("coverage_80")),
                "coverage_95": _pct(s.get("coverage_95")),
                **{k: c.get(k, 0) for k in ("hit", "missed", "false_alarm", "pending")},
                "precision": _pct(s.get("precision")),
                "recall": _pct(s.get("recall")),
            }
        )
    return out


def record_view(rm: ReadModel, run_id: str | None, filters_data: Any) -> tuple[Any, ...]:
    """(alert, kpis, coverage figure, runs rows, breakdown rows, calls rows) for a run and the filters."""
    try:
        summaries = load_summaries(rm.store, MAX_RUNS)
        summary, series = _series(rm, run_id)
    except StoreError as e:
        ref = report(log, "reading track records failed", e, run_id=run_id)
        alert = error_alert(user_message("The track records could not be read", ref))
        return alert, None, empty_figure("No data"), [], [], []
    if not summaries:
        return dbc.Alert(NO_RECORD, color="info", className="mb-3"), None, coverage_figure([]), [], [], []
    alert = None
    if summary is None or series is None:
        alert = dbc.Alert(
            f"Run {run_id} has no track record: choose another run.", color="warning", className="mb-3"
        )
        return alert, None, coverage_figure(summaries), run_rows(summaries), [], []
    filters = FilterState.from_data(filters_data)
    plan = rm.snapshot().plan
    shown = series
    if plan is not None and not filters.is_empty:
        keep = set(plan.servers(filters)["server_id"].astype(str))
        shown = series[series["server_id"].astype(str).isin(keep)]
    c = summary.get("calls") or {}
    kpis = dbc.Row(
        [
            dbc.Col(c_, xs=6, xl=3, className="mb-3")
            for c_ in (
                kpi_card(
                    "Error (MASE)",
                    "—" if summary.get("mase_mean") is None else f"{summary['mase_median']:.2f}",
                    f"median over {summary['series']:,} series (mean {summary['mase_mean']:.2f}); < 1 beats the seasonal naive",
                    card_id=f"{ids.TR_KPIS}-mase",
                ),
                kpi_card(
                    "80 % band coverage",
                    "—" if summary.get("coverage_80") is None else f"{100 * summary['coverage_80']:.0f} %",
                    f"of actuals inside the band (95 % band: {100 * (summary.get('coverage_95') or 0):.0f} %)",
                    card_id=f"{ids.TR_KPIS}-coverage",
                ),
                kpi_card(
                    "Breach calls that came true",
                    f"{c.get('hit', 0):,}",
                    f"{c.get('missed', 0):,} missed, {c.get('false_alarm', 0):,} false alarms, {c.get('pending', 0):,} pending "
                    f"(±{summary['tolerance_days']:g} days)",
                    tone="success" if c.get("hit") else "default",
                    card_id=f"{ids.TR_KPIS}-calls",
                ),
                kpi_card(
                    "Horizon elapsed",
                    f"{summary['elapsed_periods']} / {summary['horizon']}",
                    f"forecast from {str(summary['forecast_origin'])[:10]}, actuals to {str(summary['as_of'])[:10]}",
                    card_id=f"{ids.TR_KPIS}-elapsed",
                ),
            )
        ],
        className="g-3 kpi-row",
    )
    bd = breakdown(shown) if len(shown) else pd.DataFrame()
    if len(bd):
        bd["metric_label"] = bd["metric"].astype(str).map(metric_label)
        bd["coverage_80"] = (bd["coverage_80"].astype(float) * 100).round(1)
        bd["row_id"] = (
            bd["business_unit"].astype(str) + "/" + bd["metric"].astype(str) + "/" + bd["model"].astype(str)
        )
    calls = shown[shown["outcome"] != "quiet"].copy()
    calls["coverage_80"] = (calls["coverage_80"].astype(float) * 100).round(1)
    return (
        alert,
        kpis,
        coverage_figure(summaries),
        run_rows(summaries),
        records(bd) if len(bd) else [],
        records(calls),
    )


def path_view(rm: ReadModel, run_id: str | None, server_id: str | None, metric: str | None) -> Any:
    """The chosen run's forecast of one series against its actuals."""
    title = "Predicted path and band against what happened"
    if not (run_id and server_id and metric):
        return empty_figure("Choose a run, a server and a metric", title=title, height=380)
    try:
        store = rm.store
        summary, series = _series(rm, run_id)
        if series is None:
            return empty_figure("This run has no track record", title=title, height=380)
        row = series[(series["server_id"] == server_id) & (series["metric"] == metric)]
        if row.empty:
            return empty_figure(
                f"{server_id} has no {metric_label(metric)} forecast in this run", title=title, height=380
            )
        r = row.iloc[0]
        origin = pd.Timestamp(summary["forecast_origin"])
        fc = store.read_run_table(run_id, "forecasts", server_ids=[server_id])
        fc = (
            fc[fc["metric"].astype(str) == metric].sort_values("timestamp")
            if fc is not None
            else pd.DataFrame()
        )
        end = pd.Timestamp(summary["as_of"]) + pd.Timedelta(days=1)
        hist = store.read_metrics(
            MetricsQuery.of(server_ids=[server_id], start=origin - HISTORY_SHOWN, end=end, columns=[metric])
        )
    except StoreError as e:
        ref = report(log, "reading a track-record chart failed", e, run_id=run_id, server_id=server_id)
        return empty_figure(user_message("The data could not be read", ref), title=title, height=380)
    return track_path_figure(
        metric,
        hist,
        fc,
        origin=origin,
        threshold=None if pd.isna(r["threshold"]) else float(r["threshold"]),
        expected=None if pd.isna(r["breach_expected"]) else pd.Timestamp(r["breach_expected"]),
        crossing=None if pd.isna(r["actual_crossing"]) else pd.Timestamp(r["actual_crossing"]),
        outcome=str(r["outcome"]),
        title=f"{server_id} · run {run_id} ({r['model']} model)",
    )


def register(app: Dash) -> None:
    rm = get_context(app).readmodel

    @app.callback(Output(ids.TR_RUN, "options"), Output(ids.TR_RUN, "value"), Input(ids.TR_ALERT, "id"))
    def _runs(_mounted: str) -> tuple[Any, ...]:
        return run_pickers(rm)

    @app.callback(
        Output(ids.TR_SERVER, "options"), Output(ids.TR_SERVER, "value"), Input(ids.TR_RUN, "value")
    )
    def _servers(run_id: Any) -> tuple[Any, ...]:
        return server_pickers(rm, run_id)

    @app.callback(
        Output(ids.TR_METRIC, "options"),
        Output(ids.TR_METRIC, "value"),
        Input(ids.TR_SERVER, "value"),
        Input(ids.TR_RUN, "value"),
    )
    def _metrics(server_id: Any, run_id: Any) -> tuple[Any, ...]:
        return metric_pickers(rm, run_id, server_id)

    @app.callback(
        Output(ids.TR_ALERT, "children"),
        Output(ids.TR_KPIS, "children"),
        Output(ids.TR_COVERAGE_CHART, "figure"),
        Output(ids.TR_RUNS_GRID, "rowData"),
        Output(ids.TR_BREAKDOWN_GRID, "rowData"),
        Output(ids.TR_SERIES_GRID, "rowData"),
        Input(ids.TR_RUN, "value"),
        Input(ids.FILTERS, "data"),
    )
    def _record(run_id: Any, filters: Any) -> tuple[Any, ...]:
        return record_view(rm, run_id, filters)

    @app.callback(
        Output(ids.TR_PATH_CHART, "figure"),
        Input(ids.TR_RUN, "value"),
        Input(ids.TR_SERVER, "value"),
        Input(ids.TR_METRIC, "value"),
    )
    def _path(run_id: Any, server_id: Any, metric: Any) -> Any:
        return path_view(rm, run_id, server_id, metric)
