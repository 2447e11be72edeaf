"""The web tier's HTTP hardening: security headers and CSP, request limits, rate limits on the
expensive callbacks, a cap on concurrent background jobs, and plain 4xx answers to malformed
requests (never a 500, never a traceback).

Everything is wired by :func:`install`, called once by ``app.create_app`` after every callback
is registered (the CSP carries the hashes of Dash's inline scripts, clientside callbacks
included). Maintained libraries do the work: flask-talisman (headers), Flask-Limiter (rate
limits, in memory or in Redis), werkzeug's ProxyFix (client address and scheme behind a proxy).

**Who is the user?** :func:`user_id` keys rate limits and the job cap: the signed-in user
(app/auth.py installs :func:`app.auth.user_key` through :func:`set_user_id_function`), else the
client address (the proxy's X-Forwarded-For when ``proxy_hops`` trusts it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import diskcache
import flask
from dash import Dash
from dash.exceptions import DependencyException
from flask import Response, request
from flask_limiter import Limiter
from flask_limiter.errors import RateLimitExceeded
from flask_talisman import Talisman
from werkzeug.exceptions import HTTPException, RequestEntityTooLarge
from werkzeug.middleware.proxy_fix import ProxyFix

from forecasting.settings import Settings

from . import ids
from .errors import UserFacingError, report, user_message

log = logging.getLogger(__name__)

# ---------------------------------------------------------------- Content Security Policy
#
# Every source is the least that the pages need (checked by tests/test_browser_security.py,
# which fails on any violation while it visits every page, tab, a what-if and an export):
#   default-src 'none'   nothing is allowed unless listed below.
#   script-src 'self'    the app's and Dash's bundles, all served by this app (no CDN); plus the
#                        sha256 of each inline script Dash writes (the renderer start and the
#                        clientside callbacks): app.csp_hashes(). No 'unsafe-inline', no
#                        'unsafe-eval'.
#   style-src 'self'     Bootstrap and assets/10-app.css ...
#     'unsafe-inline'    ... and the <style> elements AG Grid 35's theming API and plotly.js
#                        create at run time (their text depends on grid options and chart
#                        ids, so they cannot be hashed ahead). Styles cannot run script; the
#                        risk left is CSS-based exfiltration, which needs injected markup, and
#                        React escapes all data. See STYLE_SOURCES.
#   img-src 'self' data: the favicon; Bootstrap's form controls draw their arrows and checks
#                        as data: SVG images.
#   connect-src 'self'   callbacks (fetch to /_dash-update-component) and lazy bundles.
#   font-src 'self'      (no web fonts today; kept to the app's own origin).
#   frame-ancestors 'none', base-uri 'none', form-action 'none', object-src 'none'.
STYLE_SOURCES = ["'self'", "'unsafe-inline'"]
BASE_CSP: dict[str, list[str]] = {
    "default-src": ["'none'"],
    "script-src": ["'self'"],
    "style-src": STYLE_SOURCES,
    "img-src": ["'self'", "data:"],
    "font-src": ["'self'"],
    "connect-src": ["'self'"],
    "manifest-src": ["'self'"],
    "frame-ancestors": ["'none'"],
    "base-uri": ["'none'"],
    "form-action": ["'none'"],
    "object-src": ["'none'"],
}
HSTS_MAX_AGE = 63_072_000  # two years, as hstspreload.org asks
# Paths whose responses are the same for everybody and hold no data: cacheable.
STATIC_PREFIXES = ("/assets/", "/_dash-component-suites/", "/_favicon.ico")
# Paths that set their own Cache-Control (the REST API); everything else non-static is no-store.
OWN_CACHE_PREFIXES = ("/api/v1/",)
CALLBACK_PATH = "/_dash-update-component"
HEALTH_ENDPOINT = "healthz"  # the view function of app/__init__.py's /healthz
TEXT = "text/plain; charset=utf-8"


def content_security_policy(app: Dash) -> dict[str, list[str]]:
    """The CSP for ``app``: BASE_CSP plus the hashes of its inline scripts (call after every
    clientside callback is registered)."""
    policy = {k: list(v) for k, v in BASE_CSP.items()}
    policy["script-src"] += list(app.csp_hashes())
    return policy


# ---------------------------------------------------------------- who is the user


def client_address() -> str:
    """The client's address (after ProxyFix, the address the trusted proxy saw)."""
    return request.remote_addr or "unknown"


