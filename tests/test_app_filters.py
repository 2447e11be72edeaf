"""app.filters: the URL query string <-> filter state, and what untrusted input can do to it."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from app.filters import (
    MAX_VALUE_CHARS,
    MAX_VALUES,
    PARAMS,
    FilterState,
    dimensions,
    from_query,
    parse_query,
    sanitise,
)

OPTIONS = {
    "business_unit": ["Markets", "Payments", "Risk & Finance"],
    "region": ["emea-london", "amer-newyork"],
    "environment": ["dev", "prod", "uat"],
    "criticality": ["critical", "high", "medium", "low"],
    "server_type": ["app", "db", "web"],
}


def test_parse_reads_known_parameters_only():
    raw = parse_query("?bu=Markets&bu=Payments&env=prod&utm_source=mail&page=2")
    assert raw == {"business_unit": ["Markets", "Payments"], "environment": ["prod"]}
    assert parse_query("bu=Markets") == {"business_unit": ["Markets"]}  # '?' optional
    assert parse_query(None) == {} and parse_query("") == {} and parse_query("?") == {}


def test_parse_strips_blanks_duplicates_and_overlong_values():
    long = "x" * (MAX_VALUE_CHARS + 1)
    raw = parse_query(f"?bu=%20Markets%20&bu=Markets&bu=&bu={long}&type=db")
    assert raw == {"business_unit": ["Markets"], "server_type": ["db"]}


def test_sanitise_keeps_known_values_in_inventory_order_and_reports_the_rest():
    state, dropped = sanitise(
        {"business_unit": ["Payments", "Nope", "Markets", "Payments"], "environment": ["prod"]}, OPTIONS
    )
    assert state.business_unit == ("Markets", "Payments")
    assert state.environment == ("prod",)
    assert dropped == [("business_unit", "Nope")]


def test_query_round_trip_with_characters_that_need_encoding():
    state = FilterState(business_unit=("Risk & Finance",), criticality=("critical", "high"))
    query = state.to_query()
    assert query == "bu=Risk+%26+Finance&crit=critical&crit=high"
    again, dropped = from_query("?" + query, OPTIONS)
    assert again == state and dropped == []
    assert FilterState().to_query() == ""


@pytest.mark.parametrize(
    "search",
    [
        "?bu=<script>alert(1)</script>",
        "?bu=%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E&env=prod",
        "?env=prod%00&type=db%0d%0aSet-Cookie:x=1",
        "?bu=%ZZ&bu=%",
        "?" + "&".join(["bu=Markets"] * 5000),
        "?bu=" + "A" * 100_000,
        "?crit=critical';DROP TABLE servers;--",
        "?bu[]=Markets&bu.x=1&=prod",
    ],
)
def test_hostile_query_strings_only_ever_yield_known_values(search):
    state, dropped = from_query(search, OPTIONS)
    for dim in dimensions():
        assert set(state.get(dim)) <= set(OPTIONS[dim])
    assert all(isinstance(v, str) and len(v) <= MAX_VALUE_CHARS for _, v in dropped)
    assert len(dropped) <= MAX_VALUES * len(PARAMS)


@settings(max_examples=200, deadline=None)
@given(st.text(max_size=300))
def test_any_text_parses_without_error_to_known_values(text):
    state, _ = from_query(text, OPTIONS)
    for dim in dimensions():
        assert set(state.get(dim)) <= set(OPTIONS[dim])


@settings(max_examples=100, deadline=None)
@given(
    st.fixed_dictionaries(
        {d: st.lists(st.sampled_from(v), max_size=len(v), unique=True) for d, v in OPTIONS.items()}
    )
)
def test_any_known_state_survives_the_url(selection):
    state, dropped = sanitise(selection, OPTIONS)
    again, dropped_again = from_query(state.to_query(), OPTIONS)
    assert again == state and dropped == dropped_again == []


def test_store_data_round_trip_and_tolerance_of_anything_else():
    state = FilterState(business_unit=("Markets",), environment=("prod", "uat"))
    data = state.to_data()
    assert data["query"] == "bu=Markets&env=prod&env=uat"
    assert data["keys"] == ["bu", "region", "env", "crit", "type"]
    assert FilterState.from_data(data) == state
    for junk in (None, [], "bu=Markets", {"filters": "x"}, {"filters": {"business_unit": 3}}):
        assert FilterState.from_data(junk) == FilterState()
    odd = FilterState.from_data({"filters": {"business_unit": [1, None, "A" * 500, " Markets ", "Markets"]}})
    assert odd.business_unit == ("Markets",)


def test_describe_and_unknown_dimension():
    assert FilterState().describe() == "All servers"
    text = FilterState(business_unit=("Markets", "Payments"), environment=("prod",)).describe()
    assert text == "Business unit: Markets, Payments · Environment: prod"
    with pytest.raises(KeyError, match="unknown filter dimension 'colour'"):
        FilterState().get("colour")
