"""What-if controls: growth per month, threshold overrides and host headroom (pure builder).

The same card sits on the risk and consolidation pages, so it takes its ids as arguments and
its values from the scenario in the URL; empty threshold boxes mean "the run's threshold".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dash_bootstrap_components as dbc
from dash import dcc, html


def _label(text: str, target: str, hint: str | None = None) -> html.Label:
    parts: list[Any] = [text]
    if hint:
        parts.append(html.Span(f" {hint}", className="text-muted fw-normal"))
    return html.Label(parts, htmlFor=target, className="filter-label")


def whatif_controls(
    *,
    growth_id: str,
    threshold_ids: Mapping[str, str],
    threshold_labels: Mapping[str, str],
    headroom_id: str,
    reset_id: str,
    summary_id: str,
    growth: float,
    growth_range: tuple[float, float],
    thresholds: Mapping[str, float],
    base_thresholds: Mapping[str, float],
    headroom: float | None,
    base_headroom: float | None,
    headroom_range: tuple[float, float],
    show_headroom: bool = True,
) -> dbc.Card:
    """The what-if card. ``base_*`` values are the run's (shown as placeholders and marks)."""
    lo, hi = growth_range
    growth_marks = {int(v): f"{v:+g} %" if v else "0" for v in (lo, 0, 5, 10, hi) if lo <= v <= hi}
    threshold_cols = []
    for metric, box_id in threshold_ids.items():
        base = base_thresholds.get(metric)
        threshold_cols.append(
            dbc.Col(
                [
                    _label(threshold_labels[metric], box_id, "threshold %"),
                    dbc.Input(
                        id=box_id,
                        type="number",
                        min=1,
                        max=100,
                        step=1,
                        value=thresholds.get(metric),
                        placeholder=f"{base:g} (run)" if base is not None else "run's",
                        debounce=True,
                        size="sm",
                    ),
                ],
                xs=4,
                lg=True,
            )
        )
    hlo, hhi = headroom_range
    base_h = None if base_headroom is None else round(base_headroom * 100, 1)
    headroom_col = dbc.Col(
        [
            _label("Host headroom", headroom_id, "% kept free"),
            dcc.Slider(
                id=headroom_id,
                min=hlo,
                max=hhi,
                step=5,
                value=headroom if headroom is not None else base_h,
                marks={int(v): f"{v:g} %" for v in (hlo, 20, 40, hhi)},
                updatemode="mouseup",
                allow_direct_input=False,
                tooltip={"placement": "bottom", "always_visible": False},
            ),
        ],
        xs=12,
        lg=3,
        style=None if show_headroom else {"display": "none"},
    )
    return dbc.Card(
        dbc.CardBody(
            [
                html.Div(
                    [
                        html.H2("What-if", className="section-title mb-0"),
                        html.Div(id=summary_id, className="small text-muted", **{"aria-live": "polite"}),
                        dbc.Button(
                            "Reset to plan", id=reset_id, color="link", size="sm", className="ms-auto p-0"
                        ),
                    ],
                    className="d-flex align-items-center gap-3 mb-2",
                ),
                dbc.Row(
                    [
                        dbc.Col(
                            [
                                _label("Growth", growth_id, "% per month, compounding"),
                                dcc.Slider(
                                    id=growth_id,
                                    min=lo,
                                    max=hi,
                                    step=0.5,
                                    value=growth,
                                    marks=growth_marks,
                                    updatemode="mouseup",
                                    allow_direct_input=True,
                                    tooltip={"placement": "bottom", "always_visible": False},
                                ),
                            ],
                            xs=12,
                            lg=4,
                        ),
                        dbc.Col(dbc.Row(threshold_cols, className="g-2"), xs=12, lg=True),
                        headroom_col,
                    ],
                    className="g-3 align-items-end",
                ),
            ]
        ),
        className="section-card whatif-card mb-3",
    )
