"""The batch job as shards: plan → calibrate → run each shard → publish (one module, every engine).

The AWS Step Functions machine (``Plan → Calibrate → Map(shard) → Publish``, forecasting/aws)
calls these four functions from Lambda; forecasting.engine runs the same ones on Dask. One
process never holds more than one shard's time series:

- :func:`plan_shards` snapshots the input (the objects under ``inventory/``, ``metrics/`` and
  ``store.json``: keys, sizes, modification times → an *input key*), validates the inventory
  once for the whole fleet (DR partners and anti-affinity groups cross shards), assigns each
  server to a shard by a stable hash of its ``server_id`` and writes
  ``runs/<id>/shards/{plan.json, inventory.parquet}``. It returns shard ids, not server lists,
  so the Step Functions payload stays small (256 KB limit).
- :func:`calibrate_shards` learns what the models pool across series on the calibration sample
  and writes ``runs/<id>/shards/pooled.json`` (the Calibrate step, between Plan and the Map).
- :func:`run_shard` loads, validates, fits, forecasts and backtests one shard's servers on the
  fleet's time grid, then runs the per-server half of the analytics (risk, sizing, the risk
  guard, who may be packed: batch.shard_analytics). It writes its parts of the plan tables
  straight into the run, ``runs/<id>/{forecasts,backtest,risk}/part-<k>.parquet``, and for
  Publish ``runs/<id>/shards/<k>/{facts.parquet, packing.npz}`` (one row per server; the
  consolidation candidates' CPU and memory inputs), then ``done.json`` last (each object whole:
  renamed on disk, one PUT on S3).
- :func:`publish_shards` refuses unless every shard is done, then runs the fleet-wide half
  (packing every partition's candidates, then one decision per server: batch.fleet_recommendations)
  on the shards' facts and packing inputs only — never on the fleet's series — and publishes as
  the one-process batch does: the recommendation and consolidation tables, the manifest (which
  lists the tables written in parts), then ``runs/LATEST`` last. Publishing a run that is
  already complete returns its manifest (a retried Publish step is harmless).

**A sharded plan is the one-process plan.** Everything per series is the series' own: the fit,
its hold-out evidence, its variant choice, its ramp, the fallback to seasonal naive, the grid
(shards share the fleet's time axis), and so are its risk rows, its sizing and its guard
(inputs.Grid anchors every shard's analytics on the fleet's axis; no row's numbers depend on
another row's); packing and the decision run once over the whole fleet. What the
models pool *across* series (the fleet model's seasonality per metric, default variant per
metric, the prior of the per-series choice, its band tables; the naive model's band factors) is
learned once per run by :func:`calibrate_shards` on the fleet's calibration sample
(forecasting.pooled) and applied by every shard — the one-process run learns it on the same
servers with the same code. Equal means: every non-float column identical, floats within
1e-6 relative (a BLAS product's rounding depends on the other rows of its block, so a float64
forecast may differ in its last bits and, rarely, round to the neighbouring float32); see
tests/same_plan.py, tests/test_shards.py and tests/test_engine_dask.py.

One validation count differs: a shard reads the metrics of its own inventory servers only,
so rows of servers missing from the inventory are read by no shard and not counted as
"rejected" in the manifest (the one-process run counts them). They are never used either way.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs

from .analytics import Recommendations, ServerFacts
from .backtest import backtest as run_backtest
from .batch import (
    MEAN_SCORES,
    _mean_scores,
    _peak_rss_mb,
    add_run_metrics,
    code_version,
    fleet_recommendations,
    model_factory,
    servers_at_risk,
    shard_analytics,
)
from .inputs import HISTORY_DAYS, AnalyticsInputs, Grid
from .observability import batch_run
from .panel import build_panel
from .plan import FORECAST_COLUMNS
from .pooled import calibration_sample, learn
from .schema import Finding, ValidationReport, validate_inventory, validate_metrics
from .settings import Settings
from .sources import MetricsQuery, NoDataError, Store, StoreError
from .sources.base import check_run_id, run_stamp, shard_of
from .sources.commit import acquire_lease, input_as_of, release_lease, renew_lease_of
from .sources.parquet import ParquetStore

log = logging.getLogger(__name__)

SHARDS_DIR = "shards"
POOLED = "pooled.json"  # the run's pooled choices (calibrate_shards)
# What a run reads: the snapshot lists exactly these (store.json is the metrics' frequency and span).
INPUT_DIRS = ("inventory", "metrics")
INPUT_FILES = ("store.json",)


class ShardError(StoreError):
    """A sharded run that cannot go on: a shard missing or failed, a plan not found, input changed."""


class InputChangedError(ShardError):
    """The input objects changed after the run was planned: its shards would mix two inputs."""


# --------------------------------------------------------------------------- input snapshot


def object_store(store: Store) -> ParquetStore:
    """The Parquet layout under a store (the store itself; for Athena, its S3 tables)."""
    if isinstance(store, ParquetStore):
        return store
    tables = getattr(store, "tables", None)
    if isinstance(tables, ParquetStore):
        return tables
    raise StoreError(f"{store.uri}: sharded and event-driven runs need a Parquet store (local or s3://)")


def snapshot_input(store: Store) -> dict:
    """The objects a run reads — relative key, size, modification time — and their hash.

    Two events seeing the same objects get the same ``key``: that is what makes a run
    idempotent. Sizes and times (not contents) keep it one LIST per prefix, cheap on S3.
    Temporary and staging names (leading dot) are skipped: they are never read.
    """
    ps = object_store(store)
    objects: list[tuple[str, int, str]] = []
    try:
        for d in INPUT_DIRS:
            sel = pafs.FileSelector(ps._p(d), recursive=True, allow_not_found=True)
            for info in ps.fs.get_file_info(sel):
                rel = info.path[len(ps.root) :].lstrip("/")
                if info.type != pafs.FileType.File or any(p.startswith(".") for p in rel.split("/")):
                    continue
                objects.append((rel, int(info.size or 0), _iso(info.mtime)))
        for name in INPUT_FILES:
            info = ps.fs.get_file_info(ps._p(name))
            if info.type == pafs.FileType.File:
                objects.append((name, int(info.size or 0), _iso(info.mtime)))
    except OSError as e:
        raise StoreError(f"cannot list the input objects of {store.uri}: {e}") from e
    objects.sort()
    if not any(o[0].startswith("metrics/") for o in objects):
        raise NoDataError(f"no metrics under {store.uri}/metrics/: nothing to run on")
    h = hashlib.sha256()
    for rel, size, mtime in objects:
        h.update(f"{rel}\t{size}\t{mtime}\n".encode())
    newest = max((o[2] for o in objects), default="")
    return {
        "key": h.hexdigest()[:20],
        "taken_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "objects": [list(o) for o in objects],
        "count": len(objects),
        "bytes": sum(o[1] for o in objects),
        "newest": newest,
        # monotonic "input as-of": runs are ordered by it, and LATEST only moves forward along it
        "as_of": input_as_of(ps.read_store_info(), newest),
    }


def _iso(mtime: datetime | None) -> str:
    if mtime is None:
        return ""
    if mtime.tzinfo is None:
        mtime = mtime.replace(tzinfo=UTC)
    return mtime.astimezone(UTC).isoformat(timespec="microseconds")


def run_id_for(input_key: str, now: datetime | None = None) -> str:
    """A sortable run id that ends in its input key
    (``<UTC time to the µs>-<4 random hex><12 hex of the key>``, see :func:`run_stamp`).

    The random part keeps two runs of one input started at once apart (a retried trigger, a
    re-run): without it the second found the first's manifest and stopped."""
    import secrets

    return check_run_id(f"{run_stamp(now)}{secrets.token_hex(2)}{input_key[:12].lower()}")


