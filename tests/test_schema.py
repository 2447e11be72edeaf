"""Every validation rule of the data contract, one test each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.schema import (
    INVENTORY_COLUMNS,
    MIN_HISTORY,
    OPTIONAL_INVENTORY_COLUMNS,
    SchemaError,
    freq_alias,
    validate,
    validate_inventory,
    validate_metrics,
)


def inventory(n: int = 2) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "server_id": [f"srv-{i:03d}" for i in range(n)],
            "hostname": [f"lon-app-{i:03d}" for i in range(n)],
            "business_unit": ["Retail"] * n,
            "region": ["emea-london"] * n,
            "environment": ["prod"] * n,
            "criticality": ["high"] * n,
            "server_type": ["app"] * n,
            "cpu_cores": [8.0] * n,
            "memory_gb": [32.0] * n,
            "disk_gb": [500.0] * n,
            "monthly_cost_usd": [400.0] * n,
        }
    )


def metrics(server_ids=("srv-000",), days: int = 40, start: str = "2025-01-01") -> pd.DataFrame:
    ts = pd.date_range(start, periods=days, freq="D", tz="UTC")
    frames = [
        pd.DataFrame({"server_id": s, "timestamp": ts, "cpu_p95": np.linspace(10, 50, days), "mem_p95": 60.0})
        for s in server_ids
    ]
    return pd.concat(frames, ignore_index=True)


def rule_count(report, rule: str, action: str | None = None) -> int:
    return sum(f.count for f in report.findings if f.rule == rule and (action is None or f.action == action))


def test_clean_input_passes_untouched():
    v = validate(inventory(), metrics(["srv-000", "srv-001"]))
    assert v.report.clean
    assert len(v.metrics) == 80
    assert v.metrics["timestamp"].dt.tz is not None


@pytest.mark.parametrize("column", ["server_id", "business_unit", "cpu_cores"])
def test_missing_inventory_column_names_column_and_file(column):
    with pytest.raises(
        SchemaError, match=rf"inventory in servers\.csv is missing required column\(s\): {column}"
    ):
        validate_inventory(inventory().drop(columns=column), source="servers.csv")


@pytest.mark.parametrize("column", ["server_id", "timestamp"])
def test_missing_metrics_column_names_column_and_file(column):
    with pytest.raises(SchemaError, match=rf"metrics in m\.csv is missing required column\(s\): {column}"):
        validate_metrics(metrics().drop(columns=column), source="m.csv")


def test_no_metric_column_is_an_error():
    with pytest.raises(SchemaError, match="none of the metric columns"):
        validate_metrics(metrics().drop(columns=["cpu_p95", "mem_p95"]), source="m.csv")


def test_duplicate_inventory_rows_keep_first():
    inv = pd.concat([inventory(2), inventory(1).assign(hostname="other")], ignore_index=True)
    clean, report = validate_inventory(inv)
    assert len(clean) == 2
    assert clean.set_index("server_id").loc["srv-000", "hostname"] == "lon-app-000"
    assert rule_count(report, "duplicate_server") == 1


def test_inventory_text_and_negative_numbers_rejected():
    inv = inventory(2).astype({"cpu_cores": object})
    inv.loc[0, "cpu_cores"] = "eight"
    inv.loc[1, "monthly_cost_usd"] = -5.0
    clean, report = validate_inventory(inv)
    assert np.isnan(clean.loc[0, "cpu_cores"]) and np.isnan(clean.loc[1, "monthly_cost_usd"])
    assert rule_count(report, "non_numeric") == 1
    assert rule_count(report, "out_of_range") == 1
    assert "eight" in report.lines()[-2] or any("eight" in line for line in report.lines())


def test_inventory_blank_attributes_and_unknown_criticality():
    inv = inventory(2)
    inv.loc[0, "business_unit"] = "  "
    inv.loc[1, "criticality"] = "Ultra"
    clean, report = validate_inventory(inv)
    assert clean.loc[0, "business_unit"] == "unknown"
    assert clean.loc[1, "criticality"] == "unknown"
    assert rule_count(report, "missing_attribute") == 1
    assert rule_count(report, "unknown_criticality") == 1


def test_inventory_criticality_normalised_to_lowercase():
    inv = inventory(1)
    inv.loc[0, "criticality"] = "Critical "
    clean, report = validate_inventory(inv)
    assert clean.loc[0, "criticality"] == "critical"
    assert report.clean


def test_exact_duplicate_rows_dropped():
    m = metrics()
    v = validate(inventory(), pd.concat([m, m.iloc[:5]]))
    assert len(v.metrics) == 40
    assert rule_count(v.report, "duplicate_row") == 5


def test_conflicting_duplicates_keep_last_delivered():
    m = metrics()
    late = m.iloc[[3]].assign(cpu_p95=99.0)
    v = validate(inventory(), pd.concat([m, late]))
    assert v.metrics.loc[3, "cpu_p95"] == 99.0
    assert rule_count(v.report, "duplicate_period") == 1


def test_unknown_server_rejected_and_named():
    v = validate(inventory(), metrics(["srv-000", "ghost-1"]))
    assert set(v.metrics["server_id"]) == {"srv-000"}
    assert rule_count(v.report, "unknown_server") == 40
    assert any("ghost-1" in line for line in v.report.lines())


def test_non_numeric_metric_value_rejected_row_kept_if_other_metric():
    m = metrics().astype({"cpu_p95": object})
    m.loc[2, "cpu_p95"] = "n/a"
    v = validate(inventory(), m)
    assert np.isnan(v.metrics.loc[2, "cpu_p95"])
    assert v.metrics.loc[2, "mem_p95"] == 60.0
    assert rule_count(v.report, "non_numeric") == 1


def test_out_of_range_policy_negative_clip_and_reject():
    m = metrics()
    m.loc[0, "cpu_p95"] = -1.0
    m.loc[1, "cpu_p95"] = 103.0  # overshoot: clipped
    m.loc[2, "cpu_p95"] = 180.0  # impossible: rejected
    m.loc[3, "cpu_p95"] = np.inf
    v = validate(inventory(), m)
    cpu = v.metrics["cpu_p95"]
    assert np.isnan(cpu[0]) and cpu[1] == 100.0 and np.isnan(cpu[2]) and np.isnan(cpu[3])
    assert rule_count(v.report, "out_of_range", "clipped") == 1
    assert rule_count(v.report, "out_of_range", "rejected") == 2
    assert rule_count(v.report, "non_finite") == 1


def test_rates_have_no_upper_bound():
    m = metrics().assign(net_in_p95=5000.0)
    v = validate(inventory(), m)
    assert (v.metrics["net_in_p95"] == 5000.0).all()


def test_rows_with_no_value_left_are_dropped():
    m = metrics()
    m.loc[5, ["cpu_p95", "mem_p95"]] = np.nan
    v = validate(inventory(), m)
    assert len(v.metrics) == 39
    assert rule_count(v.report, "no_values") == 1


def test_timestamps_normalised_to_utc_period_start():
    m = metrics(days=30)
    m["timestamp"] = m["timestamp"].dt.tz_convert("America/New_York").dt.tz_localize(None).astype(str)
    m["timestamp"] = (pd.to_datetime(m["timestamp"]) + pd.Timedelta(hours=13)).dt.tz_localize(
        "America/New_York"
    )
    v = validate(inventory(), m)
    ts = v.metrics["timestamp"]
    assert str(ts.dt.tz) == "UTC"
    assert (ts == ts.dt.floor("D")).all()


def test_naive_timestamps_taken_as_utc_and_strings_parsed():
    m = metrics(days=30)
    m["timestamp"] = m["timestamp"].dt.strftime("%Y-%m-%d 10:30:00")
    v = validate(inventory(), m)
    assert v.metrics["timestamp"].iloc[0] == pd.Timestamp("2025-01-01", tz="UTC")


def test_unparseable_timestamps_dropped():
    m = metrics(days=30).astype({"timestamp": object})
    m.loc[0, "timestamp"] = "yesterday-ish"
    v = validate(inventory(), m)
    assert len(v.metrics) == 29
    assert rule_count(v.report, "bad_timestamp") == 1


def test_hourly_floor():
    m = metrics(days=30)
    m["timestamp"] = m["timestamp"] + pd.Timedelta(minutes=35)
    v = validate(inventory(), m, freq="hourly")
    assert (v.metrics["timestamp"].dt.minute == 0).all()


def test_gaps_found_short_and_long():
    m = metrics(days=60).drop(index=[10, 11, 30, 31, 32, 33, 34, 35, 36]).reset_index(drop=True)
    v = validate(inventory(), m)
    gaps = v.report.gaps
    assert list(gaps["periods"]) == [2, 7]
    assert list(gaps["interpolable"]) == [True, False]
    assert gaps["start"].iloc[0] == pd.Timestamp("2025-01-11", tz="UTC")
    assert rule_count(v.report, "short_gap") == 1 and rule_count(v.report, "long_gap") == 1


def test_short_series_flagged_not_dropped():
    m = metrics(["srv-000", "srv-001"], days=MIN_HISTORY["daily"])
    m = m[~((m["server_id"] == "srv-001") & (m.index % 40 >= 10))]
    v = validate(inventory(), m)
    assert v.report.short_series == ["srv-001"]
    assert (v.metrics["server_id"] == "srv-001").sum() == 10


def test_unknown_frequency_is_clear():
    with pytest.raises(SchemaError, match="unknown frequency 'weekly'"):
        freq_alias("weekly")


def test_report_lines_and_frame():
    v = validate(inventory(), metrics(["srv-000", "nope"]))
    assert v.report.lines()[0].startswith("inventory: 2 rows in, 2 rows out")
    frame = v.report.to_frame()
    assert set(frame.columns) >= {"table", "rule", "action", "count", "detail"}


def test_contract_columns_are_complete():
    assert list(INVENTORY_COLUMNS)[:1] == ["server_id"]
    assert len(INVENTORY_COLUMNS) == 11


# --------------------------------------------------------------------------- placement columns


def finding(report, rule: str):
    """The one finding of ``rule`` (its report line is what a planner reads)."""
    found = [f for f in report.findings if f.rule == rule]
    assert len(found) == 1, [f.line() for f in report.findings]
    return found[0]


def test_optional_columns_absent_come_out_unknown():
    clean, report = validate_inventory(inventory(2))
    assert report.clean
    assert list(clean.columns) == [*INVENTORY_COLUMNS, *OPTIONAL_INVENTORY_COLUMNS]
    assert str(clean["pinned"].dtype) == "boolean"
    assert all(str(clean[c].dtype) == "string" for c in ("dr_role", "dr_partner_id", "anti_affinity_group"))
    assert clean[list(OPTIONAL_INVENTORY_COLUMNS)].isna().all().all()
    # missing pinned = unknown = not pinned: what a consumer gets with fillna(False)
    assert not clean["pinned"].fillna(False).any()


def test_optional_columns_present_and_clean_are_kept():
    inv = inventory(3).assign(
        dr_role=["primary", "standby", None],
        dr_partner_id=["srv-001", "srv-000", None],
        anti_affinity_group=["grp-0001", None, "grp-0001"],
        pinned=[True, False, None],
    )
    clean, report = validate_inventory(inv)
    assert report.clean, report.lines()
    assert clean["dr_role"].tolist()[:2] == ["primary", "standby"]
    assert clean["dr_partner_id"].tolist()[:2] == ["srv-001", "srv-000"]
    assert clean["anti_affinity_group"].tolist()[0] == "grp-0001" and clean["anti_affinity_group"].isna()[1]
    assert clean["pinned"].tolist()[:2] == [True, False] and clean["pinned"].isna()[2]


def test_dr_role_normalised_and_invalid_rejected():
    inv = inventory(4).assign(dr_role=[" Primary ", "STANDBY", "backup", "  "])
    clean, report = validate_inventory(inv)
    assert clean["dr_role"].tolist()[:2] == ["primary", "standby"]
    assert clean["dr_role"].isna().tolist()[2:] == [True, True]  # invalid and blank: unknown
    f = finding(report, "invalid_dr_role")
    assert (f.action, f.count) == ("rejected", 1)
    assert f.line() == (
        "[inventory] invalid_dr_role: 1 rejected — dr_role not one of primary/standby, "
        "set to missing (unknown) (e.g. srv-002='backup')"
    )


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ([True, False, None], [True, False, None]),
        ([1, 0, np.nan], [True, False, None]),
        (["TRUE", "false", ""], [True, False, None]),
        (["Yes", " no ", "Y"], [True, False, True]),
        (["n", "1", "0"], [False, True, False]),
        (pd.array([True, None, False], dtype="boolean"), [True, None, False]),
    ],
)
def test_pinned_parsed_from_bools_numbers_and_words(raw, expected):
    clean, report = validate_inventory(inventory(3).assign(pinned=raw))
    assert report.clean, report.lines()
    assert [None if pd.isna(v) else v for v in clean["pinned"]] == expected


def test_pinned_other_values_rejected_to_unknown():
    clean, report = validate_inventory(inventory(4).assign(pinned=["maybe", 2, "yes", "oui"]))
    assert clean["pinned"].isna().tolist() == [True, True, False, True]
    assert clean["pinned"][2]
    f = finding(report, "invalid_pinned")
    assert (f.action, f.count) == ("rejected", 3)
    assert f.line() == (
        "[inventory] invalid_pinned: 3 rejected — pinned is not a yes/no value (true/false, yes/no, y/n, "
        "1/0), set to missing (not pinned) (e.g. srv-000='maybe', srv-001=2, srv-003='oui')"
    )


def test_dr_partner_not_in_inventory_rejected():
    clean, report = validate_inventory(inventory(2).assign(dr_partner_id=["ghost-9", None]))
    assert clean["dr_partner_id"].isna().all()
    f = finding(report, "unknown_dr_partner")
    assert (f.action, f.count, f.examples) == ("rejected", 1, ["srv-000='ghost-9'"])
    assert "not a server in the inventory, set to missing" in f.line()


def test_dr_partner_checked_after_duplicates_and_blank_ids_are_dropped():
    inv = pd.concat([inventory(2), inventory(1).assign(server_id=" ")], ignore_index=True)
    inv["dr_partner_id"] = ["srv-001", "srv-000", "srv-000"]
    clean, report = validate_inventory(inv)
    assert clean["dr_partner_id"].tolist() == ["srv-001", "srv-000"]
    assert rule_count(report, "unknown_dr_partner") == 0 and rule_count(report, "missing_server_id") == 1


def test_dr_partner_naming_itself_rejected():
    clean, report = validate_inventory(inventory(2).assign(dr_partner_id=[" srv-000", None]))
    assert clean["dr_partner_id"].isna().all()
    f = finding(report, "dr_partner_self")
    assert (f.action, f.count, f.examples) == ("rejected", 1, ["srv-000"])
    assert rule_count(report, "unknown_dr_partner") == 0


def test_non_reciprocal_dr_pairs_flagged_and_kept():
    # A names B, B names C, C names B: only A's statement is one-sided
    inv = inventory(4).assign(dr_partner_id=["srv-001", "srv-002", "srv-001", "srv-002"])
    clean, report = validate_inventory(inv)
    assert clean["dr_partner_id"].tolist() == ["srv-001", "srv-002", "srv-001", "srv-002"]  # kept
    f = finding(report, "dr_partner_not_reciprocal")
    assert (f.action, f.count) == ("flagged", 2)
    assert f.examples == ["srv-000→srv-001→srv-002", "srv-003→srv-002→srv-001"]
    assert "kept as given" in f.line()
    # B naming nobody is one-sided too
    _, report = validate_inventory(inventory(2).assign(dr_partner_id=["srv-001", None]))
    assert finding(report, "dr_partner_not_reciprocal").examples == ["srv-000→srv-001→none"]


def test_anti_affinity_group_stripped_blank_is_unknown():
    clean, report = validate_inventory(inventory(3).assign(anti_affinity_group=[" grp-0012 ", "", "\t"]))
    assert report.clean
    assert clean["anti_affinity_group"][0] == "grp-0012"
    assert clean["anti_affinity_group"].isna().tolist() == [False, True, True]


def test_hostile_strings_kept_like_other_text_and_reported_short():
    long = "g" * 100_000
    inv = inventory(3)
    inv["business_unit"] = ["Retail\x1b[31m", "Retail", "Retail"]
    inv["anti_affinity_group"] = [long, "grp\x00\x07", None]
    inv["dr_role"] = ["primary\x00", None, None]
    inv["dr_partner_id"] = ["srv-001\x00; DROP TABLE", None, None]
    clean, report = validate_inventory(inv)
    # text is stripped of surrounding whitespace only, as the contract's other string columns are
    assert clean["business_unit"][0] == "Retail\x1b[31m"
    assert clean["anti_affinity_group"].tolist()[:2] == [long, "grp\x00\x07"]
    # values that must be known words or servers are not, so they become unknown, reported
    assert clean["dr_role"].isna().all() and clean["dr_partner_id"].isna().all()
    assert rule_count(report, "invalid_dr_role") == 1 and rule_count(report, "unknown_dr_partner") == 1
    assert all(len(line) < 400 for line in report.lines())  # examples are cut short, escaped
    assert "srv-000='primary\\x00'" in finding(report, "invalid_dr_role").examples


def test_validating_twice_changes_nothing():
    inv = inventory(3).assign(dr_role=["Primary", "standby", "x"], pinned=["y", "0", "?"])
    once, _ = validate_inventory(inv)
    twice, report = validate_inventory(once)
    assert report.clean
    pd.testing.assert_frame_equal(once, twice)


def test_dr_partner_may_be_a_server_known_elsewhere():
    # an inventory file merged into a store: its partner lives in the store, not in the file
    inv = inventory(2).assign(dr_partner_id=["srv-in-store", "srv-000"])
    clean, report = validate_inventory(inv, known_servers=["srv-in-store"])
    assert clean["dr_partner_id"].tolist() == ["srv-in-store", "srv-000"]
    assert rule_count(report, "unknown_dr_partner") == 0
    # srv-001 → srv-000 → srv-in-store is one-sided within the file; srv-000's partner is judged later
    assert finding(report, "dr_partner_not_reciprocal").examples == ["srv-001→srv-000→srv-in-store"]
    _, alone = validate_inventory(inv)
    assert rule_count(alone, "unknown_dr_partner") == 1
