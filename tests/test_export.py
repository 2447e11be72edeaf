"""Exports: CSV injection neutralised, numbers kept numeric, Excel with a Scenario sheet."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, datetime

import openpyxl
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from components.export import (
    GridView,
    apply_view,
    clean_text,
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
    text = csv_bytes(frame, [("Scenario", "growth +3 %"), ("Note", "two\nlines")]).decode("utf-8")
    assert text.startswith('\ufeff# Scenario,"growth +3 %"\n# Note,"two lines"\n')
    body = pd.read_csv(io.StringIO(text.lstrip("\ufeff")), comment="#")
    assert body["Server"].tolist() == ["srv-1", "'@srv"]
    assert body["Savings"].tolist() == [-12.5, 4.0]  # negative numbers stay numbers
    assert body["Reason"].tolist() == ["'-rm", "ok, fine"]


def test_comment_values_are_quoted_fields_and_neutralised():
    """A filter value from the inventory cannot break out of its comment line or start a formula."""
    hostile = 'Markets",=cmd|\' /C calc\'!A0\n=HYPERLINK("x")'
    text = csv_bytes(pd.DataFrame({"a": [1]}), [("Filters", hostile), ("Run", "=1+1")]).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["# Filters", 'Markets",=cmd|\' /C calc\'!A0 =HYPERLINK("x")']
    assert rows[1] == ["# Run", "'=1+1"]
    assert rows[2] == ["a"] and rows[3] == ["1"]
    assert len(text.splitlines()) == 4  # the newline in the value did not open a line


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ('\x01=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),  # control stripped FIRST
        ("\x00+1", "'+1"),
        ("\x7f@SUM(A1)", "'@SUM(A1)"),
        ("\nline", "'\nline"),
        ("\r\n=1", "'\r\n=1"),
        ("  =1+1", "'  =1+1"),
        ("a\x02b", "ab"),
        ("-5", "'-5"),  # a text cell, even numeric-looking
    ],
)
def test_control_characters_are_stripped_before_the_formula_check(raw, shown):
    assert neutralise(raw) == shown
    content = excel_bytes(pd.DataFrame({"t": [raw]}), sheet="s")
    cell = openpyxl.load_workbook(io.BytesIO(content))["s"]["A2"]
    assert cell.data_type == "s" and cell.value == shown


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


# --------------------------------------------------------------------------- property tests

SPREADSHEET_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n", "\x00")


def _visible(text: str) -> str:
    """What a planner should see: the text without control characters."""
    return clean_text(text)


def _formula_like(value: str) -> bool:
    return value.lstrip(" ").startswith(SPREADSHEET_PREFIXES)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=40), min_size=1, max_size=6))
def test_any_text_read_back_from_csv_is_never_a_formula_and_keeps_its_visible_text(texts):
    frame = pd.DataFrame({"text": texts, "n": [-1.5] * len(texts)})
    out = csv_bytes(frame, [("Filters", texts[0])]).decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(out, newline="")))
    assert rows[0][0] == "# Filters" and len(rows[0]) == 2
    cells = [rows[0][1]] + [r[0] for r in rows[2:]]
    wanted = [re.sub(r"[\r\n]+", " ", _visible(texts[0]))] + [_visible(t) for t in texts]
    assert len(cells) == len(wanted)
    for cell, visible in zip(cells, wanted, strict=True):
        assert not cell.startswith(SPREADSHEET_PREFIXES)
        assert cell == visible or (cell == "'" + visible and _formula_like(visible))
    assert [float(r[1]) for r in rows[2:]] == [-1.5] * len(texts)  # numbers stay numbers


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=40), min_size=1, max_size=4))
def test_any_text_read_back_from_excel_is_text_never_a_formula(texts):
    content = excel_bytes(
        pd.DataFrame({"text": texts, "n": [-2] * len(texts)}), sheet="s", about=[("k", texts[0])]
    )
    book = openpyxl.load_workbook(io.BytesIO(content))
    for ws in book.worksheets:
        for row in ws.iter_rows():
            for cell in row:
                assert cell.data_type != "f"
                if isinstance(cell.value, str):
                    assert not cell.value.startswith(SPREADSHEET_PREFIXES)
    cells = [c.value for c in book["s"]["A"][1:]]
    for cell, text in zip(cells, texts, strict=True):
        visible = _visible(text)
        if not visible:
            assert cell is None
        else:
            assert cell == visible or (cell == "'" + visible and _formula_like(visible))
    assert [c.value for c in book["s"]["B"][1:]] == [-2] * len(texts)


# --------------------------------------------------------------------------- the grid view, re-applied

ROWS = [
    {
        "server_id": "srv-1",
        "severity": "high",
        "score": 70.0,
        "reason": "CPU p95 at risk",
        "due": "2026-09-01",
    },
    {"server_id": "srv-2", "severity": "critical", "score": 90.0, "reason": "memory over", "due": None},
    {"server_id": "srv-3", "severity": "low", "score": None, "reason": "cpu idle", "due": "2026-07-15"},
]
FIELDS = ["server_id", "severity", "score", "reason", "due"]


def test_quick_search_matches_every_word_in_some_column_case_insensitively():
    view = GridView.from_browser("  CPU  srv-1 ", None, None, FIELDS)
    assert [r["server_id"] for r in apply_view(ROWS, view, FIELDS)] == ["srv-1"]
    view = GridView.from_browser("70", None, None, FIELDS)  # 70.0 reads '70' as in the browser
    assert [r["server_id"] for r in apply_view(ROWS, view, FIELDS)] == ["srv-1"]


def test_sort_follows_the_column_state_with_meaningful_orders_and_missing_values_first():
    state = [{"colId": "severity", "sort": "asc", "sortIndex": 0}]
    rank = {"critical": 0, "high": 1, "medium": 2, "low": 3}
    view = GridView.from_browser(None, None, state, FIELDS)
    assert [r["server_id"] for r in apply_view(ROWS, view, FIELDS, {"severity": rank})] == [
        "srv-2",
        "srv-1",
        "srv-3",
    ]
    view = GridView.from_browser(None, None, [{"colId": "score", "sort": "asc"}], FIELDS)
    assert [r["server_id"] for r in apply_view(ROWS, view, FIELDS)] == ["srv-3", "srv-1", "srv-2"]
    view = GridView.from_browser(None, None, [{"colId": "score", "sort": "desc"}], FIELDS)
    assert [r["server_id"] for r in apply_view(ROWS, view, FIELDS)] == ["srv-2", "srv-1", "srv-3"]


def test_column_filters_text_number_date_and_combined():
    model = {
        "score": {"filterType": "number", "type": "greaterThan", "filter": "60"},
        "reason": {
            "filterType": "text",
            "operator": "OR",
            "conditions": [
                {"filterType": "text", "type": "startsWith", "filter": "cpu"},
                {"filterType": "text", "type": "contains", "filter": "MEMORY"},
            ],
        },
    }
    view = GridView.from_browser(None, model, None, FIELDS)
    assert [r["server_id"] for r in apply_view(ROWS, view, FIELDS)] == ["srv-1", "srv-2"]
    model = {"due": {"filterType": "date", "type": "lessThan", "dateFrom": "2026-08-01 00:00:00"}}
    view = GridView.from_browser(None, model, None, FIELDS)
    assert [r["server_id"] for r in apply_view(ROWS, view, FIELDS)] == ["srv-3"]
    view = GridView.from_browser(None, {"due": {"filterType": "date", "type": "blank"}}, None, FIELDS)
    assert [r["server_id"] for r in apply_view(ROWS, view, FIELDS)] == ["srv-2"]


@pytest.mark.parametrize(
    ("search", "model", "state"),
    [
        (123, "not a model", "not a list"),
        (
            "x" * 5000,
            {"nope": {"filterType": "text", "type": "equals", "filter": "a"}},
            [{"colId": "nope", "sort": "asc"}],
        ),
        (
            None,
            {"score": {"filterType": "number", "type": "greaterThan", "filter": "NaN"}},
            [{"colId": "score", "sort": "sideways"}],
        ),
        (None, {"score": {"filterType": "number", "type": "eval", "filter": 1}}, [None, 5, {"sort": "asc"}]),
        (None, {"reason": {"filterType": "text", "type": "contains", "filter": {"$ne": 1}}}, []),
        (None, {"reason": {"filterType": "text", "operator": "XOR", "conditions": []}}, []),
    ],
)
def test_hostile_or_malformed_views_are_validated_and_dropped(search, model, state):
    view = GridView.from_browser(search, model, state, FIELDS)
    assert len(view.search) <= 200
    assert view.filters == () and view.sort == ()
    assert len(apply_view(ROWS, view, FIELDS)) == (3 if not view.search else 0)
