"""Locust user for the web tier: planners browsing the pages and firing their Dash callbacks.

Each task is what one planner action sends over HTTP: the page GET the browser makes
(``/``, ``/risk``, ``/consolidation``, ``/servers/<id>``) with ``/_dash-layout`` and
``/_dash-dependencies``, then the ``/_dash-update-component`` posts that page fires. The
callback payloads are built with the same builders the callback benchmarks use
(benchmarks/bench_app.py, benchmarks/bench_app_risk.py), so they carry exactly what Dash's
renderer sends. Requests are named by route template (``/servers/<id>``) and, for callbacks,
by the first output (``callback risk-grid.rowData``).

A callback answer counts as a failure unless it is HTTP 200 with the expected output in it
and without the app's error alert. Filter values come from the layout's filter dropdowns and
server ids from the risk grid, as a planner would pick them.

Run it through benchmarks/bench_load.py (which builds a fleet and starts gunicorn), or by hand:

    locust -f benchmarks/locustfile.py --headless -u 50 -r 10 -t 60s --host http://127.0.0.1:8080

Sign-in: each user signs in first (:meth:`Planner.sign_in`). With ``LOAD_OIDC_ISSUER`` set (the
app in ``oidc`` mode, benchmarks/bench_load.py's default) it is a real OpenID Connect code flow:
the person signs in at the provider (the test provider's ``/session``, as ``u-load-<n>``, a
planner), then ``GET /`` follows the app's redirects through ``/auth/login``, the provider's
``/authorize`` and ``/auth/callback`` (PKCE, nonce, a signed ID token) back to the page, and the
session cookie carries every later request. Otherwise it adds the headers in ``LOAD_HEADERS``
(a JSON object, e.g. an ALB ``x-amzn-oidc-data``). ``LOAD_MAX_TASKS`` (default 400) bounds each
user's task count; ``-t`` bounds the time.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import sys
from pathlib import Path
from typing import Any

import gevent
from locust import HttpUser, between, events, task
from locust.exception import StopUser
from locust.stats import CSV_STATS_INTERVAL_SEC

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]

from bench_app import overview_requests, server_requests  # noqa: E402
from bench_app_risk import page_requests  # noqa: E402

from app import ids  # noqa: E402
from app.filters import FilterState  # noqa: E402
from app.whatif import POLICY_PARAMS, ScenarioState  # noqa: E402

USER_NUMBERS = itertools.count()
USERS_DONE: list[int] = []  # users that did their LOAD_MAX_TASKS
MAX_TASKS = int(os.environ.get("LOAD_MAX_TASKS", "400"))
EXPORT_ROWS = 500  # the risk rows remembered for drill-downs (their server ids)
# a handful of scenarios planners try (growth % per month, a CPU threshold): the first user to
# ask for one pays the engine, the others hit the per-scenario cache, as in a team
SCENARIOS = [
    ScenarioState.of(1),
    ScenarioState.of(2),
    ScenarioState.of(3, {"cpu_p95": 75}),
    ScenarioState.of(5),
    ScenarioState.of(0, {"mem_p95": 80}),
]


def _find_options(node: Any, wanted: set[str], found: dict[str, list[str]]) -> None:
    """Walk the Dash layout JSON for the filter dropdowns and collect their option values."""
    if isinstance(node, dict):
        props = node.get("props")
        if isinstance(props, dict) and isinstance(props.get("id"), str) and props["id"] in wanted:
            found[props["id"]] = [
                o["value"] if isinstance(o, dict) else o for o in props.get("options") or []
            ]
        for value in node.values():
            _find_options(value, wanted, found)
    elif isinstance(node, list):
        for value in node:
            _find_options(value, wanted, found)


def output_ids(body: dict) -> list[str]:
    """The callback's output ids as they key Dash's answer (pattern ids as sorted JSON)."""
    outputs = body["outputs"] if isinstance(body["outputs"], list) else [body["outputs"]]
    return [o["id"] if isinstance(o["id"], str) else json.dumps(o["id"], sort_keys=True) for o in outputs]


def callback_name(body: dict) -> str:
    """``callback <first output id>.<property>``: what the table and the test name a callback by."""
    outputs = body["outputs"] if isinstance(body["outputs"], list) else [body["outputs"]]
    return f"callback {output_ids(body)[0]}.{outputs[0]['property']}"


def whatif_controls(scenario: ScenarioState) -> dict:
    """The what-if panel's callback (controls → whatif-state) as the renderer posts it."""
    thr = list(ids.WHATIF_THRESHOLDS.items())
    values = dict(scenario.thresholds)
    policy = scenario.policy_values
    inputs = [
        {"id": ids.WHATIF_GROWTH, "property": "value", "value": scenario.growth},
        *[{"id": cid, "property": "value", "value": values.get(m)} for m, cid in thr],
        {"id": ids.WHATIF_HEADROOM, "property": "value", "value": scenario.headroom},
        *[
            {"id": cid, "property": "value", "value": policy.get(name)}
            for cid, name in zip(ids.WHATIF_POLICY, POLICY_PARAMS, strict=True)
        ],
        {"id": ids.WHATIF_RESET, "property": "n_clicks", "value": None},
    ]
    outs = [
        {"id": ids.WHATIF_STATE, "property": "data"},
        {"id": ids.WHATIF_SUMMARY, "property": "children"},
        {"id": ids.WHATIF_GROWTH, "property": "value"},
        *[{"id": cid, "property": "value"} for _, cid in thr],
        {"id": ids.WHATIF_HEADROOM, "property": "value"},
        *[{"id": cid, "property": "value"} for cid in ids.WHATIF_POLICY],
    ]
    return {
        "output": ".." + "...".join(f"{o['id']}.{o['property']}" for o in outs) + "..",
        "outputs": outs,
        "inputs": inputs,
        "changedPropIds": [f"{ids.WHATIF_GROWTH}.value"],
        "state": [{"id": ids.WHATIF_STATE, "property": "data", "value": ScenarioState().to_data()}],
    }


