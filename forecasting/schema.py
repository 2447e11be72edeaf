"""The data contract (DESIGN.md §3): column names, units, and the rules every input obeys.

Everything that enters the engine — generated, ingested, or read from a store — passes
through :func:`validate`, so the models and the app can trust what they get. Nothing is
repaired silently: every dropped row or changed value is counted in a :class:`ValidationReport`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

# --------------------------------------------------------------------------- contract

INVENTORY_COLUMNS: dict[str, str] = {
    "server_id": "string",
    "hostname": "string",
    "business_unit": "string",
    "region": "string",
    "environment": "string",
    "criticality": "string",
    "server_type": "string",
    "cpu_cores": "number",
    "memory_gb": "number",
    "disk_gb": "number",
    "monthly_cost_usd": "number",
}
INVENTORY_STRING_COLUMNS = [c for c, t in INVENTORY_COLUMNS.items() if t == "string"]
INVENTORY_NUMERIC_COLUMNS = [c for c, t in INVENTORY_COLUMNS.items() if t == "number"]

# Placement facts a planner knows and telemetry cannot show. Optional in every input; validation
# always outputs all four, missing = unknown. Strings are pandas "string" (missing = pd.NA);
# ``pinned`` is pandas "boolean" where missing (pd.NA) means unknown, which every consumer treats
# as *not pinned*: a rule nobody stated cannot block a recommendation, but it is never invented as
# False either, so a later inventory can still say.
OPTIONAL_INVENTORY_COLUMNS: dict[str, str] = {
    "dr_role": "string",  # primary | standby: a standby is idle by design
    "dr_partner_id": "string",  # the other server of a DR pair: never on the same host
    "anti_affinity_group": "string",  # members never share a host (cluster nodes, replicas)
    "pinned": "bool",  # never moved or resized by a recommendation
}
OPTIONAL_INVENTORY_STRING_COLUMNS = [c for c, t in OPTIONAL_INVENTORY_COLUMNS.items() if t == "string"]
# What validate_inventory outputs, in this order: the required columns, then the optional ones.
ALL_INVENTORY_COLUMNS = [*INVENTORY_COLUMNS, *OPTIONAL_INVENTORY_COLUMNS]
DR_ROLES = ["primary", "standby"]
PINNED_TRUE = frozenset({"true", "yes", "y", "1"})
PINNED_FALSE = frozenset({"false", "no", "n", "0"})

UNKNOWN = "unknown"
CRITICALITY_ORDER = ["critical", "high", "medium", "low"]  # most to least critical
ENVIRONMENTS = ["prod", "uat", "dev"]
FILTER_DIMENSIONS = ["business_unit", "region", "environment", "criticality", "server_type"]


@dataclass(frozen=True)
class MetricSpec:
    """What a metric column means, so checks, charts and thresholds agree on units."""

    name: str
    label: str
    unit: str
    kind: Literal["percent", "rate"]
    resource: str  # which capacity it consumes: cpu, memory, disk, network

    @property
    def upper_bound(self) -> float:
        return 100.0 if self.kind == "percent" else np.inf


METRICS: dict[str, MetricSpec] = {
    m.name: m
    for m in [
        MetricSpec("cpu_p95", "CPU p95", "%", "percent", "cpu"),
        MetricSpec("mem_p95", "Memory p95", "%", "percent", "memory"),
        MetricSpec("disk_p95", "Disk p95", "%", "percent", "disk"),
        MetricSpec("net_in_p95", "Network in p95", "Mbps", "rate", "network"),
        MetricSpec("net_out_p95", "Network out p95", "Mbps", "rate", "network"),
    ]
}
METRIC_COLUMNS = list(METRICS)
PERCENT_METRICS = [m for m, s in METRICS.items() if s.kind == "percent"]

FREQUENCIES: dict[str, str] = {"daily": "D", "hourly": "h"}
PERIODS_PER_WEEK = {"daily": 7, "hourly": 168}
# A series needs at least this many observed periods before it is worth forecasting.
MIN_HISTORY = {"daily": 28, "hourly": 72}
# Gaps up to this many periods may be interpolated for modelling; longer ones are left.
MAX_INTERPOLATE_GAP = {"daily": 3, "hourly": 6}
# Percent values a little above 100 are measurement overshoot (clipped); far above is bad data.
PERCENT_CLIP_TOLERANCE = 5.0


class SchemaError(ValueError):
    """Input that cannot be used at all (e.g. a missing required column)."""


def freq_alias(freq: str) -> str:
    """Pandas offset alias for a contract frequency name ('daily' | 'hourly')."""
    try:
        return FREQUENCIES[freq]
    except KeyError:
        raise SchemaError(f"unknown frequency {freq!r}: use one of {', '.join(FREQUENCIES)}") from None


# --------------------------------------------------------------------------- report


@dataclass
class Finding:
    """One rule that fired: what it found, what was done, a few examples for the reader."""

    table: str
    rule: str
    action: str  # dropped | rejected | clipped | coerced | flagged | interpolated
    count: int
    detail: str
    examples: list[str] = field(default_factory=list)

    def line(self) -> str:
        ex = f" (e.g. {', '.join(self.examples[:3])})" if self.examples else ""
        return f"[{self.table}] {self.rule}: {self.count} {self.action} — {self.detail}{ex}"


@dataclass
class ValidationReport:
    """Everything validation did, so nothing is lost silently."""

    source: str = ""
    findings: list[Finding] = field(default_factory=list)
    rows_in: dict[str, int] = field(default_factory=dict)
    rows_out: dict[str, int] = field(default_factory=dict)
    gaps: pd.DataFrame = field(default_factory=lambda: pd.DataFrame())
    short_series: list[str] = field(default_factory=list)

    def add(self, table: str, rule: str, action: str, count: int, detail: str, examples=()) -> None:
        if count:
            self.findings.append(
                Finding(table, rule, action, int(count), detail, [str(e) for e in examples][:5])
            )

    def merge(self, other: ValidationReport) -> ValidationReport:
        self.findings += other.findings
        self.rows_in.update(other.rows_in)
        self.rows_out.update(other.rows_out)
        if not other.gaps.empty:
            self.gaps = pd.concat([self.gaps, other.gaps], ignore_index=True)
        self.short_series += other.short_series
        return self

    @property
    def clean(self) -> bool:
        return not self.findings

    def count(self, rule: str) -> int:
        return sum(f.count for f in self.findings if f.rule == rule)

    def lines(self) -> list[str]:
        head = [
            f"{t}: {self.rows_in.get(t, 0):,} rows in, {self.rows_out.get(t, 0):,} rows out"
            for t in self.rows_in
        ]
        return head + [f.line() for f in self.findings]

    def to_frame(self) -> pd.DataFrame:
        return pd.DataFrame([f.__dict__ for f in self.findings])


@dataclass
class Validated:
    inventory: pd.DataFrame
    metrics: pd.DataFrame
    report: ValidationReport


# --------------------------------------------------------------------------- helpers


def require_columns(df: pd.DataFrame, required: list[str], table: str, source: str) -> None:
    """Fail with a message naming the missing column(s) and the file they were expected in."""
    missing = [c for c in required if c not in df.columns]
    if missing:
        where = f" in {source}" if source else ""
        raise SchemaError(
            f"{table}{where} is missing required column(s): {', '.join(missing)} "
            f"(found: {', '.join(map(str, df.columns)) or 'none'})"
        )


def _to_utc(values: pd.Series) -> pd.Series:
    """Parse timestamps; naive ones are taken as UTC, aware ones converted. Bad ones -> NaT."""
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC")
    if pd.api.types.is_datetime64_any_dtype(values.dtype):
        return values.dt.tz_localize("UTC")
    parsed = pd.to_datetime(values, errors="coerce", utc=True, format="mixed")
    return parsed


def _coerce_numeric(df: pd.DataFrame, col: str, table: str, report: ValidationReport, key: pd.Series) -> None:
    raw = df[col]
    if raw.dtype in (np.float32, np.float64):
        num = raw  # already floats: no copy
    elif pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        num = raw.astype("float64")
    else:
        num = pd.to_numeric(raw, errors="coerce").astype("float64")
        bad = num.isna() & raw.notna()
        report.add(
            table,
            "non_numeric",
            "rejected",
            bad.sum(),
            f"{col}: text in a numeric column, value set to missing",
            (f"{k}={v!r}" for k, v in zip(key[bad].head(3), raw[bad].head(3), strict=True)),
        )
    inf = np.isinf(num.to_numpy())
    if inf.any():
        report.add(table, "non_finite", "rejected", inf.sum(), f"{col}: infinite value set to missing")
        num[inf] = np.nan
    df[col] = num


# --------------------------------------------------------------------------- inventory


def validate_inventory(
    raw: pd.DataFrame, source: str = "", known_servers: Iterable[str] = ()
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check and normalise an inventory table; one row per server_id comes out.

    The required columns (:data:`INVENTORY_COLUMNS`) must be there; the optional placement
    columns (:data:`OPTIONAL_INVENTORY_COLUMNS`) are kept when present and always come out, missing
    where not stated, so every consumer sees one shape. Other columns are dropped. Placement rules:
    ``dr_role`` lower-cased, anything but primary/standby set missing; ``dr_partner_id`` naming the
    server itself or no server in the inventory set missing; one-sided DR pairs flagged and kept;
    ``pinned`` parsed from booleans, 0/1 and true/false/yes/no/y/n (any case), anything else set
    missing. Blank text is missing. Each change is counted in the report.

    ``known_servers``: servers that exist outside this table (an inventory file merged into a
    store's): a DR partner among them is not unknown, and whether it names this server back is
    left to the validation of the merged inventory.
    """
    report = ValidationReport(source=source)
    require_columns(raw, list(INVENTORY_COLUMNS), "inventory", source)
    report.rows_in["inventory"] = len(raw)
    df = raw[[c for c in ALL_INVENTORY_COLUMNS if c in raw.columns]].copy()

    sid = df["server_id"].astype("string").str.strip()
    missing = sid.isna() | (sid == "")
    report.add("inventory", "missing_server_id", "dropped", missing.sum(), "rows without a server_id")
    df = df[~missing].copy()
    df["server_id"] = sid[~missing]

    dup = df["server_id"].duplicated(keep="first")
    report.add(
        "inventory",
        "duplicate_server",
        "dropped",
        dup.sum(),
        "server_id listed more than once; first row kept",
        df.loc[dup, "server_id"].head(3),
    )
    df = df[~dup]

    for col in INVENTORY_STRING_COLUMNS[1:]:
        s = df[col].astype("string").str.strip()
        if col in ("environment", "criticality", "server_type"):
            s = s.str.lower()
        blank = s.isna() | (s == "")
        report.add(
            "inventory", "missing_attribute", "coerced", blank.sum(), f"{col} empty, set to '{UNKNOWN}'"
        )
        df[col] = s.mask(blank, UNKNOWN)

    crit = ~df["criticality"].isin([*CRITICALITY_ORDER, UNKNOWN])
    report.add(
        "inventory",
        "unknown_criticality",
        "coerced",
        crit.sum(),
        f"criticality not one of {'/'.join(CRITICALITY_ORDER)}, set to '{UNKNOWN}'",
        df.loc[crit, "criticality"].head(3),
    )
    df.loc[crit, "criticality"] = UNKNOWN

    for col in INVENTORY_NUMERIC_COLUMNS:
        _coerce_numeric(df, col, "inventory", report, df["server_id"])
        neg = df[col] < 0
        report.add("inventory", "out_of_range", "rejected", neg.sum(), f"{col} negative, set to missing")
        df.loc[neg, col] = np.nan

    df = df.reset_index(drop=True)
    _validate_placement(df, report, pd.Index(list(known_servers), dtype=str))
    df = df[ALL_INVENTORY_COLUMNS]
    report.rows_out["inventory"] = len(df)
    return df, report


