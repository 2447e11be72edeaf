"""Structured logs and EMF metrics from every entry point: the CLI and gunicorn run for real,
the app's request hooks in process, a Lambda handler called with a Lambda-shaped context.

Lambda's context object is plain data (function name, memory, ARN, request id); the fake
one here carries those fields, it stands in for no service.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest

from forecasting import observability as obs
from forecasting.settings import SettingsError, load_settings
from forecasting.sources import open_store
from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
BATCH_METRICS = {
    "RunSucceeded",
    "RunFailed",
    "RunDurationSeconds",
    "SeriesForecast",
    "SeriesFailed",
    "InputAgeHours",
    "ServersAtRisk",
}


# --------------------------------------------------------------------------- helpers


def parse_lines(text: str) -> list[dict]:
    """Every non-empty line as JSON (fails on the first line that is not)."""
    out = []
    for line in text.splitlines():
        if line.strip():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                raise AssertionError(f"not a JSON line: {line!r}") from None
    return out


def emf(records: list[dict]) -> list[dict]:
    return [r for r in records if "_aws" in r]


def logs(records: list[dict]) -> list[dict]:
    return [r for r in records if "_aws" not in r]


def metric_names(blob: dict) -> set[str]:
    return {m["Name"] for d in blob["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}


def assert_log_shape(rec: dict, service: str) -> None:
    assert rec["level"] in obs.LOG_LEVELS
    assert rec["service"] == service
    assert isinstance(rec["message"], str) and rec["message"]
    when = datetime.fromisoformat(rec["timestamp"])
    assert when.utcoffset().total_seconds() == 0


def assert_emf(blob: dict) -> None:
    """The EMF envelope CloudWatch needs: namespace, dimension names present as keys, values."""
    (directive,) = blob["_aws"]["CloudWatchMetrics"]
    assert directive["Namespace"] == "CapacityForecaster"
    assert isinstance(blob["_aws"]["Timestamp"], int)
    for dims in directive["Dimensions"]:
        assert dims and all(isinstance(blob[d], str) for d in dims)
    for m in directive["Metrics"]:
        assert m["Name"] in blob and m["Unit"]


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    base = {"PATH": "/usr/bin:/bin", "HOME": str(ROOT), "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        [sys.executable, "-m", "forecasting", *args],
        cwd=ROOT,
        env={**base, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture
def json_logs():
    """configure_logging for one test, then the root logger as it was."""
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    yield obs.configure_logging("INFO", "capfc-test", "json")
    obs.flush_metrics()
    obs.clear_context()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    obs._state.fmt, obs._state.logger = "json", None
    logging.captureWarnings(False)


# --------------------------------------------------------------------------- settings


def test_log_settings_are_checked_and_case_insensitive(monkeypatch):
    monkeypatch.setenv("CAPFC_LOG_LEVEL", "debug")
    monkeypatch.setenv("CAPFC_LOG_FORMAT", "TEXT")
    s = load_settings()
    assert (s.log_level, s.log_format) == ("DEBUG", "text")
    monkeypatch.setenv("CAPFC_LOG_LEVEL", "LOUD")
    with pytest.raises(SettingsError, match="CAPFC_LOG_LEVEL"):
        load_settings()
    monkeypatch.setenv("CAPFC_LOG_LEVEL", "INFO")
    monkeypatch.setenv("CAPFC_LOG_FORMAT", "xml")
    with pytest.raises(SettingsError, match="CAPFC_LOG_FORMAT"):
        load_settings()
    assert load_settings(log_format="json").log_format == "json"


# --------------------------------------------------------------------------- in process


def test_stdlib_logger_with_extra_is_powertools_json(json_logs, capsys):
    logging.getLogger("forecasting.somewhere").info("loaded %d rows", 12, extra={"run_id": "r-1"})
    logging.getLogger("forecasting.somewhere").debug("below the level: dropped")
    try:
        raise ValueError("bad input")
    except ValueError:
        logging.getLogger("app.x").exception("it failed")
    out = capsys.readouterr()
    assert out.err == ""
    first, second = parse_lines(out.out)
    assert_log_shape(first, "capfc-test")
    assert first["message"] == "loaded 12 rows"
    assert (first["level"], first["name"], first["run_id"]) == ("INFO", "forecasting.somewhere", "r-1")
    assert list(first)[:4] == ["timestamp", "level", "service", "message"]
    assert second["level"] == "ERROR" and second["exception_name"] == "ValueError"
    assert "bad input" in second["exception"]


def test_bound_keys_follow_their_thread_only(json_logs, capsys):
    log = logging.getLogger("t")
    ready, done = threading.Event(), threading.Event()

    def other() -> None:
        ready.wait(5)
        log.info("from the other thread")
        done.set()

    t = threading.Thread(target=other)
    t.start()
    with obs.log_context(request_id="req-A", user="ann"):
        ready.set()
        done.wait(5)
        log.info("in the request")
    log.info("after the request")
    t.join()
    by_msg = {r["message"]: r for r in parse_lines(capsys.readouterr().out)}
    assert by_msg["in the request"]["request_id"] == "req-A" and by_msg["in the request"]["user"] == "ann"
    assert "request_id" not in by_msg["from the other thread"]
    assert "request_id" not in by_msg["after the request"] and "user" not in by_msg["after the request"]


def test_text_format_is_for_a_terminal_on_stderr(capsys):
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        obs.configure_logging("INFO", "capfc-test", "text")
        logging.getLogger("forecasting.cli").info("Done in 1.0 s")
        obs.emit_metrics({"RunSucceeded": 1})  # no EMF in a terminal
    finally:
        root.handlers[:], _ = saved[0], root.setLevel(saved[1])
        obs._state.fmt, obs._state.logger = "json", None
        logging.captureWarnings(False)
    out = capsys.readouterr()
    assert out.out == ""
    assert "INFO    forecasting.cli: Done in 1.0 s" in out.err and "{" not in out.err


def test_configure_logging_rejects_unknown_values():
    with pytest.raises(ValueError, match="log level"):
        obs.configure_logging("LOUD")
    with pytest.raises(ValueError, match="log format"):
        obs.configure_logging("INFO", fmt="xml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"X-Request-Id": "abc-123"}, "abc-123"),
        ({"X-Request-Id": "abc-123", "X-Amzn-Trace-Id": "Root=1-5f-abc"}, "abc-123"),
        (
            {"X-Amzn-Trace-Id": "Self=1-x;Root=1-67891233-abcdef012345678912345678"},
            "1-67891233-abcdef012345678912345678",
        ),
        ({"X-Request-Id": "x" * 129}, None),  # too long: replaced
        ({"X-Request-Id": "a b\nINFO forged"}, None),  # would forge log lines: replaced
        ({}, None),
    ],
)
def test_request_id_is_taken_from_the_caller_or_generated(headers, expected):
    got = obs.request_id_from(headers)
    if expected is None:
        assert len(got) == 32 and int(got, 16) >= 0
    else:
        assert got == expected


def test_request_metrics_are_buffered_and_every_value_is_written(json_logs, capsys):
    capsys.readouterr()
    for i in range(250):
        obs.request_metrics("/risk", 500 if i % 50 == 0 else 200, float(i))
    obs.request_metrics("/servers/<server_id>", 200, 3.0)
    obs.flush_metrics()
    blobs = emf(parse_lines(capsys.readouterr().out))
    risk = [b for b in blobs if b.get("route") == "/risk"]
    assert sum(len(b["RequestLatencyMs"]) for b in risk) == 250
    assert sorted(v for b in risk for v in b["RequestLatencyMs"]) == [float(i) for i in range(250)]
    assert sum(v for b in risk for v in b["Http5xx"]) == 5
    assert len(risk) == 3 and all(len(b["RequestLatencyMs"]) <= 99 for b in risk)
    for b in blobs:
        assert_emf(b)
        assert b["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["route", "service"], ["service"]]
        assert b["service"] == "capfc-web"
    assert obs.flush_metrics() == 0  # nothing left


def test_buffer_flushes_on_its_own(json_logs, capsys):
    buf = obs.MetricsBuffer("capfc-test", interval=0.2)
    buf.add({"RequestLatencyMs": (5.0, "Milliseconds")}, {"route": "/x"})
    deadline = time.monotonic() + 5
    seen: list[dict] = []
    while not seen and time.monotonic() < deadline:
        time.sleep(0.1)
        seen = emf(parse_lines(capsys.readouterr().out))
    assert seen and seen[0]["RequestLatencyMs"] == [5.0]


def test_failed_run_writes_run_failed_and_the_error(json_logs, capsys):
    def failing_run() -> None:
        with obs.batch_run("run-9", "schedule") as m:
            m.add("SeriesForecast", 10)
            logging.getLogger("forecasting.batch").info("working")
            raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        failing_run()
    records = parse_lines(capsys.readouterr().out)
    (blob,) = emf(records)
    assert_emf(blob)
    assert (blob["RunFailed"], blob["RunSucceeded"], blob["SeriesForecast"]) == ([1.0], [0.0], [10.0])
    assert blob["run_id"] == "run-9" and blob["trigger"] == "schedule"
    lines = logs(records)
    assert all(r["run_id"] == "run-9" and r["trigger"] == "schedule" for r in lines)
    assert any(r["level"] == "ERROR" and "disk full" in r["message"] for r in lines)
    logging.getLogger("x").info("after")
    assert "run_id" not in parse_lines(capsys.readouterr().out)[0]


# --------------------------------------------------------------------------- Lambda


@dataclass
class LambdaContext:
    """The fields of Lambda's context object that Powertools reads (plain data)."""

    aws_request_id: str
    function_name: str = "capfc-trigger"
    memory_limit_in_mb: int = 3008
    invoked_function_arn: str = "arn:aws:lambda:eu-west-1:123456789012:function:capfc-trigger"

    def get_remaining_time_in_millis(self) -> int:
        return 900_000


