"""Load test: Locust planners against the container's gunicorn command, on loopback.

Builds a fleet and a plan with the real CLI (``python -m forecasting generate --servers N``
then ``run``; kept under ``$TMPDIR/capfc-bench-load/fleet-N`` and reused while it holds a
plan), starts ``gunicorn --config gunicorn.conf.py app.wsgi:server`` (bound to 127.0.0.1),
waits for ``/readyz``, then runs benchmarks/locustfile.py headless. Prints p50/p95/max per
route template and per Dash callback (named by its first output id) and the error count;
exits 1 on any failed request or on a traceback in the server's log.

    .venv/bin/python benchmarks/bench_load.py --quick     # 1,000 servers, 50 users, 60 s
    .venv/bin/python benchmarks/bench_load.py             # 10,000 servers, 50 users, 60 s
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
LOCUSTFILE = ROOT / "benchmarks" / "locustfile.py"
GUNICORN = ["gunicorn", "--config", "gunicorn.conf.py", "app.wsgi:server"]  # the Dockerfile's CMD


def free_port() -> int:
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def build_fleet(root: Path, servers: int) -> Path:
    """A store with a published plan at ``root``, made by the real CLI unless one is there."""
    cli = [sys.executable, "-m", "forecasting", "--data", str(root)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFC_")}
    if subprocess.run([*cli, "has-plan"], cwd=ROOT, env=env, capture_output=True).returncode == 0:
        print(f"reusing the fleet and plan in {root}")
        return root
    t0 = time.perf_counter()
    subprocess.run([*cli, "generate", "--servers", str(servers), "--force"], cwd=ROOT, env=env, check=True)
    subprocess.run([*cli, "run"], cwd=ROOT, env=env, check=True)
    print(f"built {servers:,} servers and a plan in {time.perf_counter() - t0:.0f} s")
    return root


def _status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=5) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


@contextmanager
def serve(data: Path, log: Path, *, wait_s: float = 180.0, **env_extra: str) -> Iterator[str]:
    """Run the container's gunicorn command on a free loopback port until the block ends.

    ``--bind 127.0.0.1:PORT`` on the command line overrides the config's 0.0.0.0 (the
    container's bind), so nothing listens beyond loopback. Yields the base URL once
    ``/readyz`` answers 200; the server's output goes to ``log``.
    """
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPFC_")}
    env.update(CAPFC_AUTH_MODE="dev", CAPFC_DATA=str(data), PORT=str(port), PYTHONPATH=str(ROOT))
    env.update(env_extra)
    cmd = [str(BIN / GUNICORN[0]), *GUNICORN[1:3], "--bind", f"127.0.0.1:{port}", *GUNICORN[3:]]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            cmd, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + wait_s
        while _status(base + "/readyz") != 200:
            if proc.poll() is not None:
                raise RuntimeError(f"gunicorn exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{base}/readyz not ready within {wait_s:.0f} s")
            time.sleep(0.5)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)


def run_locust(
    base: str,
    users: int,
    rate: float,
    seconds: int,
    csv_prefix: Path,
    max_tasks: int = 400,
    issuer: str | None = None,
) -> int:
    """Locust headless against ``base``; its CSVs go to ``csv_prefix``_*.csv. Returns its exit code
    (1 when any request failed). Bounded by ``-t`` and by a hard timeout on the process."""
    cmd = [
        str(BIN / "locust"),
        "-f",
        str(LOCUSTFILE),
        "--headless",
        "--host",
        base,
        "-u",
        str(users),
        "-r",
        str(rate),
        "-t",
        f"{seconds}s",
        "--stop-timeout",
        "30",
        "--csv",
        str(csv_prefix),
        "--only-summary",
        "--loglevel",
        "WARNING",
    ]
    env = {**os.environ, "LOAD_MAX_TASKS": str(max_tasks), "PYTHONPATH": str(ROOT)}
    if issuer:  # users sign in through the provider (OIDC code flow) before they browse
        env["LOAD_OIDC_ISSUER"] = issuer
    proc = subprocess.run(cmd, cwd=ROOT, env=env, timeout=seconds + 120, capture_output=True, text=True)
    Path(f"{csv_prefix}.log").write_text(proc.stdout + proc.stderr)
    if proc.returncode not in (0, 1) or not Path(f"{csv_prefix}_stats.csv").exists():
        # 1 = some requests failed; anything else: locust itself broke
        raise RuntimeError(f"locust exited {proc.returncode}:\n{(proc.stdout + proc.stderr)[-3000:]}")
    return proc.returncode


def read_stats(csv_prefix: Path) -> list[dict[str, str]]:
    """Locust's per-request-name rows (the Aggregated row left out)."""
    with open(f"{csv_prefix}_stats.csv", newline="") as f:
        return [row for row in csv.DictReader(f) if row["Name"] != "Aggregated"]


def read_failures(csv_prefix: Path) -> list[dict[str, str]]:
    with open(f"{csv_prefix}_failures.csv", newline="") as f:
        return list(csv.DictReader(f))


