"""The fleet model (the default): one regression design shared by every series, solved for all of
them at once.

Why it is fast: every series of a panel lives on the same time grid, so the regressors —
intercept, a piecewise-linear trend with level steps, Fourier terms of the seasonalities (weekly
and yearly for daily data, daily and weekly for hourly), the business calendar — are one matrix
X (T×K). A weighted ridge fit of n series is then a handful of matrix products over (n×T)
blocks, not n separate fits. A series observed over the whole grid shares one normal matrix
with all others like it; a series with gaps or a shorter span gets its own, summed over its
observed runs (O(runs × K²)), so it is fitted on exactly its own data, never dropped.

Why it is accurate on real data (spikes, level shifts, ramps, mostly-flat lines):
- Huber loss by iterated winsorising of residuals (the pseudo-observation form of the Huber
  M-estimator: the normal matrices stay fixed, so each pass is one more matrix product);
- recency weights (exponential half-life), so old regimes fade;
- a level correction from the median residual of the last days, a recent level shift followed
  at once, a significant recent drift extended, a trend that is linear, damped or flat;
- which of those extensions (a "variant") and whether the yearly seasonality is used are
  chosen per metric by a hold-out inside the training window, by MASE;
- a ramp evident in the series itself (its last quarter's slope beyond the same weeks' slope a
  year or two earlier, measured against the series' own history of such differences; see
  _series_ramp) is not left to the yearly wave, which would absorb it and extrapolate a dip:
  that series is fitted without the wave and forecast as level + its excess slope + the
  year-ago path, with bands from the hold-out errors of such ramps; its weekly and calendar
  swings are scaled to its forecast level (a ramp's peaks grow with it, see _season_level),
  and a slow ramp under wandering noise counts when it stands out over half a year.

Why its bands hold: quantiles are not from an assumed normal but from the model's own
rolling-origin errors in that hold-out, per horizon step, pooled over the series of a metric
(standardised by each series' residual scale); see Calibration.
"""

from __future__ import annotations

import dataclasses
import math
import os
import threading
import warnings
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cached_property
from statistics import NormalDist
from typing import Self

import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from threadpoolctl import threadpool_limits

from ..calendar import CALENDAR_FEATURES, calendar_features
from ..panel import Panel
from ..plan import QUANTILES
from ..schema import MIN_HISTORY
from .base import ForecastModel, ForecastResult, finalize
from .naive import (
    SEASON,
    SeasonalNaiveModel,
    _failures,
    nan_row_median,
    nan_row_quantiles,
    seasonal_naive_mae,
)

PERIODS_PER_DAY = {"daily": 1, "hourly": 24}
DEFAULT_HORIZON = {"daily": 90, "hourly": 168}  # the engine's default (Settings.effective_horizon)
_EPOCH = pd.Timestamp("1970-01-01", tz="UTC")
_MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True)
class FleetConfig:
    """Tuning of the fleet model for one frequency (periods are periods of that frequency)."""

    seasonalities: tuple[tuple[float, int], ...]  # (period in days, Fourier order)
    optional_seasonalities: tuple[float, ...]  # periods (days) the hold-out may leave out per metric
    trend: bool  # fit a slope + changepoints (else the level correction alone follows drift)
    n_changepoints: int  # trend knots on the panel grid
    n_steps: int  # level-step knots on the panel grid (migrations, archive purges)
    changepoint_range: float  # knots only in the first fraction of a series' own span
    step_range: float  # level steps only in the first fraction of a series' own span
    half_life: float  # recency weight halves every this many periods
    damping_half_life: float | None  # candidate damping: the slope halves every this many periods
    default_damping: float | None  # damping when the hold-out is too small to choose (0 = flat)
    level_window: int  # periods whose median residual corrects the level
    level_blends: tuple[float, ...]  # candidate shares of that correction (0 = none, 1 = full)
    shift_sigmas: float  # a recent level this far from the window's is a level shift
    follow_shift: tuple[bool, ...]  # candidates: follow a detected shift or not
    drift_window: int  # periods over which the residuals' recent drift is measured
    drift_sigmas: float  # ... and counts where it is this many standard errors from zero
    drift: tuple[bool, ...]  # candidates: extend that drift or not
    scale_window: int  # periods of residuals that set a series' band scale
    ridge_slope: float
    ridge_changepoint: float
    ridge_step: float
    ridge_fourier: float
    ridge_calendar: float
    huber: float  # winsorise residuals beyond this many robust sigmas
    robust_iterations: int
    calendar_min_days: int = 3  # a calendar regressor needs this many event days in a series
    max_calibration_origins: int = 6
    calibration_series: int = 300  # aim for this many series × origins in the calibration pool
    calibration_max_series: int = 600  # larger panels hold out a random sample of series
    min_pool: int = 40  # series × origins before a group's hold-out chooses or calibrates on its own
    # a recent ramp: the residuals' least-squares slope over the last `ramp_window` periods,
    # extended linearly when it is `ramp_sigmas` standard errors from zero (errors inflated for
    # the residuals' autocorrelation); candidates: a variant that extends it, or none
    ramp: tuple[bool, ...] = (False,)
    ramp_window: int = 84
    ramp_sigmas: float = 6.0
    # a ramp evident in the series itself (not in the residuals of a fit that may have absorbed it
    # into its yearly wave): the robust slope of the weekly medians over the last
    # `series_ramp_weeks` weeks against the slopes of the same weeks one and two years earlier
    # (a true yearly season rises there too); evident where the difference is `series_ramp_sigmas`
    # standard errors above zero and the excess rise over the window is `series_ramp_rise` daily
    # noise sigmas. Such a series is fitted without the yearly Fourier terms and takes the ramp
    # variant. 0 weeks = off.
    series_ramp_weeks: int = 0
    series_ramp_sigmas: float = 5.0
    series_ramp_rise: float = 3.0
    # a slow ramp under wandering noise (memory) may not stand out over a quarter but does over
    # a longer window: the same test over `series_ramp_long_weeks` also makes a ramp evident,
    # provided the last quarter still rises by `series_ramp_rise` noise sigmas beyond a year ago;
    # it is extended at that quarter's slope (a level shift inside the long window, flat since,
    # extends nothing). 0 = off.
    series_ramp_long_weeks: int = 0
    # per-series choice of the variant from the series' own hold-out errors, shrunk to its group's
    series_choice: bool = True
    series_origins: int = 2  # hold-out origins per series for that choice (every series is held out)
    series_confidence: float = 1.2816  # switch only when the shrunk gain is this many posterior sds


DEFAULTS: dict[str, FleetConfig] = {
    "daily": FleetConfig(
        seasonalities=((7.0, 3), (365.25, 8)),
        # a yearly wave can mimic a ramp or a step and extrapolate it wrongly: kept per metric
        # only where the hold-out says it helps
        optional_seasonalities=(365.25,),
        trend=True,
        n_changepoints=20,
        n_steps=15,
        changepoint_range=0.8,
        step_range=0.8,
        half_life=365.0,
        damping_half_life=180.0,
        default_damping=180.0,
        level_window=14,
        level_blends=(0.0, 0.5, 1.0),
        shift_sigmas=3.0,
        # the 3-day shift window can sit on a book-close peak: followed per metric by hold-out
        follow_shift=(False, True),
        drift_window=56,
        drift_sigmas=4.0,
        drift=(False, True),
        ramp=(False, True),
        ramp_window=84,
        series_ramp_weeks=12,  # a quarter: the slope a 90-day forecast would extend
        series_ramp_long_weeks=26,  # half a year: the evidence of a slow ramp
        scale_window=182,
        ridge_slope=1e-3,
        ridge_changepoint=1.0,
        ridge_step=3.0,
        ridge_fourier=1.0,
        ridge_calendar=1.0,
        huber=1.5,
        robust_iterations=2,
    ),
    "hourly": FleetConfig(
        # order 12 = a free hour-of-day profile: cron-like spikes at one hour are real load
        seasonalities=((1.0, 12), (7.0, 3)),
        optional_seasonalities=(),
        # a slope, but no knots: days of hourly history cannot place them; level steps absorb
        # past shifts (migrations) so that the slope does not. Whether the slope is extended
        # (linear, damped) or held flat is chosen per metric by the hold-out; flat when the
        # pool is too small to choose (on the NAB series a trend extrapolated noise).
        trend=True,
        n_changepoints=0,
        n_steps=20,
        changepoint_range=0.8,
        step_range=0.9,
        half_life=168.0,
        damping_half_life=24.0,
        default_damping=0.0,
        level_window=24,
        level_blends=(0.0, 0.5, 1.0),
        shift_sigmas=3.0,
        # 6 hours all beyond 3σ of the day's level: a shift (migration, failover) to follow
        follow_shift=(True,),
        drift_window=48,
        drift_sigmas=4.0,
        drift=(False,),
        scale_window=168,
        ridge_slope=1e-3,
        ridge_changepoint=10.0,
        ridge_step=1.0,
        ridge_fourier=1.0,
        ridge_calendar=1.0,
        huber=1.5,
        robust_iterations=4,
    ),
}
CONFIG_FIELDS = frozenset(f.name for f in dataclasses.fields(FleetConfig))


# --------------------------------------------------------------------------- design


@dataclass
class Design:
    """The regressors of one time grid and the rules that switch columns on per series."""

    index: pd.DatetimeIndex
    freq: str
    X: np.ndarray  # (T, K)
    kind: np.ndarray  # (K,) 'intercept' | 'slope' | 'changepoint' | 'step' | 'fourier' | 'calendar'
    knot: np.ndarray  # (K,) changepoint / step position in periods (NaN elsewhere)
    period: np.ndarray  # (K,) Fourier period in periods (NaN elsewhere)
    penalty: np.ndarray  # (K,) ridge penalty
    weights: np.ndarray  # (T,) recency weights
    config: FleetConfig
    _lock: threading.Lock = dataclasses.field(default_factory=threading.Lock, repr=False)
    _future: dict = dataclasses.field(default_factory=dict, repr=False)

    @property
    def n_periods(self) -> int:
        return self.X.shape[0]

    @property
    def n_terms(self) -> int:
        return self.X.shape[1]

    def active(self, mask: np.ndarray) -> np.ndarray:
        """Columns each series can support given its fit mask: bool (n, K).

        A seasonality needs two full periods of history, a trend knot must lie inside the first
        `changepoint_range` of the series' own span (Prophet's rule: the latest slope is
        estimated from enough data), a calendar effect needs a few event days.
        """
        cfg = self.config
        n, T = mask.shape
        has = mask.any(axis=1)
        first = np.where(has, np.argmax(mask, axis=1), 0)
        last = np.where(has, T - 1 - np.argmax(mask[:, ::-1], axis=1), -1)
        span = (last - first + 1)[:, None]
        on = np.ones((n, self.n_terms), dtype=bool)
        on[:, self.kind == "slope"] = cfg.trend
        cp = self.kind == "changepoint"
        knot = self.knot[cp][None, :]
        first = first[:, None]
        on[:, cp] = (
            cfg.trend & (knot >= first + SEASON[self.freq]) & (knot <= first + cfg.changepoint_range * span)
        )
        st = self.kind == "step"  # level steps: same span rule as the slope's knots
        step_at = self.knot[st][None, :]
        on[:, st] = (
            cfg.trend & (step_at >= first + SEASON[self.freq]) & (step_at <= first + cfg.step_range * span)
        )
        fo = self.kind == "fourier"
        on[:, fo] = span >= 2 * self.period[fo][None, :]
        cal = self.kind == "calendar"
        if cal.any():
            hits = mask.astype(np.float32) @ (self.X[:, cal] != 0).astype(np.float32)
            events = hits / PERIODS_PER_DAY[self.freq]
            on[:, cal] = events >= cfg.calendar_min_days
        return on

    @cached_property
    def holidays(self) -> np.ndarray:
        """(T,) periods on a public holiday (the calendar's holiday column)."""
        col = np.flatnonzero(self.kind == "calendar")[CALENDAR_FEATURES.index("holiday")]
        return self.X[:, col] != 0

    @cached_property
    def x32(self) -> np.ndarray:
        return self.X.astype(np.float32)

    @cached_property
    def outer(self) -> np.ndarray:
        """w_t x_t x_t' for every period (T, K, K): any run's X'WX is a sum of its rows."""
        with self._lock:
            return (self.X * self.weights[:, None])[:, :, None] * self.X[:, None, :]

    @cached_property
    def full_gram(self) -> np.ndarray:
        """X'WX over the whole grid (K, K)."""
        return (self.X * self.weights[:, None]).T @ self.X

    @staticmethod
    def future_steps(H: int, damping: float | None) -> np.ndarray:
        """How far the trend advances by each future step: h (linear), Σ 0.5^(i/half-life)
        (damped), 0 (flat)."""
        steps = np.arange(1, H + 1, dtype=float)
        if damping is None:
            return steps
        return np.cumsum(0.5 ** (steps / damping)) if damping > 0 else np.zeros(H)

    def future(self, index: pd.DatetimeIndex, damping: float | None = None) -> np.ndarray:
        """Regressors of future periods. damping: None extends the last slope linearly, a
        half-life (periods) fades it, 0 holds the trend flat at its last value.

        Only the trend columns depend on the damping: the rest is built once per index.
        """
        key = (index[0], len(index))
        with self._lock:
            base = self._future.get(key)
            done = self._future.get((*key, damping))
        if done is not None:
            return done
        if base is None:
            base = _columns(self.n_periods - 1 + np.arange(1, len(index) + 1, dtype=float), index, self)
        pos = (self.n_periods - 1) + self.future_steps(len(index), damping)
        trend = np.isin(self.kind, ("intercept", "slope", "changepoint", "step"))
        out = base.copy()
        out[:, trend] = _trend_columns(pos, self)
        with self._lock:
            self._future[key] = base
            self._future[(*key, damping)] = out
        return out


