"""What-if scenarios for the risk and consolidation pages: their URL form and their results.

A planner's scenario (growth per month, threshold overrides, headroom, and the policy knobs:
what to propose, minimum saving, risk guard, sizing percentile) lives in the query string next
to the filters (``?bu=Retail&growth=3&cpu_thr=80&propose=idle``) so a what-if view can be
bookmarked, shared and exported with its assumptions. Like filters, everything from a URL or
a browser control is untrusted: parsed with hard limits, out-of-range values dropped.

The policy knobs are applied over the run's own policy (the manifest's ``config.policy``;
``Policy()`` for runs published before it existed) and only change recommendations: the risk
page neither computes nor caches by them.

Results come from the engine (:func:`forecasting.whatif.whatif`) over the run's prepared
inputs (:meth:`app.readmodel.ReadModel.analytics_inputs`), cached per run and scenario in the
process and in the shared cache, so only a scenario change computes; filters then only mask.
The base scenario needs no computation at all: it is the published plan.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any
from urllib.parse import parse_qsl

import numpy as np
import pandas as pd

from forecasting.inputs import AnalyticsError, AnalyticsInputs
from forecasting.policy import PROPOSALS, Policy
from forecasting.schema import METRICS
from forecasting.settings import Settings
from forecasting.whatif import Scenario, whatif

from .filters import FilterState
from .readmodel import DISPLAY_COLUMNS, PLAN_CACHE_SECONDS, Plan, ReadModel

log = logging.getLogger(__name__)

# Control ranges (the UI's and the URL parser's limits).
GROWTH_RANGE = (-10.0, 20.0)  # % per month
THRESHOLD_RANGE = (1.0, 100.0)  # percent metrics only
HEADROOM_RANGE = (0.0, 60.0)  # % of a host kept free
# The percent metrics a planner may override, with their query-string names.
THRESHOLD_PARAMS: dict[str, str] = {"cpu_p95": "cpu_thr", "mem_p95": "mem_thr", "disk_p95": "disk_thr"}
GROWTH_PARAM = "growth"
HEADROOM_PARAM = "headroom"
# Policy knobs (forecasting.policy.Policy), in UI units: percent and USD per month.
PROPOSE_PARAM = "propose"
MIN_SAVING_PCT_PARAM = "min_saving"  # % of the server's current monthly cost
MIN_SAVING_USD_PARAM = "min_saving_usd"  # USD per month
RISK_GUARD_PARAM = "risk_guard"  # P(breach) in % from which a server is never shrunk
SIZING_PCT_PARAM = "sizing_pct"  # percentile of the period p95s that sizing covers
MIN_SAVING_PCT_RANGE = (0.0, 95.0)
MIN_SAVING_USD_RANGE = (0.0, 10_000.0)
RISK_GUARD_RANGE = (1.0, 100.0)
SIZING_PCT_RANGE = (50.0, 100.0)
PROPOSE_LABELS: dict[str, str] = {
    "idle": "Idle servers only",
    "overprovisioned": "Idle and over-provisioned (default)",
    "all": "Everything that fits",
}
POLICY_PARAMS = [
    PROPOSE_PARAM,
    MIN_SAVING_PCT_PARAM,
    MIN_SAVING_USD_PARAM,
    RISK_GUARD_PARAM,
    SIZING_PCT_PARAM,
]
QUERY_KEYS = [GROWTH_PARAM, *THRESHOLD_PARAMS.values(), HEADROOM_PARAM, *POLICY_PARAMS]
MAX_CHOICE_CHARS = 32
MAX_QUERY_CHARS = 4096
MAX_NUMBER_CHARS = 24
RESULT_MEMO = 6  # scenario results kept per process


def _number(value: Any, lo: float, hi: float) -> float | None:
    """A finite number within [lo, hi], rounded to 0.1, or None (not given / not acceptable)."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, str):
        text = value.strip()
        if not text or len(text) > MAX_NUMBER_CHARS:
            return None
        try:
            value = float(text)
        except ValueError:
            return None
    if not isinstance(value, int | float):
        return None
    v = float(value)
    if not math.isfinite(v) or v < lo or v > hi:
        return None
    return round(v, 1)


