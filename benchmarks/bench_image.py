"""Benchmark: the container image — build time (cold and cached), size, and start-up per entry point.

    .venv/bin/python benchmarks/bench_image.py           # cold build (--no-cache) and cached build
    .venv/bin/python benchmarks/bench_image.py --quick   # cached build only

Needs the engine and the local base image from scripts/ensure-docker.sh (run first; as root it
installs and starts them). Figures, on the debootstrap base the tests use:

- build: cold (no layer cache: every Python dependency downloaded and installed again) and
  cached (nothing changed), and the image and base sizes;
- web: ``docker run`` → ``/healthz`` answers, and → ``/readyz`` (plan readable; gunicorn, one worker);
- Lambda: ``docker run`` → the runtime's first ``/next`` call (init, in the loopback fake of the
  Runtime API, tests/lambda_runtime.py), then the first invocation's duration (an EventBridge
  Scheduler event running the batch on 50 servers) and a second one (the duplicate, warm);
- batch task: ``docker run … python -m forecasting run`` on the same 50 servers, end to end.

Targets: image ≤ 1.5 GB, cached build ≤ 30 s, web ready ≤ 20 s, Lambda init ≤ 10 s. The script
always exits 0.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from forecasting.sources import open_store
from tests.conftest import free_port
from tests.container import (
    BASE_IMAGE,
    ROOT,
    SCHEDULE_EVENT,
    build_image,
    docker,
    ensure_engine,
    lambda_args,
    lambda_command,
    make_writable_for_app,
    wait_ready,
    web_args,
)
from tests.lambda_runtime import FakeLambdaRuntime

TAG = "capacity-forecaster:bench"


def _row(what: str, value: str, target: str = "") -> None:
    print(f"  {what:<58} {value:>14}   {target}")


def _cli(root: Path, *args: str) -> None:
    subprocess.run(
        [sys.executable, "-m", "forecasting", "--data", str(root), *args],
        cwd=ROOT,
        check=True,
        capture_output=True,
    )


def _size(tag: str) -> float:
    return int(docker("image", "inspect", "--format", "{{.Size}}", tag).stdout) / 1e9


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="skip the cold (--no-cache) build")
    quick = parser.parse_args().quick

    t0 = time.perf_counter()
    ensure_engine()
    print(f"image benchmark (engine and base ensured in {time.perf_counter() - t0:.1f} s)")
    if not quick:
        cold = build_image(TAG, no_cache=True)
        _row("build, cold (no layer cache)", f"{cold.seconds:.0f} s", "reported")
    cached = build_image(TAG)
    _row("build, cached (no change)", f"{cached.seconds:.1f} s", "≤ 30 s")
    _row("image size", f"{cached.size_bytes / 1e9:.2f} GB", "≤ 1.5 GB")
    _row(f"  of which the base {BASE_IMAGE}", f"{_size(BASE_IMAGE):.2f} GB", "")

    with tempfile.TemporaryDirectory(prefix="capfc-bench-image-") as tmp:
        fleet = Path(tmp) / "fleet"
        _cli(fleet, "generate", "--servers", "50", "--days", "120", "--seed", "7")
        planned = Path(tmp) / "planned"
        shutil.copytree(fleet, planned)
        _cli(planned, "run", "--horizon", "14", "--no-backtest")
        for p in (fleet, planned):
            make_writable_for_app(p)
        name = f"capfc-bench-{time.time_ns()}"

        # web
        port = free_port()
        t0 = time.monotonic()
        docker(
            "run", "--detach", "--name", f"{name}-web", *web_args(port, planned, CAPFC_AUTH_MODE="dev"), TAG
        )
        try:
            alive, _ = wait_ready(f"http://127.0.0.1:{port}", f"{name}-web")
            _row("web: docker run → /healthz answers", f"{alive:.1f} s", "")
            _row("web: docker run → /readyz (plan readable)", f"{time.monotonic() - t0:.1f} s", "≤ 20 s")
        finally:
            docker("rm", "--force", f"{name}-web", check=False)

        # Lambda in the fake Runtime API
        runtime = FakeLambdaRuntime()
        try:
            t0 = time.monotonic()
            docker(
                "run", "--detach", "--name", f"{name}-fn", *lambda_args(runtime.address, fleet), TAG, *lambda_command()
            )  # fmt: skip
            init = runtime.wait_for_first_next(120) - t0
            first = runtime.invoke(SCHEDULE_EVENT, timeout=300)
            second = runtime.invoke(SCHEDULE_EVENT, timeout=300)
            _row("Lambda: docker run → first /next (init)", f"{init:.1f} s", "≤ 10 s")
            _row(
                f"Lambda: first invocation ({first.body.get('status')}, 50 servers)",
                f"{first.duration:.1f} s",
                "",
            )
            _row(f"Lambda: second invocation ({second.body.get('status')})", f"{second.duration:.2f} s", "")
        finally:
            runtime.close()
            docker("rm", "--force", f"{name}-fn", check=False)

        # batch task
        t0 = time.monotonic()
        docker("run", "--rm", "--network", "host", "--volume", f"{planned}:/data", TAG,
               "python", "-m", "forecasting", "run", "--horizon", "14", "--no-backtest", timeout=600)  # fmt: skip
        _row("batch task: docker run → run published (50 servers)", f"{time.monotonic() - t0:.1f} s", "")
        assert open_store(str(planned)).latest_run_id()
    docker("rmi", TAG, check=False)


if __name__ == "__main__":
    main()
