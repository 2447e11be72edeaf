"""Ingest raw telemetry samples (e.g. 5-minute CloudWatch) into the metrics contract.

Real telemetry arrives as raw samples, not as the daily or hourly p95 the engine forecasts.
This module reads them, maps them onto the contract's metrics and units, rolls them up to
the p95 of each period, and validates the result — reporting every sample, period and
server it drops, so a planner can see how much of the input the forecast rests on.

Accepted files (CSV, .csv.gz or Parquet; read by :func:`forecasting.files.read_frame`):

- long format: ``server_id, timestamp, metric, value`` (one row per sample);
- one series per file: ``timestamp, value``; the server id and metric come from the caller
  (``server_id=``, ``metric=``) or from the file name, NAB/CloudWatch style
  ``<service>_<metric>_<id>``: ``ec2_cpu_utilization_24ae8d.csv`` -> server ``ec2-24ae8d``,
  metric ``cpu_p95``; ``rds_cpu_utilization_cc0c53.csv`` -> ``rds-cc0c53``;
  ``ec2_network_in_257a54.csv`` -> ``ec2-257a54``, ``net_in_p95``. In general the raw metric
  name is found in the file name (the whole stem, the middle tokens, a trailing or a leading
  run of ``_``-separated tokens, in that order) and the remaining tokens joined by ``-`` are
  the server id; a name with no known metric in it gives the stem as server id.
  A column wins over the file name; giving ``server_id=``/``metric=`` for a file that has that
  column is an error (two answers to one question).

Timestamps: naive ones are taken as UTC, aware ones converted to UTC; numbers are Unix
epochs (s, ms, µs or ns, inferred from the magnitude). An export written in naive *local*
time shows each daylight-saving change as a one-hour gap and a one-hour repeat (the NAB
``ec2_disk_write_bytes_1ef3de`` file skips 2014-03-09 02:00): both are reported, not hidden.

Raw metric names (matched case-insensitively, ignoring ``_``, ``-``, spaces; British
spellings too; the full lists are :data:`RAW_METRICS` and :data:`NOT_CAPACITY`) -> contract:

======================================================  ===========  =======================
raw name                                                contract     unit of the raw values
======================================================  ===========  =======================
cpu, cpu_utilization, CPUUtilization, cpu_percent,      cpu_p95      percent
cpu_usage_active
mem, memory, mem_used_percent, memory_utilization,      mem_p95      percent
MemoryUtilization, mem_percent, memory_used_percent
disk_used_percent, disk_utilization,                    disk_p95     percent
DiskSpaceUtilization, disk_percent
network_in, NetworkIn                                   net_in_p95   bytes per sample period
network_out, NetworkOut                                 net_out_p95  bytes per sample period
cpu_p95, mem_p95, disk_p95, net_in_p95, net_out_p95     as is        contract unit (%, Mbps)
======================================================  ===========  =======================

Units. CloudWatch ``NetworkIn``/``NetworkOut`` count the bytes moved during each sampling
period, so they become Mbps as ``bytes * 8 / period_seconds / 1e6``, the period being the
median spacing of that series' samples (robust to gaps). ``unit=`` overrides what the name
implies: ``percent`` and ``fraction`` (0–1, ×100) for percent metrics; ``Mbps``, ``bits/s``,
``bytes/s`` and ``bytes`` (per sample period) for rate metrics. A unit of the wrong kind for
the metric (bytes for CPU %) is an error.

Metrics that are not capacity metrics. The contract tracks the share of a capacity (CPU,
memory, disk space, in %) and network bandwidth (Mbps). A raw metric that measures
something else — ``disk_write_bytes`` is disk I/O throughput, not % of disk space;
``request_count`` is load; ``mem_available_percent`` is the free share — is an
:class:`UnsupportedMetricError` naming the file and the metric. The one override: a
byte-count series (``disk_write_bytes``, ``disk_read_bytes``, RDS throughputs) may be tracked
as a *rate* metric by passing ``metric="net_in_p95"``/``"net_out_p95"`` explicitly — it then
is converted like network bytes, at the caller's responsibility. It can never become a
percent metric: bytes are not a share of anything. In long-format files, rows of such
metrics are dropped and reported (an export usually carries many metrics); a file left with
no capacity metric at all is the same error.

Rollup (:func:`rollup`): samples are checked (text, non-finite, negative and percent
values above 105 % are rejected; duplicate timestamps keep the last delivered sample and
are reported), then grouped by server, metric and period start (UTC) and reduced to the
0.95 quantile (linear interpolation, as ``numpy.quantile``). A period's *coverage* is its
sample count over the count expected at the series' sampling interval. Periods under
``min_coverage`` (default 0.5) are dropped — a p95 of a few samples is not a p95 — and
periods under :data:`PARTIAL_COVERAGE` (0.9) are kept but flagged as partial (typically the
first and last day of an export, or a day with an outage). Sampling coarser than the period
(hourly rollup of 2-hourly samples) is an error. The wide result then goes through
:func:`forecasting.schema.validate_metrics` (ranges, gaps, short series).

Streamed (:func:`ingest_to_store`, what ``python -m forecasting ingest`` runs): the same
reading, rollup and validation, a block of servers at a time, written into the store by a
bounded merge — for inputs larger than memory. Same rows and same report counts as
:func:`ingest` followed by ``write_metrics(mode="merge")``.
"""

from __future__ import annotations

import gzip
import itertools
import re
import shutil
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from .files import SUPPORTED_SUFFIXES, FileFormatError, file_stem, file_suffix, iter_frames, read_frame
from .schema import (
    ALL_INVENTORY_COLUMNS,
    INVENTORY_COLUMNS,
    INVENTORY_NUMERIC_COLUMNS,
    METRIC_COLUMNS,
    METRICS,
    OPTIONAL_INVENTORY_COLUMNS,
    PERCENT_CLIP_TOLERANCE,
    UNKNOWN,
    Finding,
    SchemaError,
    ValidationReport,
    freq_alias,
    require_columns,
    validate_inventory,
    validate_metrics,
)
from .sources.base import shard_of
from .sources.parquet import ROW_GROUP_SIZE, ParquetStore, StagedMetrics, metrics_schema

SAMPLE_COLUMNS = ["server_id", "timestamp", "metric", "value"]
COVERAGE_COLUMNS = ["server_id", "metric", "timestamp", "samples", "expected", "coverage", "status"]
PARTIAL_COVERAGE = 0.9  # periods below this share of their expected samples are flagged
STATUSES = ["complete", "partial", "dropped"]  # coverage status of a period
QUANTILE = 0.95

# unit -> (metric kind it can describe, factor to the contract unit); "bytes" also divides
# by the sampling period in seconds.
UNITS: dict[str, tuple[str, float]] = {
    "percent": ("percent", 1.0),
    "fraction": ("percent", 100.0),
    "Mbps": ("rate", 1.0),
    "bits/s": ("rate", 1e-6),
    "bytes/s": ("rate", 8e-6),
    "bytes": ("rate", 8e-6),
}
CONTRACT_UNIT = {"percent": "percent", "rate": "Mbps"}
_UNIT_NAMES = list(UNITS)
METRIC_DTYPE = pd.CategoricalDtype(METRIC_COLUMNS)


def _norm(name: str) -> str:
    """Matching key of a raw metric name: lower case, letters and digits only."""
    return re.sub(r"[^a-z0-9]", "", str(name).lower())


def _table(entries: dict[tuple[str, str], tuple[str, ...]]) -> dict[str, tuple[str, str]]:
    return {_norm(raw): target for target, raws in entries.items() for raw in raws}


