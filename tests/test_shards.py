"""The sharded batch (forecasting/shards.py): input snapshot, stable assignment, plan → shard →
publish on the local store, and how close a sharded plan is to the one-process run."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.settings import load_settings
from forecasting.shards import (
    InputChangedError,
    ShardError,
    calibrate_shards,
    n_shards_for,
    plan_shards,
    publish_shards,
    run_shard,
    run_sharded,
    shard_of,
    shard_status,
    snapshot_input,
)
from forecasting.sources import open_store
from forecasting.sources.commit import LeaseHeldError
from tests.same_plan import assert_same_plan
from tests.small_fleet import append_day, write_fleet


@pytest.fixture
def small(tmp_path: Path):
    root = tmp_path / "store"
    store = open_store(str(root))
    write_fleet(store, n=10, seed=5, days=120)
    settings = load_settings(data=str(root), horizon=14, backtest_cutoffs=1, workers=1, shard_size=4)
    return store, settings, root


def test_shard_of_is_stable_and_balanced():
    # the same answer in every process and release: these values are part of the contract
    assert shard_of(["srv-00001", "srv-00002", "srv-00003", "srv-o'neil"], 4).tolist() == [1, 2, 2, 0]
    ids = [f"srv-{i:05d}" for i in range(20_000)]
    counts = np.bincount(shard_of(ids, 4), minlength=4)
    assert counts.sum() == 20_000 and counts.min() > 0.95 * 5_000 and counts.max() < 1.05 * 5_000
    assert (shard_of(ids, 1) == 0).all()
    assert n_shards_for(10_001, 5_000) == 3 and n_shards_for(0, 5_000) == 1
    with pytest.raises(ValueError, match="n_shards"):
        shard_of(ids, 0)


def test_snapshot_key_follows_the_input_only(small):
    store, _settings, root = small
    first = snapshot_input(store)
    assert first["key"] == snapshot_input(store)["key"]
    assert {o[0].split("/")[0] for o in first["objects"]} == {"inventory", "metrics", "store.json"}
    # temporary names and the plan store are not input
    (root / "metrics" / ".tmp-123-part-0.parquet").write_bytes(b"half a file")
    (root / "runs" / "x").mkdir(parents=True)
    (root / "runs" / "x" / "manifest.json").write_text("{}")
    assert snapshot_input(store)["key"] == first["key"]
    append_day(store)
    assert snapshot_input(store)["key"] != first["key"]


@pytest.mark.slow
def test_plan_shard_publish_on_the_local_store(small):
    store, settings, root = small
    planned = plan_shards(store, settings, trigger="schedule")
    assert planned["n_shards"] == 3 and planned["servers"] == 10
    assert planned["shards"] == [{"run_id": planned["run_id"], "shard": k} for k in range(3)]
    assert len(json.dumps(planned)) < 1_000  # ids, not server lists: the Step Functions payload stays small
    run_id = planned["run_id"]
    assert run_id.endswith(planned["input_key"][:12])
    with pytest.raises(ShardError, match="is not calibrated"):  # the Calibrate step comes first
        run_shard(store, settings, run_id, 0)
    assert calibrate_shards(store, settings, run_id)["series"] > 0
    pooled = json.loads((root / "runs" / run_id / "shards" / "pooled.json").read_text())
    assert pooled["model"] == "fleet" and len(pooled["ends"]) == 2  # the forecast and 1 backtest cut-off
    for k in (0, 2):
        run_shard(store, settings, run_id, k)
    plan, done, missing = shard_status(store, run_id)
    assert missing == [1] and sorted(done) == [0, 2]
    assert sum(plan["shard_servers"]) == 10
    with pytest.raises(ShardError, match=r"shard\(s\) 1 of 3"):
        publish_shards(store, settings, run_id)
    assert store.latest_run_id() is None and store.list_runs() == []
    out = run_shard(store, settings, run_id, 1)
    assert out["servers"] == plan["shard_servers"][1]
    run_shard(store, settings, run_id, 1)  # a retried shard rewrites the same files: harmless
    with pytest.raises(ShardError, match="not 7"):
        run_shard(store, settings, run_id, 7)
    manifest = publish_shards(store, settings, run_id)
    assert store.latest_run_id() == run_id
    assert manifest["input"]["servers"] == 10 and manifest["engine"]["n_shards"] == 3
    assert manifest["trigger"] == "schedule"
    recs = store.read_run_table(run_id, "recommendations")
    assert sorted(recs["server_id"]) == sorted(store.read_inventory()["server_id"])
    assert manifest["rows"]["forecasts"] == len(store.read_run_table(run_id, "forecasts"))
    # a retried Publish finds the run complete and returns it
    assert publish_shards(store, settings, run_id)["run_id"] == run_id
    assert store.list_runs() == [run_id]
    # the partial tables are removed once published: a late shard finds no plan, and says so
    with pytest.raises(ShardError, match="has no shard plan"):
        run_shard(store, settings, run_id, 0)


@pytest.mark.slow
def test_a_run_overtaken_by_a_newer_one_is_not_published(small):
    store, settings, _ = small
    short = settings.model_copy(update={"lease_seconds": 2})
    older = plan_shards(store, short)
    calibrate_shards(store, short, older["run_id"])
    for item in older["shards"]:
        run_shard(store, short, item["run_id"], item["shard"])
    append_day(store)
    # the older run holds the store from plan to publish: a second run is refused, naming it
    with pytest.raises(
        LeaseHeldError, match=rf"another run \(id {older['run_id']}, started .* holds the store until"
    ):
        run_sharded(store, settings)
    time.sleep(2.2)  # the older run stalls past its lease: a newer run may take over
    newer = run_sharded(store, settings)["run_id"]
    out = publish_shards(store, settings, older["run_id"])
    assert out == {"run_id": older["run_id"], "superseded_by": newer}
    assert store.latest_run_id() == newer and store.list_runs() == [newer]


def test_input_changing_under_a_run_stops_it(small):
    store, settings, _ = small
    planned = plan_shards(store, settings)
    append_day(store)
    with pytest.raises(InputChangedError, match="the input changed since it was planned"):
        run_shard(store, settings, planned["run_id"], 0)
    _, done, missing = shard_status(store, planned["run_id"])
    assert done == {} and missing == [0, 1, 2]


# --------------------------------------------------------------------------- sharded vs whole


@pytest.mark.slow
@pytest.mark.parametrize("shard_size", [100, 50])  # 2 and 4 shards of the 200 servers
def test_a_sharded_plan_equals_the_one_process_run(plan_store_root, tmp_path, shard_size):
    root = tmp_path / "copy"
    shutil.copytree(plan_store_root, root)
    store = open_store(str(root))
    whole = store.latest_run_id()
    settings = load_settings(data=str(root), backtest_cutoffs=2, shard_size=shard_size)
    manifest = run_sharded(store, settings, trigger="schedule")
    sharded = manifest["run_id"]
    assert store.latest_run_id() == sharded and manifest["engine"]["n_shards"] == 200 // shard_size
    assert_same_plan(store, whole, sharded)


@pytest.mark.slow
def test_publish_reads_no_series_and_the_tables_stay_in_parts(small, monkeypatch):
    """Publish packs from the shards' facts and candidates' inputs only: reading the fleet's
    metrics or forecasts there fails the test. The plan tables the shards wrote are published
    in parts, one per shard, and read as one table."""
    from forecasting.sources.parquet import ParquetStore

    store, settings, root = small
    planned = plan_shards(store, settings)
    run_id = planned["run_id"]
    calibrate_shards(store, settings, run_id)
    for item in planned["shards"]:
        run_shard(store, settings, run_id, item["shard"])

    def no_metrics(*_a, **_k):
        raise AssertionError("Publish read the fleet's metrics")

    real_dataset = ParquetStore.run_table_dataset

    def no_forecasts(self, run, name):
        assert name != "forecasts", "Publish read the fleet's forecasts"
        return real_dataset(self, run, name)

    monkeypatch.setattr(ParquetStore, "read_metrics", no_metrics)
    monkeypatch.setattr(ParquetStore, "run_table_dataset", no_forecasts)
    manifest = publish_shards(store, settings, run_id)
    monkeypatch.undo()
    assert store.latest_run_id() == run_id
    assert manifest["tables_in_parts"] == ["forecasts", "backtest", "risk"]
    for name in manifest["tables_in_parts"]:
        parts = sorted(p.name for p in (root / "runs" / run_id / name).glob("part-*.parquet"))
        assert parts == [f"part-{k:05d}.parquet" for k in range(planned["n_shards"])], name
        assert len(store.read_run_table(run_id, name)) == manifest["rows"][name]
    assert not (root / "runs" / run_id / "shards").exists()  # the working files are gone
    one = store.read_inventory()["server_id"].iloc[0]
    fc = store.read_run_table(run_id, "forecasts", server_ids=[one])
    assert set(fc["server_id"]) == {one} and len(fc) == 14 * fc["metric"].nunique()
    assert manifest["engine"]["publish_peak_rss_mb"] > 0
    # some servers' rows come from their shards' parts only, and are exactly the table's rows
    assert len(store.server_files(run_id, "forecasts", [one])) == 1 < planned["n_shards"]
    ids = store.read_inventory()["server_id"].iloc[[0, 7]].tolist()
    shards = sorted(set(shard_of(ids, planned["n_shards"]).tolist()))
    for name in manifest["tables_in_parts"]:
        files = store.server_files(run_id, name, sorted(ids))
        assert [f.rsplit("/", 1)[1] for f, _ in files] == [f"part-{k:05d}.parquet" for k in shards]
        for f, mine in files:  # each part is asked only for its own shard's servers
            assert set(shard_of(mine, planned["n_shards"]).tolist()) == {int(f[-13:-8])}
        whole = store.read_run_table(run_id, name)
        want = whole[whole["server_id"].isin(ids)].sort_values(list(whole.columns[:3])).reset_index(drop=True)
        got = store.read_run_table(run_id, name, server_ids=ids)
        pd.testing.assert_frame_equal(got.sort_values(list(whole.columns[:3])).reset_index(drop=True), want)


@pytest.mark.slow
def test_a_shard_whose_servers_all_stopped_early_still_plans_as_the_fleet(tmp_path):
    """Every server of one shard stopped reporting 9 days before the others: its analytics count
    from the fleet's last day, not its own (inputs.Grid), so the plan is the one-process plan."""
    from forecasting.batch import run_batch

    root = tmp_path / "store"
    store = open_store(str(root))
    write_fleet(store, n=10, seed=5, days=120)
    settings = load_settings(data=str(root), horizon=14, backtest_cutoffs=1, workers=1, shard_size=4)
    inv = store.read_inventory()
    early = set(inv["server_id"][shard_of(inv["server_id"], 3) == 1])
    assert early
    metrics = store.read_metrics()
    end = metrics["timestamp"].max()
    cut = metrics["server_id"].isin(early) & (metrics["timestamp"] > end - np.timedelta64(9, "D"))
    store.write_metrics(metrics.loc[~cut].reset_index(drop=True), inv, freq="daily")
    whole = run_batch(store, settings, progress=False)["run_id"]
    sharded = run_sharded(store, settings)["run_id"]
    assert_same_plan(store, whole, sharded)


@pytest.mark.slow
def test_a_shard_whose_servers_have_no_metrics_at_all_still_plans_as_the_fleet(tmp_path):
    """No server of one shard ever reported: that shard forecasts nothing, yet its servers get
    their facts ("no data") and the plan equals the one-process plan."""
    from forecasting.batch import run_batch

    root = tmp_path / "store"
    store = open_store(str(root))
    write_fleet(store, n=10, seed=5, days=120)
    settings = load_settings(data=str(root), horizon=14, backtest_cutoffs=1, workers=1, shard_size=4)
    inv = store.read_inventory()
    silent = set(inv["server_id"][shard_of(inv["server_id"], 3) == 1])
    metrics = store.read_metrics()
    store.write_metrics(
        metrics.loc[~metrics["server_id"].isin(silent)].reset_index(drop=True), inv, freq="daily"
    )
    whole = run_batch(store, settings, progress=False)["run_id"]
    manifest = run_sharded(store, settings)
    assert_same_plan(store, whole, manifest["run_id"])
    recs = store.read_run_table(manifest["run_id"], "recommendations").set_index("server_id")
    assert (recs.loc[sorted(silent), "held_back"] == "no data").all()
