"""Where background-callback jobs run, and the state several web instances must share.

Why: behind a load balancer a browser's polls of one re-forecast land on any instance. Dash's
``DiskcacheManager`` keeps jobs (and the secret that signs their handles) in the instance's own
temp directory, so a poll answered by another instance finds nothing and the re-forecast is
lost. With ``CAPFC_REDIS_URL`` set, jobs go through Celery on Redis (ElastiCache/Valkey on
AWS) and run in a Celery worker (``celery -A app.worker worker``); results, progress, the
signing secret and the current run id live in Redis, so any instance answers the same.
Without it, one instance keeps today's local disk cache and runs jobs in its own processes.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from dataclasses import asdict
from typing import Any

import diskcache
from dash import CeleryManager, DiskcacheManager

from .readmodel import DataStatus

log = logging.getLogger(__name__)

# Seconds a finished job's result (and Celery's task record) is kept when nobody collects it.
JOB_RESULT_SECONDS = 3600
# Redis calls must fail fast: a web request never waits long on the shared store. After a
# failure the web side leaves Redis alone this long (per process) and uses its local state.
REDIS_TIMEOUT_SECONDS = 2.0
REDIS_RETRY_AFTER_SECONDS = 10.0
# The key Dash's own signing-secret lookup uses (BaseBackgroundCallbackManager.SIGNING_SECRET_KEY);
# ours is kept without expiry, unlike Dash's, which would expire with Celery's results.
SIGNING_SECRET_KEY = "capfc:dash-signing-secret"
QUEUE = "capfc-background"
FAST_RETRY = {"max_retries": 2, "interval_start": 0, "interval_step": 0.2, "interval_max": 0.5}


def celery_app(redis_url: str) -> Any:
    """The Celery app: Redis as broker and result store, JSON only (nothing unpickled)."""
    from celery import Celery

    app = Celery("capfc", broker=redis_url, backend=redis_url)
    app.conf.update(
        task_serializer="json",
        result_serializer="json",
        accept_content=["json"],
        result_expires=JOB_RESULT_SECONDS,
        task_default_queue=QUEUE,
        task_track_started=True,
        worker_prefetch_multiplier=1,  # a re-forecast takes seconds: do not hoard jobs per process
        broker_connection_retry_on_startup=True,
        redis_socket_timeout=REDIS_TIMEOUT_SECONDS,
        redis_socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        broker_transport_options={
            "socket_timeout": REDIS_TIMEOUT_SECONDS,
            "socket_connect_timeout": REDIS_TIMEOUT_SECONDS,
        },
        # Redis down: a click fails in seconds with the page's alert (Celery's defaults retry
        # for ~20 s per call, holding a gunicorn thread)
        task_publish_retry_policy=FAST_RETRY,
        result_backend_transport_options={"retry_policy": FAST_RETRY},
        broker_connection_timeout=REDIS_TIMEOUT_SECONDS,
    )
    return app


class SharedSigningSecret:
    """The secret Dash signs job handles with, one for every instance, kept in Redis.

    Dash would otherwise store its generated secret with Celery's result expiry and memoise it
    per process: a day later an instance started afresh makes a new one and the others reject
    its handles. Read on every use (one GET per page load or poll); when Redis cannot answer,
    the last secret read (or a per-process one) keeps pages loading.
    """

    def __init__(self, client: Any, key: str = SIGNING_SECRET_KEY) -> None:
        self.client = client
        self.key = key
        self._last: bytes | None = None
        self._breaker = _Breaker("the signing secret")

    def __call__(self) -> bytes:
        if self._breaker.closed():
            try:
                value = self.client.get(self.key)
                if value is None:
                    self.client.set(self.key, secrets.token_urlsafe(48), nx=True)
                    value = self.client.get(self.key)
                if value:
                    self._last = value if isinstance(value, bytes) else str(value).encode()
            except Exception as e:  # Redis trouble must not stop page loads
                self._breaker.trip(e)
        if self._last is None:
            self._last = secrets.token_urlsafe(48).encode()
        return self._last


class SharedRunStatus:
    """Which run is current, shared by every instance (app.readmodel.SharedStatus), as JSON.

    Each instance re-reads ``runs/LATEST`` at most every ``cache_ttl_seconds``; kept per
    instance, two instances could show different runs for that long after a publish. Here the
    first instance to re-check decides for all until the entry expires. Failures read as a miss.
    """

    def __init__(self, client: Any) -> None:
        self.client = client
        self._breaker = _Breaker("the run status")

    def get(self, key: str) -> DataStatus | None:
        if not self._breaker.closed():
            return None
        try:
            raw = self.client.get(key)
        except Exception as e:
            self._breaker.trip(e)
            return None
        if not raw:
            return None
        try:
            return DataStatus(**json.loads(raw))
        except (ValueError, TypeError):
            return None

    def set(self, key: str, status: DataStatus, timeout: int) -> None:
        if not self._breaker.closed():
            return
        try:
            self.client.set(key, json.dumps(asdict(status)), ex=max(int(timeout), 1))
        except Exception as e:
            self._breaker.trip(e)


class _Breaker:
    """After a Redis failure, skip Redis for REDIS_RETRY_AFTER_SECONDS: an outage costs one
    timeout per process and pause, not one per request, and logs one line per pause."""

    def __init__(self, what: str, seconds: float = REDIS_RETRY_AFTER_SECONDS) -> None:
        self.what = what
        self.seconds = seconds
        self._open_until = 0.0
        self._lock = threading.Lock()

    def closed(self) -> bool:
        return time.monotonic() >= self._open_until

    def trip(self, error: Exception) -> None:
        with self._lock:
            self._open_until = time.monotonic() + self.seconds
        log.warning(
            "redis unreachable for %s (%s): using local state for %.0f s",
            self.what,
            type(error).__name__,
            self.seconds,
        )


class _SettledPolls:
    """A poll reads a job's result, then asks whether the job still runs (Dash's order), and
    "no result and not running" closes the browser's loop with no update. A job that finishes
    between the two looks cancelled: the re-forecast never shows (seen under load, diskcache).
    Here ``job_running`` answers as of *before* the result was read: running then and no result
    means "poll again", and the next poll finds the result."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._verdict = threading.local()

    def get_result(self, key: Any, job: Any) -> Any:
        running = bool(job) and super().job_running(job)
        result = super().get_result(key, job)
        # a result read terminates its job: then Dash's later question is answered afresh
        self._verdict.seen = (job, running) if result is self.UNDEFINED else None
        return result

    def job_running(self, job: Any) -> bool:
        seen, self._verdict.seen = getattr(self._verdict, "seen", None), None
        if seen is not None and seen[0] == job:
            return seen[1]
        return super().job_running(job)


