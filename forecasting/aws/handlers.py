"""AWS Lambda handlers: ``trigger`` (S3 event or schedule), and ``plan``/``shard``/``publish``
(the Step Functions tasks). Plain ``(event, context) -> dict`` functions; with awslambdaric the
image runs ``python -m awslambdaric forecasting.aws.handlers.trigger`` (etc.).

**Events the trigger accepts** (tests/data/events/ holds recorded samples):

- S3 "Object Created" through EventBridge (the bucket has EventBridge notifications on)::

    {"version": "0", "detail-type": "Object Created", "source": "aws.s3", "time": "…Z",
     "resources": ["arn:aws:s3:::bucket"], "detail": {"bucket": {"name": "bucket"},
     "object": {"key": "…", "size": 123, "etag": "…", "sequencer": "…"}, "reason": "PutObject", …}}

  A key outside the trigger prefix (``trigger_prefix``, default ``<store prefix>/metrics/``)
  or in another bucket is ignored (logged, ``{"status": "ignored"}``), never run; so are folder
  markers (keys ending in ``/``, which pyarrow writes) and temporary names (``.tmp-…``).
- An EventBridge Scheduler invocation with the target input this project configures::

    {"trigger": "schedule", "schedule": "<aws.scheduler.schedule-arn>",
     "scheduled_time": "<aws.scheduler.scheduled-time>", "execution_id": "<aws.scheduler.execution-id>"}

  and, for a classic EventBridge rule on a cron, the "Scheduled Event" shape
  (``"detail-type": "Scheduled Event", "source": "aws.events"``).

Anything else raises :class:`EventError` naming what was received (the Lambda's Errors metric
and its on-failure destination see it); S3 notifications sent directly (``{"Records": […]}``)
get a message saying to route them through EventBridge.

**Idempotency.** S3 delivers events at least once and not in order. A run is keyed by the input
it reads: :func:`forecasting.shards.snapshot_input` hashes the keys, sizes and modification
times of ``inventory/``, ``metrics/`` and ``store.json``; the key goes into the run's manifest
and its id. An event whose object the latest run already read (that version or a newer one)
is *stale* and does nothing; an event that finds the same input key as the latest run is a
*duplicate* and returns that run; large fleets start the state machine with the execution name
``capfc-<input key>``, so a duplicate start is ``ExecutionAlreadyExists``, which counts as
success (a failed execution of that input is started again under ``-r<n>``). Run the trigger
function with reserved concurrency 1 so two deliveries of one event cannot run side by side.

**Outputs never land under the trigger prefix**: a configuration where ``runs/`` would is refused
before anything is read (:func:`trigger_prefix`).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from ..batch import run_batch
from ..observability import bind_context, lambda_entry
from ..settings import Settings, SettingsError, load_settings
from ..shards import (
    abandon_run,
    calibrate_shards,
    object_store,
    plan_shards,
    publish_shards,
    run_id_for,
    run_shard,
    snapshot_input,
)
from ..sources import Store, StoreError, open_store

log = logging.getLogger(__name__)

SAME_VERSION_SECONDS = 2  # S3 event time vs the object's Last-Modified, for one and the same PUT
EXECUTION_RETRIES = 5  # re-starts of a failed execution of one input before giving up


class EventError(ValueError):
    """An event the trigger does not handle; the message says what arrived and what is accepted."""


@dataclass(frozen=True)
class TriggerEvent:
    """What started a run, from any of the accepted event shapes."""

    kind: str  # "s3" | "schedule"
    time: datetime | None = None
    bucket: str | None = None
    key: str | None = None
    size: int | None = None
    etag: str | None = None
    event_id: str | None = None
    source: str = ""  # the shape it came in: eventbridge-s3, scheduler, scheduled-event


def _time(value: Any) -> datetime | None:
    if not value or not isinstance(value, str) or value.startswith("<aws."):
        return None
    try:
        t = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise EventError(f"event time {value!r} is not an ISO 8601 timestamp") from None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def parse_event(event: Any) -> TriggerEvent:
    """The trigger's view of an event, or EventError for anything it does not handle."""
    if not isinstance(event, dict):
        raise EventError(f"expected a JSON object event, got {type(event).__name__}")
    if event.get("trigger") == "schedule":
        return TriggerEvent(
            "schedule",
            _time(event.get("scheduled_time")),
            event_id=event.get("execution_id"),
            source="scheduler",
        )
    source, kind = event.get("source"), event.get("detail-type")
    if source == "aws.events" and kind == "Scheduled Event":
        return TriggerEvent(
            "schedule", _time(event.get("time")), event_id=event.get("id"), source="scheduled-event"
        )
    if source == "aws.s3" and kind == "Object Created":
        detail = event.get("detail")
        bucket = (detail or {}).get("bucket", {}).get("name") if isinstance(detail, dict) else None
        obj = (detail or {}).get("object") if isinstance(detail, dict) else None
        if not bucket or not isinstance(obj, dict) or not obj.get("key"):
            raise EventError("S3 'Object Created' event without detail.bucket.name and detail.object.key")
        size = obj.get("size")
        return TriggerEvent(
            "s3",
            _time(event.get("time")),
            bucket=str(bucket),
            key=str(obj["key"]),
            size=int(size) if size is not None else None,
            etag=obj.get("etag"),
            event_id=event.get("id"),
            source="eventbridge-s3",
        )
    if "Records" in event:
        raise EventError(
            "got an S3 event notification (Records[]) sent directly: turn on EventBridge notifications "
            "for the bucket and route 'Object Created' events through an EventBridge rule instead"
        )
    what = f"source={source!r}, detail-type={kind!r}" if source or kind else f"keys {sorted(event)[:8]}"
    raise EventError(
        f"unsupported event ({what}): the trigger accepts an S3 'Object Created' event through "
        'EventBridge, an EventBridge Scheduler input {"trigger": "schedule"}, or a \'Scheduled Event\''
    )


