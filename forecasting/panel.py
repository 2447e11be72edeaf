"""A panel: many series (server × metric) on one regular time grid, as one 2-D array.

Models fit whole fleets at once, so the natural shape is ``values[n_series, T]`` with NaN for
missing periods; building it is vectorised (no loop over servers).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from .schema import MAX_INTERPOLATE_GAP, METRIC_COLUMNS, METRICS, freq_alias


@dataclass
class Panel:
    """Series on a common grid. ``observed`` marks real values (not interpolated, not missing)."""

    keys: pd.DataFrame  # columns server_id, metric; row i describes values[i]
    index: pd.DatetimeIndex  # regular UTC grid, length T
    values: np.ndarray  # (n, T) float64; NaN = missing after short-gap interpolation
    observed: np.ndarray  # (n, T) bool
    freq: str  # 'daily' | 'hourly'

    @property
    def n_series(self) -> int:
        return self.values.shape[0]

    @property
    def length(self) -> int:
        return self.values.shape[1]

    @property
    def upper_bounds(self) -> np.ndarray:
        """Per-series upper bound: 100 for percent metrics, +inf for rates."""
        return np.array([METRICS[m].upper_bound for m in self.keys["metric"]], dtype=float)

    def future_index(self, horizon: int) -> pd.DatetimeIndex:
        alias = freq_alias(self.freq)
        return pd.date_range(self.index[-1], periods=horizon + 1, freq=alias)[1:]

    def head(self, t: int) -> Panel:
        """The first t periods (a backtest cut-off sees only the past)."""
        return Panel(self.keys, self.index[:t], self.values[:, :t], self.observed[:, :t], self.freq)

    def subset(self, rows: np.ndarray) -> Panel:
        return Panel(
            self.keys.iloc[rows].reset_index(drop=True),
            self.index,
            self.values[rows],
            self.observed[rows],
            self.freq,
        )


def build_panel(
    metrics: pd.DataFrame,
    freq: str = "daily",
    columns: list[str] | None = None,
    max_gap: int | None = None,
    end: pd.Timestamp | None = None,
    start: pd.Timestamp | None = None,
) -> Panel:
    """Wide contract metrics -> Panel, one series per server × present metric column.

    Short interior gaps (≤ max_gap periods) are linearly interpolated; longer gaps and the
    periods before a series starts stay NaN, so models see exactly what is known.
    """
    alias = freq_alias(freq)
    cols = [c for c in (columns or METRIC_COLUMNS) if c in metrics.columns]
    max_gap = MAX_INTERPOLATE_GAP[freq] if max_gap is None else max_gap
    if metrics.empty or not cols:
        raise ValueError("no metrics to build a panel from")
    ts = metrics["timestamp"]
    # start/end: the fleet's grid when a shard is built alone, so every shard shares one time axis
    start = ts.min() if start is None else min(pd.Timestamp(start), ts.min())
    stop = ts.max() if end is None else end
    index = pd.date_range(start, stop, freq=alias)
    step = pd.Timedelta(1, alias)
    pos = ((ts - start) // step).to_numpy()
    codes, servers = pd.factorize(metrics["server_id"], sort=True)
    n_srv, T = len(servers), len(index)
    inside = pos < T

    blocks = []
    for col in cols:
        arr = np.full((n_srv, T), np.nan)
        v = metrics[col].to_numpy(dtype="float64")
        ok = inside & ~np.isnan(v)
        arr[codes[ok], pos[ok]] = v[ok]
        blocks.append(arr)
    values = np.stack(blocks, axis=1).reshape(n_srv * len(cols), T)  # server-major order
    keys = pd.DataFrame(
        {"server_id": np.repeat(np.asarray(servers, dtype=object), len(cols)), "metric": np.tile(cols, n_srv)}
    )
    # Drop series with no observation at all (metric absent for that server).
    present = ~np.isnan(values).all(axis=1)
    values, keys = values[present], keys[present].reset_index(drop=True)
    observed = ~np.isnan(values)
    values = interpolate_short_gaps(values, max_gap)
    return Panel(keys, index, values, observed, freq)


def interpolate_short_gaps(values: np.ndarray, max_gap: int) -> np.ndarray:
    """Fill interior NaN runs of length ≤ max_gap linearly along axis 1; leave longer runs."""
    if max_gap <= 0:
        return values
    rows = np.flatnonzero(np.isnan(values).any(axis=1))  # usually few series have gaps
    if rows.size == 0:
        return values
    out = values.copy()
    T = values.shape[1]
    t = np.arange(T, dtype=np.int32)
    for lo in range(0, rows.size, 4096):  # bounded temporaries on big fleets
        sub_rows = rows[lo : lo + 4096]
        sub = values[sub_rows]
        nan = np.isnan(sub)
        prev = np.maximum.accumulate(np.where(nan, -1, t), axis=1)
        nxt = np.minimum.accumulate(np.where(nan, T, t)[:, ::-1], axis=1)[:, ::-1]
        fill = nan & (prev >= 0) & (nxt < T) & (nxt - prev - 1 <= max_gap)
        r, c = np.nonzero(fill)
        p, q = prev[r, c], nxt[r, c]
        sub[r, c] = sub[r, p] + (sub[r, q] - sub[r, p]) * (c - p) / (q - p)
        out[sub_rows] = sub
    return out