# normalised raw name -> (contract metric, unit of the raw values)
RAW_METRICS: dict[str, tuple[str, str]] = _table(
    {
        ("cpu_p95", "percent"): (
            "cpu",
            "cpu_utilization",
            "cpu_utilisation",
            "cpu_percent",
            "cpu_usage_active",
            "cpu_p95",
        ),
        ("mem_p95", "percent"): (
            "mem",
            "memory",
            "mem_used_percent",
            "memory_used_percent",
            "mem_utilization",
            "memory_utilization",
            "memory_utilisation",
            "mem_percent",
            "memory_percent",
            "mem_p95",
        ),
        ("disk_p95", "percent"): (
            "disk_used_percent",
            "disk_utilization",
            "disk_utilisation",
            "disk_space_utilization",
            "disk_percent",
            "disk_p95",
        ),
        ("net_in_p95", "bytes"): ("network_in",),
        ("net_out_p95", "bytes"): ("network_out",),
        ("net_in_p95", "Mbps"): ("net_in_p95",),
        ("net_out_p95", "Mbps"): ("net_out_p95",),
    }
)

# normalised raw name -> (what it measures, unit if it is a byte count that may be tracked
# as a rate metric on explicit request, else "")
NOT_CAPACITY: dict[str, tuple[str, str]] = {
    _norm(raw): target
    for raw, target in {
        "disk_write_bytes": ("disk I/O throughput (bytes written), not a share of disk space", "bytes"),
        "disk_read_bytes": ("disk I/O throughput (bytes read), not a share of disk space", "bytes"),
        "write_throughput": ("disk I/O throughput (bytes/s written), not a share of disk space", "bytes/s"),
        "read_throughput": ("disk I/O throughput (bytes/s read), not a share of disk space", "bytes/s"),
        "disk_write_ops": ("a count of disk write operations, not a share of capacity", ""),
        "disk_read_ops": ("a count of disk read operations, not a share of capacity", ""),
        "write_iops": ("disk write operations per second, not a share of capacity", ""),
        "read_iops": ("disk read operations per second, not a share of capacity", ""),
        "network_packets_in": ("a packet count, not bandwidth", ""),
        "network_packets_out": ("a packet count, not bandwidth", ""),
        "request_count": ("a request count (load), not a share of capacity", ""),
        "latency": ("a response time, not a share of capacity", ""),
        "cpu_credit_balance": ("burst credits, not CPU utilisation", ""),
        "cpu_credit_usage": ("burst credits, not CPU utilisation", ""),
        "status_check_failed": ("a health check, not a share of capacity", ""),
        "database_connections": ("a connection count, not a share of capacity", ""),
        "mem_available_percent": ("the free memory share; the contract wants used % (100 − value)", ""),
        "mem_free_percent": ("the free memory share; the contract wants used % (100 − value)", ""),
        "freeable_memory": ("free memory in bytes, not the used share", ""),
        "free_storage_space": ("free storage in bytes, not the used share", ""),
        "disk_free_percent": ("the free disk share; the contract wants used % (100 − value)", ""),
        "mem_used": ("memory used in bytes; use mem_used_percent", ""),
        "disk_used": ("disk used in bytes; use disk_used_percent", ""),
        "swap_usage": ("swap in bytes, not a share of capacity", ""),
    }.items()
}


class UnsupportedMetricError(SchemaError):
    """A raw metric that is not one of the contract's capacity metrics."""


@dataclass(frozen=True)
class NameParts:
    """What a file name says: the server id and the raw metric name, if it says them."""

    server_id: str | None
    raw_metric: str | None
    recognised: bool  # raw_metric is a known name (capacity or not); else a guess or None


@dataclass
class IngestResult:
    """Contract-shaped output of :func:`ingest`, plus what happened on the way."""

    metrics: pd.DataFrame
    inventory: pd.DataFrame
    report: ValidationReport
    coverage: pd.DataFrame  # COVERAGE_COLUMNS: one row per server × metric × period seen
    added_servers: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------- names


def name_parts(path: str | Path) -> NameParts:
    """Split a one-series file name into server id and raw metric (see module docstring)."""
    stem = file_stem(path)
    tokens = [t for t in stem.split("_") if t]
    n = len(tokens)
    known = RAW_METRICS.keys() | NOT_CAPACITY.keys()
    spans = [(0, n)]
    if n >= 3:
        spans.append((1, n - 1))
    spans += [(k, n) for k in range(1, n)]
    spans += [(0, k) for k in range(n - 1, 0, -1)]
    for a, b in spans:
        if _norm("".join(tokens[a:b])) in known:
            server = "-".join(tokens[:a] + tokens[b:])
            return NameParts(server or None, "_".join(tokens[a:b]), True)
    guess = "_".join(tokens[1:-1]) if n >= 3 else None
    return NameParts(stem or None, guess, False)


def _check_unit(unit: str, metric: str, where: str) -> str:
    canonical = {u.lower(): u for u in UNITS}.get(str(unit).lower())
    if canonical is None:
        raise SchemaError(f"{where}: unknown unit {unit!r}: use one of {', '.join(UNITS)}")
    kind = METRICS[metric].kind
    if UNITS[canonical][0] != kind:
        raise SchemaError(
            f"{where}: unit {canonical!r} cannot describe {metric} ({kind} metric, "
            f"{METRICS[metric].unit}): use one of "
            f"{', '.join(u for u, (k, _) in UNITS.items() if k == kind)}"
        )
    return canonical


def _contract_metric(name: str, where: str) -> str:
    if name not in METRICS:
        raise SchemaError(f"{where}: unknown metric {name!r}: use one of {', '.join(METRIC_COLUMNS)}")
    return name


def _not_capacity_message(raw: str, where: str) -> str:
    what = NOT_CAPACITY[_norm(raw)][0]
    return (
        f"{where}: raw metric {raw!r} is {what}; it is not a capacity metric of the contract "
        f"(cpu_p95, mem_p95, disk_p95 in % of capacity; net_in_p95, net_out_p95 in Mbps)"
    )


def resolve_metric(
    raw: str | None, *, metric: str | None = None, unit: str | None = None, where: str = ""
) -> tuple[str, str]:
    """(contract metric, unit of the raw values) for one series, or a clear error.

    ``raw`` is the raw metric name (from a file name or a ``metric`` column); ``metric`` an
    explicit contract metric from the caller, which wins; ``unit`` overrides the unit.
    """
    key = _norm(raw) if raw else ""
    if metric is not None:
        target = _contract_metric(metric, where)
        if key in NOT_CAPACITY:
            if METRICS[target].kind != "rate":
                raise UnsupportedMetricError(
                    _not_capacity_message(raw, where) + f"; it cannot be tracked as {target} (a percent "
                    "of capacity): only a byte-count series may be mapped, and only to a rate metric"
                )
            implied = NOT_CAPACITY[key][1]
            if not (unit or implied):
                raise UnsupportedMetricError(
                    _not_capacity_message(raw, where) + "; only byte counts can be tracked as a rate metric"
                )
            return target, _check_unit(unit or implied, target, where)
        implied = RAW_METRICS[key][1] if key in RAW_METRICS else CONTRACT_UNIT[METRICS[target].kind]
        return target, _check_unit(unit or implied, target, where)
    if key in RAW_METRICS:
        target, implied = RAW_METRICS[key]
        return target, _check_unit(unit or implied, target, where)
    if key in NOT_CAPACITY:
        raise UnsupportedMetricError(
            _not_capacity_message(raw, where) + "; byte counts may be tracked as a rate metric "
            "by passing metric='net_in_p95' or 'net_out_p95' explicitly"
        )
    if raw:
        raise UnsupportedMetricError(
            f"{where}: raw metric {raw!r} is not a known capacity metric (known: "
            f"{', '.join(sorted({r for r, _ in RAW_METRICS.values()}))} and the raw names in "
            "forecasting.ingest.RAW_METRICS); pass metric= if it is one"
        )
    raise SchemaError(f"{where}: cannot tell which metric the file holds from its name; pass metric=")


# --------------------------------------------------------------------------- reading


@dataclass
class _Parsed:
    """One chunk of a sample file, keyed and typed, values still in the raw unit."""

    servers: pd.Index  # server ids of s_codes
    s_codes: np.ndarray
    t: np.ndarray  # µs since the epoch, UTC
    m_codes: np.ndarray  # contract metric
    u_codes: np.ndarray  # unit of the raw value (index into UNITS)
    value: np.ndarray  # float64, raw unit