S3_EVENT = {
    "version": "0",
    "id": "17793124-05d4-b198-2fde-7ededc63b103",
    "detail-type": "Object Created",
    "source": "aws.s3",
    "account": "123456789012",
    "time": "2026-12-04T17:00:00Z",
    "region": "eu-west-1",
    "resources": ["arn:aws:s3:::capfc-data"],
    "detail": {
        "bucket": {"name": "capfc-data"},
        "object": {"key": "metrics/business_unit=Markets/year=2026/part-0.parquet", "size": 1024},
    },
}


@pytest.mark.slow
def test_lambda_handler_runs_the_batch_with_lambda_keys_on_every_line(
    json_logs, capsys, tmp_path, monkeypatch
):
    from forecasting.batch import run_batch
    from forecasting.schema import validate
    from forecasting.synthetic import generate_fleet

    store = open_store(str(tmp_path / "data"))
    fleet = generate_fleet(8, days=60, seed=1)
    v = validate(fleet.inventory, fleet.metrics, "daily")
    store.write_inventory(v.inventory)
    store.write_metrics(v.metrics, v.inventory, freq="daily")
    settings = load_settings(data=str(tmp_path / "data"))

    @obs.lambda_entry
    def trigger(event: dict, context) -> dict:
        manifest = run_batch(store, settings, model="naive", horizon=7, backtest=False, progress=False)
        return {"run_id": manifest["run_id"]}

    @obs.lambda_entry
    def broken(event: dict, context) -> dict:
        raise RuntimeError("state machine unreachable")

    import aws_lambda_powertools.logging.logger as powertools_logger

    # Powertools keeps "cold start" per process; another test on this worker may have invoked a handler
    monkeypatch.setattr(powertools_logger, "is_cold_start", True)
    capsys.readouterr()
    result = trigger(S3_EVENT, LambdaContext("req-0001"))
    with pytest.raises(RuntimeError, match="unreachable"):
        broken({"source": "aws.scheduler"}, LambdaContext("req-0002"))
    records = parse_lines(capsys.readouterr().out)
    run_lines = [r for r in logs(records) if r.get("function_request_id") == "req-0001"]
    assert any(r["name"] == "forecasting.batch" for r in run_lines)
    for r in run_lines:
        assert_log_shape(r, obs.SERVICE_BATCH)
        assert (r["request_id"], r["trigger"], r["run_id"]) == ("req-0001", "s3", result["run_id"])
        assert r["function_name"] == "capfc-trigger" and r["function_memory_size"] == 3008
        assert r["handler"] == "trigger" and r["cold_start"] is True
    (blob,) = emf(records)
    assert_emf(blob)
    assert metric_names(blob) == BATCH_METRICS
    assert blob["RunSucceeded"] == [1.0] and blob["trigger"] == "s3" and blob["service"] == obs.SERVICE_BATCH
    (err,) = [r for r in logs(records) if r.get("function_request_id") == "req-0002"]
    assert err["level"] == "ERROR" and err["trigger"] == "schedule" and err["cold_start"] is False
    assert err["exception_name"] == "RuntimeError"


