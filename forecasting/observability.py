"""Structured JSON logs and CloudWatch metrics for every entry point: one mechanism.

Why one module: the batch CLI, the Lambda handlers, gunicorn and the Dash app must write the
same log shape, so CloudWatch Logs Insights queries and alarms work across all of them. The
formatting is AWS Lambda Powertools' ``LambdaPowertoolsFormatter`` on the *root* logger, so
every ``logging.getLogger(__name__).info("...", extra={...})`` in the code base comes out as
one JSON object per line; no hand-rolled formatter.

Log line fields (absent when they do not apply; Powertools drops ``None`` values):
``timestamp`` (RFC 3339, UTC), ``level``, ``service``, ``name`` (logger), ``location``,
``message``, and the context keys bound for the current run or request — ``run_id`` and
``trigger`` (batch and Lambda), ``request_id`` (web: ``X-Request-Id``/``X-Amzn-Trace-Id`` or a
generated one; Lambda: the invocation's id), ``user`` (bound by the sign-in layer; absent
until then) — plus whatever ``extra={...}`` a call passes (``route``, ``method``, ``status``,
``duration_ms`` on access lines). Exceptions add ``exception``, ``exception_name`` and
``stack_trace``.

Metrics are CloudWatch Embedded Metric Format (EMF) lines on stdout, built by Powertools
(``EphemeralMetrics``: no state shared between threads or callers), namespace
``CapacityForecaster``, dimension ``service`` (plus ``route`` for web latency). Lambda ships
stdout to CloudWatch Logs, which turns EMF lines into metrics.

Context keys live in Powertools' context variable (``thread_safe_append_keys``): they follow
the current thread / request only, so gunicorn's threads never mix request ids. Threads a
run starts do not inherit them.
"""

from __future__ import annotations

import atexit
import functools
import json
import logging
import os
import re
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, Literal

from aws_lambda_powertools import Logger
from aws_lambda_powertools.logging.formatter import (
    LambdaPowertoolsFormatter,
    clear_context_keys,
    remove_context_keys,
    set_context_keys,
)
from aws_lambda_powertools.metrics import EphemeralMetrics

NAMESPACE = "CapacityForecaster"
SERVICE_BATCH = "capfc-batch"  # the batch job wherever it runs: CLI, container task, Lambda
SERVICE_WEB = "capfc-web"  # gunicorn and the Dash app
LogFormat = Literal["json", "text"]
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

# Order of the first keys in every JSON line; the rest follow as added.
RECORD_ORDER = ["timestamp", "level", "service", "message"]
TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
# Third-party loggers that are chatty at INFO and say nothing a planner or operator needs.
QUIET_LOGGERS = ("cmdstanpy", "prophet", "botocore", "boto3", "urllib3", "s3transfer", "numba")

_ID_OK = re.compile(r"^[A-Za-z0-9._:;=/+-]{1,128}$")
_LOCK = threading.RLock()  # one lock for every write to stdout: log lines and EMF never interleave

log = logging.getLogger(__name__)


class StdStreamHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stdout`` (or ``sys.stderr``) is at the time of each record
    (pytest's capture, a redirect), and shares one lock with the EMF writer, so a log line
    and a metric line never interleave."""

    def __init__(self, stream_name: Literal["stdout", "stderr"] = "stdout") -> None:
        super().__init__()
        self.stream_name = stream_name
        self.lock = _LOCK

    @property
    def stream(self):  # type: ignore[override]
        return getattr(sys, self.stream_name)

    @stream.setter
    def stream(self, _value) -> None:  # StreamHandler.__init__ assigns it; the property wins
        pass


class _State:
    handler: logging.Handler | None = None
    fmt: LogFormat = "json"
    service: str = SERVICE_BATCH
    logger: Logger | None = None


_state = _State()
_FORMATTER_API = LambdaPowertoolsFormatter()  # only for its thread-safe key accessors


# --------------------------------------------------------------------------- logging


def json_formatter(service: str = SERVICE_BATCH) -> LambdaPowertoolsFormatter:
    """The one JSON formatter (also the factory gunicorn's ``logconfig_dict`` names)."""
    return LambdaPowertoolsFormatter(
        utc=True,
        use_rfc3339=True,
        log_record_order=list(RECORD_ORDER),
        service=service,
        name="%(name)s",
    )


def text_formatter() -> logging.Formatter:
    """For a developer's terminal only (``CAPFC_LOG_FORMAT=text``): context keys are not shown."""
    return logging.Formatter(TEXT_FORMAT, "%H:%M:%S")


def configure_logging(
    level: str | int = "INFO",
    service: str = SERVICE_BATCH,
    fmt: LogFormat = "json",
    *,
    stream: Literal["stdout", "stderr"] | None = None,
) -> Logger:
    """Send every logger's records, through the root logger, to one handler.

    JSON goes to stdout (where Lambda, ECS and App Runner collect it, in order with the EMF
    lines); text goes to stderr, so a terminal's stdout keeps only a command's answer.
    Replaces any root handler set up before (the Lambda runtime installs one, which would
    print every line twice), except pytest's capture handlers. Safe to call again.
    Returns the Powertools ``Logger`` for this service (its ``inject_lambda_context`` is
    what ``lambda_entry`` uses).
    """
    if fmt not in ("json", "text"):
        raise ValueError(f"log format {fmt!r}: use 'json' or 'text'")
    level_no = _level(level)
    formatter = json_formatter(service) if fmt == "json" else text_formatter()
    handler = StdStreamHandler(stream or ("stdout" if fmt == "json" else "stderr"))
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if not type(old).__module__.startswith("_pytest"):
            root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level_no)
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(level_no, logging.WARNING))
    logging.captureWarnings(True)
    with _LOCK:
        _state.handler, _state.fmt, _state.service = handler, fmt, service
        _state.logger = _powertools_logger(service, level_no, handler if fmt == "json" else None)
    return _state.logger


def _powertools_logger(service: str, level: int, handler: logging.Handler | None) -> Logger:
    """Powertools' Logger for ``service`` on the root handler and its formatter, so the keys
    its Lambda decorator appends show on every line, not only on its own.

    Powertools attaches the handler to a logger named after the service and filters that
    logger's records out of the root handlers (it prints them itself). Here the root handler
    is the only printer: the service logger gets no handler of its own and propagates.
    """
    if handler is None:  # text format: keys go to a JSON formatter nobody prints
        handler = logging.NullHandler()
        handler.setFormatter(json_formatter(service))
    pt = Logger(service=service, level=level, logger_formatter=handler.formatter, logger_handler=handler)
    inner = logging.getLogger(pt.name)
    inner.handlers = [h for h in inner.handlers if h is not handler]
    inner.propagate = True
    inner.setLevel(logging.NOTSET)
    for h in logging.getLogger().handlers:
        h.filters = [f for f in h.filters if type(f).__name__ != "SuppressFilter"]
    return pt


def _level(level: str | int) -> int:
    if isinstance(level, int):
        return level
    name = str(level).strip().upper()
    if name not in LOG_LEVELS:
        raise ValueError(f"log level {level!r}: use one of {', '.join(LOG_LEVELS)}")
    return logging.getLevelName(name)


def log_format() -> LogFormat:
    """The format configured last ('json' until configured)."""
    return _state.fmt


def gunicorn_logconfig(level: str = "INFO", fmt: LogFormat = "json") -> dict[str, Any]:
    """``logconfig_dict`` for gunicorn.conf.py: gunicorn's error log and the root logger
    (where the app's loggers propagate) print through one handler in the same format, at
    ``level`` (gunicorn's default config drops the app's INFO lines). gunicorn's access log is
    off: the app writes one access line per request, with what only it knows.

    Also records ``fmt`` for this process (gunicorn's master; its workers inherit it), so
    metrics follow the format as after ``configure_logging``."""
    _state.fmt = fmt
    factory = "forecasting.observability.json_formatter" if fmt == "json" else None
    formatter = {"()": factory, "service": SERVICE_WEB} if factory else {"format": TEXT_FORMAT}
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"capfc": formatter},
        "handlers": {
            "capfc": {
                "class": "forecasting.observability.StdStreamHandler",
                "formatter": "capfc",
                "stream_name": "stdout" if fmt == "json" else "stderr",
            }
        },
        "root": {"level": level, "handlers": ["capfc"]},
        "loggers": {
            # gunicorn's records reach the root handler: no handlers of their own (no doubles)
            "gunicorn.error": {"level": level, "handlers": [], "propagate": True},
            # gunicorn logs access through this logger whenever a logconfig is given; the app
            # writes the access line (app/requestlog.py: route template, callback, request id)
            "gunicorn.access": {"level": "CRITICAL", "handlers": [], "propagate": False},
            **{name: {"level": "WARNING"} for name in QUIET_LOGGERS},
        },
    }