def _propose(value: Any) -> str | None:
    """One of forecasting.policy.PROPOSALS, or None (not given / not acceptable)."""
    if not isinstance(value, str) or len(value) > MAX_CHOICE_CHARS:
        return None
    text = value.strip().lower()
    return text if text in PROPOSALS else None


def _pct(value: float) -> str:
    return f"{value:g} %"


@dataclass(frozen=True)
class ScenarioState:
    """One planner's scenario in UI units (percent, USD); the defaults change nothing.

    The policy knobs are None when the run's own value applies."""

    growth: float = 0.0  # % per month, compounding, every business unit and metric
    thresholds: tuple[tuple[str, float], ...] = ()  # (metric, percent) overrides, sorted
    headroom: float | None = None  # % of a host kept free (None: the run's)
    propose: str | None = None  # idle | overprovisioned | all
    min_saving_pct: float | None = None  # % of the current monthly cost
    min_saving_usd: float | None = None  # USD per month
    risk_guard: float | None = None  # P(breach) in % from which a server is never shrunk
    sizing_pct: float | None = None  # percentile of the period p95s

    @classmethod
    def of(
        cls,
        growth: Any = None,
        thresholds: Mapping[str, Any] | None = None,
        headroom: Any = None,
        policy: Mapping[str, Any] | None = None,
    ) -> ScenarioState:
        """From untrusted values: anything out of range or not a number is ignored.

        ``policy`` maps the knobs' query names (``POLICY_PARAMS``) to values."""
        g = _number(growth, *GROWTH_RANGE) or 0.0
        thr = []
        for metric in THRESHOLD_PARAMS:
            v = _number((thresholds or {}).get(metric), *THRESHOLD_RANGE)
            if v is not None:
                thr.append((metric, v))
        pol = policy if isinstance(policy, Mapping) else {}
        return cls(
            growth=g,
            thresholds=tuple(thr),
            headroom=_number(headroom, *HEADROOM_RANGE),
            propose=_propose(pol.get(PROPOSE_PARAM)),
            min_saving_pct=_number(pol.get(MIN_SAVING_PCT_PARAM), *MIN_SAVING_PCT_RANGE),
            min_saving_usd=_number(pol.get(MIN_SAVING_USD_PARAM), *MIN_SAVING_USD_RANGE),
            risk_guard=_number(pol.get(RISK_GUARD_PARAM), *RISK_GUARD_RANGE),
            sizing_pct=_number(pol.get(SIZING_PCT_PARAM), *SIZING_PCT_RANGE),
        )

    @classmethod
    def from_query(cls, search: str | Mapping[str, Any] | None) -> ScenarioState:
        """From a query string ('?growth=3&cpu_thr=80') or Dash Pages' layout kwargs."""
        if isinstance(search, Mapping):
            raw = {k: v for k, v in search.items() if k in QUERY_KEYS}
        elif isinstance(search, str):
            text = (search[1:] if search.startswith("?") else search)[:MAX_QUERY_CHARS]
            raw = {k: v for k, v in parse_qsl(text) if k in QUERY_KEYS}
        else:
            raw = {}
        return cls.of(
            raw.get(GROWTH_PARAM),
            {m: raw.get(p) for m, p in THRESHOLD_PARAMS.items()},
            raw.get(HEADROOM_PARAM),
            {p: raw.get(p) for p in POLICY_PARAMS},
        )

    @classmethod
    def from_data(cls, data: Any) -> ScenarioState:
        """From the dcc.Store written by :meth:`to_data` (browser data: re-validated)."""
        if not isinstance(data, dict):
            return cls()
        thr = data.get("thresholds")
        pol = data.get("policy")
        return cls.of(
            data.get("growth"),
            thr if isinstance(thr, dict) else None,
            data.get("headroom"),
            pol if isinstance(pol, dict) else None,
        )

    @property
    def policy_values(self) -> dict[str, Any]:
        """The policy knobs set, by query name (None-valued knobs left out)."""
        values = {
            PROPOSE_PARAM: self.propose,
            MIN_SAVING_PCT_PARAM: self.min_saving_pct,
            MIN_SAVING_USD_PARAM: self.min_saving_usd,
            RISK_GUARD_PARAM: self.risk_guard,
            SIZING_PCT_PARAM: self.sizing_pct,
        }
        return {k: v for k, v in values.items() if v is not None}

    def to_data(self) -> dict[str, Any]:
        return {
            "growth": self.growth,
            "thresholds": dict(self.thresholds),
            "headroom": self.headroom,
            "policy": self.policy_values,
            "query": self.to_query(),
            "keys": QUERY_KEYS,
        }

    @property
    def threshold_map(self) -> dict[str, float]:
        return dict(self.thresholds)

    @property
    def has_policy(self) -> bool:
        return bool(self.policy_values)

    @property
    def is_base(self) -> bool:
        return self.growth == 0 and not self.thresholds and self.headroom is None and not self.has_policy

    def without_policy(self) -> ScenarioState:
        """The same scenario with every policy knob at the run's value (what the risk page computes)."""
        return replace(
            self, propose=None, min_saving_pct=None, min_saving_usd=None, risk_guard=None, sizing_pct=None
        )

    def to_query(self) -> str:
        """Query-string pairs of what differs from the run ('' for the base scenario)."""
        pairs = []
        if self.growth:
            pairs.append(f"{GROWTH_PARAM}={self.growth:g}")
        for metric, value in self.thresholds:
            pairs.append(f"{THRESHOLD_PARAMS[metric]}={value:g}")
        if self.headroom is not None:
            pairs.append(f"{HEADROOM_PARAM}={self.headroom:g}")
        for key, value in self.policy_values.items():
            pairs.append(f"{key}={value}" if isinstance(value, str) else f"{key}={value:g}")
        return "&".join(pairs)

    def key(self) -> str:
        return self.to_query() or "base"

    def policy_over(self, base: Policy) -> Policy | None:
        """The run's policy with this scenario's knobs (None when no knob is set)."""
        if not self.has_policy:
            return None
        changes: dict[str, Any] = {}
        if self.propose is not None:
            changes["propose"] = self.propose
        if self.min_saving_pct is not None:
            changes["min_saving_fraction"] = self.min_saving_pct / 100.0
        if self.min_saving_usd is not None:
            changes["min_saving_usd"] = float(self.min_saving_usd)
        if self.risk_guard is not None:
            changes["risk_probability"] = self.risk_guard / 100.0
        if self.sizing_pct is not None:
            changes["sizing_percentile"] = float(self.sizing_pct)
        return replace(base, **changes)

    def to_scenario(self, base: BasePolicy | None = None) -> Scenario:
        """The engine's scenario (headroom as a fraction; policy knobs over the run's policy)."""
        return Scenario(
            growth_pct_per_month=self.growth,
            thresholds=self.threshold_map or None,
            headroom=None if self.headroom is None else self.headroom / 100.0,
            policy=self.policy_over(base.policy if base is not None else Policy()),
        )

    def describe(self, base: BasePolicy | None = None) -> list[str]:
        """Human lines for headers and exports, e.g. 'Growth: +3 % per month'."""
        if self.is_base:
            return ["Scenario: as planned (the batch run's settings)"]
        lines = []
        if self.growth:
            lines.append(f"Growth: {self.growth:+g} % per month (compounding, all business units)")
        for metric, value in self.thresholds:
            was = base.thresholds.get(metric) if base is not None else None
            label = METRICS[metric].label
            lines.append(
                f"{label} threshold: {value:g} %" + (f" (run: {was:g} %)" if was is not None else "")
            )
        if self.headroom is not None:
            was = f" (run: {base.headroom * 100:g} %)" if base is not None else ""
            lines.append(f"Headroom: {self.headroom:g} %{was}")
        run = base.policy if base is not None else None
        if self.propose is not None:
            was = f" (run: {PROPOSE_LABELS[run.propose]})" if run is not None else ""
            lines.append(f"What to propose: {PROPOSE_LABELS[self.propose]}{was}")
        if self.min_saving_pct is not None:
            was = f" (run: {_pct(run.min_saving_fraction * 100)})" if run is not None else ""
            lines.append(f"Minimum saving: {_pct(self.min_saving_pct)} of the server's cost{was}")
        if self.min_saving_usd is not None:
            was = f" (run: ${run.min_saving_usd:,.0f})" if run is not None else ""
            lines.append(f"Minimum saving: ${self.min_saving_usd:,.0f} per month{was}")
        if self.risk_guard is not None:
            was = f" (run: {_pct(run.risk_probability * 100)})" if run is not None else ""
            lines.append(f"Risk guard: never shrink a server with P(breach) ≥ {_pct(self.risk_guard)}{was}")
        if self.sizing_pct is not None:
            was = f" (run: p{run.sizing_percentile:g})" if run is not None else ""
            lines.append(f"Sizing percentile: p{self.sizing_pct:g} of the period p95s{was}")
        return lines


