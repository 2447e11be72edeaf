"""The web tier's hardening over HTTP (Flask's test client on fully built apps): headers and
CSP, no-store on data, HTTPS behind a proxy, the request-size and rate limits, the background
job cap, wrong value types inside well-formed requests (the corpus of malformed requests is in
tests/test_bad_input_corpus.py) and internal errors that reach users only as a generic message with a reference.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from typing import Any

import pytest

from app import ids, security
from app.errors import new_ref, report, user_message
from tests.redisserver import redis_server  # noqa: F401  (fixture)
from tests.s3server import aws_env, moto_server  # noqa: F401  (fixtures)

CB = "/_dash-update-component"


# --------------------------------------------------------------------------- helpers


def _spec(app, needle: str) -> tuple[str, dict]:
    keys = [k for k in app.callback_map if needle in k and "callback" in app.callback_map[k]]
    assert len(keys) == 1, (needle, keys)
    return keys[0], app.callback_map[keys[0]]


def _outputs(key: str) -> list[dict[str, str]]:
    parts = key.strip(".").split("...") if key.startswith("..") else [key]
    return [{"id": p.rsplit(".", 1)[0], "property": p.rsplit(".", 1)[1]} for p in parts]


def body_for(
    app, needle: str, values: dict[str, Any] | None = None, changed: list[str] | None = None
) -> dict:
    """A well-formed callback request for the callback whose output key contains ``needle``;
    ``values`` maps 'id.property' to a value (others None)."""
    key, spec = _spec(app, needle)
    values = values or {}

    def items(which: str) -> list[dict[str, Any]]:
        return [
            {"id": i["id"], "property": i["property"], "value": values.get(f"{i['id']}.{i['property']}")}
            for i in spec.get(which, [])
        ]

    outs = _outputs(key)
    return {
        "output": key,
        "outputs": outs if key.startswith("..") else outs[0],
        "inputs": items("inputs"),
        "state": items("state"),
        "changedPropIds": changed or [],
    }


def post(client, body: Any, **kw: Any):
    data = body if isinstance(body, bytes | str) else json.dumps(body)
    return client.post(CB, data=data, content_type=kw.pop("content_type", "application/json"), **kw)


def export_body(app, filters: dict | None = None) -> dict:
    return body_for(
        app,
        "risk-download.data",
        {f"{ids.RISK_EXPORT_CSV}.n_clicks": 1, f"{ids.FILTERS}.data": filters or {}},
        [f"{ids.RISK_EXPORT_CSV}.n_clicks"],
    )


def app_errors(caplog) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.levelno >= logging.ERROR]


@pytest.fixture
def client(fixture_app):
    c = fixture_app.server.test_client()
    assert c.get("/").status_code == 200  # first request: Dash finishes its setup
    return c


# --------------------------------------------------------------------------- headers


def test_pages_carry_the_security_headers_and_a_csp_without_unsafe_inline_scripts(client):
    r = client.get("/risk")
    h = r.headers
    csp = dict(part.strip().split(" ", 1) for part in h["Content-Security-Policy"].split(";"))
    assert csp["default-src"] == "'none'"
    script = csp["script-src"].split()
    assert script[0] == "'self'" and all(s.startswith("'sha256-") for s in script[1:]) and len(script) >= 4
    assert "'unsafe-inline'" not in script and "'unsafe-eval'" not in script
    assert (
        csp["frame-ancestors"] == "'none'" and csp["object-src"] == "'none'" and csp["base-uri"] == "'none'"
    )
    assert csp["connect-src"] == "'self'" and csp["img-src"] == "'self' data:"
    assert h["X-Frame-Options"] == "DENY"
    assert h["X-Content-Type-Options"] == "nosniff"
    assert h["Referrer-Policy"] == "no-referrer"
    assert h["Cache-Control"] == "no-store"
    assert "Strict-Transport-Security" not in h  # plain HTTP: HSTS only over HTTPS


def test_the_csp_hashes_every_inline_script_the_page_runs(client):
    r = client.get("/")
    html = r.get_data(as_text=True)
    csp = r.headers["Content-Security-Policy"]
    scripts = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>(.*?)</script>", html, re.S)
    executable = [body for attrs, body in scripts if "application/json" not in attrs and body.strip()]
    assert len(executable) >= 4
    for body in executable:
        digest = base64.b64encode(hashlib.sha256(body.encode()).digest()).decode()
        if "Internet Explorer" in body:  # inside an IE-only conditional comment: never runs
            continue
        assert f"'sha256-{digest}'" in csp, body[:80]


def test_data_responses_are_no_store_and_static_files_are_not(client, fixture_app):
    for path in ("/_dash-layout", "/_dash-dependencies", "/healthz", "/servers/srv-00001"):
        assert client.get(path).headers["Cache-Control"] == "no-store", path
    r = post(client, export_body(fixture_app))
    assert r.status_code == 200 and r.headers["Cache-Control"] == "no-store"
    assert "risk-download" in r.get_json()["response"]
    assert client.get("/assets/10-app.css").headers.get("Cache-Control") != "no-store"


def test_a_bundle_asked_for_while_the_first_page_renders_is_served(make_app, plan_store, plan_store_root):
    """Under gunicorn a fresh worker's first page and the bundles it names arrive together: the
    bundle waits for Dash's set-up (which renders the layout: slow while a run loads) instead of
    getting 404 (then no chart drew)."""
    import threading
    import time

    from app import LAZY_SCRIPTS, get_context

    app = make_app(plan_store, plan_store_root)
    rm = get_context(app).readmodel
    snapshot = rm.snapshot

    def slow_snapshot():  # the layout of the first page waits for a loading run
        time.sleep(1.0)
        return snapshot()

    rm.snapshot = slow_snapshot
    page: dict[str, int] = {}
    first = threading.Thread(target=lambda: page.update(status=app.server.test_client().get("/").status_code))
    first.start()
    time.sleep(0.3)
    bundles = [app.server.test_client().get(f"/_dash-component-suites/{p}") for p in LAZY_SCRIPTS]
    first.join()
    assert page["status"] == 200
    assert [r.status_code for r in bundles] == [200] * len(LAZY_SCRIPTS)
    assert all(len(r.data) > 1000 for r in bundles)
    assert app.server.test_client().get("/_dash-component-suites/dash/dcc/no-such.js").status_code == 404


def test_behind_a_trusted_proxy_https_is_detected_redirected_and_pinned(
    make_app, plan_store, plan_store_root
):
    app = make_app(plan_store, plan_store_root, proxy_hops=1, force_https=True)
    c = app.server.test_client()
    r = c.get("/risk?bu=Markets")
    assert r.status_code == 302 and r.headers["Location"] == "https://localhost/risk?bu=Markets"
    r = c.get("/risk", headers={"X-Forwarded-Proto": "https", "X-Forwarded-For": "203.0.113.7"})
    assert r.status_code == 200
    assert r.headers["Strict-Transport-Security"] == "max-age=63072000; includeSubDomains"
    # the load balancer's plain-HTTP health check still gets its answer
    assert c.get("/healthz").status_code == 200


@pytest.mark.parametrize(("hops", "user"), [(1, "203.0.113.7"), (0, "127.0.0.1")])
def test_the_user_id_is_the_client_address_the_trusted_proxy_saw(
    make_app, plan_store, plan_store_root, hops, user
):
    # dev sign-in mode (tests/conftest.py): everyone is dev-admin, limits count per address, and
    # only a loopback peer is served, so the proxy here is a local one
    app = make_app(plan_store, plan_store_root, proxy_hops=hops)
    app.server.add_url_rule("/_whoami", "whoami", lambda: security.user_id())
    r = app.server.test_client().get(
        "/_whoami", headers={"X-Forwarded-For": "203.0.113.7"}, environ_base={"REMOTE_ADDR": "127.0.0.1"}
    )
    assert r.get_data(as_text=True) == user


# --------------------------------------------------------------------------- limits


def test_a_body_over_the_limit_gets_413_with_a_plain_message(make_app, plan_store, plan_store_root, caplog):
    app = make_app(plan_store, plan_store_root, max_request_bytes=4096)
    c = app.server.test_client()
    c.get("/")
    r = post(c, b"{" + b" " * 5000 + b"}")
    assert r.status_code == 413
    assert r.content_type.startswith("text/plain")
    assert r.get_data(as_text=True) == "Request too large: at most 4,096 bytes.\n"
    assert post(c, export_body(app)).status_code == 200  # a normal request still passes
    assert app_errors(caplog) == []


def test_expensive_callbacks_are_rate_limited_per_user_with_a_plain_429(
    make_app, plan_store, plan_store_root
):
    app = make_app(plan_store, plan_store_root, rate_limit="2/minute", proxy_hops=1)
    c = app.server.test_client()
    c.get("/")
    alice = {"X-Forwarded-For": "198.51.100.1"}
    assert [post(c, export_body(app), headers=alice).status_code for _ in range(2)] == [200, 200]
    r = post(c, export_body(app), headers=alice)
    assert r.status_code == 429
    assert (
        r.get_data(as_text=True)
        == "Too many export requests: at most 2 per 1 minute. Wait a little, then try again.\n"
    )
    assert "Retry-After" in r.headers
    # another user is not limited by alice; cheap callbacks are never limited
    assert post(c, export_body(app), headers={"X-Forwarded-For": "198.51.100.2"}).status_code == 200
    cheap = body_for(app, "ov-heatmap.figure", {f"{ids.FILTERS}.data": {}}, [f"{ids.FILTERS}.data"])
    assert all(post(c, cheap, headers=alice).status_code == 200 for _ in range(4))
    # a what-if page's first call is not a change; changes are counted
    first = body_for(app, "whatif-state.data", {})
    assert all(post(c, first, headers=alice).status_code in (200, 204) for _ in range(4))
    change = body_for(
        app, "whatif-state.data", {f"{ids.WHATIF_GROWTH}.value": 5}, [f"{ids.WHATIF_GROWTH}.value"]
    )
    codes = [post(c, change, headers=alice).status_code for _ in range(3)]
    assert codes[:2] != [429, 429] and codes[2] == 429


def test_rate_limits_key_on_the_user_id_function(make_app, plan_store, plan_store_root):
    app = make_app(plan_store, plan_store_root, rate_limit="1/minute")
    c = app.server.test_client()
    c.get("/")
    try:
        security.set_user_id_function(lambda: "alice")
        assert post(c, export_body(app)).status_code == 200
        assert post(c, export_body(app)).status_code == 429
        security.set_user_id_function(lambda: "bob")
        assert post(c, export_body(app)).status_code == 200
    finally:
        security.set_user_id_function(security.client_address)


def test_job_slots_cap_per_user_and_per_instance(tmp_path):
    slots = security.JobSlots(str(tmp_path / "slots"), max_jobs=3, max_per_user=2)
    running: set[int] = set()
    counter = iter(range(1, 100))

    def spawn() -> int:
        job = next(counter)
        running.add(job)
        return job

    def alive(job: int) -> bool:
        return job in running

    assert slots.start("alice", spawn, alive) == 1
    assert slots.start("alice", spawn, alive) == 2
    with pytest.raises(security.JobLimitError, match="You already have 2 re-forecast"):
        slots.start("alice", spawn, alive)
    assert slots.start("bob", spawn, alive) == 3
    with pytest.raises(security.JobLimitError, match="its limit"):
        slots.start("carol", spawn, alive)
    running.discard(1)  # a job ends (or its process died): its slot is free again
    assert slots.start("carol", spawn, alive) == 4
    # a second registry on the same directory (another gunicorn worker) sees the same jobs
    other = security.JobSlots(str(tmp_path / "slots"), max_jobs=3, max_per_user=2)
    assert len(other.running(alive)) == 3


@pytest.mark.slow
def test_a_second_reforecast_while_one_runs_is_refused_with_a_plain_alert(
    make_app, plan_store, plan_store_root, plan, caplog
):
    """Real background jobs (DiskcacheManager processes): the per-user cap refuses the second."""
    app = make_app(plan_store, plan_store_root, max_jobs_per_user=1)
    c = app.server.test_client()
    c.get("/")
    sid = str(plan.inventory["server_id"].iat[0])

    def start(model: str):
        body = body_for(
            app, "srv-reforecast.data", {f"{ids.SRV_MODEL}.value": model, f"{ids.SRV_ID}.data": sid}
        )
        body["changedPropIds"] = [f"{ids.SRV_MODEL}.value"]
        return post(c, body)

    first = start("prophet")  # imports Prophet and fits five series: runs for seconds
    assert first.status_code == 200, first.get_data(as_text=True)
    second = start("naive")  # refused before any process starts; the model's status line says why
    assert second.status_code == 200 and "cacheKey" not in second.get_json()
    status = second.get_json()["response"][ids.SRV_MODEL_STATUS]["children"]
    assert status.startswith("You already have 1 re-forecast(s) running (at most 1 at once)")
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:  # once the first is done, a new one may start
        r = start("naive")
        if "cacheKey" in (r.get_json() or {}):
            break
        time.sleep(0.5)
    assert "cacheKey" in r.get_json()
    assert app_errors(caplog) == []


# --------------------------------------------------------------------------- malformed requests

# The malformed callback requests, hostile URLs and filter strings that were here are in the
# bad-input corpus (tests/test_bad_input_corpus.py), each with its exact message.


def test_wrong_value_types_inside_a_well_formed_request_are_sanitised(fixture_app, client, caplog):
    for value in (12345, "<script>", ["a", {"b": 1}], {"business_unit": 5}):
        body = body_for(
            fixture_app, "ov-heatmap.figure", {f"{ids.FILTERS}.data": value}, [f"{ids.FILTERS}.data"]
        )
        assert post(client, body).status_code == 200
    body = export_body(fixture_app)
    body["state"] = [{**s, "value": "<script>" if s["property"] != "data" else 7} for s in body["state"]]
    assert post(client, body).status_code == 200
    assert app_errors(caplog) == []


# --------------------------------------------------------------------------- internal details


def test_report_logs_the_detail_under_the_reference_it_returns(caplog):
    log = logging.getLogger("tests.security")
    ref = report(log, "store read failed", RuntimeError("s3://secret-bucket AccessDenied"))
    rec = caplog.records[-1]
    assert rec.levelno == logging.ERROR and rec.ref == ref and "secret-bucket" in rec.getMessage()
    assert rec.exc_info is not None
    assert (
        user_message("The store could not be read", ref) == f"The store could not be read (reference {ref})."
    )
    assert re.fullmatch(r"[0-9a-f]{8}", new_ref())


def test_a_missing_bucket_shows_users_a_reference_and_never_the_detail(
    moto_server,  # noqa: F811
    aws_env,  # noqa: F811
    tmp_path,
    caplog,
):
    from app import create_app
    from forecasting.settings import Settings

    aws_env(("testing", "testing"), moto_server.url)
    bucket = "capfc-secret-bucket-4711"
    settings = Settings(data=f"s3://{bucket}/plans", s3_endpoint_url=moto_server.url)
    app = create_app(settings, cache_type="simple", cache_dir=str(tmp_path / "cache"))
    c = app.server.test_client()
    layout = c.get("/_dash-layout").get_data(as_text=True)
    health = c.get("/healthz").get_data(as_text=True)
    ready = c.get("/readyz")
    shown = health + ready.get_data(as_text=True) + layout
    for secret in (bucket, "127.0.0.1", moto_server.url, "NoSuchBucket", "Traceback"):
        assert secret not in shown
    assert ready.status_code == 503
    refs = re.findall(r"could not be reached \(reference ([0-9a-f]{8})\)", layout)
    assert refs  # the stale banner names a reference ...
    logged = [r for r in caplog.records if getattr(r, "ref", None) == refs[0]]
    assert logged and bucket in logged[0].getMessage()  # ... under which the log has the detail


def test_a_failing_callback_shows_a_generic_alert_with_a_reference(fixture_app, client, caplog, monkeypatch):
    from callbacks import overview

    secret = "arn:aws:iam::123456789012:role/capfc AccessDenied s3:GetObject on s3://secret-bucket"

    def boom(*_a: Any, **_k: Any) -> Any:
        raise ValueError(secret)

    monkeypatch.setattr(overview, "heatmap_view", boom, raising=False)
    monkeypatch.setattr(overview, "heatmap_figure", boom, raising=False)
    body = body_for(fixture_app, "ov-heatmap.figure", {f"{ids.FILTERS}.data": {}}, [f"{ids.FILTERS}.data"])
    r = post(client, body)
    text = r.get_data(as_text=True)
    assert secret not in text and "Traceback" not in text and "ValueError" not in text
    ref = re.search(r"reference ([0-9a-f]{8})", text)
    assert ref, text[:500]
    errors = [rec for rec in caplog.records if getattr(rec, "ref", None) == ref.group(1)]
    assert errors and errors[0].levelno == logging.ERROR and secret in errors[0].getMessage()


def test_a_model_failing_in_a_reforecast_shows_a_reference_not_the_error(
    readmodel, plan, caplog, monkeypatch
):
    from callbacks import server as srv

    def boom(*_a: Any, **_k: Any) -> Any:
        raise RuntimeError("prophet at /opt/venv/lib/secret.py: s3://secret-bucket")

    monkeypatch.setattr(srv, "reforecast", boom)
    sid = str(plan.inventory["server_id"].iat[0])
    data, alert = srv.reforecast_job(readmodel, sid, "naive")
    text = json.dumps(alert.to_plotly_json(), default=str)
    assert data is None and "secret" not in text and "could not forecast this server (reference" in text
    ref = re.search(r"reference ([0-9a-f]{8})", text).group(1)
    assert any(getattr(r, "ref", None) == ref and "secret-bucket" in r.getMessage() for r in caplog.records)


def test_with_redis_every_instance_counts_against_one_rate_limit(
    redis_server,  # noqa: F811
    make_app,
    plan_store,
    plan_store_root,
):
    """Two instances sharing CAPFC_REDIS_URL: a user cannot double the limit by switching."""
    apps = [
        make_app(plan_store, plan_store_root, rate_limit="2/minute", redis_url=redis_server.url)
        for _ in range(2)
    ]
    clients = [a.server.test_client() for a in apps]
    for c in clients:
        c.get("/")
    assert post(clients[0], export_body(apps[0])).status_code == 200
    assert post(clients[1], export_body(apps[1])).status_code == 200
    r = post(clients[0], export_body(apps[0]))
    assert r.status_code == 429 and r.get_data(as_text=True).startswith("Too many export requests")
    assert any(k.startswith(b"capfc") for k in redis_server.client().keys("*"))
