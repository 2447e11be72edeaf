"""Wiring of a grid paged on the server (app.servergrid): the block callback, the refetch when
the page's inputs change, and the layout's parts. One mechanism for every such grid (the risk
grid, the recommendations grid)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import dash_bootstrap_components as dbc
from dash import Dash, Input, Output, State
from dash.exceptions import PreventUpdate

from app import ids
from app.readmodel import ReadModel
from app.servergrid import GridRequestError, GridRows, parse_request, response

RowsFn = Callable[..., GridRows | None]  # (rm, filters data, scenario data, *extra states)

# Ask the grid for its first block again (the server answers under the page's new inputs).
PURGE_JS = """
function () {
    const args = Array.from(arguments);
    const gridId = args[args.length - 2], model = args[args.length - 1];
    if (model !== 'infinite') { return window.dash_clientside.no_update; }
    try {
        window.dash_ag_grid.getApi(gridId).purgeInfiniteCache();
    } catch (e) {
        return window.dash_clientside.no_update;  // not mounted yet: it fetches on mount
    }
    return Date.now();
}
"""


def rows_block(
    rm: ReadModel,
    rows_fn: RowsFn,
    request: Any,
    data: Any,
    scenario: Any,
    search: Any,
    *,
    view_fields: Sequence[str],
    row_fields: Sequence[str],
    orders: Mapping[str, Mapping[str, int]] | None,
    alert_id: str,
    extra: Sequence[Any] = (),
) -> tuple[dict[str, Any], Any]:
    """(getRowsResponse, alert) of one block under the grid's sort, filters and search."""
    try:
        req = parse_request(request, search, view_fields)
    except GridRequestError as e:
        return {"rowData": [], "rowCount": 0}, dbc.Alert(str(e), color="warning", id=f"{alert_id}-msg")
    rows = rows_fn(rm, data, scenario, *extra)
    if rows is None:
        return {"rowData": [], "rowCount": 0}, None
    block, total = rows.page(req, orders)
    return response(block, total, row_fields), None


def register_paged_grid(
    app: Dash,
    rm: ReadModel,
    *,
    grid_id: str,
    alert_id: str,
    purge_id: str,
    search_id: str | None,
    rows_fn: RowsFn,
    view_fields: Sequence[str],
    row_fields: Sequence[str],
    orders: Mapping[str, Mapping[str, int]] | None = None,
    refresh: Sequence[tuple[str, str]] = (),
    extra: Sequence[tuple[str, str]] = (),
) -> None:
    """The block callback of grid ``grid_id`` and its refetch when the filters, the scenario,
    the quick search, ``extra`` ((id, property) values handed to ``rows_fn`` after the
    scenario) or ``refresh`` (other (id, property) inputs) change."""
    search_state = [State(search_id, "value")] if search_id else []

    @app.callback(
        Output(grid_id, "getRowsResponse"),
        Output(alert_id, "children"),
        Input(grid_id, "getRowsRequest"),
        State(ids.FILTERS, "data"),
        State(ids.WHATIF_STATE, "data"),
        *search_state,
        *[State(i, p) for i, p in extra],
        prevent_initial_call=True,
    )
    def _block(request: Any, data: Any, scenario: Any, *rest: Any) -> tuple[Any, Any]:
        if request is None or data is None:
            raise PreventUpdate
        search = rest[0] if search_id else None
        return rows_block(
            rm,
            rows_fn,
            request,
            data,
            scenario,
            search,
            view_fields=view_fields,
            row_fields=row_fields,
            orders=orders,
            alert_id=alert_id,
            extra=rest[1:] if search_id else rest,
        )

    app.clientside_callback(
        PURGE_JS,
        Output(purge_id, "data"),
        Input(ids.FILTERS, "data"),
        Input(ids.WHATIF_STATE, "data"),
        *[Input(search_id, "value")] * bool(search_id),
        *[Input(i, p) for i, p in [*extra, *refresh]],
        State(grid_id, "id"),
        State(grid_id, "rowModelType"),
        prevent_initial_call=True,
    )
