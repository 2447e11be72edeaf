"""Prepared analytics inputs: forecasts, history and inventory aligned on one server axis.

Risk, right-sizing, packing and every what-if read the same arrays, so the long frames are
aligned once per run (:func:`prepare`) and everything after that is vectorised array work. This
module is the shared leaf of the analytics: it decides nothing.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import pandas as pd

from .calendar import MONTH_END_DAYS
from .plan import QUANTILE_COLUMNS, QUANTILES
from .schema import (
    FREQUENCIES,
    INVENTORY_COLUMNS,
    METRICS,
    OPTIONAL_INVENTORY_COLUMNS,
    freq_alias,
    require_columns,
)

LEVELS = np.asarray(QUANTILES, dtype=float)
I10, I50, I90 = QUANTILES.index(0.1), QUANTILES.index(0.5), QUANTILES.index(0.9)
# Window of history that defines "current" p95 and the seasonal uplifts.
CURRENT_DAYS = 7
UPLIFT_DAYS = 366
# History kept by prepare(): a year of seasonal peaks and packing history, plus margin.
HISTORY_DAYS = {"daily": 400, "hourly": 120}
# The forecast columns `prepare` reads (yhat, yhat_lower and yhat_upper repeat three quantiles):
# a reader of a plan's forecasts for analytics asks its store for these only.
FORECAST_INPUT_COLUMNS = ("server_id", "metric", "timestamp", *QUANTILE_COLUMNS, "model")
# Days either side of a month-end window that form its baseline.
BASELINE_DAYS = 4
# An uplift the forecast lacks is added only when at least this large (percent points, or this
# fraction of the series' mean for Mbps metrics): smaller differences are noise.
UPLIFT_MIN_POINTS = 2.0
UPLIFT_MIN_FRACTION = 0.05
# Peak kinds on the time axis.
OFF_PEAK, MONTH_END, QUARTER_END = 0, 1, 2
PEAK_NAMES = {MONTH_END: "month-end", QUARTER_END: "quarter-end"}


# Optional inventory columns the placement rules read (absent = unknown, no constraint).
PLACEMENT_COLUMNS = tuple(OPTIONAL_INVENTORY_COLUMNS)


class AnalyticsError(ValueError):
    """Input the analytics cannot use; the message names what and where."""


@dataclass(frozen=True)
class Grid:
    """The fleet's time axis: first and last observed period, and the forecast horizon.

    Given to :func:`prepare`, it anchors the history window, the origin and the forecast steps on
    the *fleet* instead of on the rows at hand, so the inputs of a shard's servers are exactly
    those rows of the whole fleet's inputs (a shard whose servers all stopped reporting early
    still counts "days to breach" from the fleet's origin)."""

    first: pd.Timestamp
    last: pd.Timestamp
    horizon: int

    @classmethod
    def of(cls, first: Any, last: Any, horizon: int) -> Grid:
        return cls(_utc(first), _utc(last), int(horizon))


def _utc(ts: Any) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


# --------------------------------------------------------------------------- prepared inputs


