"""Grids paged on the server: AG Grid's infinite row model for plan tables too large to send whole.

Why: at 100,000 servers the risk table has 500,000 server × metric rows and recommendations
100,000; sending them to the browser (and holding them there) takes seconds and hundreds of MB.
A page whose plan table has more than ``grid_client_max_rows`` rows (a setting) renders its
grid with ``rowModelType="infinite"``: the browser asks for one block of rows at a time
(``getRowsRequest``: first and last row, sort model, filter model) and the server answers the
block and the total (``getRowsResponse``). Smaller tables stay client-side (simpler, and sorting
is instant in the browser).

The rows are the page's own (the same frame its KPIs count, under the filters and the scenario,
with decisions): a page computes them once per query and they are kept per process
(:class:`FrameCache`), so scrolling and sorting only slice. The browser's sort and filter model
are validated by :class:`components.export.GridView` — the one check the exports use too — and
applied here, vectorised, with the same meaning as :func:`components.export.apply_view` (the
client-side grid's): text filters match literally (no patterns: a hostile string is only text),
numbers and dates compare as values, missing values sort first ascending. A request that names
a column the grid does not have, or a filter that is not one, is refused with a clear message,
never guessed or silently dropped.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from components.export import GridView, js_text
from components.grid import records

BLOCK_ROWS = 100  # rows per block the grid asks for (cacheBlockSize)
MAX_BLOCK_ROWS = 1_000  # largest block answered (a request for more is refused)
FRAME_MEMO = 6  # query results kept per process (each is one page's filtered rows)
# ... and at most this many rows across them, the newest query's always kept: at 100,000
# servers the unfiltered risk grid alone has 500,000 rows (~0.3 GB with its search text)
FRAME_MEMO_ROWS = 600_000


class GridRequestError(ValueError):
    """A grid request the server cannot answer as asked (shown to the planner as an alert)."""


def infinite_options(*, block_rows: int = BLOCK_ROWS) -> dict[str, Any]:
    """dashGridOptions of a server-paged grid (with ``rowModelType="infinite"`` on the grid)."""
    return {
        "cacheBlockSize": block_rows,
        "maxBlocksInCache": 20,
        "infiniteInitialRowCount": block_rows,
        "maxConcurrentDatasourceRequests": 1,
    }


def paged(plan: Any, table: str, settings: Any) -> bool:
    """Whether a page's grid over plan table ``table`` is paged on the server: the table has
    more than ``grid_client_max_rows`` rows (layouts and callbacks decide alike)."""
    frame = plan.tables.get(table) if plan is not None else None
    return frame is not None and len(frame) > int(settings.grid_client_max_rows)


def make_paged(grid: Any) -> Any:
    """Turn a client-side dag.AgGrid into a server-paged one (infinite row model, no rowData)."""
    grid.rowModelType = "infinite"
    grid.rowData = None
    grid.dashGridOptions = {**(grid.dashGridOptions or {}), **infinite_options()}
    return grid


@dataclass(frozen=True)
class GridRequest:
    """A validated ``getRowsRequest``: rows [start, end) under ``view``."""

    start: int
    end: int
    view: GridView


def parse_request(request: Any, search: Any, fields: Sequence[str]) -> GridRequest:
    """Validate the browser's request; GridRequestError says what is wrong with it."""
    if not isinstance(request, Mapping):
        raise GridRequestError("The grid's request is not one this page understands.")
    start, end = request.get("startRow"), request.get("endRow")
    ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (start, end))
    if not ok or start < 0 or end < start or end - start > MAX_BLOCK_ROWS:
        raise GridRequestError(
            f"The grid asked for rows {str(start)[:20]}–{str(end)[:20]}: at most {MAX_BLOCK_ROWS:,} "
            "rows at a time, from row 0."
        )
    sort_model = request.get("sortModel") or []
    filter_model = request.get("filterModel") or {}
    if not isinstance(sort_model, list) or not isinstance(filter_model, Mapping):
        raise GridRequestError("The grid's sort or filter is not one this page understands.")
    for spec in sort_model:
        if not isinstance(spec, Mapping) or spec.get("sort") not in ("asc", "desc"):
            raise GridRequestError(
                "The grid's sort is not one this page understands (ascending or descending)."
            )
    view = GridView.from_browser(search, filter_model, sort_model, fields)
    if view.dropped:
        raise GridRequestError(
            "This table cannot apply "
            + ", ".join(view.dropped)
            + ": not a column of this table, or not a filter it supports (text, number or date; "
            "filter text of at most 200 characters). Clear that column's filter or sort."
        )
    return GridRequest(int(start), int(end), view)


