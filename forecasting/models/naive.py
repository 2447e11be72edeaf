"""Seasonal naive: the baseline every score is compared with, and the fallback for series no
other model can fit.

The point forecast repeats the last observed season. Its quantiles come from the series' own
history of seasonal-naive errors — one season ahead and k seasons ahead — so the bands are
calibrated by construction rather than assumed normal.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Self

import numpy as np
import pandas as pd

from ..panel import Panel
from ..plan import QUANTILES
from .base import ForecastModel, ForecastResult, finalize

# Periods per season of the baseline (and of the MASE scale): a week of days, a day of hours.
SEASON = {"daily": 7, "hourly": 24}
# How much recent history feeds the error distribution, in seasons (a year of days, 4 weeks of hours).
ERROR_WINDOW_SEASONS = {"daily": 52, "hourly": 28}
# How many recent seasons may be searched for the last observed value of each phase.
LOOKBACK_SEASONS = 8
# Fewer error samples than this and a quantile estimate is not worth trusting.
MIN_ERROR_SAMPLES = 8
# Series per block in predict(): bounds the (block, H, Q) temporaries.
BLOCK = 4096

FAILURE_COLUMNS = ["server_id", "metric", "model", "reason"]


def nan_row_quantiles(a: np.ndarray, q: Sequence[float]) -> np.ndarray:
    """Per-row quantiles of a 2-D array ignoring NaN (numpy's 'linear' method); all-NaN rows → NaN.

    One vectorised sort for all rows: np.nanquantile loops over rows in Python on wide arrays,
    which dominates the run time of a fleet-wide fit.
    """
    a = np.asarray(a, dtype=float)
    n = a.shape[0]
    qs = np.asarray(q, dtype=float)
    if a.shape[1] == 0:
        return np.full((n, qs.size), np.nan)
    s = np.sort(a, axis=1)  # NaN sort last
    cnt = np.count_nonzero(~np.isnan(a), axis=1)
    pos = (np.maximum(cnt, 1) - 1)[:, None] * qs[None, :]
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, np.maximum(cnt - 1, 0)[:, None])
    frac = pos - lo
    rows = np.arange(n)[:, None]
    out = s[rows, lo] * (1.0 - frac) + s[rows, hi] * frac
    out[cnt == 0] = np.nan
    return out


def nan_row_median(a: np.ndarray) -> np.ndarray:
    """Per-row median ignoring NaN (see nan_row_quantiles)."""
    return nan_row_quantiles(a, (0.5,))[:, 0]


def seasonal_naive_mae(values: np.ndarray, observed: np.ndarray, season: int) -> np.ndarray:
    """(n,) in-sample MAE of the seasonal naive forecast y[t−season] over observed pairs (NaN if
    none): the denominator of MASE."""
    values = np.asarray(values, dtype=float)
    if values.shape[1] <= season:
        return np.full(values.shape[0], np.nan)
    ok = observed[:, season:] & observed[:, :-season]
    diff = np.abs(values[:, season:] - values[:, :-season])
    count = np.count_nonzero(ok, axis=1)
    total = np.where(ok, diff, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def last_valid(values: np.ndarray) -> np.ndarray:
    """Last non-NaN value of each row (NaN when the row has none)."""
    valid = ~np.isnan(values)
    T = values.shape[1]
    if T == 0:
        return np.full(values.shape[0], np.nan)
    idx = T - 1 - np.argmax(valid[:, ::-1], axis=1)
    out = values[np.arange(values.shape[0]), idx]
    out[~valid.any(axis=1)] = np.nan
    return out


def seasonal_template(values: np.ndarray, season: int, lookback: int = LOOKBACK_SEASONS) -> np.ndarray:
    """(n, season) last observed value of each phase; phase j is forecast step j+1 (mod season).

    A phase with no value in the last `lookback` seasons takes the series' last value, so a gap
    at the end of the history never leaves a hole in the forecast; a series with fewer values
    than one season repeats its last value.
    """
    n, T = values.shape
    last = last_valid(values)
    S = min(T // season, lookback)
    if S == 0:
        return np.repeat(last[:, None], season, axis=1)
    short = np.count_nonzero(~np.isnan(values), axis=1) < season  # not one season yet: last value
    tail = values[:, T - S * season :].reshape(n, S, season)
    valid = ~np.isnan(tail)
    idx = S - 1 - np.argmax(valid[:, ::-1, :], axis=1)  # (n, season)
    tmpl = np.take_along_axis(tail, idx[:, None, :], axis=1)[:, 0, :]
    tmpl = np.where(valid.any(axis=1), tmpl, last[:, None])
    tmpl[short] = last[short, None]
    return tmpl


def lag_errors(values: np.ndarray, observed: np.ndarray, lag: int, window: int) -> np.ndarray:
    """y[t] - y[t-lag] over the last `window` periods, NaN unless both ends were observed."""
    T = values.shape[1]
    if lag >= T:
        return np.full((values.shape[0], 0), np.nan)
    start = max(lag, T - window)
    d = values[:, start:] - values[:, start - lag : T - lag]
    ok = observed[:, start:] & observed[:, start - lag : T - lag]
    return np.where(ok, d, np.nan)


def naive_offsets(
    values: np.ndarray,
    observed: np.ndarray,
    season: int,
    horizon: int,
    window: int,
    levels: Sequence[float] = QUANTILES,
) -> tuple[np.ndarray, np.ndarray]:
    """Quantile offsets (n, horizon, Q) of a seasonal naive forecast, and a flag of rows without any.

    Step h is k = ceil(h / season) seasons ahead. Offsets are the empirical quantiles of the
    series' own lag-season errors at k = 1 and lag-K·season errors at K = ceil(horizon / season),
    interpolated in sqrt(k) between them: exact where history measures them, a random-walk shape
    in between. A series too short for seasonal errors falls back to lag-1 errors × sqrt(h).
    """
    n = values.shape[0]
    qs = np.asarray(levels, dtype=float)
    h = np.arange(1, horizon + 1)
    k = np.ceil(h / season)
    K = int(k[-1])

    e1 = lag_errors(values, observed, season, window)
    q1 = nan_row_quantiles(e1, qs)
    n1 = np.count_nonzero(~np.isnan(e1), axis=1)
    if K > 1:
        eK = lag_errors(values, observed, K * season, window)
        qK = nan_row_quantiles(eK, qs)
        nK = np.count_nonzero(~np.isnan(eK), axis=1)
        noK = nK < MIN_ERROR_SAMPLES
        qK[noK] = q1[noK] * np.sqrt(K)  # not measurable: assume random-walk growth
        shape = (np.sqrt(k) - 1.0) / (np.sqrt(K) - 1.0)  # 0 at k=1, 1 at k=K
        off = q1[:, None, :] + (qK - q1)[:, None, :] * shape[None, :, None]
    else:
        off = np.repeat(q1[:, None, :], horizon, axis=1)

    short = n1 < MIN_ERROR_SAMPLES
    missing = np.zeros(n, dtype=bool)
    if short.any():
        e_1 = lag_errors(values[short], observed[short], 1, window)
        q_1 = nan_row_quantiles(e_1, qs)
        ok1 = np.count_nonzero(~np.isnan(e_1), axis=1) >= 2
        off[short] = np.where(ok1[:, None, None], q_1[:, None, :] * np.sqrt(h)[None, :, None], 0.0)
        missing[np.flatnonzero(short)[~ok1]] = True
    return off, missing


def _pairs(Q: int) -> list[tuple[int, int]]:
    """Symmetric (lower, upper) quantile positions, innermost pair first."""
    return [(i, Q - 1 - i) for i in range(Q // 2)][::-1]


def band_ratios(residual: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """(P, n, H) |residual − band mid| / band half-width for each central band (innermost first),
    float32; NaN where there is no residual or no width."""
    out = np.empty((offsets.shape[-1] // 2, *residual.shape), dtype=np.float32)
    for k, (lo, hi) in enumerate(_pairs(offsets.shape[-1])):
        half = (offsets[:, :, hi] - offsets[:, :, lo]) / 2.0
        mid = (offsets[:, :, hi] + offsets[:, :, lo]) / 2.0
        with np.errstate(invalid="ignore", divide="ignore"):
            out[k] = np.abs(residual - mid) / half
    return out


def band_factors(
    residual: np.ndarray, offsets: np.ndarray, groups: np.ndarray, levels: Sequence[float] = QUANTILES
) -> dict[str, np.ndarray]:
    """Per group, how much each central band must widen (or narrow) to hold its nominal share.

    residual: (n, H) actual − point of a hold-out forecast (NaN = no actual); offsets: the
    quantile offsets (n, H, Q) that forecast had. For each symmetric pair of levels (2.5/97.5 %,
    5/95 %, …) the factor is the quantile, at the pair's nominal coverage, of |residual − mid|
    over the band's half-width — split conformal scaling. Returns group -> (Q // 2,) factors
    (inner pair first), '*' pooling every series; groups with under 30 series use '*'.
    """
    scored = ~np.isnan(residual).all(axis=1)
    return factors_from_ratios(band_ratios(residual, offsets), scored, groups, levels)


def factors_from_ratios(
    ratios: np.ndarray, scored: np.ndarray, groups: np.ndarray, levels: Sequence[float] = QUANTILES
) -> dict[str, np.ndarray]:
    """band_factors from precomputed band_ratios (scored: series with any hold-out actual)."""
    qs = np.asarray(levels)
    pairs = _pairs(len(qs))
    groups = np.asarray(groups).astype(str)
    out: dict[str, np.ndarray] = {}
    for name in ["*", *sorted(set(groups))]:
        sel = np.ones(len(groups), dtype=bool) if name == "*" else groups == name
        if name != "*" and np.count_nonzero(sel & scored) < 30:
            continue
        f = np.ones(len(pairs))
        for k, (lo, hi) in enumerate(pairs):
            r = ratios[k][sel]
            r = r[np.isfinite(r)]
            if r.size >= 30:
                f[k] = float(np.quantile(r, qs[hi] - qs[lo]))
        out[name] = np.clip(f, 0.2, 10.0)
    return out


def scale_bands(offsets: np.ndarray, factors: np.ndarray, levels: Sequence[float] = QUANTILES) -> np.ndarray:
    """Offsets (…, Q) with each central band's half-width multiplied by its factor; nested bands
    stay nested."""
    pairs = _pairs(len(levels))
    out = offsets.copy()
    prev = None
    for k, (lo, hi) in enumerate(pairs):
        half = (offsets[..., hi] - offsets[..., lo]) / 2.0 * factors[..., k]
        if prev is not None:
            half = np.maximum(half, prev)
        mid = (offsets[..., hi] + offsets[..., lo]) / 2.0
        out[..., lo], out[..., hi] = mid - half, mid + half
        prev = half
    return out


class SeasonalNaiveModel(ForecastModel):
    """Repeat the last observed season; bands from the series' own seasonal-naive errors,
    rescaled so that they held their share of actuals over the last horizon (a hold-out)."""

    name = "naive"

    def __init__(
        self,
        season: int | None = None,
        error_window: int | None = None,
        calibrate: bool = True,
        pooled: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    ) -> None:
        """season: periods per season (default 7 days / 24 hours); error_window: periods of
        errors the bands come from (default a year of days / 4 weeks of hours); calibrate:
        rescale the bands by a hold-out of the last horizon, per metric; pooled: per panel end,
        the fleet's band factors per metric (learned on its calibration sample, see
        forecasting.pooled) instead of those pooled over this panel's series ({}: none)."""
        self.pooled = None if pooled is None else {k: dict(v) for k, v in pooled.items()}
        super().__init__()
        if season is not None and season < 1:
            raise ValueError(f"season must be a positive number of periods, got {season}")
        if error_window is not None and error_window < 1:
            raise ValueError(f"error_window must be a positive number of periods, got {error_window}")
        self.season = season
        self.error_window = error_window
        self.calibrate = calibrate

    def fit(self, panel: Panel) -> Self:
        if panel.n_series == 0:
            raise ValueError("cannot fit a forecast model on an empty panel (no series)")
        self._panel = panel
        return self

    def _season_of(self, panel: Panel) -> int:
        return self.season or SEASON[panel.freq]

    def predict(self, horizon: int) -> ForecastResult:
        panel = self._require_fitted()
        if horizon < 1:
            raise ValueError(f"horizon must be at least 1 period, got {horizon}")
        m = self._season_of(panel)
        window = self.error_window or m * ERROR_WINDOW_SEASONS[panel.freq]
        values, observed = panel.values, panel.observed
        n = panel.n_series
        factors = self._band_factors(panel, m, horizon, window) if self.calibrate else None
        point = np.empty((n, horizon))
        quantiles = np.empty((n, horizon, len(QUANTILES)))
        no_spread = np.zeros(n, dtype=bool)
        steps = np.arange(horizon) % m
        for lo in range(0, n, BLOCK):  # blocks keep the (n, H, Q) temporaries in cache
            sl = slice(lo, lo + BLOCK)
            p = seasonal_template(values[sl], m)[:, steps]
            off, no_spread[sl] = naive_offsets(values[sl], observed[sl], m, horizon, window)
            if factors is not None:
                off = scale_bands(off, factors[sl][:, None, :])
            point[sl] = p
            np.add(p[:, :, None], off, out=quantiles[sl])
        point, quantiles = finalize(point, quantiles, panel.upper_bounds)

        empty = np.isnan(values).all(axis=1)
        failures = _failures(
            panel.keys,
            [
                (empty, "no observations: nothing to forecast"),
                (no_spread & ~empty, "fewer than 2 observed changes: band width unknown (zero)"),
            ],
            self.name,
        )
        return ForecastResult(
            keys=panel.keys,
            index=panel.future_index(horizon),
            point=point,
            quantiles=quantiles,
            model=np.full(panel.n_series, self.name, dtype=object),
            failures=failures,
        )

    def _band_factors(self, panel: Panel, m: int, H: int, window: int) -> np.ndarray | None:
        """(n, Q // 2) band factors per series: how the same bands fared on the last H periods,
        pooled per metric (None when the history is too short to hold H periods out)."""
        metrics = panel.keys["metric"].to_numpy(dtype=object)
        if self.pooled is not None:
            key = pd.Timestamp(panel.index[-1]).isoformat()
            if key not in self.pooled:
                raise ValueError(
                    f"the fleet's naive band factors cover panels ending at {sorted(self.pooled)}, not {key}"
                )
            given = self.pooled[key]
            if not given:
                return None
            return np.stack([np.asarray(given.get(str(g), given["*"]), dtype=float) for g in metrics])
        factors = self._pooled_factors(panel, m, H, window)
        if factors is None:
            return None
        return np.stack([factors.get(str(g), factors["*"]) for g in metrics])

    def _factor_table(self, panel: Panel, H: int) -> dict[str, np.ndarray]:
        """The band factors per metric this panel's hold-out gives ({}: history too short): what
        other panels of the fleet take as `pooled`."""
        m = self._season_of(panel)
        window = self.error_window or m * ERROR_WINDOW_SEASONS[panel.freq]
        return self._pooled_factors(panel, m, H, window) or {}

    def _pooled_factors(self, panel: Panel, m: int, H: int, window: int) -> dict[str, np.ndarray] | None:
        T, n = panel.length, panel.n_series
        origin = T - H
        if origin < 2 * m:
            return None
        ratios = np.empty((len(QUANTILES) // 2, n, H), dtype=np.float32)
        scored = np.zeros(n, dtype=bool)
        steps = np.arange(H) % m
        for lo in range(0, n, BLOCK):
            sl = slice(lo, lo + BLOCK)
            head_v, head_o = panel.values[sl, :origin], panel.observed[sl, :origin]
            point = seasonal_template(head_v, m)[:, steps]
            held, _ = naive_offsets(head_v, head_o, m, H, window)
            actual = np.where(panel.observed[sl, origin:], panel.values[sl, origin:], np.nan)
            residual = actual - point
            ratios[:, sl] = band_ratios(residual, held)
            scored[sl] = ~np.isnan(residual).all(axis=1)
        return factors_from_ratios(ratios, scored, panel.keys["metric"].to_numpy(dtype=object))


def _failures(keys: pd.DataFrame, rules: list[tuple[np.ndarray, str]], model: str) -> pd.DataFrame:
    """Failure rows (server_id, metric, model, reason) for every series a rule flags."""
    frames = []
    for mask, reason in rules:
        if mask.any():
            rows = keys.loc[mask, ["server_id", "metric"]].reset_index(drop=True)
            rows["model"] = model
            rows["reason"] = reason
            frames.append(rows)
    if not frames:
        return pd.DataFrame({c: pd.Series(dtype="str") for c in FAILURE_COLUMNS})
    return pd.concat(frames, ignore_index=True)[FAILURE_COLUMNS]
