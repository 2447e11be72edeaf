"""read_frame: every supported format reads back, every kind of broken file fails naming itself."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.files import FileFormatError, file_stem, file_suffix, read_frame

NAB = Path(__file__).parent / "data" / "nab" / "realAWSCloudwatch"
CPU = NAB / "ec2_cpu_utilization_24ae8d.csv"


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


def fails(path: Path, *fragments: str, table: str = "samples") -> str:
    """read_frame must raise FileFormatError naming the file and every fragment."""
    with pytest.raises(FileFormatError) as info:
        read_frame(path, table=table)
    message = str(info.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message
    return message


# --------------------------------------------------------------------------- reading good files


def test_reads_real_nab_csv():
    df = read_frame(CPU, table="samples")
    assert list(df.columns) == ["timestamp", "value"]
    assert len(df) == 4032
    assert df["value"].dtype == np.float64
    assert df["timestamp"].iloc[0] == "2014-02-14 14:30:00"  # timestamps stay text for the consumer
    assert df["value"].iloc[0] == pytest.approx(0.132)


def test_csv_gz_reads_the_same_as_csv(tmp_path):
    gz = write(tmp_path / "x.csv.gz", gzip.compress(CPU.read_bytes()))
    pd.testing.assert_frame_equal(read_frame(gz, table="samples"), read_frame(CPU, table="samples"))


@pytest.mark.parametrize("suffix", [".parquet", ".pq"])
def test_parquet_round_trip_keeps_types(tmp_path, suffix):
    df = pd.DataFrame(
        {
            "server_id": ["srv-1", "srv-2"],
            "timestamp": pd.to_datetime(["2025-01-01", "2025-01-02"], utc=True),
            "cpu_p95": [10.5, 20.0],
        }
    )
    path = tmp_path / f"m{suffix}"
    df.to_parquet(path)
    out = read_frame(path, table="metrics")
    assert list(out.columns) == list(df.columns)
    assert isinstance(out["timestamp"].dtype, pd.DatetimeTZDtype)
    assert out["cpu_p95"].tolist() == [10.5, 20.0]


def test_identifier_columns_keep_leading_zeros_and_numbers_are_typed(tmp_path):
    path = write(
        tmp_path / "inv.csv",
        "server_id,hostname,cpu_cores,memory_gb\n00042,0007,8,31.5\n00043,0008,16,64\n",
    )
    df = read_frame(path, table="inventory")
    assert df["server_id"].tolist() == ["00042", "00043"]
    assert df["hostname"].tolist() == ["0007", "0008"]
    assert df["cpu_cores"].tolist() == [8, 16]
    assert pd.api.types.is_integer_dtype(df["cpu_cores"].dtype)
    assert df["memory_gb"].tolist() == [31.5, 64.0]


def test_column_typing_looks_at_the_whole_column_not_the_first_block(tmp_path):
    # Arrow infers types from the first 1 MB block; text far below must not break the read
    # nor be silently lost: the column stays text so validation can report the value.
    n = 120_000
    values = np.round(np.random.default_rng(1).uniform(0, 100, n), 3).astype(str)
    values[-1] = "error"
    ts = pd.date_range("2025-01-01", periods=n, freq="5min").strftime("%Y-%m-%d %H:%M:%S")
    path = tmp_path / "big.csv"
    pd.DataFrame({"timestamp": ts, "value": values}).to_csv(path, index=False)
    assert path.stat().st_size > 2_000_000
    df = read_frame(path, table="samples")
    assert len(df) == n
    assert pd.api.types.is_string_dtype(df["value"].dtype)
    assert df["value"].iloc[-1] == "error"
    assert pd.to_numeric(df["value"], errors="coerce").notna().sum() == n - 1


def test_null_tokens_whitespace_bom_and_header_spaces(tmp_path):
    path = write(
        tmp_path / "x.csv",
        "\ufefftimestamp , value\r\n2025-01-01 00:00:00, 1.5\r\n2025-01-01 00:05:00,NA\r\n"
        "2025-01-01 00:10:00,\r\n2025-01-01 00:15:00,N/A\r\n",
    )
    df = read_frame(path, table="samples")
    assert list(df.columns) == ["timestamp", "value"]
    assert df["value"].iloc[0] == 1.5
    assert df["value"].iloc[1:].isna().all()


def test_semicolon_delimiter_and_decimal_comma(tmp_path):
    path = write(
        tmp_path / "eu.csv", "server_id;timestamp;value\nsrv-1;2025-01-01;12,5\nsrv-1;2025-01-02;3\n"
    )
    df = read_frame(path, table="samples")
    assert list(df.columns) == ["server_id", "timestamp", "value"]
    assert df["value"].tolist() == [12.5, 3.0]


def test_suffix_and_stem_helpers():
    assert file_suffix("a/B.CSV.GZ") == ".csv.gz"
    assert file_stem("a/ec2_cpu_x.csv.gz") == "ec2_cpu_x"
    assert file_suffix("x.parquet") == ".parquet"
    assert file_suffix("x.xlsx") == ".xlsx"
    assert file_stem("noext") == "noext"


# --------------------------------------------------------------------------- broken files


def test_missing_file(tmp_path):
    path = tmp_path / "nope.csv"
    fails(path, "not found", "inventory", table="inventory")


def test_directory_is_not_a_file(tmp_path):
    fails(tmp_path, "directory", table="samples")


@pytest.mark.parametrize("name", ["x.xlsx", "x.json", "noext"])
def test_unknown_extension(tmp_path, name):
    path = write(tmp_path / name, "a,b\n1,2\n")
    fails(path, "unsupported type", ".csv", table="samples")


@pytest.mark.parametrize("name", ["empty.csv", "empty.parquet", "empty.csv.gz"])
def test_zero_byte_file(tmp_path, name):
    path = write(tmp_path / name, b"")
    fails(path, "empty", table="samples")


def test_gzip_of_nothing_is_empty(tmp_path):
    path = write(tmp_path / "x.csv.gz", gzip.compress(b""))
    fails(path, "empty", table="samples")


def test_header_only_is_an_error_unless_allowed(tmp_path):
    path = write(tmp_path / "h.csv", "timestamp,value\n")
    fails(path, "no data rows", "timestamp, value", table="samples")
    df = read_frame(path, table="samples", allow_empty=True)
    assert list(df.columns) == ["timestamp", "value"]
    assert df.empty


def test_blank_first_line_is_no_header(tmp_path):
    path = write(tmp_path / "x.csv", "\n1,2\n")
    fails(path, "no header", table="samples")


def test_duplicate_column_names(tmp_path):
    path = write(tmp_path / "x.csv", "value,timestamp,value\n1,2025-01-01,2\n")
    fails(path, "duplicate column", "value", table="samples")


def test_truncated_parquet(tmp_path):
    good = tmp_path / "good.parquet"
    pd.DataFrame({"a": np.arange(1000), "b": np.arange(1000) * 0.5}).to_parquet(good)
    data = good.read_bytes()
    path = write(tmp_path / "cut.parquet", data[: len(data) // 2])
    fails(path, "is not a readable Parquet file (truncated or corrupt?)", table="metrics")


def test_parquet_with_csv_inside(tmp_path):
    path = write(tmp_path / "fake.parquet", CPU.read_bytes())
    fails(path, "is not a readable Parquet file (truncated or corrupt?)", table="metrics")


def test_truncated_gzip_small(tmp_path):
    data = gzip.compress(CPU.read_bytes())
    path = write(tmp_path / "cut.csv.gz", data[: len(data) // 2])
    fails(path, "gzip", table="samples")


def test_truncated_gzip_large(tmp_path):
    # Large enough that the first 64 KB decompress fine and the parser hits the cut.
    rng = np.random.default_rng(2)
    df = pd.DataFrame({"timestamp": np.arange(30_000), "value": rng.uniform(0, 1, 30_000)})
    data = gzip.compress(df.to_csv(index=False).encode())
    path = write(tmp_path / "cut.csv.gz", data[: int(len(data) * 0.9)])
    fails(path, "not a readable CSV file", table="samples")


def test_binary_junk(tmp_path):
    path = write(tmp_path / "junk.csv", np.random.default_rng(0).bytes(4000))
    fails(path, "binary", table="samples")


def test_not_utf8(tmp_path):
    path = write(tmp_path / "latin1.csv", "server_id,hostname\nsrv-1,café\n".encode("latin-1"))
    fails(path, "UTF-8", table="inventory")


def test_gzip_without_gz_extension(tmp_path):
    path = write(tmp_path / "x.csv", gzip.compress(CPU.read_bytes()))
    fails(path, "gzip-compressed", "x.csv.gz", table="samples")


def test_parquet_saved_as_csv(tmp_path):
    pq_path = tmp_path / "x.parquet"
    pd.DataFrame({"a": [1]}).to_parquet(pq_path)
    path = write(tmp_path / "x.csv", pq_path.read_bytes())
    fails(path, "Parquet file, not CSV", table="samples")


@pytest.mark.parametrize(
    ("body", "line", "fields"),
    [
        ("2025-01-01,1\n2025-01-02,2,3\n2025-01-03,4\n", 3, 3),  # one field too many
        ("2025-01-01,1\n2025-01-02,2\n2025-01-03\n", 4, 1),  # one field short
    ],
)
def test_ragged_rows_are_refused_with_line_numbers(tmp_path, body, line, fields):
    path = write(tmp_path / "rag.csv", "timestamp,value\n" + body)
    fails(path, "not a well-formed CSV", f"line {line}: {fields} fields", "1 row(s)", table="samples")


def test_not_utf8_beyond_the_sniffed_head(tmp_path):
    head = "server_id,hostname\n" + "".join(f"srv-{i},host-{i}\n" for i in range(8000))
    assert len(head) > 64 * 1024
    path = write(tmp_path / "late.csv", head.encode() + "srv-x,café\n".encode("latin-1"))
    fails(path, "UTF-8", table="inventory")
