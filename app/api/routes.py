"""The ``/api/v1`` endpoints (flask-openapi3 ``APIBlueprint``: pydantic validates every request
and the OpenAPI 3.1 document is written from the same models).

Every run-scoped answer is computed from an immutable run, so it carries a strong ETag and
``Cache-Control: private, max-age=31536000, immutable``; ``If-None-Match`` answers 304 without
touching the rows. ``latest`` in place of a run id redirects (307) to the concrete run, so a
client that pages keeps reading one run even when a newer one is published meanwhile.
"""

from __future__ import annotations

import hashlib
import json
import logging
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
from flask import Response, current_app, redirect, request
from flask_openapi3 import APIBlueprint, Tag

from app.filters import DIMENSION_OF_PARAM, FilterState, _clean_values
from app.readmodel import AT_RISK_SEVERITIES, SEVERITY_RANK
from components.export import csv_bytes
from components.grid import records
from forecasting.plan import SEVERITIES

from .index import (
    BACKTEST_FIELDS,
    ApiInputError,
    Query,
    RunIndex,
    RunIndexCache,
    UnknownRunError,
    decode_cursor,
    encode_cursor,
)
from .models import (
    ConsolidationQuery,
    GroupList,
    Manifest,
    RecommendationPage,
    RecommendationsQuery,
    RiskPage,
    RiskQuery,
    RunList,
    RunPath,
    ServerDetail,
    ServerPath,
    Summary,
    SummaryQuery,
)
from .problems import problem

log = logging.getLogger(__name__)

PREFIX = "/api/v1"
EXTENSION = "capfc_api"
IMMUTABLE = "private, max-age=31536000, immutable"
REVALIDATE = "private, no-cache"
JSON = "application/json"
CSV = "text/csv"
BREACH_WINDOWS = (30, 90)

runs_tag = Tag(name="runs", description="published runs (immutable) and their plan")
api = APIBlueprint(
    "capfc_api",
    __name__,
    url_prefix=PREFIX,
    abp_tags=[runs_tag],
    abp_security=[{"bearer": []}],
)


@api.errorhandler(UnknownRunError)
def _unknown_run(e: UnknownRunError) -> Response:
    return problem(404, f"no published run {str(e.args[0])[:80]!r}: see {PREFIX}/runs")


@api.errorhandler(ApiInputError)
def _bad_input(e: ApiInputError) -> Response:
    return problem(400, e.detail, title=e.title, param=e.param)


def cache() -> RunIndexCache:
    return current_app.extensions[EXTENSION]


# --------------------------------------------------------------------------- helpers


def _wants(kinds: tuple[str, ...] = (JSON,)) -> str | None:
    """The media type to answer in (None: nothing acceptable); no Accept header means JSON."""
    if not request.headers.get("Accept"):
        return JSON
    return request.accept_mimetypes.best_match(list(kinds))


def _etag(index: RunIndex, media: str) -> str:
    args = sorted((k, v) for k, vs in request.args.lists() for v in vs)
    raw = json.dumps([index.fingerprint, request.path, args, media])
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def _not_modified(etag: str) -> Response | None:
    if request.if_none_match and request.if_none_match.contains(etag):
        resp = Response(status=304)
        resp.set_etag(etag)
        resp.headers["Cache-Control"] = IMMUTABLE
        return resp
    return None


def _cacheable(resp: Response, etag: str) -> Response:
    resp.set_etag(etag)
    resp.headers["Cache-Control"] = IMMUTABLE
    resp.headers["Vary"] = "Accept, Authorization"
    return resp


def _json(body: Any, status: int = 200) -> Response:
    return Response(json.dumps(body, allow_nan=False), status=status, content_type=JSON)


def _latest(run_id: str) -> Response | None:
    """307 to the concrete run when ``run_id`` is ``latest`` (404 problem when nothing is published)."""
    if run_id != "latest":
        return None
    latest = cache().store.latest_run_id()
    if latest is None:
        return problem(404, "no run has been published yet")
    rest = request.path[len(f"{PREFIX}/runs/latest") :]
    target = f"{PREFIX}/runs/{latest}{rest}"
    if request.query_string:
        target += "?" + request.query_string.decode("latin-1")
    resp = redirect(target, code=307)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _json_run(run_id: str) -> Response | None:
    """The answer a JSON-only run resource gives before any work: 307 for ``latest``, 406 for an
    Accept it cannot meet; None: go on."""
    moved = _latest(run_id)
    if moved is not None:
        return moved
    return problem(406, "served as application/json") if _wants() is None else None


