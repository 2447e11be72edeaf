"""Data sources, chosen by the data URI alone: a local path, s3://bucket/prefix, athena://…"""

from __future__ import annotations

from pathlib import Path

import pyarrow.fs as pafs

from .base import MetricsQuery, NoDataError, NoRunError, Store, StoreError, new_run_id
from .parquet import ParquetStore

__all__ = [
    "MetricsQuery",
    "NoDataError",
    "NoRunError",
    "ParquetStore",
    "Store",
    "StoreError",
    "new_run_id",
    "open_store",
]


def open_store(uri: str, **options) -> Store:
    """The store for a data URI. Cloud backends are imported only when asked for."""
    if uri.startswith("s3://"):
        from .s3 import open_s3_store

        return open_s3_store(uri, **options)
    if uri.startswith("athena://"):
        from .athena import open_athena_store

        return open_athena_store(uri, **options)
    path = Path(uri.removeprefix("file://")).expanduser().resolve()
    if path.exists() and not path.is_dir():
        raise StoreError(f"data location {uri} is a file, not a directory")
    path.mkdir(parents=True, exist_ok=True)
    return ParquetStore(pafs.LocalFileSystem(), path.as_posix(), uri=str(path))
