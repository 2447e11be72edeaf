"""Consolidation page: views and figures called directly (no browser)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import plotly.graph_objects as go

from app.filters import FilterState
from app.readmodel import ReadModel
from app.whatif import ScenarioState
from callbacks import consolidation as cons
from components.consolidation import packed_host_figure, savings_by_unit_figure
from forecasting.settings import Settings
from forecasting.sources import open_store

ALL = FilterState().to_data()
MARKETS = FilterState(business_unit=("Markets",)).to_data()
BASE = ScenarioState().to_data()


def _json(component) -> str:
    return json.dumps(component, default=lambda o: o.to_plotly_json(), ensure_ascii=False)


def test_base_view_shows_the_plans_recommendations_groups_and_savings(readmodel, plan):
    empty, kpis, fig, table, rec_rows, _rec_note, plan_rows, plan_note = cons.consolidation_view(
        readmodel, ALL, BASE
    )
    recs = plan.table("recommendations")
    changed = recs[recs["action"].astype(str) != "keep"]
    assert empty is None
    assert {r["server_id"] for r in rec_rows} == set(changed["server_id"])
    savings = [r["monthly_savings"] for r in rec_rows if r["monthly_savings"] is not None]
    assert savings == sorted(savings, reverse=True)
    groups = plan.table("consolidation")["target_group"].unique()
    assert {r["target_group"] for r in plan_rows} == set(groups)
    assert sum(r["members"] for r in plan_rows) == len(plan.table("consolidation"))
    assert f"{len(groups):,} host groups" in plan_note
    total = recs.loc[
        recs["action"].isin(["decommission", "right-size", "consolidate"]), "monthly_savings"
    ].sum()
    assert f"${total:,.0f}" in _json(kpis) and f"${total:,.0f}" in _json(table)
    go.Figure(fig)
    assert fig["layout"]["title"]["text"] == "Potential monthly savings by business unit"
    assert fig["layout"]["barmode"] == "stack" and fig["data"]


def test_filters_narrow_recommendations_and_savings(readmodel):
    _, _, fig, _, rec_rows, *_ = cons.consolidation_view(readmodel, MARKETS, BASE)
    assert rec_rows and {r["business_unit"] for r in rec_rows} == {"Markets"}
    assert all(t["x"] == ["Markets"] for t in fig["data"])


def test_scenario_repacks_and_headroom_changes_the_plan(readmodel):
    loose = cons.consolidation_view(readmodel, ALL, ScenarioState(growth=0.5, headroom=10).to_data())
    tight = cons.consolidation_view(readmodel, ALL, ScenarioState(growth=0.5, headroom=50).to_data())
    hosts = {
        name: sum(r["members"] for r in v[6]) - len(v[6]) for name, v in (("loose", loose), ("tight", tight))
    }
    assert hosts["loose"] > hosts["tight"]  # less headroom frees more servers
    assert "what-if computed" in loose[5]
    assert "over capacity" in _json(loose[1])  # the fleet-wide replay check under no filter


# The fixture's published plan packs no host (the default policy consolidates over-provisioned
# servers only, each saving the minimum); "everything that fits" does.
PACKED = ScenarioState(propose="all").to_data()


def _packed(readmodel, plan):
    from app.whatif import scenario_view

    return scenario_view(readmodel, plan, ScenarioState(propose="all"), consolidation=True).consolidation


def test_host_chart_sums_the_members_against_capacity(readmodel, plan):
    fig = cons.host_chart_view(readmodel, ALL, PACKED, None)
    go.Figure(fig)
    c = _packed(readmodel, plan)
    biggest = c.groupby("target_group").size().sort_values(ascending=False, kind="stable")
    first = sorted(biggest[biggest == biggest.max()].index)[0]
    assert fig["layout"]["title"]["text"].startswith(f"{first}: summed load of {biggest.max()} servers")
    names = [t["name"] for t in fig["data"]]
    assert "CPU demand (vCPU)" in names and "Memory demand (GB)" in names
    cap = next(t for t in fig["data"] if t["name"] == "CPU host capacity")
    assert cap["y"][0] == float(c.loc[c["target_group"] == first, "host_cores"].iloc[0])
    usable = next(t for t in fig["data"] if t["name"].startswith("CPU usable"))
    assert usable["y"][0] < cap["y"][0]
    other = sorted(set(c["target_group"]) - {first})[0]
    assert cons.host_chart_view(readmodel, ALL, PACKED, other)["layout"]["title"]["text"].startswith(other)
    assert cons.host_chart_view(readmodel, ALL, PACKED, "<bogus>")["layout"]["title"]["text"].startswith(
        first
    )
    assert cons.host_chart_view(readmodel, ALL, BASE, None)["layout"]["annotations"][0]["text"].startswith(
        "No host groups"
    )


def test_growth_raises_the_packed_hosts_forecast_load(readmodel, plan):
    packed = _packed(readmodel, plan)
    group = packed["target_group"].iloc[0]
    flat = cons.host_chart_view(readmodel, ALL, PACKED, group)
    # under a scenario the plan is re-packed; chart the same members through the scenario's inputs
    from app.whatif import scenario_inputs_for
    from forecasting.consolidation import demand_series

    members = packed.query("target_group == @group")["server_id"].tolist()
    base_cpu, *_ = demand_series(scenario_inputs_for(readmodel, plan, ScenarioState(), members))
    grown_cpu, *_ = demand_series(scenario_inputs_for(readmodel, plan, ScenarioState(growth=5), members))
    assert np.nansum(grown_cpu[:, -1]) > np.nansum(base_cpu[:, -1])
    assert flat["data"][0]["y"][-1] == round(float(np.nansum(base_cpu[:, -1])), 2)


def test_empty_states(readmodel, tmp_path: Path):
    none = FilterState(business_unit=("No such unit",)).to_data()
    out = cons.consolidation_view(readmodel, none, BASE)
    assert "No servers match these filters" in _json(out[0]) and out[4] == [] and out[6] == []
    fig = cons.host_chart_view(readmodel, none, BASE, None)
    assert fig["layout"]["annotations"][0]["text"] == "No servers match these filters"
    root = tmp_path / "empty"
    rm = ReadModel(open_store(str(root)), Settings(data=str(root)))
    assert "python -m forecasting run" in _json(cons.consolidation_view(rm, ALL, BASE)[0])


def test_figures_say_why_they_are_empty_and_validate():
    fig = savings_by_unit_figure(pd.DataFrame(columns=["business_unit", "action", "monthly_savings"]))
    assert fig["layout"]["annotations"][0]["text"] == "No savings under these filters"
    idx = pd.date_range("2026-01-01", periods=10, freq="D", tz="UTC")
    fig = packed_host_figure(
        idx,
        np.linspace(1, 5, 10),
        np.linspace(2, 8, 10),
        origin=idx[6],
        host_label="m.4xlarge",
        host_cores=16,
        host_memory_gb=64,
        headroom=0.25,
        members=["a", "b"],
        group="grp-1",
    )
    go.Figure(fig)
    usable = next(t for t in fig["data"] if t["name"].startswith("CPU usable"))
    assert usable["y"] == [12.0, 12.0] and "25 % headroom" in usable["name"]
    assert fig["layout"]["yaxis"]["title"]["text"] == "CPU (vCPU)"
    assert fig["layout"]["shapes"][0]["x0"].startswith("2026-01-07")
