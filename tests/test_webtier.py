"""A stateless web tier: liveness and readiness, and state several instances share through Redis.

Real parts throughout: Debian's ``redis-server`` (tests/redisserver.py), the container's
gunicorn command, a Celery worker started as operators start it, and Dash's own HTTP callback
protocol (``/_dash-update-component`` with the page's signed ``endId``, then polls carrying the
signed ``cacheKey`` and ``job`` handles), as the browser speaks it.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from app import HEALTH_PATH, READY_PATH, get_context
from app.background import SIGNING_SECRET_KEY, SharedRunStatus, celery_app, redis_client
from app.health import BAD_PLAN, NO_PLAN, NO_STORE
from app.readmodel import ReadModel
from callbacks.server import reforecast_job
from forecasting.settings import Settings, SettingsError, load_settings
from forecasting.sources import open_store
from tests.conftest import free_port
from tests.redisserver import RedisServer, redis_server  # noqa: F401 - the fixture

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
SERVER = "srv-00031"
REFORECAST_OUTPUT = "..srv-reforecast.data...srv-model-status.children.."
WORKER_CMD = ["celery", "-A", "app.worker", "worker", "--loglevel=INFO", "--concurrency=1"]


# --------------------------------------------------------------------------- settings


@pytest.mark.parametrize("outcome", ["finishes", "dies"])
def test_a_job_finishing_between_a_polls_two_reads_is_not_taken_as_cancelled(tmp_path, outcome):
    """Dash reads a job's result, then asks whether the job runs. A real job process that
    writes its result and exits between the two must make the poll say "running" (the next poll
    gets the result), not "cancelled" (no update: the browser stops waiting, the answer is
    lost; CI saw it under load). A job that dies without a result is still seen as ended."""
    from app.background import web_tier

    manager = web_tier(None, str(tmp_path)).manager
    key = "job-result"
    script = (
        "import diskcache, sys, time; time.sleep(0.5); "
        f"sys.exit(3) if {outcome == 'dies'!r} else diskcache.Cache({str(tmp_path / 'background')!r}).set({key!r}, 42)"
    )
    job = subprocess.Popen([sys.executable, "-c", script])  # not reaped until the end: as Dash's
    try:
        assert manager.get_result(key, job.pid) is manager.UNDEFINED  # still sleeping
        deadline = time.monotonic() + 30
        while manager_alive(job.pid) and time.monotonic() < deadline:
            time.sleep(0.05)  # the job ends now, between the poll's two reads
        assert manager.job_running(job.pid) is True  # running when read: poll again, not "cancelled"
        if outcome == "finishes":
            assert manager.get_result(key, job.pid) == 42  # the next poll has the answer
        else:  # died without a result: the next poll sees it ended
            assert manager.get_result(key, job.pid) is manager.UNDEFINED
            assert manager.job_running(job.pid) is False
    finally:
        job.kill()
        job.wait()


def manager_alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def test_redis_url_setting_is_checked_without_echoing_it(monkeypatch):
    assert load_settings().redis_url is None
    monkeypatch.setenv("CAPFC_REDIS_URL", "rediss://:s3cret-token@cache.example:6379/0")
    assert load_settings().redis_url == "rediss://:s3cret-token@cache.example:6379/0"
    monkeypatch.setenv("CAPFC_REDIS_URL", "http://user:s3cret-token@cache.example")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "CAPFC_REDIS_URL" in str(err.value) and "s3cret" not in str(err.value)
    monkeypatch.delenv("CAPFC_REDIS_URL")
    with pytest.raises(SettingsError, match="CAPFC_READY_MAX_PLAN_AGE_HOURS"):
        load_settings(ready_max_plan_age_hours=0)


# --------------------------------------------------------------------------- liveness, readiness


def test_healthz_answers_without_the_store_and_says_nothing_internal(fixture_app, monkeypatch):
    rm = get_context(fixture_app).readmodel

    def unreachable(*_a, **_k):
        raise AssertionError("liveness must not touch the store")

    monkeypatch.setattr(rm.store, "latest_run_id", unreachable)
    monkeypatch.setattr(rm.store, "read_manifest", unreachable)
    health = fixture_app.server.test_client().get(HEALTH_PATH)
    assert health.status_code == 200 and health.get_json() == {"status": "ok"}


def test_readyz_reports_the_latest_run_and_its_age(fixture_app, plan):
    started = pd.Timestamp.now(tz="UTC")
    ready = fixture_app.server.test_client().get(READY_PATH)
    body = ready.get_json()
    assert ready.status_code == 200 and set(body) == {"status", "run_id", "plan_age_hours"}
    assert body["status"] == "ok" and body["run_id"] == plan.run_id
    expected = (started - plan.created_at).total_seconds() / 3600
    assert body["plan_age_hours"] == pytest.approx(expected, abs=0.02)


def test_readyz_says_stale_past_the_maximum_age_but_stays_ready(make_app, plan_store, plan_store_root, plan):
    app = make_app(plan_store, plan_store_root, ready_max_plan_age_hours=1e-6)
    ready = app.server.test_client().get(READY_PATH)
    body = ready.get_json()
    assert ready.status_code == 200 and body["status"] == "stale" and body["run_id"] == plan.run_id
    assert body["max_plan_age_hours"] == 1e-6 and body["plan_age_hours"] > 0
    # the same plan within a generous limit is ok
    ok = make_app(plan_store, plan_store_root, ready_max_plan_age_hours=24 * 365)
    assert ok.server.test_client().get(READY_PATH).get_json()["status"] == "ok"


def test_readyz_is_503_without_a_plan(make_app, tmp_path):
    root = tmp_path / "empty"
    ready = make_app(open_store(str(root)), root).server.test_client().get(READY_PATH)
    assert ready.status_code == 503 and ready.get_json() == {"status": "unavailable", "reason": NO_PLAN}


def test_readyz_is_503_when_the_latest_plan_cannot_be_read(make_app, tmp_path, plan):
    root = tmp_path / "broken"
    (root / "runs").mkdir(parents=True)
    (root / "runs" / "LATEST").write_text(plan.run_id)  # names a run whose files are not there
    ready = make_app(open_store(str(root)), root).server.test_client().get(READY_PATH)
    assert ready.status_code == 503
    assert ready.get_json() == {"status": "unavailable", "reason": BAD_PLAN, "run_id": plan.run_id}


def test_readyz_is_503_when_the_store_is_unreachable_and_hides_why(tmp_path, caplog, monkeypatch):
    """An S3 store on a loopback port nothing listens on: boto3's real connection failure."""
    from app import create_app

    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(var, "capfc-test")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    port = free_port()  # closed again: connections are refused
    settings = Settings(data="s3://capfc-private-bucket/plans", s3_endpoint_url=f"http://127.0.0.1:{port}")
    app = create_app(settings, cache_type="simple", cache_dir=str(tmp_path / "cache"))
    client = app.server.test_client()
    with caplog.at_level("ERROR", logger="app.health"):
        ready = client.get(READY_PATH)
    assert ready.status_code == 503 and ready.get_json() == {"status": "unavailable", "reason": NO_STORE}
    text = ready.get_data(as_text=True)
    assert "capfc-private-bucket" not in text and str(port) not in text and "Error" not in text
    assert "capfc-private-bucket" in caplog.text  # the detail is in the log
    assert client.get(HEALTH_PATH).status_code == 200  # alive all the same


