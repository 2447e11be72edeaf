"""The API's request and response models (pydantic): flask-openapi3 validates requests with them
and writes the OpenAPI 3.1 document from them."""

from __future__ import annotations

import copy
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from forecasting.plan import ACTIONS, SEVERITIES
from forecasting.records.decisions import CHOICES, KINDS
from forecasting.records.track import OUTCOMES, SERIES_COLUMNS
from forecasting.schema import METRIC_COLUMNS

from .index import RECOMMENDATION_FIELDS, RISK_FIELDS

Metric = Literal[tuple(METRIC_COLUMNS)]  # type: ignore[valid-type]
Severity = Literal[tuple(SEVERITIES)]  # type: ignore[valid-type]
Action = Literal[tuple(ACTIONS)]  # type: ignore[valid-type]
MAX_LIMIT = 10_000
MAX_VALUES = 50  # per filter dimension: keeps every URL well under servers' request-line limits
Value = Annotated[str, StringConstraints(max_length=100)]
TEXT = 200


class _Cached(BaseModel):
    """flask-openapi3 asks a query model for its JSON schema on every request (~14 ms on this
    machine for these models): it never changes, so it is made once per class."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:  # type: ignore[override]
        key = (cls, args, tuple(sorted(kwargs.items())))
        hit = _SCHEMAS.get(key)
        if hit is None:
            hit = _SCHEMAS[key] = super().model_json_schema(*args, **kwargs)
        return copy.deepcopy(hit)


_SCHEMAS: dict[Any, dict[str, Any]] = {}


class RunPath(_Cached):
    run_id: str = Field(
        ...,
        max_length=64,
        description="a run id (from GET /runs), or `latest`: redirected to the current run's id",
    )


class ServerPath(RunPath):
    server_id: str = Field(..., max_length=TEXT, description="a server id of the run's inventory")


class _Filters(_Cached):
    """The global filter bar's dimensions, with the same parameter names as the app's URLs."""

    model_config = ConfigDict(extra="forbid")

    bu: list[Value] = Field(
        default_factory=list, max_length=MAX_VALUES, description="business unit(s); repeat for several"
    )
    region: list[Value] = Field(default_factory=list, max_length=MAX_VALUES, description="region(s)")
    env: list[Value] = Field(default_factory=list, max_length=MAX_VALUES, description="environment(s)")
    crit: list[Value] = Field(default_factory=list, max_length=MAX_VALUES, description="criticality tier(s)")
    type: list[Value] = Field(default_factory=list, max_length=MAX_VALUES, description="server type(s)")


class SummaryQuery(_Filters):
    """The fleet summary's query: the filter bar only (its own name in the OpenAPI document)."""


def _names(fields: list[str], *, signed: bool = False) -> str:
    """A pattern for a comma-separated list of ``fields`` (each may start with '-' when ``signed``)."""
    one = ("-?" if signed else "") + "(" + "|".join(fields) + ")"
    return f"^{one}(,{one})*$"


class _ListQuery(_Filters):
    q: str | None = Field(
        None, max_length=TEXT, description="server id or hostname contains (case-insensitive)"
    )
    sort: str | None = None
    fields: str | None = None
    limit: int = Field(100, ge=1, le=MAX_LIMIT, description="rows per page")
    cursor: str | None = Field(None, max_length=512, description="from a previous page's `next` (opaque)")


RISK_SORTABLE = [f for f in RISK_FIELDS if f != "reason"]
RECOMMENDATION_SORTABLE = [f for f in RECOMMENDATION_FIELDS if f != "reason"]


class RiskQuery(_ListQuery):
    sort: str | None = Field(
        None,
        max_length=500,
        pattern=_names(RISK_SORTABLE, signed=True),
        description="comma-separated fields, `-` for descending (default: severity, -score, server_id, metric)",
    )
    fields: str | None = Field(
        None,
        max_length=2000,
        pattern=_names(RISK_FIELDS),
        description="comma-separated fields to return (default all)",
    )
    metric: list[Metric] = Field(default_factory=list, description="metric(s)")  # type: ignore[valid-type]
    severity: list[Severity] = Field(  # type: ignore[valid-type]
        default_factory=list,
        description="severity level(s); default: critical, high, medium and low (the risk page's rows)",
    )
    min_probability: float | None = Field(None, ge=0, le=1, description="breach probability at least this")
    breach_within_days: float | None = Field(
        None, ge=0, le=100_000, description="expected breach within this many days of the forecast origin"
    )


class RecommendationsQuery(_ListQuery):
    sort: str | None = Field(
        None,
        max_length=500,
        pattern=_names(RECOMMENDATION_SORTABLE, signed=True),
        description="comma-separated fields, `-` for descending (default: -monthly_savings)",
    )
    fields: str | None = Field(
        None,
        max_length=2000,
        pattern=_names(RECOMMENDATION_FIELDS),
        description="comma-separated fields to return (default all)",
    )
    action: list[Action] = Field(default_factory=list, description="action(s)")  # type: ignore[valid-type]
    held_back: list[Value] = Field(
        default_factory=list,
        max_length=50,
        description="why held back (e.g. `at risk`, `pinned`); empty string: not held back",
    )
    min_savings: float | None = Field(
        None, ge=-1e12, le=1e12, description="monthly saving at least this (USD)"
    )


