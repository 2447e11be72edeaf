"""A published run prepared for the API: its tables joined with the inventory, filtered, sorted
and paged fast.

Why a separate index and not the app's :class:`app.readmodel.Plan`: the API serves *any* run by
id (not only the latest) and never needs the Plan's history trends, which are its slowest part.
It reuses the read model's joins (``_join``, ``_held_back``, ``_options``) and filter semantics
(:class:`app.filters.FilterState`: unknown values match nothing), and the grid's JSON rows
(:func:`components.grid.records`), so the API and the pages say the same things.

A run never changes once published, so an index is built once per run id and kept per process
(a small LRU); sort orders are computed once per sort key and kept with it; a page is a slice
of a precomputed permutation. One server's forecast is read through a memory-mapped compact copy
written once per run beside the app's cache (shared by every gunicorn worker on the machine).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import gc
import hashlib
import json
import logging
import math
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from app.filters import FilterState
from app.readmodel import (
    DISPLAY_COLUMNS,
    SEVERITY_RANK,
    ReadModelError,
    _as_str,
    _held_back,
    _join,
    _options,
    in_child,
    one_builder,
    release_memory,
)
from forecasting.plan import ACTIONS, BAND_80, BAND_95
from forecasting.schema import FILTER_DIMENSIONS
from forecasting.sources import Store, StoreError
from forecasting.sources.base import RUN_ID_RE
from forecasting.sources.parquet import ParquetStore

log = logging.getLogger(__name__)

INDEX_VERSION = "1"  # part of every ETag: bump when a representation changes
MAX_INDEXES = 3  # runs kept per process (each is a few hundred MB at 100,000 servers)
MAX_ORDERS = 16  # sort orders kept per table
FORECAST_CHUNK = 5000  # servers per read while compacting a run's forecasts
COPY_ROWS = 2_000_000  # rows per slice when the compacted forecasts are put in server order
FORECAST_VALUES = ["yhat", BAND_80[0], BAND_80[1], BAND_95[0], BAND_95[1]]

# Columns each table serves, in order (those the run has). Display columns come from the inventory.
RISK_FIELDS = [
    "server_id",
    *DISPLAY_COLUMNS,
    "metric",
    "threshold",
    "current_p95",
    "forecast_peak",
    "forecast_peak_upper",
    "breach_optimistic",
    "breach_expected",
    "breach_pessimistic",
    "days_to_breach",
    "days_to_breach_pessimistic",
    "breach_probability",
    "act_by",
    "status",
    "severity",
    "score",
    "trend_per_week",
    "reason",
]
RECOMMENDATION_FIELDS = [
    "server_id",
    *DISPLAY_COLUMNS,
    "action",
    "current_size",
    "current_cores",
    "current_memory_gb",
    "recommended_size",
    "recommended_cores",
    "recommended_memory_gb",
    "target_group",
    "current_monthly_cost",
    "recommended_monthly_cost",
    "monthly_savings",
    "reason",
    "held_back",
]
BACKTEST_FIELDS = ["metric", "model", "mase", "smape", "mae", "coverage_80", "coverage_95", "n_cutoffs"]
CONSOLIDATION_FIELDS = [
    "server_id",
    "hostname",
    "business_unit",
    "region",
    "environment",
    "host_size",
    "host_cores",
    "host_memory_gb",
    "host_monthly_cost",
    "peak_cpu_util",
    "peak_mem_util",
]
# Default orders: the risk grid's (worst first), recommendations by saving.
DEFAULT_SORT = {
    "risk": ["severity", "-score", "server_id", "metric"],
    "recommendations": ["-monthly_savings"],
}
RANKED = {"severity": SEVERITY_RANK, "action": {a: i for i, a in enumerate(ACTIONS)}}


class ApiInputError(ValueError):
    """A request the API cannot answer as asked (bad filter, sort, fields or cursor): a 400."""

    def __init__(self, title: str, detail: str, *, param: str | None = None):
        super().__init__(detail)
        self.title = title
        self.detail = detail
        self.param = param


class UnknownRunError(LookupError):
    """No published run with this id."""


# --------------------------------------------------------------------------- cursor


def encode_cursor(run_id: str, table: str, digest: str, offset: int) -> str:
    """An opaque cursor: which run, table and query it continues, and where."""
    raw = json.dumps({"r": run_id, "t": table, "q": digest, "o": offset}, separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str, run_id: str, table: str, digest: str) -> int:
    """The offset a cursor continues from; ApiInputError when it is not one of ours or belongs to
    another run, list or query (paging must not silently mix two queries)."""
    bad = ApiInputError("Bad cursor", "the cursor is not one this API issued", param="cursor")
    if not isinstance(cursor, str) or not cursor or len(cursor) > 512:
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(data, dict):
        raise bad
    offset = data.get("o")
    if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
        raise bad
    if data.get("r") != run_id or data.get("t") != table:
        raise ApiInputError(
            "Bad cursor",
            "the cursor belongs to another run or list: page with the `next` link",
            param="cursor",
        )
    if data.get("q") != digest:
        raise ApiInputError(
            "Bad cursor",
            "the cursor belongs to another query (filters or sort changed): start again without a cursor",
            param="cursor",
        )
    return offset


# --------------------------------------------------------------------------- one table


@dataclass
class Table:
    """One plan table, joined with display columns, rows in a canonical order (server, metric).

    ``frame`` is given whole and keeps the served number and date columns; every served column
    is kept in JSON-ready form (``_json``), text only there."""

    name: str
    frame: pd.DataFrame
    pos: np.ndarray  # inventory position of each row
    fields: list[str]
    search: pa.Array  # lower-case "server_id hostname" per row
    _orders: OrderedDict[tuple[str, ...], np.ndarray] = field(default_factory=OrderedDict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _json: dict[str, tuple[str, Any]] = field(default_factory=dict)
    _encoded: np.ndarray | None = None
    n_rows: int = 0

    def __post_init__(self) -> None:
        # every served column once in a JSON-ready form, so a page is a gather, not a conversion
        self._json = {f: _json_column(self.frame[f]) for f in self.fields}
        # text lives on only as those codes into its distinct values: the frame keeps the served
        # numbers and dates (0.45 GB less per worker at 100,000 servers)
        kept = [
            f
            for f, (kind, _) in self._json.items()
            if kind == "num" or pd.api.types.is_datetime64_any_dtype(self.frame[f].dtype)
        ]
        self.frame = self.frame[kept]
        self.n_rows = len(self.pos)

    def has(self, col: str) -> bool:
        return col in self._json or col in self.frame

    def column(self, col: str) -> np.ndarray:
        """One column's values (text as Python strings, None where missing)."""
        if col in self.frame:
            return self.frame[col].to_numpy()
        codes, values = self._json[col][1]
        return values[codes]

    def isin(self, col: str, values: Sequence[str]) -> np.ndarray:
        """Rows whose text column ``col`` ('' for missing) is one of ``values``: decided once
        per distinct value, then gathered by the codes."""
        kind, column = self._json[col]
        if kind != "text":
            raise ValueError(f"{col} is not a text column")
        codes, distinct = column
        wanted = set(values)
        return np.array([("" if v is None else str(v)) in wanted for v in distinct], dtype=bool)[codes]

    def json_rows(self, chosen: np.ndarray) -> str:
        """Rows ``chosen`` with every field, as a JSON array. Each row is encoded the first time
        it is served and kept (runs never change): encoding floats is most of a page's cost
        otherwise. Only rows served are kept: encoding every row ahead held ~0.8 GB per worker
        at 100,000 servers."""
        chosen = np.asarray(chosen, dtype=np.int64)
        with self._lock:
            if self._encoded is None:
                self._encoded = np.full(self.n_rows, None, dtype=object)
            encoded = self._encoded
            missing = chosen[np.equal(encoded[chosen], None)] if len(chosen) else chosen
        if len(missing):
            texts = [json.dumps(r, allow_nan=False) for r in self.rows(missing, self.fields)]
            with self._lock:
                encoded[missing] = np.asarray(texts, dtype=object)
        return "[" + ",".join(encoded[chosen].tolist()) + "]"

    def numbers(self, col: str) -> np.ndarray:
        kind, arr = self._json[col]
        return arr if kind == "num" else self.frame[col].to_numpy(dtype=float, na_value=np.nan)

    def rows(self, chosen: np.ndarray, fields: Sequence[str]) -> list[dict[str, Any]]:
        """Rows ``chosen`` as JSON-safe dicts: the same values as :func:`components.grid.records`
        gives (tests/test_api.py checks it), without pandas on the request path."""
        cols = [_json_values(*self._json[f], chosen) for f in fields]
        return [dict(zip(fields, row, strict=True)) for row in zip(*cols, strict=True)]

    def sortable(self) -> list[str]:
        return [f for f in self.fields if f != "reason"]

    def order(self, keys: Sequence[str]) -> np.ndarray:
        """Row permutation for ``keys`` ('-x' descending); ties broken by the canonical order, so
        every order is total and a page boundary never moves. Missing values sort last."""
        spec = tuple(keys)
        with self._lock:
            got = self._orders.get(spec)
            if got is not None:
                self._orders.move_to_end(spec)
                return got
        columns: list[np.ndarray] = []
        for key in spec:
            desc = key.startswith("-")
            name = key.lstrip("-")
            if name not in self.frame:  # text, from its codes: each distinct value's rank
                codes, distinct = self._json[name][1]
                known = distinct[:-1]
                if name in RANKED:
                    rank = np.array([RANKED[name].get(str(v), np.nan) for v in known], dtype=float)
                else:
                    rank = np.empty(len(known))
                    rank[np.argsort(np.asarray([str(v) for v in known], dtype=str), kind="stable")] = (
                        np.arange(len(known))
                    )
                v = np.append(rank, np.nan)[codes]  # code -1 (missing) picks the NaN
                missing = np.isnan(v)
                columns.append(np.where(missing, 0.0, -v if desc else v))
                columns.append(missing.astype(np.int8))
                continue
            s = self.frame[name]
            if name in RANKED:
                v = s.astype(str).map(RANKED[name]).to_numpy(dtype=float, na_value=np.nan)
            elif pd.api.types.is_numeric_dtype(s.dtype) or isinstance(s.dtype, pd.DatetimeTZDtype):
                v = (
                    s.astype("int64").to_numpy(dtype=float)
                    if isinstance(s.dtype, pd.DatetimeTZDtype)
                    else s.to_numpy(dtype=float, na_value=np.nan)
                )
                if isinstance(s.dtype, pd.DatetimeTZDtype):
                    v[s.isna().to_numpy()] = np.nan
            else:
                codes, _ = pd.factorize(s.astype("string"), sort=True, use_na_sentinel=True)
                v = codes.astype(float)
                v[codes < 0] = np.nan
            missing = np.isnan(v)
            v = np.where(missing, 0.0, -v if desc else v)
            columns.append(v)
            columns.append(missing.astype(np.int8))  # missing last, whatever the direction
        # np.lexsort sorts by the last key first: reverse, with the canonical row number last-priority
        keys_arr = [np.arange(self.n_rows)]
        for i in range(len(spec) - 1, -1, -1):
            keys_arr.append(columns[2 * i])
            keys_arr.append(columns[2 * i + 1])
        perm = np.lexsort(keys_arr)
        with self._lock:
            self._orders[spec] = perm
            while len(self._orders) > MAX_ORDERS:
                self._orders.popitem(last=False)
        return perm


