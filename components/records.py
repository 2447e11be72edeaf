"""Figures of the plans-as-records pages (/changes, /track-record): data in, figure out.

Same conventions as components/figures.py: plain figure dicts, a title, units on the axes, a
legend, SVG traces only (the app ships plotly.js's cartesian bundle).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from forecasting.schema import METRICS

from .figures import (
    CATEGORICAL,
    FORECAST,
    THRESHOLD,
    Figure,
    _base_layout,
    _figure,
    _hline,
    _naive,
    _vline,
    empty_figure,
    iso_utc,
    numbers,
)
from .layout import format_date, metric_label, metric_unit

BEFORE, AFTER = "#8792a2", "#1f4e79"
EARLIER, LATER = "#c0392b", "#2f6fb0"
# the totals the chart shows (counts on one axis; money has its own table row)
CHART_MEASURES = (
    "servers at risk",
    "at risk: critical",
    "at risk: high",
    "servers breaching within 30 days",
    "servers breaching within 90 days",
    "recommended: upgrade",
    "recommended: decommission",
    "recommended: right-size",
    "recommended: consolidate",
)
OUTCOME_COLORS = {
    "hit": "#009E73",
    "missed": "#D55E00",
    "false_alarm": "#E69F00",
    "pending": "#56B4E9",
    "quiet": "#999999",
    "already_over": "#000000",
}
OUTCOME_WORDS = {
    "hit": "came true",
    "missed": "missed",
    "false_alarm": "false alarm",
    "pending": "pending",
    "quiet": "quiet (no call, no crossing)",
    "already_over": "already over at the origin",
}


def totals_figure(totals: pd.DataFrame, run_a: str, run_b: str, *, height: int = 360) -> Figure:
    """Grouped bars: each total before (run A) and after (run B)."""
    t = totals[totals["measure"].isin(CHART_MEASURES)]
    if t.empty:
        return empty_figure("No totals to compare", title="Fleet totals before and after", height=height)
    labels = t["measure"].str.replace("recommended: ", "rec. ", regex=False).tolist()
    traces = [
        {
            "type": "bar",
            "x": labels,
            "y": numbers(t[col], 0),
            "name": f"{name} ({rid})",
            "marker": {"color": color},
            "hovertemplate": "%{x}: %{y:,}<extra>" + name + "</extra>",
        }
        for col, name, rid, color in (("before", "before", run_a, BEFORE), ("after", "after", run_b, AFTER))
    ]
    layout = _base_layout("Fleet totals before and after", height, ytitle="servers")
    layout.update(barmode="group", xaxis={"tickangle": -20})
    return _figure(traces, layout)


def moves_figure(moved: pd.DataFrame, *, height: int = 360) -> Figure:
    """How far breach dates moved: a histogram of days (negative = earlier), split by direction."""
    title = "Breach dates that moved (days; negative = earlier)"
    if moved.empty:
        return empty_figure("No expected breach date moved between the two runs", title=title, height=height)
    days = moved["days_moved"].to_numpy(dtype=float)
    span = max(1.0, float(np.nanmax(np.abs(days))))
    size = max(1.0, math.ceil(span / 15))
    traces = []
    for name, sel, color in (("earlier", days < 0, EARLIER), ("later", days > 0, LATER)):
        if sel.any():
            traces.append(
                {
                    "type": "histogram",
                    "x": numbers(days[sel], 1),
                    "name": f"{name} ({int(sel.sum()):,})",
                    "marker": {"color": color},
                    "xbins": {"size": size},
                    "hovertemplate": "%{x} days: %{y} rows<extra>" + name + "</extra>",
                }
            )
    layout = _base_layout(title, height, xtitle="days moved (after − before)", ytitle="server × metric rows")
    layout.update(barmode="overlay", shapes=[_vline(0)])
    return _figure(traces, layout)


def track_path_figure(
    metric: str,
    history: pd.DataFrame,
    forecast: pd.DataFrame,
    *,
    origin: pd.Timestamp,
    threshold: float | None,
    expected: pd.Timestamp | None,
    crossing: pd.Timestamp | None,
    outcome: str,
    title: str,
    height: int = 380,
) -> Figure:
    """A past run's predicted path and 80 % band against what happened: actuals before and after
    the forecast origin, the threshold, the breach the run called and the crossing that came."""
    label, unit = metric_label(metric), metric_unit(metric)
    h = (
        history[["timestamp", metric]].dropna()
        if metric in history
        else pd.DataFrame(columns=["timestamp", metric])
    )
    ts = pd.to_datetime(h["timestamp"], utc=True)
    before, after = h[ts <= origin], h[ts > origin]
    x = iso_utc(forecast["timestamp"]) if len(forecast) else []
    band = {"type": "scatter", "mode": "lines", "line": {"width": 0}, "hoverinfo": "skip"}
    traces = [
        {
            "type": "scatter",
            "x": iso_utc(before["timestamp"]),
            "y": numbers(before[metric]),
            "mode": "lines",
            "name": "history the run saw",
            "line": {"color": "#8792a2", "width": 1.2},
            "hovertemplate": f"%{{x|%d %b %Y}}: %{{y:.1f}} {unit}<extra>history</extra>",
        },
        {
            **band,
            "x": x,
            "y": numbers(forecast["q10"]) if len(forecast) else [],
            "showlegend": False,
            "name": "q10",
        },
        {
            **band,
            "x": x,
            "y": numbers(forecast["q90"]) if len(forecast) else [],
            "fill": "tonexty",
            "fillcolor": "rgba(47,111,176,0.22)",
            "name": "80 % band",
        },
        {
            "type": "scatter",
            "x": x,
            "y": numbers(forecast["yhat"]) if len(forecast) else [],
            "mode": "lines",
            "name": "predicted (median)",
            "line": {"color": FORECAST, "width": 2, "dash": "dash"},
            "hovertemplate": f"%{{x|%d %b %Y}}: %{{y:.1f}} {unit}<extra>predicted</extra>",
        },
        {
            "type": "scatter",
            "x": iso_utc(after["timestamp"]),
            "y": numbers(after[metric]),
            "mode": "lines+markers",
            "marker": {"size": 3},
            "name": "what happened (actuals)",
            "line": {"color": "#1f2933", "width": 1.6},
            "hovertemplate": f"%{{x|%d %b %Y}}: %{{y:.1f}} {unit}<extra>actual</extra>",
        },
    ]
    shapes = [_vline(_naive(origin))]
    annotations: list[dict[str, Any]] = [
        {
            "x": _naive(origin),
            "xref": "x",
            "y": 1,
            "yref": "paper",
            "yanchor": "bottom",
            "text": "forecast origin",
            "showarrow": False,
            "font": {"size": 11, "color": "#6b7785"},
        }
    ]
    if threshold is not None and math.isfinite(threshold):
        shapes.append(_hline(threshold, THRESHOLD))
        annotations.append(
            {
                "x": 0,
                "xref": "paper",
                "xanchor": "left",
                "y": threshold,
                "yref": "y",
                "yanchor": "bottom",
                "text": f"threshold {threshold:g} {unit}",
                "showarrow": False,
                "font": {"size": 11, "color": THRESHOLD},
            }
        )
        for when, text, color, ay in (
            (expected, "called", FORECAST, -36),
            (crossing, "crossed", "#D55E00", 36),
        ):
            if when is not None and not pd.isna(when):
                annotations.append(
                    {
                        "x": _naive(when),
                        "y": threshold,
                        "xref": "x",
                        "yref": "y",
                        "text": f"{text} {format_date(when)}",
                        "showarrow": True,
                        "arrowhead": 2,
                        "ax": 0,
                        "ay": ay,
                        "font": {"size": 11, "color": color},
                        "arrowcolor": color,
                    }
                )
    layout = _base_layout(f"{title}<br><sup>{label}: {OUTCOME_WORDS.get(outcome, outcome)}</sup>", height)
    yaxis: dict[str, Any] = {"title": {"text": f"{label} ({unit})"}}
    if METRICS.get(metric) is not None and METRICS[metric].kind == "percent":
        yaxis["range"] = [0, 105]
    layout.update(
        shapes=shapes,
        annotations=annotations,
        yaxis=yaxis,
        hovermode="x",
        legend={"orientation": "h", "y": -0.15, "yanchor": "top", "font": {"size": 11}},
        margin={"t": 70, "b": 8},
    )
    return _figure(traces, layout)


def coverage_figure(summaries: Sequence[dict[str, Any]], *, height: int = 340) -> Figure:
    """Band coverage of each run's elapsed forecasts, by forecast origin, against the nominal
    80 % and 95 %: the honest answer to "are the bands right?" over time."""
    title = "Band coverage over time (share of actuals inside the band)"
    rows = [s for s in summaries if s.get("coverage_80") is not None]
    if not rows:
        return empty_figure("No run has a track record yet", title=title, height=height)
    rows = sorted(rows, key=lambda s: str(s["forecast_origin"]))
    x = [_naive(pd.Timestamp(s["forecast_origin"])) for s in rows]
    runs = [s["run_id"] for s in rows]
    traces = []
    for key, name, color in (
        ("coverage_80", "80 % band", CATEGORICAL[0]),
        ("coverage_95", "95 % band", CATEGORICAL[2]),
    ):
        traces.append(
            {
                "type": "scatter",
                "x": x,
                "y": [None if s.get(key) is None else round(100 * s[key], 1) for s in rows],
                "customdata": runs,
                "mode": "lines+markers",
                "name": name,
                "line": {"color": color, "width": 2},
                "hovertemplate": "run %{customdata}<br>%{y:.1f} %<extra>" + name + "</extra>",
            }
        )
    layout = _base_layout(
        title, height, xtitle="forecast origin of the run", ytitle="actuals inside the band (%)"
    )
    lo, hi = min(x), max(x)
    pad = max((hi - lo) * 0.05, pd.Timedelta(days=10))
    layout.update(
        xaxis={
            "type": "date",
            "tickformat": "%d %b %Y",
            "range": [lo - pad, hi + pad],
            "title": {"text": "forecast origin of the run"},
        },
        shapes=[_hline(80, CATEGORICAL[0], 1), _hline(95, CATEGORICAL[2], 1)],
        yaxis={"title": {"text": "actuals inside the band (%)"}, "range": [0, 102]},
        annotations=[
            {
                "x": 1,
                "xref": "paper",
                "xanchor": "right",
                "y": y,
                "yref": "y",
                "yanchor": "top",
                "text": f"nominal {y} %",
                "showarrow": False,
                "font": {"size": 10, "color": "#6b7785"},
            }
            for y in (80, 95)
        ],
    )
    return _figure(traces, layout)
