"""The plan store only moves forward and never loses data: conditional writes, LATEST by input,
the run lease, ingest's write-new-then-switch, and faults (kill -9, S3 failing, two runs at once).

All on loopback: the local store in tmp_path, S3 on the session's SeaweedFS (and moto's server
for the conditional-write check), faults through tests/s3server.py's FaultProxy.
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from botocore.exceptions import ClientError

from forecasting.sources import StoreError, new_run_id, open_store
from forecasting.sources.commit import (
    LeaseHeldError,
    LeaseLostError,
    acquire_lease,
    input_order,
    release_lease,
    renew_lease,
)
from tests import fault_scenarios as fs
from tests.s3server import demo_fleet, demo_plan, moto_server, seaweed  # noqa: F401 (fixtures)


@pytest.fixture(params=["local", "s3"])
def target(request, tmp_path):
    if request.param == "local":
        return fs.local_target(tmp_path / "data")
    return fs.s3_target(request.getfixturevalue("seaweed"))


def _manifest(run_id: str, version: int, end: str = "2024-03-01") -> dict:
    return {"run_id": run_id, "input": {"end": end, "snapshot": {"as_of": {"version": version, "end": end}}}}


# --------------------------------------------------------------------------- what the servers honour


@pytest.mark.parametrize("server", ["seaweed", "moto_server"])
def test_s3_servers_honour_conditional_puts(request, server):
    """If-None-Match: * and If-Match on PutObject are enforced by both test servers (412)."""
    srv = request.getfixturevalue(server)
    if server == "seaweed":
        client, bucket = srv.client, srv.new_bucket()
    else:
        client, bucket = srv.client("s3"), f"cond-{time.monotonic_ns()}"
        client.create_bucket(Bucket=bucket)
    etag = client.put_object(Bucket=bucket, Key="k", Body=b"1", IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as e:
        client.put_object(Bucket=bucket, Key="k", Body=b"2", IfNoneMatch="*")
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    with pytest.raises(ClientError) as e:
        client.put_object(Bucket=bucket, Key="k", Body=b"3", IfMatch='"0123456789abcdef"')
    assert e.value.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    client.put_object(Bucket=bucket, Key="k", Body=b"4", IfMatch=etag)
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"4"


# --------------------------------------------------------------------------- publish


def test_published_run_files_are_never_overwritten(target):
    store = target.open()
    inventory, _ = demo_fleet(days=20)
    run = new_run_id()
    assert store.publish_run(run, demo_plan(inventory, 1), _manifest(run, 1)) is True
    before = store.read_run_table(run, "forecasts")
    with pytest.raises(StoreError, match="never overwritten"):
        store.publish_run(run, demo_plan(inventory, 2), _manifest(run, 2))
    pd.testing.assert_frame_equal(store.read_run_table(run, "forecasts"), before)
    assert store.latest_run_id() == run


def test_a_retried_publish_replaces_what_a_crashed_attempt_left(target, monkeypatch):
    """A publish that died before its manifest (never published, never read) can be retried."""
    store = target.open()
    inventory, _ = demo_fleet(days=20)
    run = new_run_id()
    real = store.cond.put_new

    def dies_on_manifest(path, data):
        if path.endswith("manifest.json"):
            raise OSError("killed")
        return real(path, data)

    monkeypatch.setattr(store.cond, "put_new", dies_on_manifest)
    with pytest.raises((OSError, StoreError)):
        store.publish_run(run, demo_plan(inventory, 1), _manifest(run, 1))
    monkeypatch.undo()
    assert store.latest_run_id() is None and store.list_runs() == []
    assert store.publish_run(run, demo_plan(inventory, 2), _manifest(run, 1))
    assert (
        store.read_run_table(run, "forecasts")["yhat"].iloc[0]
        == demo_plan(inventory, 2)["forecasts"]["yhat"].iloc[0]
    )


def test_latest_moves_only_to_input_at_least_as_new(target, caplog):
    store = target.open()
    inventory, _ = demo_fleet(days=20)
    newer, older, same = new_run_id(), new_run_id(), new_run_id()
    assert store.publish_run(newer, demo_plan(inventory, 1), _manifest(newer, 5))
    # a slower run on older input finishes later: published, readable by id, LATEST untouched
    with caplog.at_level("WARNING"):
        assert store.publish_run(older, demo_plan(inventory, 2), _manifest(older, 4)) is False
    assert store.latest_run_id() == newer
    assert "superseded by" in caplog.text
    assert len(store.read_run_table(older, "forecasts")) > 0
    # the same input again (e.g. another model): at least as new, so LATEST moves
    assert store.publish_run(same, demo_plan(inventory, 3), _manifest(same, 5))
    assert store.latest_run_id() == same
    # ordering: version first, then the data's end
    assert input_order(_manifest("x", 2, "2020-01-01")) > input_order(_manifest("x", 1, "2030-01-01"))
    assert input_order({"input": {"end": "2024"}}) < input_order(_manifest("x", 0, "2024"))


def test_concurrent_publishers_leave_the_newest_input_in_latest(target):
    """Eight publishers race on LATEST (CAS with re-read on a lost race): the newest input wins."""
    store = target.open()
    inventory, _ = demo_fleet(days=20)
    plan = demo_plan(inventory, 0)
    runs = [(f"20250101T0000{i:02d}Z-r{i}", v) for i, v in enumerate([3, 7, 1, 7, 5, 2, 6, 4])]
    results: dict[str, bool] = {}
    barrier = threading.Barrier(len(runs))

    def publish(run_id: str, version: int) -> None:
        s = target.open()
        barrier.wait()
        results[run_id] = s.publish_run(run_id, plan, _manifest(run_id, version))

    seen: list[int] = []
    done = threading.Event()
    version = dict(runs)

    def watch() -> None:  # a reader polling LATEST during the race never sees it go back
        reader = target.open()
        while not done.is_set():
            latest = reader.latest_run_id()
            if latest:
                seen.append(version[latest])

    threads = [threading.Thread(target=publish, args=r) for r in runs]
    watcher = threading.Thread(target=watch)
    watcher.start()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    watcher.join()
    latest = store.latest_run_id()
    assert input_order(store.read_manifest(latest))[0] == 7
    assert latest in (runs[1][0], runs[3][0])
    assert seen == sorted(seen), f"LATEST went back: {seen}"
    assert not any(results[r] is False for r, v in runs if v == 7)
    assert sorted(store.list_runs()) == sorted(r for r, _ in runs)


# --------------------------------------------------------------------------- lease


def test_lease_blocks_a_second_run_until_released_or_expired(target):
    store = target.open()
    io, path = store.cond, store.lease_path()
    a = acquire_lease(io, path, "20250101T000000Z-a", 1.5, pid=None)
    with pytest.raises(LeaseHeldError) as e:
        acquire_lease(io, path, "20250101T000001Z-b", 60, pid=None)
    msg = str(e.value)
    assert msg.startswith("another run (id 20250101T000000Z-a, started ")
    assert " by " in msg and msg.split("holds the store until ")[1] == a.record["expires"]
    renew_lease(a)  # the holder renews: still blocked
    with pytest.raises(LeaseHeldError):
        acquire_lease(io, path, "20250101T000001Z-b", 60, pid=None)
    time.sleep(1.7)  # expired: taken over, and the old holder learns it lost the lease
    b = acquire_lease(io, path, "20250101T000001Z-b", 60, pid=None)
    with pytest.raises(LeaseLostError):
        renew_lease(a)
    release_lease(io, path, a.run_id)  # not the holder: does nothing
    with pytest.raises(LeaseHeldError):
        acquire_lease(io, path, "20250101T000002Z-c", 60, pid=None)
    release_lease(io, path, b.run_id)
    acquire_lease(io, path, "20250101T000002Z-c", 60, pid=None)


def test_a_lease_lasts_as_long_as_asked_whatever_the_fraction_of_a_second(monkeypatch):
    """Expiries were cut to the second: a 1.5 s lease taken at .9995 s lasted 1.0005 s."""
    from datetime import UTC, datetime, timedelta

    from forecasting.sources import commit

    now = datetime(2026, 12, 5, 11, 0, 0, 999_500, tzinfo=UTC)
    monkeypatch.setattr(commit, "_now", lambda: now)
    rec = commit._record("20261205T110000Z-a", 1.5, pid=None)
    assert datetime.fromisoformat(rec["expires"]) >= now + timedelta(seconds=1.499)
    assert not commit._free(rec, "20261205T110001Z-b")  # still held at the instant it was taken


def test_a_dead_local_process_lease_is_taken_over_at_once(tmp_path):
    import subprocess
    import sys

    store = open_store(str(tmp_path / "d"))
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    acquire_lease(store.cond, store.lease_path(), "20250101T000000Z-dead", 600, pid=child.pid)
    lease = acquire_lease(store.cond, store.lease_path(), "20250101T000001Z-next", 600, pid=None)
    assert json.loads(Path(store.lease_path()).read_text())["run_id"] == lease.run_id


@pytest.mark.parametrize("how", ["one process", "sharded"])
def test_the_run_taking_over_a_dead_runs_lease_removes_its_files(tmp_path, how):
    """A run killed before publishing leaves its directory (half-written `.tmp-` files, shard
    parts); the next run knows that run is dead (its lease's process is gone) and removes them.
    A dead run that had published (killed before releasing its lease) is left alone."""
    import subprocess
    import sys

    from forecasting.batch import run_batch
    from forecasting.settings import load_settings
    from forecasting.shards import run_sharded
    from tests.small_fleet import write_fleet

    store = open_store(str(tmp_path / "d"))
    write_fleet(store, n=6, seed=3)
    settings = load_settings(data=store.uri).model_copy(update={"shard_size": 3})
    published = run_batch(store, settings, progress=False)["run_id"]
    runs = tmp_path / "d" / "runs"
    dead = "20250101T000000Z-dead"
    (runs / dead / "forecasts").mkdir(parents=True)
    (runs / dead / ".tmp-0a1b-risk.parquet").write_bytes(b"PAR1 half")
    (runs / dead / "forecasts" / "part-00000.parquet").write_bytes(b"PAR1")
    for holder in (dead, published):
        child = subprocess.Popen([sys.executable, "-c", "pass"])
        child.wait()
        acquire_lease(store.cond, store.lease_path(), holder, 600, pid=child.pid)
        new = (
            run_batch(store, settings, progress=False)
            if how == "one process"
            else run_sharded(store, settings)
        )
        assert not (runs / dead).exists()
        assert published in store.list_runs()  # a published dead holder keeps its run
        assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == store.list_runs()
        assert store.latest_run_id() == new["run_id"]


def test_cli_run_refused_while_another_holds_the_store(target):
    store = target.open()
    fs.seed_fleet(store, n=8, days=60)
    acquire_lease(store.cond, store.lease_path(), "20250101T000000Z-other", 300, pid=None)
    r = fs.cli(target, *fs.RUN_ARGS, timeout=120)
    assert r.returncode == 5, r.stderr[-1500:]
    line = r.stderr.strip().splitlines()[-1]
    assert line.startswith("error: another run (id 20250101T000000Z-other, started ")
    assert "holds the store until" in line
    assert store.latest_run_id() is None


# --------------------------------------------------------------------------- ingest


def test_ingest_writes_new_then_switches_and_keeps_old_versions(target):
    store = target.open()
    inventory, metrics = demo_fleet(days=40)
    store.write_inventory(inventory)
    store.write_metrics(metrics, inventory, freq="daily")
    assert store.read_store_info()["version"] == 1
    day = metrics[metrics["timestamp"] == metrics["timestamp"].max()].copy()
    day["timestamp"] += pd.Timedelta(days=1)
    store.write_metrics(day, inventory, freq="daily", mode="merge")
    info = store.read_store_info()
    assert info["version"] == 2 and info["end"] == str(day["timestamp"].max())
    assert len(store.read_metrics()) == len(metrics) + len(day)
    # the replaced files and store.json of version 1 are recoverable under backups/v00000002/
    backup = open_store(f"{target.uri}/backups/v00000002") if target.kind == "local" else None
    if backup is not None:
        assert len(backup.read_metrics()) == len(metrics)
        assert backup.read_store_info()["version"] == 1
    files = store._files_under(store._p("backups", "v00000002"))
    assert any(f.endswith("part-0.parquet") for f in files) and any(f.endswith("store.json") for f in files)


@pytest.mark.parametrize("crash_at", range(4))
def test_ingest_crash_at_any_file_write_loses_no_acknowledged_row(target, crash_at, monkeypatch):
    """The process stops at the k-th file write of a merge (k = 0..3): every row acknowledged by
    the earlier ingest is still readable, nothing is hidden, and the ingest can be re-run."""
    store = target.open()
    inventory, metrics = demo_fleet(days=400)  # 3 business units × 2 years: 6 files
    store.write_inventory(inventory)
    store.write_metrics(metrics, inventory, freq="daily")
    acked = metrics[["server_id", "timestamp"]]
    new = metrics[metrics["timestamp"] >= metrics["timestamp"].max() - pd.Timedelta(days=3)].copy()
    new["timestamp"] += pd.Timedelta(days=4)
    real, calls = store._atomic, []  # every whole-file write (metric files, store.json) goes through it

    def dies(path, write):
        calls.append(path)
        if len(calls) > crash_at:
            raise OSError("killed")
        return real(path, write)

    monkeypatch.setattr(store, "_atomic", dies)
    with pytest.raises((OSError, StoreError), match="killed"):
        store.write_metrics(new, inventory, freq="daily", mode="merge")
    monkeypatch.undo()
    fresh = target.open()
    have = fresh.read_metrics()
    keys = pd.MultiIndex.from_frame(have[["server_id", "timestamp"]])
    assert not keys.duplicated().any()
    assert pd.MultiIndex.from_frame(acked).difference(keys).empty
    fresh.write_metrics(new, inventory, freq="daily", mode="merge")  # re-run: acknowledged now
    assert len(fresh.read_metrics()) == len(metrics) + len(new)


def test_a_server_moving_business_unit_is_never_in_neither(target, monkeypatch):
    """The partition gaining the rows is written before the one losing them."""
    store = target.open()
    inventory, metrics = demo_fleet(days=30)
    store.write_inventory(inventory)
    store.write_metrics(metrics, inventory, freq="daily")
    moved = inventory.copy()
    sid = moved["server_id"].iloc[0]
    old_bu = moved.loc[moved["server_id"] == sid, "business_unit"].iloc[0]
    moved.loc[moved["server_id"] == sid, "business_unit"] = "payments" if old_bu != "payments" else "retail"
    new = metrics[metrics["server_id"] == sid].tail(1).copy()
    new["timestamp"] += pd.Timedelta(days=1)
    real, calls = store._atomic, []

    def dies_after_first(path, write):
        calls.append(path)
        if len(calls) > 1:
            raise OSError("killed")
        return real(path, write)

    monkeypatch.setattr(store, "_atomic", dies_after_first)
    with pytest.raises((OSError, StoreError), match="killed"):
        store.write_metrics(new, moved, freq="daily", mode="merge")
    monkeypatch.undo()
    have = target.open().read_metrics()
    assert (have["server_id"] == sid).sum() >= (metrics["server_id"] == sid).sum()


# --------------------------------------------------------------------------- faults with real processes


@pytest.mark.slow
def test_kill9_batch_run_at_random_points(target):
    fs.seed_fleet(target.open())
    out = fs.kill_runs(target, seed=13, points=3)
    assert "next run published" in out.outcome


@pytest.mark.slow
def test_kill9_ingest_at_random_points(target, tmp_path):
    store = target.open()
    fs.seed_fleet(store)
    assert fs.cli(target, *fs.RUN_ARGS).returncode == 0
    fs.kill_ingests(target, seed=29, workdir=tmp_path, points=3)


@pytest.mark.slow
def test_two_runs_started_at_once(target):
    store = target.open()
    fs.seed_fleet(store)
    assert fs.cli(target, *fs.RUN_ARGS).returncode == 0
    fs.two_runs_at_once(target)


@pytest.mark.slow
def test_s3_failing_slow_and_stopped_mid_run(seaweed):  # noqa: F811
    target = fs.s3_target(seaweed, proxy=True)
    try:
        store = target.open()
        fs.seed_fleet(store)
        t0 = time.perf_counter()
        r = fs.cli(target, *fs.RUN_ARGS)
        assert r.returncode == 0, r.stderr[-2000:]
        outcomes = fs.s3_faults(target, time.perf_counter() - t0)
        assert [o.fault for o in outcomes] == [
            "S3 500s ×3 mid-run",
            "S3 slowed (+150 ms/request)",
            "S3 500s from mid-run on",
            "S3 endpoint stopped mid-run",
        ]
    finally:
        target.proxy.stop()