def test_readyz_probes_within_seconds_share_one_check(fixture_app, monkeypatch):
    rm = get_context(fixture_app).readmodel
    calls = []
    real = rm.store.latest_run_id

    def counted():
        calls.append(1)
        return real()

    monkeypatch.setattr(rm.store, "latest_run_id", counted)
    client = fixture_app.server.test_client()
    assert [client.get(READY_PATH).status_code for _ in range(5)] == [200] * 5
    assert len(calls) == 1


# --------------------------------------------------------------------------- shared state (real Redis)


def test_instances_share_one_signing_secret_that_does_not_expire(redis_server, make_app, tmp_path):  # noqa: F811
    from app import create_app

    settings = Settings(data=str(tmp_path / "data"), redis_url=redis_server.url)
    a = create_app(settings, cache_type="simple", cache_dir=str(tmp_path / "a"))
    b = create_app(settings, cache_type="simple", cache_dir=str(tmp_path / "b"))
    secret = a._get_signing_secret()
    assert secret and b._get_signing_secret() == secret
    client = redis_server.client()
    assert client.get(SIGNING_SECRET_KEY) == secret and client.ttl(SIGNING_SECRET_KEY) == -1
    # without Redis each instance signs with its own secret: the handles would not verify
    c = create_app(Settings(data=str(tmp_path / "data")), cache_type="simple", cache_dir=str(tmp_path / "c"))
    assert c._get_signing_secret() != secret


