"""Page furniture and text formatting shared by every page: pure builders, no callbacks.

Components receive their ids as arguments (they may not import ``app``: DESIGN.md §2), so
the same builders serve every page. Formatting lives here too, so a value reads the same in
a KPI card, a grid and a chart hover.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import dash_bootstrap_components as dbc
import pandas as pd
from dash import dcc, html

from forecasting.schema import METRICS

# --------------------------------------------------------------------------- formatting


def format_value(value: float | None, metric: str | None = None, decimals: int = 0) -> str:
    """'56 %' for percent metrics, '1,234 Mbps' for rates, '—' for missing."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    spec = METRICS.get(metric or "")
    if spec is None:
        return f"{value:,.{decimals}f}"
    return f"{value:,.{decimals}f} %" if spec.kind == "percent" else f"{value:,.{decimals}f} Mbps"


def format_money(value: float | None) -> str:
    """'$12,345' (monthly amounts are shown to the dollar)."""
    if value is None or not math.isfinite(value):
        return "—"
    return f"${value:,.0f}"


def format_date(value: Any) -> str:
    """'14 Mar 2026' for any timestamp-like value, '—' for missing."""
    if value is None or value is pd.NaT:
        return "—"
    try:
        ts = pd.Timestamp(value)
    except (TypeError, ValueError):
        return "—"
    if ts is pd.NaT:
        return "—"
    return f"{ts.day} {ts:%b %Y}"


def format_days(value: float | None) -> str:
    """'in 12 days' / 'now' / '—'."""
    if value is None or not math.isfinite(value):
        return "—"
    days = round(float(value))
    return "now" if days <= 0 else f"in {days:,} day{'s' if days != 1 else ''}"


def metric_label(metric: str) -> str:
    spec = METRICS.get(metric)
    return spec.label if spec else metric


def metric_unit(metric: str) -> str:
    spec = METRICS.get(metric)
    return spec.unit if spec else ""


# --------------------------------------------------------------------------- shell pieces


def navbar(
    links: Sequence[tuple[str, str, dict]],
    *,
    brand: str,
    brand_href: str,
    as_of_id: str,
    as_of: str,
    account: tuple[str, str, str | None] | None = None,
    account_id: str = "shell-account",
    sign_out_id: str = "shell-sign-out",
) -> dbc.Navbar:
    """Top bar: brand, one link per page (label, href, id), the "data as of" badge, and the
    signed-in user (name, role, sign-out link or None)."""
    nav = dbc.Nav(
        [
            dbc.NavItem(dbc.NavLink(label, href=href, id=link_id, className="px-3"))
            for label, href, link_id in links
        ],
        navbar=True,
        className="me-auto",
    )
    return dbc.Navbar(
        dbc.Container(
            [
                dcc.Link(
                    [html.Span(className="brand-mark", **{"aria-hidden": "true"}), html.Span(brand)],
                    href=brand_href,
                    className="navbar-brand d-flex align-items-center gap-2",
                ),
                nav,
                html.Span(
                    [html.Span("Data as of ", className="text-white-50"), html.Span(as_of, id=as_of_id)],
                    className="as-of small text-nowrap",
                    title="The batch run whose results are shown",
                ),
                _account(account, account_id, sign_out_id),
            ],
            fluid=True,
        ),
        color="primary",
        dark=True,
        className="app-navbar py-1",
    )


def _account(account: tuple[str, str, str | None] | None, account_id: str, sign_out_id: str) -> Any:
    if account is None:
        return None
    name, role, sign_out = account
    parts: list[Any] = [
        html.Span(name, className="account-name"),
        html.Span(role, className="badge bg-light text-primary ms-2 account-role"),
    ]
    if sign_out:
        # a plain link, not dcc.Link: sign-out is a server route, not a page
        parts.append(html.A("Sign out", href=sign_out, id=sign_out_id, className="link-light ms-3"))
    return html.Span(parts, id=account_id, className="account small text-nowrap ms-3 text-white")


def banner(
    alert_id: str, message: str | None, *, color: str = "warning", dismissable: bool = False
) -> dbc.Alert:
    """A full-width alert that is hidden while it has nothing to say."""
    return dbc.Alert(
        message or "",
        id=alert_id,
        color=color,
        is_open=bool(message),
        dismissable=dismissable,
        className="app-banner mb-0 rounded-0 py-2",
    )


# --------------------------------------------------------------------------- page pieces


def page_header(title: str, subtitle: Any = None, right: Any = None) -> html.Div:
    return html.Div(
        [
            html.Div(
                [html.H1(title, className="page-title"), html.P(subtitle, className="page-subtitle")]
                if subtitle
                else [html.H1(title, className="page-title")]
            ),
            html.Div(right, className="page-header-right") if right is not None else None,
        ],
        className="page-header d-flex justify-content-between align-items-end flex-wrap gap-2",
    )


def section(title: str, body: Any, *, subtitle: str | None = None, section_id: str | None = None) -> dbc.Card:
    """A titled card; every chart and table of a page sits in one."""
    header = [html.H2(title, className="section-title")]
    if subtitle:
        header.append(html.Div(subtitle, className="section-subtitle"))
    kw = {"id": section_id} if section_id else {}
    return dbc.Card([dbc.CardHeader(header), dbc.CardBody(body)], className="section-card h-100", **kw)


def loading(children: Any, *, loading_id: str | None = None) -> dcc.Loading:
    """Spinner for slow outputs; shown only after 250 ms so fast updates do not flicker."""
    kw = {"id": loading_id} if loading_id else {}
    return dcc.Loading(children, type="default", delay_show=250, color="#1f4e79", **kw)


def empty_state(title: str, detail: Any = None, *, tone: str = "muted") -> html.Div:
    """What an empty chart or table says instead of drawing nothing."""
    return html.Div(
        [
            html.Div(title, className="empty-title"),
            html.Div(detail, className="empty-detail") if detail else None,
        ],
        className=f"empty-state empty-{tone}",
        role="status",
    )


def no_match_state() -> html.Div:
    return empty_state(
        "No servers match these filters",
        "Remove a filter or choose other values in the bar above.",
    )


def not_in_run(what: str, table: str) -> html.Div:
    return empty_state(
        f"{what} is not in this run",
        f"The batch run that produced this plan did not write the {table} table.",
    )


def no_run_state(message: str) -> html.Div:
    return html.Div(
        [
            html.H2("No forecast to show yet", className="empty-title"),
            html.P(message, className="empty-detail"),
            html.Pre(html.Code("python -m forecasting run"), className="empty-code"),
        ],
        className="empty-state empty-hero",
        role="status",
    )


def error_alert(message: str, *, title: str = "Something went wrong") -> dbc.Alert:
    return dbc.Alert([html.Strong(title + ". "), html.Span(message)], color="danger", className="mb-3")


def facts_table(rows: Sequence[tuple[str, Any]]) -> html.Table:
    """A two-column label/value table (inventory facts, model accuracy)."""
    return html.Table(
        html.Tbody([html.Tr([html.Th(k, scope="row"), html.Td(v)]) for k, v in rows]),
        className="table table-sm facts-table mb-0",
    )


def frame_table(frame: pd.DataFrame, *, class_name: str = "") -> dbc.Table:
    """A small read-only table from a display-ready frame (strings already formatted)."""
    return dbc.Table.from_dataframe(
        frame,
        striped=False,
        bordered=False,
        hover=True,
        size="sm",
        className=f"mb-0 small-table {class_name}",
    )
