"""Plotly figure builders: data in, figure out. Every chart is titled, has units and a legend.

Figures are plain ``{"data": [...], "layout": {...}}`` dicts, which dcc.Graph takes as they
are: building ``go.Figure`` objects validates every property in Python and cost more than
the data work of a callback (≈ 20 ms per server chart). The tests validate each builder's
output against plotly's schema with ``go.Figure(fig)`` instead, so a typo still fails.

One small template (not plotly_white's full JSON in every response) keeps charts consistent
with the CSS theme. Traces are SVG ``scatter``/``bar``/``heatmap`` only: the app ships plotly.js's
cartesian bundle, which has no WebGL traces (assets/vendor; README). The server forecast
figure keeps a fixed trace order so a re-forecast can be sent as a ``dash.Patch`` of the
forecast traces instead of a whole figure.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from dash import Patch

from forecasting.schema import METRICS

from .layout import format_date, metric_label, metric_unit

GRAPH_CONFIG = {
    "displaylogo": False,
    "responsive": True,
    "displayModeBar": "hover",
    "modeBarButtonsToRemove": ["lasso2d", "select2d"],
}
GRAPH_STYLE = {"width": "100%"}
QUARTER_END = "#e0a526"
FONT = "system-ui, -apple-system, 'Segoe UI', Roboto, 'Helvetica Neue', Arial, sans-serif"
INK = "#1f2933"
GRID = "#e4e8ee"
PRIMARY = "#1f4e79"
THRESHOLD = "#c0392b"
FORECAST = "#2f6fb0"
# Okabe–Ito: distinguishable with the common colour-vision deficiencies.
CATEGORICAL = [
    "#0072B2",
    "#E69F00",
    "#009E73",
    "#CC79A7",
    "#56B4E9",
    "#D55E00",
    "#8c6d1f",
    "#000000",
    "#999999",
]
SEVERITY_COLORS = {
    "critical": "#b91c1c",
    "high": "#ea580c",
    "medium": "#ca8a04",
    "low": "#2563eb",
    "none": "#6b7280",
}
HEAT_SCALE = [[0.0, "#f7fbff"], [0.5, "#fdd49e"], [0.8, "#fc8d59"], [1.0, "#b30000"]]

TEMPLATE = go.layout.Template(
    layout=go.Layout(
        font={"family": FONT, "size": 12, "color": INK},
        title={"font": {"size": 15}, "x": 0.01, "xanchor": "left"},
        colorway=CATEGORICAL,
        paper_bgcolor="white",
        plot_bgcolor="white",
        hoverlabel={"font": {"family": FONT}},
        xaxis={"gridcolor": GRID, "linecolor": "#c5ccd6", "zeroline": False, "automargin": True},
        yaxis={"gridcolor": GRID, "linecolor": "#c5ccd6", "zeroline": False, "automargin": True},
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.0, "xanchor": "left", "x": 0},
        margin={"l": 10, "r": 10, "t": 64, "b": 10},
    )
)

TEMPLATE_JSON = TEMPLATE.to_plotly_json()
Figure = dict[str, Any]  # {"data": [trace dicts], "layout": {...}}

# Trace order of server_forecast_figure (patch_forecast relies on it).
TRACE_HISTORY, TRACE_Q025, TRACE_Q975, TRACE_Q10, TRACE_Q90, TRACE_MEDIAN, TRACE_BREACH = range(7)
BREACH_STYLE = {
    "optimistic": ("triangle-up-open", "optimistic"),
    "expected": ("diamond", "expected"),
    "pessimistic": ("triangle-up", "pessimistic"),
}


def _figure(traces: list[dict], layout: dict) -> Figure:
    return {"data": traces, "layout": layout}


def _base_layout(title: str, height: int, *, xtitle: str | None = None, ytitle: str | None = None) -> dict:
    layout: dict[str, Any] = {"template": TEMPLATE_JSON, "title": {"text": title}, "height": height}
    if xtitle is not None:
        layout["xaxis"] = {"title": {"text": xtitle}}
    if ytitle is not None:
        layout["yaxis"] = {"title": {"text": ytitle}}
    return layout


def empty_figure(message: str, *, title: str = "", height: int = 320) -> Figure:
    """A blank chart that says why it is blank."""
    layout = _base_layout(title, height)
    layout.update(
        xaxis={"visible": False},
        yaxis={"visible": False},
        annotations=[
            {
                "text": message,
                "showarrow": False,
                "x": 0.5,
                "y": 0.5,
                "xref": "paper",
                "yref": "paper",
                "font": {"size": 14, "color": "#6b7785"},
            }
        ],
    )
    return _figure([], layout)


# --------------------------------------------------------------------------- overview


def utilization_heatmap(util: pd.DataFrame, metrics: Sequence[str], *, height: int = 360) -> Figure:
    """Business unit × metric: colour = mean current p95 as % of threshold, text = the value itself.

    Percent and Mbps metrics share one colour scale because they are compared with their own
    thresholds; the cell text and hover keep the real value and unit.
    """
    title = "Utilization by business unit (mean current p95, % of threshold)"
    if util.empty:
        return empty_figure("No utilization data for these servers", title=title, height=height)
    bus = sorted(util["business_unit"].unique(), reverse=True)
    metrics = [m for m in metrics if m in set(util["metric"])]
    pct = util.pivot(index="business_unit", columns="metric", values="pct_of_threshold").reindex(
        index=bus, columns=metrics
    )
    val = util.pivot(index="business_unit", columns="metric", values="mean_value").reindex(
        index=bus, columns=metrics
    )
    n = util.pivot(index="business_unit", columns="metric", values="servers").reindex(
        index=bus, columns=metrics
    )
    text = [[_short_value(val.iat[i, j], metrics[j]) for j in range(len(metrics))] for i in range(len(bus))]
    counts = n.fillna(0).astype(int).to_numpy()
    custom = [[[text[i][j], int(counts[i, j])] for j in range(len(metrics))] for i in range(len(bus))]
    z = pct.to_numpy(dtype=float)
    heat = {
        "type": "heatmap",
        "z": [[None if not math.isfinite(v) else round(v, 2) for v in row] for row in z],
        "x": [metric_label(m).removesuffix(" p95") for m in metrics],  # the title says p95
        "y": bus,
        "text": text,
        "texttemplate": "%{text}",
        "customdata": custom,
        "colorscale": HEAT_SCALE,
        "zmin": 0,
        "zmax": 100,
        "colorbar": {"title": {"text": "% of<br>threshold"}, "ticksuffix": " %", "thickness": 12},
        "hovertemplate": "<b>%{y}</b><br>%{x}: %{customdata[0]}<br>%{z:.0f} % of threshold"
        "<br>%{customdata[1]} servers<extra></extra>",
        "xgap": 2,
        "ygap": 2,
    }
    layout = _base_layout(title, height)
    layout.update(xaxis={"side": "bottom", "showgrid": False}, yaxis={"showgrid": False})
    return _figure([heat], layout)


def _naive(ts) -> pd.Timestamp:
    t = pd.Timestamp(ts)
    return t.tz_convert(None) if t.tzinfo is not None else t


def _short_value(v: float, metric: str) -> str:
    if v is None or not math.isfinite(v):
        return "—"
    return f"{v:.0f} %" if METRICS[metric].kind == "percent" else f"{v:,.0f} Mbps"


def utilization_distribution(
    values: np.ndarray, metric: str, threshold: float | None, *, height: int = 360
) -> Figure:
    """Histogram of current p95 across servers, with the (base) threshold marked."""
    label, unit = metric_label(metric), metric_unit(metric)
    title = f"Distribution of current {label} across {len(values):,} servers"
    if len(values) == 0:
        return empty_figure(
            "No current values for these servers", title=f"Distribution of current {label}", height=height
        )
    if METRICS[metric].kind == "percent":
        edges = np.arange(0.0, 105.0, 5.0)
    else:
        top = max(float(np.nanmax(values)), float(threshold or 0.0)) * 1.05 or 1.0
        edges = np.linspace(0.0, top, 31)
    counts, edges = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    centers = (edges[:-1] + edges[1:]) / 2
    traces = [
        {
            "type": "bar",
            "x": centers,
            "y": counts,
            "width": np.diff(edges) * 0.92,
            "marker": {"color": PRIMARY},
            "name": "servers",
            "customdata": np.column_stack([edges[:-1], edges[1:]]),
            "hovertemplate": f"%{{customdata[0]:.0f}}–%{{customdata[1]:.0f}} {unit}: %{{y}} servers<extra></extra>",
        }
    ]
    if threshold is not None and math.isfinite(threshold):
        traces.append(
            {
                "type": "scatter",
                "x": [threshold, threshold],
                "y": [0, max(int(counts.max()), 1)],
                "mode": "lines",
                "line": {"color": THRESHOLD, "dash": "dash", "width": 2},
                "name": f"threshold {threshold:g} {unit}",
                "hoverinfo": "skip",
            }
        )
    layout = _base_layout(title, height, xtitle=f"current {label} ({unit})", ytitle="servers")
    layout["yaxis"].update(tickformat="d", rangemode="tozero")
    layout.update(bargap=0.02, showlegend=True)
    return _figure(traces, layout)


def fleet_trend(trend: pd.DataFrame, metric: str, *, bucket: str, height: int = 380) -> Figure:
    """Mean utilisation per business unit: history solid, forecast dashed, one colour per unit.

    No threshold line: a fleet mean sits far below any single server's threshold, and the
    line would flatten the shapes this chart is for (heatmap and distribution show headroom).
    """
    label, unit = metric_label(metric), metric_unit(metric)
    title = f"Fleet trend by business unit — {bucket} mean {label}, with forecast"
    if trend.empty:
        return empty_figure("No history or forecast for these servers", title=title, height=height)
    traces: list[dict] = []
    forecast_start = None
    for i, (bu, g) in enumerate(trend.groupby("business_unit", sort=True)):
        color = CATEGORICAL[i % len(CATEGORICAL)]
        is_fc = (g["kind"] == "forecast").to_numpy()
        hist, fc = g[~is_fc], g[is_fc]
        if len(fc):
            first = fc["timestamp"].min()
            forecast_start = first if forecast_start is None else min(forecast_start, first)
            if len(hist):
                fc = pd.concat([hist.tail(1), fc])  # join the dashed line to the solid one
        hover = f"<b>{bu}</b><br>%{{x|%d %b %Y}}: %{{y:.1f}} {unit}<extra>%{{meta}}</extra>"
        common = {"type": "scatter", "mode": "lines", "legendgroup": bu, "hovertemplate": hover}
        traces.append(
            {
                **common,
                "x": iso_utc(hist["timestamp"]),
                "y": numbers(hist["value"]),
                "name": bu,
                "line": {"color": color, "width": 2},
                "meta": "history",
            }
        )
        if len(fc):
            traces.append(
                {
                    **common,
                    "x": iso_utc(fc["timestamp"]),
                    "y": numbers(fc["value"]),
                    "name": f"{bu} (forecast)",
                    "showlegend": False,
                    "line": {"color": color, "width": 2, "dash": "dash"},
                    "meta": "forecast",
                }
            )
    shapes, annotations = [], []
    if forecast_start is not None:
        x = _naive(forecast_start)
        shapes.append(_vline(x))
        annotations.append(
            {
                "x": x,
                "y": 1,
                "xref": "x",
                "yref": "paper",
                "text": "forecast →",
                "showarrow": False,
                "xanchor": "left",
                "yanchor": "top",
                "font": {"size": 11, "color": "#5f6b7a"},
            }
        )
    layout = _base_layout(title, height)
    layout.update(
        shapes=shapes,
        annotations=annotations,
        hovermode="x unified",
        legend={"title": {"text": "Business unit  "}},
        yaxis={"title": {"text": f"{label} ({unit})"}},
    )
    return _figure(traces, layout)


def _vline(x, color: str = "#8792a2") -> dict:
    return {
        "type": "line",
        "xref": "x",
        "yref": "paper",
        "x0": x,
        "x1": x,
        "y0": 0,
        "y1": 1,
        "line": {"color": color, "width": 1, "dash": "dot"},
    }


def _hline(y: float, color: str, width: float = 1.5) -> dict:
    return {
        "type": "line",
        "xref": "paper",
        "yref": "y",
        "x0": 0,
        "x1": 1,
        "y0": y,
        "y1": y,
        "line": {"color": color, "width": width, "dash": "dash"},
    }


# --------------------------------------------------------------------------- server forecast


def server_forecast_figure(
    metric: str,
    history: pd.DataFrame,
    forecast: pd.DataFrame,
    *,
    threshold: float | None,
    breaches: Mapping[str, pd.Timestamp | None],
    quarter_spans: Sequence[tuple[pd.Timestamp, pd.Timestamp]],
    model_label: str,
    x_start: pd.Timestamp | None = None,
    height: int = 330,
) -> Figure:
    """History, median forecast, 80 % and 95 % bands, threshold, breach markers, quarter-ends.

    ``history``: timestamp + ``metric`` columns; ``forecast``: timestamp, yhat, q025, q10,
    q90, q975 for this metric. Trace order is fixed (TRACE_* constants). Shapes are built as
    one list (plotly's add_vrect/add_hline re-validate every shape on each call).
    """
    label, unit = metric_label(metric), metric_unit(metric)
    h = (
        history[["timestamp", metric]].dropna()
        if metric in history
        else pd.DataFrame(columns=["timestamp", metric])
    )
    traces = [
        {
            "type": "scatter",
            "x": iso_utc(h["timestamp"]),
            "y": numbers(h[metric]),
            "mode": "lines",
            "name": "history",
            "line": {"color": "#3d4852", "width": 1.4},
            "hovertemplate": f"%{{x|%d %b %Y}}: %{{y:.1f}} {unit}<extra>history</extra>",
        },
        *_forecast_traces(forecast, unit, model_label),
        _breach_trace(breaches, threshold, unit),
    ]
    shapes = [
        {
            "type": "rect",
            "xref": "x",
            "yref": "paper",
            "x0": _naive(a),
            "x1": _naive(b),
            "y0": 0,
            "y1": 1,
            "fillcolor": QUARTER_END,
            "opacity": 0.28,
            "line": {"width": 0},
            "layer": "below",
        }
        for a, b in quarter_spans
    ]
    annotations = []
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
    if len(h) and len(forecast):
        shapes.append(_vline(_naive(h["timestamp"].max())))
    layout = _base_layout(_server_title(label, model_label), height)
    xaxis: dict = {}
    if x_start is not None and len(forecast):
        xaxis["range"] = [_naive(x_start), _naive(pd.to_datetime(forecast["timestamp"]).max())]
    yaxis: dict = {"title": {"text": f"{label} ({unit})"}}
    if METRICS[metric].kind == "percent":
        yaxis["range"] = [0, 105]
    layout.update(
        shapes=shapes,
        annotations=annotations,
        xaxis=xaxis,
        yaxis=yaxis,
        hovermode="x",
        margin={"t": 58, "b": 8},
        legend={
            "font": {"size": 11},
            "orientation": "h",
            "y": -0.12,
            "yanchor": "top",
            "traceorder": "normal",
        },
    )
    return _figure(traces, layout)


def _server_title(label: str, model_label: str) -> str:
    return f"{label} — history and {model_label} forecast<br><sup>shaded: quarter-end closes</sup>"


def _forecast_traces(forecast: pd.DataFrame, unit: str, model_label: str) -> list[dict]:
    x = iso_utc(forecast["timestamp"]) if len(forecast) else []

    def col(c: str):
        return numbers(forecast[c]) if len(forecast) else []

    band = {"type": "scatter", "mode": "lines", "line": {"width": 0}, "hoverinfo": "skip"}
    return [
        {**band, "x": x, "y": col("q025"), "showlegend": False, "name": "95 % lower"},
        {
            **band,
            "x": x,
            "y": col("q975"),
            "fill": "tonexty",
            "fillcolor": "rgba(47,111,176,0.13)",
            "name": "95 % band",
        },
        {**band, "x": x, "y": col("q10"), "showlegend": False, "name": "80 % lower"},
        {
            **band,
            "x": x,
            "y": col("q90"),
            "fill": "tonexty",
            "fillcolor": "rgba(47,111,176,0.28)",
            "name": "80 % band",
        },
        {
            "type": "scatter",
            "x": x,
            "y": col("yhat"),
            "mode": "lines",
            "name": f"forecast ({model_label})",
            "line": {"color": FORECAST, "width": 2, "dash": "dash"},
            "hovertemplate": f"%{{x|%d %b %Y}}: %{{y:.1f}} {unit}<extra>forecast</extra>",
        },
    ]


def _breach_trace(breaches: Mapping[str, pd.Timestamp | None], threshold: float | None, unit: str) -> dict:
    xs, symbols, hovers = [], [], []
    for kind, (symbol, text) in BREACH_STYLE.items():
        when = breaches.get(kind)
        if when is None or threshold is None:
            continue
        xs.append(_naive(when))
        symbols.append(symbol)
        hovers.append(f"{text} breach: {format_date(when)}")
    return {
        "type": "scatter",
        "x": xs,
        "y": [threshold] * len(xs),
        "mode": "markers",
        "name": "breach dates (q10 / median / q90)",
        "marker": {
            "symbol": symbols,
            "size": 11,
            "color": THRESHOLD,
            "line": {"width": 1.5, "color": THRESHOLD},
        },
        "text": hovers,
        "hovertemplate": "%{text}<extra></extra>",
    }


def patch_forecast(
    forecast: pd.DataFrame,
    *,
    threshold: float | None,
    breaches: Mapping[str, pd.Timestamp | None],
    model_label: str,
    metric: str,
) -> Patch:
    """Swap the forecast traces and breach markers of a server_forecast_figure (history stays)."""
    label, unit = metric_label(metric), metric_unit(metric)
    patch = Patch()
    x = iso_utc(forecast["timestamp"]) if len(forecast) else []
    columns = (
        (TRACE_Q025, "q025"),
        (TRACE_Q975, "q975"),
        (TRACE_Q10, "q10"),
        (TRACE_Q90, "q90"),
        (TRACE_MEDIAN, "yhat"),
    )
    for i, col in columns:
        patch["data"][i]["x"] = x
        patch["data"][i]["y"] = numbers(forecast[col]) if len(forecast) else []
    patch["data"][TRACE_MEDIAN]["name"] = f"forecast ({model_label})"
    breach = _breach_trace(breaches, threshold, unit)
    patch["data"][TRACE_BREACH]["x"] = [t.isoformat() for t in breach["x"]]
    patch["data"][TRACE_BREACH]["y"] = [float(v) for v in breach["y"]]
    patch["data"][TRACE_BREACH]["text"] = breach["text"]
    patch["data"][TRACE_BREACH]["marker"]["symbol"] = breach["marker"]["symbol"]
    patch["layout"]["title"]["text"] = _server_title(label, model_label)
    return patch


def iso_utc(values) -> list[str]:
    """Timestamps as naive-UTC ISO strings, vectorised: ready-made JSON (plotly's encoder would
    convert each pandas Timestamp in Python) and unambiguous to plotly.js, which has no zones."""
    ts = pd.DatetimeIndex(pd.to_datetime(values, utc=True)).tz_convert(None)
    unit = "D" if ts.equals(ts.normalize()) else "s"  # daily data: '2026-03-14', half the bytes
    return np.datetime_as_string(ts.to_numpy(dtype=f"datetime64[{unit}]"), unit=unit).tolist()


def numbers(values, decimals: int = 3) -> list[float | None]:
    """Floats rounded for the wire, NaN → None (JSON has no NaN)."""
    arr = np.round(np.asarray(values, dtype=float), decimals)
    return [v if math.isfinite(v) else None for v in arr.tolist()]