def _store_with_second_run(src: Path, dst: Path) -> tuple[Any, str, str]:
    """A copy of the fixture store and a second run id to publish into it (same tables)."""
    shutil.copytree(src, dst)
    store = open_store(str(dst))
    first = store.latest_run_id()
    assert first is not None
    return store, first, first[:-1] + ("x" if first[-1] != "x" else "y")


def _publish_copy(store: Any, first: str, second: str) -> None:
    tables = {
        n: t
        for n in ("forecasts", "risk", "recommendations", "backtest")
        if (t := store.read_run_table(first, n)) is not None
    }
    manifest = {**store.read_manifest(first), "run_id": second}
    store.publish_run(second, tables, manifest)


def test_instances_agree_on_the_current_run_after_a_publish(redis_server, plan_store_root, tmp_path):  # noqa: F811
    """Per-instance caches would show the old run on one instance and the new on another for up
    to cache_ttl_seconds; with the shared status both switch together."""
    store, first, second = _store_with_second_run(plan_store_root, tmp_path / "data")
    settings = Settings(data=str(tmp_path / "data"), cache_ttl_seconds=2)
    shared = SharedRunStatus(redis_server.client())
    a = ReadModel(open_store(settings.data), settings, shared=shared)
    b = ReadModel(open_store(settings.data), settings, shared=SharedRunStatus(redis_server.client()))
    alone = ReadModel(open_store(settings.data), settings)  # an instance without Redis
    assert a.status().run_id == first and alone.status().run_id == first
    _publish_copy(store, first, second)
    assert store.latest_run_id() == second
    # b checks after the publish: it follows the shared decision, as a does
    assert b.status().run_id == first and a.status().run_id == first
    fresh = ReadModel(open_store(settings.data), settings)  # a new instance without Redis disagrees
    assert fresh.status().run_id == second and alone.status().run_id == first
    # when the shared entry expires the first to re-check decides for all
    time.sleep(2.2)
    assert b.status().run_id == second and a.status().run_id == second
    assert redis_server.client().ttl(a._key("status")) > 0


def test_a_redis_outage_falls_back_to_the_store(plan_store_root, plan, monkeypatch):
    down = SharedRunStatus(redis_client(f"redis://127.0.0.1:{free_port()}/0"))  # nothing listens
    settings = Settings(data=str(plan_store_root))
    started = time.monotonic()
    rm = ReadModel(open_store(settings.data), settings, shared=down)
    assert rm.status().run_id == plan.run_id and not rm.status().stale
    assert time.monotonic() - started < 2  # refused at once, then Redis is left alone for a while
    monkeypatch.setattr(rm.store, "latest_run_id", lambda: pytest.fail("re-read while cached"))
    for _ in range(100):
        assert rm.status().run_id == plan.run_id  # from the local cache, not the store
    assert down.get(rm._key("status")) is None


