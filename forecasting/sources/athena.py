"""Athena source: ``athena://workgroup/database?s3_staging=s3://bucket/results/&location=s3://…``.

Reads of the inventory and metrics go through Athena (parameterised queries); everything else —
writes, ``store.json``, and the whole plan store — goes straight to the tables' S3 location
through an :class:`~forecasting.sources.s3.S3Store`, in exactly the local layout. So the batch
job run with an athena:// URI publishes its plan where ``s3://`` readers (the app) find it, and
the interactive path never waits on Athena (DESIGN.md §6).

URI query parameters:

- ``s3_staging`` — where Athena writes query results (optional when the workgroup enforces
  its own result location);
- ``location`` — the tables' S3 root (``s3://bucket/prefix``); default: read from the Glue
  definition of the ``inventory`` table. Needed once, to print the DDL before tables exist;
- ``region``, ``catalog`` (default ``AwsDataCatalog``), ``query_timeout`` (seconds, default 300).

Queries are never built from user text: identifiers come from validated names, every value
(business units, server ids, dates) is an Athena execution parameter (``?`` in the WHERE
clause, ``ExecutionParameters`` rendered as literals by :func:`sql_literal`). The same SQL and
values run unchanged on DuckDB, which is how the tests check the SQL against the Parquet layout.

How results are read, and why:

- metrics (large: servers × days) are fetched with ``UNLOAD (SELECT …) TO '<staging>/capfc-unload/
  <token>/' WITH (format = 'PARQUET')``: Athena writes typed, compressed Parquet in parallel and we
  read it with pyarrow in a few GETs, then delete it. Paging GetQueryResults would cost one API
  call per 1,000 rows (≈ 1,500 calls for 1,000 servers × 4 years) and parse every value from text;
  the CSV result file is typed only by guesswork and 5–10× larger.
- the inventory (one row per server, thousands of rows) is read with paginated GetQueryResults,
  typed from the result metadata: no staging objects to write or clean up for a small table.

Query life cycle: StartQueryExecution → GetQueryExecution polled with exponential backoff
(0.25 s doubling to 5 s) until the timeout, which cancels the query (StopQueryExecution). A
failure Athena marks retryable is resubmitted (up to 3 attempts); API calls themselves use
botocore's standard retry mode. Failures become :class:`AthenaQueryError` (with the query id and
Athena's reason), :class:`AthenaQueryCancelledError`, :class:`AthenaTimeoutError`,
:class:`WorkgroupNotFoundError`, :class:`AthenaTableNotFoundError`, or the S3 module's
access-denied / unavailable errors — each naming the workgroup, database or table and the fix.

Table definitions (:func:`ddl`, printed by :func:`athena_ddl`) use partition projection: no
``MSCK REPAIR``, new partitions are visible as soon as their files exist. Plan tables are
symlink tables (a manifest per run pointing at ``runs/<run_id>/<table>.parquet``), written by
:meth:`AthenaStore.publish_run` before ``runs/LATEST``; query them with ``WHERE run_id = '…'``.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, quote

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from ..schema import ALL_INVENTORY_COLUMNS, INVENTORY_COLUMNS, METRIC_COLUMNS, OPTIONAL_INVENTORY_COLUMNS
from .base import PLAN_TABLES, MetricsQuery, NoDataError, Store, StoreError
from .parquet import PARTITIONING, metrics_schema
from .s3 import (
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_REQUEST_TIMEOUT,
    S3Connection,
    S3Store,
    StoreAccessDeniedError,
    StoreConfigError,
    StoreUnavailableError,
    open_s3_store,
    parse_s3_uri,
    resolve_endpoint,
)

log = logging.getLogger(__name__)

DEFAULT_CATALOG = "AwsDataCatalog"
DEFAULT_QUERY_TIMEOUT = 300.0
UNLOAD_DIR = "capfc-unload"
MANIFEST_DIR = "athena-manifests"
MAX_IN_LIST = 1000  # longer server lists are filtered after the read instead of in SQL
YEAR_RANGE = (2000, 2099)

INVENTORY_TABLE = "inventory"
METRICS_TABLE = "metrics"


def plan_table(name: str) -> str:
    """Athena table name of a plan table: forecasts -> plan_forecasts."""
    return f"plan_{name}"


# --------------------------------------------------------------------------- errors


class AthenaQueryError(StoreError):
    """An Athena query ended in FAILED; the message carries the query id and Athena's reason."""

    def __init__(self, message: str, query_id: str | None = None, reason: str = ""):
        super().__init__(message)
        self.query_id = query_id
        self.reason = reason


class AthenaQueryCancelledError(AthenaQueryError):
    """The query was cancelled (by a person, or by a workgroup limit such as bytes scanned)."""


class AthenaTableNotFoundError(AthenaQueryError, StoreConfigError):
    """The database or a table is not defined yet: create them from :func:`athena_ddl`."""


class AthenaTimeoutError(StoreUnavailableError):
    """The query did not finish within the timeout and was cancelled."""


class WorkgroupNotFoundError(StoreConfigError):
    """The workgroup named in the athena:// URI does not exist (or is disabled)."""


# --------------------------------------------------------------------------- URI


_WORKGROUP_RE = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_NAME_RE = re.compile(r"^[a-z0-9_]{1,255}$")
_COLUMN_RE = re.compile(r"^[a-z_][a-z0-9_]*$")
_URI_PARAMS = ("s3_staging", "location", "region", "catalog", "query_timeout")


@dataclass(frozen=True)
class AthenaTarget:
    """A parsed athena:// URI."""

    workgroup: str
    database: str
    s3_staging: str | None = None
    location: str | None = None
    region: str | None = None
    catalog: str = DEFAULT_CATALOG
    query_timeout: float = DEFAULT_QUERY_TIMEOUT