def read_exceptions(csv_prefix: Path) -> list[dict[str, str]]:
    """Exceptions raised in the user code (a broken payload builder counts as an error too)."""
    with open(f"{csv_prefix}_exceptions.csv", newline="") as f:
        return list(csv.DictReader(f))


@contextmanager
def identity_provider() -> Iterator[tuple[str, dict[str, str]]]:
    """The test OpenID Connect provider (tests/oidc_provider.py) on loopback, and the app
    settings for ``oidc`` mode against it: users sign in for real before they browse."""
    sys.path.insert(0, str(ROOT))
    import logging

    from tests.oidc_provider import CLIENT_ID, CLIENT_SECRET, OidcProvider

    logging.getLogger("werkzeug").setLevel(logging.WARNING)  # the provider's request lines
    idp = OidcProvider().start()
    try:
        yield (
            idp.issuer,
            {
                "CAPFC_AUTH_MODE": "oidc",
                "CAPFC_AUTH_ISSUER": idp.issuer,
                "CAPFC_AUTH_CLIENT_ID": CLIENT_ID,
                "CAPFC_AUTH_CLIENT_SECRET": CLIENT_SECRET,
                "CAPFC_SESSION_SECRET": "load-test-session-secret-" + "x" * 32,
                "CAPFC_SESSION_COOKIE_SECURE": "false",  # plain HTTP on loopback
            },
        )
    finally:
        idp.stop()


def signed_in_users(log: Path) -> dict[str, int]:
    """Requests per user in the server's JSON access lines ("-": none); probes, sign-in pages
    and the first visit's redirect to sign in are left out."""
    import json

    users: dict[str, int] = {}
    for line in log.read_text(errors="replace").splitlines():
        if not line.startswith("{"):
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            continue
        route = str(rec.get("route") or rec.get("path") or "")
        if "status" not in rec or route.startswith(("/healthz", "/readyz", "/auth/")):
            continue
        user = str(rec.get("user") or "-")
        if user == "-" and rec.get("status") == 302:
            continue  # a first visit, redirected to sign in
        users[user] = users.get(user, 0) + 1
    return users


def table(rows: list[dict[str, str]]) -> str:
    lines = [f"{'request':<50} {'count':>6} {'fail':>5} {'p50 ms':>8} {'p95 ms':>8} {'max ms':>8}"]
    for r in sorted(rows, key=lambda r: (r["Type"] != "GET", r["Name"])):
        name = f"{r['Type']} {r['Name']}"
        lines.append(
            f"{name:<50} {int(r['Request Count']):>6} {int(r['Failure Count']):>5} "
            f"{r['50%']:>8} {r['95%']:>8} {float(r['Max Response Time']):>8.0f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1,000 servers (default 10,000)")
    parser.add_argument("--servers", type=int, help="fleet size (overrides --quick)")
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--spawn-rate", type=float, default=10)
    parser.add_argument("--time", type=int, default=60, help="seconds of load")
    parser.add_argument(
        "--auth",
        choices=["oidc", "dev"],
        default="oidc",
        help="oidc: every user signs in through the test OIDC provider (default); dev: no sign-in",
    )
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()) / "capfc-bench-load")
    args = parser.parse_args(argv)
    servers = args.servers or (1_000 if args.quick else 10_000)
    args.workdir.mkdir(parents=True, exist_ok=True)
    data = build_fleet(args.workdir / f"fleet-{servers}", servers)
    out = args.workdir / f"run-{servers}"
    out.mkdir(exist_ok=True)
    log = out / "gunicorn.log"
    load = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        issuer, auth_env = stack.enter_context(identity_provider()) if args.auth == "oidc" else (None, {})
        base = stack.enter_context(serve(data, log, **auth_env))
        print(
            f"gunicorn on {base} (sign-in: {args.auth}); locust {args.users} users "
            f"(+{args.spawn_rate}/s) for {args.time} s"
        )
        run_locust(base, args.users, args.spawn_rate, args.time, out / "locust", issuer=issuer)
    rows = read_stats(out / "locust")
    failures = read_failures(out / "locust")
    exceptions = read_exceptions(out / "locust")
    errors = sum(int(r["Failure Count"]) for r in rows) + sum(int(e["Count"]) for e in exceptions)
    total = sum(int(r["Request Count"]) for r in rows)
    print(f"\n== {servers:,} servers, {args.users} users, {args.time} s; load average at start {load:.1f}")
    print(table(rows))
    print(f"requests: {total:,} ({total / args.time:.1f}/s); errors: {errors}")
    for f in failures:
        print(f"  FAILED {f['Method']} {f['Name']} ×{f['Occurrences']}: {f['Error'][:300]}")
    for e in exceptions:
        print(f"  EXCEPTION ×{e['Count']}: {e['Message'][:300]}")
    users = signed_in_users(log)
    print(
        f"signed-in users seen in the access log: {len([u for u in users if u != '-'])}; "
        f"requests without a user: {users.get('-', 0)}"
    )
    tracebacks = log.read_text(errors="replace").count("Traceback")
    if tracebacks:
        print(f"server log {log}: {tracebacks} traceback(s)")
    return 1 if errors or tracebacks or not total else 0


if __name__ == "__main__":
    raise SystemExit(main())
