"""The Dash app factory: settings → store → cached read model → pages, shell and callbacks.

``create_app`` is the composition root: the one place that wires pages (``app/pages``) and
callbacks (``callbacks.register``) to a read model, so tests build fully working apps on
their own stores and gunicorn workers each build the same app from the environment.
"""

from __future__ import annotations

import hashlib
import importlib
import logging
import os
import pkgutil
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import dash
import dash_bootstrap_components as dbc
import plotly.io.json
from dash import Dash, dcc, html, set_props
from flask import current_app
from flask_caching import Cache

from components.filterbar import filter_bar
from components.layout import banner, navbar
from forecasting.consolidation import warm_up
from forecasting.settings import Settings, load_settings
from forecasting.sources import Store, open_store

from . import auth, ids, requestlog, security
from .background import WebTier, web_tier
from .errors import UserFacingError, report, user_message
from .filters import LABELS, PLACEHOLDERS
from .health import HEALTH_PATH as HEALTH_PATH
from .health import READY_PATH as READY_PATH
from .health import add_health_endpoints
from .pages import PageSpec
from .readmodel import ReadModel

log = logging.getLogger(__name__)

ROOT = Path(__file__).resolve().parents[1]
ASSETS = ROOT / "assets"
APP_TITLE = "Capacity Forecaster"
# Bundles Dash loads on demand that every dashboard page needs (paths under _dash-component-suites).
LAZY_SCRIPTS = (
    "dash/dcc/async-graph.js",
    "dash/dcc/async-dropdown.js",
    "dash_ag_grid/async-community.js",
)
EXTENSION = "capfc"


@dataclass
class AppContext:
    """What callbacks and layouts need, hung on the Flask app (``server.extensions['capfc']``)."""

    settings: Settings
    readmodel: ReadModel
    cache_dir: str
    web: WebTier | None = None  # background manager; with Redis, its Celery app (app.worker)


class _Dash(Dash):
    """Dash with plotly.js's cartesian bundle instead of the full one.

    Every chart here is a scatter, bar or heatmap trace. The full plotly.js (4.8 MB) that Dash
    loads on every page took ~0.6 s of the browser's main thread on a first render; the
    cartesian bundle of the same version (1.5 MB, assets/vendor, MIT licence beside it) defines
    ``window.Plotly`` before the renderer starts, and dcc.Graph uses it instead of fetching its
    own. Overrides a private hook of the pinned Dash version; tests/test_app_components.py
    checks the page no longer names the full bundle and the browser tests draw every chart.
    """

    def _setup_plotlyjs(self) -> None:
        self._plotlyjs_url = ""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._setup_lock = threading.Lock()
        super().__init__(*args, **kwargs)

    def _setup_server(self) -> None:
        """Dash's once-per-process set-up, run by the first request, with the requests that
        arrive meanwhile waiting for it.

        Dash marks the set-up done before doing it (registering the component bundles, copying
        the callbacks), and it renders the layout, which waits for the run to load; a request
        arriving meanwhile on another thread skipped it and found no bundle: under gunicorn a
        browser's first page on a fresh worker got 404 for dcc's graph chunk, and no chart drew.
        Overrides a private hook of the pinned Dash version; tests/test_security.py races a
        bundle against a slow first page."""
        with self._setup_lock:
            super()._setup_server()

    # Set by create_app when instances share Redis (app.background.SharedSigningSecret).
    shared_signing_secret: Any = None

    def _get_signing_secret(self) -> bytes:
        """The secret background-job handles are signed with, the same on every instance.

        Overrides a private hook of the pinned Dash version, which otherwise memoises a secret
        per process that expires in the result store (see app.background);
        tests/test_webtier.py polls a job started on one instance from another.
        """
        if self.shared_signing_secret is not None and not getattr(self.server, "secret_key", None):
            return self.shared_signing_secret()
        return super()._get_signing_secret()


def get_context(app: Dash | None = None) -> AppContext:
    """The context of ``app``, or of the app serving the current request."""
    server = app.server if app is not None else current_app
    return server.extensions[EXTENSION]


def default_cache_dir(settings: Settings) -> str:
    """One directory per data location and user, the same in every gunicorn worker."""
    digest = hashlib.sha256(settings.data.encode()).hexdigest()[:12]
    uid = os.getuid() if hasattr(os, "getuid") else 0
    return os.path.join(tempfile.gettempdir(), f"capfc-cache-{uid}-{digest}")