def test_trigger_of_events():
    assert obs.trigger_of(S3_EVENT) == "s3"
    assert obs.trigger_of({"source": "aws.scheduler"}) == "schedule"
    assert obs.trigger_of({"source": "aws.events", "detail-type": "Scheduled Event"}) == "schedule"
    assert obs.trigger_of({"trigger": "stepfunctions"}) == "stepfunctions"
    assert obs.trigger_of({"trigger": "x y\nz"}) == "lambda"
    assert obs.trigger_of([]) == "lambda"


# --------------------------------------------------------------------------- app, in process


def test_app_writes_one_access_line_and_metrics_per_request(json_logs, capsys, fixture_app, readmodel):
    import callbacks.risk as risk_cb
    import callbacks.whatif as cw

    server = fixture_app.server

    @server.get("/boom")
    def boom():  # a view that fails: the 500 path
        raise RuntimeError("exploded")

    client = server.test_client()
    capsys.readouterr()
    page = client.get("/servers/srv-00031", headers={"X-Request-Id": "req-page"})
    assert page.status_code == 200 and page.headers["X-Request-Id"] == "req-page"
    payload = {
        "output": "ov-heatmap.figure",
        "outputs": {"id": "ov-heatmap", "property": "figure"},
        "inputs": [{"id": "shell-filters", "property": "data", "value": {"filters": {}}}],
        "changedPropIds": ["shell-filters.data"],
        "state": [],
    }
    update = client.post("/_dash-update-component", json=payload)
    assert update.status_code == 200 and len(update.headers["X-Request-Id"]) == 32
    assert client.get("/boom", headers={"X-Request-Id": "req-boom"}).status_code == 500
    assert client.get("/assets/no-such.css").status_code == 404
    out = cw.export_download(
        readmodel,
        "csv",
        lambda _rm, _filters, _scenario: [{"server_id": "srv-00001"}, {"server_id": "srv-00002"}],
        risk_cb.EXPORT_COLUMNS,
        title="Utilization risk",
        stem="utilization-risk",
        filters_data=None,
        scenario_data=None,
    )
    assert out is not None
    obs.flush_metrics()
    records = parse_lines(capsys.readouterr().out)
    access = {r["path"]: r for r in logs(records) if r["name"] == "app.access"}
    assert set(access) == {"/servers/srv-00031", "/_dash-update-component", "/boom", "/assets/no-such.css"}
    for r in access.values():
        assert_log_shape(r, "capfc-test")
        assert r["duration_ms"] >= 0 and r["method"] in ("GET", "POST") and r["request_id"]
        assert r["user"] == "dev-admin"  # bound by the sign-in gate (app/auth.py; dev mode here)
    assert access["/servers/srv-00031"]["route"] == "/servers/<server_id>"
    assert access["/servers/srv-00031"]["request_id"] == "req-page"
    assert (access["/servers/srv-00031"]["status"], access["/servers/srv-00031"]["level"]) == (200, "INFO")
    assert access["/_dash-update-component"]["callback"] == "ov-heatmap.figure"
    assert access["/boom"]["status"] == 500 and access["/boom"]["level"] == "ERROR"
    assert access["/assets/no-such.css"]["route"] == "/assets/<path:filename>"
    # Flask's own error line for the 500 carries the same request id
    crash = [r for r in logs(records) if r.get("exception_name") == "RuntimeError"]
    assert crash and crash[0]["request_id"] == "req-boom"
    # the export: an audit line and the ExportRows metric
    (audit,) = [r for r in logs(records) if r.get("audit")]
    assert (audit["event"], audit["export"], audit["rows"], audit["format"]) == (
        "export",
        "utilization-risk",
        2,
        "csv",
    )
    blobs = emf(records)
    for b in blobs:
        assert_emf(b)
    (export,) = [b for b in blobs if "ExportRows" in b]
    assert export["ExportRows"] == [2.0] and export["export"] == "utilization-risk"
    latency = {b["route"]: b for b in blobs if "RequestLatencyMs" in b}
    assert latency["/boom"]["Http5xx"] == [1.0] and latency["/servers/<server_id>"]["Http5xx"] == [0.0]
    (age,) = [b for b in blobs if "PlanAgeHours" in b]
    created = pd.Timestamp(readmodel.snapshot().plan.created_at)
    expected = (pd.Timestamp.now(tz="UTC") - created) / pd.Timedelta(hours=1)
    assert abs(age["PlanAgeHours"][0] - expected) < 0.1


