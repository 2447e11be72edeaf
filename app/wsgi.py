"""WSGI entry point for gunicorn: ``gunicorn --config gunicorn.conf.py app.wsgi:server``.

Settings come from the environment (CAPFC_*), as everywhere; each worker builds the same
app and shares loaded runs through the file-system cache. With CAPFC_REDIS_URL, several
instances share background jobs (run by ``celery -A app.worker worker``) and the current run.
Logging is set up by gunicorn from gunicorn.conf.py's ``logconfig_dict``
(forecasting.observability), before the app is loaded.
"""

from __future__ import annotations

import sys

from forecasting.settings import SettingsError

from . import api, create_app, get_context

try:
    app = create_app()
except SettingsError as e:  # e.g. no CAPFC_AUTH_MODE: the worker does not boot, and says why
    print(f"error: {e}", file=sys.stderr, flush=True)
    raise SystemExit(3) from None  # gunicorn's "worker failed to boot": the arbiter stops
server = app.server
pages = get_context(app).readmodel.warm()  # each worker loads (or reads from the shared cache) at boot
api.warm(app, after=pages)  # then the REST API's index of the latest run (one load's peak at a time)