def read_samples(
    path: str | Path,
    *,
    server_id: str | None = None,
    metric: str | None = None,
    unit: str | None = None,
    report: ValidationReport | None = None,
) -> pd.DataFrame:
    """Read one raw-sample file into long samples in contract metrics and units.

    Returns columns server_id (str), timestamp (UTC), metric (categorical over the contract
    metric names, so frames from many files concatenate cheaply), value (float, contract
    unit), in file order. Unusable rows (no server id, unsupported or missing metric in a long
    file, unparseable timestamp, text or missing value) are dropped and counted in ``report``.
    """
    p = Path(path)
    report = report if report is not None else ValidationReport(source=str(p))
    (x,) = _file_samples(p, server_id=server_id, metric=metric, unit=unit, report=report)
    v = x.value * _convert_factor(x.s_codes, x.m_codes, x.u_codes, x.t, report, p.name)
    known = ~np.isnan(v)  # NaN only where a byte count had no inferable period (reported)
    out = pd.DataFrame(
        {
            "server_id": pd.array(x.servers.take(x.s_codes[known]), dtype="str"),
            "timestamp": pd.to_datetime(x.t[known], unit="us", utc=True),
            "metric": pd.Categorical.from_codes(x.m_codes[known], dtype=METRIC_DTYPE),
            "value": v[known],
        }
    )
    report.rows_out["samples"] = report.rows_out.get("samples", 0) + len(out)
    return out


def _file_samples(
    p: Path,
    *,
    server_id: str | None,
    metric: str | None,
    unit: str | None,
    report: ValidationReport,
    chunk_rows: int | None = None,
) -> Iterator[_Parsed]:
    """The file's samples, whole (``chunk_rows`` None: one chunk) or chunk by chunk.

    Findings of every chunk are summed into ``report`` (one line per rule and file, as whole).
    A file with no capacity metric in any chunk is an :class:`UnsupportedMetricError`.
    """
    if chunk_rows is None:
        frames: Iterable[pd.DataFrame] = [read_frame(p, table="samples")]
    else:
        frames = iter_frames(p, table="samples", chunk_rows=chunk_rows)
    usable, found = False, []
    for raw in frames:
        part = report if chunk_rows is None else ValidationReport(source=str(p))
        x, ok, names = _parse_samples(raw, p, server_id=server_id, metric=metric, unit=unit, report=part)
        usable |= ok
        found += [n for n in names if n not in found][: 10 - len(found)]
        if chunk_rows is not None:
            accumulate(report, part)
        if x is not None:
            yield x
    if not usable:
        raise UnsupportedMetricError(
            f"{p}: no capacity metric in the file (metrics found: {', '.join(map(str, found))})"
        )


def _parse_samples(
    raw: pd.DataFrame,
    p: Path,
    *,
    server_id: str | None,
    metric: str | None,
    unit: str | None,
    report: ValidationReport,
) -> tuple[_Parsed | None, bool, list[str]]:
    """(parsed rows or None, whether any row has a capacity metric, raw metric names seen)."""
    where = str(p)
    label = p.name
    lowered = [c.lower() for c in raw.columns]
    if len(set(lowered)) != len(lowered):
        raise FileFormatError(f"samples file {p} has column names that differ only in case")
    raw.columns = lowered
    require_columns(raw, ["timestamp", "value"], "samples", where)
    report.rows_in["samples"] = report.rows_in.get("samples", 0) + len(raw)
    n = len(raw)
    names = name_parts(p)

    # server id: column, else argument, else file name
    if "server_id" in raw.columns:
        if server_id is not None:
            raise SchemaError(f"{where} has a server_id column; server_id= applies only to files without one")
        s_codes, servers = _factorize_text(raw["server_id"])
    else:
        fixed = str(server_id if server_id is not None else names.server_id or "").strip()
        if not fixed:
            raise SchemaError(f"{where}: cannot derive a server id from the file name; pass server_id=")
        s_codes, servers = np.zeros(n, dtype=np.int64), pd.Index([fixed])
    no_server = s_codes < 0
    report.add(
        "samples", "missing_server_id", "dropped", no_server.sum(), f"{label}: rows without a server_id"
    )

    # metric and unit: column, else argument or file name
    seen: list[str] = []
    if "metric" in raw.columns:
        if metric is not None:
            raise SchemaError(f"{where} has a metric column; metric= applies only to files without one")
        m_codes, u_codes = _map_metric_column(raw["metric"], unit, where, label, no_server, report)
        if ((m_codes < 0) | no_server).all():
            return None, False, [str(m) for m in raw["metric"].dropna().unique()[:10]]
    else:
        target, u = resolve_metric(names.raw_metric, metric=metric, unit=unit, where=where)
        m_codes = np.full(n, METRIC_COLUMNS.index(target), dtype=np.int64)
        u_codes = np.full(n, _UNIT_NAMES.index(u), dtype=np.int64)
    valid = ~no_server & (m_codes >= 0)

    ts, bad_ts = parse_timestamps(raw["timestamp"])
    bad_ts = bad_ts.to_numpy() & valid
    report.add(
        "samples",
        "bad_timestamp",
        "dropped",
        bad_ts.sum(),
        f"{label}: timestamp missing or unparseable",
        raw.loc[bad_ts, "timestamp"].head(3).map(repr),
    )
    valid &= ~bad_ts
    value, non_numeric, absent = _to_float(raw["value"])
    non_numeric = non_numeric.to_numpy() & valid
    absent = absent.to_numpy() & valid
    report.add(
        "samples",
        "non_numeric",
        "rejected",
        non_numeric.sum(),
        f"{label}: text in the value column, sample rejected",
        (f"{t}={v!r}" for t, v in raw.loc[non_numeric, ["timestamp", "value"]].head(3).to_numpy()),
    )
    report.add("samples", "missing_value", "dropped", absent.sum(), f"{label}: samples without a value")
    keep = valid & ~non_numeric & ~absent
    parsed = _Parsed(
        servers,
        s_codes[keep],
        _micros(ts)[keep],
        m_codes[keep],
        u_codes[keep],
        value.to_numpy(dtype="float64")[keep],
    )
    return parsed, True, seen


def _factorize_text(col: pd.Series) -> tuple[np.ndarray, pd.Index]:
    """Codes of stripped text values; missing or blank -> -1. Strips the distinct values only."""
    codes, uniques = pd.factorize(col)
    clean = pd.Index(pd.array(np.asarray(uniques, dtype=object), dtype="str")).str.strip()
    merged, values = pd.factorize(clean.where(clean != ""))
    return np.append(merged, -1).astype(np.int64)[codes], pd.Index(values)


def _map_metric_column(
    col: pd.Series, unit: str | None, where: str, label: str, ignore: np.ndarray, report: ValidationReport
) -> tuple[np.ndarray, np.ndarray]:
    """(contract metric codes, unit codes) of a long file's raw metric names; -1 = unusable.

    Each distinct name is resolved once (a 20M-row export has a handful); rows of names that
    are not capacity metrics, or without a name, are reported and get -1.
    """
    codes, uniques = _factorize_text(col)
    metric_of = np.full(len(uniques) + 1, -1, dtype=np.int64)
    unit_of = np.full(len(uniques) + 1, -1, dtype=np.int64)
    reasons: dict[int, str] = {}
    for i, raw in enumerate(uniques):
        try:
            target, u = resolve_metric(raw, unit=unit, where=where)
        except UnsupportedMetricError:
            key = _norm(raw)
            reasons[i] = NOT_CAPACITY[key][0] if key in NOT_CAPACITY else "not a known capacity metric"
            continue
        metric_of[i], unit_of[i] = METRIC_COLUMNS.index(target), _UNIT_NAMES.index(u)
    counted = codes[~ignore]
    for i, reason in reasons.items():
        report.add(
            "samples",
            "unsupported_metric",
            "dropped",
            (counted == i).sum(),
            f"{label}: {uniques[i]!r} is {reason}",
        )
    report.add("samples", "missing_metric", "dropped", (counted < 0).sum(), f"{label}: rows without a metric")
    return metric_of[codes], unit_of[codes]