_user_id_fn: Callable[[], str] = client_address


def set_user_id_function(fn: Callable[[], str]) -> None:
    """Key rate limits and job caps by ``fn()`` (the signed-in user) instead of the address."""
    global _user_id_fn
    _user_id_fn = fn


def user_id() -> str:
    """The id rate limits and job caps are counted under (see :func:`set_user_id_function`)."""
    return _user_id_fn()


# ---------------------------------------------------------------- plain answers


def plain(status: int, message: str, **headers: str) -> Response:
    """A short text/plain answer: what went wrong in words, nothing internal."""
    resp = Response(message.rstrip() + "\n", status=status, content_type=TEXT)
    for k, v in headers.items():
        resp.headers[k.replace("_", "-")] = v
    return resp


# Paths whose errors are answered in another format (the REST API: RFC 9457 problem details).
_problem_responder: tuple[Callable[[str], bool], Callable[[int, str, dict[str, str]], Response]] | None = None


def set_problem_responder(
    matches: Callable[[str], bool], answer: Callable[[int, str, dict[str, str]], Response]
) -> None:
    """Answer errors on paths ``matches`` accepts with ``answer(status, message, headers)``."""
    global _problem_responder
    _problem_responder = (matches, answer)


def _answer(status: int, message: str, **headers: str) -> Response:
    """The error answer for this request: plain text, or the registered format for its path."""
    if _problem_responder is not None and _problem_responder[0](request.path):
        return _problem_responder[1](status, message, {k.replace("_", "-"): v for k, v in headers.items()})
    return plain(status, message, **headers)


class BadCallbackRequestError(Exception):
    """A callback request that does not match any callback of this app."""


# Which expensive work a callback request starts, by an id its outputs name.
EXPENSIVE_OUTPUTS = {
    ids.RISK_DOWNLOAD: "export",
    ids.CONS_DOWNLOAD: "export",
    ids.WHATIF_STATE: "what-if",
    ids.SRV_REFORECAST: "re-forecast",
}


def _output_ids(output: str) -> set[str]:
    """Component ids named by a callback output key ('a.b' or '..a.b...c.d..')."""
    out = set()
    for part in output.strip(".").split("..."):
        cid = part.rsplit(".", 1)[0]
        if cid:
            out.add(cid)
    return out


def expensive_kind(body: Any, args: Mapping[str, str]) -> str | None:
    """'export', 'what-if' or 're-forecast' when this callback request starts such work.

    A what-if counts only when a planner changed a control (not the page's first call); a
    re-forecast only when it starts a job (not the browser polling a running one)."""
    if not isinstance(body, dict) or not isinstance(body.get("output"), str):
        return None
    kinds = {EXPENSIVE_OUTPUTS[c] for c in _output_ids(body["output"]) if c in EXPENSIVE_OUTPUTS}
    if not kinds:
        return None
    kind = sorted(kinds)[0]
    if kind == "what-if" and not body.get("changedPropIds"):
        return None
    if kind == "re-forecast" and args.get("cacheKey"):
        return None
    return kind


