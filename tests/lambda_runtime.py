"""A loopback fake of the AWS Lambda Runtime API, for running the image's Lambda entry for real.

Lambda's service cannot run here (AWS's runtime interface emulator is not installable, moto needs
a registry), so this plays the part of the Lambda service's side of the Runtime API — the HTTP
protocol `awslambdaric` speaks inside every Lambda container:

- ``GET  /2018-06-01/runtime/invocation/next`` long-polls until :meth:`FakeLambdaRuntime.invoke`
  queues an event, then answers with the event and the ``Lambda-Runtime-*`` headers;
- ``POST /2018-06-01/runtime/invocation/{id}/response`` and ``.../{id}/error`` complete it;
- ``POST /2018-06-01/runtime/init/error`` records an initialisation failure.

Everything else is 404. The fake also records when the runtime first asked for work (the end of
its cold start) so a test can measure initialisation time.
"""

from __future__ import annotations

import json
import queue
import threading
import time
import uuid
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

PREFIX = "/2018-06-01/runtime"
FUNCTION_ARN = "arn:aws:lambda:us-east-1:123456789012:function:capfc-trigger"


@dataclass
class Invocation:
    """One event handed to the function and what came back."""

    request_id: str
    event: Any
    deadline_ms: int
    delivered: float | None = None  # monotonic time /next handed it out
    finished: float | None = None  # monotonic time the response or error arrived
    outcome: str | None = None  # "response" | "error"
    body: Any = None
    error_type: str | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def duration(self) -> float:
        """Seconds from delivery to the function's answer (Lambda's "Duration")."""
        assert self.delivered is not None and self.finished is not None
        return self.finished - self.delivered


class FakeLambdaRuntime:
    """The Runtime API on 127.0.0.1 (a free port), one function instance at a time."""

    def __init__(self, function_arn: str = FUNCTION_ARN) -> None:
        self.function_arn = function_arn
        self._pending: queue.Queue[Invocation] = queue.Queue()
        self._by_id: dict[str, Invocation] = {}
        self._closed = threading.Event()
        self.first_next: float | None = None  # monotonic time of the first GET /next
        self.init_errors: list[dict[str, Any]] = []
        self.unknown: list[str] = []  # requests outside the API (a test may assert none)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.address = f"127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    # ----------------------------------------------------------------- test side

    def invoke(self, event: Any, timeout: float = 120.0, deadline_s: float = 900.0) -> Invocation:
        """Queue ``event`` for the function and wait until it answers (response or error)."""
        inv = Invocation(
            request_id=str(uuid.uuid4()), event=event, deadline_ms=int((time.time() + deadline_s) * 1000)
        )
        self._by_id[inv.request_id] = inv
        self._pending.put(inv)
        if not inv.done.wait(timeout):
            raise TimeoutError(
                f"the function did not answer invocation {inv.request_id} within {timeout:.0f} s"
            )
        return inv

    def wait_for_first_next(self, timeout: float) -> float:
        """Block until the runtime first asks for work; returns that monotonic time."""
        end = time.monotonic() + timeout
        while self.first_next is None:
            if self.init_errors:
                raise RuntimeError(f"the function failed to initialise: {self.init_errors[0]}")
            if time.monotonic() > end:
                raise TimeoutError(f"the runtime did not call /next within {timeout:.0f} s")
            time.sleep(0.02)
        return self.first_next

    def close(self) -> None:
        self._closed.set()
        self._server.shutdown()
        self._server.server_close()

    # ----------------------------------------------------------------- server side

    def _next(self) -> Invocation | None:
        if self.first_next is None:
            self.first_next = time.monotonic()
        while not self._closed.is_set():
            try:
                inv = self._pending.get(timeout=0.2)
            except queue.Empty:
                continue
            inv.delivered = time.monotonic()
            return inv
        return None

    def _finish(self, request_id: str, outcome: str, body: Any, error_type: str | None) -> bool:
        inv = self._by_id.get(request_id)
        if inv is None or inv.done.is_set():
            return False
        inv.finished = time.monotonic()
        inv.outcome, inv.body, inv.error_type = outcome, body, error_type
        inv.done.set()
        return True

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        runtime = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:  # quiet
                pass

            def _reply(self, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for key, value in (headers or {}).items():
                    self.send_header(key, value)
                self.end_headers()
                self.wfile.write(data)

            def _body(self) -> Any:
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                try:
                    return json.loads(raw) if raw else None
                except ValueError:
                    return raw.decode("utf-8", "replace")

            def do_GET(self) -> None:
                if self.path != f"{PREFIX}/invocation/next":
                    runtime.unknown.append(f"GET {self.path}")
                    self._reply(404, {"errorMessage": "unknown path", "errorType": "NotFound"})
                    return
                inv = runtime._next()
                if inv is None:  # shutting down
                    self._reply(500, {"errorMessage": "runtime closed", "errorType": "Closed"})
                    return
                self._reply(
                    200,
                    inv.event,
                    {
                        "Lambda-Runtime-Aws-Request-Id": inv.request_id,
                        "Lambda-Runtime-Deadline-Ms": str(inv.deadline_ms),
                        "Lambda-Runtime-Invoked-Function-Arn": runtime.function_arn,
                        "Lambda-Runtime-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0",
                    },
                )

            def do_POST(self) -> None:
                body = self._body()
                parts = self.path.removeprefix(PREFIX).strip("/").split("/")
                if parts == ["init", "error"]:
                    runtime.init_errors.append(
                        {"body": body, "type": self.headers.get("Lambda-Runtime-Function-Error-Type")}
                    )
                    self._reply(202, {"status": "OK"})
                    return
                if len(parts) == 3 and parts[0] == "invocation" and parts[2] in ("response", "error"):
                    error_type = self.headers.get("Lambda-Runtime-Function-Error-Type")
                    if runtime._finish(parts[1], parts[2], body, error_type):
                        self._reply(202, {"status": "OK"})
                    else:
                        self._reply(
                            400,
                            {
                                "errorMessage": "unknown or finished request id",
                                "errorType": "InvalidRequestID",
                            },
                        )
                    return
                runtime.unknown.append(f"POST {self.path}")
                self._reply(404, {"errorMessage": "unknown path", "errorType": "NotFound"})

        return Handler
