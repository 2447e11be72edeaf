"""Benchmark: forecast throughput of the fleet model vs Prophet vs seasonal naive.

    .venv/bin/python benchmarks/bench_models.py            # 1,000 servers × 5 metrics × 1,461 days
    .venv/bin/python benchmarks/bench_models.py --quick    # 100 servers, Prophet on 8 series
    .venv/bin/python benchmarks/bench_models.py --servers 10000 --no-prophet   # the 10k fleet

All three models fit and predict (90 days, every quantile) on the same synthetic panel, side by
side in one run: the fleet model and the seasonal naive on every series (best of --repeat runs:
the machine is shared), Prophet on a random sample (reported per series, after a warm-up that
starts its process pool). Also times the
fleet model's rolling-origin backtest (3 cut-offs), which the batch job runs too.
Targets: fleet ≥ 300× Prophet's series per second; fleet fit+predict of 5,000 series ≲ 3 s and
its backtest ≲ 8 s (a 20 s budget for the whole `run` of 1,000 servers).
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np

from forecasting.backtest import backtest
from forecasting.models import FleetModel, SeasonalNaiveModel, get_model
from forecasting.panel import Panel, build_panel
from forecasting.synthetic import generate_fleet

START = "2021-01-01"
HORIZON = 90
RATIO_TARGET = 300.0


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def best_of(fn: Callable[[], Any], repeat: int) -> tuple[Any, float, float]:
    """The fastest of `repeat` runs (wall), with its CPU time: the machine is shared, and
    other processes only ever add time."""
    runs = [timed(fn) for _ in range(repeat)]
    out = runs[-1][0]
    _, wall, cpu = min(runs, key=lambda r: r[1])
    if repeat > 1:
        walls = sorted(r[1] for r in runs)
        print(f"    (best of {repeat}; all runs: {', '.join(f'{w:.2f}' for w in walls)} s)")
    return out, wall, cpu


def fit_predict(model: Any, panel: Panel) -> Any:
    return model.fit(panel).predict(HORIZON)


def row(name: str, n: int, wall: float, cpu: float) -> float:
    rate = n / wall
    print(
        f"  {name:<16} {n:>7,} series  {wall:8.2f} s wall  {cpu:8.2f} s cpu  {rate:12,.1f} series/s  "
        f"{1e3 * wall / n:9.3f} ms/series"
    )
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="100 servers, Prophet on 8 series")
    ap.add_argument("--servers", type=int, default=None, help="servers in the synthetic fleet")
    ap.add_argument("--prophet-sample", type=int, default=None, help="series Prophet forecasts")
    ap.add_argument("--no-prophet", action="store_true", help="skip Prophet (large fleets)")
    ap.add_argument("--no-backtest", action="store_true", help="skip the fleet backtest timing")
    ap.add_argument("--repeat", type=int, default=3, help="runs per timing (the best is reported)")
    args = ap.parse_args()
    servers = args.servers or (100 if args.quick else 1000)
    sample = args.prophet_sample or (8 if args.quick else 40)

    metrics, wall, _ = timed(lambda: generate_fleet(servers, days=1461, start=START, seed=42).metrics)
    panel, pwall, _ = timed(lambda: build_panel(metrics, "daily"))
    metrics = None  # the panel holds what the models need
    print(
        f"panel: {panel.n_series:,} series × {panel.length:,} days "
        f"(generated in {wall:.1f} s, panel built in {pwall:.1f} s); horizon {HORIZON} days"
    )
    print(f"models fit + predict (point + {9} quantiles):")

    FleetModel().fit(panel.subset(np.arange(min(50, panel.n_series)))).predict(HORIZON)  # warm caches
    result, f_wall, f_cpu = best_of(lambda: fit_predict(FleetModel(), panel), args.repeat)
    fleet_rate = row("fleet", panel.n_series, f_wall, f_cpu)
    fallbacks = int((result.model != "fleet").sum())
    del result
    _, n_wall, n_cpu = best_of(lambda: fit_predict(SeasonalNaiveModel(), panel), args.repeat)
    naive_rate = row("seasonal naive", panel.n_series, n_wall, n_cpu)

    prophet_rate = None
    if not args.no_prophet:
        rng = np.random.default_rng(7)
        rows = np.sort(rng.choice(panel.n_series, min(sample, panel.n_series), replace=False))
        sub = panel.subset(rows)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit_predict(get_model("prophet"), panel.subset(rows[:2]))  # warm-up: pool + Stan
            _, p_wall, p_cpu = timed(lambda: fit_predict(get_model("prophet"), sub))
        prophet_rate = row("prophet (sample)", len(rows), p_wall, p_cpu)

    print("ratios (series per second):")
    print(f"  fleet / seasonal naive = {fleet_rate / naive_rate:8.2f}×")
    if prophet_rate:
        ratio = fleet_rate / prophet_rate
        verdict = "meets" if ratio >= RATIO_TARGET else "MISSES"
        print(f"  fleet / prophet        = {ratio:8.1f}×  ({verdict} the ≥ {RATIO_TARGET:.0f}× target)")
    print(f"  fleet fell back to seasonal naive on {fallbacks} series")

    if not args.no_backtest:
        _, b_wall, b_cpu = best_of(
            lambda: backtest(panel, ["fleet"], HORIZON, n_cutoffs=3), min(args.repeat, 2)
        )
        _, nb_wall, nb_cpu = best_of(
            lambda: backtest(panel, ["naive"], HORIZON, n_cutoffs=3), min(args.repeat, 2)
        )
        print("rolling-origin backtest, 3 cut-offs × 90 days:")
        print(f"  fleet  {b_wall:8.2f} s wall  {b_cpu:8.2f} s cpu")
        print(
            f"  naive  {nb_wall:8.2f} s wall  {nb_cpu:8.2f} s cpu   (fleet / naive time = {b_wall / nb_wall:.1f}×)"
        )
    print(f"peak memory: {peak_rss_mb():,.0f} MB")


if __name__ == "__main__":
    main()
