"""What-if re-derivation: an empty scenario reproduces the base, growth compounds per business unit,
threshold / headroom overrides and added servers change what they should, and (hypothesis) more
growth never lowers risk."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.analytics import recommend_from_inputs
from forecasting.inputs import AnalyticsError, prepare
from forecasting.plan import RISK_COLUMNS
from forecasting.risk import risk_table
from forecasting.whatif import (
    CHANGE_COLUMNS,
    AddedLoad,
    Scenario,
    apply_growth,
    compare_risk,
    whatif,
    with_added_load,
    with_growth,
    with_headroom,
    with_thresholds,
)
from tests.test_risk import ORIGIN, forecast, history, inventory

BASE = {"headroom": 0.2, "idle_cpu_p95": 10.0}


@pytest.fixture(scope="module")
def inputs():
    inv = inventory(
        {"server_id": "pay1", "business_unit": "Payments"},
        {"server_id": "pay2", "business_unit": "Payments", "server_type": "db"},
        {"server_id": "mkt1", "business_unit": "Markets"},
        {
            "server_id": "mkt2",
            "business_unit": "Markets",
            "server_type": "web",
            "cpu_cores": 4,
            "memory_gb": 16,
        },
    )
    levels = {"pay1": 60.0, "pay2": 70.0, "mkt1": 50.0, "mkt2": 40.0}
    hist = history({s: {"cpu_p95": v, "mem_p95": v - 10} for s, v in levels.items()}, days=100)
    fc = pd.concat(
        [
            forecast(s, m, np.full(91, v if m == "cpu_p95" else v - 10), spread=2.0)
            for s, v in levels.items()
            for m in ("cpu_p95", "mem_p95")
        ],
        ignore_index=True,
    )
    return prepare(fc, hist, inv)


def test_empty_scenario_reproduces_the_base(inputs) -> None:
    base_risk = risk_table(inputs)
    base_recs = recommend_from_inputs(inputs, consolidation=False, profiles=False, **BASE)
    res = whatif(inputs, Scenario(), base_risk=base_risk, **BASE)
    pd.testing.assert_frame_equal(res.risk, base_risk)
    pd.testing.assert_frame_equal(res.recommendations.frame, base_recs.frame)
    assert list(res.risk_changes.columns) == CHANGE_COLUMNS
    assert set(res.risk_changes["change"]) == {"same"}


@pytest.mark.parametrize("growth", [0.0, 4.0, 12.0])
def test_flagged_assessment_matches_the_full_one_on_every_flagged_row(inputs, growth) -> None:
    """The interactive what-if assesses flagged rows only; those rows must be exactly the full
    assessment's, and the rest say "ok" with nothing assessed."""
    grown = Scenario(growth_pct_per_month=growth)
    full = whatif(inputs, grown, **BASE, recommendations=False).risk
    fast = whatif(inputs, grown, **BASE, recommendations=False, assess="flagged").risk
    assert list(fast.columns) == RISK_COLUMNS and len(fast) == len(full)
    pd.testing.assert_frame_equal(fast[["server_id", "metric", "threshold", "current_p95", "status"]],
                                  full[["server_id", "metric", "threshold", "current_p95", "status"]])  # fmt: skip
    flagged = (full["status"] != "ok").to_numpy()
    pd.testing.assert_frame_equal(fast[flagged], full[flagged])
    rest = fast[~flagged]
    assert (rest["severity"] == "none").all() and (rest["reason"] == "").all()
    assert rest["breach_probability"].isna().all() and rest["breach_expected"].isna().all()
    assert fast.dtypes.equals(full.dtypes)
    if growth == 12.0:
        assert flagged.any() and not flagged.all()  # both kinds of row were compared