def test_a_redis_outage_fails_a_reforecast_fast_and_the_app_recovers_without_a_restart(
    plan_store_root,
    plan,
    tmp_path,
):
    """Redis down: pages and readiness still answer, choosing a model fails within seconds (not
    Celery's ~20 s of retries per call); Redis back on the same address: jobs queue again."""
    from app import create_app

    server = RedisServer()
    server.stop()  # keep its address, with nothing listening
    try:
        settings = Settings(data=str(plan_store_root), redis_url=server.url)
        app = create_app(settings, cache_type="simple", cache_dir=str(tmp_path / "cache"))
        client = app.server.test_client()

        def choose(model: str) -> tuple[int, float, Any]:
            page = client.get(f"/servers/{SERVER}")
            assert page.status_code == 200
            match = re.search(
                rb'<script id="_dash-config" type="application/json">(.*?)</script>', page.data, re.S
            )
            end_id = json.loads(match.group(1))["end_id"]
            started = time.monotonic()
            answer = client.post(
                "/_dash-update-component?" + urllib.parse.urlencode({"endId": end_id}),
                json=reforecast_payload(model, SERVER),
            )
            return answer.status_code, time.monotonic() - started, answer.get_json(silent=True)

        status, seconds, _ = choose("naive")
        assert status == 204 and seconds < 5  # no job, no hang (the server log has the error)
        assert client.get(READY_PATH).status_code == 200
        server.proc = subprocess.Popen(
            [
                "redis-server",
                "--bind",
                "127.0.0.1",
                "--port",
                str(server.port),
                "--save",
                "",
                "--dir",
                str(server.dir),
            ],
            stdout=subprocess.DEVNULL,
        )
        assert server._wait_up()
        status, _, handles = choose("naive")
        assert status == 200 and {"cacheKey", "job"} <= set(handles)
        assert server.client().llen("capfc-background") == 1  # queued for a worker
    finally:
        server.close()


# --------------------------------------------------------------------------- two instances over HTTP


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


