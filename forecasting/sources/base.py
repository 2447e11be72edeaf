"""The store interface every data source implements (local Parquet, S3, Athena).

Same method names, same frames out, whatever the backend: the batch job and the app are
written once against :class:`Store` and the data URI picks the implementation.
"""

from __future__ import annotations

import abc
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import pandas as pd

PLAN_TABLES = ("forecasts", "risk", "recommendations", "consolidation", "backtest")
RUN_ID_RE = re.compile(r"^[0-9]{8}T[0-9]{6}Z(-[0-9a-z]+)?$")


class StoreError(RuntimeError):
    """A store that cannot be read or written; the message says which file and why."""


class NoDataError(StoreError):
    """The store is empty (nothing generated or ingested yet)."""


class NoRunError(StoreError):
    """No complete batch run has been published yet."""


@dataclass(frozen=True)
class MetricsQuery:
    """Which part of the metrics table to read; None means no restriction."""

    server_ids: tuple[str, ...] | None = None
    business_units: tuple[str, ...] | None = None
    start: pd.Timestamp | None = None
    end: pd.Timestamp | None = None  # exclusive
    columns: tuple[str, ...] | None = None

    @classmethod
    def of(
        cls,
        server_ids: Iterable[str] | None = None,
        business_units: Iterable[str] | None = None,
        start=None,
        end=None,
        columns: Iterable[str] | None = None,
    ) -> MetricsQuery:
        def ts(v):
            if v is None:
                return None
            t = pd.Timestamp(v)
            return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")

        return cls(
            tuple(server_ids) if server_ids is not None else None,
            tuple(business_units) if business_units is not None else None,
            ts(start),
            ts(end),
            tuple(columns) if columns is not None else None,
        )


def run_stamp(now: datetime | None = None) -> str:
    """The time part of a run id: ``<UTC second>Z-<5 hex digits of the microsecond>``.

    Runs are ordered by id (the diff's "run before", retention's newest, the track record);
    with only the second in the sortable part, two runs started within one second were ordered
    by their random suffixes, and the later one could come first."""
    now = now or datetime.now(UTC)
    return f"{now:%Y%m%dT%H%M%SZ}-{now.microsecond:05x}"


def new_run_id(now: datetime | None = None) -> str:
    """Sortable, unique run ids: UTC time to the microsecond plus a short random suffix."""
    import secrets

    return f"{run_stamp(now)}{secrets.token_hex(2)}"


def check_run_id(run_id: str) -> str:
    """Run ids become path segments: refuse anything but the generated shape."""
    if not RUN_ID_RE.match(run_id or ""):
        raise StoreError(f"invalid run id {run_id!r}")
    return run_id


class Store(abc.ABC):
    """Inventory, metrics and the plan store under one data location."""

    uri: str

    # ---- metric store
    @abc.abstractmethod
    def has_data(self) -> bool:
        """True when an inventory has been written."""

    @abc.abstractmethod
    def read_inventory(self) -> pd.DataFrame: ...

    @abc.abstractmethod
    def write_inventory(self, inventory: pd.DataFrame) -> None: ...

    @abc.abstractmethod
    def read_metrics(self, query: MetricsQuery | None = None) -> pd.DataFrame:
        """Contract columns, grouped by server and in time order; reads only matching partitions."""

    @abc.abstractmethod
    def write_metrics(
        self,
        metrics: pd.DataFrame,
        inventory: pd.DataFrame,
        *,
        freq: str,
        mode: str = "overwrite",
        on_partition: Callable[[str], None] | None = None,
    ) -> None:
        """Write validated metrics. mode 'merge' keeps existing rows not superseded by new ones;
        'append' adds servers the store does not hold yet (a streamed fleet's next block) as new
        files, reading and replacing nothing.

        on_partition is called after each business unit's partition is written (progress bars).
        """

    @abc.abstractmethod
    def read_store_info(self) -> dict:
        """Small facts about the metrics (frequency, span) written with them."""

    # ---- plan store
    @abc.abstractmethod
    def publish_run(
        self, run_id: str, tables: Mapping[str, pd.DataFrame], manifest: dict, parts: Sequence[str] = ()
    ) -> bool:
        """Write a run's tables and manifest, then point LATEST at it (last, so readers never see half).

        ``parts`` names tables the run's shards already wrote as parts (``runs/<id>/<name>/part-*``);
        they must exist. LATEST moves only to a run whose input is at least as new; False when a
        newer one holds it.
        """

    @abc.abstractmethod
    def latest_run_id(self) -> str | None: ...

    @abc.abstractmethod
    def list_runs(self) -> list[str]: ...

    @abc.abstractmethod
    def read_manifest(self, run_id: str) -> dict: ...

    @abc.abstractmethod
    def read_run_table(
        self,
        run_id: str,
        name: str,
        server_ids: Iterable[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame | None:
        """A plan table of a run, or None when that run has no such table.

        ``columns`` reads only those of them the table has: Parquet stores columns apart, so a
        column not asked for is neither fetched nor decoded."""


def shard_of(server_ids: pd.Series | np.ndarray | list[str], n_shards: int) -> np.ndarray:
    """Shard of each server: a stable hash of its id (same answer in every process and version).
    A sharded run's part ``k`` of a plan table holds exactly the servers of shard ``k``, so a
    reader of some servers opens only their parts."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    ids = list(map(str, server_ids))
    return np.fromiter(
        (int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8).digest(), "big") % n_shards for s in ids),
        dtype=np.int64,
        count=len(ids),
    )


def manifest_json(manifest: dict) -> bytes:
    return json.dumps(manifest, indent=2, default=str, sort_keys=True).encode()
