"""Every model's contract (shapes, ordered quantiles, bounds, fallback) and what each promises."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from forecasting.models import (
    MODEL_NAMES,
    FleetModel,
    ForecastModel,
    NotFittedError,
    SeasonalNaiveModel,
    UnknownModelError,
    get_model,
)
from forecasting.models.fleet import DEFAULTS, Variant, build_design, default_variant, variants
from forecasting.models.naive import (
    band_factors,
    lag_errors,
    last_valid,
    nan_row_quantiles,
    scale_bands,
    seasonal_naive_mae,
    seasonal_template,
)
from forecasting.panel import Panel, interpolate_short_gaps
from forecasting.plan import FORECAST_COLUMNS, QUANTILES
from forecasting.schema import MIN_HISTORY

MODELS = [SeasonalNaiveModel, FleetModel]
Q50 = QUANTILES.index(0.5)


def make_panel(
    series: list[np.ndarray],
    metrics: list[str] | None = None,
    freq: str = "daily",
    start: str = "2023-01-02",
) -> Panel:
    """A panel from raw rows (NaN = missing); short gaps interpolated like build_panel does."""
    values = np.vstack(series).astype(float)
    n, T = values.shape
    metrics = metrics or ["cpu_p95"] * n
    keys = pd.DataFrame({"server_id": [f"srv-{i:03d}" for i in range(n)], "metric": metrics})
    index = pd.date_range(start, periods=T, freq="D" if freq == "daily" else "h", tz="UTC")
    observed = ~np.isnan(values)
    return Panel(keys, index, interpolate_short_gaps(values, 3 if freq == "daily" else 6), observed, freq)


def seasonal_series(
    T: int, seed: int, level: float = 40.0, slope: float = 0.01, noise: float = 1.0
) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    weekly = 5.0 * np.sin(2 * np.pi * t / 7.0 + seed)
    return level + slope * t + weekly + rng.normal(0.0, noise, T)


@pytest.fixture(scope="module")
def panel() -> Panel:
    rows = [seasonal_series(400, s) for s in range(6)]
    return make_panel(rows, ["cpu_p95", "mem_p95", "disk_p95", "net_in_p95", "net_out_p95", "cpu_p95"])


# --------------------------------------------------------------------------- the contract


@pytest.mark.parametrize("model_cls", MODELS)
def test_predict_before_fit_is_a_clear_error(model_cls):
    with pytest.raises(NotFittedError, match=r"predict\(\) called before fit\(\)"):
        model_cls().predict(5)


@pytest.mark.parametrize("model_cls", MODELS)
def test_shapes_index_and_frame(model_cls, panel):
    r = model_cls().fit(panel).predict(30)
    assert r.point.shape == (6, 30) and r.quantiles.shape == (6, 30, len(QUANTILES))
    assert len(r.index) == 30 and r.index[0] == panel.index[-1] + pd.Timedelta(days=1)
    assert r.model.shape == (6,) and set(r.model) == {model_cls.name}
    assert np.isfinite(r.point).all() and np.isfinite(r.quantiles).all()
    frame = r.to_frame()
    assert list(frame.columns) == FORECAST_COLUMNS and len(frame) == 6 * 30
    assert (frame["yhat_lower"] <= frame["yhat_upper"]).all()


@pytest.mark.parametrize("model_cls", MODELS)
def test_quantiles_are_ordered_and_bands_have_width(model_cls, panel):
    r = model_cls().fit(panel).predict(60)
    assert (np.diff(r.quantiles, axis=-1) >= 0).all()
    width = r.quantiles[:, :, -1] - r.quantiles[:, :, 0]
    assert (width > 0).all()
    if model_cls is FleetModel:  # its spread per step is fitted non-decreasing
        assert (np.diff(width, axis=1) >= -1e-9).all()


@pytest.mark.parametrize("model_cls", MODELS)
def test_percent_forecasts_stay_in_0_100_and_rates_non_negative(model_cls):
    T = 200
    t = np.arange(T)
    rising = 60.0 + 0.25 * t + np.random.default_rng(1).normal(0, 2, T)  # crosses 100 soon
    falling = 40.0 - 0.2 * t + np.random.default_rng(2).normal(0, 2, T)  # rate heading below 0
    near_zero = np.abs(np.random.default_rng(3).normal(0, 3, T))
    p = make_panel(
        [np.minimum(rising, 100.0), np.maximum(falling, 0.0), near_zero],
        ["cpu_p95", "net_in_p95", "net_out_p95"],
    )
    r = model_cls().fit(p).predict(90)
    assert r.point[0].max() <= 100.0 and r.quantiles[0].max() <= 100.0
    assert r.point.min() >= 0.0 and r.quantiles.min() >= 0.0
    if model_cls is FleetModel:  # the trend reaches the ceiling and stays clipped there
        assert r.point[0, -1] == pytest.approx(100.0)


@pytest.mark.parametrize("model_cls", MODELS)
def test_bad_arguments_are_refused(model_cls, panel):
    m = model_cls().fit(panel)
    with pytest.raises(ValueError, match="horizon must be at least 1"):
        m.predict(0)
    empty = panel.subset(np.array([], dtype=int))
    with pytest.raises(ValueError, match="empty panel"):
        model_cls().fit(empty)


@pytest.mark.parametrize("model_cls", MODELS)
def test_refit_replaces_state(model_cls, panel):
    m = model_cls()
    first = m.fit(panel).predict(10).point.copy()
    m.fit(panel.subset(np.array([0, 1])))
    again = m.predict(10)
    assert again.point.shape == (2, 10)
    np.testing.assert_allclose(again.point[0], first[0], rtol=0.2)


# --------------------------------------------------------------------------- registry


def test_registry_builds_each_model_and_rejects_unknown_names():
    assert MODEL_NAMES == ("fleet", "prophet", "naive", "profile", "gbm", "ensemble")
    assert isinstance(get_model("fleet"), FleetModel)
    assert isinstance(get_model(" Naive "), SeasonalNaiveModel)
    assert get_model("naive", season=24).season == 24
    assert get_model("fleet", level_window=7).config_for("daily").level_window == 7
    prophet = get_model("prophet", workers=1)
    assert isinstance(prophet, ForecastModel) and prophet.name == "prophet"
    with pytest.raises(
        UnknownModelError,
        match="unknown model 'arima': use one of fleet, prophet, naive, profile, gbm, ensemble",
    ):
        get_model("arima")


def test_importing_the_models_does_not_import_prophet():
    code = "import sys, forecasting.models, forecasting.backtest; print('prophet' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_fleet_settings_are_validated():
    with pytest.raises(TypeError, match=r"unknown FleetModel setting\(s\) \['smoothing'\]"):
        FleetModel(smoothing=3)
    with pytest.raises(ValueError, match="workers"):
        FleetModel(workers=-1)
    with pytest.raises(ValueError, match="chunk_size"):
        FleetModel(chunk_size=0)
    with pytest.raises(ValueError, match="horizon"):
        FleetModel(horizon=0)
    with pytest.raises(ValueError, match="season"):
        SeasonalNaiveModel(season=0)


# --------------------------------------------------------------------------- seasonal naive


def test_naive_repeats_the_last_observed_season():
    week = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0])
    row = np.concatenate([week + 10, week + 20, week])
    row[-2:] = np.nan  # the last two days missing: the previous week's values stand in
    p = make_panel([row])
    r = SeasonalNaiveModel().fit(p).predict(10)
    expected = np.array([1, 2, 3, 4, 5, 26, 27, 1, 2, 3], dtype=float)
    np.testing.assert_allclose(r.point[0], expected)


def test_naive_bands_are_the_empirical_seasonal_errors():
    rng = np.random.default_rng(0)
    row = 50 + rng.normal(0, 3, 7 * 30)
    p = make_panel([row])
    r = SeasonalNaiveModel(calibrate=False).fit(p).predict(7)  # one season ahead: k = 1 for every step
    errors = row[7:] - row[:-7]
    expected = np.quantile(errors, QUANTILES)
    for h in range(7):
        np.testing.assert_allclose(r.quantiles[0, h] - r.point[0, h], expected, atol=1e-9)


def test_naive_bands_grow_between_one_and_k_seasons():
    rng = np.random.default_rng(4)
    walk = 50 + np.cumsum(rng.normal(0, 1, 7 * 60))  # a random walk: errors grow with the lag
    p = make_panel([walk], ["net_in_p95"])
    r = SeasonalNaiveModel(calibrate=False).fit(p).predict(28)
    spread = r.quantiles[0, :, -1] - r.quantiles[0, :, 0]
    e1, e4 = walk[7:] - walk[:-7], walk[28:] - walk[:-28]
    np.testing.assert_allclose(spread[0], np.ptp(np.quantile(e1[-364:], [0.025, 0.975])), rtol=1e-9)
    np.testing.assert_allclose(spread[-1], np.ptp(np.quantile(e4[-364:], [0.025, 0.975])), rtol=1e-9)
    assert spread[-1] > 1.5 * spread[0]


def test_naive_bands_are_rescaled_by_a_hold_out_per_metric():
    rng = np.random.default_rng(6)
    T, n = 7 * 60, 60
    calm = [40 + rng.normal(0, 1, T) for _ in range(n)]
    for row in calm:
        row[-28:] += rng.normal(0, 3, 28)  # the last month is three times as noisy
    p = make_panel(calm, ["mem_p95"] * n)
    raw = SeasonalNaiveModel(calibrate=False).fit(p).predict(14)
    cal = SeasonalNaiveModel().fit(p).predict(14)
    w_raw = (raw.quantiles[:, :, 6] - raw.quantiles[:, :, 2]).mean()
    w_cal = (cal.quantiles[:, :, 6] - cal.quantiles[:, :, 2]).mean()
    assert w_cal > 1.5 * w_raw  # the hold-out saw the band miss: it widens
    np.testing.assert_allclose(cal.point, raw.point)
    assert (np.diff(cal.quantiles, axis=-1) >= 0).all()
    np.testing.assert_allclose(cal.quantiles[:, :, 4], raw.quantiles[:, :, 4])  # the median stays


def test_band_factors_and_scaling_by_hand():
    offsets = np.tile(np.array([-4.0, -3.0, -2.0, -1.0, 0.0, 1.0, 2.0, 3.0, 4.0]), (40, 1, 1))  # (40, 1, 9)
    residual = np.linspace(-4, 4, 40)[:, None]
    f = band_factors(residual, offsets, np.array(["m"] * 40))
    assert set(f) == {"*", "m"}
    inner = np.quantile(np.abs(np.linspace(-4, 4, 40)) / 1.0, 0.5)  # the 25–75 % band, half-width 1
    assert f["m"][0] == pytest.approx(inner)
    scaled = scale_bands(offsets[0, 0], np.array([2.0, 1.0, 1.0, 1.0]))
    np.testing.assert_allclose(scaled, [-4, -3, -2, -2, 0, 2, 2, 3, 4])  # nested: q10 ≤ q25 kept


def test_naive_short_and_empty_series():
    short = np.full(20, np.nan)
    short[-3:] = [4.0, 5.0, 7.0]
    empty = np.full(20, np.nan)
    p = make_panel([short, empty, seasonal_series(20, 0)])
    r = SeasonalNaiveModel().fit(p).predict(5)
    np.testing.assert_allclose(r.point[0], 7.0)  # fewer values than a season: the last value
    # too short for seasonal errors: its two lag-1 changes (+1, +2) scaled by sqrt(h)
    np.testing.assert_allclose(r.quantiles[0, 3] - 7.0, 2.0 * np.quantile([1.0, 2.0], QUANTILES))
    assert np.isnan(r.point[1]).all()
    reasons = dict(zip(r.failures["server_id"], r.failures["reason"]))
    assert reasons["srv-001"].startswith("no observations")
    assert "srv-000" not in reasons and "srv-002" not in reasons


def test_naive_helpers_by_hand():
    v = np.array([[1.0, np.nan, 3.0, 4.0], [np.nan, np.nan, np.nan, np.nan]])
    np.testing.assert_array_equal(last_valid(v), [4.0, np.nan])
    obs = ~np.isnan(v)
    np.testing.assert_array_equal(lag_errors(v, obs, 2, 10)[0], [2.0, np.nan])
    np.testing.assert_allclose(
        seasonal_naive_mae(np.array([[1.0, 2.0, 4.0, 8.0]]), np.ones((1, 4), bool), 1), [7 / 3]
    )
    tmpl = seasonal_template(np.array([[1.0, 2.0, 3.0, 4.0, 5.0]]), 2)
    np.testing.assert_array_equal(tmpl, [[4.0, 5.0]])  # phases of steps 1, 2 (positions 5, 6)


def test_nan_row_quantiles_match_numpy():
    rng = np.random.default_rng(5)
    a = rng.normal(size=(30, 50))
    a[rng.random(a.shape) < 0.3] = np.nan
    a[3] = np.nan
    got = nan_row_quantiles(a, QUANTILES)
    with np.errstate(all="ignore"), pytest.warns(RuntimeWarning):
        want = np.nanquantile(a, QUANTILES, axis=1).T
    np.testing.assert_allclose(got, want)


# --------------------------------------------------------------------------- fleet model


def test_fleet_beats_naive_on_trend_plus_seasonality(panel):
    train, H = panel.head(330), 70
    actual = panel.values[:, 330:400]
    errs = {}
    for cls in MODELS:
        r = cls().fit(train).predict(H)
        errs[cls.name] = np.abs(r.point - actual).mean()
    assert errs["fleet"] < 0.85 * errs["naive"]
    assert errs["fleet"] < 1.0  # the noise alone (σ = 1) costs 0.8


def test_fleet_falls_back_per_series_with_a_reason():
    good = [seasonal_series(300, s) for s in range(3)]
    short = np.full(300, np.nan)
    short[-(MIN_HISTORY["daily"] - 1) :] = 30.0 + np.arange(MIN_HISTORY["daily"] - 1) % 3
    constant = np.full(300, 42.0)
    empty = np.full(300, np.nan)
    p = make_panel([*good, short, constant, empty])
    r = FleetModel().fit(p).predict(14)
    assert list(r.model) == ["fleet", "fleet", "fleet", "naive", "naive", "naive"]
    np.testing.assert_allclose(r.point[4], 42.0)
    np.testing.assert_allclose(r.quantiles[4], 42.0)
    assert np.isfinite(r.point[:5]).all() and np.isnan(r.point[5]).all()
    fleet_reasons = r.failures[r.failures["model"] == "fleet"].set_index("server_id")["reason"]
    assert fleet_reasons["srv-003"].startswith("too short")
    assert fleet_reasons["srv-004"].startswith("constant")
    assert fleet_reasons["srv-005"].startswith("all gaps")
    assert fleet_reasons.str.endswith("→ seasonal naive").all()
    assert {"srv-000", "srv-001", "srv-002"}.isdisjoint(r.failures["server_id"])


def test_fleet_non_finite_series_falls_back():
    bad = seasonal_series(200, 1)
    bad[50] = np.inf  # survives into the panel only if validation was skipped
    p = make_panel([seasonal_series(200, 0), bad])
    r = FleetModel().fit(p).predict(7)
    assert r.model[0] == "fleet" and r.model[1] == "naive"
    assert r.failures.loc[r.failures["server_id"] == "srv-001", "reason"].str.startswith("non-finite").all()


def test_fleet_fits_each_series_on_its_own_observed_rows():
    """Gaps and late starts: a series' fit within a panel equals its fit alone (no leakage, no drop)."""
    T = 500
    full = seasonal_series(T, 0)
    late = seasonal_series(T, 1, level=20.0)
    late[:260] = np.nan
    gappy = seasonal_series(T, 2, level=60.0)
    gappy[100:160] = np.nan
    gappy[300:310] = np.nan
    one_variant = {"trend": False, "level_blends": (1.0,), "follow_shift": (False,)}
    together = FleetModel(**one_variant).fit(make_panel([full, late, gappy])).predict(30).point
    for i, row in enumerate([full, late, gappy]):
        alone = FleetModel(**one_variant).fit(make_panel([row])).predict(30).point[0]
        np.testing.assert_allclose(together[i], alone, rtol=1e-5, atol=1e-5)
    true_mean = np.array([40.0, 20.0, 60.0]) + 0.01 * (T + 15)  # level + slope at mid-horizon
    assert np.abs(together.mean(axis=1) - true_mean).max() < 1.5


