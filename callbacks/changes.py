"""Changes between two runs (/changes): pickers, the comparison under the filter bar, exports.

Thin: the comparison is forecasting.records.diff.compare; this module loads the two runs (once
per run id: a published run never changes), maps the filter bar to servers, and formats.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from typing import Any

import dash_bootstrap_components as dbc
import pandas as pd
from dash import Dash, Input, Output, State, ctx, dcc, html, no_update

from app import get_context, ids
from app.errors import report, user_message
from app.filters import FilterState
from app.readmodel import ReadModel
from components.grid import records
from components.kpi import kpi_card
from components.layout import error_alert, metric_label
from components.records import moves_figure, totals_figure
from forecasting.exports import csv_bytes, excel_book, export_name
from forecasting.observability import audit
from forecasting.records import RecordsError
from forecasting.records.diff import RunDiff, changes_frame, compare, export_about, read_plan, resolve_pair
from forecasting.sources import Store, StoreError

log = logging.getLogger(__name__)

EXCEL_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
MAX_CACHED_RUNS = 6
MAX_RUN_OPTIONS = 60  # the pickers list the newest runs (each label reads a manifest)

_cache: OrderedDict[tuple[str, str], tuple[dict, dict]] = OrderedDict()
_cache_lock = threading.Lock()


def load_run(store: Store, run_id: str) -> tuple[dict, dict]:
    """A run's comparison tables and manifest, read once per process (runs are immutable)."""
    key = (store.uri, run_id)
    with _cache_lock:
        if key in _cache:
            _cache.move_to_end(key)
            return _cache[key]
    value = read_plan(store, run_id)
    with _cache_lock:
        _cache[key] = value
        while len(_cache) > MAX_CACHED_RUNS:
            _cache.popitem(last=False)
    return value


def run_options(store: Store) -> list[dict[str, str]]:
    """Runs newest first, labelled with their data end and model."""
    out = []
    latest = store.latest_run_id()
    for rid in reversed(store.list_runs()[-MAX_RUN_OPTIONS:]):
        try:
            man = store.read_manifest(rid)
        except StoreError:
            continue
        end = str((man.get("input") or {}).get("end") or "?")[:10]
        model = (man.get("config") or {}).get("model", "?")
        tag = " · latest" if rid == latest else ""
        out.append({"label": f"{rid} · data to {end} · {model}{tag}", "value": rid})
    return out


def pickers(rm: ReadModel) -> tuple[Any, Any, Any, Any]:
    """(options A, value A, options B, value B): default the run before the latest, and the latest."""
    try:
        store = rm.store
        options = run_options(store)
    except StoreError as e:
        report(log, "listing runs for /changes failed", e)
        return [], None, [], None
    try:
        a, b = resolve_pair(store)
    except (RecordsError, StoreError):  # the comparison's own callback says why, as an alert
        return options, None, options, None
    return options, a, options, b


def compute(rm: ReadModel, run_a: str | None, run_b: str | None, filters_data: Any) -> RunDiff:
    """The comparison of two runs under the filter bar (RecordsError when it cannot be made)."""
    store = rm.store
    if not run_a or not run_b:
        resolve_pair(store)  # raises the reason (no runs, one run only)
        raise RecordsError("choose two runs to compare")
    if run_a == run_b:
        raise RecordsError("the same run is chosen twice: pick two different runs")
    resolve_pair(store, run_a, run_b)  # unknown ids
    plan_a, man_a = load_run(store, run_a)
    plan_b, man_b = load_run(store, run_b)
    filters = FilterState.from_data(filters_data)
    snap = rm.snapshot().plan
    inventory = snap.inventory if snap is not None else store.read_inventory()
    server_ids = None
    if snap is not None and not filters.is_empty:
        server_ids = snap.servers(filters)["server_id"].astype(str).tolist()
    return compare(plan_a, man_a, plan_b, man_b, inventory=inventory, server_ids=server_ids)


def _with_labels(frame: pd.DataFrame, key: list[str]) -> pd.DataFrame:
    out = frame.copy()
    if "metric" in out:
        out["metric_label"] = out["metric"].astype(str).map(metric_label)
    out["row_id"] = out[key].astype(str).agg("/".join, axis=1) if len(out) else pd.Series(dtype=str)
    return out


