"""Fault scenarios for the plan store and ingest, shared by tests/test_store_faults.py and
benchmarks/bench_faults.py: real ``python -m forecasting`` processes killed with SIGKILL, an S3
endpoint that fails, slows or goes away mid-run (tests/s3server.py's FaultProxy in front of
SeaweedFS), two runs started at once. Each scenario returns an :class:`Outcome` after checking
the invariants: nothing acknowledged is lost, LATEST names a complete run at least as new as
before, and the app's read model keeps serving the previous plan.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from forecasting.schema import validate
from forecasting.sources import Store, open_store
from forecasting.sources.commit import input_order
from forecasting.synthetic import generate_fleet
from tests.s3server import ADMIN, REGION, FaultProxy, SeaweedServer, s3_error

ROOT = Path(__file__).resolve().parents[1]
LEASE_SECONDS = 30  # runs in these scenarios renew every 10 s; a killed one is taken over at once (dead pid)


@dataclass
class Target:
    """A store and how a child process reaches it (URI + environment)."""

    kind: str  # "local" | "s3"
    uri: str
    env: dict[str, str]
    endpoint: str | None = None
    proxy: FaultProxy | None = None

    def open(self, *, via_proxy: bool = False, attempts: int = 3) -> Store:
        if self.kind == "local":
            return open_store(self.uri)
        import boto3

        session = boto3.session.Session(
            aws_access_key_id=ADMIN[0], aws_secret_access_key=ADMIN[1], region_name=REGION
        )
        url = self.proxy.url if via_proxy and self.proxy else self.endpoint
        return open_store(
            self.uri, endpoint_url=url, session=session, max_attempts=attempts, request_timeout=10
        )

    def child_env(self, *, via_proxy: bool = False) -> dict[str, str]:
        env = {**os.environ, **self.env, "PYTHONPATH": str(ROOT), "CAPFC_LEASE_SECONDS": str(LEASE_SECONDS)}
        env.pop("CAPFC_DATA", None)
        if self.kind == "s3":
            env["CAPFC_S3_ENDPOINT_URL"] = self.proxy.url if via_proxy and self.proxy else self.endpoint
        return env


def local_target(root: Path) -> Target:
    return Target("local", str(root), {})


def s3_target(server: SeaweedServer, *, proxy: bool = False) -> Target:
    bucket = server.new_bucket()
    env = {
        "AWS_ACCESS_KEY_ID": ADMIN[0],
        "AWS_SECRET_ACCESS_KEY": ADMIN[1],
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    }
    return Target(
        "s3", f"s3://{bucket}/lake", env, endpoint=server.url, proxy=FaultProxy(server.url) if proxy else None
    )


def seed_fleet(store: Store, n: int = 20, days: int = 200, seed: int = 11) -> None:
    fleet = generate_fleet(n, days=days, start="2024-06-01", seed=seed)
    v = validate(fleet.inventory, fleet.metrics, "daily")
    store.write_inventory(v.inventory)
    store.write_metrics(v.metrics, v.inventory, freq="daily")


def samples_file(store: Store, day: int, path: Path) -> tuple[Path, pd.DataFrame]:
    """Hourly CPU samples of every server for the ``day``-th day after the store's end (a new
    ingest), and the daily rows ingest must then hold (server, timestamp, cpu_p95)."""
    end = pd.Timestamp(store.read_store_info()["end"]).tz_convert("UTC").normalize()
    day0 = end + pd.Timedelta(days=day)
    servers = sorted(store.read_inventory()["server_id"])
    hours = pd.date_range(day0, periods=24, freq="h")
    rng = np.random.default_rng(day)
    frame = pd.DataFrame(
        {
            "server_id": np.repeat(servers, len(hours)),
            "timestamp": np.tile(hours.strftime("%Y-%m-%dT%H:%M:%SZ"), len(servers)),
            "metric": "cpu",
            "value": rng.uniform(5, 60, len(servers) * len(hours)).round(2),
        }
    )
    frame.to_csv(path, index=False)
    expected = (
        frame.assign(timestamp=day0).groupby(["server_id", "timestamp"], as_index=False)["value"].count()
    )
    return path, expected[["server_id", "timestamp"]]


def cli(
    target: Target, *args: str, via_proxy: bool = False, timeout: float = 600
) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "forecasting", "--data", target.uri, *args]
    return subprocess.run(
        cmd,
        env=target.child_env(via_proxy=via_proxy),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start(target: Target, *args: str, via_proxy: bool = False) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "forecasting", "--data", target.uri, *args]
    return subprocess.Popen(
        cmd,
        env=target.child_env(via_proxy=via_proxy),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


RUN_ARGS = ("run", "--horizon", "14", "--model", "fleet")


# --------------------------------------------------------------------------- invariants


def complete(store: Store, run_id: str) -> None:
    """Every table the run's manifest lists is there, readable, with its row count."""
    manifest = store.read_manifest(run_id)
    for name, rows in manifest["rows"].items():
        table = store.read_run_table(run_id, name)
        assert table is not None, f"{run_id}: {name} missing"
        assert len(table) == rows, f"{run_id}: {name} has {len(table)} rows, manifest says {rows}"


