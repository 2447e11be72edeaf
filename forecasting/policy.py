"""The one policy that decides each server's action, from the facts risk, sizing and packing found.

Risk (:mod:`forecasting.risk`), sizing (:mod:`forecasting.rightsizing`) and packing
(:mod:`forecasting.consolidation`) each compute facts and decide nothing. This module turns them
into one action per server under the planner's settings, so a recommendation can never fight
the risk table: a server at risk or growing is never downsized, consolidated or decommissioned,
and its reason names the risk. The order of the rules, first match wins:

1. no CPU data or capacity → keep ("no data");
2. pinned in the inventory → keep ("pinned"), whatever sizing says;
3. DR standby → idle by design: never decommissioned or consolidated; sized with its primary
   ("DR standby");
4. at risk (a metric's P(breach within the horizon) ≥ ``risk_probability``, or already over) or
   growing (the expected path rises clearly and even the optimistic one ends above today, or the
   last eight weeks' medians rise clearly) →
   upgrade when the sustained demand does not fit, else keep ("at risk" / "growing");
5. undersized → upgrade;  idle → decommission review;
6. a member of a consolidation group → consolidate (each member saves at least the minimum);
7. over-provisioned (a smaller size fits and saves at least the minimum) → right-size, when the
   policy proposes it ("no saving" when the saving is below the minimum);
8. otherwise keep; ``held_back`` says why a server is not in the plan ("not proposed", "no fit",
   "anti-affinity", "no saving").

``propose`` chooses what the list holds, so the default is one a planner can review:
``idle`` (decommission reviews and the upgrades risk needs), ``overprovisioned`` (the default:
also right-sizing and consolidation of servers a smaller size would fit), ``all`` (every server
that fits a shared host may be consolidated).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd

from .consolidation import PlacementRules
from .inputs import I10, I50, AnalyticsError, AnalyticsInputs
from .schema import METRICS

PROPOSALS = ("idle", "overprovisioned", "all")
HELD_BACK = (
    "at risk",
    "growing",
    "pinned",
    "DR standby",
    "no saving",
    "anti-affinity",
    "no fit",
    "not proposed",
    "no data",
)
# "Growing": the expected path's end sits this far above today's level (percent points, or this
# fraction of the level for Mbps metrics) and the optimistic path's end is above today's level.
GROWTH_POINTS = 5.0
GROWTH_FRACTION = 0.10
LEVEL_DAYS = 28  # today's level: mean of the last four weeks
TREND_WEEKS = 8  # observed trend: a line through the weekly medians of the last eight weeks ...
TREND_T = 4.0  # ... whose slope is at least this many standard errors above zero


@dataclass(frozen=True)
class Policy:
    """What the planner's policy proposes and guards (README "How the plan decides")."""

    propose: str = "overprovisioned"
    risk_probability: float = 0.2  # P(breach within the horizon) from which a server is at risk
    min_saving_fraction: float = 0.10  # of the server's current monthly cost ...
    min_saving_usd: float = 20.0  # ... and at least this, for every right-size and every member
    sizing_percentile: float = 99.0  # of the period p95s over the lookback: sustained demand
    lookback_days: int = 90
    cross_business_unit: bool = False  # business units are charged back: no shared hosts
    critical_per_host: int = 1

    def __post_init__(self) -> None:
        if self.propose not in PROPOSALS:
            raise AnalyticsError(f"policy: propose {self.propose!r} must be one of {', '.join(PROPOSALS)}")
        checks = (
            ("risk_probability", self.risk_probability, 0.0, 1.0),
            ("min_saving_fraction", self.min_saving_fraction, 0.0, 0.95),
            ("min_saving_usd", self.min_saving_usd, 0.0, 1e7),
            ("sizing_percentile", self.sizing_percentile, 50.0, 100.0),
        )
        for name, v, lo, hi in checks:
            if isinstance(v, bool) or not (isinstance(v, int | float) and math.isfinite(v) and lo <= v <= hi):
                raise AnalyticsError(f"policy: {name} {v!r} must be a number in [{lo:g}, {hi:g}]")
        for name, v in (("lookback_days", self.lookback_days), ("critical_per_host", self.critical_per_host)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise AnalyticsError(f"policy: {name} {v!r} must be an integer ≥ 1")

    def min_saving(self, cost: np.ndarray) -> np.ndarray:
        """(S,) the smallest monthly saving worth proposing for servers costing ``cost``."""
        return np.maximum(np.nan_to_num(cost, nan=0.0) * self.min_saving_fraction, self.min_saving_usd)

    def placement_rules(self, inventory: pd.DataFrame) -> PlacementRules:
        """Who may share a host: one business unit (unless allowed), a cap on critical servers,
        never two members of a DR pair or of an anti-affinity group."""
        return PlacementRules(
            same_business_unit=not self.cross_business_unit,
            max_per_host_by_criticality={"critical": self.critical_per_host},
            anti_affinity=anti_affinity_pairs(inventory),
        )


def anti_affinity_pairs(inventory: pd.DataFrame) -> tuple[tuple[str, str], ...]:
    """Pairs of servers that must never share a host: DR partners and every two members of one
    anti-affinity group (columns absent or missing = no constraint)."""
    pairs: set[tuple[str, str]] = set()
    ids = inventory["server_id"].astype(str)
    if "dr_partner_id" in inventory.columns:
        partner = inventory["dr_partner_id"]
        ok = partner.notna() & (partner.astype(str).str.strip() != "")
        for a, b in zip(ids[ok], partner[ok].astype(str), strict=True):
            if a != b:
                pairs.add((min(a, b), max(a, b)))
    if "anti_affinity_group" in inventory.columns:
        grp = inventory["anti_affinity_group"]
        ok = grp.notna() & (grp.astype(str).str.strip() != "")
        for _, members in ids[ok].groupby(grp[ok].astype(str)):
            m = sorted(members)
            pairs.update((m[i], m[j]) for i in range(len(m)) for j in range(i + 1, len(m)))
    return tuple(sorted(pairs))


def _column(inventory: pd.DataFrame, name: str) -> pd.Series:
    if name in inventory.columns:
        return inventory[name]
    return pd.Series(pd.NA, index=inventory.index, dtype="object")


def placement_facts(inventory: pd.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S,) pinned, (S,) DR standby, (S,) row of the DR partner (−1 = none or unknown)."""
    pinned = _column(inventory, "pinned").astype("boolean").fillna(False).to_numpy(dtype=bool)
    role = _column(inventory, "dr_role").astype("string").str.strip().str.lower()
    standby = (role == "standby").fillna(False).to_numpy(dtype=bool)
    partner = _column(inventory, "dr_partner_id").astype("string")
    rows = pd.Index(inventory["server_id"].astype(str)).get_indexer(partner.fillna("").astype(str))
    return pinned, standby, rows


# --------------------------------------------------------------------------- the risk guard


@dataclass(frozen=True)
class Guard:
    """Servers the plan must not shrink or move, and the sentence that says why."""

    at_risk: np.ndarray  # (S,) bool
    growing: np.ndarray  # (S,) bool
    text: np.ndarray  # (S,) object: '' or e.g. "CPU p95 at risk: 64 % chance of crossing 85 % …"


def guard(inputs: AnalyticsInputs, risk: pd.DataFrame, policy: Policy) -> Guard:
    """At risk: any metric already over its threshold or with P(breach) ≥ the policy's level;
    growing: any metric whose expected path ends clearly above today's level (see module doc)."""
    S = inputs.n_servers
    text = np.full(S, "", dtype=object)
    at_risk = np.zeros(S, dtype=bool)
    if len(risk):
        prob = risk["breach_probability"].to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            hit = (risk["status"].to_numpy(dtype=object) == "already_over") | (
                prob >= policy.risk_probability
            )
        rows = risk[hit]
        if len(rows):
            pos = pd.Index(inputs.server_ids).get_indexer(rows["server_id"])
            at_risk[pos] = True
            order = np.lexsort((-np.nan_to_num(rows["breach_probability"].to_numpy(dtype=float)), pos))
            expected = pd.DatetimeIndex(rows["breach_expected"])
            when = expected.where(expected.notna(), pd.DatetimeIndex(rows["breach_pessimistic"]))
            # plain Python values: the sentences are formatted per row
            cols = zip(
                rows["metric"].astype(str).tolist(),
                rows["status"].astype(str).tolist(),
                rows["threshold"].to_numpy(dtype=float).tolist(),
                rows["breach_probability"].to_numpy(dtype=float).tolist(),
                expected.notna().tolist(),
                [f"{w:%d %b %Y}" if pd.notna(w) else "" for w in when],
                strict=True,
            )
            parts = []
            for metric, status, thr, p, has_expected, day in cols:
                spec = METRICS[metric]
                unit = " %" if spec.kind == "percent" else f" {spec.unit}"
                if status == "already_over":
                    parts.append(f"{spec.label} already over {thr:g}{unit}")
                else:
                    label = "expected" if has_expected else "pessimistic"
                    parts.append(
                        f"{spec.label} at risk ({p:.0%} chance of crossing {thr:g}{unit} within the horizon"
                        + (f", {label} {day}" if day else "")
                        + ")"
                    )
            seen: dict[int, list[str]] = {}
            for k in order.tolist():
                seen.setdefault(int(pos[k]), []).append(parts[k])
            for i, texts in seen.items():
                text[i] = "; ".join(texts)
    growing, grow_text = _growing(inputs)
    growing &= ~at_risk
    text = np.where(growing, grow_text, text)
    return Guard(at_risk=at_risk, growing=growing, text=text)


def _observed_rise(hist: np.ndarray, per_day: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(S,) rise over the last :data:`TREND_WEEKS` weeks (fitted line through the weekly medians:
    robust to a month-end or one spike), its t-statistic, and the first and last week's fit."""
    S = hist.shape[0]
    w = 7 * per_day
    n = min(TREND_WEEKS, hist.shape[1] // w)
    if n < 4:
        nan = np.full(S, np.nan)
        return nan, nan, nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN weeks
        weekly = np.nanmedian(hist[:, -n * w :].reshape(S, n, w), axis=2)
    t = np.arange(n, dtype=float)
    ok = ~np.isnan(weekly)
    k = ok.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tm = (t * ok).sum(axis=1) / k
        ym = np.nansum(weekly, axis=1) / k
        dt = np.where(ok, t - tm[:, None], 0.0)
        sxx = (dt * dt).sum(axis=1)
        slope = (dt * np.where(ok, weekly - ym[:, None], 0.0)).sum(axis=1) / sxx
        fit = ym[:, None] + slope[:, None] * (t - tm[:, None])
        resid = np.where(ok, weekly - fit, 0.0)
        se = np.sqrt((resid * resid).sum(axis=1) / np.maximum(k - 2, 1) / sxx)
        tstat = np.where(k >= 4, slope / np.maximum(se, 1e-9), np.nan)
    return slope * (n - 1), tstat, fit[:, [0, -1]]


def _growing(inputs: AnalyticsInputs) -> tuple[np.ndarray, np.ndarray]:
    """(S,) a significant upward trend on any metric, and (S,) the sentence naming the first.

    Two readings, either suffices: the forecast (the expected path ends clearly above today's
    level and even the optimistic one ends above it), or what was observed (the weekly medians of
    the last eight weeks rise clearly, with a t-statistic ≥ :data:`TREND_T`) — so a ramp the
    model has not caught up with still keeps the server off every shrinking action.
    """
    S, H = inputs.n_servers, len(inputs.index)
    out = np.zeros(S, dtype=bool)
    text = np.full(S, "", dtype=object)
    if H == 0:
        return out, text
    tail = max(1, H // 4)
    window = LEVEL_DAYS * inputs.periods_per_day
    cols = np.flatnonzero(inputs.history_index <= inputs.origin)
    past = cols[-window:]
    end = f"{inputs.index[-1]:%d %b %Y}"
    for metric in inputs.metrics:
        hist = inputs.history.get(metric)
        if hist is None or not len(past):
            continue
        spec = METRICS[metric]
        unit = " %" if spec.kind == "percent" else f" {spec.unit}"
        with np.errstate(invalid="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN rows: no level, no growth
            level = np.nanmean(hist[:, past], axis=1)
            end50 = np.nanmean(inputs.path(metric, I50, adjusted=False)[:, -tail:], axis=1)
            end10 = np.nanmean(inputs.path(metric, I10, adjusted=False)[:, -tail:], axis=1)
            rise = end50 - level
            floor = GROWTH_POINTS if spec.kind == "percent" else GROWTH_FRACTION * np.abs(level)
            ahead = (end10 > level) & (rise >= floor) & np.isfinite(rise) & ~out
            seen_rise, tstat, ends = inputs.memoised(
                ("observed-rise", metric),
                (hist, inputs.history_index, inputs.origin),
                lambda hist=hist: _observed_rise(hist[:, cols], inputs.periods_per_day),
            )
            # ... unless the model expects it to pass (a season's run-up, not a ramp)
            seen = (seen_rise >= floor) & (tstat >= TREND_T) & (end50 >= level) & ~out & ~ahead
        for i in np.flatnonzero(ahead):
            text[i] = (
                f"{spec.label} growing: expected {level[i]:.0f}{unit} → {end50[i]:.0f}{unit} by {end} "
                f"(even the optimistic forecast ends above today's level)"
            )
        for i in np.flatnonzero(seen):
            text[i] = (
                f"{spec.label} growing: weekly median {ends[i, 0]:.0f}{unit} → {ends[i, 1]:.0f}{unit} "
                f"over the last {TREND_WEEKS} weeks"
            )
        out |= ahead | seen
    return out, text


# --------------------------------------------------------------------------- candidates and members


def consolidation_candidates(
    sizing_action: np.ndarray,
    sizable: np.ndarray,
    guard_: Guard,
    pinned: np.ndarray,
    standby: np.ndarray,
    policy: Policy,
) -> np.ndarray:
    """(S,) servers the policy lets the packing consider."""
    if policy.propose == "idle":
        return np.zeros(len(sizing_action), dtype=bool)
    allowed = ("keep", "right-size") if policy.propose == "all" else ("right-size",)
    return np.isin(sizing_action, allowed) & sizable & ~guard_.at_risk & ~guard_.growing & ~pinned & ~standby


def members_saving(
    share: np.ndarray, cost: np.ndarray, alternative: np.ndarray, policy: Policy
) -> np.ndarray:
    """(n,) a group member saves the minimum against today and no less than its own
    right-size (``alternative``: that size's cost, NaN when it has none)."""
    with np.errstate(invalid="ignore"):
        enough = share <= np.nan_to_num(cost, nan=np.inf) - policy.min_saving(cost) + 1e-9
        better = np.isnan(alternative) | (share <= alternative + 1e-9)
    return enough & better


# --------------------------------------------------------------------------- the decision


@dataclass(frozen=True)
class Facts:
    """Everything the decision reads, one row per inventory server."""

    sizing: pd.DataFrame  # the sizing proposal rows (RECOMMENDATION_COLUMNS)
    demand: pd.DataFrame  # rightsizing.Sizing.demand
    guard: Guard
    pinned: np.ndarray
    standby: np.ndarray
    partner: np.ndarray
    member: np.ndarray  # (S,) in a consolidation group (rows filled by the caller)
    held: np.ndarray  # (S,) object: packing's reason a candidate is not in a group ('' = none)
    candidate: np.ndarray  # (S,) the packing considered it


def decide(facts: Facts, policy: Policy) -> pd.DataFrame:
    """The recommendation rows: the sizing proposal where the policy accepts it, consolidation
    rows as the caller filled them, every other server kept with the reason why."""
    frame = facts.sizing.copy()
    S = len(frame)
    proposed = frame["action"].to_numpy(dtype=object)
    action = proposed.copy()
    reason = frame["reason"].to_numpy(dtype=object).copy()
    held = np.full(S, "", dtype=object)
    cost = frame["current_monthly_cost"].to_numpy(dtype=float)
    sizable = facts.demand["sizable"].to_numpy(dtype=bool)
    keep_size = np.zeros(S, dtype=bool)  # rows whose recommended size goes back to the current one

    def keep(rows: np.ndarray, why: str, prefix: np.ndarray | str) -> None:
        action[rows] = "keep"
        keep_size[rows] = True
        held[rows] = why
        reason[rows] = [
            f"{p}; {r}" for p, r in zip(np.broadcast_to(prefix, S)[rows], reason[rows], strict=True)
        ]

    nodata = ~sizable
    held[nodata] = "no data"
    pinned = facts.pinned & sizable
    keep(pinned, "pinned", "pinned in the inventory: never moved or resized by a recommendation")

    g = facts.guard
    guarded = (g.at_risk | g.growing) & sizable & ~facts.pinned & ~facts.standby
    shrink = np.isin(action, ["right-size", "decommission"]) | facts.member
    hold = guarded & shrink
    tag = np.where(g.at_risk, "at risk", "growing")
    for why in ("at risk", "growing"):
        rows = hold & (tag == why)
        keep(rows, why, np.char.add(g.text.astype(str), "; never downsized or consolidated while it lasts"))
    up = guarded & (action == "upgrade")
    reason[up] = [f"{t}; {r}" for t, r in zip(g.text[up], reason[up], strict=True)]
    with_guard = guarded & ~hold & ~up  # kept anyway: say what the risk is
    reason[with_guard] = [f"{t}; {r}" for t, r in zip(g.text[with_guard], reason[with_guard], strict=True)]
    held[with_guard] = np.where(g.at_risk[with_guard], "at risk", "growing")

    free = sizable & ~facts.pinned & ~facts.standby & ~guarded
    saving = frame["monthly_savings"].to_numpy(dtype=float)
    rs = free & (action == "right-size") & ~facts.member
    if policy.propose == "idle":
        keep(rs, "not proposed", "over-provisioned, but the policy proposes idle servers only")
    else:
        small = rs & ~(np.nan_to_num(saving, nan=np.inf) >= policy.min_saving(cost) - 1e-9)
        keep(
            small,
            "no saving",
            np.asarray([f"a smaller size saves less than ${m:,.0f}/month" for m in policy.min_saving(cost)]),
        )
    rest = free & (proposed == "keep") & ~facts.member
    held[rest] = np.where(facts.candidate[rest], facts.held[rest], "not proposed")
    if policy.propose != "all":
        scope = (
            "idle servers only"
            if policy.propose == "idle"
            else "consolidation of over-provisioned servers only"
        )
        reason[rest & ~facts.candidate] = [
            f"{r} (the policy proposes {scope})" for r in reason[rest & ~facts.candidate]
        ]
    frame["action"] = action
    frame["reason"] = reason
    _restore_size(frame, keep_size)
    _size_standbys(frame, facts, held)
    held[frame["action"].to_numpy(dtype=object) != "keep"] = ""  # acted on: not held back
    frame["held_back"] = held
    return frame


def _restore_size(frame: pd.DataFrame, rows: np.ndarray) -> None:
    """Rows kept by the policy run on their current size at their current cost."""
    if not rows.any():
        return
    frame.loc[rows, "recommended_size"] = frame.loc[rows, "current_size"]
    frame.loc[rows, "recommended_cores"] = frame.loc[rows, "current_cores"]
    frame.loc[rows, "recommended_memory_gb"] = frame.loc[rows, "current_memory_gb"]
    frame.loc[rows, "recommended_monthly_cost"] = frame.loc[rows, "current_monthly_cost"]
    frame.loc[rows, "monthly_savings"] = 0.0
    frame.loc[rows, "target_group"] = ""


def _size_standbys(frame: pd.DataFrame, facts: Facts, held: np.ndarray) -> None:
    """A DR standby takes its primary's size (it must carry the primary's load after failover):
    upgraded or right-sized with it, kept otherwise; never decommissioned or consolidated."""
    rows = np.flatnonzero(facts.standby & ~facts.pinned)  # a pinned standby keeps, like any pinned server
    if not len(rows):
        return
    held[rows] = "DR standby"
    ids = frame["server_id"].to_numpy(dtype=object)
    action = frame["action"].to_numpy(dtype=object)
    p = facts.partner[rows]
    prim = np.where(p >= 0, action[np.maximum(p, 0)], "")
    guarded = facts.guard.at_risk[rows] | facts.guard.growing[rows]
    cols = ["recommended_size", "recommended_cores", "recommended_memory_gb"]
    new = frame[cols].to_numpy(dtype=object)[np.maximum(p, 0)]
    same = (new[:, 1].astype(float) == frame["current_cores"].to_numpy(dtype=float)[rows]) & (
        new[:, 2].astype(float) == frame["current_memory_gb"].to_numpy(dtype=float)[rows]
    )
    follow = ((prim == "upgrade") | ((prim == "right-size") & ~guarded)) & ~same
    base = "DR standby: idle by design, never decommissioned or consolidated"
    f, k = rows[follow], rows[~follow]
    if len(f):
        pf = p[follow]
        # priced as the primary's change: the pair runs on one shape at one rate card
        cost = frame["current_monthly_cost"].to_numpy(dtype=float)
        ratio = frame["recommended_monthly_cost"].to_numpy(dtype=float)[pf] / cost[pf]
        frame.loc[f, cols] = new[follow]
        frame.loc[f, "action"] = prim[follow]
        frame.loc[f, "recommended_monthly_cost"] = cost[f] * ratio
        frame.loc[f, "monthly_savings"] = cost[f] - cost[f] * ratio
        frame.loc[f, "target_group"] = ""
        frame.loc[f, "reason"] = [
            f"{base}; sized with its primary {ids[q]}, which is to {a} to {n[0]} ({float(n[1]):g} vCPU / "
            f"{float(n[2]):g} GB)"
            for q, a, n in zip(pf, prim[follow], new[follow], strict=True)
        ]
    if len(k):
        frame.loc[k, "action"] = "keep"
        _restore_size(frame, np.isin(np.arange(len(frame)), k))
        frame.loc[k, "reason"] = [
            base
            + (f"; sized with its primary {ids[q]} ({a or 'keep'})" if q >= 0 else "; no primary named")
            + (f"; {t}: not downsized with its primary" if g and a == "right-size" else "")
            for q, a, g, t in zip(
                p[~follow], prim[~follow], guarded[~follow], facts.guard.text[k], strict=True
            )
        ]
