"""A real redis-server (Debian's, installed by scripts/ensure-redis.sh) for the web-tier tests.

Each server runs on a free loopback port with its own temp directory and no persistence, is
started by the test that needs it and stopped (and waited for) when the test ends; nothing
depends on a system service.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    """``redis-server`` on 127.0.0.1:<free port>; ``url`` is what CAPFC_REDIS_URL takes."""

    def __init__(self) -> None:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found: run scripts/ensure-redis.sh (make test does)")
        self.dir = Path(tempfile.mkdtemp(prefix="capfc-redis-"))
        self.proc: subprocess.Popen | None = None
        for _ in range(5):  # a free port may be taken between probing and binding: try another
            self.port = _free_port()
            self.proc = subprocess.Popen(
                [
                    binary,
                    "--bind", "127.0.0.1",
                    "--port", str(self.port),
                    "--dir", str(self.dir),
                    "--save", "",
                    "--appendonly", "no",
                    "--protected-mode", "yes",
                    "--daemonize", "no",
                    "--logfile", str(self.dir / "redis.log"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            if self._wait_up():
                return
            self.stop()
        raise RuntimeError(f"redis-server did not start: {self.log()[-2000:]}")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def _wait_up(self, seconds: float = 10.0) -> bool:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if self.proc is None or self.proc.poll() is not None:
                return False
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return True
            except OSError:
                pass
            time.sleep(0.05)
        return False

    def log(self) -> str:
        path = self.dir / "redis.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def client(self):  # -> redis.Redis
        import redis

        return redis.Redis(host="127.0.0.1", port=self.port, db=0)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer()
    try:
        yield server
    finally:
        server.close()
