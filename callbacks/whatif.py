"""What-if controls shared by the risk and consolidation pages, and their grid plumbing
(quick search, row click → server, exports).

The controls write one store (``ids.WHATIF_STATE``, sanitised :class:`app.whatif.ScenarioState`)
that the pages' callbacks read, and a clientside callback mirrors it into the query string
(``history.replaceState``: no re-render), so a what-if view is a shareable link.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from dash import Dash, Input, Output, Patch, State, ctx, dcc, no_update

from app import get_context, ids
from app.filters import FilterState
from app.readmodel import Plan, ReadModel
from app.servergrid import GridRows
from app.whatif import (
    MIN_SAVING_PCT_PARAM,
    MIN_SAVING_USD_PARAM,
    POLICY_PARAMS,
    PROPOSE_LABELS,
    PROPOSE_PARAM,
    RISK_GUARD_PARAM,
    SIZING_PCT_PARAM,
    BasePolicy,
    ScenarioState,
    base_policy,
)
from components.export import GridView, apply_view, csv_bytes, excel_bytes, export_name, rows_frame
from components.grid import records
from forecasting.observability import SERVICE_WEB, audit, emit_metrics

MAX_SEARCH_CHARS = 200
log = logging.getLogger(__name__)
EXCEL_MIME = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"

# Clientside: mirror the scenario into the query string, keeping every other parameter, and
# into the shell's store, whose query the navbar adds to the other scenario page's link.
WRITE_URL_JS = """
function (data, carry) {
    if (!data) { return window.dash_clientside.no_update; }
    var params = new URLSearchParams(window.location.search);
    (data.keys || []).forEach(function (k) { params.delete(k); });
    new URLSearchParams(data.query || "").forEach(function (v, k) { params.append(k, v); });
    var qs = params.toString();
    var search = qs ? "?" + qs : "";
    if (search !== window.location.search) {
        window.history.replaceState(window.history.state, "", window.location.pathname + search + window.location.hash);
    }
    var query = data.query || "";
    if (carry && carry.query === query) { return window.dash_clientside.no_update; }
    return Object.assign({}, carry, {query: query});
}
"""

# Clientside: a click anywhere on a risk row opens its server (the id column is a link already;
# the Decision cell opens the decision form instead, callbacks/decisions.py).
# Row ids are "<server_id>/<metric>"; the metric never contains "/".
OPEN_SERVER_JS = """
function (cell) {
    if (!cell || cell.colId === "server_id" || cell.colId === "decision" || cell.rowId === undefined || cell.rowId === null) {
        return window.dash_clientside.no_update;
    }
    var rid = String(cell.rowId);
    var cut = rid.lastIndexOf("/");
    var sid = cut > 0 ? rid.slice(0, cut) : rid;
    return window.capfc.serverPath(sid) + window.location.search;
}
"""


def _run_policy_values(base: BasePolicy) -> dict[str, Any]:
    """The run's policy in the controls' units, by query name."""
    p = base.policy
    return {
        PROPOSE_PARAM: p.propose,
        MIN_SAVING_PCT_PARAM: round(p.min_saving_fraction * 100, 1),
        MIN_SAVING_USD_PARAM: round(p.min_saving_usd, 1),
        RISK_GUARD_PARAM: round(p.risk_probability * 100, 1),
        SIZING_PCT_PARAM: round(p.sizing_percentile, 1),
    }


def scenario_from_controls(
    rm: ReadModel,
    growth: Any,
    thresholds: Mapping[str, Any],
    headroom: Any,
    policy: Mapping[str, Any] | None = None,
) -> ScenarioState:
    """The scenario the controls describe; values equal to the run's own count as unchanged.

    ``policy`` maps the policy knobs' query names (app.whatif.POLICY_PARAMS) to control values."""
    state = ScenarioState.of(growth, thresholds, headroom, policy)
    plan = rm.snapshot().plan
    if plan is None:
        return state
    base = base_policy(plan, rm.settings)
    thr = {m: v for m, v in state.thresholds if base.thresholds.get(m) != v}
    h = state.headroom
    if h is not None and abs(h - base.headroom * 100) < 1e-6:
        h = None
    run = _run_policy_values(base)
    pol = {
        k: v
        for k, v in state.policy_values.items()
        if not (v == run[k] if isinstance(v, str) else abs(v - run[k]) < 1e-6)
    }
    return ScenarioState.of(state.growth, thr, h, pol)