def parse_athena_uri(uri: str) -> AthenaTarget:
    """Split and check ``athena://workgroup/database?…``; bad input fails before any request."""
    if not uri.startswith("athena://"):
        raise StoreConfigError(f"{uri!r} is not an athena:// URI (athena://workgroup/database?s3_staging=…)")
    rest, _, query = uri[len("athena://") :].partition("?")
    workgroup, _, database = rest.strip("/").partition("/")
    if not _WORKGROUP_RE.match(workgroup):
        raise StoreConfigError(
            f"workgroup {workgroup!r} in {uri} is not a valid Athena workgroup name "
            "(1–128 letters, digits, '.', '_' or '-')"
        )
    database = database.strip("/").lower()
    if not _NAME_RE.match(database):
        raise StoreConfigError(
            f"database {database!r} in {uri} is not a valid Athena database name "
            "(lowercase letters, digits and '_'; the URI is athena://workgroup/database)"
        )
    params: dict[str, str] = {}
    for key, value in parse_qsl(query, keep_blank_values=True, strict_parsing=False):
        if key not in _URI_PARAMS:
            raise StoreConfigError(f"unknown parameter {key!r} in {uri}; known: {', '.join(_URI_PARAMS)}")
        params[key] = value.strip()
    for key in ("s3_staging", "location"):
        if params.get(key):
            parse_s3_uri(params[key])  # validates; raises StoreConfigError naming the problem
    timeout = DEFAULT_QUERY_TIMEOUT
    if params.get("query_timeout"):
        try:
            timeout = float(params["query_timeout"])
        except ValueError:
            timeout = -1.0
        if not 1 <= timeout <= 86_400:
            raise StoreConfigError(f"query_timeout in {uri} must be a number of seconds in [1, 86400]")
    catalog = params.get("catalog") or DEFAULT_CATALOG
    if not _WORKGROUP_RE.match(catalog):
        raise StoreConfigError(f"catalog {catalog!r} in {uri} is not a valid data catalog name")
    return AthenaTarget(
        workgroup=workgroup,
        database=database,
        s3_staging=params.get("s3_staging") or None,
        location=(params.get("location") or "").rstrip("/") or None,
        region=params.get("region") or None,
        catalog=catalog,
        query_timeout=timeout,
    )


# --------------------------------------------------------------------------- SQL


@dataclass(frozen=True)
class SqlQuery:
    """SQL text with ``?`` placeholders and the values that fill them, in order.

    The values are plain Python (str, int, float, bool): DuckDB takes them as they are, and
    :meth:`execution_parameters` renders them for Athena.
    """

    sql: str
    params: tuple[Any, ...] = ()

    def execution_parameters(self) -> list[str] | None:
        return [sql_literal(v) for v in self.params] or None


def sql_literal(value: Any) -> str:
    """One Athena execution parameter: a single SQL literal, never an expression.

    Strings are single-quoted with quotes doubled, so ``srv-o'neil`` or ``x' OR '1'='1`` stay
    one string value. Athena limits each parameter to 1,024 characters.
    """
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if not np.isfinite(value):
            raise ValueError(f"cannot pass the non-finite value {value!r} as a query parameter")
        return repr(float(value))
    if isinstance(value, str):
        if "\x00" in value:
            raise StoreError("query values must not contain NUL characters")
        literal = "'" + value.replace("'", "''") + "'"
        if len(literal) > 1024:
            raise StoreError(f"query value too long for Athena (max 1024 characters): {value[:40]!r}…")
        return literal
    raise TypeError(f"unsupported query parameter type {type(value).__name__}")


def ident(name: str) -> str:
    """A double-quoted identifier from our own (validated) names."""
    if not _NAME_RE.match(name):
        raise StoreError(f"invalid identifier {name!r}")
    return f'"{name}"'


def table_ref(database: str, table: str) -> str:
    return f"{ident(database)}.{ident(table)}"


def timestamp_value(ts: pd.Timestamp) -> str:
    """UTC wall time as text for ``CAST(? AS timestamp)`` (Athena timestamps carry no zone)."""
    t = ts.tz_convert("UTC") if ts.tzinfo is not None else ts
    return t.strftime("%Y-%m-%d %H:%M:%S.%f")


def partition_value(business_unit: str) -> str:
    """The business_unit partition value as stored in the path (URL-encoded like the store writes it)."""
    return quote(business_unit, safe="")


def inventory_query(database: str) -> SqlQuery:
    """Every column of the inventory table: ``*`` so a table defined before the optional placement
    columns existed (DDL is IF NOT EXISTS) still reads, without them; :meth:`AthenaStore.read_inventory`
    then checks the required ones and keeps the contract's."""
    return SqlQuery(f"SELECT * FROM {table_ref(database, INVENTORY_TABLE)}")


def metrics_query(
    database: str,
    query: MetricsQuery,
    business_units: Sequence[str],
    metric_columns: Sequence[str],
) -> SqlQuery:
    """The metrics SELECT for a :class:`MetricsQuery`; partition filters let Athena prune.

    ``business_units`` are partition values (see :func:`partition_value`); they must be given
    because the business_unit projection may be ``injected`` (every query names its units).
    """
    if not business_units:
        raise ValueError("metrics_query needs at least one business unit")
    unknown = [c for c in metric_columns if c not in METRIC_COLUMNS]
    if unknown:
        raise StoreError(f"unknown metric column(s) {unknown}")
    cols = ", ".join(ident(c) for c in ["server_id", "timestamp", *metric_columns])
    where: list[str] = []
    params: list[Any] = []

    def isin(column: str, values: Sequence[Any]) -> None:
        where.append(f"{ident(column)} IN ({', '.join('?' for _ in values)})")
        params.extend(values)

    isin("business_unit", list(business_units))
    if query.server_ids is not None and len(query.server_ids) <= MAX_IN_LIST:
        isin("server_id", list(query.server_ids))
    if query.start is not None:
        where.append(f"{ident('year')} >= ?")
        params.append(int(query.start.year))
        where.append(f"{ident('timestamp')} >= CAST(? AS timestamp)")
        params.append(timestamp_value(query.start))
    if query.end is not None:
        last = query.end - pd.Timedelta(microseconds=1)
        where.append(f"{ident('year')} <= ?")
        params.append(int(last.year))
        where.append(f"{ident('timestamp')} < CAST(? AS timestamp)")
        params.append(timestamp_value(query.end))
    sql = f"SELECT {cols} FROM {table_ref(database, METRICS_TABLE)} WHERE " + " AND ".join(where)
    return SqlQuery(sql, tuple(params))


