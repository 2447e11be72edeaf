"""Benchmark: `python -m forecasting ingest` streamed block by block, against the in-memory path.

    .venv/bin/python benchmarks/bench_ingest.py                        # 10,000 servers × 365 days
    .venv/bin/python benchmarks/bench_ingest.py --servers 2000 --days 90 --format csv
    .venv/bin/python benchmarks/bench_ingest.py --servers 100000 --days 90 --no-in-memory
    .venv/bin/python benchmarks/bench_ingest.py --block-rows 1000000 250000   # block sizes (default)

The input is a generated fleet (`synthetic.fleet_blocks`) exported as raw samples in the long
format (server_id, timestamp, metric, value; one row per server, metric and day), one file per
generator block (`synthetic.BLOCK_SERVERS` servers), Parquet (default) or CSV. Each ingest runs in a fresh process
into an empty store; its wall time, CPU time and peak RSS (the child's own rusage) are printed
side by side: the in-memory path (`forecasting.ingest.ingest` reading every file into one frame,
then `write_metrics(mode="merge")`, what `ingest` did before streaming) and the streamed CLI
(`ingest_to_store`) at each block size. The stores are checked to hold the same number of rows.
The machine is shared: CPU seconds are the steadier figure.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow.dataset as ds  # noqa: E402

from forecasting.schema import METRIC_COLUMNS  # noqa: E402
from forecasting.synthetic import fleet_blocks  # noqa: E402

START = "2024-01-01"

IN_MEMORY = """
import sys
from pathlib import Path
from forecasting.ingest import ingest
from forecasting.sources import open_store
store = open_store(sys.argv[1])
result = ingest([Path(p) for p in sys.argv[2:]])
store.write_inventory(result.inventory)
store.write_metrics(result.metrics, result.inventory, freq="daily", mode="merge")
"""

STREAMED = """
import sys
import forecasting.ingest
from forecasting.cli import main
forecasting.ingest.BLOCK_ROWS = int(sys.argv[1])
sys.exit(main(["--data", sys.argv[2], "ingest", *sys.argv[3:]]))
"""


def export_input(n: int, days: int, fmt: str, out: Path) -> tuple[list[Path], int, float]:
    """The generated fleet as long raw-sample files, one per generator block."""
    t0 = time.perf_counter()
    paths, rows = [], 0
    for k, fleet in enumerate(fleet_blocks(n, days=days, start=START, seed=42)):
        m = fleet.metrics
        cols = [c for c in METRIC_COLUMNS if c in m.columns]
        long = m.melt(id_vars=["server_id", "timestamp"], value_vars=cols, var_name="metric").dropna()
        rows += len(long)
        path = out / f"samples-{k:04d}.{'parquet' if fmt == 'parquet' else 'csv'}"
        if fmt == "parquet":
            long.to_parquet(path, index=False)
        else:
            long.assign(timestamp=long["timestamp"].dt.strftime("%Y-%m-%dT%H:%M:%SZ")).to_csv(
                path, index=False
            )
        paths.append(path)
        del fleet, m, long
    return paths, rows, time.perf_counter() - t0


def run_child(code: str, args: list[str]) -> tuple[float, float, float, int]:
    """(wall s, CPU s, peak RSS MB, exit code) of one fresh Python process."""
    env = {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": str(ROOT),
        "CAPFC_LOG_FORMAT": "text",
        "CAPFC_LOG_LEVEL": "WARNING",
    }
    t0 = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", code, *args], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    err = child.stderr.read().decode(errors="replace")
    out = child.stdout.read().decode(errors="replace")
    if child.returncode not in (0, 3):
        raise SystemExit(f"child failed ({child.returncode}):\n{out[-2000:]}\n{err[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, child.returncode


def stored_rows(data: Path) -> int:
    return ds.dataset(data / "metrics", format="parquet", partitioning="hive").count_rows()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=10_000)
    ap.add_argument("--days", type=int, default=365)
    ap.add_argument("--format", choices=["parquet", "csv"], default="parquet")
    ap.add_argument("--block-rows", type=int, nargs="+", default=[1_000_000, 250_000])
    ap.add_argument("--no-in-memory", action="store_true", help="skip the in-memory path (large fleets)")
    args = ap.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as tmp:
        work = Path(tmp)
        (work / "in").mkdir()
        paths, rows, secs = export_input(args.servers, args.days, args.format, work / "in")
        size = sum(p.stat().st_size for p in paths) / 1e6
        print(
            f"input: {args.servers:,} servers × {args.days} days × {len(METRIC_COLUMNS)} metrics = {rows:,} samples "
            f"in {len(paths)} {args.format} files ({size:,.0f} MB), exported in {secs:.0f} s"
        )
        results = []
        if not args.no_in_memory:
            data = work / "in-memory"
            wall, cpu, rss, _ = run_child(IN_MEMORY, [str(data), *map(str, paths)])
            results.append(("in-memory ingest + merge", wall, cpu, rss, stored_rows(data)))
            print(
                f"  {results[-1][0]:<34} {wall:7.1f} s wall {cpu:7.1f} s CPU  {rows / wall / 1e6:5.2f} M samples/s  peak RSS {rss:7,.0f} MB"
            )
        for block in args.block_rows:
            data = work / f"streamed-{block}"
            wall, cpu, rss, _ = run_child(STREAMED, [str(block), str(data), *map(str, paths)])
            results.append((f"streamed, blocks of {block:,} samples", wall, cpu, rss, stored_rows(data)))
            print(
                f"  {results[-1][0]:<34} {wall:7.1f} s wall {cpu:7.1f} s CPU  {rows / wall / 1e6:5.2f} M samples/s  peak RSS {rss:7,.0f} MB"
            )
        stored = {r[4] for r in results}
        assert len(stored) == 1, f"the stores differ in rows: {[(r[0], r[4]) for r in results]}"
        print(f"  every store holds the same {stored.pop():,} daily rows")
        if not args.no_in_memory:
            base = results[0]
            for name, wall, cpu, rss, _ in results[1:]:
                print(
                    f"ratio  {name}: {wall / base[1]:.2f}× the in-memory wall time, {cpu / base[2]:.2f}× its CPU, "
                    f"{rss / base[3]:.2f}× its peak RSS"
                )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
