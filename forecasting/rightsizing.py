"""Right-sizing facts: what size each server needs, on a size catalog.

Sizing covers the sustained demand — a high percentile of the period p95s over the lookback
(not one hour's spike) and the forecast peak of the expected path, seasonal peaks included —
for CPU and memory together, plus a headroom policy: a size fits when ``capacity × (1 −
headroom) ≥ demand``. It proposes; :mod:`forecasting.policy` decides, and
:mod:`forecasting.analytics` runs the pipeline.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .consolidation import (
    cheapest_fit,
    price_factors,
)
from .inputs import AnalyticsError, AnalyticsInputs, row_quantile
from .plan import QUANTILE_COLUMNS, RECOMMENDATION_COLUMNS
from .risk import format_date

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

# Idle needs at least this much history when the lookback is longer than what was observed.
MIN_IDLE_DAYS = 14


@dataclass(frozen=True)
class Sizing:
    """Per-server right-sizing: the recommendation rows before consolidation, and the demand."""

    frame: pd.DataFrame  # RECOMMENDATION_COLUMNS, one row per inventory server
    # server_id, cpu_peak_pct, mem_peak_pct, cores_needed, memory_needed_gb, idle, sizable,
    # cpu_only, and the cheapest fitting size: fit_size, fit_cores, fit_memory_gb, fit_monthly_cost
    demand: pd.DataFrame


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
    pairs = np.rec.fromarrays([np.asarray(cores, dtype=float), np.asarray(memory, dtype=float)])
    shapes, codes = np.unique(pairs, return_inverse=True)  # few distinct shapes: label each once
    labels = []
    for c, m in shapes.tolist():
        if not (np.isfinite(c) and np.isfinite(m)):
            labels.append("unknown")
        else:
            labels.append(lookup.get((float(c), float(m)), f"custom {c:g} vCPU / {m:g} GB"))
    return np.asarray(labels, dtype=object)[codes] if len(codes) else np.asarray([], dtype=object)


def _observed(
    inputs: AnalyticsInputs, metric: str, cols: np.ndarray, percentile: float, line: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per server over the history columns: the sustained peak (``percentile`` of the period
    p95s), the absolute max, the number of observed periods, and how many periods lie above
    ``line`` (the capacity a size keeps usable: short spikes are counted, not sized for)."""
    S = inputs.n_servers
    if metric not in inputs.history or not len(cols):
        nan = np.full(S, np.nan)
        return nan, nan, np.zeros(S, dtype=int), np.zeros(S, dtype=int)
    h = inputs.history[metric][:, cols]
    with np.errstate(invalid="ignore"):
        above = (h > line + 1e-9).sum(axis=1)
    return row_quantile(h, percentile / 100.0), _row_max(h), (~np.isnan(h)).sum(axis=1), above


def _window_text(periods: int, per_day: int) -> str:
    """'90 d' or, for hourly periods under two days, '36 h'."""
    if per_day > 1 and periods < 2 * per_day:
        return f"{periods} h"
    return f"{periods / per_day:.0f} d"