class Planner(HttpUser):
    """One planner: opens pages, filters, tries what-ifs, exports, drills into servers."""

    # reading a page between clicks; LOAD_THINK_S="min,max" seconds (default 1,3)
    wait_time = between(*(float(x) for x in (os.environ.get("LOAD_THINK_S") or "1,3").split(",")))

    def sign_in(self) -> None:
        """The one place a session is established: headers/cookies every request then carries."""
        extra = json.loads(os.environ.get("LOAD_HEADERS") or "{}")
        self.client.headers.update({str(k): str(v) for k, v in extra.items()})
        issuer = os.environ.get("LOAD_OIDC_ISSUER")
        if not issuer:
            return
        me = {"sub": f"u-load-{self.index}", "name": f"Load planner {self.index}", "groups": "capfc-planners"}
        with self.client.get(f"{issuer}/session", params=me, name="idp /session", catch_response=True) as r:
            if r.status_code != 200:
                r.failure(f"HTTP {r.status_code}")
                raise StopUser
        # a browser's first visit: / → /auth/login → the provider → /auth/callback → /
        with self.client.get(
            "/", headers={"Accept": "text/html"}, name="sign-in (OIDC code flow)", catch_response=True
        ) as r:
            hops = [h.headers.get("Location", "") for h in r.history]
            signed_in = (
                r.status_code == 200
                and b"_dash-renderer" in r.content
                and any("/authorize" in h for h in hops)
                and any("/auth/callback" in h for h in hops)
                and "capfc_session" in self.client.cookies
            )
            if not signed_in:
                r.failure(f"not signed in: HTTP {r.status_code} via {hops}")
                raise StopUser

    def on_start(self) -> None:
        self.index = next(USER_NUMBERS)
        self.sign_in()
        self.tasks_done = 0
        self.options: dict[str, list[str]] = {}
        self.server_ids: list[str] = []
        self.rows: list[dict] = []
        layout = self._get("/_dash-layout", "/_dash-layout")
        if layout is not None:
            found: dict[str, list[str]] = {}
            _find_options(layout, set(ids.FILTER_DROPDOWNS.values()), found)
            self.options = {dim: found.get(cid, []) for dim, cid in ids.FILTER_DROPDOWNS.items()}

    # ------------------------------------------------------------------ plumbing

    def _get(self, path: str, name: str) -> Any:
        with self.client.get(path, name=name, catch_response=True) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}")
                return None
            if path.startswith("/_dash"):
                return resp.json()
            if b"_dash-renderer" not in resp.content:
                resp.failure("not a Dash page")
            return None

    def open_page(self, path: str, template: str) -> None:
        """What a browser fetches to show a page (assets are static and left out)."""
        self._get(path, template)
        self._get("/_dash-layout", "/_dash-layout")
        self._get("/_dash-dependencies", "/_dash-dependencies")

    def callback(self, body: dict) -> dict | None:
        """POST one Dash callback; a failure unless an output came back without the error alert
        (HTTP 204, Dash's "nothing to update", is a failure too: these payloads always update)."""
        with self.client.post(
            "/_dash-update-component", json=body, name=callback_name(body), catch_response=True
        ) as resp:
            if resp.status_code != 200:
                resp.failure(f"HTTP {resp.status_code}: {resp.text[:200]}")
                return None
            answer = (resp.json() or {}).get("response") or {}
            if not set(output_ids(body)) & set(answer):  # outputs left unchanged are left out
                resp.failure(f"none of its outputs in the answer: {resp.text[:200]}")
                return None
            if ids.ERROR_ALERT in resp.text:
                resp.failure(f"error alert: {resp.text[:200]}")
                return None
            return answer

    def pick_filter(self) -> FilterState:
        """A filter a planner picks: everything, a business unit, a unit in prod, a region, two tiers."""
        bu, region = self.options.get("business_unit") or [], self.options.get("region") or []
        choices = [FilterState()]
        if bu:
            choices += [FilterState(business_unit=(random.choice(bu),))]
            choices += [FilterState(business_unit=(random.choice(bu),), environment=("prod",))]
        if region:
            choices += [FilterState(region=(random.choice(region),))]
        choices += [FilterState(criticality=("critical", "high"))]
        return random.choice(choices)

    def step(self) -> None:
        self.tasks_done += 1
        if self.tasks_done > MAX_TASKS:
            USERS_DONE.append(self.index)
            raise StopUser()

    def show_risk(self, filters: FilterState, scenario: ScenarioState) -> None:
        """The risk grid callback; remember the rows shown and their servers (for exports, drill-downs)."""
        answer = self.callback(page_requests(filters, scenario)["risk: grid + KPIs"])
        rows = ((answer or {}).get(ids.RISK_GRID) or {}).get("rowData")
        if rows:
            self.rows = rows[:EXPORT_ROWS]
            self.server_ids = sorted({r["server_id"] for r in self.rows})

    def show_consolidation(self, filters: FilterState, scenario: ScenarioState) -> None:
        self.callback(page_requests(filters, scenario)["consolidation: page"])

    # ------------------------------------------------------------------ tasks
    # Each user first takes a tour through every action (the users start spread over it, so
    # even a short run covers them all: 5 users, 2 actions each), then picks actions by weight.

    @task
    def act(self) -> None:
        self.step()
        actions = list(ACTIONS)
        if self.tasks_done <= len(actions):
            users = max(1, getattr(self.environment.parsed_options, "num_users", None) or 1)
            start = (self.index % users) * len(actions) // users  # users spread over the tour
            name = actions[(start + self.tasks_done - 1) % len(actions)]
        else:
            name = random.choices(actions, weights=list(ACTIONS.values()))[0]
        getattr(self, name)()

    def overview(self) -> None:
        """Open the fleet overview, then filter it (the filter bar's sync + every overview chart)."""
        self.open_page("/", "/")
        for body in overview_requests(self.pick_filter()).values():
            self.callback(body)

    def risk(self) -> None:
        """Open the risk page under a filter."""
        self.open_page("/risk", "/risk")
        self.show_risk(self.pick_filter(), ScenarioState())

    def risk_whatif(self) -> None:
        """Change the what-if on the risk page: controls → scenario, then the grid under it."""
        scenario = random.choice(SCENARIOS)
        self.callback(whatif_controls(scenario))
        self.show_risk(self.pick_filter(), scenario)

    def risk_search_and_export(self) -> None:
        """Quick-search the risk grid, then export the shown rows as CSV."""
        if not self.rows:  # nothing shown yet: the grid loads first
            self.show_risk(FilterState(), ScenarioState())
        reqs = page_requests(FilterState(), ScenarioState(), self.rows)
        self.callback(reqs["risk: quick search"])
        self.callback(reqs["risk: CSV export (shown rows)"])

    def consolidation(self) -> None:
        """Open the consolidation page (recommendations, plan, savings) and its host chart."""
        self.open_page("/consolidation", "/consolidation")
        filters = self.pick_filter()
        self.show_consolidation(filters, ScenarioState())
        self.callback(page_requests(filters, ScenarioState())["consolidation: host chart"])

    def consolidation_whatif_and_export(self) -> None:
        """A growth/threshold what-if on the consolidation page (engine + packing), then an
        Excel export of the recommendations it shows."""
        scenario = random.choice(SCENARIOS)
        filters = self.pick_filter()
        self.show_consolidation(filters, scenario)
        self.callback(
            {
                "output": f"{ids.CONS_DOWNLOAD}.data",
                "outputs": {"id": ids.CONS_DOWNLOAD, "property": "data"},
                "inputs": [
                    {"id": ids.CONS_EXPORT_CSV, "property": "n_clicks", "value": None},
                    {"id": ids.CONS_EXPORT_XLSX, "property": "n_clicks", "value": 1},
                ],
                "changedPropIds": [f"{ids.CONS_EXPORT_XLSX}.n_clicks"],
                "state": [  # the rows are recomputed on the server; only the grid's view is sent
                    {"id": ids.CONS_RECS_SEARCH, "property": "value", "value": None},
                    {"id": ids.CONS_RECS_GRID, "property": "filterModel", "value": None},
                    {"id": ids.CONS_RECS_GRID, "property": "columnState", "value": None},
                    {"id": ids.FILTERS, "property": "data", "value": filters.to_data()},
                    {"id": ids.WHATIF_STATE, "property": "data", "value": scenario.to_data()},
                ],
            }
        )

    def server(self) -> None:
        """Drill into one server from the risk list: its page and the picker's search."""
        if not self.server_ids:
            self.show_risk(FilterState(), ScenarioState())
        if not self.server_ids:
            raise RuntimeError("the risk grid listed no server to open")
        sid = random.choice(self.server_ids)
        self.open_page(f"/servers/{sid}", "/servers/<id>")
        reqs = server_requests(sid, FilterState(), {})
        self.callback(reqs["server: page content"])
        self.callback(reqs["server: picker search"])


