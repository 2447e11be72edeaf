"""The cached read model every callback reads: the latest run's plan, ready for display.

Why it exists (DESIGN.md §6): the batch job has done the heavy work, so a click must only
filter and aggregate in memory. A run is loaded once per run id — its summary tables (risk,
recommendations, consolidation), the inventory, per-server summaries and the fleet trend
summed per filter cell — into a flask-caching backend that gunicorn workers share
(FileSystemCache by default), and memoised per process because a run never changes once
published. ``runs/LATEST`` is re-read at most every ``cache_ttl_seconds``. When the store
cannot be reached the last good run keeps being served and :class:`DataStatus` says so, for
the shell's banner.

What it never holds: series. At 100,000 servers a run's forecasts are 45 million rows (~9 GB
in memory) and its backtest a million; the server page reads one server's rows on demand
(``ReadModel.server_forecast``, ``ReadModel.server_table``, ``ReadModel.server_history``), and
the fleet trend is summed while streaming (history one business unit at a time, forecasts batch
by batch), so a worker's memory follows the summary tables, not the series.

Public API (used by callbacks of every page):

- :class:`ReadModel` — ``snapshot()``, ``status()``, ``server_history(plan, server_id)``,
  ``server_forecast(plan, server_id)``, ``server_table(plan, name, server_id)``,
  ``analytics_inputs(plan)``, ``scoped_inputs(plan, positions)``.
- :class:`Plan` — one run, immutable: ``mask(filters)``, ``table(name, filters)``,
  ``kpis(filters)``, ``utilization_by_bu``, ``current_values``, ``bu_trend``, ``top_risks``,
  ``search_servers``, ``server``, ``server_rows``.
- helpers for the server page: :func:`reforecast`, :func:`breach_markers`,
  :func:`quarter_end_spans`.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import ctypes
import fcntl
import hashlib
import logging
import math
import os
import socket
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
from cachelib import SimpleCache

from forecasting.calendar import calendar_features
from forecasting.inputs import AnalyticsInputs
from forecasting.plan import BAND_80, BAND_95, SEVERITIES
from forecasting.schema import (
    CRITICALITY_ORDER,
    FILTER_DIMENSIONS,
    METRIC_COLUMNS,
    UNKNOWN,
    freq_alias,
)
from forecasting.settings import DEFAULT_CRITICALITY_OFFSETS, DEFAULT_LEAD_TIME_DAYS, Settings
from forecasting.sources import MetricsQuery, NoDataError, Store, StoreError
from forecasting.sources.parquet import ParquetStore

from .errors import report, user_message
from .filters import FilterState

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Inventory columns shown beside plan rows (the "join for display").
DISPLAY_COLUMNS = ["hostname", *FILTER_DIMENSIONS]
# Forecast columns kept in memory: the median path and the two bands the charts draw.
FORECAST_KEEP = ["yhat", BAND_95[0], BAND_80[0], BAND_80[1], BAND_95[1]]
# History kept for fleet trends, and the bucket it is averaged over.
TREND_WINDOW = {"daily": pd.Timedelta(days=364), "hourly": pd.Timedelta(days=28)}
TREND_BUCKET = {"daily": pd.Timedelta(days=7), "hourly": pd.Timedelta(days=1)}
# History read for trends per query (with one business unit): bounds a load's transient memory.
TREND_READ_SPAN = {"daily": pd.Timedelta(days=91), "hourly": pd.Timedelta(days=7)}
# "Current" utilisation = p95 of the last week (as the risk table defines current_p95).
CURRENT_WINDOW = pd.Timedelta(days=7)
BREACH_WINDOWS = (30, 90)
# Part of the shared cache's key of a Plan: bump when Plan's fields change, so a worker of a new
# release never unpickles an older release's Plan from a cache directory they share.
PLAN_FORMAT = "2"
SMALL_SCOPES_KEPT, SMALL_SCOPE_SERVERS = 32, 100  # and small scopes (a packed host's members)
# A what-if scope of more servers is prepared in a child process (in_child): ~1.5 s of start-up
# against a read of seconds, and the worker's resident size never holds the read's peak.
CHILD_SCOPE_SERVERS = 1_000
# Plan tables the read model holds (joined for display, filtered in memory), and those it reads
# one server at a time (never the fleet's rows); forecasts are read one server at a time too.
SUMMARY_TABLES = ("risk", "recommendations", "consolidation")
BY_SERVER_TABLES = ("backtest",)
PLAN_CACHE_SECONDS = 24 * 3600
# When the store is unreachable, look again sooner than the TTL so recovery shows quickly.
UNREACHABLE_RECHECK_SECONDS = 30
READ_LEASE_MIN_SECONDS = 900  # the read lease on the run shown lasts at least this long
SEVERITY_RANK = {s: i for i, s in enumerate(SEVERITIES)}  # critical 0 … none 4
AT_RISK_SEVERITIES = [s for s in SEVERITIES if s != "none"]
MODEL_CHOICES = {"fleet": "Fleet model", "prophet": "Prophet", "naive": "Seasonal naive"}


class ReadModelError(RuntimeError):
    """A run that exists but cannot be turned into a plan (unreadable or inconsistent tables)."""


# --------------------------------------------------------------------------- status


@dataclass(frozen=True)
class DataStatus:
    """What the app is showing and whether it is current."""

    run_id: str | None
    stale: bool = False  # the store could not be reached (or the run read): older data shown
    message: str | None = None  # why there is no data, or why it may be out of date
    checked_at: float = 0.0


class SharedStatus(Protocol):
    """Where several app instances keep which run is current (app.background: Redis)."""

    def get(self, key: str) -> DataStatus | None: ...

    def set(self, key: str, status: DataStatus, timeout: int) -> None: ...


@dataclass(frozen=True)
class Kpis:
    """Headline numbers for the filtered fleet; None means "not in this run"."""

    servers: int
    at_risk: dict[str, int] | None  # severity -> servers whose worst metric has it
    breach_within: dict[int, int] | None  # days -> servers whose expected breach is that near
    idle: int | None
    idle_threshold: float
    monthly_savings: float | None

    @property
    def at_risk_total(self) -> int | None:
        return None if self.at_risk is None else sum(self.at_risk.values())


# --------------------------------------------------------------------------- plan


@dataclass
class Trend:
    """Sums and counts per filter cell and time bucket, history and forecast on one axis.

    A *cell* is one combination of the filter dimensions' values present in the inventory
    (business unit × region × environment × criticality × server type): every filter selects
    whole cells, so per-cell sums answer any filter exactly, in memory that grows with the
    number of cells (hundreds to a few thousand), not with the fleet (per-server sums were
    ~0.5 GB at 100,000 servers)."""

    index: pd.DatetimeIndex  # bucket starts
    is_forecast: np.ndarray  # (W,) bool
    sums: dict[str, np.ndarray]  # metric -> (n_cells, W)
    counts: dict[str, np.ndarray]


@dataclass
class Plan:
    """One published run prepared for display. Immutable once built (shared by threads)."""

    run_id: str
    manifest: dict
    created_at: pd.Timestamp | None
    freq: str
    horizon: int
    origin: pd.Timestamp | None  # last period of history the run forecast from
    thresholds: dict[str, float]  # base thresholds of the run (before criticality offsets)
    criticality_offsets: dict[str, float]
    lead_time_days: dict[str, int]
    idle_cpu_p95: float
    inventory: pd.DataFrame  # sorted by server_id; row i = server position i
    options: dict[str, list[str]]  # filter values per dimension, display order
    metrics: list[str]  # metrics this run has data for
    tables: dict[str, pd.DataFrame | None]  # plan tables joined with DISPLAY_COLUMNS (no forecasts)
    summary: pd.DataFrame  # one row per server, aligned with inventory
    trend: Trend | None
    notes: list[str] = field(default_factory=list)  # data problems found while loading
    has_forecasts: bool = False  # the run published forecasts (read one server at a time)
    by_server_tables: tuple[str, ...] = ()  # tables in the run read one server at a time (backtest)
    _codes: dict[str, np.ndarray] = field(default_factory=dict, repr=False)
    _cells: np.ndarray | None = field(default=None, repr=False)  # (n_servers,) filter cell per server
    _cell_codes: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # dim -> (n_cells,)
    _rows: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # table -> server position
    _by_server: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict, repr=False)
    _search: np.ndarray | None = field(default=None, repr=False)
    _ids: pd.Index | None = field(default=None, repr=False)

    # ---- basics
    @property
    def n_servers(self) -> int:
        return len(self.inventory)

    @property
    def model(self) -> str:
        return str((self.manifest.get("config") or {}).get("model") or "")

    def has(self, name: str) -> bool:
        return self.tables.get(name) is not None or name in self.by_server_tables

    def position(self, server_id: Any) -> int | None:
        """Row of a server in the inventory, None for anything unknown (including non-strings)."""
        if not isinstance(server_id, str) or not server_id or self._ids is None:
            return None
        i = self._ids.get_indexer([server_id])[0]
        return int(i) if i >= 0 else None

    def scope(self, positions: np.ndarray) -> tuple[pd.DataFrame, list[str], pd.Timestamp | None, str]:
        """What :func:`prepare_scope` needs for the servers at ``positions``: their inventory,
        their ids, the forecast origin and the frequency."""
        inventory = self.inventory.iloc[positions].reset_index(drop=True)
        return inventory, inventory["server_id"].tolist(), self.origin, self.freq

    # ---- filtering
    def mask(self, filters: FilterState | None) -> np.ndarray:
        """Boolean mask over inventory rows. Unknown values match nothing (never an error)."""
        keep = np.ones(self.n_servers, dtype=bool)
        if filters is None:
            return keep
        for dim, values in filters.active.items():
            known = {v: i for i, v in enumerate(self.options[dim])}
            wanted = [known[v] for v in values if v in known]
            keep &= np.isin(self._codes[dim], np.asarray(wanted, dtype=np.int32))
        return keep

    def cell_mask(self, filters: FilterState | None) -> np.ndarray:
        """Boolean mask over filter cells (see :class:`Trend`): the same rule as :meth:`mask`."""
        n_cells = len(next(iter(self._cell_codes.values()))) if self._cell_codes else 0
        keep = np.ones(n_cells, dtype=bool)
        if filters is None:
            return keep
        for dim, values in filters.active.items():
            known = {v: i for i, v in enumerate(self.options[dim])}
            wanted = [known[v] for v in values if v in known]
            keep &= np.isin(self._cell_codes[dim], np.asarray(wanted, dtype=np.int32))
        return keep

    def servers(self, filters: FilterState | None = None) -> pd.DataFrame:
        """Inventory rows of the filtered servers."""
        return self.inventory[self.mask(filters)]

    def table(self, name: str, filters: FilterState | None = None) -> pd.DataFrame | None:
        """A plan table joined with inventory display columns, filtered; None if not in the run.

        The frame is the caller's to change (copy-on-write: the shared plan is never touched).
        """
        frame = self.tables.get(name)
        if frame is None:
            return None
        if filters is None or filters.is_empty:
            return frame.copy(deep=False)
        return frame[self.mask(filters)[self._rows[name]]]

    # ---- one server
    def positions(self, name: str) -> np.ndarray | None:
        """Inventory position of each row of plan table ``name`` (None if not in the run)."""
        return self._rows.get(name) if self.tables.get(name) is not None else None

    def server(self, server_id: str) -> dict[str, Any] | None:
        """Inventory facts of a server, or None when the id is unknown."""
        pos = self.position(server_id)
        if pos is None:
            return None
        row = self.inventory.iloc[pos].to_dict()
        row.update({k: v for k, v in self.summary.iloc[pos].to_dict().items() if k not in row})
        return row

    def server_rows(self, name: str, server_id: str) -> pd.DataFrame | None:
        """A plan table's rows for one server (empty when none); None if the run lacks the table."""
        frame = self.tables.get(name)
        if frame is None:
            return None
        pos = self.position(server_id)
        if pos is None:
            return frame.iloc[0:0]
        order, bounds = self._by_server[name]
        return frame.iloc[order[bounds[pos] : bounds[pos + 1]]]

    def threshold(self, server_id: str, metric: str) -> float:
        """Effective threshold: the risk table's (criticality applied) else the run's base."""
        pos = self.position(server_id)
        col = f"threshold_{metric}"
        if pos is not None and col in self.summary:
            v = self.summary[col].iat[pos]
            if np.isfinite(v):
                return float(v)
        return float(self.thresholds.get(metric, math.nan))

    def search_servers(
        self, text: str | None, filters: FilterState | None = None, limit: int = 50
    ) -> pd.DataFrame:
        """Servers whose id or hostname contains ``text`` (case-insensitive), prefix matches first."""
        mask = self.mask(filters)
        needle = (text or "").strip().lower()[:100]
        keys = self._search if self._search is not None else np.array([], dtype=object)
        if needle:
            hit = np.fromiter((needle in k for k in keys), dtype=bool, count=len(keys))
            mask &= hit
            rows = np.flatnonzero(mask)
            prefix = np.fromiter((keys[i].startswith(needle) for i in rows), dtype=bool, count=len(rows))
            rows = np.concatenate([rows[prefix], rows[~prefix]])
        else:
            rows = np.flatnonzero(mask)
        return self.inventory.iloc[rows[:limit]]

    # ---- fleet aggregates (overview)
    def kpis(self, filters: FilterState | None = None) -> Kpis:
        """The overview's headline numbers for the filtered servers."""
        m = self.mask(filters)
        s = self.summary[m]
        has_risk = self.has("risk")
        at_risk = (
            {sev: int((s["worst_severity"] == sev).sum()) for sev in AT_RISK_SEVERITIES} if has_risk else None
        )
        breach = {d: int((s["min_days_to_breach"] <= d).sum()) for d in BREACH_WINDOWS} if has_risk else None
        cpu = s.get("current_cpu_p95")
        idle = int((cpu < self.idle_cpu_p95).sum()) if cpu is not None and cpu.notna().any() else None
        savings = float(s["monthly_savings"].clip(lower=0).sum()) if self.has("recommendations") else None
        return Kpis(int(m.sum()), at_risk, breach, idle, self.idle_cpu_p95, savings)

    def utilization_by_bu(self, filters: FilterState | None = None) -> pd.DataFrame:
        """Mean current p95 per business unit × metric, also as % of the effective threshold."""
        cols = ["business_unit", "metric", "mean_value", "pct_of_threshold", "servers"]
        metrics = [m for m in self.metrics if f"current_{m}" in self.summary]
        s = self.summary[self.mask(filters)]
        if s.empty or not metrics:
            return pd.DataFrame(columns=cols)
        cur = [f"current_{m}" for m in metrics]
        pct = [f"pct_{m}" for m in metrics]
        g = s.groupby("business_unit", observed=True, sort=True)
        means, counts = g[cur + pct].mean(), g[cur].count()
        n_bu = len(means)
        return pd.DataFrame(
            {
                "business_unit": np.tile(means.index.to_numpy(dtype=object), len(metrics)),
                "metric": np.repeat(np.asarray(metrics, dtype=object), n_bu),
                "mean_value": means[cur].to_numpy().T.reshape(-1),
                "pct_of_threshold": means[pct].to_numpy().T.reshape(-1),
                "servers": counts.to_numpy().T.reshape(-1),
            }
        )

    def current_values(self, metric: str, filters: FilterState | None = None) -> np.ndarray:
        """Current p95 of one metric for the filtered servers (NaN dropped)."""
        col = f"current_{metric}"
        if col not in self.summary:
            return np.array([], dtype=float)
        v = self.summary[col].to_numpy(dtype=float)[self.mask(filters)]
        return v[np.isfinite(v)]

    def bu_trend(self, metric: str, filters: FilterState | None = None) -> pd.DataFrame:
        """Mean of ``metric`` per business unit and time bucket: history, then forecast.

        Columns: business_unit, timestamp (bucket start), value, kind ('history' | 'forecast').
        """
        cols = ["business_unit", "timestamp", "value", "kind"]
        t = self.trend
        if t is None or metric not in t.sums:
            return pd.DataFrame(columns=cols)
        m = self.cell_mask(filters)
        codes = self._cell_codes["business_unit"][m]
        sums, counts = t.sums[metric][m], t.counts[metric][m]
        present = np.unique(codes)
        if present.size == 0:
            return pd.DataFrame(columns=cols)
        total = np.stack([sums[codes == b].sum(axis=0) for b in present])
        count = np.stack([counts[codes == b].sum(axis=0) for b in present])
        with np.errstate(invalid="ignore", divide="ignore"):
            mean = total / count
        names = np.asarray(self.options["business_unit"], dtype=object)[present]
        W = len(t.index)
        out = pd.DataFrame(
            {
                "business_unit": np.repeat(names, W),
                "timestamp": np.tile(t.index.asi8, len(present)),
                "value": mean.reshape(-1),
                "kind": np.tile(np.where(t.is_forecast, "forecast", "history"), len(present)),
            }
        )
        out["timestamp"] = pd.to_datetime(out["timestamp"], unit=t.index.unit, utc=True)
        return out[np.isfinite(out["value"])].reset_index(drop=True)

    def top_risks(self, filters: FilterState | None = None, n: int = 10) -> pd.DataFrame | None:
        """The n riskiest filtered servers (their worst metric each); None if no risk table."""
        risk = self.tables.get("risk")
        if risk is None:
            return None
        s = self.summary[self.mask(filters) & self.summary["at_risk"].to_numpy()]
        s = s.sort_values(["sev_rank", "max_score"], ascending=[True, False], kind="stable").head(n)
        rows = s["top_risk_row"].to_numpy()
        return risk.iloc[rows].reset_index(drop=True)


