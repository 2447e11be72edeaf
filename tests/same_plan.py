"""Two published runs hold the same plan: the comparison the sharded engines are held to."""

from __future__ import annotations

import pandas as pd

PLAN_TABLES = {
    "forecasts": ["server_id", "metric", "timestamp"],
    "risk": ["server_id", "metric"],
    "recommendations": ["server_id"],
    "consolidation": ["server_id"],
    "backtest": ["server_id", "metric", "model"],
}
BACKTEST_RTOL = 1e-9  # backtest scores are float64 means of float64 forecasts: summation order only


def assert_same_plan(store, a: str, b: str) -> None:
    """Two runs published the same plan: every table identical, the backtest's scores within
    BACKTEST_RTOL (its float64 forecasts are never rounded to the published float32)."""
    for name, keys in PLAN_TABLES.items():
        ta, tb = store.read_run_table(a, name), store.read_run_table(b, name)
        keys = [k for k in keys if k in ta.columns]
        ta = ta.sort_values(keys, kind="stable").reset_index(drop=True)
        tb = tb.sort_values(keys, kind="stable").reset_index(drop=True)
        if name == "backtest":
            pd.testing.assert_frame_equal(ta, tb, check_exact=False, rtol=BACKTEST_RTOL, atol=0)
        else:
            pd.testing.assert_frame_equal(ta, tb, check_exact=True, obj=name)