def _json_column(s: pd.Series) -> tuple[str, Any]:
    """A column in JSON-ready form, records()'s conversions done once: ('num', float64) or
    ('text', (int32 codes, distinct values)) — text kept as codes into its distinct values (the
    last one None, code -1): a Python string per row held ~1 GB per worker at 100,000 servers."""
    if isinstance(s.dtype, pd.DatetimeTZDtype) or pd.api.types.is_datetime64_any_dtype(s.dtype):
        s = s.dt.strftime("%Y-%m-%d")
    elif pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return "num", s.to_numpy(dtype=float, na_value=np.nan)
    is_bool = pd.api.types.is_bool_dtype(s.dtype)
    codes, uniques = pd.factorize(s.astype(object), use_na_sentinel=True)  # None, NA, NaN -> -1
    values = [bool(v) if is_bool else str(v) for v in np.asarray(uniques, dtype=object).tolist()]
    return "text", (codes.astype(np.int32), np.asarray([*values, None], dtype=object))


def _json_values(kind: str, column: Any, chosen: np.ndarray) -> list[Any]:
    """Rows ``chosen`` of a :func:`_json_column` as JSON-safe Python values."""
    if kind == "text":
        codes, values = column
        return values[codes[chosen]].tolist()
    return [
        None if not math.isfinite(v) else (int(v) if v.is_integer() and abs(v) < 2**53 else v)
        for v in column[chosen].tolist()
    ]


