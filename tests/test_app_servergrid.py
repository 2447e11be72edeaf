"""Grids paged on the server (app.servergrid; the risk grid above grid_client_max_rows), the
read model at scale (no forecast rows held; one server's rows read on demand) and what-ifs
scoped to the filtered servers (whatif_max_servers).

The vectorised view is checked against components.export.apply_view (the client-side grid's
meaning, already tested on its own) on the same rows, so paging on the server shows what the
browser would have. Callbacks are called through Dash's HTTP endpoint where the wiring matters.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from app import get_context
from app.filters import FilterState
from app.readmodel import ReadModel
from app.servergrid import GridRequestError, GridRows, parse_request, view_positions
from app.whatif import ScenarioState, WhatIfScopeError, scenario_view
from callbacks import risk
from components.export import GridView, apply_view
from forecasting.settings import Settings
from tests.test_export import FIELDS, ROWS

ALL = FilterState().to_data()
BASE = ScenarioState().to_data()
GRID_FIELDS = [c["field"] for c in risk.RISK_COLUMN_DEFS]


# --------------------------------------------------------------------------- the view, vectorised


def _frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    frame["score"] = frame["score"].astype(float)
    return frame


@pytest.mark.parametrize(
    ("search", "model", "sort"),
    [
        ("  CPU  srv-1 ", None, None),
        ("70", None, None),
        (None, None, [{"colId": "severity", "sort": "asc"}]),
        (None, None, [{"colId": "score", "sort": "asc"}]),
        (None, None, [{"colId": "score", "sort": "desc"}]),
        (None, None, [{"colId": "reason", "sort": "desc"}, {"colId": "score", "sort": "asc"}]),
        (
            None,
            {
                "score": {"filterType": "number", "type": "greaterThan", "filter": "60"},
                "reason": {
                    "filterType": "text",
                    "operator": "OR",
                    "conditions": [
                        {"filterType": "text", "type": "startsWith", "filter": "cpu"},
                        {"filterType": "text", "type": "contains", "filter": "MEMORY"},
                    ],
                },
            },
            None,
        ),
        (None, {"due": {"filterType": "date", "type": "lessThan", "dateFrom": "2026-08-01 00:00:00"}}, None),
        (None, {"due": {"filterType": "date", "type": "blank"}}, None),
        (None, {"reason": {"filterType": "text", "type": "notContains", "filter": "cpu"}}, None),
        (None, {"score": {"filterType": "number", "type": "inRange", "filter": 60, "filterTo": 95}}, None),
    ],
)
def test_the_server_side_view_is_the_client_side_grids(search, model, sort):
    rank = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    view = GridView.from_browser(search, model, sort, FIELDS)
    want = [r["server_id"] for r in apply_view(ROWS, view, FIELDS, {"severity": rank})]
    frame = _frame(ROWS)
    got = frame["server_id"].iloc[view_positions(frame, view, FIELDS, {"severity": rank})].tolist()
    assert got == want


def test_a_request_is_validated_and_bad_ones_refused_with_a_reason():
    ok = parse_request(
        {"startRow": 100, "endRow": 200, "sortModel": [{"colId": "score", "sort": "desc"}]}, "", FIELDS
    )
    assert (ok.start, ok.end, ok.view.sort) == (100, 200, (("score", False),))
    bad = [
        (
            {"startRow": 0, "endRow": 10, "sortModel": [{"colId": "__proto__", "sort": "asc"}]},
            "sort on '__proto__'",
        ),
        (
            {"startRow": 0, "endRow": 10, "sortModel": [{"colId": "score", "sort": "sideways"}]},
            "sort is not one",
        ),
        (
            {
                "startRow": 0,
                "endRow": 10,
                "filterModel": {"nope": {"filterType": "text", "type": "equals", "filter": "a"}},
            },
            "filter on 'nope'",
        ),
        (
            {
                "startRow": 0,
                "endRow": 10,
                "filterModel": {"reason": {"filterType": "text", "type": "eval", "filter": "a"}},
            },
            "filter on 'reason'",
        ),
        (
            {
                "startRow": 0,
                "endRow": 10,
                "filterModel": {"reason": {"filterType": "text", "type": "contains", "filter": "x" * 5000}},
            },
            "at most 200 characters",
        ),
        ({"startRow": -5, "endRow": 10}, "at most 1,000 rows"),
        ({"startRow": 0, "endRow": 10**9}, "at most 1,000 rows"),
        ({"startRow": "0; DROP TABLE", "endRow": 10}, "at most 1,000 rows"),
        ("not a request", "not one this page understands"),
        ({"startRow": 0, "endRow": 10, "filterModel": ["x"]}, "not one this page understands"),
    ]
    for request, reason in bad:
        with pytest.raises(GridRequestError) as err:
            parse_request(request, "", FIELDS)
        assert reason in str(err.value), (request, str(err.value))


def test_hostile_filter_text_matches_literally_never_as_a_pattern():
    frame = _frame(ROWS)
    for text in (".*", "(a+)+$", "'; DROP TABLE risk; --", '=HYPERLINK("x")', "\\d", "%"):
        view = GridView.from_browser(
            None, {"reason": {"filterType": "text", "type": "contains", "filter": text}}, None, FIELDS
        )
        assert view.filters, text
        assert len(view_positions(frame, view, FIELDS)) == 0


# --------------------------------------------------------------------------- the risk grid, paged on the server


@pytest.fixture
def paged_app(make_app, plan_store, plan_store_root):
    """The fixture fleet with every grid paged on the server (threshold 0 rows)."""
    return make_app(plan_store, plan_store_root, grid_client_max_rows=0)


def _post(client, body: dict) -> dict:
    resp = client.post("/_dash-update-component", data=json.dumps(body), content_type="application/json")
    assert resp.status_code == 200, resp.data[:400]
    return resp.get_json()["response"]


def _rows_request(request: dict, filters: dict | None = None, search: str | None = None) -> dict:
    return {
        "output": "..risk-grid.getRowsResponse...risk-grid-alert.children..",
        "outputs": [
            {"id": "risk-grid", "property": "getRowsResponse"},
            {"id": "risk-grid-alert", "property": "children"},
        ],
        "inputs": [{"id": "risk-grid", "property": "getRowsRequest", "value": request}],
        "changedPropIds": ["risk-grid.getRowsRequest"],
        "state": [
            {"id": "shell-filters", "property": "data", "value": filters or ALL},
            {"id": "whatif-state", "property": "data", "value": BASE},
            {"id": "risk-search", "property": "value", "value": search},
        ],
    }


def test_the_risk_page_renders_an_infinite_grid_above_the_threshold(paged_app, fixture_app):
    page = paged_app.server.test_client().get("/_dash-layout")
    assert page.status_code == 200
    client = paged_app.server.test_client()
    body = client.get("/risk").get_data(as_text=True)
    assert "risk-grid" in body or body  # the shell; the page layout comes from the path
    from app.pages import risk as risk_page

    with paged_app.server.test_request_context("/risk"):
        grid = risk_page._grid()
    assert grid.rowModelType == "infinite" and grid.rowData is None
    assert grid.dashGridOptions["cacheBlockSize"] == 100
    with fixture_app.server.test_request_context("/risk"):
        small = risk_page._grid()
    assert getattr(small, "rowModelType", None) in (None, "clientSide") and small.rowData == []


def test_the_infinite_grid_pages_sorts_and_filters_on_the_server(paged_app):
    client = paged_app.server.test_client()
    rm = get_context(paged_app).readmodel
    every = risk.risk_view(rm, ALL, BASE)[0]  # what the client-side grid would hold
    total = len(every)
    assert total > 20

    first = _post(client, _rows_request({"startRow": 0, "endRow": 10}))["risk-grid"]["getRowsResponse"]
    second = _post(client, _rows_request({"startRow": 10, "endRow": 20}))["risk-grid"]["getRowsResponse"]
    assert first["rowCount"] == second["rowCount"] == total
    assert len(first["rowData"]) == len(second["rowData"]) == 10
    assert [r["row_id"] for r in first["rowData"] + second["rowData"]] == [r["row_id"] for r in every[:20]]

    sort = [{"colId": "score", "sort": "asc"}]
    got = _post(client, _rows_request({"startRow": 0, "endRow": 50, "sortModel": sort}))["risk-grid"][
        "getRowsResponse"
    ]
    want = apply_view(every, GridView.from_browser(None, None, sort, GRID_FIELDS), GRID_FIELDS)
    assert [r["row_id"] for r in got["rowData"]] == [r["row_id"] for r in want[:50]]
    scores = [r["score"] for r in got["rowData"] if r["score"] is not None]
    assert scores == sorted(scores)

    model = {"metric_label": {"filterType": "text", "type": "contains", "filter": "cpu"}}
    got = _post(client, _rows_request({"startRow": 0, "endRow": 1000, "filterModel": model}))["risk-grid"][
        "getRowsResponse"
    ]
    cpu = [r for r in every if "cpu" in r["metric_label"].lower()]
    assert got["rowCount"] == len(cpu) > 0 and all(r["metric"] == "cpu_p95" for r in got["rowData"])

    # the quick search and the global filters are applied on the server too
    got = _post(client, _rows_request({"startRow": 0, "endRow": 1000}, search="memory"))["risk-grid"][
        "getRowsResponse"
    ]
    assert 0 < got["rowCount"] < total and all("memory" in json.dumps(r).lower() for r in got["rowData"])
    markets = FilterState(business_unit=("Markets",)).to_data()
    got = _post(client, _rows_request({"startRow": 0, "endRow": 1000}, filters=markets))["risk-grid"][
        "getRowsResponse"
    ]
    assert got["rowCount"] == len(risk.risk_view(rm, markets, BASE)[0])
    assert {r["business_unit"] for r in got["rowData"]} == {"Markets"}


def test_a_bad_sort_or_a_hostile_filter_gets_a_clear_alert(paged_app):
    client = paged_app.server.test_client()
    for request, words in (
        (
            {"startRow": 0, "endRow": 100, "sortModel": [{"colId": "no_such_column", "sort": "asc"}]},
            "no_such_column",
        ),
        (
            {
                "startRow": 0,
                "endRow": 100,
                "filterModel": {
                    "reason": {"filterType": "text", "type": "contains", "filter": "<script>" * 100}
                },
            },
            "at most 200 characters",
        ),
        ({"startRow": 0, "endRow": 50_000}, "at most 1,000 rows"),
    ):
        out = _post(client, _rows_request(request))
        assert out["risk-grid"]["getRowsResponse"] == {"rowData": [], "rowCount": 0}
        alert = json.dumps(out["risk-grid-alert"]["children"])
        assert words in alert and "Alert" in alert


def test_the_page_callback_sends_no_rows_to_an_infinite_grid(paged_app):
    client = paged_app.server.test_client()
    body = {
        "output": "..risk-grid.rowData...risk-kpis.children...risk-empty.children...risk-note.children..",
        "outputs": [
            {"id": "risk-grid", "property": "rowData"},
            {"id": "risk-kpis", "property": "children"},
            {"id": "risk-empty", "property": "children"},
            {"id": "risk-note", "property": "children"},
        ],
        "inputs": [
            {"id": "shell-filters", "property": "data", "value": ALL},
            {"id": "whatif-state", "property": "data", "value": BASE},
            {"id": "decide-saved", "property": "data", "value": None},
        ],
        "changedPropIds": ["shell-filters.data"],
        "state": [],
    }
    out = _post(client, body)
    assert "rowData" not in out.get("risk-grid", {})  # no_update: the grid fetches its blocks
    assert "rows at risk" in json.dumps(out["risk-note"])


def test_export_of_an_infinite_grid_holds_every_row_under_its_view(paged_app):
    from callbacks.whatif import export_download

    rm = get_context(paged_app).readmodel
    model = {"metric_label": {"filterType": "text", "type": "contains", "filter": "memory"}}
    state = [{"colId": "score", "sort": "asc"}]
    with paged_app.server.test_request_context("/"):
        rows = risk.export_rows(rm, ALL, BASE)
        assert isinstance(rows, GridRows)
        out = export_download(
            rm,
            "csv",
            risk.export_rows,
            risk.EXPORT_COLUMNS,
            title="Utilization risk",
            stem="utilization-risk",
            filters_data=ALL,
            scenario_data=BASE,
            filter_model=model,
            column_state=state,
            grid_fields=GRID_FIELDS,
        )
    import base64
    import io

    text = base64.b64decode(out["content"]).decode("utf-8-sig")
    frame = pd.read_csv(io.StringIO(text), comment="#")
    want = apply_view(
        risk.risk_view(rm, ALL, BASE)[0], GridView.from_browser(None, model, state, GRID_FIELDS), GRID_FIELDS
    )
    assert len(frame) == len(want) > 0
    assert frame["Server"].tolist() == [r["server_id"] for r in want]


# --------------------------------------------------------------------------- the read model holds no series


def test_the_read_model_holds_no_forecast_rows_and_reads_one_server(plan_store, plan_store_root):
    from forecasting.inputs import FORECAST_INPUT_COLUMNS

    reads: list[Any] = []
    asked: list[Any] = []

    class Spy:
        def __init__(self, store):
            self.store = store

        def __getattr__(self, name):
            return getattr(self.store, name)

        def read_run_table(self, run_id, name, server_ids=None, columns=None):
            reads.append((name, None if server_ids is None else list(server_ids)))
            asked.append((name, columns))
            return self.store.read_run_table(run_id, name, server_ids=server_ids, columns=columns)

    from forecasting.sources import Store

    Store.register(Spy)
    rm = ReadModel(Spy(plan_store), Settings(data=str(plan_store_root)))
    plan = rm.plan()
    assert plan is not None and plan.has_forecasts and plan.has("backtest")
    assert not hasattr(plan, "forecasts") and "forecasts" not in plan.tables and "backtest" not in plan.tables
    # every table the plan holds is a summary table: no forecast or backtest row in memory
    held = {name for name, frame in plan.tables.items() if frame is not None}
    assert held == {"risk", "recommendations", "consolidation"}
    for frame in plan.tables.values():
        assert frame is None or not {"yhat", "q975", "mase"} & set(frame.columns)
    # forecasts are never read whole: at load in bounded chunks of servers, on the page one server
    assert all(ids is not None for name, ids in reads if name in ("forecasts", "backtest"))
    reads.clear()
    fc = rm.server_forecast(plan, "srv-00007")
    bt = rm.server_table(plan, "backtest", "srv-00007")
    assert set(fc["server_id"]) == {"srv-00007"} and len(fc) == 5 * 90
    assert set(bt["server_id"]) == {"srv-00007"}
    assert reads == [("forecasts", ["srv-00007"]), ("backtest", ["srv-00007"])]
    # the what-if inputs, whole fleet or a scope, read only the forecast columns prepare uses
    asked.clear()
    whole, scoped = rm.analytics_inputs(plan), rm.scoped_inputs(plan, np.arange(3))
    assert whole.server_ids.size == plan.n_servers and scoped.server_ids.size == 3
    assert asked == [("forecasts", FORECAST_INPUT_COLUMNS)] * 2


def test_the_server_page_reads_only_its_servers_forecast(fixture_app, plan_store):
    from callbacks import server as srv

    rm = get_context(fixture_app).readmodel
    assert rm.plan() is not None
    seen: list[Any] = []
    real = plan_store.read_run_table

    def spy(run_id, name, server_ids=None):
        seen.append((name, None if server_ids is None else list(server_ids)))
        return real(run_id, name, server_ids=server_ids)

    rm._store.read_run_table = spy  # type: ignore[method-assign]
    try:
        srv.server_view(rm, "srv-00011")
    finally:
        del rm._store.read_run_table
    assert ("forecasts", ["srv-00011"]) in seen
    assert all(ids == ["srv-00011"] for _, ids in seen)


def test_trends_are_held_per_filter_cell_not_per_server(plan):
    t = plan.trend
    assert t is not None
    n_cells = len(plan._cell_codes["business_unit"])
    assert n_cells < plan.n_servers
    assert all(v.shape[0] == n_cells for v in t.sums.values())


# --------------------------------------------------------------------------- what-if scope


def test_a_large_fleets_what_if_covers_the_filtered_servers_or_says_why_not(plan_store, plan_store_root):
    rm = ReadModel(plan_store, Settings(data=str(plan_store_root), whatif_max_servers=60))
    plan = rm.plan()
    scenario = ScenarioState(growth=3)
    with pytest.raises(WhatIfScopeError, match="cover at most 60 servers") as err:
        scenario_view(rm, plan, scenario, filters=FilterState())
    assert err.value.selected == plan.n_servers
    units = plan.options["business_unit"]
    counts = {u: int(plan.mask(FilterState(business_unit=(u,))).sum()) for u in units}
    small = min(counts, key=counts.get)
    assert counts[small] <= 60
    f = FilterState(business_unit=(small,))
    view = scenario_view(rm, plan, scenario, filters=f)
    assert "filtered servers" in view.scope_note
    assert set(view.risk["business_unit"]) == {small}
    # the same scenario over the whole (small enough) fleet gives these servers the same rows
    whole = scenario_view(ReadModel(plan_store, Settings(data=str(plan_store_root))), plan, scenario)
    mine = view.risk_rows(plan, f).sort_values(["server_id", "metric"]).reset_index(drop=True)
    want = whole.risk_rows(plan, f).sort_values(["server_id", "metric"]).reset_index(drop=True)
    assert len(mine) == len(want)
    np.testing.assert_allclose(mine["breach_probability"], want["breach_probability"], atol=1e-9)

    # on the page: a visible message, never a silently cut list
    shown, _kpis, empty, _note = risk.risk_rows(rm, FilterState().to_data(), scenario.to_data())
    assert shown is None and "What-if scope too large" in json.dumps(empty.to_plotly_json(), default=str)


def test_scoped_inputs_read_only_the_scoped_servers(plan_store, plan_store_root, tmp_path: Path):
    rm = ReadModel(plan_store, Settings(data=str(plan_store_root), whatif_max_servers=60))
    plan = rm.plan()
    pos = np.arange(0, plan.n_servers, 7)[:20]
    inputs = rm.scoped_inputs(plan, pos)
    assert inputs.inventory["server_id"].tolist() == plan.inventory["server_id"].iloc[pos].tolist()
    assert rm.scoped_inputs(plan, pos) is inputs  # kept per process


def test_the_query_cache_holds_a_bounded_number_of_rows():
    from app.servergrid import FrameCache, GridRows

    cache = FrameCache(size=6, max_rows=100)

    def rows(n: int) -> GridRows:
        return GridRows(pd.DataFrame({"server_id": [f"s{i}" for i in range(n)]}), ("server_id",))

    for key, n in (("a", 60), ("b", 30)):
        cache.get(key, lambda n=n: rows(n))
    assert [len(r.frame) for r in cache._memo.values()] == [60, 30]
    cache.get("c", lambda: rows(50))  # 140 rows: the oldest goes
    assert list(cache._memo) == ["b", "c"]
    assert cache.get("b", lambda: pytest.fail("rebuilt")) is cache._memo["b"]
    cache.get("d", lambda: rows(150))  # over the budget alone: kept, as the only one
    assert list(cache._memo) == ["d"]


def test_a_large_scope_is_prepared_in_a_child_process_and_memory_stays_bounded(
    plan_store, plan_store_root, monkeypatch
):
    """Above CHILD_SCOPE_SERVERS a scope's inputs are prepared by a spawned child (a failing
    ``prepare`` here proves it): the same arrays as preparing here. Kept scopes hold at most
    whatif_max_servers servers together, the newest kept."""
    import forecasting.inputs as inputs_module
    from app import readmodel as rmod

    rm = ReadModel(plan_store, Settings(data=str(plan_store_root), whatif_max_servers=150))
    plan = rm.plan()
    first, second = np.arange(0, 110), np.arange(90, 200)
    want = rmod.build_analytics_inputs(plan_store, plan, first)
    monkeypatch.setattr(rmod, "CHILD_SCOPE_SERVERS", 50)
    monkeypatch.setattr(inputs_module, "prepare", lambda *a, **k: pytest.fail("prepared in the web worker"))
    got = rm.scoped_inputs(plan, first)
    assert got.inventory["server_id"].tolist() == want.inventory["server_id"].tolist()
    np.testing.assert_array_equal(got.quantiles, want.quantiles)
    for m in want.history:
        np.testing.assert_array_equal(got.history[m], want.history[m])
    np.testing.assert_array_equal(got.missing_uplift, want.missing_uplift)
    assert rm.scoped_inputs(plan, first) is got
    rm.scoped_inputs(plan, second)  # 110 + 110 > 150: the older scope goes
    assert [len(v.inventory) for v in rm._scoped.values()] == [110]
    with pytest.raises(rmod.ReadModelError, match="has no forecasts"):  # the child's error, as raised
        rmod.in_child(rmod.prepare_scope, plan_store, "20990101T000000Z-0000000000000000", *plan.scope(first))
    monkeypatch.undo()
    small = rm.scoped_inputs(plan, np.arange(5))  # small scopes (prepared here) are kept beside
    assert small.n_servers == 5 and len(rm._scoped) == 2


def test_the_recommendations_and_held_back_grids_page_on_the_server(paged_app):
    from callbacks import consolidation as cons

    client = paged_app.server.test_client()
    rm = get_context(paged_app).readmodel
    every = cons.consolidation_view(rm, ALL, BASE)[4]
    body = {
        "output": "..cons-recs-grid.getRowsResponse...cons-recs-alert.children..",
        "outputs": [
            {"id": "cons-recs-grid", "property": "getRowsResponse"},
            {"id": "cons-recs-alert", "property": "children"},
        ],
        "inputs": [
            {
                "id": "cons-recs-grid",
                "property": "getRowsRequest",
                "value": {
                    "startRow": 0,
                    "endRow": 5,
                    "sortModel": [{"colId": "monthly_savings", "sort": "asc"}],
                },
            }
        ],
        "changedPropIds": ["cons-recs-grid.getRowsRequest"],
        "state": [
            {"id": "shell-filters", "property": "data", "value": ALL},
            {"id": "whatif-state", "property": "data", "value": BASE},
            {"id": "cons-recs-search", "property": "value", "value": None},
        ],
    }
    got = _post(client, body)["cons-recs-grid"]["getRowsResponse"]
    fields = [c["field"] for c in cons.RECOMMENDATION_COLUMN_DEFS]
    want = apply_view(
        every,
        GridView.from_browser(None, None, [{"colId": "monthly_savings", "sort": "asc"}], fields),
        fields,
    )
    assert got["rowCount"] == len(every) > 5
    assert [r["row_id"] for r in got["rowData"]] == [r["row_id"] for r in want[:5]]

    held = cons.held_back_view(rm, ALL, BASE, None)[2]
    body = {
        "output": "..cons-held-grid.getRowsResponse...cons-held-alert.children..",
        "outputs": [
            {"id": "cons-held-grid", "property": "getRowsResponse"},
            {"id": "cons-held-alert", "property": "children"},
        ],
        "inputs": [
            {"id": "cons-held-grid", "property": "getRowsRequest", "value": {"startRow": 0, "endRow": 1000}}
        ],
        "changedPropIds": ["cons-held-grid.getRowsRequest"],
        "state": [
            {"id": "shell-filters", "property": "data", "value": ALL},
            {"id": "whatif-state", "property": "data", "value": BASE},
            {"id": "cons-held-category", "property": "value", "value": None},
        ],
    }
    got = _post(client, body)["cons-held-grid"]["getRowsResponse"]
    assert got["rowCount"] == len(held) and [r["server_id"] for r in got["rowData"]] == [
        r["server_id"] for r in held
    ]