def create_app(
    settings: Settings | None = None,
    store: Store | None = None,
    *,
    cache_type: Literal["filesystem", "simple"] = "filesystem",
    cache_dir: str | None = None,
    warm_up_kernels: bool = True,
    serves_http: bool = True,
) -> Dash:
    """Build the app. Without ``store`` the store named by ``settings.data`` is opened lazily,
    so the app starts (and shows a banner) even when the store is briefly unreachable.

    ``cache_type='filesystem'`` shares loaded runs across gunicorn workers (DESIGN.md §6);
    ``'simple'`` keeps them in the process (tests, single-process runs). Loaded runs stay per
    instance (a run never changes); with ``settings.redis_url`` the background jobs and which
    run is current are shared by every instance (app.background). ``warm_up_kernels=False``
    skips compiling the packing kernel (the Celery worker, which forks and never packs);
    ``serves_http=False`` builds it without the sign-in gate (the worker answers no requests, so
    it needs no CAPFC_AUTH_MODE); every app that serves requests has the gate.
    """
    settings = settings or load_settings()
    cache_dir = cache_dir or default_cache_dir(settings)
    os.makedirs(cache_dir, exist_ok=True)

    web = web_tier(settings.redis_url, cache_dir)
    background = web.manager
    app = _Dash(
        __name__,
        use_pages=True,
        pages_folder="",
        assets_folder=str(ASSETS),
        title=APP_TITLE,
        update_title=None,
        suppress_callback_exceptions=True,
        background_callback_manager=background,
        on_error=_on_error,
        meta_tags=[{"name": "viewport", "content": "width=device-width, initial-scale=1"}],
    )
    app.shared_signing_secret = web.signing_secret
    app.server.config["CACHE_TYPE"] = "FileSystemCache" if cache_type == "filesystem" else "SimpleCache"
    cache = Cache(
        app.server,
        config={
            "CACHE_TYPE": app.server.config["CACHE_TYPE"],
            "CACHE_DIR": os.path.join(cache_dir, "plans"),
            "CACHE_DEFAULT_TIMEOUT": settings.cache_ttl_seconds,
            "CACHE_THRESHOLD": 2000,  # per-server histories are small files; the runs must not be pruned
        },
    )
    with app.server.app_context():
        backend = cache.cache
    source: Store | Any = store if store is not None else (lambda: _open(settings))
    readmodel = ReadModel(source, settings, backend, shared=web.run_status)
    app.server.extensions[EXTENSION] = AppContext(settings, readmodel, cache_dir, web)

    # Dash answers through plotly's JSON encoder; with orjson installed its "auto" engine first
    # walks every grid row in Python (4× slower than the standard encoder on a 10,000-row grid)
    plotly.io.json.config.default_engine = "json"
    # compile the packing kernel while the app boots, not on the first what-if
    if warm_up_kernels:
        threading.Thread(target=warm_up, name="capfc-warm-up", daemon=True).start()
    _preload_lazy_scripts(app)
    for spec in discover_pages():
        dash.register_page(spec.key, **spec.register_kwargs())
    app.layout = _shell_layout
    add_health_endpoints(app.server, lambda: readmodel.store, settings)
    requestlog.install(
        app.server, list(dash.page_registry.values()), readmodel, app.config.routes_pathname_prefix
    )
    # every other route needs a signed-in user (app/auth.py); the probes above stay public.
    # The Celery worker builds the app only to register its background callbacks: no gate.
    gate = auth.install(app, settings) if serves_http else None
    # The composition root is the one place app code meets callbacks (DESIGN.md §2 has
    # callbacks → app): it hands the app to callbacks.register and uses nothing else of it.
    import callbacks

    callbacks.register(app)
    # last: the CSP hashes every inline script, clientside callbacks included
    limiter = security.install(app, settings, cache_dir)
    # the REST API (/api/v1) behind the same gate (bearer tokens), limiter and audit log
    if gate is not None:
        from . import api

        api.install(app, settings, gate, limiter, cache_dir)
    return app


def _preload_lazy_scripts(app: Dash) -> None:
    """Let the browser fetch the lazily loaded bundles (plotly.js, AG Grid, graph and dropdown
    chunks) while the page boots, instead of only when the first chart or grid mounts: on the
    first render they were fetched one after another at the end of the critical path."""
    prefix = app.config.requests_pathname_prefix
    links = "".join(
        f'<link rel="preload" as="script" href="{prefix}_dash-component-suites/{path}">'
        for path in LAZY_SCRIPTS
    )
    app.index_string = app.index_string.replace("{%css%}", "{%css%}\n        " + links, 1)


