"""Conditional writes, compare-and-swap and the run lease: how the plan store only moves forward.

One small interface, :class:`CondIO`, with the two operations every safe publish needs:

- ``put_new(path, data)``: create an object only if it does not exist (S3: ``If-None-Match: *``;
  local: a temporary file, fsync, then ``link()``, which fails when the name exists). A published
  run's files are never overwritten.
- ``put_if(path, data, token)``: replace an object only if it is still the version read
  (S3: ``If-Match: <etag>``; local: under an ``fcntl`` lock on ``<root>/.capfc.lock``, the
  content hash compared, then a temporary file, fsync, atomic rename, fsync of the directory).

On top of them: ``runs/LATEST`` moves only to a run whose *input* is at least as new
(:func:`input_order`), and a lease (``runs/.lease``) keeps two runs from overlapping.
Both SeaweedFS (4.x) and moto's server (5.x) honour ``If-None-Match: *`` and ``If-Match`` on
PutObject (answering 412 PreconditionFailedError; moto answers 404 NoSuchKey to ``If-Match`` on a
missing key, as AWS does) — checked by tests/test_store_faults.py.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import hashlib
import json
import logging
import os
import socket
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from .base import StoreError

log = logging.getLogger(__name__)

LEASE_NAME = ".lease"
CAS_ATTEMPTS = 20


class PreconditionFailedError(StoreError):
    """A conditional write lost: the object exists (put_new) or changed since read (put_if)."""


class LeaseHeldError(StoreError):
    """Another run holds the store's lease: this one must not start (CLI exit code 5)."""


class LeaseLostError(StoreError):
    """This run's lease expired and was taken over by another run."""


class CondIO(Protocol):
    """Conditional object I/O on one backend; paths are the store's own (root-prefixed)."""

    def get(self, path: str) -> tuple[bytes, str] | None:
        """(content, version token), or None when the object does not exist."""

    def put_new(self, path: str, data: bytes) -> str:
        """Create ``path``; PreconditionFailedError if it exists. Returns the new token."""

    def put_if(self, path: str, data: bytes, token: str) -> str:
        """Replace ``path`` if still at ``token``; PreconditionFailedError otherwise."""


# --------------------------------------------------------------------------- local disk


def fsync_file(path: str) -> None:
    """Flush a file's data to the disk (a rename alone is not durable across a power cut)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str) -> None:
    """Flush a directory entry (a new or renamed name) to the disk."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _token(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()[:32]