def _example(server_id: object, value: object) -> str:
    """``srv-1='value'`` with the value's repr cut short: hostile strings stay readable in a report."""
    text = repr(value)
    return f"{server_id}={text[:40] + '…' if len(text) > 40 else text}"


_BAD = object()  # marks a pinned value that is not yes/no


def _pinned_value(v: object) -> object:
    """One ``pinned`` cell as True/False, pd.NA for missing, or ``_BAD`` for anything else."""
    if v is None or v is pd.NA or v is pd.NaT:
        return pd.NA
    if isinstance(v, bool | np.bool_):
        return bool(v)
    if isinstance(v, int | float | np.integer | np.floating):
        if np.isnan(v):
            return pd.NA
        return bool(v) if v in (0, 1) else _BAD
    if isinstance(v, str):
        s = v.strip().lower()
        if s == "":
            return pd.NA
        if s in PINNED_TRUE:
            return True
        return False if s in PINNED_FALSE else _BAD
    return _BAD


def _validate_placement(df: pd.DataFrame, report: ValidationReport, known: pd.Index) -> None:
    """The optional placement columns, in place: normalised, checked, every change reported.

    Called on the deduplicated inventory, so a DR partner is checked against the servers that
    remain. A value that breaks a rule becomes missing (= unknown), never a guess.
    """
    sid = df["server_id"]
    for col in OPTIONAL_INVENTORY_STRING_COLUMNS:
        s = (
            df[col].astype("string").str.strip()
            if col in df.columns
            else pd.Series(pd.NA, df.index, "string")
        )
        df[col] = s.mask(s == "", pd.NA)  # blank = not stated = unknown, as when the column is absent

    role = df["dr_role"].str.lower()
    bad = role.notna() & ~role.isin(DR_ROLES)
    report.add(
        "inventory",
        "invalid_dr_role",
        "rejected",
        bad.sum(),
        f"dr_role not one of {'/'.join(DR_ROLES)}, set to missing (unknown)",
        (_example(k, v) for k, v in zip(sid[bad].head(3), role[bad].head(3), strict=True)),
    )
    df["dr_role"] = role.mask(bad, pd.NA)

    partner = df["dr_partner_id"]
    self_ref = partner.notna() & (partner == sid)
    report.add(
        "inventory",
        "dr_partner_self",
        "rejected",
        self_ref.sum(),
        "dr_partner_id names the server itself, set to missing",
        sid[self_ref].head(3),
    )
    here = partner.isin(sid)
    unknown = partner.notna() & ~self_ref & ~here & ~partner.isin(known)
    report.add(
        "inventory",
        "unknown_dr_partner",
        "rejected",
        unknown.sum(),
        "dr_partner_id is not a server in the inventory, set to missing",
        (_example(k, v) for k, v in zip(sid[unknown].head(3), partner[unknown].head(3), strict=True)),
    )
    partner = partner.mask(self_ref | unknown, pd.NA)
    df["dr_partner_id"] = partner

    # A names B, but B names another server or none: both statements are kept as given, because
    # each one alone already says "never on the same host" and dropping either could co-locate them.
    back = partner.map(pd.Series(partner.to_numpy(), index=sid.to_numpy()))
    one_sided = partner.notna() & here & (back.isna() | (back != sid))
    report.add(
        "inventory",
        "dr_partner_not_reciprocal",
        "flagged",
        one_sided.sum(),
        "server A names B as its DR partner but B names another server or none; "
        "kept as given: each named pair is kept apart",
        (
            f"{a}→{b}→{'none' if pd.isna(c) else c}"
            for a, b, c in zip(
                sid[one_sided].head(3), partner[one_sided].head(3), back[one_sided].head(3), strict=True
            )
        ),
    )

    raw = df["pinned"] if "pinned" in df.columns else pd.Series(pd.NA, df.index, dtype="boolean")
    if isinstance(raw.dtype, pd.BooleanDtype) or pd.api.types.is_bool_dtype(raw.dtype):
        df["pinned"] = raw.astype("boolean")
        return
    parsed = raw.map(_pinned_value)
    bad = parsed.map(lambda v: v is _BAD).astype(bool)
    report.add(
        "inventory",
        "invalid_pinned",
        "rejected",
        bad.sum(),
        "pinned is not a yes/no value (true/false, yes/no, y/n, 1/0), set to missing (not pinned)",
        (_example(k, v) for k, v in zip(sid[bad].head(3), raw[bad].head(3), strict=True)),
    )
    df["pinned"] = parsed.mask(bad, pd.NA).astype("boolean")


