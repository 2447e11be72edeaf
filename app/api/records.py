"""Plans as records over ``/api/v1``: what changed between two runs, how right past runs were,
and the planners' decisions and sign-offs (forecasting/records/).

Same rules as :mod:`app.api.routes`: the same sign-in, problem details, ``latest`` redirect,
cursor paging and CSV. What may be cached follows what can change: a comparison of two given
runs never changes (immutable, strong ETag); a track record gains newer records as actuals
arrive, and decisions are appended at any time (``private, no-cache`` with an ETag: clients
revalidate). Writing needs the ``decide`` permission (planner or admin); every decision and
sign-off is the audit event forecasting/records/decisions.py writes, beside the API's own
``api`` line for the call.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import asdict
from typing import Any
from urllib.parse import urlencode

import numpy as np
import pandas as pd
from flask import Response, current_app, g, redirect, request
from flask_openapi3 import Tag
from pydantic import BaseModel, Field

from app.auth import forbidden_message
from app.filters import _clean_values
from forecasting.exports import csv_bytes
from forecasting.observability import audit
from forecasting.records import RecordsError
from forecasting.records.decisions import (
    DECISION_COLUMNS,
    DecisionError,
    check_row,
    current_decisions,
    new_decision,
    read_signoff,
    record_decision,
    sign_off,
)
from forecasting.records.diff import RunDiff, changes_frame, diff_runs, to_json
from forecasting.records.track import SERIES_COLUMNS, load_series, load_summaries, load_summary
from forecasting.sources import StoreError

from .index import ApiInputError, UnknownRunError, inventory_fingerprint
from .models import (
    Changes,
    ChangesQuery,
    DecisionBody,
    DecisionPage,
    DecisionRecord,
    DecisionsQuery,
    RunPath,
    SignOff,
    SignOffBody,
    TrackRecordList,
    TrackRecordPage,
    TrackRecordQuery,
)
from .problems import problem
from .routes import (
    CSV,
    JSON,
    PREFIX,
    REVALIDATE,
    _cacheable,
    _json_run,
    _latest,
    _not_modified,
    _split,
    _wants,
    api,
    cache,
)

log = logging.getLogger(__name__)

records_tag = Tag(name="records", description="what changed between runs, and how right past runs were")
decisions_tag = Tag(name="decisions", description="planners' decisions on rows, and run sign-off")
CHANGES_VERSION = "1"  # part of the ETag: bump when the representation changes
MAX_DIFFS = 8  # comparisons kept per process
MAX_SERIES = 4  # track-record series tables kept per process


class DecisionPath(BaseModel):
    decision_id: str = Field(..., max_length=64, description="a decision's id (from POST /decisions)")


# --------------------------------------------------------------------------- helpers


class _Lru:
    """A few computed answers per process, by key (thread-safe)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Any, Any] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Any) -> Any:
        with self._lock:
            hit = self._items.get(key)
            if hit is not None:
                self._items.move_to_end(key)
            return hit

    def put(self, key: Any, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)


_DIFFS = _Lru(MAX_DIFFS)
_SERIES = _Lru(MAX_SERIES)


def _plain(v: Any) -> Any:
    """json.dumps' fallback for numpy and pandas scalars."""
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.floating):
        return None if not np.isfinite(v) else float(v)
    if isinstance(v, np.bool_):
        return bool(v)
    if isinstance(v, pd.Timestamp):
        return v.isoformat()
    return str(v)


def _dumps(body: Any) -> str:
    return json.dumps(_finite(body), default=_plain, allow_nan=False)


def _finite(v: Any) -> Any:
    """NaN and infinities (and pandas' missing values) as null, recursively."""
    if isinstance(v, dict):
        return {str(k): _finite(x) for k, x in v.items()}
    if isinstance(v, list | tuple):
        return [_finite(x) for x in v]
    if isinstance(v, float | np.floating):
        return float(v) if np.isfinite(v) else None
    if v is pd.NA or v is pd.NaT:
        return None
    return v


def _answer(body: Any, status: int = 200) -> Response:
    return Response(_dumps(body), status=status, content_type=JSON)


