"""The app in real headless Chromium (dash[testing]'s dash_duo; run pytest with --headless).

Covers the shell and the overview and server pages: every page loads without console
errors, filters narrow what is shown and live in the URL, links open servers, unknown
servers and paths read clearly, a re-forecast patches the charts. Screenshots are taken
along the way; set CAPFC_SCREENSHOTS=docs/screenshots to refresh the README's copies.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pytest

from tests.conftest import choose, click, console_errors, kpi, screenshot, start

pytestmark = pytest.mark.browser

GRAPHS = ["#ov-heatmap", "#ov-distribution", "#ov-trend"]


def _overview_ready(dash_duo, servers: str | None = None) -> None:
    dash_duo.wait_for_element("#ov-kpis-servers", timeout=15)
    if servers is not None:
        dash_duo.wait_for_text_to_equal("#ov-kpis-servers .kpi-value", servers, timeout=15)
    for g in GRAPHS:
        dash_duo.wait_for_element(f"{g} .main-svg", timeout=15)
    dash_duo.wait_for_element("#ov-top-risks-grid .ag-row", timeout=15)


def _grid_column(dash_duo, grid: str, col: str) -> list[str]:
    cells = dash_duo.driver.find_elements(
        "css selector", f"#{grid} .ag-center-cols-container [col-id='{col}']"
    )
    return [c.text for c in cells]


def _query(dash_duo) -> dict[str, list[str]]:
    return parse_qs(urlparse(dash_duo.driver.current_url).query)


def test_every_page_loads_without_console_errors(dash_duo, fixture_app, plan, tmp_path):
    start(dash_duo, fixture_app)
    _overview_ready(dash_duo, f"{plan.n_servers:,}")
    from app import nav_pages

    links = dash_duo.driver.find_elements("css selector", ".app-navbar .nav-link")
    assert [link.text for link in links] == [p["nav_label"] for p in nav_pages()]
    assert [link.text for link in links][:2] == ["Overview", "Server forecast"]
    assert "active" in links[0].get_attribute("class")
    assert dash_duo.find_element("#shell-as-of").text.startswith(f"run {plan.run_id}")
    screenshot(dash_duo, tmp_path / "overview.png", height=1900)

    dash_duo.driver.get(dash_duo.server_url + "/servers")
    dash_duo.wait_for_contains_text("#srv-message", "Choose a server", timeout=15)

    dash_duo.driver.get(dash_duo.server_url + "/servers/srv-00031")
    dash_duo.wait_for_contains_text("#srv-facts", "srv-00031", timeout=15)
    dash_duo.wait_for_element("#srv-accuracy-table tbody tr", timeout=15)
    dash_duo.wait_for_element("#srv-risk-table tbody tr .sev-badge", timeout=15)
    graphs = dash_duo.driver.find_elements("css selector", "#srv-charts .js-plotly-plot")
    assert len(graphs) == len(plan.metrics)
    assert "active" in dash_duo.driver.find_elements("css selector", ".app-navbar .nav-link")[
        1
    ].get_attribute("class")
    shot = screenshot(dash_duo, tmp_path / "server.png", height=2300)

    dash_duo.driver.get(dash_duo.server_url + "/no/such/page")
    dash_duo.wait_for_text_to_equal(".page-title", "Page not found", timeout=15)
    click(dash_duo, dash_duo.find_element("#nf-home"))
    _overview_ready(dash_duo)

    assert console_errors(dash_duo) == []
    assert shot.stat().st_size > 20_000


def test_business_unit_filter_narrows_kpis_and_top_risks_and_stays_in_url(
    dash_duo, fixture_app, plan, tmp_path
):
    from app.filters import FilterState

    start(dash_duo, fixture_app)
    _overview_ready(dash_duo, f"{plan.n_servers:,}")
    markets = FilterState(business_unit=("Markets",))
    expected = plan.kpis(markets)

    choose(dash_duo, "shell-filter-business-unit", "Markets")
    _overview_ready(dash_duo, f"{expected.servers:,}")
    assert expected.servers < plan.n_servers
    assert kpi(dash_duo, "at-risk") == f"{expected.at_risk_total:,}"
    assert kpi(dash_duo, "breach-90") == f"{expected.breach_within[90]:,}"
    dash_duo.wait_for_text_to_equal(
        "#shell-filter-count", f"Showing {expected.servers} of {plan.n_servers} servers"
    )
    # every top risk now belongs to Markets, and the URL carries the filter
    dash_duo.wait_for_element("#ov-top-risks-grid .ag-row", timeout=10)
    time.sleep(0.3)
    units = _grid_column(dash_duo, "ov-top-risks-grid", "business_unit")
    assert units and set(units) == {"Markets"}
    assert _query(dash_duo) == {"bu": ["Markets"]}
    screenshot(dash_duo, tmp_path / "overview-filtered.png", height=1900)

    # navigating keeps the filter: the nav link carries the query string
    dash_duo.find_element(".app-navbar .nav-link[href^='/servers']").click()
    dash_duo.wait_for_contains_text("#srv-message", "Choose a server", timeout=15)
    assert _query(dash_duo) == {"bu": ["Markets"]}
    dash_duo.find_element(".app-navbar .nav-link[href^='/?'], .app-navbar .nav-link[href='/']").click()
    _overview_ready(dash_duo, f"{expected.servers:,}")

    dash_duo.find_element("#shell-filter-clear").click()
    _overview_ready(dash_duo, f"{plan.n_servers:,}")
    assert _query(dash_duo) == {}
    assert console_errors(dash_duo) == []


def test_shared_link_restores_filters_and_drops_hostile_values(dash_duo, fixture_app, plan):
    from app.filters import FilterState

    hostile = "<img src=x onerror=alert(1)>"
    start(dash_duo, fixture_app, f"/?bu=Markets&env=prod&bu={hostile}&crit=%27%22%3E")
    expected = plan.kpis(FilterState(business_unit=("Markets",), environment=("prod",)))
    _overview_ready(dash_duo, f"{expected.servers:,}")
    dash_duo.wait_for_contains_text("#shell-filter-notice", "Ignored filter values", timeout=10)
    notice = dash_duo.find_element("#shell-filter-notice").text
    assert hostile in notice  # shown as text...
    assert (
        dash_duo.driver.find_elements("css selector", "#shell-filter-notice img") == []
    )  # ...never as markup
    assert _query(dash_duo) == {"bu": ["Markets"], "env": ["prod"]}
    assert "Markets" in dash_duo.find_element("#shell-filter-business-unit").text
    assert console_errors(dash_duo) == []


def test_filters_matching_nothing_show_an_empty_state(dash_duo, fixture_app, plan):
    inv = plan.inventory
    pairs = set(zip(inv["business_unit"], inv["server_type"], strict=True))
    bu, stype = next(
        (b, t)
        for b in plan.options["business_unit"]
        for t in plan.options["server_type"]
        if (b, t) not in pairs
    )
    start(dash_duo, fixture_app, f"/?bu={bu.replace('&', '%26')}&type={stype}")
    dash_duo.wait_for_contains_text("#ov-empty", "No servers match these filters", timeout=15)
    dash_duo.wait_for_text_to_equal("#ov-kpis-servers .kpi-value", "0", timeout=10)
    dash_duo.wait_for_contains_text("#ov-top-risks", "No servers match these filters", timeout=10)
    assert console_errors(dash_duo) == []


def test_top_risk_click_opens_its_server(dash_duo, fixture_app, plan):
    start(dash_duo, fixture_app)
    _overview_ready(dash_duo)
    first = plan.top_risks(None, 1)["server_id"].iloc[0]
    link = dash_duo.find_element("#ov-top-risks-grid a.server-link")
    assert link.text == first
    click(dash_duo, link)
    dash_duo.wait_for_contains_text("#srv-facts", first, timeout=15)
    assert urlparse(dash_duo.driver.current_url).path == f"/servers/{first}"
    dash_duo.wait_for_element("#srv-charts .js-plotly-plot", timeout=15)
    assert console_errors(dash_duo) == []


def test_unknown_server_id_shows_a_message(dash_duo, fixture_app):
    start(dash_duo, fixture_app, "/servers/srv-does-not-exist")
    dash_duo.wait_for_contains_text("#srv-unknown", "There is no server “srv-does-not-exist”", timeout=15)
    assert not dash_duo.find_element("#srv-body").is_displayed()
    assert console_errors(dash_duo) == []


def test_server_picker_opens_another_server(dash_duo, fixture_app):
    start(dash_duo, fixture_app, "/servers/srv-00031")
    dash_duo.wait_for_contains_text("#srv-facts", "srv-00031", timeout=15)
    choose(dash_duo, "srv-picker", "srv-00042")
    dash_duo.wait_for_contains_text("#srv-facts", "srv-00042", timeout=15)
    assert urlparse(dash_duo.driver.current_url).path == "/servers/srv-00042"
    assert console_errors(dash_duo) == []


def test_model_chooser_reforecasts_and_patches_the_charts(dash_duo, fixture_app):
    start(dash_duo, fixture_app, "/servers/srv-00031")
    dash_duo.wait_for_element("#srv-charts .js-plotly-plot", timeout=15)
    trace_name = (
        "return Array.from(document.querySelectorAll('#srv-charts .js-plotly-plot')).map(g => g.data[5].name)"
    )
    assert all(n.startswith("forecast (plan") for n in dash_duo.driver.execute_script(trace_name))
    click(
        dash_duo,
        dash_duo.driver.find_element(
            "xpath", "//*[@id='srv-model']//label[normalize-space()='Seasonal naive']"
        ),
    )
    dash_duo.wait_for_contains_text("#srv-model-status", "Seasonal naive re-forecast", timeout=60)
    deadline = time.time() + 10
    while time.time() < deadline:
        names = dash_duo.driver.execute_script(trace_name)
        if names and all(n == "forecast (Seasonal naive)" for n in names):
            break
        time.sleep(0.2)
    assert names and all(n == "forecast (Seasonal naive)" for n in names)
    assert not dash_duo.find_element("#srv-progress-wrap").is_displayed()
    assert console_errors(dash_duo) == []


def test_no_run_yet_says_how_to_make_one(dash_duo, make_app, tmp_path):
    from forecasting.sources import open_store

    root = tmp_path / "empty"
    app = make_app(open_store(str(root)), root)
    start(dash_duo, app)
    dash_duo.wait_for_contains_text("#ov-empty", "python -m forecasting run", timeout=15)
    assert dash_duo.find_element("#shell-as-of").text == "no forecast run"
    assert console_errors(dash_duo) == []
