"""Exports: CSV injection neutralised, numbers kept numeric, Excel with a Scenario sheet."""

from __future__ import annotations

import io
from datetime import UTC, datetime

import openpyxl
import pandas as pd
import pytest

from components.export import (
    csv_bytes,
    excel_bytes,
    export_name,
    neutralise,
    neutralise_frame,
    rows_frame,
)

HOSTILE = ['=HYPERLINK("http://x","y")', "+1+1", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]


@pytest.mark.parametrize("text", HOSTILE)
def test_formula_like_strings_get_a_leading_quote(text):
    assert neutralise(text) == "'" + text


@pytest.mark.parametrize("value", ["srv-001", "CPU p95 is over", "", "a=b", 0, -5, -2.5, 3.0, None, True])
def test_everything_else_is_left_alone(value):
    assert neutralise(value) == value
    assert type(neutralise(value)) is type(value)


def test_frame_neutralises_text_columns_and_names_but_not_numbers():
    frame = pd.DataFrame({"=cmd": ["=1+1", "ok"], "savings": [-120.5, 30.0], "n": [-1, 2]})
    out = neutralise_frame(frame)
    assert list(out.columns) == ["'=cmd", "savings", "n"]
    assert out["'=cmd"].tolist() == ["'=1+1", "ok"]
    assert out["savings"].tolist() == [-120.5, 30.0]
    assert pd.api.types.is_numeric_dtype(out["n"])
    assert frame["=cmd"].tolist() == ["=1+1", "ok"]  # the input is not modified


def test_rows_frame_follows_the_grid_columns_and_keeps_numbers_numeric():
    rows = [
        {"server_id": "srv-1", "saving": -10, "reason": "=evil()", "extra": "x"},
        {"server_id": "srv-2", "saving": None, "reason": "fine"},
        "not a row",
    ]
    frame = rows_frame(rows, [("server_id", "Server"), ("saving", "Savings"), ("reason", "Reason")])
    assert list(frame.columns) == ["Server", "Savings", "Reason"]
    assert frame["Server"].tolist() == ["srv-1", "srv-2"]
    assert pd.api.types.is_numeric_dtype(frame["Savings"])
    assert frame["Savings"].iloc[0] == -10 and pd.isna(frame["Savings"].iloc[1])
    assert rows_frame(None, [("a", "A")]).empty


def test_csv_has_comment_lines_a_bom_and_neutralised_cells():
    frame = pd.DataFrame(
        {"Server": ["srv-1", "@srv"], "Savings": [-12.5, 4.0], "Reason": ["-rm", "ok, fine"]}
    )
    text = csv_bytes(frame, ["Scenario: growth +3 %", "two\nlines"]).decode("utf-8")
    assert text.startswith("\ufeff# Scenario: growth +3 %\n# two lines\n")
    body = pd.read_csv(io.StringIO(text.lstrip("\ufeff")), comment="#")
    assert body["Server"].tolist() == ["srv-1", "'@srv"]
    assert body["Savings"].tolist() == [-12.5, 4.0]  # negative numbers stay numbers
    assert body["Reason"].tolist() == ["'-rm", "ok, fine"]


def test_excel_has_rows_and_a_scenario_sheet_with_no_live_formulas():
    frame = pd.DataFrame(
        {"Server": ["=cmd|' /C calc'!A0", "srv-2"], "Savings": [-3.0, 7.0], "Note": ["a\x01b", "x"]}
    )
    content = excel_bytes(frame, sheet="Utilization risk", about=[("Scenario", "+growth 3 %"), ("Rows", "2")])
    book = openpyxl.load_workbook(io.BytesIO(content))
    assert book.sheetnames == ["Utilization risk", "Scenario"]
    ws = book["Utilization risk"]
    assert [c.value for c in ws[1]] == ["Server", "Savings", "Note"]
    assert ws["A2"].value == "'=cmd|' /C calc'!A0" and ws["A2"].data_type == "s"
    assert ws["B2"].value == -3.0 and ws["B2"].data_type == "n"
    assert ws["C2"].value == "ab"  # control characters Excel cannot hold are dropped
    meta = book["Scenario"]
    assert [c.value for c in meta[2]] == ["Scenario", "'+growth 3 %"]


def test_excel_sheet_titles_are_cut_to_excels_limit():
    content = excel_bytes(pd.DataFrame({"a": [1]}), sheet="x" * 40)
    assert openpyxl.load_workbook(io.BytesIO(content)).sheetnames[0] == "x" * 31


def test_export_names_are_safe_file_names():
    when = datetime(2026, 8, 5, 6, 12, tzinfo=UTC)
    assert export_name("utilization risk/../x", "csv", when) == "utilization-risk-x-20260805-0612.csv"
    assert export_name("///", "xlsx", when) == "export-20260805-0612.xlsx"
