"""WSGI entry point for gunicorn: ``gunicorn --config gunicorn.conf.py app.wsgi:server``.

Settings come from the environment (CAPFC_*), as everywhere; each worker builds the same
app and shares loaded runs through the file-system cache. With CAPFC_REDIS_URL, several
instances share background jobs (run by ``celery -A app.worker worker``) and the current run.
Logging is set up by gunicorn from gunicorn.conf.py's ``logconfig_dict``
(forecasting.observability), before the app is loaded.
"""

from __future__ import annotations

from . import create_app, get_context

app = create_app()
server = app.server
get_context(app).readmodel.warm()  # each worker loads (or reads from the shared cache) at boot