# --------------------------------------------------------------------------- building a plan


def _as_str(frame: pd.DataFrame, col: str) -> None:
    if col in frame and frame[col].dtype != "str":
        frame[col] = frame[col].astype("str")


def _config(manifest: dict, settings: Settings) -> dict[str, Any]:
    cfg = manifest.get("config") or {}
    return {
        "thresholds": {**settings.thresholds, **(cfg.get("thresholds") or manifest.get("thresholds") or {})},
        "criticality_offsets": {
            **DEFAULT_CRITICALITY_OFFSETS,
            **settings.criticality_offsets,
            **(cfg.get("criticality_offsets") or {}),
        },
        "lead_time_days": {
            **DEFAULT_LEAD_TIME_DAYS,
            **settings.lead_time_days,
            **(cfg.get("lead_time_days") or {}),
        },
        "idle_cpu_p95": float(cfg.get("idle_cpu_p95", settings.idle_cpu_p95)),
        "horizon": int(cfg.get("horizon") or manifest.get("horizon") or settings.effective_horizon),
        "freq": str((manifest.get("input") or {}).get("freq") or manifest.get("freq") or settings.freq),
    }


def _timestamp(value: Any) -> pd.Timestamp | None:
    if value in (None, ""):
        return None
    try:
        t = pd.Timestamp(value)
    except (TypeError, ValueError):
        return None
    if t is pd.NaT:
        return None
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _options(inventory: pd.DataFrame) -> dict[str, list[str]]:
    out = {}
    for dim in FILTER_DIMENSIONS:
        values = sorted(set(inventory[dim].dropna().astype(str)))
        if dim == "criticality":
            order = {c: i for i, c in enumerate([*CRITICALITY_ORDER, UNKNOWN])}
            values.sort(key=lambda v: (order.get(v, len(order)), v))
        out[dim] = values
    return out