@dataclass(frozen=True)
class AnalyticsInputs:
    """Forecasts, history and inventory aligned on one server axis, ready for array work.

    Row ``i`` of every array is ``inventory.iloc[i]``. Build with :func:`prepare`; what-if
    scenarios derive new instances (growth, added servers) without re-fitting anything.
    """

    inventory: pd.DataFrame  # contract columns, RangeIndex, axis 0 of every array
    metrics: tuple[str, ...]  # forecast metrics: axis 1 of ``quantiles``
    index: pd.DatetimeIndex  # forecast steps (H)
    quantiles: np.ndarray  # (S, M, Q, H) float64, sorted along Q, NaN where not forecast
    present: np.ndarray  # (S, M) bool: the series has a forecast
    models: np.ndarray  # (S, M) object: model name ('' when absent)
    history_index: pd.DatetimeIndex  # observed periods (T)
    history: Mapping[str, np.ndarray]  # metric -> (S, T) float64, NaN = missing
    origin: pd.Timestamp  # forecast origin: the last observed period of the fleet
    freq: str  # 'daily' | 'hourly'
    peak_kind: np.ndarray  # (H,) int8: OFF_PEAK | MONTH_END | QUARTER_END
    current_p95: np.ndarray  # (S, M) p95 of each series' last 7 days of history
    hist_uplift: np.ndarray  # (S, M, 2) [month-end, quarter-end] uplift seen in history (NaN = unknown)
    missing_uplift: np.ndarray  # (S, M, 2) part of that uplift the forecast lacks (≥ 0)
    growth: np.ndarray | None = None  # (S, M, H) factor applied by a what-if (None = none)
    # derived arrays that do not depend on a scenario, shared by the instances a what-if derives
    # (see :meth:`memoised`); not pickled
    memo: dict = field(default_factory=dict, compare=False, repr=False)

    def __getstate__(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if k != "memo"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, memo={})

    def memoised(self, key: tuple, sources: tuple, compute: Callable[[], Any]) -> Any:
        """``compute()`` once per ``key`` while the ``sources`` (the arrays it reads) are the same
        objects: a what-if replaces the arrays it changes, so it never sees a stale result."""
        hit = self.memo.get(key)
        if hit is not None and len(hit[0]) == len(sources) and all(a is b for a, b in zip(hit[0], sources)):
            return hit[1]
        value = compute()
        self.memo[key] = (sources, value)
        return value

    @property
    def server_ids(self) -> np.ndarray:
        return self.inventory["server_id"].to_numpy(dtype=object)

    @property
    def n_servers(self) -> int:
        return len(self.inventory)

    @property
    def periods_per_day(self) -> int:
        return 24 if self.freq == "hourly" else 1

    def metric_pos(self, metric: str) -> int | None:
        """Position of a metric on axis 1 of ``quantiles`` (None if it is not forecast)."""
        return self.metrics.index(metric) if metric in self.metrics else None

    def peak_adjustment(self, metric_pos: int | None = None) -> np.ndarray:
        """(S, M, H) points added on month/quarter-end days for uplift the forecast lacks; (S, H)
        for one metric (its position on axis 1)."""
        me = (self.peak_kind == MONTH_END).astype(float)
        qe = (self.peak_kind == QUARTER_END).astype(float)
        up = self.missing_uplift if metric_pos is None else self.missing_uplift[:, metric_pos]
        return up[..., 0:1] * me + up[..., 1:2] * qe

    def series_quantiles(self, s_idx: np.ndarray, m_idx: np.ndarray, adjusted: bool = True) -> np.ndarray:
        """(N, Q, H) quantiles of the given series under the scenario (growth applied) and, when
        ``adjusted``, with the seasonal uplift the forecast lacks added: what risk is judged on."""
        out = self.quantiles[s_idx, m_idx]  # fancy indexing: a copy we may modify
        if self.growth is not None:
            out *= self.growth[s_idx, m_idx][:, None, :]
        if adjusted and np.any(self.missing_uplift):
            out += self.peak_adjustment()[s_idx, m_idx][:, None, :]
        return out

    def path(self, metric: str, quantile: int, adjusted: bool = True) -> np.ndarray:
        """(S, H) one quantile path of one metric for every server (NaN rows if not forecast)."""
        j = self.metric_pos(metric)
        if j is None:
            return np.full((self.n_servers, len(self.index)), np.nan)
        out = self.quantiles[:, j, quantile, :].copy()
        if self.growth is not None:
            out *= self.growth[:, j, :]
        if adjusted and np.any(self.missing_uplift[:, j]):
            out += self.peak_adjustment(j)
        return out

    def with_changes(self, **changes) -> AnalyticsInputs:
        return replace(self, **changes)

    def take(self, rows: np.ndarray, metrics: tuple[str, ...] | None = None) -> AnalyticsInputs:
        """The inputs of some servers (a mask or positions) and, optionally, some metrics only:
        what a sharded run keeps of a shard for the fleet-wide packing."""
        rows = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows, dtype=np.intp)
        keep = self.metrics if metrics is None else tuple(m for m in self.metrics if m in metrics)
        js = [self.metrics.index(m) for m in keep]
        hist_keep = (
            self.history if metrics is None else {m: a for m, a in self.history.items() if m in metrics}
        )
        return AnalyticsInputs(
            inventory=self.inventory.iloc[rows].reset_index(drop=True),
            metrics=keep,
            index=self.index,
            quantiles=self.quantiles[rows][:, js],
            present=self.present[rows][:, js],
            models=self.models[rows][:, js],
            history_index=self.history_index,
            history={m: a[rows] for m, a in hist_keep.items()},
            origin=self.origin,
            freq=self.freq,
            peak_kind=self.peak_kind,
            current_p95=self.current_p95[rows][:, js],
            hist_uplift=self.hist_uplift[rows][:, js],
            missing_uplift=self.missing_uplift[rows][:, js],
            growth=None if self.growth is None else self.growth[rows][:, js],
        )

    def to_bytes(self) -> bytes:
        """The inputs as one ``.npz`` (no pickle: plain arrays, the inventory as Parquet bytes)."""
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.growth is not None:
            raise AnalyticsError("a what-if's inputs (growth applied) are not stored")
        inv = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(self.inventory, preserve_index=False), inv, compression="zstd")
        meta = {
            "metrics": list(self.metrics),
            "history": list(self.history),
            "freq": self.freq,
            "origin": self.origin.isoformat(),
            "index": [
                self.index[0].isoformat() if len(self.index) else self.origin.isoformat(),
                len(self.index),
            ],
            "history_index": [
                self.history_index[0].isoformat() if len(self.history_index) else self.origin.isoformat(),
                len(self.history_index),
            ],
        }
        out = io.BytesIO()
        np.savez(
            out,
            meta=np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8),
            inventory=np.frombuffer(inv.getvalue(), dtype=np.uint8),
            quantiles=self.quantiles,
            present=self.present,
            models=self.models.astype(str),
            peak_kind=self.peak_kind,
            current_p95=self.current_p95,
            hist_uplift=self.hist_uplift,
            missing_uplift=self.missing_uplift,
            **{f"history_{m}": a for m, a in self.history.items()},
        )
        return out.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> AnalyticsInputs:
        """Read :meth:`to_bytes` back (``allow_pickle=False``: stored bytes never run code)."""
        import io

        try:
            return cls._from_npz(io.BytesIO(data))
        except (OSError, ValueError, KeyError, json.JSONDecodeError) as e:
            raise AnalyticsError(f"stored analytics inputs are not readable: {e}") from e

    @classmethod
    def _from_npz(cls, source) -> AnalyticsInputs:
        import io

        import pyarrow.parquet as pq

        with np.load(source, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes())
            alias = freq_alias(meta["freq"])
            return cls(
                inventory=pq.read_table(io.BytesIO(z["inventory"].tobytes())).to_pandas(),
                metrics=tuple(meta["metrics"]),
                index=pd.date_range(pd.Timestamp(meta["index"][0]), periods=meta["index"][1], freq=alias),
                quantiles=z["quantiles"],
                present=z["present"],
                models=z["models"].astype(object),
                history_index=pd.date_range(
                    pd.Timestamp(meta["history_index"][0]), periods=meta["history_index"][1], freq=alias
                ),
                history={m: z[f"history_{m}"] for m in meta["history"]},
                origin=pd.Timestamp(meta["origin"]),
                freq=meta["freq"],
                peak_kind=z["peak_kind"],
                current_p95=z["current_p95"],
                hist_uplift=z["hist_uplift"],
                missing_uplift=z["missing_uplift"],
            )

    @classmethod
    def concat(cls, parts: list[AnalyticsInputs]) -> AnalyticsInputs:
        """The servers of several inputs on one axis (shards of one run: same grid, so the same
        time axes; a metric one part lacks is NaN / not present there)."""
        if not parts:
            raise AnalyticsError("nothing to concatenate")
        first = parts[0]
        for p in parts[1:]:
            if (
                not p.index.equals(first.index)
                or not p.history_index.equals(first.history_index)
                or p.origin != first.origin
                or p.freq != first.freq
            ):
                raise AnalyticsError("inputs on different time grids cannot be concatenated")
        metrics = tuple(m for m in METRICS if any(m in p.metrics for p in parts))
        hist_names = [m for m in METRICS if any(m in p.history for p in parts)]

        def stack(name: str, fill: Any) -> np.ndarray:
            out = []
            for p in parts:
                a = getattr(p, name)
                full = np.full((a.shape[0], len(metrics), *a.shape[2:]), fill, dtype=a.dtype)
                for j, m in enumerate(p.metrics):
                    full[:, metrics.index(m)] = a[:, j]
                out.append(full)
            return np.concatenate(out, axis=0)

        T = len(first.history_index)
        return cls(
            inventory=pd.concat([p.inventory for p in parts], ignore_index=True),
            metrics=metrics,
            index=first.index,
            quantiles=stack("quantiles", np.nan),
            present=stack("present", False),
            models=stack("models", ""),
            history_index=first.history_index,
            history={
                m: np.concatenate(
                    [p.history.get(m, np.full((p.n_servers, T), np.nan)) for p in parts], axis=0
                )
                for m in hist_names
            },
            origin=first.origin,
            freq=first.freq,
            peak_kind=first.peak_kind,
            current_p95=stack("current_p95", np.nan),
            hist_uplift=stack("hist_uplift", np.nan),
            missing_uplift=stack("missing_uplift", 0.0),
        )