class DashHttp:
    """Dash's callback protocol over HTTP, as the renderer speaks it."""

    def __init__(self, base: str) -> None:
        self.base = base

    def end_id(self, path: str) -> str:
        """The signed page-load token the renderer echoes on every callback request."""
        status, body = _get(self.base + path)
        assert status == 200
        match = re.search(rb'<script id="_dash-config" type="application/json">(.*?)</script>', body, re.S)
        assert match, "no _dash-config in the page"
        return json.loads(match.group(1))["end_id"]

    def call(self, payload: dict, **query: str) -> tuple[int, dict | None]:
        url = self.base + "/_dash-update-component?" + urllib.parse.urlencode(query)
        req = urllib.request.Request(
            url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
        except urllib.error.HTTPError as e:
            return e.code, None


def reforecast_payload(model: str | None, server_id: str | None) -> dict:
    return {
        "output": REFORECAST_OUTPUT,
        "outputs": [
            {"id": "srv-reforecast", "property": "data"},
            {"id": "srv-model-status", "property": "children"},
        ],
        "inputs": [{"id": "srv-model", "property": "value", "value": model}],
        "changedPropIds": ["srv-model.value"],
        "state": [{"id": "srv-id", "property": "data", "value": server_id}],
    }


def start_reforecast(instance: DashHttp, model: str) -> tuple[str, dict]:
    """Open the server page and choose ``model``: (endId, the signed job handles)."""
    end_id = instance.end_id(f"/servers/{SERVER}")
    status, handles = instance.call(reforecast_payload(model, SERVER), endId=end_id)
    assert status == 200 and handles and {"cacheKey", "job"} <= set(handles), handles
    return end_id, handles


def poll(
    instance: DashHttp, end_id: str, handles: dict, seconds: float = 180.0
) -> tuple[int, dict | None, int]:
    """Poll as the renderer does (inputs nulled) until an answer that is not "still running"."""
    deadline = time.monotonic() + seconds
    progress = 0
    while time.monotonic() < deadline:
        status, body = instance.call(
            reforecast_payload(None, None), endId=end_id, cacheKey=handles["cacheKey"], job=handles["job"]
        )
        if status != 200 or (body and "response" in body):
            return status, body, progress
        progress += bool(body and body.get("progress"))
        time.sleep(0.3)
    raise AssertionError(f"no answer within {seconds} s")


def _env(tmp: Path, data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFC_")}
    tmp.mkdir(parents=True, exist_ok=True)  # each instance its own temp dir: its own disk caches
    env.update(CAPFC_AUTH_MODE="dev", CAPFC_DATA=str(data), TMPDIR=str(tmp), PYTHONPATH=str(ROOT), **extra)
    return env


def _spawn(cmd: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )


def _gunicorn(tmp: Path, data: Path, **extra: str) -> tuple[DashHttp, subprocess.Popen, Path]:
    port = free_port()
    env = _env(tmp, data, PORT=str(port), WEB_CONCURRENCY="1", GUNICORN_THREADS="4", **extra)
    log = tmp / "gunicorn.log"
    proc = _spawn([str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "app.wsgi:server"], env, log)
    return DashHttp(f"http://127.0.0.1:{port}"), proc, log


def _wait_ready(instance: DashHttp, proc: subprocess.Popen, log: Path, seconds: float = 120.0) -> dict:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited with {proc.returncode}:\n{log.read_text(errors='replace')[-3000:]}")
        try:
            status, body = _get(instance.base + READY_PATH, timeout=5)
            if status == 200:
                return json.loads(body)
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(
        f"{instance.base} not ready within {seconds} s:\n{log.read_text(errors='replace')[-3000:]}"
    )


def _stop(*procs: subprocess.Popen) -> None:
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def expected_reforecast(plan_store_root: Path, model: str) -> dict:
    """The same re-forecast computed in this process: what the instances must answer."""
    settings = Settings(data=str(plan_store_root))
    payload, _ = reforecast_job(ReadModel(open_store(settings.data), settings), SERVER, model)
    assert payload is not None
    return payload


@pytest.mark.slow
def test_a_reforecast_started_on_one_instance_completes_when_polled_on_another(
    redis_server,  # noqa: F811
    plan_store_root,
    plan,
    tmp_path,
):
    """Two gunicorn instances (own temp dirs, one data store) and a Celery worker share one
    Redis: Prophet is chosen on A, and B answers the polls with A's job's real result."""
    worker_log = tmp_path / "worker.log"
    worker = _spawn(
        [str(BIN / WORKER_CMD[0]), *WORKER_CMD[1:]],
        _env(tmp_path / "worker", plan_store_root, CAPFC_REDIS_URL=redis_server.url),
        worker_log,
    )
    a, proc_a, log_a = _gunicorn(tmp_path / "a", plan_store_root, CAPFC_REDIS_URL=redis_server.url)
    b, proc_b, log_b = _gunicorn(tmp_path / "b", plan_store_root, CAPFC_REDIS_URL=redis_server.url)
    try:
        expected = expected_reforecast(plan_store_root, "prophet")
        for inst, proc, log in ((a, proc_a, log_a), (b, proc_b, log_b)):
            ready = _wait_ready(inst, proc, log)
            assert ready["status"] == "ok" and ready["run_id"] == plan.run_id
        end_id, handles = start_reforecast(a, "prophet")
        started = time.monotonic()
        status, body, progress = poll(b, end_id, handles)
        seconds = time.monotonic() - started
        assert status == 200 and body is not None, (status, body)
        data = body["response"]["srv-reforecast"]["data"]
        message = body["response"]["srv-model-status"]["children"]
        assert data["server_id"] == SERVER and data["model"] == "prophet"
        assert data["forecast"] == expected["forecast"] and data["breaches"] == expected["breaches"]
        assert message.startswith("Prophet re-forecast in")
        assert progress >= 1  # the worker's progress (metric i of 5) reached B's polls too
        print(f"\nre-forecast started on A, answered on B after {seconds:.1f} s ({progress} progress polls)")
        # the job ran in the worker, not in either web instance
        ping = celery_app(redis_server.url).control.ping(timeout=5)
        assert ping, "the Celery worker does not answer"
    finally:
        _stop(proc_a, proc_b, worker)
    text = worker_log.read_text(errors="replace")
    assert re.search(r"Task background_callback_[0-9a-f]+\[[^\]]+\] succeeded", text), text[-3000:]
    for log in (log_a, log_b):
        assert "Traceback" not in log.read_text(errors="replace"), log.read_text(errors="replace")[-3000:]


@pytest.mark.slow
def test_without_the_shared_manager_another_instance_loses_the_job(plan_store_root, plan, tmp_path):
    """The failure the shared manager removes: each instance's disk cache and signing secret are
    its own, so B cannot answer a poll for A's job (Dash says "no update" and the browser stops
    waiting), while A, polled with the same handles, has the result."""
    a, proc_a, log_a = _gunicorn(tmp_path / "a", plan_store_root)
    b, proc_b, log_b = _gunicorn(tmp_path / "b", plan_store_root)
    try:
        for inst, proc, log in ((a, proc_a, log_a), (b, proc_b, log_b)):
            _wait_ready(inst, proc, log)
        end_id, handles = start_reforecast(a, "naive")
        status, body, _ = poll(b, end_id, handles)
        assert status == 204 and body is None  # "nothing to update": the job is lost on B
        status, body, _ = poll(a, end_id, handles)
        assert status == 200 and body is not None
        data = body["response"]["srv-reforecast"]["data"]
        assert (
            data["model"] == "naive"
            and data["forecast"] == expected_reforecast(plan_store_root, "naive")["forecast"]
        )
    finally:
        _stop(proc_a, proc_b)


@pytest.mark.slow
def test_the_worker_refuses_to_start_without_redis(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", "import app.worker"],
        cwd=ROOT,
        env=_env(tmp_path, tmp_path / "data"),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode != 0 and "CAPFC_REDIS_URL" in proc.stderr


# --------------------------------------------------------------------------- the job cap under Celery


def test_the_job_cap_holds_per_user_and_per_instance_under_celery_on_redis(
    redis_server,  # noqa: F811
    plan_store_root,
    plan,
    tmp_path,
    monkeypatch,
):
    """Two instances (their own cache dirs and host names) on one real Redis, Dash's Celery
    manager, no worker: started re-forecasts stay queued, so they count as running. A user's
    cap counts their jobs on every instance; an instance's cap counts the jobs it started."""
    from app import create_app, security

    def instance(name: str, **caps: int) -> Any:
        monkeypatch.setattr(security.socket, "gethostname", lambda: name)
        settings = Settings(data=str(plan_store_root), redis_url=redis_server.url, **caps)
        app = create_app(settings, cache_type="simple", cache_dir=str(tmp_path / name))
        client = app.server.test_client()
        page = client.get(f"/servers/{SERVER}")
        match = re.search(
            rb'<script id="_dash-config" type="application/json">(.*?)</script>', page.data, re.S
        )
        end_id = json.loads(match.group(1))["end_id"]
        return client, end_id

    def choose(inst: Any, user: str, model: str) -> tuple[int, Any]:
        client, end_id = inst
        security.set_user_id_function(lambda: user)
        try:
            answer = client.post(
                "/_dash-update-component?" + urllib.parse.urlencode({"endId": end_id}),
                json=reforecast_payload(model, SERVER),
            )
        finally:
            security.set_user_id_function(security.client_address)
        return answer.status_code, answer.get_json(silent=True)

    def refused(answer: tuple[int, Any]) -> str:
        status, body = answer
        assert status == 200 and "cacheKey" not in (body or {}), body
        return body["response"]["srv-model-status"]["children"]

    a = instance("instance-a", max_jobs=2, max_jobs_per_user=1)
    b = instance("instance-b", max_jobs=2, max_jobs_per_user=1)
    status, handles = choose(a, "alice", "naive")
    assert status == 200 and {"cacheKey", "job"} <= set(handles)  # queued in Celery
    assert redis_server.client().llen("capfc-background") == 1
    # per user, across instances: alice's second job is refused on the other instance too
    assert refused(choose(b, "alice", "naive")).startswith(
        "You already have 1 re-forecast(s) running (at most 1 at once)"
    )
    # per instance: a holds 2 (alice, bob); carol is refused there and served by b
    assert "cacheKey" in choose(a, "bob", "naive")[1]
    assert refused(choose(a, "carol", "naive")) == (
        "The server is running 2 re-forecasts, its limit. Try again in a minute."
    )
    assert "cacheKey" in choose(b, "carol", "naive")[1]
    assert redis_server.client().llen("capfc-background") == 3  # refused starts queued nothing
    # a job Celery no longer knows (its result expired) frees its slot after the results' lifetime
    slots = security.SharedJobSlots(redis_server.client(), "instance-a", 2, 1, max_age=0.0)
    assert slots.refusal("alice", lambda job: True) is None
