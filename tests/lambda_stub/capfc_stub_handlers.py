"""TEMPORARY stand-in for ``forecasting.aws.handlers.trigger`` until that module lands on main.

Mounted into the container by tests/test_container.py; it runs the real batch job on the mounted
store for a schedule event, with the contract's return shape.
"""

from __future__ import annotations

from typing import Any

from forecasting.cli import main
from forecasting.settings import load_settings
from forecasting.sources import open_store


def trigger(event: dict, context: Any = None) -> dict:
    """Run the batch for an EventBridge Scheduler input ``{"trigger": "schedule", ...}``."""
    if not isinstance(event, dict) or event.get("trigger") != "schedule":
        raise ValueError(f"unsupported event: {event!r}")
    code = main(["run", "--horizon", "14", "--no-backtest"])
    if code != 0:
        raise RuntimeError(f"batch exited with {code}")
    run_id = open_store(load_settings().data).latest_run_id()
    return {
        "trigger": "schedule",
        "status": "published",
        "run_id": run_id,
        "request_id": getattr(context, "aws_request_id", None),
    }
