"""Rolling-origin backtests and accuracy measures, checked against values computed by hand."""

from __future__ import annotations

from typing import Self

import numpy as np
import pandas as pd
import pytest

from forecasting.backtest import (
    BacktestError,
    apply_selection,
    backtest,
    rolling_origins,
    select_models,
    summarize,
)
from forecasting.metrics_eval import mase_scale, score, season_of, smape_terms
from forecasting.models import ForecastModel, ForecastResult, SeasonalNaiveModel, UnknownModelError
from forecasting.panel import Panel
from forecasting.plan import BACKTEST_COLUMNS, QUANTILES


def make_panel(rows: list[list[float]], metrics: list[str] | None = None, freq: str = "daily") -> Panel:
    values = np.array(rows, dtype=float)
    n, T = values.shape
    keys = pd.DataFrame({"server_id": [f"srv-{i}" for i in range(n)], "metric": metrics or ["cpu_p95"] * n})
    index = pd.date_range("2024-01-01", periods=T, freq="D" if freq == "daily" else "h", tz="UTC")
    return Panel(keys, index, values, ~np.isnan(values), freq)


class LastValue(ForecastModel):
    """A model with known output: the last value, bands ±1 (80 %) and ±2 (95 %)."""

    name = "last"
    OFFSETS = np.array([-2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0])

    def fit(self, panel: Panel) -> Self:
        self._panel = panel
        return self

    def predict(self, horizon: int) -> ForecastResult:
        p = self._require_fitted()
        last = p.values[:, -1]
        point = np.repeat(last[:, None], horizon, axis=1)
        quantiles = point[:, :, None] + self.OFFSETS[None, None, :]
        return ForecastResult(
            p.keys, p.future_index(horizon), point, quantiles, np.full(p.n_series, self.name)
        )


# --------------------------------------------------------------------------- measures


def test_mase_scale_is_the_in_sample_seasonal_naive_mae():
    v = np.array([[1.0, 2.0, 4.0, 3.0, 7.0]])
    # lag 2: |4-1|, |3-2|, |7-4| -> mean 7/3
    np.testing.assert_allclose(mase_scale(v, np.ones_like(v, bool), 2), [7 / 3])
    obs = np.array([[True, True, False, True, True]])  # pairs touching t=2 do not count
    np.testing.assert_allclose(mase_scale(v, obs, 2), [1.0])
    assert np.isnan(mase_scale(v, obs, 5)).all()
    assert season_of("daily") == 7 and season_of("hourly") == 24


def test_smape_handles_zeros():
    got = smape_terms(np.array([0.0, 0.0, 10.0, 10.0]), np.array([0.0, 5.0, 10.0, 30.0]))
    np.testing.assert_allclose(got, [0.0, 200.0, 0.0, 100.0])


def test_score_by_hand():
    actual = np.array([[10.0, 12.0, np.nan, 9.0]])
    observed = np.array([[True, True, True, False]])  # the last one was interpolated: not scored
    point = np.array([[11.0, 11.0, 11.0, 11.0]])
    q = point[:, :, None] + LastValue.OFFSETS[None, None, :]
    s = score(actual, observed, point, q, np.array([0.5]))
    assert s.n_points[0] == 2
    np.testing.assert_allclose(s.mae, [1.0])
    np.testing.assert_allclose(s.mase, [2.0])
    np.testing.assert_allclose(s.smape, [(200 / 21 + 200 / 23) / 2])
    np.testing.assert_allclose(s.coverage_80, [1.0])  # both within ±1
    zero = score(np.array([[5.0]]), np.array([[True]]), np.array([[5.0]]), q[:, :1], np.array([0.0]))
    assert zero.mase[0] == 0.0  # a perfect forecast of a flat history
    undefined = score(np.array([[5.0]]), np.array([[True]]), np.array([[6.0]]), q[:, :1], np.array([0.0]))
    assert np.isnan(undefined.mase[0])


# --------------------------------------------------------------------------- origins


def test_rolling_origins():
    assert rolling_origins(100, 10, 3) == [70, 80, 90]
    assert rolling_origins(100, 10, 3, step=5) == [80, 85, 90]
    assert rolling_origins(100, 10, 5, min_train=65) == [70, 80, 90]  # earlier cut-offs dropped
    with pytest.raises(BacktestError, match="too short to backtest a 30-period horizon"):
        rolling_origins(40, 30, 3, min_train=28)
    with pytest.raises(BacktestError, match="at least 1 cut-off"):
        rolling_origins(100, 10, 0)
    with pytest.raises(BacktestError, match="horizon must be at least 1"):
        rolling_origins(100, 0, 3)


# --------------------------------------------------------------------------- backtest


def test_backtest_metrics_against_hand_computed_values():
    # one series, horizon 2, two cut-offs (at t=6 and t=8), season 7 (daily)
    row = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 9.0, 7.0, 12.0]
    p = make_panel([row])
    frame = backtest(p, {"last": LastValue}, horizon=2, n_cutoffs=2, min_train=6)
    assert list(frame.columns) == BACKTEST_COLUMNS and len(frame) == 1
    r = frame.iloc[0]
    # cut-off 6: history 1..6 -> forecast 6; actuals 8, 9 -> errors 2, 3; scale: no lag-7 pair -> NaN
    # cut-off 8: history ..9 -> forecast 9; actuals 7, 12 -> errors 2, 3; scale |9-1| = 8 (t=7 vs 0)
    assert r["mae"] == pytest.approx(2.5)
    assert r["mase"] == pytest.approx(2.5 / 8.0)  # only the cut-off with a defined scale
    smape_6 = (200 * 2 / 14 + 200 * 3 / 15) / 2
    smape_8 = (200 * 2 / 16 + 200 * 3 / 21) / 2
    assert r["smape"] == pytest.approx((smape_6 + smape_8) / 2)
    assert r["coverage_80"] == 0.0  # every error exceeds ±1
    assert r["coverage_95"] == 0.5  # the errors of 2 sit on the ±2 band (inclusive), those of 3 not
    assert r["n_cutoffs"] == 2 and r["model"] == "last"


