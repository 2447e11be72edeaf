"""The app's view of planner decisions and sign-offs: read from the store, cached briefly.

Decisions are appended by any web instance or script (forecasting/records/decisions.py); each
instance re-lists ``decisions/`` at most every :data:`REFRESH_SECONDS` (a LIST plus a GET per
new object), and at once after it records one itself, so a planner sees their own decision
immediately and other instances' within seconds.
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from typing import Any

import pandas as pd

from forecasting.records.decisions import (
    DecisionLog,
    attach_decisions,
    current_decisions,
    decisions_frame,
    read_signoff,
)
from forecasting.sources import StoreError

from . import ids
from .readmodel import Plan, ReadModel

log = logging.getLogger(__name__)

REFRESH_SECONDS = 5.0


class DecisionCache:
    """Decisions and sign-offs of one read model's store."""

    def __init__(self, rm: ReadModel) -> None:
        self.rm = rm
        self._lock = threading.Lock()
        self._log: DecisionLog | None = None
        self._frame: pd.DataFrame | None = None
        self._at = 0.0
        self._signoffs: dict[str, tuple[float, dict | None]] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._at = 0.0
            self._signoffs.clear()

    def all(self) -> pd.DataFrame:
        """Every decision (DECISION_COLUMNS); the last good list when the store is unreachable."""
        with self._lock:
            if self._frame is not None and time.monotonic() - self._at < REFRESH_SECONDS:
                return self._frame
            if self._log is None:
                self._log = DecisionLog(self.rm.store)
            try:
                self._frame = self._log.frame()
            except (StoreError, OSError) as e:
                log.warning("decisions could not be read: %s", e)
                if self._frame is None:
                    return decisions_frame([])
            self._at = time.monotonic()
            return self._frame

    def current(self, plan: Plan) -> pd.DataFrame:
        """The decisions in force for the plan's run, as of today."""
        return current_decisions(self.all(), run_id=plan.run_id)

    def signoff(self, run_id: str) -> dict | None:
        with self._lock:
            hit = self._signoffs.get(run_id)
            if hit is not None and time.monotonic() - hit[0] < REFRESH_SECONDS:
                return hit[1]
        try:
            rec = read_signoff(self.rm.store, run_id)
        except (StoreError, OSError) as e:
            log.warning("sign-off of run %s could not be read: %s", run_id, e)
            return None
        with self._lock:
            self._signoffs[run_id] = (time.monotonic(), rec)
        return rec


_CACHES: weakref.WeakKeyDictionary[ReadModel, DecisionCache] = weakref.WeakKeyDictionary()
_CACHES_LOCK = threading.Lock()


def decisions_of(rm: ReadModel) -> DecisionCache:
    with _CACHES_LOCK:
        cache = _CACHES.get(rm)
        if cache is None:
            cache = _CACHES[rm] = DecisionCache(rm)
        return cache


def with_decisions(rm: ReadModel, plan: Plan, rows: pd.DataFrame, kind: str) -> pd.DataFrame:
    """``rows`` with the decision columns (forecasting.records.decisions.attach_decisions)."""
    subject = "metric" if kind == "risk" else "action"
    return attach_decisions(rows, decisions_of(rm).current(plan), kind, subject=subject)


def split_row_id(row_id: Any) -> tuple[str, str] | None:
    """'<server_id>/<metric>' → (server_id, metric); the metric never contains '/'."""
    if not isinstance(row_id, str) or "/" not in row_id:
        return None
    server, _, metric = row_id.rpartition("/")
    return (server, metric) if server and metric else None


# The Decision column of the risk and recommendation grids: a click on it opens the form.
DECISION_COLUMN_DEF: dict[str, Any] = {
    "field": "decision",
    "headerName": "Decision",
    "minWidth": 170,
    "tooltipField": "decision",
    "headerTooltip": "The planner's decision on this row, carried forward from earlier runs; click to record one",
    "valueFormatter": {"function": "params.value ? params.value : 'Decide…'"},
    "cellClass": "decision-cell",
}
DECISION_EXPORT_COLUMNS = [
    ("decision", "Decision"),
    ("decision_by", "Decided by"),
    ("decision_at", "Decided at (UTC)"),
]


def decision_form() -> Any:
    """The decision modal for a page's layout; a viewer sees why the form is not there."""
    from components.decisions import decision_modal

    from .auth import current_user

    user = current_user()
    denied = None
    if user is None or not user.can("decide"):
        role = user.role if user is not None else "none"
        denied = f"Your role ({role}) can read decisions; recording one needs the planner role."
    return decision_modal(
        modal_id=ids.DECIDE_MODAL,
        target_id=ids.DECIDE_TARGET,
        saved_id=ids.DECIDE_SAVED,
        row_id=ids.DECIDE_ROW,
        choice_id=ids.DECIDE_CHOICE,
        until_id=ids.DECIDE_UNTIL,
        reference_id=ids.DECIDE_REFERENCE,
        reason_id=ids.DECIDE_REASON,
        note_id=ids.DECIDE_NOTE,
        save_id=ids.DECIDE_SAVE,
        cancel_id=ids.DECIDE_CANCEL,
        error_id=ids.DECIDE_ERROR,
        denied_id=ids.DECIDE_DENIED,
        denied=denied,
    )