def _redirect_param(name: str, value: str) -> Response:
    """307 to the same URL with query parameter ``name`` set to ``value`` (a concrete run id)."""
    args = [(k, value if k == name else v) for k, vs in request.args.lists() for v in vs]
    resp = redirect(f"{request.path}?{urlencode(args)}", code=307)
    resp.headers["Cache-Control"] = "no-store"
    return resp


def _known_run(run_id: str, param: str) -> Response | None:
    """None when ``run_id`` is a published run; else the 404 problem naming the parameter."""
    try:
        cache().manifest(run_id)
    except UnknownRunError:
        return problem(404, f"no published run {run_id[:80]!r} (`{param}`): see {PREFIX}/runs", param=param)
    return None


def _revalidate(resp: Response, etag: str) -> Response:
    resp.set_etag(etag)
    resp.headers["Cache-Control"] = REVALIDATE
    resp.headers["Vary"] = "Accept, Authorization"
    return resp.make_conditional(request)


def _etag(*parts: Any) -> str:
    args = sorted((k, v) for k, vs in request.args.lists() for v in vs if k != "cursor")
    raw = json.dumps([*parts, request.path, args, request.args.get("cursor")], default=str)
    return hashlib.sha256(raw.encode()).hexdigest()[:40]


def _may_decide() -> Response | None:
    """None when the caller may record decisions; else the 403 problem (and the app's
    ``access-denied`` audit event, as the pages write it)."""
    user = g.get("capfc_user")
    if user is not None and user.can("decide"):
        return None
    told = (
        forbidden_message(user, "decide")
        if user is not None
        else "recording decisions needs the planner role"
    )
    audit("access-denied", told, permission="decide", role=getattr(user, "role", None))
    return problem(403, told)


def _decision_field(message: str) -> str:
    """Which body field a DecisionError is about (its message starts with it, or says it)."""
    m = message.lower()
    for prefix, field in (
        ("kind", "kind"),
        ("decision", "decision"),
        ("server", "server_id"),
        ("metric", "subject"),
        ("action", "subject"),
        ("until", "until"),
        ("a deferral", "until"),
        ("only a deferral", "until"),
        ("reference", "reference"),
        ("reason", "reason"),
        ("note", "note"),
        ("user", "user"),
    ):
        if m.startswith(prefix):
            return field
    if "is not a run id" in m or "run id" in m:
        return "run_id"
    return "body"


def _decision_problem(e: DecisionError, field: str | None = None) -> Response:
    text = str(e)
    return problem(
        422,
        text,
        title="Decision not recorded",
        param=field or _decision_field(text),
    )


def _store_problem(what: str, e: Exception) -> Response:
    log.warning("%s: store error: %s", what, e)
    return problem(
        503, f"{what}: the plan store could not be written or read; nothing was recorded, try again"
    )


def _decisions_cache() -> Any:
    from app.decisions import decisions_of

    return decisions_of(current_app.extensions["capfc"].readmodel)


# --------------------------------------------------------------------------- changes


