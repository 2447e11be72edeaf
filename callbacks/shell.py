"""Shell callbacks: filters ↔ URL query string, navbar links, "data as of" and the stale banner.

The filter state has one writer (:func:`sync_filters`): the URL on load or navigation, the
dropdowns, or "Clear". It stores the sanitised state in ``ids.FILTERS``; pages read only that
store. Writing the query string back is pure UI work, done client-side (assets/app.js:
``history.replaceState``, so a filter change does not re-render the page).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from dash import ALL, ClientsideFunction, Dash, Input, Output, State, ctx, html, no_update
from dash.exceptions import PreventUpdate

from app import get_context, ids
from app.filters import LABELS, FilterState, from_query, sanitise
from app.readmodel import ReadModel
from forecasting.schema import FILTER_DIMENSIONS

MAX_NOTICE_VALUES = 5
MAX_NOTICE_CHARS = 40


def sync_filters(
    rm: ReadModel,
    source: str,
    search: str | None,
    values: Mapping[str, Sequence[str] | None],
    current: Any,
) -> tuple[Any, ...]:
    """Resolve the filter state from its source ('url' | 'dropdown' | 'clear').

    Returns, in output order: one value list per dropdown (no_update when the dropdowns are
    the source), the store data (no_update when unchanged), the match count text, and the
    notice about ignored link values (children, is_open).
    """
    plan = rm.snapshot().plan
    options = plan.options if plan is not None else {}
    dropped: list[tuple[str, str]] = []
    if source == "clear":
        state = FilterState()
    elif source == "dropdown":
        state, _ = sanitise(dict(values), options)
    else:
        state, dropped = from_query(search, options)
    data = state.to_data()
    if plan is None:
        count = ""
    else:
        n = int(plan.mask(state).sum())
        count = f"Showing {n:,} of {plan.n_servers:,} servers" if not state.is_empty else f"All {n:,} servers"
    dropdowns = (
        [no_update] * len(FILTER_DIMENSIONS)
        if source == "dropdown"
        else [list(state.get(d)) for d in FILTER_DIMENSIONS]
    )
    notice, notice_open = ignored_notice(dropped)
    if source == "dropdown":
        notice, notice_open = no_update, False
    return (*dropdowns, no_update if data == current else data, count, notice, notice_open)


def ignored_notice(dropped: Sequence[tuple[str, str]]) -> tuple[Any, bool]:
    """Say which values of a shared link were ignored (shortened; rendered as text, never markup)."""
    if not dropped:
        return "", False
    parts = []
    for dim, value in dropped[:MAX_NOTICE_VALUES]:
        shown = value if len(value) <= MAX_NOTICE_CHARS else value[: MAX_NOTICE_CHARS - 1] + "…"
        parts.append(f"{LABELS[dim].lower()} “{shown}”")
    more = len(dropped) - MAX_NOTICE_VALUES
    text = "Ignored filter values this fleet does not have: " + ", ".join(parts)
    if more > 0:
        text += f" and {more} more"
    return [html.Strong("Link filters adjusted. "), html.Span(text + ".")], True


def status_view(rm: ReadModel) -> tuple[str, Any, bool]:
    """'Data as of' text and the stale banner (children, is_open)."""
    snap = rm.snapshot()
    stale = snap.status.message if snap.status.stale else None
    return snap.as_of, stale or "", bool(stale)


def register(app: Dash) -> None:
    rm = get_context(app).readmodel
    dropdown_ids = [ids.FILTER_DROPDOWNS[d] for d in FILTER_DIMENSIONS]

    @app.callback(
        [Output(i, "value") for i in dropdown_ids]
        + [
            Output(ids.FILTERS, "data"),
            Output(ids.FILTER_COUNT, "children"),
            Output(ids.FILTER_NOTICE, "children"),
            Output(ids.FILTER_NOTICE, "is_open"),
        ],
        [Input(ids.URL, "search"), Input(ids.FILTER_CLEAR, "n_clicks")]
        + [Input(i, "value") for i in dropdown_ids],
        State(ids.FILTERS, "data"),
    )
    def _sync(search: str | None, _clear: int | None, *rest: Any) -> tuple[Any, ...]:
        *values, current = rest
        trigger = ctx.triggered_id
        if trigger == ids.FILTER_CLEAR:
            source = "clear"
        elif trigger in dropdown_ids:
            source = "dropdown"
        else:
            if search is None:  # the Location has not reported the URL yet
                raise PreventUpdate
            source = "url"
        return sync_filters(rm, source, search, dict(zip(FILTER_DIMENSIONS, values)), current)

    app.clientside_callback(
        ClientsideFunction(namespace="capfc", function_name="syncUrl"),
        Output({"type": ids.NAV_LINK_TYPE, "index": ALL}, "href"),
        Output({"type": ids.NAV_LINK_TYPE, "index": ALL}, "active"),
        Input(ids.FILTERS, "data"),
        Input(ids.URL, "pathname"),
        Input(ids.SCENARIO_CARRY, "data"),
    )

    @app.callback(
        Output(ids.AS_OF, "children"),
        Output(ids.STALE_BANNER, "children"),
        Output(ids.STALE_BANNER, "is_open"),
        Input(ids.STATUS_INTERVAL, "n_intervals"),
        prevent_initial_call=True,
    )
    def _status(_n: int) -> tuple[str, Any, bool]:
        return status_view(rm)
