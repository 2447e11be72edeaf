"""Capacity analytics benchmark: speed of risk / recommendations / what-if / consolidation, and
peak-aware vs sum-of-peaks packing replayed against held-out actual series.

    .venv/bin/python benchmarks/bench_analytics.py            # 1,000 servers, 4 years daily
    .venv/bin/python benchmarks/bench_analytics.py --quick    # 200 servers, 400 days

The synthetic fleet (forecasting.synthetic) is cut 90 days before its end: the model is fitted on
the history before the cut and forecasts the 90 days after it; the analytics run on that
forecast; the consolidation plans are then replayed on what actually happened in those 90 days.

Baselines, measured side by side in the same run:
- risk: a straightforward per-series pandas loop (groupby server × metric; first crossing of
  q10/q50/q90 and max over steps of 1 − interp(threshold)) — fewer outputs than ours, no reasons;
- what-if: re-running the frame-level path (prepare + risk + sizing) instead of re-deriving from
  the prepared arrays;
- packing: the same candidates packed by the sum of their peaks (what planners do today).

Times are medians of several runs, wall clock and CPU time of this process (CPU time is what the
work costs when other jobs share the cores).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forecasting.analytics import analyze, recommend, recommend_from_inputs
from forecasting.consolidation import consolidate, replay_plan
from forecasting.inputs import prepare
from forecasting.models import get_model
from forecasting.panel import build_panel
from forecasting.plan import QUANTILE_COLUMNS, QUANTILES
from forecasting.policy import Policy
from forecasting.rightsizing import DEFAULT_CATALOG, size_servers, validate_catalog
from forecasting.risk import assess_risk, risk_table
from forecasting.settings import Settings
from forecasting.synthetic import generate_fleet
from forecasting.whatif import Scenario, whatif

START = "2022-01-01"
HOLDOUT_DAYS = 90


def timed(fn, repeat: int) -> tuple[float, float, object]:
    """(median wall seconds, median CPU seconds of this process) over ``repeat`` runs, and the
    last result."""
    walls, cpus, out = [], [], None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        walls.append(time.perf_counter() - t0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus), out


def baseline_risk(forecasts: pd.DataFrame, thresholds: dict[str, float]) -> pd.DataFrame:
    """The obvious implementation: loop over series, pandas filtering, np.interp per step."""
    rows = []
    levels = np.asarray(QUANTILES)
    for (sid, metric), g in forecasts.groupby(["server_id", "metric"], sort=False):
        thr = thresholds[metric]
        first = {}
        for col in ("q10", "q50", "q90"):
            hit = g.loc[g[col] >= thr, "timestamp"]
            first[col] = hit.iloc[0] if len(hit) else pd.NaT
        prob = max(1.0 - np.interp(thr, q, levels) for q in g[QUANTILE_COLUMNS].to_numpy())
        rows.append((sid, metric, first["q10"], first["q50"], first["q90"], prob))
    return pd.DataFrame(rows, columns=["server_id", "metric", "opt", "exp", "pes", "prob"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="200 servers, 400 days, fewer repeats")
    ap.add_argument("--servers", type=int, default=None)
    ap.add_argument(
        "--model", default="fleet", choices=["fleet", "naive"], help="forecast model (default fleet)"
    )
    ap.add_argument("--seed", type=int, default=42)
    args = ap.parse_args(argv)
    n = args.servers or (200 if args.quick else 1000)
    days = 400 if args.quick else 1461
    repeat = 3 if args.quick else 5
    cfg = Settings()
    base = {
        "thresholds": cfg.thresholds,
        "criticality_offsets": cfg.criticality_offsets,
        "lead_time_days": cfg.lead_time_days,
    }
    policy = {"headroom": cfg.headroom, "idle_cpu_p95": cfg.idle_cpu_p95}

    t0 = time.perf_counter()
    fleet = generate_fleet(n, days=days, start=START, seed=args.seed)
    cut = fleet.metrics["timestamp"].max() - pd.Timedelta(days=HOLDOUT_DAYS)
    history = fleet.metrics[fleet.metrics["timestamp"] <= cut].reset_index(drop=True)
    actual = fleet.metrics[fleet.metrics["timestamp"] > cut].reset_index(drop=True)
    inventory = fleet.inventory
    t_gen = time.perf_counter() - t0
    t0 = time.perf_counter()
    panel = build_panel(history, "daily")
    forecasts = get_model(args.model, workers=1).fit(panel).predict(HOLDOUT_DAYS).to_frame()
    t_fc = time.perf_counter() - t0
    print(
        f"fleet: {n:,} servers × {days:,} days (generated in {t_gen:.1f} s); {args.model} forecast of "
        f"{HOLDOUT_DAYS} days for {panel.n_series:,} series in {t_fc:.1f} s; {len(forecasts):,} forecast rows"
    )
    # the placement rules the default policy derives from the inventory (DR pairs, anti-affinity
    # groups, one business unit per host); the analyses below read them from the inventory too
    rules = Policy().placement_rules(inventory)
    catalog = validate_catalog(DEFAULT_CATALOG)

    # ---------------------------------------------------------------- speed
    t_batch, c_batch, analysis = timed(
        lambda: analyze(forecasts, history, inventory, **policy, **base), repeat
    )
    risk, recs = analysis.risk, analysis.recommendations

    def two_entry_points():
        assess_risk(forecasts, history, inventory, **base)
        recommend(forecasts, history, inventory, **policy)

    t_two, c_two, _ = timed(two_entry_points, max(1, repeat - 2))
    t_prep, c_prep, inputs = timed(lambda: prepare(forecasts, history, inventory), repeat)
    t_risk, c_risk, _ = timed(lambda: risk_table(inputs, **base), repeat)
    t_recs, c_recs, _ = timed(lambda: recommend_from_inputs(inputs, profiles=False, **policy), repeat)
    t_base, _, _ = timed(lambda: baseline_risk(forecasts, cfg.thresholds), 1)

    scenario = Scenario(growth_pct_per_month={"Payments": 5.0, "*": 1.0}, thresholds={"cpu_p95": 80.0})
    t_wi, c_wi, wi = timed(lambda: whatif(inputs, scenario, **policy, **base), 5 if args.quick else 10)

    def rederive_from_frames():
        fresh = prepare(forecasts, history, inventory)
        risk_table(fresh, **{**base, "thresholds": {**cfg.thresholds, "cpu_p95": 80.0}})
        size_servers(fresh, **policy)

    t_wi_base, _, _ = timed(rederive_from_frames, 3)
    t_cons, c_cons, cons = timed(
        lambda: consolidate(
            inputs, None, catalog=catalog, headroom=cfg.headroom, rules=rules, actuals=actual
        ),
        max(1, repeat - 2),
    )

    print()
    print(f"{'figure (median of runs)':58s} {'wall':>9s} {'cpu':>9s} {'target':>9s}       baseline / ratio")
    rows = [
        ("risk + recommendations, frames in (analyze)", t_batch, c_batch, 2.0, ""),
        ("  same via assess_risk + recommend (aligns twice)", t_two, c_two, None, ""),
        ("  prepare (frames -> arrays)", t_prep, c_prep, None, ""),
        (
            f"  risk table ({len(risk):,} server × metric rows)",
            t_risk,
            c_risk,
            None,
            f"per-series pandas loop {t_base:.2f} s = {t_base / t_risk:.0f}× slower",
        ),
        ("  recommendations on prepared arrays (sizing + packing)", t_recs, c_recs, None, ""),
        (
            "what-if re-derivation (growth + threshold)",
            t_wi,
            c_wi,
            0.3,
            f"re-running from frames {t_wi_base:.2f} s = {t_wi_base / t_wi:.1f}× slower",
        ),
        (f"consolidation of {n:,} candidate servers (both plans)", t_cons, c_cons, 10.0, ""),
    ]
    for label, wall, cpu, target, note in rows:
        tgt = f"≤ {target:g} s" if target else ""
        flag = ("ok" if wall <= target else "OVER") if target else ""
        print(f"{label:58s} {wall * 1000:6.0f} ms {cpu * 1000:6.0f} ms {tgt:>9s} {flag:4s}  {note}")

    # ---------------------------------------------------------------- packing quality
    c = recs.consolidation
    smart = replay_plan(c.plan, actual, inventory)
    naive = replay_plan(c.naive_plan, actual, inventory)
    s = c.summary
    print()
    print(
        f"packing the {s.candidates:,} servers the policy lets share a host on {s.host_size} hosts "
        f"(q90 paths + last year at today's level, {cfg.headroom * 100:.0f} % headroom), replayed on the held-out "
        f"{HOLDOUT_DAYS} days:"
    )
    print(f"  {'':20s} {'hosts':>6s} {'$/month':>10s} {'violations':>11s} {'groups over':>12s}")
    print(f"  {'today (one each)':20s} {s.hosts_before:6d} {s.monthly_cost_before:10,.0f}")
    print(
        f"  {'sum of peaks':20s} {s.naive_hosts:6d} {s.naive_monthly_cost:10,.0f} "
        f"{naive.violations:11d} {naive.groups_violating:12d}"
    )
    print(
        f"  {'peak-aware':20s} {s.hosts_after:6d} {s.monthly_cost_after:10,.0f} "
        f"{smart.violations:11d} {smart.groups_violating:12d}"
    )
    print(
        f"  peak-aware: {s.naive_hosts - s.hosts_after} fewer hosts than sum of peaks "
        f"({100 * (1 - s.hosts_after / max(s.naive_hosts, 1)):.1f} %; ratio {s.naive_hosts / max(s.hosts_after, 1):.2f}×), "
        f"${s.naive_monthly_cost - s.monthly_cost_after:,.0f}/month cheaper; highest replayed host load "
        f"CPU {smart.worst_cpu_util:.0f} %, memory {smart.worst_mem_util:.0f} %"
    )
    cs = cons.summary
    print(
        f"  every one of the {n:,} servers as a candidate: {cs.hosts_after} hosts peak-aware vs "
        f"{cs.naive_hosts} sum of peaks; violations {cs.violations} vs {cs.naive_violations}; "
        f"{cs.unplaceable} unplaceable"
    )
    print()
    acts = recs.summary.actions
    print(
        "recommendations: "
        + ", ".join(f"{acts[a]} {a}" for a in acts)
        + f"; ${recs.summary.monthly_savings:,.0f}/month potential savings"
    )
    sev = risk["severity"].value_counts()
    print(
        "risk: "
        + ", ".join(f"{sev.get(k, 0)} {k}" for k in ("critical", "high", "medium", "low"))
        + f" (server × metric); the what-if (+5 %/month Payments, +1 % elsewhere, CPU threshold 80 %) "
        f"changes {int((wi.risk['status'] != risk['status']).sum())} statuses"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