def _to_float(raw: pd.Series) -> tuple[pd.Series, pd.Series, pd.Series]:
    """(values as float64, text that is not a number, missing) — nothing silently lost."""
    absent = raw.isna()
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        value = raw.astype("float64")
        non_numeric = pd.Series(False, index=raw.index)
    else:
        value = pd.to_numeric(raw, errors="coerce").astype("float64")
        non_numeric = value.isna() & ~absent
    return value, non_numeric, absent


def parse_timestamps(values: pd.Series) -> tuple[pd.Series, pd.Series]:
    """(UTC timestamps in microseconds, mask of unparseable ones).

    Naive timestamps are taken as UTC, aware ones converted. Numbers (and numeric text) are
    Unix epochs, their unit inferred from the magnitude (s, ms, µs or ns since 1970).
    """
    absent = values.isna()
    dtype = values.dtype
    if isinstance(dtype, pd.DatetimeTZDtype):
        out = values.dt.tz_convert("UTC")
    elif pd.api.types.is_datetime64_dtype(dtype):
        out = values.dt.tz_localize("UTC")
    elif pd.api.types.is_numeric_dtype(dtype) and not pd.api.types.is_bool_dtype(dtype):
        out = _from_epoch(values.astype("float64"))
    else:
        head = values.dropna().head(100).astype("str").str.strip()
        if len(head) and head.str.fullmatch(r"[0-9]+(\.[0-9]+)?").all():
            out = _from_epoch(pd.to_numeric(values, errors="coerce").astype("float64"))
        else:
            out = pd.to_datetime(values, format="ISO8601", utc=True, errors="coerce")
            retry = out.isna() & ~absent
            if retry.any():  # other layouts, stray spaces: the slow general parser, on those only
                out = out.copy()
                again = values[retry].astype("str").str.strip()
                out[retry] = pd.to_datetime(again, format="mixed", utc=True, errors="coerce")
    out = out.dt.as_unit("us")
    return out, out.isna()


def _from_epoch(seconds_or_finer: pd.Series) -> pd.Series:
    magnitude = np.nanmedian(np.abs(seconds_or_finer.to_numpy())) if seconds_or_finer.notna().any() else 0
    unit = "ns" if magnitude > 1e17 else "us" if magnitude > 1e14 else "ms" if magnitude > 1e11 else "s"
    return pd.to_datetime(seconds_or_finer, unit=unit, utc=True, errors="coerce")


def _micros(ts: pd.Series) -> np.ndarray:
    """UTC timestamps as int64 microseconds since the epoch (no object round trip)."""
    return ts.dt.tz_convert(None).to_numpy(dtype="datetime64[us]").view("int64")


def _convert_factor(
    s_codes: np.ndarray,
    m_codes: np.ndarray,
    u_codes: np.ndarray,
    t: np.ndarray,
    report: ValidationReport,
    label: str,
) -> np.ndarray:
    """Per-sample factor to the contract unit; NaN where a per-period byte count has no period."""
    factor = np.array([f for _, f in UNITS.values()])[u_codes]
    per_period = np.flatnonzero(u_codes == _UNIT_NAMES.index("bytes"))
    if len(per_period):
        series = s_codes[per_period] * len(METRIC_COLUMNS) + m_codes[per_period]
        ts = t[per_period]
        order = np.lexsort((ts, series))
        seconds = _sampling_interval(series[order], ts[order]) / 1e6
        period = seconds[series]
        report.add(
            "samples",
            "unknown_period",
            "dropped",
            np.isnan(period).sum(),
            f"{label}: byte counts per period need at least two samples to infer the period",
        )
        factor[per_period] = factor[per_period] / period
    return factor


# --------------------------------------------------------------------------- rollup