def _positions(ids: pd.Index, server_ids: pd.Series) -> np.ndarray:
    """Inventory position of each row's server (-1 when unknown). Factorising first hashes each
    distinct id once, not once per row: millions of forecast rows, thousands of servers."""
    codes, uniques = pd.factorize(server_ids)
    lookup = ids.get_indexer(pd.Index(uniques).astype("str"))
    return np.where(codes >= 0, lookup[np.maximum(codes, 0)], -1).astype(np.int64)


def _held_back(recs: pd.DataFrame) -> None:
    """``held_back`` as text, '' where missing: runs published before the policy have none."""
    if "held_back" not in recs:
        recs["held_back"] = ""
    else:
        recs["held_back"] = (
            recs["held_back"].astype("object").where(recs["held_back"].notna(), "").astype("str")
        )


def _join(
    frame: pd.DataFrame, name: str, ids: pd.Index, inventory: pd.DataFrame, notes: list[str]
) -> tuple[pd.DataFrame, np.ndarray]:
    """Attach display columns by server position; rows of unknown servers are dropped (noted)."""
    frame = frame.copy()
    _as_str(frame, "server_id")
    pos = _positions(ids, frame["server_id"])
    unknown = pos < 0
    if unknown.any():
        notes.append(f"{name}: {int(unknown.sum()):,} row(s) for servers not in the inventory were ignored")
        frame, pos = frame[~unknown], pos[~unknown]
    frame = frame.reset_index(drop=True)
    for col in DISPLAY_COLUMNS:
        if col not in frame:
            frame[col] = inventory[col].to_numpy()[pos]
    return frame, pos.astype(np.int32)


FORECAST_BATCH_ROWS = 262_144  # rows per streamed batch of a run's forecasts
FORECAST_CHUNK_SERVERS = 5_000  # servers per read for stores without a dataset interface


def iter_forecasts(store: Store, run_id: str, ids: pd.Index, columns: list[str]) -> Iterator[pa.Table] | None:
    """A run's forecasts in bounded pieces (None when the run has none): batch by batch from
    the Parquet dataset (one file or the parts of a sharded run), else in chunks of servers
    through ``read_run_table`` (other stores). Never the whole table in one process."""
    if isinstance(store, ParquetStore):
        dataset = store.run_table_dataset(run_id, "forecasts")
        if dataset is None:
            return None
        have = [c for c in columns if c in dataset.schema.names]

        def batches() -> Iterator[pa.Table]:
            # one file and one batch ahead: pyarrow's default read-ahead (4 files × 16 batches)
            # held 1.3 GB more at 100,000 servers, the worker's peak while it loads a run
            for batch in dataset.to_batches(
                columns=have, batch_size=FORECAST_BATCH_ROWS, batch_readahead=1, fragment_readahead=1
            ):
                yield pa.Table.from_batches([batch])

        return batches()
    first = store.read_run_table(run_id, "forecasts", server_ids=list(ids[:FORECAST_CHUNK_SERVERS]))
    if first is None:
        return None

    def chunks() -> Iterator[pa.Table]:
        frame: pd.DataFrame | None = first
        for start in range(0, len(ids), FORECAST_CHUNK_SERVERS):
            if start:
                frame = store.read_run_table(
                    run_id, "forecasts", server_ids=list(ids[start : start + FORECAST_CHUNK_SERVERS])
                )
            if frame is not None and len(frame):
                yield pa.Table.from_pandas(frame[[c for c in columns if c in frame]], preserve_index=False)

    return chunks()


def _arrow_positions(ids: pd.Index, column: pa.ChunkedArray) -> np.ndarray:
    """Inventory position of each row's server (-1 when unknown), hashing each distinct id once."""
    enc = pc.dictionary_encode(column.cast(pa.string())).combine_chunks()
    where = ids.get_indexer(pd.Index(enc.dictionary.to_pylist(), dtype="str"))
    return where[enc.indices.to_numpy(zero_copy_only=False)].astype(np.int64)


