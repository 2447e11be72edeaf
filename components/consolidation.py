"""Consolidation figures: a packed host's summed load against its capacity, savings per unit.

Plain figure dicts like components.figures (the tests validate them with ``go.Figure``);
every chart is titled, has units on its axes and a legend.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from .figures import (
    CATEGORICAL,
    FORECAST,
    PRIMARY,
    THRESHOLD,
    Figure,
    _base_layout,
    _figure,
    empty_figure,
    iso_utc,
    numbers,
)

ACTION_COLORS = {
    "decommission": "#009E73",
    "consolidate": "#0072B2",
    "right-size": "#56B4E9",
    "upgrade": "#D55E00",
}


def packed_host_figure(
    index: pd.DatetimeIndex,
    cpu_cores: np.ndarray,
    mem_gb: np.ndarray,
    *,
    origin: pd.Timestamp | None,
    host_label: str,
    host_cores: float,
    host_memory_gb: float,
    headroom: float,
    members: Sequence[str],
    group: str,
    quantile: str = "q90",
    height: int = 460,
) -> Figure:
    """Summed CPU cores and memory GB of a host group's members over time (history at today's
    level, then the ``quantile`` forecast), with the host's capacity and the usable capacity
    after headroom. Two stacked panels sharing the time axis."""
    title = f"{group}: summed load of {len(members)} servers on one {host_label}"
    if len(index) == 0 or cpu_cores.size == 0:
        return empty_figure("No history or forecast for this host group", title=title, height=height)
    x = iso_utc(index)
    usable = 1.0 - headroom
    traces: list[dict[str, Any]] = []
    for axis, values, cap, unit, name, color in (
        ("y", cpu_cores, host_cores, "vCPU", "CPU", PRIMARY),
        ("y2", mem_gb, host_memory_gb, "GB", "Memory", CATEGORICAL[1]),
    ):
        traces.append(
            {
                "type": "scatter",
                "mode": "lines",
                "x": x,
                "y": numbers(values, 2),
                "yaxis": axis,
                "name": f"{name} demand ({unit})",
                "line": {"color": color, "width": 1.6},
                "hovertemplate": f"%{{x|%d %b %Y}}: %{{y:,.1f}} {unit}<extra>{name} demand</extra>",
            }
        )
        for level, label, dash, col in (
            (cap, "host capacity", "solid", THRESHOLD),
            (cap * usable, f"usable ({headroom * 100:.0f} % headroom kept)", "dash", FORECAST),
        ):
            traces.append(
                {
                    "type": "scatter",
                    "mode": "lines",
                    "x": [x[0], x[-1]],
                    "y": [round(level, 2), round(level, 2)],
                    "yaxis": axis,
                    "name": f"{name} {label}",
                    "line": {"color": col, "width": 1.2, "dash": dash},
                    "hovertemplate": f"{name} {label}: {level:,.1f} {unit}<extra></extra>",
                    "legendgroup": label,
                }
            )
    layout = _base_layout(title, height)
    layout.update(
        hovermode="x unified",
        xaxis={"anchor": "y2", "domain": [0, 1], "title": {"text": "Date (UTC)"}},
        yaxis={"domain": [0.55, 1.0], "title": {"text": "CPU (vCPU)"}, "rangemode": "tozero"},
        yaxis2={"domain": [0.0, 0.45], "title": {"text": "Memory (GB)"}, "rangemode": "tozero"},
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "xanchor": "left", "x": 0},
        margin={"l": 10, "r": 10, "t": 56, "b": 10},
    )
    if origin is not None:
        o = pd.Timestamp(origin)
        o = (o.tz_convert("UTC") if o.tzinfo is not None else o).tz_localize(None)
        layout["shapes"] = [
            {
                "type": "line",
                "xref": "x",
                "yref": "paper",
                "x0": o.isoformat(),
                "x1": o.isoformat(),
                "y0": 0,
                "y1": 1,
                "line": {"color": "#8792a2", "width": 1, "dash": "dot"},
            }
        ]
        layout["annotations"] = [
            {
                "x": o.isoformat(),
                "y": 1,
                "xref": "x",
                "yref": "paper",
                "text": f"forecast ({quantile}) →",
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "top",
                "font": {"size": 11, "color": "#5f6b7a"},
            }
        ]
    return _figure(traces, layout)


def savings_by_unit_figure(savings: pd.DataFrame, *, height: int = 340) -> Figure:
    """Monthly savings per business unit, stacked by action (columns: business_unit, action,
    monthly_savings)."""
    title = "Potential monthly savings by business unit"
    if savings.empty or not np.any(savings["monthly_savings"].to_numpy(dtype=float) > 0):
        return empty_figure("No savings under these filters", title=title, height=height)
    units = sorted(savings["business_unit"].unique())
    traces = []
    for action in [a for a in ACTION_COLORS if a != "upgrade"]:
        g = savings[savings["action"] == action].set_index("business_unit")["monthly_savings"]
        if g.empty:
            continue
        traces.append(
            {
                "type": "bar",
                "name": action,
                "x": units,
                "y": numbers(g.reindex(units).fillna(0.0).to_numpy(), 0),
                "marker": {"color": ACTION_COLORS[action]},
                "hovertemplate": f"%{{x}}: $%{{y:,.0f}} per month<extra>{action}</extra>",
            }
        )
    layout = _base_layout(title, height, xtitle="Business unit", ytitle="Savings (USD per month)")
    layout.update(barmode="stack", legend={"title": {"text": "Action  "}})
    layout["yaxis"]["tickprefix"] = "$"
    return _figure(traces, layout)


# --------------------------------------------------------------------------- held back

# What each forecasting.policy.HELD_BACK category means, in a planner's words.
HELD_BACK_TEXT = {
    "at risk": "a metric may cross its threshold within the horizon (P(breach) at or above the risk guard) "
    "or is already over: never downsized or consolidated",
    "growing": "its forecast rises clearly, even the optimistic one: never downsized or consolidated",
    "pinned": "pinned in the inventory: never moved or resized by a recommendation",
    "DR standby": "a DR standby: idle by design, sized with its primary, never decommissioned or consolidated",
    "no saving": "a smaller size or a shared host would save less than the minimum saving",
    "anti-affinity": "may not share a host with a server already in a group (DR pair or anti-affinity group)",
    "no fit": "no shared host fits it with headroom kept: right-sized or kept on its own",
    "not proposed": "the policy does not propose this change (see What to propose)",
    "no data": "no CPU data or capacity to size it from",
}
HELD_BACK_COLORS = {
    "at risk": "#D55E00",
    "growing": "#E69F00",
    "pinned": "#6b7785",
    "DR standby": "#6b7785",
    "no saving": "#56B4E9",
    "anti-affinity": "#CC79A7",
    "no fit": "#0072B2",
    "not proposed": "#999999",
    "no data": "#bbbbbb",
}


def held_back_figure(counts: Sequence[tuple[str, int]], *, height: int = 300) -> Figure:
    """Servers held back from the plan per category (``counts``: (category, servers), display
    order), as horizontal bars: the first category on top."""
    title = "Servers held back from the plan, by reason"
    shown = [(c, n) for c, n in counts if n > 0]
    if not shown:
        return empty_figure("No server is held back under these filters", title=title, height=height)
    cats = [c for c, _ in shown][::-1]
    vals = [int(n) for _, n in shown][::-1]
    trace = {
        "type": "bar",
        "orientation": "h",
        "name": "servers",
        "x": vals,
        "y": cats,
        "text": [f"{v:,}" for v in vals],
        "textposition": "auto",
        "marker": {"color": [HELD_BACK_COLORS.get(c, PRIMARY) for c in cats]},
        "customdata": [HELD_BACK_TEXT.get(c, "") for c in cats],
        "hovertemplate": "%{y}: %{x:,} servers<br>%{customdata}<extra></extra>",
    }
    layout = _base_layout(title, height, xtitle="Servers", ytitle="Why held back")
    layout.update(showlegend=False, margin={"l": 110})
    layout["yaxis"]["automargin"] = True
    return _figure([trace], layout)