def _index(run_id: str) -> RunIndex:
    return cache().get(run_id)


def _dims(query: Any) -> FilterState:
    raw = {
        DIMENSION_OF_PARAM[p]: _clean_values(getattr(query, p))
        for p in ("bu", "region", "env", "crit", "type")
    }
    return FilterState(**raw)


def _split(text: str | None, allowed: list[str], param: str, *, signed: bool = False) -> list[str]:
    if text is None:
        return []
    out: list[str] = []
    for part in text.split(","):
        part = part.strip()
        name = part[1:] if signed and part.startswith("-") else part
        if not name:
            raise ApiInputError(f"Bad {param}", f"`{param}` has an empty entry", param=param)
        if name not in allowed:
            raise ApiInputError(
                f"Bad {param}",
                f"`{param}`: unknown field {name[:60]!r}; known: {', '.join(allowed)}",
                param=param,
            )
        if part not in out:
            out.append(part)
    return out


def _list(name: str, run_id: str, query: Any, q: Query) -> Response:
    """One page of a plan table, as JSON or CSV, with paging links and cache validators."""
    media = _wants((JSON, CSV))
    if media is None:
        return problem(406, "this list is served as application/json or text/csv")
    index = _index(run_id)
    table = index.tables.get(name)
    if table is None:
        return problem(404, f"run {run_id} has no {name} table")
    etag = _etag(index, media)
    hit = _not_modified(etag)
    if hit is not None:
        return hit
    fields = _split(query.fields, table.fields, "fields") or table.fields
    sort = _split(query.sort, table.sortable(), "sort", signed=True)
    q = Query(q.dims, q.columns, q.search, q.min_values, q.max_values, tuple(sort))
    digest = q.digest()
    offset = decode_cursor(query.cursor, run_id, name, digest) if query.cursor else 0
    page = index.page(name, q, offset, query.limit, fields)
    next_url = None
    if page.next_offset is not None:
        args = [(k, v) for k, vs in request.args.lists() if k != "cursor" for v in vs]
        args.append(("cursor", encode_cursor(run_id, name, digest, page.next_offset)))
        next_url = f"{request.path}?{urlencode(args)}"
    if media == CSV:
        frame = pd.DataFrame(page.rows, columns=fields)
        resp = Response(csv_bytes(frame), content_type="text/csv; charset=utf-8")
    else:
        head = json.dumps({"run_id": run_id, "total": page.total, "limit": query.limit, "next": next_url})
        resp = Response(f'{head[:-1]}, "items": {page.items_json()}}}', content_type=JSON)
    resp.headers["X-Total-Count"] = str(page.total)
    if next_url:
        resp.headers["Link"] = f'<{next_url}>; rel="next"'
    return _cacheable(resp, etag)


# --------------------------------------------------------------------------- runs


@api.get("/runs", tags=[runs_tag], responses={200: RunList}, summary="Published runs, newest first")
def list_runs() -> Response:
    if _wants() is None:
        return problem(406, "served as application/json")
    c = cache()
    store = c.store
    latest = store.latest_run_id()
    items = []
    for run_id in sorted(store.list_runs(), reverse=True):
        try:
            created = c.manifest(run_id).get("created_at")
        except (UnknownRunError, Exception):  # a run whose manifest cannot be read is not listed
            log.warning("run %s: manifest unreadable, not listed", run_id)
            continue
        items.append(
            {
                "run_id": run_id,
                "created_at": str(created) if created is not None else None,
                "latest": run_id == latest,
                "href": f"{PREFIX}/runs/{run_id}",
            }
        )
    body = {"items": items, "latest": latest}
    resp = _json(body)
    resp.set_etag(hashlib.sha256(json.dumps(body).encode()).hexdigest()[:40])
    resp.headers["Cache-Control"] = REVALIDATE
    return resp.make_conditional(request)


