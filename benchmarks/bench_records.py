"""Benchmark: how long comparing two runs and a track record take, by fleet size.

    .venv/bin/python benchmarks/bench_records.py                      # 1,000 servers
    .venv/bin/python benchmarks/bench_records.py --servers 1000 10000 # and 10,000 (minutes: two batch runs)
    .venv/bin/python benchmarks/bench_records.py --servers 10000 --keep /tmp/bench-records  # reuse the runs

For each size a synthetic fleet (2 years daily) is written to a temporary local store with its
last 60 days held back; the real batch job (``run_batch``, no backtest) publishes run A; the
held-back days arrive; run B is published with the CPU threshold lowered to 80 %. Then:

- ``diff``: :func:`forecasting.records.diff.diff_runs` (reads both runs' risk, recommendations and
  the forecasts' model column, the inventory, compares) — what ``python -m forecasting diff`` does;
- ``compare``: the pure :func:`~forecasting.records.diff.compare` alone on tables in memory (what
  the /changes page pays per filter change once the runs are cached);
- ``track``: :func:`forecasting.records.track.track_runs` for run A (reads a year of metrics,
  builds the panel, reads run A's forecasts and risk, scores) — ``python -m forecasting
  track-record RUN_A --no-save`` (saving adds two small writes);
- ``track_record``: the pure scoring alone on the panel and tables in memory.

Targets: diff ≤ 5 s and track ≤ 30 s at 10,000 servers (a planner waits for neither). Figures
are printed beside them; the script always exits 0. The machine is shared (2 cores): ±30 %.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import pandas as pd

START = "2024-01-01"
DAYS = 730
HELD_BACK = 60
TARGETS = {"diff": 5.0, "track": 30.0}


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def measure(n: int, root: Path) -> dict:
    from forecasting.sources import open_store

    fig: dict = {"servers": n, "generate_s": 0.0, "run_a_s": 0.0, "run_b_s": 0.0}
    store = open_store(str(root))
    if len(store.list_runs()) < 2:
        _setup(store, n, root, fig)
    measure_store(store, fig)
    return fig


def _setup(store, n: int, root: Path, fig: dict) -> None:
    """The fleet with its last days held back, run A, the held-back days, run B."""
    from forecasting.batch import run_batch
    from forecasting.schema import validate
    from forecasting.settings import load_settings
    from forecasting.synthetic import generate_fleet

    fleet, fig["generate_s"] = _timed(lambda: generate_fleet(n, days=DAYS, start=START, seed=42))
    v = validate(fleet.inventory, fleet.metrics, "daily")
    del fleet
    cut = pd.Timestamp(START, tz="UTC") + pd.Timedelta(days=DAYS - HELD_BACK)
    store.write_inventory(v.inventory)
    store.write_metrics(v.metrics[v.metrics["timestamp"] < cut], v.inventory, freq="daily")
    _, fig["run_a_s"] = _timed(
        lambda: run_batch(store, load_settings(data=str(root)), backtest=False, progress=False)
    )
    store.write_metrics(v.metrics, v.inventory, freq="daily")
    del v
    lowered = load_settings(data=str(root), thresholds={"cpu_p95": 80})
    _, fig["run_b_s"] = _timed(lambda: run_batch(store, lowered, backtest=False, progress=False))


def measure_store(store, fig: dict) -> None:
    """Time diff and track record on a store holding the two runs."""
    from forecasting.panel import build_panel
    from forecasting.records.diff import compare, diff_runs, read_plan
    from forecasting.records.track import track_record, track_runs
    from forecasting.sources import MetricsQuery

    d, fig["diff_s"] = _timed(lambda: diff_runs(store))
    fig["changes"] = (
        len(d.new_risks) + len(d.resolved_risks) + len(d.moved_breaches) + len(d.changed_recommendations)
    )
    (plan_a, man_a), (plan_b, man_b) = read_plan(store, d.run_a), read_plan(store, d.run_b)
    inv = store.read_inventory()
    _, fig["compare_s"] = _timed(lambda: compare(plan_a, man_a, plan_b, man_b, inventory=inv))

    recs, fig["track_s"] = _timed(lambda: track_runs(store, [d.run_a], save=False))
    s = recs[0].summary
    fig["series"] = s["series"]
    fig["calls"] = s["calls"]
    fig["coverage_80"] = s["coverage_80"]
    fig["mase_median"] = s["mase_median"]
    origin = pd.Timestamp(man_a["forecast_origin"])
    panel = build_panel(store.read_metrics(MetricsQuery.of(start=origin - pd.Timedelta(days=365))), "daily")
    fc, risk = store.read_run_table(d.run_a, "forecasts"), store.read_run_table(d.run_a, "risk")
    _, fig["track_record_s"] = _timed(lambda: track_record(fc, risk, man_a, panel, inventory=inv))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--servers", type=int, nargs="+", default=[1000])
    p.add_argument(
        "--keep", help="keep each fleet's store under DIR/<servers> and reuse it next time (skips the runs)"
    )
    args = p.parse_args()
    rows = []
    for n in args.servers:
        if args.keep:
            fig = measure(n, Path(args.keep) / str(n))
        else:
            with tempfile.TemporaryDirectory(prefix="capfc-bench-records-") as tmp:
                fig = measure(n, Path(tmp))
        rows.append(fig)
        c = fig["calls"]
        print(
            f"{n:>6,} servers: diff {fig['diff_s']:.2f} s (compare alone {fig['compare_s']:.2f} s, "
            f"{fig['changes']:,} changes) · track record {fig['track_s']:.2f} s "
            f"(scoring alone {fig['track_record_s']:.2f} s, {fig['series']:,} series; "
            f"{c['hit']} hits, {c['missed']} missed, {c['false_alarm']} false alarms, {c['pending']} pending; "
            f"80 % coverage {100 * (fig['coverage_80'] or 0):.0f} %, median MASE {fig['mase_median']}) · "
            f"setup: generate {fig['generate_s']:.1f} s, runs {fig['run_a_s']:.1f} + {fig['run_b_s']:.1f} s",
            flush=True,
        )
    print()
    print(
        f"{'servers':>8} {'diff s':>8} {'target':>7} {'compare s':>10} {'track s':>8} {'target':>7} {'scoring s':>10}"
    )
    for f in rows:
        ok_d = "meets" if f["diff_s"] <= TARGETS["diff"] else "MISSES"
        ok_t = "meets" if f["track_s"] <= TARGETS["track"] else "MISSES"
        print(
            f"{f['servers']:>8,} {f['diff_s']:>8.2f} {ok_d:>7} {f['compare_s']:>10.2f} "
            f"{f['track_s']:>8.2f} {ok_t:>7} {f['track_record_s']:>10.2f}"
        )


if __name__ == "__main__":
    main()
