"""Planner decisions (risk page) and run sign-off (overview): open the forms, validate, record.

Recording goes through forecasting.records.decisions (an append-only object per decision, an
audit event each); the gate (app.auth) refuses a viewer's save with a 403 before this code runs,
because the save callbacks' outputs (ids.DECIDE_SAVED, ids.SIGNOFF_SAVED) need "decide".
"""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import Dash, Input, Output, State, ctx, html, no_update
from dash.exceptions import PreventUpdate

from app import get_context, ids
from app.auth import current_user
from app.decisions import decisions_of, split_row_id
from app.filters import FilterState
from app.readmodel import ReadModel
from components.kpi import kpi_card
from components.layout import metric_label
from forecasting.records.decisions import (
    DecisionError,
    check_row,
    new_decision,
    record_decision,
    sign_off,
    undecided_count,
)
from forecasting.sources import StoreError

DECISION_COLUMN = "decision"


def open_decision(rm: ReadModel, cell: Any, kind: str = "risk") -> tuple[Any, ...]:
    """(modal open, target, row text, choice, until, reference, reason, note, error open) for a
    click on a row's Decision cell (a risk row: '<server>/<metric>'; a recommendation row:
    '<server>/<action>'); PreventUpdate for any other cell."""
    if not isinstance(cell, dict) or cell.get("colId") != DECISION_COLUMN:
        raise PreventUpdate
    key = split_row_id(cell.get("rowId"))
    plan = rm.snapshot().plan
    if key is None or plan is None:
        raise PreventUpdate
    server, subject = key
    target = {"kind": kind, "server_id": server, "subject": subject, "run_id": plan.run_id}
    current = str(cell.get("value") or "") or "none"
    what = metric_label(subject) if kind == "risk" else f"recommendation: {subject}"
    text = html.Div(
        [
            html.Strong(f"{server} · {what}"),
            html.Div(f"Run {plan.run_id} · decision in force: {current}", className="small text-muted"),
        ]
    )
    return True, target, text, None, "", "", "", "", False


def save_decision(
    rm: ReadModel,
    target: Any,
    choice: Any,
    until: Any,
    reference: Any,
    reason: Any,
    note: Any,
    saved: Any,
) -> tuple[Any, Any, bool, bool]:
    """(saved counter, error text, error open, modal open): records the decision or says why not."""
    user = current_user()
    if user is None or not user.can("decide"):  # the gate refuses first; never rely on it alone
        return no_update, "Your role cannot record decisions: that needs the planner role.", True, True
    if not isinstance(target, dict):
        return no_update, "Choose a row first.", True, True
    if choice is None:
        return no_update, "Choose a decision.", True, True
    try:
        decision = new_decision(
            kind=str(target.get("kind")),
            server_id=target.get("server_id"),
            subject=target.get("subject"),
            decision=choice,
            run_id=str(target.get("run_id")),
            user=user.id,
            user_name=user.name,
            until=until or None,
            reference=reference,
            reason=reason,
            note=note,
        )
        check_row(rm.store, decision.run_id, decision.kind, decision.server_id, decision.subject)
        record_decision(rm.store, decision)
    except DecisionError as e:
        return no_update, str(e), True, True
    except StoreError as e:
        return no_update, f"The decision could not be saved: {e}", True, True
    decisions_of(rm).invalidate()
    return int(saved or 0) + 1, "", False, False


def record_view(rm: ReadModel, data: Any) -> tuple[Any, Any, bool, Any]:
    """Overview: (cards: risks without a decision, sign-off), the sign-off status line, the
    sign-off button's disabled flag, its title."""
    snap = rm.snapshot()
    plan = snap.plan
    if plan is None:
        return None, None, True, "no run to sign off"
    cache = decisions_of(rm)
    risk = plan.table("risk", FilterState.from_data(data))
    at_risk = 0 if risk is None else int((risk["severity"].astype(str) != "none").sum())
    undecided = 0 if risk is None else undecided_count(risk, cache.current(plan))
    signed = cache.signoff(plan.run_id)
    cards = dbc.Row(
        [
            dbc.Col(
                kpi_card(
                    "Risks without a decision",
                    f"{undecided:,}",
                    f"of {at_risk:,} risks (server × metric) under these filters; decide on the risk page",
                    tone="warning" if undecided else "success",
                    card_id=ids.OV_UNDECIDED,
                ),
                xs=12,
                md=6,
                xl=3,
                className="mb-3",
            )
        ],
        className="g-3",
    )
    if signed:
        status = (
            f"Signed off by {signed.get('user_name', '?')} at {str(signed.get('at', '?')).replace('T', ' ')}"
        )
        status += f": {signed['note']}" if signed.get("note") else ""
        return cards, status, True, "this run is signed off"
    user = current_user()
    if user is None or not user.can("decide"):
        role = user.role if user is not None else "none"
        return (
            cards,
            "Not signed off yet.",
            True,
            f"Your role ({role}) cannot sign off: that needs the planner role.",
        )
    return cards, "Not signed off yet.", False, f"Sign off run {plan.run_id}"


