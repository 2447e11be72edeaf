"""The decision form (a modal) and the sign-off form: layout only, ids from app.ids."""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import dcc, html

CHOICE_OPTIONS = [
    {"label": "Accept the risk / recommendation", "value": "accepted"},
    {"label": "Defer until a date", "value": "deferred"},
    {"label": "Ordered (capacity or change ordered: give the reference)", "value": "ordered"},
    {"label": "Reject (give the reason)", "value": "rejected"},
]


def _field(label: str, control: Any, control_id: str, help_text: str | None = None) -> html.Div:
    return html.Div(
        [
            dbc.Label(label, html_for=control_id, className="small mb-1"),
            control,
            dbc.FormText(help_text) if help_text else None,
        ],
        className="mb-2",
    )


def decision_modal(
    *,
    modal_id: str,
    target_id: str,
    saved_id: str,
    row_id: str,
    choice_id: str,
    until_id: str,
    reference_id: str,
    reason_id: str,
    note_id: str,
    save_id: str,
    cancel_id: str,
    error_id: str,
    denied_id: str,
    denied: str | None,
) -> html.Div:
    """The modal a planner records a decision in; ``denied`` (a viewer) replaces the form."""
    form = html.Div(
        [
            dbc.RadioItems(id=choice_id, options=CHOICE_OPTIONS, value=None, className="mb-2"),
            _field(
                "Deferred until",
                dbc.Input(id=until_id, type="date"),
                until_id,
                "deferrals only: a future date",
            ),
            _field("Order / change reference", dbc.Input(id=reference_id, maxLength=100), reference_id),
            _field(
                "Reason",
                dbc.Textarea(id=reason_id, maxLength=500, rows=2),
                reason_id,
                "required to reject; optional otherwise",
            ),
            _field("Note", dbc.Textarea(id=note_id, maxLength=500, rows=2), note_id),
        ],
        hidden=denied is not None,
    )
    return html.Div(
        [
            dcc.Store(id=target_id),
            dcc.Store(id=saved_id, data=0),
            dbc.Modal(
                [
                    dbc.ModalHeader(dbc.ModalTitle("Record a decision")),
                    dbc.ModalBody(
                        [
                            html.Div(id=row_id, className="mb-2"),
                            dbc.Alert(denied, color="secondary", id=denied_id, is_open=denied is not None),
                            form,
                            dbc.Alert(id=error_id, color="danger", is_open=False, className="mb-0"),
                        ]
                    ),
                    dbc.ModalFooter(
                        [
                            dbc.Button("Cancel", id=cancel_id, color="secondary", outline=True),
                            dbc.Button(
                                "Save decision", id=save_id, color="primary", disabled=denied is not None
                            ),
                        ]
                    ),
                ],
                id=modal_id,
                is_open=False,
            ),
        ]
    )


def signoff_modal(
    *, modal_id: str, note_id: str, save_id: str, cancel_id: str, error_id: str, saved_id: str
) -> html.Div:
    return html.Div(
        [
            dcc.Store(id=saved_id, data=0),
            dbc.Modal(
                [
                    dbc.ModalHeader(dbc.ModalTitle("Sign off this run")),
                    dbc.ModalBody(
                        [
                            html.P(
                                "Signing off records that you reviewed this plan (your name and the time). "
                                "A signed-off run is kept for ever; it cannot be signed off twice.",
                                className="small",
                            ),
                            _field("Note", dbc.Textarea(id=note_id, maxLength=500, rows=3), note_id),
                            dbc.Alert(id=error_id, color="danger", is_open=False, className="mb-0"),
                        ]
                    ),
                    dbc.ModalFooter(
                        [
                            dbc.Button("Cancel", id=cancel_id, color="secondary", outline=True),
                            dbc.Button("Sign off", id=save_id, color="primary"),
                        ]
                    ),
                ],
                id=modal_id,
                is_open=False,
            ),
        ]
    )
