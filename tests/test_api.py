"""The REST API (app/api) on a real run: the 200-server fixture plan published by the real batch job.

Every endpoint is compared with what the app's pages compute for the same run and filters; sign-in
uses the real OIDC provider on loopback (tests/oidc_provider.py: a real client credentials grant,
then tokens bent to be expired, misaddressed, forged or role-less); paging is followed to the
end while ``runs/LATEST`` moves to a newer run; and schemathesis fuzzes the OpenAPI document
against the live server (werkzeug on 127.0.0.1) with a valid token.
"""

from __future__ import annotations

import csv
import io
import json
import os
import shutil
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import requests
from werkzeug.serving import make_server

from app.filters import FilterState
from components.export import csv_bytes
from forecasting.settings import Settings
from forecasting.sources import Store, open_store
from tests.oidc_provider import API_AUDIENCE, MACHINE_ID, MACHINE_SECRET, OidcProvider, _Grant, _json_b64
from tests.plan_fixture import fixture_run_id
from tests.test_observability import parse_lines

ROOT = Path(__file__).resolve().parents[1]
RUN = fixture_run_id(0)
V1 = "/api/v1"
PROBLEM = "application/problem+json"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture
def idp() -> Iterator[OidcProvider]:
    provider = OidcProvider().start()
    try:
        yield provider
    finally:
        provider.stop()


@pytest.fixture
def api(fixture_app) -> Any:
    """A test client of the fixture app in dev mode (no token: dev-admin, loopback only)."""
    return fixture_app.server.test_client()


def oidc_settings(root: Path, idp: OidcProvider, **extra: Any) -> Settings:
    values: dict[str, Any] = {
        "data": str(root),
        "auth_mode": "oidc",
        "auth_issuer": idp.issuer,
        "auth_client_id": "capfc-test-client",
        "auth_client_secret": "test-client-secret-0123456789",
        "session_secret": "test-session-secret-" + "x" * 40,
        "session_cookie_secure": False,
        "api_audience": API_AUDIENCE,
    }
    return Settings(**{**values, **extra})


@pytest.fixture
def oidc_app(plan_store, plan_store_root, idp, tmp_path) -> Callable[..., Any]:
    from app import create_app

    def build(**extra: Any) -> Any:
        settings = oidc_settings(plan_store_root, idp, **extra)
        return create_app(settings, plan_store, cache_type="simple", cache_dir=str(tmp_path / "cache"))

    return build


@pytest.fixture
def json_lines() -> Iterator[None]:
    """JSON logs (forecasting.observability) for one test, then the root logger as it was."""
    import logging

    from forecasting import observability as obs

    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    obs.configure_logging("INFO", "capfc-test", "json")
    yield
    obs.flush_metrics()
    obs.clear_context()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    obs._state.fmt, obs._state.logger = "json", None
    logging.captureWarnings(False)


@pytest.fixture
def writable_store(tmp_path: Path, plan_store_root: Path) -> tuple[Store, Path]:
    """A private copy of the fixture store (tests that publish a run or change the inventory)."""
    root = tmp_path / "store"
    shutil.copytree(plan_store_root, root)
    return open_store(str(root)), root


