"""Ingest of raw telemetry: real NAB CloudWatch files, every rule of the rollup, every refusal."""

from __future__ import annotations

import gzip
import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.files import FileFormatError
from forecasting.ingest import (
    COVERAGE_COLUMNS,
    PARTIAL_COVERAGE,
    SAMPLE_COLUMNS,
    UnsupportedMetricError,
    ingest,
    name_parts,
    read_samples,
    resolve_metric,
    rollup,
)
from forecasting.schema import (
    ALL_INVENTORY_COLUMNS,
    OPTIONAL_INVENTORY_COLUMNS,
    UNKNOWN,
    SchemaError,
)

NAB = Path(__file__).parent / "data" / "nab" / "realAWSCloudwatch"
CPU_FILES = {
    "ec2_cpu_utilization_24ae8d.csv": "ec2-24ae8d",
    "ec2_cpu_utilization_53ea38.csv": "ec2-53ea38",
    "ec2_cpu_utilization_5f5533.csv": "ec2-5f5533",
    "ec2_cpu_utilization_77c1ca.csv": "ec2-77c1ca",
    "rds_cpu_utilization_cc0c53.csv": "rds-cc0c53",
}
NET_IN = NAB / "ec2_network_in_257a54.csv"
DISK_WRITE = NAB / "ec2_disk_write_bytes_1ef3de.csv"
ALIAS = {"daily": "D", "hourly": "h"}


def raw_periods(path: Path, freq: str) -> pd.DataFrame:
    """Independent reference: per-period count, median, p95 and max of the raw file (pandas)."""
    raw = pd.read_csv(path)
    ts = pd.to_datetime(raw["timestamp"]).dt.tz_localize("UTC").dt.floor(ALIAS[freq])
    g = raw["value"].groupby(ts.rename("timestamp"))
    return pd.DataFrame(
        {"n": g.size(), "median": g.median(), "p95": g.quantile(0.95), "max": g.max()}
    ).reset_index()


