"""Right-sizing and the recommendation pipeline: hand-checked sizes, costs and actions on a small
catalog, the default catalog, bad input, and the sizing invariant (hypothesis)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.analytics import analyze, recommend, recommend_from_inputs
from forecasting.consolidation import catalog_unit_prices, cheapest_fit, price_factors
from forecasting.inputs import AnalyticsError, prepare
from forecasting.plan import ACTIONS, CONSOLIDATION_COLUMNS, RECOMMENDATION_COLUMNS
from forecasting.rightsizing import DEFAULT_CATALOG, CatalogError, size_servers, validate_catalog
from forecasting.risk import assess_risk
from tests.test_risk import forecast, history, inventory

# A catalog whose prices are exactly $35/core + $3.75/GB, so price factors are easy to check.
CATALOG = pd.DataFrame(
    [
        ("s", "gp", 2, 8, 100.0),
        ("m", "gp", 4, 16, 200.0),
        ("l", "gp", 8, 32, 400.0),
        ("hm", "mem", 4, 32, 260.0),
        ("xl", "gp", 16, 64, 800.0),
    ],
    columns=["size", "family", "cores", "memory_gb", "monthly_cost_usd"],
)


def fleet(servers: dict[str, tuple[dict, float, float]], days: int = 100) -> tuple:
    """{id: (inventory overrides, cpu %, mem %)} with flat history and a flat 30-day forecast."""
    inv = inventory(*({"server_id": sid, **over} for sid, (over, _, _) in servers.items()))
    hist = history({sid: {"cpu_p95": c, "mem_p95": m} for sid, (_, c, m) in servers.items()}, days=days)
    fc = pd.concat(
        [
            forecast(sid, metric, np.full(30, v), spread=1.0)
            for sid, (_, c, m) in servers.items()
            for metric, v in (("cpu_p95", c), ("mem_p95", m))
        ],
        ignore_index=True,
    )
    return fc, hist, inv


def sized(servers, **kw) -> pd.DataFrame:
    fc, hist, inv = fleet(servers)
    s = size_servers(
        prepare(fc, hist, inv), catalog=CATALOG, headroom=kw.pop("headroom", 0.2), idle_cpu_p95=10.0, **kw
    )
    return s.frame.set_index("server_id")


def test_catalog_prices_are_recovered() -> None:
    per_core, per_gb = catalog_unit_prices(CATALOG)
    assert per_core == pytest.approx(35.0) and per_gb == pytest.approx(3.75)


def test_cheapest_fit() -> None:
    pos = cheapest_fit(
        np.array([2.0, 2.0, 3.0, 17.0, np.nan]), np.array([8.0, 10.0, 20.0, 8.0, 1.0]), CATALOG
    )
    assert list(CATALOG["size"].to_numpy()[pos[:3]]) == ["s", "m", "hm"]  # hm ($260) beats l ($400)
    assert pos[3] == -1 and pos[4] == -1  # nothing has 17 cores; unknown need fits nothing


def test_right_size_to_the_smallest_size_that_covers_peak_plus_headroom() -> None:
    # 8 cores / 32 GB at 20 % CPU and 25 % memory: 1.6 cores and 8 GB; ÷ 0.8 → 2 cores, 10 GB → m
    r = sized({"r1": ({"cpu_cores": 8, "memory_gb": 32, "monthly_cost_usd": 400}, 20.0, 25.0)}).loc["r1"]
    assert r["action"] == "right-size"
    assert (r["recommended_size"], r["recommended_cores"], r["recommended_memory_gb"]) == ("m", 4, 16)
    assert r["current_size"] == "l"
    assert r["recommended_monthly_cost"] == pytest.approx(200.0)
    assert r["monthly_savings"] == pytest.approx(200.0)
    assert "needs 2.0 cores / 10.0 GB → m (4 vCPU / 16 GB) saves $200/month" in r["reason"]


def test_recommended_cost_keeps_the_servers_premium_over_the_catalog() -> None:
    # the same server billed at $800 (twice its catalog-equivalent $400): the new size costs 2 × $200
    r = sized({"p1": ({"cpu_cores": 8, "memory_gb": 32, "monthly_cost_usd": 800}, 20.0, 25.0)}).loc["p1"]
    assert r["recommended_monthly_cost"] == pytest.approx(400.0)
    assert r["monthly_savings"] == pytest.approx(400.0)


def test_keep_when_the_current_size_is_the_smallest_fit_or_savings_are_small() -> None:
    r = sized({"k1": ({"cpu_cores": 4, "memory_gb": 16, "monthly_cost_usd": 200}, 60.0, 60.0)}).loc["k1"]
    assert r["action"] == "keep"
    assert (r["recommended_size"], r["monthly_savings"]) == ("m", 0.0)
    assert "the current size is the smallest that fits" in r["reason"]
    small = sized(
        {"r1": ({"cpu_cores": 8, "memory_gb": 32, "monthly_cost_usd": 400}, 20.0, 25.0)},
        min_savings_fraction=0.6,
    ).loc["r1"]
    assert small["action"] == "keep"
    assert "would save less than 60 % of $400/month now" in small["reason"]


def test_upgrade_when_peak_exceeds_capacity_minus_headroom() -> None:
    # 90 % of 4 cores = 3.6 cores; ÷ 0.8 = 4.5 cores → l (8 / 32)
    r = sized({"u1": ({"cpu_cores": 4, "memory_gb": 16, "monthly_cost_usd": 200}, 90.0, 50.0)}).loc["u1"]
    assert r["action"] == "upgrade"
    assert r["recommended_size"] == "l"
    assert r["monthly_savings"] == pytest.approx(-200.0)
    assert r["reason"].startswith("undersized (CPU)")
    # nothing in the catalog is big enough: the largest, and say so
    big = sized({"b1": ({"cpu_cores": 16, "memory_gb": 64, "monthly_cost_usd": 800}, 95.0, 50.0)}).loc["b1"]
    assert big["action"] == "upgrade" and big["recommended_size"] == "xl"
    assert "split the workload" in big["reason"]


def test_idle_servers_are_flagged_for_decommission_review() -> None:
    r = sized({"i1": ({"monthly_cost_usd": 400}, 3.0, 40.0)}).loc["i1"]
    assert r["action"] == "decommission"
    assert (r["recommended_size"], r["recommended_cores"], r["recommended_monthly_cost"]) == ("", 0.0, 0.0)
    assert r["monthly_savings"] == pytest.approx(400.0)
    assert "idle: CPU p95 below 10 % throughout the last 90 d" in r["reason"]
    # one busy day in the lookback is enough to keep it off the list
    fc, hist, inv = fleet({"i2": ({}, 3.0, 40.0)})
    hist.loc[hist.index[-5], "cpu_p95"] = 40.0
    s = size_servers(prepare(fc, hist, inv), catalog=CATALOG, headroom=0.2, idle_cpu_p95=10.0)
    assert s.frame.loc[0, "action"] != "decommission"


def test_every_server_gets_a_row_even_without_data() -> None:
    fc, hist, inv = fleet({"a": ({}, 30.0, 30.0)})
    inv = pd.concat([inv, inventory({"server_id": "nodata"}, {"server_id": "nocap", "cpu_cores": np.nan})])
    hist = pd.concat([hist, history({"nocap": {"cpu_p95": 20.0, "mem_p95": 20.0}}, days=100)])
    s = size_servers(prepare(fc, hist, inv), catalog=CATALOG, headroom=0.2, idle_cpu_p95=10.0).frame
    assert list(s.columns) == RECOMMENDATION_COLUMNS
    assert list(s["server_id"]) == ["a", "nodata", "nocap"]
    by = s.set_index("server_id")
    assert by.loc["nodata", "action"] == "keep"
    assert by.loc["nodata", "reason"].startswith("no CPU history or forecast")
    assert by.loc["nocap", "reason"].startswith("capacity unknown")


def test_default_catalog_is_sane() -> None:
    cat = validate_catalog(DEFAULT_CATALOG)
    assert cat["size"].is_unique
    assert {"gp", "cpu", "mem"} <= set(cat["family"])
    assert (cat["monthly_cost_usd"] > 0).all()
    # within a family, price grows with size
    for _, fam in cat.groupby("family"):
        fam = fam.sort_values("cores")
        assert fam["monthly_cost_usd"].is_monotonic_increasing


def test_bad_catalog_and_settings_are_named() -> None:
    with pytest.raises(CatalogError, match="missing column"):
        validate_catalog(CATALOG.drop(columns="cores"))
    with pytest.raises(CatalogError, match="'m' more than once"):
        validate_catalog(pd.concat([CATALOG, CATALOG.iloc[[1]]]))
    with pytest.raises(CatalogError, match="size 's': monthly_cost_usd must be a positive number"):
        validate_catalog(CATALOG.assign(monthly_cost_usd=[0.0, 1, 1, 1, 1]))
    fc, hist, inv = fleet({"a": ({}, 30.0, 30.0)})
    inputs = prepare(fc, hist, inv)
    with pytest.raises(AnalyticsError, match="headroom"):
        size_servers(inputs, catalog=CATALOG, headroom=1.0, idle_cpu_p95=10.0)
    with pytest.raises(AnalyticsError, match="unknown quantile"):
        size_servers(inputs, catalog=CATALOG, headroom=0.2, idle_cpu_p95=10.0, quantile="q99")


def test_recommend_end_to_end_consolidates_small_servers() -> None:
    servers = {
        f"w{i}": ({"cpu_cores": 4, "memory_gb": 16, "monthly_cost_usd": 200}, 30.0, 30.0) for i in range(4)
    }
    servers["big"] = ({"cpu_cores": 16, "memory_gb": 64, "monthly_cost_usd": 800}, 78.0, 78.0)
    servers["idle"] = ({"monthly_cost_usd": 400}, 2.0, 20.0)
    fc, hist, inv = fleet(servers)
    recs = recommend(fc, hist, inv, headroom=0.2, idle_cpu_p95=10.0, catalog=CATALOG, host_size="xl")
    f = recs.frame.set_index("server_id")
    assert list(recs.frame.columns) == RECOMMENDATION_COLUMNS
    assert len(f) == len(inv) and set(f["action"]) <= set(ACTIONS)
    assert f.loc["idle", "action"] == "decommission"
    grouped = f[f["action"] == "consolidate"]
    # four 4-core servers at 30 % (1.2 cores, 4.8 GB each) share one host; the 16-core server at 78 %
    # (12.5 of the 12.8 cores an xl host allows with 20 % headroom) has room for none of them
    assert set(grouped.index) >= {"w0", "w1", "w2", "w3"}
    assert grouped["target_group"].nunique() == 1 and f.loc["big", "action"] == "keep"
    assert list(recs.plan.columns) == CONSOLIDATION_COLUMNS
    # members share the host's cost; together they pay what the host costs
    host_cost = recs.plan["host_monthly_cost"].iloc[0]
    assert grouped["recommended_monthly_cost"].sum() == pytest.approx(host_cost)
    summary = recs.summary_dict()
    assert summary["servers"] == len(inv)
    assert summary["actions"]["decommission"] == 1
    assert summary["servers_freed"] == summary["hosts_before"] - summary["hosts_after"] >= 3
    assert summary["monthly_savings"] == pytest.approx(
        f.loc[f["action"].isin(["decommission", "right-size", "consolidate"]), "monthly_savings"].sum()
    )
    assert recs.profiles is not None and set(recs.profiles.labels["server_id"]) <= set(inv["server_id"])
    # consolidation can be skipped (what-if speed)
    quick = recommend_from_inputs(
        prepare(fc, hist, inv), headroom=0.2, idle_cpu_p95=10.0, catalog=CATALOG, consolidation=False
    )
    assert "consolidate" not in set(quick.frame["action"]) and quick.plan.empty


def test_analyze_equals_the_two_entry_points() -> None:
    servers = {f"w{i}": ({"cpu_cores": 4, "memory_gb": 16}, 20.0 + 10 * i, 30.0) for i in range(4)}
    fc, hist, inv = fleet(servers)
    kw = {"headroom": 0.2, "idle_cpu_p95": 10.0, "catalog": CATALOG}
    both = analyze(fc, hist, inv, thresholds={"cpu_p95": 40.0}, **kw)
    pd.testing.assert_frame_equal(both.risk, assess_risk(fc, hist, inv, thresholds={"cpu_p95": 40.0}))
    alone = recommend(fc, hist, inv, thresholds={"cpu_p95": 40.0}, **kw).frame
    pd.testing.assert_frame_equal(both.recommendations.frame, alone)
    assert both.inputs.n_servers == 4
    # w2 runs at its 40 % threshold: the risk guard keeps it off every shrinking action
    w2 = alone.set_index("server_id").loc["w2"]
    assert (w2["action"], w2["held_back"]) == ("keep", "at risk")
    assert w2["reason"].startswith("CPU p95 already over 40 %")


# --------------------------------------------------------------------------- invariant


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    servers=st.lists(
        st.tuples(
            st.sampled_from([(2, 8), (4, 16), (8, 32), (4, 32), (16, 64)]),
            st.floats(0, 100),
            st.floats(0, 100),
        ),
        min_size=1,
        max_size=5,
    ),
    headroom=st.floats(0, 0.5),
)
def test_recommended_size_covers_peak_plus_headroom(servers, headroom) -> None:
    spec = {
        f"s{i}": ({"cpu_cores": c, "memory_gb": g, "monthly_cost_usd": 35.0 * c + 3.75 * g}, cpu, mem)
        for i, ((c, g), cpu, mem) in enumerate(servers)
    }
    fc, hist, inv = fleet(spec)
    s = size_servers(prepare(fc, hist, inv), catalog=CATALOG, headroom=headroom, idle_cpu_p95=10.0)
    f = s.frame.set_index("server_id")
    d = s.demand.set_index("server_id")
    assert len(f) == len(spec)
    for sid, ((c, g), cpu, mem) in zip(spec, servers, strict=True):
        need_c, need_m = cpu / 100 * c / (1 - headroom), mem / 100 * g / (1 - headroom)
        assert d.loc[sid, "cores_needed"] == pytest.approx(need_c)
        act = f.loc[sid, "action"]
        if act == "decommission":
            assert cpu < 10.0
        elif act == "upgrade":
            assert need_c > c + 1e-9 or need_m > g + 1e-9
        fits = need_c <= 16 + 1e-9 and need_m <= 64 + 1e-9
        if act in ("right-size", "upgrade", "keep") and fits:
            assert f.loc[sid, "recommended_cores"] >= need_c - 1e-9
            assert f.loc[sid, "recommended_memory_gb"] >= need_m - 1e-9
        if act == "right-size":
            assert f.loc[sid, "monthly_savings"] > 0
    assert np.allclose(price_factors(inv, CATALOG)[0], 1.0)