def _check_items(items: Any, spec: list[dict[str, Any]], what: str) -> None:
    if not isinstance(items, list):
        raise BadCallbackRequestError(f"'{what}' must be a list")
    if len(items) != len(spec):
        raise BadCallbackRequestError(f"'{what}' has {len(items)} item(s); this callback takes {len(spec)}")
    for item, want in zip(items, spec, strict=True):
        wildcard = isinstance(want.get("id"), str) and want["id"].startswith("{")
        if wildcard:
            if not isinstance(item, list | dict):
                raise BadCallbackRequestError(
                    f"'{what}': a pattern-matching item must be a list or an object"
                )
            continue
        if not isinstance(item, dict):
            raise BadCallbackRequestError(f"'{what}': each item must be an object")
        if item.get("id") != want["id"] or item.get("property") != want["property"]:
            raise BadCallbackRequestError(f"'{what}' does not match this callback's {what}")


def validate_callback_body(app: Dash, body: Any) -> None:
    """Raise :class:`BadCallbackRequestError` unless ``body`` is a well-formed call of a server-side
    callback of ``app`` (known output, inputs and state in the callback's own order)."""
    if not isinstance(body, dict):
        raise BadCallbackRequestError("the body must be a JSON object")
    output = body.get("output")
    if not isinstance(output, str) or not output:
        raise BadCallbackRequestError("'output' must name a callback output")
    spec = app.callback_map.get(output)
    if spec is None or "callback" not in spec:
        raise BadCallbackRequestError("unknown callback output")
    if "outputs" in body and not isinstance(body["outputs"], list | dict):
        raise BadCallbackRequestError("'outputs' must be a list or an object")
    _check_items(body.get("inputs"), spec.get("inputs", []), "inputs")
    _check_items(body.get("state", []), spec.get("state", []), "state")
    changed = body.get("changedPropIds", [])
    if not isinstance(changed, list) or not all(isinstance(c, str) for c in changed):
        raise BadCallbackRequestError("'changedPropIds' must be a list of strings")


# ---------------------------------------------------------------- background job cap


class JobLimitError(UserFacingError):
    """Too many background jobs running, on this instance or for this user. Raised inside the
    callback: the page's alert shows the message (app._on_error), no job process starts."""


class JobSlots:
    """A cap on running background jobs, per instance and per user.

    The registry lives in a diskcache beside the background callback manager's, so every
    gunicorn worker of an instance sees the same jobs. A slot is freed when its job is no
    longer running (the manager says so: a dead process, a finished task), so a job that
    crashed or whose browser went away never holds a slot forever.
    """

    KEY = "jobs"

    def __init__(self, directory: str, max_jobs: int, max_per_user: int):
        self.cache = diskcache.Cache(directory)
        self.max_jobs = max_jobs
        self.max_per_user = max_per_user
        self._lock = threading.Lock()

    def running(self, is_running: Callable[[Any], bool]) -> dict[str, dict[str, Any]]:
        jobs = self.cache.get(self.KEY) or {}
        return {k: v for k, v in jobs.items() if _alive(is_running, v["job"])}

    def refusal(self, user: str, is_running: Callable[[Any], bool]) -> str | None:
        """Why ``user`` may not start a job now (a plain sentence), or None if they may."""
        jobs = self.running(is_running)
        mine = sum(1 for v in jobs.values() if v["user"] == user)
        if mine >= self.max_per_user:
            return (
                f"You already have {mine} re-forecast(s) running (at most {self.max_per_user} at once). "
                "Wait for one to finish or cancel it, then try again."
            )
        if len(jobs) >= self.max_jobs:
            return f"The server is running {len(jobs)} re-forecasts, its limit. Try again in a minute."
        return None

    def start(self, user: str, spawn: Callable[[], Any], is_running: Callable[[Any], bool]) -> Any:
        """Run ``spawn()`` (which starts a job and returns its handle) if both caps allow; the
        check and the registration are one transaction, so two workers cannot both take the
        last slot."""
        with self._lock, self.cache.transact():
            why = self.refusal(user, is_running)
            if why is not None:
                raise JobLimitError(why)
            job = spawn()
            jobs = self.running(is_running)
            jobs[f"{user}:{job}:{time.time()}"] = {"user": user, "job": job, "started": time.time()}
            self.cache.set(self.KEY, jobs)
            return job


