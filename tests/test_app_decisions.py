"""The app's decision and sign-off callbacks as plain functions (callbacks/decisions.py), the
role check (app.auth: recording needs "decide"), and the Decision column in the risk export."""

from __future__ import annotations

import shutil
from datetime import UTC, datetime, timedelta

import pytest
from dash.exceptions import PreventUpdate
from flask import g

from app import ids
from app.auth import User, required_permission
from app.decisions import decisions_of
from app.filters import FilterState
from app.readmodel import ReadModel
from app.whatif import ScenarioState
from callbacks import decisions as cb
from callbacks import risk
from forecasting.records.decisions import read_decisions, read_signoff
from forecasting.settings import Settings
from forecasting.sources import open_store

PLANNER = User("p-1", "Pat Planner", frozenset({"planner"}))
VIEWER = User("v-1", "Val Viewer", frozenset({"viewer"}))


@pytest.fixture
def own(plan_store_root, tmp_path, make_app):
    root = tmp_path / "store"
    # without the read leases other tests' apps hold on the shared fixture store
    shutil.copytree(plan_store_root, root, ignore=shutil.ignore_patterns("readers"))
    store = open_store(str(root))
    app = make_app(store, root)
    from app import get_context

    return app, get_context(app).readmodel, store


def _as(app, user):
    ctx = app.server.test_request_context("/")
    ctx.push()
    g.capfc_user = user
    return ctx


def _first_risk_row(rm: ReadModel):
    rows, *_ = risk.risk_view(rm, FilterState().to_data(), ScenarioState().to_data())
    return rows[0]


def test_save_needs_the_decide_permission():
    body = {"output": f"..{ids.DECIDE_SAVED}.data...{ids.DECIDE_ERROR}.children..", "inputs": []}
    assert required_permission(body) == "decide"
    assert required_permission({"output": f"{ids.SIGNOFF_SAVED}.data"}) == "decide"
    assert PLANNER.can("decide") and not VIEWER.can("decide")
    assert User("a", "a", frozenset({"admin"})).can("decide")


def test_open_validate_record_and_show(own):
    app, rm, store = own
    row = _first_risk_row(rm)
    ctx = _as(app, PLANNER)
    try:
        with pytest.raises(PreventUpdate):  # a click on another column: no form
            cb.open_decision(rm, {"colId": "metric_label", "rowId": row["row_id"]})
        is_open, target, *_ = cb.open_decision(rm, {"colId": "decision", "rowId": row["row_id"], "value": ""})
        assert is_open and target["server_id"] == row["server_id"] and target["subject"] == row["metric"]
        saved, error, error_open, modal_open = cb.save_decision(
            rm, target, "deferred", "", None, None, None, 0
        )
        assert error_open and modal_open and "date" in error and read_decisions(store).empty
        past = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()
        assert "future date" in cb.save_decision(rm, target, "deferred", past, None, None, None, 0)[1]
        until = (datetime.now(UTC) + timedelta(days=14)).date().isoformat()
        saved, error, error_open, modal_open = cb.save_decision(
            rm, target, "deferred", until, None, "Q1", None, 0
        )
        assert (saved, error_open, modal_open) == (1, False, False)
        rec = read_decisions(store).iloc[0]
        assert rec["user"] == "p-1" and rec["user_name"] == "Pat Planner" and rec["until"] == until
        shown = _first_risk_row(rm)
        assert shown["decision"] == f"Deferred until {until}" and shown["decision_by"] == "Pat Planner"
        exported = risk.export_rows(rm, FilterState().to_data(), ScenarioState().to_data())
        assert exported[0]["decision"] == f"Deferred until {until}"
        assert ("decision", "Decision") in risk.EXPORT_COLUMNS
        # a row that is not in the run is refused, naming what the server has
        bad = {**target, "subject": "gpu_p95"}
        assert "no risk row" in cb.save_decision(rm, bad, "accepted", None, None, None, None, 1)[1]
    finally:
        ctx.pop()


def test_viewer_cannot_record_or_sign_off(own):
    app, rm, store = own
    row = _first_risk_row(rm)
    target = {
        "kind": "risk",
        "server_id": row["server_id"],
        "subject": row["metric"],
        "run_id": rm.plan().run_id,
    }
    ctx = _as(app, VIEWER)
    try:
        assert "planner role" in cb.save_decision(rm, target, "accepted", None, None, None, None, 0)[1]
        assert "planner role" in cb.save_signoff(rm, "ok", 0)[1]
        _cards, status, disabled, title = cb.record_view(rm, FilterState().to_data())
        assert disabled and "viewer" in title and status == "Not signed off yet."
    finally:
        ctx.pop()
    assert read_decisions(store).empty and read_signoff(store, rm.plan().run_id) is None