@dataclass(frozen=True)
class Query:
    """A validated list query: filters over inventory dimensions and table columns, search, sort."""

    dims: FilterState = field(default_factory=FilterState)
    columns: tuple[tuple[str, tuple[str, ...]], ...] = ()  # (column, allowed values)
    search: str = ""
    min_values: tuple[tuple[str, float], ...] = ()  # (column, minimum)
    max_values: tuple[tuple[str, float], ...] = ()
    sort: tuple[str, ...] = ()

    def digest(self) -> str:
        """Stable over equal queries: what a cursor is bound to."""
        raw = json.dumps(
            [
                {d: list(v) for d, v in self.dims.active.items()},
                [list(c) for c in self.columns],
                self.search,
                [list(m) for m in self.min_values],
                [list(m) for m in self.max_values],
                list(self.sort),
            ],
            sort_keys=True,
        )
        return hashlib.sha256(raw.encode()).hexdigest()[:16]


@dataclass
class Page:
    table: Table
    chosen: np.ndarray  # the page's rows of the table
    fields: list[str]
    total: int
    offset: int
    next_offset: int | None

    @property
    def rows(self) -> list[dict[str, Any]]:
        return self.table.rows(self.chosen, self.fields)

    def items_json(self) -> str:
        """The rows as a JSON array: all fields come pre-serialized (a join), others are encoded."""
        if self.fields == self.table.fields:
            return self.table.json_rows(self.chosen)
        return json.dumps(self.rows, allow_nan=False)


