"""Fleet overview (/): KPIs, utilization heatmap and distribution, fleet trend, top risks."""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import dcc, html

from app import ids
from app.pages import PageSpec
from components.decisions import signoff_modal
from components.figures import GRAPH_CONFIG, GRAPH_STYLE
from components.layout import loading, page_header, section
from forecasting.schema import METRICS

DEFAULT_METRIC = "cpu_p95"


def metric_picker(picker_id: str, value: str = DEFAULT_METRIC) -> html.Div:
    return html.Div(
        [
            html.Label("Metric", htmlFor=picker_id, className="me-2 small text-muted mb-0"),
            dcc.Dropdown(
                id=picker_id,
                options=[{"label": spec.label, "value": name} for name, spec in METRICS.items()],
                value=value,
                clearable=False,
                searchable=False,
                style={"minWidth": "180px"},
            ),
        ],
        className="d-flex align-items-center",
    )


def _graph(graph_id: str) -> dbc.Card:
    return dbc.Card(
        dbc.CardBody(
            loading(dcc.Graph(id=graph_id, config=GRAPH_CONFIG, style={**GRAPH_STYLE, "minHeight": "360px"}))
        ),
        className="section-card h-100",
    )


def _record() -> html.Div:
    """Decisions still to make and the run's sign-off (filled by callbacks/decisions.py)."""
    return html.Div(
        [
            html.Div(id=ids.OV_RECORD),
            html.Div(
                [
                    html.Span(id=ids.SIGNOFF_STATUS, className="me-3 small"),
                    dbc.Button(
                        "Sign off this run…", id=ids.SIGNOFF_OPEN, size="sm", color="primary", outline=True
                    ),
                ],
                className="d-flex align-items-center mb-3",
            ),
            signoff_modal(
                modal_id=ids.SIGNOFF_MODAL,
                note_id=ids.SIGNOFF_NOTE,
                save_id=ids.SIGNOFF_SAVE,
                cancel_id=ids.SIGNOFF_CANCEL,
                error_id=ids.SIGNOFF_ERROR,
                saved_id=ids.SIGNOFF_SAVED,
            ),
        ]
    )


def layout(**_query: Any) -> html.Div:
    """The page skeleton; every value is filled by callbacks/overview.py from the filters."""
    return html.Div(
        [
            page_header(
                "Fleet overview",
                "Where the fleet stands today and where the forecast says it is heading.",
                right=metric_picker(ids.OV_METRIC),
            ),
            html.Div(id=ids.OV_EMPTY),
            html.Div(
                [
                    loading(html.Div(id=ids.OV_KPIS, className="kpi-area")),
                    _record(),
                    dbc.Row(
                        [
                            dbc.Col(_graph(ids.OV_HEATMAP), lg=6, className="mb-3"),
                            dbc.Col(_graph(ids.OV_DISTRIBUTION), lg=6, className="mb-3"),
                        ],
                        className="g-3",
                    ),
                    dbc.Row(dbc.Col(_graph(ids.OV_TREND), className="mb-3")),
                    section(
                        "Top risks",
                        [
                            html.Div(id=ids.OV_TOP_RISKS_NOTE, className="small text-muted mb-2"),
                            loading(html.Div(id=ids.OV_TOP_RISKS)),
                        ],
                        subtitle="The riskiest servers under the filters, worst metric each. Click a server to open its forecast.",
                    ),
                ],
                id=ids.OV_CONTENT,
            ),
        ]
    )


PAGES = [
    PageSpec(
        key="app.pages.overview",
        layout=layout,
        path="/",
        name="Overview",
        title="Fleet overview · Capacity Forecaster",
        order=0,
        nav_label="Overview",
        nav_path="/",
        description="KPIs, utilization and trends of the server fleet, with the top capacity risks.",
    )
]
