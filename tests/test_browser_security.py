"""The Content Security Policy in real headless Chromium: every page, tab, a what-if, a
re-forecast and both exports run with zero CSP violations; and the check itself catches a
violation (the same app without the inline-script hashes).

Violations are caught twice: a ``securitypolicyviolation`` listener installed before any page
script runs (CDP ``Page.addScriptToEvaluateOnNewDocument``; CDP-injected scripts are exempt from
the page's CSP) and Chromium's console ("Refused to ...").
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from app import security
from tests.conftest import click, start

pytestmark = pytest.mark.browser

LISTEN_JS = """
window.__csp = [];
document.addEventListener('securitypolicyviolation', function (e) {
    window.__csp.push([e.violatedDirective, e.blockedURI, e.sourceFile, e.lineNumber, e.sample].join(' | '));
});
"""


def _listen(dash_duo) -> None:
    dash_duo.driver.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": LISTEN_JS})


def violations(dash_duo) -> list[str]:
    """CSP violations seen by the listener of the current document and in the console."""
    events = dash_duo.driver.execute_script("return window.__csp || [];") or []
    console = [
        e["message"]
        for e in dash_duo.driver.get_log("browser")
        if "Content Security Policy" in e.get("message", "") or "Refused to" in e.get("message", "")
    ]
    return list(events) + console


def _wait_idle(dash_duo, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    time.sleep(0.3)
    while time.monotonic() < deadline and dash_duo.find_elements("[data-dash-is-loading=true]"):
        time.sleep(0.2)


def _wait_download(folder: Path, suffix: str, timeout: float = 20.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.glob(f"*{suffix}") if p.stat().st_size > 0]
        if done:
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"no {suffix} download in {folder} after {timeout} s")


def test_every_page_runs_under_the_csp_without_a_violation(dash_duo, fixture_app, plan):
    _listen(dash_duo)
    seen: list[str] = []
    start(dash_duo, fixture_app, "/")
    dash_duo.wait_for_element("#ov-heatmap .main-svg", timeout=30)
    dash_duo.wait_for_element("#ov-trend .main-svg", timeout=30)
    _wait_idle(dash_duo)
    seen += violations(dash_duo)

    # a server page, and a re-forecast (a background job: progress bar, then patched charts)
    server_id = str(plan.inventory["server_id"].iat[3])
    dash_duo.driver.get(f"{dash_duo.server_url}/servers/{server_id}")
    dash_duo.wait_for_contains_text("#srv-facts", server_id, timeout=30)
    dash_duo.wait_for_element("#srv-charts .main-svg", timeout=30)
    label = dash_duo.driver.find_element(
        "xpath", "//*[@id='srv-model']//label[normalize-space()='Seasonal naive']"
    )
    click(dash_duo, label)
    dash_duo.wait_for_contains_text("#srv-model-status", "Seasonal naive re-forecast", timeout=60)
    _wait_idle(dash_duo)
    seen += violations(dash_duo)

    # the risk page: a what-if change, a quick search and a CSV export
    dash_duo.driver.get(f"{dash_duo.server_url}/risk")
    dash_duo.wait_for_element("#risk-grid .ag-center-cols-container .ag-row", timeout=30)
    from selenium.webdriver.common.keys import Keys

    box = dash_duo.find_element("#whatif-growth input.dash-range-slider-input")
    click(dash_duo, box)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys("5", Keys.TAB)
    dash_duo.wait_for_contains_text("#whatif-summary", "growth +5 %/month", timeout=20)
    _wait_idle(dash_duo)
    dash_duo.find_element("#risk-search").send_keys("cpu")
    click(dash_duo, dash_duo.find_element("#risk-export-csv"))
    _wait_download(Path(dash_duo.download_path), ".csv")
    seen += violations(dash_duo)

    # consolidation: its three tabs (recommendations, host plan with its chart, held back), Excel
    dash_duo.driver.get(f"{dash_duo.server_url}/consolidation?propose=all")
    dash_duo.wait_for_element("#cons-recs-grid .ag-center-cols-container .ag-row", timeout=30)
    dash_duo.wait_for_element("#cons-savings-chart .main-svg", timeout=30)
    click(dash_duo, dash_duo.find_element("#cons-tab-plan"))
    dash_duo.wait_for_element("#cons-plan-grid .ag-center-cols-container .ag-row", timeout=30)
    dash_duo.wait_for_element("#cons-host-chart .main-svg", timeout=30)
    click(dash_duo, dash_duo.find_element("#cons-tab-held"))
    dash_duo.wait_for_element("#cons-held-chart .main-svg", timeout=30)
    click(dash_duo, dash_duo.find_element("#cons-tab-recs"))
    dash_duo.wait_for_element("#cons-export-xlsx", timeout=30)
    click(dash_duo, dash_duo.find_element("#cons-export-xlsx"))
    _wait_download(Path(dash_duo.download_path), ".xlsx")
    _wait_idle(dash_duo)
    seen += violations(dash_duo)
    assert seen == []


def test_the_violation_check_catches_a_policy_without_the_script_hashes(
    dash_duo, make_app, plan_store, plan_store_root, monkeypatch
):
    """The same check fails when the CSP lacks Dash's inline-script hashes: it can fail."""
    monkeypatch.setattr(
        security, "content_security_policy", lambda app: {k: list(v) for k, v in security.BASE_CSP.items()}
    )
    app = make_app(plan_store, plan_store_root)
    _listen(dash_duo)
    from tests.conftest import free_port

    dash_duo.start_server(app, port=free_port())
    deadline = time.monotonic() + 10
    found: list[str] = []
    while time.monotonic() < deadline and not found:
        found = violations(dash_duo)
        time.sleep(0.2)
    assert any("script-src" in v for v in found), found
    assert not dash_duo.find_elements("#shell-as-of")  # the renderer never started
