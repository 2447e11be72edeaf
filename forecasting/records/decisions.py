"""Planner decisions on risk and recommendation rows, and run sign-off: an append-only record.

Why objects, not a table: decisions are written by people, a few at a time, from several web
instances and scripts at once. Each decision is one immutable JSON object,
``decisions/<time>-<uuid>.json``, created with the store's conditional create
(:meth:`CondIO.put_new`: ``If-None-Match: *`` on S3, ``link()`` on disk), so two writers never
touch the same object and no write can be lost or overwritten; nothing is ever edited or
deleted. A later decision on the same row supersedes an earlier one *when read*
(:func:`current_decisions`), so the history stays whole for audit.

Which row a decision is about (its *key*):

- a **risk** row: ``(server_id, metric)`` — carried forward to every later run with that server
  and metric at risk;
- a **recommendation** row: ``(server_id, action)`` — carried forward while later runs still
  recommend that action for the server (a decision to right-size says nothing about a later
  upgrade).

A decision applies to the run it was recorded on and to later runs (run ids sort by time), never
to earlier ones. A deferral is in effect until its date (inclusive); after it, the row counts as
undecided again and shows "deferral expired".

Sign-off: ``signoffs/<run_id>.json``, created once (a second sign-off is refused, naming the
first); the retention clean-up never removes a signed-off run (forecasting.records.retention).

Every decision and sign-off is also an audit event (forecasting.observability.audit).
"""

from __future__ import annotations

import json
import logging
import re
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import pyarrow.fs as pafs

from ..observability import audit
from ..sources.base import Store, StoreError, check_run_id
from ..sources.commit import PreconditionFailedError

log = logging.getLogger(__name__)

DECISIONS_DIR = "decisions"
SIGNOFFS_DIR = "signoffs"
KINDS = ("risk", "recommendation")
CHOICES = ("accepted", "deferred", "ordered", "rejected")
MAX_TEXT = 500
MAX_REFERENCE = 100
MAX_ID = 200
READ_THREADS = 16  # parallel GETs of new decision objects (S3: one request each)
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# the columns of read_decisions / current_decisions (stable for exports and the API)
DECISION_COLUMNS = [
    "id",
    "kind",
    "server_id",
    "subject",
    "decision",
    "until",
    "reference",
    "reason",
    "note",
    "user",
    "user_name",
    "at",
    "run_id",
    "source",
]


class DecisionError(ValueError):
    """A decision or sign-off that cannot be recorded as given; the message says which field and why."""


def _object_store(store: Store):
    from ..shards import object_store

    return object_store(store)


def _text(value: Any, field: str, limit: int, *, required: bool = False) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        if required:
            raise DecisionError(f"{field} is required")
        return None
    if not isinstance(value, str):
        raise DecisionError(f"{field} must be text")
    value = value.strip()
    if len(value) > limit:
        raise DecisionError(f"{field} is {len(value)} characters long; at most {limit}")
    if _CONTROL.search(value.replace("\n", " ")):
        raise DecisionError(f"{field} contains control characters")
    return value


def _date(value: Any, field: str) -> date:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            pass
    raise DecisionError(f"{field} must be a date (YYYY-MM-DD), got {str(value)[:40]!r}")


@dataclass(frozen=True)
class Decision:
    """One recorded decision (immutable; a later one on the same key supersedes it when read)."""

    id: str
    kind: str
    server_id: str
    subject: str  # the metric of a risk row, the recommended action of a recommendation row
    decision: str
    until: str | None  # deferred: the last day the deferral holds (ISO date)
    reference: str | None  # ordered: the purchase order / change ticket
    reason: str | None  # rejected: why (required); optional otherwise
    note: str | None
    user: str
    user_name: str
    at: str  # ISO 8601 UTC, seconds
    run_id: str
    source: str = "app"

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode()

    @classmethod
    def from_json(cls, data: bytes) -> Decision:
        raw = json.loads(data)
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        return cls(**{k: raw.get(k) for k in DECISION_COLUMNS})


