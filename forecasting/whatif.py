"""What-if: re-derive risk and recommendations under a scenario without re-fitting a model.

A planner asks "what if Payments grows 5 % a month?", "what if we warn at 80 % CPU?", "what if we
keep 30 % headroom?", "what if Markets adds 20 more app servers?". Each answer is a transform of
the prepared arrays (:class:`forecasting.inputs.AnalyticsInputs`) followed by the same vectorised
risk and sizing code the batch job runs, so it takes milliseconds and agrees with the published
plan when the scenario is empty.

Growth is compounding, per business unit, applied to every forecast quantile from the forecast
origin: ``factor(t) = (1 + g/100) ** months(t)`` with months = days since origin ÷ 30.44.
History is what happened and is left alone. Added servers behave like a template server (a
server id, or the typical server of a server type in that business unit: the one whose expected
CPU and memory paths are closest to the median of its peers) and are packed like any other.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .analytics import Recommendations, recommend_from_inputs
from .inputs import I50, PLACEMENT_COLUMNS, AnalyticsError, AnalyticsInputs
from .plan import RISK_COLUMNS
from .policy import Policy
from .rightsizing import DEFAULT_CATALOG
from .risk import risk_table

DAYS_PER_MONTH = 365.25 / 12


@dataclass(frozen=True)
class AddedLoad:
    """``count`` more servers like ``profile`` (a server_type or a server_id) in ``business_unit``."""

    business_unit: str
    count: int
    profile: str
    region: str | None = None  # default: the template's
    environment: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.count, int) or isinstance(self.count, bool) or not 1 <= self.count <= 10_000:
            raise AnalyticsError(f"added load: count {self.count!r} must be an integer from 1 to 10,000")
        if not str(self.business_unit).strip() or not str(self.profile).strip():
            raise AnalyticsError("added load needs a business unit and a profile (server type or server id)")


@dataclass(frozen=True)
class Scenario:
    """Changes to apply; every field left at its default changes nothing.

    ``growth_pct_per_month``: one rate for the whole fleet, or a mapping business unit → rate
    (key ``"*"``: every business unit not named). ``growth_metrics``: metrics it applies to
    (None: every forecast metric). Threshold, offset and lead-time mappings are merged over the
    base settings; ``headroom`` and ``policy`` replace the base ones.
    """

    growth_pct_per_month: float | Mapping[str, float] = 0.0
    growth_metrics: tuple[str, ...] | None = None
    thresholds: Mapping[str, float] | None = None
    criticality_offsets: Mapping[str, float] | None = None
    lead_time_days: Mapping[str, int] | None = None
    headroom: float | None = None
    added_load: tuple[AddedLoad, ...] = field(default_factory=tuple)
    policy: Policy | None = None  # replaces the base policy (what to propose, minimum saving, …)


# --------------------------------------------------------------------------- transforms


def _rates(inputs: AnalyticsInputs, growth: float | Mapping[str, float]) -> np.ndarray:
    """(S,) monthly growth rate in percent for each server."""
    bu = inputs.inventory["business_unit"].astype(str)
    if isinstance(growth, Mapping):
        known = set(bu)
        unknown = [k for k in growth if k != "*" and k not in known]
        if unknown:
            raise AnalyticsError(
                f"growth: unknown business unit(s) {unknown}; known: {sorted(known)} (or '*' for the rest)"
            )
        default = float(growth.get("*", 0.0))
        rates = bu.map({k: float(v) for k, v in growth.items() if k != "*"}).fillna(default)
        rates = rates.to_numpy(dtype=float)
        values = [float(v) for v in growth.values()]
    else:
        values = [float(growth)]
        rates = np.full(len(bu), float(growth))
    for v in values:
        if not (math.isfinite(v) and -100 < v <= 1000):
            raise AnalyticsError(f"growth {v!r} % per month must be a number above −100 and at most 1000")
    return rates


def apply_growth(
    inputs: AnalyticsInputs,
    growth_pct_per_month: float | Mapping[str, float],
    metrics: Sequence[str] | None = None,
) -> AnalyticsInputs:
    """Inputs whose forecast quantiles grow by ``growth_pct_per_month`` (compounding) from the origin.

    Composes with growth already applied (scenarios stack). History is untouched.
    """
    rates = _rates(inputs, growth_pct_per_month)
    sel = list(inputs.metrics) if metrics is None else list(metrics)
    unknown = [m for m in sel if m not in inputs.metrics]
    if unknown:
        raise AnalyticsError(
            f"growth: metric(s) {unknown} are not forecast; forecast: {list(inputs.metrics)}"
        )
    if not np.any(rates) or not sel:
        return inputs
    days = (inputs.index - inputs.origin) / pd.Timedelta(days=1)
    months = np.maximum(np.asarray(days, dtype=float), 0.0) / DAYS_PER_MONTH
    factor = np.power(1.0 + rates[:, None] / 100.0, months[None, :])  # (S, H)
    mask = np.array([m in sel for m in inputs.metrics])
    S, M, H = inputs.n_servers, len(inputs.metrics), len(inputs.index)
    grow = np.ones((S, M, H))
    grow[:, mask, :] = factor[:, None, :]
    if inputs.growth is not None:
        grow = grow * inputs.growth
    return inputs.with_changes(growth=grow)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "bu"


def _template(inputs: AnalyticsInputs, load: AddedLoad) -> int:
    """Row of the server the added servers copy."""
    inv = inputs.inventory
    ids = inv["server_id"].astype(str)
    if (ids == load.profile).any():
        return int(np.flatnonzero(ids == load.profile)[0])
    types = inv["server_type"].astype(str)
    if not (types == load.profile).any():
        raise AnalyticsError(
            f"added load: profile {load.profile!r} is neither a server_type "
            f"({', '.join(sorted(set(types)))}) nor a server id"
        )
    cpu, mem = inputs.metric_pos("cpu_p95"), inputs.metric_pos("mem_p95")
    if cpu is None or mem is None:
        raise AnalyticsError("added load needs CPU and memory forecasts")
    usable = (types == load.profile).to_numpy() & inputs.present[:, cpu] & inputs.present[:, mem]
    in_bu = usable & (inv["business_unit"].astype(str) == load.business_unit).to_numpy()
    rows = np.flatnonzero(in_bu if in_bu.any() else usable)
    if len(rows) == 0:
        raise AnalyticsError(f"added load: no {load.profile} server has CPU and memory forecasts to copy")
    paths = np.concatenate([inputs.quantiles[rows, cpu, I50, :], inputs.quantiles[rows, mem, I50, :]], axis=1)
    paths = np.nan_to_num(paths, nan=np.nanmean(paths))
    dist = np.linalg.norm(paths - np.median(paths, axis=0), axis=1)
    return int(rows[np.argmin(dist)])


def add_servers(inputs: AnalyticsInputs, loads: Sequence[AddedLoad]) -> AnalyticsInputs:
    """Inputs with hypothetical servers appended (ids ``new-<bu>-<profile>-001`` …).

    Each copies its template's inventory row (business unit, region, environment as given; no
    DR pair, anti-affinity group or pin),
    forecasts, history and seasonal statistics, so risk, sizing and packing treat it like a real
    server with that workload.
    """
    if not loads:
        return inputs
    inv = inputs.inventory
    existing = set(inv["server_id"].astype(str))
    rows: list[int] = []
    new_rows: list[pd.DataFrame] = []
    for load in loads:
        t = _template(inputs, load)
        base = inv.iloc[[t] * load.count].copy()
        stem = f"new-{_slug(load.business_unit)}-{_slug(load.profile)}"
        n0 = 1
        new_ids = []
        while len(new_ids) < load.count:
            sid = f"{stem}-{n0:03d}"
            if sid not in existing:
                new_ids.append(sid)
                existing.add(sid)
            n0 += 1
        base["server_id"] = new_ids
        base["hostname"] = new_ids
        base["business_unit"] = load.business_unit
        if load.region is not None:
            base["region"] = load.region
        if load.environment is not None:
            base["environment"] = load.environment
        for col in PLACEMENT_COLUMNS:  # a new server is in no DR pair or group, and not pinned
            if col in base.columns:
                base[col] = pd.NA
        new_rows.append(base)
        rows.extend([t] * load.count)
    idx = np.asarray(rows, dtype=int)
    inventory = pd.concat([inv, *new_rows], ignore_index=True)

    def grow(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else np.concatenate([a, a[idx]], axis=0)

    models = np.concatenate([inputs.models, np.where(inputs.models[idx] != "", "what-if copy", "")], axis=0)
    return inputs.with_changes(
        inventory=inventory,
        quantiles=grow(inputs.quantiles),
        present=grow(inputs.present),
        models=models,
        history={m: grow(a) for m, a in inputs.history.items()},
        current_p95=grow(inputs.current_p95),
        hist_uplift=grow(inputs.hist_uplift),
        missing_uplift=grow(inputs.missing_uplift),
        growth=grow(inputs.growth),
    )


def scenario_inputs(inputs: AnalyticsInputs, scenario: Scenario) -> AnalyticsInputs:
    """Added servers first (so they grow with their business unit), then growth."""
    out = add_servers(inputs, scenario.added_load)
    if isinstance(scenario.growth_pct_per_month, Mapping) or scenario.growth_pct_per_month:
        out = apply_growth(out, scenario.growth_pct_per_month, scenario.growth_metrics)
    return out


# --------------------------------------------------------------------------- re-derivation


@dataclass(frozen=True)
class WhatIfResult:
    """Risk and recommendations under a scenario, and what changed against the base risk."""

    scenario: Scenario
    inputs: AnalyticsInputs
    risk: pd.DataFrame | None  # plan.RISK_COLUMNS (None when not asked for)
    recommendations: Recommendations | None  # None when not asked for
    risk_changes: pd.DataFrame | None  # compare_risk(base_risk, risk) when a base was given


def whatif(
    inputs: AnalyticsInputs,
    scenario: Scenario,
    *,
    thresholds: Mapping[str, float] | None = None,
    criticality_offsets: Mapping[str, float] | None = None,
    lead_time_days: Mapping[str, int] | None = None,
    headroom: float = 0.2,
    idle_cpu_p95: float = 10.0,
    catalog: pd.DataFrame = DEFAULT_CATALOG,
    policy: Policy | None = None,
    quantile: str = "q50",
    packing_quantile: str = "q90",
    consolidation: bool = False,
    base_risk: pd.DataFrame | None = None,
    risk: bool = True,
    recommendations: bool = True,
    assess: str = "all",
) -> WhatIfResult:
    """Re-derive risk and recommendations under ``scenario`` over the base settings given.

    The keyword arguments are the base settings (as in the batch run); the scenario's threshold,
    offset and lead-time mappings are merged over them and its headroom replaces the base one.
    ``consolidation=False`` (default) skips packing; pass True for a full re-plan (about 0.1 s
    for a 1,000-server fleet, 0.5 s for 10,000).
    ``risk``/``recommendations`` pick the halves to compute (a page that shows one skips the
    other); ``assess`` is :func:`forecasting.risk.risk_table`'s. The recommendations are decided
    by ``policy`` (the planner's, default Policy()), guarded by the scenario's risk.
    """
    if not (risk or recommendations):
        raise AnalyticsError("whatif: ask for risk, recommendations or both")
    s_inputs = scenario_inputs(inputs, scenario)
    thr = {**(thresholds or {}), **(scenario.thresholds or {})}
    offs = {**(criticality_offsets or {}), **(scenario.criticality_offsets or {})}
    leads = {**(lead_time_days or {}), **(scenario.lead_time_days or {})}
    h = headroom if scenario.headroom is None else scenario.headroom
    table = (
        risk_table(s_inputs, thresholds=thr, criticality_offsets=offs, lead_time_days=leads, assess=assess)
        if risk
        else None
    )
    recs = (
        recommend_from_inputs(
            s_inputs,
            headroom=h,
            idle_cpu_p95=idle_cpu_p95,
            catalog=catalog,
            policy=scenario.policy or policy,
            risk=table,
            thresholds=thr,
            criticality_offsets=offs,
            lead_time_days=leads,
            quantile=quantile,
            packing_quantile=packing_quantile,
            consolidation=consolidation,
            profiles=False,
        )
        if recommendations
        else None
    )
    changes = compare_risk(base_risk, table) if base_risk is not None and table is not None else None
    return WhatIfResult(
        scenario=scenario, inputs=s_inputs, risk=table, recommendations=recs, risk_changes=changes
    )


def with_growth(
    inputs: AnalyticsInputs, growth_pct_per_month: float | Mapping[str, float], /, **settings
) -> WhatIfResult:
    """:func:`whatif` with only a growth assumption (per business unit or fleet-wide);
    ``settings`` are :func:`whatif`'s keyword arguments (the base settings)."""
    return whatif(inputs, Scenario(growth_pct_per_month=growth_pct_per_month), **settings)


def with_thresholds(inputs: AnalyticsInputs, overrides: Mapping[str, float], /, **settings) -> WhatIfResult:
    """:func:`whatif` with threshold overrides, merged over the base ``thresholds`` setting."""
    return whatif(inputs, Scenario(thresholds=overrides), **settings)


def with_headroom(inputs: AnalyticsInputs, new_headroom: float, /, **settings) -> WhatIfResult:
    """:func:`whatif` with another headroom policy for sizing (and packing, if requested)."""
    return whatif(inputs, Scenario(headroom=new_headroom), **settings)


def with_added_load(inputs: AnalyticsInputs, loads: Sequence[AddedLoad], /, **settings) -> WhatIfResult:
    """:func:`whatif` with N more servers of a profile in a business unit."""
    return whatif(inputs, Scenario(added_load=tuple(loads)), **settings)


CHANGE_COLUMNS = [
    "server_id",
    "metric",
    "status_before",
    "status_after",
    "severity_before",
    "severity_after",
    "score_before",
    "score_after",
    "breach_expected_before",
    "breach_expected_after",
    "days_earlier",  # how much earlier the expected breach comes (NaN when either has none)
    "change",  # new | gone | worse | better | same
]


def compare_risk(before: pd.DataFrame, after: pd.DataFrame) -> pd.DataFrame:
    """Row-by-row change between two risk frames (server × metric), worst changes first."""
    for name, f in (("before", before), ("after", after)):
        missing = [
            c for c in ("server_id", "metric", "status", "severity", "score", "breach_expected") if c not in f
        ]
        if missing:
            raise AnalyticsError(
                f"compare_risk: the {name} frame lacks {missing}; pass risk frames ({RISK_COLUMNS[:3]}…)"
            )
    cols = ["server_id", "metric", "status", "severity", "score", "breach_expected"]
    m = before[cols].merge(
        after[cols], on=["server_id", "metric"], how="outer", suffixes=("_before", "_after"), indicator=True
    )
    delta = (m["breach_expected_before"] - m["breach_expected_after"]) / pd.Timedelta(days=1)
    m["days_earlier"] = delta.astype(float)
    score_diff = m["score_after"].fillna(0) - m["score_before"].fillna(0)
    change = np.select(
        [m["_merge"] == "right_only", m["_merge"] == "left_only", score_diff > 0.05, score_diff < -0.05],
        ["new", "gone", "worse", "better"],
        default="same",
    )
    m["change"] = change
    m = m.sort_values(["score_after", "server_id", "metric"], ascending=[False, True, True], kind="stable")
    m["_order"] = m["change"].map({"new": 0, "worse": 1, "better": 2, "gone": 3, "same": 4})
    m = m.sort_values("_order", kind="stable")
    return m[CHANGE_COLUMNS].reset_index(drop=True)
