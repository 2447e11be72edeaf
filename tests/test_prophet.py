"""Prophet per series: output contract, naive fallbacks, calendar regressors, parallel = serial,
warm-start refits, silenced Stan."""

from __future__ import annotations

import logging
import os
import tempfile

import numpy as np
import pandas as pd
import pytest

from forecasting.calendar import CALENDAR_FEATURES
from forecasting.models.base import NotFittedError
from forecasting.models.naive import SeasonalNaiveModel
from forecasting.models.prophet import ProphetModel, _spec
from forecasting.panel import Panel
from forecasting.plan import QUANTILES
from forecasting.schema import MIN_HISTORY, SchemaError

H = 14


def make_panel(series: dict[tuple[str, str], np.ndarray], start: str, freq: str = "daily") -> Panel:
    """A panel straight from arrays (NaN = missing), so edge cases need no validation round-trip."""
    values = np.vstack(list(series.values())).astype(float)
    index = pd.date_range(start, periods=values.shape[1], freq={"daily": "D", "hourly": "h"}[freq], tz="UTC")
    keys = pd.DataFrame(list(series), columns=["server_id", "metric"])
    return Panel(keys, index, values, ~np.isnan(values), freq)


def daily_panel(T: int = 120, seed: int = 0) -> Panel:
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    index = pd.date_range("2024-01-01", periods=T, freq="D", tz="UTC")
    month_end = np.asarray(index.days_in_month - index.day < 3)
    short = np.full(T, np.nan)
    short[-10:] = 50 + rng.normal(0, 1, 10)
    series = {
        # ends near 99 and climbs 0.5/day: the raw forecast runs past 100 within the horizon
        ("srv-a", "cpu_p95"): np.clip(
            40 + 0.5 * t + 3 * np.sin(2 * np.pi * t / 7) + rng.normal(0, 1, T), 0, 100
        ),
        # falls towards 0: the raw forecast goes negative
        ("srv-a", "net_in_p95"): np.maximum(0, 130 - 1.1 * t + rng.normal(0, 2, T)),
        ("srv-b", "mem_p95"): 55 + 6 * np.sin(2 * np.pi * t / 7) + 12 * month_end + rng.normal(0, 1, T),
        ("srv-c", "cpu_p95"): np.full(T, 37.0),
        ("srv-d", "cpu_p95"): short,
        ("srv-e", "disk_p95"): np.full(T, np.nan),
    }
    return make_panel(series, "2024-01-01")


def hourly_panel(start: str = "2024-03-20", days: int = 14, n: int = 4, seed: int = 1) -> Panel:
    rng = np.random.default_rng(seed)
    T = days * 24
    t = np.arange(T)
    series = {
        (f"srv-{i}", "cpu_p95"): 30
        + 3 * i
        + 15 * np.sin(2 * np.pi * t / 24)
        + 4 * np.sin(2 * np.pi * t / 168)
        + rng.normal(0, 2, T)
        for i in range(n)
    }
    return make_panel(series, start, "hourly")


@pytest.fixture(scope="module")
def daily():
    panel = daily_panel()
    model = ProphetModel(workers=1).fit(panel)
    return panel, model, model.predict(H)


# --------------------------------------------------------------------------- contract


def test_result_shapes_index_and_models(daily):
    panel, _, res = daily
    n = panel.n_series
    assert res.point.shape == (n, H)
    assert res.quantiles.shape == (n, H, len(QUANTILES))
    assert res.index.equals(panel.future_index(H))
    pd.testing.assert_frame_equal(res.keys, panel.keys)
    assert list(res.model) == ["prophet", "prophet", "prophet", "naive", "naive", "naive"]
    frame = res.to_frame()
    assert len(frame) == n * H


def test_quantiles_ordered_and_bounded(daily):
    _, _, res = daily
    fitted = res.model == "prophet"
    q, point = res.quantiles[fitted], res.point[fitted]
    assert np.isfinite(q).all() and np.isfinite(point).all()
    assert (np.diff(q, axis=-1) >= 0).all()
    # Percent series: clipped to 100 although its trend runs past it; rate series: floored at 0.
    assert q[0].max() == 100.0 and point[0].max() == 100.0 and q[0].min() >= 0
    assert q[1].min() == 0.0 and point[1].min() == 0.0
    assert (q[2] >= 0).all() and (q[2] <= 100).all()
    # The band is a real band: the outer quantiles are apart where nothing is clipped.
    assert (q[2, :, -1] - q[2, :, 0]).min() > 1.0


def test_point_tracks_the_signal(daily):
    _, _, res = daily
    # srv-b mem_p95 sits at 55 ± 6 with +12 on the last 3 days of a month; the horizon starts
    # 2024-04-30 (a month-end) then runs through early May.
    mem = res.point[2]
    assert 58 < mem[0] < 75  # month-end bump learnt from the calendar regressor
    assert 45 < mem[3:].mean() < 62


def test_predict_before_fit_raises():
    model = ProphetModel(workers=1)
    with pytest.raises(NotFittedError):
        model.predict(H)
    with pytest.raises(NotFittedError):
        model.fitted_model("srv-a", "cpu_p95")