def new_decision(
    *,
    kind: str,
    server_id: str,
    subject: str,
    decision: str,
    run_id: str,
    user: str,
    user_name: str | None = None,
    until: Any = None,
    reference: Any = None,
    reason: Any = None,
    note: Any = None,
    source: str = "app",
    now: datetime | None = None,
) -> Decision:
    """A validated decision, or DecisionError naming the field that is wrong.

    deferred needs ``until`` (a date after today); ordered needs ``reference``; rejected needs
    ``reason``. Free text is trimmed, bounded and free of control characters (it is shown in
    the app and written to exports)."""
    now = now or datetime.now(UTC)
    if kind not in KINDS:
        raise DecisionError(f"kind must be one of {', '.join(KINDS)}, got {str(kind)[:40]!r}")
    if decision not in CHOICES:
        raise DecisionError(f"decision must be one of {', '.join(CHOICES)}, got {str(decision)[:40]!r}")
    server_id = _text(server_id, "server", MAX_ID, required=True)
    subject = _text(subject, "metric" if kind == "risk" else "action", MAX_ID, required=True)
    user = _text(user, "user", MAX_ID, required=True)
    try:
        check_run_id(run_id)
    except StoreError as e:
        raise DecisionError(str(e)) from None
    until_s = reference_s = None
    if decision == "deferred":
        if until in (None, ""):
            raise DecisionError("a deferral needs the date it lasts until")
        d = _date(until, "until")
        if d <= now.date():
            raise DecisionError(
                f"a deferral must last until a future date; {d.isoformat()} is not after today"
            )
        until_s = d.isoformat()
    elif until not in (None, ""):
        raise DecisionError("only a deferral takes a date")
    if decision == "ordered":
        reference_s = _text(reference, "reference (order or ticket)", MAX_REFERENCE, required=True)
    reason_s = _text(reason, "reason", MAX_TEXT, required=decision == "rejected")
    return Decision(
        id=uuid.uuid4().hex,
        kind=kind,
        server_id=server_id,
        subject=subject,
        decision=decision,
        until=until_s,
        reference=reference_s,
        reason=reason_s,
        note=_text(note, "note", MAX_TEXT),
        user=user,
        user_name=_text(user_name, "user name", MAX_ID) or user,
        # microseconds: "the latest decision on a row wins" must hold for two within one second
        at=now.astimezone(UTC).isoformat(timespec="microseconds"),
        run_id=run_id,
        source=source,
    )


def _object_name(d: Decision) -> str:
    at = datetime.fromisoformat(d.at)
    return f"{at:%Y%m%dT%H%M%SZ}-{d.id}.json"


def record_decision(store: Store, decision: Decision) -> Decision:
    """Append ``decision`` to the store (a new immutable object; never overwrites) and audit it.

    The run it names must exist (a decision on a row the planner saw)."""
    ps = _object_store(store)
    store.read_manifest(decision.run_id)  # StoreError when the run does not exist
    path = ps._p(DECISIONS_DIR, _object_name(decision))
    try:
        ps.cond.put_new(path, decision.to_json())
    except PreconditionFailedError:  # a uuid4 clash: not in this universe, but never overwrite
        raise StoreError(f"decision object {path} already exists") from None
    audit(
        "decision",
        f"{decision.decision} {decision.kind} {decision.server_id}/{decision.subject}",
        decision_id=decision.id,
        kind=decision.kind,
        server_id=decision.server_id,
        subject=decision.subject,
        decision=decision.decision,
        until=decision.until,
        reference=decision.reference,
        reason=decision.reason,
        run_id=decision.run_id,
        decided_by=decision.user,
        source=decision.source,
    )
    return decision


def _list_names(ps: Any, folder: str) -> list[str]:
    root = ps._p(folder)
    try:
        infos = ps.fs.get_file_info(pafs.FileSelector(root, allow_not_found=True, recursive=False))
    except OSError as e:
        raise StoreError(f"cannot list {ps._display(root)}: {e}") from e
    return sorted(
        i.base_name
        for i in infos
        if i.type == pafs.FileType.File and i.base_name.endswith(".json") and not i.base_name.startswith(".")
    )


