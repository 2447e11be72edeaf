"""The REST API (``/api/v1``), served by the same Flask server as the Dash app.

Framework: **flask-openapi3** (pydantic models validate requests; the OpenAPI 3.1 document is
written from the same models and code, so it cannot drift from what the server accepts).
:func:`install` wires it into an app built by ``app.create_app``:

- **Sign-in**: the app's gate (app/auth.py) hands every ``/api/v1`` request to
  :class:`ApiAuth`: an OIDC bearer token (client credentials for machines) verified against the
  identity provider's JWKS (:mod:`app.api.tokens`), roles from the same groups claim as the app
  (viewer and up may read). In dev mode, as the app: no sign-in, loopback only, everyone is
  dev-admin, and every answer says so in ``X-Capfc-Auth``.
- **Public**: only the OpenAPI document and its docs page (they hold no data: the API's shape is
  in the code anyway, and clients and code generators must read it before they hold a token).
- **Limits**: a per-client rate limit (``CAPFC_API_RATE_LIMIT``) on the app's Flask-Limiter,
  keyed by the token's subject.
- **Audit**: every call, refused ones included, is one ``capfc.audit`` line (event ``api``).
- **Errors**: RFC 9457 problem details (:mod:`app.api.problems`), never a traceback.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path
from typing import Any

import flask
from flask import Response, g, request, send_from_directory
from flask_openapi3 import OpenAPI
from flask_openapi3.models import Info
from pydantic import ValidationError

from forecasting.observability import audit, bind_context
from forecasting.settings import Settings

from .. import auth as app_auth
from .. import security
from ..errors import report
from . import records as _records  # noqa: F401  (registers its endpoints on the blueprint)
from .index import RunIndexCache
from .problems import PROBLEM_JSON, PROBLEM_SCHEMA, problem
from .routes import EXTENSION, PREFIX, api
from .tokens import TokenVerifier

log = logging.getLogger(__name__)

SPEC_PATH = f"{PREFIX}/openapi.json"
DOCS_PATH = f"{PREFIX}/docs"
DOCS_ASSETS = f"{PREFIX}/docs/assets/"
PUBLIC = (SPEC_PATH, DOCS_PATH, DOCS_ASSETS)
DEV_HEADER = "X-Capfc-Auth"
DEV_NOTICE = "development mode: no sign-in, you are dev-admin"
STATIC = Path(__file__).parent / "static"
API_VERSION = "1.0.0"


def _swagger_dir() -> str:
    import flask_openapi3_swagger

    return os.path.join(os.path.dirname(flask_openapi3_swagger.__file__), "templates", "swagger")


def is_api(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class ApiAuth:
    """Who calls the API: the gate's answer for ``/api/v1`` paths (None = go on)."""

    def __init__(self, gate: app_auth.Gate, settings: Settings) -> None:
        self.gate = gate
        self.settings = settings
        self.verifier = (
            TokenVerifier(settings.auth_issuer, settings.api_audience, leeway=settings.auth_leeway_seconds)
            if settings.auth_issuer and settings.auth_mode != "dev"
            else None
        )

    def __call__(self) -> Response | None:
        path = request.path
        if path in (SPEC_PATH, DOCS_PATH) or path.startswith(DOCS_ASSETS):
            return None
        g.capfc_api = True
        if self.settings.auth_mode == "dev":
            try:
                user = self.gate.authenticate()  # dev-admin, this machine only
            except app_auth.AuthError as e:
                return self._refuse(403, e.reason, "development mode serves this machine only")
        else:
            header = request.headers.get("Authorization", "")
            scheme, _, token = header.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                return self._refuse(
                    401, "no bearer token", "send an OIDC access token: Authorization: Bearer <token>"
                )
            if self.verifier is None:
                return self._refuse(401, "no issuer configured", "this server cannot check API tokens")
            try:
                claims = self.verifier.verify(token.strip())
                user = app_auth.user_from_claims(claims, self.settings)
            except app_auth.AuthError as e:
                if e.status == 503:
                    return self._refuse(
                        503, e.reason, "the identity provider could not be reached; try again"
                    )
                return self._refuse(
                    401, e.reason, "the token could not be verified (expired, forged or not for this API)"
                )
        if not user.can("read"):
            g.capfc_user = user
            bind_context(user=user.id)
            return self._refuse(
                403,
                f"no role (groups claim {self.settings.auth_groups_claim!r})",
                "this client has no role that may read plans (viewer or above)",
            )
        g.capfc_user = user
        bind_context(user=user.id)
        return None

    def _refuse(self, status: int, reason: str, told: str) -> Response:
        log.warning("API %s %s refused (%d): %s", request.method, request.path, status, reason[:300])
        resp = problem(status, told)
        if status == 401:
            resp.headers["WWW-Authenticate"] = 'Bearer realm="capfc-api"'
        return resp