def test_fleet_design_switches_terms_on_by_history():
    cfg = DEFAULTS["daily"]
    index = pd.date_range("2020-01-01", periods=1000, freq="D", tz="UTC")
    d = build_design(index, "daily", cfg)
    mask = np.ones((3, 1000), dtype=bool)
    mask[1, :900] = False  # 100 days: no yearly terms, no knots before its start
    mask[2, :] = False
    mask[2, 500:520] = True  # 20 days: weekly only
    on = d.active(mask)
    yearly = d.period == 365.25
    weekly = d.period == 7.0
    assert on[0, yearly].all() and not on[1, yearly].any() and on[1, weekly].all()
    cp = d.kind == "changepoint"
    knots0, knots1 = d.knot[cp][on[0, cp]], d.knot[cp][on[1, cp]]
    assert len(knots0) >= 0.7 * cfg.n_changepoints and (knots0 <= 0.8 * 1000).all()
    assert len(knots1) <= 2 and ((knots1 >= 907) & (knots1 <= 980)).all()  # own span: days 900–999
    assert on[2, weekly].all() and not on[2, yearly].any()
    off = np.zeros((3, d.n_terms), dtype=bool)
    assert (d.active(mask) == on).all() and not (on & off).any()


def test_fleet_variants_and_future_design():
    cfg = DEFAULTS["daily"]
    vs = variants(cfg)
    assert Variant(None, 1.0, True) in vs and Variant(0.0, 0.0, False) in vs
    ramps = [v for v in vs if v.ramp]
    assert ramps == [Variant(cfg.default_damping, 1.0, f, False, True) for f in cfg.follow_shift]
    assert len(vs) == len(set(vs)) == (2 * 2 + 1) * len(cfg.level_blends) * len(cfg.follow_shift) + len(ramps)
    assert not any(v.drift for v in vs if v.damping == 0.0)  # a flat trend has no drift to extend
    hourly = DEFAULTS["hourly"]
    assert variants(hourly) == [Variant(d, b, True) for d in (None, 24.0, 0.0) for b in hourly.level_blends]
    assert default_variant(hourly) == Variant(0.0, 1.0, True)  # a small hold-out: flat trend
    assert default_variant(cfg) == Variant(180.0, 1.0, False)
    index = pd.date_range("2020-01-01", periods=100, freq="D", tz="UTC")
    d = build_design(index, "daily", cfg)
    future = pd.date_range("2020-04-10", periods=50, freq="D", tz="UTC")
    slope = d.kind == "slope"
    lin = d.future(future, None)[:, slope][:, 0]
    flat = d.future(future, 0.0)[:, slope][:, 0]
    damped = d.future(future, 10.0)[:, slope][:, 0]
    np.testing.assert_allclose(np.diff(lin), 1 / 99)
    np.testing.assert_allclose(flat, 1.0)
    assert damped[-1] < lin[-1] and damped[-1] - damped[-2] < 0.05 * (lin[-1] - lin[-2])