class DecisionLog:
    """All decisions of one store, read incrementally: one LIST, then a GET per *new* object
    (objects never change, so each is read once per process). Thread-safe."""

    def __init__(self, store: Store):
        self.store = store
        self._lock = threading.Lock()
        self._seen: dict[str, Decision | None] = {}

    def _fetch(self, ps: Any, name: str) -> Decision | None:
        try:
            got = ps.cond.get(ps._p(DECISIONS_DIR, name))
            if got is None:
                return None
            return Decision.from_json(got[0])
        except (ValueError, TypeError) as e:
            # an unreadable object is reported, never fatal: the others still count
            log.warning("decision object %s is unreadable (%s): skipped", name, e)
            return None

    def decisions(self) -> list[Decision]:
        ps = _object_store(self.store)
        names = _list_names(ps, DECISIONS_DIR)
        with self._lock:
            new = [n for n in names if n not in self._seen]
        if new:
            with ThreadPoolExecutor(min(READ_THREADS, len(new))) as pool:
                got = list(pool.map(lambda n: self._fetch(ps, n), new))
            with self._lock:
                self._seen.update(zip(new, got, strict=True))
        with self._lock:
            return [d for n in names if (d := self._seen.get(n)) is not None]

    def frame(self) -> pd.DataFrame:
        return decisions_frame(self.decisions())


def decisions_frame(decisions: Iterable[Decision]) -> pd.DataFrame:
    rows = [asdict(d) for d in decisions]
    return pd.DataFrame(rows, columns=DECISION_COLUMNS).astype(object)


def read_decisions(store: Store) -> pd.DataFrame:
    """Every decision recorded in the store, oldest first (DECISION_COLUMNS)."""
    return DecisionLog(store).frame().sort_values(["at", "id"], kind="stable").reset_index(drop=True)


def decision_label(decision: str, until: Any, reference: Any, reason: Any, as_of: date) -> str:
    """What a table shows for a decision, as of a day (an expired deferral says so)."""
    if decision == "accepted":
        return "Accepted"
    if decision == "deferred":
        if until and str(until) < as_of.isoformat():
            return f"Deferral expired {until}"
        return f"Deferred until {until}"
    if decision == "ordered":
        return f"Ordered ({reference})" if reference else "Ordered"
    if decision == "rejected":
        return f"Rejected: {reason}" if reason else "Rejected"
    return str(decision)


def current_decisions(
    decisions: pd.DataFrame, *, run_id: str | None = None, as_of: date | None = None
) -> pd.DataFrame:
    """The decision in force per row key (kind, server_id, subject) for a run, as of a day.

    The latest decision recorded on ``run_id`` or an earlier run wins (carried forward); one
    recorded on a later run is not shown on an earlier one. ``in_effect`` is False for a deferral
    whose date has passed (the row counts as undecided again); ``label`` is what tables show.
    """
    as_of = as_of or datetime.now(UTC).date()
    cols = [*DECISION_COLUMNS, "in_effect", "label"]
    if decisions is None or decisions.empty:
        return pd.DataFrame(columns=cols)
    d = decisions
    if run_id is not None:
        d = d[d["run_id"].astype(str) <= run_id]
    if d.empty:
        return pd.DataFrame(columns=cols)
    d = d.sort_values(["at", "id"], kind="stable").drop_duplicates(
        ["kind", "server_id", "subject"], keep="last"
    )
    today = as_of.isoformat()
    in_effect = ~((d["decision"] == "deferred") & (d["until"].astype(str) < today))
    labels = [
        decision_label(r.decision, r.until, r.reference, r.reason, as_of)
        for r in d[["decision", "until", "reference", "reason"]].itertuples(index=False)
    ]
    return d.assign(in_effect=in_effect.to_numpy(), label=labels).reset_index(drop=True)[cols]


def attach_decisions(
    rows: pd.DataFrame, current: pd.DataFrame, kind: str, *, subject: str = "metric"
) -> pd.DataFrame:
    """``rows`` (risk rows keyed by server_id + metric, or recommendation rows keyed by
    server_id + action: pass ``subject="action"``) with the decision columns added:
    ``decision`` (the label, "" when none), ``decision_by``, ``decision_at``, ``decided``
    (a decision in effect)."""
    out = rows.copy()
    cur = current[current["kind"] == kind] if current is not None and not current.empty else None
    if cur is None or cur.empty or out.empty:
        out["decision"] = ""
        out["decision_by"] = ""
        out["decision_at"] = ""
        out["decided"] = False
        return out
    key = out["server_id"].astype(str) + "\x1f" + out[subject].astype(str)
    ckey = cur["server_id"].astype(str) + "\x1f" + cur["subject"].astype(str)
    lookup = cur.assign(_k=ckey.to_numpy()).set_index("_k")
    out["decision"] = key.map(lookup["label"]).fillna("").to_numpy()
    out["decision_by"] = key.map(lookup["user_name"]).fillna("").to_numpy()
    out["decision_at"] = (
        key.map(lookup["at"]).fillna("").astype(str).str[:16].str.replace("T", " ").to_numpy()
    )
    out["decided"] = key.map(lookup["in_effect"]).fillna(False).astype(bool).to_numpy()
    return out


