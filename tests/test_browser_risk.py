"""Risk and consolidation pages in real headless Chromium (dash_duo; run pytest with --headless).

The pages load without console errors, a business-unit filter narrows the risk grid, a row
click opens its server, the CSV export downloads exactly the rows the grid shows, and the
what-if growth control changes the risk count (and lands in the URL).
"""

from __future__ import annotations

import io
import time
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from app import get_context
from app.filters import FilterState
from app.whatif import ScenarioState
from callbacks import risk
from tests.conftest import choose, click, console_errors, screenshot, start

pytestmark = pytest.mark.browser

SHOWN_ROWS_JS = """
const api = window.dash_ag_grid.getApi(arguments[0]);
const out = [];
api.forEachNodeAfterFilterAndSort(n => out.push(n.data.server_id + '/' + (n.data.metric || '')));
return out;
"""


def _risk_ready(dash_duo, count: str | None = None) -> None:
    dash_duo.wait_for_element("#risk-count .kpi-value", timeout=20)
    if count is not None:
        dash_duo.wait_for_text_to_equal("#risk-count .kpi-value", count, timeout=20)
    dash_duo.wait_for_element("#risk-grid .ag-center-cols-container .ag-row", timeout=20)


def _count(rm, filters: FilterState, state: ScenarioState | None = None) -> int:
    rows, *_ = risk.risk_view(rm, filters.to_data(), (state or ScenarioState()).to_data())
    return len(rows)


def _shown(dash_duo, grid: str) -> list[str]:
    deadline = time.monotonic() + 10
    while True:
        try:
            return dash_duo.driver.execute_script(SHOWN_ROWS_JS, grid)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _wait_download(folder: Path, suffix: str, timeout: float = 15.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.glob(f"*{suffix}") if p.stat().st_size > 0]
        if done:
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"no {suffix} download in {folder} after {timeout} s")


def test_risk_and_consolidation_pages_load_without_console_errors(dash_duo, fixture_app, readmodel, tmp_path):
    start(dash_duo, fixture_app, "/risk")
    _risk_ready(dash_duo, f"{_count(readmodel, FilterState()):,}")
    links = [a.text for a in dash_duo.driver.find_elements("css selector", ".app-navbar .nav-link")]
    assert "Utilization risk" in links and "Consolidation" in links
    screenshot(dash_duo, tmp_path / "risk.png", height=1500)

    # the fixture's published plan packs no host; "everything that fits" does
    dash_duo.driver.get(dash_duo.server_url + "/consolidation?propose=all")
    dash_duo.wait_for_element("#cons-kpis-hosts .kpi-value", timeout=20)
    dash_duo.wait_for_element("#cons-recs-grid .ag-center-cols-container .ag-row", timeout=20)
    assert not dash_duo.find_elements("#cons-plan-grid")  # the host plan tab mounts when opened
    click(dash_duo, dash_duo.find_element("#cons-tab-plan"))
    dash_duo.wait_for_element("#cons-plan-grid .ag-center-cols-container .ag-row", timeout=20)
    for graph in ("#cons-savings-chart", "#cons-host-chart"):
        dash_duo.wait_for_element(f"{graph} .main-svg", timeout=20)
    dash_duo.wait_for_contains_text("#cons-host-chart .gtitle", "summed load", timeout=20)
    # clicking another host group charts it
    second = dash_duo.driver.find_elements(
        "css selector", "#cons-plan-grid .ag-center-cols-container .ag-row [col-id='members']"
    )[1]
    group = dash_duo.driver.find_elements(
        "css selector", "#cons-plan-grid .ag-pinned-left-cols-container .ag-row [col-id='target_group']"
    )[1].text
    click(dash_duo, second)
    dash_duo.wait_for_contains_text("#cons-host-chart .gtitle", f"{group}:", timeout=20)
    screenshot(dash_duo, tmp_path / "consolidation.png", height=2200)
    assert console_errors(dash_duo) == []


