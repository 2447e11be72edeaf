"""The policy in the app: what-if policy knobs (URL, controls, engine) and the held-back section."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import plotly.graph_objects as go
import pytest
from dash import no_update

from app import ids
from app.filters import FilterState
from app.readmodel import ReadModel
from app.whatif import (
    MIN_SAVING_PCT_PARAM,
    MIN_SAVING_USD_PARAM,
    POLICY_PARAMS,
    PROPOSE_PARAM,
    QUERY_KEYS,
    RISK_GUARD_PARAM,
    SIZING_PCT_PARAM,
    ScenarioState,
    base_policy,
    run_policy,
    scenario_view,
)
from callbacks import consolidation as cons
from callbacks import whatif as cw
from forecasting.policy import HELD_BACK, Policy
from forecasting.settings import Settings
from forecasting.sources import open_store
from forecasting.whatif import Scenario
from tests.plan_fixture import make_plan_store

ALL = FilterState().to_data()
MARKETS = FilterState(business_unit=("Markets",)).to_data()
BASE = ScenarioState().to_data()


def _json(component) -> str:
    return json.dumps(component, default=lambda o: o.to_plotly_json(), ensure_ascii=False)


# --------------------------------------------------------------------------- URL parsing


@pytest.mark.parametrize(
    ("query", "field", "value"),
    [
        ("propose=idle", "propose", "idle"),
        ("propose=overprovisioned", "propose", "overprovisioned"),
        ("propose=%20ALL%20", "propose", "all"),
        ("min_saving=15", "min_saving_pct", 15.0),
        ("min_saving=0", "min_saving_pct", 0.0),
        ("min_saving=95", "min_saving_pct", 95.0),
        ("min_saving_usd=50", "min_saving_usd", 50.0),
        ("min_saving_usd=10000", "min_saving_usd", 10000.0),
        ("risk_guard=35", "risk_guard", 35.0),
        ("risk_guard=1", "risk_guard", 1.0),
        ("sizing_pct=95", "sizing_pct", 95.0),
        ("sizing_pct=50", "sizing_pct", 50.0),
        ("sizing_pct=100", "sizing_pct", 100.0),
    ],
)
def test_each_policy_knob_parses_from_the_url(query, field, value):
    state = ScenarioState.from_query("?" + query)
    assert getattr(state, field) == value
    assert not state.is_base and state.has_policy
    assert ScenarioState.from_query("?" + state.to_query()) == state  # round trip
    assert ScenarioState.from_data(state.to_data()) == state


@pytest.mark.parametrize(
    "query",
    [
        "propose=everything",
        "propose=<script>alert(1)</script>",
        "propose=" + "idle" * 20,
        "propose=",
        "min_saving=-1",
        "min_saving=96",
        "min_saving=nan",
        "min_saving=1e400",
        "min_saving_usd=-5",
        "min_saving_usd=10001",
        "min_saving_usd=$20",
        "risk_guard=0",
        "risk_guard=101",
        "risk_guard=inf",
        "risk_guard=" + "1" * 40,
        "sizing_pct=49",
        "sizing_pct=101",
        "sizing_pct=p99",
        "min_saving=1&min_saving=abc",  # the last value wins and is dropped
        "policy=idle&propose_x=all",
    ],
)
def test_hostile_or_out_of_range_policy_values_are_dropped(query):
    assert ScenarioState.from_query(query) == ScenarioState()


def test_policy_keys_travel_with_the_other_scenario_keys():
    state = ScenarioState.from_query(
        "growth=2&propose=all&min_saving=20&min_saving_usd=40&risk_guard=30&sizing_pct=95"
    )
    assert (
        state.to_query() == "growth=2&propose=all&min_saving=20&min_saving_usd=40&risk_guard=30&sizing_pct=95"
    )
    assert set(POLICY_PARAMS) <= set(QUERY_KEYS) == set(state.to_data()["keys"])
    assert ScenarioState.from_data({"policy": {"propose": "nope", "risk_guard": True}}) == ScenarioState()
    assert ScenarioState.from_data({"policy": ["idle"]}) == ScenarioState()


def test_the_scenario_policy_is_built_over_the_runs_policy():
    from app.whatif import BasePolicy

    run = Policy(min_saving_usd=35.0, critical_per_host=2)
    base = BasePolicy({}, {}, {}, 0.2, 10.0, policy=run)
    state = ScenarioState.from_query("propose=idle&min_saving=25&risk_guard=40&sizing_pct=95")
    assert state.to_scenario(base) == Scenario(
        policy=Policy(
            propose="idle",
            min_saving_fraction=0.25,
            min_saving_usd=35.0,  # the run's, not the default's
            risk_probability=0.4,
            sizing_percentile=95.0,
            critical_per_host=2,
        )
    )
    assert ScenarioState(growth=1).to_scenario(base).policy is None  # no knob: the base policy applies
    assert base.kwargs()["policy"] is run


def test_run_policy_is_read_tolerantly_from_the_manifest():
    assert run_policy(None) == Policy()
    assert run_policy("junk") == Policy()
    got = run_policy(
        {
            "propose": "nonsense",
            "risk_probability": "x",
            "min_saving_usd": 50,  # an int in JSON
            "sizing_percentile": 200,
            "lookback_days": 60,
            "from_the_future": 1,
        }
    )
    assert got == Policy(min_saving_usd=50.0, lookback_days=60)


def test_scenario_describes_the_policy_against_the_run(plan):
    base = base_policy(plan, Settings())
    lines = ScenarioState.from_query(
        "propose=idle&min_saving=25&min_saving_usd=40&risk_guard=30&sizing_pct=95"
    ).describe(base)
    assert lines == [
        "What to propose: Idle servers only (run: Idle and over-provisioned (default))",
        "Minimum saving: 25 % of the server's cost (run: 10 %)",
        "Minimum saving: $40 per month (run: $20)",
        "Risk guard: never shrink a server with P(breach) ≥ 30 % (run: 20 %)",
        "Sizing percentile: p95 of the period p95s (run: p99)",
    ]


# --------------------------------------------------------------------------- controls


def test_controls_send_policy_knobs_and_drop_the_runs_own_values(readmodel):
    run = {
        PROPOSE_PARAM: "overprovisioned",
        MIN_SAVING_PCT_PARAM: 10,
        MIN_SAVING_USD_PARAM: 20,
        RISK_GUARD_PARAM: 20,
        SIZING_PCT_PARAM: 99,
    }
    assert cw.scenario_from_controls(readmodel, 0, {}, None, run).is_base
    data, summary, *controls = cw.controls_view(
        readmodel,
        ids.WHATIF_PROPOSE,
        0,
        {},
        None,
        BASE,
        {**run, PROPOSE_PARAM: "idle", RISK_GUARD_PARAM: "abc"},
    )
    assert ScenarioState.from_data(data) == ScenarioState(propose="idle")
    assert summary.startswith("Scenario: propose: idle servers only")
    assert all(c is no_update for c in controls)


# --------------------------------------------------------------------------- the engine sees the policy


def _actions(view_rows):
    return {r["action"] for r in view_rows}


def test_propose_idle_leaves_no_right_size_or_consolidate_rows(readmodel, plan):
    base_rows = cons.consolidation_view(readmodel, ALL, BASE)[4]
    assert "right-size" in _actions(base_rows)  # the fixture's plan right-sizes: the test can fail
    idle = cons.consolidation_view(readmodel, ALL, ScenarioState(propose="idle").to_data())
    assert not {"right-size", "consolidate"} & _actions(idle[4])
    assert "decommission" in _actions(idle[4])
    assert idle[6] == []  # no host groups


def test_propose_all_consolidates_and_a_high_minimum_saving_drops_it(readmodel):
    every = cons.consolidation_view(readmodel, ALL, ScenarioState(propose="all").to_data())
    assert "consolidate" in _actions(every[4]) and every[6]
    strict = cons.consolidation_view(
        readmodel, ALL, ScenarioState(propose="all", min_saving_pct=90).to_data()
    )
    assert "consolidate" not in _actions(strict[4]) and strict[6] == []
    assert len([r for r in strict[4] if r["action"] == "right-size"]) < len(
        [r for r in every[4] if r["action"] == "right-size"]
    )


def test_risk_guard_and_sizing_percentile_reach_the_engine(readmodel, plan):
    lax = scenario_view(readmodel, plan, ScenarioState(risk_guard=100), consolidation=True)
    strict = scenario_view(readmodel, plan, ScenarioState(risk_guard=1), consolidation=True)
    held = lambda v: int((v.recommendations["held_back"] == "at risk").sum())  # noqa: E731
    assert held(strict) > held(lax)
    low = scenario_view(readmodel, plan, ScenarioState(sizing_pct=50), consolidation=True)
    saving = lambda v: float(v.recommendations["monthly_savings"].clip(lower=0).sum())  # noqa: E731
    assert saving(low) > saving(scenario_view(readmodel, plan, ScenarioState(), consolidation=True))


def test_policy_knobs_do_not_touch_the_risk_pages_computation(readmodel, plan):
    risk_view = scenario_view(readmodel, plan, ScenarioState(propose="idle", risk_guard=5))
    assert risk_view.seconds == 0  # answered from the published plan: nothing computed
    assert risk_view.risk.equals(plan.table("risk"))
    assert risk_view.state.propose == "idle"  # the state itself is kept (it carries to the other page)


# --------------------------------------------------------------------------- held-back section


def test_held_back_section_counts_and_lists_the_plans_held_servers(readmodel, plan):
    badges, fig, rows, note = cons.held_back_view(readmodel, ALL, BASE, "all")
    recs = plan.table("recommendations")
    expected = recs["held_back"].value_counts()
    expected = expected[expected.index != ""]
    assert len(expected) >= 3  # the fixture holds servers back for several reasons
    assert {r["server_id"] for r in rows} == set(recs.loc[recs["held_back"] != "", "server_id"])
    text = _json(badges)
    for cat, n in expected.items():
        assert f'"{n:,}"' in text and cat in text
    go.Figure(fig)
    bars = fig["data"][0]
    assert dict(zip(bars["y"], bars["x"], strict=True)) == expected.to_dict()
    assert fig["layout"]["xaxis"]["title"]["text"] == "Servers"
    assert fig["layout"]["yaxis"]["title"]["text"] == "Why held back"
    assert f"{len(rows):,} of {expected.sum():,}" in note
    assert all(r["reason"] for r in rows)
    assert cons.held_back_counts(recs) == [(c, int(expected[c])) for c in HELD_BACK if c in expected]


def test_held_back_grid_filters_by_category_and_ignores_hostile_categories(readmodel, plan):
    recs = plan.table("recommendations")
    _, _, rows, note = cons.held_back_view(readmodel, ALL, BASE, "not proposed")
    assert rows and {r["held_back"] for r in rows} == {"not proposed"}
    assert len(rows) == int((recs["held_back"] == "not proposed").sum())
    assert "not proposed:" in note
    every = cons.held_back_view(readmodel, ALL, BASE, "all")[2]
    for bad in ("<script>", None, 5, ["at risk"], "at risk' OR 1=1"):
        assert cons.held_back_view(readmodel, ALL, BASE, bad)[2] == every


def test_held_back_follows_filters_and_the_policy(readmodel):
    _, _, rows, _ = cons.held_back_view(readmodel, MARKETS, BASE, "all")
    assert rows and {r["business_unit"] for r in rows} == {"Markets"}
    base_counts = dict(
        cons.held_back_counts(pd.DataFrame(cons.held_back_view(readmodel, ALL, BASE, "all")[2]))
    )
    idle_rows = cons.held_back_view(readmodel, ALL, ScenarioState(propose="idle").to_data(), "all")[2]
    idle_counts = dict(cons.held_back_counts(pd.DataFrame(idle_rows)))
    assert idle_counts["not proposed"] > base_counts["not proposed"]
    assert "no fit" not in idle_counts  # nothing is offered a shared host


def test_recommendations_grid_and_export_carry_held_back(readmodel, plan):
    rows = cons.consolidation_view(readmodel, ALL, BASE)[4]
    assert rows and all("held_back" in r for r in rows)
    from forecasting.policy import HELD_BACK

    assert {r["held_back"] for r in rows} <= {"", *HELD_BACK}
    assert ("held_back", "Held back") in cons.EXPORT_COLUMNS
    out = cw.export_download(
        readmodel,
        "csv",
        cons.export_rows,
        cons.EXPORT_COLUMNS,
        title="Recommendations",
        stem="recommendations",
        filters_data=ALL,
        scenario_data=ScenarioState(propose="idle", min_saving_usd=50).to_data(),
    )
    import base64

    text = base64.b64decode(out["content"]).decode("utf-8-sig")
    header = next(line for line in text.splitlines() if not line.startswith("#"))
    assert "Held back" in header
    assert '# Scenario,"What to propose: Idle servers only' in text
    assert '# Scenario,"Minimum saving: $50 per month (run: $20)"' in text


# --------------------------------------------------------------------------- plans published before the policy


@pytest.fixture(scope="module")
def old_plan_root(tmp_path_factory) -> Path:
    """A run republished as before today: no held_back column, no config.policy, no held_back counts."""
    root = tmp_path_factory.mktemp("old-plan")
    store = make_plan_store(root, 40, seed=3)
    rid = store.latest_run_id()
    tables = {}
    for name in ("forecasts", "risk", "recommendations", "consolidation", "backtest"):
        t = store.read_run_table(rid, name)
        if t is not None:
            tables[name] = t.drop(columns=["held_back"]) if name == "recommendations" else t
    manifest = store.read_manifest(rid)
    manifest["config"].pop("policy", None)
    (manifest.get("consolidation") or {}).pop("held_back", None)
    old = "20260806T060000Z-old"  # later than the fixture run: it becomes LATEST
    store.publish_run(old, tables, {**manifest, "run_id": old})
    return root


def test_an_old_plan_without_held_back_or_policy_still_renders(old_plan_root):
    rm = ReadModel(open_store(str(old_plan_root)), Settings(data=str(old_plan_root)))
    plan = rm.snapshot().plan
    assert plan is not None and plan.run_id == "20260806T060000Z-old"
    assert "held_back" not in plan.manifest["config"].get("policy", {})
    assert base_policy(plan, rm.settings).policy == Policy()
    recs = plan.table("recommendations")
    assert (recs["held_back"] == "").all()
    empty, _kpis, _fig, _table, rows, *_ = cons.consolidation_view(rm, ALL, BASE)
    assert empty is None and all(r["held_back"] == "" for r in rows)
    badges, fig, held_rows, _ = cons.held_back_view(rm, ALL, BASE, "all")
    assert held_rows == [] and "No server is held back" in _json(badges)
    assert fig["layout"]["annotations"][0]["text"] == "No server is held back under these filters"
    # a policy what-if on an old run re-derives with the new engine, so it says why again
    _, _, held_rows, _ = cons.held_back_view(rm, ALL, ScenarioState(propose="idle").to_data(), "all")
    assert held_rows and {r["held_back"] for r in held_rows} <= set(HELD_BACK)