class LocalJobs(_SettledPolls, DiskcacheManager):
    """Jobs in this instance's processes, results in its disk cache."""


class SharedJobs(_SettledPolls, CeleryManager):
    """Jobs on Celery, results in Redis: any instance answers a poll."""


class WebTier:
    """The background manager and the shared pieces create_app wires in."""

    def __init__(
        self,
        manager: Any,
        *,
        celery: Any = None,
        signing_secret: SharedSigningSecret | None = None,
        run_status: SharedRunStatus | None = None,
    ) -> None:
        self.manager = manager
        self.celery = celery
        self.signing_secret = signing_secret
        self.run_status = run_status

    @property
    def shared(self) -> bool:
        return self.celery is not None


def redis_client(redis_url: str) -> Any:
    """The web side's Redis client: short timeouts, one immediate retry, no backoff."""
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    return redis.Redis.from_url(
        redis_url,
        socket_timeout=REDIS_TIMEOUT_SECONDS,
        socket_connect_timeout=REDIS_TIMEOUT_SECONDS,
        retry=Retry(NoBackoff(), 1),  # a dropped idle connection is retried once, at once
        health_check_interval=30,
    )


def web_tier(redis_url: str | None, cache_dir: str) -> WebTier:
    """Celery on Redis when ``redis_url`` is set, else a disk cache under ``cache_dir``."""
    if not redis_url:
        cache = diskcache.Cache(os.path.join(cache_dir, "background"))
        return WebTier(LocalJobs(cache, expire=600))
    client = redis_client(redis_url)
    celery = celery_app(redis_url)
    return WebTier(
        SharedJobs(celery),
        celery=celery,
        signing_secret=SharedSigningSecret(client),
        run_status=SharedRunStatus(client),
    )