# --------------------------------------------------------------------------- CLI, real process


@pytest.mark.slow
def test_cli_generate_and_run_write_only_json_lines(tmp_path):
    data = str(tmp_path / "data")
    gen = run_cli("--data", data, "generate", "--servers", "20", "--days", "120", "--seed", "5")
    assert gen.returncode == 0, gen.stdout + gen.stderr
    assert gen.stderr == ""
    gen_lines = parse_lines(gen.stdout)
    assert not emf(gen_lines)
    for r in gen_lines:
        assert_log_shape(r, obs.SERVICE_BATCH)
    assert any(r["message"].startswith("Done in") and "20 servers" in r["message"] for r in gen_lines)

    run = run_cli("--data", data, "run", "--horizon", "14", "--no-backtest", "--trigger", "schedule")
    assert run.returncode == 0, run.stdout + run.stderr
    assert run.stderr == ""
    records = parse_lines(run.stdout)
    store = open_store(data)
    run_id = store.latest_run_id()
    manifest = store.read_manifest(run_id)
    lines = logs(records)
    assert any(r["name"] == "forecasting.batch" and r.get("stage") == "forecast" for r in lines)
    for r in lines:
        assert_log_shape(r, obs.SERVICE_BATCH)
        assert (r["run_id"], r["trigger"]) == (run_id, "schedule"), r
    (blob,) = emf(records)
    assert_emf(blob)
    assert metric_names(blob) == BATCH_METRICS
    assert blob["_aws"]["CloudWatchMetrics"][0]["Dimensions"] == [["service"]]
    assert blob["service"] == obs.SERVICE_BATCH and blob["run_id"] == run_id
    risk = store.read_run_table(run_id, "risk")
    assert blob["RunSucceeded"] == [1.0] and blob["RunFailed"] == [0.0]
    assert blob["SeriesForecast"] == [float(manifest["input"]["series"])]
    assert blob["SeriesFailed"] == [float(manifest["failure_count"])]
    assert blob["ServersAtRisk"] == [float(risk.loc[risk["severity"] != "none", "server_id"].nunique())]
    newest_end = pd.Timestamp(manifest["input"]["end"]).tz_convert("UTC") + pd.Timedelta(days=1)
    age = (pd.Timestamp.now(tz="UTC") - newest_end) / pd.Timedelta(hours=1)
    assert abs(blob["InputAgeHours"][0] - age) < 0.5
    assert 0 < blob["RunDurationSeconds"][0] < 300


