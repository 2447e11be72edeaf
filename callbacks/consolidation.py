"""Consolidation callbacks: KPIs, savings per business unit, recommendations, the packing plan,
a packed host's summed load and the servers the policy held back (and why), under the filters
and the what-if scenario (growth, thresholds, headroom and the policy knobs).

Under a scenario the engine re-sizes and re-packs the whole fleet (app.whatif, cached per run
and scenario); filters then only mask. The host chart sums its members' demand series
(forecasting.consolidation.demand_series: last year at today's level, then the q90 forecast).
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
from app.pages.consolidation import HELD_COLUMN_DEFS, RECOMMENDATION_COLUMN_DEFS
from app.readmodel import Plan, ReadModel
from app.servergrid import FrameCache, GridRows, paged
from app.whatif import (
    ScenarioState,
    ScenarioView,
    WhatIfScopeError,
    scenario_inputs_for,
    scenario_view,
    scope_alert,
)
from components.consolidation import (
    HELD_BACK_COLORS,
    HELD_BACK_TEXT,
    held_back_figure,
    packed_host_figure,
    savings_by_unit_figure,
)
from components.figures import empty_figure
from components.grid import records
from components.kpi import kpi_card
from components.layout import (
    empty_state,
    format_money,
    frame_table,
    no_match_state,
    no_run_state,
    not_in_run,
)
from forecasting.consolidation import demand_series
from forecasting.policy import HELD_BACK

from .grids import register_paged_grid
from .whatif import register_grid_tools

SAVING_ACTIONS = ("decommission", "right-size", "consolidate")
MAX_MEMBER_IDS = 6
PACKING_QUANTILE = "q90"
RECOMMENDATION_FIELDS = [
    "server_id",
    "hostname",
    "business_unit",
    "environment",
    "criticality",
    "action",
    "current_size",
    "recommended_size",
    "target_group",
    "current_monthly_cost",
    "recommended_monthly_cost",
    "monthly_savings",
    "held_back",
    "reason",
    "row_id",
    "decision",
    "decision_by",
    "decision_at",
]
EXPORT_COLUMNS: list[tuple[str, str]] = [
    ("server_id", "Server"),
    ("hostname", "Hostname"),
    ("business_unit", "Business unit"),
    ("environment", "Environment"),
    ("criticality", "Criticality"),
    ("action", "Action"),
    ("current_size", "Current size"),
    ("recommended_size", "Recommended size"),
    ("target_group", "Host group"),
    ("current_monthly_cost", "Current cost per month (USD)"),
    ("recommended_monthly_cost", "Recommended cost per month (USD)"),
    ("monthly_savings", "Savings per month (USD)"),
    ("held_back", "Held back"),
    ("reason", "Reason"),
    *DECISION_EXPORT_COLUMNS,
]
HELD_TAB = "held-back"  # the value of the held-back tab in ids.CONS_TABS
ALL_CATEGORIES = "all"
HELD_FIELDS = [
    "server_id",
    "hostname",
    "business_unit",
    "environment",
    "criticality",
    "action",
    "held_back",
    "monthly_savings",
    "reason",
]
PLAN_FIELDS = [
    "target_group",
    "members",
    "member_ids",
    "host_size",
    "host_cores",
    "host_memory_gb",
    "peak_cpu_util",
    "peak_mem_util",
    "host_monthly_cost",
    "region",
    "environment",
]


def _resolve(rm: ReadModel, data: Any, scenario: Any) -> tuple[Plan | None, FilterState, ScenarioState, str]:
    snap = rm.snapshot()
    return (
        snap.plan,
        FilterState.from_data(data),
        ScenarioState.from_data(scenario),
        snap.status.message or "No forecast run to show.",
    )


def _view(rm: ReadModel, plan: Plan, state: ScenarioState, filters: FilterState) -> ScenarioView:
    """The consolidation half under the scenario (scoped to the filtered servers on a fleet
    larger than whatif_max_servers; WhatIfScopeError when they are too many)."""
    return scenario_view(rm, plan, state, consolidation=True, filters=filters)


def host_groups(cons: pd.DataFrame, filtered: pd.DataFrame) -> pd.DataFrame:
    """One row per host group with a filtered member (the whole group shown), biggest first."""
    cols = [*PLAN_FIELDS]
    if filtered is None or filtered.empty:
        return pd.DataFrame(columns=cols)
    groups = cons[cons["target_group"].isin(filtered["target_group"].unique()).to_numpy()]
    codes, names = pd.factorize(groups["target_group"].astype(str), sort=False)
    order = np.argsort(codes, kind="stable")  # members of a group together, in plan order
    counts = np.bincount(codes, minlength=len(names))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    first = groups.iloc[order[starts]]
    sid = groups["server_id"].astype(str).to_numpy(dtype=object)[order].tolist()
    member_ids = []
    for a, n in zip(starts.tolist(), counts.tolist(), strict=True):
        text = ", ".join(sid[a : a + min(n, MAX_MEMBER_IDS)])
        member_ids.append(text + (f" … (+{n - MAX_MEMBER_IDS})" if n > MAX_MEMBER_IDS else ""))

    def peak(col: str) -> np.ndarray:
        return np.fmax.reduceat(groups[col].to_numpy(dtype=float)[order], starts).round(1)

    out = pd.DataFrame(
        {
            "target_group": np.asarray(names, dtype=object),
            "members": counts,
            "member_ids": member_ids,
            **{c: first[c].to_numpy() for c in ("host_size", "host_cores", "host_memory_gb")},
            "peak_cpu_util": peak("peak_cpu_util"),
            "peak_mem_util": peak("peak_mem_util"),
            **{c: first[c].to_numpy() for c in ("host_monthly_cost", "region", "environment")},
        }
    )
    out = out.sort_values(["members", "target_group"], ascending=[False, True], kind="stable")
    return out[cols].reset_index(drop=True)


def kpis_view(view: ScenarioView, recs: pd.DataFrame | None, groups: pd.DataFrame, filtered: bool) -> dbc.Row:
    """Hosts before → after, servers freed, savings (filtered), and the replay check (fleet)."""
    members = int(groups["members"].sum()) if len(groups) else 0
    hosts = len(groups)
    saving = 0.0
    cons_saving = 0.0
    upgrade = 0.0
    if recs is not None and len(recs):
        act = recs["action"].astype(str)
        sav = recs["monthly_savings"].to_numpy(dtype=float)
        saving = float(np.nansum(sav[act.isin(SAVING_ACTIONS).to_numpy()]))
        cons_saving = float(np.nansum(sav[(act == "consolidate").to_numpy()]))
        upgrade = float(-np.nansum(sav[(act == "upgrade").to_numpy()]))
    s = view.summary or {}
    replay = "servers no longer needed once their groups share hosts"
    if s and not filtered and "violations" in s:
        naive = s.get("naive_hosts")
        replay = f"{int(s.get('violations', 0)):,} over capacity" + (
            f" · sum of peaks would need {int(naive):,} hosts" if naive else ""
        )
    cards = [
        kpi_card(
            "Hosts before → after",
            f"{members:,} → {hosts:,}",
            "servers in host groups → shared hosts",
            card_id=f"{ids.CONS_KPIS}-hosts",
        ),
        kpi_card(
            "Servers freed",
            f"{members - hosts:,}",
            replay if not filtered else "by consolidation (fleet replay check: clear the filters)",
            tone="success" if members > hosts else "default",
            card_id=f"{ids.CONS_KPIS}-freed",
        ),
        kpi_card(
            "Consolidation savings",
            format_money(cons_saving),
            "per month, members' share of host cost",
            tone="success" if cons_saving > 0 else "default",
            card_id=f"{ids.CONS_KPIS}-cons-savings",
        ),
        kpi_card(
            "All savings",
            format_money(saving),
            f"per month (decommission, right-size, consolidate); upgrades add {format_money(upgrade)}",
            tone="success" if saving > 0 else "default",
            card_id=f"{ids.CONS_KPIS}-savings",
        ),
    ]
    return dbc.Row([dbc.Col(c, xs=6, xl=3, className="mb-3") for c in cards], className="g-3 kpi-row")


def _by_unit(recs: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(business units sorted, unit code per row, action per row, savings per row with NaN as 0)."""
    codes, units = pd.factorize(recs["business_unit"].astype(str), sort=True)
    action = recs["action"].astype(str).to_numpy(dtype=object)
    return (
        np.asarray(units, dtype=object),
        codes,
        action,
        np.nan_to_num(recs["monthly_savings"].to_numpy(dtype=float)),
    )