# --------------------------------------------------------------------------- shard assignment


def n_shards_for(n_servers: int, shard_size: int) -> int:
    return max(1, math.ceil(n_servers / max(1, shard_size)))


# --------------------------------------------------------------------------- paths and I/O


def _base(ps: ParquetStore, run_id: str, *parts: str) -> str:
    return ps._p("runs", check_run_id(run_id), SHARDS_DIR, *parts)


def _part(ps: ParquetStore, run_id: str, name: str, shard: int) -> str:
    """Where shard ``shard`` writes its part of plan table ``name`` (read back as one table by
    ``ParquetStore.run_table_dataset``)."""
    return ps._p("runs", check_run_id(run_id), name, f"part-{shard:05d}.parquet")


# the plan tables a shard writes as parts; Publish writes the others (small) whole
PART_TABLES = ("forecasts", "backtest", "risk")


def _grid(plan: dict) -> Grid:
    """The fleet's time axis every shard's analytics are anchored on."""
    grid = plan.get("grid") or {}
    if not grid.get("start") or not grid.get("end"):
        raise ShardError(f"run {plan['run_id']}: the store has no time span (store.json start/end)")
    return Grid.of(grid["start"], grid["end"], int(plan["horizon"]))


def _write_frame(ps: ParquetStore, path: str, frame: pd.DataFrame, **kw: Any) -> None:
    ps._write_table(path, pa.Table.from_pandas(frame, preserve_index=False), **kw)