# --------------------------------------------------------------------------- a run


@dataclass
class RunIndex:
    """One run, ready to answer every API read."""

    run_id: str
    manifest: dict[str, Any]
    inventory: pd.DataFrame  # sorted by server_id
    ids: pd.Index
    options: dict[str, list[str]]
    codes: dict[str, np.ndarray]
    tables: dict[str, Table | None]
    consolidation: pd.DataFrame | None
    fingerprint: str  # run id + inventory content: what ETags are built on
    forecasts: ForecastStore | None = None
    _inventory_json: dict[str, tuple[str, Any]] = field(default_factory=dict)

    def inventory_row(self, pos: int) -> dict[str, Any]:
        """One server's inventory facts, JSON-safe (as records() writes them)."""
        if not self._inventory_json:
            self._inventory_json = {c: _json_column(self.inventory[c]) for c in self.inventory.columns}
        at = np.array([pos])
        return {c: _json_values(kind, col, at)[0] for c, (kind, col) in self._inventory_json.items()}

    @property
    def n_servers(self) -> int:
        return len(self.inventory)

    def position(self, server_id: str) -> int | None:
        i = self.ids.get_indexer([server_id])[0]
        return int(i) if i >= 0 else None

    def dim_mask(self, filters: FilterState) -> np.ndarray:
        """Inventory rows matching the dimension filters; unknown values match nothing (as the app)."""
        keep = np.ones(self.n_servers, dtype=bool)
        for dim, values in filters.active.items():
            known = {v: i for i, v in enumerate(self.options[dim])}
            wanted = [known[v] for v in values if v in known]
            keep &= np.isin(self.codes[dim], np.asarray(wanted, dtype=np.int32))
        return keep

    def rows_mask(self, table: Table, q: Query) -> np.ndarray:
        """Rows matching every filter: integer codes and float arrays prepared once per run."""
        mask = self.dim_mask(q.dims)[table.pos] if not q.dims.is_empty else np.ones(table.n_rows, bool)
        for col, values in q.columns:
            mask &= table.isin(col, values)
        for col, lo in q.min_values:
            mask &= table.numbers(col) >= lo  # NaN compares False: a missing value never passes
        for col, hi in q.max_values:
            mask &= table.numbers(col) <= hi
        if q.search:
            hit = pc.match_substring(table.search, q.search.lower()).to_numpy(zero_copy_only=False)
            mask &= hit
        return mask

    def page(self, name: str, q: Query, offset: int, limit: int, fields: Sequence[str]) -> Page:
        """Rows ``offset``..``offset+limit`` of the filtered, sorted table (JSON-ready)."""
        table = self.tables.get(name)
        if table is None:
            raise LookupError(name)
        mask = self.rows_mask(table, q)
        perm = table.order(q.sort or DEFAULT_SORT.get(name, ["server_id"]))
        selected = perm[mask[perm]]
        total = len(selected)
        chosen = selected[offset : offset + limit]
        nxt = offset + limit if offset + limit < total else None
        return Page(table, chosen, list(fields), total, offset, nxt)