def machine_token(idp: OidcProvider) -> str:
    """A token from the provider's real client credentials grant, over HTTP."""
    resp = requests.post(
        idp.url + "/token",
        data={"grant_type": "client_credentials", "client_id": MACHINE_ID, "client_secret": MACHINE_SECRET},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


def is_problem(resp: Any, status: int) -> dict[str, Any]:
    assert resp.status_code == status, (resp.status_code, resp.data[:300])
    assert resp.content_type == PROBLEM
    body = json.loads(resp.data)
    assert body["status"] == status and body["type"] == "about:blank" and body["title"]
    assert "Traceback" not in resp.get_data(as_text=True)
    return body


def all_rows(client: Any, url: str, **headers: str) -> list[dict[str, Any]]:
    """Follow ``next`` to the last page."""
    rows: list[dict[str, Any]] = []
    while url:
        resp = client.get(url, headers=headers)
        assert resp.status_code == 200, resp.data[:300]
        rows += resp.json["items"]
        url = resp.json["next"]
    return rows


# --------------------------------------------------------------------------- every endpoint on a real run


def test_runs_manifest_and_latest_redirect(api):
    runs = api.get(f"{V1}/runs")
    assert runs.status_code == 200
    assert runs.json["latest"] == RUN
    assert [r["run_id"] for r in runs.json["items"]] == [RUN] and runs.json["items"][0]["latest"]
    latest = api.get(f"{V1}/runs/latest/risk?limit=5&bu=Markets")
    assert latest.status_code == 307
    assert latest.headers["Location"].endswith(f"{V1}/runs/{RUN}/risk?limit=5&bu=Markets")
    assert latest.headers["Cache-Control"] == "no-store"
    run = api.get(f"{V1}/runs/latest", follow_redirects=True)
    assert run.status_code == 200 and run.json["run_id"] == RUN
    assert run.json["manifest"]["run_id"] == RUN and run.json["manifest"]["config"]["horizon"] > 0
    assert run.json["href"]["risk"] == f"{V1}/runs/{RUN}/risk"


def test_risk_rows_are_the_risk_pages_rows_in_its_order(api, plan):
    from callbacks.risk import at_risk

    expected = at_risk(plan.table("risk"))
    rows = all_rows(api, f"{V1}/runs/{RUN}/risk?limit=37")
    assert [(r["server_id"], r["metric"]) for r in rows] == list(
        zip(expected["server_id"].astype(str), expected["metric"].astype(str), strict=True)
    )
    first = rows[0]
    assert set(first) >= {
        "hostname",
        "business_unit",
        "breach_expected",
        "breach_probability",
        "severity",
        "reason",
    }
    # the same filters as the filter bar: a business unit and an environment
    bu, env = plan.options["business_unit"][1], "prod"
    filtered = at_risk(plan.table("risk", FilterState(business_unit=(bu,), environment=(env,))))
    got = all_rows(api, f"{V1}/runs/{RUN}/risk?bu={bu}&env={env}&limit=1000")
    assert [(r["server_id"], r["metric"]) for r in got] == list(
        zip(filtered["server_id"].astype(str), filtered["metric"].astype(str), strict=True)
    )
    # severity, metric, probability, search, sort and fields
    crit = all_rows(
        api, f"{V1}/runs/{RUN}/risk?severity=critical&severity=high&metric=cpu_p95&min_probability=0.5"
    )
    assert crit and all(
        r["severity"] in ("critical", "high") and r["metric"] == "cpu_p95" and r["breach_probability"] >= 0.5
        for r in crit
    )
    sid = rows[0]["server_id"]
    hits = all_rows(
        api,
        f"{V1}/runs/{RUN}/risk?q={sid.upper()}&severity=none&severity=low&severity=medium"
        "&severity=high&severity=critical",
    )
    assert {r["server_id"] for r in hits} == {sid} and len(hits) == len(plan.server_rows("risk", sid))
    by_score = api.get(f"{V1}/runs/{RUN}/risk?sort=-score,server_id&fields=server_id,score&limit=1000").json
    scores = [r["score"] for r in by_score["items"]]
    assert scores == sorted(scores, reverse=True) and set(by_score["items"][0]) == {"server_id", "score"}
    soon = all_rows(api, f"{V1}/runs/{RUN}/risk?breach_within_days=30")
    assert all(r["days_to_breach"] is not None and r["days_to_breach"] <= 30 for r in soon)


def test_recommendations_filters_and_csv_with_the_exports_escaping(api, plan):
    recs = plan.table("recommendations")
    rows = all_rows(api, f"{V1}/runs/{RUN}/recommendations?limit=1000")
    assert len(rows) == len(recs)
    savings = [r["monthly_savings"] for r in rows]
    assert savings == sorted(savings, reverse=True)  # default order: biggest saving first
    for action in ("decommission", "right-size"):
        got = all_rows(api, f"{V1}/runs/{RUN}/recommendations?action={action}&limit=1000")
        assert len(got) == int((recs["action"].astype(str) == action).sum())
    held = all_rows(api, f"{V1}/runs/{RUN}/recommendations?held_back=pinned&limit=1000")
    assert len(held) == int((recs["held_back"] == "pinned").sum())
    url = f"{V1}/runs/{RUN}/recommendations?limit=25&fields=server_id,hostname,action,monthly_savings,reason"
    as_json = api.get(url).json["items"]
    as_csv = api.get(url, headers={"Accept": "text/csv"})
    assert as_csv.status_code == 200 and as_csv.content_type.startswith("text/csv")
    frame = pd.DataFrame(as_json, columns=["server_id", "hostname", "action", "monthly_savings", "reason"])
    assert as_csv.data == csv_bytes(frame)  # the exports' own writer and escaping
    assert as_csv.headers["Link"].startswith("<") and 'rel="next"' in as_csv.headers["Link"]
    assert int(as_csv.headers["X-Total-Count"]) == len(recs)


def test_csv_neutralises_a_formula_in_the_inventory(make_app, writable_store):
    store, root = writable_store
    inv = store.read_inventory()
    target = str(inv["server_id"].iloc[0])
    inv.loc[inv["server_id"] == target, "hostname"] = '=HYPERLINK("http://evil.example","x")'
    store.write_inventory(inv)
    client = make_app(store, root).server.test_client()
    resp = client.get(
        f"{V1}/runs/{RUN}/recommendations?q={target}&fields=server_id,hostname",
        headers={"Accept": "text/csv"},
    )
    cells = list(csv.reader(io.StringIO(resp.get_data(as_text=True).lstrip("\ufeff"))))
    assert cells[1] == [target, '\'=HYPERLINK("http://evil.example","x")']


def test_forecasts_are_compacted_in_a_child_process(plan_store, readmodel, plan, tmp_path, monkeypatch):
    """The compact copy is written by a spawned child (writing it touches every page of it: 2 GB
    of a web worker's resident size at 100,000 servers), which needs a store that pickles; a
    compaction in this process fails the test."""
    import pickle

    from app.api.index import ForecastStore

    copy = pickle.loads(pickle.dumps(plan_store))
    with copy.cond.locked():  # the copy's own lock works
        assert copy.latest_run_id() == RUN
    monkeypatch.setattr(ForecastStore, "_write", lambda self, d: pytest.fail("compacted in the web worker"))
    ids = pd.Index(sorted(plan.inventory["server_id"].astype(str)))
    compact = ForecastStore(plan_store, RUN, ids, str(tmp_path / "fc" / RUN))
    sid = ids[7]
    got = pd.DataFrame(compact.server(ids.get_loc(sid))["mem_p95"])
    want = readmodel.server_forecast(plan, sid)
    want = want[want["metric"] == "mem_p95"]
    assert len(got) == len(want) > 0
    np.testing.assert_allclose(got["yhat"], want["yhat"], rtol=1e-6)


def test_workers_compact_a_runs_forecasts_once(plan_store, plan, tmp_path, monkeypatch):
    """Two workers asking for the compact copy at once: one writes it, the other waits on the
    instance's lock and maps the same files."""
    import threading
    import time

    from app.api.index import ForecastStore

    writes: list[str] = []

    def write_here(self, directory):  # in this process, slowly: the other worker arrives meanwhile
        writes.append(threading.current_thread().name)
        time.sleep(0.5)
        return self._write(directory)

    monkeypatch.setattr(ForecastStore, "_write_in_child", write_here)
    ids = pd.Index(sorted(plan.inventory["server_id"].astype(str)))
    stores = [ForecastStore(plan_store, RUN, ids, str(tmp_path / "fc" / RUN)) for _ in range(2)]
    start = threading.Barrier(2)

    def worker(fs: ForecastStore) -> None:
        start.wait()
        fs.build()

    threads = [threading.Thread(target=worker, args=(fs,)) for fs in stores]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(writes) == 1
    a, b = (pd.DataFrame(fs.server(ids.get_loc(ids[3]))["cpu_p95"]) for fs in stores)
    assert len(a) > 0 and a.equals(b)


def test_one_server_consolidation_and_summary(api, plan, readmodel):
    sid = str(plan.top_risks().iloc[0]["server_id"])
    resp = api.get(f"{V1}/runs/{RUN}/servers/{sid}")
    assert resp.status_code == 200
    body = resp.json
    assert (
        body["inventory"]["server_id"] == sid
        and body["inventory"]["hostname"] == plan.server(sid)["hostname"]
    )
    assert len(body["risk"]) == len(plan.server_rows("risk", sid))
    assert body["recommendation"]["action"] == str(plan.server_rows("recommendations", sid)["action"].iloc[0])
    assert len(body["backtest"]) == len(readmodel.server_table(plan, "backtest", sid))
    fc = readmodel.server_forecast(plan, sid)
    assert sum(len(v) for v in body["forecast"].values()) == len(fc)
    cpu = pd.DataFrame(body["forecast"]["cpu_p95"])
    want = fc[fc["metric"] == "cpu_p95"]
    np.testing.assert_allclose(cpu["yhat"], want["yhat"], rtol=1e-4)
    assert (cpu["lower_95"] <= cpu["lower_80"]).all() and (cpu["upper_80"] <= cpu["upper_95"]).all()

    groups = api.get(f"{V1}/runs/{RUN}/consolidation").json["items"]
    cons = plan.table("consolidation")
    assert {g["target_group"] for g in groups} == set(cons["target_group"].astype(str))
    assert sum(len(g["members"]) for g in groups) == len(cons)

    bu = plan.options["business_unit"][0]
    for query, filters in (("", None), (f"?bu={bu}", FilterState(business_unit=(bu,)))):
        summary = api.get(f"{V1}/runs/{RUN}/summary{query}").json
        kpis = plan.kpis(filters)
        assert summary["servers"] == kpis.servers
        assert summary["servers_at_risk"] == kpis.at_risk
        assert summary["breaching_within_days"] == {str(k): v for k, v in kpis.breach_within.items()}
        assert summary["monthly_savings"] == pytest.approx(kpis.monthly_savings, abs=0.01)


# --------------------------------------------------------------------------- caching


def test_strong_etag_cache_headers_and_304(api):
    url = f"{V1}/runs/{RUN}/risk?limit=10&bu=Markets"
    first = api.get(url)
    etag = first.headers["ETag"]
    assert etag.startswith('"') and not etag.startswith("W/")
    assert first.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    again = api.get(url, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.data == b"" and again.headers["ETag"] == etag
    assert api.get(url.replace("limit=10", "limit=11"), headers={"If-None-Match": etag}).status_code == 200
    assert api.get(url, headers={"Accept": "text/csv"}).headers["ETag"] != etag  # one ETag per representation
    for path in ("", "/summary", "/consolidation", "/servers/" + first.json["items"][0]["server_id"]):
        resp = api.get(f"{V1}/runs/{RUN}{path}")
        assert resp.headers["Cache-Control"].endswith("immutable")
        assert (
            api.get(f"{V1}/runs/{RUN}{path}", headers={"If-None-Match": resp.headers["ETag"]}).status_code
            == 304
        )
    runs = api.get(f"{V1}/runs")
    assert runs.headers["Cache-Control"] == "private, no-cache"  # the list changes when a run is published
    assert api.get(f"{V1}/runs", headers={"If-None-Match": runs.headers["ETag"]}).status_code == 304


# --------------------------------------------------------------------------- paging


def test_paging_is_complete_and_stable_while_latest_moves(make_app, writable_store):
    store, root = writable_store
    client = make_app(store, root, cache_ttl_seconds=0).server.test_client()
    whole = client.get(
        f"{V1}/runs/{RUN}/risk?severity=none&severity=low&severity=medium&severity=high"
        "&severity=critical&limit=10000"
    ).json["items"]
    assert len(whole) > 500

    start = client.get(
        f"{V1}/runs/latest/risk?severity=none&severity=low&severity=medium&severity=high"
        "&severity=critical&limit=97"
    )
    assert start.status_code == 307
    page = client.get(start.headers["Location"]).json
    rows = list(page["items"])
    # a newer run is published while the client pages: LATEST moves on
    tables = {
        name: store.read_run_table(RUN, name) for name in ("forecasts", "risk", "recommendations", "backtest")
    }
    tables["risk"] = tables["risk"].iloc[::2].reset_index(drop=True)
    newer = "20260806T060000Z-fx9"
    manifest = {**store.read_manifest(RUN), "run_id": newer, "created_at": "2026-08-06T06:00:00+00:00"}
    manifest["rows"] = {k: len(v) for k, v in tables.items()}
    assert store.publish_run(newer, tables, manifest)
    assert store.latest_run_id() == newer
    assert client.get(f"{V1}/runs/latest").headers["Location"].endswith(newer)
    url = page["next"]
    pages = 1
    while url:
        assert RUN in url
        page = client.get(url).json
        rows += page["items"]
        url = page["next"]
        pages += 1
    assert pages == -(-len(whole) // 97)
    keys = [(r["server_id"], r["metric"]) for r in rows]
    assert len(keys) == len(set(keys))  # nothing repeated
    assert rows == whole  # nothing lost, same order as one big page
    # the newer run pages on its own
    assert len(
        all_rows(
            client,
            f"{V1}/runs/{newer}/risk?severity=none&severity=low&severity=medium"
            "&severity=high&severity=critical&limit=1000",
        )
    ) == len(tables["risk"])


def test_bad_requests_are_problem_details(api):
    is_problem(api.get(f"{V1}/runs/20990101T000000Z-nope/risk"), 404)
    is_problem(api.get(f"{V1}/runs/not-a-run-id"), 404)
    is_problem(api.get(f"{V1}/runs/{RUN}/servers/srv-nope"), 404)
    is_problem(api.get(f"{V1}/runs/{RUN}/servers/..%2F..%2Fetc"), 404)
    body = is_problem(api.get(f"{V1}/runs/{RUN}/risk?severity=catastrophic"), 400)
    assert body["errors"][0]["loc"][0] == "severity"
    is_problem(api.get(f"{V1}/runs/{RUN}/risk?fields=server_id,password"), 400)
    is_problem(api.get(f"{V1}/runs/{RUN}/risk?sort=-nothing"), 400)
    is_problem(api.get(f"{V1}/runs/{RUN}/risk?limit=0"), 400)
    is_problem(api.get(f"{V1}/runs/{RUN}/risk?limit=many"), 400)
    is_problem(api.get(f"{V1}/runs/{RUN}/risk?colour=red"), 400)
    is_problem(api.get(f"{V1}/runs/{RUN}/recommendations?action=sell"), 400)
    assert is_problem(api.get(f"{V1}/runs/{RUN}/risk?cursor=not-a-cursor"), 400)["param"] == "cursor"
    # a real cursor, used with other filters or another list, is refused too
    nxt = api.get(f"{V1}/runs/{RUN}/risk?limit=5").json["next"]
    cursor = nxt.split("cursor=")[1]
    is_problem(api.get(f"{V1}/runs/{RUN}/risk?limit=5&metric=cpu_p95&cursor={cursor}"), 400)
    is_problem(api.get(f"{V1}/runs/{RUN}/recommendations?limit=5&cursor={cursor}"), 400)
    is_problem(api.get(f"{V1}/nothing/here"), 404)
    resp = api.post(f"{V1}/runs")
    is_problem(resp, 405)
    assert "GET" in resp.headers["Allow"]
    is_problem(api.get(f"{V1}/runs/{RUN}/summary", headers={"Accept": "text/html"}), 406)


# --------------------------------------------------------------------------- sign-in


def test_oidc_bearer_tokens_roles_audit_and_no_token_in_logs(oidc_app, idp, json_lines, capsys):
    from forecasting import observability as obs

    client = oidc_app().server.test_client()
    url = f"{V1}/runs/{RUN}/summary"
    token = machine_token(idp)
    other = OidcProvider()  # another key: a forged token names the right kid but is signed elsewhere
    bad = {
        "expired": idp.access_token(groups=["capfc-viewers"], lifetime=-600),
        "audience": idp.access_token(groups=["capfc-viewers"], audience="another-api"),
        "forged": idp.access_token(groups=["capfc-viewers"], key=other.rsa_key),
        "unknown kid": idp.access_token(groups=["capfc-viewers"], key=other.rsa_key, kid="nope"),
        "issuer": idp.access_token(groups=["capfc-viewers"], iss="https://evil.example"),
        "alg none": _json_b64({"alg": "none", "typ": "JWT"})
        + "."
        + idp.access_token(groups=["capfc-admins"]).split(".")[1]
        + ".",
        # an ID token for the web app's sign-in: its audience is the app's client id, not the API
        "id token": idp.id_token(
            _Grant(user=dict(idp.user), redirect_uri="x", nonce=None, challenge=None, method=None)
        ),
    }
    no_role = idp.access_token("capfc-unknown-job", groups=["staff"])
    capsys.readouterr()

    body = is_problem(client.get(url), 401)
    assert "Bearer" in client.get(url).headers["WWW-Authenticate"] and body["detail"]
    is_problem(client.get(url, headers={"Authorization": "Basic dXNlcjpwYXNz"}), 401)
    for why, t in bad.items():
        resp = client.get(url, headers={"Authorization": f"Bearer {t}"})
        assert resp.status_code == 401, why
        is_problem(resp, 401)
    is_problem(client.get(url, headers={"Authorization": f"Bearer {no_role}"}), 403)
    ok = client.get(url, headers={"Authorization": f"Bearer {token}"})
    assert ok.status_code == 200 and ok.json["servers"] == 200
    assert "X-Capfc-Auth" not in ok.headers
    # the OpenAPI document and its page are public (no data in them)
    assert client.get(f"{V1}/openapi.json").status_code == 200
    assert client.get(f"{V1}/docs").status_code == 200
    # the web pages still want the browser's sign-in, not a token
    assert client.get("/_dash-layout", headers={"Authorization": f"Bearer {token}"}).status_code == 401

    obs.flush_metrics()
    out = capsys.readouterr()
    text = out.out + out.err
    for t in [token, no_role, *bad.values()]:
        assert t not in text  # tokens never reach a log line
        assert not t.split(".")[2] or t.split(".")[2] not in text
    records = [r for r in parse_lines(out.out) if "_aws" not in r]
    calls = [r for r in records if r.get("audit") and r.get("event") == "api"]
    assert [c["status"] for c in calls] == [401, 401, 401, *[401] * len(bad), 403, 200]
    assert calls[-1]["client"] == MACHINE_ID and calls[-1]["user"] == MACHINE_ID
    assert calls[-2]["client"] == "capfc-unknown-job"
    assert calls[-1]["route"] == f"{V1}/runs/<run_id>/summary" and calls[-1]["run_id"] == RUN


def test_rate_limit_per_client(oidc_app, idp):
    client = oidc_app(api_rate_limit="3/minute").server.test_client()
    a = {"Authorization": f"Bearer {idp.access_token('job-a', groups=['capfc-viewers'])}"}
    b = {"Authorization": f"Bearer {idp.access_token('job-b', groups=['capfc-viewers'])}"}
    assert [client.get(f"{V1}/runs", headers=a).status_code for _ in range(3)] == [200, 200, 200]
    body = is_problem(client.get(f"{V1}/runs", headers=a), 429)
    assert "3 per 1 minute" in body["detail"]
    assert client.get(f"{V1}/runs", headers=b).status_code == 200  # another client has its own budget


def test_dev_mode_says_so_and_serves_this_machine_only(api):
    resp = api.get(f"{V1}/runs")
    assert resp.headers["X-Capfc-Auth"] == "development mode: no sign-in, you are dev-admin"
    remote = api.get(f"{V1}/runs", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    is_problem(remote, 403)


def test_openapi_document_and_docs_page_work_offline_under_the_csp(api):
    spec = api.get(f"{V1}/openapi.json").json
    assert spec["openapi"].startswith("3.1")
    assert set(spec["paths"]) == {
        f"{V1}/runs",
        f"{V1}/runs/{{run_id}}",
        f"{V1}/runs/{{run_id}}/risk",
        f"{V1}/runs/{{run_id}}/recommendations",
        f"{V1}/runs/{{run_id}}/consolidation",
        f"{V1}/runs/{{run_id}}/servers/{{server_id}}",
        f"{V1}/runs/{{run_id}}/summary",
        f"{V1}/runs/{{run_id}}/changes",
        f"{V1}/runs/{{run_id}}/track-record",
        f"{V1}/track-record",
        f"{V1}/decisions",
        f"{V1}/decisions/{{decision_id}}",
        f"{V1}/runs/{{run_id}}/sign-off",
    }
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    risk = spec["paths"][f"{V1}/runs/{{run_id}}/risk"]["get"]
    assert "text/csv" in risk["responses"]["200"]["content"]
    assert PROBLEM in risk["responses"]["400"]["content"]
    page = api.get(f"{V1}/docs")
    html = page.get_data(as_text=True)
    csp = page.headers["Content-Security-Policy"]
    assert "'unsafe-inline'" not in csp.split("script-src")[1].split(";")[0]
    assert "<script>" not in html and "http" not in html  # no inline script, nothing from a CDN
    for src in ("swagger-ui-bundle.js", "swagger-ui.css", "docs.js"):
        asset = api.get(f"{V1}/docs/assets/{src}")
        assert asset.status_code == 200 and len(asset.data) > 100
    is_problem(api.get(f"{V1}/docs/assets/secrets.txt"), 404)


# --------------------------------------------------------------------------- schemathesis


@pytest.mark.slow
def test_schemathesis_finds_no_server_error_or_schema_violation(writable_store, idp, tmp_path):
    """Every operation of the OpenAPI document, fuzzed against the live server (all checks).

    The writes (decisions, sign-off) run too: the token is a planner machine client's, and the
    store is a private copy (what the fuzzer records stays there)."""
    from app import create_app

    store, root = writable_store
    idp.machine_clients["capfc-planning-job"] = {
        "secret": "planner-secret-0123",
        "claims": {"groups": ["capfc-planners"]},
        # the fuzzing takes minutes on a loaded machine (11 measured): outlive it, as a batch
        # client's token would be configured to
        "lifetime": 3600,
    }
    settings = oidc_settings(root, idp, api_rate_limit="100000/minute", log_level="WARNING")
    app = create_app(settings, store, cache_type="simple", cache_dir=str(tmp_path / "cache"))
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_port}"
        token = requests.post(
            idp.url + "/token",
            data={
                "grant_type": "client_credentials",
                "client_id": "capfc-planning-job",
                "client_secret": "planner-secret-0123",
            },
            timeout=10,
        ).json()["access_token"]
        st = Path(sys.executable).with_name("st")
        result = subprocess.run(
            [
                str(st),
                "--config-file",
                str(ROOT / "tests" / "schemathesis.toml"),
                "run",
                f"{url}{V1}/openapi.json",
                "--header",
                f"Authorization: Bearer {token}",
                "--checks",
                "all",
                "--max-examples",
                "25",
                # one worker: with two, hypothesis' lambda descriptions (ast.parse) for the
                # request bodies' recursive strategies race in CPython 3.11 ("AST constructor
                # recursion depth mismatch", a runtime error of the tool, not of the API)
                "--workers",
                "1",
                "--seed",
                "20261204",
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=tmp_path,  # its cache (.schemathesis/) stays out of the repository
            env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        )
    finally:
        server.shutdown()
        server.server_close()
    out = result.stdout + result.stderr
    assert result.returncode == 0, out[-6000:]
    assert "Tested: 15" in out and "failures" not in out.split("SUMMARY")[-1].lower().replace(
        "0 failures", ""
    )


def test_index_rows_are_the_grids_json_values(plan_store, monkeypatch):
    """The API's precomputed columns give exactly what components.grid.records gives the pages;
    text kept only as codes sorts and filters as the whole column did."""
    from app.api import index as index_module
    from components.grid import records

    whole: dict[str, pd.DataFrame] = {}

    class Recording(index_module.Table):
        def __post_init__(self) -> None:
            whole[self.name] = self.frame.copy()
            super().__post_init__()

    monkeypatch.setattr(index_module, "Table", Recording)
    index = index_module.build_index(plan_store, RUN)
    for name in ("risk", "recommendations", "backtest"):
        table, frame = index.tables[name], whole[name]
        assert table.frame.shape[1] < frame.shape[1]  # text is not kept twice
        chosen = np.arange(0, table.n_rows, 7)
        assert table.rows(chosen, table.fields) == records(frame.iloc[chosen], table.fields)
        for col in ("server_id", "hostname", "metric", "severity", "action", "model", "business_unit"):
            if col not in table.fields:
                continue
            text = frame[col].astype("object").where(frame[col].notna(), "").astype(str)
            value = sorted(set(text))[len(set(text)) // 2]
            np.testing.assert_array_equal(table.isin(col, [value, "no-such"]), (text == value).to_numpy())
            if col in index_module.RANKED:
                key = (
                    frame[col]
                    .astype(str)
                    .map(index_module.RANKED[col])
                    .to_numpy(dtype=float, na_value=np.nan)
                )
            else:
                codes, _ = pd.factorize(frame[col].astype("string"), sort=True, use_na_sentinel=True)
                key = np.where(codes < 0, np.nan, codes.astype(float))
            missing = np.isnan(key)
            want = np.lexsort([np.arange(len(frame)), np.where(missing, 0.0, -key), missing.astype(np.int8)])
            np.testing.assert_array_equal(table.order([f"-{col}"]), want)
    assert index.inventory_row(3) == records(index.inventory.iloc[3:4])[0]


@pytest.mark.browser
def test_docs_page_renders_in_chromium_under_the_csp(fixture_app):
    """Swagger UI draws every operation from the app's own files, with no CSP violation or error."""
    import time

    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    from tests.conftest import CHROME_FLAGS

    spec = fixture_app.server.test_client().get(f"{V1}/openapi.json").get_json()
    # Swagger UI draws an operation once under each of its tags
    expected = sum(
        len(op.get("tags") or ["default"])
        for item in spec["paths"].values()
        for method, op in item.items()
        if method in ("get", "put", "post", "delete", "patch")
    )
    server = make_server("127.0.0.1", 0, fixture_app.server, threaded=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    options = Options()
    for flag in ["--headless=new", *CHROME_FLAGS]:
        options.add_argument(flag)
    options.binary_location = "/usr/bin/chromium"
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)
    try:
        driver.get(f"http://127.0.0.1:{server.server_port}{V1}/docs")
        deadline = time.monotonic() + 30
        while (
            time.monotonic() < deadline and len(driver.find_elements("css selector", ".opblock")) < expected
        ):
            time.sleep(0.2)
        assert len(driver.find_elements("css selector", ".opblock")) == expected >= 15
        assert (
            "Capacity Forecaster API" in driver.find_element("css selector", ".swagger-ui .info .title").text
        )
        logs = driver.get_log("browser")
        assert not [
            e for e in logs if e.get("level") == "SEVERE" or "Content Security Policy" in e["message"]
        ], logs
    finally:
        driver.quit()
        server.shutdown()
        server.server_close()