class ConsolidationQuery(_Filters):
    """The consolidation groups' query: the filter bar only (its own name in the OpenAPI document)."""


# --------------------------------------------------------------------------- responses


class RunInfo(BaseModel):
    run_id: str
    created_at: str | None = None
    latest: bool
    href: str


class RunList(BaseModel):
    items: list[RunInfo]
    latest: str | None


class Manifest(BaseModel):
    model_config = ConfigDict(extra="allow")
    run_id: str
    href: dict[str, str]
    manifest: dict[str, Any]


Num = float | None
Txt = str | None


class RiskRow(BaseModel):
    server_id: Txt = None
    hostname: Txt = None
    business_unit: Txt = None
    region: Txt = None
    environment: Txt = None
    criticality: Txt = None
    server_type: Txt = None
    metric: Txt = None
    threshold: Num = None
    current_p95: Num = None
    forecast_peak: Num = None
    forecast_peak_upper: Num = None
    breach_optimistic: Txt = Field(None, description="YYYY-MM-DD")
    breach_expected: Txt = Field(None, description="YYYY-MM-DD")
    breach_pessimistic: Txt = Field(None, description="YYYY-MM-DD")
    days_to_breach: Num = None
    days_to_breach_pessimistic: Num = None
    breach_probability: Num = None
    act_by: Txt = Field(None, description="YYYY-MM-DD")
    status: Txt = None
    severity: Txt = None
    score: Num = None
    trend_per_week: Num = None
    reason: Txt = None


class RecommendationRow(BaseModel):
    server_id: Txt = None
    hostname: Txt = None
    business_unit: Txt = None
    region: Txt = None
    environment: Txt = None
    criticality: Txt = None
    server_type: Txt = None
    action: Txt = None
    current_size: Txt = None
    current_cores: Num = None
    current_memory_gb: Num = None
    recommended_size: Txt = None
    recommended_cores: Num = None
    recommended_memory_gb: Num = None
    target_group: Txt = None
    current_monthly_cost: Num = None
    recommended_monthly_cost: Num = None
    monthly_savings: Num = None
    reason: Txt = None
    held_back: Txt = None


class _Page(BaseModel):
    run_id: str
    total: int = Field(..., description="rows matching the filters, all pages")
    limit: int
    next: str | None = Field(
        None, description="URL of the next page (same run, same query), null on the last"
    )


class RiskPage(_Page):
    items: list[RiskRow]


class RecommendationPage(_Page):
    items: list[RecommendationRow]


class GroupMember(BaseModel):
    server_id: Txt = None
    hostname: Txt = None
    business_unit: Txt = None
    peak_cpu_util: Num = None
    peak_mem_util: Num = None


class Group(BaseModel):
    target_group: str
    region: Txt = None
    environment: Txt = None
    host_size: Txt = None
    host_cores: Num = None
    host_memory_gb: Num = None
    host_monthly_cost: Num = None
    members: list[GroupMember]


class GroupList(BaseModel):
    run_id: str
    items: list[Group]


class ForecastPoint(BaseModel):
    timestamp: str
    yhat: Num = None
    lower_80: Num = None
    upper_80: Num = None
    lower_95: Num = None
    upper_95: Num = None


class BacktestRow(BaseModel):
    metric: Txt = None
    model: Txt = None
    mase: Num = None
    smape: Num = None
    mae: Num = None
    coverage_80: Num = None
    coverage_95: Num = None
    n_cutoffs: Num = None


class ServerDetail(BaseModel):
    run_id: str
    server_id: str
    inventory: dict[str, Any]
    risk: list[RiskRow]
    recommendation: RecommendationRow | None = None
    backtest: list[BacktestRow]
    forecast: dict[str, list[ForecastPoint]] = Field(
        ..., description="metric -> points, with 80 % and 95 % bands"
    )


class Summary(BaseModel):
    run_id: str
    servers: int
    servers_at_risk: dict[str, int] = Field(
        ..., description="servers by their worst severity (none excluded)"
    )
    rows_at_risk: dict[str, int] = Field(..., description="server × metric rows by severity")
    breaching_within_days: dict[str, int] = Field(
        ..., description="servers expected to breach within 30 / 90 days"
    )
    actions: dict[str, int]
    monthly_savings: float
    held_back: dict[str, int]


# --------------------------------------------------------------------------- plans as records

RunId = Annotated[str, StringConstraints(max_length=64)]


class ChangesQuery(_Cached):
    model_config = ConfigDict(extra="forbid")

    since: str | None = Field(
        None,
        max_length=64,
        description="the earlier run (default: the run before this one); `latest` is redirected",
    )
    bu: list[Value] = Field(
        default_factory=list, max_length=MAX_VALUES, description="business unit(s); repeat for several"
    )


