"""Read one tabular file (CSV, gzipped CSV or Parquet) into a DataFrame, or fail saying why.

Files arrive from people and exporters: truncated uploads, a Parquet file saved as
``.csv``, an Excel export with semicolons, rows with a missing comma. Every such case ends
in a :class:`FileFormatError` whose message names the file and the defect, instead of a
parser traceback or, worse, a frame that silently lost rows.

CSV reading policy (stated once):
- the file must be UTF-8 text (a BOM is accepted); NUL bytes or invalid UTF-8 are refused;
- the delimiter is ``,`` unless the header line has none and has ``;`` or a tab;
- every row must have as many fields as the header (ragged rows are refused, with line
  numbers, rather than padded or truncated);
- values are typed over the whole column, not the first block: a column becomes numeric
  only if every non-empty value parses as a number, otherwise it stays text so validation
  can report the offending values; identifier columns (``server_id``, ``hostname``, the
  inventory's text attributes and placement columns, ``metric``) always stay text, so
  ``00042`` keeps its zeros;
- timestamps stay text; the consumer parses them under its own time-zone policy;
- ``""``, ``NA``, ``N/A``, ``NaN``, ``nan``, ``null``, ``NULL``, ``None``, ``#N/A`` are missing.
"""

from __future__ import annotations

import csv
import gzip
import zlib
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq

from .schema import INVENTORY_STRING_COLUMNS, OPTIONAL_INVENTORY_COLUMNS

CSV_SUFFIXES = (".csv", ".csv.gz")
PARQUET_SUFFIXES = (".parquet", ".pq")
SUPPORTED_SUFFIXES = CSV_SUFFIXES + PARQUET_SUFFIXES

NULL_VALUES = ["", "NA", "N/A", "NaN", "nan", "null", "NULL", "None", "#N/A"]
# Columns that are identifiers or labels: never converted to numbers.
# ``pinned`` stays text too: validation parses yes/no/1/0 itself and reports what it cannot.
TEXT_COLUMNS = frozenset(
    [*INVENTORY_STRING_COLUMNS, *OPTIONAL_INVENTORY_COLUMNS, "metric", "unit", "timestamp"]
)

_SNIFF_BYTES = 64 * 1024
_MAX_EXAMPLES = 3
_NOT_UTF8 = "not UTF-8 text (binary data, or another encoding: re-save it as UTF-8)"
_INTEGER_RE = r"^[+-]?[0-9]+$"
_DECIMAL_COMMA_RE = r"^[+-]?([0-9]+(,[0-9]*)?|,[0-9]+)$"


class FileFormatError(ValueError):
    """A file that cannot be read as the table it should hold (missing, empty, corrupt, wrong type)."""


def file_suffix(path: str | Path) -> str:
    """The table-format suffix of a path ('.csv', '.csv.gz', '.parquet', '.pq'), or its plain suffix."""
    name = Path(path).name.lower()
    for suffix in SUPPORTED_SUFFIXES:
        if name.endswith(suffix):
            return suffix
    return Path(name).suffix


def file_stem(path: str | Path) -> str:
    """The file name without its table-format suffix (``x.csv.gz`` -> ``x``), case preserved."""
    name = Path(path).name
    suffix = file_suffix(path)
    return name[: len(name) - len(suffix)] if suffix else name


def _check_path(p: Path, what: str) -> str:
    """The file's table-format suffix, after the checks every reader makes first."""
    if not p.exists():
        raise FileFormatError(f"{what} not found: {p}")
    if p.is_dir():
        raise FileFormatError(f"{what} {p} is a directory, not a file")
    suffix = file_suffix(p)
    if suffix not in SUPPORTED_SUFFIXES:
        raise FileFormatError(
            f"{what} {p} has an unsupported type {suffix or '(no extension)'!r}: "
            f"use {', '.join(SUPPORTED_SUFFIXES)}"
        )
    if p.stat().st_size == 0:
        raise FileFormatError(f"{what} {p} is empty (0 bytes)")
    return suffix


def _check_columns(df: pd.DataFrame, p: Path, what: str) -> pd.DataFrame:
    df.columns = [str(c).strip() for c in df.columns]
    if df.columns.duplicated().any():
        dups = sorted(set(df.columns[df.columns.duplicated()]))
        raise FileFormatError(f"{what} {p} has duplicate column name(s): {', '.join(dups)}")
    return df