def savings_by_unit(recs: pd.DataFrame) -> pd.DataFrame:
    """business_unit × action → monthly savings (saving actions) for the chart."""
    units, codes, action, sav = _by_unit(recs)
    rows = []
    for act in sorted(SAVING_ACTIONS):
        hit = action == act
        if hit.any():
            total = np.bincount(codes[hit], weights=sav[hit], minlength=len(units))
            present = np.bincount(codes[hit], minlength=len(units)) > 0
            rows += [(u, act, float(v)) for u, v in zip(units[present], total[present], strict=True)]
    rows.sort()
    return pd.DataFrame(rows, columns=["business_unit", "action", "monthly_savings"])


def savings_table(recs: pd.DataFrame) -> pd.DataFrame:
    """Per business unit: servers, actions, savings and upgrade spend per month (display strings)."""
    units, codes, action, sav = _by_unit(recs)
    k = len(units)
    servers = np.bincount(codes, minlength=k)
    changed = np.bincount(codes, weights=action != "keep", minlength=k)
    saving = np.bincount(
        codes, weights=np.where(np.isin(action, list(SAVING_ACTIONS)), sav, 0.0), minlength=k
    )
    upgrade = np.bincount(codes, weights=np.where(action == "upgrade", -sav, 0.0), minlength=k)

    def row(name: str, n: float, c: float, s: float, u: float) -> dict[str, str]:
        return {
            "Business unit": name,
            "Servers": f"{int(n):,}",
            "Actions": f"{int(c):,}",
            "Savings / month": format_money(s),
            "Upgrades / month": format_money(u),
        }

    rows = [
        row(*r)
        for r in zip(
            units.tolist(), servers.tolist(), changed.tolist(), saving.tolist(), upgrade.tolist(), strict=True
        )
    ]
    rows.append(row("Total", servers.sum(), changed.sum(), float(saving.sum()), float(upgrade.sum())))
    return pd.DataFrame(rows)


