"""Every validation rule of the data contract, one test each."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting.schema import (
    INVENTORY_COLUMNS,
    MIN_HISTORY,
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