def test_fleet_ignores_spikes():
    clean = seasonal_series(400, 3, noise=0.5)
    spiky = clean.copy()
    spiky[np.random.default_rng(9).choice(400, 20, replace=False)] += 40.0  # incidents
    p = make_panel([clean, spiky])
    r = FleetModel().fit(p).predict(28)
    assert np.abs(r.point[1] - r.point[0]).mean() < 1.0  # a least-squares fit moves ~2 points


def test_fleet_follows_a_recent_level_shift_hourly():
    T = 24 * 21
    rng = np.random.default_rng(11)
    hour = np.arange(T) % 24
    base = 10 + 3 * np.sin(2 * np.pi * hour / 24)
    rows = [base + rng.normal(0, 0.3, T) for _ in range(4)]
    rows[0][-10:] += 15.0  # the last 10 hours moved up: a migration
    p = make_panel(rows, freq="hourly")
    r = FleetModel().fit(p).predict(24)
    np.testing.assert_allclose(r.point[0] - 15.0, base[:24], atol=1.5)
    np.testing.assert_allclose(r.point[1], base[:24], atol=0.6)  # hour-of-day profile kept


def test_fleet_bands_are_calibrated_on_held_out_errors():
    rng = np.random.default_rng(12)
    T, n = 500, 120
    t = np.arange(T)
    rows = []
    for i in range(n):
        ar = np.zeros(T)
        e = rng.normal(0, 1 + (i % 4), T)
        for k in range(1, T):
            ar[k] = 0.5 * ar[k - 1] + e[k]
        rows.append(50 + 4 * np.sin(2 * np.pi * t / 7 + i) + ar)
    p = make_panel(rows, ["mem_p95"] * n)
    H = 30
    model = FleetModel().fit(p.head(T - H))
    r = model.predict(H)
    actual = p.values[:, T - H :]
    inside80 = (actual >= r.quantiles[:, :, 2]) & (actual <= r.quantiles[:, :, 6])
    inside95 = (actual >= r.quantiles[:, :, 0]) & (actual <= r.quantiles[:, :, 8])
    assert 0.72 <= inside80.mean() <= 0.88
    assert 0.88 <= inside95.mean() <= 0.99
    cal = model.calibration(H)
    assert cal.horizon == H and "mem_p95" in cal.offsets and cal.source.startswith("rolling-origin")
    assert set(cal.scores.columns) == {"group", "variant", "mase", "series"}
    assert model.calibration(H) is cal  # measured once


