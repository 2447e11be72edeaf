"""A small, contract-shaped plan store for app tests and benchmarks, built in about a second.

Inventory and metrics come from the real synthetic fleet (forecasting.synthetic); the plan
tables (forecasts, risk, recommendations, consolidation, backtest) are derived with plain
numpy — a damped trend plus weekly shape and widening normal quantiles — with exactly the
columns of forecasting/plan.py. They are plausible, not the batch job's answers: the app is
tested on shapes and behaviours here, the analytics elsewhere.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pandas as pd

from forecasting.panel import build_panel
from forecasting.plan import (
    BACKTEST_COLUMNS,
    CONSOLIDATION_COLUMNS,
    FORECAST_COLUMNS,
    QUANTILE_COLUMNS,
    QUANTILES,
    RECOMMENDATION_COLUMNS,
    RISK_COLUMNS,
)
from forecasting.schema import METRICS
from forecasting.settings import DEFAULT_CRITICALITY_OFFSETS, DEFAULT_LEAD_TIME_DAYS, DEFAULT_THRESHOLDS
from forecasting.sources import Store, open_store
from forecasting.synthetic import generate_fleet

START = "2025-07-01"  # fixed, so every build with the same arguments is identical
HORIZONS = {"daily": 90, "hourly": 168}
SEASONS = {"daily": 7, "hourly": 24}  # periods per season of the simple seasonal shape
PER_DAY = {"daily": 1, "hourly": 24}
FIXTURE_CREATED_AT = datetime(2026, 8, 5, 6, 0, tzinfo=UTC)
SEVERITY_BANDS = (("critical", 70.0), ("high", 45.0), ("medium", 20.0))


def fixture_run_id(seed: int) -> str:
    return f"{FIXTURE_CREATED_AT:%Y%m%dT%H%M%SZ}-fx{seed}"


def make_plan_store(
    root: Path,
    n_servers: int = 200,
    seed: int = 0,
    *,
    days: int = 400,
    freq: str = "daily",
    omit: tuple[str, ...] = (),
    run_id: str | None = None,
) -> Store:
    """Write inventory, metrics and one published run under ``root``; return the store.

    ``omit`` leaves plan tables out of the run (to test "not in this run" states).
    """
    fleet = generate_fleet(n_servers, days=days, start=START, seed=seed, freq=freq)
    store = open_store(str(root))
    store.write_inventory(fleet.inventory)
    store.write_metrics(fleet.metrics, fleet.inventory, freq=freq)
    tables, manifest = plan_tables(fleet.inventory, fleet.metrics, seed=seed, run_id=run_id, freq=freq)
    for name in omit:
        tables.pop(name, None)
    manifest["rows"] = {k: len(v) for k, v in tables.items()}
    store.publish_run(manifest["run_id"], tables, manifest)
    return store


def plan_tables(
    inventory: pd.DataFrame,
    metrics: pd.DataFrame,
    *,
    seed: int = 0,
    run_id: str | None = None,
    freq: str = "daily",
) -> tuple[dict[str, pd.DataFrame], dict]:
    """All five plan tables and a manifest for an inventory + metrics pair."""
    rng = np.random.default_rng(seed)
    horizon, season, per_day = HORIZONS[freq], SEASONS[freq], PER_DAY[freq]
    window = 8 * season  # recent history the trend and shape are read from
    panel = build_panel(metrics, freq)
    keys = panel.keys
    values = panel.values
    n_series, T = values.shape
    h = np.arange(1, horizon + 1, dtype=float)

    # ---- forecasts: level + damped slope + weekly shape, normal quantiles widening with h
    last = values[:, -window:]
    t = np.arange(last.shape[1], dtype=float)
    ok = np.isfinite(last)
    tm = np.where(ok, t, np.nan)
    with np.errstate(invalid="ignore", divide="ignore"):
        t_mean = np.nanmean(tm, axis=1, keepdims=True)
        y_mean = np.nanmean(last, axis=1, keepdims=True)
        slope = np.nansum((tm - t_mean) * (last - y_mean), axis=1) / np.nansum((tm - t_mean) ** 2, axis=1)
    slope = np.nan_to_num(slope)
    level = np.nan_to_num(np.nanmean(values[:, -season:], axis=1))
    resid = last - (y_mean + slope[:, None] * (tm - t_mean))
    sigma = np.nan_to_num(np.nanstd(resid, axis=1)) + 0.5
    phase = np.arange(T) % season
    weekly = np.zeros((n_series, season))
    for d in range(season):
        cols = np.flatnonzero(phase[-window:] == d) + (T - window)
        weekly[:, d] = np.nan_to_num(np.nanmean(values[:, cols], axis=1) - y_mean[:, 0])
    steps = (T + np.arange(horizon)) % season
    damped = np.cumsum(0.995 ** np.arange(horizon))
    point = level[:, None] + slope[:, None] * damped[None, :] + weekly[:, steps]
    spread = sigma[:, None] * np.sqrt(1.0 + h / (14.0 * per_day))[None, :]
    z = np.array([NormalDist().inv_cdf(q) for q in QUANTILES])
    quant = point[:, :, None] + spread[:, :, None] * z[None, None, :]
    upper = panel.upper_bounds
    point = np.clip(point, 0, upper[:, None])
    quant = np.sort(np.clip(quant, 0, upper[:, None, None]), axis=-1)
    future = panel.future_index(horizon)
    fc = pd.DataFrame(
        {
            "server_id": np.repeat(keys["server_id"].to_numpy(dtype=object), horizon),
            "metric": np.repeat(keys["metric"].to_numpy(dtype=object), horizon),
            "timestamp": np.tile(future.to_numpy(), n_series),
            "yhat": point.reshape(-1).astype("float32"),
        }
    )
    for j, col in enumerate(QUANTILE_COLUMNS):
        fc[col] = quant[:, :, j].reshape(-1).astype("float32")
    fc["yhat_lower"], fc["yhat_upper"] = fc["q10"], fc["q90"]
    fc["model"] = "fleet"
    fc["timestamp"] = pd.to_datetime(fc["timestamp"], utc=True)
    fc = fc[FORECAST_COLUMNS]

    # ---- risk: thresholds with criticality offsets, first crossings, a simple score
    inv = inventory.set_index("server_id")
    crit = keys["server_id"].map(inv["criticality"]).fillna("unknown").to_numpy(dtype=object)
    stype = keys["server_id"].map(inv["server_type"]).fillna("default").to_numpy(dtype=object)
    off = np.array([DEFAULT_CRITICALITY_OFFSETS.get(c, 0.0) for c in crit])
    base = keys["metric"].map(DEFAULT_THRESHOLDS).to_numpy(dtype=float)
    is_pct = np.array([METRICS[m].kind == "percent" for m in keys["metric"]])
    thr = np.where(is_pct, base + off, base * (1 + off / 100.0))
    current = np.nan_to_num(np.nanpercentile(values[:, -7 * per_day :], 95, axis=1))

    def first_cross(path: np.ndarray) -> np.ndarray:
        hit = path >= thr[:, None]
        return np.where(hit.any(axis=1), hit.argmax(axis=1), -1)

    q = {c: quant[:, :, j] for j, c in enumerate(QUANTILE_COLUMNS)}
    i10, i50, i90 = first_cross(q["q10"]), first_cross(q["q50"]), first_cross(q["q90"])
    frac_over = (quant >= thr[:, None, None]).mean(axis=2).max(axis=1)
    over_now = current >= thr
    prob = np.where(over_now, 1.0, frac_over)

    def dates(idx: np.ndarray) -> pd.Series:
        out = pd.Series(pd.NaT, index=range(n_series), dtype="datetime64[us, UTC]")
        has = idx >= 0
        out[has] = future[idx[has]]
        return out

    days50 = np.where(i50 >= 0, (i50 + 1.0) / per_day, np.nan)
    days90 = np.where(i90 >= 0, (i90 + 1.0) / per_day, np.nan)
    lead = np.array([DEFAULT_LEAD_TIME_DAYS.get(s, DEFAULT_LEAD_TIME_DAYS["default"]) for s in stype], float)
    urgency = np.where(np.isfinite(days90), np.exp(-np.maximum(np.nan_to_num(days90) - lead, 0) / 90.0), 0.0)
    weight = np.array([{"critical": 1.0, "high": 0.9, "medium": 0.8, "low": 0.65}.get(c, 0.65) for c in crit])
    score = np.where(over_now, 100 * weight, 100 * weight * prob * (0.4 + 0.6 * urgency))
    status = np.where(over_now, "already_over", np.where(i90 >= 0, "at_risk", "ok"))
    severity = np.full(n_series, "low", dtype=object)
    for name, cut in reversed(SEVERITY_BANDS):
        severity[score >= cut] = name
    severity[status == "ok"] = "none"
    act_date = dates(np.where(i50 >= 0, i50, i90))
    act_by = act_date - pd.to_timedelta(lead, unit="D")
    metric_labels = keys["metric"].map(lambda m: METRICS[m].label).to_numpy(dtype=object)
    reason = np.where(
        status == "already_over",
        metric_labels + " is already over its threshold",
        np.where(
            status == "at_risk",
            metric_labels + " is forecast to cross its threshold within the horizon",
            metric_labels + " stays below its threshold",
        ),
    )
    risk = pd.DataFrame(
        {
            "server_id": keys["server_id"].to_numpy(dtype=object),
            "metric": keys["metric"].to_numpy(dtype=object),
            "threshold": thr,
            "current_p95": current,
            "forecast_peak": q["q50"].max(axis=1),
            "forecast_peak_upper": q["q90"].max(axis=1),
            "breach_optimistic": dates(i10),
            "breach_expected": dates(i50),
            "breach_pessimistic": dates(i90),
            "days_to_breach": days50,
            "days_to_breach_pessimistic": days90,
            "breach_probability": prob,
            "act_by": act_by,
            "status": status,
            "severity": severity,
            "score": np.round(score, 1),
            "trend_per_week": slope * 7,
            "reason": reason,
        }
    )[RISK_COLUMNS]

    # ---- recommendations and a consolidation plan
    inv_r = inventory.reset_index(drop=True)
    cpu_cur = risk[risk["metric"] == "cpu_p95"].set_index("server_id")["current_p95"]
    cpu = inv_r["server_id"].map(cpu_cur).fillna(50.0).to_numpy()
    worst = risk.groupby("server_id")["score"].max()
    hot = inv_r["server_id"].map(worst).fillna(0).to_numpy() >= 45
    cores = inv_r["cpu_cores"].to_numpy(dtype=float)
    mem = inv_r["memory_gb"].to_numpy(dtype=float)
    cost = inv_r["monthly_cost_usd"].to_numpy(dtype=float)
    small_env = inv_r["environment"].isin(["dev", "uat"]).to_numpy()
    action = np.where(
        hot,
        "upgrade",
        np.where(
            cpu < 10,
            "decommission",
            np.where((cpu < 25) & small_env, "consolidate", np.where(cpu < 35, "right-size", "keep")),
        ),
    )
    rec_cores = np.select(
        [action == "upgrade", action == "right-size", action == "decommission"],
        [cores * 2, np.maximum(1, cores / 2), 0],
        cores,
    )
    rec_mem = np.select(
        [action == "upgrade", action == "right-size", action == "decommission"], [mem * 2, mem / 2, 0], mem
    )
    rec_cost = np.select(
        [action == "upgrade", action == "right-size", action == "decommission", action == "consolidate"],
        [cost * 1.8, cost * 0.55, 0.0, cost * 0.45],
        cost,
    )
    groups = np.full(len(inv_r), "", dtype=object)
    cons_idx = np.flatnonzero(action == "consolidate")
    for k, i in enumerate(cons_idx):
        groups[i] = f"grp-{k // 4 + 1:03d}"

    def size(c: np.ndarray, m: np.ndarray) -> np.ndarray:
        return np.array([f"{int(a)} vCPU / {int(b)} GB" if a else "—" for a, b in zip(c, m)], dtype=object)

    recs = pd.DataFrame(
        {
            "server_id": inv_r["server_id"].to_numpy(dtype=object),
            "action": action,
            "current_size": size(cores, mem),
            "current_cores": cores,
            "current_memory_gb": mem,
            "recommended_size": size(rec_cores, rec_mem),
            "recommended_cores": rec_cores,
            "recommended_memory_gb": rec_mem,
            "target_group": groups,
            "current_monthly_cost": cost,
            "recommended_monthly_cost": rec_cost,
            "monthly_savings": np.round(cost - rec_cost, 2),
            "reason": np.char.add("CPU p95 ", np.char.mod("%.0f %%", cpu)).astype(object),
        }
    )[RECOMMENDATION_COLUMNS]
    members = inv_r.iloc[cons_idx]
    cons = pd.DataFrame(
        {
            "target_group": groups[cons_idx],
            "server_id": members["server_id"].to_numpy(dtype=object),
            "region": members["region"].to_numpy(dtype=object),
            "environment": members["environment"].to_numpy(dtype=object),
            "host_size": "16 vCPU / 64 GB",
            "host_cores": 16.0,
            "host_memory_gb": 64.0,
            "host_monthly_cost": 620.0,
            "peak_cpu_util": rng.uniform(30, 70, len(cons_idx)),
            "peak_mem_util": rng.uniform(30, 70, len(cons_idx)),
        }
    )[CONSOLIDATION_COLUMNS]

    # ---- backtest: the run's model and the naive baseline
    bt = []
    for model, mase_mu in (("fleet", -0.25), ("naive", 0.0)):
        mase = np.exp(rng.normal(mase_mu, 0.25, n_series))
        bt.append(
            pd.DataFrame(
                {
                    "server_id": keys["server_id"].to_numpy(dtype=object),
                    "metric": keys["metric"].to_numpy(dtype=object),
                    "model": model,
                    "mase": mase,
                    "smape": mase * 8.0,
                    "mae": mase * sigma,
                    "coverage_80": np.clip(rng.normal(0.78, 0.06, n_series), 0, 1),
                    "coverage_95": np.clip(rng.normal(0.93, 0.03, n_series), 0, 1),
                    "n_cutoffs": 3,
                }
            )
        )
    backtest = pd.concat(bt, ignore_index=True)[BACKTEST_COLUMNS]

    rid = run_id or fixture_run_id(seed)
    manifest = {
        "run_id": rid,
        "created_at": FIXTURE_CREATED_AT.isoformat(timespec="seconds"),
        "data": "fixture",
        "input": {
            "freq": freq,
            "servers": len(inventory),
            "metric_rows": len(metrics),
            "series": int(n_series),
            "start": str(metrics["timestamp"].min()),
            "end": str(metrics["timestamp"].max()),
        },
        "config": {
            "model": "fleet",
            "horizon": horizon,
            "backtest_cutoffs": 3,
            "thresholds": dict(DEFAULT_THRESHOLDS),
            "criticality_offsets": dict(DEFAULT_CRITICALITY_OFFSETS),
            "lead_time_days": dict(DEFAULT_LEAD_TIME_DAYS),
            "headroom": 0.2,
            "idle_cpu_p95": 10.0,
        },
        "forecast_origin": str(panel.index[-1]),
    }
    tables = {
        "forecasts": fc,
        "risk": risk,
        "recommendations": recs,
        "consolidation": cons,
        "backtest": backtest,
    }
    return tables, manifest
