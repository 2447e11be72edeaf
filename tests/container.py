"""The real Docker engine for the image tests and the image benchmark.

``scripts/ensure-docker.sh`` installs and starts a private dockerd (socket below) and builds the
local base image; :func:`build_image` then builds the project's Dockerfile on it, once per
machine state: a file lock serialises pytest-xdist workers, and the layer cache makes every
build after the first one quick.
"""

from __future__ import annotations

import fcntl
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
DOCKER_HOST = os.environ.get("CAPFC_DOCKER_HOST", "unix:///run/capfc-docker/docker.sock")
BASE_IMAGE = "capfc-base:bookworm"  # built by scripts/ensure-docker.sh (tests only: trusts the host's CAs)
IMAGE = "capacity-forecaster:test"
# The base image's CA bundle: update-ca-certificates wrote the host's extra CAs into it.
BASE_CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"
APP_UID = "10001:10001"  # the image's USER; a mounted store must be writable by it
REGION = "us-east-1"

# The Lambda entry point of the contract, and the recorded EventBridge Scheduler input.
LAMBDA_HANDLER = "forecasting.aws.handlers.trigger"
SCHEDULE_EVENT = json.loads((ROOT / "tests" / "data" / "events" / "scheduler-input.json").read_text())
# As in Lambda and on a hardened task: the image read-only, only /tmp writable.
READ_ONLY = ("--read-only", "--tmpfs", "/tmp:rw,exec")


