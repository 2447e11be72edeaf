"""End to end: `python -m forecasting run` on a generated fleet — wall time and peak memory.

Each run is a fresh process (so peak RSS is the run's own), on 5 metrics × 4 years daily.
The baseline is the same batch job with the seasonal naive model, measured side by side:
the ratio says what the fleet model, its backtest and calibration cost on top of the
cheapest possible forecast. Targets: 1,000 servers ≤ 20 s; 10,000 servers ≤ 240 s and ≤ 6 GB.

    python benchmarks/bench_run.py            # 1,000 and 10,000 servers
    python benchmarks/bench_run.py --quick    # 1,000 servers only
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
TARGETS = {1000: (20.0, None), 10000: (240.0, 6144.0)}


def sh(args: list[str], data: Path) -> tuple[float, float, str]:
    """Run `python -m forecasting` in a child; wall seconds, that child's peak RSS (MB), stdout."""
    t0 = time.perf_counter()
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        child = subprocess.Popen(
            [sys.executable, "-m", "forecasting", "--data", str(data), *args],
            cwd=ROOT,
            stdout=out,
            stderr=err,
            text=True,
            env={**os.environ, "PYTHONPATH": str(ROOT)},
        )
        _, status, usage = os.wait4(child.pid, 0)
        child.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
        out.seek(0)
        err.seek(0)
        if child.returncode != 0:
            sys.exit(f"`{' '.join(args)}` failed ({child.returncode}): {err.read()[-2000:]}")
        return wall, usage.ru_maxrss / 1024, out.read()


def measure(servers: int, days: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="capfc-bench-") as tmp:
        data = Path(tmp) / "data"
        gen, _, _ = sh(["generate", "--servers", str(servers), "--days", str(days), "--seed", "7"], data)
        fleet, fleet_rss, out = sh(["run", "--model", "fleet"], data)
        naive, naive_rss, _ = sh(["run", "--model", "naive"], data)
        manifest_id = (data / "runs" / "LATEST").read_text().strip()
        manifest = json.loads((data / "runs" / manifest_id / "manifest.json").read_text())
    stages = next((line.strip() for line in out.splitlines() if line.strip().startswith("time:")), "")
    return {
        "servers": servers,
        "generate_s": gen,
        "fleet_s": fleet,
        "fleet_rss_mb": fleet_rss,
        "naive_s": naive,
        "naive_rss_mb": naive_rss,
        "series": manifest["input"]["series"],
        "stages": stages,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="1,000 servers only")
    p.add_argument("--days", type=int, default=1461)
    args = p.parse_args()
    sizes = [1000] if args.quick else [1000, 10000]
    print(f"End-to-end batch run, 5 metrics × {args.days} days daily, with a 3-cut-off backtest")
    print(
        f"{'servers':>8} {'series':>7} {'fleet run':>10} {'peak RSS':>9} {'naive run':>10} {'ratio':>6}  target"
    )
    for n in sizes:
        r = measure(n, args.days)
        wall_t, mem_t = TARGETS[n]
        ok = r["fleet_s"] <= wall_t and (mem_t is None or r["fleet_rss_mb"] <= mem_t)
        target = f"≤ {wall_t:.0f} s" + (f", ≤ {mem_t / 1024:.0f} GB" if mem_t else "")
        print(
            f"{n:>8,} {r['series']:>7,} {r['fleet_s']:>9.1f}s {r['fleet_rss_mb']:>7.0f}MB "
            f"{r['naive_s']:>9.1f}s {r['fleet_s'] / r['naive_s']:>5.2f}×  {target}: {'met' if ok else 'MISSED'}"
        )
        print(f"{'':>8} fleet stages: {r['stages'].removeprefix('time: ')}")


if __name__ == "__main__":
    main()
