"""Shared fixtures: a small published plan store, app factories, and dash_duo helpers.

Browser tests use dash[testing]'s ``dash_duo`` (Debian chromium + chromedriver, run pytest
with --headless). Each test starts its app on a free port, so pytest-xdist workers never
collide on dash_duo's default port counter.
"""

from __future__ import annotations

import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from selenium.webdriver.chrome.options import Options

from forecasting.settings import Settings
from forecasting.sources import Store
from tests.plan_fixture import make_plan_store

# The app refuses to start without a sign-in mode; tests run in dev mode unless they choose
# another (tests/test_auth.py builds alb and oidc apps against tests/oidc_provider.py).
os.environ.setdefault("CAPFC_AUTH_MODE", "dev")

FIXTURE_SERVERS = 200
CHROME_FLAGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
    "--disable-dev-shm-usage",
    "--window-size=1280,800",
]


def pytest_setup_options() -> Options:
    """dash[testing] hook: Chromium flags that keep it quiet on a closed network, 1280×800."""
    options = Options()
    for flag in CHROME_FLAGS:
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    return options


# --------------------------------------------------------------------------- stores


@pytest.fixture(scope="session")
def plan_store_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One 200-server store with a published run, built once per test process (read-only!)."""
    root = tmp_path_factory.mktemp("plan-store")
    make_plan_store(root, FIXTURE_SERVERS, seed=0)
    return root


@pytest.fixture
def plan_store(plan_store_root: Path) -> Store:
    from forecasting.sources import open_store

    return open_store(str(plan_store_root))


@pytest.fixture
def settings_for() -> Callable[..., Settings]:
    def make(root: Path, **overrides: Any) -> Settings:
        return Settings(data=str(root), **overrides)

    return make


@pytest.fixture
def readmodel(plan_store: Store, plan_store_root: Path):
    from app.readmodel import ReadModel

    return ReadModel(plan_store, Settings(data=str(plan_store_root)))


@pytest.fixture
def plan(readmodel):
    snap = readmodel.snapshot()
    assert snap.plan is not None, snap.status
    return snap.plan


# --------------------------------------------------------------------------- apps


@pytest.fixture
def make_app(tmp_path: Path) -> Callable[..., Any]:
    """Build an app on a store (default: the shared fixture store) with a private cache dir."""
    from app import create_app

    def make(store: Store, root: Path, **settings: Any):
        return create_app(
            Settings(data=str(root), **settings),
            store,
            cache_type="simple",
            cache_dir=str(tmp_path / "cache"),
        )

    return make


@pytest.fixture
def fixture_app(make_app, plan_store: Store, plan_store_root: Path):
    return make_app(plan_store, plan_store_root)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(dash_duo: Any, app: Any, path: str = "/") -> None:
    """Serve ``app`` on a free port and open ``path`` once the shell has rendered."""
    dash_duo.start_server(app, port=free_port())
    if path != "/":
        dash_duo.driver.get(dash_duo.server_url + path)
    dash_duo.wait_for_element("#shell-as-of", timeout=10)


def console_errors(dash_duo: Any) -> list[dict]:
    """SEVERE browser console entries (failed loads, JS errors, Dash callback errors)."""
    return [e for e in dash_duo.get_logs() or [] if e.get("level") == "SEVERE"]


def choose(dash_duo: Any, dropdown_id: str, text: str, timeout: float = 15.0) -> None:
    """Pick an option of a dcc.Dropdown the way a user does: open, type, click the match, close.

    Options may arrive from a callback while typing (the server picker) and re-render the
    list, so the option is looked up fresh until a click lands.
    """
    import time

    from selenium.common.exceptions import ElementClickInterceptedException, StaleElementReferenceException
    from selenium.webdriver.common.keys import Keys

    click(dash_duo, dash_duo.find_element(f"#{dropdown_id}"))
    dash_duo.driver.switch_to.active_element.send_keys(text)
    xpath = f"//*[@role='option'][.//*[contains(normalize-space(), {text!r})]]"
    deadline = time.monotonic() + timeout
    while True:
        try:
            _wait_xpath(dash_duo, xpath, timeout=max(0.5, deadline - time.monotonic())).click()
            break
        except (StaleElementReferenceException, ElementClickInterceptedException):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    dash_duo.driver.switch_to.active_element.send_keys(Keys.ESCAPE)


def _wait_xpath(dash_duo: Any, xpath: str, timeout: float = 10.0) -> Any:
    import time

    from selenium.common.exceptions import StaleElementReferenceException

    deadline = time.monotonic() + timeout
    while True:
        found = dash_duo.driver.find_elements("xpath", xpath)
        try:
            if found and found[0].is_displayed():
                return found[0]
        except StaleElementReferenceException:
            pass
        if time.monotonic() > deadline:
            raise AssertionError(f"no element {xpath} after {timeout} s")
        time.sleep(0.1)


def kpi(dash_duo: Any, name: str) -> str:
    """The value text of an overview KPI card (servers, at-risk, breach-30, breach-90, idle, savings)."""
    return dash_duo.find_element(f"#ov-kpis-{name} .kpi-value").text


def screenshot(dash_duo: Any, path: Path, height: int = 1800) -> Path:
    """Full-width capture at 1280 px (taller window so the page fits), then back to 1280×800.
    With CAPFC_SCREENSHOTS=docs/screenshots the README's copy is refreshed too."""
    driver = dash_duo.driver
    driver.set_window_size(1280, height)
    path.parent.mkdir(parents=True, exist_ok=True)
    driver.save_screenshot(str(path))
    driver.set_window_size(1280, 800)
    target = os.environ.get("CAPFC_SCREENSHOTS")
    if target:
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(path, Path(target) / path.name)
    return path


def click(dash_duo: Any, element: Any, timeout: float = 5.0) -> None:
    """Scroll an element to the middle of the window (clear of the sticky filter bar; instantly:
    Bootstrap makes scrolling smooth) and click it, retrying while something still covers it."""
    import time

    from selenium.common.exceptions import ElementClickInterceptedException

    deadline = time.monotonic() + timeout
    while True:
        dash_duo.driver.execute_script(
            "arguments[0].scrollIntoView({block: 'center', behavior: 'instant'});", element
        )
        try:
            element.click()
            return
        except ElementClickInterceptedException:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