def scenario_summary(state: ScenarioState) -> str:
    if state.is_base:
        return "As planned: the batch run's forecasts and settings."
    parts = []
    if state.growth:
        parts.append(f"growth {state.growth:+g} %/month")
    parts += [f"{m.split('_')[0].upper()} threshold {v:g} %" for m, v in state.thresholds]
    if state.headroom is not None:
        parts.append(f"headroom {state.headroom:g} %")
    if state.propose is not None:
        parts.append(f"propose: {PROPOSE_LABELS[state.propose].removesuffix(' (default)').lower()}")
    if state.min_saving_pct is not None:
        parts.append(f"minimum saving {state.min_saving_pct:g} %")
    if state.min_saving_usd is not None:
        parts.append(f"minimum saving ${state.min_saving_usd:,.0f}/month")
    if state.risk_guard is not None:
        parts.append(f"risk guard {state.risk_guard:g} %")
    if state.sizing_pct is not None:
        parts.append(f"sizing p{state.sizing_pct:g}")
    return "Scenario: " + ", ".join(parts) + " — re-derived by the engine, nothing re-fitted."


def controls_view(
    rm: ReadModel,
    trigger: str | None,
    growth: Any,
    thresholds: Mapping[str, Any],
    headroom: Any,
    current: Any,
    policy: Mapping[str, Any] | None = None,
) -> tuple[Any, ...]:
    """(store data, summary, growth, *threshold boxes, headroom, *policy knobs): control values
    are only written back on "Reset to plan" (the policy knobs: the run's choice to propose,
    empty number boxes, whose placeholders show the run's values)."""
    n_thr = len(ids.WHATIF_THRESHOLDS)
    n_pol = len(POLICY_PARAMS)
    if trigger == ids.WHATIF_RESET:
        plan = rm.snapshot().plan
        base = base_policy(plan, rm.settings) if plan is not None else None
        base_h = base.headroom * 100 if base is not None else None
        propose = base.policy.propose if base is not None else no_update
        state = ScenarioState()
        controls = (0.0, *([None] * n_thr), base_h, propose, *([None] * (n_pol - 1)))
    else:
        state = scenario_from_controls(rm, growth, thresholds, headroom, policy)
        controls = (no_update,) * (n_thr + 2 + n_pol)
    data = state.to_data()
    if trigger is None and ScenarioState.from_data(current) == state:
        data = no_update  # first call: the layout already seeded the store from the URL
    return (data, scenario_summary(state), *controls)


def quick_search_patch(text: Any) -> Patch:
    """AG Grid's quick filter as a partial update of the grid options."""
    patch = Patch()
    patch["quickFilterText"] = text[:MAX_SEARCH_CHARS] if isinstance(text, str) else ""
    return patch


