"""What-if controls: growth per month, threshold overrides, host headroom and the plan's policy
knobs (pure builder).

The same card sits on the risk and consolidation pages, so it takes its ids as arguments and
its values from the scenario in the URL; empty threshold and policy boxes mean "the run's
value". The risk page hides headroom and the policy row (they only change recommendations) but
keeps them mounted, so a scenario carried from the consolidation page survives a change there.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import dash_bootstrap_components as dbc
from dash import dcc, html


def _label(text: str, target: str, hint: str | None = None) -> html.Label:
    parts: list[Any] = [text]
    if hint:
        parts.append(html.Span(f" {hint}", className="text-muted fw-normal"))
    return html.Label(parts, htmlFor=target, className="filter-label")


@dataclass(frozen=True)
class PolicyControls:
    """Ids, values (None: the run's) and the run's own values of the policy knobs."""

    propose_id: str
    min_saving_pct_id: str
    min_saving_usd_id: str
    risk_guard_id: str
    sizing_pct_id: str
    propose_labels: Mapping[str, str]
    propose: str | None
    min_saving_pct: float | None
    min_saving_usd: float | None
    risk_guard: float | None
    sizing_pct: float | None
    base_propose: str
    base_min_saving_pct: float
    base_min_saving_usd: float
    base_risk_guard: float
    base_sizing_pct: float
    min_saving_pct_range: tuple[float, float]
    min_saving_usd_range: tuple[float, float]
    risk_guard_range: tuple[float, float]
    sizing_pct_range: tuple[float, float]


def _number_box(
    box_id: str, value: float | None, base: float, rng: tuple[float, float], step: float, fmt: str
):
    return dbc.Input(
        id=box_id,
        type="number",
        min=rng[0],
        max=rng[1],
        step=step,
        value=value,
        placeholder=f"{fmt.format(base)} (run)",
        debounce=True,
        size="sm",
    )


def policy_row(c: PolicyControls, *, visible: bool = True) -> dbc.Row:
    """What to propose, minimum saving (% and $/month), risk guard and sizing percentile."""
    options = [
        {"label": label + (" · run's" if key == c.base_propose else ""), "value": key}
        for key, label in c.propose_labels.items()
    ]
    return dbc.Row(
        [
            dbc.Col(
                [
                    _label("What to propose", c.propose_id),
                    dbc.Select(
                        id=c.propose_id, options=options, value=c.propose or c.base_propose, size="sm"
                    ),
                ],
                xs=12,
                lg=4,
            ),
            dbc.Col(
                [
                    _label("Minimum saving", c.min_saving_pct_id, "% of cost"),
                    _number_box(
                        c.min_saving_pct_id,
                        c.min_saving_pct,
                        c.base_min_saving_pct,
                        c.min_saving_pct_range,
                        1,
                        "{:g}",
                    ),
                ],
                xs=6,
                lg=2,
            ),
            dbc.Col(
                [
                    _label("and at least", c.min_saving_usd_id, "$ / month"),
                    _number_box(
                        c.min_saving_usd_id,
                        c.min_saving_usd,
                        c.base_min_saving_usd,
                        c.min_saving_usd_range,
                        5,
                        "{:g}",
                    ),
                ],
                xs=6,
                lg=2,
            ),
            dbc.Col(
                [
                    _label("Risk guard", c.risk_guard_id, "never shrink at P(breach) ≥ %"),
                    _number_box(
                        c.risk_guard_id, c.risk_guard, c.base_risk_guard, c.risk_guard_range, 5, "{:g}"
                    ),
                ],
                xs=6,
                lg=2,
            ),
            dbc.Col(
                [
                    _label("Sizing percentile", c.sizing_pct_id, "of period p95s"),
                    _number_box(
                        c.sizing_pct_id, c.sizing_pct, c.base_sizing_pct, c.sizing_pct_range, 1, "p{:g}"
                    ),
                ],
                xs=6,
                lg=2,
            ),
        ],
        className="g-3 align-items-end mt-1 whatif-policy",
        style=None if visible else {"display": "none"},
    )


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
    policy: PolicyControls | None = None,
    show_policy: bool = True,
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
                *([policy_row(policy, visible=show_policy)] if policy is not None else []),
            ]
        ),
        className="section-card whatif-card mb-3",
    )