# --------------------------------------------------------------------------- configuration


def _location(store: Store):
    """(bucket, root prefix) of an S3-backed store, or None for a local one."""
    loc = getattr(object_store(store), "location", None)
    return (loc.bucket, loc.prefix) if loc is not None else None


def trigger_prefix(settings: Settings, store: Store) -> str:
    """The S3 key prefix whose new objects start a run; refused if runs/ would land under it."""
    loc = _location(store)
    root = loc[1] if loc else ""
    runs = f"{root}/runs/" if root else "runs/"
    prefix = settings.trigger_prefix
    if prefix is None:
        prefix = f"{root}/metrics/" if root else "metrics/"
    prefix = prefix.lstrip("/")
    if runs.startswith(prefix) or prefix.startswith(runs):
        raise SettingsError(
            f"CAPFC_TRIGGER_PREFIX (trigger_prefix): {prefix!r} covers the run outputs under {runs!r}; "
            "every published run would trigger another. Use the telemetry prefix, e.g. "
            f"{(root + '/') if root else ''}metrics/"
        )
    return prefix


def _context(context: Any) -> str | None:
    return getattr(context, "aws_request_id", None)


def _open(settings: Settings) -> Store:
    return open_store(settings.data, endpoint_url=settings.s3_endpoint_url)


# --------------------------------------------------------------------------- trigger


