"""A small validated fleet written to a store, and one more day of telemetry for it (new input)."""

from __future__ import annotations

import pandas as pd

from forecasting.schema import validate
from forecasting.synthetic import generate_fleet

START = "2025-01-01"
DAYS = 150


def write_fleet(store, n: int = 12, seed: int = 3, days: int = DAYS, start: str = START) -> None:
    fleet = generate_fleet(n, days=days, start=start, seed=seed)
    v = validate(fleet.inventory, fleet.metrics, "daily")
    store.write_inventory(v.inventory)
    store.write_metrics(v.metrics, v.inventory, freq="daily")


def append_day(store) -> None:
    """New telemetry: one more day for every server (merged: partitions are rewritten)."""
    metrics = store.read_metrics()
    last = metrics[metrics["timestamp"] == metrics["timestamp"].max()].copy()
    last["timestamp"] = last["timestamp"] + pd.Timedelta(days=1)
    store.write_metrics(last, store.read_inventory(), freq="daily", mode="merge")