@dataclass(frozen=True)
class BasePolicy:
    """The settings the batch run used, which a scenario is applied over."""

    thresholds: dict[str, float]
    criticality_offsets: dict[str, float]
    lead_time_days: dict[str, int]
    headroom: float
    idle_cpu_p95: float
    policy: Policy = field(default_factory=Policy)  # the run's policy (Policy() for older runs)

    def kwargs(self) -> dict[str, Any]:
        """Keyword arguments of forecasting.whatif.whatif for the run's base settings."""
        return {
            "thresholds": self.thresholds,
            "criticality_offsets": self.criticality_offsets,
            "lead_time_days": self.lead_time_days,
            "headroom": self.headroom,
            "idle_cpu_p95": self.idle_cpu_p95,
            "policy": self.policy,
        }


def run_policy(raw: Any) -> Policy:
    """The run's policy from its manifest's ``config.policy`` (``dataclasses.asdict(Policy)``).

    Tolerant: a run published before the policy existed, or a field missing, unknown or not
    acceptable to :class:`Policy`, falls back to that field's default (logged, never raised)."""
    policy = Policy()
    if not isinstance(raw, Mapping):
        if raw is not None:
            log.warning(
                "manifest config.policy is not a mapping (%s): default policy used", type(raw).__name__
            )
        return policy
    for f in fields(Policy):
        if f.name not in raw:
            continue
        value = raw[f.name]
        if isinstance(f.default, float) and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        try:
            policy = replace(policy, **{f.name: value})
        except (AnalyticsError, TypeError, ValueError) as e:
            log.warning("manifest config.policy.%s ignored: %s", f.name, e)
    return policy


