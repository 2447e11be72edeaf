"""The analytics pipeline of a run: risk, sizing and packing facts, then the one policy.

:func:`analyze` is what the batch job calls; :func:`recommend_from_inputs` is the half a what-if
re-runs on prepared inputs. The order matters and is the only place it is written down:

1. risk (:mod:`forecasting.risk`) — the guard needs each server's breach probability;
2. sizing (:mod:`forecasting.rightsizing`) on sustained demand;
3. the policy's candidates for a shared host (:func:`forecasting.policy.consolidation_candidates`);
4. peak-aware packing (:mod:`forecasting.consolidation`) under the placement rules, repeated
   without the members that would not save the minimum until every member does;
5. :func:`forecasting.policy.decide`: one action and one reason per server.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from .consolidation import (
    ConsolidationResult,
    PlacementRules,
    WorkloadProfiles,
    consolidate,
    default_host_size,
    demand_series,
    packing_peaks,
    placement_partitions,
    workload_profiles,
)
from .inputs import AnalyticsError, AnalyticsInputs, Grid, prepare
from .plan import ACTIONS, CONSOLIDATION_COLUMNS, RECOMMENDATION_COLUMNS
from .policy import (
    HELD_BACK,
    Facts,
    Guard,
    Policy,
    consolidation_candidates,
    decide,
    guard,
    members_saving,
    placement_facts,
)
from .rightsizing import DEFAULT_CATALOG, Sizing, size_servers, validate_catalog
from .risk import risk_table


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
    held_back: dict[str, int] = field(default_factory=dict)  # servers kept out of the plan, by why

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


def summarize(frame: pd.DataFrame, cons: ConsolidationResult | None) -> RecommendationSummary:
    """The totals of recommendation rows and their packing."""
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
    held = frame["held_back"].value_counts()
    return RecommendationSummary(
        servers=len(frame),
        held_back={h: int(held.get(h, 0)) for h in HELD_BACK if held.get(h, 0)},
        actions={a: int(counts.get(a, 0)) for a in ACTIONS},
        monthly_savings=float(np.nansum(saving.to_numpy(dtype=float))),
        upgrade_monthly_cost=float(-np.nansum(upgrade.to_numpy(dtype=float))),
        **extra,
    )


def _pack_saving(
    inputs: AnalyticsInputs,
    cand: np.ndarray,
    alt: np.ndarray,
    policy: Policy,
    rules: PlacementRules,
    **kw,
) -> tuple[ConsolidationResult, np.ndarray, np.ndarray]:
    """Pack the candidates; drop every member whose share of its host would not save the policy's
    minimum (or would cost more than its own right-size) and pack again, until all members save.
    Returns the final result, the candidates it packed, and (S,) the share a dropped server was
    last offered (NaN for the others).

    A placement partition packs the same whatever happens in the others (servers of two
    partitions never share a host), so a round re-packs only the partitions where the last one
    dropped a member, on the host size of all the remaining candidates; when that size changes,
    every partition is packed again. The result is the same as re-packing everything each round.
    ``alt``: (S,) each server's own right-size cost (NaN when it has none).
    """
    cost = inputs.inventory["monthly_cost_usd"].to_numpy(dtype=float)
    ids = pd.Index(inputs.server_ids)
    cand = cand.copy()
    offered = np.full(inputs.n_servers, np.nan)
    kw["demand"] = demand_series(inputs, quantile=kw["quantile"])[:2]  # one scenario: the same every round
    inv = inputs.inventory
    part = inputs.memoised(  # partition codes
        ("placement", "partitions", rules.same_business_unit),
        (inv,),
        lambda: pd.factorize(pd.Series(placement_partitions(inv, rules), dtype=object))[0],
    )
    fixed = kw.get("host_size")
    peaks = packing_peaks(inputs, kw["demand"], rules) if fixed is None else None
    touched = np.ones(inputs.n_servers, dtype=bool)  # first round: every partition
    host = None
    for _ in range(int(cand.sum()) + 1):  # every round drops at least one candidate
        now = fixed or default_host_size(kw["catalog"], peaks[0][cand], peaks[1][cand])
        if now != host:  # another host size: every partition packs differently
            touched[:] = True
            host = now
        round_kw = {**kw, "host_size": host}
        cons = consolidate(inputs, cand & touched, rules=rules, compare=False, **round_kw)  # the plan alone
        if not len(cons.plan):
            break
        rows = ids.get_indexer(cons.plan["server_id"])
        share = cons.allocated_cost.reindex(cons.plan["server_id"]).to_numpy(dtype=float)
        ok = members_saving(share, cost[rows], alt[rows], policy)
        if ok.all():
            break
        cand[rows[~ok]] = False
        offered[rows[~ok]] = share[~ok]
        hit = np.zeros(int(part.max()) + 1, dtype=bool)
        hit[part[rows[~ok]]] = True
        touched = hit[part]
    # the final candidates once more, with the sum-of-peaks baseline and the replays
    return consolidate(inputs, cand, rules=rules, **kw), cand, offered


def _held_by_packing(ids: pd.Index, cons: ConsolidationResult | None, rules: PlacementRules) -> np.ndarray:
    """(S,) why a candidate is not in a group: 'no fit', or 'anti-affinity' when a server it must
    not share a host with is in a group of its partition."""
    held = np.full(len(ids), "", dtype=object)
    if cons is None:
        return held
    alone = ids.get_indexer(pd.concat([cons.standalone["server_id"], cons.unplaceable["server_id"]]))
    held[alone[alone >= 0]] = "no fit"
    if rules.anti_affinity:
        pairs = ids.get_indexer(np.asarray(rules.anti_affinity, dtype=object).ravel()).reshape(-1, 2)
        pairs = np.concatenate([pairs, pairs[:, ::-1]])
        pairs = pairs[(pairs >= 0).all(axis=1)]
        grouped = np.zeros(len(ids), dtype=bool)
        grouped[ids.get_indexer(cons.plan["server_id"])] = True
        held[pairs[(held[pairs[:, 0]] == "no fit") & grouped[pairs[:, 1]], 0]] = "anti-affinity"
    return held


@dataclass(frozen=True)
class ServerFacts:
    """What each server's own series decide, before any server is compared with another: its
    sizing proposal and demand, the risk guard, and whether packing may consider it.

    Rows are independent, so a sharded run computes them shard by shard and concatenates them
    (:meth:`to_frame` / :meth:`from_frame`); :func:`settle` then packs the candidates fleet-wide
    and decides. The one-process run goes through the very same two functions."""

    sizing: Sizing
    guard: Guard
    candidate: np.ndarray  # (S,) the policy lets packing consider it

    @property
    def alt(self) -> np.ndarray:
        """(S,) the cost of each server's own right-size (NaN when it has none)."""
        frame = self.sizing.frame
        return np.where(
            frame["action"].to_numpy(dtype=object) == "right-size",
            frame["recommended_monthly_cost"].to_numpy(dtype=float),
            np.nan,
        )

    def to_frame(self) -> pd.DataFrame:
        """One row per server: the sizing rows, ``demand.*``, ``guard.*`` and ``candidate``."""
        demand = self.sizing.demand.drop(columns="server_id").add_prefix("demand.")
        return pd.concat(
            [
                self.sizing.frame.reset_index(drop=True),
                demand.reset_index(drop=True),
                pd.DataFrame(
                    {
                        "guard.at_risk": self.guard.at_risk,
                        "guard.growing": self.guard.growing,
                        "guard.text": self.guard.text.astype(str),
                        "candidate": self.candidate,
                    }
                ),
            ],
            axis=1,
        )

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> ServerFacts:
        demand_cols = [c for c in frame.columns if c.startswith("demand.")]
        demand = frame[demand_cols].rename(columns=lambda c: c[len("demand.") :])
        demand.insert(0, "server_id", frame["server_id"].to_numpy())
        sizing_cols = [c for c in frame.columns if c not in demand_cols and "." not in c and c != "candidate"]
        return cls(
            sizing=Sizing(
                frame=frame[sizing_cols].reset_index(drop=True), demand=demand.reset_index(drop=True)
            ),
            guard=Guard(
                at_risk=frame["guard.at_risk"].to_numpy(dtype=bool),
                growing=frame["guard.growing"].to_numpy(dtype=bool),
                text=frame["guard.text"].to_numpy(dtype=object),
            ),
            candidate=frame["candidate"].to_numpy(dtype=bool),
        )