# --------------------------------------------------------------------------- context


def bind_context(**keys: Any) -> None:
    """Add keys to every log line of the current thread/context (request id, user, run id)."""
    set_context_keys(**{k: v for k, v in keys.items() if v is not None})


def unbind_context(*names: str) -> None:
    remove_context_keys(names)


def bound_context() -> dict[str, Any]:
    """The keys bound for the current thread/context."""
    return dict(_FORMATTER_API.thread_safe_get_current_keys())


def clear_context() -> None:
    """Forget every bound key (end of a request: gunicorn reuses its threads)."""
    clear_context_keys()


@contextmanager
def log_context(**keys: Any) -> Iterator[None]:
    """Bind ``keys`` for the block, then remove them again."""
    bind_context(**keys)
    try:
        yield
    finally:
        unbind_context(*keys)


def request_id_from(headers: Mapping[str, str]) -> str:
    """The caller's request id (``X-Request-Id``, else the root of ``X-Amzn-Trace-Id``, which
    an ALB adds), or a new one. Values that are long or carry odd characters are replaced:
    they end up in logs and response headers."""
    given = (headers.get("X-Request-Id") or "").strip()
    if given and _ID_OK.match(given):
        return given
    trace = (headers.get("X-Amzn-Trace-Id") or "").strip()
    if trace:
        parts = dict(p.split("=", 1) for p in trace.split(";") if "=" in p)
        root = parts.get("Root", "")
        if root and _ID_OK.match(root):
            return root
    return uuid.uuid4().hex


AUDIT_LOGGER = "capfc.audit"


def audit(event: str, message: str | None = None, **fields: Any) -> None:
    """An audit event (an export, a what-if, a re-forecast): one INFO line on the
    ``capfc.audit`` logger with ``audit: true`` and ``event``, plus the context keys bound for
    the request (``request_id``, and ``user`` once sign-in binds it) and ``fields``. Filter
    them in CloudWatch with ``filter audit = 1``."""
    # a field named like a LogRecord attribute (name, msg, args, ...) would make logging raise
    # KeyError inside the request (seen as a 500 on sign-in under gunicorn): prefix it instead
    safe = {(f"field_{k}" if k in _RECORD_ATTRS else k): v for k, v in fields.items()}
    logging.getLogger(AUDIT_LOGGER).info(message or event, extra={"audit": True, "event": event, **safe})