@api.get("/runs/<run_id>", tags=[runs_tag], responses={200: Manifest}, summary="A run's manifest")
def get_run(path: RunPath) -> Response:
    early = _json_run(path.run_id)
    if early is not None:
        return early
    manifest = cache().manifest(path.run_id)
    etag = hashlib.sha256(f"manifest|{path.run_id}".encode()).hexdigest()[:40]
    hit = _not_modified(etag)
    if hit is not None:
        return hit
    base = f"{PREFIX}/runs/{path.run_id}"
    links = {k: f"{base}/{k}" for k in ("risk", "recommendations", "consolidation", "summary")}
    links["self"] = base
    body = {"run_id": path.run_id, "href": links, "manifest": json.loads(json.dumps(manifest, default=str))}
    return _cacheable(_json(body), etag)


# --------------------------------------------------------------------------- plan tables


@api.get(
    "/runs/<run_id>/risk",
    tags=[runs_tag],
    responses={200: RiskPage},
    summary="Breach risk per server × metric (filters, sort, cursor paging, fields; JSON or CSV)",
)
def get_risk(path: RunPath, query: RiskQuery) -> Response:
    moved = _latest(path.run_id)
    if moved is not None:
        return moved
    severities = tuple(query.severity) or tuple(AT_RISK_SEVERITIES)
    columns: list[tuple[str, tuple[str, ...]]] = [("severity", severities)]
    if query.metric:
        columns.append(("metric", tuple(query.metric)))
    mins = (("breach_probability", query.min_probability),) if query.min_probability is not None else ()
    maxs = (("days_to_breach", query.breach_within_days),) if query.breach_within_days is not None else ()
    q = Query(_dims(query), tuple(columns), (query.q or "").strip(), mins, maxs)
    return _list("risk", path.run_id, query, q)


@api.get(
    "/runs/<run_id>/recommendations",
    tags=[runs_tag],
    responses={200: RecommendationPage},
    summary="One action per server (filters, sort, cursor paging, fields; JSON or CSV)",
)
def get_recommendations(path: RunPath, query: RecommendationsQuery) -> Response:
    moved = _latest(path.run_id)
    if moved is not None:
        return moved
    columns: list[tuple[str, tuple[str, ...]]] = []
    if query.action:
        columns.append(("action", tuple(query.action)))
    if query.held_back:
        columns.append(("held_back", tuple(v.strip() for v in query.held_back)))
    mins = (("monthly_savings", query.min_savings),) if query.min_savings is not None else ()
    q = Query(_dims(query), tuple(columns), (query.q or "").strip(), mins)
    return _list("recommendations", path.run_id, query, q)


@api.get(
    "/runs/<run_id>/consolidation",
    tags=[runs_tag],
    responses={200: GroupList},
    summary="Consolidation groups: the servers that share a host, and the host",
)
def get_consolidation(path: RunPath, query: ConsolidationQuery) -> Response:
    early = _json_run(path.run_id)
    if early is not None:
        return early
    index = _index(path.run_id)
    etag = _etag(index, JSON)
    hit = _not_modified(etag)
    if hit is not None:
        return hit
    cons = index.consolidation
    groups: list[dict[str, Any]] = []
    if cons is not None and len(cons):
        pos = index.ids.get_indexer(cons["server_id"])
        keep = np.zeros(len(cons), dtype=bool)
        mask = index.dim_mask(_dims(query))
        keep[pos >= 0] = mask[pos[pos >= 0]]
        cons = cons[keep]
        host_cols = [
            "region",
            "environment",
            "host_size",
            "host_cores",
            "host_memory_gb",
            "host_monthly_cost",
        ]
        member_cols = ["server_id", "hostname", "business_unit", "peak_cpu_util", "peak_mem_util"]
        for group, rows in cons.groupby("target_group", sort=True):
            head = records(rows.iloc[:1], [c for c in host_cols if c in rows])[0]
            groups.append(
                {
                    "target_group": str(group),
                    **head,
                    "members": records(rows, [c for c in member_cols if c in rows]),
                }
            )
    return _cacheable(_json({"run_id": path.run_id, "items": groups}), etag)


# --------------------------------------------------------------------------- one server


