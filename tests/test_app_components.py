"""components/: pure builders. Every chart titled with units and a legend; grids get JSON-safe rows."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import pytest
from dash import Patch

from components import figures as fg
from components.filterbar import filter_bar
from components.grid import compact_grid, data_grid, number_column, records, server_link_column
from components.kpi import overview_kpis, severity_badges
from components.layout import format_date, format_days, format_money, format_value, no_run_state


def _title(fig: go.Figure) -> str:
    return fig.layout.title.text or ""


def valid(fig: dict) -> go.Figure:
    """Builders return plain dicts (fast); plotly's schema validation happens here instead."""
    assert set(fig) == {"data", "layout"}
    return go.Figure(fig)


def test_formatting():
    assert format_value(56.4, "cpu_p95") == "56 %"
    assert format_value(1234.5, "net_in_p95") == "1,234 Mbps"
    assert format_value(float("nan"), "cpu_p95") == "—" and format_value(None) == "—"
    assert format_money(12345.6) == "$12,346" and format_money(None) == "—"
    assert format_date(pd.Timestamp("2026-03-14", tz="UTC")) == "14 Mar 2026"
    assert format_date(pd.NaT) == "—" and format_date("not a date") == "—"
    assert format_days(0.2) == "now" and format_days(1) == "in 1 day" and format_days(12.4) == "in 12 days"


def test_heatmap_colours_by_threshold_share_and_labels_with_units():
    util = pd.DataFrame(
        {
            "business_unit": ["Markets", "Markets", "Payments", "Payments"],
            "metric": ["cpu_p95", "net_in_p95", "cpu_p95", "net_in_p95"],
            "mean_value": [42.0, 310.0, 64.0, 120.0],
            "pct_of_threshold": [49.4, 38.75, 75.3, 15.0],
            "servers": [10, 10, 7, 7],
        }
    )
    fig = valid(fg.utilization_heatmap(util, ["cpu_p95", "mem_p95", "net_in_p95"]))
    heat = fig.data[0]
    assert "% of threshold" in _title(fig)
    assert list(heat.x) == ["CPU", "Network in"]  # metrics without data are left out
    assert list(heat.y) == ["Payments", "Markets"]
    assert heat.text[1][0] == "42 %" and heat.text[1][1] == "310 Mbps"
    assert heat.zmin == 0 and heat.zmax == 100 and heat.colorbar.title.text.startswith("% of")
    empty = valid(fg.utilization_heatmap(util.iloc[0:0], ["cpu_p95"]))
    assert empty.layout.annotations[0].text == "No utilization data for these servers"


def test_distribution_bins_percent_metrics_in_fives_and_marks_the_threshold():
    values = np.array([1.0, 3.0, 7.0, 52.0, 99.0, 100.0])
    fig = valid(fg.utilization_distribution(values, "cpu_p95", 85.0))
    bars, line = fig.data
    assert sum(bars.y) == len(values) and len(bars.x) == 20
    assert line.name == "threshold 85 %" and list(line.x) == [85.0, 85.0]
    assert fig.layout.xaxis.title.text == "current CPU p95 (%)" and fig.layout.yaxis.title.text == "servers"
    assert "6 servers" in _title(fig) and fig.layout.showlegend
    rate = valid(fg.utilization_distribution(np.array([10.0, 900.0]), "net_in_p95", 800.0))
    assert rate.data[0].x.max() < 950 and rate.layout.xaxis.title.text.endswith("(Mbps)")


def test_fleet_trend_one_colour_per_unit_forecast_dashed():
    ts = pd.date_range("2026-01-05", periods=4, freq="7D", tz="UTC")
    trend = pd.DataFrame(
        {
            "business_unit": ["A"] * 4 + ["B"] * 4,
            "timestamp": list(ts) * 2,
            "value": [10, 11, 12, 13, 20, 21, 22, 23],
            "kind": ["history", "history", "forecast", "forecast"] * 2,
        }
    )
    fig = valid(fg.fleet_trend(trend, "cpu_p95", bucket="weekly"))
    assert [t.name for t in fig.data] == ["A", "A (forecast)", "B", "B (forecast)"]
    assert fig.data[1].line.dash == "dash" and fig.data[1].line.color == fig.data[0].line.color
    assert len(fig.data[1].x) == 3  # the dashed line starts at the last history point
    assert fig.layout.yaxis.title.text == "CPU p95 (%)" and "weekly mean" in _title(fig)
    assert fig.layout.annotations[0].text == "forecast →"


