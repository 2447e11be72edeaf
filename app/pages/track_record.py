"""Track record (/track-record): how right past runs were, measured on this fleet's own actuals.

For a chosen run and server: the predicted path and band against what happened; across runs:
band coverage over time; a summary per run and, for the chosen run, per business unit × metric
× model and per breach call. The figures come from the side records that
``python -m forecasting track-record`` writes beside each run (forecasting.records.track).
"""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import dcc, html

from app import ids
from app.pages import PageSpec
from components.figures import GRAPH_CONFIG, GRAPH_STYLE
from components.grid import data_grid, date_column, number_column, server_link_column, text_column
from components.layout import loading, page_header, section

RUNS_COLUMNS = [
    text_column("run_id", "Run", minWidth=190, pinned="left"),
    date_column("forecast_origin", "Forecast from", minWidth=115),
    date_column("as_of", "Actuals to", minWidth=110),
    text_column("elapsed", "Elapsed", minWidth=95),
    number_column("series", "Series", decimals=0, minWidth=85),
    number_column("mase_mean", "MASE mean", decimals=2, minWidth=95),
    number_column("mase_median", "MASE median", decimals=2, minWidth=100),
    number_column("coverage_80", "80 % band", suffix=" %", decimals=0, minWidth=95),
    number_column("coverage_95", "95 % band", suffix=" %", decimals=0, minWidth=95),
    number_column("hit", "Came true", decimals=0, minWidth=95),
    number_column("missed", "Missed", decimals=0, minWidth=85),
    number_column("false_alarm", "False alarms", decimals=0, minWidth=105),
    number_column("pending", "Pending", decimals=0, minWidth=90),
    number_column("precision", "Precision", suffix=" %", decimals=0, minWidth=95),
    number_column("recall", "Recall", suffix=" %", decimals=0, minWidth=85),
]
BREAKDOWN_COLUMNS = [
    text_column("business_unit", "Business unit", minWidth=130),
    text_column("metric_label", "Metric", minWidth=110),
    text_column("model", "Model", minWidth=90),
    number_column("series", "Series", decimals=0, minWidth=80),
    number_column("mase_mean", "MASE mean", decimals=2, minWidth=95),
    number_column("coverage_80", "80 % band", suffix=" %", decimals=0, minWidth=95),
    number_column("hit", "Came true", decimals=0, minWidth=90),
    number_column("missed", "Missed", decimals=0, minWidth=85),
    number_column("false_alarm", "False alarms", decimals=0, minWidth=100),
    number_column("pending", "Pending", decimals=0, minWidth=85),
]
SERIES_COLUMNS = [
    server_link_column(pinned="left", minWidth=115),
    text_column("business_unit", "Business unit", minWidth=130),
    text_column("metric_label", "Metric", minWidth=110),
    text_column("model", "Model", minWidth=90),
    text_column("outcome_label", "Outcome", minWidth=120),
    date_column("breach_expected", "Called for", minWidth=110),
    date_column("actual_crossing", "Crossed on", minWidth=110),
    number_column("days_off", "Days off", decimals=0, minWidth=90),
    number_column("mase", "MASE", decimals=2, minWidth=80),
    number_column("coverage_80", "80 % band", suffix=" %", decimals=0, minWidth=95),
]


def layout(**query: Any) -> html.Div:
    """Skeleton; callbacks/track_record.py fills the pickers, charts and tables."""
    pickers = dbc.Row(
        [
            dbc.Col(
                [
                    dbc.Label("Run", html_for=ids.TR_RUN, className="small mb-1"),
                    dcc.Dropdown(id=ids.TR_RUN, clearable=False, placeholder="a past run"),
                ],
                md=5,
            ),
            dbc.Col(
                [
                    dbc.Label("Server", html_for=ids.TR_SERVER, className="small mb-1"),
                    dcc.Dropdown(id=ids.TR_SERVER, clearable=False, placeholder="server"),
                ],
                md=4,
            ),
            dbc.Col(
                [
                    dbc.Label("Metric", html_for=ids.TR_METRIC, className="small mb-1"),
                    dcc.Dropdown(id=ids.TR_METRIC, clearable=False, placeholder="metric"),
                ],
                md=3,
            ),
        ],
        className="g-2 mb-3",
    )
    grid_opts = {"tooltipShowDelay": 300}
    return html.Div(
        [
            page_header(
                "Track record",
                "What past runs predicted against what happened since: error (MASE), band coverage, and the "
                "breach calls that came true, were missed or were false alarms — on this fleet's own data.",
            ),
            pickers,
            html.Div(id=ids.TR_ALERT),
            loading(html.Div(id=ids.TR_KPIS, className="kpi-area")),
            section(
                "Predicted path and band against what happened",
                loading(
                    dcc.Graph(
                        id=ids.TR_PATH_CHART, config=GRAPH_CONFIG, style={**GRAPH_STYLE, "minHeight": "380px"}
                    )
                ),
            ),
            html.Div(className="mb-3"),
            dbc.Row(
                [
                    dbc.Col(
                        section(
                            "Coverage over time",
                            loading(
                                dcc.Graph(id=ids.TR_COVERAGE_CHART, config=GRAPH_CONFIG, style=GRAPH_STYLE)
                            ),
                        ),
                        lg=5,
                        className="mb-3",
                    ),
                    dbc.Col(
                        section(
                            "By business unit, metric and model",
                            loading(
                                data_grid(
                                    ids.TR_BREAKDOWN_GRID,
                                    [],
                                    BREAKDOWN_COLUMNS,
                                    height=340,
                                    row_id_field="row_id",
                                    options=grid_opts,
                                )
                            ),
                            subtitle="The chosen run, under the filter bar's selection.",
                        ),
                        lg=7,
                        className="mb-3",
                    ),
                ],
                className="g-3",
            ),
            section(
                "Every run with a track record",
                loading(
                    data_grid(
                        ids.TR_RUNS_GRID,
                        [],
                        RUNS_COLUMNS,
                        height=260,
                        row_id_field="run_id",
                        options=grid_opts,
                    )
                ),
                subtitle="A call is the expected breach date; it came true when the actuals crossed the threshold "
                "within the tolerance of it.",
            ),
            html.Div(className="mb-3"),
            section(
                "Breach calls and crossings of the chosen run",
                loading(
                    data_grid(
                        ids.TR_SERIES_GRID,
                        [],
                        SERIES_COLUMNS,
                        height=360,
                        row_id_field="row_id",
                        options={
                            **grid_opts,
                            "localeText": {"noRowsToShow": "No call and no crossing under these filters"},
                        },
                    )
                ),
                subtitle="Series with a call or a crossing (quiet series left out).",
            ),
        ]
    )


PAGES = [
    PageSpec(
        key="app.pages.track_record",
        layout=layout,
        path="/track-record",
        name="Track record",
        title="Track record · Capacity Forecaster",
        order=5,
        nav_label="Track record",
        nav_path="/track-record",
        description="How right past runs were, on this fleet's own actuals.",
    )
]
