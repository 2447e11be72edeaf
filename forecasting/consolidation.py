"""Peak-aware consolidation: pack workloads onto as few hosts as their *time series* allow.

Packing by the sum of individual peaks (what most tools do) wastes hosts whenever peaks do not
coincide: a month-end batch server and a business-hours web server never peak together. Here a
host accepts a workload only if, at every step of the recent history and of the forecast horizon,
the summed CPU cores and memory GB stay under capacity × (1 − headroom). The same candidates are
also packed by sum of peaks, so the saving is measured side by side, and both plans are replayed
against actual series to count capacity violations.

Algorithm (per region × environment, and business unit when the rules ask): first-fit-decreasing
order by normalised peak; each workload goes to the feasible host whose normalised peak grows
least (so complementary shapes meet), else opens a host. Placement rules: at most N servers of a
criticality tier per host (default: never two critical servers together), anti-affinity pairs
(DR pairs), optional host member limit. Each host is then shrunk to the cheapest catalog size
that still holds its summed series with headroom.

The catalog is passed in (see :mod:`forecasting.rightsizing` for the default and validation), so
this module depends only on the prepared inputs.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field

import numba
import numpy as np
import pandas as pd

from .inputs import AnalyticsError, AnalyticsInputs, prepare
from .jit_cache import seed_numba_cache
from .plan import CONSOLIDATION_COLUMNS, QUANTILE_COLUMNS
from .schema import CRITICALITY_ORDER

# In the image: the kernels compiled at build time, copied into an empty /tmp (Lambda) before
# the first one runs (a no-op in a source checkout; see forecasting/jit_cache.py).
seed_numba_cache()

PACKING_METHODS = ("peak-aware", "sum-of-peaks")
# Recent history packed alongside the forecast horizon (periods of history per frequency).
DEFAULT_HISTORY_PERIODS = {"daily": 365, "hourly": 28 * 24}
_EPS = 1e-9
# Past periods are replayed at today's level: the level is a 28-day mean, scaled up at most 2×.
LEVEL_WINDOW_DAYS = 28
MAX_LEVEL_RATIO = 2.0


@dataclass(frozen=True)
class PlacementRules:
    """Which workloads may share a host (region and environment always must match)."""

    same_business_unit: bool = False  # only co-locate servers of one business unit
    max_per_host_by_criticality: Mapping[str, int] = field(default_factory=lambda: {"critical": 1})
    excluded_criticality: tuple[str, ...] = ()  # tiers never consolidated
    anti_affinity: tuple[tuple[str, str], ...] = ()  # pairs never on one host (e.g. DR pairs)
    max_servers_per_host: int | None = None

    def __post_init__(self) -> None:
        bad = set(self.max_per_host_by_criticality) | set(self.excluded_criticality)
        bad -= {*CRITICALITY_ORDER, "unknown"}
        if bad:
            raise AnalyticsError(f"placement rules: unknown criticality tier(s) {sorted(bad)}")
        for tier, n in self.max_per_host_by_criticality.items():
            if not isinstance(n, int) or n < 1:
                raise AnalyticsError(f"placement rules: max {tier} servers per host must be an integer ≥ 1")
        if self.max_servers_per_host is not None and self.max_servers_per_host < 1:
            raise AnalyticsError("placement rules: max_servers_per_host must be ≥ 1")
        for pair in self.anti_affinity:
            if len(pair) != 2 or pair[0] == pair[1]:
                raise AnalyticsError(f"placement rules: anti-affinity pair {pair!r} must name two servers")


# --------------------------------------------------------------------------- packing core


@dataclass(frozen=True)
class Packing:
    """Result of :func:`pack`: a group per item (−1 = unplaceable, with a reason)."""

    group: np.ndarray  # (n,) int
    reason: np.ndarray  # (n,) object, '' for placed items
    n_groups: int
    cpu_load: np.ndarray  # (G, T) summed demand per group
    mem_load: np.ndarray  # (G, T)


def pack(
    cpu: np.ndarray,
    mem: np.ndarray,
    *,
    host_cores: float,
    host_memory_gb: float,
    headroom: float,
    partition: Sequence[str] | np.ndarray | None = None,
    tier: Sequence[str] | np.ndarray | None = None,
    rules: PlacementRules | None = None,
    anti_pairs: np.ndarray | None = None,
    method: str = "peak-aware",
    host_label: str = "host",
) -> Packing:
    """Pack items with demand series ``cpu``/``mem`` (n × T, cores and GB) onto identical hosts.

    Items only share a host within one ``partition`` label. ``anti_pairs`` (k × 2 item indices)
    never share a host. ``method='sum-of-peaks'`` packs each item's peak as a constant: the
    baseline planners use today. Invariant: for every group and step, summed demand ≤
    capacity × (1 − headroom); items that cannot meet it alone, or lack data, are unplaceable.
    """
    if method not in PACKING_METHODS:
        raise AnalyticsError(f"unknown packing method {method!r}: use one of {', '.join(PACKING_METHODS)}")
    if not 0 <= headroom < 1:
        raise AnalyticsError(f"headroom {headroom} must be in [0, 1)")
    if not (host_cores > 0 and host_memory_gb > 0):
        raise AnalyticsError("host capacity must be positive")
    cpu = np.asarray(cpu, dtype=float)
    mem = np.asarray(mem, dtype=float)
    if cpu.ndim != 2 or cpu.shape != mem.shape:
        raise AnalyticsError(
            f"cpu and mem demand must be 2-D arrays of one shape, got {cpu.shape} and {mem.shape}"
        )
    rules = rules or PlacementRules()
    n = cpu.shape[0]
    partition = np.zeros(n, dtype=object) if partition is None else np.asarray(partition, dtype=object)
    tier = np.full(n, "unknown", dtype=object) if tier is None else np.asarray(tier, dtype=object)
    cap = np.array([host_cores, host_memory_gb]) * (1.0 - headroom)
    limit = cap * (1 + 1e-12) + _EPS

    if cpu.shape[1]:  # NaN peaks mark incomplete series (a NaN anywhere makes the max NaN)
        cpu_peak, mem_peak = cpu.max(axis=1), mem.max(axis=1)
        no_data = np.isnan(cpu_peak) | np.isnan(mem_peak)
        negative = ~no_data & ((cpu.min(axis=1) < 0) | (mem.min(axis=1) < 0))
    else:
        cpu_peak = mem_peak = np.full(n, -np.inf)
        no_data, negative = np.ones(n, dtype=bool), np.zeros(n, dtype=bool)
    reason = np.full(n, "", dtype=object)
    too_big = ~no_data & ~negative & ((cpu_peak > limit[0]) | (mem_peak > limit[1]))
    reason[no_data] = "incomplete CPU or memory demand series"
    reason[negative] = "negative demand values"
    for i in np.flatnonzero(too_big):
        reason[i] = (
            f"needs {cpu_peak[i]:.1f} cores / {mem_peak[i]:.0f} GB at peak, more than one {host_label} "
            f"holds with {headroom * 100:.0f} % headroom ({cap[0]:.1f} cores / {cap[1]:.0f} GB)"
        )
    placeable = reason == ""

    if method == "sum-of-peaks":
        d_cpu, d_mem = cpu_peak[:, None].copy(), mem_peak[:, None].copy()
    else:
        d_cpu, d_mem = cpu, mem
    T = d_cpu.shape[1]
    demand = np.empty((n, 2, T))  # only placeable rows are ever read
    demand[:, 0], demand[:, 1] = d_cpu, d_mem
    size = np.where(placeable, cpu_peak / cap[0] + mem_peak / cap[1], -1.0)
    peak_at = demand.argmax(axis=2)  # (n, 2) each item's peak step per resource
    order = np.argsort(-size, kind="stable")

    # placement rules as arrays for the kernel: tier codes and caps, partners in CSR form
    tier_codes, tier_names = pd.factorize(pd.Series(tier, dtype=object), sort=True)
    limits = dict(rules.max_per_host_by_criticality)
    tier_cap = np.array([limits.get(t, -1) for t in tier_names], dtype=np.int64)
    pairs = np.asarray(anti_pairs if anti_pairs is not None else np.zeros((0, 2)), dtype=np.int64)
    pairs = pairs.reshape(-1, 2)
    both = np.concatenate([pairs, pairs[:, ::-1]])
    both = both[np.argsort(both[:, 0], kind="stable")]
    partner_ptr = np.searchsorted(both[:, 0], np.arange(n + 1)).astype(np.int64)
    max_members = -1 if rules.max_servers_per_host is None else int(rules.max_servers_per_host)

    part_codes, part_names = pd.factorize(pd.Series(partition, dtype=object), sort=True)
    jobs = [
        items.astype(np.int64)
        for p in range(len(part_names))
        if len(items := order[(part_codes[order] == p) & placeable[order]])
    ]

    tiers, partner_idx = tier_codes.astype(np.int64), np.ascontiguousarray(both[:, 1])

    def pack_one(items: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        # its own group array: a partner in another partition reads as unplaced (as it never shares)
        local = np.full(n, -1, dtype=np.int64)
        loads = _pack_partition(
            demand,
            peak_at,
            items,
            tiers,
            tier_cap,
            max_members,
            partner_ptr,
            partner_idx,
            local,
            limit,
            cap,
            method == "peak-aware",
        )
        return local[items], loads

    group = np.full(n, -1, dtype=np.int64)
    loads_all: list[np.ndarray] = []
    next_group = 0
    for items, (local, loads) in zip(jobs, _each_partition(pack_one, jobs), strict=True):
        group[items] = local + next_group  # numbered in partition order, as one pass would
        loads_all.append(loads)
        next_group += len(loads)
    if loads_all:
        loads = np.concatenate(loads_all, axis=0)
    else:
        loads = np.zeros((0, 2, T))
    return Packing(
        group=group, reason=reason, n_groups=next_group, cpu_load=loads[:, 0], mem_load=loads[:, 1]
    )


def _each_partition(fn, jobs: list[np.ndarray]) -> list:
    """``fn`` over the partitions, each one task of a thread pool: the compiled kernel releases
    the GIL, so partitions pack in parallel on every core. The results do not depend on the
    order the tasks run in (each writes only its own arrays)."""
    if len(jobs) < 2:
        return [fn(j) for j in jobs]
    with ThreadPoolExecutor(max_workers=min(len(jobs), os.cpu_count() or 1)) as pool:
        return list(pool.map(fn, jobs))


@numba.njit(cache=True, nogil=True)
def _pack_partition(
    demand: np.ndarray,
    peak_at: np.ndarray,
    items: np.ndarray,
    tier_code: np.ndarray,
    tier_cap: np.ndarray,
    max_members: int,
    partner_ptr: np.ndarray,
    partner_idx: np.ndarray,
    group: np.ndarray,
    limit: np.ndarray,
    cap: np.ndarray,
    best_fit: bool,
) -> np.ndarray:  # pragma: no cover - compiled; tests/test_consolidation.py checks it against a reference
    """Place one partition's ``items`` (in order) on hosts; writes their host (0, 1, …) into
    ``group`` (-1 elsewhere: this partition's own array), returns (hosts, 2, T) loads.

    ``best_fit``: the open host whose summed peaks (as fractions of capacity) grow least, ties
    to the lowest index (peak-aware); otherwise the first host that fits (sum of peaks, T = 1).
    A host is ruled out by the placement rules, then cheaply by the load at the item's own peak
    steps; before the exact check of its whole series, a lower bound on the growth (those steps
    and the host's own peak steps) skips hosts that cannot beat the best found. Compiled: the
    per-item work of a 10,000-server what-if is otherwise Python overhead.
    """
    k, T = len(items), demand.shape[2]
    loads = np.zeros((k, 2, T))
    peaks = np.zeros((k, 2))
    peaks_at = np.zeros((k, 2), dtype=np.int64)
    fullness = np.zeros(k)
    members = np.zeros(k, dtype=np.int64)
    tier_counts = np.zeros((k, len(tier_cap)), dtype=np.int64)
    barred = np.zeros(k, dtype=np.bool_)
    nb = 0
    for i in items:
        t_i = tier_code[i]
        for j in range(partner_ptr[i], partner_ptr[i + 1]):
            g = group[partner_idx[j]]
            if g >= 0:  # a partner already on a host (``group`` is this partition's alone)
                barred[g] = True
        p0, p1 = peak_at[i, 0], peak_at[i, 1]
        best, best_growth = -1, np.inf
        for b in range(nb):
            if barred[b] or (0 <= tier_cap[t_i] <= tier_counts[b, t_i]) or (0 <= max_members <= members[b]):
                continue
            g0 = loads[b, 0, p0] + demand[i, 0, p0]
            g1 = loads[b, 1, p1] + demand[i, 1, p1]
            if g0 > limit[0] or g1 > limit[1]:
                continue
            if best_fit and best >= 0:
                h0 = peaks[b, 0] + demand[i, 0, peaks_at[b, 0]]
                h1 = peaks[b, 1] + demand[i, 1, peaks_at[b, 1]]
                # the exact growth's arithmetic on two of its steps: never above it
                if (max(g0, h0) / cap[0] + max(g1, h1) / cap[1]) - fullness[b] >= best_growth:
                    continue  # cannot beat the best (a tie goes to the lower index, the best)
            fits, m0, m1 = True, -np.inf, -np.inf
            for t in range(T):
                a0 = loads[b, 0, t] + demand[i, 0, t]
                a1 = loads[b, 1, t] + demand[i, 1, t]
                if a0 > limit[0] or a1 > limit[1]:
                    fits = False
                    break
                m0, m1 = max(m0, a0), max(m1, a1)
            if not fits:
                continue
            if not best_fit:
                best = b
                break
            growth = (m0 / cap[0] + m1 / cap[1]) - fullness[b]
            if growth < best_growth:
                best, best_growth = b, growth
        for j in range(partner_ptr[i], partner_ptr[i + 1]):
            g = group[partner_idx[j]]
            if g >= 0:
                barred[g] = False
        if best < 0:
            best = nb
            nb += 1
        for r in range(2):
            top = 0
            for t in range(T):
                loads[best, r, t] += demand[i, r, t]
                if loads[best, r, t] > loads[best, r, top]:
                    top = t
            peaks_at[best, r] = top
            peaks[best, r] = loads[best, r, top]
        fullness[best] = peaks[best, 0] / cap[0] + peaks[best, 1] / cap[1]
        members[best] += 1
        tier_counts[best, t_i] += 1
        group[i] = best
    return loads[:nb]


def warm_up() -> None:
    """Compile the packing and replay kernels now (or load them from numba's cache): a server
    calls this at start-up so its first consolidation what-if does not wait the ~2 s a first
    compile takes."""
    demand = np.ones((2, 3))
    pack(demand, demand, host_cores=4, host_memory_gb=4, headroom=0.2)
    replay_arrays(np.zeros(2, dtype=np.int64), np.ones(1), np.ones(1), demand, demand)


# --------------------------------------------------------------------------- catalog helpers


def cheapest_fit(cores_needed: np.ndarray, memory_needed_gb: np.ndarray, catalog: pd.DataFrame) -> np.ndarray:
    """Row position in ``catalog`` of the cheapest size with cores ≥ need and memory ≥ need (−1 = none).

    Ties in price go to fewer cores, then less memory. NaN needs give −1.
    """
    cat = catalog.reset_index(drop=True)
    order = np.lexsort(
        (cat["memory_gb"].to_numpy(), cat["cores"].to_numpy(), cat["monthly_cost_usd"].to_numpy())
    )
    cores = cat["cores"].to_numpy(dtype=float)[order]
    memory = cat["memory_gb"].to_numpy(dtype=float)[order]
    c = np.asarray(cores_needed, dtype=float)[:, None]
    m = np.asarray(memory_needed_gb, dtype=float)[:, None]
    with np.errstate(invalid="ignore"):
        fits = (cores[None, :] >= c - _EPS) & (memory[None, :] >= m - _EPS)
    found = fits.any(axis=1)
    return np.where(found, order[np.argmax(fits, axis=1)], -1)


def default_host_size(
    catalog: pd.DataFrame,
    cpu_peaks: np.ndarray | None = None,
    mem_peaks: np.ndarray | None = None,
    max_cores: float = 64,
) -> str:
    """The packing host: the catalog size shaped like the workload.

    Per family, its largest size with at most ``max_cores`` cores (a failure domain planners
    accept); of those, the one with the lowest estimated cost for the candidates,
    ``max(Σ CPU peaks ÷ cores, Σ memory peaks ÷ GB) × price`` — so a memory-heavy fleet packs onto
    memory-heavy hosts and CPU timing, where peak-awareness pays, is what binds. Without demand,
    the size with the most cores.
    """
    cat = catalog.reset_index(drop=True)
    fam = cat["family"].astype(str) if "family" in cat.columns else pd.Series("", index=cat.index)
    small = cat["cores"] <= max_cores
    pool = cat[small] if small.any() else cat[cat["cores"] == cat["cores"].min()]
    best_per_family = pool.assign(_f=fam[pool.index]).sort_values(
        ["cores", "memory_gb"], ascending=False, kind="stable"
    )
    best_per_family = best_per_family.drop_duplicates("_f")
    if cpu_peaks is None or mem_peaks is None or not len(cpu_peaks):
        return str(best_per_family.iloc[0]["size"])
    need_c = float(np.nansum(cpu_peaks))
    need_m = float(np.nansum(mem_peaks))
    hosts = np.maximum(
        need_c / best_per_family["cores"].to_numpy(), need_m / best_per_family["memory_gb"].to_numpy()
    )
    est = hosts * best_per_family["monthly_cost_usd"].to_numpy()
    return str(best_per_family.iloc[int(np.argmin(est))]["size"])


def catalog_unit_prices(catalog: pd.DataFrame) -> tuple[float, float]:
    """($ per core-month, $ per GB-month) that best explain the catalog's prices (non-negative LSQ)."""
    from scipy.optimize import nnls

    A = catalog[["cores", "memory_gb"]].to_numpy(dtype=float)
    (per_core, per_gb), _ = nnls(A, catalog["monthly_cost_usd"].to_numpy(dtype=float))
    return float(per_core), float(per_gb)


def price_factors(inventory: pd.DataFrame, catalog: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """(current cost ÷ catalog-equivalent price, the equivalent price) per server.

    A server's bill carries more than cores and memory (licences, storage, HA); pricing a new
    size at catalog price × this factor keeps that premium, so savings compare like with like.
    Servers with unknown cost or capacity get factor 1.
    """
    per_core, per_gb = catalog_unit_prices(catalog)
    equiv = per_core * inventory["cpu_cores"].to_numpy(dtype=float) + per_gb * inventory[
        "memory_gb"
    ].to_numpy(dtype=float)
    cost = inventory["monthly_cost_usd"].to_numpy(dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = cost / equiv
    ok = np.isfinite(factor) & (factor > 0)
    return np.where(ok, factor, 1.0), equiv


# --------------------------------------------------------------------------- demand series


def _level_ratio(hist: np.ndarray, window: int) -> np.ndarray:
    """(S, T) how much higher each series runs now than around each past period.

    Ratio of the mean of the last ``window`` periods to the centred ``window``-period mean around
    t, clipped to [1, MAX_LEVEL_RATIO]: a growing server's past peaks are replayed at today's level,
    a shrinking one's are kept as they were (never scaled down).
    """
    S, T = hist.shape
    if T == 0:
        return np.ones((S, 0))
    w = max(1, min(window, T))
    seen = ~np.isnan(hist)
    c_val = np.concatenate([np.zeros((S, 1)), np.cumsum(np.where(seen, hist, 0.0), axis=1)], axis=1)
    c_cnt = np.concatenate([np.zeros((S, 1)), np.cumsum(seen, axis=1)], axis=1)
    lo = np.clip(np.arange(T) - w // 2, 0, T - w)
    hi = lo + w
    with np.errstate(invalid="ignore", divide="ignore"):
        around = (c_val[:, hi] - c_val[:, lo]) / (c_cnt[:, hi] - c_cnt[:, lo])
        now = (c_val[:, T] - c_val[:, T - w]) / (c_cnt[:, T] - c_cnt[:, T - w])
        ratio = now[:, None] / around
    return np.clip(np.nan_to_num(ratio, nan=1.0, posinf=1.0), 1.0, MAX_LEVEL_RATIO)


def _history_demand(
    inputs: AnalyticsInputs, metric: str, cols: np.ndarray, level_adjust: bool, units: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(S, T) the history part of :func:`demand_series` in cores or GB (``units``: capacity per
    server), gaps filled, and (S,) its max in percent."""
    S = inputs.n_servers
    hist = inputs.history[metric][:, cols] if metric in inputs.history else np.full((S, len(cols)), np.nan)
    if level_adjust and hist.shape[1]:
        hist = hist * _level_ratio(hist, LEVEL_WINDOW_DAYS * inputs.periods_per_day)
    with np.errstate(invalid="ignore"):
        hmax = (
            np.nanmax(np.where(np.isnan(hist), -np.inf, hist), axis=1)
            if hist.shape[1]
            else np.full(S, -np.inf)
        )
    hmax = np.where(np.isfinite(hmax), hmax, np.nan)
    return np.where(np.isnan(hist), hmax[:, None], hist) / 100.0 * units, hmax


def demand_series(
    inputs: AnalyticsInputs,
    *,
    quantile: str = "q90",
    history_periods: int | None = None,
    level_adjust: bool = True,
) -> tuple[np.ndarray, np.ndarray, pd.DatetimeIndex]:
    """(S, T) CPU cores and memory GB over recent history + forecast horizon, and their time index.

    The forecast part is the chosen quantile path under the scenario (growth, seasonal peaks the
    model lacks). With ``level_adjust`` the history part is replayed at today's level for series
    that grew (last year's year-end peak of a server that has since grown 20 % counts 20 % higher).
    Missing history periods take the series' window maximum (conservative); a metric with history
    but no forecast keeps its history maximum over the horizon.
    """
    if quantile not in QUANTILE_COLUMNS:
        raise AnalyticsError(f"unknown quantile {quantile!r}: use one of {', '.join(QUANTILE_COLUMNS)}")
    qi = QUANTILE_COLUMNS.index(quantile)
    Th = DEFAULT_HISTORY_PERIODS[inputs.freq] if history_periods is None else int(history_periods)
    h_idx = (
        inputs.history_index[inputs.history_index <= inputs.origin][-Th:]
        if Th > 0
        else inputs.history_index[:0]
    )
    cols = inputs.history_index.get_indexer(h_idx)
    out = []
    inv = inputs.inventory
    T = len(cols)
    for metric, capacity in (("cpu_p95", "cpu_cores"), ("mem_p95", "memory_gb")):
        units = inv[capacity].to_numpy(dtype=float)[:, None]
        # the history part does not change with a scenario: computed once per run's inputs
        hist, hmax = inputs.memoised(
            ("demand-history", metric, Th, level_adjust),
            (inputs.history.get(metric), inputs.history_index, inputs.origin, inv),
            lambda metric=metric, units=units: _history_demand(inputs, metric, cols, level_adjust, units),
        )
        fc = inputs.path(metric, qi)
        fc = np.where(np.isnan(fc) & ~np.isnan(hmax)[:, None], hmax[:, None], fc)
        series = np.empty((inputs.n_servers, T + fc.shape[1]))
        series[:, :T] = hist
        np.multiply(fc / 100.0, units, out=series[:, T:])
        if metric == "mem_p95":  # no memory metric at all (CPU-only telemetry): memory as provisioned
            blind = np.isnan(series).all(axis=1) & ~np.isnan(out[0]).all(axis=1)
            series[blind] = units[blind]
        out.append(series)
    index = h_idx.append(inputs.index)
    return out[0], out[1], index


# --------------------------------------------------------------------------- replay


@dataclass(frozen=True)
class Replay:
    """Capacity violations of a plan replayed on actual series."""

    violations: int  # (host group, period) pairs where summed CPU or memory exceeded the host
    groups_violating: int
    periods: int  # periods replayed
    worst_cpu_util: float  # highest summed CPU as % of its host
    worst_mem_util: float


def replay_arrays(
    group: np.ndarray, host_cores: np.ndarray, host_memory_gb: np.ndarray, cpu: np.ndarray, mem: np.ndarray
) -> Replay:
    """Replay groups (item → group index, −1 skipped) on actual cores/GB series (n × T)."""
    return _replay(group, host_cores, host_memory_gb, *_replay_arrays(cpu, mem))


def _replay_arrays(cpu: np.ndarray, mem: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Actual series as replay reads them: NaN as 0, and where either resource was observed."""
    return np.nan_to_num(cpu), np.nan_to_num(mem), ~np.isnan(cpu) | ~np.isnan(mem)


def _history_cores(inputs: AnalyticsInputs) -> tuple[np.ndarray, np.ndarray]:
    """(S, T) every server's CPU cores and memory GB used over the history in ``inputs``."""
    inv = inputs.inventory
    out = []
    for metric, capacity in (("cpu_p95", "cpu_cores"), ("mem_p95", "memory_gb")):
        hist = inputs.history.get(metric)
        if hist is None:
            hist = np.full((inputs.n_servers, len(inputs.history_index)), np.nan)
        out.append(hist / 100.0 * inv[capacity].to_numpy(dtype=float)[:, None])
    return out[0], out[1]


@numba.njit(cache=True, nogil=True)
def _group_sums(
    rows: np.ndarray, groups: np.ndarray, G: int, cpu: np.ndarray, mem: np.ndarray, seen: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    """(G, T) summed CPU and memory of the items (``rows`` of the arrays, in ``groups``), and
    whether any member was observed: one pass, without copying the members' series."""
    T = cpu.shape[1]
    sum_cpu, sum_mem = np.zeros((G, T)), np.zeros((G, T))
    observed = np.zeros((G, T), dtype=np.bool_)
    for k in range(len(rows)):
        r, g = rows[k], groups[k]
        for t in range(T):
            sum_cpu[g, t] += cpu[r, t]
            sum_mem[g, t] += mem[r, t]
            observed[g, t] |= seen[r, t]
    return sum_cpu, sum_mem, observed


def _replay(
    group: np.ndarray,
    host_cores: np.ndarray,
    host_memory_gb: np.ndarray,
    cpu: np.ndarray,
    mem: np.ndarray,
    seen: np.ndarray,
    rows: np.ndarray | None = None,
) -> Replay:
    """:func:`replay_arrays` on prepared arrays (:func:`_replay_arrays`); item i is row
    ``rows[i]`` of them (row i without ``rows``), so fleet-wide arrays serve any candidate set."""
    placed = np.flatnonzero(group >= 0)
    G = len(host_cores)
    T = cpu.shape[1]
    if len(placed) == 0 or T == 0 or G == 0:
        return Replay(0, 0, T, 0.0, 0.0)
    order = placed[np.argsort(group[placed], kind="stable")]
    g_sorted = group[order]
    starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
    gids = g_sorted[starts]
    take = order if rows is None else np.asarray(rows)[order]
    sum_cpu, sum_mem, observed = _group_sums(
        take.astype(np.int64), g_sorted.astype(np.int64), G, cpu, mem, seen
    )
    sum_cpu, sum_mem, observed = sum_cpu[gids], sum_mem[gids], observed[gids]
    hc = np.asarray(host_cores, dtype=float)[gids][:, None]
    hm = np.asarray(host_memory_gb, dtype=float)[gids][:, None]
    bad = observed & ((sum_cpu > hc * (1 + 1e-9)) | (sum_mem > hm * (1 + 1e-9)))
    return Replay(
        violations=int(bad.sum()),
        groups_violating=int(bad.any(axis=1).sum()),
        periods=T,
        worst_cpu_util=float(np.max(sum_cpu / hc) * 100),
        worst_mem_util=float(np.max(sum_mem / hm) * 100),
    )


def replay_plan(plan: pd.DataFrame, metrics: pd.DataFrame, inventory: pd.DataFrame) -> Replay:
    """Replay a plan (CONSOLIDATION_COLUMNS) on actual wide metrics, e.g. a held-out period.

    A violation is a (group, period) whose summed CPU cores or memory GB exceed the host.
    """
    for col in ("target_group", "server_id", "host_cores", "host_memory_gb"):
        if col not in plan.columns:
            raise AnalyticsError(f"plan is missing column {col!r}")
    inv = inventory.set_index(inventory["server_id"].astype(str))
    a = plan.reset_index(drop=True)
    sid = a["server_id"].astype(str)
    missing = ~sid.isin(inv.index)
    if missing.any():
        raise AnalyticsError(f"plan names servers not in the inventory: {', '.join(sid[missing][:3])}")
    cpu, mem = _actual_arrays(sid, inv.loc[sid], metrics)
    g_codes, _ = pd.factorize(a["target_group"], sort=False)
    hosts = a.groupby(g_codes)[["host_cores", "host_memory_gb"]].first().sort_index()
    return replay_arrays(
        g_codes, hosts["host_cores"].to_numpy(), hosts["host_memory_gb"].to_numpy(), cpu, mem
    )


# --------------------------------------------------------------------------- consolidation


@dataclass(frozen=True)
class ConsolidationSummary:
    """Figures a planner (and the run manifest) reads first.

    Servers left alone by the packing stay on their own server (right-sizing is a separate
    recommendation), so costs and violations here are those of consolidation itself.
    """

    candidates: int
    placed: int  # candidates the packing could place (in a group or alone)
    unplaceable: int
    hosts_before: int  # each placed candidate on its own server today
    hosts_after: int  # host groups + servers left alone
    servers_freed: int
    groups: int  # host groups of two or more servers
    monthly_cost_before: float  # current cost of the placed candidates
    monthly_cost_after: float  # group hosts + the servers left alone at their current cost
    monthly_savings: float
    naive_hosts: int  # the same candidates packed by sum of peaks
    naive_monthly_cost: float
    violations: int  # (group, period) pairs over host capacity when replayed on actual series
    naive_violations: int
    replay_periods: int
    replay_source: str  # 'history' (the whole history given) or 'actuals' (series passed in)
    host_size: str  # the packing host (groups are then shrunk to the cheapest size that fits)
    method: str = "peak-aware"

    def to_dict(self) -> dict:
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


@dataclass(frozen=True)
class ConsolidationResult:
    """Peak-aware plan, the sum-of-peaks plan for comparison, and what was left out and why.

    Every candidate appears exactly once in ``plan``, ``standalone`` or ``unplaceable``.
    """

    plan: pd.DataFrame  # CONSOLIDATION_COLUMNS: host groups of two or more servers
    groups: pd.DataFrame  # per group: members, host, costs, peak vs sum-of-peaks utilisation
    naive_plan: pd.DataFrame  # CONSOLIDATION_COLUMNS: the sum-of-peaks groups
    standalone: pd.DataFrame  # server_id, reason: placed alone, stays on its own server
    unplaceable: pd.DataFrame  # server_id, reason
    summary: ConsolidationSummary
    allocated_cost: pd.Series  # server_id (plan members) -> share of the host's monthly cost
    naive_replay: Replay
    replay: Replay


def _default_host(catalog: pd.DataFrame, cpu: np.ndarray, mem: np.ndarray) -> str:
    with np.errstate(invalid="ignore"):
        return default_host_size(
            catalog, np.nanmax(cpu, axis=1, initial=0.0), np.nanmax(mem, axis=1, initial=0.0)
        )


def packing_peaks(
    inputs: AnalyticsInputs, demand: tuple[np.ndarray, np.ndarray], rules: PlacementRules | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """(S,) CPU and memory peaks of every server's packing demand as :func:`consolidate` sizes its
    default host from them (0 for tiers the rules exclude): the host of candidates ``c`` is
    ``default_host_size(catalog, cpu[c], mem[c])``."""
    rules = rules or PlacementRules()
    tier = inputs.inventory["criticality"].to_numpy(dtype=object)
    excluded = np.isin(tier, list(rules.excluded_criticality))[:, None]
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return tuple(  # type: ignore[return-value]
            np.nanmax(np.where(excluded, np.nan, d), axis=1, initial=0.0) for d in demand
        )


def placement_partitions(inventory: pd.DataFrame, rules: PlacementRules | None = None) -> np.ndarray:
    """(S,) each server's packing partition: servers of different partitions never share a host,
    so a partition packs the same whatever happens in the others."""
    return _partitions(inventory, rules or PlacementRules())


def _partitions(inv: pd.DataFrame, rules: PlacementRules) -> np.ndarray:
    key = inv["region"].astype(str) + "|" + inv["environment"].astype(str)
    if rules.same_business_unit:
        key = key + "|" + inv["business_unit"].astype(str)
    return key.to_numpy(dtype=object)


def _anti_pairs(ids: pd.Index, pairs: Iterable[tuple[str, str]]) -> np.ndarray:
    """(k, 2) item indices of the pairs whose two servers are both among ``ids``."""
    flat = np.asarray(list(pairs), dtype=object).reshape(-1)
    rows = ids.get_indexer(flat).reshape(-1, 2) if len(flat) else np.empty((0, 2), dtype=int)
    return rows[(rows >= 0).all(axis=1)]


@dataclass(frozen=True)
class _Groups:
    """Multi-member groups of a packing, hosts shrunk and priced."""

    frame: pd.DataFrame  # CONSOLIDATION_COLUMNS
    detail: pd.DataFrame  # one row per group (see ConsolidationResult.groups)
    group: np.ndarray  # (n,) index into the multi-member groups, −1 = alone or unplaced
    alone: np.ndarray  # (n,) bool: placed alone
    host_cores: np.ndarray  # (G,)
    host_mem: np.ndarray
    host_cost: np.ndarray
    share: np.ndarray  # (n,) member's share of its host's cost (NaN when not in a group)


def _groups(
    sub: pd.DataFrame,
    packing: Packing,
    peaks: tuple[np.ndarray, np.ndarray],
    catalog: pd.DataFrame,
    headroom: float,
    prefix: str,
    paid: np.ndarray,
    equiv: np.ndarray,
) -> _Groups:
    """Keep groups of ≥ 2, shrink each host to the cheapest catalog size that holds its summed
    series with headroom, and price it at catalog price × the members' price factor
    (:func:`price_factors`); members share the cost by their share of the CPU and memory peaks."""
    n = len(sub)
    size = np.bincount(packing.group[packing.group >= 0], minlength=packing.n_groups)
    multi = np.flatnonzero(size >= 2)
    remap = np.full(packing.n_groups, -1)
    remap[multi] = np.arange(len(multi))
    group = (
        np.where(packing.group >= 0, remap[np.clip(packing.group, 0, max(packing.n_groups - 1, 0))], -1)
        if packing.n_groups
        else np.full(n, -1)
    )
    alone = (packing.group >= 0) & (group < 0)
    G = len(multi)
    cpu_peak = packing.cpu_load[multi].max(axis=1) if G else np.zeros(0)
    mem_peak = packing.mem_load[multi].max(axis=1) if G else np.zeros(0)
    pos = cheapest_fit(cpu_peak / (1 - headroom), mem_peak / (1 - headroom), catalog)
    if (pos < 0).any():  # the packing host itself always fits; guard against a foreign catalog
        raise AnalyticsError("a host group fits no catalog size; is the packing host in the catalog?")
    cat = catalog.reset_index(drop=True)
    h_size = cat["size"].to_numpy(dtype=object)[pos]
    h_cores = cat["cores"].to_numpy(dtype=float)[pos]
    h_mem = cat["memory_gb"].to_numpy(dtype=float)[pos]
    members = np.flatnonzero(group >= 0)
    g = group[members]
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = np.bincount(g, weights=paid[members], minlength=G) / np.bincount(
            g, weights=equiv[members], minlength=G
        )
    factor = np.where(np.isfinite(factor) & (factor > 0), factor, 1.0)
    h_cost = cat["monthly_cost_usd"].to_numpy(dtype=float)[pos] * factor
    share = np.full(n, np.nan)
    cpk, mpk = peaks
    gc = np.bincount(g, weights=cpk[members], minlength=G)
    gm = np.bincount(g, weights=mpk[members], minlength=G)
    if G:
        with np.errstate(invalid="ignore", divide="ignore"):
            frac = 0.5 * (
                np.where(gc[g] > 0, cpk[members] / gc[g], 0.5)
                + np.where(gm[g] > 0, mpk[members] / gm[g], 0.5)
            )
        share[members] = frac * h_cost[g]
    width = max(4, len(str(G)))
    names = np.array([f"{prefix}-{k + 1:0{width}d}" for k in range(G)], dtype=object)
    sid = sub["server_id"].astype(str).to_numpy(dtype=object)[members]
    # by group, then server id: the zero-padded names sort as the group numbers do
    order = np.lexsort((pd.factorize(sid, sort=True)[0], g))
    members, g = members[order], g[order]
    frame = pd.DataFrame(
        {
            "target_group": names[g],
            "server_id": sid[order],
            "region": sub["region"].to_numpy(dtype=object)[members],
            "environment": sub["environment"].to_numpy(dtype=object)[members],
            "host_size": h_size[g],
            "host_cores": h_cores[g],
            "host_memory_gb": h_mem[g],
            "host_monthly_cost": h_cost[g],
            "peak_cpu_util": (cpu_peak / h_cores * 100)[g],
            "peak_mem_util": (mem_peak / h_mem * 100)[g],
        }
    )
    detail = pd.DataFrame(
        {
            "target_group": names,
            "members": np.bincount(g, minlength=G),
            "host_size": h_size,
            "host_monthly_cost": h_cost,
            "members_monthly_cost": np.bincount(g, weights=paid[members], minlength=G),
            "peak_cpu_util": cpu_peak / h_cores * 100,
            "peak_mem_util": mem_peak / h_mem * 100,
            "sum_of_peaks_cpu_util": gc / h_cores * 100,
            "sum_of_peaks_mem_util": gm / h_mem * 100,
        }
    )
    return _Groups(frame[CONSOLIDATION_COLUMNS], detail, group, alone, h_cores, h_mem, h_cost, share)


def _actual_arrays(
    server_ids: Sequence[str], capacity: pd.DataFrame, metrics: pd.DataFrame
) -> tuple[np.ndarray, np.ndarray]:
    """(n × T) actual cores and GB of ``server_ids`` from wide metrics (any regular grid)."""
    for col in ("server_id", "timestamp", "cpu_p95", "mem_p95"):
        if col not in metrics.columns:
            raise AnalyticsError(f"actual series for replay are missing column {col!r}")
    ids = pd.Index(pd.Series(server_ids, dtype=object).astype(str))
    m = metrics[metrics["server_id"].astype(str).isin(ids)]
    n = len(ids)
    if m.empty:
        return np.zeros((n, 0)), np.zeros((n, 0))
    t_codes, t_uniques = pd.factorize(pd.DatetimeIndex(pd.to_datetime(m["timestamp"], utc=True)), sort=True)
    item = ids.get_indexer(m["server_id"].astype(str))
    cpu = np.full((n, len(t_uniques)), np.nan)
    mem = np.full((n, len(t_uniques)), np.nan)
    cores = capacity["cpu_cores"].to_numpy(dtype=float)
    gb = capacity["memory_gb"].to_numpy(dtype=float)
    cpu[item, t_codes] = m["cpu_p95"].to_numpy(dtype=float) / 100 * cores[item]
    mem[item, t_codes] = m["mem_p95"].to_numpy(dtype=float) / 100 * gb[item]
    return cpu, mem


def consolidate(
    inputs: AnalyticsInputs,
    candidates: Sequence[str] | np.ndarray | None,
    *,
    catalog: pd.DataFrame,
    headroom: float,
    rules: PlacementRules | None = None,
    host_size: str | None = None,
    quantile: str = "q90",
    history_periods: int | None = None,
    actuals: pd.DataFrame | None = None,
    compare: bool = True,
    demand: tuple[np.ndarray, np.ndarray] | None = None,
) -> ConsolidationResult:
    """Peak-aware consolidation plan for ``candidates`` (server ids or a mask; None = every server).

    ``catalog`` is a validated size catalog (rightsizing.validate_catalog); ``host_size`` names the
    packing host (default :func:`default_host_size`). Demand is the recent history (replayed at
    today's level) plus the ``quantile`` forecast path (:func:`demand_series`); the pessimistic
    q90 path by default, because a shared host must survive its members' bad days together. Servers in ``rules.excluded_criticality``
    are reported unplaceable. Both plans are replayed on ``actuals`` (wide metrics, e.g. a
    held-out period) or, without it, on the whole history in ``inputs``. ``compare=False`` skips the
    sum-of-peaks plan and both replays (their figures then describe the peak-aware plan, unreplayed):
    for callers that read only the plan and the cost shares. ``demand``: :func:`demand_series`'s
    (cpu, mem) for the whole inventory when the caller already has it (packing several candidate
    sets of one scenario).
    """
    if not 0 <= headroom < 1:
        raise AnalyticsError(f"headroom {headroom} must be in [0, 1)")
    rules = rules or PlacementRules()
    inv = inputs.inventory
    ids = pd.Index(inv["server_id"])
    if candidates is None:
        items = np.arange(len(inv))
    else:
        cand = np.asarray(candidates)
        if cand.dtype == bool:
            if len(cand) != len(inv):
                raise AnalyticsError("candidate mask must have one entry per inventory server")
            items = np.flatnonzero(cand)
        else:
            items = ids.get_indexer(pd.Index(cand.astype(str)))
            if (items < 0).any():
                bad = cand[items < 0][:3]
                raise AnalyticsError(
                    f"consolidation candidates not in the inventory: {', '.join(map(str, bad))}"
                )
            if len(np.unique(items)) != len(items):
                raise AnalyticsError("consolidation candidates list a server more than once")

    cpu_all, mem_all = demand or demand_series(inputs, quantile=quantile, history_periods=history_periods)[:2]
    cpu, mem = cpu_all[items], mem_all[items]
    sub = inv.iloc[items].reset_index(drop=True)
    tier = sub["criticality"].to_numpy(dtype=object)
    excluded = np.isin(tier, list(rules.excluded_criticality))
    cpu = np.where(excluded[:, None], np.nan, cpu)
    mem = np.where(excluded[:, None], np.nan, mem)
    host = host_size if host_size is not None else _default_host(catalog, cpu, mem)
    hrow = catalog[catalog["size"].astype(str) == host]
    if hrow.empty:
        raise AnalyticsError(f"host size {host!r} is not in the catalog")

    kw = {
        "host_cores": float(hrow["cores"].iloc[0]),
        "host_memory_gb": float(hrow["memory_gb"].iloc[0]),
        "headroom": headroom,
        "partition": _partitions(sub, rules),
        "tier": tier,
        "rules": rules,
        "anti_pairs": _anti_pairs(pd.Index(sub["server_id"]), rules.anti_affinity),
        "host_label": host,
    }
    smart = pack(cpu, mem, method="peak-aware", **kw)
    naive = pack(cpu, mem, method="sum-of-peaks", **kw) if compare else smart
    reason = smart.reason.copy()
    reason[excluded] = [
        f"{t} servers are excluded from consolidation by the placement rules" for t in tier[excluded]
    ]

    cost_now = sub["monthly_cost_usd"].to_numpy(dtype=float)
    _, equiv = price_factors(sub, catalog)
    paid = np.where(np.isfinite(cost_now), cost_now, equiv)
    with np.errstate(invalid="ignore"):  # each item's peaks (missing data: 0) for cost shares
        peaks = (
            np.nanmax(np.where(np.isnan(cpu), 0.0, cpu), axis=1, initial=0.0),
            np.nanmax(np.where(np.isnan(mem), 0.0, mem), axis=1, initial=0.0),
        )
    gs = _groups(sub, smart, peaks, catalog, headroom, "grp", paid, equiv)
    gn = _groups(sub, naive, peaks, catalog, headroom, "naive", paid, equiv) if compare else gs

    if not compare:
        actual, rows, source = (
            (np.zeros((len(items), 0)),) * 2 + (np.zeros((len(items), 0), dtype=bool),),
            None,
            "",
        )
    elif actuals is not None:
        actual = _replay_arrays(*_actual_arrays(sub["server_id"], sub, actuals))
        rows, source = None, "actuals"
    else:  # the fleet's history in cores and GB: the same for every scenario, so once per run
        actual = inputs.memoised(
            ("replay-history",),
            (inputs.history.get("cpu_p95"), inputs.history.get("mem_p95"), inv),
            lambda: _replay_arrays(*_history_cores(inputs)),
        )
        rows, source = items, "history"
    r_smart = _replay(gs.group, gs.host_cores, gs.host_mem, *actual, rows=rows)
    r_naive = _replay(gn.group, gn.host_cores, gn.host_mem, *actual, rows=rows)

    placed = smart.group >= 0
    n_groups, n_alone = len(gs.host_cores), int(gs.alone.sum())
    in_group = gs.group >= 0
    cost_before = float(paid[placed].sum())
    cost_after = float(gs.host_cost.sum() + paid[gs.alone].sum())
    naive_after = float(gn.host_cost.sum() + paid[gn.alone].sum())
    summary = ConsolidationSummary(
        candidates=len(items),
        placed=int(placed.sum()),
        unplaceable=int((~placed).sum()),
        hosts_before=int(placed.sum()),
        hosts_after=n_groups + n_alone,
        servers_freed=int(placed.sum()) - (n_groups + n_alone),
        groups=n_groups,
        monthly_cost_before=cost_before,
        monthly_cost_after=cost_after,
        monthly_savings=cost_before - cost_after,
        naive_hosts=len(gn.host_cores) + int(gn.alone.sum()),
        naive_monthly_cost=naive_after,
        violations=r_smart.violations,
        naive_violations=r_naive.violations,
        replay_periods=r_smart.periods,
        replay_source=source,
        host_size=host,
    )
    sid = sub["server_id"].to_numpy(dtype=object)
    where = (sub["region"].astype(str) + " / " + sub["environment"].astype(str)).to_numpy(dtype=object)
    standalone = pd.DataFrame(
        {
            "server_id": sid[gs.alone],
            "reason": [
                f"stays on its own server: no other candidate in {w} fits beside it within a {host} "
                f"with {headroom * 100:.0f} % headroom and the placement rules"
                for w in where[gs.alone]
            ],
        }
    )
    unplaceable = pd.DataFrame({"server_id": sid[~placed], "reason": reason[~placed]})
    return ConsolidationResult(
        plan=gs.frame,
        groups=gs.detail,
        naive_plan=gn.frame,
        standalone=standalone,
        unplaceable=unplaceable,
        summary=summary,
        allocated_cost=pd.Series(gs.share[in_group], index=sid[in_group]),
        naive_replay=r_naive,
        replay=r_smart,
    )


def consolidate_frames(
    forecasts: pd.DataFrame,
    history: pd.DataFrame,
    inventory: pd.DataFrame,
    *,
    catalog: pd.DataFrame,
    headroom: float,
    candidates: Sequence[str] | None = None,
    rules: PlacementRules | None = None,
    host_size: str | None = None,
    quantile: str = "q90",
    actuals: pd.DataFrame | None = None,
    freq: str | None = None,
    history_days: int | None = None,
) -> ConsolidationResult:
    """:func:`consolidate` straight from the frames (prepare + consolidate)."""
    inputs = prepare(forecasts, history, inventory, freq=freq, history_days=history_days)
    return consolidate(
        inputs,
        candidates,
        catalog=catalog,
        headroom=headroom,
        rules=rules,
        host_size=host_size,
        quantile=quantile,
        actuals=actuals,
    )


# --------------------------------------------------------------------------- workload profiles


@dataclass(frozen=True)
class WorkloadProfiles:
    """Workload shapes (k-means on each server's recent CPU relative to its mean)."""

    labels: pd.DataFrame  # server_id, profile, profile_name
    centroids: pd.DataFrame  # profile, profile_name, timestamp, value (load ÷ the server's mean)
    complementarity: pd.DataFrame  # profile_a, profile_b, peak_ratio (< 1: peaks do not coincide)


def _describe(c: np.ndarray, index: pd.DatetimeIndex, hourly: bool) -> str:
    naive = index.tz_convert(None)
    month_end = np.asarray((naive.days_in_month - naive.day) < 3)
    weekend = np.asarray(naive.day_of_week >= 5)
    mean = c.mean()
    traits = []
    if month_end.any() and (~month_end).any() and c[month_end].mean() >= 1.15 * c[~month_end].mean():
        traits.append("month-end peaks")
    if hourly:
        day = np.asarray((naive.hour >= 8) & (naive.hour < 20))
        if c[~day].mean() >= 1.15 * c[day].mean():
            traits.append("night batch")
        elif c[day].mean() >= 1.15 * c[~day].mean():
            traits.append("daytime")
    if weekend.any() and (~weekend).any():
        if c[~weekend].mean() >= 1.1 * c[weekend].mean():
            traits.append("business days")
        elif c[weekend].mean() >= 1.1 * c[~weekend].mean():
            traits.append("weekend-heavy")
    if not traits:
        traits.append("flat" if c.max() <= 1.1 * mean else "irregular")
    return ", ".join(traits)


def workload_profiles(
    inputs: AnalyticsInputs,
    *,
    n_clusters: int = 6,
    weeks: int = 8,
    metric: str = "cpu_p95",
    seed: int = 0,
) -> WorkloadProfiles:
    """Cluster servers by the shape of their last ``weeks`` of ``metric`` (scikit-learn k-means).

    Shapes are in calendar time (load ÷ the server's mean), so adding two centroids is meaningful:
    ``peak_ratio = max(a + b) / (max a + max b)`` is 1 when peaks coincide and lower when they are
    complementary — the shapes worth putting on one host.
    """
    from sklearn.cluster import KMeans

    if n_clusters < 1:
        raise AnalyticsError("n_clusters must be ≥ 1")
    if metric not in inputs.history:
        raise AnalyticsError(f"no {metric} history to build workload profiles from")
    L = max(1, weeks) * 7 * inputs.periods_per_day
    hist = inputs.history[metric][:, -L:]
    index = inputs.history_index[-L:]
    L = hist.shape[1]  # a history shorter than `weeks` gives fewer periods
    seen = (~np.isnan(hist)).sum(axis=1)  # a server with no history at all has no mean (no warning)
    mean = np.where(seen > 0, np.nansum(hist, axis=1) / np.maximum(seen, 1), np.nan)
    ok = np.isfinite(mean) & (mean > 0) & (seen >= 0.5 * L)
    shapes = np.where(np.isnan(hist[ok]), 1.0, hist[ok] / mean[ok, None])
    ids = inputs.server_ids[ok]
    empty_labels = pd.DataFrame(
        {
            "server_id": pd.Series(dtype=object),
            "profile": pd.Series(dtype=int),
            "profile_name": pd.Series(dtype=object),
        }
    )
    if len(ids) == 0:
        return WorkloadProfiles(
            empty_labels,
            pd.DataFrame(columns=["profile", "profile_name", "timestamp", "value"]),
            pd.DataFrame(columns=["profile_a", "profile_b", "peak_ratio"]),
        )
    k = int(min(n_clusters, len(np.unique(shapes.round(6), axis=0))))
    km = KMeans(n_clusters=k, random_state=seed, n_init=4).fit(shapes)
    centers = km.cluster_centers_
    hourly = inputs.freq == "hourly"
    names = [f"P{j + 1} {_describe(centers[j], index, hourly)}" for j in range(k)]
    labels = pd.DataFrame({"server_id": ids, "profile": km.labels_.astype(int) + 1})
    labels["profile_name"] = [names[p - 1] for p in labels["profile"]]
    centroids = pd.DataFrame(
        {
            "profile": np.repeat(np.arange(1, k + 1), L),
            "profile_name": np.repeat(np.asarray(names, dtype=object), L),
            "timestamp": np.tile(index.to_numpy(), k),
            "value": centers.reshape(-1),
        }
    )
    centroids["timestamp"] = pd.to_datetime(centroids["timestamp"], utc=True)
    peaks = centers.max(axis=1)
    a, b = np.triu_indices(k, 1)
    ratio = (centers[a] + centers[b]).max(axis=1) / (peaks[a] + peaks[b])
    comp = pd.DataFrame({"profile_a": a + 1, "profile_b": b + 1, "peak_ratio": ratio}).sort_values(
        "peak_ratio", kind="stable"
    )
    return WorkloadProfiles(labels, centroids, comp.reset_index(drop=True))