def test_fleet_short_history_holds_out_what_it_can():
    p = make_panel([seasonal_series(40, s) for s in range(3)])
    m = FleetModel().fit(p)
    r = m.predict(90)  # a 40-day history holds out 12 days (28 are needed to fit)
    cal = m.calibration(90)
    assert cal.horizon == 12 and cal.source == "rolling-origin errors: 1 origin(s) × 12 steps"
    width = r.quantiles[0, :, -1] - r.quantiles[0, :, 0]
    np.testing.assert_allclose(width[47] / width[11], np.sqrt(48 / 12), rtol=1e-6)  # sqrt growth
    tiny = make_panel([seasonal_series(MIN_HISTORY["daily"], s) for s in range(3)])
    m = FleetModel().fit(tiny)
    r = m.predict(30)  # nothing at all can be held out: in-sample residuals
    assert m.calibration(30).source.startswith("in-sample")
    assert set(r.model) == {"fleet"}
    assert np.isfinite(r.quantiles).all() and (np.diff(r.quantiles, axis=-1) >= 0).all()


def test_fleet_hourly_and_chunked_threaded_fit_agree():
    rng = np.random.default_rng(13)
    T = 24 * 30
    hour = np.arange(T) % 24
    rows = [20 + 5 * np.sin(2 * np.pi * (hour + i) / 24) + rng.normal(0, 1, T) for i in range(40)]
    p = make_panel(rows, freq="hourly")
    a = FleetModel(workers=1).fit(p).predict(48)
    b = FleetModel(workers=2, chunk_size=7).fit(p).predict(48)
    # the (n × T) passes run in float32: blocks of other sizes sum in another order
    np.testing.assert_allclose(a.point, b.point, rtol=1e-3, atol=1e-3)
    np.testing.assert_allclose(a.quantiles, b.quantiles, rtol=1e-3, atol=1e-3)
    assert a.index[0] == p.index[-1] + pd.Timedelta(hours=1)