def export_comments(
    title: str,
    plan: Plan,
    filters: FilterState,
    state: ScenarioState,
    rm: ReadModel,
    n_rows: int,
    view: GridView | None = None,
) -> list[tuple[str, str]]:
    """(setting, value) pairs saying what an export holds; CSV comments and the Excel 'Scenario' sheet."""
    base = base_policy(plan, rm.settings)
    when = plan.created_at.strftime("%Y-%m-%d %H:%M UTC") if plan.created_at is not None else "unknown"
    pairs = [
        ("Export", title),
        ("Run", f"{plan.run_id} ({when})"),
        ("Filters", filters.describe()),
    ]
    pairs += [("Scenario", line) for line in state.describe(base)]
    pairs += [
        ("Grid view", (view or GridView()).describe()),
        (
            "Rows",
            f"{n_rows:,} (recomputed on the server from the run, the filters, the scenario and the grid view)",
        ),
        ("Exported", datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")),
    ]
    return pairs


# A grid's rows for the filters and the scenario, computed on the server (the grid's own callback);
# a server-paged grid's are its cached GridRows.
RowsFn = Callable[[ReadModel, Any, Any], "list[dict[str, Any]] | GridRows"]


def export_download(
    rm: ReadModel,
    kind: str,
    rows_fn: RowsFn,
    columns: Sequence[tuple[str, str]],
    *,
    title: str,
    stem: str,
    filters_data: Any,
    scenario_data: Any,
    search: Any = None,
    filter_model: Any = None,
    column_state: Any = None,
    grid_fields: Sequence[str] = (),
    orders: Mapping[str, Mapping[str, int]] | None = None,
) -> dict[str, Any] | None:
    """dcc.Download data of the grid's rows as 'csv' or 'xlsx' (None without a run).

    The rows are recomputed here by ``rows_fn`` from the run, the filters and the scenario:
    never taken from the browser. Only the grid's view (quick search, column filters, sort)
    comes from the browser, validated (:class:`GridView`) and re-applied."""
    plan = rm.snapshot().plan
    if plan is None:
        return None
    filters = FilterState.from_data(filters_data)
    state = ScenarioState.from_data(scenario_data)
    fields = list(grid_fields) or [f for f, _ in columns]
    view = GridView.from_browser(search, filter_model, column_state, fields)
    if view.dropped:
        log.warning("export %s: parts of the grid view ignored: %s", stem, ", ".join(view.dropped))
    computed = rows_fn(rm, filters.to_data(), state.to_data())
    if isinstance(computed, GridRows):  # a server-paged grid's rows: narrowed and ordered vectorised
        shown = computed.shown(view, orders)
        rows = records(shown, list(shown.columns))
    else:
        rows = apply_view(computed, view, fields, orders)
    frame = rows_frame(rows, columns)
    about = export_comments(title, plan, filters, state, rm, len(frame), view)
    audit(
        "export",
        f"export {stem} as {kind}: {len(frame):,} rows",
        export=stem,
        format=kind,
        rows=len(frame),
        run_id=plan.run_id,
        filters=filters.describe(),
        scenario=[line for key, line in about if key == "Scenario"],
        grid_view=view.describe(),
    )
    emit_metrics(
        {"ExportRows": len(frame)}, service=SERVICE_WEB, dimensions={"export": stem}, also_by_service=True
    )
    if kind == "xlsx":
        content = excel_bytes(frame, sheet=title, about=about)
        return dcc.send_bytes(content, export_name(stem, "xlsx"), type=EXCEL_MIME)
    return dcc.send_bytes(csv_bytes(frame, about), export_name(stem, "csv"), type="text/csv")


def register_grid_tools(
    app: Dash,
    *,
    grid_id: str,
    search_id: str,
    csv_id: str,
    excel_id: str,
    download_id: str,
    columns: Sequence[tuple[str, str]],
    rows_fn: RowsFn,
    grid_fields: Sequence[str],
    title: str,
    stem: str,
    orders: Mapping[str, Mapping[str, int]] | None = None,
) -> None:
    """Quick search, and CSV / Excel export of the rows the grid shows, recomputed on the server."""
    rm = get_context(app).readmodel

    @app.callback(Output(grid_id, "dashGridOptions"), Input(search_id, "value"), prevent_initial_call=True)
    def _search(text: Any) -> Patch:
        return quick_search_patch(text)

    @app.callback(
        Output(download_id, "data"),
        Input(csv_id, "n_clicks"),
        Input(excel_id, "n_clicks"),
        State(search_id, "value"),
        State(grid_id, "filterModel"),
        State(grid_id, "columnState"),
        State(ids.FILTERS, "data"),
        State(ids.WHATIF_STATE, "data"),
        prevent_initial_call=True,
    )
    def _export(
        _csv: Any, _xlsx: Any, search: Any, filter_model: Any, column_state: Any, filters: Any, scenario: Any
    ) -> Any:
        kind = "xlsx" if ctx.triggered_id == excel_id else "csv"
        out = export_download(
            rm,
            kind,
            rows_fn,
            columns,
            title=title,
            stem=stem,
            filters_data=filters,
            scenario_data=scenario,
            search=search,
            filter_model=filter_model,
            column_state=column_state,
            grid_fields=grid_fields,
            orders=orders,
        )
        return out if out is not None else no_update


def register(app: Dash) -> None:
    rm = get_context(app).readmodel
    thr_ids = list(ids.WHATIF_THRESHOLDS.values())
    metrics = list(ids.WHATIF_THRESHOLDS)

    @app.callback(
        Output(ids.WHATIF_STATE, "data"),
        Output(ids.WHATIF_SUMMARY, "children"),
        Output(ids.WHATIF_GROWTH, "value"),
        *[Output(i, "value") for i in thr_ids],
        Output(ids.WHATIF_HEADROOM, "value"),
        *[Output(i, "value") for i in ids.WHATIF_POLICY],
        Input(ids.WHATIF_GROWTH, "value"),
        *[Input(i, "value") for i in thr_ids],
        Input(ids.WHATIF_HEADROOM, "value"),
        *[Input(i, "value") for i in ids.WHATIF_POLICY],
        Input(ids.WHATIF_RESET, "n_clicks"),
        State(ids.WHATIF_STATE, "data"),
    )
    def _controls(growth: Any, *rest: Any) -> tuple[Any, ...]:
        n = len(thr_ids)
        thr, headroom = rest[:n], rest[n]
        knobs = rest[n + 1 : n + 1 + len(POLICY_PARAMS)]
        current = rest[-1]
        trigger = ctx.triggered_id if ctx.triggered else None
        policy = dict(zip(POLICY_PARAMS, knobs, strict=True))
        return controls_view(rm, trigger, growth, dict(zip(metrics, thr)), headroom, current, policy)

    app.clientside_callback(
        WRITE_URL_JS,
        Output(ids.SCENARIO_CARRY, "data"),
        Input(ids.WHATIF_STATE, "data"),
        State(ids.SCENARIO_CARRY, "data"),
    )
