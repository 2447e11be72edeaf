"""The Celery worker that runs background callbacks when instances share Redis.

Start it beside the web instances (same image, same CAPFC_* settings, CAPFC_REDIS_URL set):

    celery -A app.worker worker --loglevel=INFO --concurrency=2

It builds the same Dash app as gunicorn does, because Dash registers each background callback
as a Celery task when the callbacks are registered; the task names hash the callbacks' source,
so worker and web instances must run the same code (the same image). Each worker process
loads the current run when it starts, so the first re-forecast does not wait for it.
"""

from __future__ import annotations

import logging

from celery.signals import setup_logging, worker_process_init

from forecasting.observability import SERVICE_WEB, configure_logging
from forecasting.settings import load_settings

from . import create_app, get_context

log = logging.getLogger(__name__)

settings = load_settings()
if not settings.redis_url:
    raise SystemExit("app.worker needs CAPFC_REDIS_URL (the Redis the web instances share)")


@setup_logging.connect
def _json_logs(**_: object) -> None:
    """Keep the one JSON log format: without this hook Celery installs its own on the root logger."""
    configure_logging(settings.log_level, SERVICE_WEB, settings.log_format)


# No packing-kernel warm-up thread: the worker forks its pool and its jobs never pack.
dash_app = create_app(settings, warm_up_kernels=False, serves_http=False)  # no requests: no sign-in
context = get_context(dash_app)
assert context.web is not None and context.web.celery is not None
celery = context.web.celery


@worker_process_init.connect
def _load_current_run(**_: object) -> None:
    """Load the current run in each pool process as it starts (a thread: startup is not held)."""
    context.readmodel.warm()