# A plan table's part is written sorted by server in row groups of this many rows (about 18
# servers of forecasts): a reader of a few servers (the server page, a packed host's chart)
# decodes ~8k rows per server instead of 64k (0.5 s → see README for a 69-server host)
PART_ROW_GROUP_ROWS = 8_192


def _read_frame(ps: ParquetStore, path: str, what: str) -> pd.DataFrame:
    try:
        return ps._read_table(path, what).to_pandas()
    except FileNotFoundError:
        raise ShardError(f"{what} missing at {ps._display(path)}") from None


def _write_json(ps: ParquetStore, path: str, obj: dict) -> None:
    ps._write_bytes(path, json.dumps(obj, indent=2, default=str, sort_keys=True).encode())


def _read_json(ps: ParquetStore, path: str) -> dict | None:
    try:
        return json.loads(ps._read_bytes(path))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as e:
        raise ShardError(f"{ps._display(path)} is not valid JSON: {e}") from e


def read_plan(store: Store, run_id: str) -> dict:
    """The plan a run's shards work from (written by :func:`plan_shards`)."""
    ps = object_store(store)
    plan = _read_json(ps, _base(ps, run_id, "plan.json"))
    if plan is None:
        raise ShardError(f"run {run_id} has no shard plan at {ps._display(_base(ps, run_id, 'plan.json'))}")
    return plan


def _findings(report: ValidationReport) -> list[dict]:
    return [dataclasses.asdict(f) for f in report.findings]


def _merge_findings(parts: list[list[dict]]) -> list[Finding]:
    """One finding per rule across shards: counts summed, the first shard's wording and examples."""
    merged: dict[tuple[str, str, str], Finding] = {}
    for findings in parts:
        for f in findings:
            key = (f["table"], f["rule"], f["action"])
            if key in merged:
                m = merged[key]
                m.count += int(f["count"])
                m.examples = (m.examples + list(f["examples"]))[:5]
            else:
                merged[key] = Finding(**{**f, "examples": list(f["examples"])})
    return list(merged.values())


# --------------------------------------------------------------------------- plan


def plan_shards(
    store: Store,
    settings: Settings,
    *,
    run_id: str | None = None,
    trigger: str | None = None,
    snapshot: dict | None = None,
    model: str | None = None,
    horizon: int | None = None,
    backtest: bool = True,
) -> dict:
    """Snapshot the input, validate the inventory once, assign shards; returns the Map's items.

    Returns ``{"run_id", "input_key", "n_shards", "servers", "shards": [{"run_id", "shard"}]}``.
    """
    t0 = time.perf_counter()
    ps = object_store(store)
    snap = snapshot or snapshot_input(store)
    run_id = check_run_id(run_id or run_id_for(snap["key"]))
    # the run holds the store's lease from plan to publish (across invocations: no pid to watch)
    lease = acquire_lease(ps.cond, ps.lease_path(), run_id, settings.lease_seconds)
    try:
        sweep_dead_run(store, lease.taken_from_dead)
        return _plan(store, settings, ps, snap, run_id, trigger, model, horizon, backtest, t0)
    except BaseException:
        release_lease(ps.cond, ps.lease_path(), run_id)
        raise


