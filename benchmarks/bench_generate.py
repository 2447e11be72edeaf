"""Benchmark: generate a synthetic fleet, validate it and write it to a Parquet store.

    .venv/bin/python benchmarks/bench_generate.py            # 10,000 servers × 1,461 days daily
    .venv/bin/python benchmarks/bench_generate.py --quick    # 1,000 servers
    .venv/bin/python benchmarks/bench_generate.py --profile  # + where validate/write spend time
    .venv/bin/python benchmarks/bench_generate.py --stream 10000 20000 100000
                              # `generate` streamed block by block: wall and peak memory per fleet size

Prints rows, seconds (wall and CPU: the machine is shared), rows/s and peak memory for each
step, then a ratio against a baseline measured side by side in the same run: a naive
per-server, per-day Python loop generating the same shape for a sample of servers,
extrapolated per server. Target: generate + validate + write of 10k × 4 years < 30 s.
"""

from __future__ import annotations

import argparse
import cProfile
import datetime as dt
import io
import math
import pstats
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import holidays
import pandas as pd

from forecasting import schema
from forecasting.sources import open_store
from forecasting.synthetic import (
    BUSINESS_UNITS,
    ENVIRONMENT_MIX,
    REGIONS,
    SERVER_TYPES,
    generate_fleet,
    monthly_list_price,
)

START = "2022-01-01"
TARGET_SECONDS = 30.0


def peak_rss_mb() -> float:
    """Peak resident memory of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def timed(fn: Callable[[], Any]) -> tuple[Any, float, float]:
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - wall, time.process_time() - cpu


def line(step: str, rows: int, wall: float, cpu: float, extra: str = "") -> None:
    rate = rows / wall / 1e6 if wall else float("inf")
    print(
        f"{step:<9} {rows:>12,} rows  {wall:7.2f} s wall  {cpu:7.2f} s CPU  {rate:6.2f} M rows/s"
        f"  peak RSS {peak_rss_mb():7,.0f} MB{extra}"
    )


# --------------------------------------------------------------------------- naive baseline


def naive_fleet(n: int, days: int, start: str, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The obvious implementation: one server at a time, one day at a time, in Python.

    Same model ingredients (weekly pattern, public holidays, month/quarter-end, yearly
    season, growth, AR(1) noise, disk growth with clean-ups, network following CPU) and the
    same output shape, so its time per server is a fair yardstick for the vectorised one.
    """
    rng = random.Random(seed)
    first = pd.Timestamp(start).date()
    dates = [first + dt.timedelta(days=d) for d in range(days)]
    years = range(first.year, dates[-1].year + 1)
    hol = {r.name: holidays.country_holidays(r.country, subdiv=r.subdiv, years=years) for r in REGIONS}
    weekly = [1.0, 1.03, 1.02, 1.0, 0.95, 0.45, 0.40]
    inv_rows, rows = [], []
    for i in range(n):
        stype = rng.choices(SERVER_TYPES, weights=[t.weight for t in SERVER_TYPES])[0]
        region = rng.choices(REGIONS, weights=[r.weight for r in REGIONS])[0]
        env = rng.choices(list(ENVIRONMENT_MIX), weights=list(ENVIRONMENT_MIX.values()))[0]
        cores, mem_gb, disk_gb = rng.choices(stype.sizes, weights=stype.size_p)[0]
        sid = f"srv-{i:05d}"
        inv_rows.append(
            {
                "server_id": sid,
                "hostname": f"{region.site}-{stype.name}-{i:04d}",
                "business_unit": rng.choice(list(BUSINESS_UNITS)),
                "region": region.name,
                "environment": env,
                "criticality": "medium",
                "server_type": stype.name,
                "cpu_cores": cores,
                "memory_gb": mem_gb,
                "disk_gb": disk_gb,
                "monthly_cost_usd": float(
                    monthly_list_price([cores], [mem_gb], [disk_gb], [stype.name], [env])[0]
                ),
            }
        )
        cpu_base = rng.uniform(*stype.cpu)
        mem = rng.uniform(*stype.mem)
        disk = rng.uniform(*stype.disk)
        growth = rng.gauss(1.5, 2.0) / 365.25
        disk_rate = rng.uniform(*stype.disk_growth) / 365.25
        net_k = rng.uniform(*stype.net_out) / cpu_base
        purge_every = rng.uniform(20, 120)
        e_cpu = e_mem = e_net = 0.0
        logs = 0.0
        for d, day in enumerate(dates):
            wd = day.weekday()
            factor = 0.45 if day in hol[region.name] else weekly[wd]
            nxt = day + dt.timedelta(days=1)
            while nxt.weekday() >= 5:
                nxt += dt.timedelta(days=1)
            if nxt.month != day.month and wd < 5:  # last business day of the month
                factor *= 1.3 if day.month in (3, 6, 9, 12) else 1.15
            doy = day.timetuple().tm_yday
            factor *= 1.0 + 0.1 * math.exp(-0.5 * (min(abs(doy - 350), 365 - abs(doy - 350)) / 12) ** 2)
            e_cpu = 0.6 * e_cpu + 0.8 * rng.gauss(0, 0.06)
            e_mem = 0.97 * e_mem + 0.24 * rng.gauss(0, 0.02)
            e_net = 0.5 * e_net + 0.87 * rng.gauss(0, 0.07)
            cpu = min(100.0, max(0.0, (cpu_base + growth * d) * factor * (1 + e_cpu)))
            mem = min(100.0, max(0.0, mem + 0.004 + e_mem * 0.1))
            disk = min(100.0, disk + disk_rate * rng.uniform(0, 2))
            logs = 0.0 if rng.random() < 1 / purge_every else logs + 0.05
            net_out = max(0.0, net_k * cpu * (1 + e_net))
            rows.append((sid, day, cpu, mem, min(100.0, disk + logs), net_out * stype.net_in_ratio, net_out))
    metrics = pd.DataFrame(rows, columns=["server_id", "timestamp", *schema.METRIC_COLUMNS])
    metrics["timestamp"] = pd.to_datetime(metrics["timestamp"]).dt.tz_localize("UTC")
    return pd.DataFrame(inv_rows), metrics


