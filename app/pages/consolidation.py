"""Consolidation (/consolidation): right-sizing and decommission recommendations, the host
packing plan with a packed host's load against its capacity, and savings per business unit."""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import dcc, html

from app import ids
from app.pages import PageSpec
from app.whatif import scenario_panel
from components.export import export_bar
from components.figures import GRAPH_CONFIG, GRAPH_STYLE
from components.grid import (
    data_grid,
    money_column,
    number_column,
    server_link_column,
    text_column,
)
from components.layout import loading, page_header, section

ACTION_ORDER = "{upgrade: 0, decommission: 1, consolidate: 2, 'right-size': 3, keep: 4}"

RECOMMENDATION_COLUMN_DEFS = [
    server_link_column(pinned="left", minWidth=115, maxWidth=130),
    text_column("business_unit", "Business unit", minWidth=130),
    text_column("environment", "Env", minWidth=75, maxWidth=95),
    {
        "field": "action",
        "headerName": "Action",
        "minWidth": 120,
        "comparator": {"function": f"({ACTION_ORDER}[valueA] ?? 9) - ({ACTION_ORDER}[valueB] ?? 9)"},
        "cellClass": {"function": "'action-cell action-' + params.value"},
    },
    text_column("current_size", "Current size", minWidth=140),
    text_column("recommended_size", "Recommended", minWidth=140),
    text_column("target_group", "Host group", minWidth=100),
    money_column("current_monthly_cost", "Cost now / month", minWidth=115, filter="agNumberColumnFilter"),
    money_column(
        "monthly_savings", "Savings / month", minWidth=115, filter="agNumberColumnFilter", sort="desc"
    ),
    text_column("reason", "Reason", minWidth=320, flex=1, tooltipField="reason"),
]

PLAN_COLUMN_DEFS = [
    text_column("target_group", "Host group", minWidth=100, pinned="left"),
    number_column("members", "Servers", minWidth=80),
    text_column("member_ids", "Members", minWidth=200, tooltipField="member_ids"),
    text_column("host_size", "Host", minWidth=120),
    number_column("host_cores", "vCPU", minWidth=70),
    number_column("host_memory_gb", "GB", minWidth=70),
    number_column("peak_cpu_util", "Peak CPU", suffix=" %", minWidth=90),
    number_column("peak_mem_util", "Peak mem", suffix=" %", minWidth=90),
    money_column("host_monthly_cost", "Host / month", minWidth=100),
    text_column("region", "Region", minWidth=100),
    text_column("environment", "Env", minWidth=70),
]


def layout(**query: Any) -> html.Div:
    """Skeleton; callbacks/consolidation.py fills it from the filters and the scenario."""
    return html.Div(
        [
            page_header(
                "Consolidation",
                "Right-size, decommission and pack servers onto fewer hosts, keeping headroom at every step "
                "of last year's load and the pessimistic forecast.",
            ),
            *scenario_panel(query, show_headroom=True),
            dcc.Store(id=ids.CONS_GROUP),
            html.Div(id=ids.CONS_EMPTY),
            loading(html.Div(id=ids.CONS_KPIS, className="kpi-area")),
            dbc.Row(
                [
                    dbc.Col(
                        section(
                            "Savings by business unit",
                            loading(
                                dcc.Graph(
                                    id=ids.CONS_SAVINGS_CHART,
                                    config=GRAPH_CONFIG,
                                    style={**GRAPH_STYLE, "minHeight": "340px"},
                                )
                            ),
                        ),
                        lg=7,
                        className="mb-3",
                    ),
                    dbc.Col(
                        section(
                            "Savings summary",
                            loading(html.Div(id=ids.CONS_SAVINGS_TABLE)),
                            subtitle="Per business unit, per month; upgrades are extra spend.",
                        ),
                        lg=5,
                        className="mb-3",
                    ),
                ],
                className="g-3",
            ),
            # The host plan is a second tab, mounted when opened: its grid and chart are most of
            # the page's first-render work, and planners read the recommendations first.
            dcc.Tabs(
                id=ids.CONS_TABS,
                value="recommendations",
                className="cons-tabs mb-3",
                children=[
                    dcc.Tab(
                        label="Right-sizing and decommission",
                        value="recommendations",
                        id=ids.CONS_TAB_RECS,
                        children=[
                            html.Div(
                                section(
                                    "Right-sizing and decommission recommendations",
                                    [
                                        export_bar(
                                            csv_id=ids.CONS_EXPORT_CSV,
                                            excel_id=ids.CONS_EXPORT_XLSX,
                                            download_id=ids.CONS_DOWNLOAD,
                                            search_id=ids.CONS_RECS_SEARCH,
                                            note_id=ids.CONS_RECS_NOTE,
                                        ),
                                        loading(
                                            data_grid(
                                                ids.CONS_RECS_GRID,
                                                [],
                                                RECOMMENDATION_COLUMN_DEFS,
                                                height=480,
                                                options={
                                                    "localeText": {
                                                        "noRowsToShow": "No recommendations under these filters"
                                                    },
                                                    "tooltipShowDelay": 300,
                                                },
                                            )
                                        ),
                                    ],
                                    subtitle="Every server whose action is not 'keep'. Exports contain exactly the rows shown.",
                                ),
                                className="mb-3",
                            ),
                        ],
                    ),
                    dcc.Tab(
                        label="Host consolidation plan",
                        value="plan",
                        id=ids.CONS_TAB_PLAN,
                        children=[
                            dbc.Row(
                                [
                                    dbc.Col(
                                        section(
                                            "Consolidation plan",
                                            [
                                                html.Div(
                                                    id=ids.CONS_PLAN_NOTE, className="small text-muted mb-2"
                                                ),
                                                loading(
                                                    data_grid(
                                                        ids.CONS_PLAN_GRID,
                                                        [],
                                                        PLAN_COLUMN_DEFS,
                                                        height=420,
                                                        row_id_field="target_group",
                                                        options={
                                                            "localeText": {
                                                                "noRowsToShow": "No host groups under these filters"
                                                            },
                                                            "rowSelection": {
                                                                "mode": "singleRow",
                                                                "checkboxes": False,
                                                            },
                                                            "tooltipShowDelay": 300,
                                                        },
                                                        class_name="clickable-rows",
                                                    )
                                                ),
                                            ],
                                            subtitle="Servers that share a host. Click a group to chart its load.",
                                        ),
                                        lg=5,
                                        className="mb-3",
                                    ),
                                    dbc.Col(
                                        section(
                                            "Packed host: summed load vs capacity",
                                            loading(
                                                dcc.Graph(
                                                    id=ids.CONS_HOST_CHART,
                                                    config=GRAPH_CONFIG,
                                                    style={**GRAPH_STYLE, "minHeight": "460px"},
                                                )
                                            ),
                                        ),
                                        lg=7,
                                        className="mb-3",
                                    ),
                                ],
                                className="g-3",
                            ),
                        ],
                    ),
                ],
            ),
        ]
    )


PAGES = [
    PageSpec(
        key="app.pages.consolidation",
        layout=layout,
        path="/consolidation",
        name="Consolidation",
        title="Consolidation · Capacity Forecaster",
        order=3,
        nav_label="Consolidation",
        nav_path="/consolidation",
        scenario=True,
        description="Right-sizing, decommissioning and host consolidation, with savings per business unit.",
    )
]
