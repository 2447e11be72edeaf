"""Liveness ``GET /healthz`` and readiness ``GET /readyz`` for load balancers and orchestrators.

Liveness says only that the process answers: restarting a container never fixes a store that
cannot be reached, so data trouble must not fail it, and it never touches the store. Readiness
says whether this instance can serve a plan: the plan store answers and its latest run can be
read; with ``ready_max_plan_age_hours`` set, an old plan reads "stale" but stays ready (an old
plan is better than none). Bodies never carry exception text (bucket names, endpoints): the
detail goes to the log.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import pandas as pd
from werkzeug.wrappers import Response

from forecasting.settings import Settings
from forecasting.sources import Store

log = logging.getLogger(__name__)

HEALTH_PATH = "/healthz"
READY_PATH = "/readyz"
# A public endpoint that reads the store must not let a flood of probes become a flood of reads.
READY_CACHE_SECONDS = 5.0
NO_STORE = "plan store unreachable"
NO_PLAN = "no plan published"
BAD_PLAN = "latest plan unreadable"


def readiness(
    store: Callable[[], Store], settings: Settings, now: pd.Timestamp
) -> tuple[int, dict[str, Any]]:
    """(HTTP status, body) of the readiness check: reads runs/LATEST and its manifest."""
    try:
        run_id = store().latest_run_id()
    except Exception:  # any failure reaching the store reads the same to a prober
        log.exception("readiness: plan store %s unreachable", settings.data)
        return 503, {"status": "unavailable", "reason": NO_STORE}
    if run_id is None:
        log.warning("readiness: no plan published in %s", settings.data)
        return 503, {"status": "unavailable", "reason": NO_PLAN}
    try:
        manifest = store().read_manifest(run_id)
    except Exception:
        log.exception("readiness: manifest of run %s unreadable", run_id)
        return 503, {"status": "unavailable", "reason": BAD_PLAN, "run_id": run_id}
    age = _age_hours(manifest.get("created_at") if isinstance(manifest, dict) else None, now)
    limit = settings.ready_max_plan_age_hours
    stale = age is not None and limit is not None and age > limit
    if stale:
        log.warning("readiness: plan %s is %.2f h old (limit %g h)", run_id, age, limit)
    shown = round(age, 3) if age is not None else None
    body: dict[str, Any] = {"status": "stale" if stale else "ok", "run_id": run_id, "plan_age_hours": shown}
    if limit is not None:
        body["max_plan_age_hours"] = limit
    return 200, body


def _age_hours(created_at: Any, now: pd.Timestamp) -> float | None:
    try:
        ts = pd.Timestamp(created_at)
    except (TypeError, ValueError):
        return None
    if pd.isna(ts):
        return None
    ts = ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
    return max((now - ts).total_seconds(), 0.0) / 3600.0


class HealthMiddleware:
    """WSGI middleware answering the two probes before Flask sees them.

    Why not Flask routes: Dash's first-request setup renders the page shell, which reads the
    store and waits for the run being loaded at boot; a probe must not. Everything else passes
    through to the wrapped app.
    """

    def __init__(self, app: Any, store: Callable[[], Store], settings: Settings) -> None:
        self.app = app
        self.store = store
        self.settings = settings
        self._lock = threading.Lock()
        self._memo: tuple[float, int, dict[str, Any]] | None = None

    def __call__(self, environ: dict, start_response: Callable) -> Any:
        path = environ.get("PATH_INFO", "")
        if path == HEALTH_PATH:
            return _json(200, {"status": "ok"})(environ, start_response)
        if path == READY_PATH:
            code, body = self.ready()
            return _json(code, body)(environ, start_response)
        return self.app(environ, start_response)

    def ready(self) -> tuple[int, dict[str, Any]]:
        with self._lock:  # concurrent probes share one check
            memo = self._memo
            if memo is not None and time.monotonic() - memo[0] < READY_CACHE_SECONDS:
                return memo[1], memo[2]
            code, body = readiness(self.store, self.settings, pd.Timestamp.now(tz="UTC"))
            self._memo = (time.monotonic(), code, body)
            return code, body


def _json(code: int, body: dict[str, Any]) -> Response:
    response = Response(json.dumps(body), status=code, mimetype="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def add_health_endpoints(server: Any, store: Callable[[], Store], settings: Settings) -> None:
    """Answer /healthz and /readyz on the Flask ``server``; ``store`` opens (or returns) the plan store."""
    server.wsgi_app = HealthMiddleware(server.wsgi_app, store, settings)