def changed_rows(rm: ReadModel, plan: Plan, recs: pd.DataFrame) -> pd.DataFrame:
    """The recommendations grid's rows: every action other than keep, biggest saving first,
    with decisions and a row id."""
    changed = recs[(recs["action"].astype(str) != "keep").to_numpy()]
    changed = changed.sort_values("monthly_savings", ascending=False, kind="stable", na_position="last")
    changed = with_decisions(rm, plan, changed, "recommendation")
    changed["row_id"] = changed["server_id"].astype(str) + "/" + changed["action"].astype(str)
    return changed


_ROWS = FrameCache()


def cached_rows(rm: ReadModel, data: Any, scenario: Any) -> GridRows | None:
    """The recommendations grid's rows for the filters and scenario, kept per process (a
    server-paged grid's blocks and export slice them); None when the page lists nothing."""
    plan, filters, state, _message = _resolve(rm, data, scenario)
    if plan is None or (not plan.has("recommendations") and state.is_base) or not plan.mask(filters).any():
        return None
    decided = id(decisions_of(rm).all())
    key = (
        rm._key("recs-grid"),
        plan.run_id,
        json.dumps(filters.to_data(), sort_keys=True),
        state.key(),
        decided,
    )

    def build() -> GridRows:
        try:
            recs = _view(rm, plan, state, filters).recommendation_rows(plan, filters)
        except WhatIfScopeError:
            recs = None
        if recs is None:
            frame = pd.DataFrame(columns=RECOMMENDATION_FIELDS)
        else:
            frame = changed_rows(rm, plan, recs)
            for col in RECOMMENDATION_FIELDS:
                if col not in frame:
                    frame[col] = None
            frame = frame[RECOMMENDATION_FIELDS].reset_index(drop=True)
        return GridRows(frame, tuple(c["field"] for c in RECOMMENDATION_COLUMN_DEFS))

    return _ROWS.get(key, build)