def size_servers(
    inputs: AnalyticsInputs,
    *,
    headroom: float,
    idle_cpu_p95: float,
    catalog: pd.DataFrame = DEFAULT_CATALOG,
    quantile: str = "q50",
    lookback_days: int = 90,
    min_savings_fraction: float = 0.1,
    sizing_percentile: float = 99.0,
) -> Sizing:
    """Size every server of the inventory on its sustained demand (facts for the policy).

    Demand = max(forecast peak of the ``quantile`` path, the ``sizing_percentile`` of the period
    p95s over the last ``lookback_days``) for CPU and memory: a size must hold what the server
    does every week, not one hour's spike (spikes above the usable capacity are counted and named
    in the reason, never alone a reason to upgrade). Required capacity = demand ÷ (1 − headroom).
    A server with CPU data but no memory metric (EC2's CloudWatch default) is sized on CPU and
    keeps its provisioned memory, and the reason says so.

    A recommended size costs its catalog price × the server's price factor (current cost ÷ the
    catalog-equivalent price of its current shape), so licences and storage a server pays for are
    carried over and the saving reflects the smaller shape, not a different rate card.
    The proposal (the policy in :mod:`forecasting.policy` makes the final call): decommission
    review when every period's CPU p95 and the forecast peak stay below ``idle_cpu_p95`` over the
    lookback (one busy day may be a quarterly job), or over the history there is when it is shorter (at least :data:`MIN_IDLE_DAYS`);
    upgrade when the current size does not hold the demand with headroom; right-size when a
    smaller catalog size fits and saves at least ``min_savings_fraction``; otherwise keep.
    """
    if not 0 <= headroom < 1:
        raise AnalyticsError(f"headroom {headroom} must be in [0, 1)")
    if not (math.isfinite(idle_cpu_p95) and 0 <= idle_cpu_p95 <= 100):
        raise AnalyticsError(f"idle_cpu_p95 {idle_cpu_p95} must be a percentage in [0, 100]")
    if lookback_days < 1:
        raise AnalyticsError(f"lookback_days {lookback_days} must be ≥ 1")
    if not (math.isfinite(sizing_percentile) and 50 <= sizing_percentile <= 100):
        raise AnalyticsError(f"sizing_percentile {sizing_percentile} must be in [50, 100]")
    if quantile not in QUANTILE_COLUMNS:
        raise AnalyticsError(f"unknown quantile {quantile!r}: use one of {', '.join(QUANTILE_COLUMNS)}")
    cat = validate_catalog(catalog)
    inv = inputs.inventory
    S = inputs.n_servers
    qi = QUANTILE_COLUMNS.index(quantile)
    ppd = inputs.periods_per_day
    lb = lookback_days * ppd
    h_cols = np.flatnonzero(inputs.history_index <= inputs.origin)[-lb:]
    line = 100 * (1 - headroom)

    obs, top, count, spikes, fc_peak, peaks = {}, {}, {}, {}, {}, {}
    for metric in ("cpu_p95", "mem_p95"):
        # the observed part does not change with a scenario's growth: computed once per run
        obs[metric], top[metric], count[metric], spikes[metric] = inputs.memoised(
            ("sizing-history", metric, lb, float(sizing_percentile), line),
            (inputs.history.get(metric), inputs.history_index, inputs.origin, inv),
            lambda metric=metric: _observed(inputs, metric, h_cols, sizing_percentile, line),
        )
        fc_peak[metric] = _row_max(inputs.path(metric, qi))
        peaks[metric] = np.fmax(obs[metric], fc_peak[metric])

    cores = inv["cpu_cores"].to_numpy(dtype=float)
    memory = inv["memory_gb"].to_numpy(dtype=float)
    cost = inv["monthly_cost_usd"].to_numpy(dtype=float)
    cpu_pct, mem_pct = peaks["cpu_p95"], peaks["mem_p95"]
    has_capacity = np.isfinite(cores) & (cores > 0) & np.isfinite(memory) & (memory > 0)
    cpu_only = np.isfinite(cpu_pct) & ~np.isfinite(mem_pct)
    sizable = has_capacity & np.isfinite(cpu_pct)
    demand_cores = cpu_pct / 100.0 * cores
    demand_mem = np.where(cpu_only, memory, mem_pct / 100.0 * memory)
    need_cores = demand_cores / (1 - headroom)
    need_mem = np.where(cpu_only, memory, demand_mem / (1 - headroom))

    observed = count["cpu_p95"]
    with np.errstate(invalid="ignore"):
        enough_obs = observed >= min(lb, MIN_IDLE_DAYS * ppd)
        idle = (
            sizable
            & enough_obs
            & (top["cpu_p95"] < idle_cpu_p95)  # every period: one busy day may be a quarterly job
            & (np.isnan(fc_peak["cpu_p95"]) | (fc_peak["cpu_p95"] < idle_cpu_p95))
        )
        fits_now = (cpu_pct <= line + 1e-9) & (cpu_only | (mem_pct <= line + 1e-9))
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
    unit = "h" if ppd > 1 else "d"
    # plain Python values: the sentences below are formatted per server
    L = {
        k: np.asarray(v).tolist()
        for k, v in {
            "a": action, "cap": has_capacity, "sz": sizable, "cpu": cpu_pct, "mem": mem_pct,
            "dc": demand_cores, "dm": demand_mem, "cores": cores, "memory": memory, "nc": need_cores,
            "nm": need_mem, "cost": cost, "fc": fc_peak["cpu_p95"], "obs": obs["cpu_p95"],
            "top": top["cpu_p95"], "n": observed, "sc": spikes["cpu_p95"], "sm": spikes["mem_p95"],
            "co": cpu_only, "rname": rname, "rc": rc, "rm": rm, "rcost": rcost, "nofit": no_fit,
            "smaller": smaller, "sav": savings,
        }.items()
    }  # fmt: skip
    fin = math.isfinite
    pct_txt = f"p{sizing_percentile:g}"
    reasons = []
    for i in range(S):
        a = L["a"][i]
        if not L["cap"][i]:
            reasons.append("capacity unknown (cpu_cores or memory_gb missing in the inventory): cannot size")
            continue
        cpu_i, mem_i, cost_i, n_i = L["cpu"][i], L["mem"][i], L["cost"][i], L["n"][i]
        if not L["sz"][i]:
            reasons.append("no CPU history or forecast to size from: keep as is")
            continue
        window = f"last {lookback_days} d" if n_i >= lb else f"{_window_text(n_i, ppd)} observed"
        mem_txt = (
            f"memory kept as provisioned ({L['memory'][i]:g} GB: no memory metric)"
            if L["co"][i]
            else f"memory {L['dm'][i]:.1f} of {L['memory'][i]:g} GB ({mem_i:.0f} %)"
        )
        demand_txt = (
            f"sustained CPU {L['dc'][i]:.1f} of {L['cores'][i]:g} cores ({cpu_i:.0f} %), {mem_txt}: "
            f"{pct_txt} of the {window} and the forecast to {end}"
        )
        short = [
            f"{k} {unit} above {line:.0f} % {name}"
            for name, k, v in (("CPU", L["sc"][i], cpu_i), ("memory", L["sm"][i], mem_i))
            if k and not (fin(v) and v > line + 1e-9)
        ]
        if short:
            demand_txt += (
                f" (short spikes not sized for: {' and '.join(short)} in {window.split(' observed')[0]})"
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
                f"idle: CPU p95 below {idle_cpu_p95:g} % throughout the {window} (max {L['top'][i]:.1f} %"
                f"{fc_txt}); review for decommissioning"
                + (f", saves ${cost_i:,.0f}/month" if fin(cost_i) else "")
            )
        elif a == "upgrade":
            short_of = [n for n, v in (("CPU", cpu_i), ("memory", mem_i)) if fin(v) and v > line + 1e-9 and n]
            if L["co"][i]:
                short_of = [n for n in short_of if n == "CPU"]
            tail = (
                f"; even the largest size ({rname_i}: {rc_i:g} vCPU / {rm_i:g} GB) is short: split the workload"
                if L["nofit"][i]
                else f" → {rname_i} ({rc_i:g} vCPU / {rm_i:g} GB, ${rcost_i:,.0f}/month; {cost_txt})"
            )
            reasons.append(f"undersized ({' and '.join(short_of)}): {demand_txt}; {need_txt}{tail}")
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
            "held_back": "",
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
            "cpu_only": cpu_only,
            "fit_size": rname,
            "fit_cores": rc,
            "fit_memory_gb": rm,
            "fit_monthly_cost": rcost,
        }
    )
    return Sizing(frame=frame[RECOMMENDATION_COLUMNS], demand=demand)