def test_business_unit_filter_narrows_the_risk_grid(dash_duo, fixture_app, readmodel):
    start(dash_duo, fixture_app, "/risk")
    total = _count(readmodel, FilterState())
    _risk_ready(dash_duo, f"{total:,}")
    markets = _count(readmodel, FilterState(business_unit=("Markets",)))
    assert 0 < markets < total
    choose(dash_duo, "shell-filter-business-unit", "Markets")
    _risk_ready(dash_duo, f"{markets:,}")
    shown = _shown(dash_duo, "risk-grid")
    assert len(shown) == markets
    units = {
        c.text
        for c in dash_duo.driver.find_elements(
            "css selector", "#risk-grid .ag-center-cols-container [col-id='business_unit']"
        )
    }
    assert units == {"Markets"}
    assert parse_qs(urlparse(dash_duo.driver.current_url).query) == {"bu": ["Markets"]}
    assert console_errors(dash_duo) == []


def test_a_risk_row_click_opens_its_server(dash_duo, fixture_app):
    start(dash_duo, fixture_app, "/risk")
    _risk_ready(dash_duo)
    first = _shown(dash_duo, "risk-grid")[0].rsplit("/", 1)[0]
    cell = dash_duo.find_element(
        "#risk-grid .ag-center-cols-container .ag-row[row-index='0'] [col-id='business_unit']"
    )
    click(dash_duo, cell)
    dash_duo.wait_for_contains_text("#srv-facts", first, timeout=20)
    assert urlparse(dash_duo.driver.current_url).path == f"/servers/{first}"
    assert console_errors(dash_duo) == []


def test_csv_export_downloads_the_rows_the_grid_shows(dash_duo, fixture_app, readmodel):
    start(dash_duo, fixture_app, "/risk?bu=Markets")
    _risk_ready(dash_duo, f"{_count(readmodel, FilterState(business_unit=('Markets',))):,}")
    # narrow further in the grid itself: quick search, then sort by score ascending
    search = dash_duo.find_element("#risk-search")
    search.send_keys("cpu")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shown = _shown(dash_duo, "risk-grid")
        if shown and all(s.endswith("/cpu_p95") for s in shown):
            break
        time.sleep(0.2)
    assert shown and all(s.endswith("/cpu_p95") for s in shown)
    # sort by score ascending (a header click); the server re-applies the grid's sort
    before = shown
    click(dash_duo, dash_duo.find_element("#risk-grid .ag-header-cell[col-id='score'] .ag-header-cell-label"))
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        shown = _shown(dash_duo, "risk-grid")
        if shown != before:
            break
        time.sleep(0.2)
    assert shown != before and sorted(shown) == sorted(before)
    time.sleep(0.5)  # the grid reports its column state to Dash
    click(dash_duo, dash_duo.find_element("#risk-export-csv"))
    path = _wait_download(Path(dash_duo.download_path), ".csv")
    text = path.read_text(encoding="utf-8-sig")
    assert '# Filters,"Business unit: Markets"' in text
    body = pd.read_csv(io.StringIO(text), comment="#")
    assert [f"{s}/cpu_p95" for s in body["Server"]] == shown
    assert set(body["Business unit"]) == {"Markets"} and set(body["Metric"]) == {"CPU p95"}
    assert console_errors(dash_duo) == []