def build_design(index: pd.DatetimeIndex, freq: str, config: FleetConfig) -> Design:
    """Design matrix of a panel's grid: intercept, trend + knots, Fourier terms, calendar."""
    T = len(index)
    knots = (np.arange(config.n_changepoints) + 0.5) / max(config.n_changepoints, 1) * (T - 1)
    steps = (np.arange(config.n_steps) + 0.5) / max(config.n_steps, 1) * (T - 1)
    ppd = PERIODS_PER_DAY[freq]
    kind = ["intercept", "slope"] + ["changepoint"] * len(knots) + ["step"] * len(steps)
    knot = [np.nan, np.nan, *knots, *steps]
    period = [np.nan] * len(kind)
    penalty = [1e-8, config.ridge_slope] + [config.ridge_changepoint] * len(knots)
    penalty += [config.ridge_step] * len(steps)
    for p_days, order in config.seasonalities:
        for _ in range(order):
            kind += ["fourier", "fourier"]
            knot += [np.nan, np.nan]
            period += [p_days * ppd] * 2
            penalty += [config.ridge_fourier] * 2
    kind += ["calendar"] * len(CALENDAR_FEATURES)
    knot += [np.nan] * len(CALENDAR_FEATURES)
    period += [np.nan] * len(CALENDAR_FEATURES)
    penalty += [config.ridge_calendar] * len(CALENDAR_FEATURES)
    age = (T - 1) - np.arange(T, dtype=float)
    design = Design(
        index=index,
        freq=freq,
        X=np.empty((T, 0)),
        kind=np.array(kind),
        knot=np.array(knot, dtype=float),
        period=np.array(period, dtype=float),
        penalty=np.array(penalty, dtype=float),
        weights=0.5 ** (age / config.half_life),
        config=config,
    )
    design.X = _columns(np.arange(T, dtype=float), index, design)
    return design


def _trend_columns(pos: np.ndarray, design: Design) -> np.ndarray:
    """Intercept, slope, changepoint and step columns at trend positions `pos` (periods)."""
    scale = max(design.n_periods - 1, 1)
    t = pos / scale
    cols = [np.ones_like(t), t]
    cps = design.knot[design.kind == "changepoint"] / scale
    cols += [np.maximum(t - c, 0.0) for c in cps]
    cols += [(pos >= c).astype(float) for c in design.knot[design.kind == "step"]]
    return np.column_stack(cols)


def _columns(pos: np.ndarray, index: pd.DatetimeIndex, design: Design) -> np.ndarray:
    """Regressor values at trend positions `pos` (periods) and calendar times `index`."""
    cols = [_trend_columns(pos, design)]
    days = ((pd.DatetimeIndex(index) - _EPOCH) / pd.Timedelta(days=1)).to_numpy(dtype=float)
    for p_days, order in design.config.seasonalities:
        for k in range(1, order + 1):
            arg = 2.0 * np.pi * k * days / p_days
            cols += [np.sin(arg)[:, None], np.cos(arg)[:, None]]
    cols.append(_calendar_columns(pd.DatetimeIndex(index)))
    return np.hstack(cols)


_CALENDARS: dict[tuple, np.ndarray] = {}
_CALENDARS_LOCK = threading.Lock()


def _calendar_columns(index: pd.DatetimeIndex) -> np.ndarray:
    """(T, len(CALENDAR_FEATURES)) calendar regressors of a grid, remembered per grid: every
    hold-out, backtest cut-off and forecast of a run asks for the same few (holiday tables are slow)."""
    key = (index[0], index[-1], len(index)) if len(index) else ("empty",)
    with _CALENDARS_LOCK:
        hit = _CALENDARS.get(key)
    if hit is None:
        cal = calendar_features(index)
        hit = np.column_stack([cal[c].to_numpy(dtype=float) for c in CALENDAR_FEATURES])
        hit.setflags(write=False)
        with _CALENDARS_LOCK:
            if len(_CALENDARS) > 64:
                _CALENDARS.clear()
            _CALENDARS[key] = hit
    return hit


# --------------------------------------------------------------------------- solver


class _Solver:
    """Weighted ridge normal equations of every series of a block, for many right-hand sides.

    Series observed over the whole grid share one matrix (one product for all of them). Any
    other series gets its own X'WX as a sum over its observed runs of a running sum of
    w_t x_t x_t', so a different span or a long gap costs O(runs × K²), not O(T × K²).
    """

    def __init__(self, design: Design, mask: np.ndarray, off: np.ndarray | None = None) -> None:
        on = design.active(mask)
        if off is not None:
            on &= ~off
        is_full = mask.all(axis=1)
        full = np.flatnonzero(is_full)
        self.partial = np.flatnonzero(~is_full)
        # full-span series differ only by switched-off terms: one shared inverse per pattern
        if full.size and off is not None:
            keys = np.packbits(on[full], axis=1)
            patterns, first, which = np.unique(keys, axis=0, return_index=True, return_inverse=True)
            self.full = [full[which.reshape(-1) == k] for k in range(len(patterns))]
            on_full = on[full[first]]
        else:
            self.full = [full] if full.size else []
            on_full = on[full[:1]]
        gram = np.repeat(design.full_gram[None], len(self.full), axis=0)
        self.full_inv = _ridge_inverse(gram, on_full, design.penalty)
        self.partial_inv = np.zeros((0, design.n_terms, design.n_terms))
        if self.partial.size:
            self.partial_inv = _ridge_inverse(
                _run_grams(design, mask[self.partial]), on[self.partial], design.penalty
            )

    def solve(self, B: np.ndarray) -> np.ndarray:
        """Coefficients (n, K) for right-hand sides B = X'W y (n, K)."""
        out = np.empty_like(B)
        for rows, inv in zip(self.full, self.full_inv):
            out[rows] = B[rows] @ inv.T
        if self.partial.size:
            out[self.partial] = np.matmul(self.partial_inv, B[self.partial, :, None])[..., 0]
        return out


def _run_grams(design: Design, mask: np.ndarray) -> np.ndarray:
    """X'WX over each row's observed periods (n, K, K), from its runs of observed periods.

    Σ over a run [a, b) = P[b] − P[a] with P the running sum of w_t x_t x_t'; P is only
    needed at the runs' edges: one segmented sum of the design's per-period outer products.
    """
    edges = np.diff(np.pad(mask.astype(np.int8), ((0, 0), (1, 1))), axis=1)
    r_start, t_start = np.nonzero(edges == 1)
    _, t_end = np.nonzero(edges == -1)  # row-major order: each row's runs in order
    cuts, inverse = np.unique(np.concatenate([[0], t_start, t_end]), return_inverse=True)
    K = design.n_terms
    prefix = np.zeros((len(cuts), K, K))
    if len(cuts) > 1:  # sums of w_t x_t x_t' between consecutive cuts, accumulated
        # reduceat's last segment runs to the end of the grid: when no run of the block ends
        # there, that segment is cut at the last cut (else a series that stops before the end
        # would be fitted on periods it never had, and only when alone in its block)
        if cuts[-1] < design.n_periods:
            segments = np.add.reduceat(design.outer, cuts, axis=0)[:-1]
        else:
            segments = np.add.reduceat(design.outer, cuts[:-1], axis=0)
        np.cumsum(segments, axis=0, out=prefix[1:])
    at_start = inverse[1 : 1 + len(t_start)]
    at_end = inverse[1 + len(t_start) :]
    runs = prefix[at_end] - prefix[at_start]
    gram = np.zeros((mask.shape[0], K, K))
    counts = np.bincount(r_start, minlength=mask.shape[0])
    if counts.all():  # one segmented sum
        gram = np.add.reduceat(runs, np.r_[0, np.cumsum(counts)[:-1]], axis=0)
    else:
        np.add.at(gram, r_start, runs)
    return gram


def _ridge_inverse(gram: np.ndarray, on: np.ndarray, penalty: np.ndarray) -> np.ndarray:
    """Batched (X'WX + diag(penalty))⁻¹ restricted to active columns (inactive rows/cols = 0)."""
    both = on[:, :, None] & on[:, None, :]
    A = np.where(both, gram, 0.0)
    idx = np.arange(gram.shape[-1])
    A[:, idx, idx] += np.where(on, penalty[None, :], 1.0)
    with np.errstate(all="ignore"):
        finite = np.isfinite(A).all(axis=(1, 2))
        inv = np.full_like(A, np.nan)
        if finite.any():
            try:
                inv[finite] = np.linalg.inv(A[finite])
            except np.linalg.LinAlgError:
                inv[finite] = np.stack([_inv(a) for a in A[finite]])
    return np.where(both, inv, 0.0)


def _inv(A: np.ndarray) -> np.ndarray:
    """Inverse of a symmetric positive (semi-)definite matrix; NaN when it has none."""
    if not np.isfinite(A).all():
        return np.full_like(A, np.nan)
    try:
        return np.linalg.inv(A)
    except np.linalg.LinAlgError:
        return np.linalg.pinv(A, hermitian=True)


@dataclass(frozen=True)
class Variant:
    """How a fit is extended into the future: trend damping and share of the level correction."""

    damping: float | None  # None = linear trend, 0 = flat, else the slope's half-life in periods
    blend: float  # share of the recent median residual added to the forecast
    follow_shift: bool  # a detected recent level shift replaces that correction
    drift: bool = False  # extend the recent drift of the residuals (a ramp the trend has not caught)
    ramp: bool = False  # re-estimate slope and level on the recent window where a ramp is significant

    def label(self) -> str:
        trend = (
            "linear" if self.damping is None else "flat" if self.damping == 0 else f"damped {self.damping:g}"
        )
        shift = ", follows shifts" if self.follow_shift else ""
        drift = ", recent drift" if self.drift else ""
        ramp = ", recent ramp" if self.ramp else ""
        return f"trend {trend}, level correction {self.blend:g}{shift}{drift}{ramp}"