# --------------------------------------------------------------------------- fallbacks


def test_unfittable_series_fall_back_to_naive_with_reasons(daily):
    panel, model, res = daily
    own = res.failures[res.failures["model"] == "prophet"].set_index(["server_id", "metric"])["reason"]
    assert own[("srv-c", "cpu_p95")] == "constant: every observed value is 37"
    assert own[("srv-d", "cpu_p95")] == f"too short: 10 observed periods, {MIN_HISTORY['daily']} needed"
    assert own[("srv-e", "disk_p95")] == "no observed values"
    assert len(own) == 3
    rows = np.array([3, 4, 5])
    naive = SeasonalNaiveModel().fit(panel.subset(rows)).predict(H)
    np.testing.assert_array_equal(res.point[rows], naive.point)
    np.testing.assert_array_equal(res.quantiles[rows], naive.quantiles)
    # The naive model's own verdict on the empty series is passed on, not swallowed.
    assert ((res.failures["model"] == "naive") & (res.failures["server_id"] == "srv-e")).any()
    info = model.fit_info
    assert list(info["status"]) == ["fitted"] * 3 + ["fallback"] * 3
    assert info["reason"].iloc[:3].isna().all()


def test_stan_error_falls_back_per_series(monkeypatch):
    import prophet

    panel = hourly_panel(n=2)
    real_fit = prophet.Prophet.fit

    def flaky_fit(self, df, **kwargs):
        if df["y"].iloc[0] > 31:  # srv-1 only (its level is 3 points higher)
            raise RuntimeError("Error during optimization! Command 'prophet_model.bin' failed")
        return real_fit(self, df, **kwargs)

    monkeypatch.setattr(prophet.Prophet, "fit", flaky_fit)
    res = ProphetModel(workers=1).fit(panel).predict(6)
    assert list(res.model) == ["prophet", "naive"]
    (reason,) = res.failures.loc[res.failures["server_id"] == "srv-1", "reason"]
    assert reason.startswith("prophet fit failed (RuntimeError: Error during optimization!")
    assert np.isfinite(res.point).all()


def test_predict_error_falls_back_per_series(monkeypatch):
    import prophet

    panel = hourly_panel(n=2)
    model = ProphetModel(workers=1).fit(panel)

    def broken(self, df, vectorized=True):
        raise ValueError("draws exploded")

    monkeypatch.setattr(prophet.Prophet, "predictive_samples", broken)
    res = model.predict(6)
    assert list(res.model) == ["naive", "naive"]
    assert set(res.failures["reason"]) == {"prophet predict failed (ValueError: draws exploded)"}


# --------------------------------------------------------------------------- calendar & seasonality


def test_calendar_regressors_and_daily_seasonalities(daily):
    _, model, _ = daily
    m = model.fitted_model("srv-b", "mem_p95")
    assert list(m.extra_regressors) == CALENDAR_FEATURES  # Jan–Apr 2024: month/quarter ends, holidays
    assert set(m.seasonalities) == {"weekly"}  # 120 days: too short for a yearly cycle
    assert m.mcmc_samples == 0 and m.uncertainty_samples == 200
    assert model.fitted_model("srv-c", "cpu_p95") is None  # fell back
    with pytest.raises(KeyError, match="srv-zzz"):
        model.fitted_model("srv-zzz", "cpu_p95")


def test_hourly_seasonalities_and_only_varying_regressors():
    # 2024-03-20 .. 04-02 holds a month- and quarter-end and Good Friday / Easter Monday.
    around_quarter_end = ProphetModel(workers=1).fit(hourly_panel(n=1))
    m = around_quarter_end.fitted_model("srv-0", "cpu_p95")
    assert set(m.seasonalities) == {"daily", "weekly"}
    assert list(m.extra_regressors) == CALENDAR_FEATURES
    # 2024-04-08 .. 04-20 holds none of them: a constant regressor would only add noise.
    quiet = ProphetModel(workers=1).fit(hourly_panel(start="2024-04-08", days=12, n=1))
    m = quiet.fitted_model("srv-0", "cpu_p95")
    assert set(m.seasonalities) == {"daily"}  # 12 days: under two weekly cycles
    assert list(m.extra_regressors) == []


def test_yearly_seasonality_needs_two_years_of_daily_history():
    day = 86_400 * 10**9
    calendar = np.zeros((2, len(CALENDAR_FEATURES)))
    hour = day // 24
    # 730 daily periods (first to last stamp 729 days apart) cover two years; 729 do not.
    assert _spec("daily", np.array([0, 729 * day]), calendar).seasonalities == ("weekly", "yearly")
    assert _spec("daily", np.array([0, 728 * day]), calendar).seasonalities == ("weekly",)
    assert _spec("daily", np.array([0, 13 * day]), calendar).seasonalities == ("weekly",)
    assert _spec("daily", np.array([0, 12 * day]), calendar).seasonalities == ()
    assert _spec("hourly", np.array([0, 14 * day - hour]), calendar).seasonalities == ("daily", "weekly")
    assert _spec("hourly", np.array([0, 14 * day - 2 * hour]), calendar).seasonalities == ("daily",)


