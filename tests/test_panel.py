"""The panel every model fits: wide contract metrics -> (series × time) arrays."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.panel import Panel, build_panel, interpolate_short_gaps
from forecasting.schema import SchemaError


def wide(
    days: int = 10, servers=("srv-a", "srv-b"), start: str = "2025-01-01", freq: str = "D"
) -> pd.DataFrame:
    ts = pd.date_range(start, periods=days, freq=freq, tz="UTC")
    frames = []
    for k, s in enumerate(servers):
        frames.append(
            pd.DataFrame(
                {
                    "server_id": s,
                    "timestamp": ts,
                    "cpu_p95": np.arange(days, dtype=float) + 10 * k,
                    "net_in_p95": np.arange(days, dtype=float) * 2 + 100 * k,
                }
            )
        )
    return pd.concat(frames, ignore_index=True)


def test_build_panel_orders_series_server_major_with_present_metrics_only():
    p = build_panel(wide(), "daily")
    assert p.keys.to_dict("list") == {
        "server_id": ["srv-a", "srv-a", "srv-b", "srv-b"],
        "metric": ["cpu_p95", "net_in_p95", "cpu_p95", "net_in_p95"],
    }
    assert p.values.shape == (4, 10) and p.observed.all()
    np.testing.assert_array_equal(p.values[2], np.arange(10) + 10.0)
    assert p.n_series == 4 and p.length == 10 and p.freq == "daily"
    assert str(p.index.tz) == "UTC" and len(p.index) == 10


def test_build_panel_interpolates_short_gaps_but_not_long_ones_and_marks_them_unobserved():
    m = wide(days=20, servers=("srv-a",))
    m = m[~m["timestamp"].dt.day.isin([3, 4])]  # 2-day gap (≤ 3: interpolated)
    m = m[~m["timestamp"].dt.day.isin(range(10, 16))]  # 6-day gap: left missing
    p = build_panel(m, "daily", columns=["cpu_p95"])
    row = p.values[0]
    np.testing.assert_allclose(row[2:4], [2.0, 3.0])  # linear between day 2 (1.0) and day 5 (4.0)
    assert not p.observed[0, 2:4].any()
    assert np.isnan(row[9:15]).all() and not p.observed[0, 9:15].any()
    assert p.observed[0, :2].all() and p.observed[0, 15:].all()


def test_build_panel_drops_series_without_any_value():
    m = wide(servers=("srv-a", "srv-b"))
    m.loc[m["server_id"] == "srv-b", "net_in_p95"] = np.nan
    p = build_panel(m, "daily")
    assert list(zip(p.keys["server_id"], p.keys["metric"])) == [
        ("srv-a", "cpu_p95"),
        ("srv-a", "net_in_p95"),
        ("srv-b", "cpu_p95"),
    ]


def test_build_panel_late_start_leaves_leading_nans():
    m = wide(days=10, servers=("srv-a", "srv-b"))
    m = m[~((m["server_id"] == "srv-b") & (m["timestamp"] < pd.Timestamp("2025-01-05", tz="UTC")))]
    p = build_panel(m, "daily", columns=["cpu_p95"])
    assert np.isnan(p.values[1, :4]).all() and not p.observed[1, :4].any()
    assert p.observed[1, 4:].all()


def test_build_panel_end_extends_the_grid():
    p = build_panel(wide(days=5), "daily", end=pd.Timestamp("2025-01-08", tz="UTC"))
    assert p.length == 8 and np.isnan(p.values[:, 5:]).all()


def test_build_panel_hourly_grid():
    p = build_panel(wide(days=48, freq="h"), "hourly")
    assert p.length == 48 and p.index[1] - p.index[0] == pd.Timedelta(hours=1)


def test_build_panel_rejects_empty_input_and_unknown_frequency():
    with pytest.raises(ValueError, match="no metrics"):
        build_panel(wide().iloc[:0], "daily")
    with pytest.raises(ValueError, match="no metrics"):
        build_panel(wide()[["server_id", "timestamp"]], "daily")
    with pytest.raises(SchemaError, match="unknown frequency 'weekly'"):
        build_panel(wide(), "weekly")


def test_upper_bounds_follow_metric_kind():
    p = build_panel(wide(), "daily")
    np.testing.assert_array_equal(p.upper_bounds, [100.0, np.inf, 100.0, np.inf])


def test_future_index_continues_the_grid():
    p = build_panel(wide(days=10), "daily")
    f = p.future_index(3)
    assert list(f) == list(pd.date_range("2025-01-11", periods=3, freq="D", tz="UTC"))
    ph = build_panel(wide(days=30, freq="h"), "hourly")
    assert ph.future_index(2)[0] == ph.index[-1] + pd.Timedelta(hours=1)


def test_head_and_subset_are_consistent_views():
    p = build_panel(wide(days=10), "daily")
    h = p.head(4)
    assert isinstance(h, Panel) and h.length == 4 and h.index[-1] == p.index[3]
    np.testing.assert_array_equal(h.values, p.values[:, :4])
    s = p.subset(np.array([3, 0]))
    assert list(s.keys["metric"]) == ["net_in_p95", "cpu_p95"]
    assert list(s.keys.index) == [0, 1]
    np.testing.assert_array_equal(s.values[0], p.values[3])


def test_interpolate_short_gaps_by_hand():
    v = np.array(
        [
            [1.0, np.nan, 3.0, np.nan, np.nan, np.nan, 7.0],
            [np.nan, 2.0, np.nan, np.nan, 5.0, np.nan, np.nan],
        ]
    )
    out = interpolate_short_gaps(v, 2)
    np.testing.assert_allclose(out[0], [1.0, 2.0, 3.0, np.nan, np.nan, np.nan, 7.0])  # 3-gap stays
    np.testing.assert_allclose(out[1], [np.nan, 2.0, 3.0, 4.0, 5.0, np.nan, np.nan])  # edges stay
    assert np.isnan(v[0, 1])  # input untouched
    np.testing.assert_array_equal(interpolate_short_gaps(v, 0), v)