# action → weight (how often planners do it once the tour is done). The tour follows this order;
# the heaviest actions come first so that a short run's users start on them.
ACTIONS = {
    "consolidation_whatif_and_export": 1,
    "consolidation": 2,
    "risk_whatif": 2,
    "overview": 3,
    "risk_search_and_export": 1,
    "risk": 3,
    "server": 3,
}
# the request names each action sends and no other does: what a run must show to have covered it
ACTION_REQUESTS = {
    "overview": "callback ov-heatmap.figure",
    "risk": "/risk",
    "server": "/servers/<id>",
    "risk_whatif": "callback whatif-state.data",
    "consolidation": "callback cons-host-chart.figure",
    "risk_search_and_export": "callback risk-download.data",
    "consolidation_whatif_and_export": "callback cons-download.data",
}


@events.test_start.add_listener
def _quit_when_every_user_is_done(environment: Any, **_: Any) -> None:
    """End the run once every user did its LOAD_MAX_TASKS (``-t`` still bounds the time):
    Locust alone would idle until ``-t`` with no user left."""
    runner = environment.runner
    users = getattr(environment.parsed_options, "num_users", None) or 1

    def watch() -> None:
        # every user's own word that its last task finished; then one more round of Locust's CSV
        # writer, which only snapshots the stats every CSV_STATS_INTERVAL_SEC and writes nothing
        # at shutdown (quitting at once left the last second's requests out of the CSVs)
        while True:
            gevent.sleep(0.5)
            if len(set(USERS_DONE)) >= users and runner.state in ("running", "spawning"):
                gevent.sleep(2 * CSV_STATS_INTERVAL_SEC)
                runner.quit()
                return

    gevent.spawn(watch)