def test_backtest_coverage_by_hand():
    row = [5.0] * 8 + [5.5, 6.5, 4.9, 7.5]  # errors vs last value 5: 0.5, 1.5, -0.1, 2.5
    p = make_panel([row])
    r = backtest(p, {"last": LastValue}, horizon=4, n_cutoffs=1, min_train=8).iloc[0]
    assert r["coverage_80"] == pytest.approx(0.5)  # 0.5 and -0.1 within ±1
    assert r["coverage_95"] == pytest.approx(0.75)  # 2.5 is outside ±2
    assert r["mae"] == pytest.approx(np.mean([0.5, 1.5, 0.1, 2.5]))
    assert np.isnan(r["mase"])  # a flat history has no naive error to scale by


def test_backtest_scores_observed_actuals_only_and_counts_cutoffs():
    row = np.arange(30, dtype=float)
    late = np.full(30, np.nan)
    late[22:] = 1.0  # starts after the first cut-off
    p = make_panel([row, late])
    p.observed[0, 27] = False  # an interpolated period is never scored
    f = backtest(p, {"last": LastValue}, horizon=4, n_cutoffs=2, min_train=10)
    assert list(f["n_cutoffs"]) == [2, 1]
    first = f.iloc[0]
    # cut-off 22: last value 21, actuals 22..25 -> errors 1..4; cut-off 26: 25, actuals 26, (27), 28, 29
    assert first["mae"] == pytest.approx((2.5 + (1 + 3 + 4) / 3) / 2)


def test_backtest_by_registry_names_and_errors():
    rng = np.random.default_rng(0)
    rows = [50 + 5 * np.sin(np.arange(120) * 2 * np.pi / 7) + rng.normal(0, 1, 120) for _ in range(3)]
    p = make_panel(rows)
    f = backtest(p, ["naive", "fleet"], horizon=14, n_cutoffs=2)
    assert list(f["model"]) == ["naive"] * 3 + ["fleet"] * 3
    assert (f["n_cutoffs"] == 2).all() and f[["mase", "smape", "mae"]].notna().all().all()
    s = summarize(f)
    assert list(s.index) == ["naive", "fleet"] and (s["series"] == 3).all()
    assert s.loc["fleet", "mae"] < s.loc["naive", "mae"]
    with pytest.raises(UnknownModelError, match="unknown model 'arima'"):
        backtest(p, ["naive", "arima"], horizon=14)
    with pytest.raises(BacktestError, match="no models"):
        backtest(p, [], horizon=14)
    with pytest.raises(BacktestError, match="too short"):
        backtest(p, "naive", horizon=100)


# --------------------------------------------------------------------------- selection


def frame(rows: list[tuple[str, str, str, float, float]]) -> pd.DataFrame:
    f = pd.DataFrame(rows, columns=["server_id", "metric", "model", "mase", "coverage_80"])
    f["smape"] = f["mae"] = 1.0
    f["coverage_95"] = 0.95
    f["n_cutoffs"] = 3
    return f[BACKTEST_COLUMNS]


def test_select_models_by_lowest_score_with_ties_and_missing():
    f = frame(
        [
            ("a", "cpu_p95", "fleet", 0.8, 0.5),
            ("a", "cpu_p95", "naive", 1.0, 0.78),
            ("b", "cpu_p95", "fleet", 1.2, 0.8),
            ("b", "cpu_p95", "naive", 1.2, 0.8),  # tie: the first model listed
            ("c", "mem_p95", "fleet", np.nan, np.nan),
            ("c", "mem_p95", "naive", np.nan, np.nan),
        ]
    )
    sel = select_models(f)
    assert sel[("a", "cpu_p95")] == "fleet" and sel[("b", "cpu_p95")] == "fleet"
    assert sel[("c", "mem_p95")] == "fleet"  # nothing scored: the default (first model)
    assert select_models(f, default="naive")[("c", "mem_p95")] == "naive"
    by_cov = select_models(f.iloc[:2], by="coverage_80")  # 0.78 is closer to 80 % than 0.5
    assert by_cov[("a", "cpu_p95")] == "naive"
    with pytest.raises(BacktestError, match="cannot select models by 'r2'"):
        select_models(f, by="r2")
    assert select_models(f.iloc[:0]).empty


def test_apply_selection_takes_each_series_from_its_model():
    rows = [[1.0] * 30, [2.0] * 30]
    p = make_panel(rows)
    a = LastValue().fit(p).predict(3)
    b = SeasonalNaiveModel().fit(p).predict(3)
    b.point = b.point + 10.0
    sel = pd.Series(["naive"], index=pd.MultiIndex.from_tuples([("srv-1", "cpu_p95")]))
    out = apply_selection({"last": a, "naive": b}, sel)
    np.testing.assert_allclose(out.point[0], 1.0)  # not in the selection: the first result
    np.testing.assert_allclose(out.point[1], 12.0)
    assert list(out.model) == ["last", "naive"]
    assert out.quantiles.shape == (2, 3, len(QUANTILES))
    with pytest.raises(BacktestError, match="without a forecast"):
        apply_selection({"last": a}, sel)
    with pytest.raises(BacktestError, match="same series"):
        apply_selection(
            {"last": a, "naive": SeasonalNaiveModel().fit(p.subset(np.array([0]))).predict(3)}, sel
        )
