"""Changes between two runs (/changes): what changed since the last plan, and why.

Defaults to the latest run against the one before; the pickers choose any two runs. The global
filter bar (business unit and the other dimensions) narrows every table, chart and total.
"""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import dcc, html

from app import ids
from app.pages import PageSpec
from components.figures import GRAPH_CONFIG, GRAPH_STYLE
from components.grid import (
    data_grid,
    date_column,
    money_column,
    number_column,
    server_link_column,
    severity_column,
    text_column,
)
from components.layout import loading, page_header, section

NEW_COLUMNS = [
    server_link_column(pinned="left", minWidth=115),
    text_column("business_unit", "Business unit", minWidth=130),
    text_column("metric_label", "Metric", minWidth=110),
    severity_column("severity_before", "Before", minWidth=100),
    severity_column("severity", "Now", minWidth=100),
    date_column("breach_expected", "Expected breach", minWidth=120),
    number_column("probability", "P(breach)", suffix=" %", minWidth=95),
    text_column("why", "Why", minWidth=260, flex=1, tooltipField="why"),
    text_column("reason", "Reason", minWidth=260, flex=1, tooltipField="reason"),
]
RESOLVED_COLUMNS = [
    server_link_column(pinned="left", minWidth=115),
    text_column("business_unit", "Business unit", minWidth=130),
    text_column("metric_label", "Metric", minWidth=110),
    severity_column("severity_before", "Before", minWidth=100),
    date_column("breach_expected_before", "Breach expected before", minWidth=130),
    text_column("severity", "Now", minWidth=100),
    number_column("current_p95", "Current p95", decimals=1, minWidth=100),
    text_column("why", "Why", minWidth=300, flex=1, tooltipField="why"),
]
MOVED_COLUMNS = [
    server_link_column(pinned="left", minWidth=115),
    text_column("business_unit", "Business unit", minWidth=130),
    text_column("metric_label", "Metric", minWidth=110),
    date_column("breach_before", "Breach before", minWidth=115),
    date_column("breach_after", "Breach now", minWidth=115),
    number_column("days_moved", "Days moved", decimals=0, minWidth=100, filter="agNumberColumnFilter"),
    text_column("direction", "Direction", minWidth=95),
    severity_column("severity", "Severity now", minWidth=110),
    text_column("why", "Why", minWidth=320, flex=1, tooltipField="why"),
]
RECS_COLUMNS = [
    server_link_column(pinned="left", minWidth=115),
    text_column("business_unit", "Business unit", minWidth=130),
    text_column("action_before", "Action before", minWidth=115),
    text_column("action", "Action now", minWidth=115),
    text_column("size_before", "Size before", minWidth=110),
    text_column("size", "Size now", minWidth=110),
    money_column("savings_change", "Saving change $/mo", minWidth=120),
    text_column("why", "Why", minWidth=260, flex=1, tooltipField="why"),
    text_column("reason", "Reason", minWidth=260, flex=1, tooltipField="reason"),
]
TOTALS_COLUMNS = [
    text_column("measure", "Total", minWidth=220, flex=1),
    number_column("before", "Before", decimals=0, minWidth=100),
    number_column("after", "After", decimals=0, minWidth=100),
    number_column("change", "Change", decimals=0, minWidth=100),
]


def _grid(grid_id: str, columns: list[dict[str, Any]], empty: str, height: int = 320) -> Any:
    return loading(
        data_grid(
            grid_id,
            [],
            columns,
            height=height,
            row_id_field="row_id",
            options={"localeText": {"noRowsToShow": empty}, "tooltipShowDelay": 300},
        )
    )


def layout(**query: Any) -> html.Div:
    """Skeleton; callbacks/changes.py fills the pickers, the charts and the tables."""
    pickers = dbc.Row(
        [
            dbc.Col(
                [
                    dbc.Label("Before (run A)", html_for=ids.CHG_RUN_A, className="small mb-1"),
                    dcc.Dropdown(id=ids.CHG_RUN_A, clearable=False, placeholder="earlier run"),
                ],
                md=4,
            ),
            dbc.Col(
                [
                    dbc.Label("After (run B)", html_for=ids.CHG_RUN_B, className="small mb-1"),
                    dcc.Dropdown(id=ids.CHG_RUN_B, clearable=False, placeholder="later run"),
                ],
                md=4,
            ),
            dbc.Col(
                [
                    dbc.ButtonGroup(
                        [
                            dbc.Button(
                                "Export CSV", id=ids.CHG_EXPORT_CSV, color="primary", outline=True, size="sm"
                            ),
                            dbc.Button(
                                "Export Excel",
                                id=ids.CHG_EXPORT_XLSX,
                                color="primary",
                                outline=True,
                                size="sm",
                            ),
                        ],
                        className="export-buttons",
                    ),
                    dcc.Download(id=ids.CHG_DOWNLOAD),
                ],
                md=4,
                className="d-flex align-items-end justify-content-md-end mt-2 mt-md-0",
            ),
        ],
        className="g-2 mb-3",
    )
    return html.Div(
        [
            page_header(
                "Changes since the last plan",
                "New and resolved risks, breach dates that moved and why (new data, a changed setting, "
                "another model), changed recommendations and fleet totals, between any two runs.",
            ),
            pickers,
            html.Div(id=ids.CHG_ALERT),
            html.Div(id=ids.CHG_CAUSES, className="mb-3"),
            loading(html.Div(id=ids.CHG_KPIS, className="kpi-area")),
            dbc.Row(
                [
                    dbc.Col(
                        section(
                            "Fleet totals",
                            loading(
                                dcc.Graph(id=ids.CHG_TOTALS_CHART, config=GRAPH_CONFIG, style=GRAPH_STYLE)
                            ),
                        ),
                        lg=6,
                        className="mb-3",
                    ),
                    dbc.Col(
                        section(
                            "Breach-date moves",
                            loading(
                                dcc.Graph(id=ids.CHG_MOVES_CHART, config=GRAPH_CONFIG, style=GRAPH_STYLE)
                            ),
                        ),
                        lg=6,
                        className="mb-3",
                    ),
                ],
                className="g-3",
            ),
            section(
                "New risks",
                _grid(ids.CHG_NEW_GRID, NEW_COLUMNS, "No new risk between these runs"),
                subtitle="At risk now, not before (or not in the earlier run).",
            ),
            html.Div(className="mb-3"),
            section(
                "Resolved risks",
                _grid(ids.CHG_RESOLVED_GRID, RESOLVED_COLUMNS, "No risk resolved between these runs"),
                subtitle="At risk before, no longer (or the server left the fleet).",
            ),
            html.Div(className="mb-3"),
            section(
                "Breach dates that moved",
                _grid(ids.CHG_MOVED_GRID, MOVED_COLUMNS, "No expected breach date moved"),
                subtitle="Expected (median path) breach dates in both runs that differ, largest move first.",
            ),
            html.Div(className="mb-3"),
            section(
                "Recommendations that changed",
                _grid(ids.CHG_RECS_GRID, RECS_COLUMNS, "No recommendation changed"),
                subtitle="Action or recommended size differs.",
            ),
            html.Div(className="mb-3"),
            section("All totals", _grid(ids.CHG_TOTALS_GRID, TOTALS_COLUMNS, "No totals", height=420)),
        ]
    )


PAGES = [
    PageSpec(
        key="app.pages.changes",
        layout=layout,
        path="/changes",
        name="Changes",
        title="Changes since the last plan · Capacity Forecaster",
        order=4,
        nav_label="Changes",
        nav_path="/changes",
        description="What changed between two runs, and why.",
    )
]