def samples_frame(rows: list[tuple[str, str, str, float]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=SAMPLE_COLUMNS)
    df["timestamp"] = pd.to_datetime(df["timestamp"], utc=True)
    return df


def regular(server: str, metric: str, start: str, periods: int, step: str, values) -> pd.DataFrame:
    ts = pd.date_range(start, periods=periods, freq=step, tz="UTC")
    return pd.DataFrame({"server_id": server, "timestamp": ts, "metric": metric, "value": values})


def write_series(path: Path, ts, values) -> Path:
    pd.DataFrame({"timestamp": ts, "value": values}).to_csv(path, index=False)
    return path


# --------------------------------------------------------------------------- names and metrics


@pytest.mark.parametrize(
    ("name", "server", "raw"),
    [
        ("ec2_cpu_utilization_24ae8d.csv", "ec2-24ae8d", "cpu_utilization"),
        ("rds_cpu_utilization_cc0c53.csv", "rds-cc0c53", "cpu_utilization"),
        ("ec2_network_in_257a54.csv", "ec2-257a54", "network_in"),
        ("ec2_disk_write_bytes_1ef3de.csv.gz", "ec2-1ef3de", "disk_write_bytes"),
        ("iio_us-east-1_i-a2eb1cd9_NetworkIn.parquet", "iio-us-east-1-i-a2eb1cd9", "NetworkIn"),
        ("cpu_utilization.csv", None, "cpu_utilization"),
        ("mem_used_percent_web01.csv", "web01", "mem_used_percent"),
        ("web01_CPUUtilization.csv", "web01", "CPUUtilization"),
    ],
)
def test_name_parts_recognised(name, server, raw):
    parts = name_parts(name)
    assert (parts.server_id, parts.raw_metric, parts.recognised) == (server, raw, True)


def test_name_parts_unrecognised_keeps_stem_as_server():
    parts = name_parts("elb_request_latency_x_8c0756.csv")
    assert parts.recognised is False
    assert parts.server_id == "elb_request_latency_x_8c0756"
    assert parts.raw_metric == "request_latency_x"  # a guess, for the error message only
    # a bare "cpu" inside a longer unknown name is not taken for CPU utilisation
    assert name_parts("ec2_cpu_steal_abc.csv").recognised is False


@pytest.mark.parametrize(
    ("raw", "metric", "unit"),
    [
        ("CPUUtilization", "cpu_p95", "percent"),
        ("cpu", "cpu_p95", "percent"),
        ("mem_used_percent", "mem_p95", "percent"),
        ("MemoryUtilization", "mem_p95", "percent"),
        ("disk_used_percent", "disk_p95", "percent"),
        ("DiskSpaceUtilization", "disk_p95", "percent"),
        ("NetworkIn", "net_in_p95", "bytes"),
        ("network_out", "net_out_p95", "bytes"),
        ("net_in_p95", "net_in_p95", "Mbps"),
        ("disk_p95", "disk_p95", "percent"),
    ],
)
def test_raw_metric_table(raw, metric, unit):
    assert resolve_metric(raw) == (metric, unit)


def test_unit_override_and_kind_mismatch():
    assert resolve_metric("cpu_utilization", unit="fraction") == ("cpu_p95", "fraction")
    assert resolve_metric("NetworkIn", unit="bytes/s") == ("net_in_p95", "bytes/s")
    assert resolve_metric(None, metric="net_out_p95") == ("net_out_p95", "Mbps")
    with pytest.raises(SchemaError, match="unit 'bytes' cannot describe cpu_p95"):
        resolve_metric("cpu", unit="bytes", where="f.csv")
    with pytest.raises(SchemaError, match="unknown unit 'furlongs'"):
        resolve_metric("cpu", unit="furlongs")
    with pytest.raises(SchemaError, match="unit 'bytes' cannot describe cpu_p95"):
        resolve_metric("network_in", metric="cpu_p95")
    with pytest.raises(SchemaError, match="unknown metric 'cpu'"):
        resolve_metric("whatever", metric="cpu")


def test_unknown_and_non_capacity_metrics_are_refused():
    with pytest.raises(
        UnsupportedMetricError, match=r"f\.csv: raw metric 'request_count' is a request count"
    ):
        resolve_metric("request_count", where="f.csv")
    with pytest.raises(UnsupportedMetricError, match="'mem_available_percent' is the free memory share"):
        resolve_metric("mem_available_percent")
    with pytest.raises(UnsupportedMetricError, match="'gpu_temp' is not a known capacity metric"):
        resolve_metric("gpu_temp")
    with pytest.raises(SchemaError, match="cannot tell which metric"):
        resolve_metric(None)
    # a count can never be tracked as a rate in Mbps, even on request
    with pytest.raises(UnsupportedMetricError, match="only byte counts"):
        resolve_metric("request_count", metric="net_in_p95")


# --------------------------------------------------------------------------- real NAB files


@pytest.mark.parametrize("name", sorted(CPU_FILES))
@pytest.mark.parametrize("freq", ["daily", "hourly"])
def test_nab_cpu_file_rolls_up_to_p95(name, freq):
    path = NAB / name
    result = ingest(path, freq=freq)
    m = result.metrics
    assert list(m.columns) == ["server_id", "timestamp", "cpu_p95"]
    assert set(m["server_id"]) == {CPU_FILES[name]}
    if freq == "daily":
        assert 14 <= len(m) <= 15
    else:
        assert 330 <= len(m) <= 340
    assert str(m["timestamp"].dt.tz) == "UTC"
    assert m["cpu_p95"].between(0, 100).all()

    ref = raw_periods(path, freq).merge(m, on="timestamp", how="inner", validate="1:1")
    assert len(ref) == len(m)  # every output period exists in the raw data
    assert (ref["cpu_p95"] >= ref["median"] - 1e-12).all()
    assert (ref["cpu_p95"] <= ref["max"] + 1e-12).all()
    np.testing.assert_allclose(ref["cpu_p95"], ref["p95"], rtol=1e-12)
    expected = 288 if freq == "daily" else 12
    assert (ref["n"] >= expected * 0.5).all()  # periods under half their samples were dropped


def test_nab_partial_first_and_last_days_are_dropped_or_flagged():
    result = ingest(NAB / "ec2_cpu_utilization_24ae8d.csv")  # 2014-02-14 14:30 → 2014-02-28 14:25
    cov = result.coverage
    assert list(cov.columns) == COVERAGE_COLUMNS
    first = cov.iloc[0]
    last = cov.iloc[-1]
    assert first["timestamp"] == pd.Timestamp("2014-02-14", tz="UTC")
    assert first["samples"] == 114 and first["status"] == "dropped"
    assert first["coverage"] == pytest.approx(114 / 288)
    assert last["timestamp"] == pd.Timestamp("2014-02-28", tz="UTC")
    assert last["samples"] == 174 and last["status"] == "partial"
    assert (cov["status"].iloc[1:-1] == "complete").all()
    assert (cov["expected"] == 288).all()
    assert result.report.count("low_coverage") == 1
    assert result.report.count("partial_period") == 1
    assert pd.Timestamp("2014-02-14", tz="UTC") not in set(result.metrics["timestamp"])
    assert pd.Timestamp("2014-02-28", tz="UTC") in set(result.metrics["timestamp"])
    assert any("2014-02-14" in f.line() for f in result.report.findings if f.rule == "low_coverage")


def test_min_coverage_is_the_stated_minimum():
    lenient = ingest(NAB / "ec2_cpu_utilization_24ae8d.csv", min_coverage=0.3)
    assert len(lenient.metrics) == 15  # the 40 % first day is now kept ...
    assert lenient.report.count("partial_period") == 2  # ... and flagged
    with pytest.raises(ValueError, match="min_coverage"):
        ingest(NAB / "ec2_cpu_utilization_24ae8d.csv", min_coverage=0)


def test_nab_network_in_is_converted_to_mbps():
    for freq in ("daily", "hourly"):
        m = ingest(NET_IN, freq=freq).metrics
        assert list(m.columns) == ["server_id", "timestamp", "net_in_p95"]
        assert set(m["server_id"]) == {"ec2-257a54"}
        ref = raw_periods(NET_IN, freq).merge(m, on="timestamp", validate="1:1")
        # bytes per 5-minute sample -> Mbps: * 8 bits / 300 s / 1e6
        np.testing.assert_allclose(ref["net_in_p95"], ref["p95"] * 8 / 300 / 1e6, rtol=1e-12)
    # plausible magnitude for an EC2 instance: well under its 10 Gbps link, above idle chatter
    assert 0.001 < m["net_in_p95"].median() < 100
    assert m["net_in_p95"].max() < 10_000


def test_nab_disk_write_bytes_is_not_a_capacity_metric():
    with pytest.raises(UnsupportedMetricError) as info:
        ingest(DISK_WRITE)
    message = str(info.value)
    assert str(DISK_WRITE) in message
    assert "'disk_write_bytes' is disk I/O throughput" in message
    assert "not a capacity metric" in message
    # bytes are never a share of disk space, even on explicit request
    with pytest.raises(UnsupportedMetricError, match="cannot be tracked as disk_p95"):
        ingest(DISK_WRITE, metric="disk_p95")


def test_nab_disk_write_bytes_as_explicit_rate_metric_reports_duplicates_and_gaps():
    result = ingest(DISK_WRITE, metric="net_out_p95", freq="hourly")
    assert list(result.metrics.columns) == ["server_id", "timestamp", "net_out_p95"]
    assert set(result.metrics["server_id"]) == {"ec2-1ef3de"}
    assert (result.metrics["net_out_p95"] >= 0).all()
    # the real file repeats 11 timestamps with identical values
    assert result.report.count("duplicate_sample") == 11
    # ... and skips 2014-03-09 02:00 (naive local time over a DST change, read as UTC)
    gaps = result.report.gaps
    assert len(gaps) == 1
    assert gaps.iloc[0]["start"] == pd.Timestamp("2014-03-09 02:00", tz="UTC")
    assert result.report.count("short_gap") == 1


def test_nab_files_together_make_one_fleet():
    files = [NAB / n for n in CPU_FILES] + [NET_IN]
    result = ingest(files, freq="hourly")
    m = result.metrics
    assert set(m["server_id"]) == {*CPU_FILES.values(), "ec2-257a54"}
    assert list(m.columns) == ["server_id", "timestamp", "cpu_p95", "net_in_p95"]
    assert m.loc[m["server_id"] == "ec2-257a54", "cpu_p95"].isna().all()
    assert len(result.inventory) == 6
    assert result.report.count("added_server") == 6
    assert len(result.report.short_series) == 0  # 14 days hourly is plenty of history
    assert result.report.rows_in["samples"] == 6 * 4032


def test_nab_directory_stops_at_the_unsupported_file():
    with pytest.raises(UnsupportedMetricError, match=r"ec2_disk_write_bytes_1ef3de\.csv"):
        ingest(NAB)


def test_same_server_metrics_from_several_files_merge_into_one_wide_frame(tmp_path):
    cpu = shutil.copy(NAB / "ec2_cpu_utilization_24ae8d.csv", tmp_path / "ec2_cpu_utilization_24ae8d.csv")
    net_raw = pd.read_csv(NET_IN)
    cpu_raw = pd.read_csv(cpu)
    # the network file moved onto the CPU file's dates, as if from the same instance
    net = write_series(tmp_path / "ec2_network_in_24ae8d.csv", cpu_raw["timestamp"], net_raw["value"])
    result = ingest([cpu, net])
    m = result.metrics
    assert set(m["server_id"]) == {"ec2-24ae8d"}
    assert list(m.columns) == ["server_id", "timestamp", "cpu_p95", "net_in_p95"]
    assert len(m) == 14
    assert m[["cpu_p95", "net_in_p95"]].notna().all().all()
    assert len(result.inventory) == 1


# --------------------------------------------------------------------------- long format


def test_long_format_ingest_maps_names_and_drops_unsupported_rows(tmp_path):
    cpu = pd.read_csv(NAB / "ec2_cpu_utilization_24ae8d.csv")
    net = pd.read_csv(NET_IN)
    disk = pd.read_csv(DISK_WRITE)
    long = pd.concat(
        [
            cpu.assign(server_id="i-0001", metric="CPUUtilization"),
            net.assign(server_id="i-0002", metric="NetworkIn"),
            disk.assign(server_id="i-0001", metric="DiskWriteBytes"),
        ]
    )[["server_id", "timestamp", "metric", "value"]]
    path = tmp_path / "cloudwatch_export.parquet"
    long.to_parquet(path)

    result = ingest(path, freq="hourly")
    m = result.metrics
    assert set(m["server_id"]) == {"i-0001", "i-0002"}
    assert list(m.columns) == ["server_id", "timestamp", "cpu_p95", "net_in_p95"]
    finding = next(f for f in result.report.findings if f.rule == "unsupported_metric")
    assert finding.count == len(disk)
    assert "DiskWriteBytes" in finding.detail and "cloudwatch_export.parquet" in finding.detail

    # same numbers as ingesting the one-series files
    single = ingest(NAB / "ec2_cpu_utilization_24ae8d.csv", freq="hourly").metrics
    got = m[m["server_id"] == "i-0001"].reset_index(drop=True)
    np.testing.assert_allclose(got["cpu_p95"], single["cpu_p95"])
    assert got["timestamp"].equals(single["timestamp"])


def test_long_format_without_any_capacity_metric_is_refused(tmp_path):
    path = tmp_path / "export.csv"
    pd.DataFrame(
        {
            "server_id": "a",
            "timestamp": ["2025-01-01 00:00", "2025-01-01 00:05"],
            "metric": "RequestCount",
            "value": 1,
        }
    ).to_csv(path, index=False)
    with pytest.raises(UnsupportedMetricError, match=r"export\.csv: no capacity metric.*RequestCount"):
        ingest(path)


def test_long_format_with_conflicting_arguments(tmp_path):
    path = tmp_path / "export.csv"
    pd.DataFrame({"server_id": "a", "timestamp": ["2025-01-01 00:00"], "metric": "cpu", "value": 1}).to_csv(
        path, index=False
    )
    with pytest.raises(SchemaError, match="has a server_id column"):
        read_samples(path, server_id="b")
    with pytest.raises(SchemaError, match="has a metric column"):
        read_samples(path, metric="cpu_p95")


def test_server_id_column_without_metric_column_takes_metric_from_name(tmp_path):
    path = tmp_path / "cpu_utilization.csv"
    pd.DataFrame(
        {
            "server_id": ["a", "a", "b"],
            "timestamp": ["2025-01-01 00:00", "2025-01-01 00:05"] * 1 + ["2025-01-01 00:00"],
            "value": [1, 2, 3],
        }
    ).to_csv(path, index=False)
    s = read_samples(path)
    assert s["metric"].unique().tolist() == ["cpu_p95"]
    assert s["server_id"].tolist() == ["a", "a", "b"]


# --------------------------------------------------------------------------- arguments and refusals


def test_explicit_server_and_metric_for_one_file(tmp_path):
    path = shutil.copy(NAB / "ec2_cpu_utilization_24ae8d.csv", tmp_path / "export-17.csv")
    result = ingest(path, server_id="web-01", metric="cpu_p95")
    assert set(result.metrics["server_id"]) == {"web-01"}
    assert result.metrics["cpu_p95"].notna().all()
    with pytest.raises(SchemaError, match=r"export-17\.csv: cannot tell which metric"):
        ingest(path)  # the name says nothing: the caller must


@pytest.mark.parametrize(
    "kwargs", [{"server_id": "x"}, {"metric": "cpu_p95"}, {"server_id": "x", "metric": "cpu_p95"}]
)
def test_server_or_metric_with_several_files_is_ambiguous(kwargs):
    files = [NAB / "ec2_cpu_utilization_24ae8d.csv", NAB / "ec2_cpu_utilization_53ea38.csv"]
    with pytest.raises(SchemaError, match="ambiguous with 2 files"):
        ingest(files, **kwargs)


def test_unknown_extension_via_ingest(tmp_path):
    path = tmp_path / "ec2_cpu_utilization_x.xlsx"
    path.write_bytes(b"PK\x03\x04")
    with pytest.raises(
        FileFormatError, match=r"ec2_cpu_utilization_x\.xlsx has an unsupported type '\.xlsx'"
    ):
        ingest(path)


def test_truncated_parquet_via_ingest(tmp_path):
    good = tmp_path / "good.parquet"
    pd.read_csv(NAB / "ec2_cpu_utilization_24ae8d.csv").to_parquet(good)
    data = good.read_bytes()
    path = tmp_path / "ec2_cpu_utilization_24ae8d.parquet"
    path.write_bytes(data[: len(data) - 100])
    with pytest.raises(
        FileFormatError, match=r"is not a readable Parquet file \(truncated or corrupt\?\)"
    ) as info:
        ingest(path)
    assert str(path) in str(info.value)


def test_missing_value_column_names_column_and_file(tmp_path):
    path = tmp_path / "ec2_cpu_utilization_aa.csv"
    pd.DataFrame({"timestamp": ["2025-01-01 00:00"], "val": [1.0]}).to_csv(path, index=False)
    with pytest.raises(SchemaError) as info:
        ingest(path)
    message = str(info.value)
    assert "missing required column(s): value" in message
    assert str(path) in message


def test_missing_file_and_empty_directory(tmp_path):
    with pytest.raises(FileFormatError, match="not found"):
        ingest(tmp_path / "ec2_cpu_utilization_zz.csv")
    with pytest.raises(FileFormatError, match="holds no sample files"):
        ingest(tmp_path)
    with pytest.raises(SchemaError, match="no input files"):
        ingest([])


def test_text_in_value_column_is_rejected_and_reported(tmp_path):
    raw = pd.read_csv(NAB / "ec2_cpu_utilization_53ea38.csv")
    raw["value"] = raw["value"].astype(str)
    raw.loc[[500, 1500, 2500], "value"] = ["error", "--", "12 %"]
    raw.loc[3000, "value"] = None
    path = tmp_path / "ec2_cpu_utilization_53ea38.csv"
    raw.to_csv(path, index=False)
    result = ingest(path)
    finding = next(f for f in result.report.findings if f.rule == "non_numeric")
    assert finding.count == 3 and finding.action == "rejected"
    assert "'error'" in finding.line()
    assert result.report.count("missing_value") == 1
    assert result.report.rows_out["samples"] <= 4032 - 4
    assert len(result.metrics) == 14


def test_gap_days_are_found(tmp_path):
    raw = pd.read_csv(NAB / "ec2_cpu_utilization_5f5533.csv")
    day = pd.to_datetime(raw["timestamp"]).dt.floor("D")
    raw = raw[~day.isin(pd.to_datetime(["2014-02-20", "2014-02-21"]))]
    path = tmp_path / "ec2_cpu_utilization_5f5533.csv"
    raw.to_csv(path, index=False)
    result = ingest(path)
    gaps = result.report.gaps
    assert len(gaps) == 1
    assert gaps.iloc[0]["start"] == pd.Timestamp("2014-02-20", tz="UTC")
    assert gaps.iloc[0]["periods"] == 2
    assert result.report.count("short_gap") == 1


def test_nothing_left_is_an_error(tmp_path):
    path = write_series(
        tmp_path / "ec2_cpu_utilization_ab.csv", ["2025-01-01 00:00", "2025-01-01 00:05"], [1, 2]
    )
    with pytest.raises(SchemaError, match=r"nothing ingested.*low_coverage"):
        ingest(path)  # two 5-minute samples are 1 % of a day
    with pytest.raises(SchemaError, match="no usable samples"):
        ingest(write_series(tmp_path / "ec2_cpu_utilization_cd.csv", ["x", "y"], [1, 2]))


# --------------------------------------------------------------------------- inventory


def test_without_inventory_every_server_is_added_as_unknown():
    result = ingest([NAB / "ec2_cpu_utilization_24ae8d.csv", NET_IN])
    inv = result.inventory
    assert list(inv.columns) == ALL_INVENTORY_COLUMNS
    assert inv[list(OPTIONAL_INVENTORY_COLUMNS)].isna().all().all()  # placement facts: unknown
    assert sorted(inv["server_id"]) == ["ec2-24ae8d", "ec2-257a54"]
    assert (inv["business_unit"] == UNKNOWN).all() and (inv["criticality"] == UNKNOWN).all()
    assert (inv["hostname"] == inv["server_id"]).all()
    assert inv[["cpu_cores", "memory_gb", "disk_gb", "monthly_cost_usd"]].isna().all().all()
    assert result.report.count("added_server") == 2
    assert sorted(result.added_servers) == ["ec2-24ae8d", "ec2-257a54"]


def known_inventory(server_id: str) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "server_id": server_id,
                "hostname": "lon-web-01",
                "business_unit": "Retail",
                "region": "emea",
                "environment": "prod",
                "criticality": "high",
                "server_type": "web",
                "cpu_cores": 4,
                "memory_gb": 16,
                "disk_gb": 200,
                "monthly_cost_usd": 150,
            }
        ]
    )