class SharedJobSlots(JobSlots):
    """The same caps when background jobs run under Celery on Redis (``CAPFC_REDIS_URL``): the
    registry is one Redis hash shared by every instance, changed under a Redis lock.

    Per user counts the user's jobs on every instance (behind a load balancer a user's clicks
    reach any instance); per instance counts the jobs this instance started (``instance``: the
    host name, shared by its gunicorn workers). A job is running while Celery says so; since
    Celery reports an id it no longer knows as PENDING, a job older than ``max_age`` seconds (the
    results' lifetime) is taken as finished, so no slot is held forever.
    """

    HASH = "capfc:job-slots"
    LOCK = "capfc:job-slots:lock"

    def __init__(
        self, client: Any, instance: str, max_jobs: int, max_per_user: int, max_age: float = 3600.0
    ) -> None:
        self.client = client
        self.instance = instance
        self.max_jobs = max_jobs
        self.max_per_user = max_per_user
        self.max_age = max_age

    def _all(self, is_running: Callable[[Any], bool]) -> dict[str, dict[str, Any]]:
        now = time.time()
        jobs = {}
        for key, raw in self.client.hgetall(self.HASH).items():
            entry = json.loads(raw)
            if now - entry["started"] < self.max_age and _alive(is_running, entry["job"]):
                jobs[key.decode() if isinstance(key, bytes) else key] = entry
        return jobs

    def running(self, is_running: Callable[[Any], bool]) -> dict[str, dict[str, Any]]:
        """This instance's running jobs (what the per-instance cap counts)."""
        return {k: v for k, v in self._all(is_running).items() if v.get("instance") == self.instance}

    def refusal(self, user: str, is_running: Callable[[Any], bool]) -> str | None:
        from redis.exceptions import RedisError

        try:
            jobs = self._all(is_running)
        except RedisError as e:  # Redis down: the start itself fails fast (Celery's broker)
            log.warning("job registry unreachable (%s)", type(e).__name__)
            return None
        mine = sum(1 for v in jobs.values() if v["user"] == user)
        if mine >= self.max_per_user:
            return (
                f"You already have {mine} re-forecast(s) running (at most {self.max_per_user} at once). "
                "Wait for one to finish or cancel it, then try again."
            )
        here = sum(1 for v in jobs.values() if v.get("instance") == self.instance)
        if here >= self.max_jobs:
            return f"The server is running {here} re-forecasts, its limit. Try again in a minute."
        return None

    def start(self, user: str, spawn: Callable[[], Any], is_running: Callable[[Any], bool]) -> Any:
        from redis.exceptions import RedisError

        lock = self.client.lock(self.LOCK, timeout=30, blocking_timeout=10)
        try:
            lock.acquire()
        except RedisError as e:  # Redis down: Celery's broker is too, and the start fails there
            log.warning("job registry unreachable (%s): the start goes to Celery unchecked", type(e).__name__)
            return spawn()
        try:
            return self._start_locked(user, spawn, is_running)
        finally:
            with contextlib.suppress(RedisError):
                lock.release()

    def _start_locked(self, user: str, spawn: Callable[[], Any], is_running: Callable[[Any], bool]) -> Any:
        why = self.refusal(user, is_running)
        if why is not None:
            raise JobLimitError(why)
        job = spawn()
        started = time.time()
        entry = {"user": user, "job": job, "started": started, "instance": self.instance}
        pipe = self.client.pipeline()
        pipe.hset(self.HASH, f"{self.instance}:{user}:{job}:{started}", json.dumps(entry))
        # forget what has ended, so the hash stays the size of what runs
        alive = self._all(is_running)
        for key in self.client.hkeys(self.HASH):
            name = key.decode() if isinstance(key, bytes) else key
            if name not in alive and not name.endswith(f":{job}:{started}"):
                pipe.hdel(self.HASH, name)
        pipe.execute()
        return job


