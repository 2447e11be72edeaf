"""RFC 9457 problem details: every API error is ``application/problem+json``, never a traceback.

``type`` is ``about:blank`` (the HTTP status says what kind of problem it is), ``title`` a short
summary, ``detail`` the specifics in plain words (never exception text: that goes to the log under
a reference, which the body names), ``instance`` the request path, plus ``request_id``.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Response, g, has_request_context, request
from werkzeug.http import HTTP_STATUS_CODES

PROBLEM_JSON = "application/problem+json"


def problem(status: int, detail: str | None = None, *, title: str | None = None, **extra: Any) -> Response:
    """A problem+json response (``extra``: more members, e.g. ``errors`` or ``param``)."""
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": title or HTTP_STATUS_CODES.get(status, "Error"),
        "status": status,
    }
    if detail:
        body["detail"] = detail
    if has_request_context():
        body["instance"] = request.path
        rid = g.get("capfc_request_id")
        if isinstance(rid, str):
            body["request_id"] = rid
    body.update({k: v for k, v in extra.items() if v is not None})
    resp = Response(json.dumps(body), status=status, content_type=PROBLEM_JSON)
    resp.headers["Cache-Control"] = "no-store"
    return resp


PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "description": "RFC 9457 problem details",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "instance": {"type": "string"},
        "request_id": {"type": "string"},
        "param": {"type": "string"},
        "reference": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object"}},
    },
}
