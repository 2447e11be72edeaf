"""Recording a decision on the risk page and signing a run off, in real headless Chromium
(dash_duo; run pytest with --headless), on a private copy of the fixture store."""

from __future__ import annotations

import shutil
import time

import pytest

from forecasting.records.decisions import read_decisions, read_signoff
from forecasting.sources import open_store
from tests.conftest import click, console_errors, screenshot, start

pytestmark = pytest.mark.browser

FIRST_DECISION_CELL = "#risk-grid .ag-center-cols-container .ag-row[row-index='0'] [col-id='decision']"


@pytest.fixture
def own_store(plan_store_root, tmp_path):
    root = tmp_path / "store"
    shutil.copytree(plan_store_root, root)
    return open_store(str(root)), root


def _wait(predicate, timeout: float = 15.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"{what} not met after {timeout} s")


def test_planner_records_a_decision_on_a_risk_row(dash_duo, make_app, own_store, tmp_path):
    store, root = own_store
    start(dash_duo, make_app(store, root), "/risk")
    dash_duo.wait_for_element(FIRST_DECISION_CELL, timeout=25)
    row = dash_duo.find_element("#risk-grid .ag-center-cols-container .ag-row[row-index='0']")
    row_id = row.get_attribute("row-id")
    assert dash_duo.find_element(FIRST_DECISION_CELL).text == "Decide…"
    click(dash_duo, dash_duo.find_element(FIRST_DECISION_CELL))
    dash_duo.wait_for_element("#decide-modal .modal-body", timeout=10)
    server, metric = row_id.rsplit("/", 1)
    dash_duo.wait_for_contains_text("#decide-row", server, timeout=10)
    assert dash_duo.driver.current_url.endswith("/risk")  # the cell opened the form, not the server

    # "ordered" without its reference: the error is shown and nothing is written
    click(dash_duo, dash_duo.driver.find_element("xpath", "//label[contains(., 'Ordered')]"))
    click(dash_duo, dash_duo.find_element("#decide-save"))
    dash_duo.wait_for_contains_text("#decide-error", "reference", timeout=10)
    assert read_decisions(store).empty

    dash_duo.find_element("#decide-reference").send_keys("PO-2026-118")
    dash_duo.find_element("#decide-note").send_keys("two blades ordered")
    screenshot(dash_duo, tmp_path / "decision.png", height=1100)
    click(dash_duo, dash_duo.find_element("#decide-save"))
    _wait(lambda: not dash_duo.find_elements("#decide-modal .modal-body"), what="the modal closing")
    dash_duo.wait_for_text_to_equal(FIRST_DECISION_CELL, "Ordered (PO-2026-118)", timeout=15)
    log = read_decisions(store)
    assert len(log) == 1
    rec = log.iloc[0]
    assert (rec["server_id"], rec["subject"], rec["decision"], rec["reference"]) == (
        server,
        metric,
        "ordered",
        "PO-2026-118",
    )
    assert rec["user"] == "dev-admin" and rec["note"] == "two blades ordered"
    assert not console_errors(dash_duo)


def test_overview_counts_undecided_risks_and_signs_off(dash_duo, make_app, own_store, readmodel):
    store, root = own_store
    plan = readmodel.snapshot().plan
    at_risk = int((plan.table("risk")["severity"].astype(str) != "none").sum())
    start(dash_duo, make_app(store, root), "/")
    dash_duo.wait_for_text_to_equal("#ov-undecided .kpi-value", f"{at_risk:,}", timeout=25)
    dash_duo.wait_for_contains_text("#signoff-status", "Not signed off", timeout=10)
    click(dash_duo, dash_duo.find_element("#signoff-open"))
    dash_duo.wait_for_element("#signoff-note", timeout=10)
    dash_duo.find_element("#signoff-note").send_keys("Reviewed with the infrastructure leads")
    click(dash_duo, dash_duo.find_element("#signoff-save"))
    dash_duo.wait_for_contains_text("#signoff-status", "Signed off by dev-admin", timeout=15)
    assert "Reviewed with the infrastructure leads" in dash_duo.find_element("#signoff-status").text
    assert dash_duo.find_element("#signoff-open").get_attribute("disabled") is not None
    rec = read_signoff(store, plan.run_id)
    assert rec["user"] == "dev-admin" and rec["note"] == "Reviewed with the infrastructure leads"
    assert not console_errors(dash_duo)


def test_planner_accepts_a_recommendation(dash_duo, make_app, own_store):
    store, root = own_store
    start(dash_duo, make_app(store, root), "/consolidation")
    cell = "#cons-recs-grid .ag-center-cols-container .ag-row[row-index='0'] [col-id='decision']"
    dash_duo.wait_for_element(cell, timeout=25)
    row_id = dash_duo.find_element(
        "#cons-recs-grid .ag-center-cols-container .ag-row[row-index='0']"
    ).get_attribute("row-id")
    click(dash_duo, dash_duo.find_element(cell))
    dash_duo.wait_for_contains_text("#decide-row", "recommendation", timeout=10)
    click(dash_duo, dash_duo.driver.find_element("xpath", "//label[contains(., 'Accept the risk')]"))
    click(dash_duo, dash_duo.find_element("#decide-save"))
    dash_duo.wait_for_text_to_equal(cell, "Accepted", timeout=15)
    rec = read_decisions(store).iloc[0]
    assert f"{rec['server_id']}/{rec['subject']}" == row_id and rec["kind"] == "recommendation"
    assert not console_errors(dash_duo)