@pytest.mark.slow
def test_cli_error_stays_one_plain_line_on_stderr(tmp_path):
    done = run_cli("--data", str(tmp_path / "empty"), "run")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and done.stderr.startswith("error:")
    records = parse_lines(done.stdout)
    (failed,) = [r for r in logs(records) if r.get("exit_code") == 2]
    assert failed["level"] == "ERROR" and failed["message"] == done.stderr.strip()
    (blob,) = emf(records)
    assert blob["RunFailed"] == [1.0] and blob["RunSucceeded"] == [0.0]


@pytest.mark.slow
def test_cli_text_format_is_readable_and_answers_stay_plain(tmp_path):
    data = str(tmp_path / "data")
    env = {"CAPFC_LOG_FORMAT": "text"}
    gen = run_cli("--data", data, "generate", "--servers", "5", "--days", "40", env=env)
    assert gen.returncode == 0, gen.stderr
    assert gen.stdout == ""  # generate has no answer, only progress
    assert "INFO    forecasting.cli: Done in" in gen.stderr and '{"' not in gen.stderr
    checked = run_cli("--data", data, "validate")  # JSON logs on stderr; stdout is the report
    assert checked.returncode == 0, checked.stderr
    assert checked.stdout.startswith("Validation of") and "{" not in checked.stdout
    assert "Result: OK — 5 servers" in checked.stdout
    assert "validate" in {r.get("step") for r in parse_lines(checked.stderr)}


