"""Retention: which published runs the clean-up removes, and how a reader keeps its run.

Rules (:func:`plan_cleanup`, pure): keep the newest ``keep_runs`` runs (run ids sort by time),
and always keep the run LATEST names, every signed-off run, and every run *being read*.

**Being read** is an explicit *read lease*: a reader (the web app for the run it shows, the
report pack, a diff) creates ``readers/<run_id>/<uuid>.json`` holding an expiry, then checks the
run still has its manifest, reads, and deletes the lease (or lets it expire; the app renews the
one of its current run). A run with an unexpired lease is not removed. Time-based guesses
("keep runs younger than N minutes") fail for the reader that opened an old run (a diff against
last quarter's plan, the app still serving the previous run until its cache re-checks LATEST).

The race between a reader arriving and the clean-up deleting is closed by a handshake, relying on
the store's read-after-write consistency (local disk; S3 is strongly consistent for PUT, GET and
LIST): the clean-up (1) checks leases and sign-offs, (2) *hides* the run by deleting its manifest
(readers and ``list_runs`` then treat it as absent), (3) checks leases and sign-offs again: one
that appeared meanwhile means a reader or a sign-off saw the manifest before (2), so the manifest
is put back and the run kept; otherwise (4) the run's files are deleted. A reader writes its lease
*before* reading the manifest, so either the clean-up's second look sees the lease, or the reader
finds no manifest and reports the run as gone — never half a run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow.fs as pafs

from ..sources.base import RUN_ID_RE, NoRunError, Store, StoreError, check_run_id
from ..sources.commit import PreconditionFailedError, lease_holder, who
from .decisions import delete_if_present, signed_off_runs

log = logging.getLogger(__name__)

READERS_DIR = "readers"
DEFAULT_READ_TTL = 900.0  # a reader that crashed blocks clean-up of its run at most this long
# A run directory without a manifest (a run that died on another host, or whose lease expired)
# untouched this long is an orphan: no run lasts a day, and nothing ever reads it.
ORPHAN_AFTER = timedelta(hours=24)


def _object_store(store: Store):
    from ..shards import object_store

    return object_store(store)


def _now() -> datetime:
    return datetime.now(UTC)


# --------------------------------------------------------------------------- read leases


def _lease_dir(ps: Any, run_id: str) -> str:
    return ps._p(READERS_DIR, check_run_id(run_id))


def take_read_lease(
    store: Store, run_id: str, ttl: float = DEFAULT_READ_TTL, reader: str | None = None
) -> str:
    """Create a read lease on ``run_id`` and return its path; NoRunError when the run is gone.

    The lease is written before the manifest is checked (see the module's handshake)."""
    ps = _object_store(store)
    path = f"{_lease_dir(ps, run_id)}/{uuid.uuid4().hex}.json"
    write_read_lease(store, path, ttl, reader)
    try:
        store.read_manifest(run_id)
    except StoreError:
        release_read_lease(store, path)
        raise NoRunError(
            f"run {run_id} is not in {store.uri} (removed by clean-up, or never published)"
        ) from None
    return path


def write_read_lease(store: Store, path: str, ttl: float, reader: str | None = None) -> None:
    """(Re)write a read lease's expiry: the app renews the lease of the run it shows."""
    ps = _object_store(store)
    rec = {
        "reader": reader or who(),
        "expires": (_now() + timedelta(seconds=ttl)).isoformat(timespec="milliseconds"),
    }
    data = json.dumps(rec).encode()
    got = ps.cond.get(path)
    try:
        if got is None:
            ps.cond.put_new(path, data)
        else:
            ps.cond.put_if(path, data, got[1])
    except PreconditionFailedError:
        pass  # renewed by another thread of this reader meanwhile: the newer expiry stands


def release_read_lease(store: Store, path: str) -> None:
    ps = _object_store(store)
    try:
        ps.fs.delete_file(path)
    except OSError as e:
        if not isinstance(e, FileNotFoundError):
            log.warning("could not release read lease %s: %s (it expires by itself)", path, e)


@contextlib.contextmanager
def reading(
    store: Store, run_id: str, ttl: float = DEFAULT_READ_TTL, reader: str | None = None
) -> Iterator[str]:
    """``with reading(store, run_id): …`` — the run is kept from clean-up while the block reads it."""
    path = take_read_lease(store, run_id, ttl, reader)
    try:
        yield path
    finally:
        release_read_lease(store, path)


def live_readers(store: Store, run_id: str, now: datetime | None = None) -> list[dict]:
    """The unexpired read leases on a run (an unreadable lease counts as live until it is old)."""
    ps = _object_store(store)
    now = now or _now()
    try:
        infos = ps.fs.get_file_info(pafs.FileSelector(_lease_dir(ps, run_id), allow_not_found=True))
    except OSError as e:
        raise StoreError(f"cannot list the read leases of run {run_id}: {e}") from e
    live = []
    for info in infos:
        if info.type != pafs.FileType.File or not info.base_name.endswith(".json"):
            continue
        got = ps.cond.get(info.path)
        if got is None:
            continue
        try:
            rec = json.loads(got[0])
            expires = datetime.fromisoformat(rec["expires"])
        except (ValueError, KeyError, TypeError):
            mtime = info.mtime
            if mtime is not None and (now - mtime.astimezone(UTC)).total_seconds() > DEFAULT_READ_TTL:
                continue
            live.append({"path": info.path, "reader": "?", "expires": "?"})
            continue
        if expires > now:
            live.append({"path": info.path, **rec})
    return live


def _prune_leases(store: Store, run_id: str) -> None:
    ps = _object_store(store)
    with contextlib.suppress(OSError, FileNotFoundError):
        ps.fs.delete_dir(_lease_dir(ps, run_id))


# --------------------------------------------------------------------------- the plan


@dataclass
class CleanupPlan:
    """What a clean-up keeps and removes, and why each run is kept."""

    remove: list[str] = field(default_factory=list)
    keep: dict[str, str] = field(default_factory=dict)  # run id -> reason


def plan_cleanup(
    runs: list[str],
    *,
    keep_runs: int,
    latest: str | None,
    signed_off: set[str],
    being_read: set[str],
) -> CleanupPlan:
    """Pure: keep the newest ``keep_runs`` runs, LATEST, signed-off and being-read runs."""
    if keep_runs < 1:
        raise ValueError("keep_runs must be at least 1")
    out = CleanupPlan()
    newest = set(sorted(runs)[-keep_runs:])
    for run in sorted(runs):
        if run == latest:
            out.keep[run] = "LATEST"
        elif run in signed_off:
            out.keep[run] = "signed off"
        elif run in newest:
            out.keep[run] = f"one of the newest {keep_runs}"
        elif run in being_read:
            out.keep[run] = "being read"
        else:
            out.remove.append(run)
    return out


@dataclass
class CleanupResult:
    removed: list[str]
    kept: dict[str, str]
    dry_run: bool = False
    orphans: list[str] = field(default_factory=list)  # unpublished run directories removed

    def lines(self) -> list[str]:
        verb = "would remove" if self.dry_run else "removed"
        out = [f"{verb} {len(self.removed)} run(s), kept {len(self.kept)}"]
        out += [f"  {verb}: {r}" for r in self.removed]
        out += [f"  kept {r}: {why}" for r, why in sorted(self.kept.items())]
        out += [f"  {verb} the files of unpublished run {r} (untouched for a day)" for r in self.orphans]
        return out


def clean_runs(
    store: Store, keep_runs: int, *, dry_run: bool = False, now: datetime | None = None
) -> CleanupResult:
    """Remove the published runs the retention rules do not keep (see the module docstring),
    and orphans (:func:`_sweep_orphans`). ``keep_runs`` 0 keeps every published run."""
    ps = _object_store(store)  # the Parquet layout (an Athena store's S3 tables)
    runs = ps.list_runs()
    latest = ps.latest_run_id()
    signed = signed_off_runs(store)
    if keep_runs:
        candidates = plan_cleanup(
            runs, keep_runs=keep_runs, latest=latest, signed_off=signed, being_read=set()
        )
    else:
        candidates = CleanupPlan(keep=dict.fromkeys(runs, "every run kept (keep_runs 0)"))
    kept = dict(candidates.keep)
    removed: list[str] = []
    for run in candidates.remove:
        if live_readers(store, run, now):
            kept[run] = "being read"
            continue
        if dry_run:
            removed.append(run)
            continue
        why = _remove_run(store, ps, run, now)
        if why:
            kept[run] = why
        else:
            removed.append(run)
    if removed and not dry_run:
        log.info("clean-up removed %d run(s), kept %d", len(removed), len(kept), extra={"removed": removed})
    orphans = _sweep_orphans(store, ps, set(runs), latest, signed, dry_run, now or _now())
    return CleanupResult(removed, kept, dry_run, orphans)


def _sweep_orphans(
    store: Store,
    ps: Any,
    published: set[str],
    latest: str | None,
    signed: set[str],
    dry_run: bool,
    now: datetime,
) -> list[str]:
    """Remove run directories that never got a manifest and whose newest file is older than
    ORPHAN_AFTER: what a run that died leaves when no run took its lease over from its dead
    process (another host, a Lambda that timed out, an expired lease). The run holding the
    store's lease, LATEST, signed-off and read-leased runs are never touched (a run hidden for
    a moment by another clean-up's handshake has its manifest back or is gone)."""
    try:
        infos = ps.fs.get_file_info(pafs.FileSelector(ps._p("runs"), allow_not_found=True))
    except OSError as e:
        raise StoreError(f"cannot list the runs of {store.uri}: {e}") from e
    holder = lease_holder(ps.cond, ps.lease_path())
    swept = []
    for info in infos:
        run = info.base_name
        if info.type != pafs.FileType.Directory or run in published or run in (latest, holder):
            continue
        if not RUN_ID_RE.match(run):
            continue  # not a run's directory: not ours to remove
        files = ps.fs.get_file_info(pafs.FileSelector(info.path, recursive=True))
        stamps = [f.mtime for f in (*files, info) if f.mtime is not None]  # an empty directory: its own
        if not stamps or now - max(stamps).astimezone(UTC) < ORPHAN_AFTER:
            continue
        if run in signed or live_readers(store, run, now) or ps._exists(ps._p("runs", run, "manifest.json")):
            continue
        if not dry_run:
            with contextlib.suppress(FileNotFoundError):
                ps.fs.delete_dir(info.path)
            log.warning("removed the files of unpublished run %s (untouched for a day)", run)
        swept.append(run)
    return swept


def _remove_run(store: Store, ps: Any, run: str, now: datetime | None) -> str | None:
    """The handshake: hide (manifest away), look again, then delete or put the manifest back.
    Returns why the run was kept after all, or None when removed."""
    manifest = ps._p("runs", run, "manifest.json")
    got = ps.cond.get(manifest)
    if got is None:
        return "no manifest (not published)"
    if ps.latest_run_id() == run:
        return "LATEST"
    delete_if_present(ps, manifest)
    reason = None
    if live_readers(store, run, now):
        reason = "being read"
    elif run in signed_off_runs(store):
        reason = "signed off"
    elif ps.latest_run_id() == run:  # LATEST moves only forward, but never bet on it
        reason = "LATEST"
    if reason:
        with contextlib.suppress(PreconditionFailedError):
            ps.cond.put_new(manifest, got[0])
        log.info("run %s kept after all: %s", run, reason)
        return reason
    try:
        ps.fs.delete_dir(ps._p("runs", run))
    except OSError as e:
        if not isinstance(e, FileNotFoundError):  # gone already: a retried clean-up
            raise StoreError(f"cannot delete run {run}: {e}") from e
    _prune_leases(store, run)
    return None


def clean_after_run(store: Store, keep_runs: int | None) -> CleanupResult | None:
    """The clean-up at the end of a batch run: never fails the run (a warning instead)."""
    try:
        return clean_runs(store, keep_runs or 0)
    except (StoreError, OSError) as e:
        log.warning("clean-up after the run failed: %s (the next run tries again)", e)
        return None