def _timestamps_us(values: pd.Series | pd.Index, what: str) -> np.ndarray:
    """UTC epoch microseconds of a timestamp column (naive values are taken as UTC)."""
    try:
        idx = pd.DatetimeIndex(pd.to_datetime(values, utc=True))
    except (ValueError, TypeError) as e:
        raise AnalyticsError(f"{what}: timestamps cannot be parsed ({e})") from None
    if idx.hasnans:
        raise AnalyticsError(f"{what}: {int(idx.isna().sum())} missing timestamp(s)")
    return idx.as_unit("us").asi8


def _infer_freq(stamps_us: np.ndarray, what: str) -> str:
    u = np.unique(stamps_us[: min(len(stamps_us), 200_000)])
    if len(u) < 2:
        return "daily"
    step = int(np.min(np.diff(u)))
    return "hourly" if step < 86_400_000_000 else "daily"


def _server_positions(ids: pd.Series, inventory_ids: pd.Index, what: str) -> np.ndarray:
    codes, uniques = pd.factorize(ids, sort=False)
    pos = inventory_ids.get_indexer(pd.Index(uniques).astype(str))
    unknown = np.asarray(uniques, dtype=object)[pos < 0]
    if len(unknown):
        raise AnalyticsError(
            f"{what} has {len(unknown)} server_id(s) not in the inventory (e.g. {', '.join(map(str, unknown[:3]))})"
        )
    if (codes < 0).any():
        raise AnalyticsError(f"{what} has rows without a server_id")
    return pos[codes]


