"""KPI cards: one number, what it counts, and (when useful) how it breaks down."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dash_bootstrap_components as dbc
from dash import html

from .layout import format_money

SEVERITY_ORDER = ["critical", "high", "medium", "low"]


def kpi_card(
    title: str, value: str, detail: Any = None, *, tone: str = "default", card_id: str | None = None
) -> dbc.Card:
    """A compact card; ``tone`` (default | danger | warning | success | muted) colours the value."""
    kw = {"id": card_id} if card_id else {}
    return dbc.Card(
        dbc.CardBody(
            [
                html.Div(title, className="kpi-title"),
                html.Div(value, className=f"kpi-value kpi-{tone}"),
                html.Div(detail, className="kpi-detail") if detail is not None else None,
            ]
        ),
        className="kpi-card h-100",
        **kw,
    )


def severity_badges(counts: Mapping[str, int]) -> html.Div:
    """'3 critical · 12 high · …' as coloured badges (zero counts shown faded)."""
    return html.Div(
        [
            html.Span(
                f"{counts.get(s, 0):,} {s}",
                className=f"sev-badge sev-{s}" + (" sev-zero" if not counts.get(s, 0) else ""),
            )
            for s in SEVERITY_ORDER
        ],
        className="d-flex flex-wrap gap-1",
    )


def overview_kpis(
    *,
    servers: int,
    at_risk: Mapping[str, int] | None,
    breach_within: Mapping[int, int] | None,
    idle: int | None,
    idle_threshold: float,
    monthly_savings: float | None,
    id_prefix: str,
) -> dbc.Row:
    """The fleet overview's row of cards. None values read "not in this run"."""
    missing = "not in this run"
    at_risk_total = None if at_risk is None else sum(at_risk.values())
    cards = [
        kpi_card("Servers", f"{servers:,}", "matching the filters", card_id=f"{id_prefix}-servers"),
        kpi_card(
            "At risk",
            "—" if at_risk_total is None else f"{at_risk_total:,}",
            missing if at_risk is None else severity_badges(at_risk),
            tone="danger" if at_risk_total else "default",
            card_id=f"{id_prefix}-at-risk",
        ),
        kpi_card(
            "Breaching within 30 days",
            "—" if breach_within is None else f"{breach_within.get(30, 0):,}",
            missing if breach_within is None else "expected path crosses the threshold",
            tone="danger" if breach_within and breach_within.get(30) else "default",
            card_id=f"{id_prefix}-breach-30",
        ),
        kpi_card(
            "Breaching within 90 days",
            "—" if breach_within is None else f"{breach_within.get(90, 0):,}",
            missing if breach_within is None else "expected path crosses the threshold",
            tone="warning" if breach_within and breach_within.get(90) else "default",
            card_id=f"{id_prefix}-breach-90",
        ),
        kpi_card(
            "Idle",
            "—" if idle is None else f"{idle:,}",
            "no CPU history" if idle is None else f"CPU p95 below {idle_threshold:g} % last week",
            tone="muted",
            card_id=f"{id_prefix}-idle",
        ),
        kpi_card(
            "Potential savings",
            "—" if monthly_savings is None else format_money(monthly_savings),
            missing if monthly_savings is None else "per month, from the recommendations",
            tone="success" if monthly_savings else "default",
            card_id=f"{id_prefix}-savings",
        ),
    ]
    return dbc.Row([dbc.Col(c, xs=6, md=4, xl=2, className="mb-3") for c in cards], className="g-3 kpi-row")
