"""Scale-out: the one-process run vs the same run in local shards vs the Dask engine.

One generated fleet (5 metrics × 4 years daily), three runs of the same input, each in a fresh
child process: ``one-process`` (``run_batch``: the whole fleet in one panel), ``local-shards``
(plan → calibrate → every shard in turn → publish, in one process) and ``dask`` (the same shard
functions on a LocalCluster of 2 worker processes × 1 thread). Figures: wall time, peak RSS of
the driver and of each Dask worker (as the shards and the Calibrate step report it), and whether
the three published the same plan (tests/same_plan.py's rule: non-float columns identical,
floats within 1e-6 relative), with ratios against the one-process run side by side.

    python benchmarks/bench_scale.py            # 1,000 and 10,000 servers
    python benchmarks/bench_scale.py --quick    # 1,000 servers only
    python benchmarks/bench_scale.py --prophet 200   # Prophet through the Dask engine: series/min/core

Prophet fits one series at a time (Stan): 10,000 servers are 50,000 fits, hours on 2 cores.
``--prophet N`` runs N servers through the Dask engine and extrapolates, from the measured
rate, the wall time of 10,000 servers on this machine and per added core.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MODES = ("one-process", "local-shards", "dask")

CHILD = r"""
import json, resource, sys, time
from forecasting.settings import load_settings
from forecasting.sources import open_store
mode, data, shard_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
extra = json.loads(sys.argv[4]) if len(sys.argv) > 4 else {}
settings = load_settings(data=data, shard_size=shard_size, **extra)
store = open_store(data)
t0 = time.perf_counter()
if mode == "one-process":
    from forecasting.batch import run_batch
    manifest = run_batch(store, settings, progress=False)
elif mode == "local-shards":
    from forecasting.shards import run_sharded
    manifest = run_sharded(store, settings)
else:
    from forecasting.engine import run_dask
    manifest = run_dask(store, settings)
wall = time.perf_counter() - t0
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps({"wall": wall, "driver_rss_mb": rss, "run_id": manifest["run_id"],
                              "engine": manifest.get("engine", {})}))
