"""Server forecast (/servers/<server_id>): picker, model chooser, facts, accuracy, risk, charts."""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote

import dash_bootstrap_components as dbc
from dash import dcc, html

from app import ids
from app.pages import PageSpec
from components.layout import loading, page_header, section

MAX_ID_CHARS = 200  # a path segment longer than any server id is not worth carrying around
MODEL_OPTIONS = [
    {"label": "As planned (batch run)", "value": "plan"},
    {"label": "Fleet model", "value": "fleet"},
    {"label": "Prophet", "value": "prophet"},
    {"label": "Seasonal naive", "value": "naive"},
]
HIDDEN = {"display": "none"}
PROGRESS_SHOWN = {"display": "flex", "alignItems": "center", "gap": "0.5rem", "marginLeft": "1rem"}


def _picker(server_id: str | None) -> html.Div:
    options = [{"label": server_id, "value": server_id}] if server_id else []
    return html.Div(
        [
            html.Label("Server", htmlFor=ids.SRV_PICKER, className="me-2 small text-muted mb-0"),
            dcc.Dropdown(
                id=ids.SRV_PICKER,
                options=options,
                value=server_id,
                searchable=True,
                clearable=False,
                placeholder="Search by server id or hostname…",
                style={"minWidth": "320px"},
            ),
        ],
        className="d-flex align-items-center",
    )


def _model_bar() -> html.Div:
    """The model chooser for planners; a note for viewers (the server refuses their re-forecast too)."""
    from app.auth import current_user

    user = current_user()
    if user is None or not user.can("reforecast"):
        return html.Div(
            "Re-forecasting a server needs the planner role.",
            id=ids.SRV_MODEL_DENIED,
            className="model-bar small text-muted mb-3",
            role="note",
        )
    return _model_chooser()


def _model_chooser() -> html.Div:
    return html.Div(
        [
            html.Span("Forecast model", className="small text-muted me-2"),
            dbc.RadioItems(
                id=ids.SRV_MODEL,
                options=MODEL_OPTIONS,
                value="plan",
                inline=True,
                className="btn-group model-chooser",
                input_class_name="btn-check",
                label_class_name="btn btn-outline-primary btn-sm",
                label_checked_class_name="active",
            ),
            html.Div(
                [
                    dbc.Progress(
                        id=ids.SRV_PROGRESS,
                        value=0,
                        max=100,
                        striped=True,
                        animated=True,
                        style={"width": "180px"},
                    ),
                    dbc.Button("Cancel", id=ids.SRV_CANCEL, color="link", size="sm"),
                ],
                id=ids.SRV_PROGRESS_WRAP,
                style=HIDDEN,  # shown while a re-forecast runs (PROGRESS_SHOWN)
            ),
            html.Div(id=ids.SRV_MODEL_STATUS, className="small text-muted ms-3", **{"aria-live": "polite"}),
        ],
        className="model-bar d-flex align-items-center flex-wrap gap-1 mb-3",
    )


def layout(server_id: str | None = None, **_query: Any) -> html.Div:
    """Skeleton only: callbacks/server.py fills it for the server in the path (or explains)."""
    sid = unquote(server_id)[:MAX_ID_CHARS] if isinstance(server_id, str) and server_id else None
    return html.Div(
        [
            dcc.Store(id=ids.SRV_ID, data=sid),
            dcc.Store(id=ids.SRV_REFORECAST),
            page_header(
                "Server forecast",
                "History and forecast per metric, with the confidence bands and the dates a threshold is crossed.",
                right=_picker(sid),
            ),
            html.Div(id=ids.SRV_MESSAGE),
            html.Div(
                [
                    dbc.Row(
                        [
                            dbc.Col(
                                section("Inventory", loading(html.Div(id=ids.SRV_FACTS))),
                                lg=4,
                                className="mb-3",
                            ),
                            dbc.Col(
                                section(
                                    "How far to trust the forecast",
                                    loading(html.Div(id=ids.SRV_ACCURACY)),
                                    subtitle="Backtest accuracy on this server's own history",
                                ),
                                lg=8,
                                className="mb-3",
                            ),
                        ],
                        className="g-3",
                    ),
                    html.Div(
                        section("Breach risk by metric", loading(html.Div(id=ids.SRV_RISK))), className="mb-3"
                    ),
                    _model_bar(),
                    loading(html.Div(id=ids.SRV_CHARTS)),
                ],
                id=ids.SRV_BODY,
                style=HIDDEN if sid is None else None,
            ),
        ]
    )


def title(server_id: str | None = None) -> str:
    sid = unquote(server_id)[:60] if isinstance(server_id, str) else None
    return f"{sid} · Server forecast" if sid else "Server forecast · Capacity Forecaster"


PAGES = [
    PageSpec(
        key="app.pages.server",
        layout=layout,
        path_template="/servers/<server_id>",
        name="Server forecast",
        title=title,
        order=1,
    ),
    PageSpec(
        key="app.pages.server_index",
        layout=layout,
        path="/servers",
        name="Servers",
        title="Server forecast · Capacity Forecaster",
        order=1,
        nav_label="Server forecast",
        nav_path="/servers",
    ),
]