# --------------------------------------------------------------------------- vectorised view


def _text(s: pd.Series) -> np.ndarray:
    """Each value as the browser's grid shows it as text (js_text), lower-case."""
    return np.asarray([js_text(v).lower() for v in _values(s)], dtype=object)


def _values(s: pd.Series) -> list[Any]:
    """JSON values of a column, as records() makes them (what the client-side grid holds)."""
    return [r[s.name] for r in records(s.to_frame())] if len(s) else []


def _numbers(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_numeric_dtype(s.dtype) and not pd.api.types.is_bool_dtype(s.dtype):
        return s.to_numpy(dtype=float, na_value=np.nan)
    return pd.to_numeric(pd.Series(_values(s), dtype=object), errors="coerce").to_numpy(dtype=float)


def _dates(s: pd.Series) -> np.ndarray:
    out = []
    for v in _values(s):
        t = js_text(v)
        out.append(t[:10] if len(t) >= 10 and t[4:5] == "-" and t[7:8] == "-" else None)
    return np.asarray(out, dtype=object)


def _blank(s: pd.Series) -> np.ndarray:
    return np.asarray([v is None or v == "" for v in _values(s)], dtype=bool)


def _condition_mask(s: pd.Series, spec: Mapping[str, Any]) -> np.ndarray:
    if "conditions" in spec:
        masks = [_condition_mask(s, c) for c in spec["conditions"]]
        return np.logical_and.reduce(masks) if spec["operator"] == "AND" else np.logical_or.reduce(masks)
    typ, kind = spec["type"], spec["filterType"]
    blank = _blank(s)
    if typ == "blank":
        return blank
    if typ == "notBlank":
        return ~blank
    if kind == "text":
        v, f = _text(s), spec["filter"].lower()
        test: Callable[[str], bool] = {
            "contains": lambda x: f in x,
            "notContains": lambda x: f not in x,
            "equals": lambda x: x == f,
            "notEqual": lambda x: x != f,
            "startsWith": lambda x: x.startswith(f),
            "endsWith": lambda x: x.endswith(f),
        }[typ]
        hit = np.fromiter((test(x) for x in v), dtype=bool, count=len(v))
    elif kind == "number":
        x = _numbers(s)
        lo, hi = spec["filter"], spec["filterTo"]
        with np.errstate(invalid="ignore"):
            hit = {
                "equals": lambda: x == lo,
                "notEqual": lambda: x != lo,
                "greaterThan": lambda: x > lo,
                "greaterThanOrEqual": lambda: x >= lo,
                "lessThan": lambda: x < lo,
                "lessThanOrEqual": lambda: x <= lo,
                "inRange": lambda: (lo < x) & (x < hi),
            }[typ]()
        hit &= np.isfinite(x)
    else:
        d = _dates(s)
        lo, hi = spec["dateFrom"], spec["dateTo"]
        test = {
            "equals": lambda x: x == lo,
            "notEqual": lambda x: x != lo,
            "greaterThan": lambda x: x > lo,
            "lessThan": lambda x: x < lo,
            "inRange": lambda x: lo < x < hi,
        }[typ]
        hit = np.fromiter((x is not None and test(x) for x in d), dtype=bool, count=len(d))
    return hit & ~blank


def _sort_key(s: pd.Series, rank: Mapping[str, int] | None) -> np.ndarray:
    """A float key per row: missing lowest (-inf), ranked columns by meaning, text by order."""
    values = _values(s)
    if rank is not None:
        return np.asarray([rank.get(str(v), 9) for v in values], dtype=float)
    nums = [v for v in values if v is not None]
    if all(isinstance(v, int | float) and not isinstance(v, bool) for v in nums):
        return np.asarray([-math.inf if v is None else float(v) for v in values], dtype=float)
    text = [None if v is None else (str(v) if not isinstance(v, int | float) else js_text(v)) for v in values]
    codes, _ = pd.factorize(pd.Series(text, dtype=object), sort=True, use_na_sentinel=True)
    key = codes.astype(float)
    key[codes < 0] = -math.inf
    return key


def view_positions(
    frame: pd.DataFrame,
    view: GridView,
    fields: Sequence[str],
    orders: Mapping[str, Mapping[str, int]] | None = None,
    haystack: Callable[[], np.ndarray] | None = None,
) -> np.ndarray:
    """Row positions of ``frame`` the grid shows under ``view``, in its order (the vectorised
    twin of components.export.apply_view: quick search words, column filters, then the sort)."""
    keep = np.ones(len(frame), dtype=bool)
    words = [w.lower() for w in view.search.split() if w]
    if words:
        hay = haystack() if haystack is not None else search_text(frame, fields)
        for w in words:
            keep &= np.fromiter((w in h for h in hay), dtype=bool, count=len(hay))
    for col, spec in view.filters:
        if col in frame:
            keep &= _condition_mask(frame[col], spec)
        else:  # a known grid field the rows lack: nothing passes a condition on it
            keep &= spec["type"] == "blank"
    rows = np.flatnonzero(keep)
    for col, ascending in reversed(view.sort):
        if col not in frame or len(rows) < 2:
            continue
        key = _sort_key(frame[col].iloc[rows], (orders or {}).get(col))
        order = np.argsort(key if ascending else -key, kind="stable")
        rows = rows[order]
    return rows


def search_text(frame: pd.DataFrame, fields: Sequence[str]) -> np.ndarray:
    """Per row, the lower-case text of every grid field, newline-joined (the quick filter's
    haystack); computed once per cached frame."""
    cols = [_text(frame[f]) if f in frame else np.full(len(frame), "", dtype=object) for f in fields]
    if not cols:
        return np.full(len(frame), "", dtype=object)
    return np.asarray(["\n".join(parts) for parts in zip(*cols, strict=True)], dtype=object)


# --------------------------------------------------------------------------- the page's rows, cached


@dataclass
class GridRows:
    """One query's rows (already joined, derived and decided) and its quick-search haystack."""

    frame: pd.DataFrame
    fields: tuple[str, ...]
    _haystack: np.ndarray | None = None

    def haystack(self) -> np.ndarray:
        if self._haystack is None:
            self._haystack = search_text(self.frame, self.fields)
        return self._haystack

    def page(
        self, request: GridRequest, orders: Mapping[str, Mapping[str, int]] | None = None
    ) -> tuple[pd.DataFrame, int]:
        """The block asked for and the number of rows under the grid's view."""
        rows = view_positions(self.frame, request.view, self.fields, orders, self.haystack)
        return self.frame.iloc[rows[request.start : request.end]], len(rows)

    def shown(self, view: GridView, orders: Mapping[str, Mapping[str, int]] | None = None) -> pd.DataFrame:
        """Every row under the grid's view, in its order (what an export holds)."""
        return self.frame.iloc[view_positions(self.frame, view, self.fields, orders, self.haystack)]


class FrameCache:
    """A few queries' rows per process, so a grid's scrolling and sorting only slice."""

    def __init__(self, size: int = FRAME_MEMO, max_rows: int = FRAME_MEMO_ROWS) -> None:
        self.size = size
        self.max_rows = max_rows
        self._memo: OrderedDict[Hashable, GridRows] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable, build: Callable[[], GridRows]) -> GridRows:
        with self._lock:
            hit = self._memo.get(key)
            if hit is not None:
                self._memo.move_to_end(key)
                return hit
        rows = build()
        with self._lock:
            self._memo[key] = rows
            held = sum(len(r.frame) for r in self._memo.values())
            while len(self._memo) > 1 and (len(self._memo) > self.size or held > self.max_rows):
                held -= len(self._memo.popitem(last=False)[1].frame)
        return rows


def response(frame: pd.DataFrame, total: int, fields: Sequence[str]) -> dict[str, Any]:
    """getRowsResponse of one block."""
    return {"rowData": records(frame, list(fields)), "rowCount": int(total)}
