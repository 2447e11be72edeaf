"""A realistic synthetic server fleet: the demo data and the ground truth for tests.

A bank's fleet is not noise. Its servers belong to business units and regions, run in
prod/uat/dev, have standard sizes and a price, and their utilisation follows the working
week, local business hours, month-, quarter- and year-end book closes, public holidays and
the seasons of each business (tax season, Christmas shopping). On top of that, life
happens: workloads grow, some servers are about to run out of headroom, others sit idle,
applications migrate, collectors drop days. :func:`generate_fleet` plants all of this on
purpose and records what it planted in :attr:`Fleet.profiles`, so analytics can be checked
against known answers.

Everything is vectorised over servers with numpy: arrays are laid out (time, server) so
that calendar features broadcast as columns and the AR(1) recursions run over time on
whole server vectors. 10,000 servers × 4 years daily take a few seconds.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Final

import holidays as holidays_lib
import numpy as np
import pandas as pd
import pyarrow as pa

from .schema import ALL_INVENTORY_COLUMNS, FREQUENCIES, METRIC_COLUMNS, SchemaError, freq_alias
from .settings import DEFAULT_CRITICALITY_OFFSETS, DEFAULT_THRESHOLDS

__all__ = [
    "BLOCK_SERVERS",
    "BUSINESS_UNITS",
    "FUTURE_DAYS",
    "MAX_ROWS",
    "MIN_DAYS",
    "PEAK_TIMINGS",
    "REGIONS",
    "SCENARIOS",
    "SERVER_TYPES",
    "Fleet",
    "Region",
    "ServerType",
    "fleet_blocks",
    "generate_fleet",
    "monthly_list_price",
]

# --------------------------------------------------------------------------- knobs

FUTURE_DAYS: Final = 90  # "next quarter": breach scenarios cross within this many days of the end
MIN_DAYS: Final = 28  # four weeks: enough for the weekly pattern and a month-end
MAX_ROWS: Final = 150_000_000  # servers × periods; beyond this memory, not realism, is the limit
_STR = pd.StringDtype("pyarrow", na_value=np.nan)  # pandas' default "str" dtype
_UTC = pd.DatetimeTZDtype("us", "UTC")


@dataclass(frozen=True)
class Region:
    """A data-centre region: where servers live, which holidays and clock they follow."""

    name: str
    site: str  # hostname prefix
    country: str  # ISO code for the `holidays` package
    subdiv: str | None
    utc_offset: int  # hours, standard time (daylight saving is ignored)
    weight: float
    dr_region: str  # where this region's disaster-recovery standbys live


REGIONS: Final = (
    Region("emea-london", "lon", "GB", "ENG", 0, 0.30, "emea-frankfurt"),
    Region("emea-frankfurt", "fra", "DE", "HE", 1, 0.12, "emea-london"),
    Region("emea-dublin", "dub", "IE", None, 0, 0.05, "emea-london"),
    Region("amer-newyork", "nyc", "US", "NY", -5, 0.24, "amer-chicago"),
    Region("amer-chicago", "chi", "US", "IL", -6, 0.06, "amer-newyork"),
    Region("apac-singapore", "sgp", "SG", None, 8, 0.11, "apac-hongkong"),
    Region("apac-hongkong", "hkg", "HK", None, 8, 0.08, "apac-singapore"),
    Region("apac-tokyo", "tyo", "JP", None, 9, 0.04, "apac-singapore"),
)

BUSINESS_UNITS: Final = {
    "Retail Banking": 0.22,
    "Corporate Banking": 0.14,
    "Markets": 0.16,
    "Wealth Management": 0.10,
    "Payments": 0.12,
    "Risk & Finance": 0.11,
    "Group IT": 0.15,
}
# Busy and quiet seasons per business unit: (day of year, width in days, height). The
# profile is scaled to a peak of 1 and multiplied by each server's yearly amplitude.
_YEARLY_BUMPS: Final = {
    "Retail Banking": [(350, 12, 0.9), (12, 8, 0.5), (222, 18, -0.4)],
    "Corporate Banking": [(359, 5, -0.9), (222, 18, -0.5), (75, 25, 0.3)],
    "Markets": [(70, 30, 0.5), (280, 25, 0.4), (222, 18, -0.6), (359, 5, -0.9)],
    "Wealth Management": [(31, 7, 0.8), (96, 9, 1.0), (105, 5, 0.6), (222, 18, -0.4)],
    "Payments": [(331, 4, 1.0), (354, 8, 0.9), (222, 18, -0.2)],
    "Risk & Finance": [(12, 14, 0.9), (100, 12, 0.5), (222, 18, -0.3)],
    "Group IT": [(222, 22, -0.4), (359, 6, -0.6), (45, 30, 0.2)],
}

ENVIRONMENT_MIX: Final = {"prod": 0.55, "uat": 0.20, "dev": 0.25}
# P(criticality | environment), columns in schema.CRITICALITY_ORDER: dev is never critical.
CRITICALITY_MIX: Final = {
    "prod": (0.22, 0.38, 0.30, 0.10),
    "uat": (0.00, 0.08, 0.47, 0.45),
    "dev": (0.00, 0.00, 0.15, 0.85),
}
_CRITICALITY: Final = ("critical", "high", "medium", "low")

# When in the day/week a server is busiest. Idle servers get a mix, so consolidation has
# complementary peaks to pack together.
PEAK_TIMINGS: Final = ("business_hours", "overnight", "weekend", "month_end", "always_on")
# Weekly multipliers per peak timing: Mon..Sun, then a public holiday on a weekday.
_WEEKLY: Final = np.array(
    [
        [1.00, 1.03, 1.02, 1.00, 0.95, 0.45, 0.40, 0.45],
        [0.92, 0.95, 0.95, 0.95, 1.00, 1.08, 0.90, 0.90],
        [0.55, 0.55, 0.55, 0.55, 0.60, 1.00, 0.95, 0.60],
        [1.00, 1.00, 1.00, 1.00, 0.98, 0.60, 0.55, 0.60],
        [1.00, 1.00, 1.00, 1.00, 1.02, 0.93, 0.90, 0.92],
    ],
    dtype=np.float32,
)
# Daily profiles (local hour) for hourly data: floor, then (centre hour, width, height) bumps.
_HOURLY_SHAPES: Final = (
    (0.25, [(10.5, 2.0, 1.0), (14.5, 2.2, 0.95)]),
    (0.20, [(1.5, 2.5, 1.0)]),
    (0.30, [(3.0, 3.0, 1.0), (14.0, 3.0, 0.6)]),
    (0.40, [(11.0, 3.0, 1.0), (16.0, 2.5, 0.9)]),
    (0.60, [(12.0, 4.0, 0.8), (19.5, 2.5, 1.0)]),
)
# Month-end amplitude by peak timing (multiplied by type, business unit and a random factor).
_MONTH_END_AMP: Final = np.array([0.04, 0.12, 0.05, 0.30, 0.03], dtype=np.float32)
_MONTH_END_BU: Final = {"Risk & Finance": 2.0, "Corporate Banking": 1.3, "Payments": 1.2}


@dataclass(frozen=True)
class ServerType:
    """An archetype: standard sizes, typical utilisation levels and growth, peak timings."""

    name: str
    weight: float
    sizes: tuple[tuple[int, int, int], ...]  # (cpu_cores, memory_gb, disk_gb), small to large
    size_p: tuple[float, ...]
    cpu: tuple[float, float]  # weekday peak CPU p95 %, prod
    mem: tuple[float, float]  # memory p95 %
    disk: tuple[float, float]  # disk used % at the start
    disk_growth: tuple[float, float]  # disk percentage points per year
    net_out: tuple[float, float]  # Mbps at the typical CPU level, prod
    net_in_ratio: float  # inbound / outbound traffic
    peaks: dict[str, float]  # P(peak timing)
    breach_p: tuple[float, float, float]  # which metric a growing server runs out of: cpu, mem, disk
    month_end: float = 1.0  # multiplier on the month-end amplitude
    storage_usd_gb: float = 0.12
    licence_usd_core: float = 0.0
    backup_mbps: tuple[float, float] = (0.0, 0.0)  # backup traffic out, full backup on Saturday
    memory_leak_p: float = 0.0  # share with a JVM-style leak between monthly patch reboots


SERVER_TYPES: Final = (
    ServerType(
        "web", 0.15, ((2, 4, 50), (4, 8, 80), (8, 16, 100), (16, 32, 100)), (0.3, 0.4, 0.25, 0.05),
        (20, 55), (30, 55), (20, 45), (0.5, 3), (40, 300), 0.35,
        {"business_hours": 0.7, "always_on": 0.3}, (0.80, 0.15, 0.05), memory_leak_p=0.2,
    ),
    ServerType(
        "app", 0.25, ((4, 16, 100), (8, 32, 150), (16, 64, 200), (32, 128, 250)), (0.25, 0.4, 0.27, 0.08),
        (20, 60), (45, 72), (25, 50), (1, 4), (30, 250), 1.0,
        {"business_hours": 0.65, "always_on": 0.2, "month_end": 0.15}, (0.55, 0.35, 0.10),
        memory_leak_p=0.3,
    ),
    ServerType(
        "db", 0.13, ((8, 64, 500), (16, 128, 1000), (32, 256, 2000), (64, 512, 4000)), (0.2, 0.4, 0.3, 0.1),
        (25, 60), (70, 82), (40, 62), (3, 10), (60, 400), 0.4,
        {"business_hours": 0.6, "overnight": 0.2, "month_end": 0.2}, (0.30, 0.30, 0.40),
        month_end=2.0, storage_usd_gb=0.22, licence_usd_core=48.0, backup_mbps=(100, 300),
    ),
    ServerType(
        "batch", 0.09, ((8, 32, 250), (16, 64, 500), (32, 128, 1000)), (0.3, 0.5, 0.2),
        (30, 65), (35, 65), (30, 55), (2, 6), (50, 400), 2.0,
        {"overnight": 0.5, "weekend": 0.2, "month_end": 0.3}, (0.70, 0.20, 0.10), month_end=2.0,
    ),
    ServerType(
        "cache", 0.06, ((4, 32, 50), (8, 64, 100), (16, 128, 100)), (0.4, 0.45, 0.15),
        (15, 40), (60, 80), (10, 30), (0.2, 1), (100, 500), 0.3,
        {"business_hours": 0.5, "always_on": 0.5}, (0.20, 0.80, 0.00),
    ),
    ServerType(
        "mq", 0.06, ((4, 16, 200), (8, 32, 500), (16, 64, 500)), (0.4, 0.45, 0.15),
        (15, 45), (40, 65), (20, 45), (1, 4), (50, 300), 1.0,
        {"business_hours": 0.5, "always_on": 0.4, "month_end": 0.1}, (0.40, 0.20, 0.40), month_end=1.3,
    ),
    ServerType(
        "file", 0.08, ((2, 8, 1000), (4, 16, 2000), (8, 32, 4000), (8, 32, 8000)), (0.25, 0.35, 0.3, 0.1),
        (8, 30), (25, 50), (45, 62), (4, 12), (20, 250), 1.0,
        {"business_hours": 0.8, "weekend": 0.2}, (0.10, 0.10, 0.80), storage_usd_gb=0.06,
        backup_mbps=(80, 250),
    ),
    ServerType(
        "analytics", 0.06, ((16, 128, 1000), (32, 256, 2000), (64, 512, 4000)), (0.4, 0.45, 0.15),
        (30, 65), (55, 78), (40, 60), (3, 9), (50, 300), 1.5,
        {"business_hours": 0.5, "overnight": 0.3, "month_end": 0.2}, (0.45, 0.30, 0.25),
        month_end=1.5, storage_usd_gb=0.10,
    ),
    ServerType(
        "infra", 0.12, ((2, 4, 60), (2, 8, 80), (4, 16, 100)), (0.4, 0.4, 0.2),
        (8, 35), (30, 55), (20, 45), (0.5, 3), (5, 80), 1.0,
        {"business_hours": 0.4, "always_on": 0.6}, (0.50, 0.20, 0.30),
    ),
)  # fmt: skip

# Share of the fleet per planted scenario; "steady" takes the rest. DR standbys come in
# pairs with a primary (which is itself steady or growing).
SCENARIOS: Final = (
    "steady",
    "growing",
    "breach_next_quarter",
    "breached",
    "idle",
    "step_change",
    "seasonal_peak",
    "dr_standby",
)
_SCENARIO_SHARE: Final = {
    "dr_standby": 0.025,
    "idle": 0.12,
    "breach_next_quarter": 0.07,
    "breached": 0.02,
    "seasonal_peak": 0.06,
    "step_change": 0.07,
    "growing": 0.15,
}
# Business units whose year has pronounced seasons (tax season, Christmas, year-end close).
_SEASONAL_BU: Final = {
    "Retail Banking": 2.0,
    "Wealth Management": 3.0,
    "Payments": 3.0,
    "Risk & Finance": 3.0,
}
_PERCENT_METRICS: Final = ("cpu_p95", "mem_p95", "disk_p95")
# Network (Mbps): planted levels stay under _NET_CEILING; above _NET_KNEE throughput bends
# towards _NET_LINK (a busy 1 GbE link), so the default 800 Mbps threshold is never planted.
_NET_CEILING: Final = 500.0
_NET_KNEE: Final = 600.0
_NET_LINK: Final = 790.0
_IDLE_CPU_CAP: Final = 9.8  # idle means CPU p95 < 10 % throughout
_ENV_PATCH_DELAY: Final = {"dev": 1, "uat": 4, "prod": 12}  # days after Patch Tuesday


@dataclass(frozen=True)
class Fleet:
    """A generated fleet: contract-shaped inventory and metrics, plus what was planted.

    ``metrics`` is sorted by server then time (float32 values; missing periods are absent
    rows). ``inventory`` has the contract's columns and all four optional placement ones:
    ``dr_role``/``dr_partner_id`` for the DR pairs below; ``anti_affinity_group`` (``aag-0001``…,
    not to be confused with the consolidation plan's ``grp-`` host groups) for clusters of 2–4
    prod/uat web, app, mq or db servers sharing business unit, region, environment and type
    (about 12 % of the fleet); ``pinned``, True for 3 % (licence-bound db/analytics, appliance-like
    infra; idle servers three times likelier, so the rule changes recommendations), else False.
    ``profiles`` has one row per server, in inventory order:

    - ``scenario``: one of :data:`SCENARIOS`; ``peak_timing``: one of :data:`PEAK_TIMINGS`;
    - ``breach_metric`` / ``breach_threshold`` / ``breach_date``: for ``breach_next_quarter``
      and ``breached``, the metric planted to cross its threshold (default threshold plus
      the criticality offset) and the first period its noise-free path is at or above it
      (after the history for ``breach_next_quarter``, within :data:`FUTURE_DAYS`);
    - ``step_date`` / ``step_factor``: the migration date and CPU level ratio after/before;
    - ``dr_partner_id`` / ``dr_role`` (``primary`` | ``standby``): disaster-recovery pairs
      (also in the inventory: a primary and its standby name each other; others have neither);
    - ``pin_reason``: why a server is ``pinned`` in the inventory (``licence``: a licence bound to
      the host; ``appliance``: a vendor appliance), missing for the others;
    - ``memory_leak``: memory climbs between monthly patch reboots;
    - ``first_timestamp``: first period with data (servers commissioned during the span);
    - ``gap_periods``: periods missing inside the server's span; ``utc_offset``: local clock.
    """

    inventory: pd.DataFrame
    metrics: pd.DataFrame
    profiles: pd.DataFrame
    freq: str = "daily"


# --------------------------------------------------------------------------- pricing


def monthly_list_price(
    cpu_cores: np.ndarray | pd.Series,
    memory_gb: np.ndarray | pd.Series,
    disk_gb: np.ndarray | pd.Series,
    server_type: np.ndarray | pd.Series,
    environment: np.ndarray | pd.Series,
) -> np.ndarray:
    """Rate-card price (USD/month) of a server: compute, memory, storage tier, licences, ops.

    The synthetic fleet is priced with it (± a few % for hardware generations), so a
    right-sized configuration can be priced on the same card to estimate savings.
    """
    types = {t.name: t for t in SERVER_TYPES}
    stype = np.asarray(server_type, dtype=object)
    env = np.asarray(environment, dtype=object)
    storage = np.array([types[s].storage_usd_gb if s in types else 0.12 for s in stype], dtype=float)
    licence = np.array([types[s].licence_usd_core if s in types else 0.0 for s in stype], dtype=float)
    cores = np.asarray(cpu_cores, dtype=float)
    licence = np.where(env == "dev", 0.0, licence)  # developer licences are free
    price = 38.0 + 21.0 * cores + 3.1 * np.asarray(memory_gb, float) + storage * np.asarray(disk_gb, float)
    price = price + licence * cores
    return price * np.where(env == "prod", 1.15, 1.0)  # prod carries HA and backup


# --------------------------------------------------------------------------- entry point


def generate_fleet(
    n_servers: int,
    *,
    days: int = 1461,
    start: str | pd.Timestamp | None = None,
    freq: str = "daily",
    seed: int = 42,
    block_servers: int | None = None,
) -> Fleet:
    """Generate ``n_servers`` servers with ``days`` days of p95 metrics at ``freq``, in memory.

    With ``start=None`` the history ends yesterday (UTC) so a demo looks current; with an
    explicit ``start`` (floored to the period) the output depends only on the arguments.
    The inventory and planted scenarios depend only on ``n_servers`` and ``seed``.
    The fleet is the blocks of :func:`fleet_blocks` put back in inventory order, so a fleet
    streamed block by block into a store holds exactly these rows.
    """
    _check_args(n_servers, days, freq, seed)
    n_periods = days * (24 if freq == "hourly" else 1)
    if n_servers * n_periods > MAX_ROWS:
        raise ValueError(
            f"{n_servers:,} servers × {n_periods:,} {freq} periods = {n_servers * n_periods:,} rows "
            f"exceeds the generator's limit of {MAX_ROWS:,} in memory: use fewer servers, fewer days "
            "or daily data, or stream it into a store (`generate` does)"
        )
    parts = list(
        fleet_blocks(n_servers, days=days, start=start, freq=freq, seed=seed, block_servers=block_servers)
    )
    if len(parts) == 1:
        return parts[0]
    return _in_inventory_order(parts)


BLOCK_SERVERS: Final = 5_000  # servers simulated at once: bounds memory, and defines the random streams


def fleet_blocks(
    n_servers: int,
    *,
    days: int = 1461,
    start: str | pd.Timestamp | None = None,
    freq: str = "daily",
    seed: int = 42,
    block_servers: int | None = None,
) -> Iterator[Fleet]:
    """The fleet of :func:`generate_fleet`, simulated and yielded a block of servers at a time.

    Why: 100,000 servers × 4 years do not fit one process; a block does (about 1.5 GB per
    5,000 servers daily). The inventory, scenarios, DR pairs and placement are drawn for the
    whole fleet first (they relate servers across the fleet); each block then simulates its
    servers with random streams of its own, so block k's series depend only on (seed, k).
    Server i goes to block i // block_servers, a DR standby to its primary's block (its disk
    and traffic follow the primary's). Block 0 uses the streams a one-block fleet always used:
    fleets up to ``block_servers`` are unchanged by blocking. Each yielded Fleet is sorted by
    server then time, its inventory and profiles in inventory order within the block.
    """
    _check_args(n_servers, days, freq, seed)
    block = BLOCK_SERVERS if block_servers is None else block_servers
    if not isinstance(block, int) or block < 1:
        raise ValueError(f"block_servers must be a positive integer, got {block!r}")
    alias = freq_alias(freq)
    per_day = 24 if freq == "hourly" else 1
    t0 = _start(start, days, alias)
    if min(block, n_servers) * days * per_day > MAX_ROWS:
        raise ValueError(
            f"a block of {min(block, n_servers):,} servers × {days * per_day:,} {freq} periods exceeds the "
            f"generator's limit of {MAX_ROWS:,} rows: use a smaller block, fewer days or daily data"
        )
    # Children of a SeedSequence are stable by index: the fifth stream (placement facts) was added
    # later without changing the first four, so a seed's metrics and inventory stay as they were.
    inv_seq, scen_seq, param_seq, noise_seq, place_seq = np.random.SeedSequence(seed).spawn(5)
    fleet = _inventory(np.random.default_rng(inv_seq), n_servers)
    _assign_scenarios(np.random.default_rng(scen_seq), fleet)
    _assign_placement(np.random.default_rng(place_seq), fleet)
    grid = _Grid(t0, days, per_day)
    cal = _calendar(grid)
    of = np.arange(n_servers) // block
    standby = fleet.dr_role == 2
    of[standby] = of[fleet.partner[standby]]
    for k in range(int(of.max()) + 1):
        idx = np.flatnonzero(of == k)
        if idx.size == 0:
            continue
        part = fleet if idx.size == n_servers else _subset(fleet, idx)
        streams = (param_seq, noise_seq) if k == 0 else (_child(param_seq, k), _child(noise_seq, k))
        sim = _Simulation(part, grid, cal, *(np.random.default_rng(s) for s in streams))
        arrays = sim.run()
        present = sim.present
        yield Fleet(
            inventory=part.frame[ALL_INVENTORY_COLUMNS].reset_index(drop=True),
            metrics=_assemble_metrics(part, grid, arrays, present),
            profiles=_profiles(part, grid, sim, present),
            freq=freq,
        )
        del arrays, present, sim


def _child(seq: np.random.SeedSequence, k: int) -> np.random.SeedSequence:
    """The k-th child of a SeedSequence, by index (spawn() counts calls; this does not)."""
    return np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, k))


def _subset(a: _FleetAttrs, idx: np.ndarray) -> _FleetAttrs:
    """The servers ``idx`` (sorted) of a fleet, their DR partners re-indexed within the subset."""
    local = np.full(a.n, -1, dtype=np.int64)
    local[idx] = np.arange(len(idx))
    out = {}
    for name, v in vars(a).items():
        if isinstance(v, pd.DataFrame):
            out[name] = v.iloc[idx].reset_index(drop=True)
        elif isinstance(v, np.ndarray) and v.ndim >= 1 and len(v) == a.n:
            out[name] = v[idx]
        else:
            out[name] = v
    out["n"] = len(idx)
    p = out["partner"]
    out["partner"] = np.where(p >= 0, local[np.maximum(p, 0)], -1)
    return _FleetAttrs(**out)


def _in_inventory_order(parts: list[Fleet]) -> Fleet:
    """One Fleet from blocks, servers back in inventory order (ids are zero-padded: sort = order)."""
    inventory = pd.concat([p.inventory for p in parts], ignore_index=True)
    order = np.argsort(inventory["server_id"].to_numpy(dtype=object), kind="stable")
    metrics = pd.concat([p.metrics for p in parts], ignore_index=True)
    codes = pd.Categorical(metrics["server_id"], categories=inventory["server_id"]).codes
    counts = np.bincount(codes, minlength=len(inventory))
    first = np.concatenate([[0], np.cumsum(counts)[:-1]])  # each server's first row, as concatenated
    rows = np.repeat(first[order] - np.concatenate([[0], np.cumsum(counts[order])[:-1]]), counts[order])
    rows += np.arange(len(metrics))
    return Fleet(
        inventory=inventory.iloc[order].reset_index(drop=True),
        metrics=metrics.take(rows).reset_index(drop=True),
        profiles=pd.concat([p.profiles for p in parts], ignore_index=True).iloc[order].reset_index(drop=True),
        freq=parts[0].freq,
    )


def _check_args(n_servers: int, days: int, freq: str, seed: int) -> None:
    def is_int(v: object) -> bool:
        return isinstance(v, int | np.integer) and not isinstance(v, bool)

    if not is_int(n_servers) or n_servers <= 0:
        raise ValueError(f"n_servers must be a positive integer, got {n_servers!r}")
    if not is_int(days) or days < MIN_DAYS:
        raise ValueError(f"days must be an integer ≥ {MIN_DAYS} (four weeks of history), got {days!r}")
    if freq not in FREQUENCIES:
        raise SchemaError(f"unknown frequency {freq!r}: use one of {', '.join(FREQUENCIES)}")
    if not is_int(seed) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")


def _start(start: str | pd.Timestamp | None, days: int, alias: str) -> pd.Timestamp:
    if start is None:
        return pd.Timestamp.now(tz="UTC").floor("D") - pd.Timedelta(days=days)
    try:
        ts = pd.Timestamp(start)
    except (ValueError, TypeError) as e:
        raise ValueError(f"start {start!r} is not a date or timestamp: {e}") from None
    if ts is pd.NaT:
        raise ValueError(f"start {start!r} is not a date or timestamp")
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return ts.floor(alias)


# --------------------------------------------------------------------------- inventory


class _FleetAttrs:
    """Per-server attributes as numpy codes (indexes into the tables above), filled in stages."""

    def __init__(self, **arrays: np.ndarray):
        self.__dict__.update(arrays)

    n: int
    bu: np.ndarray
    region: np.ndarray
    env: np.ndarray
    crit: np.ndarray
    stype: np.ndarray
    size: np.ndarray
    cores: np.ndarray
    memory: np.ndarray
    disk: np.ndarray
    price_noise: np.ndarray
    frame: pd.DataFrame
    scenario: np.ndarray
    breach_metric: np.ndarray
    peak: np.ndarray
    partner: np.ndarray
    dr_role: np.ndarray
    pin_reason: np.ndarray


def _pick(rng: np.random.Generator, weights, n: int) -> np.ndarray:
    p = np.asarray(list(weights), dtype=float)
    return rng.choice(len(p), size=n, p=p / p.sum()).astype(np.int16)


def _inventory(rng: np.random.Generator, n: int) -> _FleetAttrs:
    bu = _pick(rng, BUSINESS_UNITS.values(), n)
    region = _pick(rng, (r.weight for r in REGIONS), n)
    env = _pick(rng, ENVIRONMENT_MIX.values(), n)
    stype = _pick(rng, (t.weight for t in SERVER_TYPES), n)
    # criticality conditional on environment: inverse-CDF on one uniform per server
    cdf = np.cumsum(np.array([CRITICALITY_MIX[e] for e in ENVIRONMENT_MIX]), axis=1)
    u = rng.random(n)
    crit = (u[:, None] > cdf[env]).sum(axis=1).clip(0, 3).astype(np.int16)
    # size tier per type; dev/uat are mostly one size smaller
    u = rng.random(n)
    size = np.zeros(n, dtype=np.int16)
    for k, t in enumerate(SERVER_TYPES):
        sel = stype == k
        size[sel] = np.searchsorted(np.cumsum(t.size_p), u[sel] * sum(t.size_p), side="right")
    size = np.minimum(size, np.array([len(t.sizes) - 1 for t in SERVER_TYPES])[stype])
    smaller = (env > 0) & (rng.random(n) < 0.6)
    size = np.maximum(size - smaller, 0).astype(np.int16)
    attrs = _FleetAttrs(n=n, bu=bu, region=region, env=env, crit=crit, stype=stype, size=size)
    attrs.price_noise = rng.uniform(0.96, 1.04, n)
    _apply_sizes(attrs)
    return attrs


def _apply_sizes(a: _FleetAttrs) -> None:
    table = np.zeros((len(SERVER_TYPES), 4, 3), dtype=np.int64)
    for k, t in enumerate(SERVER_TYPES):
        table[k, : len(t.sizes)] = t.sizes
        table[k, len(t.sizes) :] = t.sizes[-1]
    sizes = table[a.stype, a.size]
    a.cores, a.memory, a.disk = sizes[:, 0], sizes[:, 1], sizes[:, 2]


def _build_frame(a: _FleetAttrs) -> None:
    """The inventory table (contract columns) from the attribute codes."""
    n = a.n
    width = max(5, len(str(n - 1)))
    ids = np.array([f"srv-{i:0{width}d}" for i in range(n)], dtype=object)
    env_names = np.array(list(ENVIRONMENT_MIX), dtype=object)
    type_names = np.array([t.name for t in SERVER_TYPES], dtype=object)
    site = np.array([r.site for r in REGIONS], dtype=object)[a.region]
    stype = type_names[a.stype]
    seq = pd.DataFrame({"s": site, "t": stype}).groupby(["s", "t"], sort=False).cumcount().to_numpy() + 1
    hostnames = [f"{s}-{t}-{q:04d}" for s, t, q in zip(site, stype, seq)]
    env = env_names[a.env]
    price = monthly_list_price(a.cores, a.memory, a.disk, stype, env) * a.price_noise
    a.frame = pd.DataFrame(
        {
            "server_id": pd.array(ids, dtype=_STR),
            "hostname": pd.array(hostnames, dtype=_STR),
            "business_unit": pd.array(np.array(list(BUSINESS_UNITS), dtype=object)[a.bu], dtype=_STR),
            "region": pd.array(np.array([r.name for r in REGIONS], dtype=object)[a.region], dtype=_STR),
            "environment": pd.array(env, dtype=_STR),
            "criticality": pd.array(np.array(_CRITICALITY, dtype=object)[a.crit], dtype=_STR),
            "server_type": pd.array(stype, dtype=_STR),
            "cpu_cores": a.cores,
            "memory_gb": a.memory,
            "disk_gb": a.disk,
            "monthly_cost_usd": np.round(price, 2),
        }
    )


# --------------------------------------------------------------------------- scenarios


def _choose(rng: np.random.Generator, free: np.ndarray, weights: np.ndarray, k: int) -> np.ndarray:
    """k distinct servers among the free ones, drawn with the given weights."""
    cand = np.flatnonzero(free & (weights > 0))
    k = min(k, len(cand))
    if k == 0:
        return cand[:0]
    w = weights[cand]
    return np.sort(rng.choice(cand, size=k, replace=False, p=w / w.sum()))


def _assign_scenarios(rng: np.random.Generator, a: _FleetAttrs) -> None:
    """Plant scenarios, DR pairs and peak timings; then build the inventory frame."""
    n = a.n
    scenario = np.full(n, SCENARIOS.index("steady"), dtype=np.int16)
    free = np.ones(n, dtype=bool)
    counts = {s: round(share * n) for s, share in _SCENARIO_SHARE.items()}
    type_names = [t.name for t in SERVER_TYPES]
    prod = a.env == 0
    bu_names = list(BUSINESS_UNITS)

    # DR pairs: a prod critical/high db/app/mq/file primary and a standby copy in its DR region
    partner = np.full(n, -1, dtype=np.int64)
    dr_role = np.zeros(n, dtype=np.int8)  # 0 none, 1 primary, 2 standby
    eligible = (
        prod & (a.crit <= 1) & np.isin(a.stype, [type_names.index(t) for t in ("db", "app", "mq", "file")])
    )
    primaries = _choose(rng, free, eligible.astype(float), counts["dr_standby"])
    free[primaries] = False
    standbys = _choose(rng, free, np.ones(n), len(primaries))
    primaries = primaries[: len(standbys)]
    free[standbys] = False
    region_index = {r.name: i for i, r in enumerate(REGIONS)}
    dr_of = np.array([region_index[r.dr_region] for r in REGIONS])
    for attr in ("bu", "env", "crit", "stype", "size", "price_noise"):
        getattr(a, attr)[standbys] = getattr(a, attr)[primaries]
    a.region[standbys] = dr_of[a.region[primaries]]
    partner[primaries], partner[standbys] = standbys, primaries
    dr_role[primaries], dr_role[standbys] = 1, 2
    scenario[standbys] = SCENARIOS.index("dr_standby")
    _apply_sizes(a)

    env_w = np.array([1.0, 2.0, 3.0])[a.env]  # forgotten servers are mostly dev/uat
    for name, weights in (
        ("idle", env_w),
        ("breach_next_quarter", np.array([3.0, 1.0, 0.4])[a.env]),
        ("breached", np.array([3.0, 1.0, 0.4])[a.env]),
        ("seasonal_peak", np.array([_SEASONAL_BU.get(b, 1.0) for b in BUSINESS_UNITS])[a.bu]),
        ("step_change", np.ones(n)),
        ("growing", np.ones(n)),
    ):
        chosen = _choose(rng, free, weights, counts[name])
        scenario[chosen] = SCENARIOS.index(name)
        free[chosen] = False
    # DR primaries are live workloads: steady or growing
    scenario[primaries] = np.where(
        rng.random(len(primaries)) < 0.5, SCENARIOS.index("steady"), SCENARIOS.index("growing")
    )

    # which metric a breach scenario plants, by server type
    breach_p = np.array([t.breach_p for t in SERVER_TYPES])[a.stype]
    u = rng.random(n)
    metric = (u[:, None] > np.cumsum(breach_p, axis=1)[:, :2]).sum(axis=1)
    in_breach = np.isin(scenario, [SCENARIOS.index("breach_next_quarter"), SCENARIOS.index("breached")])
    a.breach_metric = np.where(in_breach, metric, -1).astype(np.int8)

    # peak timing: by type; idle servers get a mix; standbys are flat; R&F seasonal → month-end
    peak_p = np.array([[t.peaks.get(p, 0.0) for p in PEAK_TIMINGS] for t in SERVER_TYPES])[a.stype]
    u = rng.random(n)
    peak = (u[:, None] > np.cumsum(peak_p, axis=1)[:, :-1]).sum(axis=1)
    idle = scenario == SCENARIOS.index("idle")
    peak[idle] = rng.integers(0, 4, idle.sum())
    peak[scenario == SCENARIOS.index("dr_standby")] = PEAK_TIMINGS.index("always_on")
    seasonal_rf = (scenario == SCENARIOS.index("seasonal_peak")) & (a.bu == bu_names.index("Risk & Finance"))
    peak[seasonal_rf] = PEAK_TIMINGS.index("month_end")
    a.peak = peak.astype(np.int16)
    a.scenario, a.partner, a.dr_role = scenario, partner, dr_role
    _build_frame(a)


# Placement facts: share of the fleet in anti-affinity groups, group sizes, share pinned.
_GROUP_SHARE: Final = 0.12
_GROUP_SIZES: Final = (2, 3, 4)
_GROUP_TYPES: Final = ("web", "app", "mq", "db")  # cluster nodes and database replicas
_PINNED_SHARE: Final = 0.03


def _assign_placement(rng: np.random.Generator, a: _FleetAttrs) -> None:
    """Anti-affinity groups and pinned servers, from their own random stream; DR pairs to the frame.

    Called after the scenarios and the frame are built and touches only the new columns, so
    everything else a seed produces is what it was before placement facts existed.
    """
    n = a.n
    ids = a.frame["server_id"].to_numpy(dtype=object)
    type_names = [t.name for t in SERVER_TYPES]
    standby = a.dr_role == 2  # standbys sit in the DR region: their placement is the DR pair's

    # groups: members of one bucket (business unit, region, environment, type), prod or uat
    cand = (a.env <= 1) & np.isin(a.stype, [type_names.index(t) for t in _GROUP_TYPES]) & ~standby
    bucket = ((a.bu.astype(np.int64) * 64 + a.region) * 4 + a.env) * 16 + a.stype
    group = np.full(n, -1, dtype=np.int64)
    target, placed, g = round(_GROUP_SHARE * n), 0, 0
    keys = np.unique(bucket[cand])
    for key in rng.permutation(keys):
        members = rng.permutation(np.flatnonzero(cand & (bucket == key)))
        while len(members) >= 2 and placed < target:
            size = min(int(rng.choice(_GROUP_SIZES)), len(members))
            group[np.sort(members[:size])] = g
            members, placed, g = members[size:], placed + size, g + 1
        if placed >= target:
            break
    names = np.array([f"aag-{i + 1:04d}" for i in range(g)] + [None], dtype=object)[group]

    # pinned: licence-bound (db, analytics) or appliance-like (infra) servers, idle ones likelier
    weight = np.ones(n)
    weight[np.isin(a.stype, [type_names.index(t) for t in ("db", "analytics")])] = 3.0
    weight[a.stype == type_names.index("infra")] = 2.0
    weight[a.scenario == SCENARIOS.index("idle")] *= 3.0
    weight[standby] = 0.0
    pinned = np.zeros(n, dtype=bool)
    pinned[_choose(rng, np.ones(n, dtype=bool), weight, round(_PINNED_SHARE * n))] = True
    reason = np.where(a.stype == type_names.index("infra"), "appliance", "licence").astype(object)
    a.pin_reason = np.where(pinned, reason, None)

    partner = np.where(a.partner >= 0, ids[np.maximum(a.partner, 0)], None)
    roles = np.array([None, "primary", "standby"], dtype=object)[a.dr_role]
    a.frame["dr_role"] = pd.array(roles, dtype=_STR)
    a.frame["dr_partner_id"] = pd.array(partner, dtype=_STR)
    a.frame["anti_affinity_group"] = pd.array(names, dtype=_STR)
    a.frame["pinned"] = pd.array(pinned, dtype="boolean")


# --------------------------------------------------------------------------- time and calendar


@dataclass(frozen=True)
class _Grid:
    """The period grid: history of ``days`` days plus a planted future of FUTURE_DAYS."""

    start: pd.Timestamp
    days: int
    per_day: int

    @property
    def n(self) -> int:  # history periods
        return self.days * self.per_day

    @property
    def n_ext(self) -> int:  # history + future periods
        return (self.days + FUTURE_DAYS) * self.per_day

    @property
    def step(self) -> pd.Timedelta:
        return pd.Timedelta(hours=1) if self.per_day == 24 else pd.Timedelta(days=1)

    @property
    def pad(self) -> int:  # calendar days before the first UTC day (local clocks run behind UTC)
        return 1 if self.per_day == 24 else 0

    @property
    def hour0(self) -> int:  # hour of the first period within its UTC day
        return int((self.start - self.start.floor("D")) / pd.Timedelta(hours=1))


@dataclass
class _Calendar:
    """Day-level calendar features over the grid (+ padding), one row per calendar day."""

    dates: pd.DatetimeIndex
    daycode: np.ndarray  # (days, regions) int: 0..6 weekday, 7 weekday public holiday
    month_end: np.ndarray  # (days,) weight of book-closing activity
    quarter_end: np.ndarray
    year_end: np.ndarray
    yearly: np.ndarray  # (days, business units) seasonal profile, peak 1
    since_patch: np.ndarray  # (days, environments) days since the monthly patch reboot


def _calendar(grid: _Grid) -> _Calendar:
    first = grid.start.floor("D").tz_localize(None) - pd.Timedelta(days=grid.pad)
    n_days = grid.days + FUTURE_DAYS + 2 * grid.pad + 1
    dates = pd.date_range(first, periods=n_days, freq="D")
    weekday = dates.day_of_week.to_numpy()
    years = range(dates[0].year - 1, dates[-1].year + 2)

    daycode = np.empty((n_days, len(REGIONS)), dtype=np.int16)
    day_values = dates.to_numpy().astype("datetime64[D]")
    for r, region in enumerate(REGIONS):
        hol_days = _public_holidays(region.country, region.subdiv, years.start, years.stop)
        is_hol = np.isin(day_values, hol_days) & (weekday < 5)
        daycode[:, r] = np.where(is_hol, 7, weekday)

    month_end, quarter_end, year_end = _book_close_weights(dates)

    doy = dates.day_of_year.to_numpy().astype(np.float32)
    yearly = np.zeros((n_days, len(BUSINESS_UNITS)), dtype=np.float32)
    for b, bu in enumerate(BUSINESS_UNITS):
        prof = np.zeros(n_days, dtype=np.float32)
        for centre, width, height in _YEARLY_BUMPS[bu]:
            d = np.abs(doy - centre)
            d = np.minimum(d, 365.25 - d)  # circular: late December is near early January
            prof += height * np.exp(-0.5 * (d / width) ** 2)
        yearly[:, b] = prof / max(float(np.abs(prof).max()), 1e-6)

    # monthly patch reboots (Patch Tuesday + a delay per environment)
    month_starts = pd.date_range(dates[0] - pd.DateOffset(months=2), dates[-1], freq="MS")
    first_tue = month_starts + pd.to_timedelta((1 - month_starts.day_of_week) % 7, unit="D")
    patch_tue = (first_tue + pd.Timedelta(days=7)).to_numpy().astype("datetime64[D]")
    since_patch = np.empty((n_days, len(ENVIRONMENT_MIX)), dtype=np.float32)
    for e, env in enumerate(ENVIRONMENT_MIX):
        reboots = patch_tue + np.timedelta64(_ENV_PATCH_DELAY[env], "D")
        last = reboots[np.searchsorted(reboots, day_values, side="right") - 1]
        since_patch[:, e] = (day_values - last).astype(np.float32)
    return _Calendar(dates, daycode, month_end, quarter_end, year_end, yearly, since_patch)


@functools.lru_cache(maxsize=128)
def _public_holidays(country: str, subdiv: str | None, first_year: int, stop_year: int) -> np.ndarray:
    """Public holiday dates of a country (subdivision) for [first_year, stop_year), cached."""
    hol = holidays_lib.country_holidays(country, subdiv=subdiv, years=range(first_year, stop_year))
    days = np.array(sorted(hol.keys()), dtype="datetime64[D]")
    days.flags.writeable = False
    return days


def _book_close_weights(dates: pd.DatetimeIndex) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Activity weights of closing the books: last business days of a month and first of the next."""
    lo = dates[0].to_period("M").start_time
    hi = dates[-1].to_period("M").end_time.normalize()
    full = pd.date_range(lo, hi, freq="D")
    bday = (full.day_of_week < 5).astype(np.int32)
    month = full.year * 12 + full.month
    from_start = pd.Series(bday).groupby(month).cumsum().to_numpy()
    total = pd.Series(bday).groupby(month).transform("sum").to_numpy()
    from_end = total - from_start + 1
    end_w = np.select([from_end == 1, from_end == 2, from_end == 3], [1.0, 0.6, 0.3], 0.0) * bday
    start_w = np.select([from_start == 1, from_start == 2], [0.7, 0.35], 0.0) * bday
    m = full.month.to_numpy()
    month_end = end_w + start_w
    quarter_end = end_w * np.isin(m, [3, 6, 9, 12]) + start_w * np.isin(m, [1, 4, 7, 10])
    year_end = end_w * (m == 12) + start_w * (m == 1)
    sl = slice(int((dates[0] - lo).days), int((dates[0] - lo).days) + len(dates))
    return (
        month_end[sl].astype(np.float32),
        quarter_end[sl].astype(np.float32),
        year_end[sl].astype(np.float32),
    )


# --------------------------------------------------------------------------- simulation


def _saturate(values: np.ndarray, knee: float, limit: float) -> None:
    """In place: linear up to ``knee``, then bending smoothly towards ``limit`` (link capacity)."""
    over = values > knee
    if over.any():
        x = values[over]
        values[over] = knee + (limit - knee) * np.tanh((x - knee) / (limit - knee))


def _ar1(rng: np.random.Generator, n_t: int, phi: float, sigma: np.ndarray) -> np.ndarray:
    """Stationary AR(1) noise, unit variance scaled by sigma per server; shape (time, server)."""
    z = rng.standard_normal((n_t, len(sigma)), dtype=np.float32)
    z[1:] *= np.float32(np.sqrt(1.0 - phi * phi))
    phi32 = np.float32(phi)
    for t in range(1, n_t):  # a loop over time on whole server vectors
        z[t] += phi32 * z[t - 1]
    z *= sigma.astype(np.float32)
    return z


class _Simulation:
    """Builds the metric arrays (time, server) for one fleet; keeps what it planted."""

    def __init__(
        self,
        fleet: _FleetAttrs,
        grid: _Grid,
        cal: _Calendar,
        rng: np.random.Generator,
        noise: np.random.Generator,
    ):
        self.f, self.g, self.cal, self.rng, self.noise = fleet, grid, cal, rng, noise
        n = fleet.n
        sc = fleet.scenario
        self.is_ = {s: sc == SCENARIOS.index(s) for s in SCENARIOS}
        crit_names = np.array(_CRITICALITY)[fleet.crit]
        offset = np.array([DEFAULT_CRITICALITY_OFFSETS[c] for c in crit_names], dtype=np.float32)
        self.threshold = {m: (DEFAULT_THRESHOLDS[m] + offset).astype(np.float32) for m in _PERCENT_METRICS}
        self.tau = (np.arange(grid.n_ext, dtype=np.float32) / grid.per_day)[:, None]  # days since start
        self.tau_last = (grid.n - 1) / grid.per_day
        self.breach_index = np.full(n, -1, dtype=np.int64)  # period where the planted path crosses
        self.step_day = np.full(n, np.nan, dtype=np.float32)
        self.step_factor = np.full(n, np.nan, dtype=np.float32)
        self.leak = np.zeros(n, dtype=bool)
        self.first = np.zeros(n, dtype=np.int64)
        self.present = np.ones((grid.n, n), dtype=bool)
        self.utc_offset = np.array([r.utc_offset for r in REGIONS])[fleet.region]

    # ---- helpers
    def u(self, lo: float, hi: float, size: int | None = None) -> np.ndarray:
        return self.rng.uniform(lo, hi, self.f.n if size is None else size).astype(np.float32)

    def type_range(self, field: str) -> np.ndarray:
        lo = np.array([getattr(t, field)[0] for t in SERVER_TYPES], dtype=np.float32)[self.f.stype]
        hi = np.array([getattr(t, field)[1] for t in SERVER_TYPES], dtype=np.float32)[self.f.stype]
        return lo + (hi - lo) * self.u(0, 1)

    def local_days(self) -> tuple[np.ndarray, np.ndarray] | None:
        """Calendar-row and local-hour index per (period, server) for hourly grids."""
        g = self.g
        if g.per_day == 1:
            return None
        t = np.arange(g.n_ext, dtype=np.int32)[:, None]
        local = t + np.int32(g.hour0) + self.utc_offset.astype(np.int32)[None, :]
        return local // 24 + g.pad, local % 24

    def per_period(self, day_values: np.ndarray) -> np.ndarray:
        """Spread a (calendar day, server) array onto the (period, server) grid in local time."""
        if self.idx is None:
            return day_values[: self.g.n_ext]
        return np.take_along_axis(day_values, self.idx[0], axis=0)

    def trend(self, b0, s1, s2, kink, step, step_day) -> np.ndarray:
        """Piecewise-linear level: b0 + s1·τ + s2·(τ−kink)⁺ + step·[τ ≥ step_day], (period, server)."""
        tau = self.tau
        out = s1[None, :] * tau
        out += b0[None, :]
        bent = np.flatnonzero(s2 != 0)  # only growing and planted servers have a kink
        if len(bent):
            out[:, bent] += s2[bent][None, :] * np.maximum(tau - kink[bent][None, :], 0)
        has_step = np.flatnonzero(step != 0)
        if len(has_step):
            out[:, has_step] += step[has_step][None, :] * (tau >= step_day[has_step][None, :])
        return out

    # ---- the run
    def run(self) -> dict[str, np.ndarray]:
        self.idx = self.local_days()
        self._commissioning()
        shape = self._activity_shape()
        self._steps()
        cpu, cpu_level = self._cpu(shape)
        mem = self._memory(shape)
        del shape
        disk = self._disk()
        net_in, net_out = self._network(cpu, cpu_level)
        self._incidents(cpu, net_in)
        for net in (net_in, net_out):
            _saturate(net, _NET_KNEE, _NET_LINK)
        self._gaps()
        out = {"cpu_p95": cpu, "mem_p95": mem, "disk_p95": disk, "net_in_p95": net_in, "net_out_p95": net_out}
        for m, v in out.items():
            hi = 100.0 if m in _PERCENT_METRICS else None
            np.clip(v, 0.0, hi, out=v)
        return out

    def _commissioning(self) -> None:
        """Some steady/growing/idle servers went live during the span (shorter history)."""
        g, n = self.g, self.f.n
        if g.days < 240:
            return
        cand = self.is_["steady"] | self.is_["growing"] | self.is_["idle"]
        cand &= self.f.dr_role == 0
        late = cand & (self.rng.random(n) < 0.06)
        first_day = (self.u(0.25, 1.0) * (g.days - 150)).astype(np.int64)
        self.first = np.where(late, first_day * g.per_day, 0)

    def _activity_shape(self) -> np.ndarray:
        """Calendar × daily profile multiplier (period, server): weekly, book close, seasons, hours."""
        f, cal, is_ = self.f, self.cal, self.is_
        n = f.n
        breach_cpu = (f.breach_metric == 0) | (f.breach_metric == 1)
        weekly_amp = self.u(0.6, 1.1)
        weekly_amp[is_["dr_standby"]] *= 0.2
        type_me = np.array([t.month_end for t in SERVER_TYPES], dtype=np.float32)[f.stype]
        bu_me = np.array([_MONTH_END_BU.get(b, 1.0) for b in BUSINESS_UNITS], dtype=np.float32)[f.bu]
        me = _MONTH_END_AMP[f.peak] * type_me * bu_me * self.u(0.5, 1.5)
        qe = me * self.u(0.8, 1.6)
        ye = me * self.u(0.5, 1.2)
        ya = self.u(0.03, 0.15)
        ya[is_["seasonal_peak"]] = self.u(0.3, 0.6, int(is_["seasonal_peak"].sum()))
        rf = is_["seasonal_peak"] & (f.bu == list(BUSINESS_UNITS).index("Risk & Finance"))
        qe[rf] += self.u(0.2, 0.4, int(rf.sum()))
        # planted breaches are trend-driven: modest book-close peaks keep the ramp readable
        damp = np.where(breach_cpu, 0.25, 1.0).astype(np.float32)
        damp[breach_cpu] *= np.minimum(1.0, 0.2 / np.maximum(me + qe + ye, 1e-6))[breach_cpu]
        damp[is_["dr_standby"]] = 0.1
        me, qe, ye, ya = me * damp, qe * damp, ye * damp, ya * damp

        # day = 1 + amp·(W[peak, daycode(region)] − 1) + me·month_end + qe·quarter_end + ye·year_end
        #       + ya·yearly[bu]: one (days × features) @ (features × servers) product
        n_combo = len(PEAK_TIMINGS) * len(REGIONS)
        weekly = _WEEKLY[:, cal.daycode].transpose(1, 0, 2).reshape(len(cal.dates), n_combo)
        features = np.concatenate(
            [weekly, cal.month_end[:, None], cal.quarter_end[:, None], cal.year_end[:, None], cal.yearly],
            axis=1,
        ).astype(np.float32)
        coef = np.zeros((features.shape[1], n), dtype=np.float32)
        cols = np.arange(n)
        coef[f.peak.astype(np.int64) * len(REGIONS) + f.region, cols] = weekly_amp
        coef[n_combo], coef[n_combo + 1], coef[n_combo + 2] = me, qe, ye
        coef[n_combo + 3 + f.bu.astype(np.int64), cols] = ya
        day = features @ coef
        day += (1.0 - weekly_amp)[None, :]
        np.maximum(day, 0.05, out=day)
        shape = self.per_period(day)
        if self.idx is not None:
            hours = np.arange(24, dtype=np.float32)
            table = np.empty((len(PEAK_TIMINGS), 24), dtype=np.float32)
            for p, (floor, bumps) in enumerate(_HOURLY_SHAPES):
                prof = np.zeros(24, dtype=np.float32)
                for centre, width, height in bumps:
                    d = np.abs(hours - centre)
                    d = np.minimum(d, 24 - d)
                    prof += height * np.exp(-0.5 * (d / width) ** 2)
                table[p] = floor + (1 - floor) * prof / prof.max()
            flat_hours = table.ravel()[f.peak.astype(np.int32)[None, :] * 24 + self.idx[1]]
            depth = np.where(is_["dr_standby"], 0.15, 1.0).astype(np.float32)
            shape *= 1.0 - depth[None, :] * (1.0 - flat_hours)
        return shape.astype(np.float32, copy=False)

    def _levels(self, base: np.ndarray, per_year: np.ndarray, growth: np.ndarray) -> tuple[np.ndarray, ...]:
        """Trend parameters (per day); growing servers add ``growth`` per year from a kink on.

        Breach scenarios are re-planted by :meth:`_plant`.
        """
        n = self.f.n
        s1 = per_year / 365.25
        s2 = np.zeros(n, dtype=np.float32)
        kink = np.zeros(n, dtype=np.float32)
        grow = self.is_["growing"]
        kink[grow] = self.u(0.0, 0.6, int(grow.sum())) * self.g.days
        s2[grow] = growth[grow] / 365.25
        step = np.zeros(n, dtype=np.float32)
        return base.astype(np.float32), s1.astype(np.float32), s2, kink, step

    def _steps(self) -> None:
        """Migrations: a level shift at one date, down (moved away) or up (moved here)."""
        sel = self.is_["step_change"]
        k = int(sel.sum())
        self.step_day[sel] = np.floor(self.u(0.25, 0.85, k) * self.g.days)  # at midnight UTC
        up = self.rng.random(k) < 0.5
        self.step_factor[sel] = np.where(up, self.u(1.4, 1.9, k), self.u(0.35, 0.65, k))

    def _plant(
        self,
        metric: str,
        base,
        s1,
        s2,
        kink,
        step,
        step_day,
        shape: np.ndarray | None,
        ceiling,
        sigma: np.ndarray | None = None,
    ) -> np.ndarray | None:
        """Deterministic path (period, server): breach ramps where planted, else capped below ceiling."""
        f, g = self.f, self.g
        code = _PERCENT_METRICS.index(metric)
        soon = self.is_["breach_next_quarter"] & (f.breach_metric == code)
        over = self.is_["breached"] & (f.breach_metric == code)
        eff = self.threshold[metric]
        hist_max = np.ones(f.n, dtype=np.float32) if shape is None else shape[: g.n].max(axis=0)
        for sel, future in ((soon, True), (over, False)):
            idx = np.flatnonzero(sel)
            if not len(idx):
                continue
            k = len(idx)
            e = eff[idx]
            hm = hist_max[idx]
            if future:
                # below the threshold throughout history, crossing δ days after the end
                # the noisy peaks of the last weeks stay under the threshold too
                headroom = 1.0 + 2.5 * (sigma[idx] if sigma is not None else 0.0)
                level_end = np.minimum(e - self.u(4, 9, k), (e - 3.0) / (hm * headroom))
                delta = self.u(15, 70, k)
                at = g.n + (delta * g.per_day).astype(np.int64)
                if shape is not None:  # the busiest period of the week before the target crossing
                    rows = np.maximum(at[:, None] - np.arange(7 * g.per_day + 1)[None, :], g.n)
                    win = shape[rows, idx[:, None]].max(axis=1)
                else:
                    win = np.ones(k, dtype=np.float32)
                # reach the threshold (with a little margin) by the start of that week
                slope = np.maximum((1.005 * e / win - level_end) / (delta - 7.0), 0.02)
            else:
                # over the threshold by more than the noise, so "now" is unambiguously over
                headroom = 1.0 + 2.5 * (sigma[idx] if sigma is not None else 0.0)
                level_end = np.minimum(np.maximum(e + self.u(2, 7, k), (e + 2.0) * headroom), 98.0 / hm)
                ago = self.u(30, max(31.0, min(120.0, 0.3 * g.days)), k)  # days over the threshold
                slope = np.maximum((level_end - e) / ago, 0.02)
            floor = level_end * self.u(0.35, 0.55, k)
            ramp = np.minimum(
                np.minimum(self.u(90, 400, k), 0.7 * self.tau_last), (level_end - floor) / slope
            )
            start_ramp = level_end - slope * ramp
            kink_b = self.tau_last - ramp
            pre = np.minimum(self.u(0, 2, k) / 365.25, 0.5 * start_ramp / np.maximum(kink_b, 1.0))
            base[idx] = start_ramp - pre * kink_b
            s1[idx], s2[idx], kink[idx], step[idx] = pre, slope - pre, kink_b, 0.0
        planted = soon | over
        if shape is not None:
            path = self.trend(base, s1, s2, kink, step, step_day)
            path *= shape
            peak = path.max(axis=0)
        else:  # a monotone trend peaks at the last planted period
            path = None
            tl = np.float32((g.n_ext - 1) / g.per_day)
            peak = base + s1 * tl + s2 * np.maximum(tl - kink, 0) + step
        scale = np.where(planted, 1.0, np.minimum(1.0, ceiling / np.maximum(peak, 1e-6))).astype(np.float32)
        for arr in (base, s1, s2, step):
            arr *= scale
        idx = np.flatnonzero(planted)
        if path is not None:
            path *= scale[None, :]
            sub = path[:, idx]
        else:
            sub = self.trend(base[idx], s1[idx], s2[idx], kink[idx], step[idx], step_day[idx])
        if len(idx):
            crossed = sub >= eff[idx][None, :]
            self.breach_index[idx] = np.where(crossed.any(axis=0), crossed.argmax(axis=0), -1)
        return path

    def _cpu(self, shape: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        f, g, is_, n = self.f, self.g, self.is_, self.f.n
        base = self.type_range("cpu")
        base[f.env > 0] *= self.u(0.4, 0.8, int((f.env > 0).sum()))
        per_year = np.clip(self.rng.normal(1.5, 2.0, n), -2.0, 6.0).astype(np.float32)
        growth = self.u(6, 15)
        idle = is_["idle"]
        base[idle] = self.u(0.8, 4.0, int(idle.sum()))
        per_year[idle] = self.u(-0.2, 0.6, int(idle.sum()))
        sb = is_["dr_standby"]
        base[sb] = self.u(2.0, 5.0, int(sb.sum()))
        per_year[sb] = 0.0
        base, s1, s2, kink, step = self._levels(base, per_year, growth)
        sel = is_["step_change"]
        step[sel] = base[sel] + s1[sel] * self.step_day[sel]
        step[sel] *= self.step_factor[sel] - 1.0
        eff = self.threshold["cpu_p95"]
        ceiling = eff - self.u(10, 20)
        ceiling[is_["growing"]] = eff[is_["growing"]] - self.u(6, 10, int(is_["growing"].sum()))
        ceiling[idle] = 7.0
        ceiling[sb] = 6.0
        sigma = self.u(0.04, 0.09) if g.per_day == 1 else self.u(0.06, 0.12)
        sigma[f.breach_metric == 0] = self.u(0.025, 0.04, int((f.breach_metric == 0).sum()))
        path = self._plant("cpu_p95", base, s1, s2, kink, step, self.step_day, shape, ceiling, sigma)
        self.cpu_path_max = path.max(axis=0)
        noise = _ar1(self.noise, g.n, 0.6 if g.per_day == 1 else 0.85, sigma)
        noise += 1.0
        np.maximum(noise, 0.2, out=noise)
        cpu = path[: g.n]
        cpu *= noise
        del noise
        cap = np.where(idle | sb, _IDLE_CPU_CAP, 100.0).astype(np.float32)
        np.minimum(cpu, cap[None, :], out=cpu)
        return cpu, base

    def _incidents(self, cpu: np.ndarray, net_in: np.ndarray) -> None:
        """Short CPU spikes with a burst of inbound traffic."""
        g = self.g
        # not on idle servers, standbys or servers planted to breach next quarter (kept below now)
        spiky = np.flatnonzero(~(self.is_["idle"] | self.is_["dr_standby"] | self.is_["breach_next_quarter"]))
        if not len(spiky):
            return
        n_spikes = self.noise.poisson(len(spiky) * g.days / 150.0)
        at_t = self.noise.integers(0, g.n, n_spikes)
        at_s = spiky[self.noise.integers(0, len(spiky), n_spikes)]
        cpu[at_t, at_s] += self.noise.uniform(10, 35, n_spikes).astype(np.float32)
        net_in[at_t, at_s] *= self.noise.uniform(1.3, 1.8, n_spikes).astype(np.float32)

    def _memory(self, shape: np.ndarray) -> np.ndarray:
        f, g, is_, n, cal = self.f, self.g, self.is_, self.f.n, self.cal
        base = self.type_range("mem")
        base[f.env > 0] *= self.u(0.6, 0.9, int((f.env > 0).sum()))
        per_year = np.clip(self.rng.normal(1.5, 1.5, n), 0.0, 5.0).astype(np.float32)
        growth = self.u(3, 8)
        idle = is_["idle"]
        base[idle] = self.u(8, 30, int(idle.sum()))
        per_year[idle] = self.u(0, 1, int(idle.sum()))
        base, s1, s2, kink, step = self._levels(base, per_year, growth)
        sel = is_["step_change"]
        step[sel] = (base[sel] + s1[sel] * self.step_day[sel]) * 0.5 * (self.step_factor[sel] - 1.0)
        follow = self.u(0.01, 0.06)  # memory is sticky: it follows activity only weakly
        mem_shape = 1.0 + follow[None, :] * (shape - 1.0)
        # JVM-style leaks: climb between monthly patch reboots
        leak_p = np.array([t.memory_leak_p for t in SERVER_TYPES])[f.stype]
        self.leak = (self.rng.random(n) < leak_p) & ~(f.breach_metric == 1) & ~idle & (f.dr_role == 0)
        leak_amp = np.where(self.leak, self.u(4, 12), 0.0).astype(np.float32)
        eff = self.threshold["mem_p95"]
        ceiling = eff - self.u(6, 15) - leak_amp * 1.4
        sigma = self.u(0.01, 0.025)
        path = self._plant("mem_p95", base, s1, s2, kink, step, self.step_day, mem_shape, ceiling, sigma)
        del mem_shape
        mem = path[: g.n]
        leaky = np.flatnonzero(self.leak)
        if len(leaky):
            since = cal.since_patch[:, f.env[leaky]]
            if self.idx is not None:
                rows = self.idx[0][: g.n, leaky]
                since = np.take_along_axis(since, rows, axis=0) + self.idx[1][: g.n, leaky] / 24.0
            else:
                since = since[: g.n]
            mem[:, leaky] += leak_amp[leaky][None, :] * np.minimum(since / 30.0, 1.4)
        noise = _ar1(self.noise, g.n, 0.97 if g.per_day == 1 else 0.995, sigma)
        noise += 1.0
        mem *= noise
        return mem

    def _disk(self) -> np.ndarray:
        """Disk: monotone growth with random increments, log clean-up sawtooth, archive purges."""
        f, g, is_, n = self.f, self.g, self.is_, self.f.n
        base = self.type_range("disk")
        per_year = self.type_range("disk_growth")
        idle = is_["idle"]
        per_year[idle] *= 0.2
        planted = (f.breach_metric == 2) & (is_["breach_next_quarter"] | is_["breached"])
        # log clean-ups: regular purge jobs with jitter; none on planted-breach servers
        purges = (self.rng.random(n) < 0.45) & ~planted
        amp = np.where(purges, self.u(2, 10), 0.0).astype(np.float32)
        interval = self.u(20, 120)
        base, s1, s2, kink, step = self._levels(base, per_year, per_year)  # growing: twice the rate
        up = is_["step_change"] & (self.step_factor > 1)
        step[up] = self.u(3, 10, int(up.sum()))
        ceiling = self.threshold["disk_p95"] - self.u(6, 15) - amp * 1.3
        self._plant("disk_p95", base, s1, s2, kink, step, self.step_day, None, ceiling)  # scales the trend

        # random positive increments around the trend (rate × U(0, 2)), rescaled so that the
        # history ends on the planted value
        tau = self.tau[: g.n]
        incr = self.noise.random((g.n, n), dtype=np.float32)
        bent = np.flatnonzero(s2 != 0)
        extra = incr[:, bent] * (2.0 * s2[bent])[None, :] * (tau >= kink[bent][None, :])
        incr *= (2.0 * s1)[None, :]
        incr[:, bent] += extra
        del extra
        incr[0] = 0.0
        total = incr.sum(axis=0)
        want = s1 * self.tau_last + s2 * np.maximum(self.tau_last - kink, 0)
        disk = np.cumsum(incr, axis=0, out=incr)
        disk *= np.where(total > 0, want / np.maximum(total, 1e-9), 0.0).astype(np.float32)[None, :]
        disk += base[None, :]
        has_step = np.flatnonzero(step != 0)
        if len(has_step):
            disk[:, has_step] += step[has_step][None, :] * (tau >= self.step_day[has_step][None, :])
        # archive purges: one permanent drop on a few servers
        archive = (self.rng.random(n) < 0.1) & ~planted & ~is_["dr_standby"]
        drop_day = self.u(0.2, 0.9) * g.days
        drop = np.where(archive, self.u(0.1, 0.3), 0.0).astype(np.float32)
        ar = np.flatnonzero(archive)
        if len(ar):
            disk[:, ar] *= 1.0 - drop[ar][None, :] * (tau >= drop_day[ar][None, :])
        # clean-up sawtooth: logs pile up, a scheduled job removes them
        pr = np.flatnonzero(amp > 0)
        if len(pr):
            n_max = int(np.ceil(g.days / 20.0)) + 2
            phase = self.u(0, 1, len(pr)) * interval[pr]
            k = np.arange(n_max, dtype=np.float32)
            times = phase[:, None] + k[None, :] * interval[pr][:, None]
            times += self.u(-0.2, 0.2, len(pr) * n_max).reshape(len(pr), n_max) * interval[pr][:, None]
            periods = np.floor(times * g.per_day).astype(np.int64)
            ok = (periods >= 0) & (periods < g.n)
            event = np.zeros((g.n, len(pr)), dtype=np.int32)
            cols = np.broadcast_to(np.arange(len(pr))[:, None], periods.shape)
            event[periods[ok], cols[ok]] = periods[ok]
            last = np.maximum.accumulate(event, axis=0)
            since_days = (np.arange(g.n, dtype=np.float32)[:, None] - last) / g.per_day
            disk[:, pr] += (amp[pr] / interval[pr])[None, :] * since_days
        # a standby holds a replica of its primary's data (plus a little local log space)
        sb = np.flatnonzero(is_["dr_standby"])
        if len(sb):
            disk[:, sb] = disk[:, f.partner[sb]] + self.u(0.0, 0.5, len(sb))[None, :]
        return disk

    def _network(self, cpu: np.ndarray, cpu_base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Network follows CPU (same activity), plus nightly/weekly backup traffic out."""
        f, g, is_, cal = self.f, self.g, self.is_, self.cal
        target = self.type_range("net_out")
        target[f.env > 0] *= 0.3
        target[is_["idle"]] *= 0.05
        target[is_["dr_standby"]] = self.u(5, 20, int(is_["dr_standby"].sum()))
        ratio = np.array([t.net_in_ratio for t in SERVER_TYPES], dtype=np.float32)[f.stype]
        ratio *= self.u(0.8, 1.25)
        lo = np.array([t.backup_mbps[0] for t in SERVER_TYPES], dtype=np.float32)[f.stype]
        hi = np.array([t.backup_mbps[1] for t in SERVER_TYPES], dtype=np.float32)[f.stype]
        backup = (lo + (hi - lo) * self.u(0, 1)) * np.where(f.env == 0, 1.0, 0.3).astype(np.float32)
        backup[is_["idle"]] *= 0.1
        ref = np.maximum(cpu_base, 0.5)
        peak_cpu = np.maximum(self.cpu_path_max, ref)
        k_out = np.minimum(target / ref, (_NET_CEILING - backup) / peak_cpu)
        k_in = np.minimum(ratio * k_out, _NET_CEILING / peak_cpu)

        sigma = self.u(0.05, 0.10)
        phi = 0.5 if g.per_day == 1 else 0.8
        net_out = _ar1(self.noise, g.n, phi, sigma)
        net_out += 1.0
        np.maximum(net_out, 0.1, out=net_out)
        net_out *= cpu
        net_out *= k_out[None, :]
        net_in = _ar1(self.noise, g.n, phi, sigma)
        net_in += 1.0
        np.maximum(net_in, 0.1, out=net_in)
        net_in *= cpu
        net_in *= k_in[None, :]
        # backups: nightly incrementals, a full backup on Saturday (local time)
        bk = np.flatnonzero(backup > 0)
        if len(bk):
            code = cal.daycode[:, f.region[bk]]
            saturday = (code == 5).astype(np.float32)
            if self.idx is None:
                weight = (0.35 + 0.65 * saturday)[: g.n]
            else:
                rows, hours = self.idx[0][: g.n, bk], self.idx[1][: g.n, bk]
                sat = np.take_along_axis(saturday, rows, axis=0)
                weight = np.where(sat > 0, hours < 6, 0.35 * ((hours >= 1) & (hours <= 3)))
            net_out[:, bk] += backup[bk][None, :] * weight.astype(np.float32)
        # a standby receives its primary's replication stream
        sb = np.flatnonzero(is_["dr_standby"])
        if len(sb):
            net_in[:, sb] = 0.3 * net_out[:, f.partner[sb]] + 0.2 * net_in[:, sb]
        return net_in, net_out

    def _gaps(self) -> None:
        """Collector outages: short gaps on a few % of servers, a couple of long ones."""
        g, n = self.g, self.f.n
        present = self.present
        present &= np.arange(g.n)[:, None] >= self.first[None, :]
        lo_pad, hi_pad = 14 * g.per_day, 7 * g.per_day
        short_len = (1, 3) if g.per_day == 1 else (1, 6)
        long_len = (8, min(45, max(9, g.days // 6))) if g.per_day == 1 else (24, 96)
        n_short = round(0.04 * n)
        n_long = min(n // 20, max(2, round(0.003 * n)))
        candidates = np.flatnonzero(~self.is_["dr_standby"])
        short = self.rng.choice(candidates, size=min(n_short, len(candidates)), replace=False)
        long_cands = np.flatnonzero(~(self.is_["dr_standby"] | self.is_["breach_next_quarter"]))
        long_ = self.rng.choice(long_cands, size=min(n_long, len(long_cands)), replace=False)
        reps = self.rng.integers(1, 4, len(short))
        servers = np.concatenate([np.repeat(short, reps), long_])
        lengths = np.concatenate(
            [
                self.rng.integers(short_len[0], short_len[1] + 1, reps.sum()),
                self.rng.integers(long_len[0], long_len[1] + 1, len(long_)),
            ]
        )
        first = self.first[servers] + lo_pad
        last = g.n - hi_pad - lengths
        ok = last > first
        starts = first[ok] + (self.rng.random(ok.sum()) * (last[ok] - first[ok])).astype(np.int64)
        lengths = lengths[ok]
        within = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
        present[np.repeat(starts, lengths) + within, np.repeat(servers[ok], lengths)] = False


# --------------------------------------------------------------------------- output frames


def _fixed_width_strings(values: np.ndarray, counts: np.ndarray) -> pa.Array:
    """Each of ``values`` repeated ``counts`` times, as an Arrow string array built from buffers.

    All values have one width (zero-padded ids), so the data buffer is a numpy repeat and
    the offsets an arange: no Python string per row.
    """
    width = len(values[0])
    table = np.frombuffer("".join(values).encode("ascii"), dtype=f"S{width}")
    data = np.repeat(table, counts)
    offsets = np.arange(0, (len(data) + 1) * width, width, dtype=np.int64)
    return pa.LargeStringArray.from_buffers(
        len(data), pa.py_buffer(offsets), pa.py_buffer(data.view(np.uint8))
    )


def _assemble_metrics(
    f: _FleetAttrs, g: _Grid, arrays: dict[str, np.ndarray], present: np.ndarray
) -> pd.DataFrame:
    """Long contract frame, sorted by server then time; missing periods are absent rows."""
    counts = present.sum(axis=0)
    rows = int(counts.sum())
    full = rows == present.size
    keep = None if full else present.T.ravel()  # server-major
    step_us = int(g.step / pd.Timedelta(microseconds=1))
    times = np.tile(g.start.value // 1000 + np.arange(g.n, dtype=np.int64) * step_us, f.n)
    if keep is not None:
        times = times[keep]
    # one float32 block (half the memory of float64; validation widens it)
    block = np.empty((len(METRIC_COLUMNS), rows), dtype=np.float32)
    for i, m in enumerate(METRIC_COLUMNS):
        v = arrays.pop(m).T
        if keep is None:
            block[i] = v.ravel()
        else:
            block[i] = np.ascontiguousarray(v).ravel()[keep]
        del v
    frame = pd.DataFrame(block.T, columns=list(METRIC_COLUMNS), copy=False)
    frame.insert(0, "timestamp", pd.Series(times.view("datetime64[us]"), dtype=_UTC, copy=False))
    ids = f.frame["server_id"].to_numpy(dtype=object)
    frame.insert(0, "server_id", pd.array(_fixed_width_strings(ids, counts), dtype=_STR))
    return frame


def _profiles(f: _FleetAttrs, g: _Grid, sim: _Simulation, present: np.ndarray) -> pd.DataFrame:
    """One row per server: what was planted, so tests and analytics can check it."""
    ids = f.frame["server_id"].to_numpy(dtype=object)
    metric_names = np.array([*_PERCENT_METRICS, None], dtype=object)  # code -1 -> None
    has_breach = f.breach_metric >= 0
    threshold = np.full(f.n, np.nan)
    for code, m in enumerate(_PERCENT_METRICS):
        sel = f.breach_metric == code
        threshold[sel] = sim.threshold[m][sel]
    step_us = int(g.step / pd.Timedelta(microseconds=1))

    def at(periods: np.ndarray) -> pd.Series:
        us = g.start.value // 1000 + periods.astype(np.int64) * step_us
        return pd.Series(us.view("datetime64[us]"), dtype=_UTC)

    crossing = np.where(sim.breach_index >= 0, sim.breach_index, 0)
    breach_date = at(crossing)
    step = np.isfinite(sim.step_day)
    step_date = at(np.where(step, sim.step_day, 0) * g.per_day).dt.floor("D")
    partner = np.where(f.partner >= 0, ids[np.maximum(f.partner, 0)], None)
    roles = np.array([None, "primary", "standby"], dtype=object)[f.dr_role]
    gap_periods = (~present).sum(axis=0) - sim.first
    out = pd.DataFrame(
        {
            "server_id": pd.array(ids, dtype=_STR),
            "scenario": pd.array(np.array(SCENARIOS, dtype=object)[f.scenario], dtype=_STR),
            "peak_timing": pd.array(np.array(PEAK_TIMINGS, dtype=object)[f.peak], dtype=_STR),
            "breach_metric": pd.array(metric_names[f.breach_metric], dtype=_STR),
            "breach_threshold": threshold,
            "breach_date": breach_date.where(has_breach & (sim.breach_index >= 0)),
            "step_date": step_date.where(step),
            "step_factor": sim.step_factor.astype(float),
            "dr_partner_id": pd.array(partner, dtype=_STR),
            "dr_role": pd.array(roles, dtype=_STR),
            "memory_leak": sim.leak,
            "first_timestamp": at(sim.first),
            "gap_periods": gap_periods.astype(np.int64),
            "utc_offset": sim.utc_offset.astype(np.int64),
            "pin_reason": pd.array(f.pin_reason, dtype=_STR),
        }
    )
    return out
