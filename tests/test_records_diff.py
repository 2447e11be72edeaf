"""Comparing two runs: hand-made plans whose changes and causes are known, then two real runs
of a store through the CLI (unknown run, one run only, business-unit filter, exports)."""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd
import pytest

from forecasting.cli import main
from forecasting.records import RecordsError
from forecasting.records.diff import changes_frame, compare, diff_runs, resolve_pair
from tests.records_fixture import RUN_A, RUN_B, make_records_store


def _t(day: str) -> pd.Timestamp:
    return pd.Timestamp(day, tz="UTC")


def _risk(rows: list[tuple]) -> pd.DataFrame:
    cols = [
        "server_id",
        "metric",
        "threshold",
        "breach_expected",
        "severity",
        "score",
        "status",
        "days_to_breach",
    ]
    frame = pd.DataFrame(rows, columns=cols)
    frame["breach_expected"] = pd.to_datetime(frame["breach_expected"], utc=True)
    frame["current_p95"] = 60.0
    frame["breach_probability"] = np.where(frame["severity"] == "none", 0.05, 0.7)
    frame["reason"] = "because " + frame["server_id"]
    return frame


def _recs(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(
        rows, columns=["server_id", "action", "recommended_size", "monthly_savings", "reason"]
    )


def _manifest(run_id: str, cpu: float, fingerprint: str, end: str) -> dict:
    return {
        "run_id": run_id,
        "input": {"fingerprint": fingerprint, "end": end, "start": "2025-01-01", "servers": 6},
        "config": {"model": "fleet", "horizon": 90, "thresholds": {"cpu_p95": cpu, "mem_p95": 90.0}},
    }


INVENTORY = pd.DataFrame(
    {
        "server_id": ["s1", "s2", "s3", "s4", "s5", "s6"],
        "business_unit": ["Payments", "Payments", "Markets", "Markets", "Markets", "Markets"],
    }
)

PLAN_A = {
    "risk": _risk(
        [
            ("s1", "cpu_p95", 85.0, "2026-03-01", "high", 50.0, "at_risk", 40.0),
            ("s2", "mem_p95", 90.0, "2026-04-01", "medium", 30.0, "at_risk", 70.0),
            ("s3", "disk_p95", 85.0, None, "none", 0.0, "ok", np.nan),
            ("s5", "mem_p95", 90.0, "2026-03-10", "low", 15.0, "at_risk", 50.0),
            ("s6", "mem_p95", 90.0, "2026-03-20", "low", 15.0, "at_risk", 60.0),
        ]
    ),
    "recommendations": _recs(
        [
            ("s1", "keep", "", 0.0, "at risk"),
            ("s2", "right-size", "m5.large", 120.0, "oversized"),
            ("s3", "keep", "", 0.0, "no saving"),
        ]
    ),
    "models": pd.DataFrame(
        {
            "server_id": ["s1", "s2", "s3", "s5", "s6"],
            "metric": ["cpu_p95", "mem_p95", "disk_p95", "mem_p95", "mem_p95"],
            "model": ["fleet"] * 5,
        }
    ),
}
PLAN_B = {
    "risk": _risk(
        [
            ("s1", "cpu_p95", 80.0, "2026-02-20", "critical", 80.0, "at_risk", 31.0),  # moved 9 days earlier
            ("s2", "mem_p95", 90.0, None, "none", 0.0, "ok", np.nan),  # resolved
            ("s3", "disk_p95", 85.0, "2026-05-01", "low", 12.0, "at_risk", 100.0),  # new risk
            ("s4", "cpu_p95", 80.0, "2026-04-01", "high", 60.0, "at_risk", 70.0),  # new server
            ("s5", "mem_p95", 80.0, "2026-03-15", "low", 15.0, "at_risk", 55.0),  # threshold moved alone
            ("s6", "mem_p95", 90.0, "2026-04-19", "low", 15.0, "at_risk", 90.0),  # another model
        ]
    ),
    "recommendations": _recs(
        [
            ("s1", "upgrade", "m5.2xlarge", -80.0, "at risk, undersized"),
            ("s2", "right-size", "m5.xlarge", 60.0, "oversized"),
            ("s3", "keep", "", 0.0, "no saving"),
        ]
    ),
    "models": pd.DataFrame(
        {
            "server_id": ["s1", "s2", "s3", "s4", "s5", "s6"],
            "metric": ["cpu_p95", "mem_p95", "disk_p95", "cpu_p95", "mem_p95", "mem_p95"],
            "model": ["naive", "fleet", "fleet", "fleet", "fleet", "prophet"],
        }
    ),
}
MAN_A = _manifest("20260101T000000Z-a", 85.0, "f1", "2026-01-01")
MAN_B = _manifest("20260201T000000Z-b", 80.0, "f1", "2026-01-01")  # same input, one setting changed


def test_new_resolved_and_moved_rows_with_their_causes():
    d = compare(PLAN_A, MAN_A, PLAN_B, MAN_B, inventory=INVENTORY)
    assert not d.new_data
    assert d.settings_changed == {"thresholds.cpu_p95": (85.0, 80.0)}
    assert d.models_changed == 2  # s1 cpu and s6 mem
    new = d.new_risks.set_index(["server_id", "metric"])
    assert set(new.index) == {("s3", "disk_p95"), ("s4", "cpu_p95")}
    assert new.loc[("s4", "cpu_p95"), "severity_before"] == "not in run"
    assert new.loc[("s3", "disk_p95"), "severity_before"] == "none"
    # s3's disk: nothing differs for it (same input, its metric's threshold untouched, same model)
    assert new.loc[("s3", "disk_p95"), "why"] == "same input, settings and model"
    assert "setting thresholds.cpu_p95 85 → 80" in new.loc[("s4", "cpu_p95"), "why"]
    assert list(d.resolved_risks["server_id"]) == ["s2"]
    assert d.resolved_risks["severity"].iloc[0] == "none"

    moved = d.moved_breaches.set_index("server_id")
    assert moved.loc["s1", "days_moved"] == -9.0 and moved.loc["s1", "direction"] == "earlier"
    why = moved.loc["s1", "why"]
    assert "setting thresholds.cpu_p95 85 → 80" in why and "model fleet → naive" in why
    assert "new data" not in why
    # s5: its own threshold changed though no setting did (a criticality change): named as such
    assert moved.loc["s5", "days_moved"] == 5.0
    assert moved.loc["s5", "why"] == "threshold 90 → 80 (criticality or offsets)"
    # s6: only the model changed
    assert moved.loc["s6", "why"] == "model fleet → prophet" and moved.loc["s6", "days_moved"] == 30.0
    assert list(moved.index) == ["s6", "s1", "s5"]  # biggest move first


def test_changed_recommendations_and_totals():
    d = compare(PLAN_A, MAN_A, PLAN_B, MAN_B, inventory=INVENTORY)
    ch = d.changed_recommendations.set_index("server_id")
    assert set(ch.index) == {"s1", "s2"}  # s3 stayed "keep"
    assert (ch.loc["s1", "action_before"], ch.loc["s1", "action"]) == ("keep", "upgrade")
    assert (ch.loc["s2", "size_before"], ch.loc["s2", "size"]) == ("m5.large", "m5.xlarge")
    assert ch.loc["s2", "savings_change"] == -60.0
    assert "another model for cpu_p95" in ch.loc["s1", "why"]
    t = d.totals.set_index("measure")
    assert (t.loc["server × metric at risk", "before"], t.loc["server × metric at risk", "after"]) == (4, 5)
    assert t.loc["at risk: critical", "after"] == 1 and t.loc["servers"].tolist()[:2] == [5, 6]
    assert t.loc["potential savings $/month", "before"] == 120.0
    assert (
        t.loc["potential savings $/month", "after"] == 60.0
    )  # the upgrade's negative saving is not a saving


def test_new_data_is_named_and_business_unit_filter_applies_to_everything():
    man_b = _manifest("20260201T000000Z-b", 85.0, "f2", "2026-01-31")
    d = compare(PLAN_A, MAN_A, PLAN_B, man_b, inventory=INVENTORY, business_units=["Payments"])
    assert d.new_data and not d.settings_changed
    assert set(d.moved_breaches["server_id"]) == {"s1"}
    assert (
        d.moved_breaches["why"].iloc[0].startswith("new data (history to 2026-01-01 → history to 2026-01-31)")
    )
    assert d.new_risks.empty and list(d.resolved_risks["server_id"]) == ["s2"]
    assert d.totals.set_index("measure").loc["servers", "after"] == 2
    frame = changes_frame(d)
    assert sorted(frame["change"].unique()) == [
        "breach date moved",
        "recommendation changed",
        "resolved risk",
    ]
    assert set(frame["business_unit"]) == {"Payments"}


def test_identical_runs_have_no_changes():
    d = compare(PLAN_A, MAN_A, PLAN_A, {**MAN_A, "run_id": "20260102T000000Z-c"}, inventory=INVENTORY)
    assert d.new_risks.empty and d.resolved_risks.empty and d.moved_breaches.empty
    assert d.changed_recommendations.empty
    assert (d.totals["change"] == 0).all()
    assert d.causes() == ["same input, settings and models"]


# --------------------------------------------------------------------------- a real store


@pytest.fixture(scope="module")
def records_store(tmp_path_factory):
    root = tmp_path_factory.mktemp("records")
    store, fleet = make_records_store(root)
    return root, store, fleet


@pytest.mark.slow
def test_diff_of_two_real_runs_defaults_to_latest_against_previous(records_store):
    _root, store, _ = records_store
    assert resolve_pair(store) == (RUN_A, RUN_B)
    d = diff_runs(store)
    assert (d.run_a, d.run_b) == (RUN_A, RUN_B)
    assert d.new_data and d.settings_changed == {"thresholds.cpu_p95": (85.0, 80.0)}
    assert len(d.new_risks) + len(d.resolved_risks) + len(d.moved_breaches) > 0
    moved_cpu = d.moved_breaches[d.moved_breaches["metric"] == "cpu_p95"]
    assert moved_cpu["why"].str.contains("setting thresholds.cpu_p95 85 → 80", regex=False).all()
    moved_mem = d.moved_breaches[d.moved_breaches["metric"] != "cpu_p95"]
    assert not moved_mem["why"].str.contains("thresholds.cpu_p95", regex=False).any()


@pytest.mark.slow
def test_cli_diff_formats_and_errors(records_store, tmp_path, capsys):
    root, store, _ = records_store
    assert main(["--data", str(root), "diff", "--format", "json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["run_a"] == RUN_A and out["settings_changed"] == {"thresholds.cpu_p95": [85.0, 80.0]}

    csv_path = tmp_path / "changes.csv"
    assert main(["--data", str(root), "diff", RUN_A, RUN_B, "--format", "csv", "--out", str(csv_path)]) == 0
    text = csv_path.read_text(encoding="utf-8-sig")
    assert text.startswith("# Changes,") and '"change","server_id"' in text
    body = pd.read_csv(io.StringIO(text), comment="#")
    assert len(body) == len(changes_frame(diff_runs(store)))

    xlsx = tmp_path / "changes.xlsx"
    assert main(["--data", str(root), "diff", "--format", "xlsx", "--out", str(xlsx)]) == 0
    from openpyxl import load_workbook

    assert load_workbook(xlsx).sheetnames == [
        "totals",
        "new risks",
        "resolved risks",
        "moved breaches",
        "changed recommendations",
        "About",
    ]

    bu = sorted(store.read_inventory()["business_unit"].unique())[0]
    assert main(["--data", str(root), "diff", "--business-unit", bu, "--format", "json"]) == 0
    filtered = json.loads(capsys.readouterr().out)
    assert filtered["business_units"] == [bu]
    assert all(r["business_unit"] == bu for r in filtered["moved_breaches"] + filtered["new_risks"])

    assert main(["--data", str(root), "diff", "20990101T000000Z-nope", RUN_B]) == 2
    err = capsys.readouterr().err
    assert "unknown run '20990101T000000Z-nope'" in err and RUN_B in err
    assert main(["--data", str(root), "diff", "not-a-run", RUN_B]) == 2
    assert "is not a run id" in capsys.readouterr().err
    assert main(["--data", str(root), "diff", RUN_A, RUN_A]) == 2
    assert "compared with itself" in capsys.readouterr().err


def test_one_run_only_is_a_clear_error(plan_store, capsys):
    with pytest.raises(RecordsError, match=r"has 1 published run.*a comparison needs two"):
        resolve_pair(plan_store)
    assert main(["--data", plan_store.uri, "diff"]) == 2
    assert "a comparison needs two" in capsys.readouterr().err