def _alive(is_running: Callable[[Any], bool], job: Any) -> bool:
    try:
        return bool(is_running(job))
    except Exception:  # a job the manager no longer knows is not running
        return False


def cap_background_jobs(app: Dash, slots: JobSlots) -> None:
    """Route every background job start of ``app``'s manager through ``slots``."""
    manager = app._background_manager  # the app's one manager (DiskcacheManager or Celery)
    if manager is None or getattr(manager, "_capfc_capped", False):
        return
    spawn_job = manager.call_job_fn

    def call_job_fn(key: Any, job_fn: Any, args: Any, context: Any) -> Any:
        return slots.start(user_id(), lambda: spawn_job(key, job_fn, args, context), manager.job_running)

    manager.call_job_fn = call_job_fn
    manager._capfc_capped = True


# ---------------------------------------------------------------- install


def install(app: Dash, settings: Settings, cache_dir: str) -> Limiter:
    """Wire headers, limits and error answers into ``app``'s Flask server; returns the limiter."""
    server = app.server
    server.config["MAX_CONTENT_LENGTH"] = settings.max_request_bytes
    if settings.proxy_hops:
        h = settings.proxy_hops
        server.wsgi_app = ProxyFix(server.wsgi_app, x_for=h, x_proto=h, x_host=h, x_port=h)  # type: ignore[method-assign]

    talisman = Talisman(
        server,
        force_https=settings.force_https,
        frame_options="DENY",
        strict_transport_security=True,
        strict_transport_security_max_age=HSTS_MAX_AGE,
        strict_transport_security_include_subdomains=True,
        content_security_policy=content_security_policy(app),
        referrer_policy="no-referrer",
        session_cookie_secure=settings.session_cookie_secure,  # app/auth.py's session cookie
        permissions_policy={
            "camera": "()",
            "microphone": "()",
            "geolocation": "()",
            "payment": "()",
            "usb": "()",
            "browsing-topics": "()",
        },
    )

    # the load balancer's (or App Runner's) health check speaks plain HTTP to the container
    health = server.view_functions.get(HEALTH_ENDPOINT)
    if health is not None:
        talisman(force_https=False)(health)

    # Dash Pages adds an inline script (the title callback) on the first request, after this
    # runs: the hashes are refreshed before each page request, in the policy Talisman sends.
    @server.before_request
    def _refresh_script_hashes():  # type: ignore[no-untyped-def]
        if request.method == "GET" and not request.path.startswith((*STATIC_PREFIXES, *OWN_CACHE_PREFIXES)):
            talisman.content_security_policy["script-src"] = content_security_policy(app)["script-src"]

    limiter = Limiter(
        user_id,
        app=server,
        storage_uri=settings.redis_url or "memory://",
        strategy="moving-window",
        headers_enabled=True,
        key_prefix="capfc",
        # Redis down: count in this process for a while instead of failing every request
        in_memory_fallback_enabled=True,
        swallow_errors=True,
    )
    endpoint = (
        CALLBACK_PATH
        if CALLBACK_PATH in server.view_functions
        else app.config.routes_pathname_prefix + "_dash-update-component"
    )
    view = server.view_functions[endpoint]
    server.view_functions[endpoint] = limiter.limit(
        settings.rate_limit,
        scope=lambda _endpoint: f"expensive:{flask.g.get('capfc_expensive') or 'none'}",
        exempt_when=lambda: not flask.g.get("capfc_expensive"),
        per_method=False,
    )(view)

    slots: JobSlots
    if settings.redis_url:  # jobs run under Celery on Redis: one registry for every instance
        from .background import JOB_RESULT_SECONDS, redis_client

        slots = SharedJobSlots(
            redis_client(settings.redis_url),
            socket.gethostname(),
            settings.max_jobs,
            settings.max_jobs_per_user,
            max_age=JOB_RESULT_SECONDS,
        )
    else:
        slots = JobSlots(os.path.join(cache_dir, "job-slots"), settings.max_jobs, settings.max_jobs_per_user)
    cap_background_jobs(app, slots)
    manager = app._background_manager

    @server.before_request
    def _check_callback_request():  # type: ignore[no-untyped-def]
        if request.method != "POST" or request.endpoint != endpoint:
            return None
        if not request.is_json:
            log.warning("callback request refused: content type %r", request.content_type)
            return plain(415, "Callback requests must be JSON (Content-Type: application/json).")
        raw = request.get_data(cache=True)
        if not raw.strip():
            log.warning("callback request refused: empty body")
            return plain(400, "Bad request: the body is empty; a callback request is a JSON object.")
        try:
            body = json.loads(raw)
        except ValueError:
            log.warning("callback request refused: body is not valid JSON")
            return plain(400, "Bad request: the body is not valid JSON.")
        try:
            validate_callback_body(app, body)
        except BadCallbackRequestError as e:
            log.warning("callback request refused: %s", e)
            return plain(400, f"Bad request: {e}.")
        flask.g.capfc_expensive = expensive_kind(body, request.args)
        if flask.g.capfc_expensive == "re-forecast" and manager is not None:
            why = slots.refusal(user_id(), manager.job_running)
            if why is not None:  # answered as the callback would: the status line says why
                log.warning("background job refused for %s: %s", user_id(), why)
                return flask.jsonify({"multi": True, "response": {ids.SRV_MODEL_STATUS: {"children": why}}})
        return None

    @server.after_request
    def _no_store(resp: Response) -> Response:  # type: ignore[no-untyped-def]
        if request.path.startswith(OWN_CACHE_PREFIXES) and "Cache-Control" in resp.headers:
            return resp  # the REST API sets its own (immutable runs are cacheable)
        if not request.path.startswith(STATIC_PREFIXES):
            resp.headers["Cache-Control"] = "no-store"
            resp.headers.pop("Expires", None)
            resp.headers.pop("Pragma", None)
        return resp

    @server.errorhandler(RateLimitExceeded)
    def _rate_limited(e: RateLimitExceeded):  # type: ignore[no-untyped-def]
        kind = flask.g.get("capfc_expensive") or "request"
        log.warning(
            "rate limit hit: %s by %s (%s)", kind, user_id(), e.description, extra={"user": user_id()}
        )
        resp = _answer(
            429,
            f"Too many {kind} requests: at most {e.description}. Wait a little, then try again.",
        )
        return resp

    @server.errorhandler(RequestEntityTooLarge)
    def _too_large(_e: RequestEntityTooLarge):  # type: ignore[no-untyped-def]
        log.warning("request refused: body over %s bytes", settings.max_request_bytes)
        return _answer(413, f"Request too large: at most {settings.max_request_bytes:,} bytes.")

    @server.errorhandler(DependencyException)
    def _unknown_bundle(_e: DependencyException):  # type: ignore[no-untyped-def]
        log.warning("%s %s: no such component bundle", request.method, request.path)
        return _answer(404, "404 Not Found.")

    @server.errorhandler(HTTPException)
    def _http_error(e: HTTPException):  # type: ignore[no-untyped-def]
        if e.code is None or e.code < 400:  # redirects (e.g. a missing trailing slash) pass as they are
            return e
        if e.code is not None and e.code >= 500:
            ref = report(log, f"{request.method} {request.path} failed", e)
            return _answer(e.code, user_message("Something went wrong on the server", ref))
        log.warning("%s %s: %s %s", request.method, request.path, e.code, e.name)
        allow = {k: v for k, v in e.get_headers() if k.lower() == "allow"}
        return _answer(e.code or 400, f"{e.code} {e.name}.", **allow)

    @server.errorhandler(Exception)
    def _internal_error(e: Exception):  # type: ignore[no-untyped-def]
        ref = report(log, f"{request.method} {request.path} failed", e)
        return _answer(500, user_message("Something went wrong on the server", ref) + " Try again later.")

    return limiter