def test_given_inventory_rejects_unknown_servers():
    files = [NAB / "ec2_cpu_utilization_24ae8d.csv", NAB / "ec2_cpu_utilization_53ea38.csv"]
    result = ingest(files, inventory=known_inventory("ec2-24ae8d"))
    assert set(result.metrics["server_id"]) == {"ec2-24ae8d"}
    finding = next(f for f in result.report.findings if f.rule == "unknown_server")
    assert finding.action == "rejected" and finding.count == 14 and finding.examples == ["ec2-53ea38"]
    assert result.report.count("added_server") == 0
    assert result.inventory["business_unit"].tolist() == ["Retail"]
    assert result.report.rows_out["metrics"] == 14


def test_given_inventory_can_add_missing_servers_on_request():
    files = [NAB / "ec2_cpu_utilization_24ae8d.csv", NAB / "ec2_cpu_utilization_53ea38.csv"]
    result = ingest(files, inventory=known_inventory("ec2-24ae8d"), add_missing=True)
    assert set(result.metrics["server_id"]) == {"ec2-24ae8d", "ec2-53ea38"}
    inv = result.inventory.set_index("server_id")
    assert inv.loc["ec2-24ae8d", "business_unit"] == "Retail"
    assert inv.loc["ec2-53ea38", "business_unit"] == UNKNOWN
    assert np.isnan(inv.loc["ec2-53ea38", "cpu_cores"])
    assert result.added_servers == ["ec2-53ea38"]