def consolidation_view(rm: ReadModel, data: Any, scenario: Any, *, rows: bool = True) -> tuple[Any, ...]:
    """(empty state, KPIs, savings figure, savings table, recommendation rows, recs note,
    plan rows, plan note) for the filters and scenario (recommendation rows None when
    ``rows`` is False: a server-paged grid fetches them itself)."""
    plan, filters, state, message = _resolve(rm, data, scenario)
    nothing = empty_figure("", title="Potential monthly savings by business unit")
    if plan is None:
        return (
            no_run_state(message),
            None,
            empty_figure(message, title=nothing["layout"]["title"]["text"]),
            None,
            [],
            "",
            [],
            "",
        )
    if not plan.has("recommendations") and state.is_base:
        return not_in_run("Recommendations", "recommendations"), None, nothing, None, [], "", [], ""
    if not plan.mask(filters).any():
        no_match = empty_figure("No servers match these filters", title=nothing["layout"]["title"]["text"])
        return no_match_state(), None, no_match, None, [], "0 rows", [], ""
    try:
        view = _view(rm, plan, state, filters)
    except WhatIfScopeError as e:
        return scope_alert(e), None, nothing, None, [], "", [], ""
    recs = view.recommendation_rows(plan, filters)
    cons_all = view.consolidation
    cons = view.consolidation_rows(plan, filters)
    groups = (
        host_groups(cons_all, cons) if cons_all is not None and cons is not None else host_groups(None, None)
    )
    kpis = kpis_view(view, recs, groups, filtered=not filters.is_empty)
    if recs is None:
        return None, kpis, nothing, None, [], "", records(groups, PLAN_FIELDS), ""
    fig = savings_by_unit_figure(savings_by_unit(recs))
    table = frame_table(savings_table(recs)) if len(recs) else empty_state("No servers under these filters")
    changed = changed_rows(rm, plan, recs)
    rec_rows = records(changed, RECOMMENDATION_FIELDS) if rows else None
    rec_note = f"{len(changed):,} of {len(recs):,} servers with an action other than keep" + (
        f" · what-if computed in {view.seconds:.2f} s" if view.seconds else ""
    )
    plan_note = (
        f"{len(groups):,} host groups packing {int(groups['members'].sum()) if len(groups) else 0:,} servers"
        + (" (groups with a server under the filters)" if not filters.is_empty else "")
    )
    if cons_all is None:
        plan_note = "The consolidation plan is not in this run."
    return None, kpis, fig, table, rec_rows, rec_note, records(groups, PLAN_FIELDS), plan_note


def held_back_counts(recs: pd.DataFrame | None) -> list[tuple[str, int]]:
    """(category, servers) for every forecasting.policy.HELD_BACK category with a server, in
    the policy's order; an unknown category (a newer engine) is counted after them."""
    if recs is None or not len(recs) or "held_back" not in recs:
        return []
    counts = recs["held_back"].astype(str).value_counts()
    out = [(c, int(counts[c])) for c in HELD_BACK if counts.get(c, 0)]
    out += [(str(c), int(n)) for c, n in counts.items() if c and c not in HELD_BACK]
    return out


def held_back_category(value: Any) -> str:
    """The grid's category filter from the browser: a HELD_BACK category, else every category."""
    return value if isinstance(value, str) and value in HELD_BACK else ALL_CATEGORIES


def held_back_badges(counts: list[tuple[str, int]]) -> Any:
    """One badge per category with its count; hovering says what it means."""
    if not counts:
        return html.Span(
            "No server is held back under these filters and this scenario.", className="text-muted"
        )
    badges = [
        html.Span(
            [html.Span(f"{n:,}", className="fw-bold me-1"), cat],
            className="badge rounded-pill held-badge me-2 mb-1",
            title=HELD_BACK_TEXT.get(cat, ""),
            style={"backgroundColor": HELD_BACK_COLORS.get(cat, "#6b7785")},
            **{"data-category": cat},
        )
        for cat, n in counts
    ]
    total = sum(n for _, n in counts)
    return html.Div([html.Span(f"{total:,} servers held back: ", className="me-2"), *badges])


def held_rows(rm: ReadModel, data: Any, scenario: Any, category: Any) -> GridRows | None:
    """The held-back grid's rows for the filters, scenario and category, kept per process."""
    plan, filters, state, _message = _resolve(rm, data, scenario)
    if plan is None or (not plan.has("recommendations") and state.is_base) or not plan.mask(filters).any():
        return None
    cat = held_back_category(category)
    key = (rm._key("held-grid"), plan.run_id, json.dumps(filters.to_data(), sort_keys=True), state.key(), cat)

    def build() -> GridRows:
        try:
            recs = _view(rm, plan, state, filters).recommendation_rows(plan, filters)
        except WhatIfScopeError:
            recs = None
        frame = pd.DataFrame(columns=HELD_FIELDS) if recs is None else _held(recs, cat)
        return GridRows(
            frame[HELD_FIELDS].reset_index(drop=True), tuple(c["field"] for c in HELD_COLUMN_DEFS)
        )

    return _ROWS.get(key, build)


def _held(recs: pd.DataFrame, cat: str) -> pd.DataFrame:
    held = recs["held_back"].astype(str)
    shown = recs[(held == cat).to_numpy() if cat != ALL_CATEGORIES else (held != "").to_numpy()]
    return shown.sort_values(["held_back", "server_id"], kind="stable")