class LocalCondIO:
    """CAS on a local directory: an fcntl lock, content tokens, fsync'd temp + rename/link."""

    def __init__(self, root: str):
        self.root = root
        self._thread_lock = threading.Lock()  # flock is per open file; serialise threads too

    def __getstate__(self) -> dict:
        # a store is handed to child processes (the web app's builds, app.readmodel.in_child):
        # the lock serialises one process's threads only, so each process gets its own
        return {"root": self.root}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["root"])

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        os.makedirs(self.root, exist_ok=True)
        with self._thread_lock:
            fd = os.open(os.path.join(self.root, ".capfc.lock"), os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # closing releases the lock (also when the process is killed)

    def get(self, path: str) -> tuple[bytes, str] | None:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise StoreError(f"cannot read {path}: {e}") from e
        return data, _token(data)

    def _tmp(self, path: str, data: bytes) -> str:
        parent = os.path.dirname(path)
        os.makedirs(parent, exist_ok=True)
        tmp = os.path.join(parent, f".tmp-{uuid.uuid4().hex}-{os.path.basename(path)}")
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        return tmp

    def put_new(self, path: str, data: bytes) -> str:
        tmp = self._tmp(path, data)
        try:
            os.link(tmp, path)  # atomic and refuses an existing name: If-None-Match on disk
        except FileExistsError:
            raise PreconditionFailedError(f"{path} already exists") from None
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        fsync_dir(os.path.dirname(path))
        return _token(data)

    def put_if(self, path: str, data: bytes, token: str) -> str:
        with self.locked():
            cur = self.get(path)
            if cur is None or cur[1] != token:
                raise PreconditionFailedError(f"{path} changed since it was read")
            tmp = self._tmp(path, data)
            os.replace(tmp, path)
            fsync_dir(os.path.dirname(path))
        return _token(data)


# --------------------------------------------------------------------------- S3


class S3CondIO:
    """CAS on S3 with conditional PutObject (``If-None-Match: *``, ``If-Match: <etag>``)."""

    def __init__(self, connection: Any, location: Any):
        self.connection = connection
        self.location = location

    def _key(self, path: str) -> str:
        bucket, _, key = path.partition("/")
        if bucket != self.location.bucket:
            raise StoreError(f"{path} is not in bucket {self.location.bucket}")
        return key

    def _fail(self, e: BaseException, path: str, action: str) -> BaseException:
        code = str((getattr(e, "response", None) or {}).get("Error", {}).get("Code", ""))
        status = (getattr(e, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        if code in ("PreconditionFailed", "ConditionalRequestConflict") or status in (412, 409):
            return PreconditionFailedError(f"s3://{path}: {code or status}")
        return self.connection.translate_boto_error(e, self.location, action)

    def get(self, path: str) -> tuple[bytes, str] | None:
        client = self.connection.client("s3")
        try:
            r = client.get_object(Bucket=self.location.bucket, Key=self._key(path))
        except Exception as e:
            code = str((getattr(e, "response", None) or {}).get("Error", {}).get("Code", ""))
            if code in ("NoSuchKey", "404"):
                return None
            raise self.connection.translate_boto_error(e, self.location, f"read {path} from") from e
        return r["Body"].read(), r["ETag"]

    def put_new(self, path: str, data: bytes) -> str:
        client = self.connection.client("s3")
        try:
            r = client.put_object(
                Bucket=self.location.bucket, Key=self._key(path), Body=data, IfNoneMatch="*"
            )
        except Exception as e:
            raise self._fail(e, path, f"write {path} to") from e
        return r["ETag"]

    def put_if(self, path: str, data: bytes, token: str) -> str:
        client = self.connection.client("s3")
        try:
            r = client.put_object(Bucket=self.location.bucket, Key=self._key(path), Body=data, IfMatch=token)
        except Exception as e:
            code = str((getattr(e, "response", None) or {}).get("Error", {}).get("Code", ""))
            if code == "NoSuchKey":  # deleted since read (moto/AWS answer 404 to If-Match)
                raise PreconditionFailedError(f"s3://{path} vanished since it was read") from e
            raise self._fail(e, path, f"write {path} to") from e
        return r["ETag"]


# --------------------------------------------------------------------------- input order


def input_as_of(info: dict, newest: str = "") -> dict:
    """The monotonic "input as-of" of a store: its write version, the data's end, the newest object."""
    return {"version": int(info.get("version") or 0), "end": str(info.get("end") or ""), "newest": newest}


def input_order(manifest: dict) -> tuple[int, str, str]:
    """How new a run's input is: (store version, data end, newest object time); compared as a tuple.

    Runs are ordered by the input they read, not by when they finished. A manifest without a
    snapshot (written before this existed) ranks by its data end only, below any versioned one.
    """
    inp = manifest.get("input") or {}
    as_of = (inp.get("snapshot") or {}).get("as_of") or {}
    if not as_of:
        return (-1, str(inp.get("end") or ""), "")
    return (int(as_of.get("version", 0)), str(as_of.get("end") or ""), str(as_of.get("newest") or ""))


# --------------------------------------------------------------------------- lease


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(t: datetime) -> str:
    """Milliseconds: an expiry cut to the second made a lease up to a second shorter than asked."""
    return t.isoformat(timespec="milliseconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def who() -> str:
    """user@host, for the message a second run reads."""
    try:
        user = getpass.getuser()
    except Exception:
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


@dataclass
class Lease:
    """A held lease: the path, the record written and the token to renew or release it with."""

    io: Any
    path: str
    run_id: str
    ttl: float
    token: str
    record: dict
    lost: bool = False
    # the run whose lease this took over because its process on this host was dead: it never
    # finished, so its unpublished files are garbage the taker removes (shards.abandon_run)
    taken_from_dead: str | None = None
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def message(self) -> str:
        return held_message(self.record)


def held_message(rec: dict) -> str:
    kind = "ingest" if str(rec.get("run_id", "")).startswith(("ingest-", "generate-")) else "run"
    return (
        f"another {kind} (id {rec.get('run_id')}, started {rec.get('started')} by {rec.get('owner')}) "
        f"holds the store until {rec.get('expires')}"
    )


def _record(run_id: str, ttl: float, *, pid: int | None, started: str | None = None) -> dict:
    now = _now()
    return {
        "run_id": run_id,
        "owner": who() + (f" pid {pid}" if pid else ""),
        "host": socket.gethostname(),
        "pid": pid,
        "started": started or _iso(now),
        "expires": _iso(now + timedelta(seconds=ttl)),
        "released": False,
    }


def _free(rec: dict | None, run_id: str) -> bool:
    """A lease record that does not stop ``run_id``: none, ours, released, expired or its process dead."""
    if rec is None or rec.get("run_id") == run_id or rec.get("released"):
        return True
    try:
        if datetime.fromisoformat(rec["expires"]) <= _now():
            return True
    except (KeyError, TypeError, ValueError):
        return True  # unreadable: take it over rather than block the store for ever
    return _holder_dead(rec)


def _holder_dead(rec: dict) -> bool:
    """The lease's process ran on this host and is gone (killed, crashed): it will never release."""
    pid = rec.get("pid")
    return bool(pid) and rec.get("host") == socket.gethostname() and not _pid_alive(int(pid))


def _parse(data: bytes) -> dict | None:
    try:
        rec = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        return None
    return rec if isinstance(rec, dict) else None


def lease_holder(io: Any, path: str) -> str | None:
    """The run id in the lease at ``path`` (released or not), None when there is none or it is
    unreadable: what a clean-up must not touch."""
    got = io.get(path)
    rec = _parse(got[0]) if got is not None else None
    return str(rec["run_id"]) if rec and rec.get("run_id") else None


def acquire_lease(io: Any, path: str, run_id: str, ttl: float, *, pid: int | None = None) -> Lease:
    """Take the lease for ``run_id`` or raise LeaseHeldError naming its holder.

    ``pid``: the holding process (a lease of a dead local process is taken over at once); None
    for a lease that spans processes (a sharded run: plan, shards and publish are different
    invocations) — it then lasts until released or expired.
    """
    for _ in range(CAS_ATTEMPTS):
        cur = io.get(path)
        rec = _parse(cur[0]) if cur else None
        started = rec.get("started") if rec and rec.get("run_id") == run_id else None
        new = _record(run_id, ttl, pid=pid, started=started)
        data = json.dumps(new, indent=2).encode()
        if cur is not None and not _free(rec, run_id):
            raise LeaseHeldError(held_message(rec or {}))
        try:
            token = io.put_new(path, data) if cur is None else io.put_if(path, data, cur[1])
        except PreconditionFailedError:
            continue  # someone else moved first: look again
        dead = None
        if rec and rec.get("run_id") not in (None, run_id) and not rec.get("released"):
            dead = str(rec["run_id"]) if _holder_dead(rec) else None
            log.warning(
                "took over the lease of run %s (%s)",
                rec.get("run_id"),
                "its process is dead" if dead else "expired",
                extra={"run_id": run_id},
            )
        return Lease(io, path, run_id, ttl, token, new, taken_from_dead=dead)
    raise StoreError(f"could not take the lease {path}: too many concurrent writers")


def renew_lease(lease: Lease) -> None:
    """Push the expiry forward; LeaseLostError if another run took the lease over meanwhile."""
    new = _record(lease.run_id, lease.ttl, pid=lease.record.get("pid"), started=lease.record["started"])
    try:
        lease.token = lease.io.put_if(lease.path, json.dumps(new, indent=2).encode(), lease.token)
    except PreconditionFailedError:
        cur = lease.io.get(lease.path)
        rec = _parse(cur[0]) if cur else None
        if rec is None or rec.get("run_id") != lease.run_id or rec.get("released"):
            lease.lost = True
            raise LeaseLostError(f"run {lease.run_id} lost its lease: {held_message(rec or {})}") from None
        lease.token = lease.io.put_if(lease.path, json.dumps(new, indent=2).encode(), cur[1])
    lease.record = new


def renew_lease_of(io: Any, path: str, run_id: str, ttl: float) -> bool:
    """Renew the lease of ``run_id`` held by another process (a shard of a sharded run).

    False when it is not held by that run (expired and taken over): the caller logs it; the
    run still publishes only if its input is at least as new as LATEST's.
    """
    cur = io.get(path)
    rec = _parse(cur[0]) if cur else None
    if rec is None or rec.get("run_id") != run_id or rec.get("released"):
        return False
    lease = Lease(io, path, run_id, ttl, cur[1], rec)
    try:
        renew_lease(lease)
    except (LeaseLostError, PreconditionFailedError):
        return False
    return True


def release_lease(io: Any, path: str, run_id: str) -> None:
    """Mark the lease released if ``run_id`` still holds it (a conditional write, never a blind one)."""
    for _ in range(CAS_ATTEMPTS):
        cur = io.get(path)
        rec = _parse(cur[0]) if cur else None
        if rec is None or rec.get("run_id") != run_id or rec.get("released"):
            return
        rec = {**rec, "released": True, "expires": _iso(_now())}
        try:
            io.put_if(path, json.dumps(rec, indent=2).encode(), cur[1])
            return
        except PreconditionFailedError:
            continue


@contextlib.contextmanager
def hold_lease(io: Any, path: str, run_id: str, ttl: float) -> Iterator[Lease]:
    """The lease for the life of this process's run, renewed every third of its ttl by a thread."""
    lease = acquire_lease(io, path, run_id, ttl, pid=os.getpid())

    def keep() -> None:
        while not lease._stop.wait(max(lease.ttl / 3, 0.2)):
            try:
                renew_lease(lease)
            except LeaseLostError as e:
                log.error("%s", e, extra={"run_id": run_id})
                return
            except StoreError as e:  # transient: try again at the next tick
                log.warning("could not renew the lease: %s", e, extra={"run_id": run_id})

    lease._thread = threading.Thread(target=keep, name="capfc-lease", daemon=True)
    lease._thread.start()
    try:
        yield lease
    finally:
        lease._stop.set()
        lease._thread.join(timeout=5)
        with contextlib.suppress(StoreError):
            release_lease(io, path, run_id)