def _server_inputs(n_hist: int = 400):
    hist_ts = pd.date_range("2025-01-01", periods=n_hist, freq="D", tz="UTC")
    history = pd.DataFrame({"timestamp": hist_ts, "cpu_p95": np.linspace(20, 70, n_hist)})
    fc_ts = pd.date_range(hist_ts[-1] + pd.Timedelta(days=1), periods=30, freq="D", tz="UTC")
    v = np.linspace(70, 95, 30)
    forecast = pd.DataFrame(
        {"timestamp": fc_ts, "yhat": v, "q025": v - 8, "q10": v - 5, "q90": v + 5, "q975": v + 8}
    )
    return history, forecast


def test_server_forecast_figure_layers_and_order():
    history, forecast = _server_inputs()
    breaches = {
        "optimistic": None,
        "expected": forecast["timestamp"].iloc[20],
        "pessimistic": forecast["timestamp"].iloc[12],
    }
    spans = [(pd.Timestamp("2025-03-29", tz="UTC"), pd.Timestamp("2025-04-01", tz="UTC"))]
    fig = valid(
        fg.server_forecast_figure(
            "cpu_p95",
            history,
            forecast,
            threshold=85.0,
            breaches=breaches,
            quarter_spans=spans,
            model_label="Prophet",
        )
    )
    names = [t.name for t in fig.data]
    assert names == [
        "history",
        "95 % lower",
        "95 % band",
        "80 % lower",
        "80 % band",
        "forecast (Prophet)",
        "breach dates (q10 / median / q90)",
    ]
    assert fig.data[fg.TRACE_HISTORY].type == "scatter"
    marker = fig.data[fg.TRACE_BREACH]
    assert len(marker.x) == 2 and list(marker.y) == [85.0, 85.0]
    shapes = fig.layout.shapes
    assert any(s.type == "rect" for s in shapes)  # the quarter-end close
    assert any(s.y0 == 85.0 and s.y1 == 85.0 for s in shapes)  # the threshold
    assert "CPU p95" in _title(fig) and fig.layout.yaxis.title.text == "CPU p95 (%)"
    assert fig.layout.showlegend is not False


def test_big_histories_stay_svg_traces_the_vendored_plotly_bundle_draws():
    """The app ships plotly.js's cartesian bundle (no WebGL): a WebGL trace would not draw."""
    history, forecast = _server_inputs(20_000)
    fig = valid(
        fg.server_forecast_figure(
            "cpu_p95", history, forecast, threshold=85.0, breaches={}, quarter_spans=[], model_label="x"
        )
    )
    assert {t.type for t in fig.data} <= {"scatter", "bar", "heatmap"}


def test_patch_forecast_touches_only_forecast_traces_and_title():
    _, forecast = _server_inputs()
    patch = fg.patch_forecast(
        forecast,
        threshold=85.0,
        breaches={"expected": forecast["timestamp"].iloc[3]},
        model_label="Seasonal naive",
        metric="cpu_p95",
    )
    assert isinstance(patch, Patch)
    ops = patch.to_plotly_json()["operations"]
    touched = {tuple(op["location"][:2]) for op in ops if op["location"][0] == "data"}
    assert {i for _, i in touched} == {
        fg.TRACE_Q025,
        fg.TRACE_Q975,
        fg.TRACE_Q10,
        fg.TRACE_Q90,
        fg.TRACE_MEDIAN,
        fg.TRACE_BREACH,
    }
    assert fg.TRACE_HISTORY not in {i for _, i in touched}
    json.dumps(patch.to_plotly_json())  # serialisable as sent to the browser
    name = [op for op in ops if op["location"] == ["data", fg.TRACE_MEDIAN, "name"]]
    assert name[0]["params"]["value"] == "forecast (Seasonal naive)"


def test_empty_figure_says_why():
    fig = valid(fg.empty_figure("No servers match these filters", title="Fleet trend"))
    assert _title(fig) == "Fleet trend" and fig.layout.annotations[0].text == "No servers match these filters"


