"""The global filter bar: one multi-select per dimension, a clear button and a match count."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dash_bootstrap_components as dbc
from dash import dcc, html


def filter_bar(
    *,
    dropdown_ids: Mapping[str, str],
    options: Mapping[str, Sequence[str]],
    labels: Mapping[str, str],
    placeholders: Mapping[str, str],
    clear_id: str,
    count_id: str,
    values: Mapping[str, Sequence[str]] | None = None,
) -> html.Div:
    """Dropdowns in dimension order; an empty selection means "all"."""
    values = values or {}
    cols = []
    for dim, dropdown_id in dropdown_ids.items():
        cols.append(
            dbc.Col(
                html.Div(
                    [
                        html.Label(labels[dim], htmlFor=dropdown_id, className="filter-label"),
                        dcc.Dropdown(
                            id=dropdown_id,
                            options=[{"label": v, "value": v} for v in options.get(dim, ())],
                            value=list(values.get(dim, ())),
                            multi=True,
                            searchable=True,
                            clearable=True,
                            placeholder=placeholders[dim],
                            className="filter-dropdown",
                        ),
                    ]
                ),
                xs=12,
                sm=6,
                lg=True,
                className="filter-col",
            )
        )
    cols.append(
        dbc.Col(
            html.Div(
                [
                    dbc.Button(
                        "Clear filters", id=clear_id, color="link", size="sm", className="px-0 filter-clear"
                    ),
                    html.Div(
                        id=count_id, className="filter-count small text-muted", **{"aria-live": "polite"}
                    ),
                ],
                className="d-flex flex-column justify-content-end h-100",
            ),
            xs=12,
            lg="auto",
            className="filter-col",
        )
    )
    return html.Div(
        dbc.Container(dbc.Row(cols, className="g-2 align-items-end"), fluid=True),
        className="filter-bar",
        role="search",
        **{"aria-label": "Filter servers"},
    )