def save_signoff(rm: ReadModel, note: Any, saved: Any) -> tuple[Any, Any, bool, bool]:
    user = current_user()
    if user is None or not user.can("decide"):
        return no_update, "Your role cannot sign off: that needs the planner role.", True, True
    plan = rm.snapshot().plan
    if plan is None:
        return no_update, "There is no run to sign off.", True, True
    try:
        sign_off(rm.store, plan.run_id, user=user.id, user_name=user.name, note=note)
    except DecisionError as e:
        return no_update, str(e), True, True
    except StoreError as e:
        return no_update, f"The sign-off could not be saved: {e}", True, True
    decisions_of(rm).invalidate()
    return int(saved or 0) + 1, "", False, False


def register(app: Dash) -> None:
    rm = get_context(app).readmodel

    @app.callback(
        Output(ids.DECIDE_MODAL, "is_open"),
        Output(ids.DECIDE_TARGET, "data"),
        Output(ids.DECIDE_ROW, "children"),
        Output(ids.DECIDE_CHOICE, "value"),
        Output(ids.DECIDE_UNTIL, "value"),
        Output(ids.DECIDE_REFERENCE, "value"),
        Output(ids.DECIDE_REASON, "value"),
        Output(ids.DECIDE_NOTE, "value"),
        Output(ids.DECIDE_ERROR, "is_open"),
        Input(ids.RISK_GRID, "cellClicked"),
        prevent_initial_call=True,
    )
    def _open(cell: Any) -> tuple[Any, ...]:
        return open_decision(rm, cell)

    @app.callback(
        Output(ids.DECIDE_MODAL, "is_open", allow_duplicate=True),
        Output(ids.DECIDE_TARGET, "data", allow_duplicate=True),
        Output(ids.DECIDE_ROW, "children", allow_duplicate=True),
        Output(ids.DECIDE_CHOICE, "value", allow_duplicate=True),
        Output(ids.DECIDE_UNTIL, "value", allow_duplicate=True),
        Output(ids.DECIDE_REFERENCE, "value", allow_duplicate=True),
        Output(ids.DECIDE_REASON, "value", allow_duplicate=True),
        Output(ids.DECIDE_NOTE, "value", allow_duplicate=True),
        Output(ids.DECIDE_ERROR, "is_open", allow_duplicate=True),
        Input(ids.CONS_RECS_GRID, "cellClicked"),
        prevent_initial_call=True,
    )
    def _open_recommendation(cell: Any) -> tuple[Any, ...]:
        return open_decision(rm, cell, "recommendation")

    @app.callback(
        Output(ids.DECIDE_SAVED, "data"),
        Output(ids.DECIDE_ERROR, "children"),
        Output(ids.DECIDE_ERROR, "is_open", allow_duplicate=True),
        Output(ids.DECIDE_MODAL, "is_open", allow_duplicate=True),
        Input(ids.DECIDE_SAVE, "n_clicks"),
        State(ids.DECIDE_TARGET, "data"),
        State(ids.DECIDE_CHOICE, "value"),
        State(ids.DECIDE_UNTIL, "value"),
        State(ids.DECIDE_REFERENCE, "value"),
        State(ids.DECIDE_REASON, "value"),
        State(ids.DECIDE_NOTE, "value"),
        State(ids.DECIDE_SAVED, "data"),
        prevent_initial_call=True,
    )
    def _save(_n: Any, target: Any, *rest: Any) -> tuple[Any, ...]:
        if not _n:
            raise PreventUpdate
        return save_decision(rm, target, *rest)

    @app.callback(
        Output(ids.DECIDE_MODAL, "is_open", allow_duplicate=True),
        Input(ids.DECIDE_CANCEL, "n_clicks"),
        prevent_initial_call=True,
    )
    def _cancel(_n: Any) -> bool:
        return False

    @app.callback(
        Output(ids.OV_RECORD, "children"),
        Output(ids.SIGNOFF_STATUS, "children"),
        Output(ids.SIGNOFF_OPEN, "disabled"),
        Output(ids.SIGNOFF_OPEN, "title"),
        Input(ids.FILTERS, "data"),
        Input(ids.SIGNOFF_SAVED, "data"),
    )
    def _record(data: Any, _saved: Any) -> tuple[Any, ...]:
        if data is None:
            raise PreventUpdate
        return record_view(rm, data)

    @app.callback(
        Output(ids.SIGNOFF_MODAL, "is_open"),
        Output(ids.SIGNOFF_ERROR, "is_open"),
        Input(ids.SIGNOFF_OPEN, "n_clicks"),
        Input(ids.SIGNOFF_CANCEL, "n_clicks"),
        prevent_initial_call=True,
    )
    def _signoff_open(_open: Any, _cancel: Any) -> tuple[bool, bool]:
        return ctx.triggered_id == ids.SIGNOFF_OPEN, False

    @app.callback(
        Output(ids.SIGNOFF_SAVED, "data"),
        Output(ids.SIGNOFF_ERROR, "children"),
        Output(ids.SIGNOFF_ERROR, "is_open", allow_duplicate=True),
        Output(ids.SIGNOFF_MODAL, "is_open", allow_duplicate=True),
        Input(ids.SIGNOFF_SAVE, "n_clicks"),
        State(ids.SIGNOFF_NOTE, "value"),
        State(ids.SIGNOFF_SAVED, "data"),
        prevent_initial_call=True,
    )
    def _signoff_save(_n: Any, note: Any, saved: Any) -> tuple[Any, ...]:
        if not _n:
            raise PreventUpdate
        return save_signoff(rm, note, saved)