def changes_view(rm: ReadModel, run_a: str | None, run_b: str | None, filters_data: Any) -> tuple[Any, ...]:
    """(alert, causes, kpis, totals figure, moves figure, new, resolved, moved, recs, totals rows)."""
    empty = ([], [], [], [], [])
    blank = (None, None, no_update, no_update)
    try:
        d = compute(rm, run_a, run_b, filters_data)
    except RecordsError as e:
        return (dbc.Alert(str(e), color="warning", className="mb-3"), *blank, *empty)
    except StoreError as e:
        ref = report(log, "comparing runs failed", e, run_a=run_a, run_b=run_b)
        return (error_alert(user_message("The two runs could not be read", ref)), *blank, *empty)
    causes = html.Div(
        [html.Strong("Why the runs differ: "), html.Span("; ".join(d.causes()))],
        className="small",
        id=f"{ids.CHG_CAUSES}-text",
    )
    moved = d.moved_breaches
    cards = [
        kpi_card(
            "New risks",
            f"{len(d.new_risks):,}",
            "at risk now, not before",
            tone="danger" if len(d.new_risks) else "default",
            card_id=f"{ids.CHG_KPIS}-new",
        ),
        kpi_card(
            "Resolved risks",
            f"{len(d.resolved_risks):,}",
            "at risk before, not now",
            tone="success" if len(d.resolved_risks) else "default",
            card_id=f"{ids.CHG_KPIS}-resolved",
        ),
        kpi_card(
            "Breach dates moved",
            f"{len(moved):,}",
            f"{int((moved['days_moved'] < 0).sum()):,} earlier, {int((moved['days_moved'] > 0).sum()):,} later",
            card_id=f"{ids.CHG_KPIS}-moved",
        ),
        kpi_card(
            "Recommendations changed",
            f"{len(d.changed_recommendations):,}",
            "action or size",
            card_id=f"{ids.CHG_KPIS}-recs",
        ),
    ]
    kpis = dbc.Row([dbc.Col(c, xs=6, xl=3, className="mb-3") for c in cards], className="g-3 kpi-row")
    new = _with_labels(d.new_risks, ["server_id", "metric"])
    new["probability"] = (new["breach_probability"].astype(float) * 100).round(0)
    totals = d.totals.assign(row_id=d.totals["measure"])
    return (
        None,
        causes,
        kpis,
        totals_figure(d.totals, d.run_a, d.run_b),
        moves_figure(moved),
        records(new),
        records(_with_labels(d.resolved_risks, ["server_id", "metric"])),
        records(_with_labels(moved, ["server_id", "metric"])),
        records(_with_labels(d.changed_recommendations, ["server_id"])),
        records(totals),
    )


def export(rm: ReadModel, kind: str, run_a: str | None, run_b: str | None, filters_data: Any) -> Any:
    """dcc.Download data of the comparison (CSV: every change in one table; Excel: one sheet each)."""
    try:
        d = compute(rm, run_a, run_b, filters_data)
    except (RecordsError, StoreError):
        return None
    filters = FilterState.from_data(filters_data)
    about = [*export_about(d), ("Filters", filters.describe())]
    frame = changes_frame(d)
    audit(
        "export",
        f"export changes as {kind}: {len(frame):,} rows",
        export="changes",
        format=kind,
        rows=len(frame),
        run_a=d.run_a,
        run_b=d.run_b,
        filters=filters.describe(),
    )
    stem = f"changes-{d.run_a[:15]}-{d.run_b[:15]}"
    if kind == "xlsx":
        sheets = {name.replace("_", " "): t for name, t in d.tables().items()}
        return dcc.send_bytes(excel_book(sheets, about), export_name(stem, "xlsx"), type=EXCEL_MIME)
    return dcc.send_bytes(csv_bytes(frame, about), export_name(stem, "csv"), type="text/csv")


def register(app: Dash) -> None:
    rm = get_context(app).readmodel

    @app.callback(
        Output(ids.CHG_RUN_A, "options"),
        Output(ids.CHG_RUN_A, "value"),
        Output(ids.CHG_RUN_B, "options"),
        Output(ids.CHG_RUN_B, "value"),
        Input(ids.CHG_ALERT, "id"),
    )
    def _pickers(_mounted: str) -> tuple[Any, ...]:
        return pickers(rm)

    @app.callback(
        Output(ids.CHG_ALERT, "children"),
        Output(ids.CHG_CAUSES, "children"),
        Output(ids.CHG_KPIS, "children"),
        Output(ids.CHG_TOTALS_CHART, "figure"),
        Output(ids.CHG_MOVES_CHART, "figure"),
        Output(ids.CHG_NEW_GRID, "rowData"),
        Output(ids.CHG_RESOLVED_GRID, "rowData"),
        Output(ids.CHG_MOVED_GRID, "rowData"),
        Output(ids.CHG_RECS_GRID, "rowData"),
        Output(ids.CHG_TOTALS_GRID, "rowData"),
        Input(ids.FILTERS, "data"),
        Input(ids.CHG_RUN_A, "value"),
        Input(ids.CHG_RUN_B, "value"),
    )
    def _changes(filters: Any, run_a: Any, run_b: Any) -> tuple[Any, ...]:
        return changes_view(rm, run_a, run_b, filters)

    @app.callback(
        Output(ids.CHG_DOWNLOAD, "data"),
        Input(ids.CHG_EXPORT_CSV, "n_clicks"),
        Input(ids.CHG_EXPORT_XLSX, "n_clicks"),
        State(ids.CHG_RUN_A, "value"),
        State(ids.CHG_RUN_B, "value"),
        State(ids.FILTERS, "data"),
        prevent_initial_call=True,
    )
    def _export(_csv: Any, _xlsx: Any, run_a: Any, run_b: Any, filters: Any) -> Any:
        kind = "xlsx" if ctx.triggered_id == ids.CHG_EXPORT_XLSX else "csv"
        out = export(rm, kind, run_a, run_b, filters)
        return out if out is not None else no_update
