"""Columns of the plan store tables (DESIGN.md §3), shared by the batch job, analytics and app.

Keeping them in one place is what lets the engine, the analytics and the dashboard be built
independently and still meet.
"""

from __future__ import annotations

# Quantile levels every model predicts; column name = "q" + digits after "0." (0.025 -> q025).
QUANTILES: tuple[float, ...] = (0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.975)


def qcol(level: float) -> str:
    """Column name of a quantile level: 0.1 -> 'q10', 0.025 -> 'q025', 0.5 -> 'q50'."""
    digits = f"{level:.3f}".split(".")[1].rstrip("0")
    return "q" + (digits if len(digits) > 1 else digits + "0")


QUANTILE_COLUMNS = [qcol(q) for q in QUANTILES]
BAND_80 = ("q10", "q90")
BAND_95 = ("q025", "q975")

FORECAST_COLUMNS = [
    "server_id",
    "metric",
    "timestamp",
    "yhat",  # point forecast (the median path)
    "yhat_lower",  # = q10, lower edge of the 80 % band
    "yhat_upper",  # = q90
    *QUANTILE_COLUMNS,
    "model",
]

RISK_COLUMNS = [
    "server_id",
    "metric",
    "threshold",
    "current_p95",  # p95 of the last 7 days of history
    "forecast_peak",  # max of the expected (q50) path over the horizon
    "forecast_peak_upper",  # max of the pessimistic (q90) path
    "breach_optimistic",  # first crossing of the q10 path (NaT = none in horizon)
    "breach_expected",  # q50 path
    "breach_pessimistic",  # q90 path
    "days_to_breach",  # from the forecast origin to breach_expected (NaN = none)
    "days_to_breach_pessimistic",
    "breach_probability",  # P(crossing within the horizon), 0–1
    "act_by",  # breach date (pessimistic if no expected) − procurement lead time
    "status",  # ok | at_risk | seasonal_peak | already_over
    "severity",  # critical | high | medium | low | none
    "score",  # 0–100
    "trend_per_week",  # points (or Mbps) per week
    "reason",
]

RECOMMENDATION_COLUMNS = [
    "server_id",
    "action",  # keep | right-size | consolidate | decommission | upgrade
    "current_size",
    "current_cores",
    "current_memory_gb",
    "recommended_size",
    "recommended_cores",
    "recommended_memory_gb",
    "target_group",  # consolidation host group id, '' when not consolidated
    "current_monthly_cost",
    "recommended_monthly_cost",
    "monthly_savings",
    "reason",
    # why the policy kept a server out of a saving action ('' = not held back): at risk,
    # growing, pinned, DR standby, no saving, anti-affinity, no fit, not proposed, no data
    "held_back",
]

# One row per (host group, member): the consolidation plan.
CONSOLIDATION_COLUMNS = [
    "target_group",
    "server_id",
    "region",
    "environment",
    "host_size",
    "host_cores",
    "host_memory_gb",
    "host_monthly_cost",
    "peak_cpu_util",  # peak of the summed CPU load over time, % of the host
    "peak_mem_util",
]

BACKTEST_COLUMNS = [
    "server_id",
    "metric",
    "model",
    "mase",
    "smape",
    "mae",
    "coverage_80",
    "coverage_95",
    "n_cutoffs",
]

ACTIONS = ["upgrade", "decommission", "consolidate", "right-size", "keep"]
SEVERITIES = ["critical", "high", "medium", "low", "none"]