@lambda_entry
def trigger(event: dict, context: Any = None, *, settings: Settings | None = None) -> dict:
    """Start a run for new telemetry or a schedule: in this Lambda, or on the state machine."""
    t0 = time.perf_counter()
    ev = parse_event(event)
    settings = settings or load_settings()
    store = _open(settings)
    prefix = trigger_prefix(settings, store)
    ctx: dict[str, Any] = {"trigger": ev.kind, "request_id": _context(context)}
    base = {"trigger": ev.kind, "event_id": ev.event_id}
    if ev.kind == "s3":
        loc = _location(store)
        if loc is None:
            raise EventError(
                f"an S3 event for s3://{ev.bucket}/{ev.key} cannot start a run on the local store {store.uri}"
            )
        if ev.bucket != loc[0] or not ev.key.startswith(prefix):
            log.info("ignored s3://%s/%s: not under s3://%s/%s", ev.bucket, ev.key, loc[0], prefix, extra=ctx)
            return {**base, "status": "ignored", "reason": f"not under s3://{loc[0]}/{prefix}"}
        if ev.key.endswith("/") or ev.key.rsplit("/", 1)[-1].startswith("."):
            log.info("ignored s3://%s/%s: a folder marker or temporary name", ev.bucket, ev.key, extra=ctx)
            return {**base, "status": "ignored", "reason": "folder marker or temporary object"}
        stale = _stale(store, ev, loc[1])
        if stale:
            log.info(
                "stale event for %s: run %s already read a newer version",
                ev.key,
                stale,
                extra={**ctx, "run_id": stale},
            )
            return {**base, "status": "stale", "run_id": stale}
    snap = snapshot_input(store)
    ctx["input_key"] = snap["key"]
    latest = store.latest_run_id()
    if latest and _input_key(store, latest) == snap["key"]:
        log.info("input %s already published as run %s", snap["key"], latest, extra={**ctx, "run_id": latest})
        return {**base, "status": "duplicate", "run_id": latest, "input_key": snap["key"]}
    servers = len(store.read_inventory())
    if servers <= settings.lambda_max_servers:
        run_id = run_id_for(snap["key"])
        log.info("running %d servers in this Lambda", servers, extra={**ctx, "run_id": run_id})
        manifest = run_batch(
            store, settings, run_id=run_id, input_snapshot=snap, trigger=ev.kind, progress=False
        )
        log.info("published run", extra={**ctx, "run_id": run_id})
        return {
            **base,
            "status": "published",
            "run_id": manifest["run_id"],
            "input_key": snap["key"],
            "servers": servers,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    return {**base, **start_execution(settings, snap["key"], ev.kind, servers, ctx)}


def _input(store: Store, run_id: str) -> dict:
    try:
        return store.read_manifest(run_id).get("input") or {}
    except StoreError:  # an unreadable manifest never blocks a new run
        log.warning("manifest of run %s unreadable", run_id, exc_info=True, extra={"run_id": run_id})
        return {}


def _input_key(store: Store, run_id: str) -> str | None:
    return (_input(store, run_id).get("snapshot") or {}).get("key")


def _stale(store: Store, ev: TriggerEvent, root: str) -> str | None:
    """The latest run, when it already read a *newer* version of the event's object.

    The same version (S3's event time and Last-Modified agree to a second or so, same size) is
    not stale: the input-key check that follows answers it as a duplicate of that run.
    """
    latest = store.latest_run_id()
    if not latest or ev.time is None:
        return None
    snap = _input(store, latest).get("snapshot") or {}
    rel = ev.key[len(root) + 1 :] if root else ev.key
    for key, size, mtime in snap.get("objects", []):
        if key == rel and mtime:
            ahead = (datetime.fromisoformat(mtime) - ev.time).total_seconds()
            same_version = ev.size == size and abs(ahead) <= SAME_VERSION_SECONDS
            return latest if ahead > 0 and not same_version else None
    return None


def _sfn_client(state_machine_arn: str):
    """A Step Functions client in the machine's own region (read from its ARN)."""
    from ..sources.s3 import new_session

    parts = state_machine_arn.split(":")
    if len(parts) < 7 or parts[2] != "states" or parts[5] != "stateMachine":
        raise SettingsError(
            f"CAPFC_STATE_MACHINE_ARN (state_machine_arn): {state_machine_arn!r} is not a state machine ARN "
            "(arn:aws:states:<region>:<account>:stateMachine:<name>)"
        )
    return new_session(parts[3]).client("stepfunctions")


def start_execution(
    settings: Settings, input_key: str, kind: str, servers: int, ctx: dict, client: Any = None
) -> dict:
    """Start the state machine once per input: the execution name is the input key."""
    from botocore.exceptions import ClientError

    arn = settings.state_machine_arn
    if not arn:
        raise SettingsError(
            f"CAPFC_STATE_MACHINE_ARN (state_machine_arn): the fleet has {servers:,} servers, more than "
            f"CAPFC_LAMBDA_MAX_SERVERS={settings.lambda_max_servers:,} run in one Lambda; set the state machine to start"
        )
    client = client or _sfn_client(arn)
    payload = json.dumps({"input_key": input_key, "trigger": kind}, sort_keys=True)
    for attempt in range(EXECUTION_RETRIES + 1):
        name = f"capfc-{input_key}" + (f"-r{attempt}" if attempt else "")
        try:
            resp = client.start_execution(stateMachineArn=arn, name=name, input=payload)
        except ClientError as e:
            if e.response.get("Error", {}).get("Code") != "ExecutionAlreadyExists":
                raise
            execution_arn = arn.replace(":stateMachine:", ":execution:", 1) + f":{name}"
            status = client.describe_execution(executionArn=execution_arn)["status"]
            if status in ("RUNNING", "SUCCEEDED", "PENDING_REDRIVE"):
                log.info("execution %s already %s", name, status.lower(), extra=ctx)
                return {
                    "status": "already-started",
                    "execution": name,
                    "execution_status": status,
                    "execution_arn": execution_arn,
                    "input_key": input_key,
                    "servers": servers,
                }
            continue  # that execution of this input failed: start it again under the next name
        log.info("started %s for %d servers", name, servers, extra=ctx)
        return {
            "status": "started",
            "execution": name,
            "execution_arn": resp["executionArn"],
            "input_key": input_key,
            "servers": servers,
        }
    raise RuntimeError(
        f"input {input_key}: {EXECUTION_RETRIES + 1} executions failed; fix the cause and upload again"
    )


# --------------------------------------------------------------------------- Step Functions tasks


@lambda_entry
def plan(event: dict, context: Any = None, *, settings: Settings | None = None) -> dict:
    """Plan task: snapshot the input, create the run, return the shard ids for the Map."""
    settings = settings or load_settings()
    store = _open(settings)
    kind = event.get("trigger", "schedule") if isinstance(event, dict) else "schedule"
    snap = snapshot_input(store)
    expected = event.get("input_key") if isinstance(event, dict) else None
    ctx = {"trigger": kind, "request_id": _context(context), "input_key": snap["key"]}
    if expected and expected != snap["key"]:
        log.warning(
            "input changed since the trigger (%s → %s): planning the current input",
            expected,
            snap["key"],
            extra=ctx,
        )
    out = plan_shards(store, settings, trigger=kind, snapshot=snap)
    log.info("planned", extra={**ctx, "run_id": out["run_id"]})
    return {**out, "trigger": kind, "max_concurrency": settings.shard_concurrency}


@lambda_entry
def calibrate(event: dict, context: Any = None, *, settings: Settings | None = None) -> dict:
    """Calibrate task: the models' cross-series choices, learned once on the calibration sample
    (the plan's output, {"run_id", …}); every shard then applies them."""
    if not isinstance(event, dict) or "run_id" not in event:
        raise EventError(f"the calibrate task needs {{'run_id'}}, got {event!r:.200}")
    settings = settings or load_settings()
    bind_context(run_id=str(event["run_id"]))
    return calibrate_shards(_open(settings), settings, str(event["run_id"]))


@lambda_entry
def shard(event: dict, context: Any = None, *, settings: Settings | None = None) -> dict:
    """Map item task: one shard of a planned run ({"run_id", "shard"})."""
    if not isinstance(event, dict) or "run_id" not in event or "shard" not in event:
        raise EventError(f"a shard task needs {{'run_id', 'shard'}}, got {event!r:.200}")
    settings = settings or load_settings()
    bind_context(run_id=str(event["run_id"]), shard=int(event["shard"]))
    return run_shard(_open(settings), settings, str(event["run_id"]), int(event["shard"]))


@lambda_entry
def publish(event: dict, context: Any = None, *, settings: Settings | None = None) -> dict:
    """Publish task: every shard done → analytics over the fleet → tables, manifest, LATEST last.

    The machine's Abandon state calls it too, on a run a step failed (its input carries the
    caught ``error``): then it only releases the run's lease and removes its partial files."""
    if not isinstance(event, dict) or "run_id" not in event:
        raise EventError(f"the publish task needs {{'run_id'}}, got {event!r:.200}")
    settings = settings or load_settings()
    if "error" in event:
        bind_context(run_id=str(event["run_id"]))
        return {"status": "abandoned", **abandon_run(_open(settings), str(event["run_id"]))}
    manifest = publish_shards(_open(settings), settings, str(event["run_id"]))
    if "superseded_by" in manifest:
        return {"status": "superseded", **manifest}
    return {
        "status": "published",
        "run_id": manifest["run_id"],
        "input_key": (manifest["input"].get("snapshot") or {}).get("key"),
        "servers": manifest["input"]["servers"],
        "rows": manifest["rows"],
    }


# --------------------------------------------------------------------------- weekly report pack


@lambda_entry
def report(event: dict, context: Any = None, *, settings: Settings | None = None) -> dict:
    """Weekly report pack (an EventBridge Scheduler cron): the latest run as PDF and xlsx under
    ``<store>/reports/`` (or ``{"out": "s3://bucket/prefix/"}``); ``{"format": "pdf"}`` or
    ``["pdf", "xlsx"]`` (default both), ``{"run_id": …}`` for another run."""
    from ..records.report import FORMATS, default_out, write_pack

    event = event if isinstance(event, dict) else {}
    formats = event.get("format") or list(FORMATS)
    formats = [formats] if isinstance(formats, str) else formats
    bad = [f for f in formats if f not in FORMATS]
    if bad or not isinstance(formats, list):
        raise EventError(f"report format must be among {list(FORMATS)}, got {formats!r:.100}")
    out = event.get("out")
    if out is not None and (not isinstance(out, str) or not out.startswith("s3://") or not out.endswith("/")):
        raise EventError(f"report 'out' must be an s3://bucket/prefix/ ending in '/', got {out!r:.100}")
    settings = settings or load_settings()
    store = _open(settings)
    out = out or default_out(store)
    run_id = event.get("run_id")
    written = [write_pack(store, settings, fmt=f, out=out, run_id=run_id) for f in formats]
    log.info("report pack written", extra={"written": written})
    return {"status": "written", "written": written}