def base_policy(plan: Plan, settings: Settings) -> BasePolicy:
    """The run's settings from its manifest (the read model merged them), settings otherwise."""
    cfg = plan.manifest.get("config") or {}
    headroom = cfg.get("headroom", settings.headroom)
    try:
        h = float(headroom)
    except (TypeError, ValueError):
        h = float(settings.headroom)
    return BasePolicy(
        thresholds=dict(plan.thresholds),
        criticality_offsets=dict(plan.criticality_offsets),
        lead_time_days=dict(plan.lead_time_days),
        headroom=h if 0 <= h < 1 else float(settings.headroom),
        idle_cpu_p95=float(plan.idle_cpu_p95),
        policy=run_policy(cfg.get("policy") if isinstance(cfg, Mapping) else None),
    )


# --------------------------------------------------------------------------- results


@dataclass
class ScenarioView:
    """Risk and recommendations under one scenario, joined for display, with inventory positions."""

    state: ScenarioState
    base: BasePolicy
    risk: pd.DataFrame | None  # RISK_COLUMNS + DISPLAY_COLUMNS
    risk_pos: np.ndarray | None
    recommendations: pd.DataFrame | None  # RECOMMENDATION_COLUMNS + DISPLAY_COLUMNS
    recs_pos: np.ndarray | None
    consolidation: pd.DataFrame | None  # CONSOLIDATION_COLUMNS (+ business_unit, hostname)
    cons_pos: np.ndarray | None
    summary: dict[str, Any] = field(default_factory=dict)  # consolidation summary (manifest form)
    seconds: float = 0.0  # compute time (0 for the base scenario or a cached result)
    scope_note: str = ""  # what the what-if covered when scoped to the filtered servers

    def risk_rows(self, plan: Plan, filters: FilterState | None) -> pd.DataFrame | None:
        return _masked(plan, self.risk, self.risk_pos, filters)

    def recommendation_rows(self, plan: Plan, filters: FilterState | None) -> pd.DataFrame | None:
        return _masked(plan, self.recommendations, self.recs_pos, filters)

    def consolidation_rows(self, plan: Plan, filters: FilterState | None) -> pd.DataFrame | None:
        return _masked(plan, self.consolidation, self.cons_pos, filters)