def test_inventory_with_no_server_of_the_samples_leaves_nothing():
    with pytest.raises(SchemaError, match=r"nothing ingested.*unknown_server"):
        ingest(NAB / "ec2_cpu_utilization_24ae8d.csv", inventory=known_inventory("srv-00001"))


def test_inventory_missing_columns_is_a_schema_error():
    with pytest.raises(SchemaError, match=r"inventory.*missing required column"):
        ingest(NAB / "ec2_cpu_utilization_24ae8d.csv", inventory=pd.DataFrame({"server_id": ["a"]}))


# --------------------------------------------------------------------------- timestamps and units


def test_naive_aware_and_epoch_timestamps_agree(tmp_path):
    base = pd.date_range("2025-03-01", periods=288 * 3, freq="5min")
    values = np.random.default_rng(3).uniform(0, 80, len(base))
    naive = write_series(tmp_path / "a_cpu_utilization_1.csv", base.strftime("%Y-%m-%d %H:%M:%S"), values)
    # the same instants written in New York time with an offset
    local = base.tz_localize("UTC").tz_convert("America/New_York")
    aware = write_series(tmp_path / "a_cpu_utilization_2.csv", local.strftime("%Y-%m-%dT%H:%M:%S%z"), values)
    since = base - pd.Timestamp("1970-01-01")
    epoch = write_series(tmp_path / "a_cpu_utilization_3.csv", since // pd.Timedelta("1s"), values)
    epoch_ms = write_series(tmp_path / "a_cpu_utilization_4.csv", since // pd.Timedelta("1ms"), values)
    frames = [read_samples(p) for p in (naive, aware, epoch, epoch_ms)]
    for f in frames:
        assert str(f["timestamp"].dt.tz) == "UTC"
        assert f["timestamp"].equals(frames[0]["timestamp"])
        np.testing.assert_array_equal(f["value"], values)
    assert frames[0]["timestamp"].iloc[0] == pd.Timestamp("2025-03-01", tz="UTC")


def test_bad_timestamps_are_dropped_and_reported(tmp_path):
    ts = list(pd.date_range("2025-01-01", periods=288, freq="5min").strftime("%Y-%m-%d %H:%M"))
    ts[10] = "yesterday-ish"
    ts[20] = ""
    path = write_series(tmp_path / "b_cpu_utilization_1.csv", ts, np.arange(288.0) % 50)
    result = ingest(path)
    assert result.report.count("bad_timestamp") == 2
    assert result.coverage["samples"].tolist() == [286]


def test_unit_option_fraction_and_bytes_per_second(tmp_path):
    ts = pd.date_range("2025-01-01", periods=288, freq="5min").strftime("%Y-%m-%d %H:%M")
    frac = write_series(tmp_path / "c_cpu_utilization_1.csv", ts, np.full(288, 0.25))
    assert ingest(frac, unit="fraction").metrics["cpu_p95"].tolist() == [25.0]
    rate = write_series(tmp_path / "c_network_out_1.csv", ts, np.full(288, 1_250_000.0))
    assert ingest(rate, unit="bytes/s").metrics["net_out_p95"].tolist() == [10.0]
    # default for network_out: bytes per 5-minute sample
    assert ingest(rate).metrics["net_out_p95"].tolist() == [pytest.approx(1_250_000 * 8 / 300 / 1e6)]
    with pytest.raises(SchemaError, match="unit 'fraction' cannot describe net_out_p95"):
        ingest(rate, unit="fraction")


# --------------------------------------------------------------------------- rollup rules


def test_rollup_matches_pandas_quantile_on_messy_input():
    rng = np.random.default_rng(7)
    frames = []
    for i in range(12):
        n = int(rng.integers(300, 900))
        step = ["1min", "5min", "10min"][i % 3]
        f = regular(f"s{i}", ["cpu_p95", "mem_p95", "net_in_p95"][i % 3], "2025-01-01 07:00", n, step, 0.0)
        f["value"] = rng.gamma(2.0, 10.0, n).clip(0, 100)
        f = f.sample(frac=0.85, random_state=i)  # random gaps, shuffled order
        frames.append(f)
    samples = pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=0)
    wide, report = rollup(samples, "hourly", min_coverage=0.01)
    assert report.count("low_coverage") == 0

    ref = samples.assign(timestamp=samples["timestamp"].dt.floor("h"))
    ref = (
        ref.groupby(["server_id", "metric", "timestamp"])["value"].quantile(0.95).rename("ref").reset_index()
    )
    got = wide.melt(["server_id", "timestamp"], var_name="metric", value_name="got").dropna()
    both = ref.merge(got, on=["server_id", "metric", "timestamp"], validate="1:1")
    assert len(both) == len(ref) == len(got)
    np.testing.assert_allclose(both["got"], both["ref"], rtol=1e-12)


def test_rollup_known_p95_and_period_start():
    # 12 samples in one hour: values 1..12 -> p95 = 11 + 0.45 (linear interpolation)
    s = regular("a", "cpu_p95", "2025-01-01 10:00", 12, "5min", np.arange(1.0, 13.0))
    wide, _ = rollup(s, "hourly")
    assert wide["cpu_p95"].tolist() == [pytest.approx(11.45)]
    assert wide["timestamp"].tolist() == [pd.Timestamp("2025-01-01 10:00", tz="UTC")]


def test_rollup_duplicates_keep_last_delivered_and_are_reported():
    s = regular("a", "cpu_p95", "2025-01-01 10:00", 12, "5min", np.full(12, 10.0))
    extra = samples_frame(
        [
            ("a", "2025-01-01 10:00", "cpu_p95", 10.0),  # exact copy
            ("a", "2025-01-01 10:05", "cpu_p95", 90.0),  # conflicting, delivered last: wins
        ]
    )
    wide, report = rollup(pd.concat([s, extra], ignore_index=True), "hourly")
    assert report.count("duplicate_sample") == 1
    conflict = next(f for f in report.findings if f.rule == "conflicting_sample")
    assert conflict.count == 1 and conflict.examples == ["a cpu_p95 2025-01-01 10:05"]
    # 11 × 10 and one 90: p95 interpolates between the two top values
    assert wide["cpu_p95"].iloc[0] == pytest.approx(10 + 0.45 * 80)


def test_rollup_rejects_impossible_samples():
    s = regular("a", "cpu_p95", "2025-01-01 10:00", 12, "5min", np.full(12, 20.0))
    s.loc[3, "value"] = 250.0  # 250 % CPU: a broken sensor, not load
    s.loc[4, "value"] = -1.0
    s.loc[5, "value"] = np.inf
    net = regular("a", "net_in_p95", "2025-01-01 10:00", 12, "5min", np.full(12, 500.0))  # no upper bound
    wide, report = rollup(pd.concat([s, net], ignore_index=True), "hourly")
    over = [f for f in report.findings if f.rule == "out_of_range" and "above 105" in f.detail]
    assert len(over) == 1 and over[0].examples == ["a cpu_p95=250"]
    assert report.count("out_of_range") == 2 and report.count("non_finite") == 1
    assert wide["cpu_p95"].iloc[0] == pytest.approx(20.0)
    assert wide["net_in_p95"].iloc[0] == pytest.approx(500.0)


def test_rollup_coarse_sampling_is_an_error():
    s = regular("a", "cpu_p95", "2025-01-01", 48, "2h", np.full(48, 5.0))
    with pytest.raises(
        SchemaError, match=r"sampled less often than the hourly period \(a cpu_p95 every 0 days 02:00"
    ):
        rollup(s, "hourly")
    wide, _ = rollup(s, "daily")
    assert len(wide) == 4


def test_rollup_single_sample_series_is_dropped_and_reported():
    s = pd.concat(
        [
            regular("a", "cpu_p95", "2025-01-01", 288, "5min", np.full(288, 5.0)),
            regular("b", "cpu_p95", "2025-01-01", 1, "5min", [7.0]),
        ],
        ignore_index=True,
    )
    wide, report = rollup(s, "daily")
    assert set(wide["server_id"]) == {"a"}
    finding = next(f for f in report.findings if f.rule == "too_few_samples")
    assert finding.count == 1 and finding.examples == ["b cpu_p95"]


def test_rollup_refuses_non_contract_metric_names_and_bad_frequency():
    s = regular("a", "CPUUtilization", "2025-01-01", 12, "5min", np.ones(12))
    with pytest.raises(SchemaError, match="not contract metrics: CPUUtilization"):
        rollup(s, "daily")
    with pytest.raises(SchemaError, match="unknown frequency 'weekly'"):
        rollup(s.assign(metric="cpu_p95"), "weekly")
    with pytest.raises(SchemaError, match="missing required column"):
        rollup(s.drop(columns="metric"), "daily")


def test_rollup_report_counts_rows():
    s = regular("a", "cpu_p95", "2025-01-01 12:00", 288 * 2, "5min", np.full(288 * 2, 5.0))
    wide, report = rollup(s, "daily")
    assert report.rows_in["samples"] == 576
    assert report.rows_out["samples"] == 144 + 288 + 144  # half days at 50 % are kept, flagged
    assert report.count("partial_period") == 2
    assert 0.5 <= PARTIAL_COVERAGE <= 1
    assert report.rows_out["metrics"] == len(wide) == 3


@pytest.mark.slow
def test_rollup_scales_to_a_fleet():
    """2M samples (100 servers × 5 metrics × 14 days at 5 min) in a few seconds, exact."""
    per = 288 * 14
    n_series = 500
    rng = np.random.default_rng(11)
    base = pd.Timestamp("2025-01-01", tz="UTC").value // 1000
    ts = pd.to_datetime(np.tile(np.arange(per) * 300_000_000, n_series) + base, unit="us", utc=True)
    metrics = np.array(["cpu_p95", "mem_p95", "disk_p95", "net_in_p95", "net_out_p95"])
    samples = pd.DataFrame(
        {
            "server_id": pd.array(
                np.repeat([f"srv-{i // 5:04d}" for i in range(n_series)], per), dtype="str"
            ),
            "timestamp": ts,
            "metric": pd.array(np.tile(np.repeat(metrics, per), n_series // 5), dtype="str"),
            "value": rng.uniform(0, 100, per * n_series),
        }
    )
    t0 = time.perf_counter()
    wide, _ = rollup(samples, "hourly")
    elapsed = time.perf_counter() - t0
    assert len(wide) == 100 * 24 * 14
    assert elapsed < 30, f"{len(samples):,} samples took {elapsed:.1f} s"
    one = samples[(samples["server_id"] == "srv-0042") & (samples["metric"] == "mem_p95")]
    ref = one.groupby(one["timestamp"].dt.floor("h"))["value"].quantile(0.95).to_numpy()
    np.testing.assert_allclose(wide.loc[wide["server_id"] == "srv-0042", "mem_p95"], ref, rtol=1e-12)


def test_long_format_blank_keys_are_reported_and_names_are_trimmed(tmp_path):
    ts = pd.date_range("2025-01-01", periods=288, freq="5min").strftime("%Y-%m-%d %H:%M")
    df = pd.DataFrame({"server_id": "i-1", "timestamp": ts, "metric": "cpu", "value": 10.0})
    df.loc[:99, "server_id"] = " i-1 "  # same server, stray spaces
    df.loc[100, "server_id"] = ""
    df.loc[101, "metric"] = None
    path = tmp_path / "export.csv"
    df.to_csv(path, index=False)
    report_samples = read_samples(path)
    assert list(report_samples.columns) == SAMPLE_COLUMNS
    assert isinstance(report_samples["metric"].dtype, pd.CategoricalDtype)
    assert set(report_samples["server_id"]) == {"i-1"}
    result = ingest(path)
    assert result.report.count("missing_server_id") == 1
    assert result.report.count("missing_metric") == 1
    assert result.coverage["samples"].tolist() == [286]


def test_gzipped_one_series_file_keeps_its_name(tmp_path):
    path = tmp_path / "ec2_cpu_utilization_24ae8d.csv.gz"
    path.write_bytes(gzip.compress((NAB / "ec2_cpu_utilization_24ae8d.csv").read_bytes()))
    gz = ingest(path).metrics
    plain = ingest(NAB / "ec2_cpu_utilization_24ae8d.csv").metrics
    pd.testing.assert_frame_equal(gz, plain)


def test_sampling_interval_is_the_exact_median_spacing():
    from forecasting.ingest import _sampling_interval

    rng = np.random.default_rng(5)
    for _ in range(200):
        frames = []
        for code in range(int(rng.integers(1, 6))):
            n = int(rng.integers(1, 40))
            kind = rng.integers(0, 3)
            if kind == 0:  # varied spacing
                steps = rng.integers(1, 5, n) * 60
            elif kind == 1:  # mostly regular with gaps and repeats
                steps = np.where(rng.uniform(size=n) < 0.8, 300, rng.integers(0, 2000, n))
            else:  # perfectly regular
                steps = np.full(n, 300)
            frames.append(pd.DataFrame({"s": code * 2, "t": np.cumsum(steps)}))
        df = pd.concat(frames, ignore_index=True)
        got = _sampling_interval(df["s"].to_numpy(), df["t"].to_numpy())
        want = np.full(len(got), np.nan)
        for code, t in df.groupby("s")["t"]:
            spacing = np.diff(t.to_numpy())
            if (spacing > 0).any():
                want[code] = np.median(spacing[spacing > 0])
        np.testing.assert_array_equal(got, want)


def test_column_names_are_matched_case_insensitively(tmp_path):
    path = tmp_path / "web01_CPUUtilization.csv"
    ts = pd.date_range("2025-01-01", periods=288, freq="5min").strftime("%Y-%m-%dT%H:%M:%SZ")
    pd.DataFrame({"Timestamp": ts, "Value": 42.0}).to_csv(path, index=False)
    result = ingest(path)
    assert result.metrics[["server_id", "cpu_p95"]].to_numpy().tolist() == [["web01", 42.0]]
    both = tmp_path / "ec2_cpu_utilization_dd.csv"
    both.write_text("timestamp,Timestamp,value\n2025-01-01,2025-01-01,1\n")
    with pytest.raises(FileFormatError, match="differ only in case"):
        ingest(both)


def test_group_quantile_matches_numpy_for_every_group_size():
    from forecasting.ingest import _group_quantile

    rng = np.random.default_rng(9)
    counts = np.concatenate([np.full(40, 288), rng.integers(1, 300, 60), [1, 2, 3]])
    rng.shuffle(counts)
    starts = np.r_[0, np.cumsum(counts)[:-1]]
    v = rng.gamma(2.0, 10.0, counts.sum())
    v[:50] = 7.0  # ties
    for q in (0.95, 0.5, 0.0, 1.0):
        want = [np.quantile(v[s : s + c], q) for s, c in zip(starts, counts)]
        np.testing.assert_allclose(_group_quantile(v, starts, counts, q), want, rtol=1e-12)


# --------------------------------------------------------------------------- placement columns


def test_given_inventory_keeps_placement_columns():
    inv = known_inventory("ec2-24ae8d").assign(dr_role="Standby", pinned="yes", anti_affinity_group="grp-1")
    result = ingest([NAB / "ec2_cpu_utilization_24ae8d.csv"], inventory=inv)
    row = result.inventory.iloc[0]
    assert (row["dr_role"], row["pinned"], row["anti_affinity_group"]) == ("standby", True, "grp-1")
    assert pd.isna(row["dr_partner_id"])


def test_added_servers_beside_an_inventory_with_placement_columns_are_unknown():
    files = [NAB / "ec2_cpu_utilization_24ae8d.csv", NAB / "ec2_cpu_utilization_53ea38.csv"]
    inv = known_inventory("ec2-24ae8d").assign(pinned=True)
    result = ingest(files, inventory=inv, add_missing=True)
    got = result.inventory.set_index("server_id")
    assert got.loc["ec2-24ae8d", "pinned"] is True or got.loc["ec2-24ae8d", "pinned"] == True  # noqa: E712
    assert got.loc["ec2-53ea38", list(OPTIONAL_INVENTORY_COLUMNS)].isna().all()


@pytest.mark.parametrize("with_columns", [True, False])
@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_cli_ingest_inventory_file_with_and_without_placement_columns(tmp_path, suffix, with_columns):
    from forecasting.cli import EXIT_OK, main
    from forecasting.sources import open_store

    inv = pd.concat([known_inventory("ec2-24ae8d"), known_inventory("00042")], ignore_index=True)
    if with_columns:
        inv = inv.assign(
            dr_role=["primary", "standby"],
            dr_partner_id=["00042", "ec2-24ae8d"],
            anti_affinity_group=["grp-0001", None],
            pinned=["1", "no"],
        )
    path = tmp_path / f"inventory{suffix}"
    inv.to_csv(path, index=False) if suffix == ".csv" else inv.to_parquet(path, index=False)
    data = tmp_path / "data"
    code = main(
        [
            "--data",
            str(data),
            "ingest",
            str(NAB / "ec2_cpu_utilization_24ae8d.csv"),
            "--inventory",
            str(path),
            "--freq",
            "hourly",
        ]
    )
    assert code == EXIT_OK
    stored = open_store(str(data)).read_inventory().set_index("server_id")
    assert list(stored.columns) == ALL_INVENTORY_COLUMNS[1:]
    if with_columns:
        assert stored.loc["00042", "dr_partner_id"] == "ec2-24ae8d"  # leading zeros kept: read as text
        assert stored.loc["ec2-24ae8d", "dr_partner_id"] == "00042"
        assert stored["pinned"].tolist() == [True, False]
        assert stored.loc["ec2-24ae8d", "anti_affinity_group"] == "grp-0001"
    else:
        assert stored[list(OPTIONAL_INVENTORY_COLUMNS)].isna().all().all()


def test_cli_ingest_inventory_rejections_set_the_exit_code(tmp_path, capsys):
    from forecasting.cli import EXIT_REJECTED, main

    path = tmp_path / "inventory.csv"
    known_inventory("ec2-24ae8d").assign(pinned="perhaps", dr_partner_id="ghost").to_csv(path, index=False)
    code = main(
        [
            "--data",
            str(tmp_path / "d"),
            "ingest",
            str(NAB / "ec2_cpu_utilization_24ae8d.csv"),
            "--inventory",
            str(path),
            "--freq",
            "hourly",
        ]
    )
    out = capsys.readouterr().out
    assert code == EXIT_REJECTED
    assert "invalid_pinned: 1 rejected" in out and "unknown_dr_partner: 1 rejected" in out


def test_cli_ingest_inventory_naming_a_partner_already_in_the_store(tmp_path, capsys):
    from forecasting.cli import EXIT_OK, main
    from forecasting.sources import open_store

    data = str(tmp_path / "data")
    first, second = tmp_path / "first.csv", tmp_path / "second.csv"
    known_inventory("ec2-24ae8d").to_csv(first, index=False)
    known_inventory("ec2-53ea38").assign(dr_role="standby", dr_partner_id="ec2-24ae8d").to_csv(
        second, index=False
    )
    for samples, inv in (
        ("ec2_cpu_utilization_24ae8d.csv", first),
        ("ec2_cpu_utilization_53ea38.csv", second),
    ):
        code = main(
            ["--data", data, "ingest", str(NAB / samples), "--inventory", str(inv), "--freq", "hourly"]
        )
        assert code == EXIT_OK
    out = capsys.readouterr().out
    assert "unknown_dr_partner" not in out
    assert "dr_partner_not_reciprocal: 1 flagged" in out  # ec2-24ae8d does not name it back
    stored = open_store(data).read_inventory().set_index("server_id")
    assert stored.loc["ec2-53ea38", "dr_partner_id"] == "ec2-24ae8d"
    assert stored.loc["ec2-53ea38", "dr_role"] == "standby"