def iter_frames(path: str | Path, *, table: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """Read a file as :func:`read_frame` does, but about ``chunk_rows`` rows at a time.

    Why: an export of a whole fleet may be larger than memory. The same checks and errors as
    :func:`read_frame`, with one difference: a CSV column is typed per chunk, not over the whole
    file (a chunk whose every value is a number is numeric), so use it for tables whose
    consumers parse text themselves (raw samples: ``value`` is parsed with text reported).
    A ragged row or a corrupt block further down raises when its chunk is reached.
    """
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be a positive integer, got {chunk_rows!r}")
    p = Path(path)
    what = f"{table} file"
    suffix = _check_path(p, what)
    rows = 0
    columns: list[str] = []
    chunks = (
        _parquet_chunks(p, what, chunk_rows)
        if suffix in PARQUET_SUFFIXES
        else _csv_chunks(p, what, suffix, chunk_rows)
    )
    for df in chunks:
        df = _check_columns(df, p, what)
        columns = list(df.columns)
        if len(df):
            rows += len(df)
            yield df
    if rows == 0:
        raise FileFormatError(f"{what} {p} has no data rows (columns: {', '.join(columns) or 'none'})")


def _parquet_chunks(p: Path, what: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        reader = pq.ParquetFile(p)
    except (pa.ArrowException, OSError, ValueError):
        _read_parquet(p, what)  # raises with the message read_frame gives
        raise
    yielded = False
    try:
        for batch in reader.iter_batches(batch_size=chunk_rows):
            yielded = True
            yield _parquet_frame(pa.Table.from_batches([batch]), p, what)
    except (pa.ArrowException, OSError) as e:
        raise FileFormatError(
            f"{what} {p} is not a readable Parquet file (truncated or corrupt?): {_first_line(e)}"
        ) from e
    if not yielded:
        yield reader.schema_arrow.empty_table().to_pandas()


def _csv_chunks(p: Path, what: str, suffix: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    head, names, delimiter, convert = _csv_setup(p, what, suffix)
    lines = head.count("\n") or 1
    block = max(4096, int(len(head.encode()) / lines * chunk_rows))
    invalid: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append(row)
        return "skip"

    parse = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid)
    try:
        reader = pacsv.open_csv(
            p, read_options=pacsv.ReadOptions(block_size=block), parse_options=parse, convert_options=convert
        )
        batches = iter(reader)
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                break
            if invalid:
                break
            yield _typed(pa.Table.from_batches([batch]), delimiter)
    except (pa.ArrowException, OSError, EOFError, zlib.error) as e:
        reason = _NOT_UTF8 if "invalid UTF8" in str(e) else _first_line(e)
        raise FileFormatError(f"{what} {p} is not a readable CSV file: {reason}") from e
    if invalid:
        raise FileFormatError(_ragged_message(p, what, delimiter, convert, len(names)))
    yield pd.DataFrame({n: pd.Series(dtype="str") for n in names})  # the header, for iter_frames' messages


def read_frame(path: str | Path, *, table: str, allow_empty: bool = False) -> pd.DataFrame:
    """Read a CSV (.csv, .csv.gz) or Parquet (.parquet, .pq) file holding ``table``.

    Raises :class:`FileFormatError` naming the file for a missing or empty file, an unknown
    extension, a truncated or corrupt Parquet file, or malformed CSV (ragged rows, binary
    content, invalid UTF-8). A file with a header but no rows is an error unless
    ``allow_empty``.
    """
    p = Path(path)
    what = f"{table} file"
    suffix = _check_path(p, what)
    df = _read_parquet(p, what) if suffix in PARQUET_SUFFIXES else _read_csv(p, what, suffix)
    df = _check_columns(df, p, what)
    if len(df) == 0 and not allow_empty:
        raise FileFormatError(f"{what} {p} has no data rows (columns: {', '.join(df.columns) or 'none'})")
    return df


# --------------------------------------------------------------------------- Parquet


def _read_parquet(p: Path, what: str) -> pd.DataFrame:
    try:
        arrow = pq.read_table(p)
    except (pa.ArrowException, OSError, ValueError) as e:
        raise FileFormatError(
            f"{what} {p} is not a readable Parquet file (truncated or corrupt?): {_first_line(e)}"
        ) from e
    return _parquet_frame(arrow, p, what)


def _parquet_frame(arrow: pa.Table, p: Path, what: str) -> pd.DataFrame:
    try:
        return arrow.to_pandas()
    except (pa.ArrowException, ValueError, TypeError) as e:
        raise FileFormatError(f"{what} {p}: Parquet columns cannot be converted: {_first_line(e)}") from e


# --------------------------------------------------------------------------- CSV


def _csv_setup(p: Path, what: str, suffix: str) -> tuple[str, list[str], str, pacsv.ConvertOptions]:
    """(first bytes, header names, delimiter, every column as text): the checks before any parsing."""
    head = _sniff(p, what, suffix)
    header_line = head.split("\n", 1)[0].rstrip("\r")
    delimiter = _delimiter(header_line)
    names = next(csv.reader([header_line], delimiter=delimiter), [])
    if not any(n.strip() for n in names):
        raise FileFormatError(f"{what} {p} has no header line (first line is blank)")
    stripped = [n.strip() for n in names]
    if len(set(stripped)) != len(stripped):
        dups = sorted({n for n in stripped if stripped.count(n) > 1})
        raise FileFormatError(f"{what} {p} has duplicate column name(s): {', '.join(dups)}")
    convert = pacsv.ConvertOptions(
        column_types=dict.fromkeys(names, pa.string()),
        null_values=NULL_VALUES,
        strings_can_be_null=True,
        quoted_strings_can_be_null=True,
    )
    return head, names, delimiter, convert


def _read_csv(p: Path, what: str, suffix: str) -> pd.DataFrame:
    _, names, delimiter, convert = _csv_setup(p, what, suffix)
    invalid: list[pacsv.InvalidRow] = []

    def on_invalid(row: pacsv.InvalidRow) -> str:
        invalid.append(row)
        return "skip"

    parse = pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=on_invalid)
    try:
        # Arrow decompresses .gz itself (from the extension) and raises on a truncated stream.
        arrow = pacsv.read_csv(p, parse_options=parse, convert_options=convert)
    except (pa.ArrowException, OSError, EOFError, zlib.error) as e:
        reason = _NOT_UTF8 if "invalid UTF8" in str(e) else _first_line(e)
        raise FileFormatError(f"{what} {p} is not a readable CSV file: {reason}") from e
    if invalid:
        raise FileFormatError(_ragged_message(p, what, delimiter, convert, len(names)))
    return _typed(arrow, delimiter)


def _typed(arrow: pa.Table, delimiter: str) -> pd.DataFrame:
    """Text columns stay text; the others become numbers when every value is one."""
    decimal_comma = delimiter == ";"
    columns = {}
    for name, col in zip(arrow.column_names, arrow.columns):
        key = name.strip()
        columns[key] = col if key in TEXT_COLUMNS else _infer_numeric(col, decimal_comma)
    return pa.table(columns).to_pandas()


def _sniff(p: Path, what: str, suffix: str) -> str:
    """First bytes as text; refuses binary content with a hint about what the file really is."""
    with p.open("rb") as f:
        raw = f.read(_SNIFF_BYTES)
    if suffix == ".csv.gz":
        try:
            with gzip.open(p, "rb") as f:
                raw = f.read(_SNIFF_BYTES)
        except (OSError, EOFError, zlib.error) as e:
            raise FileFormatError(f"{what} {p} is not a readable gzip file: {_first_line(e)}") from e
        if not raw:
            raise FileFormatError(f"{what} {p} is empty (no data after decompression)")
    elif raw[:2] == b"\x1f\x8b":
        raise FileFormatError(f"{what} {p} is gzip-compressed: name it {p.name}.gz")
    if raw[:4] == b"PAR1":
        raise FileFormatError(f"{what} {p} is a Parquet file, not CSV: give it a .parquet extension")
    if b"\x00" in raw:
        raise FileFormatError(f"{what} {p} is not a readable CSV file: it holds binary data (NUL bytes)")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        # A multi-byte character cut by the sniff boundary is not an encoding error.
        if not (len(raw) == _SNIFF_BYTES and e.start >= len(raw) - 3):
            raise FileFormatError(f"{what} {p} is not a readable CSV file: {_NOT_UTF8}") from None
        text = raw[: e.start].decode("utf-8")
    return text.removeprefix("\ufeff")


def _delimiter(header: str) -> str:
    if "," in header:
        return ","
    for candidate in (";", "\t"):
        if candidate in header:
            return candidate
    return ","


def _ragged_message(p: Path, what: str, delimiter: str, convert: pacsv.ConvertOptions, width: int) -> str:
    """Re-read single-threaded (only on this error path) so the message can give line numbers."""
    rows: list[pacsv.InvalidRow] = []

    def collect(row: pacsv.InvalidRow) -> str:
        rows.append(row)
        return "skip"

    reader = pacsv.open_csv(  # streamed: the error path of a huge file must not load it either
        p,
        read_options=pacsv.ReadOptions(use_threads=False),
        parse_options=pacsv.ParseOptions(delimiter=delimiter, invalid_row_handler=collect),
        convert_options=convert,
    )
    for _ in reader:
        pass
    examples = "; ".join(
        f"line {r.number}: {r.actual_columns} fields ({r.text[:60]!r})" for r in rows[:_MAX_EXAMPLES]
    )
    return (
        f"{what} {p} is not a well-formed CSV file: {len(rows)} row(s) do not have the "
        f"{width} fields of the header — {examples}"
    )


def _infer_numeric(col: pa.ChunkedArray, decimal_comma: bool = False) -> pa.ChunkedArray:
    """Whole-column typing: numeric only if every non-missing value parses, else keep text.

    ``decimal_comma`` (semicolon-delimited files, as European spreadsheets write them): a
    column whose every value looks like ``12,5`` is read as ``12.5``.
    """
    trimmed = pc.utf8_trim_whitespace(col)
    if trimmed.null_count == len(trimmed):
        return pa.chunked_array([pa.nulls(len(trimmed), pa.float64())])
    if (
        decimal_comma
        and pc.all(pc.match_substring_regex(trimmed, _DECIMAL_COMMA_RE), skip_nulls=True).as_py()
    ):
        trimmed = pc.replace_substring(trimmed, ",", ".")
    if pc.all(pc.match_substring_regex(trimmed, _INTEGER_RE), skip_nulls=True).as_py():
        try:
            return pc.cast(trimmed, pa.int64())
        except pa.ArrowInvalid:  # out of int64 range
            pass
    try:
        return pc.cast(trimmed, pa.float64())
    except pa.ArrowInvalid:
        return col


def _first_line(e: BaseException) -> str:
    text = str(e).strip() or type(e).__name__
    return text.splitlines()[0]