def _masked(
    plan: Plan, frame: pd.DataFrame | None, pos: np.ndarray | None, filters: FilterState | None
) -> pd.DataFrame | None:
    if frame is None or pos is None:
        return None
    if filters is None or filters.is_empty:
        return frame
    return frame[plan.mask(filters)[pos]]


def _attach(plan: Plan, frame: pd.DataFrame) -> tuple[pd.DataFrame, np.ndarray]:
    """Display columns by inventory position (what-if frames follow the plan's inventory)."""
    pos = pd.Index(plan.inventory["server_id"]).get_indexer(frame["server_id"].astype("str"))
    if (pos < 0).any():
        frame, pos = frame[pos >= 0], pos[pos >= 0]
    frame = frame.reset_index(drop=True)
    for col in DISPLAY_COLUMNS:
        if col not in frame:
            frame[col] = plan.inventory[col].to_numpy()[pos]
    return frame, pos.astype(np.int32)


class ScenarioCache:
    """Scenario results per run: a few per process, and in the read model's shared cache."""

    def __init__(self) -> None:
        self._memo: OrderedDict[str, ScenarioView] = OrderedDict()
        self._lock = threading.Lock()
        self._locks: dict[str, threading.Lock] = {}

    def computing(self, key: str) -> threading.Lock:
        """The lock that serialises computing one scenario (the page and chart callbacks of a
        what-if change arrive together)."""
        with self._lock:
            lock = self._locks.get(key)
            if lock is None:
                if len(self._locks) > 4 * RESULT_MEMO:
                    self._locks = {k: v for k, v in self._locks.items() if v.locked()}
                lock = self._locks[key] = threading.Lock()
            return lock

    def get(self, rm: ReadModel, key: tuple[str, str, bool]) -> ScenarioView | None:
        full = _shared_key(rm, key)  # names the data location too: run ids repeat across stores
        with self._lock:
            view = self._memo.get(full)
            if view is not None:
                self._memo.move_to_end(full)
                return view
        shared = rm.cache.get(full)
        if isinstance(shared, ScenarioView):
            self._put(full, shared)
            return shared
        return None

    def put(self, rm: ReadModel, key: tuple[str, str, bool], view: ScenarioView) -> None:
        full = _shared_key(rm, key)
        self._put(full, view)
        if not rm.cache.set(full, view, timeout=PLAN_CACHE_SECONDS):
            log.warning("what-if result %s could not be written to the shared cache", full)

    def _put(self, key: str, view: ScenarioView) -> None:
        with self._lock:
            self._memo[key] = view
            self._memo.move_to_end(key)
            while len(self._memo) > RESULT_MEMO:
                self._memo.popitem(last=False)


