"""The plans-as-records callbacks without a browser: what a store with one run and no track
record shows (visible alerts, no exception), and the figures' schema."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go

from callbacks import changes, track_record
from components.records import coverage_figure, moves_figure, totals_figure, track_path_figure


def test_changes_on_a_store_with_one_run_is_an_alert(readmodel):
    alert, causes, *_rest, new, resolved, moved, recs, totals = changes.changes_view(
        readmodel, None, None, None
    )
    assert "a comparison needs two" in str(alert.children)
    assert causes is None and new == resolved == moved == recs == totals == []
    options, a, _, b = changes.pickers(readmodel)
    assert len(options) == 1 and a is None and b is None
    same = changes.changes_view(readmodel, options[0]["value"], options[0]["value"], None)[0]
    assert "the same run is chosen twice" in str(same.children)
    assert changes.export(readmodel, "csv", None, None, None) is None


def test_track_record_without_records_is_an_info_alert(readmodel):
    alert, kpis, figure, runs, breakdown, calls = track_record.record_view(readmodel, None, None)
    assert "No run has a track record yet" in str(alert.children) and alert.color == "info"
    assert kpis is None and runs == breakdown == calls == []
    go.Figure(figure)  # a valid (empty) figure that says why
    assert track_record.run_pickers(readmodel) == ([], None)
    assert "Choose a run" in str(track_record.path_view(readmodel, None, None, None))


def test_figures_are_valid_plotly():
    totals = pd.DataFrame(
        {"measure": ["servers at risk", "at risk: critical"], "before": [3.0, 1.0], "after": [4.0, 0.0]}
    )
    go.Figure(totals_figure(totals, "a", "b"))
    moved = pd.DataFrame({"days_moved": [-9.0, 5.0, 30.0]})
    fig = moves_figure(moved)
    go.Figure(fig)
    assert [t["name"] for t in fig["data"]] == ["earlier (1)", "later (2)"]
    go.Figure(moves_figure(moved.iloc[0:0]))
    t = pd.date_range("2026-01-01", periods=40, freq="D", tz="UTC")
    hist = pd.DataFrame({"timestamp": t, "cpu_p95": range(40)})
    fc = pd.DataFrame({"timestamp": t[20:], "yhat": 30.0, "q10": 25.0, "q90": 35.0})
    fig = track_path_figure(
        "cpu_p95",
        hist,
        fc,
        origin=t[19],
        threshold=35.0,
        expected=t[30],
        crossing=t[35],
        outcome="hit",
        title="srv-1 · run r",
    )
    go.Figure(fig)
    texts = [a["text"] for a in fig["layout"]["annotations"]]
    assert "forecast origin" in texts and "threshold 35 %" in texts
    assert any(x.startswith("called") for x in texts) and any(x.startswith("crossed") for x in texts)
    summaries = [
        {
            "run_id": "r1",
            "forecast_origin": "2026-01-01T00:00:00+00:00",
            "coverage_80": 0.8,
            "coverage_95": 0.95,
        },
        {
            "run_id": "r2",
            "forecast_origin": "2026-02-01T00:00:00+00:00",
            "coverage_80": 0.7,
            "coverage_95": 0.9,
        },
    ]
    fig = coverage_figure(summaries)
    go.Figure(fig)
    assert fig["data"][0]["y"] == [80.0, 70.0]