def unload_query(select: SqlQuery, target: str) -> SqlQuery:
    """Wrap a SELECT in UNLOAD to Parquet at ``target`` (an s3:// prefix we generated)."""
    parse_s3_uri(target)
    if "'" in target:
        raise StoreError(f"unload location {target} must not contain quotes")
    sql = f"UNLOAD ({select.sql}) TO '{target.rstrip('/')}/' WITH (format = 'PARQUET')"
    return SqlQuery(sql, select.params)


# --------------------------------------------------------------------------- DDL


_STRING_PLAN_COLUMNS = {
    "server_id",
    "metric",
    "model",
    "status",
    "severity",
    "reason",
    "action",
    "current_size",
    "recommended_size",
    "target_group",
    "region",
    "environment",
    "host_size",
}
_TIMESTAMP_PLAN_COLUMNS = {
    "timestamp",
    "breach_optimistic",
    "breach_expected",
    "breach_pessimistic",
    "act_by",
}


def _default_schemas() -> dict[str, pa.Schema]:
    """Column types when no files exist to read them from: the contract, and plan-store conventions."""
    from .. import plan

    arrow = {"string": pa.string(), "number": pa.float64(), "bool": pa.bool_()}
    inventory = pa.schema(
        [(c, arrow[t]) for c, t in {**INVENTORY_COLUMNS, **OPTIONAL_INVENTORY_COLUMNS}.items()]
    )
    columns = {
        "forecasts": plan.FORECAST_COLUMNS,
        "risk": plan.RISK_COLUMNS,
        "recommendations": plan.RECOMMENDATION_COLUMNS,
        "consolidation": plan.CONSOLIDATION_COLUMNS,
        "backtest": plan.BACKTEST_COLUMNS,
    }
    out = {INVENTORY_TABLE: inventory, METRICS_TABLE: metrics_schema(METRIC_COLUMNS)}
    for name in PLAN_TABLES:
        fields = []
        for c in columns.get(name, ["server_id"]):
            if c in _STRING_PLAN_COLUMNS:
                fields.append((c, pa.string()))
            elif c in _TIMESTAMP_PLAN_COLUMNS:
                fields.append((c, pa.timestamp("us", "UTC")))
            elif c == "n_cutoffs":
                fields.append((c, pa.int64()))
            else:
                fields.append((c, pa.float64()))
        out[name] = pa.schema(fields)
    return out


def hive_type(t: pa.DataType, where: str) -> str:
    """The Athena (Hive DDL) type that reads an Arrow/Parquet column of type ``t``."""
    if pa.types.is_dictionary(t):
        return hive_type(t.value_type, where)
    if (
        pa.types.is_string(t)
        or pa.types.is_large_string(t)
        or pa.types.is_string_view(t)
        or pa.types.is_null(t)
    ):
        return "string"
    if pa.types.is_boolean(t):
        return "boolean"
    if pa.types.is_int8(t):
        return "tinyint"
    if pa.types.is_int16(t) or pa.types.is_uint8(t):
        return "smallint"
    if pa.types.is_int32(t) or pa.types.is_uint16(t):
        return "int"
    if pa.types.is_int64(t) or pa.types.is_uint32(t):
        return "bigint"
    if pa.types.is_float16(t) or pa.types.is_float32(t):
        return "float"
    if pa.types.is_float64(t):
        return "double"
    if pa.types.is_timestamp(t):
        return "timestamp"
    if pa.types.is_date(t):
        return "date"
    if pa.types.is_decimal(t):
        return f"decimal({t.precision},{t.scale})"
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        return f"array<{hive_type(t.value_type, where)}>"
    raise StoreError(
        f"column {where} has type {t}, which the Athena DDL does not map; store it as text or number"
    )


def _columns_sql(schema: pa.Schema, table: str, skip: Iterable[str] = ()) -> str:
    skip = set(skip)
    lines = []
    for field in schema:
        if field.name in skip:
            continue
        if not _COLUMN_RE.match(field.name):
            raise StoreError(
                f"column {field.name!r} of {table} is not a valid Athena column name "
                "(lowercase letters, digits and '_')"
            )
        lines.append(f"  `{field.name}` {hive_type(field.type, f'{table}.{field.name}')}")
    return ",\n".join(lines)


def _props_sql(props: Mapping[str, str]) -> str:
    return "TBLPROPERTIES (\n" + ",\n".join(f"  '{k}' = '{v}'" for k, v in props.items()) + "\n)"