def build_spec(settings: Settings) -> dict[str, Any]:
    """The OpenAPI 3.1 document: flask-openapi3's, plus what it cannot infer (problem details,
    CSV, conditional and redirect answers, the bearer scheme)."""
    spec_app = OpenAPI(
        "capfc-api",
        info=Info(
            title="Capacity Forecaster API",
            version=API_VERSION,
            description=(
                "Read-only access to published capacity plans. A run never changes once published: "
                "its answers carry a strong ETag and may be cached; `latest` redirects (307) to the "
                "current run's id. Lists page with an opaque `cursor` (follow `next`)."
            ),
        ),
        security_schemes={
            "bearer": {
                "type": "http",
                "scheme": "bearer",
                "bearerFormat": "JWT",
                "description": "an OIDC access token from the organisation's identity provider "
                "(client credentials for machines), audience CAPFC_API_AUDIENCE",
            }
        },
        doc_ui=False,
        validation_error_status=400,
    )
    spec_app.register_api(api)
    spec = dict(spec_app.api_doc)
    spec.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
    ref = {"$ref": "#/components/schemas/Problem"}
    errors = {
        "400": "bad parameter, filter, sort, fields or cursor",
        "401": "no valid bearer token",
        "403": "the client's role may not do this (read: viewer and up; decide: planner, admin)",
        "404": "no such run or server",
        "406": "no acceptable media type",
        "429": "rate limit exceeded",
        "503": "the identity provider could not be reached",
    }
    for path, item in spec.get("paths", {}).items():
        for op in item.values():
            responses = op.setdefault("responses", {})
            for code, text in errors.items():
                responses[code] = {"description": text, "content": {PROBLEM_JSON: {"schema": ref}}}
            if "{run_id}" in path:
                responses["304"] = {"description": "not modified (If-None-Match matched the ETag)"}
                responses["307"] = {
                    "description": "`latest`: redirect to the same resource of the current run",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                }
            if "get" in item:  # every read answers If-None-Match
                item["get"]["responses"]["304"] = {
                    "description": "not modified (If-None-Match matched the ETag)"
                }
            if path.endswith("/decisions") and "get" in item:
                item["get"]["responses"]["307"] = {
                    "description": "`latest` as a run parameter: redirect to the current run's id",
                    "headers": {"Location": {"schema": {"type": "string"}}},
                }
            if path.endswith(("/risk", "/recommendations", "/changes", "}/track-record")):
                responses["200"].setdefault("content", {})["text/csv"] = {"schema": {"type": "string"}}
                responses["200"]["headers"] = {
                    "Link": {"schema": {"type": "string"}, "description": 'next page: <url>; rel="next"'},
                    "X-Total-Count": {"schema": {"type": "string"}},
                }
            if "requestBody" in op:
                responses["409"] = {
                    "description": "already done (a run is signed off once)",
                    "content": {PROBLEM_JSON: {"schema": ref}},
                }
                responses["422"] = {
                    "description": "the body is well-formed but cannot be recorded (`param` names the field)",
                    "content": {PROBLEM_JSON: {"schema": ref}},
                }
                created = responses.get("201")
                if created is not None:
                    created["headers"] = {"Location": {"schema": {"type": "string"}}}
            op["security"] = [{"bearer": []}]
    return spec


_SPEC: dict[str, Any] | None = None


def _spec(settings: Settings) -> dict[str, Any]:
    global _SPEC
    if _SPEC is None:
        _SPEC = build_spec(settings)
    return _SPEC


def _docs_page() -> Response:
    """Swagger UI from the flask-openapi3-swagger package (no CDN), started by a script file
    (no inline script: the app's CSP allows scripts from this origin only)."""
    html = (
        "<!doctype html><html lang='en'><head><meta charset='utf-8'>"
        "<title>Capacity Forecaster API</title><link rel='icon' href='data:,'>"
        f"<link rel='stylesheet' href='{DOCS_ASSETS}swagger-ui.css'></head>"
        "<body><div id='swagger-ui'></div>"
        f"<script src='{DOCS_ASSETS}swagger-ui-bundle.js'></script>"
        f"<script src='{DOCS_ASSETS}docs.js' data-spec='{SPEC_PATH}'></script>"
        "</body></html>"
    )
    resp = Response(html, content_type="text/html; charset=utf-8")
    resp.headers["Cache-Control"] = "no-cache"
    return resp


def _docs_asset(name: str) -> Response:
    files = {
        "swagger-ui.css": (os.path.join(_swagger_dir(), "css"), "swagger-ui.css"),
        "swagger-ui-bundle.js": (os.path.join(_swagger_dir(), "js"), "swagger-ui-bundle.js"),
        "docs.js": (str(STATIC), "docs.js"),
    }
    if name not in files:
        return problem(404, "no such file")
    folder, filename = files[name]
    resp = send_from_directory(folder, filename, max_age=3600)
    resp.headers["Cache-Control"] = "public, max-age=3600"
    return resp


