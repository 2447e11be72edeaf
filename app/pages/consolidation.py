"""Consolidation (/consolidation): right-sizing and decommission recommendations, the host
packing plan with a packed host's load against its capacity, savings per business unit, and
the servers the policy held back from the plan with why."""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import dcc, html

from app import ids
from app.decisions import DECISION_COLUMN_DEF, decision_form
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
from forecasting.policy import HELD_BACK

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
    DECISION_COLUMN_DEF,
    text_column("current_size", "Current size", minWidth=140),
    text_column("recommended_size", "Recommended", minWidth=140),
    text_column("target_group", "Host group", minWidth=100),
    money_column("current_monthly_cost", "Cost now / month", minWidth=115, filter="agNumberColumnFilter"),
    money_column(
        "monthly_savings", "Savings / month", minWidth=115, filter="agNumberColumnFilter", sort="desc"
    ),
    text_column("held_back", "Held back", minWidth=110, tooltipField="held_back"),
    text_column("reason", "Reason", minWidth=320, flex=1, tooltipField="reason"),
]

HELD_COLUMN_DEFS = [
    server_link_column(pinned="left", minWidth=115, maxWidth=130),
    text_column("business_unit", "Business unit", minWidth=130),
    text_column("environment", "Env", minWidth=75, maxWidth=95),
    text_column("criticality", "Criticality", minWidth=95, maxWidth=115),
    {
        "field": "action",
        "headerName": "Action",
        "minWidth": 110,
        "maxWidth": 130,
        "cellClass": {"function": "'action-cell action-' + params.value"},
    },
    text_column("held_back", "Held back", minWidth=120, maxWidth=150),
    money_column("monthly_savings", "Savings / month", minWidth=110, maxWidth=130),
    text_column("reason", "Reason", minWidth=360, flex=1, tooltipField="reason"),
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


def _recs_grid() -> Any:
    """The recommendations grid: client-side up to ``grid_client_max_rows`` recommendations,
    else paged, sorted, filtered and exported on the server (app.servergrid)."""
    from app import get_context
    from app.servergrid import make_paged, paged

    ctx = get_context()
    grid = data_grid(
        ids.CONS_RECS_GRID,
        [],
        RECOMMENDATION_COLUMN_DEFS,
        height=480,
        row_id_field="row_id",
        options={
            "localeText": {"noRowsToShow": "No recommendations under these filters"},
            "tooltipShowDelay": 300,
        },
    )
    return make_paged(grid) if paged(ctx.readmodel.snapshot().plan, "recommendations", ctx.settings) else grid


def _held_grid() -> Any:
    """The held-back grid: paged on the server like the recommendations grid (same table)."""
    from app import get_context
    from app.servergrid import make_paged, paged

    ctx = get_context()
    grid = data_grid(
        ids.CONS_HELD_GRID,
        [],
        HELD_COLUMN_DEFS,
        height=420,
        options={
            "localeText": {"noRowsToShow": "No held-back servers under these filters"},
            "tooltipShowDelay": 300,
        },
    )
    return make_paged(grid) if paged(ctx.readmodel.snapshot().plan, "recommendations", ctx.settings) else grid


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
            decision_form(),
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
                                        html.Div(id=ids.CONS_RECS_ALERT, role="alert"),
                                        dcc.Store(id=ids.CONS_RECS_PURGE),
                                        loading(_recs_grid()),
                                    ],
                                    subtitle="Every server whose action is not 'keep'; 'Held back' says why a "
                                    "right-sized server is not on a shared host. Exports contain exactly the rows shown.",
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
                    dcc.Tab(
                        label="Held back, and why",
                        value="held-back",
                        id=ids.CONS_TAB_HELD,
                        children=[held_back_section()],
                    ),
                ],
            ),
        ]
    )


def held_back_section() -> dbc.Card:
    """Counts per held_back category (badges and a bar chart) and a grid of those servers,
    filterable by category; callbacks/consolidation.py fills it when the tab is opened."""
    return section(
        "Servers held back from the plan",
        [
            loading(html.Div(id=ids.CONS_HELD_BADGES, className="mb-2 held-badges")),
            dbc.Row(
                [
                    dbc.Col(
                        loading(
                            dcc.Graph(
                                id=ids.CONS_HELD_CHART,
                                config=GRAPH_CONFIG,
                                style={**GRAPH_STYLE, "minHeight": "300px"},
                            )
                        ),
                        lg=4,
                        className="mb-3",
                    ),
                    dbc.Col(
                        [
                            html.Div(
                                [
                                    html.Label(
                                        "Reason",
                                        htmlFor=ids.CONS_HELD_CATEGORY,
                                        className="filter-label mb-0",
                                    ),
                                    dbc.Select(
                                        id=ids.CONS_HELD_CATEGORY,
                                        options=[
                                            {"label": "Every reason", "value": "all"},
                                            *({"label": c, "value": c} for c in HELD_BACK),
                                        ],
                                        value="all",
                                        size="sm",
                                        style={"maxWidth": "220px"},
                                    ),
                                    html.Div(
                                        id=ids.CONS_HELD_NOTE,
                                        className="small text-muted",
                                        **{"aria-live": "polite"},
                                    ),
                                ],
                                className="d-flex align-items-center gap-2 mb-2",
                            ),
                            html.Div(id=ids.CONS_HELD_ALERT, role="alert"),
                            dcc.Store(id=ids.CONS_HELD_PURGE),
                            loading(_held_grid()),
                        ],
                        lg=8,
                        className="mb-3",
                    ),
                ],
                className="g-3",
            ),
        ],
        subtitle="Servers the policy kept out of a saving action (or off a shared host), and why: "
        "the reason names the risk or the rule. Follows the filters and the what-if, policy knobs included.",
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
