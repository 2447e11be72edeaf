"""Risk and consolidation page latency at 1,000 and 10,000 servers, through Dash's HTTP endpoint.

Each callback is timed end to end with Flask's test client (Dash routing, the callback, JSON
serialisation) over a mix of filters, for the base plan and for a what-if scenario that has
been computed once (filters then only mask the cached result). Separately timed: a scenario
*change* (the engine re-derives risk for the risk page, or right-sizing + packing for the
consolidation page) and the once-per-run preparation of the what-if inputs. Each fleet size
runs in its own process, which holds only that fleet, as a server process does.

Side by side, a baseline answers the same filtered what-if requests the straightforward way —
re-running the engine's what-if on every request instead of caching per scenario — so the
ratio shows what the scenario cache buys.

    .venv/bin/python benchmarks/bench_app_risk.py            # 1,000 and 10,000 servers
    .venv/bin/python benchmarks/bench_app_risk.py --quick    # 1,000 servers, fewer repeats

Targets (the issue): callback p95 ≤ 200 ms at 1,000 servers, ≤ 1 s at 10,000.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench_app import TARGET_P95, build_store, filter_mix, pct  # noqa: E402  (same folder: shared kit)
from bench_app import dash_request as request  # noqa: E402

from app import create_app, get_context  # noqa: E402
from app.filters import FilterState  # noqa: E402
from app.whatif import ScenarioState, base_policy, compute_view  # noqa: E402
from callbacks.risk import EXPORT_COLUMNS, at_risk, grid_rows  # noqa: E402
from forecasting.settings import Settings  # noqa: E402


def page_requests(
    filters: FilterState, scenario: ScenarioState, rows: list[dict] | None = None
) -> dict[str, dict]:
    data = {"id": "shell-filters", "property": "data", "value": filters.to_data()}
    whatif = {"id": "whatif-state", "property": "data", "value": scenario.to_data()}
    decided = {"id": "decide-saved", "property": "data", "value": None}  # bumped after a planner decision
    risk_out = ["risk-grid.rowData", "risk-kpis.children", "risk-empty.children", "risk-note.children"]
    cons_out = [
        "cons-empty.children",
        "cons-kpis.children",
        "cons-savings-chart.figure",
        "cons-savings-table.children",
        "cons-recs-grid.rowData",
        "cons-recs-note.children",
        "cons-plan-grid.rowData",
        "cons-plan-note.children",
    ]

    def outs(keys: list[str]) -> list[dict]:
        return [{"id": k.split(".")[0], "property": k.split(".")[1]} for k in keys]

    reqs = {
        "risk: grid + KPIs": request(
            ".." + "...".join(risk_out) + "..", outs(risk_out), [data, whatif, decided]
        ),
        "consolidation: page": request(
            ".." + "...".join(cons_out) + "..", outs(cons_out), [data, whatif, decided]
        ),
        "consolidation: host chart": request(
            "cons-host-chart.figure",
            {"id": "cons-host-chart", "property": "figure"},
            [data, whatif, {"id": "cons-group", "property": "data", "value": None}],
        ),
        "risk: quick search": request(
            "risk-grid.dashGridOptions",
            {"id": "risk-grid", "property": "dashGridOptions"},
            [{"id": "risk-search", "property": "value", "value": "cpu"}],
        ),
    }
    if rows is not None:
        reqs["risk: CSV export (shown rows)"] = request(
            "risk-download.data",
            {"id": "risk-download", "property": "data"},
            [
                {"id": "risk-export-csv", "property": "n_clicks", "value": 1},
                {"id": "risk-export-xlsx", "property": "n_clicks", "value": None},
            ],
            [  # the rows are recomputed on the server; only the grid's view comes from the browser
                {"id": "risk-search", "property": "value", "value": None},
                {"id": "risk-grid", "property": "filterModel", "value": None},
                {"id": "risk-grid", "property": "columnState", "value": None},
                {"id": "shell-filters", "property": "data", "value": filters.to_data()},
                {"id": "whatif-state", "property": "data", "value": scenario.to_data()},
            ],
        )
    return reqs


def post(client: Any, body: dict) -> float:
    payload = json.dumps(body)
    started = time.perf_counter()
    resp = client.post("/_dash-update-component", data=payload, content_type="application/json")
    elapsed = time.perf_counter() - started
    if resp.status_code != 200:
        raise RuntimeError(f"{body['output']}: HTTP {resp.status_code} {resp.data[:300]!r}")
    answer = resp.get_json() or {}
    first = body["outputs"][0]["id"] if isinstance(body["outputs"], list) else body["outputs"]["id"]
    if first not in (answer.get("response") or {}):  # the app's error handler answered instead
        raise RuntimeError(f"{body['output']}: no answer for {first}: {json.dumps(answer)[:400]}")
    return elapsed


def run(n: int, repeat: int, workdir: Path) -> dict[str, Any]:
    """Time every callback of the two pages on an ``n``-server fleet; print the table."""
    root = workdir / f"fleet-{n}"
    t0 = time.perf_counter()
    store = build_store(root, n, seed=0)
    print(f"\n== {n:,} servers (store built in {time.perf_counter() - t0:.1f} s)")
    app = create_app(
        Settings(data=str(root)), store, cache_type="simple", cache_dir=str(workdir / f"cache-{n}")
    )
    rm = get_context(app).readmodel
    client = app.server.test_client()
    plan = rm.snapshot().plan
    assert plan is not None
    t0 = time.perf_counter()
    inputs = rm.analytics_inputs(plan)
    prep = time.perf_counter() - t0
    print(f"   once per run: what-if inputs prepared in {prep:.2f} s")

    mix = filter_mix(plan.options)
    scenario = ScenarioState.of(3, {"cpu_p95": 75})
    results: dict[str, list[float]] = {}

    # scenario changes: every request a new scenario (the engine runs); the first of each page
    # warms up (numpy, and the packing kernel a server compiles at start-up)
    for name in ("risk: grid + KPIs", "consolidation: page"):
        post(client, page_requests(FilterState(), ScenarioState(growth=0.5))[name])
    for i in range(2 * repeat):
        s = ScenarioState(growth=1 + i * 0.5)
        results.setdefault("risk: scenario change (engine)", []).append(
            post(client, page_requests(FilterState(), s)["risk: grid + KPIs"])
        )
        results.setdefault("consolidation: scenario change (engine + packing)", []).append(
            post(client, page_requests(FilterState(), s)["consolidation: page"])
        )

    # filter changes under the base plan and under a computed scenario
    post(client, page_requests(FilterState(), scenario)["consolidation: page"])  # compute once
    base = base_policy(plan, rm.settings)
    full = compute_view(inputs, plan, scenario, base)
    rows = grid_rows(at_risk(full.risk_rows(plan, FilterState())))
    for _ in range(repeat):
        for f in mix:
            for label, s in (("plan", ScenarioState()), ("what-if", scenario)):
                for name, body in page_requests(f, s, rows if f.is_empty else None).items():
                    results.setdefault(f"{name} [{label}]", []).append(post(client, body))

    # baseline: the same filtered what-if risk answers, re-running the engine per request
    baseline = []
    for _ in range(max(1, repeat // 2)):
        for f in mix:
            t0 = time.perf_counter()
            view = compute_view(inputs, plan, scenario, base)
            grid_rows(at_risk(view.risk_rows(plan, f)))
            baseline.append(time.perf_counter() - t0)

    target = TARGET_P95.get(n)
    print(f"   {'callback':<58} {'p50 ms':>8} {'p95 ms':>8}  target")
    for name, values in results.items():
        p95 = pct(values, 95)
        mark = "" if target is None else ("ok" if p95 <= target else "OVER")
        print(f"   {name:<58} {pct(values, 50) * 1e3:8.1f} {p95 * 1e3:8.1f}  {mark}")
    cached = results["risk: grid + KPIs [what-if]"]
    print(
        f"   baseline (engine re-run per filtered request)            {pct(baseline, 50) * 1e3:8.1f} "
        f"{pct(baseline, 95) * 1e3:8.1f}"
    )
    ratio = pct(baseline, 50) / pct(cached, 50)
    print(f"   ratio: cached what-if risk request is {ratio:.1f}× faster than re-running the engine (p50)")
    print(f"   export rows: {len(rows):,} × {len(EXPORT_COLUMNS)} columns")
    return {"prepare_s": prep, "results": results, "baseline": baseline}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 servers, fewer repeats")
    parser.add_argument("--size", type=int, help="one fleet size, in this process")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    if args.size is None:  # each size in a fresh process: a server process serves one fleet
        for n in [1_000] if args.quick else [1_000, 10_000]:
            cmd = [sys.executable, __file__, "--size", str(n)] + (["--quick"] if args.quick else [])
            subprocess.run(cmd, check=True)
        return 0
    with tempfile.TemporaryDirectory(prefix="bench-risk-") as tmp:
        run(args.size, 2 if args.quick else (4 if args.size <= 1_000 else 2), Path(tmp))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