def install(app: Any, settings: Settings, gate: app_auth.Gate, limiter: Any, cache_dir: str) -> None:
    """Register ``/api/v1`` on ``app``'s server, behind the gate, the limiter and the audit log."""
    server: flask.Flask = app.server
    readmodel = server.extensions["capfc"].readmodel
    server.extensions[EXTENSION] = RunIndexCache(
        lambda: readmodel.store, os.path.join(cache_dir, "api-forecasts")
    )
    spec = _spec(settings)

    # flask-openapi3 hands pydantic errors to the app's callback: ours answers a problem (400)
    def validation_problem(e: ValidationError) -> Response:
        errors = [
            {
                "loc": [str(p) for p in err.get("loc", ())],
                "msg": str(err.get("msg", ""))[:200],
                "type": err.get("type"),
            }
            for err in e.errors(include_url=False, include_context=False, include_input=False)[:20]
        ]
        where = ", ".join(".".join(x["loc"]) for x in errors[:5])
        return problem(400, f"invalid parameter(s): {where}", title="Bad request", errors=errors)

    server.validation_error_callback = validation_problem  # type: ignore[attr-defined]

    server.register_blueprint(api)
    limiter.limit(settings.api_rate_limit, key_func=security.user_id, per_method=False)(api)

    @server.get(SPEC_PATH)
    def capfc_api_spec() -> Response:
        resp = flask.jsonify(spec)
        resp.headers["Cache-Control"] = "no-cache"
        return resp

    # anything else under /api/v1 is a 404 problem (not the Dash app's catch-all page)
    server.add_url_rule(
        PREFIX + "/<path:rest>",
        "capfc_api_unknown",
        lambda rest: problem(404, f"no such API resource: see {SPEC_PATH}"),
        methods=["GET"],
    )
    server.add_url_rule(DOCS_PATH, "capfc_api_docs", _docs_page)
    server.add_url_rule(DOCS_ASSETS + "<name>", "capfc_api_docs_asset", _docs_asset)
    for endpoint in ("capfc_api_spec", "capfc_api_docs", "capfc_api_docs_asset"):
        limiter.limit(settings.api_rate_limit, key_func=security.client_address)(
            server.view_functions[endpoint]
        )

    gate.api = ApiAuth(gate, settings)
    security.set_problem_responder(
        is_api, lambda status, message, headers: _problem_answer(status, message, headers)
    )

    @server.after_request
    def _api_audit(resp: Response) -> Response:
        if (
            not is_api(request.path)
            or request.path in (SPEC_PATH, DOCS_PATH)
            or request.path.startswith(DOCS_ASSETS)
        ):
            return resp
        user = g.get("capfc_user")
        if settings.auth_mode == "dev" and resp.status_code < 500:
            resp.headers[DEV_HEADER] = DEV_NOTICE
        args = {k: (v if len(v) > 1 else v[0]) for k, v in request.args.lists() if k != "cursor"}
        audit(
            "api",
            f"API {request.method} {request.path[:200]} {resp.status_code}",
            method=request.method,
            route=request.url_rule.rule if request.url_rule is not None else None,
            status=resp.status_code,
            client=user.id if user is not None else None,
            run_id=(request.view_args or {}).get("run_id"),
            server_id=(request.view_args or {}).get("server_id"),
            query=args,
            paged="cursor" in request.args,
        )
        return resp

    log.info("REST API at %s (docs %s)", PREFIX, DOCS_PATH)


def warm(app: Any, after: threading.Thread | None = None) -> threading.Thread | None:
    """Build the latest run's API index in the background (at worker boot), so the first API
    client after a deploy does not wait for it (tens of seconds at 100,000 servers).

    ``after``: a warm-up to wait for first (the pages' read model): each load has its own
    transient peak of memory, and at 100,000 servers the two at once would not fit a worker's
    3 GB; one after the other they do."""
    runs = app.server.extensions.get(EXTENSION)
    if runs is None:
        return None

    def build() -> None:
        if after is not None:
            after.join()
        try:
            latest = runs.store.latest_run_id()
            if latest is not None:
                runs.get(latest)
        except Exception:  # the first request meets (and reports) the same trouble
            log.warning("API index of the latest run could not be built ahead", exc_info=True)

    thread = threading.Thread(target=build, name="capfc-api-warm", daemon=True)
    thread.start()
    return thread


def _problem_answer(status: int, message: str, headers: dict[str, str]) -> Response:
    resp = problem(status, message)
    for k, v in headers.items():
        resp.headers[k] = v
    return resp


def report_problem(e: BaseException) -> Response:
    """An unexpected failure: logged with its traceback under a reference; the client gets the reference."""
    ref = report(log, f"API {request.method} {request.path} failed", e)
    return problem(500, f"something went wrong on the server (reference {ref})", reference=ref)
