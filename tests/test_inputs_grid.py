"""Prepared inputs of a subset of servers are exactly those rows of the fleet's (the property a
sharded run's per-shard analytics rest on), and the packing inputs a shard hands to Publish
survive storage and concatenation unchanged."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from forecasting.inputs import AnalyticsError, AnalyticsInputs, Grid, prepare


def _frames(store):
    run = store.latest_run_id()
    fc = store.read_run_table(run, "forecasts")
    hist = store.read_metrics()
    inv = store.read_inventory()
    return fc, hist, inv


def _same(a: AnalyticsInputs, b: AnalyticsInputs) -> None:
    """Every array and axis equal, bit for bit (NaN equal to NaN)."""
    for f in dataclasses.fields(AnalyticsInputs):
        if f.name == "memo":
            continue
        x, y = getattr(a, f.name), getattr(b, f.name)
        if isinstance(x, pd.DataFrame):
            pd.testing.assert_frame_equal(x.reset_index(drop=True), y.reset_index(drop=True), obj=f.name)
        elif isinstance(x, dict):
            assert list(x) == list(y), f.name
            for k in x:
                np.testing.assert_array_equal(x[k], y[k], err_msg=f"{f.name}[{k}]")
        elif isinstance(x, np.ndarray):
            np.testing.assert_array_equal(x, y, err_msg=f.name)
        elif isinstance(x, pd.Index):
            assert x.equals(y), f.name
        else:
            assert x == y, f.name


def test_a_subsets_inputs_are_the_fleets_rows_even_when_its_servers_stopped_early(plan_store):
    fc, hist, inv = _frames(plan_store)
    horizon = fc["timestamp"].nunique()
    grid = Grid.of(hist["timestamp"].min(), hist["timestamp"].max(), horizon)
    sub_ids = inv["server_id"].iloc[::7].tolist()
    # the subset's servers all stopped reporting 10 days before the fleet's last day
    late = hist["server_id"].isin(sub_ids) & (hist["timestamp"] > grid.last - pd.Timedelta(days=10))
    hist = hist.loc[~late].reset_index(drop=True)
    fleet = prepare(fc, hist, inv, freq="daily", grid=grid)
    rows = np.flatnonzero(inv["server_id"].isin(sub_ids).to_numpy())
    mine = inv.iloc[rows].reset_index(drop=True)
    sub = prepare(
        fc[fc["server_id"].isin(sub_ids)],
        hist[hist["server_id"].isin(sub_ids)],
        mine,
        freq="daily",
        grid=grid,
    )
    _same(sub, fleet.take(rows))
    assert sub.origin == grid.last
    # without the fleet's grid the subset would count from its own last day: not the fleet's numbers
    alone = prepare(
        fc[fc["server_id"].isin(sub_ids)], hist[hist["server_id"].isin(sub_ids)], mine, freq="daily"
    )
    assert alone.origin == grid.last - pd.Timedelta(days=10)


def test_packing_inputs_survive_storage_and_concatenation(plan_store):
    fc, hist, inv = _frames(plan_store)
    grid = Grid.of(hist["timestamp"].min(), hist["timestamp"].max(), fc["timestamp"].nunique())
    fleet = prepare(fc, hist, inv, freq="daily", grid=grid)
    a, b = np.arange(0, 60), np.arange(60, 130)
    parts = [fleet.take(a, metrics=("cpu_p95", "mem_p95")), fleet.take(b, metrics=("cpu_p95", "mem_p95"))]
    stored = [AnalyticsInputs.from_bytes(p.to_bytes()) for p in parts]
    for p, q in zip(parts, stored, strict=True):
        _same(p, q)
    whole = AnalyticsInputs.concat(stored)
    _same(whole, fleet.take(np.concatenate([a, b]), metrics=("cpu_p95", "mem_p95")))
    assert whole.metrics == ("cpu_p95", "mem_p95") and set(whole.history) == {"cpu_p95", "mem_p95"}
    # a part lacking a metric: NaN and "not present" there, never another server's values
    cpu_only = fleet.take(b, metrics=("cpu_p95",))
    mixed = AnalyticsInputs.concat([parts[0], cpu_only])
    assert mixed.metrics == ("cpu_p95", "mem_p95")
    assert not mixed.present[len(a) :, 1].any() and np.isnan(mixed.quantiles[len(a) :, 1]).all()
    assert np.isnan(mixed.history["mem_p95"][len(a) :]).all()


def test_unreadable_or_mismatched_packing_inputs_say_so(plan_store):
    fc, hist, inv = _frames(plan_store)
    fleet = prepare(fc, hist, inv, freq="daily")
    with pytest.raises(AnalyticsError, match="stored analytics inputs are not readable"):
        AnalyticsInputs.from_bytes(b"not an npz file")
    shifted = dataclasses.replace(fleet, origin=fleet.origin - pd.Timedelta(days=1))
    with pytest.raises(AnalyticsError, match="different time grids"):
        AnalyticsInputs.concat([fleet, shifted])
    with pytest.raises(AnalyticsError, match="nothing to concatenate"):
        AnalyticsInputs.concat([])