def held_back_view(
    rm: ReadModel, data: Any, scenario: Any, category: Any, *, rows: bool = True
) -> tuple[Any, ...]:
    """(badges, figure, grid rows, note): the servers the policy kept out of a saving action
    (or out of a shared host) under the filters and the scenario, with why and the reason."""
    title = "Servers held back from the plan, by reason"
    plan, filters, state, message = _resolve(rm, data, scenario)
    if plan is None:
        return None, empty_figure(message, title=title), [], message
    if not plan.has("recommendations") and state.is_base:
        return None, empty_figure("Recommendations are not in this run", title=title), [], ""
    if not plan.mask(filters).any():
        return None, empty_figure("No servers match these filters", title=title), [], "0 servers"
    try:
        view = _view(rm, plan, state, filters)
    except WhatIfScopeError as e:
        return None, empty_figure("What-if scope too large", title=title), [], str(e)
    recs = view.recommendation_rows(plan, filters)
    if recs is None:
        return None, empty_figure("Recommendations are not in this run", title=title), [], ""
    counts = held_back_counts(recs)
    cat = held_back_category(category)
    shown = _held(recs, cat)
    total = sum(n for _, n in counts)
    note = f"{len(shown):,} of {total:,} held-back servers" + (
        f" ({cat}: {HELD_BACK_TEXT.get(cat, '')})" if cat != ALL_CATEGORIES else ""
    )
    grid = records(shown, HELD_FIELDS) if rows else no_update  # a server-paged grid fetches its blocks
    return held_back_badges(counts), held_back_figure(counts), grid, note


def host_chart_view(rm: ReadModel, data: Any, scenario: Any, group: Any) -> dict:
    """The chosen (or biggest) host group's summed CPU and memory against the host's capacity."""
    title = "Packed host: summed load vs capacity"
    plan, filters, state, message = _resolve(rm, data, scenario)
    if plan is None:
        return empty_figure(message, title=title)
    if not plan.mask(filters).any():
        return empty_figure("No servers match these filters", title=title)
    try:
        view = _view(rm, plan, state, filters)
    except WhatIfScopeError:
        return empty_figure("What-if scope too large: narrow the filters", title=title)
    cons_all, cons = view.consolidation, view.consolidation_rows(plan, filters)
    if cons_all is None or cons is None:
        return empty_figure("The consolidation plan is not in this run", title=title)
    groups = host_groups(cons_all, cons)
    if groups.empty:
        return empty_figure("No host groups under these filters and this scenario", title=title)
    chosen = (
        group
        if isinstance(group, str) and group in set(groups["target_group"])
        else groups["target_group"].iat[0]
    )
    members = cons_all[cons_all["target_group"] == chosen]
    server_ids = members["server_id"].astype(str).tolist()
    inputs = scenario_inputs_for(rm, plan, state, server_ids)
    if inputs is None:
        return empty_figure(f"No forecasts for the members of {chosen}", title=title)
    cpu, mem, index = demand_series(inputs, quantile=PACKING_QUANTILE)
    headroom = (state.headroom / 100.0) if state.headroom is not None else view.base.headroom
    first = members.iloc[0]
    return packed_host_figure(
        index,
        np.nansum(cpu, axis=0),
        np.nansum(mem, axis=0),
        origin=inputs.origin,
        host_label=str(first["host_size"]),
        host_cores=float(first["host_cores"]),
        host_memory_gb=float(first["host_memory_gb"]),
        headroom=headroom,
        members=server_ids,
        group=str(chosen),
        quantile=PACKING_QUANTILE,
    )


# Clientside: a click on a plan row selects its host group for the chart.
PICK_GROUP_JS = """
function (cell) {
    if (!cell || cell.rowId === undefined || cell.rowId === null) {
        return window.dash_clientside.no_update;
    }
    return String(cell.rowId);
}
"""