def server_facts(
    inputs: AnalyticsInputs,
    risk: pd.DataFrame,
    *,
    headroom: float,
    idle_cpu_p95: float,
    policy: Policy,
    catalog: pd.DataFrame = DEFAULT_CATALOG,
    quantile: str = "q50",
) -> ServerFacts:
    """Sizing on sustained demand and the ``quantile`` forecast peak, the guard from ``risk``,
    and the packing candidates: everything per server (see :class:`ServerFacts`)."""
    sizing = size_servers(
        inputs,
        headroom=headroom,
        idle_cpu_p95=idle_cpu_p95,
        catalog=validate_catalog(catalog),
        quantile=quantile,
        lookback_days=policy.lookback_days,
        min_savings_fraction=policy.min_saving_fraction,
        sizing_percentile=policy.sizing_percentile,
    )
    g = guard(inputs, risk, policy)
    inv = inputs.inventory
    pinned, standby, _ = inputs.memoised(("placement", "facts"), (inv,), lambda: placement_facts(inv))
    cand = consolidation_candidates(
        sizing.frame["action"].to_numpy(dtype=object),
        sizing.demand["sizable"].to_numpy(dtype=bool),
        g,
        pinned,
        standby,
        policy,
    )
    return ServerFacts(sizing=sizing, guard=g, candidate=cand)


