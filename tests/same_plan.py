"""Two published runs hold the same plan: the comparison the sharded engines are held to.

Tolerance: every non-float column (ids, severities, actions, reasons, dates, models) is
identical; float columns agree within FLOAT_RTOL. The fits run in float64 and a BLAS product's
rounding depends on which other rows share it (a shard holds other rows than the fleet), so a
float64 forecast can differ from the one-process run's in its last bits (~1e-15 relative); the
published float32 tables then differ at most by one float32 unit in the last place, and only
where a value sits on a rounding boundary (a few values in 10^5). The backtest's scores are
float64 means of float64 forecasts, same bound.
"""

from __future__ import annotations

import pandas as pd

PLAN_TABLES = {
    "forecasts": ["server_id", "metric", "timestamp"],
    "risk": ["server_id", "metric"],
    "recommendations": ["server_id"],
    "consolidation": ["server_id"],
    "backtest": ["server_id", "metric", "model"],
}
FLOAT_RTOL = 1e-6  # one float32 ulp is 6e-8 … 1.2e-7 relative
FLOAT_ATOL = 1e-9


def assert_same_plan(store, a: str, b: str, store_b=None) -> None:
    """Run a of `store` and run b of `store_b` (default the same store) hold the same plan."""
    store_b = store if store_b is None else store_b
    for name, keys in PLAN_TABLES.items():
        ta, tb = store.read_run_table(a, name), store_b.read_run_table(b, name)
        keys = [k for k in keys if k in ta.columns]
        ta = ta.sort_values(keys, kind="stable").reset_index(drop=True)
        tb = tb.sort_values(keys, kind="stable").reset_index(drop=True)
        assert list(ta.columns) == list(tb.columns), name
        floats = [c for c in ta.columns if pd.api.types.is_float_dtype(ta[c])]
        rest = [c for c in ta.columns if c not in floats]
        pd.testing.assert_frame_equal(ta[rest], tb[rest], check_exact=True, obj=f"{name} (exact columns)")
        pd.testing.assert_frame_equal(
            ta[floats],
            tb[floats],
            check_exact=False,
            rtol=FLOAT_RTOL,
            atol=FLOAT_ATOL,
            obj=f"{name} (floats)",
        )
