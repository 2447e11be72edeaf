"""The batch job end to end, and its atomic publish under a crash."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from forecasting.batch import run_batch
from forecasting.plan import BACKTEST_COLUMNS, FORECAST_COLUMNS, RECOMMENDATION_COLUMNS, RISK_COLUMNS
from forecasting.settings import load_settings
from forecasting.sources import open_store
from forecasting.synthetic import generate_fleet

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fleet_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("batch") / "data"
    store = open_store(str(root))
    fleet = generate_fleet(60, days=400, start="2024-01-01", seed=5)
    from forecasting.schema import validate

    v = validate(fleet.inventory, fleet.metrics)
    store.write_inventory(v.inventory)
    store.write_metrics(v.metrics, v.inventory, freq="daily")
    return store


def assert_complete(store, run_id: str) -> None:
    """Every table a run's manifest lists is there, readable, with its row count."""
    manifest = store.read_manifest(run_id)
    for name, rows in manifest["rows"].items():
        table = store.read_run_table(run_id, name)
        assert table is not None, f"{run_id}: {name} missing"
        assert len(table) == rows


def test_run_writes_every_table(fleet_store):
    settings = load_settings(data=fleet_store.uri, horizon=30)
    said: list[str] = []
    manifest = run_batch(fleet_store, settings, progress=False, echo=said.append)
    run = fleet_store.latest_run_id()
    assert run == manifest["run_id"]
    assert_complete(fleet_store, run)
    inventory = fleet_store.read_inventory()
    forecasts = fleet_store.read_run_table(run, "forecasts")
    assert list(forecasts.columns) == FORECAST_COLUMNS
    assert forecasts.groupby(["server_id", "metric"]).size().eq(30).all()
    risk = fleet_store.read_run_table(run, "risk")
    assert list(risk.columns) == RISK_COLUMNS
    assert set(risk["server_id"]) == set(inventory["server_id"])
    recs = fleet_store.read_run_table(run, "recommendations")
    assert list(recs.columns) == RECOMMENDATION_COLUMNS
    assert sorted(recs["server_id"]) == sorted(inventory["server_id"])
    backtest = fleet_store.read_run_table(run, "backtest")
    assert list(backtest.columns) == BACKTEST_COLUMNS
    assert set(backtest["model"]) == {"fleet", "naive"}
    assert manifest["config"]["horizon"] == 30
    assert manifest["input"]["servers"] == 60
    assert set(manifest["scores"]) == {"fleet", "naive"}
    assert manifest["code_version"]
    # the run's policy is recorded, and the summary says what it proposes and what it held back
    assert manifest["config"]["policy"]["propose"] == "overprovisioned"
    counts = recs["action"].value_counts()
    line = next(x for x in said if x.startswith("  recommendations: "))
    assert f"{counts['decommission']:,} decommission" in line
    held = recs.loc[recs["held_back"] != "", "held_back"].value_counts()
    assert all(f"{n:,} {why}" in line for why, n in held.items())


def test_percent_forecasts_in_bounds(fleet_store):
    run = (
        fleet_store.latest_run_id()
        or run_batch(fleet_store, load_settings(horizon=14), progress=False)["run_id"]
    )
    f = fleet_store.read_run_table(run, "forecasts")
    pct = f[f["metric"].isin(["cpu_p95", "mem_p95", "disk_p95"])]
    assert pct[["yhat", "q025", "q975"]].max().max() <= 100.0
    assert f[["yhat", "q025"]].min().min() >= 0.0
    assert (f["q10"] <= f["q50"]).all()
    assert (f["q50"] <= f["q90"]).all()


def test_naive_model_and_no_backtest(fleet_store):
    settings = load_settings(data=fleet_store.uri)
    manifest = run_batch(fleet_store, settings, model="naive", horizon=7, backtest=False, progress=False)
    run = manifest["run_id"]
    assert fleet_store.read_run_table(run, "backtest") is None
    assert set(fleet_store.read_run_table(run, "forecasts")["model"]) == {"naive"}
    assert manifest["config"]["backtest_cutoffs"] == 0


def test_crash_in_publish_leaves_previous_run(fleet_store, monkeypatch):
    settings = load_settings(data=fleet_store.uri)
    good = run_batch(fleet_store, settings, horizon=7, backtest=False, progress=False)["run_id"]
    real = fleet_store._put_new

    def dies_on_recommendations(path, data, **kw):
        if "recommendations" in path:
            raise OSError("killed half-way")
        return real(path, data, **kw)

    monkeypatch.setattr(fleet_store, "_put_new", dies_on_recommendations)
    with pytest.raises(OSError, match="half-way"):
        run_batch(fleet_store, settings, horizon=7, backtest=False, progress=False)
    assert fleet_store.latest_run_id() == good
    assert_complete(fleet_store, good)
    # the failed run's tables written before the crash are removed with its directory
    runs = Path(fleet_store.root, "runs")
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == fleet_store.list_runs()


@pytest.mark.slow
def test_sigkill_at_any_moment_never_exposes_half_a_run(fleet_store):
    """Kill real `run` processes at spread-out moments; LATEST always names a complete run."""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    cmd = [sys.executable, "-m", "forecasting", "--data", fleet_store.uri, "run", "--horizon", "14"]
    t0 = time.perf_counter()
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    full = time.perf_counter() - t0
    assert_complete(fleet_store, fleet_store.latest_run_id())
    runs = Path(fleet_store.root, "runs")
    for frac in (0.3, 0.6, 0.85, 0.95):
        child = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(full * frac)
        child.send_signal(signal.SIGKILL)
        child.wait()
        latest = fleet_store.latest_run_id()
        assert latest is not None
        assert_complete(fleet_store, latest)
        # No half-written file is ever left where a reader would look: in a published run.
        for run in fleet_store.list_runs():
            assert not [p.name for p in (runs / run).rglob(".tmp-*")], run
    # The next run takes the dead run's lease over and removes what it left (its half-written
    # `.tmp-` files included): no directory under runs/ without a manifest, no temporary file.
    subprocess.run(cmd, env=env, cwd=ROOT, check=True, capture_output=True, timeout=300)
    assert not list(runs.rglob(".tmp-*"))
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == fleet_store.list_runs()


def test_run_rejects_empty_store(tmp_path):
    from forecasting.sources import NoDataError

    store = open_store(str(tmp_path / "empty"))
    with pytest.raises(NoDataError):
        run_batch(store, load_settings(), progress=False)


def test_run_on_real_nab_hourly(tmp_path):
    """Data nobody here made: the NAB CloudWatch series, ingested hourly, forecast a day ahead."""
    from forecasting.ingest import ingest

    nab = sorted((ROOT / "tests" / "data" / "nab" / "realAWSCloudwatch").glob("*cpu*.csv"))
    result = ingest(nab, freq="hourly")
    store = open_store(str(tmp_path / "nab"))
    store.write_inventory(result.inventory)
    store.write_metrics(result.metrics, result.inventory, freq="hourly")
    manifest = run_batch(store, load_settings(), horizon=24, progress=False)
    forecasts = store.read_run_table(manifest["run_id"], "forecasts")
    assert forecasts["server_id"].nunique() == len(nab)
    step = pd.Series(forecasts["timestamp"].sort_values().unique()).diff().dropna()
    assert (step == pd.Timedelta(hours=1)).all()
    assert manifest["scores"]["fleet"]["mase"] > 0
