"""The global filter state and its URL form (``?bu=Retail&env=prod``).

A filtered view must survive being bookmarked and shared, so the state lives in the query
string. Anything that arrives from a URL or from the browser is untrusted: it is parsed with
hard limits and only values the inventory actually has pass (:func:`sanitise`); everything
else is dropped and reported, never echoed into markup or used as a key.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any
from urllib.parse import parse_qsl, urlencode

from forecasting.schema import FILTER_DIMENSIONS

# Short, stable query parameter names; changing one breaks every shared link.
PARAMS: dict[str, str] = {
    "business_unit": "bu",
    "region": "region",
    "environment": "env",
    "criticality": "crit",
    "server_type": "type",
}
DIMENSION_OF_PARAM = {p: d for d, p in PARAMS.items()}
LABELS: dict[str, str] = {
    "business_unit": "Business unit",
    "region": "Region",
    "environment": "Environment",
    "criticality": "Criticality",
    "server_type": "Server type",
}
PLACEHOLDERS: dict[str, str] = {
    "business_unit": "All business units",
    "region": "All regions",
    "environment": "All environments",
    "criticality": "All criticalities",
    "server_type": "All server types",
}

# Limits on untrusted input: a query string, a value, how many values per dimension.
MAX_QUERY_CHARS = 8192
MAX_VALUE_CHARS = 200
MAX_VALUES = 500


@dataclass(frozen=True)
class FilterState:
    """Selected values per dimension; an empty tuple means "no restriction"."""

    business_unit: tuple[str, ...] = ()
    region: tuple[str, ...] = ()
    environment: tuple[str, ...] = ()
    criticality: tuple[str, ...] = ()
    server_type: tuple[str, ...] = ()

    def get(self, dimension: str) -> tuple[str, ...]:
        if dimension not in PARAMS:
            raise KeyError(f"unknown filter dimension {dimension!r}; known: {', '.join(PARAMS)}")
        return getattr(self, dimension)

    @property
    def active(self) -> dict[str, tuple[str, ...]]:
        """Only the dimensions that restrict something."""
        return {d: v for d in FILTER_DIMENSIONS if (v := self.get(d))}

    @property
    def is_empty(self) -> bool:
        return not self.active

    def to_query(self) -> str:
        """The query string without '?', values in selection order ('' when empty)."""
        pairs = [(PARAMS[d], v) for d, values in self.active.items() for v in values]
        return urlencode(pairs)

    def to_data(self) -> dict[str, Any]:
        """JSON for the shell's dcc.Store: the state, its query string and the keys it owns."""
        return {
            "filters": {d: list(self.get(d)) for d in FILTER_DIMENSIONS},
            "query": self.to_query(),
            "keys": list(PARAMS.values()),
        }

    @classmethod
    def from_data(cls, data: Any) -> FilterState:
        """State from the dcc.Store written by :meth:`to_data`; tolerant of any shape.

        The store lives in the browser, so its content is only trusted to be JSON: non-strings,
        over-long values and unknown keys are dropped here. Values not in the inventory simply
        match no server (see ReadModel masks).
        """
        filters = data.get("filters") if isinstance(data, dict) else None
        if not isinstance(filters, dict):
            return cls()
        return cls(**{d: _clean_values(filters.get(d)) for d in FILTER_DIMENSIONS})

    def describe(self) -> str:
        """Short human summary, e.g. 'Business unit: Retail, Markets · Environment: prod'."""
        if self.is_empty:
            return "All servers"
        return " · ".join(f"{LABELS[d]}: {', '.join(v)}" for d, v in self.active.items())


def _clean_values(values: Any) -> tuple[str, ...]:
    """Strings only, stripped, de-duplicated, bounded in length and number."""
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list | tuple):
        return ()
    out: list[str] = []
    for v in values[:MAX_VALUES]:
        if isinstance(v, str):
            v = v.strip()
            if v and len(v) <= MAX_VALUE_CHARS and v not in out:
                out.append(v)
    return tuple(out)


def parse_query(search: str | None) -> dict[str, list[str]]:
    """Raw values per dimension from a query string ('?a=1&b=2' or 'a=1&b=2').

    Only the known parameter names are read; the string and each value are length-limited.
    Values are *not* checked against the inventory here: see :func:`sanitise`.
    """
    if not search or not isinstance(search, str):
        return {}
    text = search[1:] if search.startswith("?") else search
    text = text[:MAX_QUERY_CHARS]
    out: dict[str, list[str]] = {}
    for key, value in parse_qsl(text, keep_blank_values=False, errors="replace"):
        dim = DIMENSION_OF_PARAM.get(key)
        if dim is None:
            continue
        bucket = out.setdefault(dim, [])
        if len(bucket) < MAX_VALUES:
            bucket.append(value)
    return {d: list(_clean_values(v)) for d, v in out.items()}


def sanitise(
    raw: Mapping[str, Iterable[Any] | None], options: Mapping[str, Sequence[str]]
) -> tuple[FilterState, list[tuple[str, str]]]:
    """Keep only values the inventory has, in the inventory's order.

    Returns the state and the dropped (dimension, value) pairs so the shell can say which
    parts of a shared link were ignored.
    """
    kept: dict[str, tuple[str, ...]] = {}
    dropped: list[tuple[str, str]] = []
    for dim in FILTER_DIMENSIONS:
        values = raw.get(dim)
        if values is None:
            continue
        given = list(values) if not isinstance(values, str) else [values]
        wanted = _clean_values(given)
        # over-long values are cut by _clean_values: say so too (the notice shortens them)
        dropped.extend(
            (dim, v.strip()[:MAX_VALUE_CHARS])
            for v in given[:MAX_VALUES]
            if isinstance(v, str) and len(v.strip()) > MAX_VALUE_CHARS
        )
        known = options.get(dim, ())
        known_set = set(known)
        chosen = set()
        for v in wanted:
            if v in known_set:
                chosen.add(v)
            else:
                dropped.append((dim, v))
        kept[dim] = tuple(v for v in known if v in chosen)
    return FilterState(**kept), dropped


def from_query(
    search: str | None, options: Mapping[str, Sequence[str]]
) -> tuple[FilterState, list[tuple[str, str]]]:
    """Parse and sanitise a query string in one step; over-long values are reported too."""
    state, dropped = sanitise(parse_query(search), options)
    if search and isinstance(search, str):
        text = (search[1:] if search.startswith("?") else search)[:MAX_QUERY_CHARS]
        for key, value in parse_qsl(text, keep_blank_values=False, errors="replace"):
            dim = DIMENSION_OF_PARAM.get(key)
            if dim is not None and len(value.strip()) > MAX_VALUE_CHARS:
                dropped.append((dim, value.strip()[:MAX_VALUE_CHARS]))
    return state, dropped


def dimensions() -> list[str]:
    """The filter dimensions in display order."""
    return [f.name for f in fields(FilterState)]