_RECORD_ATTRS = frozenset(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


# --------------------------------------------------------------------------- metrics


def emit_metrics(
    values: Mapping[str, float | tuple[float, str] | list[tuple[float, str]]],
    *,
    service: str = SERVICE_BATCH,
    dimensions: Mapping[str, str] | None = None,
    also_by_service: bool = False,
    metadata: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """Write one EMF line with ``values`` (``name: value``, ``name: (value, unit)`` or a list
    of such pairs; the default unit is Count) and return it. ``dimensions`` are added to ``service``;
    ``also_by_service`` adds the service-only dimension set too (one line feeds a per-route
    and a whole-service metric). In text format the values are logged at DEBUG instead."""
    if not values:
        return None
    m = EphemeralMetrics(namespace=NAMESPACE, service=service)
    for name, value in values.items():
        items = [
            i if isinstance(i, tuple) else (i, "Count")
            for i in (value if isinstance(value, list) else [value])
        ]
        m.add_metric(name=name, unit=items[0][1], value=float(items[0][0]))  # checks name, unit, value
        # the rest straight into the metric's value list: add_metric formats the whole list into
        # a debug string on every call, which made a 99-value line cost O(n²)
        m.metric_set[name]["Value"].extend(float(v) for v, _unit in items[1:])
    for k, v in (dimensions or {}).items():
        m.add_dimension(name=k, value=str(v))
    if also_by_service and dimensions:
        m.add_dimensions(service=service)
    for k, v in (metadata or {}).items():
        m.add_metadata(key=k, value=v)
    blob = m.serialize_metric_set()
    if _state.fmt == "text":
        if log.isEnabledFor(logging.DEBUG):
            log.debug("metrics %s", ", ".join(f"{k}={blob[k]}" for k in values))
        return blob
    line = json.dumps(blob, separators=(",", ":"), default=str) + "\n"
    with _LOCK:
        sys.stdout.write(line)
        sys.stdout.flush()
    return blob


class RunMetrics:
    """Metrics of one batch run, written as one EMF line when the run ends."""

    def __init__(self) -> None:
        self.values: dict[str, tuple[float, str]] = {}

    def add(self, name: str, value: float, unit: str = "Count") -> None:
        self.values[name] = (float(value), unit)


@contextmanager
def batch_run(
    run_id: str, trigger: str | None = None, *, service: str = SERVICE_BATCH
) -> Iterator[RunMetrics]:
    """Bind ``run_id`` and ``trigger`` to every log line of the run, time it, and at the end
    write the run's metrics — ``RunSucceeded``/``RunFailed`` (1 or 0), ``RunDurationSeconds``
    and whatever the run added — as one EMF line, also when the run fails.

    Without ``trigger`` the one already bound (a Lambda invocation's) is used, else 'cli'.
    The keys bound before the run are back afterwards."""
    metrics = RunMetrics()
    t0 = time.perf_counter()
    before = bound_context()
    trigger = trigger or before.get("trigger") or "cli"
    bind_context(run_id=run_id, trigger=trigger)
    ok = False
    try:
        log.info("run started")
        yield metrics
        ok = True
    except BaseException as e:
        log.error("run failed: %s", e or type(e).__name__, exc_info=not isinstance(e, KeyboardInterrupt))
        raise
    finally:
        seconds = time.perf_counter() - t0
        metrics.add("RunSucceeded", 1 if ok else 0)
        metrics.add("RunFailed", 0 if ok else 1)
        metrics.add("RunDurationSeconds", seconds, "Seconds")
        emit_metrics(metrics.values, service=service, metadata={"run_id": run_id, "trigger": trigger})
        if ok:
            log.info(
                "run succeeded in %.1f s",
                seconds,
                extra={"duration_ms": round(seconds * 1000, 1), "metrics": _plain(metrics.values)},
            )
        unbind_context("run_id", "trigger")
        bind_context(**{k: before[k] for k in ("run_id", "trigger") if k in before})


def _plain(values: Mapping[str, tuple[float, str]]) -> dict[str, float]:
    return {k: round(v, 3) for k, (v, _unit) in values.items()}


VALUES_PER_LINE = 99  # EMF holds up to 100 values per metric; Powertools prints by itself at 100
FLUSH_SECONDS = 15.0


class MetricsBuffer:
    """Per-request values collected in memory and written as few EMF lines: every
    ``interval`` seconds (a daemon thread, started on first use, so in each gunicorn worker
    after the fork), when a metric reaches ``VALUES_PER_LINE`` values, and at exit.

    Why: one EMF line per request cost about as much as the access line itself; an append
    under a lock costs a few microseconds. CloudWatch keeps every value (an EMF metric is a
    list of values), so percentiles and sample counts are the same as with one line each.
    """

    def __init__(self, service: str, interval: float = FLUSH_SECONDS) -> None:
        self.service, self.interval = service, interval
        self._reset()
        atexit.register(self.flush)
        if hasattr(os, "register_at_fork"):  # a forked child starts empty, without the thread
            os.register_at_fork(after_in_child=self._reset)

    def _reset(self) -> None:
        self._lock = threading.Lock()
        self._values: dict[tuple[tuple[tuple[str, str], ...], bool], dict[str, tuple[str, list[float]]]] = {}
        self._thread: threading.Thread | None = None

    def add(
        self,
        values: Mapping[str, tuple[float, str]],
        dimensions: Mapping[str, str] | None = None,
        *,
        also_by_service: bool = False,
    ) -> None:
        key = (tuple(sorted((dimensions or {}).items())), also_by_service)
        full = False
        with self._lock:
            bucket = self._values.setdefault(key, {})
            for name, (value, unit) in values.items():
                series = bucket.setdefault(name, (unit, []))[1]
                series.append(float(value))
                full = full or len(series) >= VALUES_PER_LINE
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="capfc-metrics", daemon=True)
                self._thread.start()
        if full:
            self.flush()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            try:
                self.flush()
            except Exception:  # never let metrics kill the thread; say so once per failure
                log.exception("metrics flush failed")

    def flush(self) -> int:
        """Write what is buffered; returns the number of EMF lines written."""
        with self._lock:
            batch, self._values = self._values, {}
        lines = 0
        for (dims, by_service), bucket in batch.items():
            longest = max(len(v) for _unit, v in bucket.values())
            for start in range(0, longest, VALUES_PER_LINE):
                chunk = {n: (u, v[start : start + VALUES_PER_LINE]) for n, (u, v) in bucket.items()}
                emit_metrics(
                    {n: [(x, u) for x in v] for n, (u, v) in chunk.items() if v},
                    service=self.service,
                    dimensions=dict(dims),
                    also_by_service=by_service,
                )
                lines += 1
        return lines


_web_metrics = MetricsBuffer(SERVICE_WEB)


def request_metrics(route: str, status: int, duration_ms: float) -> None:
    """Record one web request: ``RequestLatencyMs`` and ``Http5xx`` (0/1), by (service,
    route) and by service alone (latency per page, one 5xx alarm). Buffered: see
    ``MetricsBuffer``; ``flush_metrics`` writes them now."""
    _web_metrics.add(
        {"RequestLatencyMs": (duration_ms, "Milliseconds"), "Http5xx": (1 if status >= 500 else 0, "Count")},
        {"route": route},
        also_by_service=True,
    )


def flush_metrics() -> int:
    """Write buffered request metrics now (gunicorn's worker_exit hook; tests)."""
    return _web_metrics.flush()


class Throttle:
    """True at most once per ``seconds`` (per process): gauges such as the plan's age are
    worth one line a minute, not one per request."""

    def __init__(self, seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.seconds, self.clock = seconds, clock
        self._next = 0.0
        self._lock = threading.Lock()

    def due(self) -> bool:
        now = self.clock()
        with self._lock:
            if now < self._next:
                return False
            self._next = now + self.seconds
            return True


# --------------------------------------------------------------------------- Lambda


def trigger_of(event: Any) -> str:
    """What started a Lambda invocation, from its event: 's3' (an EventBridge S3 event),
    'schedule' (EventBridge Scheduler / a scheduled rule), the event's own ``trigger`` key
    (Step Functions tasks can pass one), else 'lambda'."""
    if isinstance(event, Mapping):
        source = event.get("source")
        if source == "aws.s3":
            return "s3"
        if source == "aws.scheduler" or event.get("detail-type") == "Scheduled Event":
            return "schedule"
        given = event.get("trigger")
        if isinstance(given, str) and _ID_OK.match(given):
            return given
    return "lambda"


def lambda_entry(
    handler: Callable[..., Any] | None = None, *, service: str = SERVICE_BATCH, log_event: bool = False
) -> Any:
    """Decorator for Lambda handlers ``(event, context) -> dict``.

    On each invocation: JSON logging set up (once, from the settings), Powertools'
    ``inject_lambda_context`` adding function name, memory, ARN, ``function_request_id`` and
    ``cold_start`` to every line, ``request_id`` (the invocation id) and ``trigger``
    (``trigger_of(event)``) bound, one line when the handler fails (with the traceback)
    before the error goes back to Lambda. A run started inside binds its own ``run_id``.
    """

    def wrap(fn: Callable[..., Any]) -> Callable[..., Any]:
        def with_keys(event: Any, context: Any, *args: Any, **kwargs: Any) -> Any:
            # bound inside Powertools' wrapper: its clear_state drops keys bound before it
            request_id = getattr(context, "aws_request_id", None) or uuid.uuid4().hex
            bind_context(request_id=request_id, trigger=trigger_of(event), handler=fn.__name__)
            try:
                return fn(event, context, *args, **kwargs)
            except Exception:
                log.exception("handler %s failed", fn.__name__)
                raise
            finally:
                clear_context()

        @functools.wraps(fn)
        def invoke(event: Any, context: Any = None, *args: Any, **kwargs: Any) -> Any:
            logger = _lambda_logger(service)
            if context is None:  # called in-process (a test, a local run): no Lambda context to add
                return with_keys(event, context, *args, **kwargs)
            inner = logger.inject_lambda_context(with_keys, log_event=log_event, clear_state=True)
            return inner(event, context, *args, **kwargs)

        return invoke

    return wrap(handler) if handler is not None else wrap


def _lambda_logger(service: str) -> Logger:
    if _state.logger is not None and _state.service == service:
        return _state.logger
    from .settings import SettingsError, load_settings

    try:
        settings = load_settings()
    except SettingsError:
        configure_logging("INFO", service, "json")
        log.exception("settings could not be loaded; logging at INFO")
        raise
    return configure_logging(settings.log_level, service, settings.log_format)