def _shared_key(rm: ReadModel, key: tuple[str, str, bool]) -> str:
    run_id, scenario, consolidation = key
    return rm._key("whatif", run_id, scenario, "cons" if consolidation else "risk")


_CACHE = ScenarioCache()


def plan_view(plan: Plan, base: BasePolicy) -> ScenarioView:
    """The base scenario: the published plan's own tables."""
    summary = plan.manifest.get("consolidation")
    cons = plan.table("consolidation")
    cons_pos = plan.positions("consolidation")
    return ScenarioView(
        state=ScenarioState(),
        base=base,
        risk=plan.table("risk"),
        risk_pos=plan.positions("risk"),
        recommendations=plan.table("recommendations"),
        recs_pos=plan.positions("recommendations"),
        consolidation=cons,
        cons_pos=cons_pos,
        summary=dict(summary) if isinstance(summary, dict) else {},
    )


class WhatIfScopeError(ValueError):
    """The filters select more servers than a what-if may cover on a fleet this large."""

    def __init__(self, selected: int, limit: int, fleet: int) -> None:
        self.selected, self.limit, self.fleet = selected, limit, fleet
        super().__init__(
            f"What-ifs on a fleet of {fleet:,} servers cover at most {limit:,} servers at once, and the "
            f"filters select {selected:,}. Narrow the filters (a business unit, a region, an environment) "
            "to try this scenario; the published plan is shown without filters too narrow to need it."
        )


def scope_alert(error: WhatIfScopeError) -> Any:
    """The page-level message of a what-if whose scope is too large (never a silent cut)."""
    import dash_bootstrap_components as dbc
    from dash import html

    from . import ids

    return dbc.Alert(
        [html.Strong("What-if scope too large. "), html.Span(str(error))],
        color="warning",
        id=ids.WHATIF_SCOPE_ALERT,
    )


def whatif_scope(rm: ReadModel, plan: Plan, filters: FilterState | None) -> np.ndarray | None:
    """Which servers a what-if covers: None for the whole fleet (fleets of up to
    ``whatif_max_servers``, prepared once per run), else the filtered servers' positions.

    Preparing the whole fleet's arrays does not fit a web worker's memory at 100,000 servers,
    so a larger fleet's what-if covers the filtered servers only, at most ``whatif_max_servers``
    of them; more raises WhatIfScopeError (the page says so) rather than cutting silently."""
    limit = int(rm.settings.whatif_max_servers)
    if plan.n_servers <= limit:
        return None
    pos = np.flatnonzero(plan.mask(filters))
    if len(pos) > limit:
        raise WhatIfScopeError(len(pos), limit, plan.n_servers)
    return pos


def scenario_view(
    rm: ReadModel,
    plan: Plan,
    state: ScenarioState,
    *,
    consolidation: bool = False,
    filters: FilterState | None = None,
) -> ScenarioView:
    """Results under ``state``: the plan itself for the base scenario, else the engine's what-if.

    Each page computes only its half: the risk page re-derives risk (assessing in full only
    the flagged rows, the ones it lists); the consolidation page (``consolidation=True``) re-derives
    recommendations and re-packs hosts. A setting that cannot change a page's half is left out
    of its computation and cache key, so moving it answers from the plan or the cache: headroom
    and the policy knobs (what to propose, minimum saving, risk guard, sizing percentile) only
    decide recommendations, so the risk page leaves them out. Thresholds stay in the
    consolidation page's key: the policy's risk guard reads the breach risk they decide.
    """
    base = base_policy(plan, rm.settings)
    relevant = state if consolidation else replace(state.without_policy(), headroom=None)
    if relevant.is_base:
        return replace(plan_view(plan, base), state=state)
    scope = whatif_scope(rm, plan, filters)
    scope_key = relevant.key()
    if scope is not None:  # the filtered servers only: their filters are part of what was computed
        scope_key += "|scope=" + json.dumps((filters or FilterState()).to_data(), sort_keys=True)
    key = (plan.run_id, scope_key, consolidation)
    with _CACHE.computing(
        _shared_key(rm, key)
    ):  # one computation per scenario, however many callbacks ask at once
        cached = _CACHE.get(rm, key)
        if cached is None:
            inputs = rm.analytics_inputs(plan) if scope is None else rm.scoped_inputs(plan, scope)
            cached = compute_view(inputs, plan, relevant, base, consolidation=consolidation)
            if scope is not None:
                cached = replace(
                    cached,
                    scope_note=f"what-if computed for the {len(scope):,} filtered servers of {plan.n_servers:,}"
                    + (" (hosts packed among them only)" if consolidation else ""),
                )
            _CACHE.put(rm, key, cached)
    return cached if cached.state == state else replace(cached, state=state)


