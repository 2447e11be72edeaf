"""Right-sizing and the recommendation pipeline (issue: capacity analytics §2–3).

Every server gets one action — upgrade, decommission, consolidate, right-size or keep — with the
size it should run on, the monthly saving and a reason with numbers. Sizing covers the forecast
p95 peak (the chosen quantile path over the horizon, seasonal peaks included) and the observed
peak of the recent lookback, for CPU and memory together, plus a headroom policy: a size fits
when ``capacity × (1 − headroom) ≥ peak demand``.

:func:`recommend` is the entry point the batch job and the app call: right-sizing first, then
peak-aware consolidation (:mod:`forecasting.consolidation`) of the servers that stay, then one
recommendations frame (plan.RECOMMENDATION_COLUMNS, one row per inventory server).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .consolidation import (
    ConsolidationResult,
    PlacementRules,
    WorkloadProfiles,
    cheapest_fit,
    consolidate,
    price_factors,
    workload_profiles,
)
from .plan import ACTIONS, CONSOLIDATION_COLUMNS, QUANTILE_COLUMNS, RECOMMENDATION_COLUMNS
from .risk import AnalyticsError, AnalyticsInputs, format_date, prepare, risk_table

# --------------------------------------------------------------------------- catalog


class CatalogError(AnalyticsError):
    """A size catalog that cannot be used; the message names the size and the problem."""


CATALOG_COLUMNS = ["size", "family", "cores", "memory_gb", "monthly_cost_usd"]


def _default_catalog() -> pd.DataFrame:
    """Three families priced per vCPU-month like common cloud on-demand general (1:4 GB),
    compute (1:2 GB) and memory (1:8 GB) instances (≈ 730 h/month, Linux, 2026 list prices)."""
    families = {"gp": (4, 35.0), "cpu": (2, 31.0), "mem": (8, 46.0)}
    names = {1: "medium", 2: "large", 4: "xlarge", 8: "2xlarge", 16: "4xlarge", 32: "8xlarge"}
    names |= {48: "12xlarge", 64: "16xlarge", 96: "24xlarge"}
    rows = []
    for fam, (gb_per_core, usd_per_core) in families.items():
        for cores, label in names.items():
            if cores == 1 and fam != "gp":
                continue
            rows.append((f"{fam}.{label}", fam, cores, cores * gb_per_core, cores * usd_per_core))
    return pd.DataFrame(rows, columns=CATALOG_COLUMNS)


DEFAULT_CATALOG = _default_catalog()


def validate_catalog(catalog: pd.DataFrame) -> pd.DataFrame:
    """A clean copy of a size catalog (size, cores, memory_gb, monthly_cost_usd; family optional)."""
    if not isinstance(catalog, pd.DataFrame) or catalog.empty:
        raise CatalogError("size catalog must be a non-empty table of sizes")
    missing = [c for c in ("size", "cores", "memory_gb", "monthly_cost_usd") if c not in catalog.columns]
    if missing:
        raise CatalogError(f"size catalog is missing column(s): {', '.join(missing)}")
    cat = catalog.copy()
    if "family" not in cat.columns:
        cat["family"] = ""
    cat = cat[CATALOG_COLUMNS].reset_index(drop=True)
    cat["size"] = cat["size"].astype(str).str.strip()
    if (cat["size"] == "").any():
        raise CatalogError("size catalog has a size without a name")
    dup = cat["size"].duplicated()
    if dup.any():
        raise CatalogError(f"size catalog lists size {cat.loc[dup, 'size'].iloc[0]!r} more than once")
    for col in ("cores", "memory_gb", "monthly_cost_usd"):
        v = pd.to_numeric(cat[col], errors="coerce")
        bad = ~np.isfinite(v.to_numpy(dtype=float)) | (v.to_numpy(dtype=float) <= 0)
        if bad.any():
            raise CatalogError(f"size {cat.loc[bad, 'size'].iloc[0]!r}: {col} must be a positive number")
        cat[col] = v.astype(float)
    return cat


# --------------------------------------------------------------------------- sizing


@dataclass(frozen=True)
class Sizing:
    """Per-server right-sizing: the recommendation rows before consolidation, and the demand."""

    frame: pd.DataFrame  # RECOMMENDATION_COLUMNS, one row per inventory server
    demand: (
        pd.DataFrame
    )  # server_id, cpu_peak_pct, mem_peak_pct, cores_needed, memory_needed_gb, idle, sizable


def _row_max(a: np.ndarray) -> np.ndarray:
    if a.shape[1] == 0:
        return np.full(a.shape[0], np.nan)
    with np.errstate(invalid="ignore"):
        m = np.max(np.where(np.isnan(a), -np.inf, a), axis=1)
    return np.where(np.isfinite(m), m, np.nan)


def _size_label(cores: np.ndarray, memory: np.ndarray, catalog: pd.DataFrame) -> np.ndarray:
    """Catalog name for an exact (cores, memory) match, else 'custom 8 vCPU / 32 GB'."""
    key = pd.MultiIndex.from_arrays([catalog["cores"], catalog["memory_gb"]])
    cheapest = (
        catalog.assign(_k=list(key)).sort_values("monthly_cost_usd", kind="stable").drop_duplicates("_k")
    )
    lookup = dict(zip(cheapest["_k"], cheapest["size"], strict=True))
    pairs = pd.MultiIndex.from_arrays([np.asarray(cores, dtype=float), np.asarray(memory, dtype=float)])
    codes, shapes = pd.factorize(pairs, use_na_sentinel=False)  # few distinct shapes: label each once
    labels = []
    for c, m in shapes:
        if not (np.isfinite(c) and np.isfinite(m)):
            labels.append("unknown")
        else:
            labels.append(lookup.get((float(c), float(m)), f"custom {c:g} vCPU / {m:g} GB"))
    return np.asarray(labels, dtype=object)[codes] if len(codes) else np.asarray([], dtype=object)


def _observed_peak(inputs: AnalyticsInputs, metric: str, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(S,) peak and (S,) number of observed periods of ``metric`` over the history columns."""
    if metric not in inputs.history:
        return np.full(inputs.n_servers, np.nan), np.zeros(inputs.n_servers, dtype=int)
    h = inputs.history[metric][:, cols]
    return _row_max(h), (~np.isnan(h)).sum(axis=1)


