"""What the per-request access line and EMF metric line cost a web request.

The same small Flask app answers the same request through Flask's test client with and
without the app's request hooks (app/requestlog.py: request id, route template, one JSON
access line, one EMF line with RequestLatencyMs/Http5xx). Output goes to /dev/null, as a
container's stdout pipe costs about the same. Also timed on their own: one JSON log line
through the Powertools formatter, and one EMF line.

    .venv/bin/python benchmarks/bench_observability.py
"""

from __future__ import annotations

import logging
import os
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flask import Flask  # noqa: E402

from app import requestlog  # noqa: E402
from forecasting.observability import (  # noqa: E402
    SERVICE_WEB,
    configure_logging,
    emit_metrics,
    flush_metrics,
    request_metrics,
)

N = 4000


class _NoPlan:
    def loaded_plan(self) -> None:
        return None


def _app(hooks: bool) -> Flask:
    app = Flask("bench")

    @app.get("/servers/<server_id>")
    def server(server_id: str) -> str:
        return "ok " + server_id

    if hooks:
        pages = [{"path": "/servers", "path_template": "/servers/<server_id>"}]
        requestlog.install(app, pages, _NoPlan())  # type: ignore[arg-type]
    return app


def _per_call_us(fn, n: int = N, rounds: int = 5) -> float:
    """Median of ``rounds`` rounds of n calls, in microseconds per call."""
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        times.append((time.perf_counter() - t0) / n * 1e6)
    return statistics.median(times)


def main() -> None:
    real_stdout = sys.stdout
    with open(os.devnull, "w") as devnull:
        sys.stdout = devnull
        try:
            configure_logging("INFO", SERVICE_WEB, "json")
            plain = _app(False).test_client()
            hooked = _app(True).test_client()
            for c in (plain, hooked):  # warm up
                for _ in range(200):
                    c.get("/servers/srv-1")
            # alternate the two apps so a busy machine slows both alike; medians of the pairs
            pairs = [
                (
                    _per_call_us(lambda: plain.get("/servers/srv-1"), 500, 1),
                    _per_call_us(lambda: hooked.get("/servers/srv-1"), 500, 1),
                )
                for _ in range(11)
            ]
            base = statistics.median(p[0] for p in pairs)
            with_hooks = statistics.median(p[1] for p in pairs)
            overhead = statistics.median(p[1] - p[0] for p in pairs)
            log = logging.getLogger("bench")
            line = _per_call_us(
                lambda: log.info("GET %s %s", "/x", 200, extra={"route": "/x", "status": 200})
            )
            buffered = _per_call_us(lambda: request_metrics("/servers/<server_id>", 200, 12.5))
            lat = {"RequestLatencyMs": (12.5, "Milliseconds"), "Http5xx": (0, "Count")}
            direct = _per_call_us(
                lambda: emit_metrics(
                    lat, service=SERVICE_WEB, dimensions={"route": "/x"}, also_by_service=True
                )
            )
            flush_metrics()
        finally:
            sys.stdout = real_stdout
    print(f"{'measure':<46}{'µs':>10}")
    print(f"{'request without hooks (Flask test client)':<46}{base:>10.1f}")
    print(f"{'request with the hooks (access line, metrics)':<46}{with_hooks:>10.1f}")
    print(f"{'  overhead per request (median of pairs)':<46}{overhead:>10.1f}")
    print(f"{'one JSON log line (Powertools formatter)':<46}{line:>10.1f}")
    print(f"{'request metrics, buffered (what runs)':<46}{buffered:>10.1f}")
    print(f"{'request metrics as one EMF line each':<46}{direct:>10.1f}")
    print(f"(load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores while measuring)")


if __name__ == "__main__":
    main()
