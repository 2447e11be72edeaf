"""Risk per server × metric: hand-checked breach dates, probabilities and act-by dates, statuses,
reasons, bad input, and the invariants (hypothesis) a planner relies on.

The builders at the top (``inventory``, ``history``, ``forecast``) make small contract frames by
hand; the other analytics tests import them.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.inputs import AnalyticsError, prepare, row_quantile
from forecasting.plan import QUANTILE_COLUMNS, RISK_COLUMNS
from forecasting.risk import exceedance_probability, format_date, risk_table
from forecasting.schema import INVENTORY_COLUMNS, SchemaError

ORIGIN = pd.Timestamp("2025-03-31", tz="UTC")  # last observed day
DAY = pd.Timedelta(days=1)
# Quantile offsets per unit of spread: q025 … q975 (symmetric, easy to check by hand).
OFFSETS = np.array([-2.0, -1.6, -1.25, -0.7, 0.0, 0.7, 1.25, 1.6, 2.0])


# --------------------------------------------------------------------------- builders


def inventory(*rows: dict) -> pd.DataFrame:
    """Inventory rows with sensible defaults (8 cores, 32 GB, medium app server in prod)."""
    base = {
        "hostname": "",
        "business_unit": "Payments",
        "region": "emea",
        "environment": "prod",
        "criticality": "medium",
        "server_type": "app",
        "cpu_cores": 8.0,
        "memory_gb": 32.0,
        "disk_gb": 100.0,
        "monthly_cost_usd": 400.0,
    }
    out = pd.DataFrame([{**base, "hostname": r["server_id"], **r} for r in rows])
    return out[list(INVENTORY_COLUMNS)]


def history(
    values: dict[str, dict[str, np.ndarray | float]],
    days: int = 60,
    end: pd.Timestamp = ORIGIN,
    freq: str = "D",
) -> pd.DataFrame:
    """Wide metrics ending at ``end``: {server_id: {metric: array (len days) or constant}}."""
    idx = pd.date_range(end=end, periods=days, freq=freq)
    frames = []
    for sid, metrics in values.items():
        f = pd.DataFrame({"server_id": sid, "timestamp": idx})
        for m, v in metrics.items():
            f[m] = np.broadcast_to(np.asarray(v, dtype=float), (days,))
        frames.append(f)
    return pd.concat(frames, ignore_index=True)


def forecast(
    sid: str,
    metric: str,
    q50: np.ndarray,
    spread: float | np.ndarray = 4.0,
    start: pd.Timestamp = ORIGIN + DAY,
    freq: str = "D",
) -> pd.DataFrame:
    """Long forecast rows: quantile k = q50 + OFFSETS[k] · spread."""
    q50 = np.asarray(q50, dtype=float)
    H = len(q50)
    spread = np.broadcast_to(np.asarray(spread, dtype=float), (H,))
    q = q50[:, None] + OFFSETS[None, :] * spread[:, None]
    f = pd.DataFrame(q, columns=QUANTILE_COLUMNS)
    f.insert(0, "timestamp", pd.date_range(start, periods=H, freq=freq))
    f.insert(0, "metric", metric)
    f.insert(0, "server_id", sid)
    f["yhat"], f["yhat_lower"], f["yhat_upper"], f["model"] = f["q50"], f["q10"], f["q90"], "test"
    return f


def row(risk: pd.DataFrame, sid: str, metric: str) -> pd.Series:
    sel = risk[(risk["server_id"] == sid) & (risk["metric"] == metric)]
    assert len(sel) == 1
    return sel.iloc[0]


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


# --------------------------------------------------------------------------- hand-checked


@pytest.fixture
def ramp() -> pd.DataFrame:
    """One db server whose CPU climbs 1 point a day from 70 %: q50 = 70 + h, q90 = q50 + 5, q10 = q50 − 5."""
    inv = inventory({"server_id": "db1", "server_type": "db"})
    hist = history({"db1": {"cpu_p95": np.linspace(60, 70, 60)}})
    fc = forecast("db1", "cpu_p95", 70 + np.arange(1, 31))
    return assess(fc, hist, inv)


def assess(fc, hist, inv, **kw) -> pd.DataFrame:
    return risk_table(prepare(fc, hist, inv), **kw)


def test_breach_dates_of_each_path(ramp: pd.DataFrame) -> None:
    r = row(ramp, "db1", "cpu_p95")
    # threshold 85 (medium tier, no offset): q90 = 75 + h ≥ 85 at h = 10, q50 at h = 15, q10 at h = 20
    assert r["threshold"] == 85.0
    assert r["breach_pessimistic"] == ts("2025-04-10")
    assert r["breach_expected"] == ts("2025-04-15")
    assert r["breach_optimistic"] == ts("2025-04-20")
    assert r["days_to_breach"] == 15.0
    assert r["days_to_breach_pessimistic"] == 10.0


def test_act_by_is_breach_minus_lead_time_of_the_server_type(ramp: pd.DataFrame) -> None:
    r = row(ramp, "db1", "cpu_p95")
    assert r["act_by"] == ts("2025-04-15") - pd.Timedelta(days=60)  # db: 60 days
    assert r["status"] == "at_risk"
    r2 = row(
        assess(
            forecast("db1", "cpu_p95", 70 + np.arange(1, 31)),
            history({"db1": {"cpu_p95": 65.0}}),
            inventory({"server_id": "db1", "server_type": "db"}),
            lead_time_days={"db": 10},
        ),
        "db1",
        "cpu_p95",
    )
    assert r2["act_by"] == ts("2025-04-05")


def test_act_by_falls_back_to_the_pessimistic_breach() -> None:
    # q50 = 82 flat never reaches 85; q90 = 87 does from day 1
    inv = inventory({"server_id": "w1", "server_type": "web"})
    r = row(
        assess(forecast("w1", "cpu_p95", np.full(20, 82.0)), history({"w1": {"cpu_p95": 80.0}}), inv),
        "w1",
        "cpu_p95",
    )
    assert pd.isna(r["breach_expected"])
    assert r["breach_pessimistic"] == ts("2025-04-01")
    assert r["act_by"] == ts("2025-04-01") - pd.Timedelta(days=21)  # web: 21 days
    assert r["status"] == "at_risk"
    assert math.isnan(r["days_to_breach"]) and r["days_to_breach_pessimistic"] == 1.0


def test_breach_probability_from_the_quantiles() -> None:
    # flat q50 = 80, spread 4: knots 72, 73.6, 75, 77.2, 80, 82.8, 85, 86.4, 88
    inv = inventory(
        {"server_id": "a"}, {"server_id": "b"}, {"server_id": "c"}, {"server_id": "d", "criticality": "high"}
    )
    fc = pd.concat([forecast(s, "cpu_p95", np.full(10, 80.0)) for s in "abcd"])
    hist = history({s: {"cpu_p95": 50.0} for s in "abcd"})
    thresholds = {"cpu_p95": 85.0}
    r = assess(fc, hist, inv, thresholds=thresholds, criticality_offsets={"high": -1.0})
    assert row(r, "a", "cpu_p95")["breach_probability"] == pytest.approx(0.10)  # exactly the q90 knot
    # high tier: 84 lies between q75 = 82.8 and q90 = 85: F = 0.75 + 0.15 · 1.2/2.2
    assert row(r, "d", "cpu_p95")["threshold"] == 84.0
    assert row(r, "d", "cpu_p95")["breach_probability"] == pytest.approx(1 - (0.75 + 0.15 * 1.2 / 2.2))
    # above q975 = 88: exponential tail with s = (88 − 86.4)/ln 2
    r90 = assess(fc, hist, inv, thresholds={"cpu_p95": 90.0})
    s = 1.6 / math.log(2)
    assert row(r90, "b", "cpu_p95")["breach_probability"] == pytest.approx(0.025 * math.exp(-2 / s))
    # below q025 = 72: F = 0.025 · exp(−(72 − 70)/s_lo), s_lo = (73.6 − 72)/ln 2
    r70 = assess(fc, hist, inv, thresholds={"cpu_p95": 70.0})
    assert row(r70, "c", "cpu_p95")["breach_probability"] == pytest.approx(1 - 0.025 * math.exp(-2 / s))


def test_probability_within_horizon_is_the_maximum_over_steps() -> None:
    inv = inventory({"server_id": "a"})
    q50 = np.array([70.0, 80.0, 75.0])  # the middle step is the riskiest
    r = row(assess(forecast("a", "cpu_p95", q50), history({"a": {"cpu_p95": 60.0}}), inv), "a", "cpu_p95")
    assert r["breach_probability"] == pytest.approx(0.10)  # P at step 2 (q90 = 85 = threshold)
    assert r["forecast_peak"] == 80.0 and r["forecast_peak_upper"] == 85.0


def test_exceedance_probability_direct() -> None:
    knots = 80 + OFFSETS * 4
    assert exceedance_probability(knots, 80.0) == pytest.approx(0.5)
    assert exceedance_probability(knots, 85.0) == pytest.approx(0.1)
    assert exceedance_probability(knots, 72.0) == pytest.approx(0.975)
    # a point mass (all knots equal): certain at or below it, impossible above it
    flat = np.full(9, 50.0)
    assert exceedance_probability(flat, 50.0) == pytest.approx(0.975)
    assert exceedance_probability(flat, 50.1) == 0.0
    assert exceedance_probability(flat, 10.0) == 1.0
    assert np.isnan(exceedance_probability(np.full(9, np.nan), 10.0))
    # axis and broadcasting: (series, Q, steps)
    v = np.stack([np.repeat(knots[:, None], 3, axis=1)] * 2)
    out = exceedance_probability(v, np.array([[80.0], [85.0]]), axis=1)
    assert out.shape == (2, 3)
    np.testing.assert_allclose(out, [[0.5] * 3, [0.1] * 3])


def test_criticality_offsets_warn_earlier_and_scale_rate_thresholds() -> None:
    inv = inventory({"server_id": "c1", "criticality": "critical"}, {"server_id": "l1", "criticality": "low"})
    fc = pd.concat(
        [
            forecast(s, m, np.full(5, v))
            for s in ("c1", "l1")
            for m, v in (("cpu_p95", 78.0), ("net_in_p95", 700.0))
        ]
    )
    hist = history({s: {"cpu_p95": 50.0, "net_in_p95": 300.0} for s in ("c1", "l1")})
    r = assess(fc, hist, inv)
    assert row(r, "c1", "cpu_p95")["threshold"] == 75.0  # 85 − 10 points
    assert row(r, "l1", "cpu_p95")["threshold"] == 85.0
    assert row(r, "c1", "net_in_p95")["threshold"] == pytest.approx(720.0)  # 800 Mbps − 10 %
    assert row(r, "c1", "cpu_p95")["status"] == "at_risk"
    assert row(r, "l1", "cpu_p95")["status"] == "ok"
    assert "75 % (85 % − 10 pts for critical servers)" in row(r, "c1", "cpu_p95")["reason"]


def test_already_over_threshold_is_flagged_with_act_now() -> None:
    inv = inventory({"server_id": "hot"})
    days = np.r_[np.full(53, 60.0), np.full(7, 95.0)]  # the last week at 95 %
    r = row(
        assess(forecast("hot", "cpu_p95", np.full(10, 70.0)), history({"hot": {"cpu_p95": days}}), inv),
        "hot",
        "cpu_p95",
    )
    assert r["current_p95"] == pytest.approx(95.0)
    assert r["status"] == "already_over"
    assert r["act_by"] == ORIGIN
    assert r["score"] == pytest.approx(80.0)  # 100 × medium weight 0.8
    assert r["severity"] == "critical"
    assert r["reason"].startswith("CPU p95 already at 95 % (p95 of the last 7 days), over the 85 % threshold")


def test_current_p95_is_the_p95_of_the_last_seven_days() -> None:
    inv = inventory({"server_id": "a"})
    vals = np.arange(60, dtype=float)
    r = row(
        assess(forecast("a", "cpu_p95", np.full(5, 10.0)), history({"a": {"cpu_p95": vals}}), inv),
        "a",
        "cpu_p95",
    )
    assert r["current_p95"] == pytest.approx(np.percentile(vals[-7:], 95))
    np.testing.assert_allclose(
        row_quantile(np.array([[1.0, 2.0, np.nan, 4.0], [np.nan] * 4]), 0.95),
        [np.percentile([1, 2, 4], 95), np.nan],
    )


def test_reason_is_plain_language_with_dates_range_and_trend(ramp: pd.DataFrame) -> None:
    reason = row(ramp, "db1", "cpu_p95")["reason"]
    assert reason.startswith("CPU p95 expected to cross 85 % on 15 Apr (80 % range 10 Apr–20 Apr)")
    assert "trend +7.0 pts/week" in reason
    assert "order now" in reason  # the 60-day lead time reaches past mid-April
    assert row(ramp, "db1", "cpu_p95")["trend_per_week"] == pytest.approx(7.0)


def test_seasonal_peak_crossing_only_at_month_end() -> None:
    inv = inventory({"server_id": "batch1"})
    idx = pd.date_range(ORIGIN + DAY, periods=60, freq="D")
    month_end = np.asarray(idx.days_in_month - idx.day) < 3
    q50 = np.where(month_end, 88.0, 70.0)
    fc = forecast("batch1", "cpu_p95", q50, spread=1.0)
    r = row(assess(fc, history({"batch1": {"cpu_p95": 70.0}}), inv), "batch1", "cpu_p95")
    assert r["status"] == "seasonal_peak"
    assert r["breach_expected"] == ts("2025-04-28")  # April has 30 days: 28–30 Apr are month-end
    assert "at month-end peaks on 28 Apr" in r["reason"]
    assert "off-peak the expected path stays at or below 70 %" in r["reason"]
    # a forecast that also crosses off-peak is plainly at risk
    fc2 = forecast("batch1", "cpu_p95", np.where(month_end, 88.0, 86.0), spread=1.0)
    assert (
        row(assess(fc2, history({"batch1": {"cpu_p95": 70.0}}), inv), "batch1", "cpu_p95")["status"]
        == "at_risk"
    )


def test_quarter_end_uplift_the_forecast_lacks_is_added() -> None:
    """History shows +12 pts on the last 3 days of every month; the forecast is flat at 74 %:
    the peaks are added back, so month-ends cross 85 % although the trend never does."""
    inv = inventory({"server_id": "fin"})
    hidx = pd.date_range(end=ORIGIN, periods=400, freq="D")
    spikes = np.where(np.asarray(hidx.days_in_month - hidx.day) < 3, 12.0, 0.0)
    hist = history({"fin": {"cpu_p95": 70.0 + spikes}}, days=400)
    fc = forecast("fin", "cpu_p95", np.full(92, 74.0), spread=1.0)
    inputs = prepare(fc, hist, inv)
    assert inputs.hist_uplift[0, 0] == pytest.approx([12.0, 12.0])
    assert inputs.missing_uplift[0, 0] == pytest.approx([12.0, 12.0])
    r = row(risk_table(inputs), "fin", "cpu_p95")
    assert r["status"] == "seasonal_peak"
    assert r["current_p95"] < 85  # the last week held one month-end at 82 %
    assert r["breach_expected"] == ts("2025-04-28")  # 74 + 12 = 86 ≥ 85 on the first month-end
    assert r["forecast_peak"] == pytest.approx(86.0)
    assert "quarter-end peaks add ~12 pts (the forecast lacked ~12 pts of it; added)" in r["reason"]
    # a forecast that already carries the peaks gets nothing added
    fidx = pd.date_range(ORIGIN + DAY, periods=92, freq="D")
    carried = 74.0 + np.where(np.asarray(fidx.days_in_month - fidx.day) < 3, 12.0, 0.0)
    inputs2 = prepare(forecast("fin", "cpu_p95", carried, spread=1.0), hist, inv)
    assert inputs2.missing_uplift[0, 0] == pytest.approx([0.0, 0.0])
    assert row(risk_table(inputs2), "fin", "cpu_p95")["forecast_peak"] == pytest.approx(86.0)


def test_weekly_pattern_is_not_mistaken_for_month_end_peaks() -> None:
    inv = inventory({"server_id": "web"})
    hidx = pd.date_range(end=ORIGIN, periods=400, freq="D")
    weekly = np.where(np.asarray(hidx.day_of_week) >= 5, 30.0, 65.0)
    inputs = prepare(
        forecast("web", "cpu_p95", np.full(30, 60.0)), history({"web": {"cpu_p95": weekly}}, days=400), inv
    )
    assert np.all(np.abs(inputs.hist_uplift[0, 0]) < 1.0)


def test_ok_rows_and_exact_columns() -> None:
    inv = inventory({"server_id": "calm"}, {"server_id": "nofc"})
    fc = pd.concat([forecast("calm", m, np.full(30, 40.0)) for m in ("cpu_p95", "mem_p95", "disk_p95")])
    hist = history({"calm": {"cpu_p95": 40.0, "mem_p95": 40.0, "disk_p95": 40.0}, "nofc": {"cpu_p95": 30.0}})
    r = assess(fc, hist, inv)
    assert list(r.columns) == RISK_COLUMNS
    assert len(r) == 3  # one row per server × forecast metric; nofc has no forecast
    assert set(r["status"]) == {"ok"} and set(r["severity"]) == {"none"}
    assert r["breach_probability"].max() < 0.01
    calm = row(r, "calm", "mem_p95")
    assert calm["reason"].startswith(
        "Memory p95 expected to peak at 40 % (1 Apr; pessimistic 45 %), below 90 %"
    )


def test_hourly_forecasts_give_hourly_breach_times() -> None:
    inv = inventory({"server_id": "h1"})
    hist = history({"h1": {"cpu_p95": 50.0}}, days=24 * 20, end=ts("2025-03-31 23:00"), freq="h")
    fc = forecast("h1", "cpu_p95", 60 + np.arange(48), spread=1.0, start=ts("2025-04-01 00:00"), freq="h")
    inputs = prepare(fc, hist, inv)
    assert inputs.freq == "hourly"
    r = row(risk_table(inputs), "h1", "cpu_p95")
    assert r["breach_expected"] == ts("2025-04-01 01:00") + pd.Timedelta(hours=24)  # 60 + 25 = 85
    assert r["days_to_breach"] == pytest.approx(26 / 24)  # from the last observed hour, 31 Mar 23:00
    assert "on 2 Apr 01:00" in r["reason"]


def test_prepare_keeps_only_the_recent_history_it_needs() -> None:
    inv = inventory({"server_id": "a"})
    hist = history({"a": {"cpu_p95": np.arange(60.0)}})
    inputs = prepare(forecast("a", "cpu_p95", np.full(5, 50.0)), hist, inv, history_days=10)
    assert len(inputs.history_index) == 10 and inputs.history_index[-1] == ORIGIN
    np.testing.assert_array_equal(inputs.history["cpu_p95"][0], np.arange(50.0, 60.0))
    assert inputs.quantiles.shape == (1, 1, 9, 5)  # (servers, metrics, quantiles, steps)


def test_format_date() -> None:
    assert format_date(ts("2025-03-14"), ORIGIN) == "14 Mar"
    assert format_date(ts("2026-01-02"), ORIGIN) == "2 Jan 2026"


# --------------------------------------------------------------------------- bad input


def test_bad_input_is_named() -> None:
    inv = inventory({"server_id": "a"})
    hist = history({"a": {"cpu_p95": 50.0}})
    fc = forecast("a", "cpu_p95", np.full(5, 50.0))
    with pytest.raises(SchemaError, match="forecasts is missing required column"):
        prepare(fc.drop(columns="q90"), hist, inv)
    with pytest.raises(AnalyticsError, match="not in the inventory"):
        prepare(forecast("ghost", "cpu_p95", np.full(5, 50.0)), hist, inv)
    with pytest.raises(AnalyticsError, match="several rows for one server"):
        prepare(pd.concat([fc, fc]), hist, inv)
    with pytest.raises(AnalyticsError, match="unknown metric"):
        prepare(fc.assign(metric="gpu_p95"), hist, inv)
    with pytest.raises(AnalyticsError, match="history is empty"):
        prepare(fc, hist.iloc[:0], inv)
    with pytest.raises(AnalyticsError, match="inventory lists server_id more than once"):
        prepare(fc, hist, pd.concat([inv, inv]))
    with pytest.raises(AnalyticsError, match="history_days 0"):
        prepare(fc, hist, inv, history_days=0)
    inputs = prepare(fc, hist, inv)
    with pytest.raises(AnalyticsError, match="cpu_p95 threshold 120"):
        risk_table(inputs, thresholds={"cpu_p95": 120.0})
    with pytest.raises(AnalyticsError, match="unknown metric"):
        risk_table(inputs, thresholds={"gpu": 50.0})
    with pytest.raises(AnalyticsError, match="unknown tier"):
        risk_table(inputs, criticality_offsets={"platinum": -5.0})
    with pytest.raises(AnalyticsError, match="lead_time_days"):
        risk_table(inputs, lead_time_days={"db": -3})


# --------------------------------------------------------------------------- invariants


@st.composite
def fleets(draw):
    """A few servers with random (sorted) quantile paths and some history."""
    n = draw(st.integers(1, 4))
    H = draw(st.integers(3, 25))
    rows, fcs, hist = [], [], {}
    for i in range(n):
        sid = f"s{i}"
        tier = draw(st.sampled_from(["critical", "high", "medium", "low"]))
        rows.append({"server_id": sid, "criticality": tier})
        level = draw(st.floats(5, 95))
        slope = draw(st.floats(-1, 2))
        spread = draw(st.floats(0, 8))
        q50 = np.clip(level + slope * np.arange(1, H + 1), 0, 100)
        fcs.append(forecast(sid, "cpu_p95", q50, spread=spread))
        hist[sid] = {"cpu_p95": draw(st.floats(0, 100))}
    return inventory(*rows), pd.concat(fcs, ignore_index=True), history(hist, days=30)


def _as_days(s: pd.Series) -> np.ndarray:
    """Breach dates as days after origin, +inf where there is none."""
    return ((s - ORIGIN) / DAY).fillna(np.inf).to_numpy(dtype=float)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet=fleets(), t1=st.floats(20, 99), dt=st.floats(0.5, 30))
def test_a_higher_threshold_never_gives_an_earlier_breach(fleet, t1, dt) -> None:
    inv, fc, hist = fleet
    inputs = prepare(fc, hist, inv)
    lo = risk_table(inputs, thresholds={"cpu_p95": t1})
    hi = risk_table(inputs, thresholds={"cpu_p95": min(100.0, t1 + dt)})
    for col in ("breach_optimistic", "breach_expected", "breach_pessimistic"):
        assert np.all(_as_days(hi[col]) >= _as_days(lo[col]))
    assert np.all(hi["breach_probability"].to_numpy() <= lo["breach_probability"].to_numpy() + 1e-12)
    assert np.all(hi["score"].to_numpy() <= lo["score"].to_numpy() + 1e-9)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(fleet=fleets(), thr=st.floats(20, 99))
def test_probability_agrees_with_the_quantile_paths(fleet, thr) -> None:
    inv, fc, hist = fleet
    r = risk_table(prepare(fc, hist, inv), thresholds={"cpu_p95": thr}, criticality_offsets={})
    p = r["breach_probability"].to_numpy()
    assert np.all((p >= 0) & (p <= 1))
    eps = 1e-9
    assert np.all(p[r["breach_expected"].notna().to_numpy()] >= 0.5 - eps)
    assert np.all(p[r["breach_pessimistic"].notna().to_numpy()] >= 0.1 - eps)
    assert np.all(p[r["breach_optimistic"].notna().to_numpy()] >= 0.9 - eps)
    assert np.all(p[r["breach_pessimistic"].isna().to_numpy()] <= 0.1 + eps)
    d = {c: _as_days(r[c]) for c in ("breach_optimistic", "breach_expected", "breach_pessimistic")}
    assert np.all(d["breach_pessimistic"] <= d["breach_expected"])
    assert np.all(d["breach_expected"] <= d["breach_optimistic"])
    assert set(r["severity"]) <= {"critical", "high", "medium", "low", "none"}
    assert np.all((r["score"] >= 0) & (r["score"] <= 100))
