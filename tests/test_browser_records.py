"""The plans-as-records pages in real headless Chromium (dash_duo; run pytest with --headless).

/changes compares the latest run with the one before by default, names why they differ, narrows
to a business unit from the filter bar and exports exactly the changes it shows; /track-record
draws a past run's path and band against the actuals and its breach calls; a store with one run
and no track record gets visible, plain alerts instead of empty pages.
"""

from __future__ import annotations

import io
import time
from pathlib import Path

import pandas as pd
import pytest

from app.filters import FilterState
from callbacks import changes as chg
from forecasting.records.diff import diff_runs
from forecasting.records.track import track_runs
from forecasting.sources import open_store
from tests.conftest import console_errors, screenshot, start
from tests.records_fixture import RUN_A, RUN_B, make_records_store

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def records_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("records-browser")
    store, _ = make_records_store(root, n_servers=150, seed=7, earlier=(120, 90))
    track_runs(store)
    return root


def _wait_download(folder: Path, suffix: str, timeout: float = 15.0) -> Path:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        done = [p for p in folder.glob(f"*{suffix}") if p.stat().st_size > 0]
        if done:
            return done[0]
        time.sleep(0.2)
    raise AssertionError(f"no {suffix} download in {folder} after {timeout} s")


def _rows(dash_duo, grid: str) -> int:
    return dash_duo.driver.execute_script(
        "const api = window.dash_ag_grid.getApi(arguments[0]); let n = 0;"
        "api.forEachNodeAfterFilterAndSort(() => n++); return n;",
        grid,
    )


def _plot_traces(dash_duo, graph: str) -> int:
    return dash_duo.driver.execute_script(
        "const el = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');"
        "return el && el.data ? el.data.length : -1;",
        graph,
    )


def _plot_points(dash_duo, graph: str) -> int:
    return dash_duo.driver.execute_script(
        "const el = document.querySelector('#' + arguments[0] + ' .js-plotly-plot');"
        "return el.data[0].x.length;",
        graph,
    )


