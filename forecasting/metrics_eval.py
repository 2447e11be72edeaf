"""Forecast accuracy measures, vectorised over series: MASE, sMAPE, MAE and band coverage.

Definitions (each per series and forecast origin, on observed actuals only):
- MAE = mean |y − ŷ|.
- MASE = MAE / in-sample MAE of the seasonal naive forecast (lag = SEASON[freq]: 7 days for daily
  data, 24 hours for hourly) over the training window. < 1 beats the baseline's typical error.
  A perfectly flat history (scale 0) gives MASE 0 when the forecast is exact, NaN otherwise.
- sMAPE = mean 200·|y − ŷ| / (|y| + |ŷ|), in percent (0–200); a period where both are 0 counts 0.
- coverage_80 / coverage_95 = share of actuals inside [q10, q90] / [q2.5, q97.5].
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .models.naive import SEASON, seasonal_naive_mae
from .plan import BAND_80, BAND_95, QUANTILE_COLUMNS


def mase_scale(values: np.ndarray, observed: np.ndarray, season: int) -> np.ndarray:
    """(n,) in-sample MAE of the seasonal naive forecast y[t−season] over observed pairs (NaN if none)."""
    return seasonal_naive_mae(values, observed, season)


def smape_terms(actual: np.ndarray, forecast: np.ndarray) -> np.ndarray:
    """Elementwise 200·|y − ŷ| / (|y| + |ŷ|); 0 where both are 0 (a perfect forecast of zero)."""
    denom = np.abs(actual) + np.abs(forecast)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denom > 0, 200.0 * np.abs(actual - forecast) / np.where(denom > 0, denom, 1.0), 0.0)


def band_index(band: tuple[str, str]) -> tuple[int, int]:
    """Positions of a band's (lower, upper) quantile columns in plan.QUANTILES order."""
    return QUANTILE_COLUMNS.index(band[0]), QUANTILE_COLUMNS.index(band[1])


@dataclass
class Scores:
    """Per-series accuracy of one forecast origin (NaN where no actual was observed)."""

    mae: np.ndarray
    mase: np.ndarray
    smape: np.ndarray
    coverage_80: np.ndarray
    coverage_95: np.ndarray
    n_points: np.ndarray  # observed actuals scored


def score(
    actual: np.ndarray,
    observed: np.ndarray,
    point: np.ndarray,
    quantiles: np.ndarray,
    scale: np.ndarray,
) -> Scores:
    """Score forecasts (n, H) and quantiles (n, H, Q) against actuals (n, H) where observed.

    Forecasts that are NaN (a series a model could not forecast) are not scored.
    """
    actual = np.asarray(actual, dtype=float)
    ok = observed & ~np.isnan(actual) & ~np.isnan(point)
    n = ok.sum(axis=1)
    has = n > 0
    denom = np.maximum(n, 1)
    err = np.where(ok, np.abs(actual - point), 0.0)
    mae = np.where(has, err.sum(axis=1) / denom, np.nan)
    smape = np.where(has, np.where(ok, smape_terms(actual, point), 0.0).sum(axis=1) / denom, np.nan)
    covs = []
    for band in (BAND_80, BAND_95):
        lo, hi = band_index(band)
        inside = (actual >= quantiles[:, :, lo]) & (actual <= quantiles[:, :, hi])
        covs.append(np.where(has, (inside & ok).sum(axis=1) / denom, np.nan))
    with np.errstate(invalid="ignore", divide="ignore"):
        mase = np.where(scale > 0, mae / np.where(scale > 0, scale, 1.0), np.where(mae == 0, 0.0, np.nan))
    mase = np.where(has, mase, np.nan)
    return Scores(mae=mae, mase=mase, smape=smape, coverage_80=covs[0], coverage_95=covs[1], n_points=n)


def season_of(freq: str) -> int:
    """The MASE (and baseline) season of a frequency: 7 for daily data, 24 for hourly."""
    return SEASON[freq]