def size_servers(
    inputs: AnalyticsInputs,
    *,
    headroom: float,
    idle_cpu_p95: float,
    catalog: pd.DataFrame = DEFAULT_CATALOG,
    quantile: str = "q50",
    lookback_days: int = 90,
    min_savings_fraction: float = 0.1,
) -> Sizing:
    """Right-size every server of the inventory (no consolidation).

    Demand = max(forecast peak of the ``quantile`` path, observed peak of the last
    ``lookback_days``) for CPU and memory; required capacity = demand ÷ (1 − headroom).
    A recommended size costs its catalog price × the server's price factor (current cost ÷ the
    catalog-equivalent price of its current shape), so licences and storage a server pays for are
    carried over and the saving reflects the smaller shape, not a different rate card.
    Decommission review: CPU p95 below ``idle_cpu_p95`` on every observed period of the lookback
    (at least half of it observed) and over the forecast. Upgrade: the current size does not hold
    the demand with headroom. Right-size: a smaller catalog size fits and saves at least
    ``min_savings_fraction`` of the current cost. Otherwise keep.
    """
    if not 0 <= headroom < 1:
        raise AnalyticsError(f"headroom {headroom} must be in [0, 1)")
    if not (math.isfinite(idle_cpu_p95) and 0 <= idle_cpu_p95 <= 100):
        raise AnalyticsError(f"idle_cpu_p95 {idle_cpu_p95} must be a percentage in [0, 100]")
    if lookback_days < 1:
        raise AnalyticsError(f"lookback_days {lookback_days} must be ≥ 1")
    if quantile not in QUANTILE_COLUMNS:
        raise AnalyticsError(f"unknown quantile {quantile!r}: use one of {', '.join(QUANTILE_COLUMNS)}")
    cat = validate_catalog(catalog)
    inv = inputs.inventory
    S = inputs.n_servers
    qi = QUANTILE_COLUMNS.index(quantile)
    lb = lookback_days * inputs.periods_per_day
    h_cols = np.flatnonzero(inputs.history_index <= inputs.origin)[-lb:]

    peaks, hist_max, fc_peak, observed = {}, {}, {}, {}
    for metric in ("cpu_p95", "mem_p95"):
        # the observed part does not change with a scenario: computed once per run's inputs
        hist_max[metric], observed[metric] = inputs.memoised(
            ("sizing-history", metric, lb),
            (inputs.history.get(metric), inputs.history_index, inputs.origin, inv),
            lambda metric=metric: _observed_peak(inputs, metric, h_cols),
        )
        fc_peak[metric] = _row_max(inputs.path(metric, qi))
        peaks[metric] = np.fmax(hist_max[metric], fc_peak[metric])

    cores = inv["cpu_cores"].to_numpy(dtype=float)
    memory = inv["memory_gb"].to_numpy(dtype=float)
    cost = inv["monthly_cost_usd"].to_numpy(dtype=float)
    cpu_pct, mem_pct = peaks["cpu_p95"], peaks["mem_p95"]
    demand_cores = cpu_pct / 100.0 * cores
    demand_mem = mem_pct / 100.0 * memory
    need_cores = demand_cores / (1 - headroom)
    need_mem = demand_mem / (1 - headroom)
    has_capacity = np.isfinite(cores) & (cores > 0) & np.isfinite(memory) & (memory > 0)
    sizable = has_capacity & np.isfinite(cpu_pct) & np.isfinite(mem_pct)

    with np.errstate(invalid="ignore"):
        enough_obs = observed["cpu_p95"] >= max(1, lb // 2)
        idle = (
            sizable
            & enough_obs
            & (hist_max["cpu_p95"] < idle_cpu_p95)
            & (np.isnan(fc_peak["cpu_p95"]) | (fc_peak["cpu_p95"] < idle_cpu_p95))
        )
        fits_now = (cpu_pct <= 100 * (1 - headroom) + 1e-9) & (mem_pct <= 100 * (1 - headroom) + 1e-9)
    undersized = sizable & ~idle & ~fits_now

    pos = cheapest_fit(np.where(sizable, need_cores, np.nan), np.where(sizable, need_mem, np.nan), cat)
    largest = int(np.lexsort((cat["memory_gb"].to_numpy(), cat["cores"].to_numpy()))[-1])
    no_fit = sizable & (pos < 0)
    pos = np.where(no_fit, largest, pos)
    rc = np.where(pos >= 0, cat["cores"].to_numpy()[np.clip(pos, 0, None)], np.nan)
    rm = np.where(pos >= 0, cat["memory_gb"].to_numpy()[np.clip(pos, 0, None)], np.nan)
    factor, _ = price_factors(inv, cat)
    rcost = np.where(pos >= 0, cat["monthly_cost_usd"].to_numpy()[np.clip(pos, 0, None)], np.nan) * factor
    rname = np.where(pos >= 0, cat["size"].to_numpy(dtype=object)[np.clip(pos, 0, None)], "")
    smaller = (rc < cores) | (rm < memory)
    with np.errstate(invalid="ignore"):
        cheaper = np.where(np.isfinite(cost), rcost <= cost * (1 - min_savings_fraction), True)
    rightsize = sizable & ~idle & ~undersized & smaller & cheaper

    action = np.full(S, "keep", dtype=object)
    action[rightsize] = "right-size"
    action[undersized] = "upgrade"
    action[idle] = "decommission"
    current_label = _size_label(cores, memory, cat)

    keep = action == "keep"
    out_size = np.where(keep, current_label, rname)
    out_cores = np.where(keep, cores, rc)
    out_mem = np.where(keep, memory, rm)
    out_cost = np.where(keep, cost, rcost)
    out_size = np.where(idle, "", out_size)
    out_cores = np.where(idle, 0.0, out_cores)
    out_mem = np.where(idle, 0.0, out_mem)
    out_cost = np.where(idle, 0.0, out_cost)
    savings = cost - out_cost

    end = format_date(inputs.index[-1], inputs.origin, inputs.freq == "hourly") if len(inputs.index) else ""
    # plain Python values: the sentences below are formatted per server
    L = {
        k: np.asarray(v).tolist()
        for k, v in {
            "a": action, "cap": has_capacity, "sz": sizable, "cpu": cpu_pct, "mem": mem_pct,
            "dc": demand_cores, "dm": demand_mem, "cores": cores, "memory": memory, "nc": need_cores,
            "nm": need_mem, "cost": cost, "fc": fc_peak["cpu_p95"], "hmax": hist_max["cpu_p95"],
            "rname": rname, "rc": rc, "rm": rm, "rcost": rcost, "nofit": no_fit, "smaller": smaller,
            "sav": savings,
        }.items()
    }  # fmt: skip
    fin = math.isfinite
    reasons = []
    for i in range(S):
        a = L["a"][i]
        if not L["cap"][i]:
            reasons.append("capacity unknown (cpu_cores or memory_gb missing in the inventory): cannot size")
            continue
        cpu_i, mem_i, cost_i = L["cpu"][i], L["mem"][i], L["cost"][i]
        if not L["sz"][i]:
            what = " and ".join(n for n, v in (("CPU", cpu_i), ("memory", mem_i)) if not fin(v))
            reasons.append(f"no {what} history or forecast to size from: keep as is")
            continue
        demand_txt = (
            f"CPU peak {L['dc'][i]:.1f} of {L['cores'][i]:g} cores ({cpu_i:.0f} %), memory peak "
            f"{L['dm'][i]:.1f} of {L['memory'][i]:g} GB ({mem_i:.0f} %) over the last {lookback_days} d "
            f"and the forecast to {end}"
        )
        need_txt = (
            f"with {headroom * 100:.0f} % headroom it needs {L['nc'][i]:.1f} cores / {L['nm'][i]:.1f} GB"
        )
        cost_txt = f"${cost_i:,.0f}/month now" if fin(cost_i) else "current cost unknown"
        rname_i, rc_i, rm_i, rcost_i = L["rname"][i], L["rc"][i], L["rm"][i], L["rcost"][i]
        if a == "decommission":
            fc = L["fc"][i]
            fc_txt = f", forecast peak {fc:.1f} %" if fin(fc) else ""
            reasons.append(
                f"idle: CPU p95 below {idle_cpu_p95:g} % throughout the last {lookback_days} d "
                f"(max {L['hmax'][i]:.1f} %{fc_txt}); review for decommissioning"
                + (f", saves ${cost_i:,.0f}/month" if fin(cost_i) else "")
            )
        elif a == "upgrade":
            short = [n for n, v in (("CPU", cpu_i), ("memory", mem_i)) if v > 100 * (1 - headroom) + 1e-9]
            tail = (
                f"; even the largest size ({rname_i}: {rc_i:g} vCPU / {rm_i:g} GB) is short: split the workload"
                if L["nofit"][i]
                else f" → {rname_i} ({rc_i:g} vCPU / {rm_i:g} GB, ${rcost_i:,.0f}/month; {cost_txt})"
            )
            reasons.append(f"undersized ({' and '.join(short)}): {demand_txt}; {need_txt}{tail}")
        elif a == "right-size":
            sav = L["sav"][i]
            reasons.append(
                f"{demand_txt}; {need_txt} → {rname_i} ({rc_i:g} vCPU / {rm_i:g} GB) "
                + (f"saves ${sav:,.0f}/month ({cost_txt})" if fin(sav) else f"({cost_txt})")
            )
        elif not fin(rcost_i) or not L["smaller"][i]:
            reasons.append(f"fits: {demand_txt}; {need_txt}: the current size is the smallest that fits")
        else:
            reasons.append(
                f"fits: {demand_txt}; {need_txt}; the smallest fit ({rname_i}, ${rcost_i:,.0f}/month) would save "
                f"less than {min_savings_fraction * 100:.0f} % of {cost_txt}"
            )

    frame = pd.DataFrame(
        {
            "server_id": inputs.server_ids,
            "action": action,
            "current_size": current_label,
            "current_cores": cores,
            "current_memory_gb": memory,
            "recommended_size": out_size,
            "recommended_cores": out_cores,
            "recommended_memory_gb": out_mem,
            "target_group": "",
            "current_monthly_cost": cost,
            "recommended_monthly_cost": out_cost,
            "monthly_savings": savings,
            "reason": reasons,
        }
    )
    demand = pd.DataFrame(
        {
            "server_id": inputs.server_ids,
            "cpu_peak_pct": cpu_pct,
            "mem_peak_pct": mem_pct,
            "cores_needed": need_cores,
            "memory_needed_gb": need_mem,
            "idle": idle,
            "sizable": sizable,
        }
    )
    return Sizing(frame=frame[RECOMMENDATION_COLUMNS], demand=demand)


# --------------------------------------------------------------------------- recommendations


@dataclass(frozen=True)
class RecommendationSummary:
    """Totals for the run manifest and the app's KPI cards (consolidation figures: see
    consolidation.ConsolidationSummary; zero when consolidation was skipped)."""

    servers: int
    actions: dict[str, int]
    monthly_savings: float  # decommission + right-size + consolidate
    upgrade_monthly_cost: float  # extra spend the upgrades need
    candidates: int = 0
    hosts_before: int = 0
    hosts_after: int = 0
    servers_freed: int = 0
    groups: int = 0
    consolidation_monthly_savings: float = 0.0
    naive_hosts: int = 0
    naive_monthly_cost: float = 0.0
    violations: int = 0
    naive_violations: int = 0
    replay_periods: int = 0
    replay_source: str = ""
    unplaceable: int = 0
    host_size: str = ""

    def to_dict(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class Recommendations:
    """One action per server, the consolidation plan behind it, and the workload profiles."""

    frame: pd.DataFrame  # RECOMMENDATION_COLUMNS, one row per inventory server
    sizing: Sizing
    consolidation: ConsolidationResult | None
    profiles: WorkloadProfiles | None
    summary: RecommendationSummary

    @property
    def plan(self) -> pd.DataFrame:
        """The consolidation plan (CONSOLIDATION_COLUMNS): groups of two or more servers."""
        if self.consolidation is None:
            return pd.DataFrame({c: pd.Series(dtype=object) for c in CONSOLIDATION_COLUMNS})
        return self.consolidation.plan

    def summary_dict(self) -> dict:
        return self.summary.to_dict()


def _summary(frame: pd.DataFrame, cons: ConsolidationResult | None) -> RecommendationSummary:
    counts = frame["action"].value_counts()
    saving = frame.loc[frame["action"].isin(["decommission", "right-size", "consolidate"]), "monthly_savings"]
    upgrade = frame.loc[frame["action"] == "upgrade", "monthly_savings"]
    extra: dict = {}
    if cons is not None:
        c = cons.summary
        extra = {
            "candidates": c.candidates,
            "hosts_before": c.hosts_before,
            "hosts_after": c.hosts_after,
            "servers_freed": c.servers_freed,
            "groups": c.groups,
            "consolidation_monthly_savings": c.monthly_savings,
            "naive_hosts": c.naive_hosts,
            "naive_monthly_cost": c.naive_monthly_cost,
            "violations": c.violations,
            "naive_violations": c.naive_violations,
            "replay_periods": c.replay_periods,
            "replay_source": c.replay_source,
            "unplaceable": c.unplaceable,
            "host_size": c.host_size,
        }
    return RecommendationSummary(
        servers=len(frame),
        actions={a: int(counts.get(a, 0)) for a in ACTIONS},
        monthly_savings=float(np.nansum(saving.to_numpy(dtype=float))),
        upgrade_monthly_cost=float(-np.nansum(upgrade.to_numpy(dtype=float))),
        **extra,
    )


def recommend_from_inputs(
    inputs: AnalyticsInputs,
    *,
    headroom: float,
    idle_cpu_p95: float,
    catalog: pd.DataFrame = DEFAULT_CATALOG,
    rules: PlacementRules | None = None,
    host_size: str | None = None,
    quantile: str = "q50",
    packing_quantile: str = "q90",
    lookback_days: int = 90,
    min_savings_fraction: float = 0.1,
    consolidation: bool = True,
    profiles: bool = True,
    actuals: pd.DataFrame | None = None,
) -> Recommendations:
    """Right-size, then consolidate the servers that stay (keep / right-size), on prepared inputs.

    Sizing covers the ``quantile`` (expected, q50) forecast peak and the observed lookback peak;
    packing uses the ``packing_quantile`` (pessimistic, q90) paths, since servers sharing a host
    must survive their bad days together.

    Members of a consolidation group of two or more get action "consolidate", the host size, the
    group id and their share of the host's cost (by their share of the group's CPU and memory
    peaks). ``consolidation=False`` skips packing (what-ifs that must answer in milliseconds).
    """
    rules = rules or PlacementRules()
    cat = validate_catalog(catalog)
    sizing = size_servers(
        inputs,
        headroom=headroom,
        idle_cpu_p95=idle_cpu_p95,
        catalog=cat,
        quantile=quantile,
        lookback_days=lookback_days,
        min_savings_fraction=min_savings_fraction,
    )
    frame = sizing.frame.copy()
    cons = None
    if consolidation:
        tiers = inputs.inventory["criticality"].to_numpy(dtype=object)
        cand = (
            frame["action"].isin(["keep", "right-size"]).to_numpy()
            & sizing.demand["sizable"].to_numpy()
            & ~np.isin(tiers, list(rules.excluded_criticality))
        )
        cons = consolidate(
            inputs,
            cand,
            catalog=cat,
            headroom=headroom,
            rules=rules,
            host_size=host_size,
            quantile=packing_quantile,
            actuals=actuals,
        )
        plan = cons.plan
        if len(plan):
            detail = cons.groups.set_index("target_group").loc[plan["target_group"]]
            row = pd.Index(frame["server_id"]).get_indexer(plan["server_id"])
            share = cons.allocated_cost.reindex(plan["server_id"]).to_numpy(dtype=float)
            current = frame["current_monthly_cost"].to_numpy(dtype=float)[row]
            frame.loc[row, "action"] = "consolidate"
            frame.loc[row, "recommended_size"] = plan["host_size"].to_numpy(dtype=object)
            frame.loc[row, "recommended_cores"] = plan["host_cores"].to_numpy(dtype=float)
            frame.loc[row, "recommended_memory_gb"] = plan["host_memory_gb"].to_numpy(dtype=float)
            frame.loc[row, "target_group"] = plan["target_group"].to_numpy(dtype=object)
            frame.loc[row, "recommended_monthly_cost"] = share
            frame.loc[row, "monthly_savings"] = current - share
            frame.loc[row, "reason"] = [
                f"consolidate into {g} ({n} servers on one {h}: {c:g} vCPU / {m:g} GB): combined peak "
                f"CPU {u:.0f} % and memory {v:.0f} % of the host, where packing by the sum of peaks would "
                f"count {su:.0f} % and {sv:.0f} %; {headroom * 100:.0f} % headroom kept at every step of the last "
                f"year (at today's level) and of the {packing_quantile} forecast; share of host cost "
                f"${s:,.0f}/month" + (f" vs ${k:,.0f} now" if np.isfinite(k) else "")
                for g, n, h, c, m, u, v, su, sv, s, k in zip(
                    *(
                        np.asarray(col).tolist()  # plain values: pandas/NumPy scalars format slowly
                        for col in (
                            plan["target_group"],
                            detail["members"],
                            plan["host_size"],
                            plan["host_cores"],
                            plan["host_memory_gb"],
                            plan["peak_cpu_util"],
                            plan["peak_mem_util"],
                            detail["sum_of_peaks_cpu_util"],
                            detail["sum_of_peaks_mem_util"],
                            share,
                            current,
                        )
                    ),
                    strict=True,
                )
            ]
    prof = None
    if profiles and "cpu_p95" in inputs.history:
        prof = workload_profiles(inputs)
    frame = frame[RECOMMENDATION_COLUMNS]
    return Recommendations(
        frame=frame, sizing=sizing, consolidation=cons, profiles=prof, summary=_summary(frame, cons)
    )


def recommend(
    forecasts: pd.DataFrame,
    history: pd.DataFrame,
    inventory: pd.DataFrame,
    *,
    headroom: float,
    idle_cpu_p95: float,
    catalog: pd.DataFrame = DEFAULT_CATALOG,
    rules: PlacementRules | None = None,
    host_size: str | None = None,
    quantile: str = "q50",
    packing_quantile: str = "q90",
    lookback_days: int = 90,
    min_savings_fraction: float = 0.1,
    consolidation: bool = True,
    profiles: bool = True,
    actuals: pd.DataFrame | None = None,
    origin: pd.Timestamp | str | None = None,
    freq: str | None = None,
    history_days: int | None = None,
) -> Recommendations:
    """Recommendations straight from the frames: :func:`prepare` + :func:`recommend_from_inputs`."""
    inputs = prepare(forecasts, history, inventory, origin=origin, freq=freq, history_days=history_days)
    return recommend_from_inputs(
        inputs,
        headroom=headroom,
        idle_cpu_p95=idle_cpu_p95,
        catalog=catalog,
        rules=rules,
        host_size=host_size,
        quantile=quantile,
        packing_quantile=packing_quantile,
        lookback_days=lookback_days,
        min_savings_fraction=min_savings_fraction,
        consolidation=consolidation,
        profiles=profiles,
        actuals=actuals,
    )


@dataclass(frozen=True)
class Analysis:
    """Everything one batch run derives from a forecast: the prepared arrays (keep them for
    what-ifs), the risk frame and the recommendations."""

    inputs: AnalyticsInputs
    risk: pd.DataFrame  # plan.RISK_COLUMNS
    recommendations: Recommendations


def analyze(
    forecasts: pd.DataFrame,
    history: pd.DataFrame,
    inventory: pd.DataFrame,
    *,
    thresholds: Mapping[str, float] | None = None,
    criticality_offsets: Mapping[str, float] | None = None,
    lead_time_days: Mapping[str, int] | None = None,
    headroom: float,
    idle_cpu_p95: float,
    catalog: pd.DataFrame = DEFAULT_CATALOG,
    rules: PlacementRules | None = None,
    host_size: str | None = None,
    quantile: str = "q50",
    packing_quantile: str = "q90",
    lookback_days: int = 90,
    min_savings_fraction: float = 0.1,
    consolidation: bool = True,
    profiles: bool = True,
    actuals: pd.DataFrame | None = None,
    origin: pd.Timestamp | str | None = None,
    freq: str | None = None,
    history_days: int | None = None,
) -> Analysis:
    """Risk and recommendations from one :func:`prepare` (what :func:`assess_risk` followed by
    :func:`recommend` computes, without aligning the frames twice)."""
    inputs = prepare(forecasts, history, inventory, origin=origin, freq=freq, history_days=history_days)
    risk = risk_table(
        inputs, thresholds=thresholds, criticality_offsets=criticality_offsets, lead_time_days=lead_time_days
    )
    recs = recommend_from_inputs(
        inputs,
        headroom=headroom,
        idle_cpu_p95=idle_cpu_p95,
        catalog=catalog,
        rules=rules,
        host_size=host_size,
        quantile=quantile,
        packing_quantile=packing_quantile,
        lookback_days=lookback_days,
        min_savings_fraction=min_savings_fraction,
        consolidation=consolidation,
        profiles=profiles,
        actuals=actuals,
    )
    return Analysis(inputs=inputs, risk=risk, recommendations=recs)