def test_growth_control_changes_the_risk_count_and_the_url(dash_duo, fixture_app, readmodel):
    start(dash_duo, fixture_app, "/risk")
    base = _count(readmodel, FilterState())
    _risk_ready(dash_duo, f"{base:,}")
    grown = _count(readmodel, FilterState(), ScenarioState(growth=10))
    assert grown != base
    from selenium.webdriver.common.keys import Keys

    box = dash_duo.find_element("#whatif-growth input.dash-range-slider-input")
    click(dash_duo, box)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("10", Keys.TAB)  # the slider's number box commits on blur
    _risk_ready(dash_duo, f"{grown:,}")
    dash_duo.wait_for_contains_text("#whatif-summary", "growth +10 %/month", timeout=10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "growth=10" not in dash_duo.driver.current_url:
        time.sleep(0.1)
    assert parse_qs(urlparse(dash_duo.driver.current_url).query).get("growth") == ["10"]

    # the scenario follows the planner to the consolidation page (its navbar link carries it)
    def link(text: str):
        found = [a for a in dash_duo.find_elements(".app-navbar .nav-link") if a.text == text]
        assert found, f"no navbar link {text!r}"
        return found[0]

    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "growth=10" not in (
        link("Consolidation").get_attribute("href") or ""
    ):
        time.sleep(0.1)
    assert "growth=10" in link("Consolidation").get_attribute("href")
    assert "growth" not in link("Overview").get_attribute("href")  # the overview has no scenario
    click(dash_duo, link("Consolidation"))
    dash_duo.wait_for_contains_text("#whatif-summary", "growth +10 %/month", timeout=20)
    assert urlparse(dash_duo.driver.current_url).path == "/consolidation"
    assert parse_qs(urlparse(dash_duo.driver.current_url).query).get("growth") == ["10"]
    dash_duo.wait_for_element("#cons-kpis .kpi-value", timeout=30)  # the re-planned page is in
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and dash_duo.find_elements("[data-dash-is-loading=true]"):
        time.sleep(0.2)  # let the chart callback finish before the server stops
    assert console_errors(dash_duo) == []


LOADED_ROWS_JS = """
const api = window.dash_ag_grid.getApi(arguments[0]);
const out = [];
api.forEachNode(n => { if (n.data) out.push(n.data.row_id + '|' + n.data.score); });
return out;
"""


def _loaded(dash_duo, grid: str, until, timeout: float = 20.0) -> list[str]:
    deadline = time.monotonic() + timeout
    rows: list[str] = []
    while time.monotonic() < deadline:
        try:
            rows = dash_duo.driver.execute_script(LOADED_ROWS_JS, grid)
        except Exception:
            rows = []
        if rows and until(rows):
            return rows
        time.sleep(0.2)
    raise AssertionError(f"the grid's rows never satisfied the condition: {rows[:5]}")


def test_a_server_paged_risk_grid_pages_sorts_searches_and_refuses_a_bad_filter(
    dash_duo, make_app, plan_store, plan_store_root
):
    """Above grid_client_max_rows (0 here) the grid is AG Grid's infinite row model: the
    browser holds one block at a time, the server sorts, filters and searches."""
    app = make_app(plan_store, plan_store_root, grid_client_max_rows=0)
    rm = get_context(app).readmodel
    every = risk.risk_view(rm, FilterState().to_data(), ScenarioState().to_data())[0]
    start(dash_duo, app, "/risk")
    _risk_ready(dash_duo, f"{len(every):,}")
    assert (
        dash_duo.driver.execute_script(
            "return window.dash_ag_grid.getApi('risk-grid').getGridOption('rowModelType')"
        )
        == "infinite"
    )
    # the first block, in the server's order (worst first)
    rows = _loaded(dash_duo, "risk-grid", lambda r: len(r) == min(len(every), 100))
    assert [r.split("|")[0] for r in rows] == [r["row_id"] for r in every[:100]]
    # sort by score ascending: the server answers in that order
    click(dash_duo, dash_duo.find_element("#risk-grid .ag-header-cell[col-id='score'] .ag-header-cell-label"))

    def ascending(rows: list[str]) -> bool:
        scores = [float(r.split("|")[1]) for r in rows if r.split("|")[1] not in ("null", "undefined")]
        return len(scores) > 1 and scores == sorted(scores) and scores != sorted(scores, reverse=True)

    _loaded(dash_duo, "risk-grid", ascending)
    # the quick search narrows on the server
    dash_duo.find_element("#risk-search").send_keys("cpu")
    rows = _loaded(dash_duo, "risk-grid", lambda r: all(x.split("|")[0].endswith("/cpu_p95") for x in r))
    cpu = [r for r in every if r["metric"] == "cpu_p95"]
    assert 0 < len(rows) == len(cpu) < len(every)
    # a filter the table refuses (longer than 200 characters) gets a clear alert, not a guess
    dash_duo.driver.execute_script(
        "window.dash_ag_grid.getApi('risk-grid').setFilterModel("
        "{reason: {filterType: 'text', type: 'contains', filter: 'x'.repeat(300)}})"
    )
    dash_duo.wait_for_contains_text("#risk-grid-alert", "at most 200 characters", timeout=20)
    assert console_errors(dash_duo) == []