def docker(*args: str, timeout: float = 300, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run the docker client against the project's engine; output as text."""
    cmd = ["docker", "-H", DOCKER_HOST, *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise RuntimeError(
            f"{shlex.join(cmd)} exited {proc.returncode}:\n{proc.stdout[-2000:]}{proc.stderr[-3000:]}"
        )
    return proc


@contextmanager
def _locked(name: str) -> Iterator[None]:
    with open(Path(tempfile.gettempdir()) / name, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_engine() -> None:
    """Install/start the engine and the base image when missing (idempotent, < 1 s when done)."""
    proc = subprocess.run(
        ["bash", str(ROOT / "scripts" / "ensure-docker.sh")], capture_output=True, text=True, timeout=1800
    )
    if proc.returncode != 0:
        raise RuntimeError(f"scripts/ensure-docker.sh failed ({proc.returncode}):\n{proc.stderr[-3000:]}")


def _pip_config() -> dict[str, str]:
    """The host pip's effective settings (``pip config list``: files, then PIP_* env, which win)."""
    out = subprocess.run(
        [sys.executable, "-m", "pip", "config", "list"], capture_output=True, text=True, timeout=60
    ).stdout
    files: dict[str, str] = {}
    env: dict[str, str] = {}
    for line in out.splitlines():
        key, _, value = line.partition("=")
        scope, _, name = key.partition(".")
        value = value.strip().strip("'\"")
        (env if scope == ":env:" else files)[name] = value
    return {**files, **env}


def pip_build_args() -> dict[str, str]:
    """Build arguments that make pip in the build reach the package index the host's pip uses.

    Only http(s) indexes are passed (``file://`` and find-links paths are not in the build
    context). A URL with credentials is refused: build arguments show in ``docker history``.
    The host's ``cert`` becomes the base image's bundle, which holds the same extra CAs.
    """
    conf = _pip_config()
    args: dict[str, str] = {}
    urls = {
        "PIP_INDEX_URL": conf.get("index-url", "").split(),
        "PIP_EXTRA_INDEX_URL": conf.get("extra-index-url", "").split(),
    }
    for arg, values in urls.items():
        keep = [u for u in values if urlsplit(u).scheme in ("http", "https")]
        for url in keep:
            if "@" in urlsplit(url).netloc:
                raise RuntimeError(
                    f"pip's {arg} carries credentials; pass them to the build as a BuildKit secret, "
                    "not as a build argument (they would be readable in `docker history`)"
                )
        if keep:
            args[arg] = " ".join(keep)
    if conf.get("trusted-host"):
        args["PIP_TRUSTED_HOST"] = conf["trusted-host"]
    if conf.get("cert"):
        args["PIP_CERT"] = BASE_CA_BUNDLE
    if conf.get("default-timeout"):  # a slow index on a busy machine
        args["PIP_DEFAULT_TIMEOUT"] = conf["default-timeout"]
    return args


@dataclass(frozen=True)
class Build:
    image: str  # the built image's id (sha256:…)
    seconds: float
    size_bytes: int
    cached_steps: int  # build steps answered from the layer cache
    steps: int


def build_image(tag: str = IMAGE, *, no_cache: bool = False) -> Build:
    """``docker build`` of the project's Dockerfile on the local base (engine ensured first)."""
    with _locked("capfc-docker-build.lock"):
        ensure_engine()
        cmd = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}"]
        for key, value in pip_build_args().items():
            cmd += ["--build-arg", f"{key}={value}"]
        if no_cache:
            cmd.append("--no-cache")
        t0 = time.perf_counter()
        proc = docker(*cmd, "-t", tag, str(ROOT), timeout=1800)
        seconds = time.perf_counter() - t0
        # the image id, not the tag: another checkout's session may retag it meanwhile
        image_id, size = docker("image", "inspect", "--format", "{{.Id}} {{.Size}}", tag).stdout.split()
    lines = proc.stdout.splitlines()
    return Build(
        image=image_id,
        size_bytes=int(size),
        seconds=seconds,
        cached_steps=sum("Using cache" in line for line in lines),
        steps=sum(line.startswith("Step ") for line in lines),
    )


def image_config(tag: str = IMAGE) -> dict:
    return json.loads(docker("image", "inspect", tag).stdout)[0]["Config"]


def make_writable_for_app(path: Path) -> None:
    """Hand a host directory mounted as the store to the image's unprivileged user."""
    uid, gid = (int(x) for x in APP_UID.split(":"))
    if os.geteuid() == 0:
        for p in [path, *path.rglob("*")]:
            os.chown(p, uid, gid, follow_symlinks=False)
    else:  # pragma: no cover - the engine needs root here anyway
        for p in [path, *path.rglob("*")]:
            p.chmod(p.stat().st_mode | 0o777 if p.is_dir() else p.stat().st_mode | 0o666)


def web_args(port: int, store: Path, **env: str) -> list[str]:
    """``docker run`` options for the web entry point (the image's CMD) on loopback ``port``;
    ``env`` adds settings (the image sets no sign-in mode: a test chooses one, e.g.
    CAPFC_AUTH_MODE="dev")."""
    extra = [arg for k, v in env.items() for arg in ("--env", f"{k}={v}")]
    return [
        "--network", "host",
        "--env", f"PORT={port}", "--env", "WEB_CONCURRENCY=1",
        # loopback only here (the image binds 0.0.0.0 for its host's load balancer)
        "--env", f"GUNICORN_CMD_ARGS=--bind=127.0.0.1:{port}",
        "--volume", f"{store}:/data",
        *extra,
    ]  # fmt: skip


def lambda_args(runtime_address: str, store: Path) -> list[str]:
    """``docker run`` options (before the image) for the Lambda entry against a Runtime API."""
    return [
        "--network", "host", *READ_ONLY,
        "--env", f"AWS_LAMBDA_RUNTIME_API={runtime_address}",
        "--env", "AWS_LAMBDA_FUNCTION_NAME=capfc-trigger",
        "--env", "AWS_LAMBDA_FUNCTION_VERSION=$LATEST",
        "--env", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE=3008",
        "--env", "AWS_LAMBDA_LOG_GROUP_NAME=/aws/lambda/capfc-trigger",
        "--env", "AWS_LAMBDA_LOG_STREAM_NAME=2026/12/04/[$LATEST]0123456789abcdef",
        "--env", f"AWS_REGION={REGION}",
        "--env", "CAPFC_DATA=/data",
        "--volume", f"{store}:/data",
        "--entrypoint", "python",
    ]  # fmt: skip


def lambda_command() -> list[str]:
    """The Lambda entry point's command after the image (the contract's awslambdaric call)."""
    return ["-m", "awslambdaric", LAMBDA_HANDLER]


def wait_ready(base_url: str, name: str, timeout: float = 120.0) -> tuple[float, dict]:
    """Poll ``/healthz`` (alive), then ``/readyz`` (plan readable) until both answer 200.

    Returns the seconds until ``/healthz`` first answered and the ``/readyz`` body; fails as soon
    as the container exits.
    """
    t0 = time.monotonic()
    deadline = t0 + timeout
    alive: float | None = None
    body: dict = {}
    while time.monotonic() < deadline:
        state = json.loads(docker("inspect", "--format", "{{json .State}}", name).stdout)
        if not state["Running"]:
            raise AssertionError(f"the container exited ({state['ExitCode']}):\n{logs(name)}")
        path = "/healthz" if alive is None else "/readyz"
        try:
            with urllib.request.urlopen(base_url + path, timeout=2) as r:
                body = json.loads(r.read())
                if alive is None:
                    alive = time.monotonic() - t0
                    continue
                return alive, body
        except (OSError, ValueError):
            pass  # not up yet, or 503 (not ready)
        time.sleep(0.3)
    raise AssertionError(f"{base_url} not ready within {timeout:.0f} s ({body}):\n{logs(name)}")


def logs(name: str) -> str:
    proc = docker("logs", name, check=False, timeout=30)
    return (proc.stdout + proc.stderr)[-4000:]