# --------------------------------------------------------------------------- gunicorn, real process


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=20) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.mark.slow
def test_gunicorn_access_error_and_app_lines_are_json(plan_store_root, plan, tmp_path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFC_")}
    env.update(
        CAPFC_AUTH_MODE="dev",
        CAPFC_DATA=str(plan_store_root),
        TMPDIR=str(tmp_path),
        PYTHONPATH=str(ROOT),
        PORT=str(port),
        WEB_CONCURRENCY="1",
        GUNICORN_THREADS="2",
    )
    proc = subprocess.Popen(
        [str(BIN / "gunicorn"), "--config", "gunicorn.conf.py", "app.wsgi:server"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                if _get(base + "/readyz")[0] == 200:  # the plan is loaded
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, "gunicorn did not come up"
            time.sleep(0.3)
        status, headers, _ = _get(base + "/servers/srv-00031", {"X-Request-Id": "req-from-alb"})
        assert status == 200 and headers["X-Request-Id"] == "req-from-alb"
        status, headers, _ = _get(
            base + "/risk", {"X-Amzn-Trace-Id": "Root=1-6750a1b2-0123456789abcdef01234567"}
        )
        assert status == 200 and headers["X-Request-Id"] == "1-6750a1b2-0123456789abcdef01234567"
        assert _get(base + "/assets/no-such.css")[0] == 404
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=30)
    assert stderr.decode() == ""
    records = parse_lines(stdout.decode())
    lines = logs(records)
    for r in lines:
        assert_log_shape(r, obs.SERVICE_WEB)
    # gunicorn's own lines (error log) are JSON; its access log is off (the app writes one)
    assert any(r["name"] == "gunicorn.error" and "Booting worker" in r["message"] for r in lines)
    assert not [r for r in lines if r["name"] == "gunicorn.access"]
    # the app's INFO lines are not dropped under gunicorn
    assert any(
        r["name"] == "app.readmodel" and r["level"] == "INFO" and plan.run_id in r["message"] for r in lines
    )
    access = {r["path"]: r for r in lines if r["name"] == "app.access"}
    page = access["/servers/srv-00031"]
    assert (page["route"], page["status"], page["request_id"], page["method"]) == (
        "/servers/<server_id>",
        200,
        "req-from-alb",
        "GET",
    )
    assert page["duration_ms"] > 0
    assert access["/risk"]["request_id"] == "1-6750a1b2-0123456789abcdef01234567"
    assert (access["/assets/no-such.css"]["status"], access["/assets/no-such.css"]["route"]) == (
        404,
        "/assets/<path:filename>",
    )
    assert sum(1 for r in lines if r["name"] == "app.access" and r["path"] == "/servers/srv-00031") == 1
    # request metrics were flushed when the worker stopped
    blobs = emf(records)
    for b in blobs:
        assert_emf(b)
    by_route = {}
    for b in blobs:
        if "RequestLatencyMs" in b:
            by_route.setdefault(b["route"], []).extend(b["RequestLatencyMs"])
    assert len(by_route["/servers/<server_id>"]) == 1 and len(by_route["/risk"]) == 1
    assert "/healthz" not in by_route and "/readyz" not in by_route  # probes are answered before Flask
    assert any("PlanAgeHours" in b for b in blobs)


def test_page_routes_map_urls_to_templates_under_a_prefix():
    from app.requestlog import PageRoutes

    pages = [
        {"path": "/"},
        {"path": "/risk"},
        {"path": "/servers/none", "path_template": "/servers/<server_id>"},
    ]
    routes = PageRoutes(pages, prefix="/capfc/")
    assert routes.page_rules == {"/capfc/", "/capfc/<path:path>"}
    assert routes.template("/capfc/servers/srv-00042") == "/servers/<server_id>"
    assert routes.template("/capfc/risk/") == "/risk"
    assert routes.template("/capfc/") == "/"
    assert routes.template("/capfc/servers/a/b") is None
    assert routes.template("/capfc/risk.json") is None