# --------------------------------------------------------------------------- metrics


def validate_metrics(
    raw: pd.DataFrame,
    inventory: pd.DataFrame | None = None,
    freq: str = "daily",
    source: str = "",
    find_gaps: bool = True,
) -> tuple[pd.DataFrame, ValidationReport]:
    """Check and normalise a metrics table to the contract.

    Policy (stated once, applied everywhere):
    - rows without server_id or with an unparseable timestamp are dropped;
    - rows for servers not in the inventory are rejected;
    - text or infinities in a metric column: that value is rejected (set missing);
    - negative values are rejected; percent values in (100, 105] are clipped to 100,
      above 105 rejected (a sensor cannot report 180 % of capacity);
    - timestamps become UTC and are floored to the period start; several rows for one
      server and period keep the last one delivered (exact copies are counted separately);
    - rows left with no metric value are dropped;
    - gaps are reported (not filled: :func:`forecasting.panel` interpolates short ones for
      modelling); series with too little history are flagged.
    """
    alias = freq_alias(freq)
    report = ValidationReport(source=source)
    require_columns(raw, ["server_id", "timestamp"], "metrics", source)
    metric_cols = [c for c in METRIC_COLUMNS if c in raw.columns]
    if not metric_cols:
        raise SchemaError(
            f"metrics{' in ' + source if source else ''} has none of the metric columns "
            f"{', '.join(METRIC_COLUMNS)} (found: {', '.join(map(str, raw.columns))})"
        )
    report.rows_in["metrics"] = len(raw)
    df = raw[["server_id", "timestamp", *metric_cols]]  # copy-on-write: no copy until changed

    sid = df["server_id"]
    if not (
        isinstance(sid.dtype, pd.CategoricalDtype)
        or sid.dtype == object
        or pd.api.types.is_string_dtype(sid.dtype)
    ):
        sid = sid.astype(str)
    missing = sid.isna()
    report.add("metrics", "missing_server_id", "dropped", missing.sum(), "rows without a server_id")

    ts = _to_utc(df["timestamp"])
    bad_ts = ts.isna() & ~missing
    report.add(
        "metrics",
        "bad_timestamp",
        "dropped",
        bad_ts.sum(),
        "timestamp missing or unparseable",
        df.loc[bad_ts, "timestamp"].head(3).map(repr),
    )
    keep = ~(missing | bad_ts)
    if not keep.all():
        df, ts = df[keep], ts[keep]
    step = np.timedelta64(pd.Timedelta(1, alias)).astype(f"timedelta64[{ts.dt.unit}]").astype(np.int64)
    if (ts.array.asi8 % step).any():  # floor only when some timestamp is not a period start
        ts = ts.dt.floor(alias)
    df["timestamp"] = ts
    if not pd.api.types.is_string_dtype(df["server_id"].dtype):
        df["server_id"] = df["server_id"].astype(str)

    codes, uniques = pd.factorize(df["server_id"])  # codes in order of first appearance
    if inventory is not None:
        known_code = pd.Index(uniques).isin(inventory["server_id"])
        known = known_code[codes]
        unknown_ids = uniques[~known_code]
        report.add(
            "metrics",
            "unknown_server",
            "rejected",
            (~known).sum(),
            f"rows for {len(unknown_ids)} server(s) not in the inventory",
            unknown_ids[:3],
        )
        if not known.all():
            df, codes = df[known], codes[known]

    key = df["server_id"]
    for col in metric_cols:
        _coerce_numeric(df, col, "metrics", report, key)
        v = df[col].to_numpy()
        with np.errstate(invalid="ignore"):
            neg = v < 0
            report.add(
                "metrics", "out_of_range", "rejected", neg.sum(), f"{col} negative, value set to missing"
            )
            over = v > 100.0 if METRICS[col].kind == "percent" else np.zeros(0, bool)
            if not (neg.any() or over.any()):
                continue  # nothing to change: keep the column as it is, no copy
            v = v.copy()
            v[neg] = np.nan
            if over.size:
                clip = over & (v <= 100.0 + PERCENT_CLIP_TOLERANCE)
                reject = over & ~clip
                report.add(
                    "metrics",
                    "out_of_range",
                    "clipped",
                    clip.sum(),
                    f"{col} slightly above 100 %, clipped to 100",
                )
                report.add(
                    "metrics",
                    "out_of_range",
                    "rejected",
                    reject.sum(),
                    f"{col} above {100 + PERCENT_CLIP_TOLERANCE:g} %, value set to missing",
                    (f"{k}={x:g}" for k, x in zip(key[reject].head(3), v[reject][:3], strict=False)),
                )
                v[clip] = 100.0
                v[reject] = np.nan
        df[col] = v

    # Sort once by (server, time); duplicates are then neighbours, so only they are inspected.
    df, codes, t = _sorted_by_server_time(df, codes)
    same = np.zeros(len(df), dtype=bool)
    same[1:] = (codes[1:] == codes[:-1]) & (t[1:] == t[:-1])
    if same.any():
        involved = same | np.r_[same[1:], False]
        sub = df[involved]
        exact = sub.duplicated(keep="first")
        report.add("metrics", "duplicate_row", "dropped", exact.sum(), "exact duplicate rows")
        rest = sub[~exact]
        clash = rest.duplicated(["server_id", "timestamp"], keep="last")
        report.add(
            "metrics",
            "duplicate_period",
            "dropped",
            clash.sum(),
            f"several rows for one server and {freq} period; the last delivered kept",
            (
                f"{s}@{t:%Y-%m-%d %H:%M}"
                for s, t in rest.loc[clash, ["server_id", "timestamp"]].head(3).itertuples(index=False)
            ),
        )
        drop = np.zeros(len(df), dtype=bool)
        drop[np.flatnonzero(involved)[exact.to_numpy()]] = True
        drop[np.flatnonzero(involved)[~exact.to_numpy()][clash.to_numpy()]] = True
        df, codes, t = df[~drop], codes[~drop], t[~drop]

    empty = df[metric_cols].isna().all(axis=1).to_numpy()
    report.add("metrics", "no_values", "dropped", empty.sum(), "rows with no usable metric value left")
    if empty.any():
        df, codes, t = df[~empty], codes[~empty], t[~empty]
    df = df.reset_index(drop=True)

    if find_gaps and len(df):
        report.gaps, report.short_series = _gaps_and_short(df, codes, t, freq)
        long_gaps = report.gaps[~report.gaps["interpolable"]] if len(report.gaps) else report.gaps
        short_gaps = report.gaps[report.gaps["interpolable"]] if len(report.gaps) else report.gaps
        report.add(
            "metrics",
            "short_gap",
            "flagged",
            len(short_gaps),
            f"gaps of ≤ {MAX_INTERPOLATE_GAP[freq]} periods (interpolated for modelling)",
            (f"{r.server_id} {r.start:%Y-%m-%d}" for r in short_gaps.head(3).itertuples()),
        )
        report.add(
            "metrics",
            "long_gap",
            "flagged",
            len(long_gaps),
            "longer gaps, left missing",
            (
                f"{r.server_id} {r.start:%Y-%m-%d} ({r.periods} periods)"
                for r in long_gaps.head(3).itertuples()
            ),
        )
        report.add(
            "metrics",
            "short_series",
            "flagged",
            len(report.short_series),
            f"servers with fewer than {MIN_HISTORY[freq]} {freq} periods: baseline forecast only",
            report.short_series[:3],
        )
    report.rows_out["metrics"] = len(df)
    return df, report