def undecided_count(risk_rows: pd.DataFrame, current: pd.DataFrame) -> int:
    """Risk rows at risk (severity other than none) without a decision in effect."""
    if risk_rows is None or risk_rows.empty:
        return 0
    at_risk = risk_rows[risk_rows["severity"].astype(str) != "none"]
    return int((~attach_decisions(at_risk, current, "risk")["decided"]).sum())


# --------------------------------------------------------------------------- sign-off


def _signoff_path(ps: Any, run_id: str) -> str:
    return ps._p(SIGNOFFS_DIR, f"{check_run_id(run_id)}.json")


def sign_off(
    store: Store,
    run_id: str,
    *,
    user: str,
    user_name: str | None = None,
    note: Any = None,
    source: str = "app",
    now: datetime | None = None,
) -> dict:
    """Sign a run off (who, when, a note): created once; a second sign-off is refused naming the
    first. The run must exist; afterwards clean-up keeps it for ever."""
    try:
        check_run_id(run_id)
    except StoreError as e:
        raise DecisionError(str(e)) from None
    user = _text(user, "user", MAX_ID, required=True)
    rec = {
        "run_id": run_id,
        "user": user,
        "user_name": _text(user_name, "user name", MAX_ID) or user,
        "at": (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="seconds"),
        "note": _text(note, "note", MAX_TEXT),
        "source": source,
    }
    ps = _object_store(store)
    store.read_manifest(run_id)  # StoreError when the run does not exist
    try:
        ps.cond.put_new(_signoff_path(ps, run_id), json.dumps(rec, sort_keys=True).encode())
    except PreconditionFailedError:
        first = read_signoff(store, run_id) or {}
        raise DecisionError(
            f"run {run_id} is already signed off by {first.get('user_name', '?')} at {first.get('at', '?')}"
        ) from None
    # the clean-up may have removed the run between the check and the write: say so, and take
    # the sign-off back so it names no missing run (retention re-checks sign-offs after it
    # hides a run, so one of the two always sees the other)
    try:
        store.read_manifest(run_id)
    except StoreError:
        delete_if_present(ps, _signoff_path(ps, run_id))
        raise
    audit(
        "sign-off", f"signed off run {run_id}", run_id=run_id, note=rec["note"], signed_by=user, source=source
    )
    return rec


def delete_if_present(ps: Any, path: str) -> None:
    """Delete one object of the store; one already gone is not an error (a retried clean-up)."""
    try:
        ps.fs.delete_file(path)
    except OSError as e:
        if not isinstance(e, FileNotFoundError):
            raise StoreError(f"cannot delete {ps._display(path)}: {e}") from e


def read_signoff(store: Store, run_id: str) -> dict | None:
    """The sign-off of a run, or None."""
    ps = _object_store(store)
    got = ps.cond.get(_signoff_path(ps, run_id))
    if got is None:
        return None
    try:
        rec = json.loads(got[0])
    except ValueError:
        log.warning("sign-off of run %s is unreadable: treated as signed off", run_id)
        return {"run_id": run_id, "user_name": "?", "at": "?"}
    return rec if isinstance(rec, dict) else {"run_id": run_id}


def signed_off_runs(store: Store) -> set[str]:
    """Ids of every signed-off run (one LIST)."""
    ps = _object_store(store)
    return {n.removesuffix(".json") for n in _list_names(ps, SIGNOFFS_DIR)}


def check_row(store: Store, run_id: str, kind: str, server_id: str, subject: str) -> None:
    """DecisionError unless run ``run_id`` has that row (a decision is on a row a planner saw)."""
    table = "risk" if kind == "risk" else "recommendations"
    frame = store.read_run_table(run_id, table, server_ids=[server_id])
    if frame is None:
        raise DecisionError(f"run {run_id} has no {table} table")
    col = "metric" if kind == "risk" else "action"
    if not (frame[col].astype(str) == subject).any():
        have = sorted(frame[col].astype(str).unique())
        what = f"{server_id} has {', '.join(have)}" if have else f"no row for server {server_id}"
        raise DecisionError(f"run {run_id} has no {kind} row {server_id}/{subject} ({what})")