"""


def child(args: list[str]) -> str:
    out = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT), "CAPFC_LOG_LEVEL": "WARNING"},
    )
    if out.returncode != 0:
        sys.exit(f"`{' '.join(args[:4])}` failed ({out.returncode}): {out.stderr[-3000:]}")
    return out.stdout


def same_plan(data: Path, a: str, b: str) -> dict:
    """Share of identical rows per table, the largest float gap, and whether the plan holds."""
    sys.path.insert(0, str(ROOT))
    import pandas as pd

    from forecasting.sources import open_store
    from tests.same_plan import PLAN_TABLES, assert_same_plan

    store = open_store(str(data))
    out: dict = {}
    for name, keys in PLAN_TABLES.items():
        ta, tb = store.read_run_table(a, name), store.read_run_table(b, name)
        keys = [k for k in keys if k in ta.columns]
        ta = ta.sort_values(keys, kind="stable").reset_index(drop=True)
        tb = tb.sort_values(keys, kind="stable").reset_index(drop=True)
        if len(ta) != len(tb):
            out[name] = {"rows": (len(ta), len(tb))}
            continue
        floats = [c for c in ta.columns if pd.api.types.is_float_dtype(ta[c])]
        eq = (ta.eq(tb) | (ta.isna() & tb.isna())).all(axis=1)
        gap = (
            ((ta[floats] - tb[floats]).abs() / tb[floats].abs().clip(lower=1e-9)).max().max()
            if floats
            else 0.0
        )
        out[name] = {"identical_rows": float(eq.mean()), "max_rel_gap": float(gap if gap == gap else 0.0)}
    ra = store.read_run_table(a, "recommendations").set_index("server_id").sort_index()
    rb = store.read_run_table(b, "recommendations").set_index("server_id").sort_index()
    out["same_actions"] = float((ra["action"] == rb["action"]).mean())
    try:
        assert_same_plan(store, a, b)
        out["same_plan"] = True
    except AssertionError as e:
        out["same_plan"] = False
        out["why"] = str(e)[:300]
    return out


def measure(servers: int, days: int, modes: tuple[str, ...] = MODES, shard_size: int | None = None,
            data_dir: str | None = None) -> dict:  # fmt: skip
    shard_size = shard_size or max(1, servers // 4)
    with tempfile.TemporaryDirectory(prefix="capfc-scale-") as tmp:
        data = Path(data_dir or Path(tmp) / "data")
        t0 = time.perf_counter()
        if not (data / "store.json").exists():  # --data: reuse a generated fleet
            child(["-m", "forecasting", "--data", str(data), "generate", "--servers", str(servers),
                   "--days", str(days), "--seed", "7"])  # fmt: skip
        gen = time.perf_counter() - t0
        runs = {}
        for mode in modes:
            out = child(["-c", CHILD, mode, str(data), str(shard_size)])
            line = next(x for x in out.splitlines() if x.startswith("RESULT "))
            runs[mode] = json.loads(line[len("RESULT ") :])
            print(f"  {servers:,} servers, {mode}: {runs[mode]['wall']:.1f} s", flush=True)
        base = runs[modes[0]]["run_id"]
        checks = {m: same_plan(data, base, runs[m]["run_id"]) for m in modes[1:]}
    return {"servers": servers, "days": days, "shard_size": shard_size, "generate_s": gen, "runs": runs,
            "checks": checks}  # fmt: skip


def report(r: dict) -> None:
    runs = r["runs"]
    base = next(iter(runs.values()))
    print(f"\n{r['servers']:,} servers × 5 metrics × {r['days']} days; shards of {r['shard_size']:,} servers "
          f"(generate {r['generate_s']:.0f} s); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")  # fmt: skip
    print(
        f"{'':>14} {'wall s':>8} {'× one':>6} {'driver MB':>10} {'× one':>6} {'workers/shards peak MB':>34}  same plan"
    )
    for mode, x in runs.items():
        eng = x.get("engine") or {}
        peaks = [p for p in eng.get("shard_peak_rss_mb") or [] if p]
        cal, pub = eng.get("calibrate_peak_rss_mb"), eng.get("publish_peak_rss_mb")
        work = f"{max(peaks):,.0f} (calib {cal:,.0f}, publish {pub or 0:,.0f})" if peaks and cal else "—"
        chk = r["checks"].get(mode)
        same = "reference" if chk is None else (
            f"{'yes' if chk['same_plan'] else 'NO'} (actions {100 * chk['same_actions']:.1f} %, "
            f"forecast rows identical {100 * chk['forecasts'].get('identical_rows', 0):.3f} %, "
            f"max gap {chk['forecasts'].get('max_rel_gap', 0):.1e})"
        )  # fmt: skip
        print(f"{mode:>14} {x['wall']:>8.1f} {x['wall'] / base['wall']:>6.2f} {x['driver_rss_mb']:>10,.0f} "
              f"{x['driver_rss_mb'] / base['driver_rss_mb']:>6.2f} {work:>34}  {same}")  # fmt: skip
    for mode, chk in r["checks"].items():
        if not chk["same_plan"]:
            print(f"  {mode}: {chk.get('why')}")


def prophet(servers: int, days: int) -> None:
    """Prophet on the Dask engine (2 workers × 1 thread): series per minute per core."""
    with tempfile.TemporaryDirectory(prefix="capfc-prophet-") as tmp:
        data = Path(tmp) / "data"
        child(["-m", "forecasting", "--data", str(data), "generate", "--servers", str(servers),
               "--days", str(days), "--seed", "7"])  # fmt: skip
        extra = json.dumps({"model": "prophet", "backtest_cutoffs": 0})
        out = child(["-c", CHILD, "dask", str(data), str(max(1, servers // 4)), extra])
    r = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[len("RESULT ") :])
    series, cores = servers * 5, 2
    per_min_core = series / (r["wall"] / 60) / cores
    print(
        f"Prophet on the Dask engine: {servers:,} servers ({series:,} series, {days} days), 2 workers × 1 thread"
    )
    print(f"  wall {r['wall']:.1f} s → {per_min_core:,.1f} series per minute per core "
          f"(load average {os.getloadavg()[0]:.1f})")  # fmt: skip
    est = 50_000 / (per_min_core * cores)
    print(f"  10,000 servers (50,000 series): ≈ {est:,.0f} min on these 2 cores; "
          f"≈ {50_000 / (per_min_core * 64):,.0f} min on a 64-core Dask cluster")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="1,000 servers only")
    ap.add_argument("--days", type=int, default=1461)
    ap.add_argument("--json", help="also write the figures to this file")
    ap.add_argument("--prophet", type=int, metavar="N", help="only: Prophet on the Dask engine for N servers")
    ap.add_argument("--servers", type=int, nargs="+", help="fleet sizes (default 1,000 and 10,000)")
    ap.add_argument(
        "--modes", nargs="+", choices=MODES, default=list(MODES), help="runs to compare (first = base)"
    )
    ap.add_argument("--shard-size", type=int, help="servers per shard (default a quarter of the fleet)")
    ap.add_argument("--data", help="a generated store to run on (one fleet size; generated there if empty)")
    args = ap.parse_args()
    if args.prophet:
        prophet(args.prophet, args.days)
        return
    results = []
    sizes = args.servers or ((1000,) if args.quick else (1000, 10000))
    for servers in sizes:
        r = measure(servers, args.days, tuple(args.modes), args.shard_size, args.data)
        report(r)
        results.append(r)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
