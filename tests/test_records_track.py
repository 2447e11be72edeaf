"""The track record: exact outcome counting on hand-made series, then a synthetic fleet whose
planted breaches are known, forecast at an earlier cut-off and measured after the later data
arrived (saved beside the run, the run's own files untouched)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from forecasting.cli import main
from forecasting.panel import Panel
from forecasting.plan import QUANTILE_COLUMNS, QUANTILES
from forecasting.records import RecordsError
from forecasting.records.track import (
    breakdown,
    load_series,
    load_summaries,
    load_summary,
    track_record,
    track_runs,
)
from tests.records_fixture import RUN_A, RUN_B, cutoff, make_records_store

INDEX = pd.date_range("2025-01-01", "2025-03-31", freq="D", tz="UTC")  # actuals end 31 Mar
ORIGIN = pd.Timestamp("2025-02-28", tz="UTC")
STEPS = pd.date_range("2025-03-01", periods=60, freq="D", tz="UTC")  # horizon 60: 31 elapsed
THR = 80.0

# name: (expected breach call, first day the actuals reach 90, status)
CASES = {
    "hit": ("2025-03-10", "2025-03-15", "at_risk"),  # 5 days off: within ±14
    "missed": (None, "2025-03-20", "ok"),  # crossed, no call
    "false_alarm": ("2025-03-05", None, "at_risk"),  # called, nothing by 19 Mar
    "pending": ("2025-03-25", None, "at_risk"),  # 25 Mar + 14 d is after 31 Mar: undecided
    "late_call": ("2025-03-28", "2025-03-05", "at_risk"),  # crossed 23 days before the call: missed
    "early_call": ("2025-03-02", "2025-03-25", "at_risk"),  # nothing by 16 Mar: a false alarm
    "quiet": (None, None, "ok"),
    "over": ("2025-03-01", "2025-03-01", "already_over"),
    "spike": (None, "2025-03-12", "ok"),  # one day at 90 only: an incident, not a crossing
}
EXPECTED = {
    "hit": "hit",
    "missed": "missed",
    "false_alarm": "false_alarm",
    "pending": "pending",
    "late_call": "missed",
    "early_call": "false_alarm",
    "quiet": "quiet",
    "over": "already_over",
    "spike": "quiet",
}


def _hand_made() -> tuple[pd.DataFrame, pd.DataFrame, dict, Panel]:
    names = list(CASES)
    t = np.arange(len(INDEX))
    hist = 50.0 + 2.0 * (t % 2)  # |y_t − y_{t−7}| = 2 everywhere: seasonal naive scale 2
    values = np.tile(hist, (len(names), 1))
    after = INDEX > ORIGIN
    values[:, after] = 51.0  # forecast 50 → MAE 1 → MASE 0.5 where nothing crosses
    for i, name in enumerate(names):
        cross = CASES[name][1]
        if cross and name == "spike":
            values[i, pd.Timestamp(cross, tz="UTC") == INDEX] = 90.0
        elif cross:
            values[i, pd.Timestamp(cross, tz="UTC") <= INDEX] = 90.0
    panel = Panel(
        keys=pd.DataFrame({"server_id": names, "metric": "cpu_p95"}),
        index=INDEX,
        values=values,
        observed=np.ones_like(values, dtype=bool),
        freq="daily",
    )
    fc = pd.DataFrame(
        {
            "server_id": np.repeat(names, len(STEPS)),
            "metric": "cpu_p95",
            "timestamp": np.tile(STEPS, len(names)),
            "yhat": 50.0,
            "model": "fleet",
        }
    )
    for q, col in zip(QUANTILES, QUANTILE_COLUMNS, strict=True):
        fc[col] = 50.0 + 25.0 * (q - 0.5)  # q10 = 40, q90 = 60
    risk = pd.DataFrame(
        {
            "server_id": names,
            "metric": "cpu_p95",
            "threshold": THR,
            "breach_expected": pd.to_datetime([CASES[n][0] for n in names], utc=True),
            "status": [CASES[n][2] for n in names],
        }
    )
    manifest = {"run_id": "20250228T060000Z-hand", "forecast_origin": str(ORIGIN), "config": {"horizon": 60}}
    return fc, risk, manifest, panel


def test_outcomes_are_counted_by_the_rules():
    fc, risk, manifest, panel = _hand_made()
    inv = pd.DataFrame({"server_id": list(CASES), "business_unit": ["Payments"] * 4 + ["Markets"] * 5})
    rec = track_record(fc, risk, manifest, panel, inventory=inv, tolerance_days=14)
    s = rec.series.set_index("server_id")
    assert s["outcome"].to_dict() == EXPECTED
    assert s.loc["hit", "days_off"] == 5.0 and s.loc["late_call", "days_off"] == -23.0
    assert s.loc["hit", "actual_crossing"] == pd.Timestamp("2025-03-15", tz="UTC")
    # accuracy where the actuals stayed at 51 against a forecast of 50: MAE 1, scale 2
    assert s.loc["quiet", "mase"] == pytest.approx(0.5)
    assert s.loc["quiet", "coverage_80"] == 1.0 and s.loc["quiet", "n_points"] == 31
    # the 90s are outside the 80 % band [40, 60]: coverage = share of days before the crossing
    assert s.loc["hit", "coverage_80"] == pytest.approx(14 / 31, abs=1e-4)
    summary = rec.summary
    assert summary["elapsed_periods"] == 31 and summary["horizon"] == 60
    assert summary["calls"] == {
        "hit": 1,
        "missed": 2,
        "false_alarm": 2,
        "pending": 1,
        "quiet": 2,
        "already_over": 1,
    }
    assert summary["precision"] == pytest.approx(1 / 3, abs=1e-4) and summary["recall"] == pytest.approx(
        1 / 3, abs=1e-4
    )
    assert summary["by_model"]["fleet"]["series"] == 9
    by_bu = breakdown(rec.series, ["business_unit"]).set_index("business_unit")
    assert by_bu.loc["Payments", "hit"] == 1 and by_bu.loc["Payments", "missed"] == 1
    assert by_bu.loc["Markets", "missed"] == 1 and by_bu.loc["Markets", "false_alarm"] == 1


def test_a_one_period_spike_counts_only_when_asked():
    fc, risk, manifest, panel = _hand_made()
    s = track_record(fc, risk, manifest, panel, sustain=1).series.set_index("server_id")
    assert s.loc["spike", "outcome"] == "missed"
    assert s.loc["spike", "actual_crossing"] == pd.Timestamp("2025-03-12", tz="UTC")
    assert s.drop(index="spike")["outcome"].to_dict() == {k: v for k, v in EXPECTED.items() if k != "spike"}


def test_tolerance_decides_a_hit():
    fc, risk, manifest, panel = _hand_made()
    s = track_record(fc, risk, manifest, panel, tolerance_days=3).series.set_index("server_id")
    # 5 days late is outside ±3: the crossing came after call + 3 days, so the call was a false alarm
    assert s.loc["hit", "outcome"] == "false_alarm"


def test_no_elapsed_period_gives_none():
    fc, risk, manifest, panel = _hand_made()
    early = Panel(panel.keys, panel.index[:59], panel.values[:, :59], panel.observed[:, :59], "daily")
    assert track_record(fc, risk, manifest, early) is None


# --------------------------------------------------------------------------- a synthetic fleet


@pytest.fixture(scope="module")
def records_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("track")
    store, fleet = make_records_store(root, n_servers=150, seed=7)
    return root, store, fleet


@pytest.mark.slow
def test_synthetic_fleet_planted_breaches_are_hits_or_misses(records_store):
    root, store, fleet = records_store
    manifest_before = (root / "runs" / RUN_A / "manifest.json").read_bytes()
    (rec,) = track_runs(store)  # run B forecasts from the end of the data: nothing elapsed yet
    assert rec.run_id == RUN_A
    s = rec.series
    assert rec.summary["elapsed_periods"] == 60 and len(s) == rec.summary["series"]
    assert s["outcome"].value_counts().sum() == len(s)

    # known truth: the planted breaches whose noise-free path crosses inside the elapsed window
    prof = fleet.profiles
    origin = cutoff() - pd.Timedelta(days=1)
    end = origin + pd.Timedelta(days=60)
    planted = prof[
        prof["breach_date"].notna() & (prof["breach_date"] > origin) & (prof["breach_date"] <= end)
    ]
    assert len(planted) >= 2, "the fixture must plant breaches inside the window"
    got = s.set_index(["server_id", "metric"])
    for row in planted.itertuples():
        outcome = got.loc[(row.server_id, row.breach_metric), "outcome"]
        assert outcome in ("hit", "missed", "already_over"), (row.server_id, row.breach_metric, outcome)
        crossing = got.loc[(row.server_id, row.breach_metric), "actual_crossing"]
        # the noisy actuals cross near the noise-free path's date (memory wanders for weeks)
        assert pd.notna(crossing) and abs(crossing - row.breach_date) <= pd.Timedelta(days=30)
    # idle servers (CPU p95 < 10 % throughout by construction) never cross a CPU threshold
    idle = set(prof.loc[prof["scenario"] == "idle", "server_id"])
    idle_cpu = s[s["server_id"].isin(idle) & (s["metric"] == "cpu_p95")]
    assert len(idle_cpu) and set(idle_cpu["outcome"]) == {"quiet"}
    # every crossing, found independently from the generator's raw rows and the run's thresholds
    raw = fleet.metrics[(fleet.metrics["timestamp"] > origin) & (fleet.metrics["timestamp"] <= end)]
    long = raw.melt(id_vars=["server_id", "timestamp"], var_name="metric").dropna()
    risk = store.read_run_table(RUN_A, "risk")[["server_id", "metric", "threshold"]]
    long = long.merge(risk, on=["server_id", "metric"]).sort_values(["server_id", "metric", "timestamp"])
    over = long["value"] >= long["threshold"]
    nxt = long.groupby(["server_id", "metric"])["timestamp"].shift(-1)
    held = over & over.groupby([long["server_id"], long["metric"]]).shift(-1, fill_value=False).astype(bool)
    held &= (nxt - long["timestamp"]) == pd.Timedelta(days=1)  # two consecutive days at or above
    truth = set(map(tuple, long.loc[held, ["server_id", "metric"]].values))
    found = set(map(tuple, s.loc[s["actual_crossing"].notna(), ["server_id", "metric"]].values))
    assert found == truth and len(truth) >= 2
    calls = rec.summary["calls"]
    crossed = s["actual_crossing"].notna()
    # a crossing is a hit or a miss, unless over already or later than call + tolerance (false alarm)
    assert calls["hit"] + calls["missed"] == int((crossed & s["outcome"].isin(["hit", "missed"])).sum())
    assert set(s.loc[crossed, "outcome"]) <= {"hit", "missed", "false_alarm", "already_over"}
    assert set(s.loc[~crossed, "outcome"]) <= {"false_alarm", "pending", "quiet", "already_over"}
    # every scored series has a finite MASE and coverage in [0, 1]
    scored = s[s["n_points"] > 0]
    assert np.isfinite(scored["mase"]).mean() > 0.95
    assert scored["coverage_80"].between(0, 1).all()
    assert 0.4 < rec.summary["coverage_80"] <= 1.0

    # saved beside the run; the run's manifest is byte for byte what was published
    assert (root / "runs" / RUN_A / "manifest.json").read_bytes() == manifest_before
    saved = load_summary(store, RUN_A)
    assert saved["calls"] == calls and saved["record"].endswith(f"-v{store.read_store_info()['version']:08d}")
    assert load_series(store, RUN_A)["outcome"].tolist() == s["outcome"].tolist()
    assert [x["run_id"] for x in load_summaries(store)] == [RUN_A]
    assert load_summary(store, RUN_B) is None
    # again on the same data: the same record, not a second one
    track_runs(store)
    assert len(list((root / "runs" / RUN_A / "track-record").glob("*.json"))) == 1


@pytest.mark.slow
def test_cli_track_record(records_store, capsys):
    root, _store, _ = records_store
    assert main(["--data", str(root), "track-record", RUN_A, "--no-save"]) == 0
    out = capsys.readouterr().out
    assert f"Run {RUN_A}" in out and "60 of 90 periods elapsed" in out and "came true" in out
    assert main(["--data", str(root), "track-record", "--format", "json", "--no-save"]) == 0
    (summary,) = json.loads(capsys.readouterr().out)
    assert summary["run_id"] == RUN_A and set(summary["calls"]) >= {"hit", "missed", "false_alarm"}
    # the latest run has no actuals after its origin yet: a clear message, exit 2
    assert main(["--data", str(root), "track-record", RUN_B]) == 2
    assert "no elapsed forecast period" in capsys.readouterr().err
    assert main(["--data", str(root), "track-record", "20990101T000000Z-zz"]) == 2
    assert "unknown run" in capsys.readouterr().err


def test_track_runs_without_elapsed_data_is_a_clear_error(plan_store):
    with pytest.raises(RecordsError, match="no elapsed forecast period"):
        track_runs(plan_store, save=False)