def default_variant(cfg: FleetConfig) -> Variant:
    """The variant used when a hold-out is too small to choose: the default damping, the full
    level correction, the first listed shift option, no drift."""
    return Variant(cfg.default_damping if cfg.trend else None, max(cfg.level_blends), cfg.follow_shift[0])


def variants(cfg: FleetConfig) -> list[Variant]:
    """Candidate variants compared on the hold-out (one fit serves them all)."""
    dampings: list[float | None] = [None]
    if cfg.trend:
        dampings += [d for d in (cfg.damping_half_life, 0.0) if d is not None]
    out = [
        Variant(d, b, f, r)
        for d in dict.fromkeys(dampings)
        for b in dict.fromkeys(cfg.level_blends)
        for f in dict.fromkeys(cfg.follow_shift)
        for r in dict.fromkeys(cfg.drift if d != 0.0 else (False,))
    ]
    # a ramp is extended linearly from the level of its own line; where no ramp is significant
    # the variant is the default (damped) trend, so choosing it invents no trend: one
    # candidate per shift option
    if cfg.trend and True in cfg.ramp:
        out += [Variant(cfg.default_damping, 1.0, f, False, True) for f in dict.fromkeys(cfg.follow_shift)]
    return out


@dataclass
class _Fit:
    coef: np.ndarray  # (n, K)
    recent: np.ndarray  # (n,) median residual of the level window
    shift: np.ndarray  # (n,) level of a detected recent shift (NaN = none)
    drift: np.ndarray  # (n,) residual slope per period over the drift window
    scale: np.ndarray  # (n,) robust residual scale (band unit)
    ok: np.ndarray  # (n,) finite fit
    ramp: np.ndarray  # (n,) residual slope per period over the ramp window (0 = not significant)
    ramp_level: np.ndarray  # (n,) that line's residual at the last period
    ramp_t: np.ndarray  # (n,) its t-statistic (autocorrelation-inflated standard error)
    series_ramp: np.ndarray  # (n,) slope of a ramp evident in the series itself (0 = none; see _series_ramp)
    season_path: np.ndarray  # (n, SEASON_WEEKS) its year-ago path, week by week
    ramp_unit: np.ndarray  # (n,) band unit of that ramp's forecast (= scale where there is none)
    season_level: np.ndarray  # (n,) level its seasonal terms were fitted at (0 = additive; see _season_level)

    def level(self, variant: Variant, half_window: float) -> np.ndarray:
        """Correction added to every future period (at the end of history when drifting)."""
        base = variant.blend * (self.recent + (self.drift * half_window if variant.drift else 0.0))
        shifted = np.where(np.isnan(self.shift), base, self.shift) if variant.follow_shift else base
        if variant.ramp:  # the ramp's own line explains a recent "shift": it sets the level
            shifted = np.where(self.ramp != 0, self.ramp_level, shifted)
            # a ramp in the series: its level correction is already at the last period
            return np.where(self.series_ramp != 0, self.recent, shifted)
        return shifted

    def take(self, rows: np.ndarray) -> _Fit:
        return _Fit(*(getattr(self, f.name)[rows] for f in dataclasses.fields(_Fit)))

    def point(
        self, design: Design, index: pd.DatetimeIndex, variant: Variant, base: np.ndarray | None = None
    ) -> np.ndarray:
        """(n, H) point forecasts for the periods of index (base: the fit's own part, when known)."""
        out = self.coef @ design.future(index, variant.damping).T if base is None else base.copy()
        own = self.series_ramp != 0
        if variant.ramp and variant.damping is not None and (self.ramp != 0).any():
            on = (
                self.ramp != 0
            ) & ~own  # a ramp in the residuals: the fitted trend runs on linearly beneath it
            out[on] = self.coef[on] @ design.future(index, None).T
        if variant.ramp and own.any():
            # a ramp evident in the series: its own slope replaces the trend, held at its last value
            out[own] = self.coef[own] @ design.future(index, 0.0).T
        out += self.level(variant, design.config.level_window / 2)[:, None]
        if variant.drift:
            out += self.drift[:, None] * design.future_steps(len(index), variant.damping)[None, :]
        if variant.ramp:
            slope = np.where(own, self.series_ramp, self.ramp)
            out += slope[:, None] * np.arange(1, len(index) + 1, dtype=float)[None, :]
            if own.any():  # ... on the path of the same weeks a year ago
                out[own] += _weekly_to_periods(self.season_path[own], len(index))
                out[own] = _scale_seasonal(out[own], self.coef[own], self.season_level[own], design, index)
        return out

    @staticmethod
    def concat(parts: list[_Fit], K: int) -> _Fit:
        if not parts:
            e = np.empty(0)
            empty = np.empty((0, SEASON_WEEKS))
            return _Fit(np.empty((0, K)), e, e, e, e, np.empty(0, dtype=bool), e, e, e, e, empty, e, e)
        return _Fit(*(np.concatenate([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(_Fit)))


def _fit_block(values: np.ndarray, design: Design, off: np.ndarray | None = None) -> _Fit:
    """Robust recency-weighted ridge fit of a block of series (rows of `values`, NaN = missing)."""
    cfg = design.config
    X, w = design.X, design.weights
    T = X.shape[0]
    mask = ~np.isnan(values)
    series_ramp, local_slope, season_path = _series_ramp(values, mask, design.freq, cfg, design.holidays)
    if series_ramp.any():  # fitted without the seasonalities that could absorb the ramp
        wave = np.isin(design.period, [p * PERIODS_PER_DAY[design.freq] for p in cfg.optional_seasonalities])
        off = np.zeros((len(values), design.n_terms), dtype=bool) if off is None else off.copy()
        off[series_ramp != 0] |= wave[None, :]
    # The (n × T) passes run in float64: in float32 a BLAS product's rounding depends on which other
    # rows share the block (~1e-5 relative), so a shard's forecast would differ from the fleet's.
    y0 = np.where(mask, values, 0.0)
    wm = mask * w[None, :]
    solver = _Solver(design, mask, off)
    coef = solver.solve((y0 * w[None, :]) @ X)
    stride = max(1, math.ceil(T / 256))  # a robust scale needs hundreds of residuals, not thousands
    for _ in range(cfg.robust_iterations):
        # Huber by pseudo-observations: y* = fitted + clip(resid), in place (five passes over n × T)
        fitted = coef @ X.T
        resid = y0 - fitted
        sample = np.where(mask[:, ::stride], resid[:, ::stride], np.nan)
        sigma = np.nan_to_num(_robust_scale(sample, centre=False), nan=np.inf)  # no sample: no clipping
        bound = (cfg.huber * sigma)[:, None]
        np.clip(resid, -bound, bound, out=resid)
        fitted += resid
        fitted *= wm
        coef = solver.solve(fitted @ X)
    resid = coef @ X.T
    np.subtract(y0, resid, out=resid)

    W = cfg.scale_window
    scale = _robust_scale(np.where(mask[:, -W:], resid[:, -W:], np.nan))
    few = np.count_nonzero(mask[:, -W:], axis=1) < 10
    if few.any():
        scale[few] = _robust_scale(np.where(mask[few][:, ::stride], resid[few][:, ::stride], np.nan))
    own = series_ramp != 0
    if own.any():
        # a fit that did not follow a ramp has residuals that run away over the ramp: the scale
        # of such a series is its scatter about the ramp's line (the residuals' own line over
        # the ramp window); the band unit of its ramp's forecast combines it with the ramp's
        # rise over the window: an extended ramp errs mostly by its slope (it slows, stops or
        # steepens), in proportion to that slope
        W = 7 * cfg.series_ramp_weeks
        scale[own] = _scatter_about_line(resid[own], mask[own], W)
    ramp_unit = scale.copy()
    if own.any():
        ramp_unit[own] = np.hypot(scale[own], series_ramp[own] * W)
    recent, shift = _level_correction(resid, mask, scale, cfg)
    season_level = np.zeros(len(values))
    if own.any():
        season_level[own] = _season_level(coef[own], mask[own], design)
        recent[own] = _ramp_level(
            resid[own], mask[own], coef[own], design, local_slope[own], season_level[own]
        )
    drift = _drift(resid, mask, scale, cfg)
    ramp, ramp_level, ramp_t = _ramp(resid, mask, scale, cfg)
    ok = np.isfinite(coef).all(axis=1) & np.isfinite(recent) & np.isfinite(scale)
    return _Fit(
        coef=coef,
        recent=recent,
        shift=shift,
        drift=drift,
        scale=np.nan_to_num(scale),
        ok=ok,
        ramp=ramp,
        ramp_level=ramp_level,
        ramp_t=ramp_t,
        series_ramp=series_ramp,
        season_path=season_path,
        ramp_unit=np.nan_to_num(ramp_unit),
        season_level=season_level,
    )


def _ramp(
    resid: np.ndarray, mask: np.ndarray, scale: np.ndarray, cfg: FleetConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ramp that began after the trend's last knot: the least-squares slope of the residuals
    over a recent window, its line's value at the last period, and its t-statistic.

    The trend's knots stop at `changepoint_range` of the span and recency weights average the
    last year, so a ramp of the last months shows as a sloped residual. Windows of 1/3, 2/3 and
    all of `ramp_window` are tried, the shortest significant one wins (the latest slope: a ramp
    that began 3 weeks ago is not diluted by the flat weeks before it). Significant = the slope
    is `ramp_sigmas` standard errors from zero (σ of the residuals about the line) *and* the line rises by at least 3 residual sigmas over its
    window — a wandering level or a yearly wave's flank stays well under that. Residuals are
    winsorised at 3 σ about each week's median first, so a burst cannot tilt the line. Elsewhere the
    slope is 0 and the variant is a linear trend with the full level correction.
    """
    n = resid.shape[0]
    zero = np.zeros(n)
    slope_out, level_out, t_out = zero.copy(), zero.copy(), zero.copy()
    found = np.zeros(n, dtype=bool)
    if True not in cfg.ramp:
        return slope_out, level_out, t_out
    sig = np.where(scale > 0, scale, np.nan)[:, None]
    for W in sorted({max(cfg.ramp_window // 3, 8), max(2 * cfg.ramp_window // 3, 8), cfg.ramp_window}):
        if resid.shape[1] < W:
            break
        m = mask[:, -W:]
        r = np.where(m, resid[:, -W:].astype(float), np.nan)
        # winsorise about each week's median (not about 0: a ramp's residuals are far from 0)
        wk = W // 7 * 7
        if wk >= 7:
            med = nan_row_median(r[:, W - wk :].reshape(-1, 7)).reshape(n, wk // 7)
            centre = np.repeat(med, 7, axis=1)
            centre = np.hstack([np.repeat(centre[:, :1], W - wk, axis=1), centre])
            centre = np.where(np.isnan(centre), 0.0, centre)
            r = np.clip(r, centre - 3.0 * sig, centre + 3.0 * sig)
        r = np.where(m, r, 0.0)
        cnt = m.sum(axis=1)
        t = np.arange(W, dtype=float)[None, :]
        with np.errstate(invalid="ignore", divide="ignore"):
            tbar = (m * t).sum(axis=1) / cnt
            rbar = r.sum(axis=1) / cnt
            dt = np.where(m, t - tbar[:, None], 0.0)
            sxx = (dt * dt).sum(axis=1)
            slope = (dt * r).sum(axis=1) / sxx
            level = rbar + slope * (W - 1 - tbar)
            e = np.where(m, r - rbar[:, None] - slope[:, None] * dt, 0.0)
            s2 = (e * e).sum(axis=1) / np.maximum(cnt - 2, 1)
            tstat = np.nan_to_num(slope / np.sqrt(s2 / sxx))
            rise = np.nan_to_num(np.abs(slope) * W / sig[:, 0])
        ok = ~found & (cnt >= W // 2) & np.isfinite(slope) & (np.abs(tstat) > cfg.ramp_sigmas) & (rise >= 3.0)
        slope_out[ok], level_out[ok], t_out[ok] = slope[ok], level[ok], tstat[ok]
        found |= ok
    return slope_out, level_out, t_out


def _ramp_level(
    resid: np.ndarray,
    mask: np.ndarray,
    coef: np.ndarray,
    design: Design,
    slope: np.ndarray,
    season_level: np.ndarray | None = None,
) -> np.ndarray:
    """(n,) level correction of a series with an evident ramp: the median of its last
    `level_window` values without their seasonal terms, each carried to the last period along
    the ramp's slope, minus the fitted trend there (which the forecast holds flat).

    The plain level correction (the median residual of the window) sits half a window back on a
    ramp and counts the fit's own slope over that half window twice. With a `season_level`
    (see _season_level) the seasonal terms removed are those scaled to each day's level.
    """
    L = design.config.level_window
    trend = _trend_kinds(design)
    fitted_trend = coef[:, trend] @ design.X[-L:, trend].T  # (n, L)
    ahead = (L - 1 - np.arange(L, dtype=float))[None, :]
    carried = resid[:, -L:] + fitted_trend - fitted_trend[:, -1:] + slope[:, None] * ahead
    if season_level is not None:
        # resid = y − level − seasonal: the seasonal part at this level is seasonal × level / ref
        seasonal = coef[:, ~trend] @ design.X[-L:, ~trend].T
        tail = np.where(mask[:, -L:], resid[:, -L:], np.nan)
        level = fitted_trend + np.nan_to_num(nan_row_median(tail))[:, None]
        carried -= seasonal * (_season_factor(level, season_level) - 1.0)
    return np.nan_to_num(nan_row_median(np.where(mask[:, -L:], carried, np.nan)))


def _trend_kinds(design: Design) -> np.ndarray:
    return np.isin(design.kind, ("intercept", "slope", "changepoint", "step"))


def _season_level(coef: np.ndarray, mask: np.ndarray, design: Design) -> np.ndarray:
    """(n,) the level a ramp's seasonal terms were fitted at: the recency-weighted mean of its
    fitted trend over its observed periods (0 where it is not positive).

    Load that ramps up ramps up its weekly and book-close swings with it (more users, more of
    the same peaks): the swings are shares of the level, not fixed amounts. A weighted least
    squares fit of additive terms to y = level × (1 + a·s) estimates a·(weighted mean level), so
    the fitted terms are scaled by level / that mean to follow the level (see _scale_seasonal).
    """
    trend = _trend_kinds(design)
    fitted = coef[:, trend] @ design.X[:, trend].T  # (n, T)
    w = mask * design.weights[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        ref = (np.where(mask, fitted, 0.0) * w).sum(axis=1) / w.sum(axis=1)
    return np.where(np.isfinite(ref) & (ref > 0), ref, 0.0)


# a level this many times the one the seasonal terms were fitted at scales them no further
# (a guard against a reference level near zero, not a tuning knob)
_SEASON_FACTOR_MAX = 4.0


def _season_factor(level: np.ndarray, season_level: np.ndarray) -> np.ndarray:
    """Level / the seasonal terms' reference level (1 where there is none), within [0, max]."""
    ref = season_level[:, None]
    with np.errstate(invalid="ignore", divide="ignore"):
        f = np.where(ref > 0, level / ref, 1.0)
    return np.clip(np.nan_to_num(f, nan=1.0), 0.0, _SEASON_FACTOR_MAX)


def _scale_seasonal(
    out: np.ndarray, coef: np.ndarray, season_level: np.ndarray, design: Design, index: pd.DatetimeIndex
) -> np.ndarray:
    """A ramp's forecast with its seasonal terms scaled to its forecast level (see _season_level)."""
    trend = _trend_kinds(design)
    seasonal = coef[:, ~trend] @ design.future(index, 0.0)[:, ~trend].T
    level = out - seasonal
    return level + seasonal * _season_factor(level, season_level)


def _scatter_about_line(resid: np.ndarray, mask: np.ndarray, W: int) -> np.ndarray:
    """(n,) robust scale of the last W residuals about their own least-squares line."""
    m = mask[:, -W:]
    r = np.where(m, resid[:, -W:].astype(float), 0.0)
    t = np.arange(r.shape[1], dtype=float)[None, :]
    with np.errstate(invalid="ignore", divide="ignore"):
        cnt = m.sum(axis=1)
        tbar = (m * t).sum(axis=1) / cnt
        rbar = r.sum(axis=1) / cnt
        dt = np.where(m, t - tbar[:, None], 0.0)
        slope = (dt * r).sum(axis=1) / (dt * dt).sum(axis=1)
    dev = np.where(m, r - rbar[:, None] - slope[:, None] * dt, np.nan)
    return _robust_scale(dev)


def _weekly_medians(values: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """(n, T // 7) median of each whole week counted back from the last period (NaN where a week
    has fewer than 4 observed days): one value per week whatever the weekday profile, and a
    book-close day or a burst cannot move it."""
    n, T = values.shape
    weeks = T // 7
    seg = np.where(mask[:, T - 7 * weeks :], values[:, T - 7 * weeks :], np.nan).reshape(n * weeks, 7)
    med = nan_row_median(seg).reshape(n, weeks)
    med[np.count_nonzero(~np.isnan(seg), axis=1).reshape(n, weeks) < 4] = np.nan
    return med


def _rolling_slopes(med: np.ndarray, w: int) -> np.ndarray:
    """(n, weeks − w + 1) least-squares slope per day of every run of w weekly medians (column j
    ends at week j + w), NaN where fewer than half of its weeks are observed."""
    ok = ~np.isnan(med)
    t = np.arange(med.shape[1], dtype=float)[None, :]
    y = np.where(ok, med, 0.0)
    sums = [np.pad(np.cumsum(a, axis=1), ((0, 0), (1, 0))) for a in (ok * 1.0, ok * t, y, ok * t * t, y * t)]
    s0, st, sy, stt, sty = (c[:, w:] - c[:, :-w] for c in sums)
    with np.errstate(invalid="ignore", divide="ignore"):
        slope = (s0 * sty - st * sy) / (s0 * stt - st * st) / 7.0
    return np.where(s0 >= max(w // 2, 3), slope, np.nan)


SEASON_WEEKS = 53  # weeks of the year-ago path kept for a ramp's forecast (longer horizons: its last)


def _series_ramp(
    values: np.ndarray, mask: np.ndarray, freq: str, cfg: FleetConfig, holiday: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ramp evident in the series itself at its end: (n,) its slope per period beyond the
    same weeks' slope a year or two earlier (0 = no evident ramp), (n,) its own slope at the
    end, and (n, SEASON_WEEKS) the path of the year-ago weeks from the same week on (the mean
    over the years available of the change of the smoothed weekly medians since that week).

    A ramp the fit absorbed into its yearly wave or its knots leaves no slope in the residuals,
    so it is looked for in the data. Statistic: the slope of the last `series_ramp_weeks` weekly
    medians minus the mean slope of the same weeks one and two years (52, 104 weeks) earlier —
    a yearly season rises at the same time every year, a ramp does not. Its yardstick is the
    series' own history: the robust spread (MAD) of that statistic over every earlier window
    that does not overlap the last one. A wandering level, a fill-and-purge sawtooth or a
    season that varies from year to year has spread enough to explain its latest quarter; a
    ramp out of a quiet history does not. Evident where the statistic exceeds
    `series_ramp_sigmas` such spreads *and* the window's excess rise is `series_ramp_rise`
    daily noise sigmas (robust scale of the week-on-week differences), so a tiny but regular
    acceleration of a very smooth series does not count. Only rises count: a fall extended
    linearly would shrink a server that is merely quieter.

    Such a series is fitted without its yearly wave and its trend is held flat: its forecast is
    the level at the end, plus the year-ago path (the season and the growth of a year ago), plus
    the excess slope — a yearly-differenced extrapolation, the same comparison as the test's.
    The year-ago path and slope count as far as the two years agree (see _year_ago_path): a
    series without a season extends its own slope, not a year-ago wiggle.
    Where the last two thirds of the window are evident too, their steeper slope is used (a ramp
    that began two months ago is not diluted by the flat weeks before it). A slow ramp under
    wandering noise (memory's) can stay within the spread of its quarter-long slopes and still
    stand out over `series_ramp_long_weeks`: the same test there makes it evident as long as the
    last quarter still passes the rise criterion, and the quarter's slope is the one extended.

    holiday: (T,) public holidays, left out of the weekly medians (a Christmas week is not a
    fall). Daily series with at least a year, a window and 8 earlier windows of history;
    elsewhere 0.
    """
    n, T = values.shape
    W = cfg.series_ramp_weeks
    out, local = np.zeros(n), np.zeros(n)
    season = np.zeros((n, SEASON_WEEKS))
    min_past = 8
    if W < 2 or freq != "daily" or n == 0 or T // 7 - 2 * W - min_past < 52:
        return out, local, season
    if holiday is not None:
        mask = mask & ~holiday[None, :]
    last = np.where(mask[:, -7 * W :], values[:, -7 * W :], np.nan)
    weekly_diff = last[:, 7:] - last[:, :-7]
    noise = _MAD_TO_SIGMA * nan_row_median(np.abs(weekly_diff - nan_row_median(weekly_diff)[:, None]))
    noise /= math.sqrt(2.0)
    # first the cheap part on the last window and the same weeks a year earlier: only series
    # whose excess rise could count need their whole history's yardstick
    # (a gate at half the rise criterion, against the year-ago window alone)
    D, Y = 7 * W, 7 * 52
    now_med = _weekly_medians(values[:, -D:], mask[:, -D:])
    ago_med = _weekly_medians(values[:, -D - Y : -Y], mask[:, -D - Y : -Y])
    gate = np.zeros(n, dtype=bool)
    with warnings.catch_warnings(), np.errstate(invalid="ignore"):
        warnings.simplefilter("ignore", RuntimeWarning)
        for w in (W, max(2 * W // 3, 3)):
            rise = (
                (_rolling_slopes(now_med[:, -w:], w)[:, -1] - _rolling_slopes(ago_med[:, -w:], w)[:, -1])
                * 7
                * w
            )
            gate |= rise >= 0.5 * cfg.series_ramp_rise * noise
    maybe = np.flatnonzero(gate)
    if maybe.size == 0:
        return out, local, season
    values, mask, noise = values[maybe], mask[maybe], noise[maybe]
    n = len(maybe)
    sub_out, sub_local, sub_season = np.zeros(n), np.zeros(n), np.zeros((n, SEASON_WEEKS))
    out_all, local_all, season_all = out, local, season
    out, local, season = sub_out, sub_local, sub_season
    med = _weekly_medians(values, mask)
    found = np.zeros(n, dtype=bool)
    long_w = cfg.series_ramp_long_weeks
    long_evident = np.zeros(n, dtype=bool)
    for w in ([long_w] if long_w > W else []) + [W, max(2 * W // 3, 3)]:
        b = _rolling_slopes(med, w)  # column j: the window ending at week j + w
        refs = np.full((2, *b.shape), np.nan)  # the same windows 52 and 104 weeks earlier
        for k, lag in enumerate((52, 104)):
            if lag < b.shape[1]:
                refs[k][:, lag:] = b[:, :-lag]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            excess = b - np.nanmean(refs, axis=0)
            past = excess[:, : excess.shape[1] - w]  # windows ending before the last one starts
            centre = nan_row_median(past)
            spread = _MAD_TO_SIGMA * nan_row_median(np.abs(past - centre[:, None]))
        enough = np.count_nonzero(~np.isnan(past), axis=1) >= min_past
        now, slope = excess[:, -1], b[:, -1]
        with np.errstate(invalid="ignore", divide="ignore"):
            standout = enough & (now - centre > cfg.series_ramp_sigmas * spread)
            rising = now * 7 * w >= cfg.series_ramp_rise * noise
        if w == long_w and w > W:
            long_evident = standout
            continue
        evident = standout & rising
        if w == W:
            found = evident = evident | (long_evident & rising)
        evident &= found & (slope > local)
        out[evident], local[evident] = now[evident], slope[evident]
    if found.any():
        # the season's share: the year-ago path and slope count as far as two years agree
        path, share = _year_ago_path(med[found])
        season[found] = share[:, None] * path
        ref = local[found] - out[found]
        out[found] = local[found] - share * ref
    out_all[maybe], local_all[maybe], season_all[maybe] = out, local, season
    return out_all, local_all, season_all


def _weekly_to_periods(path: np.ndarray, H: int) -> np.ndarray:
    """(n, H) a week-by-week path (week 0 = the last week of history, centred 3.5 days back)
    at each of the next H daily periods, linearly between week centres."""
    x = np.clip((np.arange(1, H + 1) + 3.5) / 7.0, 0, path.shape[1] - 1)
    k0 = np.minimum(np.floor(x).astype(int), path.shape[1] - 2)
    f = x - k0
    return path[:, k0] * (1 - f) + path[:, k0 + 1] * f


def _year_ago_path(med: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(n, SEASON_WEEKS) change of the 3-week running mean of the weekly medians from the week
    one and two years before the last one, week by week (the mean of the two years' paths), and
    (n,) how far it is a season rather than noise: the James–Stein factor 1 − noise / total in
    [0, 1], the noise measured by the two years' difference. 0 with fewer than two years."""
    n, weeks = med.shape
    ok = ~np.isnan(med)
    pad = lambda a: np.pad(a, ((0, 0), (1, 1)))  # noqa: E731
    y, c = pad(np.where(ok, med, 0.0)), pad(ok * 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        smooth = (y[:, :-2] + y[:, 1:-1] + y[:, 2:]) / (c[:, :-2] + c[:, 1:-1] + c[:, 2:])
    paths = []
    for years in (1, 2):
        start = weeks - 1 - 52 * years
        if start < 0:
            continue
        seg = smooth[:, start : start + SEASON_WEEKS]
        seg = np.pad(seg, ((0, 0), (0, SEASON_WEEKS - seg.shape[1])), mode="edge") if seg.shape[1] else seg
        paths.append(seg - seg[:, :1])
    if len(paths) < 2:
        return np.zeros((n, SEASON_WEEKS)), np.zeros(n)
    mean = np.nan_to_num(0.5 * (paths[0] + paths[1]))
    with np.errstate(invalid="ignore", divide="ignore"):
        noise = np.nanmean((0.5 * (paths[0] - paths[1])) ** 2, axis=1)
        total = np.mean(mean**2, axis=1)
        shrink = np.nan_to_num(np.clip(1.0 - noise / total, 0.0, 1.0))
    return mean, shrink


def _drift(resid: np.ndarray, mask: np.ndarray, scale: np.ndarray, cfg: FleetConfig) -> np.ndarray:
    """Residual slope per period over the last `drift_window`, where it is significant.

    The slope is the difference of the medians of the window's two halves over their distance;
    it counts only beyond `drift_sigmas` standard errors of that difference (a median of N
    points has an error of ~1.25 σ/√N), so noise does not tilt forecasts but a ramp that
    started after the trend's last knot is extended.
    """
    half = cfg.drift_window // 2
    n = resid.shape[0]
    if half < 2 or resid.shape[1] < 2 * half:
        return np.zeros(n)
    a = np.where(mask[:, -2 * half : -half], resid[:, -2 * half : -half], np.nan)
    b = np.where(mask[:, -half:], resid[:, -half:], np.nan)
    na = np.count_nonzero(~np.isnan(a), axis=1)
    nb = np.count_nonzero(~np.isnan(b), axis=1)
    diff = nan_row_median(b) - nan_row_median(a)
    with np.errstate(divide="ignore", invalid="ignore"):
        se = 1.2533 * scale * np.sqrt(1.0 / np.maximum(na, 1) + 1.0 / np.maximum(nb, 1))
    significant = (na >= half // 2) & (nb >= half // 2) & (np.abs(diff) > cfg.drift_sigmas * se)
    return np.where(significant, diff / half, 0.0)


def _level_correction(
    resid: np.ndarray, mask: np.ndarray, scale: np.ndarray, cfg: FleetConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Median residual of the last `level_window` periods, and the median of its last quarter
    where nearly all of that quarter (its 25–75 % range) sits more than `shift_sigmas` residual
    sigmas away (NaN elsewhere): a level shift is followed at once, a burst or two is not."""
    L = cfg.level_window
    Ls = max(3, L // 4)
    long = np.where(mask[:, -L:], resid[:, -L:], np.nan)
    n_long = np.count_nonzero(mask[:, -L:], axis=1)
    n_short = np.count_nonzero(mask[:, -Ls:], axis=1)
    r_long = np.where(n_long >= max(3, L // 4), nan_row_median(long), 0.0)
    q25, r_short, q75 = nan_row_quantiles(long[:, -Ls:], (0.25, 0.5, 0.75)).T
    margin = cfg.shift_sigmas * scale
    shifted = (n_short >= max(2, Ls // 2)) & ((q25 > r_long + margin) | (q75 < r_long - margin))
    return np.nan_to_num(r_long), np.where(shifted, r_short, np.nan)


def _robust_scale(resid: np.ndarray, centre: bool = True) -> np.ndarray:
    """Per-row sigma from the MAD (about the median, or about 0), floored by half the mean
    absolute deviation.

    The floor matters for mostly-flat series with rare bursts, whose MAD is zero although
    their errors are not.
    """
    if resid.shape[1] == 0:
        return np.full(resid.shape[0], np.nan)
    dev = np.abs(resid - nan_row_median(resid)[:, None]) if centre else np.abs(resid)
    mad = _MAD_TO_SIGMA * nan_row_median(dev)
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean_abs = np.nanmean(dev, axis=1)
    return np.fmax(mad, 0.5 * mean_abs)


def _fit_rows(
    panel: Panel, rows: np.ndarray, design: Design, chunk: int, workers: int, off: np.ndarray | None = None
) -> _Fit:
    """Fit the given rows of a panel in memory-bounded blocks, `workers` blocks at a time.
    off: (len(rows), K) terms switched off per series (None = all the design allows).

    Threads suffice: numpy releases the GIL in the products, sorts and elementwise passes.
    """
    if len(rows) == 0:
        return _Fit.concat([], design.n_terms)
    n = len(rows)
    n_blocks = max(math.ceil(n / chunk), min(workers, math.ceil(n / 256)))
    n_blocks = math.ceil(n_blocks / workers) * workers if n_blocks > 1 else 1
    size = math.ceil(n / n_blocks)
    blocks = [np.arange(i, min(i + size, n)) for i in range(0, n, size)]

    def run(block: np.ndarray) -> _Fit:
        return _fit_block(panel.values[rows[block]], design, None if off is None else off[block])

    if workers > 1 and len(blocks) > 1:
        # the blocks are the parallelism: BLAS threads inside each would oversubscribe the cores
        with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(max_workers=workers) as pool:
            parts = list(pool.map(run, blocks))
    else:
        parts = [run(b) for b in blocks]
    return _Fit.concat(parts, design.n_terms)


def _eligibility(panel: Panel) -> tuple[np.ndarray, list[tuple[np.ndarray, str]]]:
    """Which series the fleet model can fit, and the reason for each that it cannot."""
    min_hist = MIN_HISTORY[panel.freq]
    obs = panel.observed
    n_obs = np.count_nonzero(obs, axis=1)
    finite = np.isfinite(panel.values)
    hi = np.max(panel.values, axis=1, where=obs & finite, initial=-np.inf)
    lo = np.min(panel.values, axis=1, where=obs & finite, initial=np.inf)
    none = n_obs == 0
    broken = ~none & (~finite & ~np.isnan(panel.values)).any(axis=1)
    short = ~none & ~broken & (n_obs < min_hist)
    constant = ~none & ~broken & ~short & (hi - lo <= 1e-9 * np.maximum(1.0, np.abs(hi)))
    rules = [
        (none, "all gaps: no observed values"),
        (broken, "non-finite values (±inf) in the history"),
        (short, f"too short: fewer than {min_hist} observed periods"),
        (constant, "constant series: nothing to model beyond its level"),
    ]
    return ~(none | broken | short | constant), rules


# --------------------------------------------------------------------------- calibration


@dataclass
class Calibration:
    """What the hold-out taught: the variant to use and the quantile offsets (in units of a
    series' residual scale) per horizon step, per metric ('*' = all series pooled)."""

    horizon: int  # steps measured (longer horizons extrapolate with sqrt growth)
    offsets: dict[str, np.ndarray]  # metric | '*' -> (horizon, Q)
    variants: dict[str, Variant]  # metric | '*' -> variant with the lowest hold-out MASE
    scores: pd.DataFrame  # group, variant, mase (hold-out), series: the comparison behind the choice
    source: str  # how it was measured (for a run manifest)
    n_errors: int
    # per panel row: index into variants(cfg) chosen for that series itself, -1 = its group's
    series_variant: np.ndarray = dataclasses.field(default_factory=lambda: np.empty(0, dtype=np.int64))
    # (group | '*', variant index, ramp extended) -> (horizon, Q) offsets from the errors of the
    # series using that variant (a ramp variant errs differently where it extends a ramp)
    variant_offsets: dict[tuple[str, int, bool], np.ndarray] = dataclasses.field(default_factory=dict)

    def variant_table(self, group: str, v: int, H: int, ramp: int = 0) -> np.ndarray:
        """(H, Q) offsets of series of a group under variant v: that variant's own pool in the
        group, else its pool over all groups, else the group's pool."""
        table = self.variant_offsets.get((group, v, ramp), self.variant_offsets.get(("*", v, ramp)))
        return _extend(self.offsets[group] if table is None else table, H)

    def has_table(self, group: str, v: int, ramp: int) -> bool:
        return (group, v, ramp) in self.variant_offsets or ("*", v, ramp) in self.variant_offsets

    def group_of(self, metrics: np.ndarray) -> np.ndarray:
        """The calibration group of each series: its metric when measured, else '*'."""
        metrics = np.asarray(metrics, dtype=object)
        known = np.isin(metrics, [k for k in self.offsets if k != "*"])
        return np.where(known, metrics, "*")

    def offsets_for(self, groups: np.ndarray, H: int) -> np.ndarray:
        """(n, H, Q) offsets for series of these groups."""
        out = np.empty((len(groups), H, len(QUANTILES)))
        for name in np.unique(groups):
            out[groups == name] = _extend(self.offsets[name], H)
        return out


def _end_key(panel: Panel) -> str:
    """The key of a panel's pooled choices: its last period (a backtest cut-off has its own)."""
    return pd.Timestamp(panel.index[-1]).isoformat()


def _table(a: np.ndarray) -> list:
    return np.asarray(a, dtype=float).tolist()  # JSON floats round-trip exactly (repr)


@dataclass
class FleetChoices:
    """What the fleet model pools across series, learned once on the fleet's calibration sample
    and applied to every panel of the fleet on the same grid — the whole fleet in one process, or
    each shard — so that a split of the fleet changes nothing: which optional seasonality each
    metric uses, each metric's default variant, the prior of the per-series variant choice, the
    band tables and the seasonal-naive fallback's band factors. A series' own fit, its own
    hold-out evidence and its own choice stay per series. JSON-able (exact: floats round-trip)."""

    structure: dict[str, Structure]
    n_fitted: int  # series fitted in the calibration panel: sets how many origins are held out
    groups: list[str]  # the per-series choice's groups ('*' and metrics with enough series)
    group_variant: dict[str, int]  # group -> index into variants(cfg)
    prior: dict[tuple[str, int], tuple[float, float, float]] | None  # (μ, τ², σ²); None: no choice
    calibration: Calibration
    fallback_factors: dict[str, np.ndarray]  # seasonal-naive band factors ({}: history too short)

    def to_json(self) -> dict:
        cal = self.calibration
        return {
            "structure": {k: sorted(v) for k, v in self.structure.items()},
            "n_fitted": self.n_fitted,
            "groups": list(self.groups),
            "group_variant": dict(self.group_variant),
            "prior": None if self.prior is None else [[g, v, *p] for (g, v), p in self.prior.items()],
            "calibration": {
                "horizon": cal.horizon,
                "offsets": {k: _table(v) for k, v in cal.offsets.items()},
                "variants": {k: dataclasses.asdict(v) for k, v in cal.variants.items()},
                "scores": cal.scores.to_dict("records"),
                "source": cal.source,
                "n_errors": cal.n_errors,
                "variant_offsets": [
                    [g, int(v), int(on), _table(t)] for (g, v, on), t in cal.variant_offsets.items()
                ],
            },
            "fallback_factors": {k: _table(v) for k, v in self.fallback_factors.items()},
        }

    @classmethod
    def from_json(cls, d: dict) -> FleetChoices:
        c = d["calibration"]
        cal = Calibration(
            horizon=int(c["horizon"]),
            offsets={k: np.asarray(v, dtype=float) for k, v in c["offsets"].items()},
            variants={k: Variant(**v) for k, v in c["variants"].items()},
            scores=pd.DataFrame(c["scores"], columns=["group", "variant", "mase", "series"]),
            source=c["source"],
            n_errors=int(c["n_errors"]),
            variant_offsets={
                (g, int(v), int(on)): np.asarray(t, dtype=float) for g, v, on, t in c["variant_offsets"]
            },
        )
        prior = (
            None if d["prior"] is None else {(g, int(v)): (mu, tau2, s2) for g, v, mu, tau2, s2 in d["prior"]}
        )
        return cls(
            structure={k: frozenset(float(p) for p in v) for k, v in d["structure"].items()},
            n_fitted=int(d["n_fitted"]),
            groups=list(d["groups"]),
            group_variant={k: int(v) for k, v in d["group_variant"].items()},
            prior=prior,
            calibration=cal,
            fallback_factors={k: np.asarray(v, dtype=float) for k, v in d["fallback_factors"].items()},
        )


def _extend(table: np.ndarray, H: int) -> np.ndarray:
    Hc = table.shape[0]
    if Hc >= H:
        return table[:H]
    growth = np.sqrt(np.arange(Hc + 1, H + 1) / Hc)[:, None]
    return np.vstack([table, table[-1][None, :] * growth])


_POOL_ROWS = 2000  # series × origins whose errors make a pool's quantiles (more: a stride of them)


def _pool(z: np.ndarray) -> np.ndarray | None:
    """Offsets (H, Q) from standardised errors z (rows × H, NaN = no actual).

    Spread per step = isotonic (non-decreasing) fit of the median |z|; the shape of the
    distribution (its quantiles after dividing by that spread) is pooled over all steps, so a
    short hold-out still pins down the 2.5 % and 97.5 % tails.
    """
    if z.shape[0] > _POOL_ROWS:  # a deterministic stride: plenty for a 2.5 % tail, a fraction of the sort
        z = z[:: math.ceil(z.shape[0] / _POOL_ROWS)]
    counts = np.count_nonzero(~np.isnan(z), axis=0)
    if counts.sum() < 20:
        return None
    H = z.shape[1]
    steps = np.arange(1, H + 1, dtype=float)
    have = counts > 0
    spread = nan_row_median(np.abs(z.T[have]))
    iso = IsotonicRegression(increasing=True, out_of_bounds="clip")
    iso.fit(steps[have], spread, sample_weight=counts[have])
    g = np.fmax(iso.predict(steps), 1e-6)
    u = (z / g[None, :]).reshape(1, -1)
    q = nan_row_quantiles(u, QUANTILES)[0]
    return g[:, None] * q[None, :]


@dataclass
class _HoldOut:
    """Errors of every variant at one origin, for the series fitted there."""

    rows: np.ndarray  # panel rows
    z: np.ndarray  # (V, n, H) errors / residual scale
    mase: np.ndarray  # (V, n) mean |error| / in-sample seasonal-naive MAE
    ramp_on: np.ndarray  # (n,) a significant ramp at that origin (the ramp variants extended one)
    origins: int = 1
    # (n,) the ramp was evident in the series itself at that origin (fitted without the yearly wave)
    series_on: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.series_on is None:
            self.series_on = np.zeros(len(self.rows), dtype=bool)

    def ramp_kind(self) -> np.ndarray:
        """(n,) 0 = no ramp, 1 = a ramp in the residuals, 2 = a ramp evident in the series."""
        return np.where(self.series_on, 2, np.where(self.ramp_on, 1, 0))

    @staticmethod
    def stack(outs: list[_HoldOut]) -> _HoldOut:
        return _HoldOut(
            np.concatenate([o.rows for o in outs]),
            np.concatenate([o.z for o in outs], axis=1),
            np.concatenate([o.mase for o in outs], axis=1),
            np.concatenate([o.ramp_on for o in outs]),
            max(o.origins for o in outs),
            np.concatenate([o.series_on for o in outs]),
        )

    def take(self, sel: np.ndarray) -> _HoldOut:
        return _HoldOut(
            self.rows[sel],
            self.z[:, sel],
            self.mase[:, sel],
            self.ramp_on[sel],
            self.origins,
            self.series_on[sel],
        )


def _gaussian_offsets(H: int) -> np.ndarray:
    """Last-resort offsets when there are no errors at all: a unit normal growing as sqrt(h)."""
    z = np.array([NormalDist().inv_cdf(q) for q in QUANTILES])
    return np.sqrt(np.arange(1, H + 1))[:, None] * z[None, :]


Structure = frozenset  # Fourier periods (days) switched off for a metric's series


def structures(cfg: FleetConfig) -> list[Structure]:
    """Candidate structures: all terms, or one optional seasonality left out."""
    return [frozenset(), *(frozenset({p}) for p in cfg.optional_seasonalities)]


def _off_columns(design: Design, metrics: np.ndarray, structure: dict[str, Structure]) -> np.ndarray | None:
    """(n, K) terms switched off for series of these metrics (None when nothing is)."""
    if not any(structure.values()):
        return None
    off = np.zeros((len(metrics), design.n_terms), dtype=bool)
    ppd = PERIODS_PER_DAY[design.freq]
    for name in np.unique(metrics.astype(str)):
        st = structure.get(name, structure["*"])
        if st:
            off[metrics == name] = np.isin(design.period, [p * ppd for p in st])
    return off


def _mean_mase(mase: np.ndarray) -> np.ndarray:
    """Mean hold-out MASE per variant over the series every variant could be scored on."""
    ok = np.isfinite(mase).all(axis=0)
    return mase[:, ok].mean(axis=1) if ok.any() else np.full(mase.shape[0], np.nan)


def _series_choice(
    held: _HoldOut,
    group_pick: np.ndarray,
    row_group: np.ndarray,
    cands: list[Variant],
    evident: np.ndarray,
    cfg: FleetConfig,
    n_panel: int,
    prior: dict[tuple[str, int], tuple[float, float, float]] | None = None,
) -> tuple[np.ndarray, dict[tuple[str, int], tuple[float, float, float]]]:
    """Per panel row, the variant the series' own hold-out supports (-1 = its group's choice),
    and the prior (μ, τ², σ²) per group and variant that decided it.

    prior: the fleet's (FleetChoices.prior, learned on the calibration sample) instead of one
    estimated from this panel's series: each series then decides on its own evidence against a
    prior that is the same whatever else the panel holds (a shard decides as the whole fleet).

    Empirical Bayes per group and variant v: d_i = the series' mean hold-out MASE under v minus
    under the group's variant, over its k_i origins. Its noise σ² is the pooled within-series
    variance of those differences across origins; the spread τ² of true differences is what
    the spread of the d_i leaves after that noise. The shrunk gain μ + B(d_i − μ), B = τ²/(τ² +
    σ²/k_i), must beat zero by `series_confidence` posterior standard deviations √(B σ²/k_i):
    one origin or noisy errors → B small, the series keeps its group's variant.

    A ramp significant at the end of the history (evident: 1 in the residuals, 2 in the series
    itself) takes a ramp variant: the hold-out cannot have seen a ramp younger than its origin.
    Only where the ramp variant extended a ramp in the residuals at an origin and lost there does
    the series keep the choice above; a ramp evident in the series was already measured against
    the series' own history of slope changes (see _series_ramp), an older origin's loss (a ramp
    then younger, or none) does not overrule it.
    """
    in_series = np.asarray(evident) == 2
    evident = np.asarray(evident) != 0
    out = np.full(n_panel, -1, dtype=np.int64)
    rows, inv = np.unique(held.rows, return_inverse=True)
    inv = inv.reshape(-1)
    m = len(rows)
    if m == 0:
        return out, ({} if prior is None else prior)
    V = len(cands)
    base = held.mase[group_pick, np.arange(len(group_pick))]
    diff = held.mase - base[None, :]  # (V, entries)
    ok = np.isfinite(diff)
    d0 = np.where(ok, diff, 0.0)
    k = np.zeros((V, m))
    tot = np.zeros((V, m))
    for v in range(V):
        k[v] = np.bincount(inv, weights=ok[v], minlength=m)
        tot[v] = np.bincount(inv, weights=d0[v], minlength=m)
    with np.errstate(invalid="ignore", divide="ignore"):
        dbar = tot / k
    dev2 = np.where(ok, (d0 - np.nan_to_num(dbar)[:, inv]) ** 2, 0.0)
    ss = np.stack([np.bincount(inv, weights=dev2[v], minlength=m) for v in range(V)])
    group_of_row = np.empty(m, dtype=object)
    group_of_row[inv] = row_group
    gpick = np.full(m, -1)
    gpick[inv] = group_pick
    best = np.full(m, -1)
    best_gain = np.zeros(m)
    learned: dict[tuple[str, int], tuple[float, float, float]] = {}
    for name in np.unique(group_of_row.astype(str)):
        g = group_of_row == name
        for v in range(V):
            has = g & (k[v] > 0) & (gpick != v)
            if prior is not None:  # the fleet's prior (FleetChoices): this panel's series decide alone
                if (name, v) not in prior or not has.any():
                    continue
                mu, tau2, sigma2 = prior[(name, v)]
                d = dbar[v][has]
            else:
                if np.count_nonzero(has) < 2:
                    continue
                dof = np.sum(np.maximum(k[v][has] - 1, 0))
                d = dbar[v][has]
                spread = float(np.var(d))
                sigma2 = float(ss[v][has].sum() / dof) if dof > 0 else spread  # no repeats: no flips
                mu = float(np.mean(d))
                tau2 = max(spread - float(np.mean(sigma2 / k[v][has])), 0.0)
                learned[(str(name), v)] = (mu, tau2, sigma2)
            noise = sigma2 / k[v][has]
            B = tau2 / (tau2 + noise) if tau2 > 0 else np.zeros_like(noise)
            post = mu + B * (d - mu)
            sd = np.sqrt(B * noise)
            win = (post + cfg.series_confidence * sd < 0) & (post < best_gain[has])
            idx = np.flatnonzero(has)[win]
            best[idx], best_gain[idx] = v, post[win]
    out[rows] = best
    ramps = [i for i, c in enumerate(cands) if c.ramp]
    if ramps:
        # a ramp variant with the group's shift option; lost where it extended a ramp → keep
        shift_of = np.array([cands[i].follow_shift for i in range(V)])
        ramp_for = np.array(
            [next((r for r in ramps if cands[r].follow_shift == f), ramps[0]) for f in shift_of]
        )
        rp = ramp_for[group_pick]
        tried = held.ramp_on & np.isfinite(diff[rp, np.arange(len(rp))])
        lost_sum = np.bincount(inv, weights=np.where(tried, diff[rp, np.arange(len(rp))], 0.0), minlength=m)
        lost = (np.bincount(inv, weights=tried, minlength=m) > 0) & (lost_sum > 0)
        take = evident[rows] & (~lost | in_series[rows])
        first_pick = np.full(m, -1)
        first_pick[inv] = rp
        out[rows[take]] = first_pick[take]
        unseen = evident.copy()  # no hold-out at all (too short then): the present evidence alone
        unseen[rows] = False
        out[unseen] = ramps[0]
    return out, (learned if prior is None else prior)


# --------------------------------------------------------------------------- the model


class FleetModel(ForecastModel):
    """Vectorised robust ridge regression for a whole panel; seasonal naive for misfits.

    Fitting also runs a hold-out inside the training window (see Calibration): it chooses, per
    metric, whether the optional seasonality helps and how to extend the fit (variants), and
    it measures the errors the bands are made of. The default horizon of that hold-out is
    the engine's (90 days / 168 hours); predict() for another horizon measures it once more.
    """

    name = "fleet"

    def __init__(
        self,
        horizon: int | None = None,
        chunk_size: int = 2048,
        workers: int = 0,
        pooled: Mapping[str, FleetChoices] | None = None,
        **config: object,
    ) -> None:
        """horizon: the hold-out horizon used during fit (default 90 days / 168 hours);
        chunk_size: series per block (bounds memory); workers: threads (0 = all cores);
        pooled: the fleet's choices per panel end (FleetModel.choices of a fit on the fleet's
        calibration sample; see forecasting.pooled), used instead of pooling this panel's series;
        config: FleetConfig fields overriding the frequency's defaults."""
        super().__init__()
        unknown = set(config) - CONFIG_FIELDS
        if unknown:
            raise TypeError(
                f"unknown FleetModel setting(s) {sorted(unknown)}; known: {sorted(CONFIG_FIELDS)}"
            )
        if horizon is not None and horizon < 1:
            raise ValueError(f"horizon must be at least 1 period, got {horizon}")
        if chunk_size < 1:
            raise ValueError(f"chunk_size must be positive, got {chunk_size}")
        if workers < 0:
            raise ValueError(f"workers must be 0 (all cores) or positive, got {workers}")
        self.horizon = horizon
        self.chunk_size = chunk_size
        self.workers = workers or os.cpu_count() or 1
        self.overrides = dict(config)
        self.pooled = dict(pooled) if pooled is not None else None

    def config_for(self, freq: str) -> FleetConfig:
        """The defaults of a frequency with this model's overrides applied."""
        return dataclasses.replace(DEFAULTS[freq], **self.overrides)

    # -- fit

    def fit(self, panel: Panel) -> Self:
        if panel.n_series == 0:
            raise ValueError("cannot fit a forecast model on an empty panel (no series)")
        cfg = self.config_for(panel.freq)
        self._panel = panel
        self._cfg = cfg
        self._calibrations: dict[int, Calibration] = {}
        self._structure: dict[str, Structure] = {"*": frozenset()}
        eligible, rules = _eligibility(panel)
        rows = np.flatnonzero(eligible)
        metric_of = panel.keys["metric"].to_numpy(dtype=object)
        H = self.horizon or DEFAULT_HORIZON[panel.freq]
        given = self._given_for(panel)
        self._learned = None
        cands = structures(cfg)
        if given is not None:
            self._structure = dict(given.structure)
        elif len(cands) > 1 and rows.size:
            per = {st: self._hold_outs(panel, H, cfg, {"*": st}, rows.size) for st in cands}
            if all(outs is not None for outs, _ in per.values()):
                self._structure, cal = self._choose_structure(per, metric_of, cfg)
                self._calibrations[H] = cal

        design = build_design(panel.index, panel.freq, cfg)
        off = _off_columns(design, metric_of[rows], self._structure)
        fit = _fit_rows(panel, rows, design, self.chunk_size, self.workers, off)
        bad = np.zeros(panel.n_series, dtype=bool)
        bad[rows[~fit.ok]] = True
        rules.append((bad, "non-finite fit"))
        self._rows = rows[fit.ok]
        self._fit = fit.take(fit.ok)
        self._design = design
        fallback = ~eligible | bad
        self._fallback_rows = np.flatnonzero(fallback)
        end = _end_key(panel)
        naive = SeasonalNaiveModel(pooled=None if given is None else {end: given.fallback_factors})
        self._fallback = naive.fit(panel.subset(self._fallback_rows)) if fallback.any() else None
        self._failures = _failures(panel.keys, [(m, r + " → seasonal naive") for m, r in rules], self.name)
        self._choice = np.full(panel.n_series, -1, dtype=np.int64)
        if given is not None:  # the fleet's bands; each series' own choice below
            no_choice = np.full(panel.n_series, -1, dtype=np.int64)
            self._calibrations = {H: dataclasses.replace(given.calibration, series_variant=no_choice)}
        # the hold-out origins follow the calibration panel's size, so a shard holds out as the fleet
        n_fitted = given.n_fitted if given is not None else len(self._rows)
        if cfg.series_choice and self._rows.size and (given is None or given.prior is not None):
            # every series held out under the chosen structure: the evidence of its own choice
            held, Hc = self._hold_outs(panel, H, cfg, self._structure, n_fitted, every=True)
            if held is not None:
                evident = np.zeros(panel.n_series, dtype=np.int8)  # 1: in the residuals, 2: in the series
                evident[self._rows] = np.where(self._fit.series_ramp != 0, 2, (self._fit.ramp != 0) * 1)
                cal = self._calibration_from(held, metric_of, cfg, Hc, evident=evident, given=given)
                self._calibrations = {H: cal}
                self._choice = cal.series_variant
        self._n_fitted = n_fitted
        if self.horizon:
            self.calibration(self.horizon)
        return self

    def _given_for(self, panel: Panel) -> FleetChoices | None:
        """The fleet's choices for a panel ending where this one ends (None: learn them here)."""
        if self.pooled is None:
            return None
        key = _end_key(panel)
        if key not in self.pooled:
            raise ValueError(
                f"the fleet's pooled choices cover panels ending at {sorted(self.pooled)}, not {key}: "
                "learn them on the calibration sample of this grid (forecasting.pooled.learn)"
            )
        return self.pooled[key]

    def choices(self) -> FleetChoices:
        """What this fit pooled across its series, for other panels of the fleet on the same grid
        (shards): FleetModel(pooled={end: choices}).fit(shard) then decides as this fit did."""
        panel = self._require_fitted()
        H = self.horizon or DEFAULT_HORIZON[panel.freq]
        cal = self.calibration(H)
        learned = self._learned
        if self._fallback is not None:
            fb = self._fallback._factor_table(self._fallback._panel, H)
        else:
            fb = {"*": np.ones(len(QUANTILES) // 2)}  # no misfits here: bands unscaled
        return FleetChoices(
            structure=dict(self._structure),
            n_fitted=int(self._n_fitted),
            groups=learned["groups"] if learned else [],
            group_variant=learned["group_variant"] if learned else {},
            prior=learned["prior"] if learned else None,
            calibration=dataclasses.replace(cal, series_variant=np.empty(0, dtype=np.int64)),
            fallback_factors=fb,
        )

    @property
    def series_variants(self) -> pd.DataFrame:
        """Per fitted series, the variant it uses and whether that is its own choice."""
        panel = self._require_fitted()
        cal = self.calibration(self.horizon or DEFAULT_HORIZON[panel.freq])
        cands = variants(self._cfg)
        groups = cal.group_of(panel.keys["metric"].to_numpy(dtype=object)[self._rows])
        own = self._choice[self._rows]
        labels = [cands[o].label() if o >= 0 else cal.variants[g].label() for o, g in zip(own, groups)]
        out = panel.keys.iloc[self._rows][["server_id", "metric"]].reset_index(drop=True)
        out["variant"] = labels
        out["own_choice"] = own >= 0
        out["ramp_per_period"] = self._fit.ramp
        out["series_ramp_per_period"] = self._fit.series_ramp
        return out

    @property
    def structure(self) -> dict[str, str]:
        """Per metric ('*' = the rest): which optional seasonalities the hold-out kept."""
        self._require_fitted()
        return {
            k: "all seasonalities" if not v else "without " + ", ".join(f"{p:g}-day" for p in sorted(v))
            for k, v in self._structure.items()
        }

    def _choose_structure(
        self, per: dict[Structure, tuple[_HoldOut, int]], metric_of: np.ndarray, cfg: FleetConfig
    ) -> tuple[dict[str, Structure], Calibration]:
        """Per metric group, the structure whose best variant has the lowest hold-out MASE."""
        first = next(iter(per.values()))[0]
        groups = self._groups(metric_of[first.rows], cfg)
        chosen: dict[str, Structure] = {}
        for name in groups:
            best = None
            for st, (out, _) in per.items():
                sel = metric_of[out.rows] == name if name != "*" else np.ones(out.rows.size, dtype=bool)
                sel = sel & ~out.series_on  # an evident ramp is fitted without the wave anyway
                if np.count_nonzero(np.isfinite(out.mase[:, sel]).all(axis=0)) < cfg.min_pool:
                    continue  # too few series to choose on: keep every seasonality
                score = np.nanmin(_mean_mase(out.mase[:, sel])) if sel.any() else np.nan
                if np.isfinite(score) and (best is None or score < best[0]):
                    best = (score, st)
            chosen[name] = best[1] if best else frozenset()
        # the errors of each metric under its chosen structure make its calibration
        parts = []
        for st, (out, _) in per.items():
            metric = metric_of[out.rows]
            group = np.where(np.isin(metric, list(chosen)), metric, "*")
            mine = np.array([chosen[g] == st for g in group], dtype=bool)
            parts.append(out.take(mine))
        Hc = next(iter(per.values()))[1]
        return chosen, self._calibration_from(_HoldOut.stack(parts), metric_of, cfg, Hc)

    @staticmethod
    def _groups(metric: np.ndarray, cfg: FleetConfig) -> list[str]:
        """'*' and every metric with enough series in the hold-out pool for its own choice."""
        names, counts = np.unique(metric.astype(str), return_counts=True)
        return ["*", *(str(n) for n, c in zip(names, counts) if c >= cfg.min_pool)]

    def calibration(self, horizon: int) -> Calibration:
        """The hold-out calibration of a horizon, measured on first use and kept."""
        panel = self._require_fitted()
        if horizon not in self._calibrations:
            cfg = self.config_for(panel.freq)
            held = self._hold_outs(panel, horizon, cfg, self._structure, len(self._rows))
            metric_of = panel.keys["metric"].to_numpy(dtype=object)
            if held[0] is None:
                self._calibrations[horizon] = self._insample_calibration(panel, cfg)
            else:
                self._calibrations[horizon] = self._calibration_from(
                    held[0], metric_of, cfg, held[1], choice=self._choice
                )
        return self._calibrations[horizon]

    def _hold_outs(
        self,
        panel: Panel,
        H: int,
        cfg: FleetConfig,
        structure: dict[str, Structure],
        n_fitted: int,
        every: bool = False,
    ) -> tuple[_HoldOut | None, int]:
        """Rolling-origin errors of every variant inside the training window, and the steps
        measured. Origins step back from the end by the horizon, never into the first half of
        the history; small panels use more origins (up to `max_calibration_origins`) so the
        pool holds enough series. every: every series at `series_origins` origins or more
        (the evidence of a per-series choice) instead of a sample."""
        T = panel.length
        min_train = max(MIN_HISTORY[panel.freq], T // 2)
        Hc = min(H, T - min_train)
        if Hc < 1:
            return None, 0
        cands = variants(cfg)
        want = max(1, math.ceil(cfg.calibration_series / max(n_fitted, 1)))
        if every:
            want = max(want, cfg.series_origins)
        outs = []
        for j in range(1, min(cfg.max_calibration_origins, want) + 1):
            origin = T - j * Hc
            if origin < min_train:
                break
            out = self._hold_out(panel, origin, Hc, cfg, cands, structure, every)
            if out.rows.size:
                outs.append(out)
        if not outs:
            return None, 0
        held = _HoldOut.stack(outs)
        held.origins = len(outs)
        return held, Hc

    def _hold_out(
        self,
        panel: Panel,
        origin: int,
        H: int,
        cfg: FleetConfig,
        cands: list[Variant],
        structure: dict[str, Structure],
        every: bool = False,
    ) -> _HoldOut:
        """Fit on the first `origin` periods, forecast H steps with every variant, score.
        every: hold out every eligible series (per-series choice), not a sample."""
        head = panel.head(origin)
        eligible, _ = _eligibility(head)
        rows = np.flatnonzero(eligible)
        if not every and rows.size > cfg.calibration_max_series:  # a sample pools plenty of errors per metric
            rng = np.random.default_rng(origin)
            rows = np.sort(rng.choice(rows, cfg.calibration_max_series, replace=False))
        if rows.size == 0:
            e = np.empty((len(cands), 0))
            return _HoldOut(
                rows,
                np.empty((len(cands), 0, H)),
                e,
                np.empty(0, dtype=bool),
                series_on=np.empty(0, dtype=bool),
            )
        design = build_design(head.index, head.freq, cfg)
        off = _off_columns(design, panel.keys["metric"].to_numpy(dtype=object)[rows], structure)
        fit = _fit_rows(head, rows, design, self.chunk_size, self.workers, off)
        usable = fit.ok & (fit.scale > 0)
        rows, fit = rows[usable], fit.take(usable)
        window = slice(origin, origin + H)
        actual = np.where(panel.observed[rows, window], panel.values[rows, window], np.nan)
        upper = panel.upper_bounds[rows][:, None]
        naive_mae = seasonal_naive_mae(head.values[rows], head.observed[rows], SEASON[panel.freq])
        naive_mae = np.where(naive_mae > 0, naive_mae, np.nan)
        z = np.empty((len(cands), len(rows), H), dtype=np.float32)
        mase = np.empty((len(cands), len(rows)))
        index = panel.index[window]
        n_actual = np.count_nonzero(~np.isnan(actual), axis=1)
        base = {d: fit.coef @ design.future(index, d).T for d in {v.damping for v in cands}}
        unit_ramp = np.where(fit.series_ramp != 0, fit.ramp_unit, fit.scale)
        for i, v in enumerate(cands):
            err = fit.point(design, index, v, base[v.damping])
            np.clip(err, 0.0, upper, out=err)
            np.subtract(actual, err, out=err)
            z[i] = err / (unit_ramp if v.ramp else fit.scale)[:, None]
            np.abs(err, out=err)
            with np.errstate(invalid="ignore", divide="ignore"):
                mase[i] = np.nansum(err, axis=1) / n_actual / naive_mae
        series_on = fit.series_ramp != 0
        return _HoldOut(rows, z, mase, (fit.ramp != 0) | series_on, series_on=series_on)

    def _calibration_from(
        self,
        held: _HoldOut,
        metric_of: np.ndarray,
        cfg: FleetConfig,
        Hc: int,
        evident: np.ndarray | None = None,
        choice: np.ndarray | None = None,
        given: FleetChoices | None = None,
    ) -> Calibration:
        """Per group, the variant with the lowest hold-out MASE; per series, its own variant
        where its hold-out evidence beats the group's choice after shrinkage (or a given
        `choice`); bands from the errors of each variant's users.

        evident: per panel row, a significant ramp at the end of the history (see _series_choice).
        given: the fleet's choices (groups, their variants, the series-choice prior, the bands):
        only each series' own choice is made here, from its own hold-out.
        """
        cands = variants(cfg)
        metric = metric_of[held.rows]
        if given is not None:
            row_group = np.where(np.isin(metric, given.groups), metric, "*")
            group_pick = np.array([given.group_variant[g] for g in row_group], dtype=int)
            choice, _ = _series_choice(
                held, group_pick, row_group, cands, evident, cfg, len(metric_of), prior=given.prior
            )
            return dataclasses.replace(given.calibration, series_variant=choice)
        groups = self._groups(metric, cfg)
        default = default_variant(cfg)
        chosen: dict[str, Variant] = {}
        score_rows = []
        # series with a ramp evident in the data take the ramp variant and bands of their own:
        # the group's choice and bands are those of the rest
        plain = ~held.series_on
        for name in groups:
            sel = (metric == name if name != "*" else np.ones(len(metric), dtype=bool)) & plain
            means = _mean_mase(held.mase[:, sel])
            enough = np.count_nonzero(np.isfinite(held.mase[:, sel]).all(axis=0)) >= cfg.min_pool
            # a choice among many variants on a few series would flatter the winner's errors
            chosen[name] = cands[int(np.nanargmin(means))] if enough and np.isfinite(means).any() else default
            score_rows += [(name, c.label(), float(means[i]), int(sel.sum())) for i, c in enumerate(cands)]
        row_group = np.where(np.isin(metric, groups), metric, "*")
        pick_of = {g: cands.index(v) for g, v in chosen.items()}  # once per group, not per series
        group_pick = np.array([pick_of[g] for g in row_group], dtype=int)
        n_panel = len(metric_of)
        if choice is None:
            choice = np.full(n_panel, -1, dtype=np.int64)
            if cfg.series_choice and evident is not None:
                choice, prior = _series_choice(held, group_pick, row_group, cands, evident, cfg, n_panel)
                # what a FleetChoices carries to other panels (shards) of the same fleet
                self._learned = {
                    "groups": [str(g) for g in groups],
                    "group_variant": {str(g): i for g, i in pick_of.items()},
                    "prior": prior,
                }
        own = choice[held.rows]
        pick = np.where(own >= 0, own, group_pick)
        z_best = held.z[pick, np.arange(len(metric))]  # each series' errors under the variant it uses
        offsets = {}
        for name in groups:
            sel = (metric == name if name != "*" else np.ones(len(metric), dtype=bool)) & plain
            table = _pool(z_best[sel])
            if table is not None:
                offsets[name] = table
            elif name == "*":
                offsets[name] = _gaussian_offsets(Hc)
        # bands per variant: a ramp extended 90 days errs differently from a damped trend
        variant_offsets: dict[tuple[str, int, int], np.ndarray] = {}
        for v in np.unique(pick):
            # a ramp variant: its errors where it extended a ramp (any series), and where it
            # did not (its users); any other variant: the errors of its users
            pools = [(0, pick == v)]
            if cands[v].ramp:  # per kind of ramp: in the residuals (1), evident in the series (2)
                kind = held.ramp_kind()
                pools = [(0, (pick == v) & (kind == 0)), (1, kind == 1), (2, kind == 2)]
            for on, users in pools:
                for name in groups:
                    sel = users & ((metric == name) if name != "*" else True)
                    if np.count_nonzero(sel) >= cfg.min_pool:
                        table = _pool(held.z[v, sel])
                        if table is not None:
                            variant_offsets[(name, int(v), on)] = table
        return Calibration(
            horizon=Hc,
            offsets=offsets,
            variants={k: v for k, v in chosen.items() if k in offsets},
            scores=pd.DataFrame(score_rows, columns=["group", "variant", "mase", "series"]),
            source=f"rolling-origin errors: {held.origins} origin(s) × {Hc} steps",
            n_errors=int(np.count_nonzero(~np.isnan(z_best))),
            series_variant=choice,
            variant_offsets=variant_offsets,
        )

    def _insample_calibration(self, panel: Panel, cfg: FleetConfig) -> Calibration:
        """Bands from in-sample residuals (sqrt growth) when nothing can be held out."""
        default = default_variant(cfg)
        if self._rows.size:
            fitted = self._fit.coef @ self._design.X.T
            resid = panel.values[self._rows] - fitted
            z = (resid / np.where(self._fit.scale > 0, self._fit.scale, np.nan)[:, None]).reshape(-1, 1)
        else:
            z = np.empty((0, 1))
        pooled = _pool(z)
        return Calibration(
            horizon=1,
            offsets={"*": pooled if pooled is not None else _gaussian_offsets(1)},
            variants={"*": default},
            scores=pd.DataFrame(columns=["group", "variant", "mase", "series"]),
            source="in-sample residuals (history too short for a hold-out)",
            n_errors=int(np.count_nonzero(~np.isnan(z))),
        )

    # -- predict

    def predict(self, horizon: int) -> ForecastResult:
        panel = self._require_fitted()
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1 period, got {horizon}")
        index = panel.future_index(horizon)
        n, Q = panel.n_series, len(QUANTILES)
        point = np.full((n, horizon), np.nan)
        quantiles = np.full((n, horizon, Q), np.nan)
        model = np.full(n, self.name, dtype=object)
        failures = [self._failures]
        if self._rows.size:
            cal = self.calibration(horizon)
            groups = cal.group_of(panel.keys["metric"].to_numpy(dtype=object)[self._rows])
            cands = variants(self._cfg)
            own = self._choice[self._rows]
            pick_of = {g: cands.index(v) for g, v in cal.variants.items()}
            which = np.where(own >= 0, own, [pick_of[g] for g in groups])
            offsets = np.empty((len(self._rows), horizon, len(QUANTILES)))
            p = np.empty((len(self._rows), horizon))
            unit = self._fit.scale.copy()
            for name in np.unique(groups):
                for v in np.unique(which[groups == name]):
                    sel = (groups == name) & (which == v)
                    p[sel] = self._fit.take(sel).point(self._design, index, cands[v])
                    kind = np.where(self._fit.series_ramp != 0, 2, np.where(self._fit.ramp != 0, 1, 0))
                    kind = np.where(sel & cands[v].ramp, kind, 0)
                    offsets[sel & (kind == 0)] = cal.variant_table(str(name), int(v), horizon)
                    if (sel & (kind == 1)).any():
                        offsets[sel & (kind == 1)] = cal.variant_table(str(name), int(v), horizon, ramp=1)
                    two = sel & (kind == 2)
                    if two.any() and cal.has_table(str(name), int(v), 2):  # the ramp's own unit and pool
                        offsets[two] = cal.variant_table(str(name), int(v), horizon, ramp=2)
                        unit[two] = self._fit.ramp_unit[two]
                    elif two.any():  # none measured: the bands of ramps in the residuals
                        offsets[two] = cal.variant_table(str(name), int(v), horizon, ramp=1)
            point[self._rows] = p
            quantiles[self._rows] = p[:, :, None] + unit[:, None, None] * offsets
        if self._fallback is not None:
            fb = self._fallback.predict(horizon)
            point[self._fallback_rows] = fb.point
            quantiles[self._fallback_rows] = fb.quantiles
            model[self._fallback_rows] = fb.model
            failures.append(fb.failures)
        point, quantiles = finalize(point, quantiles, panel.upper_bounds)
        failures = [f for f in failures if len(f)]
        return ForecastResult(
            keys=panel.keys,
            index=index,
            point=point,
            quantiles=quantiles,
            model=model,
            failures=pd.concat(failures, ignore_index=True) if failures else self._failures,
        )