def register(app: Dash) -> None:
    rm = get_context(app).readmodel

    @app.callback(
        Output(ids.CONS_EMPTY, "children"),
        Output(ids.CONS_KPIS, "children"),
        Output(ids.CONS_SAVINGS_CHART, "figure"),
        Output(ids.CONS_SAVINGS_TABLE, "children"),
        Output(ids.CONS_RECS_GRID, "rowData"),
        Output(ids.CONS_RECS_NOTE, "children"),
        Output(ids.CONS_PLAN_GRID, "rowData"),
        Output(ids.CONS_PLAN_NOTE, "children"),
        Input(ids.FILTERS, "data"),
        Input(ids.WHATIF_STATE, "data"),
        Input(ids.DECIDE_SAVED, "data"),
    )
    def _page(data: Any, scenario: Any, _saved: Any = None) -> tuple[Any, ...]:
        if data is None:
            raise PreventUpdate
        if paged(rm.snapshot().plan, "recommendations", rm.settings):  # the grid fetches its blocks
            out = list(consolidation_view(rm, data, scenario, rows=False))
            out[4] = no_update
            return tuple(out)
        return consolidation_view(rm, data, scenario)

    register_paged_grid(
        app,
        rm,
        grid_id=ids.CONS_RECS_GRID,
        alert_id=ids.CONS_RECS_ALERT,
        purge_id=ids.CONS_RECS_PURGE,
        search_id=ids.CONS_RECS_SEARCH,
        rows_fn=cached_rows,
        view_fields=[c["field"] for c in RECOMMENDATION_COLUMN_DEFS],
        row_fields=RECOMMENDATION_FIELDS,
        orders={"action": ACTION_RANK},
        refresh=[(ids.DECIDE_SAVED, "data")],
    )

    @app.callback(
        Output(ids.CONS_HOST_CHART, "figure"),
        Input(ids.FILTERS, "data"),
        Input(ids.WHATIF_STATE, "data"),
        Input(ids.CONS_GROUP, "data"),
    )
    def _chart(data: Any, scenario: Any, group: Any) -> dict:
        if data is None:
            raise PreventUpdate
        return host_chart_view(rm, data, scenario, group)

    @app.callback(
        Output(ids.CONS_HELD_BADGES, "children"),
        Output(ids.CONS_HELD_CHART, "figure"),
        Output(ids.CONS_HELD_GRID, "rowData"),
        Output(ids.CONS_HELD_NOTE, "children"),
        Input(ids.FILTERS, "data"),
        Input(ids.WHATIF_STATE, "data"),
        Input(ids.CONS_HELD_CATEGORY, "value"),
        Input(ids.CONS_TABS, "value"),
    )
    def _held(data: Any, scenario: Any, category: Any, tab: Any) -> tuple[Any, ...]:
        if data is None or tab != HELD_TAB:  # computed when the tab is open, not on first render
            raise PreventUpdate
        rows = not paged(rm.snapshot().plan, "recommendations", rm.settings)
        return held_back_view(rm, data, scenario, category, rows=rows)

    register_paged_grid(
        app,
        rm,
        grid_id=ids.CONS_HELD_GRID,
        alert_id=ids.CONS_HELD_ALERT,
        purge_id=ids.CONS_HELD_PURGE,
        search_id=None,
        rows_fn=held_rows,
        view_fields=[c["field"] for c in HELD_COLUMN_DEFS],
        row_fields=HELD_FIELDS,
        extra=[(ids.CONS_HELD_CATEGORY, "value")],
    )

    app.clientside_callback(
        PICK_GROUP_JS,
        Output(ids.CONS_GROUP, "data"),
        Input(ids.CONS_PLAN_GRID, "cellClicked"),
        prevent_initial_call=True,
    )
    register_grid_tools(
        app,
        grid_id=ids.CONS_RECS_GRID,
        search_id=ids.CONS_RECS_SEARCH,
        csv_id=ids.CONS_EXPORT_CSV,
        excel_id=ids.CONS_EXPORT_XLSX,
        download_id=ids.CONS_DOWNLOAD,
        columns=EXPORT_COLUMNS,
        rows_fn=export_rows,
        grid_fields=[c["field"] for c in RECOMMENDATION_COLUMN_DEFS],
        orders={"action": ACTION_RANK},
        title="Recommendations",
        stem="recommendations",
    )


# The recommendations grid sorts actions by meaning (app/pages/consolidation.py ACTION_ORDER).
ACTION_RANK = {"upgrade": 0, "decommission": 1, "consolidate": 2, "right-size": 3, "keep": 4}


def export_rows(rm: ReadModel, data: Any, scenario: Any) -> list[dict[str, Any]] | GridRows:
    """The recommendations grid's rows for the filters and the scenario, as its callback computes
    them (a server-paged grid's: its cached rows, narrowed and ordered vectorised)."""
    if paged(rm.snapshot().plan, "recommendations", rm.settings):
        rows = cached_rows(rm, data, scenario)
        return rows if rows is not None else []
    return consolidation_view(rm, data, scenario)[4]