def inventory_fingerprint(inventory: pd.DataFrame) -> str:
    return hashlib.sha256(pd.util.hash_pandas_object(inventory, index=False).to_numpy().tobytes()).hexdigest()


def build_index(store: Store, run_id: str, forecast_dir: str | None = None) -> RunIndex:
    """Read one run (its tables and the inventory) into a :class:`RunIndex`."""
    manifest = store.read_manifest(run_id)
    inventory = store.read_inventory().copy()
    for col in ["server_id", *DISPLAY_COLUMNS]:
        _as_str(inventory, col)
    inventory = inventory.sort_values("server_id", kind="stable", ignore_index=True)
    inventory = inventory.drop_duplicates("server_id", ignore_index=True)
    ids = pd.Index(inventory["server_id"])
    options = _options(inventory)
    codes = {
        dim: pd.Categorical(inventory[dim], categories=options[dim]).codes.astype(np.int32)
        for dim in FILTER_DIMENSIONS
    }
    notes: list[str] = []
    tables: dict[str, Table | None] = {}
    for name, fields, order in (
        ("risk", RISK_FIELDS, ["server_id", "metric"]),
        ("recommendations", RECOMMENDATION_FIELDS, ["server_id"]),
        ("backtest", ["server_id", *BACKTEST_FIELDS], ["server_id", "metric", "model"]),
    ):
        raw = store.read_run_table(run_id, name)
        if raw is None or "server_id" not in raw:
            tables[name] = None
            continue
        frame, pos = _join(raw, name, ids, inventory, notes)
        if name == "recommendations":
            _held_back(frame)
        for col in ("metric", "severity", "status", "action"):
            if col in frame:
                _as_str(frame, col)
        keep = [c for c in order if c in frame]
        idx = np.lexsort([frame[c].astype(str).to_numpy() for c in reversed(keep)])
        frame = frame.iloc[idx].reset_index(drop=True)
        pos = pos[idx]
        present = [f for f in fields if f in frame]
        hostname = frame["hostname"].fillna("").astype(str) if "hostname" in frame else ""
        search = pa.array(
            (frame["server_id"].astype(str) + " " + hostname).str.lower(), type=pa.large_string()
        )
        tables[name] = Table(name, frame, pos, present, search)
    cons = store.read_run_table(run_id, "consolidation")
    if cons is not None and len(cons):
        cons = cons.copy()
        _as_str(cons, "server_id")
        pos = ids.get_indexer(cons["server_id"])
        for col in ("hostname", "business_unit"):
            if col not in cons:
                cons[col] = np.where(pos >= 0, inventory[col].to_numpy()[np.maximum(pos, 0)], None)
        cons = cons.sort_values(["target_group", "server_id"], kind="stable", ignore_index=True)
    fingerprint = hashlib.sha256(
        f"{INDEX_VERSION}|{run_id}|{inventory_fingerprint(inventory[['server_id', *DISPLAY_COLUMNS]])}".encode()
    ).hexdigest()[:32]
    index = RunIndex(run_id, manifest, inventory, ids, options, codes, tables, cons, fingerprint)
    if notes:
        log.warning("run %s for the API: %s", run_id, "; ".join(notes))
    if forecast_dir is not None:
        index.forecasts = ForecastStore(store, run_id, ids, os.path.join(forecast_dir, run_id))
        # compact the forecasts now, so the first one-server read does not wait for it
        threading.Thread(target=index.forecasts.warm, name=f"capfc-api-fc-{run_id}", daemon=True).start()
    return index


# --------------------------------------------------------------------------- forecasts