def test_fleet_keeps_the_yearly_wave_only_where_the_hold_out_wants_it():
    rng = np.random.default_rng(14)
    T, n = 3 * 365, 45
    t = np.arange(T)
    seasonal = [50 + 10 * np.sin(2 * np.pi * t / 365.25 + i / 9) + rng.normal(0, 1, T) for i in range(n)]
    ramps = []
    for _ in range(n):
        start = rng.integers(T - 300, T - 150)  # a ramp the yearly terms would fold back next year
        ramps.append(30 + 0.08 * np.maximum(t - start, 0) + rng.normal(0, 0.3, T))
    p = make_panel(seasonal + ramps, ["cpu_p95"] * n + ["disk_p95"] * n)
    m = FleetModel().fit(p)
    assert m.structure["cpu_p95"] == "all seasonalities"
    assert m.structure["disk_p95"] == "without 365.25-day"
    r = m.predict(90)
    assert r.model.tolist() == ["fleet"] * (2 * n)
    cal = m.calibration(90)
    assert set(cal.variants) >= {"*", "cpu_p95", "disk_p95"}


def test_naive_blocks_give_the_same_forecast(monkeypatch, panel):
    import forecasting.models.naive as naive

    whole = SeasonalNaiveModel().fit(panel).predict(20)
    monkeypatch.setattr(naive, "BLOCK", 4)
    blocked = SeasonalNaiveModel().fit(panel).predict(20)
    np.testing.assert_array_equal(whole.point, blocked.point)
    np.testing.assert_allclose(whole.quantiles, blocked.quantiles, rtol=1e-6)


def test_a_series_gram_does_not_depend_on_the_other_rows_of_its_block():
    """A series that stops before the grid's end is fitted on its own periods, alone in its
    block or beside a full-length one (a shard holds other rows than the fleet)."""
    from forecasting.models.fleet import _run_grams

    index = pd.date_range("2025-01-01", periods=130, freq="D", tz="UTC")
    design = build_design(index, "daily", DEFAULTS["daily"])
    stops = np.ones(130, dtype=bool)
    stops[:10] = stops[120:] = False
    stops[50:60] = False
    full = np.ones(130, dtype=bool)
    alone = _run_grams(design, stops[None, :])[0]
    beside = _run_grams(design, np.vstack([stops, full]))[0]
    exact = sum(design.outer[t] for t in np.flatnonzero(stops))
    np.testing.assert_allclose(alone, exact, rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(beside, exact, rtol=1e-10, atol=1e-10)
