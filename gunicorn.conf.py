"""gunicorn settings for the container (AWS App Runner) and `make serve`: one command, both places.

Environment: PORT (default 8080), WEB_CONCURRENCY (workers, default 2), GUNICORN_THREADS
(default 4), GUNICORN_TIMEOUT (seconds, default 60); logging follows CAPFC_LOG_LEVEL and
CAPFC_LOG_FORMAT like every other entry point. Long work (a Prophet re-forecast) runs in
background callbacks, so no request should come near the timeout.
"""

import os

from forecasting.observability import flush_metrics, gunicorn_logconfig
from forecasting.settings import SettingsError, load_settings


def _int(name: str, default: int) -> int:
    raw = os.environ.get(name, "").strip()
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise SystemExit(f"{name}={raw!r} is not a whole number") from None
    if value < 1:
        raise SystemExit(f"{name}={value} must be at least 1")
    return value


bind = f"0.0.0.0:{_int('PORT', 8080)}"
workers = _int("WEB_CONCURRENCY", 2)
threads = _int("GUNICORN_THREADS", 4)
worker_class = "gthread"
timeout = _int("GUNICORN_TIMEOUT", 60)
graceful_timeout = 30
keepalive = 5
# Logs: gunicorn's own lines and the app's, through one JSON handler on stdout at CAPFC_LOG_LEVEL
# (CAPFC_LOG_FORMAT=text for a terminal). gunicorn's access log is off: the app writes one access
# line per request with what only it knows (route template, Dash callback, request id, user):
# app/requestlog.py. Two access lines per request would double the log volume for nothing.
try:
    _settings = load_settings()
except SettingsError as e:
    raise SystemExit(str(e)) from None
logconfig_dict = gunicorn_logconfig(_settings.log_level, _settings.log_format)
loglevel = _settings.log_level.lower()
accesslog = None
errorlog = "-"
# gunicorn 25+ opens a control socket under $HOME; in the image $HOME is the root-owned /app, so
# it fails with "Permission denied: '/app/.gunicorn'". Nothing here uses `gunicornc`.
control_socket_disable = True
# Workers each import the app; the file-system cache lets them share loaded runs.
preload_app = False
# HTTPS and client-address detection behind a proxy is the app's ProxyFix (CAPFC_PROXY_HOPS: how
# many proxies' X-Forwarded-For/-Proto/-Host to trust; app/security.py). gunicorn itself trusts
# no forwarded header, so there is one mechanism, the same under `python -m app`.
forwarded_allow_ips = ""
secure_scheme_headers: dict[str, str] = {}


def worker_exit(server, worker):  # gunicorn calls it with these two
    """Write the request metrics a worker still buffers before it goes (also done at exit)."""
    flush_metrics()