def settle(
    facts: ServerFacts,
    inputs: AnalyticsInputs,
    *,
    headroom: float,
    policy: Policy,
    inventory: pd.DataFrame | None = None,
    catalog: pd.DataFrame = DEFAULT_CATALOG,
    host_size: str | None = None,
    packing_quantile: str = "q90",
    consolidation: bool = True,
    actuals: pd.DataFrame | None = None,
) -> tuple[pd.DataFrame, ConsolidationResult | None]:
    """Pack the candidates fleet-wide under the placement rules, then one action per server.

    ``facts`` covers every server of ``inventory`` (default ``inputs.inventory``), in its order;
    ``inputs`` must hold at least the candidates: the whole fleet's inputs (one process, a
    what-if) or only the candidates' (a sharded run gathers just those). Packing reads nothing
    else, so both give the same plan. Returns the recommendation rows and the packing.
    """
    inv = inputs.inventory if inventory is None else inventory
    cat = validate_catalog(catalog)
    ids = pd.Index(inv["server_id"])

    def placement(key: tuple, compute):  # memoised on the inputs when they are the fleet's
        return inputs.memoised(key, (inv,), compute) if inv is inputs.inventory else compute()

    pinned, standby, partner = placement(("placement", "facts"), lambda: placement_facts(inv))
    rules = placement(
        ("placement", "rules", policy.cross_business_unit, policy.critical_per_host),
        lambda: policy.placement_rules(inv),
    )
    cand = facts.candidate.copy()
    cons = None
    offered = np.full(len(inv), np.nan)
    if consolidation:
        rows = pd.Index(inputs.server_ids).get_indexer(ids)  # fleet row -> row of ``inputs`` (−1: absent)
        if (rows[cand] < 0).any():
            raise AnalyticsError("the packing inputs lack some consolidation candidates")
        mask = np.zeros(inputs.n_servers, dtype=bool)
        mask[rows[cand]] = True
        alt = np.full(inputs.n_servers, np.nan)
        alt[rows[rows >= 0]] = facts.alt[rows >= 0]
        cons, mask, offered_in = _pack_saving(
            inputs,
            mask,
            alt,
            policy,
            rules,
            catalog=cat,
            headroom=headroom,
            host_size=host_size,
            quantile=packing_quantile,
            actuals=actuals,
        )
        known = rows >= 0
        cand[known] = mask[rows[known]]
        offered[known] = offered_in[rows[known]]
    held = _held_by_packing(ids, cons, rules)
    dropped = ~np.isnan(offered)
    held[dropped] = "no saving"
    member = np.zeros(len(inv), dtype=bool)
    plan = cons.plan if cons is not None else None
    if plan is not None and len(plan):
        member[ids.get_indexer(plan["server_id"])] = True
    decided = Facts(
        sizing=facts.sizing.frame,
        demand=facts.sizing.demand,
        guard=facts.guard,
        pinned=pinned,
        standby=standby,
        partner=partner,
        member=member,
        held=held,
        candidate=cand | dropped,
    )
    frame = decide(decided, policy)
    if dropped.any():  # offered a shared host that did not pay: say by how much
        cost = frame["current_monthly_cost"].to_numpy(dtype=float)
        least = policy.min_saving(cost)
        frame.loc[dropped, "reason"] = [
            f"{r}; a shared host would cost ${o:,.0f}/month of ${c:,.0f} now: "
            + (
                f"saves less than the ${m:,.0f}/month minimum"
                if c - o < m
                else "saves less than right-sizing"
            )
            for r, o, c, m in zip(
                frame.loc[dropped, "reason"], offered[dropped], cost[dropped], least[dropped], strict=True
            )
        ]
    if plan is not None and len(plan):
        _fill_consolidation(frame, cons, headroom, packing_quantile)
    return frame[RECOMMENDATION_COLUMNS], cons


