"""The app factory, pages, health endpoint, and every callback called directly (no browser)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import dash
import pandas as pd
import plotly.graph_objects as go
import pytest
from dash import Patch, no_update
from dash.exceptions import PreventUpdate

from app import HEALTH_PATH, get_context, ids
from app.filters import FilterState
from app.readmodel import ReadModel
from callbacks import overview as ov
from callbacks import server as srv
from callbacks import shell
from components.layout import metric_label
from forecasting.settings import Settings
from forecasting.sources import open_store
from tests.plan_fixture import make_plan_store

MARKETS = FilterState(business_unit=("Markets",)).to_data()
ALL = FilterState().to_data()


def _json(component) -> str:
    return json.dumps(component, default=lambda o: o.to_plotly_json(), ensure_ascii=False)


@pytest.fixture
def empty_rm(tmp_path: Path) -> ReadModel:
    root = tmp_path / "empty"
    return ReadModel(open_store(str(root)), Settings(data=str(root)))


# --------------------------------------------------------------------------- factory, pages, endpoints


def test_app_registers_pages_callbacks_and_serves_every_page(fixture_app, plan):
    paths = {p["path"] for p in dash.page_registry.values()}
    assert {"/", "/servers", "/404"} <= paths
    templates = {p["path_template"] for p in dash.page_registry.values()}
    assert "/servers/<server_id>" in templates
    outputs = set(fixture_app.callback_map)
    for needed in (
        "ov-heatmap.figure",
        "srv-picker.options",
        "shell-url.href",
        '{"index":["ALL"],"type":"srv-graph"}.figure',
    ):
        assert needed in outputs
    client = fixture_app.server.test_client()
    for path in ("/", "/servers", "/servers/srv-00031", "/servers/whatever", "/no/such/page"):
        page = client.get(path)
        assert page.status_code == 200 and b"_dash-renderer" in page.data
    layout = client.get("/_dash-layout").get_json()
    text = json.dumps(layout)
    assert f"run {plan.run_id}" in text and "Markets" in text  # data as of + filter options
    for asset in (
        "/assets/00-bootstrap-5.3.8.min.css",
        "/assets/10-app.css",
        "/assets/app.js",
        "/assets/favicon.ico",
        "/assets/vendor/plotly-cartesian-4.1.1.min.js",
    ):
        assert client.get(asset).status_code == 200
    # charts come from plotly.js's cartesian bundle, of the version plotly.py writes figures for;
    # the full bundle (3× the size) is neither loaded nor preloaded
    from plotly.offline import get_plotlyjs_version

    index = client.get("/").data.decode()
    assert "vendor/plotly-cartesian-4.1.1.min.js" in index and "plotly.min.js" not in index
    assert get_plotlyjs_version() == "4.1.1"


def test_health_endpoint_says_only_that_the_process_answers(fixture_app, make_app, tmp_path):
    """Liveness carries no data state (that is /readyz, tests/test_webtier.py): an empty store
    answers the same."""
    assert fixture_app.server.test_client().get(HEALTH_PATH).get_json() == {"status": "ok"}
    root = tmp_path / "nothing"
    empty = make_app(open_store(str(root)), root).server.test_client()
    assert empty.get(HEALTH_PATH).status_code == 200 and empty.get(HEALTH_PATH).get_json() == {"status": "ok"}


def test_health_never_waits_on_the_store(fixture_app, monkeypatch):
    rm = get_context(fixture_app).readmodel

    def hang(*_a, **_k):
        raise AssertionError("the health endpoint must not call the store")

    monkeypatch.setattr(rm.store, "latest_run_id", hang)
    # the very first request included (Dash's first-request setup renders the shell, which would)
    assert fixture_app.server.test_client().get(HEALTH_PATH).get_json() == {"status": "ok"}


def test_a_failing_callback_shows_an_alert_not_a_traceback(fixture_app, monkeypatch):
    rm = get_context(fixture_app).readmodel
    plan = rm.plan()

    def boom(*_a, **_k):
        raise RuntimeError("secret internal detail at /srv/app/x.py")

    monkeypatch.setattr(type(plan), "kpis", boom)
    payload = {
        "output": "..ov-kpis.children...ov-empty.children..",
        "outputs": [{"id": "ov-kpis", "property": "children"}, {"id": "ov-empty", "property": "children"}],
        "inputs": [{"id": ids.FILTERS, "property": "data", "value": ALL}],
        "changedPropIds": [f"{ids.FILTERS}.data"],
        "state": [],
    }
    resp = fixture_app.server.test_client().post("/_dash-update-component", json=payload)
    assert resp.status_code == 200
    body = resp.get_json()
    alert = body["sideUpdate"][ids.ERROR_ALERT]
    assert alert["is_open"] is True
    text = json.dumps(alert)
    assert "secret internal detail" not in text and "Traceback" not in text and "RuntimeError" not in text
    assert re.search(r"\(reference [0-9a-f]{8}\)", text)


# --------------------------------------------------------------------------- shell


def test_sync_filters_from_the_url_drops_unknown_values_and_says_so(readmodel, plan):
    out = shell.sync_filters(readmodel, "url", "?bu=Markets&bu=<b>x</b>&env=prod", {}, None)
    *dropdowns, data, count, notice, notice_open = out
    assert dropdowns == [["Markets"], [], ["prod"], [], []]
    assert data["query"] == "bu=Markets&env=prod"
    n = int(plan.mask(FilterState(business_unit=("Markets",), environment=("prod",))).sum())
    assert count == f"Showing {n:,} of {plan.n_servers:,} servers"
    assert notice_open and "“<b>x</b>”" in _json(notice)


def test_sync_filters_from_dropdowns_and_clear(readmodel, plan):
    values = {"business_unit": ["Markets", "Atlantis"], "environment": None}
    *dropdowns, data, count, notice, notice_open = shell.sync_filters(
        readmodel, "dropdown", None, values, None
    )
    assert dropdowns == [no_update] * 5 and data["filters"]["business_unit"] == ["Markets"]
    assert notice is no_update and notice_open is False
    # unchanged state: the store is not rewritten (no needless page callbacks)
    assert shell.sync_filters(readmodel, "dropdown", None, values, data)[5] is no_update
    *dropdowns, data, count, _, _ = shell.sync_filters(readmodel, "clear", "?bu=Markets", values, data)
    assert dropdowns == [[]] * 5 and data["query"] == "" and count == f"All {plan.n_servers:,} servers"


def test_sync_filters_without_a_run(empty_rm):
    *_, data, count, _notice, _open = shell.sync_filters(empty_rm, "url", "?bu=Markets", {}, None)
    assert data["query"] == "" and count == ""


def test_status_view(readmodel, plan):
    as_of, banner, is_open = shell.status_view(readmodel)
    assert (
        as_of == f"run {plan.run_id} · {plan.created_at:%Y-%m-%d %H:%M} UTC" and not is_open and banner == ""
    )


# --------------------------------------------------------------------------- overview


def test_kpis_view_filters_and_empty_states(readmodel, plan, empty_rm):
    cards, empty = ov.kpis_view(readmodel, MARKETS)
    assert empty is None
    k = plan.kpis(FilterState(business_unit=("Markets",)))
    assert f'"children": "{k.servers}"' in _json(cards)
    cards, empty = ov.kpis_view(readmodel, FilterState(region=("atlantis",)).to_data())
    assert "No servers match these filters" in _json(empty)
    cards, empty = ov.kpis_view(empty_rm, ALL)
    assert cards is None and "python -m forecasting run" in _json(empty)


def test_overview_figures(readmodel, empty_rm):
    heat = go.Figure(ov.heatmap_view(readmodel, MARKETS))  # validates against plotly's schema
    assert list(heat.data[0].y) == ["Markets"]
    dist = go.Figure(ov.distribution_view(readmodel, ALL, "mem_p95"))
    assert "Memory p95" in dist.layout.title.text
    unknown = go.Figure(ov.distribution_view(readmodel, ALL, "<script>"))
    assert "CPU p95" in unknown.layout.title.text  # an unknown metric falls back to the default
    trend = go.Figure(ov.trend_view(readmodel, MARKETS, "cpu_p95"))
    assert {t.legendgroup for t in trend.data} == {"Markets"}
    none = FilterState(region=("atlantis",)).to_data()
    for fig in (ov.heatmap_view(readmodel, none), ov.trend_view(readmodel, none, "cpu_p95")):
        assert go.Figure(fig).layout.annotations[0].text == "No servers match these filters"
    no_run = go.Figure(ov.heatmap_view(empty_rm, ALL))
    assert "python -m forecasting run" in no_run.layout.annotations[0].text


def test_top_risks_view_links_servers_under_the_filters(readmodel, plan, tmp_path):
    grid, note = ov.top_risks_view(readmodel, MARKETS)
    rows = grid.rowData
    assert rows and {r["business_unit"] for r in rows} == {"Markets"}
    assert grid.columnDefs[0]["cellRenderer"] == "ServerLink" and grid.id == ids.OV_TOP_RISKS_GRID
    assert note.startswith(f"{len(rows)} of ")
    store = make_plan_store(tmp_path, 10, seed=3, omit=("risk",))
    no_risk = ReadModel(store, Settings(data=str(tmp_path)))
    content, _ = ov.top_risks_view(no_risk, ALL)
    assert "Breach risk is not in this run" in _json(content)


# --------------------------------------------------------------------------- server page


def test_picker_searches_ids_and_hostnames_under_the_filters(readmodel, plan):
    opts = srv.picker_options(readmodel, "srv-0004", None, ALL)
    assert [o["value"] for o in opts] == [f"srv-0004{i}" for i in range(10)]
    assert opts[0]["label"].startswith("srv-00040 · ")
    markets = srv.picker_options(readmodel, "", "srv-00031", MARKETS)
    assert "srv-00031" in {o["value"] for o in markets}
    assert all(o["label"].endswith(" · Markets") for o in markets)
    # the current server stays an option even when the filters exclude it
    payments = srv.picker_options(
        readmodel, "", "srv-00031", FilterState(business_unit=("Payments",)).to_data()
    )
    assert payments[0]["value"] == "srv-00031"
    assert len(srv.picker_options(readmodel, "", None, ALL)) == srv.PICKER_LIMIT


def test_server_view_known_unknown_and_missing(readmodel, plan, empty_rm):
    message, facts, accuracy, risk, charts, style = srv.server_view(readmodel, "srv-00031")
    assert message is None and style == {}
    assert plan.server("srv-00031")["hostname"] in _json(facts)
    assert len(charts.children) == len(plan.metrics)
    for col in charts.children:
        go.Figure(col.children.children.children.figure)  # each chart is a valid figure
    body = risk.children[1].children  # a plain table: one row per forecast metric
    assert len(body) == len(plan.metrics)
    text = _json(risk)
    assert all(metric_label(m) in text for m in plan.metrics) and "sev-badge" in text
    assert "MASE" in _json(accuracy)

    message, *rest, style = srv.server_view(readmodel, "<script>alert(1)</script>")
    assert style == {"display": "none"} and rest == [None] * 4
    assert "There is no server “<script>alert(1)</script>”" in _json(message)
    long = srv.server_view(readmodel, "x" * 500)[0]
    assert "x" * 59 + "…" in _json(long)
    assert "Choose a server" in _json(srv.server_view(readmodel, None)[0])
    assert "python -m forecasting run" in _json(srv.server_view(empty_rm, "srv-00031")[0])


def test_accuracy_verdicts():
    assert srv.trust(0.6, 0.8)[0] == "good"
    assert srv.trust(0.6, 0.4) == ("fair", "fair: beats the naive baseline, but the bands are off")
    assert srv.trust(0.95, 0.8)[0] == "fair"
    assert srv.trust(1.3, 0.8)[0] == "poor"
    assert srv.trust(float("nan"), None)[0] == "unknown"


def test_reforecast_job_and_patches(readmodel, plan):
    progress = []
    data, status = srv.reforecast_job(readmodel, "srv-00031", "naive", progress.append)
    assert data["model"] == "naive" and data["server_id"] == "srv-00031"
    assert "Seasonal naive re-forecast" in status
    assert progress[-1][0] == 100 and len(progress) == len(plan.metrics)
    assert len(data["forecast"]["timestamp"]) == len(plan.metrics) * plan.horizon
    json.dumps(data)
    patches = srv.patches_view(readmodel, data, "srv-00031", plan.metrics)
    assert len(patches) == len(plan.metrics) and all(isinstance(p, Patch) for p in patches)
    ops = patches[0].to_plotly_json()["operations"]
    assert any(op["params"].get("value") == "forecast (Seasonal naive)" for op in ops)
    # back to the plan
    plan_data, _ = srv.reforecast_job(readmodel, "srv-00031", "plan")
    assert plan_data == {"server_id": "srv-00031", "model": "plan"}
    back = srv.patches_view(readmodel, plan_data, "srv-00031", ["cpu_p95"])[0].to_plotly_json()["operations"]
    assert any(str(op["params"].get("value", "")).startswith("forecast (plan") for op in back)
    # stale results for another server, or junk, change nothing
    with pytest.raises(PreventUpdate):
        srv.patches_view(readmodel, data, "srv-00042", plan.metrics)
    with pytest.raises(PreventUpdate):
        srv.patches_view(readmodel, {"server_id": "srv-00031", "model": "evil"}, "srv-00031", plan.metrics)
    assert srv.reforecast_job(readmodel, "srv-99999", "naive") == (None, "")


def test_a_model_failure_reads_as_a_message(readmodel, monkeypatch):
    def fail(*_a, **_k):
        raise ValueError("series too short for Prophet")

    monkeypatch.setattr(srv, "reforecast", fail)
    data, alert = srv.reforecast_job(readmodel, "srv-00031", "prophet")
    text = _json(alert)
    assert data is None and "Prophet could not forecast this server (reference " in text
    assert "series too short" not in text


def test_charts_fall_back_to_path_crossings_without_a_risk_table(tmp_path):
    store = make_plan_store(tmp_path, 10, seed=4, omit=("risk", "backtest"))
    rm = ReadModel(store, Settings(data=str(tmp_path)))
    plan = rm.plan()
    _message, _facts, accuracy, risk, charts, _style = srv.server_view(rm, "srv-00001")
    assert "Breach risk is not in this run" in _json(risk)
    assert "Backtest accuracy is not in this run" in _json(accuracy)
    assert len(charts.children) == len(plan.metrics)
    fc = rm.server_forecast(plan, "srv-00001")
    assert srv._plan_breaches(plan, "srv-00001", "cpu_p95", fc[fc["metric"] == "cpu_p95"]).keys() == {
        "optimistic",
        "expected",
        "pessimistic",
    }


def test_page_layouts_render_without_data_access():
    from app.pages import not_found, overview, server

    assert ids.OV_KPIS in _json(overview.layout())
    sid = server.layout(server_id="srv%2000042")
    assert '"data": "srv 00042"' in _json(sid)  # path segments arrive percent-encoded
    assert server.title("srv-00042") == "srv-00042 · Server forecast"
    assert server.title() == "Server forecast · Capacity Forecaster"
    assert ids.NF_HOME in _json(not_found.layout())


def test_server_facts_name_the_placement_rules(readmodel, plan):
    inv = readmodel.plan().inventory
    standby = inv[inv["dr_role"] == "standby"].iloc[0]
    _, facts, *_ = srv.server_view(readmodel, standby["server_id"])
    text = _json(facts)
    assert f"DR standby (partner {standby['dr_partner_id']})" in text
    assert srv.placement_text({"pinned": True, "anti_affinity_group": "aag-0001"}) == (
        "anti-affinity group aag-0001: never shares a host with its members · pinned: never moved or resized"
    )
    assert srv.placement_text({"dr_role": pd.NA, "pinned": pd.NA}) == ""