def test_growth_compounds_monthly_per_business_unit(inputs) -> None:
    grown = apply_growth(inputs, {"Payments": 10.0})
    days = (inputs.index - ORIGIN) / pd.Timedelta(days=1)
    months = np.asarray(days) / (365.25 / 12)
    pay = inputs.inventory["business_unit"].eq("Payments").to_numpy()
    np.testing.assert_allclose(grown.growth[pay, 0, :], np.broadcast_to(1.1**months, (2, len(months))))
    assert np.all(grown.growth[~pay] == 1.0)
    r = grown.path("cpu_p95", 4)  # q50
    assert r[0, -1] == pytest.approx(60.0 * 1.1 ** months[-1])  # ≈ 3 months: 60 × 1.1^2.99
    assert r[2, -1] == pytest.approx(50.0)  # Markets unchanged
    # '*' covers every business unit not named
    everyone = apply_growth(inputs, {"Payments": 10.0, "*": 5.0})
    assert everyone.growth[2, 0, -1] == pytest.approx(1.05 ** months[-1])
    # scenarios stack
    twice = apply_growth(apply_growth(inputs, 10.0), 10.0)
    assert twice.growth[0, 0, -1] == pytest.approx(1.21 ** months[-1])


def test_growth_raises_risk_and_changes_recommendations(inputs) -> None:
    base = risk_table(inputs)
    res = with_growth(inputs, {"Payments": 8.0}, base_risk=base, **BASE)
    after = res.risk.set_index(["server_id", "metric"])
    # pay2 CPU: 70 × 1.08^m crosses 85 at m = ln(85/70)/ln(1.08) ≈ 2.52 months ≈ 77 days
    r = after.loc[("pay2", "cpu_p95")]
    assert r["status"] == "at_risk"
    assert r["breach_expected"] == ORIGIN + pd.Timedelta(
        days=int(np.ceil(np.log(85 / 70) / np.log(1.08) * 365.25 / 12))
    )
    changes = res.risk_changes.set_index(["server_id", "metric"])
    assert changes.loc[("pay2", "cpu_p95"), "change"] == "worse"
    assert changes.loc[("mkt1", "cpu_p95"), "change"] == "same"
    assert res.recommendations.frame.set_index("server_id").loc["pay2", "action"] == "upgrade"


def test_threshold_override_merges_over_the_base(inputs) -> None:
    res = with_thresholds(inputs, {"cpu_p95": 55.0}, thresholds={"mem_p95": 50.0}, **BASE)
    r = res.risk.set_index(["server_id", "metric"])
    assert r.loc[("pay1", "cpu_p95"), "threshold"] == 55.0
    assert r.loc[("pay1", "mem_p95"), "threshold"] == 50.0  # base setting kept
    assert r.loc[("pay1", "cpu_p95"), "status"] == "already_over"
    assert r.loc[("mkt2", "cpu_p95"), "status"] == "ok"


def test_headroom_change_re_sizes(inputs) -> None:
    loose = with_headroom(inputs, 0.1, **BASE).recommendations.frame.set_index("server_id")
    strict = with_headroom(inputs, 0.35, **BASE).recommendations.frame.set_index("server_id")
    # pay2 at 70 %: fits with 10 % headroom, needs an upgrade with 35 %
    assert loose.loc["pay2", "action"] != "upgrade"
    assert strict.loc["pay2", "action"] == "upgrade"
    assert (strict["recommended_cores"] >= loose["recommended_cores"]).all()


def test_added_load_appends_servers_like_the_template(inputs) -> None:
    res = with_added_load(inputs, [AddedLoad("Markets", 3, "db")], consolidation=True, **BASE)
    new = res.risk[res.risk["server_id"].str.startswith("new-")]
    assert sorted(new["server_id"].unique()) == [
        "new-markets-db-001",
        "new-markets-db-002",
        "new-markets-db-003",
    ]
    inv = res.inputs.inventory.set_index("server_id")
    assert inv.loc["new-markets-db-001", "business_unit"] == "Markets"
    assert inv.loc["new-markets-db-001", "server_type"] == "db"
    # no db in Markets: the fleet's db (pay2) is the template
    tmpl = res.risk.set_index(["server_id", "metric"])
    assert (
        tmpl.loc[("new-markets-db-002", "cpu_p95"), "forecast_peak"]
        == tmpl.loc[("pay2", "cpu_p95"), "forecast_peak"]
    )
    recs = res.recommendations.frame
    assert len(recs) == 7 and recs["server_id"].is_unique
    # a server id works as a profile too, and the new servers grow with their business unit
    grown = whatif(
        inputs,
        Scenario(growth_pct_per_month={"Markets": 5.0}, added_load=(AddedLoad("Markets", 1, "pay1"),)),
        **BASE,
    )
    g = grown.risk.set_index(["server_id", "metric"])
    assert (
        g.loc[("new-markets-pay1-001", "cpu_p95"), "forecast_peak"]
        > g.loc[("pay1", "cpu_p95"), "forecast_peak"]
    )


