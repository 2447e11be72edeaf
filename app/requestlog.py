"""One access line and one metric line per request, and a request id echoed to the caller.

Why here and not gunicorn's access log: only the app knows the route template (Flask's rule,
or the Dash page's ``path_template`` such as ``/servers/<server_id>``), the Dash callback a
``/_dash-update-component`` request runs, and (once sign-in binds it) the user. gunicorn's own
access log is therefore off (gunicorn.conf.py), so there is one access line per request.

Every line logged while a request is handled carries its ``request_id`` (taken from
``X-Request-Id``, else ``X-Amzn-Trace-Id``'s root, else generated), which the response echoes
in ``X-Request-Id``. Metrics: ``RequestLatencyMs`` and ``Http5xx`` per request by route, and the
served plan's age (``PlanAgeHours``) at most once a minute per process.
"""

from __future__ import annotations

import logging
import re
import time
from typing import TYPE_CHECKING, Any

import pandas as pd
from flask import Flask, Response, g, request
from werkzeug.exceptions import HTTPException

from forecasting.observability import (
    SERVICE_WEB,
    Throttle,
    bind_context,
    clear_context,
    emit_metrics,
    request_id_from,
    request_metrics,
)

if TYPE_CHECKING:
    from .readmodel import ReadModel

access = logging.getLogger("app.access")

REQUEST_ID_HEADER = "X-Request-Id"
DASH_UPDATE = "_dash-update-component"
UNMATCHED = "<unmatched>"  # no route answered (a 404 from Flask itself)
PAGE_ROUTES = ("/", "/<path:path>")  # Dash's page routes (after its prefix): refined to the page's template
PLAN_AGE_EVERY_SECONDS = 60.0


class PageRoutes:
    """Maps a page URL to its registered Dash page's template (``/servers/<server_id>``)."""

    def __init__(self, pages: list[dict[str, Any]], prefix: str = "/") -> None:
        self.prefix = prefix.rstrip("/")
        self.page_rules = {self.prefix + r for r in PAGE_ROUTES}
        self.patterns: list[tuple[re.Pattern[str], str]] = []
        for page in pages:
            template = page.get("path_template") or page.get("path")
            if not template:
                continue
            parts = re.split(r"(<[^>]+>)", template)
            regex = "".join("[^/]+" if p.startswith("<") else re.escape(p) for p in parts)
            self.patterns.append((re.compile(f"^{regex}/?$"), template))

    def template(self, path: str) -> str | None:
        if self.prefix and path.startswith(self.prefix):
            path = path[len(self.prefix) :] or "/"
        for pattern, template in self.patterns:
            if pattern.match(path):
                return template
        return None


def route_of(pages: PageRoutes) -> str:
    """The route template of the current request (never the raw path: ids stay out of metrics)."""
    rule = request.url_rule.rule if request.url_rule is not None else None
    if rule is None:
        return UNMATCHED
    if rule in pages.page_rules and request.method == "GET":
        return pages.template(request.path) or rule
    return rule


def callback_of() -> str | None:
    """The output a Dash callback request updates (e.g. ``ov-heatmap.figure``)."""
    if not request.path.endswith(DASH_UPDATE):
        return None
    try:
        body = request.get_json(silent=True, cache=True)
    except HTTPException:  # a body over MAX_CONTENT_LENGTH (answered 413), a wrong content type
        return None
    output = body.get("output") if isinstance(body, dict) else None
    return output[:200] if isinstance(output, str) else None


def install(server: Flask, pages: list[dict[str, Any]], readmodel: ReadModel, prefix: str = "/") -> None:
    """Register the hooks on the Flask server (after the Dash pages are registered)."""
    routes = PageRoutes(pages, prefix)
    plan_age = Throttle(PLAN_AGE_EVERY_SECONDS)

    @server.before_request
    def _start() -> None:
        g.capfc_t0 = time.perf_counter()
        g.capfc_request_id = request_id_from(request.headers)
        bind_context(request_id=g.capfc_request_id)

    @server.after_request
    def _finish(response: Response) -> Response:
        t0 = g.get("capfc_t0")
        if t0 is None:  # a request that failed before our first hook ran
            return response
        duration_ms = round((time.perf_counter() - t0) * 1000, 2)
        response.headers[REQUEST_ID_HEADER] = g.capfc_request_id
        route, status = route_of(routes), response.status_code
        fields: dict[str, Any] = {
            "method": request.method,
            "route": route,
            "path": request.path,
            "status": status,
            "duration_ms": duration_ms,
        }
        if response.content_length is not None:
            fields["bytes"] = response.content_length
        callback = callback_of()
        if callback:
            fields["callback"] = callback
        level = logging.ERROR if status >= 500 else logging.INFO
        access.log(level, "%s %s %s %.1f ms", request.method, route, status, duration_ms, extra=fields)
        request_metrics(route, status, duration_ms)
        if plan_age.due():
            _plan_age(readmodel)
        return response

    @server.teardown_request
    def _forget(_exc: BaseException | None) -> None:
        clear_context()  # gunicorn's threads serve request after request


def _plan_age(readmodel: ReadModel) -> None:
    """Hours since the served plan's run was created: alarms on a batch that stopped."""
    plan = readmodel.loaded_plan()
    if plan is None or plan.created_at is None:
        return
    created = plan.created_at if plan.created_at.tzinfo else plan.created_at.tz_localize("UTC")
    hours = (pd.Timestamp.now(tz="UTC") - created) / pd.Timedelta(hours=1)
    emit_metrics({"PlanAgeHours": (round(hours, 3), "None")}, service=SERVICE_WEB)
