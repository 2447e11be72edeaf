"""Plans as records on S3 (SeaweedFS): diff two runs and save a track record beside a run with
conditional puts, exactly as on local disk."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from forecasting.batch import run_batch
from forecasting.cli import EXIT_OK, main
from forecasting.records.track import load_series, load_summary
from forecasting.schema import validate
from forecasting.settings import load_settings
from forecasting.sources import open_store
from forecasting.synthetic import generate_fleet
from tests.s3server import ADMIN, aws_env, seaweed
from tests.small_fleet import append_day

__all__ = ["aws_env", "seaweed"]  # fixtures, imported for pytest


@pytest.mark.slow
def test_diff_and_track_record_on_s3(seaweed, aws_env, capsys):
    aws_env(ADMIN, seaweed.url)
    uri = f"s3://{seaweed.new_bucket()}/records"
    fleet = generate_fleet(30, days=150, start="2025-01-01", seed=4)
    v = validate(fleet.inventory, fleet.metrics, "daily")
    cut = pd.Timestamp("2025-01-01", tz="UTC") + pd.Timedelta(days=110)  # 40 days held back
    store = open_store(uri)
    store.write_inventory(v.inventory)
    store.write_metrics(v.metrics[v.metrics["timestamp"] < cut], v.inventory, freq="daily")
    first = run_batch(store, load_settings(data=uri), horizon=30, backtest=False, progress=False)["run_id"]
    store.write_metrics(v.metrics, v.inventory, freq="daily")
    run_batch(store, load_settings(data=uri, horizon=45), horizon=45, backtest=False, progress=False)
    capsys.readouterr()  # the runs' metric lines

    assert main(["--data", uri, "diff", "--format", "json"]) == EXIT_OK
    d = json.loads(capsys.readouterr().out)
    assert d["run_a"] == first and d["new_data"] and d["settings_changed"]["horizon"] == [30, 45]

    assert main(["--data", uri, "track-record", "--format", "json"]) == EXIT_OK
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["run_id"] == first and summary["elapsed_periods"] == summary["horizon"] == 30
    saved = load_summary(store, first)
    assert saved["calls"] == summary["calls"] and len(load_series(store, first)) == summary["series"]
    append_day(store)  # new telemetry: the store's version moves on
    # the whole horizon had elapsed: its figures cannot change, the saved record is kept
    assert main(["--data", uri, "track-record", "--format", "json"]) == EXIT_OK
    capsys.readouterr()
    assert load_summary(store, first)["record"] == saved["record"]
    # asked for by id, it is scored again and saved under the new version, beside the old record
    assert main(["--data", uri, "track-record", first, "--format", "json"]) == EXIT_OK
    capsys.readouterr()
    again = load_summary(store, first)
    assert again["record"] != saved["record"] and again["calls"] == saved["calls"]