# --------------------------------------------------------------------------- parallel, determinism


def test_parallel_equals_in_process(caplog):
    panel = hourly_panel(n=4)
    seen: list[tuple[int, int]] = []
    with caplog.at_level(logging.WARNING, logger="forecasting.models.prophet"):
        par = ProphetModel(workers=2, progress=lambda done, total: seen.append((done, total))).fit(panel)
        res_par = par.predict(12)
    assert not [r for r in caplog.records if "process pool failed" in r.getMessage()]
    res_seq = ProphetModel(workers=1).fit(panel).predict(12)
    np.testing.assert_array_equal(res_par.point, res_seq.point)
    np.testing.assert_array_equal(res_par.quantiles, res_seq.quantiles)
    assert list(res_par.model) == list(res_seq.model) == ["prophet"] * 4
    assert seen[-1] == (4, 4) and len(seen) >= 2  # chunks reported as they finish


def test_repeatable_and_leaves_global_rng_alone(daily):
    _, model, res = daily
    np.random.seed(123)
    before = np.random.get_state()[1].copy()
    again = model.predict(H)
    assert np.array_equal(np.random.get_state()[1], before)
    np.testing.assert_array_equal(again.point, res.point)
    np.testing.assert_array_equal(again.quantiles, res.quantiles)


def test_seed_changes_the_draws_not_the_point():
    panel = hourly_panel(n=1)
    a = ProphetModel(workers=1, seed=0).fit(panel).predict(6)
    b = ProphetModel(workers=1, seed=1).fit(panel).predict(6)
    np.testing.assert_allclose(a.point, b.point)
    assert not np.array_equal(a.quantiles, b.quantiles)


# --------------------------------------------------------------------------- warm start


def test_warm_start_refit_when_history_only_grew():
    full = hourly_panel(days=16, n=3)
    model = ProphetModel(workers=1)
    model.fit(full.head(full.length - 24 * 3))  # 13 days: no weekly seasonality yet
    assert not model.fit_info["warm_start"].any()  # nothing to start from yet
    model.fit(full.head(full.length - 24))  # 15 days: weekly joins, the old optimum has the wrong shape
    assert not model.fit_info["warm_start"].any()

    revised = full.values.copy()
    revised[2, 5] += 10.0  # srv-2's past was rewritten: its old optimum no longer applies
    grown = Panel(full.keys, full.index, revised, full.observed, full.freq)
    res_warm = model.fit(grown).predict(12)
    assert list(model.fit_info["warm_start"]) == [True, True, False]

    cold = ProphetModel(workers=1, warm_start=False).fit(grown)
    assert not cold.fit_info["warm_start"].any()
    res_cold = cold.predict(12)
    # Same optimum from a different starting point (to the optimiser's tolerance).
    np.testing.assert_allclose(res_warm.point, res_cold.point, atol=0.5)

    model.fit(grown)  # an identical refit is "grown by nothing"
    assert model.fit_info["warm_start"].all()


# --------------------------------------------------------------------------- quiet & tidy


def test_stan_output_silenced_and_no_files_left(capfd, monkeypatch, tmp_path):
    import cmdstanpy

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # Stan run directories land here
    panel = hourly_panel(n=1)
    capfd.readouterr()
    ProphetModel(workers=1).fit(panel).predict(6)
    out, err = capfd.readouterr()
    assert out == "" and err == ""
    assert logging.getLogger("cmdstanpy").disabled
    assert list(tmp_path.iterdir()) == []  # each fit's CSV/console directory is removed
    leftovers = [f for _, _, files in os.walk(cmdstanpy._TMPDIR) for f in files]
    assert leftovers == []  # Stan's JSON inputs too


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"workers": -1}, "workers must be an integer ≥ 0"),
        ({"workers": 1.5}, "workers must be an integer ≥ 0"),
        ({"uncertainty_samples": 1000}, r"uncertainty_samples must be in \[40, 200\]"),
        ({"uncertainty_samples": 10}, r"uncertainty_samples must be in \[40, 200\]"),
    ],
)
def test_bad_constructor_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ProphetModel(**kwargs)


def test_bad_panel_and_horizon(daily):
    _, model, _ = daily
    with pytest.raises(ValueError, match="horizon must be a positive integer"):
        model.predict(0)
    with pytest.raises(ValueError, match="horizon must be a positive integer"):
        model.predict(2.5)
    empty = Panel(
        pd.DataFrame({"server_id": [], "metric": []}),
        pd.date_range("2024-01-01", periods=3, freq="D", tz="UTC"),
        np.zeros((0, 3)),
        np.zeros((0, 3), bool),
        "daily",
    )
    with pytest.raises(ValueError, match="panel has no series"):
        ProphetModel(workers=1).fit(empty)
    weekly = hourly_panel(n=1)
    weekly.freq = "weekly"
    with pytest.raises(SchemaError, match="unknown frequency 'weekly'"):
        ProphetModel(workers=1).fit(weekly)
