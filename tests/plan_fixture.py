"""A plan store for app tests and benchmarks: a synthetic fleet and a real batch run.

``make_plan_store`` runs the real pipeline (synthetic fleet → validate → store → batch job),
so the app is tested and measured on the engine's real answers.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from forecasting.batch import run_batch
from forecasting.schema import validate
from forecasting.settings import load_settings
from forecasting.sources import Store, open_store
from forecasting.sources.base import PLAN_TABLES
from forecasting.synthetic import generate_fleet

START = "2025-07-01"  # fixed, so every build with the same arguments is identical
FIXTURE_CREATED_AT = datetime(2026, 8, 5, 6, 0, tzinfo=UTC)


def fixture_run_id(seed: int) -> str:
    return f"{FIXTURE_CREATED_AT:%Y%m%dT%H%M%SZ}-fx{seed}"


def make_plan_store(
    root: Path,
    n_servers: int = 200,
    seed: int = 0,
    *,
    days: int = 400,
    freq: str = "daily",
    omit: tuple[str, ...] = (),
    run_id: str | None = None,
) -> Store:
    """Write inventory, metrics and one run published by the real batch job; return the store.

    The plan is what ``python -m forecasting run`` computes (fleet model, backtest, risk,
    recommendations), so the app is tested on the engine's real answers. ``omit`` republishes
    the run without some tables (to test "not in this run" states); ``run_id`` fixes its id.
    """
    fleet = generate_fleet(n_servers, days=days, start=START, seed=seed, freq=freq)
    store = open_store(str(root))
    valid = validate(fleet.inventory, fleet.metrics, freq)
    store.write_inventory(valid.inventory)
    store.write_metrics(valid.metrics, valid.inventory, freq=freq)
    settings = load_settings(data=str(root), freq=freq, backtest_cutoffs=2)
    rid = run_id or fixture_run_id(seed)
    first = run_batch(store, settings, run_id=None if omit else rid, progress=False)["run_id"]
    if omit:
        tables = {
            name: table
            for name in PLAN_TABLES
            if name not in omit and (table := store.read_run_table(first, name)) is not None
        }
        manifest = {
            **store.read_manifest(first),
            "run_id": rid,
            "rows": {k: len(v) for k, v in tables.items()},
        }
        store.publish_run(rid, tables, manifest)
    return store
