"""Plans as records over the REST API (app/api/records.py) on a real store with two runs.

The store is tests/records_fixture.py's: run A forecasts 60 days before the end of the data, then
the rest of the data arrives and run B forecasts with the CPU threshold lowered, so A → B differs
by new data and a named setting, and A has a track record measured against real actuals. Every
answer is compared with what forecasting/records computes for the same runs; sign-in and roles
use the real OIDC provider on loopback (client credentials grants for a viewer and a planner
machine client); concurrent writes go through a live threaded server.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from werkzeug.serving import make_server

from forecasting.exports import csv_bytes
from forecasting.records.decisions import read_decisions, read_signoff
from forecasting.records.diff import changes_frame, diff_runs, to_json
from forecasting.records.track import load_series, load_summary, track_runs
from forecasting.settings import Settings
from forecasting.sources import Store, open_store
from tests.oidc_provider import MACHINE_ID, MACHINE_SECRET, OidcProvider
from tests.records_fixture import RUN_A, RUN_B, make_records_store
from tests.test_api import is_problem, machine_token, oidc_settings
from tests.test_api import json_lines as json_lines
from tests.test_observability import parse_lines

V1 = "/api/v1"
PLANNER_ID = "capfc-planning-job"
PLANNER_SECRET = "planner-secret-0123456789abcdef"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def records_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two runs (A, B) and A's track record, built once per module (read-only: copy to write)."""
    root = tmp_path_factory.mktemp("records-store")
    store, _ = make_records_store(root, n_servers=40)
    (rec,) = track_runs(store)
    assert rec.run_id == RUN_A
    return root