def _open(settings: Settings) -> Store:
    return open_store(settings.data, endpoint_url=settings.s3_endpoint_url)


def discover_pages() -> list[PageSpec]:
    """Every PageSpec declared by a module of app/pages (the Dash Pages folder)."""
    from . import pages

    specs: list[PageSpec] = []
    for info in sorted(pkgutil.iter_modules(pages.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{pages.__name__}.{info.name}")
        specs.extend(getattr(module, "PAGES", []))
    return specs


def nav_pages() -> list[dict[str, Any]]:
    """Registered pages that have a navbar link, in order."""
    return [p for p in dash.page_registry.values() if p.get("nav_label")]


def _shell_layout() -> html.Div:
    """Called per page load: filter options and "data as of" reflect the current run."""
    ctx = get_context()
    snap = ctx.readmodel.snapshot()
    plan = snap.plan
    options = plan.options if plan is not None else {}
    links = [
        (
            p["nav_label"],
            dash.get_relative_path(p["nav_path"]),
            {"type": ids.NAV_LINK_TYPE, "index": p["nav_path"]},
        )
        for p in nav_pages()
    ]
    interval_ms = max(ctx.settings.cache_ttl_seconds, 60) * 1000
    return html.Div(
        [
            dcc.Location(id=ids.URL, refresh="callback-nav"),
            dcc.Store(id=ids.FILTERS),
            dcc.Store(
                id=ids.SCENARIO_CARRY,
                data={"query": "", "pages": [p["nav_path"] for p in nav_pages() if p.get("scenario")]},
            ),
            navbar(
                links,
                brand=APP_TITLE,
                brand_href=dash.get_relative_path("/"),
                as_of_id=ids.AS_OF,
                as_of=snap.as_of,
                account=_account(ctx.settings),
                account_id=ids.ACCOUNT,
                sign_out_id=ids.SIGN_OUT,
            ),
            banner(
                ids.DEV_BANNER, auth.DEV_BANNER if ctx.settings.auth_mode == "dev" else None, color="danger"
            ),
            banner(ids.STALE_BANNER, snap.status.message if snap.status.stale else None),
            banner(ids.ERROR_ALERT, None, color="danger", dismissable=True),
            banner(ids.FILTER_NOTICE, None, color="info", dismissable=True),
            filter_bar(
                dropdown_ids=ids.FILTER_DROPDOWNS,
                options=options,
                labels=LABELS,
                placeholders=PLACEHOLDERS,
                clear_id=ids.FILTER_CLEAR,
                count_id=ids.FILTER_COUNT,
            ),
            html.Main(dbc.Container(dash.page_container, fluid=True, className="page"), className="app-main"),
            dcc.Interval(id=ids.STATUS_INTERVAL, interval=interval_ms, n_intervals=0),
            html.Div(id=ids.NAV_DUMMY, hidden=True),
        ],
        className="app-shell",
    )


def _account(settings: Settings) -> tuple[str, str, str | None] | None:
    """(name, role, sign-out link) of the signed-in user for the navbar; no sign-out in dev mode."""
    user = auth.current_user()
    if user is None:
        return None
    signout = None if settings.auth_mode == "dev" else auth.LOGOUT_PATH
    return user.name, user.role or "no role", signout


def _on_error(err: Exception) -> None:
    """Any callback failure: the detail and traceback go to the log under a reference; the
    planner sees a generic alert naming that reference (never the exception's text, which can
    name buckets, endpoints or IAM actions)."""
    if isinstance(err, UserFacingError):  # e.g. the background job cap: a plain, expected refusal
        log.warning("callback refused: %s", err.message)
        set_props(ids.ERROR_ALERT, {"is_open": True, "children": [html.Strong("Not done. "), err.message]})
        return
    ref = report(log, "callback failed", err)
    set_props(
        ids.ERROR_ALERT,
        {
            "is_open": True,
            "children": [
                html.Strong("This view could not be updated. "),
                html.Span(
                    user_message("Something went wrong on the server", ref)
                    + " Try again or reload the page; if it keeps happening, give the reference to support."
                ),
            ],
        },
    )