def _plan(store, settings, ps, snap, run_id, trigger, model, horizon, backtest, t0) -> dict:
    inventory, report = validate_inventory(store.read_inventory(), store.uri)
    info = store.read_store_info()
    freq = info.get("freq", settings.freq)
    h = horizon or settings.horizon or (90 if freq == "daily" else 168)
    n = n_shards_for(len(inventory), settings.shard_size)
    inventory = inventory.assign(shard=shard_of(inventory["server_id"], n))
    counts = np.bincount(inventory["shard"].to_numpy(), minlength=n)
    plan = {
        "run_id": run_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": store.uri,
        "trigger": trigger,
        "snapshot": snap,
        "freq": freq,
        "grid": {"start": info.get("start"), "end": info.get("end")},
        "model": model or settings.model,
        "horizon": h,
        "backtest_cutoffs": settings.backtest_cutoffs if backtest else 0,
        "n_shards": n,
        "shard_size": settings.shard_size,
        "servers": len(inventory),
        "shard_servers": counts.tolist(),
        # what the models pool across series is learned on these servers (the Calibrate step)
        "calibration_sample": calibration_sample(inventory["server_id"], settings.calibration_servers),
        "inventory_validation": _findings(report),
        "inventory_rows": {"in": report.rows_in.get("inventory"), "out": report.rows_out.get("inventory")},
    }
    _write_frame(ps, _base(ps, run_id, "inventory.parquet"), inventory)
    _write_json(ps, _base(ps, run_id, "plan.json"), plan)
    log.info(
        "planned %d shard(s) of ≤ %d servers for %d servers",
        n,
        settings.shard_size,
        len(inventory),
        extra={"run_id": run_id, "trigger": trigger, "input_key": snap["key"]},
    )
    return {
        "run_id": run_id,
        "input_key": snap["key"],
        "n_shards": n,
        "servers": len(inventory),
        "seconds": round(time.perf_counter() - t0, 2),
        "shards": [{"run_id": run_id, "shard": k} for k in range(n)],
    }


# --------------------------------------------------------------------------- calibrate