def _sampling_interval(series: np.ndarray, t: np.ndarray) -> np.ndarray:
    """Median positive spacing (µs) of each series code; NaN for a series with < 2 times.

    ``series`` and ``t`` must be sorted by series then time. Exact, and linear for the usual
    case: a series' middle spacing (in time order) is its median when fewer than half the
    spacings are below it and more than half are at most it — true whenever one spacing
    dominates, as with a fixed sampling rate. Other series take one integer sort.
    """
    n_series = int(series.max()) + 1 if len(series) else 0
    out = np.full(n_series, np.nan)
    if len(t) < 2:
        return out
    d = np.diff(t)
    ok = (series[1:] == series[:-1]) & (d > 0)
    code = series[1:][ok]
    d = d[ok]
    if not len(code):
        return out
    starts = np.flatnonzero(np.r_[True, code[1:] != code[:-1]])
    counts = np.diff(np.append(starts, len(code)))
    lo, hi = (counts - 1) // 2, counts // 2  # 0-based ranks of the median pair
    candidate = d[starts + hi]
    each = np.repeat(candidate, counts)
    below = np.add.reduceat(d < each, starts, dtype=np.int64)
    at_most = np.add.reduceat(d <= each, starts, dtype=np.int64)
    exact = (below <= lo) & (at_most > hi)
    out[code[starts[exact]]] = candidate[exact]
    if exact.all():
        return out
    rest = np.repeat(~exact, counts)
    sub_code, sub_d = code[rest], d[rest]
    order = np.lexsort((sub_d, sub_code))  # rare: series whose spacing varies a lot
    sub_code, sub_d = sub_code[order], sub_d[order].astype(np.float64)
    s2 = np.flatnonzero(np.r_[True, sub_code[1:] != sub_code[:-1]])
    c2 = np.diff(np.append(s2, len(sub_code)))
    out[sub_code[s2]] = (sub_d[s2 + (c2 - 1) // 2] + sub_d[s2 + c2 // 2]) / 2
    return out


def rollup(
    samples: pd.DataFrame, freq: str = "daily", min_coverage: float = 0.5
) -> tuple[pd.DataFrame, ValidationReport]:
    """Roll long samples (server_id, timestamp, metric, value) up to the contract's p95 per period.

    Returns the wide, validated metrics frame (server_id, timestamp, <metric>_p95 columns
    present in the samples) and a report of everything dropped or flagged on the way.
    """
    wide, report, _ = _rollup(samples, freq, min_coverage)
    return wide, report


def _rollup(
    samples: pd.DataFrame, freq: str, min_coverage: float, source: str = ""
) -> tuple[pd.DataFrame, ValidationReport, pd.DataFrame]:
    alias = freq_alias(freq)
    if not 0.0 < min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage!r}")
    require_columns(samples, SAMPLE_COLUMNS, "samples", source)
    report = ValidationReport(source=source)
    report.rows_in["samples"] = len(samples)
    # Codes instead of strings from here on: factorize once, look contract metrics up by code.
    m_raw, m_uniques = pd.factorize(samples["metric"])
    unknown = sorted({str(m) for m in m_uniques} - set(METRIC_COLUMNS))
    if unknown:
        raise SchemaError(
            f"samples{' in ' + source if source else ''} use metric name(s) that are not contract "
            f"metrics: {', '.join(unknown[:5])} (read raw files with read_samples, which maps them)"
        )
    s_raw, s_uniques = pd.factorize(samples["server_id"])
    s_uniques = pd.Index(s_uniques.astype("str"))
    n_metrics = len(METRIC_COLUMNS)
    m_codes = np.append(np.array([METRIC_COLUMNS.index(str(m)) for m in m_uniques], dtype=np.int64), -1)[
        m_raw
    ]
    no_key = (s_raw < 0) | (m_codes < 0)
    report.add("samples", "missing_key", "dropped", no_key.sum(), "samples without a server_id or metric")
    step = int(pd.Timedelta(1, alias) / pd.Timedelta(1, "us"))

    # --- sample-level checks (vectorised over the whole frame)
    ts, bad_ts = parse_timestamps(samples["timestamp"])
    value, non_numeric, absent = _to_float(samples["value"])
    bad_ts = bad_ts.to_numpy() & ~no_key
    absent = absent.to_numpy() & ~no_key & ~bad_ts
    report.add("samples", "bad_timestamp", "dropped", bad_ts.sum(), "timestamp missing or unparseable")
    report.add("samples", "non_numeric", "rejected", non_numeric.sum(), "text in the value column")
    report.add("samples", "missing_value", "dropped", absent.sum(), "samples without a value")
    v = value.to_numpy(dtype="float64") + 0.0  # a fresh array; -0.0 becomes 0.0
    percent = np.array([METRICS[m].kind == "percent" for m in METRIC_COLUMNS] + [False])
    with np.errstate(invalid="ignore"):
        inf = np.isinf(v)
        neg = v < 0
        over = percent[m_codes] & (v > 100.0 + PERCENT_CLIP_TOLERANCE) & ~inf
    report.add("samples", "non_finite", "rejected", inf.sum(), "infinite sample value")
    report.add("samples", "out_of_range", "rejected", neg.sum(), "negative sample value")
    report.add(
        "samples",
        "out_of_range",
        "rejected",
        over.sum(),
        f"percent sample above {100 + PERCENT_CLIP_TOLERANCE:g} %",
        (
            f"{s_uniques[s]} {METRIC_COLUMNS[m]}={x:g}"
            for s, m, x in zip(s_raw[over][:3], m_codes[over][:3], v[over][:3])
        ),
    )
    keep = ~(no_key | bad_ts | np.isnan(v) | inf | neg | over)
    series = s_raw.astype(np.int64)
    series *= n_metrics
    series += m_codes
    series, t, v = _take(keep, series, _micros(ts), v)

    # --- order by series then time (stable: the last delivered duplicate stays last)
    if len(series) > 1 and not _is_sorted(series, t):
        order = np.lexsort((t, series))
        series, t, v = series[order], t[order], v[order]

    # --- duplicate timestamps within a series: keep the last delivered
    dup = np.zeros(len(t), dtype=bool)
    if len(t) > 1:
        dup[:-1] = (series[1:] == series[:-1]) & (t[1:] == t[:-1])
    same_value = np.zeros(len(t), dtype=bool)
    same_value[:-1] = dup[:-1] & (v[1:] == v[:-1])
    report.add("samples", "duplicate_sample", "dropped", same_value.sum(), "exact duplicate samples")
    report.add(
        "samples",
        "conflicting_sample",
        "dropped",
        (dup & ~same_value).sum(),
        "several samples at one timestamp with different values; the last delivered kept",
        (_label(s_uniques, series[i], t[i], "%Y-%m-%d %H:%M") for i in np.flatnonzero(dup & ~same_value)[:3]),
    )
    series, t, v = _take(~dup, series, t, v)

    # --- sampling interval per series; series with a single sample cannot be judged
    interval = _sampling_interval(series, t)
    lonely = np.isnan(interval[series]) if len(series) else np.zeros(0, dtype=bool)
    report.add(
        "samples",
        "too_few_samples",
        "dropped",
        len(np.unique(series[lonely])),
        "series with a single sample: no sampling interval, no p95",
        (_label(s_uniques, c) for c in np.unique(series[lonely])[:3]),
    )
    series, t, v = _take(~lonely, series, t, v)
    coarse = np.flatnonzero(interval > step)
    if len(coarse):
        examples = ", ".join(
            f"{_label(s_uniques, c)} every {pd.Timedelta(interval[c], 'us')}" for c in coarse[:3]
        )
        raise SchemaError(
            f"samples{' in ' + source if source else ''}: {len(coarse)} series are sampled less often "
            f"than the {freq} period ({examples}): roll up to a longer period"
        )

    # --- group by (series, period start) and take the p95 of each group
    period = t // step  # period index since the epoch (floor, UTC)
    new = np.ones(len(t), dtype=bool)
    if len(t) > 1:
        new[1:] = (series[1:] != series[:-1]) | (period[1:] != period[:-1])
    starts = np.flatnonzero(new)
    counts = np.diff(np.append(starts, len(t)))
    p95 = _group_quantile(v, starts, counts, QUANTILE)

    g_series = series[starts]
    g_period = period[starts] * step
    expected = step / interval[g_series]
    coverage = np.minimum(counts / expected, 1.0)
    dropped = coverage < min_coverage
    partial = ~dropped & (coverage < PARTIAL_COVERAGE)
    fmt = "%Y-%m-%d" if freq == "daily" else "%Y-%m-%d %H:%M"
    report.add(
        "samples",
        "low_coverage",
        "dropped",
        dropped.sum(),
        f"{freq} periods with under {min_coverage:.0%} of the expected samples: too few for a p95",
        (
            f"{_label(s_uniques, g_series[i], g_period[i], fmt)} ({coverage[i]:.0%})"
            for i in np.flatnonzero(dropped)[:3]
        ),
    )
    report.add(
        "samples",
        "partial_period",
        "flagged",
        partial.sum(),
        f"{freq} periods with {min_coverage:.0%}–{PARTIAL_COVERAGE:.0%} of the expected samples, kept",
        (
            f"{_label(s_uniques, g_series[i], g_period[i], fmt)} ({coverage[i]:.0%})"
            for i in np.flatnonzero(partial)[:3]
        ),
    )
    report.rows_out["samples"] = int(counts[~dropped].sum())

    g_server = g_series // n_metrics
    g_metric = g_series % n_metrics
    cov = pd.DataFrame(
        {
            "server_id": pd.array(s_uniques.take(g_server), dtype="str"),
            "metric": pd.Categorical.from_codes(g_metric, dtype=METRIC_DTYPE),
            "timestamp": pd.to_datetime(g_period, unit="us", utc=True),
            "samples": counts,
            "expected": expected,
            "coverage": coverage,
            "status": pd.Categorical.from_codes(2 * dropped + partial, categories=STATUSES),
        },
        columns=COVERAGE_COLUMNS,
    )
    kept = ~dropped
    wide = _widen(s_uniques, g_server[kept], g_metric[kept], g_period[kept], p95[kept], step)
    if len(wide):
        wide, vreport = validate_metrics(wide, None, freq, source)
        report.merge(vreport)
    else:
        report.rows_in["metrics"] = report.rows_out["metrics"] = 0
    return wide, report, cov


def _widen(
    servers: pd.Index,
    server: np.ndarray,
    metric: np.ndarray,
    period: np.ndarray,
    value: np.ndarray,
    step: int,
) -> pd.DataFrame:
    """Long (server code, metric code, period start µs, value) -> the contract's wide frame,
    one row per server and period, sorted; only metrics that have a value become columns."""
    if not len(value):
        return pd.DataFrame(
            {"server_id": pd.Series(dtype="str"), "timestamp": pd.Series(dtype="datetime64[us, UTC]")}
        )
    first = period.min()
    span = (period.max() - first) // step + 1  # periods from the first to the last
    key = server.astype(np.int64) * span + (period - first) // step
    rows, row_of = np.unique(key, return_inverse=True)
    grid = np.full((len(rows), len(METRIC_COLUMNS)), np.nan)
    grid[row_of, metric] = value
    present = np.flatnonzero(np.bincount(metric, minlength=len(METRIC_COLUMNS)))
    frame = {
        "server_id": pd.array(servers.take(rows // span), dtype="str"),
        "timestamp": pd.to_datetime(first + (rows % span) * step, unit="us", utc=True),
    }
    frame.update({METRIC_COLUMNS[j]: grid[:, j] for j in present})
    return pd.DataFrame(frame)


def _group_quantile(v: np.ndarray, starts: np.ndarray, counts: np.ndarray, q: float) -> np.ndarray:
    """The q-quantile (linear interpolation, as numpy) of each contiguous group of ``v``.

    Groups of the most common size — the complete periods, nearly all of them — are one 2-D
    block: ``np.partition`` along rows finds the two order statistics in linear time. The rest
    (partial periods) take one exact sort: numpy orders complex numbers by (real, imag), so
    sorting ``group + i*value`` orders each group's values (≈4× faster than ``np.lexsort``).
    """
    out = np.empty(len(starts))
    if not len(starts):
        return out
    h = (counts - 1) * q
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, counts - 1)
    frac = h - lo
    size = int(np.bincount(counts).argmax())
    regular = counts == size
    if regular.any():
        rows = v[starts[regular, None] + np.arange(size)]
        k_lo, k_hi = int(lo[regular][0]), int(hi[regular][0])
        rows.partition([k_lo, k_hi] if k_hi != k_lo else [k_lo], axis=1)
        out[regular] = rows[:, k_lo] + frac[regular] * (rows[:, k_hi] - rows[:, k_lo])
    rest = ~regular
    if rest.any():
        r_starts, r_counts = starts[rest], counts[rest]
        take = np.repeat(r_starts - np.cumsum(np.r_[0, r_counts[:-1]]), r_counts) + np.arange(r_counts.sum())
        packed = np.empty(len(take), dtype=np.complex128)
        packed.real = np.repeat(np.arange(len(r_starts), dtype=np.float64), r_counts)
        packed.imag = v[take]
        packed.sort()
        vs = packed.imag
        first = np.r_[0, np.cumsum(r_counts)[:-1]]
        out[rest] = vs[first + lo[rest]] + frac[rest] * (vs[first + hi[rest]] - vs[first + lo[rest]])
    return out


def _take(mask: np.ndarray, *arrays: np.ndarray) -> tuple[np.ndarray, ...]:
    """Boolean-mask several aligned arrays, without copies when nothing is masked out."""
    if mask.all():
        return arrays
    return tuple(a[mask] for a in arrays)


def _is_sorted(series: np.ndarray, t: np.ndarray) -> bool:
    """Sorted by series then time? (Files usually are: then no sort is needed.)"""
    if (series[1:] < series[:-1]).any():
        return False
    return not ((t[1:] < t[:-1]) & (series[1:] == series[:-1])).any()


def _label(servers: pd.Index, code: int, micros: int | None = None, fmt: str = "%Y-%m-%d") -> str:
    n = len(METRIC_COLUMNS)
    text = f"{servers[int(code) // n]} {METRIC_COLUMNS[int(code) % n]}"
    if micros is not None:
        text += f" {pd.Timestamp(int(micros), unit='us', tz='UTC'):{fmt}}"
    return text


# --------------------------------------------------------------------------- ingest


def ingest(
    paths: str | Path | Iterable[str | Path],
    *,
    server_id: str | None = None,
    metric: str | None = None,
    unit: str | None = None,
    freq: str = "daily",
    min_coverage: float = 0.5,
    inventory: pd.DataFrame | None = None,
    add_missing: bool = False,
) -> IngestResult:
    """Raw sample files in, contract metrics + inventory + report out.

    ``paths``: files or directories (every .csv/.csv.gz/.parquet/.pq inside, sorted).
    ``server_id``/``metric`` name the series of a single one-series file; with several files
    they are ambiguous and refused. ``unit`` applies to every file.
    Inventory: without one, every server seen is added with 'unknown' attributes (hostname =
    server id) and no capacity figures, and the report says how many. With one, metrics of
    servers it does not list are rejected and reported — or added like above if
    ``add_missing``. ``coverage`` in the result lists every server × metric × period read,
    with its sample count and status (complete, partial, dropped), before the inventory check.
    Raises if nothing is left to forecast.
    """
    files = _expand(paths)
    if (server_id is not None or metric is not None) and len(files) != 1:
        given = " and ".join(
            f"{k}={v!r}" for k, v in (("server_id", server_id), ("metric", metric)) if v is not None
        )
        raise SchemaError(
            f"{given} is ambiguous with {len(files)} files: it names one series; ingest the files "
            "one at a time, or let each file name (or its columns) say its server and metric"
        )
    source = str(files[0]) if len(files) == 1 else f"{len(files)} files in {_common_dir(files)}"
    report = ValidationReport(source=source)
    frames = [read_samples(f, server_id=server_id, metric=metric, unit=unit, report=report) for f in files]
    samples = pd.concat(frames, ignore_index=True) if len(frames) > 1 else frames[0]
    if samples.empty:
        raise SchemaError(
            f"no usable samples in {source}: " + "; ".join(f.line() for f in report.findings[:5])
        )

    read_rows = report.rows_in["samples"]
    wide, rreport, coverage = _rollup(samples, freq, min_coverage, source)
    report.findings += rreport.findings
    report.rows_in.update(rreport.rows_in)
    report.rows_in["samples"] = read_rows
    report.rows_out.update(rreport.rows_out)
    report.gaps, report.short_series = rreport.gaps, rreport.short_series

    servers = pd.Index(wide["server_id"].unique())
    if inventory is None:
        inv, ireport = validate_inventory(_unknown_servers(servers), source="inventory")
        report.merge(ireport)
        added = servers
    else:
        inv, ireport = validate_inventory(inventory, source="inventory")
        report.merge(ireport)
        missing = servers.difference(pd.Index(inv["server_id"]))
        if add_missing:
            extra = _unknown_servers(missing)
            inv = pd.concat([inv, extra.astype(inv.dtypes.to_dict())], ignore_index=True)
            report.rows_out["inventory"] = len(inv)
            added = missing
        else:
            rejected = wide["server_id"].isin(missing)
            report.add(
                "metrics",
                "unknown_server",
                "rejected",
                rejected.sum(),
                f"rows for {len(missing)} server(s) not in the inventory",
                missing[:3],
            )
            wide = wide[~rejected].reset_index(drop=True)
            report.rows_out["metrics"] = len(wide)
            added = pd.Index([])
    report.add(
        "inventory",
        "added_server",
        "added",
        len(added),
        f"servers seen in the samples but not in an inventory, added with '{UNKNOWN}' attributes "
        "and no capacity figures",
        added[:3],
    )
    if wide.empty:
        losses = [f.line() for f in report.findings if f.action in ("dropped", "rejected")]
        raise SchemaError(f"nothing ingested from {source}: " + "; ".join(losses[:5]))
    return IngestResult(wide, inv, report, coverage, [str(s) for s in added])


def _unknown_servers(server_ids: pd.Index) -> pd.DataFrame:
    ids = pd.array(list(server_ids), dtype="str")
    frame = {c: pd.array([UNKNOWN] * len(ids), dtype="str") for c in INVENTORY_COLUMNS}
    frame["server_id"] = ids
    frame["hostname"] = ids
    for c in INVENTORY_NUMERIC_COLUMNS:
        frame[c] = np.full(len(ids), np.nan)
    for c, kind in OPTIONAL_INVENTORY_COLUMNS.items():  # placement facts of an unlisted server: unknown
        frame[c] = pd.array([pd.NA] * len(ids), dtype="boolean" if kind == "bool" else "string")
    return pd.DataFrame(frame, columns=ALL_INVENTORY_COLUMNS)


def _expand(paths: str | Path | Iterable[str | Path]) -> list[Path]:
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    if not items:
        raise SchemaError("no input files given")
    files: list[Path] = []
    for item in items:
        p = Path(item)
        if p.is_dir():
            found = sorted(f for f in p.iterdir() if f.is_file() and file_suffix(f) in SUPPORTED_SUFFIXES)
            if not found:
                raise FileFormatError(
                    f"directory {p} holds no sample files ({', '.join(SUPPORTED_SUFFIXES)})"
                )
            files += found
        else:
            files.append(p)
    return files


def _common_dir(files: list[Path]) -> str:
    parents = {str(f.parent) for f in files}
    return parents.pop() if len(parents) == 1 else "several directories"


# --------------------------------------------------------------------------- streamed ingest

BLOCK_ROWS = 1_000_000  # raw samples per block, about: what bounds a streamed ingest's memory
MAX_BLOCKS = 500  # block files open at once while partitioning (file descriptors: Lambda allows 1,024)
CHUNK_ROWS = 500_000  # rows read from an input file at a time
_RAW_SCHEMA = pa.schema(
    [
        ("server_id", pa.dictionary(pa.int32(), pa.string())),  # a chunk's codes and its servers
        ("t", pa.int64()),
        ("metric", pa.int8()),
        ("unit", pa.int8()),
        ("value", pa.float64()),
        ("file", pa.int32()),
    ]
)


def accumulate(total: ValidationReport, part: ValidationReport) -> ValidationReport:
    """Add a part's report (a chunk's, a block's) to ``total``: a rule's finding with the same
    detail is one finding whose count is the sum, rows in and out are summed, gaps and short
    series collected: the report of the whole, whatever the parts."""
    index = {(f.table, f.rule, f.action, f.detail): f for f in total.findings}
    for f in part.findings:
        key = (f.table, f.rule, f.action, f.detail)
        if key in index:
            have = index[key]
            have.count += f.count
            have.examples = (have.examples + [e for e in f.examples if e not in have.examples])[
                : max(len(have.examples), 3)
            ]
        else:
            index[key] = Finding(f.table, f.rule, f.action, f.count, f.detail, list(f.examples))
            total.findings.append(index[key])
    for mine, theirs in ((total.rows_in, part.rows_in), (total.rows_out, part.rows_out)):
        for k, v in theirs.items():
            mine[k] = mine.get(k, 0) + v
    if not part.gaps.empty:
        total.gaps = pd.concat([total.gaps, part.gaps], ignore_index=True)
    total.short_series += part.short_series
    return total


@dataclass
class StreamedIngest:
    """What :func:`ingest_to_store` wrote: the report and the figures, not the rows."""

    report: ValidationReport
    inventory: pd.DataFrame
    rows: int  # contract rows (server × period) written
    servers: int
    blocks: int  # blocks the servers were split into
    added_servers: list[str] = field(default_factory=list)


def ingest_to_store(
    store: ParquetStore,
    paths: str | Path | Iterable[str | Path],
    *,
    server_id: str | None = None,
    metric: str | None = None,
    unit: str | None = None,
    freq: str = "daily",
    min_coverage: float = 0.5,
    inventory: pd.DataFrame | None = None,
    add_missing: bool = False,
    block_rows: int | None = None,
    chunk_rows: int | None = None,
    on_block: Callable[[int, int], None] | None = None,
) -> StreamedIngest:
    """:func:`ingest` for fleets larger than memory, written into ``store`` (merged on top of it).

    Same arguments, same rows in the store and the same report as :func:`ingest` followed by
    ``write_metrics(mode="merge")``; memory is set by ``block_rows``, not by the input:

    1. *Partition*: every file is read ``chunk_rows`` at a time; each chunk's samples are parsed
       and appended to a block file in a staging directory, the block being a stable hash of the
       server id, so all samples of a server — from any file or chunk — end in one block, in the
       order they were delivered (the last delivered duplicate still wins).
    2. *Roll up*: each block is rolled up and validated alone (the p95 of a day needs all of a
       server's samples of that day, and they are all in its block) and its contract rows are
       staged by business unit and year.
    3. *Commit*: only when every block succeeded, the inventory is written and the staged rows are
       merged into the store one partition at a time, a few thousand servers at a time
       (:meth:`ParquetStore.merge_metrics`).

    Bad input anywhere (a corrupt file, a ragged row in the last chunk) stops the ingest before
    step 3: the store is left as it was, and the staging directory is removed either way.
    """
    block_rows = BLOCK_ROWS if block_rows is None else block_rows
    chunk_rows = CHUNK_ROWS if chunk_rows is None else chunk_rows
    if block_rows < 1 or chunk_rows < 1:
        raise ValueError("block_rows and chunk_rows must be positive integers")
    alias = freq_alias(freq)
    if not 0.0 < min_coverage <= 1.0:
        raise ValueError(f"min_coverage must be in (0, 1], got {min_coverage!r}")
    files = _expand(paths)
    _refuse_ambiguous(files, server_id, metric)
    source = _source(files)
    staging = _staging_dir(store)
    try:
        report = ValidationReport(source=source)
        n_blocks = min(MAX_BLOCKS, max(1, -(-sum(_estimated_rows(f) for f in files) // block_rows)))
        first_seen = _partition(files, staging, n_blocks, server_id, metric, unit, chunk_rows, report)
        if not first_seen:
            raise SchemaError(
                f"no usable samples in {source}: " + "; ".join(f.line() for f in report.findings[:5])
            )
        read_rows = report.rows_in["samples"]
        if inventory is not None:
            inv, ireport = validate_inventory(inventory, source="inventory")
            bu_of = inv.drop_duplicates("server_id").set_index("server_id")["business_unit"].astype(str)
        else:
            inv, ireport, bu_of = None, None, pd.Series(dtype=object)
        roll = ValidationReport(source=source)
        staged = StagedMetrics()
        missing: list[str] = []
        step = int(pd.Timedelta(1, alias) / pd.Timedelta(1, "us"))
        for k in range(n_blocks):
            path = staging / "raw" / f"block-{k:05d}.arrow"
            if path.exists():
                block_missing = _roll_block(
                    path, k, staging, files, freq, step, min_coverage, source, bu_of, inv, add_missing,
                    report, roll, staged,
                )  # fmt: skip
                missing += block_missing
                path.unlink()
            if on_block is not None:
                on_block(k, n_blocks)

        report.findings += roll.findings
        report.rows_in.update(roll.rows_in)
        report.rows_in["samples"] = read_rows
        report.rows_out.update(roll.rows_out)
        report.gaps, report.short_series = roll.gaps, roll.short_series
        servers = sorted(staged.server_ids, key=first_seen.__getitem__)  # first delivered first, as ingest
        missing_ix = pd.Index(sorted(missing))
        if inv is None:
            inv, ireport = validate_inventory(_unknown_servers(pd.Index(servers)), source="inventory")
            report.merge(ireport)
            added = pd.Index(servers)
        else:
            report.merge(ireport)
            if add_missing:
                extra = _unknown_servers(missing_ix)
                inv = pd.concat([inv, extra.astype(inv.dtypes.to_dict())], ignore_index=True)
                report.rows_out["inventory"] = len(inv)
                added = missing_ix
            else:
                report.add(
                    "metrics",
                    "unknown_server",
                    "rejected",
                    staged.rejected_rows,
                    f"rows for {len(missing_ix)} server(s) not in the inventory",
                    missing_ix[:3],
                )
                report.rows_out["metrics"] = staged.rows
                added = pd.Index([])
        report.add(
            "inventory",
            "added_server",
            "added",
            len(added),
            f"servers seen in the samples but not in an inventory, added with '{UNKNOWN}' attributes "
            "and no capacity figures",
            added[:3],
        )
        if not staged.rows:
            losses = [f.line() for f in report.findings if f.action in ("dropped", "rejected")]
            raise SchemaError(f"nothing ingested from {source}: " + "; ".join(losses[:5]))
        n_written = len(staged.server_ids)
        store.write_inventory(inv)
        store.merge_metrics(staged, inv, freq=freq)
        return StreamedIngest(report, inv, staged.rows, n_written, n_blocks, [str(s) for s in added])
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _refuse_ambiguous(files: list[Path], server_id: str | None, metric: str | None) -> None:
    if (server_id is not None or metric is not None) and len(files) != 1:
        given = " and ".join(
            f"{k}={v!r}" for k, v in (("server_id", server_id), ("metric", metric)) if v is not None
        )
        raise SchemaError(
            f"{given} is ambiguous with {len(files)} files: it names one series; ingest the files "
            "one at a time, or let each file name (or its columns) say its server and metric"
        )


def _source(files: list[Path]) -> str:
    return str(files[0]) if len(files) == 1 else f"{len(files)} files in {_common_dir(files)}"


def _staging_dir(store: ParquetStore) -> Path:
    """Local scratch space: beside a local store (same disk, a dot name nothing reads), else /tmp."""
    if store.atomic_rename:
        root = Path(store.root)
        root.mkdir(parents=True, exist_ok=True)
        for left in root.glob(".ingest-staging-*"):  # an ingest killed mid-way (one writer at a time:
            shutil.rmtree(left, ignore_errors=True)  # the CLI holds the store's writer lease)
        return Path(tempfile.mkdtemp(prefix=".ingest-staging-", dir=root))
    return Path(tempfile.mkdtemp(prefix="capfc-ingest-"))


def _estimated_rows(path: Path) -> int:
    """Rows of a sample file, from its footer (Parquet) or its size over its first lines' (CSV)."""
    try:
        if file_suffix(path) in (".parquet", ".pq"):
            return pq.ParquetFile(path).metadata.num_rows
        size = path.stat().st_size * (6 if file_suffix(path) == ".csv.gz" else 1)
        opener = gzip.open if file_suffix(path) == ".csv.gz" else open
        with opener(path, "rb") as f:
            head = f.read(64 * 1024)
        return int(size / max(1, len(head)) * max(1, head.count(b"\n")))
    except (OSError, ValueError, EOFError, pa.ArrowException, zlib.error):
        return 0  # reading it will say what is wrong with it


def _partition(
    files: list[Path],
    staging: Path,
    n_blocks: int,
    server_id: str | None,
    metric: str | None,
    unit: str | None,
    chunk_rows: int,
    report: ValidationReport,
) -> dict[str, int]:
    """Step 1: every file's samples appended to their server's block file. Returns each server's
    first position in the input (the order :func:`ingest` lists servers in)."""
    (staging / "raw").mkdir()
    writers: dict[int, pa.ipc.RecordBatchStreamWriter] = {}
    first_seen: dict[str, int] = {}
    position = 0
    try:
        for fi, f in enumerate(files):
            for x in _file_samples(
                f, server_id=server_id, metric=metric, unit=unit, report=report, chunk_rows=chunk_rows
            ):
                n = len(x.s_codes)
                if not n:
                    continue
                used, first = np.unique(x.s_codes, return_index=True)
                for code, at in zip(used, first, strict=True):
                    first_seen.setdefault(str(x.servers[code]), position + int(at))
                position += n
                block_of = np.full(len(x.servers), -1, dtype=np.int64)
                block_of[used] = shard_of(x.servers[used], n_blocks)
                blocks = block_of[x.s_codes]
                order = np.argsort(blocks, kind="stable")
                table = pa.table(
                    [
                        pa.DictionaryArray.from_arrays(
                            pa.array(x.s_codes, pa.int32()),
                            pa.array(np.asarray(x.servers, dtype=object), pa.string()),
                        ),
                        pa.array(x.t, pa.int64()),
                        pa.array(x.m_codes, pa.int8()),
                        pa.array(x.u_codes, pa.int8()),
                        pa.array(x.value, pa.float64()),
                        pa.array(np.full(n, fi, dtype=np.int32)),
                    ],
                    schema=_RAW_SCHEMA,
                ).take(order)
                sorted_blocks = blocks[order]
                cuts = np.flatnonzero(np.r_[True, sorted_blocks[1:] != sorted_blocks[:-1], True])
                for a, b in itertools.pairwise(cuts):
                    k = int(sorted_blocks[a])
                    if k not in writers:
                        # scratch space: an Arrow IPC stream, 20× faster to write than Parquet
                        writers[k] = pa.ipc.new_stream(staging / "raw" / f"block-{k:05d}.arrow", _RAW_SCHEMA)
                    writers[k].write_table(table.slice(a, b - a))
    finally:
        for w in writers.values():
            w.close()
    return first_seen


def _roll_block(
    path: Path,
    k: int,
    staging: Path,
    files: list[Path],
    freq: str,
    step: int,
    min_coverage: float,
    source: str,
    bu_of: pd.Series,
    inv: pd.DataFrame | None,
    add_missing: bool,
    report: ValidationReport,
    roll: ValidationReport,
    staged: StagedMetrics,
) -> list[str]:
    """Step 2 for one block: convert units, roll up, validate, check servers against the
    inventory and stage the contract rows by partition. Returns the block's servers that the
    inventory does not list."""
    with pa.ipc.open_stream(path) as reader:
        raw = reader.read_all().unify_dictionaries()
    sid = raw.column("server_id").combine_chunks()
    s_codes = sid.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    servers = pd.Index(sid.dictionary.to_numpy(zero_copy_only=False), dtype="str")
    t = raw.column("t").to_numpy()
    m = raw.column("metric").to_numpy().astype(np.int64)
    u = raw.column("unit").to_numpy().astype(np.int64)
    fcode = raw.column("file").to_numpy()
    v = raw.column("value").to_numpy()
    del raw
    factor = np.array([f for _, f in UNITS.values()])[u]
    per_period = np.flatnonzero(u == _UNIT_NAMES.index("bytes"))
    if len(per_period):  # byte counts per period: per file and series, as read_samples does
        key, _ = pd.factorize(
            pd.MultiIndex.from_arrays([fcode[per_period], s_codes[per_period], m[per_period]])
        )
        ts = t[per_period]
        order = np.lexsort((ts, key))
        seconds = _sampling_interval(key[order], ts[order]) / 1e6
        period = seconds[key]
        lost = np.isnan(period)
        for fi in np.unique(fcode[per_period]):
            report.add(
                "samples",
                "unknown_period",
                "dropped",
                (lost & (fcode[per_period] == fi)).sum(),
                f"{files[fi].name}: byte counts per period need at least two samples to infer the period",
            )
        factor[per_period] = factor[per_period] / period
    v = v * factor
    known = ~np.isnan(v)
    samples = pd.DataFrame(
        {
            "server_id": pd.Categorical.from_codes(s_codes[known], categories=servers),
            "timestamp": pd.to_datetime(t[known], unit="us", utc=True),
            "metric": pd.Categorical.from_codes(m[known], dtype=METRIC_DTYPE),
            "value": v[known],
        }
    )
    del s_codes, t, m, u, fcode, v, factor, known
    wide, rreport, _ = _rollup(samples, freq, min_coverage, source)
    del samples
    accumulate(roll, rreport)
    if not len(wide):
        return []
    ids = pd.Index(wide["server_id"].unique())
    missing = ids.difference(pd.Index(inv["server_id"])) if inv is not None else pd.Index([])
    if len(missing) and not add_missing:
        rejected = wide["server_id"].isin(missing).to_numpy()
        staged.rejected_rows += int(rejected.sum())
        wide = wide[~rejected].reset_index(drop=True)
        ids = ids.difference(missing)
    staged.server_ids.update(str(s) for s in ids)
    if not len(wide):
        return [str(s) for s in missing]
    staged.rows += len(wide)
    cols = [c for c in METRIC_COLUMNS if c in wide.columns]
    staged.columns.update(cols)
    lo, hi = wide["timestamp"].min(), wide["timestamp"].max()
    staged.start = lo if staged.start is None else min(staged.start, lo)
    staged.end = hi if staged.end is None else max(staged.end, hi)
    codes, uniq = pd.factorize(wide["server_id"], sort=True)
    bus = bu_of.reindex(pd.Index(uniq, dtype=object)).fillna(UNKNOWN).to_numpy(dtype=object)[codes]
    years = wide["timestamp"].dt.year.to_numpy()
    table = pa.Table.from_pandas(
        wide[["server_id", "timestamp", *cols]], schema=metrics_schema(cols), preserve_index=False
    )
    order = np.lexsort((wide["timestamp"].array.asi8, codes))
    bu_codes, bu_names = pd.factorize(bus[order])
    y = years[order].astype(np.int64)
    pkeys, pcodes = np.unique(bu_codes * 100_000 + y, return_inverse=True)  # (business unit, year)
    for j, key in enumerate(pkeys):
        bu, year = bu_names[key // 100_000], key % 100_000
        rows = order[pcodes == j]
        out = staging / "rolled" / f"{quote(str(bu), safe='')}-{int(year)}-block-{k:05d}.parquet"
        out.parent.mkdir(exist_ok=True)
        part = table.take(rows)
        pq.write_table(part, out, row_group_size=ROW_GROUP_SIZE // 8)  # small groups: a merge reads ranges
        staged.add((str(bu), int(year)), str(out), pc.unique(part.column("server_id")).to_pylist())
    return [str(s) for s in missing]