# --------------------------------------------------------------------------- run


def profile(fn: Callable[[], Any], top: int) -> str:
    prof = cProfile.Profile()
    prof.runcall(fn)
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("cumulative").print_stats(top)
    return out.getvalue()


def bench_pipeline(n: int, days: int, with_profile: bool) -> tuple[float, float]:
    """Generate, validate and write one fleet; returns the generation wall and CPU time."""
    print(f"synthetic fleet: {n:,} servers × {days:,} days daily, start {START}")
    fleet, g_wall, g_cpu = timed(lambda: generate_fleet(n, days=days, start=START, seed=42))
    rows = len(fleet.metrics)
    line("generate", rows, g_wall, g_cpu)

    validated, v_wall, v_cpu = timed(lambda: schema.validate(fleet.inventory, fleet.metrics, "daily"))
    rules = sorted({f.rule for f in validated.report.findings})
    line("validate", rows, v_wall, v_cpu, f"  findings: {', '.join(rules) or 'none'}")

    with tempfile.TemporaryDirectory(prefix="capfc-bench-") as tmp:
        store = open_store(tmp)

        def write() -> None:
            store.write_inventory(validated.inventory)
            store.write_metrics(validated.metrics, validated.inventory, freq="daily")

        _, w_wall, w_cpu = timed(write)
        size = sum(p.stat().st_size for p in Path(tmp).rglob("*.parquet"))
        line("write", rows, w_wall, w_cpu, f"  {size / 1e6:,.0f} MB Parquet")
        if with_profile:
            print("\n--- profile: validate ---")
            print(profile(lambda: schema.validate(fleet.inventory, fleet.metrics, "daily"), 14))
            print("--- profile: write_metrics ---")
            print(
                profile(lambda: store.write_metrics(validated.metrics, validated.inventory, freq="daily"), 14)
            )

    total, total_cpu = g_wall + v_wall + w_wall, g_cpu + v_cpu + w_cpu
    verdict = "within" if total < TARGET_SECONDS else "OVER"
    print(
        f"total     generate + validate + write: {total:.2f} s wall, {total_cpu:.2f} s CPU "
        f"({verdict} the {TARGET_SECONDS:.0f} s target)"
    )
    return g_wall, g_cpu