class ForecastStore:
    """One run's forecasts, compacted once into memory-mapped arrays grouped by server.

    Reading one server from the run's Parquet scans a row group of 64k rows (tens of ms at
    10,000 servers); the compact copy is a slice. It is written once per run (runs never change)
    under the app's cache directory, atomically (temp directory + rename), and every worker maps
    the same files.
    """

    FILES = ("bounds.npy", "metric.npy", "timestamp.npy", "values.npy", "meta.json")

    def __init__(self, store: Store, run_id: str, ids: pd.Index, directory: str) -> None:
        self.store = store
        self.run_id = run_id
        self.ids = ids
        self.directory = directory
        self._lock = threading.Lock()
        self._arrays: dict[str, Any] | None = None
        self._stamps: dict[int, str] = {}

    def _complete(self) -> bool:
        return all(os.path.exists(os.path.join(self.directory, f)) for f in self.FILES)

    def build(self) -> None:
        """Write the compact copy (once: the instance's other workers wait for it, then map it)."""
        if not self._complete():
            with one_builder(self.directory + ".lock"):
                if not self._complete():
                    self._build()
                    return
        log.info("forecasts of run %s already compacted", self.run_id)

    def _build(self) -> None:
        started = time.perf_counter()
        parent = os.path.dirname(self.directory)
        os.makedirs(parent, exist_ok=True)
        tmp = tempfile.mkdtemp(dir=parent, prefix=".tmp-fc-")
        try:
            metrics = self._write_in_child(tmp)
            with open(os.path.join(tmp, "meta.json"), "w") as f:
                json.dump({"metrics": metrics, "values": FORECAST_VALUES, "run_id": self.run_id}, f)
            with contextlib.suppress(OSError):  # another worker won the race: its copy is the same
                os.rename(tmp, self.directory)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        log.info("compacted forecasts of run %s in %.2f s", self.run_id, time.perf_counter() - started)

    def _write_in_child(self, directory: str) -> list[str]:
        """:meth:`_write` in a short-lived child process (:func:`app.readmodel.in_child`):
        writing the copy touches every page of it (2 GB of a worker's resident size at 100,000
        servers, measured), which the child's exit gives back."""
        return in_child(_compact, self.store, self.run_id, self.ids, directory)

    def _batches(self) -> Iterator[pa.Table]:
        """The run's forecasts in pieces: row group by row group straight from the Parquet file
        (local or S3), or through ``read_run_table`` in chunks of servers for other stores."""
        cols = ["server_id", "metric", "timestamp", *FORECAST_VALUES]
        if isinstance(self.store, ParquetStore):
            dataset = self.store.run_table_dataset(self.run_id, "forecasts")
            if dataset is None:
                raise LookupError("forecasts")
            have = [c for c in cols if c in dataset.schema.names]
            for batch in dataset.to_batches(columns=have, batch_size=64_000):
                yield pa.Table.from_batches([batch])
            return
        ids = list(self.ids)
        for start in range(0, len(ids), FORECAST_CHUNK):
            raw = self.store.read_run_table(
                self.run_id, "forecasts", server_ids=ids[start : start + FORECAST_CHUNK]
            )
            if raw is None:
                raise LookupError("forecasts")
            yield pa.Table.from_pandas(raw[[c for c in cols if c in raw]], preserve_index=False)

    def _write(self, directory: str) -> list[str]:
        """Rows kept (known servers), grouped by server then metric then time, as .npy files.

        Streamed: each batch is written into memory-mapped output files as it is read, so a
        worker holds one batch, the server positions and (when the rows are not already grouped
        by server) one permutation — not the whole table (45 million rows at 100,000 servers).
        """
        metrics: list[str] = []
        total = self._row_count()
        paths = {name: os.path.join(directory, f"{name}.npy") for name in ("metric", "timestamp", "values")}
        raw = os.path.join(directory, "raw")
        os.makedirs(raw)
        metric_out = np.lib.format.open_memmap(os.path.join(raw, "metric.npy"), "w+", np.int8, (total,))
        ts_out = np.lib.format.open_memmap(os.path.join(raw, "timestamp.npy"), "w+", np.int64, (total,))
        vals_out = np.lib.format.open_memmap(
            os.path.join(raw, "values.npy"), "w+", np.float32, (total, len(FORECAST_VALUES))
        )
        pos_all = np.empty(total, dtype=np.int32)
        at = 0
        for batch in self._batches():
            sid = pc.dictionary_encode(batch["server_id"].cast(pa.string())).combine_chunks()
            where = self.ids.get_indexer(sid.dictionary.to_pylist())
            pos = where[sid.indices.to_numpy(zero_copy_only=False)]
            met = pc.dictionary_encode(batch["metric"].cast(pa.string())).combine_chunks()
            codes = []
            for m in met.dictionary.to_pylist():
                if m not in metrics:
                    metrics.append(m)
                codes.append(metrics.index(m))
            keep = pos >= 0
            k = int(keep.sum())
            if at + k > total:
                raise LookupError("forecasts changed while they were compacted")
            metric_out[at : at + k] = np.asarray(codes, dtype=np.int8)[
                met.indices.to_numpy(zero_copy_only=False)
            ][keep]
            ts_out[at : at + k] = (
                pc.cast(batch["timestamp"], pa.timestamp("s", tz="UTC"))
                .cast(pa.int64())
                .to_numpy(zero_copy_only=False)[keep]
            )
            for j, c in enumerate(FORECAST_VALUES):
                if c in batch.column_names:
                    vals_out[at : at + k, j] = batch[c].to_numpy(zero_copy_only=False)[keep]
                else:
                    vals_out[at : at + k, j] = np.nan
            pos_all[at : at + k] = pos[keep]
            at += k
        n = len(self.ids)
        pos_all = pos_all[:at]
        if at and not bool(
            np.all(pos_all[1:] >= pos_all[:-1])
        ):  # group by server, keeping the file's order within
            order = np.argsort(pos_all, kind="stable")
            pos_all = pos_all[order]
        else:
            order = None
        bounds = np.searchsorted(pos_all, np.arange(n + 1), side="left").astype(np.int64)
        del pos_all
        np.save(os.path.join(directory, "bounds.npy"), bounds)
        for name, src, shape in (
            ("metric", metric_out, (at,)),
            ("timestamp", ts_out, (at,)),
            ("values", vals_out, (at, len(FORECAST_VALUES))),
        ):
            out = np.lib.format.open_memmap(paths[name], "w+", src.dtype, shape)
            for lo in range(0, at, COPY_ROWS):  # in slices: bounded memory however large the run
                hi = min(at, lo + COPY_ROWS)
                out[lo:hi] = src[order[lo:hi]] if order is not None else src[lo:hi]
            out.flush()
            del out
        del metric_out, ts_out, vals_out
        shutil.rmtree(raw, ignore_errors=True)
        return metrics

    def _row_count(self) -> int:
        """Rows of the run's forecasts (an upper bound of those kept), without reading them."""
        if isinstance(self.store, ParquetStore):
            dataset = self.store.run_table_dataset(self.run_id, "forecasts")
            if dataset is None:
                raise LookupError("forecasts")
            return int(dataset.count_rows())
        return int(sum(b.num_rows for b in self._batches()))

    def warm(self) -> None:
        try:
            self.arrays()
        except ReadModelError as e:  # its child stopped (the worker is stopping, or out of memory)
            log.warning("forecasts of run %s could not be compacted ahead: %s", self.run_id, e)
        except Exception:  # a read request will meet (and report) the same failure
            log.warning("forecasts of run %s could not be compacted ahead", self.run_id, exc_info=True)

    def arrays(self) -> dict[str, Any]:
        if self._arrays is not None:
            return self._arrays
        with self._lock:
            if self._arrays is None:
                self.build()
                d = self.directory
                with open(os.path.join(d, "meta.json")) as f:
                    meta = json.load(f)
                self._arrays = {
                    "bounds": np.load(os.path.join(d, "bounds.npy"), mmap_mode="r"),
                    "metric": np.load(os.path.join(d, "metric.npy"), mmap_mode="r"),
                    "timestamp": np.load(os.path.join(d, "timestamp.npy"), mmap_mode="r"),
                    "values": np.load(os.path.join(d, "values.npy"), mmap_mode="r"),
                    "metrics": meta["metrics"],
                }
                ts = np.unique(
                    np.asarray(self._arrays["timestamp"][: min(len(self._arrays["timestamp"]), 1_000_000)])
                )
                self._stamps = {int(t): _iso(int(t)) for t in ts[:5000]}
        return self._arrays

    def server(self, pos: int) -> dict[str, list[dict[str, Any]]]:
        """metric -> [{timestamp, yhat, lower_80, upper_80, lower_95, upper_95}] of one server."""
        a = self.arrays()
        lo, hi = int(a["bounds"][pos]), int(a["bounds"][pos + 1])
        metric = np.asarray(a["metric"][lo:hi]).tolist()
        ts = np.asarray(a["timestamp"][lo:hi])
        vals = np.round(np.asarray(a["values"][lo:hi], dtype=np.float64), 4)
        rows = vals.tolist()
        if not np.isfinite(vals).all():
            rows = [[v if math.isfinite(v) else None for v in row] for row in rows]
        stamps = self._stamps
        text = [stamps.get(t) or _iso(t) for t in ts.tolist()]
        names = a["metrics"]
        out: dict[str, list[dict[str, Any]]] = {}
        for m, t, row in zip(metric, text, rows, strict=True):
            point = dict(zip(POINT_FIELDS, row, strict=True))
            point["timestamp"] = t
            out.setdefault(names[m], []).append(point)
        return out


