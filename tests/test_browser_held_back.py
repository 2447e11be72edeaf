"""The consolidation page's held-back section and policy knobs in real headless Chromium
(dash_duo; run pytest with --headless).

The held-back tab mounts when opened and shows the counts per category; choosing "Idle
servers only" in the what-if re-derives the recommendations (no right-sizing left), the
counts follow, the choice lands in the URL, and no error alert or console error appears.
"""

from __future__ import annotations

import time
from urllib.parse import parse_qs, urlparse

import pandas as pd
import pytest

from app.filters import FilterState
from app.whatif import ScenarioState
from callbacks import consolidation as cons
from tests.conftest import click, console_errors, screenshot, start

pytestmark = pytest.mark.browser

ALL = FilterState().to_data()
SHOWN_JS = """
const api = window.dash_ag_grid.getApi(arguments[0]);
const out = [];
api.forEachNodeAfterFilterAndSort(n => out.push([n.data.server_id, n.data.action, n.data.held_back]));
return out;
"""


def _rows(dash_duo, grid: str) -> list[list[str]]:
    deadline = time.monotonic() + 10
    while True:
        try:
            return dash_duo.driver.execute_script(SHOWN_JS, grid)
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def _badges(dash_duo) -> dict[str, int]:
    out = {}
    for el in dash_duo.find_elements("#cons-held-badges .held-badge"):
        out[el.get_attribute("data-category")] = int(
            el.find_element("css selector", ".fw-bold").text.replace(",", "")
        )
    return out


def _wait_badges(dash_duo, expected: dict[str, int], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    got: dict[str, int] = {}
    while time.monotonic() < deadline:
        try:
            got = _badges(dash_duo)
        except Exception:  # re-rendered while reading
            got = {}
        if got == expected:
            return
        time.sleep(0.2)
    raise AssertionError(f"held-back badges {got} != {expected}")


def _settle(dash_duo, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and dash_duo.find_elements("[data-dash-is-loading=true]"):
        time.sleep(0.2)


def _no_error_alert(dash_duo) -> None:
    alerts = [a for a in dash_duo.find_elements("#shell-error-alert") if a.is_displayed() and a.text.strip()]
    assert alerts == [], [a.text for a in alerts]


def test_held_back_section_and_what_to_propose(dash_duo, fixture_app, readmodel, tmp_path):
    base = dict(cons.held_back_counts(pd.DataFrame(cons.held_back_view(readmodel, ALL, {}, "all")[2])))
    idle_state = ScenarioState(propose="idle").to_data()
    idle = dict(
        cons.held_back_counts(pd.DataFrame(cons.held_back_view(readmodel, ALL, idle_state, "all")[2]))
    )
    assert base and idle != base  # the choice changes what is held back: the test can fail

    start(dash_duo, fixture_app, "/consolidation")
    dash_duo.wait_for_element("#cons-recs-grid .ag-center-cols-container .ag-row", timeout=30)
    assert any(action == "right-size" for _, action, _ in _rows(dash_duo, "cons-recs-grid"))
    assert not dash_duo.find_elements("#cons-held-grid")  # the held-back tab mounts when opened

    click(dash_duo, dash_duo.find_element("#cons-tab-held"))
    dash_duo.wait_for_element("#cons-held-grid .ag-center-cols-container .ag-row", timeout=30)
    _wait_badges(dash_duo, base)
    dash_duo.wait_for_contains_text("#cons-held-chart .gtitle", "held back from the plan", timeout=20)
    held = _rows(dash_duo, "cons-held-grid")
    assert len(held) == sum(base.values()) and all(h for _, _, h in held)

    # the category filter narrows the grid
    from selenium.webdriver.support.ui import Select

    Select(dash_duo.find_element("#cons-held-category")).select_by_value("not proposed")
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and len(_rows(dash_duo, "cons-held-grid")) != base["not proposed"]:
        time.sleep(0.2)
    assert {h for _, _, h in _rows(dash_duo, "cons-held-grid")} == {"not proposed"}
    Select(dash_duo.find_element("#cons-held-category")).select_by_value("all")
    _settle(dash_duo)
    screenshot(dash_duo, tmp_path / "consolidation-held-back.png", height=2000)

    # "What to propose": idle servers only
    select = dash_duo.find_element("#whatif-propose")
    click(dash_duo, select)
    Select(select).select_by_value("idle")
    dash_duo.wait_for_contains_text("#whatif-summary", "propose: idle servers only", timeout=20)
    _wait_badges(dash_duo, idle, timeout=60)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and "propose=idle" not in dash_duo.driver.current_url:
        time.sleep(0.1)
    assert parse_qs(urlparse(dash_duo.driver.current_url).query).get("propose") == ["idle"]

    click(dash_duo, dash_duo.find_element("#cons-tab-recs"))
    dash_duo.wait_for_element("#cons-recs-grid .ag-center-cols-container .ag-row", timeout=30)
    deadline = time.monotonic() + 30
    actions: set[str] = set()
    while time.monotonic() < deadline:
        actions = {a for _, a, _ in _rows(dash_duo, "cons-recs-grid")}
        if actions and not actions & {"right-size", "consolidate"}:
            break
        time.sleep(0.2)
    assert actions and not actions & {"right-size", "consolidate"}, actions
    _settle(dash_duo)
    _no_error_alert(dash_duo)
    assert console_errors(dash_duo) == []
