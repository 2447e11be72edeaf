"""A store with two published runs a quarter-planner would compare, and actuals after the first.

Run A forecasts from a cut-off 60 days before the end of the generated history; then the rest
of the history "arrives" and run B forecasts from the end with the CPU threshold lowered to 80 %.
So A's horizon has partly elapsed (its track record can be measured against known actuals), and
A → B differs by new data and one named setting.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from forecasting.batch import run_batch
from forecasting.schema import validate
from forecasting.settings import load_settings
from forecasting.sources import Store, open_store
from forecasting.synthetic import Fleet, generate_fleet

START = "2025-01-01"
DAYS = 445
ELAPSED_DAYS = 60
RUN_A = "20260301T060000Z-rec0a"
RUN_B = "20260415T060000Z-rec0b"


def cutoff() -> pd.Timestamp:
    return pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS - ELAPSED_DAYS)


def make_records_store(
    root: Path, n_servers: int = 80, seed: int = 5, *, earlier: tuple[int, ...] = ()
) -> tuple[Store, Fleet]:
    """``earlier``: days before the end of the history at which more runs forecast before run A
    (e.g. (120, 90): two older runs, so coverage has a history across runs)."""
    fleet = generate_fleet(n_servers, days=DAYS, start=START, seed=seed)
    v = validate(fleet.inventory, fleet.metrics, "daily")
    store = open_store(str(root))
    store.write_inventory(v.inventory)
    end = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS)
    for i, days in enumerate(sorted(earlier, reverse=True)):
        store.write_metrics(
            v.metrics[v.metrics["timestamp"] < end - pd.Timedelta(days=days)], v.inventory, freq="daily"
        )
        settings = load_settings(data=str(root))
        run_batch(store, settings, backtest=False, progress=False, run_id=f"2026020{i + 1}T060000Z-rece{i}")
    store.write_metrics(v.metrics[v.metrics["timestamp"] < cutoff()], v.inventory, freq="daily")
    run_batch(store, load_settings(data=str(root)), backtest=False, progress=False, run_id=RUN_A)
    store.write_metrics(v.metrics, v.inventory, freq="daily")  # the later data arrives
    lowered = load_settings(data=str(root), thresholds={"cpu_p95": 80})
    run_batch(store, lowered, backtest=False, progress=False, run_id=RUN_B)
    return store, fleet
