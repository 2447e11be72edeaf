"""Spreadsheet-safe exports (CSV, Excel) as pure functions: rows in, bytes out.

Used by the app's grid exports (components/export.py re-exports these) and by the command line
(``python -m forecasting diff --format csv``, the track record), so there is one escaping rule.

**Injection (OWASP "CSV Injection").** A cell that begins with ``=``, ``+``, ``-`` or ``@`` (or a
tab, carriage return, line feed or NUL, which some spreadsheets skip before looking) is read by
Excel as a formula: a hostname or a reason crafted as ``=HYPERLINK(...)`` would run on a
planner's machine. Every *text* cell is cleaned in this order: control characters are stripped
first (so ``"\x01=HYPERLINK(…)"`` cannot hide its ``=`` behind one), then a cell whose first
character (or first after leading spaces) is one of those gets a leading single quote. Numbers
stay numbers, so a negative saving is still a negative number in the spreadsheet. CSV fields
are quoted by the csv module (every text field), and the comment lines saying what the export
holds are CSV rows too: ``# Filters,"<value>"`` with the value cleaned like any cell.
"""

from __future__ import annotations

import csv
import io
import math
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "\x00")
# Stripped from every text cell before anything else: C0 controls except tab, LF and CR (which
# CSV quotes and Excel holds), DEL and the C1 controls. openpyxl refuses the C0 ones anyway.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
MAX_SHEET_TITLE = 31


def clean_text(value: str) -> str:
    """``value`` without control characters (tab, LF and CR kept)."""
    return _CONTROL.sub("", value)


def one_line(value: str) -> str:
    """``value`` cleaned, its line breaks as spaces (a comment value stays on its line)."""
    return re.sub(r"[\r\n]+", " ", clean_text(value))


def neutralise(value: Any) -> Any:
    """A text cell made safe: control characters stripped, then a leading ``'`` when a
    spreadsheet would read it as a formula. Anything that is not text is returned as is."""
    if not isinstance(value, str):
        return value
    text = clean_text(value)
    if text.startswith(FORMULA_PREFIXES) or text.lstrip(" ").startswith(FORMULA_PREFIXES):
        return "'" + text
    return text


def neutralise_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """A copy whose text cells (and column names) are neutralised; numeric columns untouched."""
    out = frame.copy()
    for col in out.columns:
        s = out[col]
        if pd.api.types.is_numeric_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
            continue
        out[col] = s.map(neutralise).astype(object)
    out.columns = [neutralise(str(c)) for c in out.columns]
    return out


def _plain(value: Any) -> Any:
    """numpy scalars as Python values (csv and openpyxl know only those)."""
    return value.item() if isinstance(value, np.generic) else value


def _csv_value(value: Any) -> Any:
    value = _plain(value)
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return ""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return float(f"{value:.6g}")
    return value


def csv_bytes(frame: pd.DataFrame, comments: Sequence[tuple[str, str]] = ()) -> bytes:
    """UTF-8 CSV (with a BOM, so Excel reads accents right): first one ``# <setting>,"<value>"``
    row per comment pair (what the export is: scenario, filters, run), then the header and rows.
    Text fields are quoted, numbers are not; every text value is neutralised."""
    buf = io.StringIO()
    writer = csv.writer(buf, quoting=csv.QUOTE_NONNUMERIC, lineterminator="\n")
    for key, value in comments:
        label = "# " + re.sub(r"[^A-Za-z0-9 ()%/-]+", " ", str(key)).strip()
        flat = one_line(str(value))
        buf.write(label + ",")  # the label is ours (letters only): the line starts with '#'
        writer.writerow([neutralise(flat)])
    safe = neutralise_frame(frame)
    writer.writerow([str(c) for c in safe.columns])
    for row in safe.itertuples(index=False, name=None):
        writer.writerow([_csv_value(v) for v in row])
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def excel_bytes(frame: pd.DataFrame, *, sheet: str, about: Sequence[tuple[str, str]] = ()) -> bytes:
    """An .xlsx with the rows on ``sheet`` and a 'Scenario' sheet of (setting, value) pairs.

    Text cells are neutralised and then written as text cells explicitly: openpyxl stores any
    string beginning with ``=`` as a live formula, so no string from the data is ever given to
    it as a plain value.
    """
    meta = pd.DataFrame(
        [(str(k), one_line(str(v))) for k, v in about], columns=["Setting", "Value"], dtype=object
    )
    return _book([(sheet or "Export", frame), ("Scenario", meta)])


def _book(sheets: Sequence[tuple[str, pd.DataFrame]]) -> bytes:
    """The workbook of (title, frame) sheets, in openpyxl's write-only mode: rows are streamed to
    the file and no cell objects are kept (several times faster on thousands of rows; an export
    runs while the other threads of a gunicorn worker wait)."""
    from openpyxl import Workbook

    book = Workbook(write_only=True)
    for title, frame in sheets:
        _write_sheet(
            book.create_sheet(clean_text(str(title))[:MAX_SHEET_TITLE] or "Sheet"), neutralise_frame(frame)
        )
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def _write_sheet(ws: Any, frame: pd.DataFrame) -> None:
    """Header and rows; the header row frozen, columns as wide as their first 200 values."""
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.utils import get_column_letter

    rows = [list(frame.columns), *frame.itertuples(index=False, name=None)]
    for i in range(len(rows[0])):  # widths and panes must be set before the first row
        width = max((len(str(r[i])) for r in rows[:201] if r[i] is not None), default=8)
        ws.column_dimensions[get_column_letter(i + 1)].width = min(max(width + 2, 8), 60)
    ws.freeze_panes = "A2"
    for values in rows:
        out: list[Any] = []
        for value in values:
            value = _plain(value)
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                out.append(None)
            elif isinstance(value, bool | int | float):
                out.append(value)
            else:
                cell = WriteOnlyCell(ws, value=clean_text(str(value)))
                cell.data_type = "s"  # text, even if it looked like a formula to openpyxl
                out.append(cell)
        ws.append(out)


def export_name(stem: str, ext: str, now: datetime | None = None) -> str:
    """'risk-20260805-0612.csv' (a safe file name: letters, digits and dashes only)."""
    when = (now or datetime.now(UTC)).strftime("%Y%m%d-%H%M")
    clean = re.sub(r"[^A-Za-z0-9-]+", "-", stem).strip("-") or "export"
    return f"{clean}-{when}.{ext}"


def excel_book(sheets: Mapping[str, pd.DataFrame], about: Sequence[tuple[str, str]] = ()) -> bytes:
    """An .xlsx with one sheet per frame (in order) and an 'About' sheet of (item, value) pairs.

    Same cleaning as :func:`excel_bytes`: every text cell neutralised and written as text."""
    parts = [(str(name) or "Sheet", frame) for name, frame in sheets.items()]
    if about:
        parts.append(
            (
                "About",
                pd.DataFrame(
                    [(str(k), one_line(str(v))) for k, v in about], columns=["Item", "Value"], dtype=object
                ),
            )
        )
    return _book(parts)