def check(store: Store, before: tuple | None, acked: pd.DataFrame | None) -> tuple[str, tuple]:
    """The invariants after a fault; returns LATEST and its input order."""
    latest = store.latest_run_id()
    assert latest is not None, "LATEST vanished"
    complete(store, latest)
    order = input_order(store.read_manifest(latest))
    if before is not None:
        assert order >= before, f"LATEST went back: {order} < {before}"
    if acked is not None and len(acked):
        have = store.read_metrics()
        keys = pd.MultiIndex.from_frame(have[["server_id", "timestamp"]])
        assert not keys.duplicated().any(), "a metrics row appears twice"
        want = pd.MultiIndex.from_frame(acked[["server_id", "timestamp"]])
        lost = want.difference(keys)
        assert len(lost) == 0, f"{len(lost)} acknowledged rows lost, e.g. {list(lost[:3])}"
    return latest, order


def run_dirs(store: Store) -> list[str]:
    """The directories under ``runs/``, published or not (an S3 prefix counts as one)."""
    import pyarrow.fs as pafs

    from forecasting.shards import object_store

    ps = object_store(store)
    infos = ps.fs.get_file_info(pafs.FileSelector(ps._p("runs"), allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.Directory)


def read_model_view(store: Store):
    """The app's read model on ``store`` (no TTL: every call re-checks LATEST)."""
    from app.readmodel import ReadModel
    from forecasting.settings import load_settings

    settings = load_settings(data=store.uri).model_copy(update={"cache_ttl_seconds": 0})
    return ReadModel(store, settings)


# --------------------------------------------------------------------------- scenarios


@dataclass
class Outcome:
    fault: str
    backend: str
    runs: int
    outcome: str
    seconds: float = 0.0
    details: list[str] = field(default_factory=list)


def kill_runs(target: Target, seed: int, points: int = 3) -> Outcome:
    """SIGKILL a real batch run at ``points`` seeded random moments; a run is then completed."""
    t0 = time.perf_counter()
    store = target.open()
    r = cli(target, *RUN_ARGS)
    assert r.returncode == 0, r.stderr[-2000:]
    full = time.perf_counter() - t0
    latest, order = check(store, None, None)
    rng = random.Random(seed)
    killed = []
    for k in range(points):
        child = start(target, *RUN_ARGS)
        at = full * (0.15 + 0.85 * (k + rng.random()) / points)  # one seeded moment in each slice of the run
        time.sleep(at)
        child.send_signal(signal.SIGKILL)
        child.communicate()
        killed.append(f"{at:.1f}s")
        latest, order = check(store, order, None)
    r = cli(target, *RUN_ARGS)  # the dead run's lease does not block the next one (dead pid)
    assert r.returncode == 0, r.stderr[-2000:]
    new, _ = check(store, order, None)
    assert new != latest or len(killed) == 0
    # the last killed run's files went with it (the next run took its dead lease over)
    left = [r for r in run_dirs(store) if r not in store.list_runs()]
    assert not left, f"directories of killed runs left under runs/: {left}"
    return Outcome(
        "kill -9 batch run",
        target.kind,
        points + 2,
        f"killed at {', '.join(killed)} of a {full:.1f} s run: LATEST always complete, never back; next run published, killed runs' files removed",
        time.perf_counter() - t0,
    )


def kill_ingests(target: Target, seed: int, workdir: Path, points: int = 3) -> Outcome:
    """SIGKILL real ingests at seeded random moments; each is re-run; nothing acknowledged is lost."""
    t0 = time.perf_counter()
    store = target.open()
    acked = store.read_metrics()[["server_id", "timestamp"]]
    path, rows = samples_file(store, 1, workdir / "day1.csv")
    r = cli(target, "ingest", str(path))
    assert r.returncode == 0, r.stderr[-2000:]
    full = time.perf_counter() - t0
    acked = pd.concat([acked, rows], ignore_index=True)
    check(store, None, acked)
    rng = random.Random(seed)
    killed = []
    for k in range(points):
        path, rows = samples_file(store, 2 + k, workdir / f"day{2 + k}.csv")
        child = start(target, "ingest", str(path))
        at = full * (0.3 + 0.7 * (k + rng.random()) / points)
        time.sleep(at)
        child.send_signal(signal.SIGKILL)
        child.communicate()
        killed.append(f"{at:.1f}s")
        check(store, None, acked)  # what ingest acknowledged before is all there
        r = cli(target, "ingest", str(path))  # the same file again: now acknowledged
        assert r.returncode == 0, r.stderr[-2000:]
        acked = pd.concat([acked, rows], ignore_index=True)
        check(store, None, acked)
    return Outcome(
        "kill -9 ingest",
        target.kind,
        2 * points + 1,
        f"killed at {', '.join(killed)} of a {full:.1f} s ingest: every acknowledged row kept, re-run completes",
        time.perf_counter() - t0,
    )


def two_runs_at_once(target: Target) -> Outcome:
    """Two runs started together: one publishes, the other exits 5 naming the holder."""
    t0 = time.perf_counter()
    store = target.open()
    before = input_order(store.read_manifest(store.latest_run_id())) if store.latest_run_id() else None
    a, b = start(target, *RUN_ARGS), start(target, *RUN_ARGS)
    outs = [(p.wait(timeout=600), p.communicate()) for p in (a, b)]
    codes = sorted(code for code, _ in outs)
    assert codes == [0, 5], f"exit codes {codes}: {[o[1][-500:] for _, o in outs]}"
    refused = next(o[1] for code, o in outs if code == 5)
    line = [ln for ln in refused.splitlines() if "holds the store until" in ln]
    assert line and line[-1].startswith("error: another run (id "), refused[-1000:]
    check(store, before, None)
    return Outcome(
        "two runs started at once",
        target.kind,
        2,
        "one published; the other exit 5: " + line[-1][len("error: ") :][:60] + "…",
        time.perf_counter() - t0,
    )


def _mid_run(target: Target, fault: Callable[[], None], *, after: float) -> subprocess.CompletedProcess:
    child = start(target, *RUN_ARGS, via_proxy=True)
    time.sleep(after)
    fault()
    out, err = child.communicate(timeout=600)
    return subprocess.CompletedProcess(child.args, child.returncode, out, err)


def s3_faults(target: Target, full: float) -> list[Outcome]:
    """500s (brief and sustained), a slow endpoint and the endpoint stopped, each mid-run."""
    assert target.proxy is not None
    proxy = target.proxy
    store = target.open()
    outcomes = []
    rm = read_model_view(target.open(via_proxy=True, attempts=2))
    shown = rm.snapshot().plan.run_id

    # a few 500s mid-run: retries with backoff absorb them and the run publishes
    t0 = time.perf_counter()
    before = check(store, None, None)[1]
    r = _mid_run(
        target, lambda: proxy.inject(*s3_error("InternalError", "boom", 500)[:2], times=3), after=full / 2
    )
    assert r.returncode == 0, r.stderr[-2000:]
    latest, before = check(store, before, None)
    outcomes.append(
        Outcome("S3 500s ×3 mid-run", "s3", 1, "retried; run published", time.perf_counter() - t0)
    )

    # slow endpoint (+150 ms per request) for the whole run
    t0 = time.perf_counter()
    proxy.delay = 0.15
    r = _mid_run(target, lambda: None, after=0)
    proxy.delay = 0.0
    assert r.returncode == 0, r.stderr[-2000:]
    latest, before = check(store, before, None)
    outcomes.append(
        Outcome("S3 slowed (+150 ms/request)", "s3", 1, "run published, slower", time.perf_counter() - t0)
    )

    # 500s from mid-run on: the run fails with exit 4, LATEST stays, the app keeps its plan
    t0 = time.perf_counter()
    shown = rm.snapshot().plan.run_id
    r = _mid_run(
        target, lambda: proxy.inject(*s3_error("InternalError", "down", 500)[:2], times=10**6), after=full / 2
    )
    assert r.returncode == 4, (r.returncode, r.stderr[-2000:])
    # the 500s may start in any step (the input snapshot, a read, the publish): each says the store failed
    assert any(m in r.stderr for m in ("S3 unavailable", "could not", "cannot list the input")), r.stderr[
        -1000:
    ]
    snap = rm.snapshot()
    assert snap.plan is not None and snap.plan.run_id == shown and snap.status.stale and snap.status.message
    proxy.reset()
    assert check(store, before, None)[0] == latest
    outcomes.append(
        Outcome(
            "S3 500s from mid-run on",
            "s3",
            1,
            "run exit 4, LATEST unchanged; app served the previous plan with a notice",
            time.perf_counter() - t0,
        )
    )

    # the endpoint stops mid-run
    t0 = time.perf_counter()
    r = _mid_run(target, proxy.stop, after=full / 2)
    assert r.returncode == 4, (r.returncode, r.stderr[-2000:])
    snap = rm.snapshot()
    assert snap.plan is not None and snap.plan.run_id == shown and snap.status.stale
    notice = snap.status.message
    assert check(store, before, None)[0] == latest
    r = cli(target, *RUN_ARGS)  # the server is back (direct endpoint): the next run publishes
    assert r.returncode == 0, r.stderr[-2000:]
    check(store, before, None)
    outcomes.append(
        Outcome(
            "S3 endpoint stopped mid-run",
            "s3",
            2,
            "run exit 4, LATEST unchanged, app notice: " + (notice or "")[:48] + "…; next run published",
            time.perf_counter() - t0,
        )
    )
    return outcomes


def workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="capfc-faults-"))