def compute_view(
    inputs: AnalyticsInputs,
    plan: Plan,
    state: ScenarioState,
    base: BasePolicy,
    *,
    consolidation: bool = False,
) -> ScenarioView:
    """Run the engine's what-if for one page's half and join its frames for display (no caching)."""
    import time

    started = time.perf_counter()
    result = whatif(
        inputs,
        state.to_scenario(base),
        **base.kwargs(),
        risk=not consolidation,
        recommendations=consolidation,
        consolidation=consolidation,
        assess="flagged",
    )
    risk = risk_pos = recs = recs_pos = cons = cons_pos = None
    summary: dict[str, Any] = {}
    if result.risk is not None:
        risk, risk_pos = _attach(plan, result.risk)
    if result.recommendations is not None:
        recs, recs_pos = _attach(plan, result.recommendations.frame)
        cons, cons_pos = _attach(plan, result.recommendations.plan)
        summary = result.recommendations.summary_dict()
    return ScenarioView(
        state=state,
        base=base,
        risk=risk,
        risk_pos=risk_pos,
        recommendations=recs,
        recs_pos=recs_pos,
        consolidation=cons,
        cons_pos=cons_pos,
        summary=summary,
        seconds=time.perf_counter() - started,
    )


def scenario_inputs_for(
    rm: ReadModel, plan: Plan, state: ScenarioState, server_ids: list[str]
) -> AnalyticsInputs | None:
    """Prepared inputs of a few servers (a packed host's members) under the scenario's growth."""
    from forecasting.whatif import apply_growth

    if plan.n_servers > rm.settings.whatif_max_servers:  # never the whole fleet: these servers only
        pos = pd.Index(plan.inventory["server_id"]).get_indexer(pd.Index(server_ids, dtype="str"))
        pos = pos[pos >= 0]
        if len(pos) == 0:
            return None
        sub = rm.scoped_inputs(plan, np.sort(pos))
        return apply_growth(sub, state.growth) if state.growth else sub
    inputs = rm.analytics_inputs(plan)
    rows = pd.Index(inputs.inventory["server_id"]).get_indexer(pd.Index(server_ids, dtype="str"))
    rows = rows[rows >= 0]
    if len(rows) == 0:
        return None
    sub = subset_inputs(inputs, rows)
    return apply_growth(sub, state.growth) if state.growth else sub


def subset_inputs(inputs: AnalyticsInputs, rows: np.ndarray) -> AnalyticsInputs:
    """The same prepared inputs restricted to some servers (rows of the server axis)."""

    def take(a: np.ndarray | None) -> np.ndarray | None:
        return None if a is None else a[rows]

    return inputs.with_changes(
        inventory=inputs.inventory.iloc[rows].reset_index(drop=True),
        quantiles=inputs.quantiles[rows],
        present=inputs.present[rows],
        models=inputs.models[rows],
        history={m: a[rows] for m, a in inputs.history.items()},
        current_p95=inputs.current_p95[rows],
        hist_uplift=inputs.hist_uplift[rows],
        missing_uplift=inputs.missing_uplift[rows],
        growth=take(inputs.growth),
    )


