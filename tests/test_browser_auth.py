"""Sign-in in real headless Chromium: the app in oidc mode against the loopback identity provider.

The browser follows the real redirects (app → provider → app), lands on the overview signed in
as a planner, sees the user and role in the navbar, signs out, and signs in again as a viewer,
whose risk page has no what-if controls and says why.
"""

from __future__ import annotations

import json
import time
from urllib.parse import urlsplit

import pytest

from app import auth, ids
from tests.conftest import click, console_errors, free_port
from tests.oidc_provider import OidcProvider
from tests.test_auth import PLANNER, VIEWER, oidc_settings, whatif_body

pytestmark = pytest.mark.browser


@pytest.fixture
def idp():
    provider = OidcProvider().start()
    try:
        yield provider
    finally:
        provider.stop()


def test_sign_in_through_the_provider_then_sign_out_and_back_as_viewer(
    dash_duo, idp, plan_store, plan_store_root, plan, tmp_path
):
    from app import create_app

    app = create_app(
        oidc_settings(plan_store_root, idp),
        plan_store,
        cache_type="simple",
        cache_dir=str(tmp_path / "cache"),
    )
    idp.user = dict(PLANNER)
    dash_duo.start_server(app, port=free_port())  # opens "/": redirected to the provider and back
    dash_duo.wait_for_element("#ov-kpis-servers", timeout=20)
    dash_duo.wait_for_text_to_equal("#ov-kpis-servers .kpi-value", f"{plan.n_servers:,}", timeout=20)
    assert idp.token_requests == 1 and "code_challenge" in idp.authorize_requests[-1]
    account = dash_duo.find_element(f"#{ids.ACCOUNT}").text
    assert "Pat Planner" in account and "planner" in account
    assert not dash_duo.driver.find_elements("css selector", f"#{ids.DEV_BANNER}.show")

    click(dash_duo, dash_duo.find_element(f"#{ids.SIGN_OUT}"))
    dash_duo.wait_for_text_to_equal("h1", "Signed out", timeout=15)
    assert urlsplit(dash_duo.driver.current_url).path == auth.SIGNED_OUT_PATH

    idp.user = dict(VIEWER)
    dash_duo.driver.get(dash_duo.server_url + "/risk?growth=5")  # the provider signs the viewer in
    dash_duo.wait_for_contains_text(f"#{ids.WHATIF_DENIED}", "carries a what-if scenario", timeout=20)
    dash_duo.wait_for_element(f"#{ids.RISK_GRID} .ag-row", timeout=20)
    assert not dash_duo.driver.find_elements("css selector", f"#{ids.WHATIF_GROWTH}")
    assert "Val Viewer" in dash_duo.find_element(f"#{ids.ACCOUNT}").text
    assert "growth" not in dash_duo.find_element(f"#{ids.WHATIF_DENIED}").get_attribute("class")
    assert console_errors(dash_duo) == []

    # a refused action, sent by hand, is explained in the page (the server's plain sentence)
    dash_duo.driver.execute_script(
        "fetch('/_dash-update-component', {method: 'POST', headers: {'Content-Type': 'application/json'},"
        " body: arguments[0]});",
        json.dumps(whatif_body(app)),
    )
    dash_duo.wait_for_contains_text(
        f"#{ids.ERROR_ALERT}", "Your role (viewer) cannot run what-ifs", timeout=15
    )

    # the sign-in ends (cookies gone): the next callback's 401 reloads the page, which signs in again
    signed_in = idp.token_requests
    dash_duo.driver.delete_all_cookies()
    click(dash_duo, _nav(dash_duo, "Overview"))
    dash_duo.wait_for_element("#ov-kpis-servers .kpi-value", timeout=20)
    deadline = time.monotonic() + 20
    while idp.token_requests == signed_in and time.monotonic() < deadline:
        time.sleep(0.2)
    assert idp.token_requests == signed_in + 1
    dash_duo.wait_for_contains_text(f"#{ids.ACCOUNT}", "Val Viewer", timeout=20)


def _nav(dash_duo, label: str):
    return next(
        a for a in dash_duo.driver.find_elements("css selector", ".app-navbar .nav-link") if a.text == label
    )