@api.get(
    "/runs/<run_id>/changes",
    tags=[records_tag],
    responses={200: Changes},
    summary="What changed since an earlier run: totals, new/resolved risks, moved breaches and why, "
    "changed recommendations (JSON, or CSV: one row per change)",
)
def get_changes(path: RunPath, query: ChangesQuery) -> Response:
    moved = _latest(path.run_id)
    if moved is not None:
        return moved
    run_b = path.run_id
    if query.since == "latest":
        latest = cache().store.latest_run_id()
        if latest is None:
            return problem(404, "no run has been published yet")
        return _redirect_param("since", latest)
    media = _wants((JSON, CSV))
    if media is None:
        return problem(406, "the changes are served as application/json or text/csv")
    cache().manifest(run_b)  # 404 when unknown
    store = cache().store
    if query.since is not None:
        if query.since == run_b:
            return problem(
                400,
                f"`since` is run {run_b} itself: compare two different runs",
                title="Bad since",
                param="since",
            )
        bad = _known_run(query.since, "since")
        if bad is not None:
            return bad
        run_a = query.since
    else:
        earlier = [r for r in store.list_runs() if r < run_b]
        if not earlier:
            return problem(
                404,
                f"run {run_b} is the first published run: there is no run before it to compare with "
                "(give `since=<run id>`)",
                param="since",
            )
        run_a = earlier[-1]
    bus = tuple(sorted(_clean_values(query.bu)))
    # the business units come from today's inventory: it is part of what the answer is made from
    inventory = store.read_inventory()
    cols = [c for c in ("server_id", "business_unit") if c in inventory]
    fingerprint = inventory_fingerprint(inventory[cols])
    etag = _etag(CHANGES_VERSION, run_a, run_b, bus, media, fingerprint)
    hit = _not_modified(etag)
    if hit is not None:
        if query.since is None:
            hit.headers["Cache-Control"] = REVALIDATE
        return hit
    key = (store.uri, run_a, run_b, bus, fingerprint)
    diff: RunDiff | None = _DIFFS.get(key)
    if diff is None:
        try:
            diff = diff_runs(store, run_a, run_b, business_units=list(bus) or None)
        except RecordsError as e:
            param = "bu" if "business unit" in str(e) else "since"
            return problem(400, str(e), title=f"Bad {param}", param=param)
        _DIFFS.put(key, diff)
    if media == CSV:
        resp = Response(csv_bytes(changes_frame(diff)), content_type="text/csv; charset=utf-8")
    else:
        resp = _answer(to_json(diff))
    resp.headers["X-Capfc-Since"] = run_a
    resp = _cacheable(resp, etag)
    if query.since is None:  # "the run before" is resolved now: revalidate
        resp.headers["Cache-Control"] = REVALIDATE
    return resp


# --------------------------------------------------------------------------- track record


def _series(store: Any, run_id: str, record: str) -> pd.DataFrame:
    key = (store.uri, run_id, record)
    hit = _SERIES.get(key)
    if hit is None:
        frame = load_series(store, run_id)
        if frame is None:
            frame = pd.DataFrame(columns=SERIES_COLUMNS)
        hit = frame.sort_values(["server_id", "metric"], kind="stable", ignore_index=True)
        _SERIES.put(key, hit)
    return hit


