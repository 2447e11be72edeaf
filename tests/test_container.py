"""The image, built in a real Docker engine and started for real through its three entry points.

- web: the image's CMD (gunicorn) on ``$PORT``, polled on ``/healthz`` and ``/readyz``, then a page;
- Lambda: ``python -m awslambdaric <handler>`` against a loopback fake of the Lambda Runtime API
  (tests/lambda_runtime.py; Lambda's own service cannot run here), fed an EventBridge Scheduler
  event, with a read-only root file system and a tmpfs ``/tmp`` as in Lambda;
- batch task (Fargate / AWS Batch): ``python -m forecasting run`` against a mounted store and
  against the S3 server the tests start (SeaweedFS).

The engine and the base image come from scripts/ensure-docker.sh (run by ``make test`` and CI,
and by the fixture, idempotently); the image is built once per session (the layer cache keeps
later builds quick). Figures (build time, size, start-up, Lambda cold start) are printed; the
benchmark benchmarks/bench_image.py reports them.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from forecasting.sources import open_store
from tests.conftest import free_port
from tests.container import (
    APP_UID,
    REGION,
    ROOT,
    SCHEDULE_EVENT,
    Build,
    build_image,
    docker,
    image_config,
    lambda_args,
    lambda_command,
    logs,
    make_writable_for_app,
    pip_build_args,
    wait_ready,
    web_args,
)
from tests.lambda_runtime import FakeLambdaRuntime
from tests.oidc_provider import ALB_ARN, OidcProvider
from tests.s3server import ADMIN, SeaweedServer, seaweed

__all__ = ["seaweed"]  # fixture, imported for pytest

_names = itertools.count()


def _name(kind: str) -> str:
    return f"capfc-test-{kind}-{os.getpid()}-{next(_names)}"


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def image() -> Build:
    """The project's image, built once per session on the local debootstrap base."""
    build = build_image()
    print(
        f"\nimage {build.image[7:19]}: {build.size_bytes / 1e9:.2f} GB, built in {build.seconds:.1f} s "
        f"({build.cached_steps}/{build.steps} steps from the layer cache)"
    )
    return build


@pytest.fixture(scope="session")
def fleet_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 50-server fleet generated with the CLI on the host (no plan yet)."""
    root = tmp_path_factory.mktemp("container-fleet") / "store"
    _cli(root, "generate", "--servers", "50", "--days", "120", "--seed", "7")
    return root


@pytest.fixture(scope="session")
def planned_template(fleet_template: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same fleet with one published plan (the batch run on the host)."""
    root = tmp_path_factory.mktemp("container-planned") / "store"
    shutil.copytree(fleet_template, root)
    _cli(root, "run", "--horizon", "14", "--no-backtest")
    return root