def _wait(cond, timeout: float = 20.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if cond():
                return
        except Exception:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{what} not met after {timeout} s")


def test_changes_page_compares_latest_with_previous_filters_and_exports(
    dash_duo, make_app, records_root, tmp_path
):
    store = open_store(str(records_root))
    app = make_app(store, records_root)
    d = diff_runs(store)
    start(dash_duo, app, "/changes")
    dash_duo.wait_for_text_to_equal("#chg-kpis-new .kpi-value", f"{len(d.new_risks):,}", timeout=30)
    dash_duo.wait_for_text_to_equal("#chg-kpis-moved .kpi-value", f"{len(d.moved_breaches):,}", timeout=10)
    assert dash_duo.find_element(f"#{chg.ids.CHG_RUN_A}").text.startswith(RUN_A)
    assert dash_duo.find_element(f"#{chg.ids.CHG_RUN_B}").text.startswith(RUN_B)
    causes = dash_duo.find_element("#chg-causes").text
    assert "new data" in causes and "setting thresholds.cpu_p95: 85 → 80" in causes
    _wait(lambda: _plot_traces(dash_duo, "chg-totals-chart") == 2, what="totals chart drawn")
    _wait(
        lambda: _plot_traces(dash_duo, "chg-moves-chart") >= 1 or d.moved_breaches.empty, what="moves chart"
    )
    _wait(lambda: _rows(dash_duo, "chg-moved-grid") == len(d.moved_breaches), what="moved grid rows")
    _wait(lambda: _rows(dash_duo, "chg-totals-grid") == len(d.totals), what="totals grid rows")
    screenshot(dash_duo, tmp_path / "changes.png", height=2400)
    assert console_errors(dash_duo) == []

    # a business unit from the filter bar narrows everything; the export holds exactly that
    bu = (
        d.moved_breaches["business_unit"].iloc[0]
        if len(d.moved_breaches)
        else d.new_risks["business_unit"].iloc[0]
    )
    rm = app.server.extensions["capfc"].readmodel
    fd = chg.compute(rm, RUN_A, RUN_B, FilterState(business_unit=(bu,)).to_data())
    dash_duo.driver.get(dash_duo.server_url + f"/changes?bu={bu.replace(' ', '+').replace('&', '%26')}")
    dash_duo.wait_for_text_to_equal("#chg-kpis-moved .kpi-value", f"{len(fd.moved_breaches):,}", timeout=30)
    dash_duo.wait_for_text_to_equal("#chg-kpis-new .kpi-value", f"{len(fd.new_risks):,}", timeout=10)
    assert len(fd.moved_breaches) + len(fd.new_risks) < len(d.moved_breaches) + len(d.new_risks)
    dash_duo.find_element("#chg-export-csv").click()
    text = _wait_download(Path(dash_duo.download_path), ".csv").read_text(encoding="utf-8-sig")
    assert f'# Changes,"run {RUN_A} → run {RUN_B}"' in text and "# Filters," in text
    body = pd.read_csv(io.StringIO(text), comment="#")
    expected = (
        len(fd.new_risks) + len(fd.resolved_risks) + len(fd.moved_breaches) + len(fd.changed_recommendations)
    )
    assert len(body) == expected and set(body["business_unit"]) <= {bu}
    assert console_errors(dash_duo) == []


def test_track_record_page_draws_path_band_and_calls(dash_duo, make_app, records_root, tmp_path):
    store = open_store(str(records_root))
    from forecasting.records.track import load_series, load_summary

    summary = load_summary(store, RUN_A)
    series = load_series(store, RUN_A)
    app = make_app(store, records_root)
    start(dash_duo, app, "/track-record")
    dash_duo.wait_for_text_to_equal("#tr-kpis-calls .kpi-value", f"{summary['calls']['hit']:,}", timeout=30)
    dash_duo.wait_for_text_to_equal("#tr-kpis-elapsed .kpi-value", "60 / 90", timeout=10)
    assert dash_duo.find_element("#tr-run").text.startswith(RUN_A)
    # the first server offered is one with a call or a crossing; its chart has history, band, path, actuals
    _wait(lambda: _plot_traces(dash_duo, "tr-path-chart") == 5, what="path chart drawn")
    title = dash_duo.driver.execute_script(
        "return document.querySelector('#tr-path-chart .js-plotly-plot').layout.title.text"
    )
    server = dash_duo.find_element("#tr-server").text.split(" ·")[0]
    assert server in title and RUN_A in title
    notes = dash_duo.driver.execute_script(
        "return document.querySelector('#tr-path-chart .js-plotly-plot').layout.annotations.map(a => a.text)"
    )
    assert "forecast origin" in notes and any(n.startswith("threshold") for n in notes)
    assert any(n.startswith(("crossed", "called")) for n in notes)
    _wait(lambda: _plot_traces(dash_duo, "tr-coverage-chart") == 2, what="coverage chart drawn")
    calls = int((series["outcome"] != "quiet").sum())
    _wait(lambda: _rows(dash_duo, "tr-series-grid") == calls, what="calls grid rows")
    _wait(lambda: _rows(dash_duo, "tr-runs-grid") == 3, what="runs grid")
    assert _plot_points(dash_duo, "tr-coverage-chart") == 3  # one point per run with a record
    screenshot(dash_duo, tmp_path / "track-record.png", height=2100)
    assert console_errors(dash_duo) == []


def test_one_run_and_no_track_record_show_alerts(dash_duo, fixture_app):
    start(dash_duo, fixture_app, "/changes")
    dash_duo.wait_for_contains_text("#chg-alert", "a comparison needs two", timeout=30)
    dash_duo.driver.get(dash_duo.server_url + "/track-record")
    dash_duo.wait_for_contains_text("#tr-alert", "No run has a track record yet", timeout=30)
    assert console_errors(dash_duo) == []
