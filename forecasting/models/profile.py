"""A robust seasonal profile model, and the calibration every point model here shares.

Why a profile: real VM load repeats by hour of day (backups, batch windows, office hours), and
the median of the last N days at each hour ignores the odd spike or outage that a seasonal naive
would copy forward for a whole day. On the Azure VM traces it beats repeating yesterday.

Why its bands hold: quantiles are not assumed; the same model is refit on the history before the
last horizon, its errors on that horizon (standardised by each series' seasonal-naive scale) are
pooled per metric and per step (fleet._pool), and those offsets, times each series' scale, are
the bands — a split-conformal band per horizon step.
"""

from __future__ import annotations

import abc
import warnings
from typing import ClassVar, Self

import numpy as np
import pandas as pd

from ..panel import Panel
from .base import ForecastModel, ForecastResult, finalize
from .naive import SEASON, SeasonalNaiveModel, _failures, seasonal_naive_mae

MIN_POOL = 30  # series with hold-out errors before a metric gets its own band table


class CalibratedPointModel(ForecastModel):
    """A point forecaster over a whole panel, with bands from its own hold-out errors.

    Subclasses implement `_point(panel, H)` -> (n, H) (NaN where they cannot forecast); series
    it leaves NaN fall back to the seasonal naive, with the reason in `failures`.
    """

    name: ClassVar[str]

    def fit(self, panel: Panel) -> Self:
        if panel.n_series == 0:
            raise ValueError("cannot fit a forecast model on an empty panel (no series)")
        self._panel = panel
        self._prepare(panel)
        return self

    def _prepare(self, panel: Panel) -> None:
        """Work done once per fit (a global model trains here); default: nothing."""

    @abc.abstractmethod
    def _point(self, panel: Panel, H: int, fitted: bool) -> np.ndarray:
        """(n, H) point forecasts after the end of `panel`; fitted: `panel` is the fit panel
        (the trained state applies), else a hold-out head to train on first."""

    def _offsets(self, panel: Panel, H: int) -> tuple[np.ndarray, np.ndarray]:
        """Per series (n, H, Q) band offsets and (n,) scale, from the hold-out of the last H."""
        from .fleet import _gaussian_offsets, _pool  # shared pooling of standardised errors

        season = SEASON[panel.freq]
        scale = seasonal_naive_mae(panel.values, panel.observed, season)
        scale = np.where(np.isfinite(scale) & (scale > 0), scale, np.nan)
        T = panel.length
        origin = T - H
        tables: dict[str, np.ndarray] = {}
        metrics = panel.keys["metric"].to_numpy(dtype=object).astype(str)
        if origin >= max(4 * season, T // 3):
            head = panel.head(origin)
            p = self._point(head, H, fitted=False)
            actual = np.where(panel.observed[:, origin:], panel.values[:, origin:], np.nan)
            p = np.clip(p, 0.0, panel.upper_bounds[:, None])
            hscale = seasonal_naive_mae(head.values, head.observed, season)
            hscale = np.where(np.isfinite(hscale) & (hscale > 0), hscale, np.nan)
            z = (actual - p) / hscale[:, None]
            for name in ["*", *sorted(set(metrics))]:
                sel = np.ones(len(metrics), dtype=bool) if name == "*" else metrics == name
                has = sel & ~np.isnan(z).all(axis=1)
                if name != "*" and np.count_nonzero(has) < MIN_POOL:
                    continue
                table = _pool(z[has])
                if table is not None:
                    tables[name] = table
        if "*" not in tables:
            tables["*"] = _gaussian_offsets(H)
        out = np.stack([tables.get(m, tables["*"]) for m in metrics]) if len(metrics) else np.empty((0, H, 0))
        return out, scale

    def predict(self, horizon: int) -> ForecastResult:
        panel = self._require_fitted()
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1 period, got {horizon}")
        point = self._point(panel, horizon, fitted=True)
        offsets, scale = self._offsets(panel, horizon)
        quantiles = point[:, :, None] + scale[:, None, None] * offsets
        model = np.full(panel.n_series, self.name, dtype=object)
        bad = ~np.isfinite(point).all(axis=1) | ~np.isfinite(scale)
        failures = _failures(panel.keys, [(bad, "no usable profile or scale → seasonal naive")], self.name)
        if bad.any():
            rows = np.flatnonzero(bad)
            fb = SeasonalNaiveModel().fit(panel.subset(rows)).predict(horizon)
            point[rows], quantiles[rows], model[rows] = fb.point, fb.quantiles, fb.model
            if len(fb.failures):
                failures = pd.concat([failures, fb.failures], ignore_index=True)
        point, quantiles = finalize(point, quantiles, panel.upper_bounds)
        return ForecastResult(
            keys=panel.keys,
            index=panel.future_index(horizon),
            point=point,
            quantiles=quantiles,
            model=model,
            failures=failures,
        )


def median_profile(values: np.ndarray, season: int, n_seasons: int, H: int) -> np.ndarray:
    """(n, H) median over the last `n_seasons` seasons of each phase, repeated over H steps
    (NaN ignored; a phase never observed in that window takes the series' recent median)."""
    n, T = values.shape
    S = min(n_seasons, T // season)
    if S == 0:
        return np.full((n, H), np.nan)
    tail = values[:, T - S * season :].reshape(n, S, season)
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN phases are filled below
        prof = np.nanmedian(tail, axis=1)
        fill = np.nanmedian(values[:, T - S * season :], axis=1)
    prof = np.where(np.isnan(prof), fill[:, None], prof)
    return prof[:, np.arange(H) % season]


class ProfileModel(CalibratedPointModel):
    """Median of the last N seasons at each phase (hour of day for hourly data, day of week for
    daily), with hold-out-calibrated bands: robust to a spike or a missed day in the window."""

    name = "profile"

    def __init__(self, n_seasons: int | None = None) -> None:
        """n_seasons: seasons in the median (default 14 days of hours / 8 weeks of days)."""
        super().__init__()
        if n_seasons is not None and n_seasons < 1:
            raise ValueError(f"n_seasons must be positive, got {n_seasons}")
        self.n_seasons = n_seasons

    def _point(self, panel: Panel, H: int, fitted: bool) -> np.ndarray:
        n_seasons = self.n_seasons or (14 if panel.freq == "hourly" else 8)
        return median_profile(panel.values, SEASON[panel.freq], n_seasons, H)
