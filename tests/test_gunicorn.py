"""The container's command, run for real: gunicorn serves every page and the health endpoint.

The command is read from the Dockerfile's CMD and must be the one `make serve` runs, so the
container, `make serve` and this test cannot drift apart. Also checks `python -m app`.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.conftest import free_port

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
PAGES = ["/", "/servers", "/servers/srv-00031", "/servers/srv-unknown", "/no/such/page"]


def docker_cmd() -> list[str]:
    text = (ROOT / "Dockerfile").read_text()
    match = re.search(r"^CMD\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert match, "Dockerfile has no exec-form CMD"
    return json.loads(match.group(1))


def test_dockerfile_follows_the_container_rules():
    text = (ROOT / "Dockerfile").read_text()
    assert re.search(r"^ARG BASE_IMAGE=python:3\.11-slim", text, re.MULTILINE)
    assert "FROM ${BASE_IMAGE}" in text
    # dependencies are installed before the code is copied (a cached layer)
    assert text.index("COPY requirements.lock") < text.index("pip install") < text.index("COPY app/")
    assert re.search(r"^USER 10001:10001$", text, re.MULTILINE) and "useradd --system" in text
    assert "HEALTHCHECK" in text and "/healthz" in text and "ENV" in text and "PORT=8080" in text
    assert docker_cmd() == ["gunicorn", "--config", "gunicorn.conf.py", "app.wsgi:server"]
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".venv", ".git", "tests", "data"} <= set(ignored)


def test_make_serve_runs_the_container_command():
    makefile = (ROOT / "Makefile").read_text()
    recipe = makefile.split("\nserve:", 1)[1].split("\n\n", 1)[0]
    assert " ".join(docker_cmd()[1:]) in recipe and "gunicorn" in recipe
    assert "PORT=" in recipe and "CAPFC_DATA" in makefile


def _get(url: str, timeout: float = 10.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def _wait_up(url: str, proc: subprocess.Popen, seconds: float = 90.0) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise AssertionError(f"server exited with {proc.returncode}:\n{out[-3000:]}")
        try:
            if _get(url, timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"{url} did not answer within {seconds} s")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)


def _env(tmp_path: Path, data: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFC_")}
    env.update(
        CAPFC_AUTH_MODE="dev", CAPFC_DATA=str(data), TMPDIR=str(tmp_path), PYTHONPATH=str(ROOT), **extra
    )
    return env


@pytest.mark.slow
def test_gunicorn_serves_every_page_and_the_health_endpoint(plan_store_root, plan, tmp_path):
    port = free_port()
    cmd = [str(BIN / docker_cmd()[0]), *docker_cmd()[1:]]
    env = _env(tmp_path, plan_store_root, PORT=str(port), WEB_CONCURRENCY="2", GUNICORN_THREADS="2")
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_up(base + "/healthz", proc)
        status, body = _get(base + "/readyz")
        assert status == 200 and json.loads(body)["run_id"] == plan.run_id
        for path in PAGES:
            status, body = _get(base + path)
            assert status == 200 and b"_dash-renderer" in body, path
        status, layout = _get(base + "/_dash-layout")
        assert status == 200 and plan.run_id.encode() in layout
        assert _get(base + "/_dash-dependencies")[0] == 200
        assert _get(base + "/assets/10-app.css")[0] == 200
        # a callback round trip, several times so both workers answer
        payload = {
            "output": "ov-heatmap.figure",
            "outputs": {"id": "ov-heatmap", "property": "figure"},
            "inputs": [
                {
                    "id": "shell-filters",
                    "property": "data",
                    "value": {"filters": {"business_unit": ["Markets"]}},
                }
            ],
            "changedPropIds": ["shell-filters.data"],
            "state": [],
        }
        for _ in range(4):
            req = urllib.request.Request(
                base + "/_dash-update-component",
                data=json.dumps(payload).encode(),
                headers={"Content-Type": "application/json"},
            )
            with urllib.request.urlopen(req, timeout=20) as r:
                figure = json.loads(r.read())["response"]["ov-heatmap"]["figure"]
            assert figure["data"][0]["y"] == ["Markets"]
        # each worker's boot compacts the run's forecasts for the API in a child process: it
        # completes (and the server is not stopped while a child is still starting)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (
            not list(tmp_path.glob("capfc-cache-*/api-forecasts/*/meta.json"))
            or list(tmp_path.glob("capfc-child-*"))
        ):
            time.sleep(0.2)
        assert list(tmp_path.glob("capfc-cache-*/api-forecasts/*/meta.json"))
        assert not list(tmp_path.glob("capfc-child-*"))
    finally:
        _stop(proc)
    log = proc.stdout.read().decode(errors="replace")
    assert "Booting worker" in log and f"0.0.0.0:{port}" in log
    assert "Traceback" not in log


@pytest.mark.slow
def test_python_m_app_serves_on_the_configured_port(plan_store_root, tmp_path):
    port = free_port()
    env = _env(tmp_path, plan_store_root, CAPFC_PORT=str(port))
    proc = subprocess.Popen(
        [sys.executable, "-m", "app"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        _wait_up(f"http://127.0.0.1:{port}/healthz", proc)
        assert _get(f"http://127.0.0.1:{port}/")[0] == 200
    finally:
        _stop(proc)
    log = proc.stdout.read().decode(errors="replace")
    assert f"http://127.0.0.1:{port}" in log and "Debugger is active" not in log


def _raw(port: int, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
    """One request without following redirects: (status, headers, body)."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=20)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        r = conn.getresponse()
        return r.status, dict(r.getheaders()), r.read()
    finally:
        conn.close()


@pytest.mark.slow
def test_gunicorn_behind_a_tls_proxy_redirects_pins_https_and_answers_bad_requests_plainly(
    plan_store_root, tmp_path
):
    port = free_port()
    cmd = [str(BIN / docker_cmd()[0]), *docker_cmd()[1:]]
    env = _env(
        tmp_path,
        plan_store_root,
        PORT=str(port),
        WEB_CONCURRENCY="1",
        CAPFC_PROXY_HOPS="1",
        CAPFC_FORCE_HTTPS="true",
    )
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True
    )
    proxied = {
        "X-Forwarded-Proto": "https",
        "X-Forwarded-For": "203.0.113.9",
        "X-Forwarded-Host": "capfc.bank",
    }
    try:
        _wait_up(f"http://127.0.0.1:{port}/healthz", proc)  # plain HTTP health checks still answer
        status, headers, _ = _raw(port, "GET", "/risk?bu=Markets")
        assert status == 302 and headers["Location"] == f"https://127.0.0.1:{port}/risk?bu=Markets"
        status, headers, body = _raw(port, "GET", "/risk", headers=proxied)
        assert status == 200 and b"_dash-renderer" in body
        assert headers["Strict-Transport-Security"].startswith("max-age=63072000")
        assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
        assert headers["X-Frame-Options"] == "DENY" and headers["Cache-Control"] == "no-store"
        status, headers, body = _raw(
            port, "POST", "/_dash-update-component", b"", {**proxied, "Content-Type": "application/json"}
        )
        assert status == 400 and body.startswith(b"Bad request: the body is empty")
    finally:
        _stop(proc)
    log = proc.stdout.read().decode(errors="replace")
    assert "Traceback" not in log and '"level":"ERROR"' not in log
    assert re.search(r'"message":"POST /_dash-update-component 400 [0-9.]+ ms"', log)
    assert '"message":"callback request refused: empty body"' in log and '"level":"WARNING"' in log