# --------------------------------------------------------------------------- page furniture


def scenario_panel(
    query: Mapping[str, Any], *, show_headroom: bool = True, show_policy: bool | None = None
) -> list[Any]:
    """The scenario store (seeded from the page's query string) and the what-if card, with the
    run's own settings as placeholders. Called from page layouts, inside a request. The policy
    knobs show where headroom does (the pages that show recommendations) unless told."""
    from dash import dcc, html

    from components.whatif import PolicyControls, whatif_controls

    from . import get_context, ids
    from .auth import current_user

    state = ScenarioState.from_query(query)
    user = current_user()
    if user is None or not user.can("whatif"):
        # A viewer sees the published plan: no controls, and a scenario in a shared link is
        # not applied (the server refuses it too: app.auth.required_permission).
        role = user.role if user is not None else None
        text = (
            f"This link carries a what-if scenario; your role ({role or 'none'}) shows the published plan. "
            "What-ifs need the planner role."
            if not state.is_base
            else "What-ifs need the planner role."
        )
        return [
            dcc.Store(id=ids.WHATIF_STATE, data=ScenarioState().to_data()),
            html.Div(text, id=ids.WHATIF_DENIED, className="small text-muted mb-2", role="note"),
        ]
    ctx = get_context()
    plan = ctx.readmodel.snapshot().plan
    base = base_policy(plan, ctx.settings) if plan is not None else None
    base_thresholds = base.thresholds if base is not None else dict(ctx.settings.thresholds)
    run = base.policy if base is not None else Policy()
    policy = PolicyControls(
        propose_id=ids.WHATIF_PROPOSE,
        min_saving_pct_id=ids.WHATIF_MIN_SAVING_PCT,
        min_saving_usd_id=ids.WHATIF_MIN_SAVING_USD,
        risk_guard_id=ids.WHATIF_RISK_GUARD,
        sizing_pct_id=ids.WHATIF_SIZING_PCT,
        propose_labels=PROPOSE_LABELS,
        propose=state.propose,
        min_saving_pct=state.min_saving_pct,
        min_saving_usd=state.min_saving_usd,
        risk_guard=state.risk_guard,
        sizing_pct=state.sizing_pct,
        base_propose=run.propose,
        base_min_saving_pct=round(run.min_saving_fraction * 100, 1),
        base_min_saving_usd=round(run.min_saving_usd, 1),
        base_risk_guard=round(run.risk_probability * 100, 1),
        base_sizing_pct=round(run.sizing_percentile, 1),
        min_saving_pct_range=MIN_SAVING_PCT_RANGE,
        min_saving_usd_range=MIN_SAVING_USD_RANGE,
        risk_guard_range=RISK_GUARD_RANGE,
        sizing_pct_range=SIZING_PCT_RANGE,
    )
    return [
        dcc.Store(id=ids.WHATIF_STATE, data=state.to_data()),
        whatif_controls(
            growth_id=ids.WHATIF_GROWTH,
            threshold_ids=ids.WHATIF_THRESHOLDS,
            threshold_labels={m: METRICS[m].label for m in ids.WHATIF_THRESHOLDS},
            headroom_id=ids.WHATIF_HEADROOM,
            reset_id=ids.WHATIF_RESET,
            summary_id=ids.WHATIF_SUMMARY,
            growth=state.growth,
            growth_range=GROWTH_RANGE,
            thresholds=state.threshold_map,
            base_thresholds=base_thresholds,
            headroom=state.headroom,
            base_headroom=base.headroom if base is not None else ctx.settings.headroom,
            headroom_range=HEADROOM_RANGE,
            show_headroom=show_headroom,
            policy=policy,
            show_policy=show_headroom if show_policy is None else show_policy,
        ),
    ]
