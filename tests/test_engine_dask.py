"""The scale-out engines publish the one-process plan: local shards (1 and 3) and the Dask engine
on a real LocalCluster (2 worker processes on loopback); a shard failing once is retried by Dask
and the run publishes; a shard failing every attempt publishes nothing and the error names it.

The fleet is small (12 servers, 150 days) but its calibration sample (6 servers) is smaller than
the fleet, so the choices the models pool across series come from the sample in every engine.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from distributed.diagnostics.plugin import WorkerPlugin

from forecasting import engine, shards
from forecasting.batch import run_batch
from forecasting.settings import load_settings
from forecasting.sources import open_store
from tests.same_plan import assert_same_plan
from tests.small_fleet import write_fleet

pytestmark = pytest.mark.slow

N_SERVERS = 12


def _settings(root: Path, **overrides):
    base = {"data": str(root), "horizon": 14, "backtest_cutoffs": 1, "workers": 1, "calibration_servers": 6}
    return load_settings(**{**base, **overrides})


@pytest.fixture(scope="module")
def fleet_root(tmp_path_factory) -> Path:
    """A small fleet and its one-process run (read-only: tests copy it)."""
    root = tmp_path_factory.mktemp("dask-fleet")
    store = open_store(str(root))
    write_fleet(store, n=N_SERVERS, seed=11, days=150)
    run_batch(store, _settings(root), progress=False)
    return root


@pytest.fixture
def fleet(fleet_root, tmp_path):
    import shutil

    root = tmp_path / "store"
    shutil.copytree(fleet_root, root)
    store = open_store(str(root))
    return store, root, store.latest_run_id()


@pytest.fixture(scope="module")
def client():
    from dask.distributed import Client

    cluster = engine.local_cluster()
    with Client(cluster) as c:
        yield c
    cluster.close()


def test_local_shards_publish_the_one_process_plan(fleet):
    store, root, whole = fleet
    for shard_size, n_shards in ((N_SERVERS, 1), (5, 3)):
        manifest = shards.run_sharded(store, _settings(root, shard_size=shard_size))
        assert manifest["engine"]["n_shards"] == n_shards
        assert manifest["config"]["calibration_servers"] == 6
        assert_same_plan(store, whole, manifest["run_id"])


def test_dask_engine_publishes_the_local_plan(fleet, client):
    store, root, whole = fleet
    manifest = engine.run_dask(store, _settings(root, shard_size=5), client=client)
    assert store.latest_run_id() == manifest["run_id"] != whole
    eng = manifest["engine"]
    assert eng["engine"] == "dask" and eng["n_shards"] == 3 and eng["workers"] == 2
    assert eng["shard_attempts"] == [1, 1, 1] and sum(eng["shard_servers"]) == N_SERVERS
    # the stored manifest holds what the engine reports (workers, attempts), not only the return value
    stored = store.read_manifest(manifest["run_id"])["engine"]
    assert stored["engine"] == "dask" and stored["shard_attempts"] == [1, 1, 1]
    assert stored["publish_peak_rss_mb"] > 0 and all(c > 0 for c in stored["shard_cpu_seconds"])
    assert_same_plan(store, whole, manifest["run_id"])


class FailShard(WorkerPlugin):
    """Worker plugin: shard `shard` raises on its first `times` attempts (None: always); the
    attempts are counted in files, so both worker processes see one count."""

    def __init__(self, shard: int, times: int | None, marks: Path) -> None:
        self.shard, self.times, self.marks = shard, times, str(marks)
        self.name = f"fail-shard-{uuid.uuid4().hex[:8]}"

    def setup(self, worker=None) -> None:
        real = self.real = shards.run_shard
        plugin = self

        def flaky(store, settings, run_id, shard):
            if shard == plugin.shard:
                marks = Path(plugin.marks)
                n = len(list(marks.glob("attempt-*")))
                if plugin.times is None or n < plugin.times:
                    (marks / f"attempt-{n + 1}").touch()
                    raise RuntimeError(f"injected failure of shard {shard} (attempt {n + 1})")
            return real(store, settings, run_id, shard)

        shards.run_shard = flaky

    def teardown(self, worker=None) -> None:
        shards.run_shard = self.real


@pytest.fixture
def fail_shard(client, tmp_path):
    installed = []

    def install(shard: int, times: int | None) -> Path:
        marks = tmp_path / f"marks-{len(installed)}"
        marks.mkdir()
        plugin = FailShard(shard, times, marks)
        client.register_plugin(plugin, name=plugin.name)
        installed.append(plugin.name)
        return marks

    yield install
    for name in installed:
        client.unregister_worker_plugin(name)


def test_a_shard_failing_once_is_retried_and_the_run_publishes(fleet, client, fail_shard):
    store, root, whole = fleet
    marks = fail_shard(1, times=1)
    manifest = engine.run_dask(store, _settings(root, shard_size=5, shard_retries=2), client=client)
    assert len(list(marks.glob("attempt-*"))) == 1  # it did fail once
    assert store.latest_run_id() == manifest["run_id"]
    assert manifest["engine"]["shard_attempts"] == [1, 2, 1]  # reported: shard 1 ran twice
    assert_same_plan(store, whole, manifest["run_id"])


def test_a_shard_failing_every_attempt_publishes_nothing(fleet, client, fail_shard):
    store, root, whole = fleet
    marks = fail_shard(2, times=None)
    with pytest.raises(engine.ShardFailedError) as err:
        engine.run_dask(store, _settings(root, shard_size=5, shard_retries=1), client=client)
    msg = str(err.value)
    assert "shard(s) 2 of 3 failed after 2 attempt(s)" in msg and "injected failure of shard 2" in msg
    assert "nothing published" in msg
    assert len(list(marks.glob("attempt-*"))) == 2  # the first try and one retry
    assert store.latest_run_id() == whole and store.list_runs() == [whole]
    # the failed run is abandoned: its lease released at once (a new run may start now, not
    # after lease_seconds) and its partial files removed
    failed = [p.name for p in (root / "runs").iterdir() if p.is_dir() and p.name != whole]
    assert all(not any(p.rglob("*.parquet")) for p in (root / "runs").iterdir() if p.name in failed)
    planned = shards.plan_shards(store, _settings(root, shard_size=5))
    shards.abandon_run(store, planned["run_id"])


def test_prophet_through_dask_publishes_the_one_process_plan(tmp_path, client):
    """Prophet mode on the engine: it pools nothing across series and seeds each series' draws
    by its key, so shards on the Dask workers give the one-process plan exactly."""
    root = tmp_path / "prophet"
    store = open_store(str(root))
    write_fleet(store, n=3, seed=5, days=120)
    prophet = {"model": "prophet", "calibration_servers": 3}
    whole = run_batch(store, _settings(root, **prophet), progress=False)["run_id"]
    manifest = engine.run_dask(store, _settings(root, shard_size=2, **prophet), client=client)
    assert manifest["engine"]["n_shards"] == 2 and manifest["config"]["model"] == "prophet"
    assert set(store.read_run_table(manifest["run_id"], "forecasts")["model"].astype(str)) == {"prophet"}
    assert_same_plan(store, whole, manifest["run_id"])