def _check_inventory(inventory: pd.DataFrame) -> pd.DataFrame:
    require_columns(inventory, list(INVENTORY_COLUMNS), "inventory", "analytics input")
    placement = [c for c in PLACEMENT_COLUMNS if c in inventory.columns]  # the policy reads them
    inv = inventory[[*INVENTORY_COLUMNS, *placement]].reset_index(drop=True).copy()
    inv["server_id"] = inv["server_id"].astype(str)
    dup = inv["server_id"].duplicated()
    if dup.any():
        raise AnalyticsError(
            f"inventory lists server_id more than once: {', '.join(inv.loc[dup, 'server_id'].head(3))}"
        )
    return inv


def _forecast_cube(
    forecasts: pd.DataFrame, inventory_ids: pd.Index, freq: str, grid: Grid | None = None
) -> tuple[tuple[str, ...], pd.DatetimeIndex, np.ndarray, np.ndarray, np.ndarray]:
    """Long forecast frame -> (metrics, index, quantiles (S,M,Q,H), present (S,M), models (S,M)).

    With a ``grid`` the steps are the fleet's (the period after its last, ``horizon`` of them)."""
    require_columns(forecasts, list(FORECAST_INPUT_COLUMNS[:-1]), "forecasts", "")  # model: optional
    alias = freq_alias(freq)
    if forecasts.empty and grid is not None:
        S = len(inventory_ids)
        index = pd.date_range(grid.last + pd.Timedelta(1, alias), periods=grid.horizon, freq=alias)
        empty = np.zeros((S, 0), dtype=bool)
        return (), index, np.full((S, 0, len(QUANTILES), grid.horizon), np.nan), empty, empty.astype(object)
    if forecasts.empty:
        raise AnalyticsError("forecasts is empty: nothing to assess")
    metric_codes, metric_names = pd.factorize(forecasts["metric"].astype(str), sort=False)
    unknown = [m for m in metric_names if m not in METRICS]
    if unknown:
        raise AnalyticsError(f"forecasts has unknown metric(s) {unknown}; known: {list(METRICS)}")
    order = [m for m in METRICS if m in set(metric_names)]  # contract order, stable across runs
    remap = np.array([order.index(m) for m in metric_names])
    m_idx = remap[metric_codes]
    s_idx = _server_positions(forecasts["server_id"], inventory_ids, "forecasts")
    ts = _timestamps_us(forecasts["timestamp"], "forecasts")
    step = int(pd.Timedelta(1, alias).value // 1000)
    t0 = int(ts.min()) if grid is None else (grid.last.value // 1000) + step
    off = ts - t0
    if np.any(off % step):
        raise AnalyticsError(f"forecasts: timestamps are not on a regular {freq} grid")
    t_idx = off // step
    H = int(t_idx.max()) + 1 if grid is None else max(grid.horizon, int(t_idx.max()) + 1)
    if t_idx.min() < 0:
        raise AnalyticsError(f"forecasts: a timestamp is not after the fleet's last period {grid.last}")
    S, M, Q = len(inventory_ids), len(order), len(QUANTILES)
    flat = (s_idx * M + m_idx) * H + t_idx
    counts = np.bincount(flat, minlength=S * M * H)
    if counts.max() > 1:
        dup = np.flatnonzero(counts > 1)[0]
        s, rest = divmod(int(dup), M * H)
        raise AnalyticsError(
            f"forecasts has several rows for one server, metric and timestamp "
            f"(e.g. {inventory_ids[s]} {order[rest // H]})"
        )
    values = np.full((S, M, Q, H), np.nan)
    for k, col in enumerate(QUANTILE_COLUMNS):  # a column at a time: no (rows, Q) copies
        q = forecasts[col].to_numpy(dtype="float64")
        if np.isinf(q).any():
            raise AnalyticsError("forecasts has infinite quantile values")
        values[s_idx, m_idx, k, t_idx] = q
    values.sort(axis=2)  # rearrangement, in place: crossing quantiles become monotone
    present = np.zeros(S * M, dtype=bool)
    present[s_idx * M + m_idx] = True
    models = np.full(S * M, "", dtype=object)
    if "model" in forecasts.columns:
        codes, names = pd.factorize(forecasts["model"], sort=False)
        names = np.asarray([str(x) for x in names] + [""], dtype=object)
        models[s_idx * M + m_idx] = names[codes]  # code −1 (missing) picks ""
    index = pd.date_range(pd.Timestamp(t0, unit="us", tz="UTC"), periods=H, freq=freq_alias(freq))
    return tuple(order), index, values, present.reshape(S, M), models.reshape(S, M)


def _history_arrays(
    history: pd.DataFrame, inventory_ids: pd.Index, freq: str, days: int, grid: Grid | None = None
) -> tuple[pd.DatetimeIndex, dict[str, np.ndarray]]:
    """metric -> (S, T) arrays of the last ``days`` days of history (older rows are skipped;
    the frame itself is never filtered, which would copy its string columns). With a ``grid``
    the window ends at the fleet's last period and starts no earlier than its first."""
    require_columns(history, ["server_id", "timestamp"], "history", "")
    cols = [c for c in METRICS if c in history.columns]
    if not cols:
        raise AnalyticsError(f"history has none of the metric columns {list(METRICS)}")
    if history.empty and grid is None:
        raise AnalyticsError("history is empty: risk needs the recent observations")
    ts = _timestamps_us(history["timestamp"], "history") if len(history) else np.zeros(0, dtype=np.int64)
    last = int(ts.max()) if grid is None else grid.last.value // 1000
    keep = (ts > last - days * 86_400_000_000) & (ts <= last)
    s_idx = _server_positions(history["server_id"], inventory_ids, "history")
    everything = bool(keep.all())
    if not everything:
        ts, s_idx = ts[keep], s_idx[keep]
    step = int(pd.Timedelta(1, freq_alias(freq)).value // 1000)
    if grid is None:
        t0 = int(ts.min())
    else:  # the fleet's window: its first period inside the last ``days``, on the grid's step
        lo = max(grid.first.value // 1000, last - days * 86_400_000_000 + 1)
        t0 = last - ((last - lo) // step) * step
    t_idx = (ts - t0) // step
    T = int(t_idx.max()) + 1 if grid is None else (last - t0) // step + 1
    S = len(inventory_ids)
    flat = s_idx * T + t_idx
    out = {}
    for c in cols:
        arr = np.full(S * T, np.nan)
        v = pd.to_numeric(history[c], errors="coerce").to_numpy(dtype="float64")
        if not everything:
            v = v[keep]
        ok = np.isfinite(v)
        if ok.all():
            arr[flat] = v
        else:
            arr[flat[ok]] = v[ok]
        out[c] = arr.reshape(S, T)
    index = pd.date_range(pd.Timestamp(t0, unit="us", tz="UTC"), periods=T, freq=freq_alias(freq))
    return index, out


def _peak_kind(index: pd.DatetimeIndex) -> np.ndarray:
    """Month-end / quarter-end flags per period, as forecasting.calendar defines them."""
    naive = index.tz_convert(None) if index.tz is not None else index
    month_end = np.asarray(naive.days_in_month - naive.day) < MONTH_END_DAYS
    quarter_end = month_end & np.isin(np.asarray(naive.month), (3, 6, 9, 12))
    kind = np.where(quarter_end, QUARTER_END, np.where(month_end, MONTH_END, OFF_PEAK))
    return kind.astype(np.int8)


@dataclass(frozen=True)
class _MonthEnds:
    """Calendar design of month-end windows on one time index (built once, used for all series).

    ``design`` stacks, as columns, the day-of-week indicators of off-peak periods, each month's
    month-end window, each window's baseline, and the off-peak indicator, so every per-series
    mean the uplift needs is a sum over one column's periods.
    """

    design: np.ndarray  # (T, slots + 2·months + 1) float32
    slot_mix: np.ndarray  # (slots, months) share of each weekday in window minus in baseline
    is_qe: np.ndarray  # (months,) the month closes a quarter
    n_slots: int
    n_months: int


def _month_ends(index: pd.DatetimeIndex) -> _MonthEnds:
    naive = index.tz_convert(None) if index.tz is not None else index
    T = len(index)
    day = np.asarray(naive.day)
    days_left = np.asarray(naive.days_in_month) - day
    month = np.asarray(naive.year) * 12 + np.asarray(naive.month) - 1
    first = int(month.min()) if T else 0
    n_months = int(month.max()) - first + 1 if T else 0
    code = month - first
    peak = days_left < MONTH_END_DAYS
    pre = (days_left >= MONTH_END_DAYS) & (days_left < MONTH_END_DAYS + BASELINE_DAYS)
    post = day <= BASELINE_DAYS  # belongs to the previous month's window
    base_code = np.where(post, code - 1, code)
    base = (pre | post) & (base_code >= 0)
    hourly = T > 1 and (index[1] - index[0]) < pd.Timedelta(days=1)
    n_slots = 168 if hourly else 7
    slot = np.asarray(naive.day_of_week) * (24 if hourly else 1) + (np.asarray(naive.hour) if hourly else 0)
    A_slot = np.zeros((T, n_slots))
    A_slot[np.flatnonzero(~peak), slot[~peak]] = 1.0
    A_peak = np.zeros((T, n_months))
    A_peak[np.flatnonzero(peak), code[peak]] = 1.0
    A_base = np.zeros((T, n_months))
    A_base[np.flatnonzero(base), base_code[base]] = 1.0
    slot_of = np.zeros((T, n_slots))
    slot_of[np.arange(T), slot] = 1.0
    with np.errstate(invalid="ignore", divide="ignore"):
        mix = slot_of.T @ A_peak / A_peak.sum(axis=0) - slot_of.T @ A_base / A_base.sum(axis=0)
    design = np.concatenate([A_slot, A_peak, A_base, (~peak)[:, None].astype(float)], axis=1)
    is_qe = ((np.arange(n_months) + first) % 12 + 1) % 3 == 0
    return _MonthEnds(design.astype(np.float32), np.nan_to_num(mix), is_qe, n_slots, n_months)


def _uplift(values: np.ndarray, design: _MonthEnds, min_months: int) -> np.ndarray:
    """(N, 2) median over months of (mean on month-end days − mean on the days around them).

    The weekly pattern is taken out first (a month-end that falls on a weekend is not a dip):
    each row's mean per day of week, estimated off the month-end windows, enters through the
    weekday mix of window and baseline. The baseline is the 4 days before the window and the first
    4 days of the next month, placed symmetrically around it, so a linear trend cancels; the
    median over months keeps one odd month from deciding. Column 0: ordinary month-ends, 1:
    quarter-ends. NaN where fewer than ``min_months`` months of that kind have both peak and
    baseline data.
    """
    N = values.shape[0]
    out = np.full((N, 2), np.nan)
    if N == 0 or values.shape[1] == 0 or design.n_months == 0:
        return out
    seen = ~np.isnan(values)
    filled = np.where(seen, values, 0.0)
    # each mean is a sum over its design column's periods, row by row: a row's result never
    # depends on the other rows (a BLAS product's rounding does), so a shard's servers get
    # exactly the fleet's numbers
    cols = [np.flatnonzero(design.design[:, c]) for c in range(design.design.shape[1])]
    sums = np.stack([filled[:, c].sum(axis=1) for c in cols], axis=1)
    counts = np.stack([seen[:, c].sum(axis=1) for c in cols], axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        means = sums / counts
    k, m = design.n_slots, design.n_months
    weekly = np.nan_to_num(means[:, :k] - means[:, -1:])  # (N, slots) effect of the day of week
    diff = means[:, k : k + m] - means[:, k + m : k + 2 * m] - np.einsum("ns,sm->nm", weekly, design.slot_mix)
    for col, sel in ((0, ~design.is_qe), (1, design.is_qe)):
        d = diff[:, sel]
        enough = (~np.isnan(d)).sum(axis=1) >= min_months
        if enough.any():
            out[enough, col] = row_quantile(d[enough], 0.5)
    return out


def row_quantile(a: np.ndarray, q: float) -> np.ndarray:
    """Per-row quantile ignoring NaN (numpy's 'linear' method) in one sort; all-NaN rows → NaN."""
    s = np.sort(a, axis=1)  # NaN sort last
    n = (~np.isnan(a)).sum(axis=1)
    pos = np.maximum(n - 1, 0) * q
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, np.maximum(n - 1, 0))
    rows = np.arange(a.shape[0])
    v_lo, v_hi = s[rows, lo], s[rows, hi]
    out = v_lo + (v_hi - v_lo) * (pos - lo)
    return np.where(n > 0, out, np.nan)


def _last_window_p95(values: np.ndarray, window: int) -> np.ndarray:
    """p95 of each row's last ``window`` periods ending at its own last observation."""
    S, T = values.shape
    if T == 0:
        return np.full(S, np.nan)
    ok = ~np.isnan(values)
    last = T - 1 - np.argmax(ok[:, ::-1], axis=1)
    cols = last[:, None] - np.arange(window)[::-1][None, :]
    win = values[np.arange(S)[:, None], np.clip(cols, 0, T - 1)]
    win = np.where(cols >= 0, win, np.nan)
    return row_quantile(win, 0.95)


def prepare(
    forecasts: pd.DataFrame | Callable[[], pd.DataFrame],
    history: pd.DataFrame | Callable[[], pd.DataFrame],
    inventory: pd.DataFrame,
    *,
    origin: pd.Timestamp | str | None = None,
    freq: str | None = None,
    history_days: int | None = None,
    grid: Grid | None = None,
) -> AnalyticsInputs:
    """Align forecasts (plan.FORECAST_COLUMNS), validated history (wide contract) and inventory.

    Done once per batch run (or once per plan in the app); risk, right-sizing, consolidation and
    every what-if then work on the arrays. ``origin`` (for "days to breach") defaults to the last
    observed period of the fleet; ``freq`` is inferred from the forecast timestamps. Only the last
    ``history_days`` of history are kept (default 400 daily / 120 hourly: the year of seasonal
    peaks and packing history the analytics look at, and what plans are replayed on), which keeps
    the prepared object small enough to cache. A ``grid`` (the fleet's :class:`Grid`) anchors the
    time axes on the fleet, so the inputs of any subset of servers are those rows of the fleet's.

    ``forecasts`` and ``history`` may be given as functions that read them: each frame is then
    read when needed and dropped once turned into arrays, so the two frames are never held
    together with the arrays (the app's scoped what-ifs: 0.5 GB less at its peak).
    """
    inv = _check_inventory(inventory)
    ids = pd.Index(inv["server_id"])
    if callable(forecasts):
        forecasts = forecasts()
    if freq is None:
        require_columns(forecasts, ["timestamp"], "forecasts", "")
        freq = _infer_freq(_timestamps_us(forecasts["timestamp"], "forecasts"), "forecasts")
    if freq not in FREQUENCIES:
        raise AnalyticsError(f"unknown frequency {freq!r}: use one of {', '.join(FREQUENCIES)}")
    metrics, index, quantiles, present, models = _forecast_cube(forecasts, ids, freq, grid)
    del forecasts  # the last reference when it was read here
    days = HISTORY_DAYS[freq] if history_days is None else int(history_days)
    if days < 1:
        raise AnalyticsError(f"history_days {history_days} must be ≥ 1")
    h_index, hist = _history_arrays(history() if callable(history) else history, ids, freq, days, grid)
    del history
    if origin is None:
        origin_ts = h_index[-1]
    else:
        origin_ts = pd.Timestamp(origin)
        origin_ts = origin_ts.tz_localize("UTC") if origin_ts.tzinfo is None else origin_ts.tz_convert("UTC")
    kind = _peak_kind(index)
    S, M = present.shape
    per_day = 24 if freq == "hourly" else 1
    current = np.full((S, M), np.nan)
    hist_up = np.full((S, M, 2), np.nan)
    missing = np.zeros((S, M, 2))
    recent = h_index >= h_index[-1] - pd.Timedelta(days=UPLIFT_DAYS)
    h_design, f_design = _month_ends(h_index[recent]), _month_ends(index)
    for j, m in enumerate(metrics):
        if m not in hist:
            continue
        # a metric at a time (every number is a row's own, so the same as all at once): the
        # temporaries stay one metric's size
        current[:, j] = _last_window_p95(hist[m], CURRENT_DAYS * per_day)
        h = hist[m][:, recent]
        hu = _uplift(h, h_design, min_months=2)
        fu = _uplift(quantiles[:, j, I50, :], f_design, min_months=1)
        hist_up[:, j] = hu
        if METRICS[m].kind == "percent":
            floor = np.full(S, UPLIFT_MIN_POINTS)
        else:
            with np.errstate(invalid="ignore", divide="ignore"):
                seen = ~np.isnan(h)
                mean = np.where(seen, h, 0.0).sum(axis=1) / seen.sum(axis=1)
            floor = np.nan_to_num(mean * UPLIFT_MIN_FRACTION, nan=np.inf)
        # what the forecast lacks, never more than the uplift itself (a forecast whose own
        # "uplift" is negative, e.g. a repeated spike off the month-end, gets at most hu added)
        gap = np.nan_to_num(np.minimum(hu - np.maximum(fu, 0.0), hu), nan=0.0)
        missing[:, j] = np.where(gap >= floor[:, None], gap, 0.0)
    missing[~present] = 0.0
    return AnalyticsInputs(
        inventory=inv,
        metrics=metrics,
        index=index,
        quantiles=quantiles,
        present=present,
        models=models,
        history_index=h_index,
        history=hist,
        origin=origin_ts,
        freq=freq,
        peak_kind=kind,
        current_p95=current,
        hist_uplift=hist_up,
        missing_uplift=missing,
    )
