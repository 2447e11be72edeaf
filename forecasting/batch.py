"""The batch job: load → validate → forecast → backtest → risk → recommendations → publish.

It does the heavy work once per run so the app only reads results. A run is published
atomically (tables first, runs/LATEST last): a crash leaves readers on the previous run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm import tqdm

from .analytics import Recommendations, ServerFacts, analyze, server_facts, settle, summarize
from .backtest import backtest as run_backtest
from .inputs import AnalyticsInputs, Grid, prepare
from .models import get_model
from .observability import batch_run, bound_context
from .panel import Panel, build_panel
from .pooled import calibration_sample, learn, model_kwargs, sample_panel
from .risk import risk_table
from .schema import validate
from .settings import Settings
from .sources import Store, new_run_id

log = logging.getLogger(__name__)

STAGES = ["load", "validate", "panel", "calibrate", "forecast", "backtest", "analytics", "publish"]


def code_version() -> str:
    """git commit of the code that made a run (or 'unknown' outside a checkout)."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def _fingerprint(inventory: pd.DataFrame, metrics: pd.DataFrame) -> str:
    """Cheap identity of the input snapshot, so two runs on the same data can be recognised."""
    h = hashlib.sha256()
    h.update(pd.util.hash_pandas_object(inventory["server_id"], index=False).to_numpy().tobytes())
    h.update(str((len(metrics), metrics["timestamp"].min(), metrics["timestamp"].max())).encode())
    sample = metrics.iloc[:: max(1, len(metrics) // 10_000)]
    h.update(pd.util.hash_pandas_object(sample, index=False).to_numpy().tobytes())
    return h.hexdigest()[:16]


def model_factory(
    name: str, settings: Settings, horizon: int, pooled: dict | None = None
) -> Callable[[], Any]:
    """A fresh, configured model of a registry name (the batch job and every shard use this).

    pooled: the run's choices learned on the fleet's calibration sample (forecasting.pooled):
    the fleet and naive models then decide what they pool across series as the whole fleet
    would, whatever panel (shard) they are fitted on.
    """
    options = {"naive": {}, "prophet": {"workers": settings.workers}}
    kwargs = {
        **options.get(name, {"horizon": horizon, "workers": settings.workers}),
        **model_kwargs(name, pooled),
    }
    return lambda: get_model(name, **kwargs)


def learn_pooled(
    panel: Panel, sample_ids: list[str], model: str, settings: Settings, horizon: int, backtest_cutoffs: int
) -> dict:
    """The run's pooled choices from the calibration sample's rows of a fleet panel."""
    return learn(sample_panel(panel, sample_ids), model, horizon, backtest_cutoffs, workers=settings.workers)


def _peak_rss_mb() -> float:
    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return kb / 1024 if platform.system() != "Darwin" else kb / 1024 / 1024


def run_batch(
    store: Store,
    settings: Settings,
    *,
    model: str | None = None,
    horizon: int | None = None,
    backtest: bool = True,
    echo: Callable[[str], Any] | None = None,
    progress: bool = True,
    run_id: str | None = None,
    input_snapshot: dict | None = None,
    trigger: str | None = None,
) -> dict:
    """Forecast the whole fleet and publish a run; returns its manifest.

    ``trigger`` says what started the run ('cli', 's3', 'schedule', …; default: the one a
    Lambda invocation bound, else 'cli'): it and the run id (chosen at the start) go on every
    log line of the run, and the run's metrics are written as one EMF line at its end
    (forecasting.observability.batch_run). ``input_snapshot``: the objects the run read
    (forecasting.shards.snapshot_input), recorded in the manifest so an event-driven run is
    recognised by its input. Every run records one (taken here when not given) and holds the
    store's lease (``runs/.lease``, LeaseHeldError if another run does) from load to publish;
    LATEST moves to it only if its input is at least as new as LATEST's (else
    ``manifest["superseded_by"]`` names the newer run and LATEST is left alone).
    """
    from .shards import abandon_run, object_store, snapshot_input, sweep_dead_run

    run_id = run_id or new_run_id()
    ps = object_store(store)
    with batch_run(run_id, trigger) as metrics, ps.run_lease(run_id, settings.lease_seconds) as lease:
        sweep_dead_run(store, lease.taken_from_dead)  # a killed run's half-written files
        # what this run reads, taken before reading: its "input as-of" orders runs for LATEST
        input_snapshot = input_snapshot or snapshot_input(store)
        try:
            manifest, risk = _run(
                store,
                settings,
                model,
                horizon,
                backtest,
                progress,
                run_id,
                input_snapshot,
                bound_context()["trigger"],
            )
        except Exception:
            try:  # what it wrote before failing is never published: remove it
                abandon_run(store, run_id)
            except Exception as e:  # never hide the run's own error behind the clean-up's
                log.warning("could not remove the failed run's files: %s", e, extra={"run_id": run_id})
            raise
        add_run_metrics(metrics, manifest, servers_at_risk(risk))
        say = echo or (lambda _msg: None)
        for line in summary_lines(manifest, risk):
            say(line)
        from .records.retention import clean_after_run

        clean_after_run(store, settings.keep_runs)  # under the lease: one clean-up at a time
    return manifest


# The metrics packing reads (cores and memory): all a sharded run gathers of a shard's series.
PACKING_METRICS = ("cpu_p95", "mem_p95")


def _risk_kw(settings: Settings) -> dict[str, Any]:
    return {
        "thresholds": settings.thresholds,
        "criticality_offsets": settings.criticality_offsets,
        "lead_time_days": settings.lead_time_days,
    }


def plan_tables(
    forecasts: pd.DataFrame,
    history: pd.DataFrame,
    inventory: pd.DataFrame,
    scores: pd.DataFrame | None,
    settings: Settings,
    freq: str,
    grid: Grid,
) -> tuple[pd.DataFrame, Any, dict[str, pd.DataFrame]]:
    """Risk → sizing → packing → policy under the run's settings, and the tables a run publishes
    (the one-process run; a sharded run does the same in two halves: :func:`shard_analytics`
    per shard, :func:`fleet_recommendations` at publish)."""
    analysis = analyze(
        forecasts,
        history,
        inventory,
        **_risk_kw(settings),
        headroom=settings.headroom,
        idle_cpu_p95=settings.idle_cpu_p95,
        policy=settings.policy(),
        freq=freq,
        grid=grid,
    )
    risk, recs = analysis.risk, analysis.recommendations
    tables = {"forecasts": forecasts, "risk": risk, "recommendations": recs.frame, "consolidation": recs.plan}
    if scores is not None:
        tables["backtest"] = scores
    return risk, recs, tables


def shard_analytics(
    forecasts: pd.DataFrame,
    history: pd.DataFrame,
    inventory: pd.DataFrame,
    settings: Settings,
    freq: str,
    grid: Grid,
) -> tuple[pd.DataFrame, ServerFacts, AnalyticsInputs]:
    """One shard's half of the analytics: its risk rows, its servers' facts, and the packing
    inputs of its consolidation candidates (their CPU and memory only) for the fleet-wide half."""
    inputs = prepare(forecasts, history, inventory, freq=freq, grid=grid)
    risk = risk_table(inputs, **_risk_kw(settings))
    facts = server_facts(
        inputs, risk, headroom=settings.headroom, idle_cpu_p95=settings.idle_cpu_p95, policy=settings.policy()
    )
    return risk, facts, inputs.take(facts.candidate, metrics=PACKING_METRICS)


def fleet_recommendations(
    facts: ServerFacts, packing: AnalyticsInputs, inventory: pd.DataFrame, settings: Settings
) -> Recommendations:
    """The fleet-wide half: pack every shard's candidates together, then one action per server
    (``facts`` in ``inventory`` order)."""
    frame, cons = settle(
        facts, packing, inventory=inventory, headroom=settings.headroom, policy=settings.policy()
    )
    return Recommendations(
        frame=frame, sizing=facts.sizing, consolidation=cons, profiles=None, summary=summarize(frame, cons)
    )


def servers_at_risk(risk: pd.DataFrame) -> int:
    return int(risk.loc[risk["severity"] != "none", "server_id"].nunique()) if len(risk) else 0


def add_run_metrics(metrics: Any, manifest: dict, at_risk: int) -> None:
    """The run's own figures beside its success and duration: the one-process and sharded runs
    report the same metrics (forecasting.observability.RunMetrics)."""
    metrics.add("SeriesForecast", manifest["input"]["series"])
    metrics.add("SeriesFailed", manifest["failure_count"])
    metrics.add("InputAgeHours", _input_age_hours(manifest["input"]), "None")
    metrics.add("ServersAtRisk", at_risk)


def _input_age_hours(inp: dict) -> float:
    """Hours from the end of the newest period in the input to now (how stale the data was)."""
    end = pd.Timestamp(inp["end"])
    end = end.tz_localize("UTC") if end.tzinfo is None else end.tz_convert("UTC")
    end += pd.Timedelta(days=1) if inp["freq"] == "daily" else pd.Timedelta(hours=1)
    return round((pd.Timestamp.now(tz="UTC") - end) / pd.Timedelta(hours=1), 2)


def _run(
    store: Store,
    settings: Settings,
    model: str | None,
    horizon: int | None,
    backtest: bool,
    progress: bool,
    run_id: str,
    input_snapshot: dict | None,
    trigger: str,
) -> tuple[dict, pd.DataFrame]:
    model_name = model or settings.model
    timings: dict[str, float] = {}
    t_start = time.perf_counter()
    bar = tqdm(
        total=len(STAGES), desc="run", unit="stage", file=sys.stderr, disable=not progress, leave=False
    )

    def stage(name: str) -> None:
        timings[name] = time.perf_counter()
        bar.set_postfix_str(name)

    def done(name: str) -> None:
        timings[name] = round(time.perf_counter() - timings[name], 3)
        bar.update()
        log.info(
            "stage %s done in %.1f s", name, timings[name], extra={"stage": name, "seconds": timings[name]}
        )

    stage("load")
    inventory = store.read_inventory()
    metrics = store.read_metrics()
    info = store.read_store_info()
    freq = info.get("freq", settings.freq)
    h = horizon or settings.horizon or (90 if freq == "daily" else 168)
    done("load")

    stage("validate")
    v = validate(inventory, metrics, freq, source=store.uri)
    done("validate")

    stage("panel")
    panel = build_panel(v.metrics, freq)
    done("panel")

    # what the models pool across series: learned on the fleet's calibration sample, exactly as a
    # sharded run's Calibrate step does (forecasting.pooled), so both publish the same plan
    stage("calibrate")
    cutoffs = settings.backtest_cutoffs if backtest else 0
    sample = calibration_sample(v.inventory["server_id"], settings.calibration_servers)
    pooled = learn_pooled(panel, sample, model_name, settings, h, cutoffs)
    done("calibrate")

    def factory(name: str):
        return model_factory(name, settings, h, pooled)

    stage("forecast")
    result = factory(model_name)().fit(panel).predict(h)
    forecasts = result.to_frame()
    done("forecast")

    stage("backtest")
    scores = None
    if backtest and settings.backtest_cutoffs > 0:
        names = dict.fromkeys([model_name, "naive"])  # the baseline is always scored beside the model
        scores = run_backtest(panel, {n: factory(n) for n in names}, h, n_cutoffs=settings.backtest_cutoffs)
    done("backtest")

    stage("analytics")
    grid = Grid.of(panel.index[0], panel.index[-1], h)
    risk, recs, tables = plan_tables(forecasts, v.metrics, v.inventory, scores, settings, freq, grid)
    done("analytics")

    stage("publish")
    manifest = {
        "run_id": run_id,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "data": store.uri,
        "code_version": code_version(),
        "input": {
            "freq": freq,
            "servers": len(v.inventory),
            "metric_rows": len(v.metrics),
            "series": int(panel.n_series),
            "start": str(v.metrics["timestamp"].min()),
            "end": str(v.metrics["timestamp"].max()),
            "fingerprint": _fingerprint(v.inventory, v.metrics),
            "validation": [f.line() for f in v.report.findings],
            **({"snapshot": input_snapshot} if input_snapshot is not None else {}),
        },
        **({"trigger": trigger} if trigger else {}),
        "config": {
            "model": model_name,
            "horizon": h,
            "backtest_cutoffs": settings.backtest_cutoffs if scores is not None else 0,
            "calibration_servers": len(sample),
            "thresholds": settings.thresholds,
            "criticality_offsets": settings.criticality_offsets,
            "lead_time_days": settings.lead_time_days,
            "headroom": settings.headroom,
            "idle_cpu_p95": settings.idle_cpu_p95,
            "policy": dataclasses.asdict(settings.policy()),
        },
        "forecast_origin": str(panel.index[-1]),
        "failures": result.failures.to_dict("records")[:200],
        "failure_count": len(result.failures),
        "scores": _mean_scores(scores),
        "consolidation": recs.summary_dict(),
        "rows": {name: len(frame) for name, frame in tables.items()},
    }
    if not store.publish_run(run_id, tables, manifest):
        manifest["superseded_by"] = store.latest_run_id()
    done("publish")
    bar.close()
    manifest["timings"] = timings
    manifest["wall_seconds"] = round(time.perf_counter() - t_start, 2)
    manifest["peak_rss_mb"] = round(_peak_rss_mb(), 1)
    return manifest, risk


MEAN_SCORES = ("mase", "smape", "mae", "coverage_80", "coverage_95")  # the manifest's backtest summary


def _mean_scores(scores: pd.DataFrame | None) -> dict:
    if scores is None or scores.empty:
        return {}
    agg = scores.groupby("model")[list(MEAN_SCORES)].mean()
    return {m: {k: round(float(x), 4) for k, x in row.items() if np.isfinite(x)} for m, row in agg.iterrows()}


def summary_lines(manifest: dict, risk: pd.DataFrame) -> list[str]:
    """The final summary a planner reads after a run."""
    inp, cfg = manifest["input"], manifest["config"]
    lines = [
        f"Run {manifest['run_id']} published to {manifest['data']} in {manifest.get('wall_seconds', 0):.1f} s",
        *(
            [
                f"  superseded: run {manifest['superseded_by']} read newer input, so runs/LATEST stays on it; "
                f"this run is kept and readable by id"
            ]
            if manifest.get("superseded_by")
            else []
        ),
        f"  input: {inp['servers']:,} servers, {inp['series']:,} series, {inp['metric_rows']:,} {inp['freq']} rows "
        f"({inp['start'][:10]} → {inp['end'][:10]})",
        f"  forecast: model {cfg['model']}, horizon {cfg['horizon']} periods; "
        f"{manifest['failure_count']:,} series fell back to the baseline",
    ]
    for f in manifest["failures"][:5]:
        lines.append(f"    {f['server_id']} {f['metric']}: {f['reason']}")
    for model, s in manifest["scores"].items():
        lines.append(
            f"  backtest {model:>8}: MASE {s.get('mase', float('nan')):.3f}  sMAPE {s.get('smape', float('nan')):.1f} %  "
            f"80 % band coverage {100 * s.get('coverage_80', float('nan')):.0f} %  "
            f"95 % band {100 * s.get('coverage_95', float('nan')):.0f} %"
        )
    if len(risk):
        sev = risk["severity"].value_counts()
        lines.append(
            "  risk: "
            + ", ".join(f"{sev.get(k, 0):,} {k}" for k in ("critical", "high", "medium", "low"))
            + f" (server × metric); {risk.loc[risk['days_to_breach'] <= 30, 'server_id'].nunique():,} servers breach within 30 days"
        )
    c = manifest.get("consolidation") or {}
    acts = {k: v for k, v in (c.get("actions") or {}).items() if v and k != "keep"}
    if acts:
        held = c.get("held_back") or {}
        lines.append(
            "  recommendations: "
            + ", ".join(f"{v:,} {k}" for k, v in acts.items())
            + (" (held back: " + ", ".join(f"{v:,} {k}" for k, v in held.items()) + ")" if held else "")
        )
    if c:
        lines.append(
            f"  consolidation: {c.get('servers_freed', 0):,} servers freed, "
            f"${c.get('monthly_savings', 0):,.0f}/month potential savings"
        )
    if "timings" in manifest:
        lines.append("  time: " + ", ".join(f"{k} {v:.1f}s" for k, v in manifest["timings"].items()))
    return lines
