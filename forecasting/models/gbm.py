"""One global gradient-boosted model over every series (LightGBM), and a combination model.

Why global: a fleet's series share shapes (daily cycles, weekly rhythm, bursts that decay); one
model learns them from all series at once, where a per-series model sees a few weeks. Series
are standardised (median and seasonal-naive scale of their own history) so one tree fits all.
Features: lags 1…season and one week back, the hour of day / day of week; L1 objective (robust
to spikes; forecasts the median). Forecasts are recursive: each step's prediction becomes the
next step's lag 1.

mlforecast (Nixtla) does the same but requires pandas < 3 (mlforecast 1.1.0: `pandas<3.0`); this
uses LightGBM directly. LightGBM is imported on first use.

The combination ("ensemble") averages the profile and LightGBM point forecasts: their errors
differ (a profile lags a level change, the trees overreact to the last hours) so the mean errs
less than either; bands come from the combination's own hold-out (profile.CalibratedPointModel).
"""

from __future__ import annotations

import warnings

import numpy as np

from ..panel import Panel
from .naive import SEASON, seasonal_naive_mae
from .profile import CalibratedPointModel, ProfileModel

WEEK = {"daily": 7, "hourly": 168}
MAX_ROWS = 400_000  # training rows (series × periods) kept, most recent first


def _standardise(panel: Panel) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Values scaled per series: (y − median) / seasonal-naive MAE of its own history."""
    v = panel.values
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # an all-NaN series gets no scale below
        centre = np.nanmedian(v, axis=1) if v.size else np.empty(0)
    scale = seasonal_naive_mae(v, panel.observed, SEASON[panel.freq])
    scale = np.where(np.isfinite(scale) & (scale > 0), scale, np.nan)
    return (v - centre[:, None]) / scale[:, None], centre, scale


class GBMModel(CalibratedPointModel):
    """Global LightGBM over lag features of all series, recursive multi-step forecasts."""

    name = "gbm"

    def __init__(self, n_estimators: int = 200, learning_rate: float = 0.05, num_leaves: int = 31) -> None:
        """Tree settings (LightGBM's names); threads: LightGBM's default (all cores)."""
        super().__init__()
        self.params = {
            "objective": "l1",
            "n_estimators": n_estimators,
            "learning_rate": learning_rate,
            "num_leaves": num_leaves,
            "min_child_samples": 20,
            "subsample": 0.8,
            "subsample_freq": 1,
            "colsample_bytree": 0.9,
            "verbose": -1,
            "random_state": 0,
            "n_jobs": 1,  # OpenMP spin-waits badly on a busy 2-core machine
        }

    def _lags(self, freq: str) -> list[int]:
        return [*range(1, SEASON[freq] + 1), WEEK[freq]]

    def _train(self, panel: Panel):
        """Fit a booster on the standardised panel (None when too little data)."""
        import lightgbm as lgb

        z, _, _ = _standardise(panel)
        lags = self._lags(panel.freq)
        L = max(lags)
        n, T = z.shape
        if T <= L + 1:
            return None
        phase = self._phase(panel.index, panel.freq)
        cols = [z[:, L - lag : T - lag] for lag in lags]  # each (n, T - L): lag value at target t
        X = np.stack(cols, axis=-1).reshape(-1, len(lags))
        ph = np.broadcast_to(phase[L:][None, :, :], (n, T - L, phase.shape[1])).reshape(-1, phase.shape[1])
        y = z[:, L:].reshape(-1)
        X = np.hstack([X, ph])
        ok = np.isfinite(y) & np.isfinite(X[:, 0])
        idx = np.flatnonzero(ok)
        if idx.size < 200:
            return None
        if idx.size > MAX_ROWS:  # the most recent rows of every series
            keep = np.argsort(np.tile(np.arange(T - L), n)[idx])[-MAX_ROWS:]
            idx = idx[np.sort(keep)]
        model = lgb.LGBMRegressor(**self.params)
        model.fit(X[idx], y[idx])
        return model

    @staticmethod
    def _phase(index, freq: str) -> np.ndarray:
        """(T, 2) hour of day and day of week (daily: day of week and day of month)."""
        if freq == "hourly":
            return np.column_stack([index.hour, index.day_of_week]).astype(float)
        return np.column_stack([index.day_of_week, index.day]).astype(float)

    def _prepare(self, panel: Panel) -> None:
        self._booster = self._train(panel)

    def _point(self, panel: Panel, H: int, fitted: bool) -> np.ndarray:
        booster = self._booster if fitted else self._train(panel)
        n = panel.n_series
        if booster is None:
            return np.full((n, H), np.nan)
        z, centre, scale = _standardise(panel)
        lags = self._lags(panel.freq)
        L = max(lags)
        # the recent history, missing values carried forward so lags exist
        hist = z[:, -L:].copy()
        for j in range(1, hist.shape[1]):
            gap = np.isnan(hist[:, j])
            hist[gap, j] = hist[gap, j - 1]
        future = panel.future_index(H)
        phase = self._phase(future, panel.freq)
        out = np.empty((n, H))
        buf = np.hstack([hist, np.empty((n, H))])
        for h in range(H):
            t = L + h
            X = np.column_stack([buf[:, t - lag] for lag in lags] + [np.repeat(phase[h][None, :], n, axis=0)])
            buf[:, t] = booster.predict(X)
            out[:, h] = buf[:, t]
        return out * scale[:, None] + centre[:, None]


class EnsembleModel(CalibratedPointModel):
    """Mean of the profile and the global LightGBM point forecasts, with its own bands."""

    name = "ensemble"

    def __init__(self) -> None:
        super().__init__()
        self._members = (ProfileModel(), GBMModel())

    def _prepare(self, panel: Panel) -> None:
        for m in self._members:
            m._prepare(panel)

    def _point(self, panel: Panel, H: int, fitted: bool) -> np.ndarray:
        points = [m._point(panel, H, fitted) for m in self._members]
        return np.mean(points, axis=0)