def _cli(root: Path, *args: str) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFC_")}
    proc = subprocess.run(
        [sys.executable, "-m", "forecasting", "--data", str(root), *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]


def _store_copy(template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "store"
    shutil.copytree(template, root)
    make_writable_for_app(root)
    return root


@pytest.fixture
def containers() -> Iterator[list[str]]:
    """Names of containers a test started; removed (with their logs shown on failure) after."""
    names: list[str] = []
    yield names
    for name in names:
        docker("rm", "--force", "--volumes", name, check=False, timeout=60)


def _get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# --------------------------------------------------------------------------- the image


def test_dockerfile_is_hadolint_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    proc = subprocess.run(
        [str(hadolint), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_build_reaches_the_hosts_package_index_without_secrets(monkeypatch):
    monkeypatch.setenv("PIP_INDEX_URL", "https://pypi.mirror.example/simple")
    monkeypatch.setenv("PIP_EXTRA_INDEX_URL", "file:///opt/wheels/simple https://extra.example/simple")
    args = pip_build_args()
    assert args["PIP_INDEX_URL"] == "https://pypi.mirror.example/simple"
    assert args["PIP_EXTRA_INDEX_URL"] == "https://extra.example/simple"  # file:// is not in the build
    monkeypatch.setenv("PIP_INDEX_URL", "https://user:token@pypi.mirror.example/simple")
    with pytest.raises(RuntimeError, match="credentials"):
        pip_build_args()


@pytest.mark.slow
def test_image_is_non_root_and_carries_no_secrets(image):
    config = image_config(image.image)
    assert config["User"] == APP_UID
    env = dict(item.split("=", 1) for item in config["Env"])
    assert not [k for k in env if k.startswith(("AWS_", "PIP_INDEX", "PIP_EXTRA", "PIP_CERT", "PIP_TRUSTED"))]
    assert env["PORT"] == "8080" and env["CAPFC_DATA"] == "/data"
    assert config["Cmd"] == ["gunicorn", "--config", "gunicorn.conf.py", "app.wsgi:server"]
    listing = docker(
        "run", "--rm", "--network", "none", image.image, "sh", "-c",
        "id -u; ls -a /app; test ! -e /root/.aws && test ! -e /app/.aws && echo no-aws; "
        "ls /app/forecasting/__pycache__ | head -n 1; ls /app/forecasting/_jit_seed",
    ).stdout.split()  # fmt: skip
    assert listing[0] == "10001"
    assert (
        "tests" not in listing and ".git" not in listing and ".venv" not in listing and "data" not in listing
    )
    assert "no-aws" in listing
    assert any(name.endswith(".pyc") for name in listing)  # bytecode compiled at build time
    assert any(name.startswith("forecasting_") for name in listing)  # numba kernels compiled too
    assert image.size_bytes < 2.0e9


# numba's own counters for the packing kernels after a warm-up, and the seconds it took
_NUMBA_PROBE = (
    "import json, time; from forecasting import consolidation as c; t = time.perf_counter(); "
    "c.warm_up(); ks = (c._pack_partition, c._group_sums); print(json.dumps({'seconds': "
    "time.perf_counter() - t, 'hits': sum(sum(k.stats.cache_hits.values()) for k in ks), "
    "'misses': sum(sum(k.stats.cache_misses.values()) for k in ks)}))"
)


@pytest.mark.slow
def test_an_empty_tmp_gets_the_images_compiled_kernels(image):
    """Lambda's /tmp starts empty and the root is read-only: the kernels compiled at build time
    are still loaded from the image's seed (forecasting/jit_cache.py), not compiled again."""
    out = docker(
        "run", "--rm", "--network", "none", "--read-only", "--tmpfs", "/tmp:rw,exec",
        "--entrypoint", "python", image.image, "-c", _NUMBA_PROBE, timeout=180,
    ).stdout  # fmt: skip
    probe = json.loads(out.strip().splitlines()[-1])
    print(f"\nnumba kernels from the image's seed in an empty /tmp: {probe['seconds']:.2f} s")
    assert probe["hits"] == 2 and probe["misses"] == 0, probe


# --------------------------------------------------------------------------- 1. web


@pytest.mark.slow
def test_web_entry_point_serves_health_and_pages(image, planned_template, tmp_path, containers):
    store = _store_copy(planned_template, tmp_path)
    run_id = open_store(str(store)).latest_run_id()
    port = free_port()
    name = _name("web")
    containers.append(name)
    # behind an ALB (CAPFC_AUTH_MODE=alb): the loopback provider plays the ALB and its key endpoint
    idp = OidcProvider().start()
    try:
        auth_env = {
            "CAPFC_AUTH_MODE": "alb",
            "CAPFC_AUTH_ISSUER": idp.issuer,
            "CAPFC_AUTH_ALB_ARN": ALB_ARN,
            "CAPFC_AUTH_ALB_KEY_URL": idp.alb_key_url,
        }
        t0 = time.monotonic()
        docker("run", "--detach", "--name", name, *web_args(port, store, **auth_env), image.image)
        base = f"http://127.0.0.1:{port}"
        alive, ready = wait_ready(base, name)
        up = time.monotonic() - t0
        assert ready["status"] == "ok" and ready["run_id"] == run_id, f"{ready}\n{logs(name)}"
        assert _get(base + "/healthz") == (200, b'{"status": "ok"}')
        print(f"\nweb: /healthz answered {alive:.1f} s, /readyz with the plan {up:.1f} s after docker run")
        assert _get(base + "/", timeout=30)[0] == 401  # no signed header: not through the ALB
        signed = {"x-amzn-oidc-data": idp.alb_token()}
        status, page = _get_with(base + "/", signed)
        assert status == 200 and b"_dash-renderer" in page and b"Capacity Forecaster" in page
        status, layout = _get_with(base + "/_dash-layout", {"x-amzn-oidc-data": idp.alb_token()})
        assert status == 200 and run_id.encode() in layout and b"Pat Planner" in layout
        forged = {"x-amzn-oidc-data": idp.alb_token(key=idp.other_alb_key)}
        assert _get_with(base + "/_dash-layout", forged)[0] == 401
    finally:
        idp.stop()
    text = logs(name)
    assert "Permission denied" not in text and "Traceback" not in text, text


@pytest.mark.slow
def test_web_entry_point_refuses_to_start_without_a_sign_in_mode(image, planned_template, tmp_path):
    store = _store_copy(planned_template, tmp_path)
    proc = docker("run", "--rm", *web_args(free_port(), store), image.image, timeout=180, check=False)
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "CAPFC_AUTH_MODE is not set" in proc.stdout + proc.stderr


def _get_with(url: str, headers: dict[str, str], timeout: float = 30.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


# --------------------------------------------------------------------------- 2. Lambda


@pytest.mark.slow
def test_lambda_entry_point_runs_the_batch_for_a_schedule_event(image, fleet_template, tmp_path, containers):
    store = _store_copy(fleet_template, tmp_path)
    assert open_store(str(store)).latest_run_id() is None
    runtime = FakeLambdaRuntime()
    name = _name("lambda")
    containers.append(name)
    try:
        t0 = time.monotonic()
        docker(
            "run",
            "--detach",
            "--name",
            name,
            *lambda_args(runtime.address, store),
            image.image,
            *lambda_command(),
        )
        try:
            init = runtime.wait_for_first_next(timeout=120) - t0
        except (TimeoutError, RuntimeError) as e:
            raise AssertionError(f"{e}\n{logs(name)}") from None
        first = runtime.invoke(SCHEDULE_EVENT, timeout=300)
        assert first.outcome == "response", f"{first.body}\n{logs(name)}"
        result = first.body
        assert result["status"] == "published" and result["trigger"] == "schedule", result
        published = open_store(str(store)).latest_run_id()
        assert published is not None and result["run_id"] == published
        manifest = json.loads((store / "runs" / published / "manifest.json").read_text())
        assert manifest["run_id"] == published
        print(
            f"\nLambda cold start in the fake runtime: init {init:.1f} s (docker run → first /next), "
            f"first invocation {first.duration:.1f} s"
        )

        # the scheduler delivering the same event again: the run is keyed by its input, not rerun
        again = runtime.invoke(SCHEDULE_EVENT, timeout=120)
        assert again.outcome == "response", f"{again.body}\n{logs(name)}"
        assert again.body["status"] == "duplicate" and again.body["run_id"] == published, again.body
        assert open_store(str(store)).latest_run_id() == published

        # a malformed event: the function reports an error naming it, the runtime keeps serving
        bad = runtime.invoke({"Records": "nope"}, timeout=60)
        assert bad.outcome == "error" and bad.body["errorType"] == "EventError", bad.body
        assert "EventBridge" in bad.body["errorMessage"], bad.body
        assert open_store(str(store)).latest_run_id() == published  # nothing published for it
        # the function's logs are JSON lines carrying the invocation's request id (Powertools)
        lines = [
            json.loads(line) for line in docker("logs", name).stdout.splitlines() if line.startswith("{")
        ]
        assert any(line.get("request_id") == first.request_id for line in lines), logs(name)
        assert runtime.unknown == [] and runtime.init_errors == []
        assert json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)["Running"]
    finally:
        runtime.close()


# --------------------------------------------------------------------------- 3. batch task


def _task(image: str, *args: str, env: dict[str, str] | None = None, volume: Path | None = None):
    cmd = ["run", "--rm", "--network", "host"]
    for key, value in (env or {}).items():
        cmd += ["--env", f"{key}={value}"]
    if volume is not None:
        cmd += ["--volume", f"{volume}:/data"]
    return docker(*cmd, image, "python", "-m", "forecasting", *args, check=False, timeout=600)


@pytest.mark.slow
def test_batch_task_publishes_a_new_run_and_rejects_bad_input(image, planned_template, tmp_path):
    store = _store_copy(planned_template, tmp_path)
    before = open_store(str(store)).latest_run_id()
    t0 = time.monotonic()
    proc = _task(image.image, "run", "--horizon", "14", "--no-backtest", volume=store)
    seconds = time.monotonic() - t0
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    after = open_store(str(store)).latest_run_id()
    assert after is not None and after != before
    assert f"Run {after} published to /data" in proc.stdout
    print(f"\nbatch task: docker run → run published in {seconds:.1f} s (50 servers)")

    # bad input: exit 2, one line on stderr, nothing published
    bad = _task(image.image, "run", env={"CAPFC_HORIZON": "soon"}, volume=store)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    lines = bad.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "CAPFC_HORIZON" in lines[0], bad.stderr
    assert open_store(str(store)).latest_run_id() == after


@pytest.mark.slow
def test_batch_task_on_s3(image, fleet_template, seaweed: SeaweedServer):
    bucket = seaweed.new_bucket()
    uri = f"s3://{bucket}/capfc"
    s3 = seaweed.boto_client()
    for path in sorted(fleet_template.rglob("*")):  # the generated fleet, uploaded as is
        if path.is_file():
            s3.upload_file(str(path), bucket, f"capfc/{path.relative_to(fleet_template).as_posix()}")
    env = {
        "CAPFC_DATA": uri,
        "AWS_ACCESS_KEY_ID": ADMIN[0],
        "AWS_SECRET_ACCESS_KEY": ADMIN[1],
        "AWS_REGION": REGION,
        "AWS_ENDPOINT_URL": seaweed.url,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    proc = _task(image.image, "run", "--horizon", "14", "--no-backtest", env=env)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    listed = s3.get_object(Bucket=bucket, Key="capfc/runs/LATEST")["Body"].read().decode().strip()
    assert f"published to {uri}" in proc.stdout and listed in proc.stdout
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix=f"capfc/runs/{listed}/")["Contents"]}
    assert f"capfc/runs/{listed}/manifest.json" in keys and f"capfc/runs/{listed}/risk.parquet" in keys

    # a store that cannot be reached: exit 4 with one line naming it
    missing = _task(image.image, "run", env={**env, "CAPFC_DATA": "s3://no-such-bucket-capfc/x"})
    assert missing.returncode == 4, missing.stdout + missing.stderr
    assert "no-such-bucket-capfc" in missing.stderr.strip().splitlines()[-1]