def bench_stream(sizes: list[int], days: int) -> None:
    """`python -m forecasting generate` as a user runs it, one process per fleet size: its wall
    time and peak memory. Streaming holds one block (synthetic.BLOCK_SERVERS) of series at a time,
    so the peak should stay flat as the fleet grows, and the time grow linearly."""
    import subprocess

    from forecasting.synthetic import BLOCK_SERVERS

    code = (
        "import resource, sys; from forecasting.cli import main; rc = main(sys.argv[1:]); "
        "print('PEAK_KB', resource.getrusage(resource.RUSAGE_SELF).ru_maxrss); sys.exit(rc)"
    )
    root = Path(__file__).resolve().parents[1]
    print(f"streamed generate (blocks of {BLOCK_SERVERS:,} servers), {days:,} days daily:")
    per_server = []
    for n in sizes:
        with tempfile.TemporaryDirectory(prefix="bench-stream-") as tmp:
            argv = [
                "--data",
                f"{tmp}/data",
                "generate",
                "--servers",
                str(n),
                "--days",
                str(days),
                "--start",
                START,
            ]
            t = time.perf_counter()
            done = subprocess.run(
                [sys.executable, "-c", code, *argv],
                cwd=root,
                capture_output=True,
                text=True,
                check=True,
                env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(root), "CAPFC_LOG_FORMAT": "text"},
            )
            wall = time.perf_counter() - t
        peak = int(done.stdout.split("PEAK_KB")[-1].split()[0]) / 1024
        per_server.append(wall / n)
        print(
            f"  {n:>9,} servers: {wall:7.1f} s wall, {wall / n * 1e3:.2f} ms/server, peak memory {peak:,.0f} MB"
        )
    if len(sizes) > 1:
        print(f"ratio     time per server, largest vs smallest fleet: {per_server[-1] / per_server[0]:.2f}×")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 servers instead of 10,000")
    ap.add_argument("--servers", type=int, help="fleet size (overrides --quick)")
    ap.add_argument("--days", type=int, default=1461)
    ap.add_argument("--baseline-servers", type=int, default=50, help="servers in the naive sample")
    ap.add_argument("--profile", action="store_true", help="profile validate and write")
    ap.add_argument(
        "--stream", type=int, nargs="+", metavar="N", help="only the streamed CLI generate, per size"
    )
    args = ap.parse_args(argv)
    if args.stream:
        bench_stream(sorted(args.stream), args.days)
        return 0
    n = args.servers or (1_000 if args.quick else 10_000)

    g_wall, g_cpu = bench_pipeline(n, args.days, args.profile)

    hourly, h_wall, h_cpu = timed(lambda: generate_fleet(1_000, days=90, start=START, freq="hourly", seed=42))
    line("hourly", len(hourly.metrics), h_wall, h_cpu, "  (1,000 servers × 90 days)")
    del hourly

    k = args.baseline_servers
    (_, naive), b_wall, b_cpu = timed(lambda: naive_fleet(k, args.days, START, seed=42))
    line("naive", len(naive), b_wall, b_cpu, f"  ({k} servers, per-server Python loop)")
    print(
        f"baseline  naive: {b_wall / k * 1e3:.1f} ms/server → {b_wall / k * n:,.0f} s wall for {n:,} servers "
        f"(extrapolated); vectorised: {g_wall / n * 1e3:.2f} ms/server"
    )
    print(
        f"ratio     vectorised generate is {(b_wall / k) / (g_wall / n):,.0f}× faster than the naive loop "
        f"(wall; {(b_cpu / k) / (g_cpu / n):,.0f}× by CPU time)"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