def one_server_forecast(store: Store, run_id: str, server_id: str) -> pd.DataFrame | None:
    """The run's forecast rows of one server (long, per metric: FORECAST_KEEP, model), read
    with a server filter (row groups of other servers are skipped); None if the run has none."""
    raw = store.read_run_table(run_id, "forecasts", server_ids=[server_id])
    if raw is None:
        return None
    missing = [c for c in ["server_id", "metric", "timestamp", *FORECAST_KEEP] if c not in raw]
    if missing:
        raise ReadModelError(f"forecasts table is missing column(s): {', '.join(missing)}")
    out = pd.DataFrame(
        {
            "server_id": raw["server_id"].astype("str"),
            "metric": raw["metric"].astype("str"),
            "timestamp": pd.to_datetime(raw["timestamp"], utc=True),
            **{c: raw[c].astype(np.float32) for c in FORECAST_KEEP},
            "model": raw["model"].astype("str") if "model" in raw else "",
        }
    )
    return out.sort_values(["metric", "timestamp"], kind="stable", ignore_index=True)


@contextlib.contextmanager
def one_builder(lock_path: str | None) -> Iterator[None]:
    """Hold the instance-wide lock ``lock_path`` while building what every worker of this
    instance needs once (a run's plan, its what-if inputs, the API's compact forecasts).

    Why: workers boot together, and without it each built the same run at once (61 s of CPU
    and 2 GB each at 100,000 servers, then 30 s each for the API's copy); now one builds and
    writes the shared cache, the others wait here and read it (the caller looks again once it
    holds the lock). An ``fcntl`` lock: the system releases it when its holder dies, so a
    waiter then builds. None: nothing shared to build once (a per-process cache), so no lock."""
    if lock_path is None:
        yield
        return
    os.makedirs(os.path.dirname(lock_path), exist_ok=True)
    with open(lock_path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def in_child(fn: Callable[..., Any], *args: Any) -> Any:
    """``fn(*args)`` in a short-lived spawned process, its result (or exception) handed back
    through a file.

    Why: a build's peak (Parquet reads, frames turned into arrays) would otherwise stay in a
    web worker: glibc and Arrow keep freed memory and fragmentation holds more, and at 100,000
    servers a worker's budget is 3 GB. The child's memory goes when it exits. A file, not a
    pool's pipe (which holds the bytes and the objects at once); a daemonic process, so a worker
    that stops takes its child with it. ``fn`` must be importable by name; when the arguments
    cannot cross a process boundary (a store that does not pickle) it runs here, and says so."""
    import multiprocessing
    import pickle

    try:
        pickle.dumps(args)
    except Exception as e:
        log.warning("%s runs in the web worker (its arguments do not pickle: %s)", fn.__name__, e)
        return fn(*args)
    fd, path = tempfile.mkstemp(prefix="capfc-child-", suffix=".pickle")
    os.close(fd)
    try:
        child = multiprocessing.get_context("spawn").Process(
            target=_to_file, args=(fn, args, path), name=f"capfc-{fn.__name__}", daemon=True
        )
        child.start()
        child.join()
        try:
            with open(path, "rb") as f:
                ok, value = pickle.load(f)
        except (OSError, EOFError, pickle.UnpicklingError):
            code = child.exitcode
            why = (
                f"signal {-code}: the worker is stopping, or out of memory"
                if code and code < 0
                else f"exit code {code}"
            )
            raise ReadModelError(f"{fn.__name__} stopped in its child process ({why})") from None
    finally:
        os.unlink(path)
    if not ok:
        raise value
    return value


def _to_file(fn: Callable[..., Any], args: tuple, path: str) -> None:
    """in_child's child: run, and write (True, result) or (False, exception) where the parent reads."""
    import pickle

    try:
        outcome = (True, fn(*args))
    except Exception as e:
        try:
            pickle.dumps(e)
            outcome = (False, e)
        except Exception:
            outcome = (False, ReadModelError(f"{type(e).__name__}: {e}"))
    with open(path, "wb") as f:
        pickle.dump(outcome, f, protocol=5)


def release_memory() -> None:
    """Give the heap freed by a load back to the system: glibc's and Arrow's (mimalloc keeps
    what a Parquet read freed: 0.6 GB after a scoped what-if's read at 100,000 servers), else
    a worker's resident size would stay at the load's peak."""
    global _LIBC
    pa.default_memory_pool().release_unused()
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
        except OSError:
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: Any = None


def _run_has_table(store: Store, run_id: str, name: str, ids: pd.Index) -> bool:
    """Whether the run published table ``name``, without reading it."""
    if isinstance(store, ParquetStore):
        return store.run_table_dataset(run_id, name) is not None
    return store.read_run_table(run_id, name, server_ids=list(ids[:1])) is not None


def _cells(codes: Mapping[str, np.ndarray], n: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Filter cell of each server and each cell's code per dimension (see :class:`Trend`)."""
    if n == 0:
        return np.zeros(0, np.int32), {d: np.zeros(0, np.int32) for d in FILTER_DIMENSIONS}
    stacked = np.stack([codes[d] for d in FILTER_DIMENSIONS], axis=1)
    uniq, inverse = np.unique(stacked, axis=0, return_inverse=True)
    return inverse.reshape(-1).astype(np.int32), {
        d: uniq[:, i].astype(np.int32) for i, d in enumerate(FILTER_DIMENSIONS)
    }


def _group_rows(pos: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row order grouping a table by server, and each server's [start, end) in that order."""
    order = np.argsort(pos, kind="stable")
    return order, np.searchsorted(pos[order], np.arange(n + 1))


def build_plan(store: Store, run_id: str, settings: Settings) -> Plan:
    """Read one run and prepare everything the pages aggregate (the only slow step: once per run)."""
    manifest = store.read_manifest(run_id)
    cfg = _config(manifest, settings)
    freq = cfg["freq"] if cfg["freq"] in ("daily", "hourly") else "daily"
    notes: list[str] = []

    inventory = store.read_inventory().copy()
    for col in ["server_id", *DISPLAY_COLUMNS]:
        _as_str(inventory, col)
    inventory = inventory.sort_values("server_id", kind="stable", ignore_index=True)
    if inventory["server_id"].duplicated().any():
        inventory = inventory.drop_duplicates("server_id", ignore_index=True)
        notes.append("inventory: duplicate server ids; the first row of each was used")
    ids = pd.Index(inventory["server_id"])
    n = len(inventory)
    options = _options(inventory)
    codes = {
        dim: pd.Categorical(inventory[dim], categories=options[dim]).codes.astype(np.int32)
        for dim in FILTER_DIMENSIONS
    }

    tables: dict[str, pd.DataFrame | None] = {}
    rows: dict[str, np.ndarray] = {}
    # per-server tables: only the server page reads them, one server at a time (the backtest is
    # ten rows per server × metric: 1,000,000 rows at 100,000 servers)
    by_server = tuple(name for name in BY_SERVER_TABLES if _run_has_table(store, run_id, name, ids))
    for name in SUMMARY_TABLES:
        raw = store.read_run_table(run_id, name)
        if raw is None:
            tables[name] = None
            continue
        if "server_id" not in raw:
            raise ReadModelError(f"plan table {name} of run {run_id} has no server_id column")
        tables[name], rows[name] = _join(raw, name, ids, inventory, notes)
    if tables.get("recommendations") is not None:
        _held_back(tables["recommendations"])

    cells, cell_codes = _cells(codes, n)
    origin = _timestamp(manifest.get("forecast_origin"))
    step = pd.Timedelta(1, freq_alias(freq))
    forecast_batches = iter_forecasts(store, run_id, ids, ["timestamp"]) if origin is None else None
    if forecast_batches is not None:  # runs published before the manifest said: first forecast period
        firsts = [pc.min(t["timestamp"]).as_py() for t in forecast_batches if t.num_rows]
        firsts = [f for f in firsts if f is not None]
        if firsts:
            origin = _timestamp(min(firsts)) - step
    if origin is None:
        info = store.read_store_info()
        origin = _timestamp(info.get("end"))

    metrics_present: set[str] = set()
    if tables.get("risk") is not None:
        metrics_present |= set(tables["risk"]["metric"].astype(str).unique())

    summary = pd.DataFrame({"server_id": inventory["server_id"], "business_unit": inventory["business_unit"]})
    trend: Trend | None = None
    history_current: dict[str, np.ndarray] = {}
    has_forecasts = False
    if origin is not None:
        trend, history_current, seen, has_forecasts = _stream_trend(
            store,
            run_id,
            inventory,
            ids,
            cells,
            len(cell_codes["business_unit"]),
            options,
            origin,
            step,
            freq,
            cfg["horizon"],
            notes,
        )
        metrics_present |= seen
    else:
        has_forecasts = iter_forecasts(store, run_id, ids[:1], ["server_id"]) is not None
    metrics = [m for m in METRIC_COLUMNS if m in metrics_present]

    _summarise(
        summary,
        tables.get("risk"),
        rows.get("risk"),
        tables.get("recommendations"),
        rows.get("recommendations"),
        history_current,
        metrics,
        cfg["thresholds"],
        n,
    )

    search = (
        inventory["server_id"].str.lower() + " " + inventory["hostname"].fillna("").str.lower()
    ).to_numpy(dtype=object)
    return Plan(
        run_id=run_id,
        manifest=manifest,
        created_at=_timestamp(manifest.get("created_at")),
        freq=freq,
        horizon=cfg["horizon"],
        origin=origin,
        thresholds=cfg["thresholds"],
        criticality_offsets=cfg["criticality_offsets"],
        lead_time_days=cfg["lead_time_days"],
        idle_cpu_p95=cfg["idle_cpu_p95"],
        inventory=inventory,
        options=options,
        metrics=metrics,
        tables=tables,
        summary=summary,
        trend=trend,
        notes=notes,
        has_forecasts=has_forecasts,
        by_server_tables=by_server,
        _codes=codes,
        _cells=cells,
        _cell_codes=cell_codes,
        _rows=rows,
        _by_server={name: _group_rows(pos, n) for name, pos in rows.items()},
        _search=search,
        _ids=ids,
    )


def _stream_trend(
    store: Store,
    run_id: str,
    inventory: pd.DataFrame,
    ids: pd.Index,
    cells: np.ndarray,
    n_cells: int,
    options: Mapping[str, list[str]],
    origin: pd.Timestamp,
    step: pd.Timedelta,
    freq: str,
    horizon: int,
    notes: list[str],
) -> tuple[Trend | None, dict[str, np.ndarray], set[str], bool]:
    """Fleet trend sums per filter cell (last year / month of history, then the forecast's
    median), the current p95 per server, the metrics seen, and whether the run has forecasts.

    Bounded memory: the history is read one business unit (the metrics' partition) at a time
    and the forecasts batch by batch; what is kept is (cells × buckets) per metric and one value
    per server × metric. History of a server filed under a business unit the inventory no
    longer lists is not read (it would be ignored as an unknown server's anyway)."""
    n = len(inventory)
    t0 = origin + step  # first forecast period: bucket 0 starts here
    bucket, window = TREND_BUCKET[freq], TREND_WINDOW[freq]
    wh = int(window // bucket)
    wf = max(1, int(horizon * step // bucket))  # whole buckets only: a partial last week would dip
    W = wh + wf
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, np.ndarray] = {}
    current: dict[str, np.ndarray] = {}
    seen: set[str] = set()
    t0_s, bucket_s = t0.value // 10**9, bucket.value // 10**9

    def add(metric: str, pos: np.ndarray, seconds: np.ndarray, v: np.ndarray) -> None:
        k = (seconds - t0_s) // bucket_s + wh
        ok = (pos >= 0) & (k >= 0) & (k < W) & np.isfinite(v)
        flat = cells[pos[ok]].astype(np.int64) * W + k[ok]
        if metric not in sums:
            sums[metric], counts[metric] = np.zeros(n_cells * W), np.zeros(n_cells * W)
        sums[metric] += np.bincount(flat, weights=v[ok], minlength=n_cells * W)
        counts[metric] += np.bincount(flat, minlength=n_cells * W)

    recent_start = (t0 - CURRENT_WINDOW).value // 10**9
    # one business unit (the metrics' partition) and a few weeks at a time: what one read holds
    # is bounded by the size of a unit over those weeks, whatever the fleet's size
    spans = [
        (t0 - window + i * TREND_READ_SPAN[freq], min(t0, t0 - window + (i + 1) * TREND_READ_SPAN[freq]))
        for i in range(-(-window // TREND_READ_SPAN[freq]))
    ]
    failed = False
    for bu, (start, end) in ((b, sp) for b in options["business_unit"] for sp in spans):
        if failed:
            break
        try:
            hist = store.read_metrics(MetricsQuery.of(start=start, end=end, business_units=[bu]))
        except (NoDataError, StoreError, OSError) as e:
            ref = report(log, "history for trends could not be read", e, level=logging.WARNING)
            notes.append(user_message("history for trends could not be read", ref))
            failed = True
            break
        if hist.empty:
            continue
        hist_metrics = [m for m in METRIC_COLUMNS if m in hist and hist[m].notna().any()]
        seen |= set(hist_metrics)
        pos = _positions(ids, hist["server_id"])
        seconds = pd.to_datetime(hist["timestamp"], utc=True).to_numpy(dtype="datetime64[s]").astype(np.int64)
        for m in hist_metrics:
            add(m, pos, seconds, hist[m].to_numpy(dtype=np.float64))
        recent = (seconds >= recent_start) & (pos >= 0)
        if recent.any():
            last = hist.loc[recent, hist_metrics].assign(_pos=pos[recent])
            p95 = last.groupby("_pos")[hist_metrics].quantile(0.95)
            for m in hist_metrics:
                arr = current.setdefault(m, np.full(n, np.nan))
                arr[p95.index.to_numpy()] = p95[m].to_numpy()
        del hist

    batches = iter_forecasts(store, run_id, ids, ["server_id", "metric", "timestamp", "yhat"])
    has_forecasts = batches is not None
    for batch in batches or ():
        missing = [c for c in ("server_id", "metric", "timestamp", "yhat") if c not in batch.column_names]
        if missing:
            raise ReadModelError(f"forecasts table is missing column(s): {', '.join(missing)}")
        pos = _arrow_positions(ids, batch["server_id"])
        met = pc.dictionary_encode(batch["metric"].cast(pa.string())).combine_chunks()
        mcodes = met.indices.to_numpy(zero_copy_only=False)
        seconds = (
            pc.cast(batch["timestamp"], pa.timestamp("s", tz="UTC"))
            .cast(pa.int64())
            .to_numpy(zero_copy_only=False)
        )
        yhat = batch["yhat"].to_numpy().astype(np.float64)
        for ci, m in enumerate(met.dictionary.to_pylist()):
            sel = mcodes == ci
            seen.add(m)
            add(m, pos[sel], seconds[sel], yhat[sel])
    if not sums:
        return None, current, seen, has_forecasts
    index = pd.DatetimeIndex([t0 + (k - wh) * bucket for k in range(W)])
    trend = Trend(
        index,
        np.arange(W) >= wh,
        {m: v.reshape(n_cells, W) for m, v in sums.items()},
        {m: v.reshape(n_cells, W) for m, v in counts.items()},
    )
    return trend, current, seen, has_forecasts


def _summarise(
    summary: pd.DataFrame,
    risk: pd.DataFrame | None,
    risk_pos: np.ndarray | None,
    recs: pd.DataFrame | None,
    recs_pos: np.ndarray | None,
    history_current: dict[str, np.ndarray],
    metrics: list[str],
    thresholds: dict[str, float],
    n: int,
) -> None:
    """Per-server columns the KPIs, heatmap and top risks aggregate (filled in place)."""
    sev_rank = np.full(n, SEVERITY_RANK["none"], dtype=np.int64)
    max_score = np.full(n, np.nan)
    min_days = np.full(n, np.inf)
    top_row = np.full(n, -1, dtype=np.int64)
    current = {m: history_current.get(m, np.full(n, np.nan)).copy() for m in metrics}
    thr = {m: np.full(n, float(thresholds.get(m, np.nan))) for m in metrics}
    if risk is not None and len(risk):
        pos = risk_pos
        r_rank = risk["severity"].map(SEVERITY_RANK).fillna(SEVERITY_RANK["none"]).to_numpy(dtype=np.int64)
        np.minimum.at(sev_rank, pos, r_rank)
        score = risk["score"].to_numpy(dtype=float)
        np.fmax.at(max_score, pos, score)
        days = risk["days_to_breach"].to_numpy(dtype=float)
        if "status" in risk:
            days = np.where(risk["status"].to_numpy(dtype=object) == "already_over", 0.0, days)
        days = np.where(np.isfinite(days), days, np.inf)
        np.minimum.at(min_days, pos, days)
        # The row that represents each server: worst severity, then highest score.
        order = np.lexsort((-np.nan_to_num(score, nan=-1.0), r_rank, pos))
        first = order[np.r_[True, pos[order][1:] != pos[order][:-1]]]
        top_row[pos[first]] = first
        metric = risk["metric"].astype(str).to_numpy()
        for m in metrics:
            sel = metric == m
            if not sel.any():
                continue
            cur = risk["current_p95"].to_numpy(dtype=float)[sel]
            ok = np.isfinite(cur)
            current[m][pos[sel][ok]] = cur[ok]
            t = risk["threshold"].to_numpy(dtype=float)[sel]
            okt = np.isfinite(t)
            thr[m][pos[sel][okt]] = t[okt]
    summary["worst_severity"] = np.asarray(SEVERITIES, dtype=object)[sev_rank]
    summary["sev_rank"] = sev_rank
    summary["max_score"] = max_score
    summary["min_days_to_breach"] = np.where(np.isfinite(min_days), min_days, np.nan)
    summary["at_risk"] = sev_rank < SEVERITY_RANK["none"]
    summary["top_risk_row"] = top_row
    for m in metrics:
        summary[f"current_{m}"] = current[m]
        summary[f"threshold_{m}"] = thr[m]
        with np.errstate(invalid="ignore", divide="ignore"):
            summary[f"pct_{m}"] = 100.0 * current[m] / thr[m]
    action = np.full(n, "", dtype=object)
    savings = np.zeros(n)
    if recs is not None and len(recs):
        if "action" in recs:
            action[recs_pos] = recs["action"].astype(str).to_numpy()
        if "monthly_savings" in recs:
            savings[recs_pos] = np.nan_to_num(recs["monthly_savings"].to_numpy(dtype=float))
    summary["action"] = action
    summary["monthly_savings"] = savings


# --------------------------------------------------------------------------- read model


@dataclass(frozen=True)
class Snapshot:
    """The plan to show (None when there is none) and the status behind it."""

    plan: Plan | None
    status: DataStatus

    @property
    def as_of(self) -> str:
        """'run <id> · <time>' for the navbar, or why there is no data."""
        if self.plan is None:
            return "no forecast run"
        when = self.plan.created_at
        return f"run {self.plan.run_id}" + (f" · {when:%Y-%m-%d %H:%M} UTC" if when is not None else "")


class ReadModel:
    """Cached, filtered access to the latest run; one per app, shared by its threads."""

    def __init__(
        self,
        store: Store | Callable[[], Store],
        settings: Settings,
        cache: Any | None = None,
        *,
        clock: Callable[[], float] = time.time,
        shared: SharedStatus | None = None,
    ) -> None:
        """``store`` may be a factory: the app then starts (and says so) even when the store is
        unreachable at boot, and opens it on a later check.

        ``shared`` (several instances behind a load balancer): the current run is decided once
        for all of them, so which run a click sees never depends on the instance answering.
        """
        self._store: Store | None = store if isinstance(store, Store) else None
        self._open_store: Callable[[], Store] | None = None if isinstance(store, Store) else store
        self.settings = settings
        self.cache = cache if cache is not None else SimpleCache()
        self.ttl = int(settings.cache_ttl_seconds)
        self.shared = shared
        where = self._store.uri if self._store is not None else settings.data
        self._ns = "capfc:" + hashlib.sha256(str(where).encode()).hexdigest()[:12]
        self._clock = clock
        self._lock = threading.Lock()
        self._plan: Plan | None = None
        self._status: DataStatus | None = None
        self._inputs_lock = threading.Lock()
        self._inputs: tuple[str, AnalyticsInputs] | None = None
        self._scoped: dict[tuple[str, str], AnalyticsInputs] = {}  # (run, scope digest) -> inputs
        # read lease on the run shown (forecasting.records.retention): (run id, lease path, taken at)
        self._read_lease: tuple[str, str, float] | None = None
        self._lease_ttl = float(max(3 * self.ttl, READ_LEASE_MIN_SECONDS))

    @property
    def store(self) -> Store:
        """The store, opened on first use when a factory was given (raises StoreError if it cannot be)."""
        if self._store is None:
            assert self._open_store is not None
            self._store = self._open_store()
        return self._store

    def _key(self, *parts: str) -> str:
        return ":".join([self._ns, *parts])

    # ---- status
    def status(self) -> DataStatus:
        """Which run is current; re-checks runs/LATEST at most every cache_ttl_seconds."""
        key = self._key("status")
        if self.ttl > 0:
            cached = self.shared.get(key) if self.shared is not None else None
            if cached is None:
                cached = self.cache.get(key)
            if isinstance(cached, DataStatus):
                self._status = cached
                return cached
        status = self._check_store()
        self._status = status
        if self.ttl > 0:
            timeout = min(self.ttl, UNREACHABLE_RECHECK_SECONDS) if status.stale else self.ttl
            self.cache.set(key, status, timeout=timeout)  # expires with the shared entry
            if self.shared is not None and not status.stale:
                # the shared entry decides for every instance; this one's own trouble reaching
                # the store (stale) stays local, so it cannot mark the others stale
                self.shared.set(key, status, timeout)
        return status

    def last_status(self) -> DataStatus | None:
        """The most recent status without touching the store (for the health endpoint, which
        must answer at once even when the store hangs); None before the first check."""
        cached = self.cache.get(self._key("status"))
        if isinstance(cached, DataStatus):
            return cached
        return self._status

    def _last_good(self) -> str | None:
        if self._plan is not None:
            return self._plan.run_id
        run_id = self.cache.get(self._key("last-good"))
        return run_id if isinstance(run_id, str) else None

    def _check_store(self) -> DataStatus:
        now = self._clock()
        try:
            run_id = self.store.latest_run_id()
        except (StoreError, OSError) as e:
            # the detail (bucket, endpoint, IAM action) goes to the log only, under a reference
            ref = report(log, f"data store {self.settings.data} unreachable", e, level=logging.WARNING)
            unreachable = user_message("The data store could not be reached", ref)
            last = self._last_good()
            if last:
                return DataStatus(
                    last,
                    stale=True,
                    message=f"{unreachable} Showing the last good run, {last}.",
                    checked_at=now,
                )
            return DataStatus(None, stale=True, message=unreachable, checked_at=now)
        if run_id is None:
            try:
                has_data = self.store.has_data()
            except (StoreError, OSError):
                has_data = True
            msg = "No forecast run has been published yet. Run `python -m forecasting run`"
            msg += (
                "." if has_data else " after generating or ingesting data (`python -m forecasting generate`)."
            )
            return DataStatus(None, message=msg, checked_at=now)
        return DataStatus(run_id, checked_at=now)

    # ---- plan
    def snapshot(self) -> Snapshot:
        """The current plan and its status; never raises for store trouble (the status says it)."""
        status = self.status()
        if status.run_id is None:
            return Snapshot(None, status)
        self._hold_read_lease(status.run_id)
        plan = self._plan
        if plan is not None and plan.run_id == status.run_id:
            return Snapshot(plan, status)
        try:
            plan = self._load(status.run_id)
        except (StoreError, ReadModelError, NoDataError, OSError, KeyError, ValueError) as e:
            ref = report(log, f"run {status.run_id} could not be loaded", e)
            unreadable = user_message(f"Run {status.run_id} could not be read", ref)
            previous = self._plan
            if previous is not None:
                return Snapshot(
                    previous,
                    replace(
                        status,
                        run_id=previous.run_id,
                        stale=True,
                        message=f"{unreadable} Showing run {previous.run_id}.",
                    ),
                )
            return Snapshot(None, replace(status, stale=True, message=unreadable))
        return Snapshot(plan, status)

    def plan(self) -> Plan | None:
        return self.snapshot().plan

    def _hold_read_lease(self, run_id: str) -> None:
        """Keep a read lease on the run this process shows, so the retention clean-up never
        removes it while the app may still read it (its forecasts for what-ifs, a server's rows):
        taken before the first load, renewed every third of its ttl (3 × cache_ttl_seconds, at
        least 15 min), left to expire when another run is shown. A store that refuses the write
        (read-only credentials) only logs: the app still serves."""
        now = self._clock()
        held = self._read_lease
        if held is not None and held[0] == run_id and now - held[2] < self._lease_ttl / 3:
            return
        from forecasting.records.retention import take_read_lease, write_read_lease

        reader = f"web {socket.gethostname()} pid {os.getpid()}"
        try:
            if held is not None and held[0] == run_id and held[1]:
                write_read_lease(self.store, held[1], self._lease_ttl, reader)
                path = held[1]
            else:
                path = take_read_lease(self.store, run_id, self._lease_ttl, reader)
        except (StoreError, OSError) as e:
            log.warning("no read lease on run %s: %s", run_id, e)
            self._read_lease = (run_id, "", now)  # try again after a third of the ttl
            return
        self._read_lease = (run_id, path, now)

    def _load(self, run_id: str) -> Plan:
        with self._lock:
            if self._plan is not None and self._plan.run_id == run_id:
                return self._plan
            key = self._key("plan", PLAN_FORMAT, run_id)
            self._plan = self._built_once(key, Plan, lambda: self._build_plan(key, run_id))
            return self._plan

    def _built_once(self, key: str, kind: type[_T], build: Callable[[], _T]) -> _T:
        """The shared cache's ``key``; when missing, one worker of the instance builds it (and
        writes it there) while the others wait, then read it."""
        value = self.cache.get(key)
        if isinstance(value, kind):
            return value
        with one_builder(self._build_lock(key)):
            value = self.cache.get(key)  # built by another worker while this one waited
            return value if isinstance(value, kind) else build()

    def _build_plan(self, key: str, run_id: str) -> Plan:
        started = time.perf_counter()
        plan = build_plan(self.store, run_id, self.settings)
        release_memory()
        log.info(
            "loaded run %s (%d servers) in %.2f s", run_id, plan.n_servers, time.perf_counter() - started
        )
        if not self.cache.set(key, plan, timeout=PLAN_CACHE_SECONDS):
            log.warning("run %s could not be written to the shared cache", run_id)
        self.cache.set(self._key("last-good"), run_id, timeout=PLAN_CACHE_SECONDS)
        return plan

    def _build_lock(self, key: str) -> str | None:
        """The lock file of ``key``'s build, beside a cache the instance's workers share (a
        directory cache); None for a per-process cache."""
        root = getattr(self.cache, "_path", None)
        if not isinstance(root, str):
            return None
        return os.path.join(root, "build-locks", hashlib.sha256(key.encode()).hexdigest()[:24] + ".lock")

    def loaded_plan(self) -> Plan | None:
        """The plan this process holds in memory, without touching the store or the cache
        (for cheap gauges such as the plan's age)."""
        return self._plan

    def warm(self) -> threading.Thread:
        """Load the current run in a background thread (at worker start), so the first visitor
        after a deploy or a new run does not wait for it; requests meanwhile wait on the lock."""
        thread = threading.Thread(target=self.snapshot, name="capfc-warm", daemon=True)
        thread.start()
        return thread

    def refresh(self) -> DataStatus:
        """Forget the cached status so the next read re-checks runs/LATEST now."""
        self.cache.delete(self._key("status"))
        return self.status()

    # ---- prepared analytics inputs (what-if)
    def analytics_inputs(self, plan: Plan) -> AnalyticsInputs:
        """The run's forecasts, recent history and inventory aligned for what-ifs
        (forecasting.inputs.prepare), built once per run: memoised per process and kept in the
        shared cache, because preparing reads the full forecasts and a year of history.

        Row i of every array is ``plan.inventory`` row i, so plan positions index it directly.
        """
        memo = self._inputs
        if memo is not None and memo[0] == plan.run_id:
            return memo[1]
        with self._inputs_lock:
            memo = self._inputs
            if memo is not None and memo[0] == plan.run_id:
                return memo[1]
            key = self._key("inputs", plan.run_id)
            inputs = self._built_once(key, AnalyticsInputs, lambda: self._build_inputs(key, plan))
            self._inputs = (plan.run_id, inputs)
            return inputs

    def _build_inputs(self, key: str, plan: Plan) -> AnalyticsInputs:
        started = time.perf_counter()
        inputs = build_analytics_inputs(self.store, plan)
        log.info("prepared what-if inputs of run %s in %.2f s", plan.run_id, time.perf_counter() - started)
        if not self.cache.set(key, inputs, timeout=PLAN_CACHE_SECONDS):
            log.warning("what-if inputs of run %s could not be written to the shared cache", plan.run_id)
        return inputs

    def scoped_inputs(self, plan: Plan, positions: np.ndarray) -> AnalyticsInputs:
        """Prepared what-if inputs of some servers only (plan positions, sorted): their
        forecasts and history read with a server filter, never the fleet's. Kept per process
        (see :meth:`_keep_scopes`): a filter change under one scenario reuses them."""
        digest = hashlib.sha256(np.asarray(positions, dtype=np.int64).tobytes()).hexdigest()[:16]
        key = (plan.run_id, digest)
        with self._inputs_lock:
            hit = self._scoped.get(key)
            if hit is not None:
                return hit
            self._keep_scopes(len(positions))  # room first: the build's peak is the worker's
        started = time.perf_counter()
        scope = (self.store, plan.run_id, *plan.scope(positions))
        inputs = (
            in_child(prepare_scope, *scope) if len(positions) > CHILD_SCOPE_SERVERS else prepare_scope(*scope)
        )
        release_memory()
        log.info(
            "prepared what-if inputs of %d servers of run %s in %.2f s",
            len(positions),
            plan.run_id,
            time.perf_counter() - started,
        )
        with self._inputs_lock:
            self._keep_scopes(len(positions))
            self._scoped[key] = inputs
        return inputs

    def _keep_scopes(self, coming: int) -> None:
        """Forget the oldest scopes so that, with one of ``coming`` servers added, the large ones
        (a filtered what-if) hold at most whatif_max_servers servers together — one full scope's
        arrays, ~0.5 GB at 10,000 servers — and the small ones (a packed host's members) number
        at most SMALL_SCOPES_KEPT. Caller holds ``_inputs_lock``."""
        large = coming > SMALL_SCOPE_SERVERS
        budget = int(self.settings.whatif_max_servers) - (coming if large else 0)
        small = 0 if large else 1
        for k in reversed(list(self._scoped)):  # newest first
            n = len(self._scoped[k].inventory)
            if n <= SMALL_SCOPE_SERVERS:
                small += 1
                if small > SMALL_SCOPES_KEPT:
                    del self._scoped[k]
            elif n <= budget:
                budget -= n
            else:
                del self._scoped[k]

    # ---- one server's forecast and history (read on demand: the plan holds no series)
    def server_forecast(self, plan: Plan, server_id: str) -> pd.DataFrame | None:
        """The run's forecast rows of one server (metric and model as text), cached per run;
        empty for an unknown server, None when the run has no forecasts. Only this server's rows
        are read (a filtered Parquet read: ~80 ms at 100,000 servers), never the fleet's."""
        if not plan.has_forecasts:
            return None
        if plan.position(server_id) is None:
            return pd.DataFrame(columns=["server_id", "metric", "timestamp", *FORECAST_KEEP, "model"])
        key = self._key("forecast", plan.run_id, server_id)
        cached = self.cache.get(key)
        if isinstance(cached, pd.DataFrame):
            return cached
        fc = one_server_forecast(self.store, plan.run_id, server_id)
        if fc is not None:
            self.cache.set(key, fc, timeout=max(self.ttl, 60))
        return fc

    def server_table(self, plan: Plan, name: str, server_id: str) -> pd.DataFrame | None:
        """One server's rows of a plan table: from memory for the summary tables, read with a
        server filter (and cached per run) for the per-server ones; None if not in the run."""
        if name not in plan.by_server_tables:
            return plan.server_rows(name, server_id)
        key = self._key("rows", name, plan.run_id, server_id)
        cached = self.cache.get(key)
        if isinstance(cached, pd.DataFrame):
            return cached
        if plan.position(server_id) is None:
            return pd.DataFrame(columns=["server_id"])
        rows = self.store.read_run_table(plan.run_id, name, server_ids=[server_id])
        if rows is None:
            return None
        rows = rows.reset_index(drop=True)
        self.cache.set(key, rows, timeout=max(self.ttl, 60))
        return rows

    def server_history(self, plan: Plan, server_id: str) -> pd.DataFrame:
        """All metrics of one known server, cached per run; empty frame when it has none."""
        pos = plan.position(server_id)
        if pos is None:
            raise KeyError(f"unknown server {server_id!r}")
        key = self._key("history", plan.run_id, server_id)
        cached = self.cache.get(key)
        if isinstance(cached, pd.DataFrame):
            return cached
        bu = str(plan.inventory["business_unit"].iat[pos])
        try:
            hist = self.store.read_metrics(MetricsQuery.of(server_ids=[server_id], business_units=[bu]))
            if hist.empty:  # the server may have moved business unit since its metrics were written
                hist = self.store.read_metrics(MetricsQuery.of(server_ids=[server_id]))
        except NoDataError:
            hist = pd.DataFrame(columns=["server_id", "timestamp"])
        self.cache.set(key, hist, timeout=max(self.ttl, 60))
        return hist


def build_analytics_inputs(store: Store, plan: Plan, positions: np.ndarray | None = None) -> AnalyticsInputs:
    """forecasting.inputs.prepare over the run's forecasts, the history the analytics look at,
    and the plan's inventory (so positions match the plan's) — of every server, or of the
    servers at ``positions`` only (read with a server filter: a scoped what-if)."""
    if positions is None:
        return prepare_scope(store, plan.run_id, plan.inventory, None, plan.origin, plan.freq)
    return prepare_scope(store, plan.run_id, *plan.scope(positions))


def prepare_scope(
    store: Store,
    run_id: str,
    inventory: pd.DataFrame,
    server_ids: list[str] | None,
    origin: pd.Timestamp | None,
    freq: str,
) -> AnalyticsInputs:
    """:func:`build_analytics_inputs` from what it needs of the plan only (what crosses to a
    child process): ``server_ids`` None reads every server.

    The two frames are handed to ``prepare`` as readers, so each is read when needed and
    dropped once turned into arrays; Arrow's freed memory goes back after each read."""
    from forecasting.inputs import FORECAST_INPUT_COLUMNS, HISTORY_DAYS, AnalyticsError, prepare

    known_ids = inventory["server_id"]

    def read_forecasts() -> pd.DataFrame:
        forecasts = store.read_run_table(
            run_id, "forecasts", server_ids=server_ids, columns=FORECAST_INPUT_COLUMNS
        )
        release_memory()
        if forecasts is None or forecasts.empty:
            raise ReadModelError(f"run {run_id} has no forecasts: what-if scenarios need them")
        known = forecasts["server_id"].astype("str").isin(known_ids)
        return forecasts if known.all() else forecasts[known.to_numpy()]

    def read_history() -> pd.DataFrame:
        start = origin - pd.Timedelta(days=HISTORY_DAYS.get(freq, 400)) if origin is not None else None
        units = None if server_ids is None else sorted(set(inventory["business_unit"].astype(str)))
        try:
            history = store.read_metrics(
                MetricsQuery.of(start=start, server_ids=server_ids, business_units=units)
            )
        except NoDataError as e:
            raise ReadModelError(f"run {run_id}: no metric history for what-if scenarios ({e})") from e
        release_memory()
        return history[history["server_id"].astype("str").isin(known_ids).to_numpy()]

    history: Callable[[], pd.DataFrame] = read_history
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        if server_ids is not None and len(server_ids) <= SMALL_SCOPE_SERVERS:
            # a packed host's members: small frames, so both reads at once (the first view of a
            # host waits for them: 0.3 s of forecasts beside 0.4 s of history at 100,000 servers)
            history = pool.submit(read_history).result
        try:
            return prepare(read_forecasts, history, inventory, origin=origin, freq=freq)
        except AnalyticsError as e:
            raise ReadModelError(f"run {run_id} cannot be prepared for what-if scenarios: {e}") from e


# --------------------------------------------------------------------------- server page helpers


def reforecast(
    history: pd.DataFrame,
    model: str,
    freq: str,
    horizon: int,
    progress: Callable[[int, int, str], None] | None = None,
) -> pd.DataFrame:
    """Fit ``model`` on one server's history, metric by metric, and forecast ``horizon`` periods.

    Metric by metric so a progress callback can report as each finishes (Prophet: ~0.3 s each).
    Returns plan.FORECAST_COLUMNS rows.
    """
    from forecasting.models import get_model
    from forecasting.panel import build_panel

    if model not in MODEL_CHOICES:
        raise ValueError(f"unknown model {model!r}: choose one of {', '.join(MODEL_CHOICES)}")
    metrics = [m for m in METRIC_COLUMNS if m in history and history[m].notna().any()]
    if not metrics:
        raise ValueError("this server has no metric history to forecast from")
    frames = []
    for i, metric in enumerate(metrics):
        panel = build_panel(history[["server_id", "timestamp", metric]], freq, columns=[metric])
        # One process, no pools: this runs inside a background-callback job.
        options = {} if model == "naive" else {"workers": 1}
        result = get_model(model, **options).fit(panel).predict(horizon)
        frames.append(result.to_frame())
        if progress is not None:
            progress(i + 1, len(metrics), metric)
    return pd.concat(frames, ignore_index=True)


def breach_markers(forecast: pd.DataFrame, threshold: float) -> dict[str, pd.Timestamp | None]:
    """First period each path (q10 optimistic, median expected, q90 pessimistic) reaches threshold."""
    out: dict[str, pd.Timestamp | None] = {}
    if forecast.empty or not np.isfinite(threshold):
        return {"optimistic": None, "expected": None, "pessimistic": None}
    ts = pd.to_datetime(forecast["timestamp"], utc=True).reset_index(drop=True)
    for name, col in (("optimistic", BAND_80[0]), ("expected", "yhat"), ("pessimistic", BAND_80[1])):
        with np.errstate(invalid="ignore"):
            hit = np.flatnonzero(forecast[col].to_numpy(dtype=float) >= threshold)
        out[name] = ts.iat[hit[0]] if hit.size else None
    return out


def quarter_end_spans(start: pd.Timestamp, end: pd.Timestamp) -> list[tuple[pd.Timestamp, pd.Timestamp]]:
    """Quarter-end close windows (forecasting.calendar's definition) between two instants."""
    if start is None or end is None or end <= start:
        return []
    days = pd.date_range(start.floor("D"), end.ceil("D"), freq="D")
    if days.tz is None:
        days = days.tz_localize("UTC")
    flag = calendar_features(days)["quarter_end"].to_numpy() > 0
    spans = []
    edges = np.flatnonzero(np.diff(np.r_[0, flag.astype(np.int8), 0]))
    for a, b in zip(edges[::2], edges[1::2], strict=True):
        spans.append((days[a], days[b - 1] + pd.Timedelta(days=1)))
    return spans
