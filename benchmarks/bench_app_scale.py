"""The Dash app at 10,000 and 100,000 servers: every page's callbacks (p95 ≤ 1 s), the first
render of every page in headless Chromium (≤ 2.5 s), and the resident memory of each gunicorn
worker (≤ 3 GB), measured against the real ``gunicorn`` serving the app (``gunicorn.conf.py``).

Fixtures (shared with bench_api.py and bench_load.py):

- **10,000 servers**: the real CLI's plan under ``$TMPDIR/capfc-bench-load/fleet-10000``.
- **100,000 servers**: that run's published tables and inventory tiled ten times under new ids
  (bench_api.tiled_fleet), plus its metrics of the last two calendar years tiled the same way
  (:func:`tile_metrics`: every partition file rewritten with ``t<k>-`` ids), so trends, the
  server page's history and what-ifs read a real 100,000-server history. Rows are real
  analytics output, repeated: the app's cost depends on row counts, not on where they came from.

    .venv/bin/python benchmarks/bench_app_scale.py                # 10,000 and 100,000
    .venv/bin/python benchmarks/bench_app_scale.py --sizes 10000  # one size
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

TARGET_P95_S, TARGET_RENDER_S, TARGET_RSS_GB = 1.0, 2.5, 3.0
METRIC_YEARS = 2  # calendar years of metrics tiled into the 100,000-server fixture


def tile_metrics(source: Path, target: Path, tiles: int = 10, years: int = METRIC_YEARS) -> None:
    """``source``'s metrics partitions of the last ``years`` calendar years, each file rewritten
    ``tiles`` times with ``t<k>-`` server ids into the same partition under ``target`` (streamed
    file by file: bounded memory). Idempotent: a partition already written is kept."""
    src = source / "metrics"
    parts = sorted(src.glob("business_unit=*/year=*"))
    last = max(int(p.name.split("=")[1]) for p in parts)
    done = target / "metrics" / ".tiled"
    if done.exists():
        return
    t0 = time.perf_counter()
    for part in parts:
        if int(part.name.split("=")[1]) <= last - years:
            continue
        out_dir = target / "metrics" / part.parent.name / part.name
        out_dir.mkdir(parents=True, exist_ok=True)
        for f in sorted(part.glob("*.parquet")):
            table = pq.read_table(f)
            for k in range(tiles):
                out = out_dir / f"t{k}-{f.name}"
                if out.exists():
                    continue
                ids = pc.binary_join_element_wise(
                    pa.scalar(f"t{k}-"), table["server_id"].cast(pa.string()), pa.scalar("")
                )
                tiled = table.set_column(table.schema.get_field_index("server_id"), "server_id", ids)
                tmp = out.with_suffix(".tmp")
                pq.write_table(tiled, tmp, row_group_size=65_536)
                os.replace(tmp, out)
    done.write_text("ok\n")
    print(f"tiled metrics × {tiles} in {time.perf_counter() - t0:.0f} s")