def calibrate_shards(store: Store, settings: Settings, run_id: str) -> dict:
    """The run's pooled choices, learned once on its calibration sample: ``shards/pooled.json``.

    Every shard then fits with the same choices (what the fleet model pools across series:
    seasonality per metric, default variant, prior of the per-series choice, band tables; the
    naive model's band factors), so the sharded plan equals the one-process plan, which learns
    them on the same servers (forecasting.pooled). Runs between Plan and the shards' Map; a
    retry after success returns the written record.
    """
    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU seconds too: wall time follows the machine's load
    ps = object_store(store)
    plan = read_plan(store, run_id)
    path = _base(ps, run_id, POOLED)
    if (done := _read_json(ps, path)) is not None:
        return {"run_id": run_id, "series": done.get("series", 0), "seconds": done.get("seconds", 0)}
    _check_unchanged(store, plan)
    inventory = _read_frame(ps, _base(ps, run_id, "inventory.parquet"), "shard plan inventory")
    ids = plan["calibration_sample"]
    mine = inventory.loc[inventory["server_id"].isin(set(ids))].drop(columns="shard").reset_index(drop=True)
    raw = store.read_metrics(MetricsQuery.of(server_ids=mine["server_id"].tolist()))
    _check_unchanged(store, plan)
    metrics, _ = validate_metrics(raw, mine, plan["freq"], store.uri)
    del raw
    if not len(metrics):
        raise ShardError(
            f"run {run_id}: no metrics for any server of the calibration sample ({len(ids)} servers)"
        )
    panel = _panel(metrics, plan)
    pooled = learn(
        panel, plan["model"], int(plan["horizon"]), int(plan["backtest_cutoffs"]), settings.workers
    )
    pooled["seconds"] = round(time.perf_counter() - t0, 2)
    pooled["cpu_seconds"] = round(time.process_time() - c0, 2)
    pooled["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    _write_json(ps, path, pooled)
    log.info(
        "calibrated on %d series of %d sample servers in %.1f s",
        panel.n_series,
        len(ids),
        pooled["seconds"],
        extra={"run_id": run_id, "trigger": plan.get("trigger")},
    )
    return {"run_id": run_id, "series": int(panel.n_series), "seconds": pooled["seconds"]}


def read_pooled(store: Store, run_id: str) -> dict:
    """The run's pooled choices (written by :func:`calibrate_shards`)."""
    ps = object_store(store)
    pooled = _read_json(ps, _base(ps, run_id, POOLED))
    if pooled is None:
        raise ShardError(f"run {run_id} is not calibrated: {ps._display(_base(ps, run_id, POOLED))} missing")
    return pooled


def _panel(metrics: pd.DataFrame, plan: dict):
    grid = plan.get("grid") or {}
    return build_panel(
        metrics,
        plan["freq"],
        start=pd.Timestamp(grid["start"]) if grid.get("start") else None,
        end=pd.Timestamp(grid["end"]) if grid.get("end") else None,
    )


# --------------------------------------------------------------------------- one shard


def run_shard(store: Store, settings: Settings, run_id: str, shard: int) -> dict:
    """Load, validate, fit, forecast and backtest one shard; write its partial tables, done.json last."""
    t0 = time.perf_counter()
    c0 = time.process_time()  # CPU seconds too: wall time follows the machine's load
    ps = object_store(store)
    plan = read_plan(store, run_id)
    if not 0 <= int(shard) < plan["n_shards"]:
        raise ShardError(f"run {run_id} has shards 0–{plan['n_shards'] - 1}, not {shard}")
    shard = int(shard)
    ctx = {"run_id": run_id, "trigger": plan.get("trigger"), "shard": shard}
    _check_unchanged(store, plan)
    if not renew_lease_of(ps.cond, ps.lease_path(), run_id, settings.lease_seconds):
        log.warning(
            "the run's lease expired or was taken over; it publishes only if its input is newest", extra=ctx
        )
    pooled = read_pooled(store, run_id)
    inventory = _read_frame(ps, _base(ps, run_id, "inventory.parquet"), "shard plan inventory")
    mine = inventory.loc[inventory["shard"] == shard].drop(columns="shard").reset_index(drop=True)
    freq, h = plan["freq"], int(plan["horizon"])
    out = _base(ps, run_id, str(shard))
    done: dict[str, Any] = {"shard": shard, "servers": len(mine), "series": 0, "metric_rows": 0}
    forecasts = backtest = risk = None
    report = ValidationReport(source=store.uri)
    if len(mine):
        raw = store.read_metrics(MetricsQuery.of(server_ids=mine["server_id"].tolist()))
        _check_unchanged(store, plan)  # the read saw the planned input, not a later write
        metrics, report = validate_metrics(raw, mine, freq, store.uri)
        del raw
        done["metric_rows"] = len(metrics)
        if len(metrics):
            panel = _panel(metrics, plan)
            model_name = plan["model"]
            result = model_factory(model_name, settings, h, pooled)().fit(panel).predict(h)
            forecasts = result.to_frame()
            done.update(
                series=int(panel.n_series),
                forecast_origin=str(panel.index[-1]),
                start=str(metrics["timestamp"].min()),
                end=str(metrics["timestamp"].max()),
                failure_count=len(result.failures),
                failures=result.failures.to_dict("records")[:200],
            )
            if plan["backtest_cutoffs"] > 0:
                names = dict.fromkeys([model_name, "naive"])
                backtest = run_backtest(
                    panel,
                    {n: model_factory(n, settings, h, pooled) for n in names},
                    h,
                    n_cutoffs=plan["backtest_cutoffs"],
                )
        # the shard's half of the analytics (the fleet's half runs at publish)
        grid = _grid(plan)
        ts = metrics["timestamp"]
        history = metrics.loc[ts > grid.last - pd.Timedelta(days=HISTORY_DAYS[freq] + 1)]
        fc = forecasts if forecasts is not None else pd.DataFrame(columns=list(FORECAST_COLUMNS))
        risk, facts, packing = shard_analytics(fc, history, mine, settings, freq, grid)
        del history
        done["servers_at_risk"] = servers_at_risk(risk)
        _write_frame(ps, f"{out}/facts.parquet", facts.to_frame())
        ps._write_bytes(f"{out}/packing.npz", packing.to_bytes())
        done["candidates"] = int(packing.n_servers)
    # the plan's own tables go straight to their place in the run, one part per shard (an
    # unpublished run is read by nobody; Publish writes the manifest and LATEST after them)
    written = {}
    for name, frame in (("forecasts", forecasts), ("backtest", backtest), ("risk", risk)):
        if frame is not None:
            if not frame["server_id"].is_monotonic_increasing:
                frame = frame.sort_values("server_id", kind="stable", ignore_index=True)
            _write_frame(ps, _part(ps, run_id, name, shard), frame, row_group_size=PART_ROW_GROUP_ROWS)
            written[name] = len(frame)
    done.update(
        tables=written,
        validation=_findings(report),
        rows_in=report.rows_in.get("metrics", 0),
        seconds=round(time.perf_counter() - t0, 2),
        cpu_seconds=round(time.process_time() - c0, 2),
        peak_rss_mb=round(_peak_rss_mb(), 1),
        finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )
    _write_json(ps, f"{out}/done.json", done)  # last: the shard counts as done only now
    log.info(
        "shard %d done: %d servers, %d series in %.1f s",
        shard,
        len(mine),
        done["series"],
        done["seconds"],
        extra=ctx,
    )
    return {
        "run_id": run_id,
        "shard": shard,
        "servers": len(mine),
        "series": done["series"],
        "seconds": done["seconds"],
    }


def _check_unchanged(store: Store, plan: dict) -> None:
    now = snapshot_input(store)["key"]
    if now != plan["snapshot"]["key"]:
        raise InputChangedError(
            f"run {plan['run_id']}: the input changed since it was planned (input key "
            f"{plan['snapshot']['key']} → {now}); this run stops unpublished, the new input starts its own"
        )


# --------------------------------------------------------------------------- publish


def shard_status(store: Store, run_id: str) -> tuple[dict, dict[int, dict], list[int]]:
    """The plan, the done shards' records and the shards not done."""
    ps = object_store(store)
    plan = read_plan(store, run_id)
    done, missing = {}, []
    for k in range(plan["n_shards"]):
        rec = _read_json(ps, _base(ps, run_id, str(k), "done.json"))
        if rec is None:
            missing.append(k)
        else:
            done[k] = rec
    return plan, done, missing


def publish_shards(
    store: Store, settings: Settings, run_id: str, *, cleanup: bool = True, engine: dict | None = None
) -> dict:
    """Every shard done → analytics over the whole fleet → the run's tables, manifest, LATEST last.

    A missing shard publishes nothing (ShardError naming it): readers stay on the previous run.
    A run overtaken by one on newer input (its snapshot's as-of, published first) is not published
    either — LATEST only moves forward — and ``{"run_id", "superseded_by"}`` is returned. The
    lease taken by :func:`plan_shards` is released here, whatever the outcome. ``engine``: what the
    engine that ran the shards adds to the manifest's ``engine`` section (workers, attempts).
    """
    t0 = time.perf_counter()
    ps = object_store(store)
    check_run_id(run_id)
    if ps._exists(ps._p("runs", run_id, "manifest.json")):  # already published (a retried Publish step)
        log.info("run already published", extra={"run_id": run_id})
        return store.read_manifest(run_id)
    plan, done, missing = shard_status(store, run_id)
    ctx = {"run_id": run_id, "trigger": plan.get("trigger")}
    try:
        return _publish(store, settings, ps, run_id, plan, done, missing, ctx, cleanup, t0, engine or {})
    finally:
        release_lease(ps.cond, ps.lease_path(), run_id)  # the lease taken at plan ends here


def _publish(store, settings, ps, run_id, plan, done, missing, ctx, cleanup, t0, engine) -> dict:
    c0 = time.process_time()
    # a run on newer input already in LATEST: skip the analytics (publish_run would refuse LATEST too)
    latest = ps.superseded_by({"run_id": run_id, "input": {"snapshot": plan["snapshot"]}})
    if latest:
        log.warning("run superseded by %s (newer input): not published", latest, extra=ctx)
        if cleanup:  # never published, so never read: its table parts go with the shards' files
            _delete_partials(ps, run_id, *PART_TABLES)
        return {"run_id": run_id, "superseded_by": latest}
    # one RunSucceeded/RunFailed line per sharded run, as for a one-process run (a missing shard fails it)
    with batch_run(run_id, plan.get("trigger")) as metrics:
        if missing:
            raise ShardError(
                f"run {run_id}: shard(s) {', '.join(map(str, missing))} of {plan['n_shards']} did not finish; "
                "nothing published (runs/LATEST unchanged)"
            )
        inventory = _read_frame(ps, _base(ps, run_id, "inventory.parquet"), "shard plan inventory")
        rows = {
            name: sum(int(d.get("tables", {}).get(name, 0)) for d in done.values()) for name in PART_TABLES
        }
        if not rows["forecasts"]:
            raise ShardError(f"run {run_id}: no shard produced forecasts (no metrics for any server)")
        freq = plan["freq"]
        policy = settings.policy()
        recs = _fleet_half(ps, run_id, settings, inventory, done)
        inventory = inventory.drop(columns="shard")
        tables = {"recommendations": recs.frame, "consolidation": recs.plan}
        has_backtest = rows["backtest"] > 0
        pooled = read_pooled(store, run_id)
        findings = _merge_findings(
            [plan["inventory_validation"], *(done[k]["validation"] for k in sorted(done))]
        )
        failures = [f for k in sorted(done) for f in done[k].get("failures", [])]
        starts = [done[k]["start"] for k in done if done[k].get("start")]
        ends = [done[k]["end"] for k in done if done[k].get("end")]
        manifest = {
            "run_id": run_id,
            "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "data": store.uri,
            "code_version": code_version(),
            "trigger": plan.get("trigger"),
            "input": {
                "freq": freq,
                "servers": len(inventory),
                "metric_rows": int(sum(d["metric_rows"] for d in done.values())),
                "series": int(sum(d["series"] for d in done.values())),
                "start": min(starts) if starts else "",
                "end": max(ends) if ends else "",
                "fingerprint": plan["snapshot"]["key"],
                "validation": [f.line() for f in findings],
                "snapshot": plan["snapshot"],
            },
            "config": {
                "model": plan["model"],
                "horizon": plan["horizon"],
                "backtest_cutoffs": plan["backtest_cutoffs"] if has_backtest else 0,
                "calibration_servers": len(plan.get("calibration_sample", [])),
                "thresholds": settings.thresholds,
                "criticality_offsets": settings.criticality_offsets,
                "lead_time_days": settings.lead_time_days,
                "headroom": settings.headroom,
                "idle_cpu_p95": settings.idle_cpu_p95,
                "policy": dataclasses.asdict(policy),
            },
            "engine": {
                "kind": "shards",
                "n_shards": plan["n_shards"],
                "shard_size": plan["shard_size"],
                "shard_seconds": [done[k]["seconds"] for k in sorted(done)],
                "shard_cpu_seconds": [done[k].get("cpu_seconds") for k in sorted(done)],
                "shard_peak_rss_mb": [done[k].get("peak_rss_mb") for k in sorted(done)],
                "calibrate_seconds": pooled.get("seconds"),
                "calibrate_cpu_seconds": pooled.get("cpu_seconds"),
                "calibrate_peak_rss_mb": pooled.get("peak_rss_mb"),
                "calibration_series": pooled.get("series"),
                **engine,
            },
            "forecast_origin": max(
                (d["forecast_origin"] for d in done.values() if d.get("forecast_origin")), default=""
            ),
            "failures": failures[:200],
            "failure_count": int(sum(d.get("failure_count", 0) for d in done.values())),
            "scores": _mean_scores(_backtest_scores(ps, run_id) if has_backtest else None),
            "consolidation": recs.summary_dict(),
            "rows": {
                **{n: r for n, r in rows.items() if r or n != "backtest"},
                **{name: len(frame) for name, frame in tables.items()},
            },
            "tables_in_parts": [n for n in PART_TABLES if rows[n]],
        }
        manifest["engine"].update(  # Publish up to its writes: stored with the run
            publish_seconds=round(time.perf_counter() - t0, 2),
            publish_cpu_seconds=round(time.process_time() - c0, 2),
            publish_peak_rss_mb=round(_peak_rss_mb(), 1),
        )
        parts = manifest["tables_in_parts"]
        if not store.publish_run(run_id, tables, manifest, parts):  # tables, manifest, then LATEST by CAS
            manifest["superseded_by"] = store.latest_run_id()
        manifest["wall_seconds"] = round(time.perf_counter() - t0, 2)
        at_risk = sum(int(d.get("servers_at_risk", 0)) for d in done.values())
        add_run_metrics(metrics, manifest, at_risk)
    log.info("published run from %d shard(s)", plan["n_shards"], extra=ctx)
    if cleanup:
        _delete_partials(ps, run_id)
    from .records.retention import clean_after_run

    clean_after_run(store, settings.keep_runs)
    return manifest


def _fleet_half(
    ps: ParquetStore, run_id: str, settings: Settings, inventory: pd.DataFrame, done: dict[int, dict]
) -> Recommendations:
    """Every shard's server facts (in the plan's inventory order) and its candidates' packing
    inputs, gathered; then the fleet-wide packing and the one decision per server. Only the
    candidates' CPU and memory come here, never the fleet's series."""
    shards_with = [k for k in sorted(done) if done[k].get("servers")]
    facts = pd.concat(
        [
            _read_frame(ps, _base(ps, run_id, str(k), "facts.parquet"), f"shard {k} facts")
            for k in shards_with
        ],
        ignore_index=True,
    )
    order = pd.Index(facts["server_id"]).get_indexer(inventory["server_id"])
    if (order < 0).any():
        raise ShardError(f"run {run_id}: the shards' facts miss servers of the plan's inventory")
    facts = facts.iloc[order].reset_index(drop=True)
    packing = AnalyticsInputs.concat(
        [
            AnalyticsInputs.from_bytes(ps._read_bytes(_base(ps, run_id, str(k), "packing.npz")))
            for k in shards_with
        ]
    )
    return fleet_recommendations(
        ServerFacts.from_frame(facts), packing, inventory.drop(columns="shard"), settings
    )


def _backtest_scores(ps: ParquetStore, run_id: str) -> pd.DataFrame | None:
    """The backtest columns the manifest averages, read from every shard's part."""
    dataset = ps.run_table_dataset(run_id, "backtest")
    return None if dataset is None else dataset.to_table(columns=["model", *MEAN_SCORES]).to_pandas()


def abandon_run(store: Store, run_id: str) -> dict:
    """A run that failed, or whose process died, before publishing: release the store's lease it
    holds (the next run need not wait for it to expire) and remove everything it wrote under
    ``runs/<id>/`` (shards' files, table parts, a killed writer's ``.tmp-`` files). A published
    run is left alone; so is a lease another run holds. Safe to call more than once."""
    ps = object_store(store)
    check_run_id(run_id)
    if ps._exists(ps._p("runs", run_id, "manifest.json")):
        return {"run_id": run_id, "abandoned": False, "why": "published"}
    release_lease(ps.cond, ps.lease_path(), run_id)
    try:  # the shards' files and the table parts are under it too
        ps.fs.delete_dir(ps._p("runs", run_id))
    except FileNotFoundError:
        pass
    except OSError as e:
        log.warning("could not remove run %s: %s", run_id, e, extra={"run_id": run_id})
    log.warning("run abandoned: lease released, partial files removed", extra={"run_id": run_id})
    return {"run_id": run_id, "abandoned": True}


def sweep_dead_run(store: Store, run_id: str | None) -> None:
    """What a run does on taking the lease over from a process that died: that run never
    published (or published and died before releasing: then it is left alone), so its files go."""
    if not run_id:
        return
    try:
        abandon_run(store, run_id)
    except (StoreError, ValueError) as e:  # an unreadable id in the old lease: nothing to remove
        log.warning("could not sweep the dead run %s: %s", run_id, e)


def _delete_partials(ps: ParquetStore, run_id: str, *tables: str) -> None:
    """Remove the shards' working files (facts, packing inputs, plan) once published, and the
    given tables' parts of a run that will never be (best effort)."""
    for path in (_base(ps, run_id), *(ps._p("runs", run_id, t) for t in tables)):
        try:
            ps.fs.delete_dir(path)
        except FileNotFoundError:
            continue
        except OSError as e:
            log.warning("could not remove %s of run %s: %s", path, run_id, e, extra={"run_id": run_id})


def run_sharded(
    store: Store, settings: Settings, *, trigger: str | None = None, run_id: str | None = None
) -> dict:
    """Plan, every shard in turn, publish — in this process (tests, and a local engine)."""
    planned = plan_shards(store, settings, trigger=trigger, run_id=run_id)
    calibrate_shards(store, settings, planned["run_id"])
    for item in planned["shards"]:
        run_shard(store, settings, item["run_id"], item["shard"])
    return publish_shards(store, settings, planned["run_id"])