class Changes(BaseModel):
    run_a: str = Field(..., description="the earlier run (before)")
    run_b: str = Field(..., description="this run (after)")
    business_units: list[str] | None = None
    new_data: bool = Field(..., description="the runs read different input")
    settings_changed: dict[str, list[Any]] = Field(..., description="setting -> [before, after]")
    models_changed: int = Field(..., description="series forecast by another model")
    causes: list[str] = Field(..., description="why the runs differ, in words")
    totals: list[dict[str, Any]] = Field(..., description="measure, before, after, change")
    new_risks: list[dict[str, Any]]
    resolved_risks: list[dict[str, Any]]
    moved_breaches: list[dict[str, Any]] = Field(
        ..., description="breach dates that moved: days_moved (+ later, - earlier) and why"
    )
    changed_recommendations: list[dict[str, Any]]


class TrackRecordQuery(_Cached):
    model_config = ConfigDict(extra="forbid")

    bu: list[Value] = Field(default_factory=list, max_length=MAX_VALUES, description="business unit(s)")
    outcome: list[Literal[OUTCOMES]] = Field(  # type: ignore[valid-type]
        default_factory=list, description="breach-call outcome(s) of the series rows"
    )
    fields: str | None = Field(
        None,
        max_length=2000,
        pattern=_names(SERIES_COLUMNS),
        description="comma-separated series fields to return (default all)",
    )
    limit: int = Field(100, ge=0, le=MAX_LIMIT, description="series rows per page (0: the summary only)")
    cursor: str | None = Field(None, max_length=512, description="from a previous page's `next` (opaque)")


class TrackRecordPage(BaseModel):
    run_id: str
    record: str = Field(..., description="which saved record (actuals' end and store version)")
    summary: dict[str, Any] = Field(
        ..., description="MASE, band coverage, breach-call outcomes, precision and recall"
    )
    total: int = Field(..., description="series rows matching the filters, all pages")
    limit: int
    next: str | None = None
    items: list[dict[str, Any]] = Field(..., description="per-series rows (server × metric)")


class TrackRecordList(BaseModel):
    items: list[dict[str, Any]] = Field(..., description="the newest summary of every run that has one")


Kind = Literal[tuple(KINDS)]  # type: ignore[valid-type]
Choice = Literal[tuple(CHOICES)]  # type: ignore[valid-type]


class DecisionsQuery(_Cached):
    model_config = ConfigDict(extra="forbid")

    run: str = Field(
        "latest", max_length=64, description="the run whose decisions in force are listed (default latest)"
    )
    kind: Kind | None = Field(None, description="risk or recommendation rows only")  # type: ignore[valid-type]
    server: str | None = Field(None, max_length=TEXT, description="one server's decisions")
    limit: int = Field(100, ge=1, le=MAX_LIMIT, description="decisions per page")
    cursor: str | None = Field(None, max_length=512, description="from a previous page's `next` (opaque)")


class DecisionBody(_Cached):
    """A planner's decision on one row of a run (a risk row: server + metric; a recommendation
    row: server + action)."""

    model_config = ConfigDict(extra="forbid")

    run_id: RunId = Field(..., description="the run whose row was decided on (a concrete id)")
    kind: Kind = Field(..., description="risk or recommendation")  # type: ignore[valid-type]
    server_id: str = Field(..., max_length=TEXT)
    subject: str = Field(
        ..., max_length=TEXT, description="the metric of a risk row, the action of a recommendation row"
    )
    decision: Choice = Field(  # type: ignore[valid-type]
        ...,
        description="deferred needs `until`, ordered needs `reference`, rejected needs `reason`",
    )
    until: str | None = Field(None, max_length=40, description="deferred: the last day it holds (YYYY-MM-DD)")
    reference: str | None = Field(None, max_length=2000, description="ordered: the order or ticket")
    reason: str | None = Field(None, max_length=2000, description="rejected: why (required)")
    note: str | None = Field(None, max_length=2000)


class DecisionRecord(BaseModel):
    id: str
    kind: str
    server_id: str
    subject: str
    decision: str
    until: str | None = None
    reference: str | None = None
    reason: str | None = None
    note: str | None = None
    user: str
    user_name: str
    at: str
    run_id: str = Field(..., description="the run it was recorded on (it holds for later runs too)")
    source: str
    in_effect: bool | None = Field(None, description="false for a deferral whose date has passed")
    label: str | None = Field(None, description="what the app's tables show")


class DecisionPage(BaseModel):
    run_id: str
    total: int
    limit: int
    next: str | None = None
    items: list[DecisionRecord]


class SignOffBody(_Cached):
    model_config = ConfigDict(extra="forbid")

    note: str | None = Field(None, max_length=2000)


class SignOff(BaseModel):
    run_id: str
    signed_off: bool
    user: str | None = None
    user_name: str | None = None
    at: str | None = None
    note: str | None = None
    source: str | None = None