def recommend_from_inputs(
    inputs: AnalyticsInputs,
    *,
    headroom: float,
    idle_cpu_p95: float,
    policy: Policy | None = None,
    risk: pd.DataFrame | None = None,
    thresholds: Mapping[str, float] | None = None,
    criticality_offsets: Mapping[str, float] | None = None,
    lead_time_days: Mapping[str, int] | None = None,
    catalog: pd.DataFrame = DEFAULT_CATALOG,
    host_size: str | None = None,
    quantile: str = "q50",
    packing_quantile: str = "q90",
    consolidation: bool = True,
    profiles: bool = True,
    actuals: pd.DataFrame | None = None,
) -> Recommendations:
    """One action per server on prepared inputs, decided by the ``policy`` (default: Policy()).

    ``risk`` is the risk frame the guard reads (computed here from the thresholds, assessing only
    flagged rows, when not given). Sizing covers the ``quantile`` (expected, q50) forecast peak
    and the sustained lookback demand; packing uses the ``packing_quantile`` (pessimistic, q90)
    paths, since servers sharing a host must survive their bad days together. Members of a
    consolidation group get action "consolidate", the host size, the group id and their share of
    the host's cost (by their share of the group's CPU and memory peaks); every member saves at
    least the policy's minimum. ``consolidation=False`` skips packing. The two halves are
    :func:`server_facts` and :func:`settle`.
    """
    policy = policy or Policy()
    if risk is None:
        risk = risk_table(
            inputs,
            thresholds=thresholds,
            criticality_offsets=criticality_offsets,
            lead_time_days=lead_time_days,
            assess="flagged",
        )
    facts = server_facts(
        inputs,
        risk,
        headroom=headroom,
        idle_cpu_p95=idle_cpu_p95,
        policy=policy,
        catalog=catalog,
        quantile=quantile,
    )
    frame, cons = settle(
        facts,
        inputs,
        headroom=headroom,
        policy=policy,
        catalog=catalog,
        host_size=host_size,
        packing_quantile=packing_quantile,
        consolidation=consolidation,
        actuals=actuals,
    )
    prof = workload_profiles(inputs) if profiles and "cpu_p95" in inputs.history else None
    return Recommendations(
        frame=frame, sizing=facts.sizing, consolidation=cons, profiles=prof, summary=summarize(frame, cons)
    )


def _fill_consolidation(
    frame: pd.DataFrame, cons: ConsolidationResult, headroom: float, packing_quantile: str
) -> None:
    """Members of the plan's groups: host, group, share of the host's cost, and the reason."""
    plan = cons.plan
    detail = cons.groups.set_index("target_group").loc[plan["target_group"]]
    row = pd.Index(frame["server_id"]).get_indexer(plan["server_id"])
    share = cons.allocated_cost.reindex(plan["server_id"]).to_numpy(dtype=float)
    current = frame["current_monthly_cost"].to_numpy(dtype=float)[row]
    frame.loc[row, "action"] = "consolidate"
    frame.loc[row, "held_back"] = ""
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


def recommend(
    forecasts: pd.DataFrame,
    history: pd.DataFrame,
    inventory: pd.DataFrame,
    *,
    origin: pd.Timestamp | str | None = None,
    freq: str | None = None,
    history_days: int | None = None,
    **settings,
) -> Recommendations:
    """Recommendations straight from the frames: :func:`prepare` + :func:`recommend_from_inputs`
    (``settings`` are its keyword arguments)."""
    inputs = prepare(forecasts, history, inventory, origin=origin, freq=freq, history_days=history_days)
    return recommend_from_inputs(inputs, **settings)


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
    origin: pd.Timestamp | str | None = None,
    freq: str | None = None,
    history_days: int | None = None,
    grid: Grid | None = None,
    **settings,
) -> Analysis:
    """Risk and recommendations from one :func:`prepare`: the full risk table, and the
    recommendations guarded by it (``settings``: :func:`recommend_from_inputs`'s keywords)."""
    inputs = prepare(
        forecasts, history, inventory, origin=origin, freq=freq, history_days=history_days, grid=grid
    )
    risk = risk_table(
        inputs, thresholds=thresholds, criticality_offsets=criticality_offsets, lead_time_days=lead_time_days
    )
    recs = recommend_from_inputs(inputs, risk=risk, **settings)
    return Analysis(inputs=inputs, risk=risk, recommendations=recs)
