"""Utilization risk page and the shared what-if plumbing, called directly (no browser)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dash import Patch, no_update

from app import ids
from app.filters import FilterState
from app.readmodel import ReadModel, ReadModelError
from app.whatif import (
    GROWTH_RANGE,
    QUERY_KEYS,
    ScenarioState,
    base_policy,
    scenario_view,
    subset_inputs,
)
from callbacks import risk
from callbacks import whatif as cw
from forecasting.settings import Settings
from forecasting.sources import open_store
from forecasting.whatif import Scenario
from tests.plan_fixture import make_plan_store

ALL = FilterState().to_data()
MARKETS = FilterState(business_unit=("Markets",)).to_data()
BASE = ScenarioState().to_data()


def _json(component) -> str:
    return json.dumps(component, default=lambda o: o.to_plotly_json(), ensure_ascii=False)


# --------------------------------------------------------------------------- scenario state


def test_scenario_state_round_trips_through_the_url():
    state = ScenarioState.of(3, {"cpu_p95": "80", "mem_p95": 85.04}, "30")
    assert state.to_query() == "growth=3&cpu_thr=80&mem_thr=85&headroom=30"
    assert ScenarioState.from_query("?" + state.to_query()) == state
    assert (
        ScenarioState.from_query({"growth": "3", "cpu_thr": "80", "mem_thr": "85", "headroom": "30"}) == state
    )
    assert ScenarioState.from_data(state.to_data()) == state
    assert state.to_scenario() == Scenario(
        growth_pct_per_month=3.0, thresholds={"cpu_p95": 80.0, "mem_p95": 85.0}, headroom=0.3
    )
    assert not state.is_base and ScenarioState().is_base and ScenarioState().to_query() == ""
    assert set(state.to_data()["keys"]) == set(QUERY_KEYS)


@pytest.mark.parametrize(
    "query",
    [
        "growth=abc&cpu_thr=<script>&headroom=-5",
        "growth=nan&cpu_thr=inf&mem_thr=0&disk_thr=101&headroom=99",
        f"growth={GROWTH_RANGE[1] + 1}&net_in_thr=50&bu=Retail",
        "growth=" + "1" * 40,
        "",
    ],
)
def test_hostile_or_out_of_range_url_values_are_ignored(query):
    assert ScenarioState.from_query(query) == ScenarioState()


def test_scenario_from_browser_data_is_revalidated():
    assert ScenarioState.from_data({"growth": 1e9, "thresholds": ["x"], "headroom": True}) == ScenarioState()
    assert ScenarioState.from_data("junk") == ScenarioState()
    assert ScenarioState.from_data({"thresholds": {"cpu_p95": 70, "evil": 1}}).thresholds == (
        ("cpu_p95", 70.0),
    )


def test_scenario_describes_itself_against_the_run(plan):
    base = base_policy(plan, Settings())
    lines = ScenarioState.of(2.5, {"cpu_p95": 70}, 35).describe(base)
    assert lines[0].startswith("Growth: +2.5 % per month")
    assert lines[1] == f"CPU p95 threshold: 70 % (run: {base.thresholds['cpu_p95']:g} %)"
    assert lines[2] == f"Headroom: 35 % (run: {base.headroom * 100:g} %)"
    assert ScenarioState().describe(base) == ["Scenario: as planned (the batch run's settings)"]


# --------------------------------------------------------------------------- controls


def test_controls_treat_the_runs_own_values_as_unchanged(readmodel, plan):
    base = base_policy(plan, readmodel.settings)
    state = cw.scenario_from_controls(
        readmodel, 0, {"cpu_p95": base.thresholds["cpu_p95"], "mem_p95": None}, base.headroom * 100
    )
    assert state.is_base
    data, summary, *controls = cw.controls_view(
        readmodel, ids.WHATIF_GROWTH, 2, {"cpu_p95": 70, "mem_p95": None, "disk_p95": ""}, 20, BASE
    )
    assert ScenarioState.from_data(data) == ScenarioState.of(2, {"cpu_p95": 70})
    assert summary.startswith("Scenario: growth +2 %/month, CPU threshold 70 %")
    assert all(c is no_update for c in controls)


def test_reset_puts_the_controls_back_to_the_plan(readmodel, plan):
    data, summary, growth, *rest = cw.controls_view(
        readmodel, ids.WHATIF_RESET, 5, {"cpu_p95": 60}, 40, ScenarioState(growth=5).to_data()
    )
    n = len(ids.WHATIF_THRESHOLDS)
    thresholds, headroom, (propose, *numbers) = rest[:n], rest[n], rest[n + 1 :]
    assert ScenarioState.from_data(data).is_base and summary.startswith("As planned")
    assert growth == 0 and thresholds == [None, None, None]
    assert headroom == pytest.approx(base_policy(plan, readmodel.settings).headroom * 100)
    # the policy knobs go back to the run's: its choice to propose, empty boxes (run's placeholders)
    assert propose == base_policy(plan, readmodel.settings).policy.propose
    assert numbers == [None] * (len(ids.WHATIF_POLICY) - 1)


def test_first_call_does_not_rewrite_the_store_seeded_from_the_url(readmodel):
    seeded = ScenarioState(growth=2).to_data()
    data, summary, *_ = cw.controls_view(readmodel, None, 2, {}, None, seeded)
    assert data is no_update and "growth +2" in summary


def test_quick_search_is_a_bounded_patch():
    patch = cw.quick_search_patch("x" * 500)
    assert isinstance(patch, Patch)
    ops = patch.to_plotly_json()["operations"]
    assert ops[0]["location"] == ["quickFilterText"] and len(ops[0]["params"]["value"]) == cw.MAX_SEARCH_CHARS
    assert cw.quick_search_patch(None).to_plotly_json()["operations"][0]["params"]["value"] == ""


# --------------------------------------------------------------------------- risk view


def test_risk_grid_lists_the_plans_at_risk_rows_worst_first(readmodel, plan):
    rows, kpis, empty, note = risk.risk_view(readmodel, ALL, BASE)
    table = plan.table("risk")
    expected = table[table["severity"].astype(str) != "none"]
    assert len(rows) == len(expected) > 0 and empty is None
    assert {r["row_id"] for r in rows} == set(expected["server_id"] + "/" + expected["metric"].astype(str))
    ranks = [["critical", "high", "medium", "low"].index(r["severity"]) for r in rows]
    assert ranks == sorted(ranks)
    first = rows[0]
    for field in ("current_p95", "threshold", "probability", "score", "breach_expected", "act_by", "reason"):
        assert field in first
    assert first["unit"] in ("%", "Mbps") and 0 <= first["probability"] <= 100
    assert f"{len(rows):,} rows at risk" in note
    assert f'"{len(rows):,}"' in _json(kpis)  # the at-risk count card


def test_business_unit_filter_narrows_the_risk_grid(readmodel, plan):
    rows_all, *_ = risk.risk_view(readmodel, ALL, BASE)
    rows, _, _, _ = risk.risk_view(readmodel, MARKETS, BASE)
    assert 0 < len(rows) < len(rows_all)
    assert {r["business_unit"] for r in rows} == {"Markets"}


def test_growth_raises_the_risk_count_and_shows_the_change(readmodel):
    low, *_ = risk.risk_view(readmodel, ALL, ScenarioState(growth=1).to_data())
    high, kpis, _, note = risk.risk_view(readmodel, ALL, ScenarioState(growth=8).to_data())
    assert len(high) > len(low)
    assert "vs plan" in _json(kpis) and "what-if computed" in note


def test_a_lower_threshold_raises_the_risk_count(readmodel):
    low, *_ = risk.risk_view(readmodel, ALL, ScenarioState(growth=0.5).to_data())
    high, *_ = risk.risk_view(readmodel, ALL, ScenarioState.of(0.5, {"cpu_p95": 40}).to_data())
    assert len(high) > len(low)


def test_scenario_results_are_cached_per_run_and_scenario(readmodel, plan):
    state = ScenarioState(growth=4)
    first = scenario_view(readmodel, plan, state)
    assert first.seconds > 0
    assert scenario_view(readmodel, plan, state) is first
    base = scenario_view(readmodel, plan, ScenarioState())
    assert base.seconds == 0 and base.risk.equals(plan.table("risk"))


def test_scenario_results_of_two_stores_with_the_same_run_id_never_mix(tmp_path: Path):
    views = []
    for n in (30, 45):
        root = tmp_path / f"fleet-{n}"
        rm = ReadModel(make_plan_store(root, n, seed=7, days=120), Settings(data=str(root)))
        plan = rm.snapshot().plan
        views.append((plan, scenario_view(rm, plan, ScenarioState(growth=2))))
    (p1, v1), (p2, v2) = views
    assert p1.run_id == p2.run_id
    assert v1.risk["server_id"].nunique() == 30 and v2.risk["server_id"].nunique() == 45


def test_no_match_and_no_run_states(readmodel, plan, tmp_path: Path):
    none = FilterState(business_unit=("No such unit",)).to_data()
    rows, kpis, empty, _ = risk.risk_view(readmodel, none, BASE)
    assert rows == [] and kpis is None and "No servers match these filters" in _json(empty)
    root = tmp_path / "empty"
    empty_rm = ReadModel(open_store(str(root)), Settings(data=str(root)))
    rows, kpis, empty, _ = risk.risk_view(empty_rm, ALL, BASE)
    assert rows == [] and "python -m forecasting run" in _json(empty)


def test_a_run_without_a_risk_table_says_so(tmp_path: Path):
    root = tmp_path / "norisk"
    store = make_plan_store(root, 40, seed=3, days=120, omit=("risk",))
    rm = ReadModel(store, Settings(data=str(root)))
    rows, _, empty, _ = risk.risk_view(rm, ALL, BASE)
    assert rows == [] and "Breach risk is not in this run" in _json(empty)


def test_what_if_without_forecasts_is_a_clear_error(tmp_path: Path):
    root = tmp_path / "nofc"
    store = make_plan_store(root, 40, seed=4, days=120, omit=("forecasts",))
    rm = ReadModel(store, Settings(data=str(root)))
    plan = rm.snapshot().plan
    with pytest.raises(ReadModelError, match="has no forecasts"):
        rm.analytics_inputs(plan)


def test_analytics_inputs_are_prepared_once_per_run_and_follow_the_plans_inventory(readmodel, plan):
    inputs = readmodel.analytics_inputs(plan)
    assert readmodel.analytics_inputs(plan) is inputs
    assert inputs.inventory["server_id"].tolist() == plan.inventory["server_id"].tolist()
    sub = subset_inputs(inputs, np.array([3, 1]))
    assert sub.inventory["server_id"].tolist() == plan.inventory["server_id"].iloc[[3, 1]].tolist()
    assert sub.quantiles.shape[0] == 2 and np.array_equal(
        sub.quantiles[1], inputs.quantiles[1], equal_nan=True
    )


# --------------------------------------------------------------------------- export


def _download_text(out: dict) -> str:
    raw = base64.b64decode(out["content"]) if out.get("base64") else out["content"].encode()
    return raw.decode("utf-8").lstrip("\ufeff")


def test_csv_export_recomputes_the_rows_on_the_server_and_reapplies_the_grid_view(readmodel):
    scenario = ScenarioState(growth=2).to_data()
    rows, *_ = risk.risk_view(readmodel, MARKETS, scenario)
    out = cw.export_download(
        readmodel,
        "csv",
        risk.export_rows,
        risk.EXPORT_COLUMNS,
        title="Utilization risk",
        stem="utilization-risk",
        filters_data=MARKETS,
        scenario_data=scenario,
        search="  cpu ",
        column_state=[
            {"colId": "score", "sort": "asc", "sortIndex": 0},
            {"colId": "server_id", "sort": None},
            {"colId": "<script>", "sort": "asc"},  # unknown: ignored
        ],
        grid_fields=[c["field"] for c in risk.RISK_COLUMN_DEFS],
    )
    assert out["filename"].startswith("utilization-risk-") and out["filename"].endswith(".csv")
    text = _download_text(out)
    comments = [line for line in text.splitlines() if line.startswith("#")]
    assert '# Filters,"Business unit: Markets"' in comments
    assert any("Growth: +2 % per month" in c for c in comments)
    assert any(c.startswith("# Grid view,") and "quick search 'cpu'" in c for c in comments)
    body = pd.read_csv(io.StringIO(text), comment="#")
    expected = sorted((r for r in rows if r["metric"] == "cpu_p95"), key=lambda r: r["score"])
    assert 0 < len(expected) < len(rows)
    assert body["Server"].tolist() == [r["server_id"] for r in expected]
    assert body["Score"].tolist() == [r["score"] for r in expected]
    assert pd.api.types.is_numeric_dtype(body["Score"])


def test_excel_export_has_a_scenario_sheet_and_applies_column_filters(readmodel):
    import openpyxl

    rows, *_ = risk.risk_view(readmodel, ALL, BASE)
    high = [r for r in rows if r["severity"] == "high" and r["probability"] >= 50]
    assert 0 < len(high) < len(rows)
    out = cw.export_download(
        readmodel,
        "xlsx",
        risk.export_rows,
        risk.EXPORT_COLUMNS,
        title="Utilization risk",
        stem="utilization-risk",
        filters_data=ALL,
        scenario_data=BASE,
        filter_model={
            "severity": {"filterType": "text", "type": "equals", "filter": "HIGH"},
            "probability": {"filterType": "number", "type": "greaterThanOrEqual", "filter": 50},
            "hostname; DROP": {"filterType": "text", "type": "equals", "filter": "x"},  # unknown column
        },
        grid_fields=[c["field"] for c in risk.RISK_COLUMN_DEFS],
    )
    book = openpyxl.load_workbook(io.BytesIO(base64.b64decode(out["content"])))
    assert book.sheetnames == ["Utilization risk", "Scenario"]
    assert book["Utilization risk"].max_row == len(high) + 1
    meta = {r[0].value: r[1].value for r in book["Scenario"].iter_rows(min_row=2)}
    assert meta["Filters"] == "All servers" and meta["Scenario"].startswith("Scenario: as planned")
    assert "severity equals" in meta["Grid view"] and "probability greaterThanOrEqual" in meta["Grid view"]


def test_export_without_a_run_sends_nothing(tmp_path: Path):
    root = tmp_path / "empty"
    rm = ReadModel(open_store(str(root)), Settings(data=str(root)))
    assert (
        cw.export_download(
            rm,
            "csv",
            risk.export_rows,
            risk.EXPORT_COLUMNS,
            title="t",
            stem="s",
            filters_data=ALL,
            scenario_data=BASE,
        )
        is None
    )


def test_page_layouts_build_with_the_scenario_from_the_url(fixture_app):
    from app.pages import consolidation as cons_page
    from app.pages import risk as risk_page

    with fixture_app.server.test_request_context("/risk"):
        page = _json(risk_page.layout(growth="3", cpu_thr="70", headroom="<x>"))
        assert '"growth": 3.0' in page and "risk-grid" in page and "whatif-growth" in page
        page = _json(cons_page.layout())
        assert "cons-plan-grid" in page and "cons-host-chart" in page


def test_risk_page_and_callbacks_are_registered(fixture_app):
    client = fixture_app.server.test_client()
    for path in ("/risk", "/risk?growth=3&cpu_thr=70&bu=Markets", "/consolidation?headroom=abc"):
        assert client.get(path).status_code == 200
    outputs = set(fixture_app.callback_map)
    assert any(o.startswith("..risk-grid.rowData") for o in outputs)
    assert "risk-download.data" in outputs and "shell-scenario.data" in outputs