def test_overview_count_and_sign_off_once(own):
    app, rm, _store = own
    plan = rm.plan()
    at_risk = int((plan.table("risk")["severity"].astype(str) != "none").sum())
    row = _first_risk_row(rm)
    ctx = _as(app, PLANNER)
    try:
        cards, status, disabled, _ = cb.record_view(rm, FilterState().to_data())
        assert f"{at_risk:,}" in str(cards) and not disabled
        target = {
            "kind": "risk",
            "server_id": row["server_id"],
            "subject": row["metric"],
            "run_id": plan.run_id,
        }
        cb.save_decision(rm, target, "accepted", None, None, None, None, 0)
        cards, *_ = cb.record_view(rm, FilterState().to_data())
        assert f"'{at_risk - 1:,}'" in str(cards)
        assert cb.save_signoff(rm, "looks right", 0)[0] == 1
        _cards, status, disabled, _ = cb.record_view(rm, FilterState().to_data())
        assert status.startswith("Signed off by Pat Planner") and "looks right" in status and disabled
        assert "already signed off" in cb.save_signoff(rm, "again", 1)[1]
    finally:
        ctx.pop()


def test_app_holds_a_read_lease_on_the_run_it_shows(own):
    from forecasting.records.retention import clean_runs, live_readers

    _app, rm, store = own
    run = rm.plan().run_id
    readers = live_readers(store, run)
    assert len(readers) == 1 and readers[0]["reader"].startswith("web ")
    assert clean_runs(store, 1).kept[run] == "LATEST"
    assert decisions_of(rm) is decisions_of(rm)


def test_read_only_store_still_serves(plan_store_root, tmp_path, monkeypatch):
    """A store that refuses the lease write (read-only credentials) only logs."""
    from forecasting.records import retention

    def refuse(*_a, **_k):
        from forecasting.sources import StoreError

        raise StoreError("access denied")

    monkeypatch.setattr(retention, "take_read_lease", refuse)
    rm = ReadModel(open_store(str(plan_store_root)), Settings(data=str(plan_store_root)))
    assert rm.snapshot().plan is not None


def test_recommendation_rows_take_decisions(own):
    from callbacks import consolidation

    app, rm, store = own
    data, scenario = FilterState().to_data(), ScenarioState().to_data()
    rows = consolidation.consolidation_view(rm, data, scenario)[4]
    assert rows, "the fixture plan recommends something other than keep"
    first = rows[0]
    assert first["row_id"] == f"{first['server_id']}/{first['action']}" and first["decision"] == ""
    ctx = _as(app, PLANNER)
    try:
        _open, target, *_ = cb.open_decision(
            rm, {"colId": "decision", "rowId": first["row_id"]}, "recommendation"
        )
        assert target == {
            "kind": "recommendation",
            "server_id": first["server_id"],
            "subject": first["action"],
            "run_id": rm.plan().run_id,
        }
        assert cb.save_decision(rm, target, "rejected", None, None, "app owner objects", None, 0)[0] == 1
    finally:
        ctx.pop()
    rows = consolidation.consolidation_view(rm, data, scenario)[4]
    assert rows[0]["decision"] == "Rejected: app owner objects"
    exported = consolidation.export_rows(rm, data, scenario)
    assert exported[0]["decision"] == "Rejected: app owner objects"
    assert ("decision", "Decision") in consolidation.EXPORT_COLUMNS
    assert read_decisions(store).iloc[0]["kind"] == "recommendation"


def test_server_page_risk_table_shows_the_decision(own):
    from callbacks import server as server_cb

    app, rm, _store = own
    row = _first_risk_row(rm)
    plan = rm.plan()
    target = {"kind": "risk", "server_id": row["server_id"], "subject": row["metric"], "run_id": plan.run_id}
    ctx = _as(app, PLANNER)
    try:
        cb.save_decision(rm, target, "ordered", None, "PO-9", None, None, 0)
    finally:
        ctx.pop()
    table = server_cb.risk_view(plan, row["server_id"], decisions_of(rm).current(plan))
    assert "Ordered (PO-9)" in str(table)