def test_bad_scenarios_are_named(inputs) -> None:
    with pytest.raises(AnalyticsError, match="unknown business unit"):
        apply_growth(inputs, {"Narnia": 5.0})
    with pytest.raises(AnalyticsError, match="growth -150"):
        apply_growth(inputs, -150.0)
    with pytest.raises(AnalyticsError, match="not forecast"):
        apply_growth(inputs, 5.0, metrics=["disk_p95"])
    with pytest.raises(AnalyticsError, match="neither a server_type"):
        with_added_load(inputs, [AddedLoad("Markets", 2, "mainframe")], **BASE)
    with pytest.raises(AnalyticsError, match="count 0"):
        AddedLoad("Markets", 0, "db")
    with pytest.raises(AnalyticsError, match="lacks"):
        compare_risk(pd.DataFrame({"server_id": []}), risk_table(inputs))


def test_compare_risk_lists_new_and_gone_rows(inputs) -> None:
    base = risk_table(inputs)
    after = base[base["server_id"] != "mkt2"]
    c = compare_risk(base, after).set_index(["server_id", "metric"])
    assert c.loc[("mkt2", "cpu_p95"), "change"] == "gone"
    c2 = compare_risk(after, base).set_index(["server_id", "metric"])
    assert c2.loc[("mkt2", "cpu_p95"), "change"] == "new"


# --------------------------------------------------------------------------- invariant


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    levels=st.lists(
        st.tuples(st.floats(5, 95), st.floats(-0.5, 1.0), st.floats(0, 6)), min_size=1, max_size=4
    ),
    g1=st.floats(-20, 30),
    dg=st.floats(0, 30),
)
def test_more_growth_never_lowers_risk(levels, g1, dg) -> None:
    inv = inventory(*({"server_id": f"s{i}"} for i in range(len(levels))))
    fc = pd.concat(
        [
            forecast(f"s{i}", "cpu_p95", np.clip(lv + sl * np.arange(1, 61), 0, 100), spread=sp)
            for i, (lv, sl, sp) in enumerate(levels)
        ],
        ignore_index=True,
    )
    hist = history({f"s{i}": {"cpu_p95": lv} for i, (lv, _, _) in enumerate(levels)}, days=30)
    inputs = prepare(fc, hist, inv)
    lo = whatif(inputs, Scenario(growth_pct_per_month=g1), **BASE).risk
    hi = whatif(inputs, Scenario(growth_pct_per_month=g1 + dg), **BASE).risk
    assert np.all(hi["score"].to_numpy() >= lo["score"].to_numpy() - 1e-9)
    assert np.all(hi["breach_probability"].to_numpy() >= lo["breach_probability"].to_numpy() - 1e-12)
    for col in ("breach_optimistic", "breach_expected", "breach_pessimistic"):
        d_lo = ((lo[col] - ORIGIN) / pd.Timedelta(days=1)).fillna(np.inf).to_numpy()
        d_hi = ((hi[col] - ORIGIN) / pd.Timedelta(days=1)).fillna(np.inf).to_numpy()
        assert np.all(d_hi <= d_lo)
    assert np.all(hi["forecast_peak"].to_numpy() >= lo["forecast_peak"].to_numpy() - 1e-9)