def _series_cursor(run_id: str, record: str, digest: str, offset: int) -> str:
    raw = json.dumps(
        {"r": run_id, "t": f"track-record:{record}", "q": digest, "o": offset}, separators=(",", ":")
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode(cursor: str) -> dict[str, Any]:
    bad = ApiInputError("Bad cursor", "the cursor is not one this API issued", param="cursor")
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(data, dict):
        raise bad
    return data


@api.get(
    "/runs/<run_id>/track-record",
    tags=[records_tag],
    responses={200: TrackRecordPage},
    summary="How right the run was: the saved track-record summary and its per-series rows (paged)",
)
def get_track_record(path: RunPath, query: TrackRecordQuery) -> Response:
    moved = _latest(path.run_id)
    if moved is not None:
        return moved
    media = _wants((JSON, CSV))
    if media is None:
        return problem(406, "the track record is served as application/json or text/csv")
    run_id = path.run_id
    manifest = cache().manifest(run_id)
    store = cache().store
    try:
        summary = load_summary(store, run_id)
    except StoreError as e:
        log.warning("track record of run %s unreadable: %s", run_id, e)
        return problem(503, f"the track record of run {run_id} could not be read; try again")
    if summary is None:
        origin = str(manifest.get("forecast_origin") or "?")[:10]
        return problem(
            404,
            f"run {run_id} has no track record yet. A track record measures a run against the actuals "
            f"that arrived after its forecast origin ({origin}); create it with "
            f"`python -m forecasting track-record {run_id}` once such data is in the store "
            "(the scheduled job does it for every run).",
            title="No track record yet",
        )
    record = str(summary.get("record") or "")
    fields = _split(query.fields, SERIES_COLUMNS, "fields") or SERIES_COLUMNS
    etag = _etag(record, media)
    hit = _not_modified(etag)
    if hit is not None:
        hit.headers["Cache-Control"] = REVALIDATE
        return hit
    series = _series(store, run_id, record)
    mask = np.ones(len(series), dtype=bool)
    bus = _clean_values(query.bu)
    if bus:
        mask &= series["business_unit"].astype(str).isin(bus).to_numpy()
    if query.outcome:
        mask &= series["outcome"].astype(str).isin(list(query.outcome)).to_numpy()
    chosen = series[mask]
    digest = hashlib.sha256(json.dumps([sorted(bus), sorted(query.outcome)]).encode()).hexdigest()[:16]
    offset = 0
    if query.cursor:
        data = _decode(query.cursor)
        o = data.get("o")
        if not isinstance(o, int) or isinstance(o, bool) or o < 0:
            raise ApiInputError("Bad cursor", "the cursor is not one this API issued", param="cursor")
        if data.get("r") != run_id or data.get("t") != f"track-record:{record}":
            raise ApiInputError(
                "Bad cursor",
                "the cursor belongs to another run or record (a newer record was saved): start again "
                "without a cursor",
                param="cursor",
            )
        if data.get("q") != digest:
            raise ApiInputError(
                "Bad cursor",
                "the cursor belongs to another query (filters changed): start again without a cursor",
                param="cursor",
            )
        offset = o
    total = len(chosen)
    page = chosen.iloc[offset : offset + query.limit][[f for f in fields if f in chosen]]
    next_url = None
    if query.limit and offset + query.limit < total:
        args = [(k, v) for k, vs in request.args.lists() if k != "cursor" for v in vs]
        args.append(("cursor", _series_cursor(run_id, record, digest, offset + query.limit)))
        next_url = f"{request.path}?{urlencode(args)}"
    if media == CSV:
        resp = Response(csv_bytes(page), content_type="text/csv; charset=utf-8")
    else:
        items = _rows(page)
        resp = _answer(
            {
                "run_id": run_id,
                "record": record,
                "summary": summary,
                "total": total,
                "limit": query.limit,
                "next": next_url,
                "items": items,
            }
        )
    resp.headers["X-Total-Count"] = str(total)
    if next_url:
        resp.headers["Link"] = f'<{next_url}>; rel="next"'
    resp.set_etag(etag)
    resp.headers["Cache-Control"] = REVALIDATE
    resp.headers["Vary"] = "Accept, Authorization"
    return resp


def _rows(frame: pd.DataFrame) -> list[dict[str, Any]]:
    out = frame.copy()
    for col in out.columns:
        if pd.api.types.is_datetime64_any_dtype(out[col]):
            out[col] = out[col].dt.strftime("%Y-%m-%d")
    out = out.astype(object).where(out.notna(), None)
    return _finite(out.to_dict("records"))


@api.get(
    "/track-record",
    tags=[records_tag],
    responses={200: TrackRecordList},
    summary="The track-record summary of every run that has one, oldest first (coverage over time)",
)
def list_track_records() -> Response:
    if _wants() is None:
        return problem(406, "served as application/json")
    try:
        items = load_summaries(cache().store)
    except StoreError as e:
        log.warning("track records unreadable: %s", e)
        return problem(503, "the track records could not be read; try again")
    body = _dumps({"items": items})
    resp = Response(body, content_type=JSON)
    return _revalidate(resp, hashlib.sha256(body.encode()).hexdigest()[:40])


# --------------------------------------------------------------------------- decisions


def _record(row: dict[str, Any]) -> dict[str, Any]:
    out = {}
    for k, v in row.items():
        if v is None or (isinstance(v, float) and not np.isfinite(v)) or v is pd.NA:
            out[k] = None
        elif isinstance(v, np.bool_ | bool):
            out[k] = bool(v)
        else:
            out[k] = v
    return out


def _keyset(kind: str, server: str, subject: str) -> str:
    return "\x1f".join((kind, server, subject))


@api.get(
    "/decisions",
    tags=[decisions_tag],
    responses={200: DecisionPage},
    summary="The decisions in force for a run (carried forward from earlier runs), paged",
)
def list_decisions(query: DecisionsQuery) -> Response:
    if query.run == "latest":
        latest = cache().store.latest_run_id()
        if latest is None:
            return problem(404, "no run has been published yet")
        return _redirect_param("run", latest) if "run" in request.args else _redirect_add_run(latest)
    if _wants() is None:
        return problem(406, "served as application/json")
    bad = _known_run(query.run, "run")
    if bad is not None:
        return bad
    try:
        frame = _decisions_cache().all()
    except (StoreError, OSError) as e:
        return _store_problem("the decisions could not be read", e)
    current = current_decisions(frame, run_id=query.run)
    if query.kind:
        current = current[current["kind"] == query.kind]
    if query.server:
        current = current[current["server_id"].astype(str) == query.server]
    keys = (
        current["kind"].astype(str)
        + "\x1f"
        + current["server_id"].astype(str)
        + "\x1f"
        + current["subject"].astype(str)
    )
    current = current.assign(_key=keys.to_numpy()).sort_values("_key", kind="stable")
    digest = hashlib.sha256(json.dumps([query.kind, query.server]).encode()).hexdigest()[:16]
    after = None
    if query.cursor:
        data = _decode(query.cursor)
        if data.get("r") != query.run or data.get("t") != "decisions":
            raise ApiInputError(
                "Bad cursor",
                "the cursor belongs to another run or list: page with the `next` link",
                param="cursor",
            )
        if data.get("q") != digest or not isinstance(data.get("k"), str):
            raise ApiInputError(
                "Bad cursor",
                "the cursor belongs to another query (filters changed): start again without a cursor",
                param="cursor",
            )
        after = data["k"]
    total = len(current)
    rest = current[current["_key"] > after] if after is not None else current
    page = rest.iloc[: query.limit]
    next_url = None
    if len(rest) > query.limit:
        raw = json.dumps(
            {"r": query.run, "t": "decisions", "q": digest, "k": str(page["_key"].iloc[-1])},
            separators=(",", ":"),
        )
        cursor = base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")
        args = [(k, v) for k, vs in request.args.lists() if k != "cursor" for v in vs]
        args.append(("cursor", cursor))
        next_url = f"{request.path}?{urlencode(args)}"
    items = [_record(r) for r in page.drop(columns="_key").astype(object).to_dict("records")]
    body = _dumps(
        {"run_id": query.run, "total": total, "limit": query.limit, "next": next_url, "items": items}
    )
    resp = Response(body, content_type=JSON)
    resp.headers["X-Total-Count"] = str(total)
    if next_url:
        resp.headers["Link"] = f'<{next_url}>; rel="next"'
    return _revalidate(resp, hashlib.sha256(body.encode()).hexdigest()[:40])


def _redirect_add_run(run_id: str) -> Response:
    args = [*((k, v) for k, vs in request.args.lists() for v in vs), ("run", run_id)]
    resp = redirect(f"{request.path}?{urlencode(args)}", code=307)
    resp.headers["Cache-Control"] = "no-store"
    return resp


@api.get(
    "/decisions/<decision_id>",
    tags=[decisions_tag],
    responses={200: DecisionRecord},
    summary="One recorded decision (decisions are never edited: a later one supersedes it)",
)
def get_decision(path: DecisionPath) -> Response:
    if _wants() is None:
        return problem(406, "served as application/json")
    try:
        frame = _decisions_cache().all()
    except (StoreError, OSError) as e:
        return _store_problem("the decisions could not be read", e)
    hit = frame[frame["id"].astype(str) == path.decision_id]
    if hit.empty:
        return problem(404, f"no decision {path.decision_id[:64]!r}")
    body = _record(hit.iloc[-1][DECISION_COLUMNS].to_dict())
    resp = _answer(body)
    return _cacheable(resp, hashlib.sha256(f"decision|{path.decision_id}".encode()).hexdigest()[:40])


@api.post(
    "/decisions",
    tags=[decisions_tag],
    responses={201: DecisionRecord},
    summary="Record a decision on a risk or recommendation row of a run (planner or admin)",
)
def post_decision(body: DecisionBody) -> Response:
    refused = _may_decide()
    if refused is not None:
        return refused
    user = g.capfc_user
    try:
        cache().manifest(body.run_id)
    except UnknownRunError:
        return problem(
            422,
            f"no published run {body.run_id[:80]!r}: a decision is on a row of a published run (see {PREFIX}/runs)",
            title="Decision not recorded",
            param="run_id",
        )
    store = cache().store
    try:
        decision = new_decision(
            kind=body.kind,
            server_id=body.server_id,
            subject=body.subject,
            decision=body.decision,
            run_id=body.run_id,
            user=user.id,
            user_name=user.name,
            until=body.until,
            reference=body.reference,
            reason=body.reason,
            note=body.note,
            source="api",
        )
    except DecisionError as e:
        return _decision_problem(e)
    try:
        check_row(store, decision.run_id, decision.kind, decision.server_id, decision.subject)
    except DecisionError as e:
        return _decision_problem(e, "server_id" if "no row for server" in str(e) else "subject")
    except StoreError as e:
        return _store_problem("the decision could not be checked", e)
    try:
        record_decision(store, decision)  # writes the `decision` audit event
    except StoreError as e:
        return _store_problem("the decision could not be saved", e)
    _decisions_cache().invalidate()
    resp = _answer(asdict(decision), status=201)
    resp.headers["Location"] = f"{PREFIX}/decisions/{decision.id}"
    resp.headers["Cache-Control"] = "no-store"
    return resp


# --------------------------------------------------------------------------- sign-off


def _signoff_body(run_id: str, rec: dict | None) -> dict[str, Any]:
    if rec is None:
        return {"run_id": run_id, "signed_off": False}
    keep = ("user", "user_name", "at", "note", "source")
    return {"run_id": run_id, "signed_off": True, **{k: rec.get(k) for k in keep}}


@api.get(
    "/runs/<run_id>/sign-off",
    tags=[decisions_tag],
    responses={200: SignOff},
    summary="Whether the run is signed off, by whom and when",
)
def get_signoff(path: RunPath) -> Response:
    early = _json_run(path.run_id)
    if early is not None:
        return early
    cache().manifest(path.run_id)
    try:
        rec = read_signoff(cache().store, path.run_id)
    except (StoreError, OSError) as e:
        return _store_problem("the sign-off could not be read", e)
    body = _dumps(_signoff_body(path.run_id, rec))
    resp = Response(body, content_type=JSON)
    if rec is not None:  # a sign-off is created once and never changes
        return _cacheable(resp, hashlib.sha256(body.encode()).hexdigest()[:40])
    return _revalidate(resp, hashlib.sha256(body.encode()).hexdigest()[:40])


@api.post(
    "/runs/<run_id>/sign-off",
    tags=[decisions_tag],
    responses={201: SignOff},
    summary="Sign the run off (planner or admin; once per run)",
)
def post_signoff(path: RunPath, body: SignOffBody) -> Response:
    moved = _latest(path.run_id)
    if moved is not None:
        return moved
    refused = _may_decide()
    if refused is not None:
        return refused
    user = g.capfc_user
    cache().manifest(path.run_id)
    store = cache().store
    try:
        rec = sign_off(store, path.run_id, user=user.id, user_name=user.name, note=body.note, source="api")
    except DecisionError as e:
        first = read_signoff(store, path.run_id)
        if first is not None:
            return problem(
                409,
                f"run {path.run_id} is already signed off by {first.get('user_name', '?')} at "
                f"{first.get('at', '?')}; a sign-off is made once",
                title="Already signed off",
            )
        return _decision_problem(e)
    except StoreError as e:
        return _store_problem("the sign-off could not be saved", e)
    _decisions_cache().invalidate()
    resp = _answer(_signoff_body(path.run_id, rec), status=201)
    resp.headers["Location"] = f"{PREFIX}/runs/{path.run_id}/sign-off"
    resp.headers["Cache-Control"] = "no-store"
    return resp