POINT_FIELDS = ("yhat", "lower_80", "upper_80", "lower_95", "upper_95")


def _compact(store: Store, run_id: str, ids: pd.Index, directory: str) -> list[str]:
    """ForecastStore._write in a child process (module level: spawn pickles it by name)."""
    return ForecastStore(store, run_id, ids, directory)._write(directory)


def _iso(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(seconds))


# --------------------------------------------------------------------------- cache of runs


class RunIndexCache:
    """The runs the API has loaded, by id (a run never changes: an entry never goes stale)."""

    def __init__(self, store: Callable[[], Store], forecast_dir: str | None, size: int = MAX_INDEXES) -> None:
        self._store = store
        self.forecast_dir = forecast_dir
        self.size = size
        self._entries: OrderedDict[str, RunIndex] = OrderedDict()
        self._locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()
        self._manifests: dict[str, dict[str, Any]] = {}

    @property
    def store(self) -> Store:
        return self._store()

    def manifest(self, run_id: str) -> dict[str, Any]:
        """A run's manifest (cached: immutable), UnknownRunError when there is no such run."""
        if not isinstance(run_id, str) or not RUN_ID_RE.match(run_id):
            raise UnknownRunError(run_id)
        got = self._manifests.get(run_id)
        if got is not None:
            return got
        try:
            manifest = self.store.read_manifest(run_id)
        except StoreError:
            if run_id not in self.store.list_runs():
                raise UnknownRunError(run_id) from None
            raise
        if len(self._manifests) > 1000:
            self._manifests.clear()
        self._manifests[run_id] = manifest
        return manifest

    def get(self, run_id: str) -> RunIndex:
        self.manifest(run_id)  # UnknownRunError first
        with self._lock:
            hit = self._entries.get(run_id)
            if hit is not None:
                self._entries.move_to_end(run_id)
                return hit
            lock = self._locks.setdefault(run_id, threading.Lock())
        with lock:  # one build per run, other requests for it wait
            with self._lock:
                hit = self._entries.get(run_id)
                if hit is not None:
                    return hit
            started = time.perf_counter()
            index = build_index(self.store, run_id, self.forecast_dir)
            for name in ("risk", "recommendations"):
                table = index.tables.get(name)
                if table is not None:  # the default order, before any request
                    table.order(DEFAULT_SORT[name])
                    table.json_rows(np.arange(0))
            release_memory()
            log.info(
                "API index of run %s (%d servers) built in %.2f s",
                run_id,
                index.n_servers,
                time.perf_counter() - started,
            )
            with self._lock:
                self._entries[run_id] = index
                while len(self._entries) > self.size:
                    self._entries.popitem(last=False)
                self._locks.pop(run_id, None)
            # The index holds millions of references in object arrays, which every full
            # collection of the cyclic GC walks (~0.2 s at 100,000 servers: a request that
            # triggers one waits for it). It lives as long as the run is served and is freed by
            # reference counting when evicted, so it is moved out of the collector's sight.
            gc.collect()
            gc.freeze()
            return index
