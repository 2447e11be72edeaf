"""Batch engines: the one-process run, or the shards of a run on a Dask cluster.

``python -m forecasting run --engine local|dask [--scheduler tcp://…]``. Both publish the same
plan (forecasting.pooled: the models' cross-series choices are learned once on the fleet's
calibration sample). The Dask engine runs the very functions the AWS Step Functions machine
runs from Lambda — :func:`shards.plan_shards` → :func:`shards.calibrate_shards` →
:func:`shards.run_shard` per shard (``Client.map``-style, each retried ``shard_retries`` times)
→ :func:`shards.publish_shards` — so a worker never holds more than one shard's series, and a
run with a shard that failed every attempt never publishes (``runs/LATEST`` unchanged).

Tasks carry the settings, not a store: each worker opens the store itself (a local directory
shared by the workers, or ``s3://`` on a real cluster).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from . import shards
from .settings import Settings
from .sources import Store, open_store

log = logging.getLogger(__name__)


class ShardFailedError(shards.ShardError):
    """Shards failed on every attempt: the run is not published."""


def run(
    store: Store,
    settings: Settings,
    *,
    model: str | None = None,
    horizon: int | None = None,
    backtest: bool = True,
    trigger: str | None = None,
    echo: Callable[[str], Any] | None = None,
    progress: bool = True,
) -> dict:
    """Run the batch job on the configured engine (settings.engine) and publish; the manifest."""
    if settings.engine == "dask":
        manifest = run_dask(store, settings, model=model, horizon=horizon, backtest=backtest, trigger=trigger)
        for line in _summary(manifest):
            (echo or (lambda _m: None))(line)
        return manifest
    from .batch import run_batch

    return run_batch(
        store,
        settings,
        model=model,
        horizon=horizon,
        backtest=backtest,
        echo=echo,
        progress=progress,
        trigger=trigger,
    )


def _open(settings: Settings) -> Store:
    return open_store(settings.data, endpoint_url=settings.s3_endpoint_url)


def _calibrate_task(settings: Settings, run_id: str) -> dict:
    return shards.calibrate_shards(_open(settings), settings, run_id)


def _shard_task(settings: Settings, run_id: str, shard: int) -> dict:
    # looked up at call time (shards.run_shard), so a worker plugin can wrap it (the tests do)
    return shards.run_shard(_open(settings), settings, run_id, shard)


def local_cluster() -> Any:
    """The default cluster: two single-threaded worker processes on loopback, no dashboard."""
    from dask.distributed import LocalCluster

    return LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)


def run_dask(
    store: Store,
    settings: Settings,
    *,
    model: str | None = None,
    horizon: int | None = None,
    backtest: bool = True,
    trigger: str | None = None,
    client: Any = None,
) -> dict:
    """Plan → Calibrate → every shard on the cluster → Publish. client: an open
    ``distributed.Client`` (else one to settings.scheduler, or to a new local cluster)."""
    from dask.distributed import Client

    t0 = time.perf_counter()
    settings = settings.model_copy(update={"data": store.uri})
    cluster = own = None
    if client is None:
        cluster = None if settings.scheduler else local_cluster()
        client = own = Client(settings.scheduler or cluster)
    try:
        planned = shards.plan_shards(
            store, settings, trigger=trigger, model=model, horizon=horizon, backtest=backtest
        )
        run_id = planned["run_id"]
        try:
            return _run_planned(client, store, settings, planned, trigger, t0)
        except ShardFailedError:
            shards.abandon_run(store, run_id)  # the next run need not wait for the lease to expire
            raise
    finally:
        if own is not None:
            own.close()
        if cluster is not None:
            cluster.close()


def _run_planned(
    client: Any, store: Store, settings: Settings, planned: dict, trigger: str | None, t0: float
) -> dict:
    from dask.distributed import wait

    run_id = planned["run_id"]
    ctx = {"run_id": run_id, "trigger": trigger}
    retries = settings.shard_retries
    cal = client.submit(
        _calibrate_task, settings, run_id, retries=retries, pure=False, key=f"calibrate-{run_id}"
    )
    wait([cal])
    if cal.status != "finished":
        raise ShardFailedError(
            f"run {run_id}: the Calibrate step failed after {retries + 1} attempt(s): {cal.exception()!r}; "
            "nothing published (runs/LATEST unchanged)"
        )
    futures = {
        k: client.submit(
            _shard_task, settings, run_id, k, retries=retries, pure=False, key=f"shard-{run_id}-{k}"
        )
        for k in range(planned["n_shards"])
    }
    wait(list(futures.values()))
    failed = {k: f.exception() for k, f in futures.items() if f.status != "finished"}
    attempts = {k: _attempts(client, f.key) for k, f in futures.items()}
    retried = {k: n for k, n in attempts.items() if n > 1}
    if retried:
        log.warning("shard(s) retried: %s", retried, extra=ctx)
    if failed:
        detail = "; ".join(f"shard {k}: {e!r}" for k, e in sorted(failed.items()))
        raise ShardFailedError(
            f"run {run_id}: shard(s) {', '.join(map(str, sorted(failed)))} of {planned['n_shards']} failed "
            f"after {retries + 1} attempt(s) ({detail}); nothing published (runs/LATEST unchanged)"
        )
    results = [futures[k].result() for k in sorted(futures)]
    engine = {  # stored in the run's manifest with the shards' own figures
        "engine": "dask",
        "scheduler": settings.scheduler or "local cluster (2 workers × 1 thread)",
        "workers": len(client.scheduler_info(n_workers=-1).get("workers", {})),
        "shard_attempts": [attempts[k] for k in sorted(attempts)],
        "shard_servers": [r["servers"] for r in results],
    }
    manifest = shards.publish_shards(store, settings, run_id, engine=engine)
    manifest["wall_seconds"] = round(time.perf_counter() - t0, 2)
    log.info("dask run published: %d shard(s), %d retried", len(results), len(retried), extra=ctx)
    return manifest


def _attempts(client: Any, key: str) -> int:
    """How many times the scheduler started a task (1 = no retry), from its transition story."""
    try:
        story = client.run_on_scheduler(_story, key)
    except Exception:  # a report, never a reason to fail a run
        return 1
    return max(1, story)


def _story(key: str, dask_scheduler: Any = None) -> int:
    return sum(1 for t in dask_scheduler.story(key) if len(t) > 2 and t[2] == "processing")


def _summary(manifest: dict) -> list[str]:
    risk_rows = manifest.get("rows", {}).get("risk", 0)
    eng = manifest.get("engine", {})
    lines = [
        f"Run {manifest['run_id']} published to {manifest['data']} in {manifest.get('wall_seconds', 0):.1f} s "
        f"on dask: {eng.get('n_shards')} shard(s) on {eng.get('workers')} worker(s), "
        f"attempts per shard {eng.get('shard_attempts')}",
        f"  {manifest['input']['servers']:,} servers, {manifest['input']['series']:,} series, {risk_rows:,} risk rows",
    ]
    return lines
