"""Per-series trend choice, recent ramps, per-variant bands, and the profile / LightGBM /
ensemble models (interface, registry, the real Azure copy)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.backtest import backtest, summarize
from forecasting.models import MODEL_NAMES, FleetModel, get_model
from forecasting.models.fleet import DEFAULTS, Variant, _HoldOut, _series_choice, _series_ramp, variants
from forecasting.panel import Panel, build_panel
from forecasting.plan import QUANTILES
from forecasting.settings import Settings

AZURE = Path(__file__).parent / "data" / "azure"


def daily_panel(rows: list[np.ndarray], metric: str = "disk_p95") -> Panel:
    values = np.vstack(rows).astype(float)
    n, T = values.shape
    keys = pd.DataFrame({"server_id": [f"srv-{i:03d}" for i in range(n)], "metric": [metric] * n})
    index = pd.date_range("2022-01-03", periods=T, freq="D", tz="UTC")
    return Panel(keys, index, values, ~np.isnan(values), "daily")


def flat(T: int, seed: int, level: float = 40.0, noise: float = 1.0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(T)
    return level + 2.0 * np.sin(2 * np.pi * t / 7) + noise * rng.standard_normal(T)


def ramp_series(T: int, seed: int, start_before_end: int, slope: float, level: float = 40.0) -> np.ndarray:
    """Flat until `start_before_end` days before the end, then rising `slope` per day."""
    y = flat(T, seed, level)
    t = np.arange(T)
    return y + slope * np.maximum(t - (T - start_before_end), 0)


@pytest.mark.slow
def test_a_recent_ramp_is_extended_and_crosses_near_the_true_date():
    T, H, slope, began = 730, 90, 0.35, 60
    rows = [flat(T, s) for s in range(40)] + [ramp_series(T, 100, began, slope)]
    r = FleetModel(horizon=H).fit(daily_panel(rows)).predict(H)
    q50 = r.quantiles[-1, :, QUANTILES.index(0.5)]
    end_level = 40.0 + slope * began
    threshold = 80.0
    true_day = (threshold - end_level) / slope  # days after the end of history
    crossing = np.flatnonzero(q50 >= threshold)
    assert crossing.size, "the ramp was damped away: no crossing within the horizon"
    assert abs((crossing[0] + 1) - true_day) <= 7
    lo, hi = r.quantiles[-1, -1, QUANTILES.index(0.1)], r.quantiles[-1, -1, QUANTILES.index(0.9)]
    truth = end_level + slope * H
    assert lo < truth < hi  # the ramp's own band holds the truth at the horizon


@pytest.mark.slow
def test_a_flat_noisy_series_gets_no_invented_trend():
    T, H = 730, 90
    rows = [flat(T, s, noise=3.0) for s in range(40)]
    m = FleetModel(horizon=H).fit(daily_panel(rows))
    r = m.predict(H)
    assert (m.series_variants["ramp_per_period"] == 0).all()
    drift = r.point[:, -7:].mean(axis=1) - r.point[:, :7].mean(axis=1)
    assert np.abs(drift).max() < 3.0  # 90 days on: still at its level (noise σ = 3)


def _held(mase: np.ndarray, rows: np.ndarray) -> _HoldOut:
    V, m = mase.shape
    return _HoldOut(rows, np.zeros((V, m, 1), dtype=np.float32), mase, np.zeros(m, dtype=bool))


def test_per_series_choice_shrinks_a_single_noisy_series_to_the_group():
    cfg = DEFAULTS["daily"]
    cands = variants(cfg)
    V, n = len(cands), 60
    rng = np.random.default_rng(0)
    g = 0
    # two origins per series; every variant is as good as the group's up to noise ...
    mase = 1.0 + 0.05 * rng.standard_normal((V, 2 * n))
    mase[g] = 0.98  # the group's choice: the best on average
    rows = np.tile(np.arange(n), 2)
    # ... except series 0, whose variant 3 won by luck at one origin and lost at the other
    mase[3, 0], mase[3, n] = 0.6, 1.3
    pick = np.full(2 * n, g)
    groups = np.full(2 * n, "*", dtype=object)
    none = np.zeros(n, dtype=bool)
    choice, _ = _series_choice(_held(mase, rows), pick, groups, cands, none, cfg, n)
    assert choice[0] == -1  # keeps the group's variant
    # a series that wins clearly and consistently does get its own variant
    mase[5, 1], mase[5, n + 1] = 0.3, 0.35
    mase[5, 2], mase[5, n + 2] = 0.3, 0.32
    choice, _ = _series_choice(_held(mase, rows), pick, groups, cands, none, cfg, n)
    assert choice[1] == 5 and choice[2] == 5
    assert (choice[3:] == -1).mean() > 0.9


def series_panel(freq: str = "hourly", n: int = 6, T: int = 24 * 35) -> Panel:
    rng = np.random.default_rng(1)
    t = np.arange(T)
    per = 24 if freq == "hourly" else 7
    rows = [30 + 20 * np.sin(2 * np.pi * t / per + i) + 3 * rng.standard_normal(T) for i in range(n)]
    values = np.clip(np.vstack(rows), 0, 100)
    values[-1] = np.nan  # nothing to forecast: reported, naive fallback
    keys = pd.DataFrame({"server_id": [f"srv-{i}" for i in range(n)], "metric": ["cpu_p95"] * n})
    index = pd.date_range("2024-01-01", periods=T, freq="h" if freq == "hourly" else "D", tz="UTC")
    return Panel(keys, index, values, ~np.isnan(values), freq)


@pytest.mark.parametrize(
    "name",
    [
        "profile",
        pytest.param("gbm", marks=pytest.mark.slow),
        pytest.param("ensemble", marks=pytest.mark.slow),
    ],
)
def test_new_models_keep_the_interface(name):
    panel = series_panel()
    r = get_model(name).fit(panel).predict(48)
    n = panel.n_series
    assert r.point.shape == (n, 48) and r.quantiles.shape == (n, 48, len(QUANTILES))
    assert len(r.index) == 48 and r.index[0] > panel.index[-1]
    ok = np.isfinite(r.quantiles[:-1]).all()
    assert ok and (np.diff(r.quantiles[:-1], axis=-1) >= 0).all()
    assert (r.quantiles[:-1] >= 0).all() and (r.quantiles[:-1] <= 100).all()
    assert r.model[0] == name
    assert "srv-5" in set(r.failures["server_id"])  # the empty series is reported
    # the forecast follows the daily cycle (not a flat line)
    assert np.std(r.point[0]) > 5


def test_registry_settings_and_cli_know_the_new_models(monkeypatch):
    for name in ("profile", "gbm", "ensemble"):
        assert name in MODEL_NAMES and get_model(name).name == name
        monkeypatch.setenv("CAPFC_MODEL", name)
        assert Settings().model == name
    from forecasting.cli import build_parser

    args = build_parser().parse_args(["run", "--model", "ensemble"])
    assert args.model == "ensemble"


def azure_panel() -> Panel:
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
    from real_data import azure_metrics

    return build_panel(azure_metrics(AZURE), "hourly")


@pytest.mark.slow
def test_default_hourly_model_beats_the_seasonal_naive_on_real_azure_vms():
    panel = azure_panel()
    assert panel.n_series == 12
    default = Settings().model
    frame = backtest(panel, [default, "naive"], horizon=168, n_cutoffs=2, step=168)
    s = summarize(frame)
    assert s.loc[default, "mase"] < 0.9 * s.loc["naive", "mase"]
    assert 0.7 <= s.loc[default, "coverage_80"] <= 0.9


def test_variant_labels_name_the_ramp():
    assert "recent ramp" in Variant(None, 1.0, False, False, True).label()


def yearly(T: int, seed: int | None, level: float = 40.0, amplitude: float = 8.0) -> np.ndarray:
    """A weekly cycle, a yearly wave (trough in mid-January), noise (none with seed None)."""
    t = np.arange(T)
    wave = amplitude * np.sin(2 * np.pi * (t - 120) / 365.25)
    noise = 0.0 if seed is None else np.random.default_rng(seed).standard_normal(T)
    return level + wave + 2.0 * np.sin(2 * np.pi * t / 7) + noise


def test_a_ramp_on_a_yearly_season_is_not_absorbed_by_the_yearly_wave():
    """A ramp of the last 120 days on top of a yearly season: the yearly Fourier terms could
    absorb it and extrapolate a dip; detected on the series itself, it is extended instead.
    A series with the season alone gets no invented crossing."""
    T, H, slope, began, threshold = 3 * 365, 90, 0.3, 120, 80.0
    ramp = yearly(T, 100) + slope * np.maximum(np.arange(T) - (T - began), 0)
    rows = [yearly(T, s) for s in range(30)] + [ramp]
    m = FleetModel(horizon=H).fit(daily_panel(rows))
    r = m.predict(H)
    q50 = r.quantiles[:, :, QUANTILES.index(0.5)]
    truth = (yearly(T + H, None) + slope * np.maximum(np.arange(T + H) - (T - began), 0))[T:]
    true_day = int(np.argmax(truth >= threshold)) + 1
    assert (truth >= threshold).any() and 10 <= true_day <= 80
    crossing = np.flatnonzero(q50[-1] >= threshold)
    assert crossing.size, "the ramp was absorbed: no crossing within the horizon"
    assert abs((crossing[0] + 1) - true_day) <= 7
    sv = m.series_variants
    assert sv["series_ramp_per_period"].iloc[-1] > 0
    assert (sv["series_ramp_per_period"].iloc[:-1] == 0).all()  # the season alone is no ramp
    assert (q50[:-1] < 60.0).all()  # ... and crosses nothing (its peak is 48 + weekly + noise)


def weekend_peaks(T: int, seed: int | None, level: np.ndarray | float = 30.0) -> np.ndarray:
    """Load whose weekend batch peaks are a share of the level (×1.7 on Saturdays and Sundays,
    ×0.95 on weekdays): multiplicative, as when more users bring more of the same work."""
    days = pd.date_range("2022-01-03", periods=T, freq="D", tz="UTC")  # daily_panel's grid
    shape = np.where(days.day_of_week >= 5, 1.7, 0.95)
    noise = 0.0 if seed is None else 0.02 * np.random.default_rng(seed).standard_normal(T)
    return level * shape * (1.0 + noise)


@pytest.mark.slow
def test_a_ramp_with_weekly_peaks_that_grow_with_it_is_caught_on_its_peaks():
    """A ramp of the last 120 days whose weekend peaks grow with the level: weekly terms fitted
    at the older, lower level would forecast peaks that are too small and no crossing; scaled
    to the ramp's level they cross the threshold on the weekend the truth does. The same shape
    without a ramp gets no invented crossing."""
    T, H, slope, began, threshold = 3 * 365, 90, 0.1, 120, 80.0

    def level(n: int) -> np.ndarray:
        return 30.0 + slope * np.maximum(np.arange(n) - (T - began), 0)

    rows = [weekend_peaks(T, s) for s in range(30)] + [weekend_peaks(T, 100, level(T))]
    m = FleetModel(horizon=H).fit(daily_panel(rows, metric="cpu_p95"))
    q50 = m.predict(H).quantiles[:, :, QUANTILES.index(0.5)]
    truth = weekend_peaks(T + H, None, level(T + H))[T:]
    assert weekend_peaks(T, None, level(T)).max() < threshold  # below it throughout history
    true_day = int(np.argmax(truth >= threshold)) + 1
    assert (truth >= threshold).any() and 30 <= true_day <= 70
    assert m.series_variants["series_ramp_per_period"].iloc[-1] > 0
    crossing = np.flatnonzero(q50[-1] >= threshold)
    assert crossing.size, "the weekend peaks were forecast at their old size: no crossing"
    assert abs((crossing[0] + 1) - true_day) <= 7
    assert (q50[:-1] < 60.0).all()  # flat servers: peaks of 51 + noise, nothing crosses


def wander(T: int, seed: int, sd: float = 1.5, phi: float = 0.97) -> np.ndarray:
    """AR(1) noise that wanders for weeks (memory's): marginal sd `sd`, lag-one correlation `phi`."""
    rng = np.random.default_rng(seed)
    e = rng.standard_normal(T) * sd * np.sqrt(1 - phi**2)
    x = np.empty(T)
    x[0] = rng.standard_normal() * sd
    for t in range(1, T):
        x[t] = phi * x[t - 1] + e[t]
    return x


@pytest.mark.slow
def test_a_slow_ramp_under_wandering_noise_is_evident_over_half_a_year():
    """A memory-like series: a slow ramp for half a year under noise that wanders for weeks. Its
    quarter-long slope stays within the spread of its history's (the quarter test alone misses
    it); over half a year it stands out, and it is extended to a crossing. Wandering series
    without a ramp are not ramps."""
    T, H, slope, began, threshold = 3 * 365, 90, 0.1, 180, 85.0
    rise = slope * np.maximum(np.arange(T + H) - (T - began), 0)
    rows = [60.0 + wander(T, s) for s in range(30)] + [60.0 + wander(T, 100) + rise[:T]]
    panel = daily_panel(rows, metric="mem_p95")
    quarter_only = dataclasses.replace(DEFAULTS["daily"], series_ramp_long_weeks=0)
    alone, _, _ = _series_ramp(panel.values, panel.observed, "daily", quarter_only)
    assert not alone.any()  # the quarter's test alone: no ramp anywhere
    m = FleetModel(horizon=H).fit(panel)
    sv = m.series_variants
    assert sv["series_ramp_per_period"].iloc[-1] > 0
    assert (sv["series_ramp_per_period"].iloc[:-1] == 0).all()
    q50 = m.predict(H).quantiles[:, :, QUANTILES.index(0.5)]
    true_day = (threshold - 60.0 - slope * began) / slope  # 70 days after the end
    crossing = np.flatnonzero(q50[-1] >= threshold)
    assert crossing.size, "the slow ramp was not extended: no crossing within the horizon"
    assert abs((crossing[0] + 1) - true_day) <= 7
    assert (q50[:-1] < 70.0).all()