@pytest.fixture
def store_root(records_root: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(records_root, root)
    return root


@pytest.fixture
def store(store_root: Path) -> Store:
    return open_store(str(store_root))


def make(store: Store, root: Path, tmp: Path, **settings: Any) -> Any:
    from app import create_app

    return create_app(Settings(data=str(root), **settings), store, cache_type="simple", cache_dir=str(tmp))


@pytest.fixture
def api(store: Store, store_root: Path, tmp_path: Path) -> Any:
    """The app in dev mode (dev-admin, loopback): every role's answer."""
    return make(store, store_root, tmp_path / "cache").server.test_client()


@pytest.fixture
def idp() -> Iterator[OidcProvider]:
    provider = OidcProvider()
    provider.machine_clients[PLANNER_ID] = {
        "secret": PLANNER_SECRET,
        "claims": {"groups": ["capfc-planners"]},
    }
    provider.start()
    try:
        yield provider
    finally:
        provider.stop()


def planner_token(idp: OidcProvider) -> str:
    resp = requests.post(
        idp.url + "/token",
        data={"grant_type": "client_credentials", "client_id": PLANNER_ID, "client_secret": PLANNER_SECRET},
        timeout=10,
    )
    assert resp.status_code == 200, resp.text
    return resp.json()["access_token"]


def risk_row(store: Store, run_id: str = RUN_A) -> tuple[str, str]:
    risk = store.read_run_table(run_id, "risk")
    row = risk.sort_values(["server_id", "metric"]).iloc[0]
    return str(row["server_id"]), str(row["metric"])


def rec_row(store: Store, run_id: str = RUN_A) -> tuple[str, str]:
    recs = store.read_run_table(run_id, "recommendations")
    row = recs.sort_values("server_id").iloc[0]
    return str(row["server_id"]), str(row["action"])


def later(days: int = 30) -> str:
    return (datetime.now(UTC).date() + timedelta(days=days)).isoformat()


# --------------------------------------------------------------------------- changes


def test_changes_are_the_run_diff_in_json_and_csv(api, store):
    diff = diff_runs(store, RUN_A, RUN_B)
    expected = json.loads(json.dumps(to_json(diff), default=str))
    resp = api.get(f"{V1}/runs/{RUN_B}/changes?since={RUN_A}")
    assert resp.status_code == 200, resp.data[:300]
    body = resp.json
    assert body["run_a"] == RUN_A and body["run_b"] == RUN_B
    assert body["causes"] == diff.causes() and any("cpu_p95" in c for c in body["causes"])
    assert body["new_data"] is True and body["settings_changed"]["thresholds.cpu_p95"] == [85.0, 80]
    for name in ("totals", "new_risks", "resolved_risks", "moved_breaches", "changed_recommendations"):
        assert body[name] == expected[name], name
    assert body["new_risks"] or body["moved_breaches"] or body["resolved_risks"]
    for row in body["moved_breaches"]:
        assert isinstance(row["days_moved"], int | float) and row["why"]
    # a comparison of two given runs never changes: strong ETag, immutable, 304 on revalidation
    assert resp.headers["Cache-Control"] == "private, max-age=31536000, immutable"
    again = api.get(
        f"{V1}/runs/{RUN_B}/changes?since={RUN_A}", headers={"If-None-Match": resp.headers["ETag"]}
    )
    assert again.status_code == 304 and not again.data
    # the default "since" is the run before; resolved now, so revalidated, and named in a header
    default = api.get(f"{V1}/runs/{RUN_B}/changes")
    assert default.status_code == 200 and default.json == body
    assert (
        default.headers["Cache-Control"] == "private, no-cache" and default.headers["X-Capfc-Since"] == RUN_A
    )
    # CSV: changes_frame with the exports' escaping, byte for byte
    text = api.get(f"{V1}/runs/{RUN_B}/changes?since={RUN_A}", headers={"Accept": "text/csv"})
    assert text.status_code == 200 and text.content_type.startswith("text/csv")
    assert text.data == csv_bytes(changes_frame(diff))
    rows = list(csv.DictReader(io.StringIO(text.data.decode("utf-8-sig"))))
    assert len(rows) == len(changes_frame(diff)) and set(rows[0]) >= {"change", "server_id", "why"}
    assert text.headers["ETag"] != resp.headers["ETag"]
    # a business unit filter: every row of every table is of that unit
    bu = sorted({r["business_unit"] for r in body["new_risks"] + body["moved_breaches"]})[0]
    only = api.get(f"{V1}/runs/{RUN_B}/changes?since={RUN_A}&bu={bu}").json
    assert only["business_units"] == [bu]
    assert only == json.loads(
        json.dumps(to_json(diff_runs(store, RUN_A, RUN_B, business_units=[bu])), default=str)
    )
    for name in ("new_risks", "resolved_risks", "moved_breaches", "changed_recommendations"):
        assert all(r["business_unit"] == bu for r in only[name])


def test_changes_latest_redirects_like_the_other_endpoints(api):
    moved = api.get(f"{V1}/runs/latest/changes?since={RUN_A}&bu=x")
    assert moved.status_code == 307 and moved.headers["Cache-Control"] == "no-store"
    assert moved.headers["Location"].endswith(f"{V1}/runs/{RUN_B}/changes?since={RUN_A}&bu=x")
    since = api.get(f"{V1}/runs/{RUN_A}/changes?since=latest")
    assert since.status_code == 307
    assert since.headers["Location"].endswith(f"{V1}/runs/{RUN_A}/changes?since={RUN_B}")
    backwards = api.get(since.headers["Location"])  # B → A: allowed, the reverse comparison
    assert backwards.status_code == 200 and backwards.json["run_a"] == RUN_B


def test_changes_bad_input_is_a_problem_naming_it(api):
    body = is_problem(api.get(f"{V1}/runs/20990101T000000Z-nope/changes"), 404)
    assert "no published run '20990101T000000Z-nope'" in body["detail"]
    body = is_problem(api.get(f"{V1}/runs/{RUN_B}/changes?since=20990101T000000Z-nope"), 404)
    assert body["param"] == "since" and "20990101T000000Z-nope" in body["detail"]
    body = is_problem(api.get(f"{V1}/runs/{RUN_B}/changes?since=not-a-run"), 404)
    assert body["param"] == "since"
    body = is_problem(api.get(f"{V1}/runs/{RUN_B}/changes?since={RUN_B}"), 400)
    assert body["param"] == "since" and "compare two different runs" in body["detail"]
    body = is_problem(api.get(f"{V1}/runs/{RUN_A}/changes"), 404)
    assert body["param"] == "since" and "first published run" in body["detail"]
    body = is_problem(api.get(f"{V1}/runs/{RUN_B}/changes?bu=Atlantis"), 400)
    assert body["param"] == "bu" and "unknown business unit(s) Atlantis" in body["detail"]
    is_problem(api.get(f"{V1}/runs/{RUN_B}/changes?colour=red"), 400)
    is_problem(api.get(f"{V1}/runs/{RUN_B}/changes", headers={"Accept": "application/xml"}), 406)


# --------------------------------------------------------------------------- track record


def test_track_record_summary_series_paging_and_csv(api, store):
    summary = load_summary(store, RUN_A)
    series = load_series(store, RUN_A).sort_values(["server_id", "metric"], ignore_index=True)
    first = api.get(f"{V1}/runs/{RUN_A}/track-record?limit=7")
    assert first.status_code == 200, first.data[:300]
    assert (
        first.json["summary"] == json.loads(json.dumps(summary)) and first.json["record"] == summary["record"]
    )
    assert first.json["total"] == len(series) and first.headers["X-Total-Count"] == str(len(series))
    assert first.headers["Cache-Control"] == "private, no-cache"  # a newer record may be saved
    rows, url = [], f"{V1}/runs/{RUN_A}/track-record?limit=7"
    while url:
        page = api.get(url)
        assert page.status_code == 200
        rows += page.json["items"]
        url = page.json["next"]
    assert [(r["server_id"], r["metric"]) for r in rows] == list(
        zip(series["server_id"], series["metric"], strict=True)
    )
    assert rows[0]["mase"] == pytest.approx(series["mase"].iloc[0]) or series["mase"].isna().iloc[0]
    again = api.get(
        f"{V1}/runs/{RUN_A}/track-record?limit=7", headers={"If-None-Match": first.headers["ETag"]}
    )
    assert again.status_code == 304
    # fields, an outcome filter, the summary alone, CSV
    some = api.get(f"{V1}/runs/{RUN_A}/track-record?fields=server_id,outcome&outcome=quiet&limit=1000").json
    assert some["items"] and all(
        set(r) == {"server_id", "outcome"} and r["outcome"] == "quiet" for r in some["items"]
    )
    assert some["total"] == int((series["outcome"] == "quiet").sum())
    assert api.get(f"{V1}/runs/{RUN_A}/track-record?limit=0").json["items"] == []
    text = api.get(f"{V1}/runs/{RUN_A}/track-record?limit=10000", headers={"Accept": "text/csv"})
    assert len(list(csv.DictReader(io.StringIO(text.data.decode("utf-8-sig"))))) == len(series)
    # all runs: coverage over time
    listed = api.get(f"{V1}/track-record")
    assert listed.status_code == 200
    assert [s["run_id"] for s in listed.json["items"]] == [RUN_A]
    assert listed.json["items"][0]["coverage_80"] == summary["coverage_80"]
    assert api.get(f"{V1}/track-record", headers={"If-None-Match": listed.headers["ETag"]}).status_code == 304


def test_track_record_missing_says_how_to_make_one(api):
    body = is_problem(api.get(f"{V1}/runs/{RUN_B}/track-record"), 404)
    assert f"python -m forecasting track-record {RUN_B}" in body["detail"]
    assert body["title"] == "No track record yet"
    is_problem(api.get(f"{V1}/runs/20990101T000000Z-nope/track-record"), 404)
    body = is_problem(api.get(f"{V1}/runs/{RUN_A}/track-record?cursor=abc"), 400)
    assert body["param"] == "cursor"
    is_problem(api.get(f"{V1}/runs/{RUN_A}/track-record?outcome=lucky"), 400)
    is_problem(api.get(f"{V1}/runs/{RUN_A}/track-record?fields=password"), 400)
    moved = api.get(f"{V1}/runs/latest/track-record")
    assert moved.status_code == 307 and moved.headers["Location"].endswith(f"/runs/{RUN_B}/track-record")


# --------------------------------------------------------------------------- decisions


def test_record_a_decision_read_it_back_and_carry_it_forward(api, store):
    server, metric = risk_row(store)
    resp = api.post(
        f"{V1}/decisions",
        json={
            "run_id": RUN_A,
            "kind": "risk",
            "server_id": server,
            "subject": metric,
            "decision": "deferred",
            "until": later(),
            "note": "budget in Q3",
        },
    )
    assert resp.status_code == 201, resp.data[:400]
    rec = resp.json
    assert rec["user"] == "dev-admin" and rec["source"] == "api" and rec["until"] == later()
    assert resp.headers["Location"] == f"{V1}/decisions/{rec['id']}"
    got = api.get(resp.headers["Location"])
    assert got.status_code == 200 and got.json["id"] == rec["id"] and got.json["note"] == "budget in Q3"
    # in force on its run and carried forward to the later run, not back to an earlier one
    for run in (RUN_A, RUN_B):
        page = api.get(f"{V1}/decisions?run={run}").json
        assert [(d["server_id"], d["subject"], d["label"]) for d in page["items"]] == [
            (server, metric, f"Deferred until {later()}")
        ]
        assert page["items"][0]["in_effect"] is True
    assert api.get(f"{V1}/decisions?run={RUN_B}&kind=recommendation").json["total"] == 0
    # a later decision on the same row supersedes it when read, even within the same second
    # (decisions carry their time to the microsecond); the history stays whole
    api.post(
        f"{V1}/decisions",
        json={
            "run_id": RUN_B,
            "kind": "risk",
            "server_id": server,
            "subject": metric,
            "decision": "accepted",
        },
    )
    assert api.get(f"{V1}/decisions?run={RUN_A}").json["items"][0]["decision"] == "deferred"
    assert api.get(f"{V1}/decisions?run={RUN_B}").json["items"][0]["decision"] == "accepted"
    assert len(read_decisions(store)) == 2
    # a recommendation row, and the server filter
    rs, action = rec_row(store)
    made = api.post(
        f"{V1}/decisions",
        json={
            "run_id": RUN_A,
            "kind": "recommendation",
            "server_id": rs,
            "subject": action,
            "decision": "ordered",
            "reference": "CHG-1234",
        },
    )
    assert made.status_code == 201 and made.json["reference"] == "CHG-1234"
    only = api.get(f"{V1}/decisions?run={RUN_B}&server={rs}").json["items"]
    assert any(d["kind"] == "recommendation" and d["label"] == "Ordered (CHG-1234)" for d in only)
    assert all(d["server_id"] == rs for d in only)
    # latest redirects (307) to a concrete run, as everywhere
    moved = api.get(f"{V1}/decisions?kind=risk")
    assert moved.status_code == 307 and moved.headers["Location"].endswith(
        f"/decisions?kind=risk&run={RUN_B}"
    )
    assert api.get(f"{V1}/decisions?run=latest").headers["Location"].endswith(f"/decisions?run={RUN_B}")
    listed = api.get(f"{V1}/decisions?run={RUN_B}")
    assert listed.headers["Cache-Control"] == "private, no-cache"  # decisions are not immutable
    assert (
        api.get(f"{V1}/decisions?run={RUN_B}", headers={"If-None-Match": listed.headers["ETag"]}).status_code
        == 304
    )


def test_decisions_page_with_a_cursor_to_the_end(api, store):
    risk = store.read_run_table(RUN_A, "risk").sort_values(["server_id", "metric"]).head(7)
    for row in risk.itertuples():
        resp = api.post(
            f"{V1}/decisions",
            json={
                "run_id": RUN_A,
                "kind": "risk",
                "server_id": row.server_id,
                "subject": row.metric,
                "decision": "accepted",
            },
        )
        assert resp.status_code == 201
    seen, url = [], f"{V1}/decisions?run={RUN_A}&limit=3"
    while url:
        page = api.get(url).json
        assert page["total"] == 7
        seen += [(d["server_id"], d["subject"]) for d in page["items"]]
        url = page["next"]
    assert seen == sorted(zip(risk["server_id"], risk["metric"], strict=True))
    body = is_problem(api.get(f"{V1}/decisions?run={RUN_A}&cursor=Zm9v"), 400)
    assert body["param"] == "cursor"
    first = api.get(f"{V1}/decisions?run={RUN_A}&limit=3").json["next"]
    other = first.replace(f"run={RUN_A}", f"run={RUN_B}")
    assert "another run" in is_problem(api.get(other), 400)["detail"]


BAD = [
    ({"kind": "server"}, 400, "kind", None),
    ({"decision": "maybe"}, 400, "decision", None),
    ({"decision": "deferred"}, 422, "until", "a deferral needs the date it lasts until"),
    ({"decision": "deferred", "until": "2020-01-01"}, 422, "until", "is not after today"),
    ({"decision": "deferred", "until": "soon"}, 422, "until", "until must be a date (YYYY-MM-DD)"),
    ({"until": "2099-01-01"}, 422, "until", "only a deferral takes a date"),
    ({"decision": "ordered"}, 422, "reference", "reference (order or ticket) is required"),
    ({"decision": "rejected"}, 422, "reason", "reason is required"),
    ({"reason": "x" * 600}, 422, "reason", "reason is 600 characters long; at most 500"),
    ({"note": "a\x00b"}, 422, "note", "note contains control characters"),
    ({"run_id": "20990101T000000Z-nope"}, 422, "run_id", "no published run '20990101T000000Z-nope'"),
    ({"subject": "gpu_p95"}, 422, "subject", "has no risk row"),
    ({"server_id": "no-such-server"}, 422, "server_id", "no row for server no-such-server"),
    ({"colour": "red"}, 400, "colour", None),
]


@pytest.mark.parametrize(("change", "status", "field", "detail"), BAD, ids=[str(b[0])[:40] for b in BAD])
def test_bad_decisions_are_refused_naming_the_field(api, store, change, status, field, detail):
    server, metric = risk_row(store)
    body = {"run_id": RUN_A, "kind": "risk", "server_id": server, "subject": metric, "decision": "accepted"}
    got = is_problem(api.post(f"{V1}/decisions", json={**body, **change}), status)
    if status == 422:
        assert got["param"] == field and detail in got["detail"], got
        assert got["title"] == "Decision not recorded"
    else:
        assert field in got["detail"], got
    assert read_decisions(store).empty  # nothing half-recorded


def test_bodies_that_are_not_json_objects_are_400(api):
    is_problem(api.post(f"{V1}/decisions"), 400)
    is_problem(api.post(f"{V1}/decisions", data="[]", content_type="application/json"), 400)
    is_problem(
        api.post(f"{V1}/decisions", data="kind=risk", content_type="application/x-www-form-urlencoded"), 400
    )


def test_sign_off_once_then_409(api, store):
    assert api.get(f"{V1}/runs/{RUN_B}/sign-off").json == {"run_id": RUN_B, "signed_off": False}
    resp = api.post(f"{V1}/runs/{RUN_B}/sign-off", json={"note": "Q3 plan agreed"})
    assert resp.status_code == 201, resp.data[:300]
    assert (
        resp.json["signed_off"] is True and resp.json["user"] == "dev-admin" and resp.json["source"] == "api"
    )
    assert resp.headers["Location"] == f"{V1}/runs/{RUN_B}/sign-off"
    got = api.get(f"{V1}/runs/{RUN_B}/sign-off")
    assert got.json["note"] == "Q3 plan agreed" and got.json["at"] == resp.json["at"]
    assert got.headers["Cache-Control"] == "private, max-age=31536000, immutable"  # created once
    body = is_problem(api.post(f"{V1}/runs/{RUN_B}/sign-off", json={}), 409)
    assert "already signed off by dev-admin" in body["detail"]
    assert read_signoff(store, RUN_B)["note"] == "Q3 plan agreed"  # the first one stands
    is_problem(api.post(f"{V1}/runs/20990101T000000Z-nope/sign-off", json={}), 404)
    body = is_problem(api.post(f"{V1}/runs/{RUN_A}/sign-off", json={"note": "n" * 501}), 422)
    assert body["param"] == "note"
    assert read_signoff(store, RUN_A) is None
    moved = api.post(f"{V1}/runs/latest/sign-off", json={})
    assert moved.status_code == 307 and moved.headers["Location"].endswith(f"/runs/{RUN_B}/sign-off")


# --------------------------------------------------------------------------- sign-in, roles, audit


def test_roles_with_real_tokens_and_one_audit_event_per_decision(
    store,
    store_root,
    tmp_path,
    idp,
    json_lines,
    capsys,
):
    from app import create_app
    from forecasting import observability as obs

    settings = oidc_settings(store_root, idp)
    client = create_app(
        settings, store, cache_type="simple", cache_dir=str(tmp_path / "c")
    ).server.test_client()
    viewer = {"Authorization": f"Bearer {machine_token(idp)}"}
    planner = {"Authorization": f"Bearer {planner_token(idp)}"}
    server, metric = risk_row(store)
    body = {"run_id": RUN_A, "kind": "risk", "server_id": server, "subject": metric, "decision": "accepted"}
    capsys.readouterr()

    is_problem(client.post(f"{V1}/decisions", json=body), 401)
    is_problem(client.get(f"{V1}/runs/{RUN_B}/changes"), 401)
    assert client.get(f"{V1}/runs/{RUN_B}/changes", headers=viewer).status_code == 200
    assert client.get(f"{V1}/decisions?run={RUN_A}", headers=viewer).status_code == 200
    denied = is_problem(client.post(f"{V1}/decisions", json=body, headers=viewer), 403)
    assert (
        denied["detail"]
        == "Your role (viewer) cannot record decisions or sign off a run: that needs the planner role."
    )
    is_problem(client.post(f"{V1}/runs/{RUN_A}/sign-off", json={}, headers=viewer), 403)
    made = client.post(f"{V1}/decisions", json=body, headers=planner)
    assert made.status_code == 201 and made.json["user"] == PLANNER_ID
    assert client.post(f"{V1}/runs/{RUN_A}/sign-off", json={}, headers=planner).status_code == 201
    assert len(read_decisions(store)) == 1 and read_signoff(store, RUN_A)["user"] == PLANNER_ID

    obs.flush_metrics()
    records = [r for r in parse_lines(capsys.readouterr().out) if r.get("audit")]
    calls = [r for r in records if r.get("event") == "api"]
    assert [c["status"] for c in calls] == [401, 401, 200, 200, 403, 403, 201, 201]
    assert calls[-2]["client"] == PLANNER_ID and calls[-2]["method"] == "POST"
    assert calls[2]["client"] == MACHINE_ID
    decisions = [r for r in records if r.get("event") == "decision"]
    assert len(decisions) == 1  # the records module's event, once; the API adds none of its own
    assert decisions[0]["decided_by"] == PLANNER_ID and decisions[0]["source"] == "api"
    assert decisions[0]["decision_id"] == made.json["id"]
    assert len([r for r in records if r.get("event") == "sign-off"]) == 1
    refused = [r for r in records if r.get("event") == "access-denied"]
    assert len(refused) == 2 and all(r["role"] == "viewer" for r in refused)
    assert MACHINE_SECRET not in json.dumps(records)


def test_concurrent_posts_lose_nothing(store, store_root, tmp_path):
    app = make(store, store_root, tmp_path / "cache")
    server = make_server("127.0.0.1", 0, app.server, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    risk = store.read_run_table(RUN_A, "risk").sort_values(["server_id", "metric"])
    rows = list(zip(risk["server_id"], risk["metric"], strict=True))[:6]
    jobs = [(rows[i % len(rows)], i) for i in range(24)]  # several writers on the same rows too
    results: list[Any] = [None] * len(jobs)
    try:
        url = f"http://127.0.0.1:{server.server_port}{V1}/decisions"

        def post(i: int) -> None:
            (sid, metric), n = jobs[i]
            body = {
                "run_id": RUN_A,
                "kind": "risk",
                "server_id": sid,
                "subject": metric,
                "decision": "accepted",
                "note": f"writer {n}",
            }
            with requests.Session() as s:
                results[i] = s.post(url, json=body, timeout=60)

        threads = [threading.Thread(target=post, args=(i,)) for i in range(len(jobs))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert [r.status_code for r in results] == [201] * len(jobs), [
            r.text[:200] for r in results if r.status_code != 201
        ]
        ids = {r.json()["id"] for r in results}
        assert len(ids) == len(jobs)
        stored = read_decisions(store)
        assert set(stored["id"]) == ids and sorted(stored["note"]) == sorted(f"writer {n}" for _, n in jobs)
        listed = requests.get(f"{url}?run={RUN_A}&limit=100", timeout=30).json()
        assert listed["total"] == len(rows)  # one decision in force per row: the latest of its writers
    finally:
        server.shutdown()
        server.server_close()
