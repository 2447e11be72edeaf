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
    .venv/bin/python benchmarks/bench_app_scale.py --data STORE   # a store's published run (a real
                                                                  # 100,000-server Dask run)
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_api import tiled_fleet  # noqa: E402
from bench_app import PAGES, chrome, filter_mix, overview_requests, pct, server_requests, wait_js  # noqa: E402
from bench_app_risk import page_requests  # noqa: E402
from bench_load import BIN, GUNICORN, _status, build_fleet, free_port  # noqa: E402

from app.filters import FilterState  # noqa: E402
from app.whatif import ScenarioState  # noqa: E402

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


# --------------------------------------------------------------------------- gunicorn


@contextmanager
def serve(
    code: Path, data: Path, log: Path, workers: int, wait_s: float = 900.0
) -> Iterator[tuple[str, int]]:
    """The container's gunicorn command (``code``'s gunicorn.conf.py and app) on a free loopback
    port; yields (base URL, master pid) once /readyz answers 200."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFC_")}
    env.update(
        CAPFC_AUTH_MODE="dev",
        CAPFC_DATA=str(data),
        PORT=str(port),
        PYTHONPATH=str(code),
        WEB_CONCURRENCY=str(workers),
        GUNICORN_TIMEOUT="600",  # the first request of a worker may wait for the run's load
        CAPFC_LOG_LEVEL="INFO",  # the bench waits for the workers' "API index … built" lines
    )
    cmd = [str(BIN / GUNICORN[0]), *GUNICORN[1:3], "--bind", f"127.0.0.1:{port}", *GUNICORN[3:]]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=code, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while _status(base + "/readyz") != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{base}/readyz not ready within {wait_s:.0f} s")
            time.sleep(0.5)
        yield base, proc.pid
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def worker_memory(master: int) -> list[tuple[float, float]]:
    """(resident GB now, peak resident GB) of each gunicorn worker (the master's children)."""
    import psutil

    out = []
    for child in psutil.Process(master).children():
        status = Path(f"/proc/{child.pid}/status").read_text()
        fields = {
            line.split(":")[0]: line.split()[1] for line in status.splitlines() if len(line.split()) > 1
        }
        out.append((int(fields["VmRSS"]) / 1e6, int(fields["VmHWM"]) / 1e6))  # kB -> GB
    return out


# --------------------------------------------------------------------------- requests


def rows_request(block: dict, filters: FilterState, search: str | None = None) -> dict:
    """A server-paged risk grid's getRowsRequest."""
    return {
        "output": "..risk-grid.getRowsResponse...risk-grid-alert.children..",
        "outputs": [
            {"id": "risk-grid", "property": "getRowsResponse"},
            {"id": "risk-grid-alert", "property": "children"},
        ],
        "inputs": [{"id": "risk-grid", "property": "getRowsRequest", "value": block}],
        "changedPropIds": ["risk-grid.getRowsRequest"],
        "state": [
            {"id": "shell-filters", "property": "data", "value": filters.to_data()},
            {"id": "whatif-state", "property": "data", "value": ScenarioState().to_data()},
            {"id": "risk-search", "property": "value", "value": search},
        ],
    }


def cons_rows_request(block: dict, filters: FilterState) -> dict:
    """A server-paged recommendations grid's getRowsRequest."""
    return {
        "output": "..cons-recs-grid.getRowsResponse...cons-recs-alert.children..",
        "outputs": [
            {"id": "cons-recs-grid", "property": "getRowsResponse"},
            {"id": "cons-recs-alert", "property": "children"},
        ],
        "inputs": [{"id": "cons-recs-grid", "property": "getRowsRequest", "value": block}],
        "changedPropIds": ["cons-recs-grid.getRowsRequest"],
        "state": [
            {"id": "shell-filters", "property": "data", "value": filters.to_data()},
            {"id": "whatif-state", "property": "data", "value": ScenarioState().to_data()},
            {"id": "cons-recs-search", "property": "value", "value": None},
        ],
    }


def callback_mix(options: dict[str, list[str]], server_ids: list[str], paged: bool) -> list[dict[str, dict]]:
    """Every page's callbacks over the filter mix: what planners click."""
    batches = []
    for i, f in enumerate(filter_mix(options)):
        batch = dict(overview_requests(f))
        sid = server_ids[i % len(server_ids)]
        srv = server_requests(sid, f, {"server_id": sid, "model": "plan"})
        batch["server: page content"] = srv["server: page content"]
        batch["server: picker search"] = srv["server: picker search"]
        pages = page_requests(f, ScenarioState())
        for name in (
            "risk: grid + KPIs",
            "consolidation: page",
            "consolidation: host chart",
            "risk: quick search",
        ):
            batch[name] = pages[name]
        if paged:
            batch["risk grid: first block"] = rows_request({"startRow": 0, "endRow": 100}, f)
            batch["risk grid: block 5, sorted by P(breach)"] = rows_request(
                {"startRow": 500, "endRow": 600, "sortModel": [{"colId": "probability", "sort": "desc"}]}, f
            )
            batch["risk grid: text filter + search"] = rows_request(
                {
                    "startRow": 0,
                    "endRow": 100,
                    "filterModel": {"reason": {"filterType": "text", "type": "contains", "filter": "growth"}},
                },
                f,
                search="mem",
            )
            batch["recommendations grid: first block"] = cons_rows_request({"startRow": 0, "endRow": 100}, f)
        batches.append(batch)
    return batches


def post(session: Any, base: str, name: str, body: dict, timeout: float = 600.0) -> float:
    started = time.perf_counter()
    resp = session.post(base + "/_dash-update-component", json=body, timeout=timeout)
    elapsed = time.perf_counter() - started
    if resp.status_code != 200 or b"shell-error-alert" in resp.content:
        raise RuntimeError(f"{name}: HTTP {resp.status_code} {resp.content[:300]!r}")
    return elapsed


# --------------------------------------------------------------------------- one fleet


def measure(
    code: Path, data: Path, label: str, repeats: int, workers: int, workdir: Path, baseline: bool = False
) -> dict[str, Any]:
    import requests

    from forecasting.sources import open_store

    store = open_store(str(data))
    inv = store.read_inventory()
    n = len(inv)
    options = {
        d: sorted(set(inv[d].dropna().astype(str))) for d in ("business_unit", "region", "environment")
    }
    options["criticality"] = ["critical", "high"]
    risk = store.read_run_table(store.latest_run_id(), "risk", server_ids=None)
    paged = (len(risk) > 10_000 if risk is not None else False) and not baseline  # grid_client_max_rows
    at_risk = risk[risk["severity"].astype(str) != "none"]["server_id"].astype(str).unique().tolist()
    del risk
    server_ids = at_risk[:: max(1, len(at_risk) // 20)][:20] or inv["server_id"].astype(str).tolist()[:20]
    log = workdir / f"gunicorn-{label}-{n}.log"
    print(f"\n== {label}: {n:,} servers (gunicorn, {workers} workers; log {log})", flush=True)
    result: dict[str, Any] = {"label": label, "servers": n}
    t0 = time.perf_counter()
    with serve(code, data, log, workers) as (base, master):
        session = requests.Session()
        ready = time.perf_counter() - t0
        # warm every worker: the run's load (at start, in the background), then each callback once
        batches = callback_mix(options, server_ids, paged)
        t1 = time.perf_counter()
        for _ in range(workers):
            for name, body in batches[0].items():
                post(session, base, name, body)
        # every worker has also built the REST API's index at boot (its own background load): wait
        # for it, so what is timed is a warm server, not the warm-up competing for the cores
        # and the run's forecasts compacted for the API (once per run, in a child process)
        deadline = time.monotonic() + 1800
        while True:
            text = log.read_text(errors="replace")
            compacted = "compacted forecasts of run" in text or "already compacted" in text
            if text.count("API index of run") >= workers and compacted:
                break
            if time.monotonic() > deadline:
                raise RuntimeError("the workers' API index warm-up did not finish")
            time.sleep(2)
        result["ready_s"], result["warm_s"] = ready, time.perf_counter() - t1
        print(f"   ready in {ready:.0f} s, every worker warm in {result['warm_s']:.0f} s", flush=True)
        times: dict[str, list[float]] = {}
        for _ in range(repeats):
            for batch in batches:
                for name, body in batch.items():
                    times.setdefault(name, []).append(post(session, base, name, body))
        result["memory_pages"] = worker_memory(master)
        print(f"   page callbacks done; workers (resident, peak GB): {result['memory_pages']}", flush=True)
        # a what-if change: scoped to the filtered servers above whatif_max_servers (one business
        # unit's production servers here), the whole fleet below
        bu = FilterState(business_unit=(options["business_unit"][0],), environment=("prod",))
        whatif = []
        for g in (round(1 + (time.time() % 7), 2), round(8 + (time.time() % 3), 2)):  # never cached before
            body = page_requests(bu, ScenarioState(growth=g))["risk: grid + KPIs"]
            whatif.append(post(session, base, "risk: what-if change", body))
        result["whatif_change_s"] = whatif
        result["memory_before_browser"] = worker_memory(master)
        print(
            f"   callbacks done; workers (resident, peak GB): {result['memory_before_browser']}", flush=True
        )
        renders = first_renders_at(base, server_ids[0], repeats=3)
        result["memory"] = worker_memory(master)
    result["callbacks"] = {k: {"p50": pct(v, 50), "p95": pct(v, 95), "n": len(v)} for k, v in times.items()}
    result["callback_p95_max"] = max(v["p95"] for v in result["callbacks"].values())
    result["render"] = {k: {"median": statistics.median(v), "max": max(v)} for k, v in renders.items()}
    report(result)
    return result


def first_renders_at(base: str, server_id: str, repeats: int) -> dict[str, list[float]]:
    """First render of every page in headless Chromium: a fresh navigation until the page's
    content is drawn (bench_app's readiness checks), after one warm-up visit each."""
    driver = chrome()
    pages = [
        (name, base + (f"/servers/{server_id}" if path.startswith("/servers/") else path), ready)
        for name, path, ready in PAGES
    ]
    out: dict[str, list[float]] = {name: [] for name, _, _ in pages}
    try:
        for _, url, ready in pages:
            driver.get(url)
            wait_js(driver, ready, timeout=300)
        for _ in range(repeats):
            for name, url, ready in pages:
                driver.get("about:blank")
                started = time.perf_counter()
                driver.get(url)
                wait_js(driver, ready, timeout=120)
                out[name].append(time.perf_counter() - started)
    finally:
        driver.quit()
    return out


def report(r: dict[str, Any]) -> None:
    print(f"   {'callback':<52} {'p50 ms':>8} {'p95 ms':>8}  target p95 ≤ {TARGET_P95_S * 1000:.0f} ms")
    for name, v in r["callbacks"].items():
        mark = "ok" if v["p95"] <= TARGET_P95_S else "OVER"
        print(f"   {name:<52} {v['p50'] * 1e3:8.1f} {v['p95'] * 1e3:8.1f}  {mark}")
    print(
        f"   what-if change (engine, scoped where the fleet needs it): {', '.join(f'{s:.2f} s' for s in r['whatif_change_s'])}"
    )
    print(f"   {'first render':<52} {'median s':>8} {'max s':>8}  target ≤ {TARGET_RENDER_S} s")
    for name, v in r["render"].items():
        mark = "ok" if v["max"] <= TARGET_RENDER_S else "OVER"
        print(f"   {name:<52} {v['median']:8.2f} {v['max']:8.2f}  {mark}")
    for i, (rss, peak) in enumerate(r["memory"]):
        mark = "ok" if peak <= TARGET_RSS_GB else "OVER"
        print(
            f"   worker {i}: resident {rss:.2f} GB, peak {peak:.2f} GB  (target ≤ {TARGET_RSS_GB} GB) {mark}"
        )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument(
        "--code", type=Path, default=ROOT, help="the app's code to serve (another checkout: a baseline)"
    )
    parser.add_argument("--label", default="this branch")
    parser.add_argument(
        "--baseline", action="store_true", help="the code has no server-paged grids (main before this work)"
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument(
        "--data",
        type=Path,
        help="measure this store's published run instead of the fixtures (--sizes ignored)",
    )
    args = parser.parse_args(argv)
    if args.data is not None:
        stores = [args.data]
    else:
        ten = build_fleet(args.workdir / "capfc-bench-load" / "fleet-10000", 10_000)
        stores = []
        for size in [int(s) for s in args.sizes.split(",")]:
            if size == 10_000:
                stores.append(ten)
            else:
                stores.append(tiled_fleet(ten, args.workdir / "capfc-bench-api" / "fleet-100000"))
                tile_metrics(ten, stores[-1])
    results = [
        measure(args.code, data, args.label, args.repeats, args.workers, args.workdir, args.baseline)
        for data in stores
    ]
    print(json.dumps(results, default=str))
    ok = all(
        all(v["p95"] <= TARGET_P95_S for v in r["callbacks"].values())
        and all(v["max"] <= TARGET_RENDER_S for v in r["render"].values())
        and all(peak <= TARGET_RSS_GB for _, peak in r["memory"])
        for r in results
    )
    print("targets met" if ok else "TARGET MISSED")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
