"""Limits are visible in the page (real headless Chromium): a what-if refused by the rate limiter
(429) shows the server's sentence in the page's error alert, never fails silently.

The app runs with a what-if budget of 1 per minute for the (dev-mode) planner: the first growth
change is answered, the second gets ``429 Too many what-if requests: …`` and the alert
(assets/00-auth.js) shows exactly that sentence.
"""

from __future__ import annotations

import pytest

from app import ids
from tests.conftest import click, start

pytestmark = pytest.mark.browser


def _set_growth(dash_duo, value: str) -> None:
    from selenium.webdriver.common.keys import Keys

    box = dash_duo.find_element("#whatif-growth input.dash-range-slider-input")
    click(dash_duo, box)
    box.send_keys(Keys.CONTROL, "a")
    box.send_keys(value, Keys.TAB)  # the slider's number box commits on blur


def test_a_rate_limited_what_if_shows_the_servers_sentence(dash_duo, make_app, plan_store, plan_store_root):
    app = make_app(plan_store, plan_store_root, rate_limit="1/minute")
    start(dash_duo, app, "/risk")
    dash_duo.wait_for_element("#risk-kpis .kpi-value", timeout=30)
    alert = f"#{ids.ERROR_ALERT}"
    assert not dash_duo.find_elements(f"{alert}.show")  # nothing refused yet

    _set_growth(dash_duo, "4")  # the minute's one what-if: answered
    dash_duo.wait_for_contains_text("#whatif-summary", "growth +4 %/month", timeout=20)
    _set_growth(dash_duo, "8")  # the second within the minute: 429
    dash_duo.wait_for_contains_text(
        alert, "Too many what-if requests: at most 1 per 1 minute. Wait a little, then try again.", timeout=15
    )
    assert dash_duo.find_element(alert).is_displayed()
    assert "growth +8" not in dash_duo.find_element("#whatif-summary").text  # the refused change did nothing
