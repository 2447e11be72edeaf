"""Utilization risk (/risk): every server × metric at risk, with what-if controls and exports."""

from __future__ import annotations

from typing import Any

from dash import dcc, html

from app import ids
from app.decisions import DECISION_COLUMN_DEF, decision_form
from app.pages import PageSpec
from app.whatif import scenario_panel
from components.export import export_bar
from components.grid import (
    data_grid,
    date_column,
    number_column,
    server_link_column,
    severity_column,
    text_column,
)
from components.layout import loading, page_header, section

# Value with its metric's unit ('%' or 'Mbps', carried per row in the `unit` field).
_WITH_UNIT = "params.value == null ? '—' : d3.format(',.1f')(params.value) + ' ' + (params.data.unit || '')"

RISK_COLUMN_DEFS = [
    server_link_column(pinned="left", minWidth=115, maxWidth=130),
    text_column("business_unit", "Business unit", minWidth=130),
    text_column("metric_label", "Metric", minWidth=110),
    DECISION_COLUMN_DEF,
    {
        "field": "current_p95",
        "headerName": "Current p95",
        "type": "rightAligned",
        "valueFormatter": {"function": _WITH_UNIT},
        "filter": "agNumberColumnFilter",
        "minWidth": 105,
    },
    {
        "field": "threshold",
        "headerName": "Threshold",
        "type": "rightAligned",
        "valueFormatter": {"function": _WITH_UNIT},
        "filter": "agNumberColumnFilter",
        "minWidth": 100,
    },
    date_column("breach_expected", "Expected breach", minWidth=120),
    text_column(
        "breach_range",
        "Breach range",
        minWidth=180,
        headerTooltip="Optimistic (q10 path) to pessimistic (q90 path) crossing dates",
    ),
    number_column("probability", "P(breach)", suffix=" %", minWidth=95, filter="agNumberColumnFilter"),
    date_column("act_by", "Act by", minWidth=105),
    severity_column(minWidth=105),
    number_column("score", "Score", decimals=0, minWidth=80, filter="agNumberColumnFilter"),
    text_column("reason", "Reason", minWidth=320, flex=1, tooltipField="reason"),
]


def _grid() -> Any:
    """The risk grid: client-side for a plan's risk table of up to ``grid_client_max_rows`` rows,
    else paged, sorted, filtered and exported on the server (app.servergrid)."""
    from app import get_context
    from app.servergrid import make_paged, paged

    ctx = get_context()
    grid = data_grid(
        ids.RISK_GRID,
        [],
        RISK_COLUMN_DEFS,
        height=560,
        row_id_field="row_id",
        options={
            "rowSelection": {"mode": "singleRow", "checkboxes": False, "enableClickSelection": False},
            "localeText": {"noRowsToShow": "No risk rows under these filters and this scenario"},
            "tooltipShowDelay": 300,
        },
        class_name="clickable-rows",
    )
    return make_paged(grid) if paged(ctx.readmodel.snapshot().plan, "risk", ctx.settings) else grid


def layout(**query: Any) -> html.Div:
    """Skeleton; callbacks/risk.py fills the KPIs and the grid from the filters and the scenario
    (which arrives in the query string and seeds the what-if controls)."""
    return html.Div(
        [
            page_header(
                "Utilization risk",
                "Servers and metrics forecast to cross their thresholds: when, how likely, and when to act.",
            ),
            *scenario_panel(query, show_headroom=False),
            decision_form(),
            html.Div(id=ids.RISK_EMPTY),
            loading(html.Div(id=ids.RISK_KPIS, className="kpi-area")),
            section(
                "Risk by server and metric",
                [
                    export_bar(
                        csv_id=ids.RISK_EXPORT_CSV,
                        excel_id=ids.RISK_EXPORT_XLSX,
                        download_id=ids.RISK_DOWNLOAD,
                        search_id=ids.RISK_SEARCH,
                        note_id=ids.RISK_NOTE,
                    ),
                    html.Div(id=ids.RISK_GRID_ALERT, role="alert"),
                    dcc.Store(id=ids.RISK_GRID_PURGE),
                    loading(_grid()),
                ],
                subtitle="Rows at risk only (severity low or worse), worst first. Click a row to open its server, "
                "its Decision cell to record a decision; exports contain exactly the rows shown, with filters, "
                "scenario and decisions.",
            ),
        ]
    )


PAGES = [
    PageSpec(
        key="app.pages.risk",
        layout=layout,
        path="/risk",
        name="Utilization risk",
        title="Utilization risk · Capacity Forecaster",
        order=2,
        nav_label="Utilization risk",
        nav_path="/risk",
        scenario=True,
        description="Servers forecast to breach their thresholds, with what-if growth and threshold controls.",
    )
]