def test_records_are_json_safe():
    frame = pd.DataFrame(
        {
            "server_id": ["a", "b"],
            "when": pd.to_datetime(["2026-03-14", None], utc=True),
            "score": [90.0, float("nan")],
            "n": [3, 4],
            "flag": [True, False],
            "text": ["x", None],
        }
    )
    rows = records(frame)
    assert rows[0] == {"server_id": "a", "when": "2026-03-14", "score": 90, "n": 3, "flag": True, "text": "x"}
    assert rows[1]["when"] is None and rows[1]["score"] is None and rows[1]["text"] is None
    json.dumps(rows)


def test_grids_share_defaults():
    grid = data_grid("g", [], [server_link_column(), number_column("score", "Score", suffix=" %")])
    assert grid.getRowId == "params.data.server_id" and grid.style["height"] == "420px"
    assert grid.columnDefs[0]["cellRenderer"] == "ServerLink"
    assert "d3.format" in grid.columnDefs[1]["valueFormatter"]["function"]
    small = compact_grid("c", [], [])
    assert small.dashGridOptions["domLayout"] == "autoHeight" and small.defaultColDef["filter"] is False


def test_kpi_cards_say_what_is_missing():
    row = overview_kpis(
        servers=1200,
        at_risk=None,
        breach_within=None,
        idle=None,
        idle_threshold=10,
        monthly_savings=None,
        id_prefix="k",
    )
    text = json.dumps(row.to_plotly_json(), default=lambda o: o.to_plotly_json())
    assert "1,200" in text and text.count("not in this run") == 4
    badges = severity_badges({"critical": 2, "high": 0})
    assert [c.children for c in badges.children] == ["2 critical", "0 high", "0 medium", "0 low"]


def test_filter_bar_and_no_run_state():
    bar = filter_bar(
        dropdown_ids={"business_unit": "bu-dd"},
        options={"business_unit": ["Markets", "Risk & Finance"]},
        labels={"business_unit": "Business unit"},
        placeholders={"business_unit": "All business units"},
        clear_id="clear",
        count_id="count",
    )
    text = json.dumps(bar.to_plotly_json(), default=lambda o: o.to_plotly_json())
    assert '"id": "bu-dd"' in text and "Risk & Finance" in text and '"multi": true' in text
    hero = json.dumps(
        no_run_state("No forecast run yet.").to_plotly_json(), default=lambda o: o.to_plotly_json()
    )
    assert "python -m forecasting run" in hero


@pytest.mark.parametrize("metric", ["cpu_p95", "net_out_p95"])
def test_charts_use_the_compact_template(metric):
    fig = valid(fg.utilization_distribution(np.array([1.0, 2.0]), metric, None))
    layout = fig.layout.template.layout
    assert layout.font.family == fg.FONT and list(layout.colorway) == fg.CATEGORICAL


def test_wire_formats_are_compact_and_json_safe():
    days = pd.date_range("2026-03-14", periods=2, freq="D", tz="UTC")
    hours = pd.date_range("2026-03-14 22:00", periods=2, freq="h", tz="Europe/London")
    assert fg.iso_utc(days) == ["2026-03-14", "2026-03-15"]
    assert fg.iso_utc(hours) == ["2026-03-14T22:00:00", "2026-03-14T23:00:00"]  # always UTC, no zone
    assert fg.numbers([1.23456, float("nan"), np.inf]) == [1.235, None, None]


def test_plain_table_formats_numbers_dates_and_severities_safely():
    from components.grid import Column, plain_table

    cols = [
        Column("name", "Metric"),
        Column("value", "Value", "number", decimals=1, suffix=" %"),
        Column("when", "Breach", "date"),
        Column("severity", "Severity", "severity"),
    ]
    rows = [
        {"name": "CPU p95", "value": 1234.56, "when": "2026-12-01", "severity": "high"},
        {"name": "<b>x</b>", "value": None, "when": None, "severity": "evil onclick"},
    ]
    table = plain_table("t", rows, cols)
    head, body = table.children
    assert [th.children for th in head.children.children] == ["Metric", "Value", "Breach", "Severity"]
    first, second = ([td.children for td in tr.children] for tr in body.children)
    assert first[:3] == ["CPU p95", "1,234.6 %", "2026-12-01"]
    assert first[3].className == "sev-badge sev-high"
    assert second[:3] == ["<b>x</b>", "—", "—"]  # text, never markup; missing values read '—'
    assert second[3].className == "sev-badge sev-none"  # unknown severities get no class of their own