@api.get(
    "/runs/<run_id>/servers/<server_id>",
    tags=[runs_tag],
    responses={200: ServerDetail},
    summary="One server: inventory, forecast with bands, backtest, risk and recommendation",
)
def get_server(path: ServerPath) -> Response:
    early = _json_run(path.run_id)
    if early is not None:
        return early
    index = _index(path.run_id)
    pos = index.position(path.server_id)
    if pos is None:
        return problem(404, f"run {path.run_id} has no server {path.server_id[:100]!r}")
    etag = _etag(index, JSON)
    hit = _not_modified(etag)
    if hit is not None:
        return hit
    inventory = index.inventory_row(pos)
    body: dict[str, Any] = {
        "run_id": path.run_id,
        "server_id": path.server_id,
        "inventory": inventory,
        "risk": _server_rows(index, "risk", pos),
        "recommendation": (_server_rows(index, "recommendations", pos) or [None])[0],
        "backtest": _server_rows(index, "backtest", pos, BACKTEST_FIELDS),
        "forecast": _forecast(index, pos),
    }
    return _cacheable(_json(body), etag)


def _forecast(index: RunIndex, pos: int) -> dict[str, Any]:
    """The server's forecast per metric; empty when the run has no forecasts table."""
    if index.forecasts is None:
        return {}
    try:
        return index.forecasts.server(pos)
    except LookupError:
        return {}


def _server_rows(
    index: RunIndex, name: str, pos: int, fields: list[str] | None = None
) -> list[dict[str, Any]]:
    table = index.tables.get(name)
    if table is None:
        return []
    lo, hi = np.searchsorted(table.pos, [pos, pos + 1])
    cols = [f for f in (fields or table.fields) if f in table.fields]
    return table.rows(np.arange(lo, hi), cols)


# --------------------------------------------------------------------------- fleet summary


@api.get(
    "/runs/<run_id>/summary",
    tags=[runs_tag],
    responses={200: Summary},
    summary="Fleet summary under the filters: servers at risk, breaches due, actions, savings",
)
def get_summary(path: RunPath, query: SummaryQuery) -> Response:
    early = _json_run(path.run_id)
    if early is not None:
        return early
    index = _index(path.run_id)
    etag = _etag(index, JSON)
    hit = _not_modified(etag)
    if hit is not None:
        return hit
    mask = index.dim_mask(_dims(query))
    body: dict[str, Any] = {
        "run_id": path.run_id,
        "servers": int(mask.sum()),
        "servers_at_risk": {},
        "rows_at_risk": {},
        "breaching_within_days": {},
        "actions": {},
        "monthly_savings": 0.0,
        "held_back": {},
    }
    risk = index.tables.get("risk")
    if risk is not None:
        rows = mask[risk.pos]
        pos = risk.pos[rows]
        rank = (
            pd.Series(risk.column("severity")[rows])
            .map(SEVERITY_RANK)
            .fillna(SEVERITY_RANK["none"])
            .to_numpy(dtype=np.int64)
        )
        worst = np.full(index.n_servers, SEVERITY_RANK["none"], dtype=np.int64)
        np.minimum.at(worst, pos, rank)
        days = risk.numbers("days_to_breach")[rows]
        if risk.has("status"):
            days = np.where(risk.column("status")[rows] == "already_over", 0.0, days)
        soonest = np.full(index.n_servers, np.inf)
        np.minimum.at(soonest, pos, np.where(np.isfinite(days), days, np.inf))
        for i, sev in enumerate(SEVERITIES[:-1]):
            body["servers_at_risk"][sev] = int(((worst == i) & mask).sum())
            body["rows_at_risk"][sev] = int((rank == i).sum())
        body["breaching_within_days"] = {str(d): int(((soonest <= d) & mask).sum()) for d in BREACH_WINDOWS}
    recs = index.tables.get("recommendations")
    if recs is not None:
        rows = mask[recs.pos]
        actions = pd.Series(recs.column("action")[rows]).astype(str)
        body["actions"] = {str(k): int(v) for k, v in actions.value_counts().sort_index().items()}
        if recs.has("monthly_savings"):
            body["monthly_savings"] = round(
                float(np.nansum(np.clip(recs.numbers("monthly_savings")[rows], 0, None))), 2
            )
        held = pd.Series(recs.column("held_back")[rows]).astype(str)
        body["held_back"] = {str(k): int(v) for k, v in held[held != ""].value_counts().sort_index().items()}
    return _cacheable(_json(body), etag)