def _sorted_by_server_time(
    df: pd.DataFrame, codes: np.ndarray
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """df grouped by server (in order of first appearance) and in time order within each, stable.

    Already-grouped input (what stores return) is left as it is: no copy.
    """
    t = df["timestamp"].array.asi8
    dc, dt = np.diff(codes), np.diff(t)
    if not ((dc >= 0) & ((dc > 0) | (dt >= 0))).all():
        order = np.lexsort((t, codes))  # stable: equal keys keep their delivery order
        df, codes, t = df.iloc[order], codes[order], t[order]
    return df, codes, t


def _gaps_and_short(
    df: pd.DataFrame, codes: np.ndarray, t: np.ndarray, freq: str
) -> tuple[pd.DataFrame, list[str]]:
    """Runs of missing periods inside each server's span (vectorised over the sorted frame)."""
    unit = df["timestamp"].dt.unit
    step = int(
        np.timedelta64(pd.Timedelta(1, freq_alias(freq))).astype(f"timedelta64[{unit}]").astype(np.int64)
    )
    same = codes[1:] == codes[:-1]
    missing_periods = (np.diff(t) // step) - 1
    at = np.flatnonzero(same & (missing_periods > 0))
    gaps = pd.DataFrame(
        {
            "server_id": df["server_id"].iloc[at].to_numpy(),
            "start": pd.to_datetime(t[at] + step, unit=unit, utc=True),
            "periods": missing_periods[at].astype(int),
        }
    )
    gaps["interpolable"] = gaps["periods"] <= MAX_INTERPOLATE_GAP[freq]
    counts = np.bincount(codes)
    first = np.searchsorted(codes, np.arange(len(counts)))
    short_codes = np.flatnonzero((counts > 0) & (counts < MIN_HISTORY[freq]))
    return gaps, [str(x) for x in df["server_id"].iloc[first[short_codes]]]


def validate(
    inventory: pd.DataFrame,
    metrics: pd.DataFrame,
    freq: str = "daily",
    source: str = "",
) -> Validated:
    """The one entry point: raw inventory + metrics in, clean frames and a report out."""
    inv, report = validate_inventory(inventory, source)
    met, mreport = validate_metrics(metrics, inv, freq, source)
    return Validated(inv, met, report.merge(mreport))