def ddl(
    database: str,
    s3_location: str,
    *,
    schemas: Mapping[str, pa.Schema] | None = None,
    business_units: Sequence[str] | None = None,
    years: tuple[int, int] = YEAR_RANGE,
) -> list[str]:
    """CREATE statements for the database and its tables over the store at ``s3_location``.

    ``schemas`` (table -> Arrow schema, keys ``inventory``, ``metrics`` and plan table names)
    give exact column types, e.g. read from the files by :func:`inspect_schemas`; missing ones
    fall back to the data contract. Partition projection: ``business_unit`` is an ``enum`` of
    ``business_units`` when given (ad-hoc queries need no filter, but a new unit needs the DDL
    re-run), else ``injected`` (every query must name its units — :class:`AthenaStore` does);
    ``year`` is an integer range. Plan tables are symlink tables partitioned by ``run_id``.
    Statements use IF NOT EXISTS: drop a table first to change its definition.
    """
    if not _NAME_RE.match(database):
        raise StoreConfigError(f"{database!r} is not a valid Athena database name")
    loc = parse_s3_uri(s3_location)
    if "'" in loc.uri or "$" in loc.uri:
        raise StoreConfigError(f"table location {loc.uri} must not contain quotes or '$' for use in DDL")
    lo, hi = years
    if not 1970 <= lo <= hi <= 2200:
        raise StoreConfigError(f"year range {years} must lie within 1970–2200")
    found = {**_default_schemas(), **dict(schemas or {})}
    db = f"`{database}`"

    def location(*parts: str) -> str:
        return loc.child(*parts).uri + "/"

    out = [f"CREATE DATABASE IF NOT EXISTS {db}"]
    out.append(
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {db}.`{INVENTORY_TABLE}` (\n"
        f"{_columns_sql(found[INVENTORY_TABLE], INVENTORY_TABLE)}\n)\n"
        f"STORED AS PARQUET\nLOCATION '{location('inventory')}'"
    )
    metrics_props = {"projection.enabled": "true"}
    if business_units:
        values = [partition_value(b) for b in business_units]
        metrics_props["projection.business_unit.type"] = "enum"
        metrics_props["projection.business_unit.values"] = ",".join(sorted(set(values)))
    else:
        metrics_props["projection.business_unit.type"] = "injected"
    metrics_props.update(
        {
            "projection.year.type": "integer",
            "projection.year.range": f"{lo},{hi}",
            "storage.location.template": location("metrics") + "business_unit=${business_unit}/year=${year}/",
        }
    )
    out.append(
        f"CREATE EXTERNAL TABLE IF NOT EXISTS {db}.`{METRICS_TABLE}` (\n"
        f"{_columns_sql(found[METRICS_TABLE], METRICS_TABLE, skip=PARTITIONING.names)}\n)\n"
        "PARTITIONED BY (`business_unit` string, `year` int)\n"
        f"STORED AS PARQUET\nLOCATION '{location('metrics')}'\n{_props_sql(metrics_props)}"
    )
    for name in PLAN_TABLES:
        table = plan_table(name)
        base = location(MANIFEST_DIR, table)
        props = {
            "projection.enabled": "true",
            "projection.run_id.type": "injected",
            "storage.location.template": base + "run_id=${run_id}/",
        }
        out.append(
            f"CREATE EXTERNAL TABLE IF NOT EXISTS {db}.`{table}` (\n"
            f"{_columns_sql(found[name], table, skip=['run_id'])}\n)\n"
            "PARTITIONED BY (`run_id` string)\n"
            "ROW FORMAT SERDE 'org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe'\n"
            "STORED AS INPUTFORMAT 'org.apache.hadoop.hive.ql.io.SymlinkTextInputFormat'\n"
            "OUTPUTFORMAT 'org.apache.hadoop.hive.ql.io.HiveIgnoreKeyTextOutputFormat'\n"
            f"LOCATION '{base}'\n{_props_sql(props)}"
        )
    return out


def inspect_schemas(store: S3Store) -> dict[str, pa.Schema]:
    """Arrow schemas of the files present (Parquet footers only), for exact DDL column types."""
    fs, root = store.fs, store.root
    out: dict[str, pa.Schema] = {}

    def schema_of(path: str) -> pa.Schema | None:
        try:
            return pq.read_schema(path, filesystem=fs).remove_metadata()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise store.connection.translate_arrow_error(e, store.location, "read table schemas from") from e

    if (s := schema_of(f"{root}/inventory/servers.parquet")) is not None:
        out[INVENTORY_TABLE] = s
    try:
        infos = fs.get_file_info(pafs.FileSelector(f"{root}/metrics", recursive=True, allow_not_found=True))
    except OSError as e:
        raise store.connection.translate_arrow_error(e, store.location, "list metrics in") from e
    first = next((i.path for i in sorted(infos, key=lambda i: i.path) if i.path.endswith(".parquet")), None)
    if first and (s := schema_of(first)) is not None:
        out[METRICS_TABLE] = s
    run_id = store.latest_run_id()
    if run_id:
        for name in PLAN_TABLES:
            files = store.run_table_files(run_id, name)
            if files and (s := schema_of(files[0])) is not None:
                out[name] = s
    return out


# --------------------------------------------------------------------------- Athena client

_ARROW_TYPES: dict[str, pa.DataType] = {
    "varchar": pa.string(),
    "char": pa.string(),
    "string": pa.string(),
    "boolean": pa.bool_(),
    "tinyint": pa.int64(),
    "smallint": pa.int64(),
    "integer": pa.int64(),
    "int": pa.int64(),
    "bigint": pa.int64(),
    "real": pa.float32(),
    "float": pa.float32(),
    "double": pa.float64(),
    "decimal": pa.float64(),
    "date": pa.date32(),
    "timestamp": pa.timestamp("us"),
}

_TABLE_MISSING = re.compile(
    r"TABLE_NOT_FOUND|SCHEMA_NOT_FOUND|Table .* does not exist|Schema .* does not exist|"
    r"Database .* (?:not found|does not exist)|EntityNotFoundException",
    re.I,
)
_DENIED = re.compile(
    r"Access ?Denied|not authorized|Insufficient (?:Lake Formation )?permissions|Permission denied|"
    r"AccessDeniedException|KMS",
    re.I,
)
_WORKGROUP_MISSING = re.compile(r"WorkGroup .*(?:not found|does not exist)|WorkGroup does not exist", re.I)


def results_to_arrow(pages: Iterable[Mapping[str, Any]]) -> pa.Table:
    """GetQueryResults pages as a typed table (types from the result metadata; NULL stays null)."""
    names: list[str] | None = None
    types: list[str] = []
    columns: list[list[str | None]] = []
    first_row = True
    for page in pages:
        result = page.get("ResultSet", {})
        if names is None:
            info = result.get("ResultSetMetadata", {}).get("ColumnInfo", [])
            names = [c["Name"] for c in info]
            types = [str(c.get("Type", "varchar")).lower() for c in info]
            columns = [[] for _ in names]
        for row in result.get("Rows", []):
            values = [d.get("VarCharValue") for d in row.get("Data", [])]
            if first_row:
                first_row = False
                if values == names:  # SELECT results start with the header row
                    continue
            if len(values) != len(names):
                raise StoreError(f"Athena result row has {len(values)} values for {len(names)} columns")
            for col, v in zip(columns, values, strict=True):
                col.append(v)
    if names is None:
        return pa.table({})
    arrays = []
    for name, typ, values in zip(names, types, columns, strict=True):
        base = typ.split("(")[0].strip()
        target = _ARROW_TYPES.get(base, pa.string())
        raw = pa.array(values, pa.string())
        try:
            arrays.append(raw.cast(target))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
            raise StoreError(f"Athena column {name} ({typ}) has a value that is not a {base}: {e}") from e
    return pa.table(arrays, names=names)


class AthenaClient:
    """StartQueryExecution → poll with backoff → results, with failures as clear error types.

    ``sleep``, ``clock`` and ``token`` (names the UNLOAD prefix) are plain attributes so a caller
    can drive time in tests; production uses the defaults.
    """

    def __init__(
        self,
        client: Any,
        *,
        workgroup: str,
        database: str,
        catalog: str = DEFAULT_CATALOG,
        output_location: str | None = None,
        timeout: float = DEFAULT_QUERY_TIMEOUT,
        poll_initial: float = 0.25,
        poll_max: float = 5.0,
        query_attempts: int = 3,
        result_reuse_minutes: int = 60,
    ):
        self.client = client
        self.result_reuse_minutes = result_reuse_minutes
        self.workgroup = workgroup
        self.database = database
        self.catalog = catalog
        self.output_location = output_location
        self.timeout = float(timeout)
        self.poll_initial = poll_initial
        self.poll_max = poll_max
        self.query_attempts = query_attempts
        self.sleep: Callable[[float], None] = time.sleep
        self.clock: Callable[[], float] = time.monotonic
        self.token: Callable[[], str] = lambda: uuid.uuid4().hex

    # ---- API errors
    def _api_error(self, exc: BaseException, action: str) -> StoreError:
        from botocore import exceptions as bex

        code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")
        message = (getattr(exc, "response", None) or {}).get("Error", {}).get("Message", "") or str(exc)
        where = f"Athena workgroup {self.workgroup!r}"
        if _WORKGROUP_MISSING.search(message) or (
            code == "InvalidRequestException" and "WorkGroup" in message and "not" in message
        ):
            return WorkgroupNotFoundError(
                f"{where} does not exist in this account/region ({action}): create it, or fix the "
                f"workgroup in the athena:// data URI [{message}]"
            )
        if code == "InvalidRequestException" and "disabled" in message.lower():
            return WorkgroupNotFoundError(
                f"{where} is disabled ({action}): enable it or use another [{message}]"
            )
        if code in ("AccessDeniedException", "AccessDenied", "UnauthorizedOperation") or _DENIED.search(code):
            return StoreAccessDeniedError(
                f"access denied to {where} ({action}): the identity from the standard AWS chain needs "
                "athena:StartQueryExecution, athena:GetQueryExecution, athena:GetQueryResults, "
                "athena:StopQueryExecution, athena:GetWorkGroup, glue:GetTable/GetDatabase on "
                f"database {self.database!r}, and S3 access to the tables and the staging location [{message}]"
            )
        if code in ("UnrecognizedClientException", "InvalidSignatureException", "ExpiredTokenException"):
            return StoreAccessDeniedError(
                f"credentials refused by Athena ({action}): refresh the credentials in the standard AWS chain [{message}]"
            )
        if code == "InvalidRequestException" and re.search(r"output location|OutputLocation", message, re.I):
            return StoreConfigError(
                f"{where} has no query result location ({action}): add ?s3_staging=s3://bucket/prefix/ "
                f"to the athena:// URI or set one on the workgroup [{message}]"
            )
        if isinstance(exc, bex.ConnectTimeoutError | bex.ReadTimeoutError):
            return StoreUnavailableError(f"Athena timed out ({action}, {where}); try again later [{exc}]")
        if isinstance(exc, bex.EndpointConnectionError | bex.ConnectionClosedError | bex.HTTPClientError):
            return StoreUnavailableError(f"Athena unreachable ({action}, {where}); try again later [{exc}]")
        status = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
        if (
            code in ("TooManyRequestsException", "ThrottlingException", "InternalServerException")
            or int(status) >= 500
        ):
            return StoreUnavailableError(
                f"Athena throttled or failing ({action}, {where}) after retries; try again later [{message}]"
            )
        return StoreError(f"Athena request failed ({action}, {where}): {message}")

    def _call(self, action: str, fn: Callable[..., Any], **kwargs: Any) -> Any:
        try:
            return fn(**kwargs)
        except Exception as e:
            if isinstance(e, StoreError):
                raise
            raise self._api_error(e, action) from e

    # ---- queries
    def start(self, query: SqlQuery, what: str) -> str:
        kwargs: dict[str, Any] = {
            "QueryString": query.sql,
            "QueryExecutionContext": {"Database": self.database, "Catalog": self.catalog},
            "WorkGroup": self.workgroup,
        }
        if self.output_location:
            kwargs["ResultConfiguration"] = {"OutputLocation": self.output_location}
        params = query.execution_parameters()
        if params:
            kwargs["ExecutionParameters"] = params
        if query.sql.lstrip().upper().startswith("SELECT") and self.result_reuse_minutes > 0:
            # a repeated SELECT (inventory, store info) within the window reads the earlier result
            # instead of scanning again; Athena offers reuse per query, not per workgroup
            kwargs["ResultReuseConfiguration"] = {
                "ResultReuseByAgeConfiguration": {
                    "Enabled": True,
                    "MaxAgeInMinutes": self.result_reuse_minutes,
                }
            }
        response = self._call(f"start {what}", self.client.start_query_execution, **kwargs)
        query_id = response["QueryExecutionId"]
        log.debug("athena query %s started: %s", query_id, what)
        return query_id

    def wait(self, query_id: str, what: str) -> dict:
        """Poll until the query ends; backoff doubles from poll_initial to poll_max."""
        deadline = self.clock() + self.timeout
        delay = self.poll_initial
        while True:
            execution = self._call(
                f"poll {what}", self.client.get_query_execution, QueryExecutionId=query_id
            )["QueryExecution"]
            state = execution["Status"]["State"]
            if state == "SUCCEEDED":
                return execution
            if state in ("FAILED", "CANCELLED"):
                raise self._query_error(execution, what)
            now = self.clock()
            if now >= deadline:
                self.cancel(query_id)
                raise AthenaTimeoutError(
                    f"Athena query {query_id} ({what}) still {state} after {self.timeout:g} s; it was "
                    f"cancelled. Raise ?query_timeout= in the athena:// URI or check workgroup "
                    f"{self.workgroup!r} for queued queries"
                )
            self.sleep(min(delay, max(deadline - now, 0.0)))
            delay = min(delay * 2, self.poll_max)

    def cancel(self, query_id: str) -> None:
        try:
            self.client.stop_query_execution(QueryExecutionId=query_id)
        except Exception as e:  # best effort: the timeout error is what matters
            log.warning("could not cancel Athena query %s: %s", query_id, e)

    def _query_error(self, execution: Mapping[str, Any], what: str) -> StoreError:
        status = execution.get("Status", {})
        query_id = execution.get("QueryExecutionId")
        reason = status.get("StateChangeReason") or status.get("AthenaError", {}).get("ErrorMessage") or ""
        head = f"Athena query {query_id} ({what}) in workgroup {self.workgroup!r}"
        if status.get("State") == "CANCELLED":
            return AthenaQueryCancelledError(
                f"{head} was cancelled (by a user, or by a workgroup limit such as the data scanned "
                f"per query){': ' + reason if reason else ''}",
                query_id,
                reason,
            )
        if status.get("AthenaError", {}).get("Retryable"):
            return _RetryableQueryError(f"{head} failed transiently: {reason}", query_id, reason)
        if _TABLE_MISSING.search(reason):
            return AthenaTableNotFoundError(
                f"{head} failed: a table of database {self.database!r} is not defined ({reason}). Create "
                "them with the statements from `python -m forecasting athena-ddl`",
                query_id,
                reason,
            )
        if _DENIED.search(reason):
            return StoreAccessDeniedError(
                f"{head} was denied access ({reason}): the identity needs s3:GetObject/ListBucket on the "
                "tables' location, s3:PutObject on the staging location, and Glue read access"
            )
        return AthenaQueryError(f"{head} failed: {reason or 'no reason given'}", query_id, reason)

    def execute(self, query: SqlQuery, what: str) -> dict:
        """Run a query to completion; resubmit it when Athena says a failure is retryable."""
        for attempt in range(1, self.query_attempts + 1):
            query_id = self.start(query, what)
            try:
                return self.wait(query_id, what)
            except _RetryableQueryError as e:
                if attempt == self.query_attempts:
                    raise StoreUnavailableError(
                        f"{e} (gave up after {attempt} attempts; try again later)"
                    ) from None
                log.info("retrying Athena query (%s) after a transient failure: %s", what, e.reason)
                self.sleep(min(self.poll_initial * 2**attempt, self.poll_max))
        raise AssertionError("unreachable")  # pragma: no cover

    def fetch(self, query: SqlQuery, what: str) -> pa.Table:
        """Run a SELECT and read its (small) result through paginated GetQueryResults."""
        execution = self.execute(query, what)
        query_id = execution["QueryExecutionId"]
        paginator = self.client.get_paginator("get_query_results")
        pages = paginator.paginate(QueryExecutionId=query_id, PaginationConfig={"PageSize": 1000})

        def checked() -> Iterable[Mapping[str, Any]]:
            try:
                yield from pages
            except Exception as e:
                raise self._api_error(e, f"read results of {what}") from e

        return results_to_arrow(checked())


class _RetryableQueryError(AthenaQueryError):
    """Internal: a failure Athena marks retryable (resubmitted by :meth:`AthenaClient.execute`)."""


# --------------------------------------------------------------------------- the store


class AthenaStore(Store):
    """Inventory and metrics read through Athena; writes and the plan store on S3 (same layout)."""

    def __init__(self, athena: AthenaClient, tables: S3Store, *, uri: str, staging: str):
        self.athena = athena
        self.tables = tables
        self.uri = uri
        self.database = athena.database
        self.staging = parse_s3_uri(staging)

    # ---- reads through Athena
    def has_data(self) -> bool:
        """Whether an inventory file exists (an S3 HEAD, not a query: cheap and immediate)."""
        return self.tables.has_data()

    def read_inventory(self) -> pd.DataFrame:
        table = self.athena.fetch(inventory_query(self.database), "read the inventory")
        if table.num_rows == 0:
            raise NoDataError(
                f"the Athena table {self.database}.{INVENTORY_TABLE} is empty (files under "
                f"{self.tables.uri}/inventory/): generate a demo fleet or ingest data first"
            )
        missing = [c for c in INVENTORY_COLUMNS if c not in table.column_names]
        if missing:
            raise StoreError(f"Athena table {self.database}.{INVENTORY_TABLE} lacks column(s) {missing}")
        table = table.select([c for c in ALL_INVENTORY_COLUMNS if c in table.column_names])
        # ``pinned`` as the Parquet store returns it: nullable boolean, missing = unknown
        return table.to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)

    def _business_units(self) -> list[str]:
        """Partition values present under metrics/ (one S3 LIST), for an unfiltered read."""
        root = f"{self.tables.root}/metrics"
        with self.tables._errors("list metric partitions in"):
            infos = self.tables.fs.get_file_info(
                pafs.FileSelector(root, recursive=False, allow_not_found=True)
            )
        return sorted(
            i.base_name.split("=", 1)[1]
            for i in infos
            if i.type == pafs.FileType.Directory and i.base_name.startswith("business_unit=")
        )

    def read_metrics(self, query: MetricsQuery | None = None) -> pd.DataFrame:
        q = query or MetricsQuery()
        info = self.tables.read_store_info()
        available = info.get("metric_columns") or list(METRIC_COLUMNS)
        columns = [c for c in METRIC_COLUMNS if c in available and (q.columns is None or c in q.columns)]
        if q.business_units is not None:
            units = sorted({partition_value(b) for b in q.business_units})
        else:
            units = self._business_units()
            if not units:
                raise NoDataError(
                    f"no metrics under {self.tables.uri}/metrics (table {self.database}.{METRICS_TABLE}): "
                    "generate or ingest data first"
                )
        if not units or (q.server_ids is not None and not q.server_ids):
            return self._frame(pa.table({}), columns)
        select = metrics_query(self.database, q, units, columns)
        table = self.unload(select, "read metrics")
        df = self._frame(table, columns)
        if q.server_ids is not None and len(q.server_ids) > MAX_IN_LIST:
            df = df[df["server_id"].isin(q.server_ids)]
        return df.sort_values(["server_id", "timestamp"], kind="stable", ignore_index=True)

    def unload(self, select: SqlQuery, what: str) -> pa.Table:
        """Run ``select`` as UNLOAD to a fresh staging prefix, read the Parquet, delete it."""
        target = self.staging.child(UNLOAD_DIR, self.athena.token())
        self.athena.execute(unload_query(select, target.uri), what)
        fs = self.tables.fs
        with self.tables._errors(f"read Athena results of {what} from"):
            try:
                if fs.get_file_info(target.path).type == pafs.FileType.NotFound:
                    return pa.table({})  # no rows: UNLOAD writes no data file
                return ds.dataset(target.path, filesystem=fs, format="parquet").to_table()
            finally:
                try:
                    fs.delete_dir(target.path)
                except OSError as e:
                    log.warning("could not delete Athena results under %s: %s", target.uri, e)

    @staticmethod
    def _frame(table: pa.Table, columns: Sequence[str]) -> pd.DataFrame:
        """UNLOAD output as the contract frame (types as the Parquet store returns them)."""
        schema = metrics_schema(columns)
        if table.num_columns == 0:
            return schema.empty_table().to_pandas()
        arrays = []
        for field in schema:
            if field.name not in table.column_names:
                raise StoreError(f"Athena metrics result lacks column {field.name}")
            col = table[field.name]
            if pa.types.is_timestamp(col.type) and col.type.tz is None:
                col = col.cast(pa.timestamp(col.type.unit, "UTC"))
            arrays.append(col.cast(field.type))
        df = pa.table(arrays, schema=schema).to_pandas()
        df["server_id"] = df["server_id"].astype(str)
        return df

    # ---- writes and metadata: the tables' S3 location, same layout as local
    def write_inventory(self, inventory: pd.DataFrame) -> None:
        self.tables.write_inventory(inventory)

    def write_metrics(
        self,
        metrics: pd.DataFrame,
        inventory: pd.DataFrame,
        *,
        freq: str,
        mode: str = "overwrite",
        on_partition: Callable[[str], None] | None = None,
    ) -> None:
        """Write partitions under the metrics location; projection makes them queryable at once."""
        self.tables.write_metrics(metrics, inventory, freq=freq, mode=mode, on_partition=on_partition)

    def read_store_info(self) -> dict:
        return self.tables.read_store_info()

    # ---- plan store: S3 directly (the app's interactive path never waits on Athena)
    def publish_run(
        self, run_id: str, tables: Mapping[str, pd.DataFrame], manifest: dict, parts: Sequence[str] = ()
    ) -> bool:
        """Symlink manifests for the plan tables (one line per file: a table written in parts
        lists every part), then the run itself (LATEST last)."""
        from .base import check_run_id

        check_run_id(run_id)
        for name in [*tables, *parts]:
            if name not in PLAN_TABLES:
                raise ValueError(f"unknown plan table {name!r}")
            if name in tables:
                files = [self.tables.location.child("runs", run_id, f"{name}.parquet").uri]
            else:
                found = self.tables.run_table_files(run_id, name) or []
                files = [
                    self.tables.location.child("runs", run_id, name, f.rsplit("/", 1)[-1]).uri for f in found
                ]
            key = f"{MANIFEST_DIR}/{plan_table(name)}/run_id={run_id}/symlink.txt"
            self.tables.write_object(key, "".join(f + "\n" for f in files).encode())
        return self.tables.publish_run(run_id, tables, manifest, parts)

    def latest_run_id(self) -> str | None:
        return self.tables.latest_run_id()

    def list_runs(self) -> list[str]:
        return self.tables.list_runs()

    def read_manifest(self, run_id: str) -> dict:
        return self.tables.read_manifest(run_id)

    def read_run_table(
        self,
        run_id: str,
        name: str,
        server_ids: Iterable[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame | None:
        return self.tables.read_run_table(run_id, name, server_ids, columns)

    # ---- table definitions
    def ddl(self, business_units: Sequence[str] | None = None, inspect: bool = True) -> list[str]:
        """The CREATE statements for this store, typed from its files when ``inspect``."""
        schemas = inspect_schemas(self.tables) if inspect else None
        return ddl(self.database, self.tables.uri, schemas=schemas, business_units=business_units)

    def create_tables(self, business_units: Sequence[str] | None = None) -> list[str]:
        """Run :meth:`ddl` through Athena (idempotent: IF NOT EXISTS); returns the statements run."""
        statements = self.ddl(business_units)
        for i, statement in enumerate(statements):
            self.athena.execute(SqlQuery(statement), f"DDL statement {i + 1} of {len(statements)}")
        return statements


# --------------------------------------------------------------------------- opening


def _glue_location(connection: Any, target: AthenaTarget) -> str:
    """The tables' S3 root from the Glue definition of the inventory table."""
    if target.catalog != DEFAULT_CATALOG:
        raise StoreConfigError(
            f"catalog {target.catalog!r} is not the Glue catalog: add ?location=s3://bucket/prefix to the URI"
        )
    glue = connection.client("glue")
    try:
        table = glue.get_table(DatabaseName=target.database, Name=INVENTORY_TABLE)["Table"]
    except Exception as e:
        code = (getattr(e, "response", None) or {}).get("Error", {}).get("Code", "")
        if code == "EntityNotFoundException":
            raise StoreConfigError(
                f"table {target.database}.{INVENTORY_TABLE} is not in the Glue catalog, so the tables' S3 "
                "location is unknown: add ?location=s3://bucket/prefix to the athena:// URI, then create the "
                "tables with `python -m forecasting athena-ddl`"
            ) from None
        if code in ("AccessDeniedException", "AccessDenied"):
            raise StoreAccessDeniedError(
                f"access denied reading the Glue table {target.database}.{INVENTORY_TABLE}: grant "
                "glue:GetTable, or add ?location=s3://bucket/prefix to the athena:// URI"
            ) from None
        raise StoreUnavailableError(f"cannot read the Glue catalog for {target.database}: {e}") from e
    location = table.get("StorageDescriptor", {}).get("Location", "").rstrip("/")
    if not location.endswith(f"/{INVENTORY_TABLE}"):
        raise StoreConfigError(
            f"Glue table {target.database}.{INVENTORY_TABLE} has location {location!r}, not <root>/inventory/: "
            "add ?location=s3://bucket/prefix to the athena:// URI"
        )
    return location[: -len(f"/{INVENTORY_TABLE}")]


def open_athena_store(
    uri: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    env: Mapping[str, str] | None = None,
    session: Any = None,
) -> AthenaStore:
    """Open an athena:// URI: check the workgroup, find the staging and table locations.

    ``endpoint_url`` is the S3 endpoint (``s3_endpoint_url`` setting). Athena and Glue use
    boto3's own endpoint resolution, so the standard ``AWS_ENDPOINT_URL_ATHENA`` /
    ``AWS_ENDPOINT_URL_GLUE`` / ``AWS_ENDPOINT_URL`` variables apply.
    """
    target = parse_athena_uri(uri)
    probe = S3Connection(
        endpoint=resolve_endpoint(endpoint_url, env),
        region=region or target.region,
        connect_timeout=connect_timeout,
        request_timeout=request_timeout,
        max_attempts=max_attempts,
        session=session,
        env=env,
    )
    if probe.region is None:
        raise StoreConfigError(
            "no AWS region for Athena: set AWS_DEFAULT_REGION (or AWS_REGION, or a profile's region), "
            "or add ?region= to the athena:// URI"
        )
    athena_api = probe.client("athena")
    client = AthenaClient(
        athena_api,
        workgroup=target.workgroup,
        database=target.database,
        catalog=target.catalog,
        output_location=target.s3_staging,
        timeout=target.query_timeout,
    )
    workgroup_output = None
    try:
        described = client._call("check the workgroup", athena_api.get_work_group, WorkGroup=target.workgroup)
    except StoreAccessDeniedError:
        described = None  # least-privilege roles may lack GetWorkGroup; queries will tell
        log.info("no permission to describe Athena workgroup %s; continuing", target.workgroup)
    if described is not None:
        group = described.get("WorkGroup")
        if not group:
            raise WorkgroupNotFoundError(
                f"Athena workgroup {target.workgroup!r} does not exist in this account/region: "
                "create it, or fix the workgroup in the athena:// data URI"
            )
        if group.get("State", "ENABLED") == "DISABLED":
            raise WorkgroupNotFoundError(
                f"Athena workgroup {target.workgroup!r} is disabled: enable it or use another"
            )
        config = group.get("Configuration") or {}
        workgroup_output = (config.get("ResultConfiguration") or {}).get("OutputLocation")
    staging = target.s3_staging or workgroup_output
    if not staging:
        raise StoreConfigError(
            f"no query result location for Athena workgroup {target.workgroup!r}: add "
            "?s3_staging=s3://bucket/prefix/ to the athena:// URI or set one on the workgroup"
        )
    location = target.location or _glue_location(probe, target)
    tables = open_s3_store(location, connection=probe)
    return AthenaStore(client, tables, uri=uri, staging=staging)


def athena_ddl(
    uri: str,
    *,
    store: AthenaStore | None = None,
    business_units: Sequence[str] | None = None,
    inspect: bool = True,
    **options: Any,
) -> str:
    """The DDL for an athena:// URI as a SQL script (what ``python -m forecasting athena-ddl`` prints).

    With ``inspect`` (default) the store is opened (or ``store`` reused) and column types are
    read from the files present; ``inspect=False`` needs ``?location=`` in the URI and makes no
    request. ``options`` go to :func:`open_athena_store` (e.g. ``endpoint_url``).
    """
    target = parse_athena_uri(uri)
    if inspect:
        store = store or open_athena_store(uri, **options)
        statements = store.ddl(business_units=business_units)
        location = store.tables.uri
    else:
        if not target.location:
            raise StoreConfigError(
                "athena_ddl without inspection needs ?location=s3://bucket/prefix in the URI"
            )
        location = target.location
        statements = ddl(target.database, location, business_units=business_units)
    header = (
        f"-- Capacity Forecaster tables for Athena database {target.database} over {location}\n"
        "-- Partition projection: no MSCK REPAIR needed. Plan tables: WHERE run_id = '<id from runs/LATEST>'.\n"
    )
    return header + "\n".join(s + ";\n" for s in statements)
