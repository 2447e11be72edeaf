"""`python -m app`: serve the app with Flask's server on settings.host:port (127.0.0.1:8050).

For development and `make run`; production runs the same app under gunicorn (app.wsgi).
"""

from __future__ import annotations

import logging
import sys

from forecasting.observability import SERVICE_WEB, configure_logging
from forecasting.settings import SettingsError, load_settings

from . import create_app, get_context


def main() -> int:
    try:
        settings = load_settings()
    except SettingsError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    configure_logging(settings.log_level, SERVICE_WEB, settings.log_format)
    # the app writes its own access line per request (app/requestlog.py); not werkzeug's too
    logging.getLogger("werkzeug").setLevel(logging.WARNING)
    try:
        app = create_app(settings)
    except SettingsError as e:  # e.g. no CAPFC_AUTH_MODE: refuse to serve, say why
        print(f"error: {e}", file=sys.stderr)
        return 2
    get_context(app).readmodel.warm()
    print(
        f"Capacity Forecaster on http://{settings.host}:{settings.port} (data: {settings.data})",
        file=sys.stderr,
    )
    app.run(host=settings.host, port=settings.port, debug=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
