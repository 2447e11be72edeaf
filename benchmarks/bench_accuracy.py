"""Benchmark: forecast accuracy of the fleet model vs Prophet vs seasonal naive, by backtest.

    .venv/bin/python benchmarks/bench_accuracy.py            # 200 servers (1,000 series) + NAB
    .venv/bin/python benchmarks/bench_accuracy.py --quick    # 40 servers, Prophet on 10 series

Two data sets, every model scored by the same rolling-origin backtest in the same run:
(a) a synthetic fleet (4 years daily), 90-day horizon, 3 cut-offs 90 days apart: the fleet model
    and the seasonal naive on every series, Prophet on a random sample (all three are compared
    on that sample; fleet and naive also on the whole fleet);
(b) the real AWS CloudWatch series of NAB (5-minute samples, ~14 days each) rolled up to hourly
    p95 by forecasting.ingest, 24-hour horizon, 5 rolling origins one day apart. Series that
    share a time span share a panel (a fleet); each span is its own panel.
Scores (forecasting.metrics_eval): mean MASE (seasonal-naive scale: 7 days / 24 hours), mean
sMAPE (%), mean MAE, and the share of actuals inside the 80 % and 95 % bands.
Targets: fleet MASE ≤ Prophet's on the synthetic fleet and ≤ 0.9 × seasonal naive's on NAB;
80 % band coverage within 75–85 % on both.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from forecasting.backtest import backtest, summarize
from forecasting.ingest import ingest
from forecasting.models import FleetModel, SeasonalNaiveModel, get_model
from forecasting.panel import build_panel
from forecasting.synthetic import generate_fleet

ROOT = Path(__file__).resolve().parents[1]
NAB_DIRS = [Path("/work/shared/data/nab/realAWSCloudwatch"), ROOT / "tests/data/nab/realAWSCloudwatch"]
START = "2021-01-01"
COLUMNS = ["mase", "smape", "mae", "coverage_80", "coverage_95", "series"]


def models(with_prophet: bool) -> dict:
    out = {"fleet": FleetModel, "naive": SeasonalNaiveModel}
    if with_prophet:
        out["prophet"] = lambda: get_model("prophet")
    return out


def show(title: str, frame: pd.DataFrame, order: list[str]) -> pd.DataFrame:
    table = summarize(frame).reindex([m for m in order if m in set(frame["model"])])[COLUMNS]
    print(title)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 120):
        print("  " + table.to_string().replace("\n", "\n  "))
    return table


def ratio(table: pd.DataFrame, a: str, b: str, limit: float | None = None) -> None:
    r = table.loc[a, "mase"] / table.loc[b, "mase"]
    verdict = ""
    if limit is not None:
        verdict = f"  ({'meets' if r <= limit else 'MISSES'} ≤ {limit:.2f})"
    print(f"  MASE {a} / {b} = {r:.3f}{verdict}")


def coverage(table: pd.DataFrame, name: str) -> None:
    c = table.loc[name, "coverage_80"]
    verdict = "meets" if 0.75 <= c <= 0.85 else "MISSES"
    print(f"  80 % band coverage of {name} = {c:.1%} ({verdict} 75–85 %)")


def synthetic(servers: int, sample: int, with_prophet: bool) -> None:
    fleet = generate_fleet(servers, days=1461, start=START, seed=42)
    panel = build_panel(fleet.metrics, "daily")
    print(f"(a) synthetic fleet: {panel.n_series:,} series × {panel.length:,} days, horizon 90, 3 cut-offs")
    t = time.perf_counter()
    full = backtest(panel, models(False), horizon=90, n_cutoffs=3)
    print(f"  fleet + naive backtest of every series: {time.perf_counter() - t:.1f} s")
    whole = show("  every series:", full, ["fleet", "naive"])
    ratio(whole, "fleet", "naive")
    coverage(whole, "fleet")
    if not with_prophet:
        return
    rows = np.sort(
        np.random.default_rng(7).choice(panel.n_series, min(sample, panel.n_series), replace=False)
    )
    sub = panel.subset(rows)
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prophet = backtest(sub, {"prophet": lambda: get_model("prophet")}, horizon=90, n_cutoffs=3)
    print(f"  Prophet backtest of {len(rows)} sampled series: {time.perf_counter() - t:.1f} s")
    keys = pd.MultiIndex.from_frame(sub.keys[["server_id", "metric"]])
    on_sample = full[pd.MultiIndex.from_frame(full[["server_id", "metric"]]).isin(keys)]
    both = pd.concat([on_sample, prophet], ignore_index=True)
    table = show(
        f"  the {len(rows)} sampled series (fleet and naive fitted on the whole fleet):",
        both,
        ["fleet", "prophet", "naive"],
    )
    ratio(table, "fleet", "prophet", 1.0)
    ratio(table, "prophet", "naive")
    coverage(table, "prophet")
    per_metric = both.pivot_table(index="metric", columns="model", values="mase", aggfunc="mean")
    with pd.option_context("display.float_format", "{:.3f}".format):
        print("  mean MASE by metric on the sample:\n  " + per_metric.to_string().replace("\n", "\n  "))


def nab(with_prophet: bool) -> None:
    folder = next((d for d in NAB_DIRS if d.is_dir()), None)
    if folder is None:
        print("(b) NAB: no data found in " + " or ".join(map(str, NAB_DIRS)))
        return
    frames = []
    for f in sorted(folder.glob("*.csv")):
        # disk-write bytes are a throughput, not a share of a disk: ingest it as a rate metric
        kw = {"metric": "net_out_p95"} if "disk_write" in f.name else {}
        frames.append(ingest(f, freq="hourly", **kw).metrics)
    metrics = pd.concat(frames, ignore_index=True)
    spans = metrics.groupby("server_id")["timestamp"].agg(["min", "max"])
    results = []
    t = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for _, group in spans.groupby(["min", "max"]):
            panel = build_panel(metrics[metrics["server_id"].isin(group.index)], "hourly")
            results.append(backtest(panel, models(with_prophet), horizon=24, n_cutoffs=5, step=24))
    frame = pd.concat(results, ignore_index=True)
    print(
        f"(b) NAB realAWSCloudwatch ({folder}): {frame['server_id'].nunique()} series, hourly p95, "
        f"horizon 24 h, 5 origins a day apart, {len(spans.groupby(['min', 'max']))} spans "
        f"({time.perf_counter() - t:.1f} s)"
    )
    table = show("  every series:", frame, ["fleet", "prophet", "naive"])
    ratio(table, "fleet", "naive", 0.9)
    if with_prophet:
        ratio(table, "fleet", "prophet")
        ratio(table, "prophet", "naive")
    coverage(table, "fleet")
    per_series = frame.pivot_table(index="server_id", columns="model", values=["mase", "coverage_80"])
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 140):
        print("  per series:\n  " + per_series.to_string().replace("\n", "\n  "))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="40 servers, Prophet on 10 series")
    ap.add_argument("--servers", type=int, default=None, help="servers in the synthetic fleet")
    ap.add_argument("--prophet-sample", type=int, default=None, help="synthetic series Prophet forecasts")
    ap.add_argument("--no-prophet", action="store_true", help="fleet and naive only")
    args = ap.parse_args()
    servers = args.servers or (40 if args.quick else 200)
    sample = args.prophet_sample or (10 if args.quick else 60)
    synthetic(servers, sample, not args.no_prophet)
    nab(not args.no_prophet)
    from real_data import real_accuracy  # benchmarks/ is on sys.path when a bench runs

    table = real_accuracy(["fleet", "naive", "profile", "gbm", "ensemble"], quick=args.quick)
    print("(c) real data (benchmarks/real_data.py): MASE ratio to the 24 h seasonal naive")
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 140):
        print("  " + table.to_string(index=False).replace("\n", "\n  "))


if __name__ == "__main__":
    main()
