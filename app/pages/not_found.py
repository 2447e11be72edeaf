"""The 404 page Dash Pages shows for any path no page claims."""

from __future__ import annotations

from typing import Any

import dash_bootstrap_components as dbc
from dash import dcc, html

from app import ids
from app.pages import PageSpec


def layout(**_query: Any) -> html.Div:
    return html.Div(
        [
            html.H1("Page not found", className="page-title"),
            html.P(
                "There is no page at this address. It may have been mistyped, or the link is out of date."
            ),
            dcc.Link(dbc.Button("Go to the fleet overview", color="primary"), href="/", id=ids.NF_HOME),
        ],
        className="empty-state empty-hero mt-4",
        role="alert",
    )


PAGES = [
    PageSpec(
        key="app.pages.not_found_404",  # the suffix is how Dash Pages finds its 404 layout
        layout=layout,
        path="/404",
        name="Not found",
        title="Not found · Capacity Forecaster",
    )
]
