"""Athena source: request/poll/result handling against moto's Athena emulation (server mode,
over HTTP), and the generated SQL checked by running it on DuckDB over the same Parquet layout.

moto runs no SQL: results are seeded (GetQueryResults rows via the moto API, UNLOAD output as
Parquet objects at the prefix the query names) from what DuckDB computes for the very same SQL
and parameters — so one test covers both "is the SQL right" and "is the client right".
States moto cannot produce (FAILED, throttling, access denied) come from a proxy that answers
those API calls with the JSON Athena sends.
"""

from __future__ import annotations

import itertools
import json
import time
import uuid
from collections.abc import Iterator

import boto3
import duckdb
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import pytest

from forecasting.schema import INVENTORY_COLUMNS, OPTIONAL_INVENTORY_COLUMNS, validate_inventory
from forecasting.sources import MetricsQuery, NoDataError, StoreError, open_store
from forecasting.sources.athena import (
    DEFAULT_QUERY_TIMEOUT,
    AthenaClient,
    AthenaQueryCancelledError,
    AthenaQueryError,
    AthenaStore,
    AthenaTableNotFoundError,
    AthenaTimeoutError,
    SqlQuery,
    WorkgroupNotFoundError,
    athena_ddl,
    ddl,
    hive_type,
    inspect_schemas,
    inventory_query,
    metrics_query,
    parse_athena_uri,
    partition_value,
    results_to_arrow,
    sql_literal,
    unload_query,
)
from forecasting.sources.parquet import PARTITIONING
from forecasting.sources.s3 import (
    S3Store,
    StoreAccessDeniedError,
    StoreConfigError,
    StoreUnavailableError,
    open_s3_store,
)
from tests.s3server import (
    MOTO_KEYS,
    REGION,
    FaultProxy,
    aws_env,
    clean_aws_env,
    demo_fleet,
    demo_plan,
    moto_server,
)

__all__ = ["aws_env", "moto_server"]  # fixtures, imported for pytest

FAST = {"connect_timeout": 1.0, "request_timeout": 5.0, "max_attempts": 3}
LAKE = "s3://athena-lake/fleet"
STAGING = "s3://athena-results/staging/"
WORKGROUP = "capfc"
DB = "fleet"
URI = f"athena://{WORKGROUP}/{DB}?s3_staging={STAGING}&location={LAKE}"
QUERIES = [
    MetricsQuery.of(business_units=["retail"]),
    MetricsQuery.of(business_units=["R&D Labs"], start="2024-01-01"),
    MetricsQuery.of(business_units=["R&D Labs", "payments"], server_ids=["srv-o'neil", "srv-0002", "nope"]),
    MetricsQuery.of(
        business_units=["retail", "payments", "R&D Labs"],
        start="2023-12-30",
        end="2024-01-03",
        columns=["cpu_p95", "net_in_p95"],
    ),
    MetricsQuery.of(business_units=["payments"], end="2023-11-05"),
    MetricsQuery.of(business_units=["retail"], server_ids=["x' OR '1'='1"]),
]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def lake(moto_server) -> dict:
    """The demo fleet and a published run under s3://athena-lake/fleet on moto, plus the workgroup."""
    s3 = moto_server.client("s3")
    for bucket in ("athena-lake", "athena-results"):
        s3.create_bucket(Bucket=bucket)
    moto_server.client("athena").create_work_group(
        Name=WORKGROUP, Configuration={"ResultConfiguration": {"OutputLocation": STAGING}}
    )
    session = boto3.session.Session(
        aws_access_key_id=MOTO_KEYS[0], aws_secret_access_key=MOTO_KEYS[1], region_name=REGION
    )
    store = open_s3_store(LAKE, endpoint_url=moto_server.url, session=session, **FAST)
    inventory, metrics = demo_fleet()
    store.write_inventory(inventory)
    store.write_metrics(metrics, inventory, freq="daily")
    run_id = "20240301T120000Z-a1b2c3"
    store.publish_run(run_id, demo_plan(inventory), {"run_id": run_id})
    return {"store": store, "inventory": inventory, "metrics": metrics, "run_id": run_id}


@pytest.fixture
def env(aws_env, moto_server, lake) -> None:
    """The standard chain pointed at moto: env credentials and AWS_ENDPOINT_URL for every service."""
    aws_env(MOTO_KEYS, moto_server.url)


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """Stores return rows grouped by server in time order; compare in one canonical order."""
    return frame.sort_values(["server_id", "timestamp"], ignore_index=True)


def open_with_env(moto_url: str, uri: str) -> AthenaStore:
    """Open through the standard chain (env credentials, AWS_ENDPOINT_URL), env restored after."""
    with pytest.MonkeyPatch.context() as mp:
        clean_aws_env(mp)(MOTO_KEYS, moto_url)
        store = open_store(uri, **FAST)
    assert isinstance(store, AthenaStore)
    return store


@pytest.fixture(scope="module")
def shared_athena(moto_server, lake) -> AthenaStore:
    return open_with_env(moto_server.url, URI)  # opening costs ~0.3 s: once per module


@pytest.fixture
def athena(shared_athena) -> AthenaStore:
    """The shared store with its client's clock, sleep, timeout and token back to defaults."""
    client = shared_athena.athena
    client.sleep = lambda s: None  # moto answers at once; the waits themselves are asserted below
    client.clock = time.monotonic
    client.timeout = DEFAULT_QUERY_TIMEOUT
    client.token = lambda: uuid.uuid4().hex
    return shared_athena


@pytest.fixture
def transitions(moto_server) -> Iterator:
    """Make moto's queries advance one state every ``times`` polls (QUEUED→RUNNING→SUCCEEDED)."""

    def manual(times: int) -> None:
        status, _ = moto_server.api(
            "POST",
            "/moto-api/state-manager/set-transition",
            {"model_name": "athena::execution", "transition": {"progression": "manual", "times": times}},
        )
        assert status == 201

    yield manual
    moto_server.api("POST", "/moto-api/state-manager/unset-transition", {"model_name": "athena::execution"})


@pytest.fixture(scope="module")
def duck(lake: dict) -> duckdb.DuckDBPyConnection:
    """DuckDB standing in for Athena: the same Parquet layout, read as Athena's DDL declares it.

    A pyarrow dataset over the S3 store (DuckDB's httpfs is not available here), partition
    values kept as stored in the path (Athena does not URL-decode projected values), timestamps
    without zone (Athena's ``timestamp``).
    """
    store: S3Store = lake["store"]
    part = ds.HivePartitioning(PARTITIONING, segment_encoding="none")
    metrics = ds.dataset(f"{store.root}/metrics", filesystem=store.fs, format="parquet", partitioning=part)
    table = metrics.to_table()
    table = table.set_column(
        table.schema.get_field_index("timestamp"), "timestamp", table["timestamp"].cast(pa.timestamp("us"))
    )
    inventory = pq.read_table(f"{store.root}/inventory/servers.parquet", filesystem=store.fs)
    con = duckdb.connect()
    con.register("metrics_files", table)
    con.register("inventory_files", inventory)
    con.execute(f"CREATE SCHEMA {DB}")
    con.execute(f"CREATE VIEW {DB}.metrics AS SELECT * FROM metrics_files")
    con.execute(f"CREATE VIEW {DB}.inventory AS SELECT * FROM inventory_files")
    return con


def run_duck(con: duckdb.DuckDBPyConnection, query: SqlQuery) -> pa.Table:
    return con.sql(query.sql, params=list(query.params)).to_arrow_table()


def athena_rows(table: pa.Table) -> dict:
    """A result as GetQueryResults returns it: a header row, then text values (NULL = no value)."""

    def text(v) -> dict:
        if v is None:
            return {}
        if isinstance(v, bool):
            return {"VarCharValue": "true" if v else "false"}  # as Athena prints a boolean
        if isinstance(v, float):
            return {"VarCharValue": f"{v:.6E}" if v >= 1000 else repr(v)}  # Athena prints both forms
        return {"VarCharValue": str(v)}

    rows = [{"Data": [{"VarCharValue": n} for n in table.column_names]}]
    rows += [{"Data": [text(v) for v in row.values()]} for row in table.to_pylist()]
    types = {
        pa.string(): "varchar",
        pa.large_string(): "varchar",
        pa.float64(): "double",
        pa.bool_(): "boolean",
    }
    info = [
        {"Name": f.name, "Label": f.name, "Type": types[f.type], "Nullable": "UNKNOWN"} for f in table.schema
    ]
    return {"rows": rows, "column_info": info}


def seed_results(moto_server, *results: dict) -> None:
    status, _ = moto_server.api(
        "POST", "/moto-api/static/athena/query-results", {"region": REGION, "results": list(results)}
    )
    assert status == 201


def executions(moto_server) -> list[dict]:
    client = moto_server.client("athena")
    ids = client.list_query_executions(WorkGroup=WORKGROUP)["QueryExecutionIds"]
    return [client.get_query_execution(QueryExecutionId=i)["QueryExecution"] for i in ids]


def athena_json(body: dict, status: int = 200) -> tuple[int, bytes, dict[str, str]]:
    return status, json.dumps(body).encode(), {"Content-Type": "application/x-amz-json-1.1"}


# --------------------------------------------------------------------------- URI, literals, SQL text


def test_parse_athena_uri():
    t = parse_athena_uri(f"athena://primary/Fleet_DB?s3_staging={STAGING}&location={LAKE}/&query_timeout=60")
    assert (t.workgroup, t.database, t.s3_staging, t.location) == ("primary", "fleet_db", STAGING, LAKE)
    assert (t.catalog, t.query_timeout, t.region) == ("AwsDataCatalog", 60.0, None)
    assert parse_athena_uri("athena://wg/db").s3_staging is None


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("athena://bad wg/db", "not a valid Athena workgroup name"),
        ("athena://wg", "not a valid Athena database name"),
        ("athena://wg/db-1", "not a valid Athena database name"),
        ("athena://wg/db?bucket=x", "unknown parameter 'bucket'"),
        ("athena://wg/db?query_timeout=soon", "query_timeout"),
        ("athena://wg/db?s3_staging=/tmp/x", "not an s3:// URI"),
        ("athena://wg/db?location=s3://Bad_Bucket/x", "not a valid S3 bucket name"),
    ],
)
def test_parse_athena_uri_rejects(uri, fragment):
    with pytest.raises(StoreConfigError) as err:
        parse_athena_uri(uri)
    assert fragment in str(err.value)


@pytest.mark.parametrize(
    ("value", "literal"),
    [
        ("retail", "'retail'"),
        ("srv-o'neil", "'srv-o''neil'"),
        ("x' OR '1'='1", "'x'' OR ''1''=''1'"),
        (2024, "2024"),
        (np.int32(7), "7"),
        (1.5, "1.5"),
        (True, "true"),
    ],
)
def test_sql_literal(value, literal):
    assert sql_literal(value) == literal


@pytest.mark.parametrize("value", [float("nan"), "a\x00b", "x" * 1100, object()])
def test_sql_literal_refuses(value):
    with pytest.raises((StoreError, ValueError, TypeError)):
        sql_literal(value)


def test_user_values_never_reach_the_sql_text():
    for q in QUERIES:
        units = [partition_value(b) for b in q.business_units]
        query = metrics_query(DB, q, units, ["cpu_p95"])
        assert query.sql.count("?") == len(query.params)
        for value in [*(q.server_ids or ()), *units]:
            assert value not in query.sql
        assert query.execution_parameters() == [sql_literal(v) for v in query.params]
    unload = unload_query(
        metrics_query(DB, QUERIES[2], ["payments"], []), "s3://athena-results/staging/capfc-unload/t1"
    )
    assert unload.sql.startswith("UNLOAD (SELECT ")
    assert unload.sql.endswith(
        ") TO 's3://athena-results/staging/capfc-unload/t1/' WITH (format = 'PARQUET')"
    )


# --------------------------------------------------------------------------- SQL on DuckDB


@pytest.mark.parametrize("q", QUERIES, ids=range(len(QUERIES)))
def test_metrics_sql_on_duckdb_matches_the_parquet_store(lake, duck, q):
    con = duck
    columns = [
        c for c in ("cpu_p95", "mem_p95", "disk_p95", "net_in_p95", "net_out_p95") if c in (q.columns or [c])
    ]
    query = metrics_query(DB, q, [partition_value(b) for b in q.business_units], columns)
    got = AthenaStore._frame(run_duck(con, query), columns)
    got = got.sort_values(["server_id", "timestamp"], ignore_index=True)
    expected = _sorted(lake["store"].read_metrics(q))
    pd.testing.assert_frame_equal(got, expected)
    if q.server_ids != ("x' OR '1'='1",):
        assert len(expected) > 0


def test_inventory_sql_on_duckdb_matches_the_parquet_store(lake, duck):
    got = run_duck(duck, inventory_query(DB)).to_pandas(types_mapper={pa.bool_(): pd.BooleanDtype()}.get)
    pd.testing.assert_frame_equal(got, lake["store"].read_inventory(), check_dtype=False)


# --------------------------------------------------------------------------- the store on moto


def test_read_inventory_through_athena(athena, lake, duck, moto_server):
    expected = run_duck(duck, inventory_query(DB))
    seed_results(moto_server, athena_rows(expected))
    got = athena.read_inventory()
    pd.testing.assert_frame_equal(got, lake["store"].read_inventory(), check_dtype=False)
    assert got["monthly_cost_usd"].dtype == np.float64
    sent = executions(moto_server)[-1]
    assert sent["Query"] == inventory_query(DB).sql
    assert sent["QueryExecutionContext"] == {"Database": DB, "Catalog": "AwsDataCatalog"}
    assert sent["ResultConfiguration"]["OutputLocation"].startswith(STAGING)
    assert "ExecutionParameters" not in sent


def test_inventory_table_defined_before_the_placement_columns_still_reads(athena, lake, duck, moto_server):
    # the query runs on a table whose DDL predates the optional columns (DuckDB stands in for Athena)
    files = run_duck(duck, inventory_query(DB))
    con = duckdb.connect()
    con.register("files", files)
    con.execute(f"CREATE SCHEMA {DB}")
    con.execute(f"CREATE VIEW {DB}.inventory AS SELECT {', '.join(INVENTORY_COLUMNS)} FROM files")
    old = run_duck(con, inventory_query(DB))
    assert old.column_names == list(INVENTORY_COLUMNS)
    seed_results(moto_server, athena_rows(old))
    got = athena.read_inventory()
    assert list(got.columns) == list(INVENTORY_COLUMNS)
    clean, report = validate_inventory(got)
    assert report.clean and clean[list(OPTIONAL_INVENTORY_COLUMNS)].isna().all().all()


def test_placement_columns_typed_from_athena_results(athena, lake, duck, moto_server):
    table = run_duck(duck, inventory_query(DB))
    n = table.num_rows
    table = table.set_column(
        table.schema.get_field_index("pinned"),
        "pinned",
        pa.array([True, False] + [None] * (n - 2), pa.bool_()),
    )
    seed_results(moto_server, athena_rows(table))
    got = athena.read_inventory()
    assert str(got["pinned"].dtype) == "boolean"
    assert got["pinned"].tolist()[:2] == [True, False] and got["pinned"].isna().sum() == n - 2


@pytest.mark.parametrize(
    "q", [None, QUERIES[1], QUERIES[2], QUERIES[3]], ids=["all", "start", "servers", "window"]
)
def test_read_metrics_through_athena_unload(athena, lake, duck, moto_server, q):
    tokens = iter(["tok-a", "tok-b"])
    athena.athena.token = lambda: next(tokens)
    # What Athena would write: the SELECT's rows as Parquet files under the UNLOAD prefix.
    columns = [
        c
        for c in ("cpu_p95", "mem_p95", "disk_p95", "net_in_p95", "net_out_p95")
        if q is None or q.columns is None or c in q.columns
    ]
    wanted = q.business_units if q else lake["inventory"]["business_unit"].unique()
    units = sorted({partition_value(b) for b in wanted})
    select = metrics_query(DB, q or MetricsQuery(), units, columns)
    rows = run_duck(duck, select)
    store: S3Store = lake["store"]
    prefix = "athena-results/staging/capfc-unload/tok-a"
    half = rows.num_rows // 2
    for i, part in enumerate([rows.slice(0, half), rows.slice(half)]):
        pq.write_table(part, f"{prefix}/20240301_120000_00001_abcde_{i}", filesystem=store.fs)

    got = athena.read_metrics(q)
    pd.testing.assert_frame_equal(_sorted(got), _sorted(store.read_metrics(q)))
    sent = executions(moto_server)[-1]
    assert sent["Query"] == unload_query(select, f"s3://{prefix}").sql
    assert sent["ExecutionParameters"] == select.execution_parameters()
    assert store.fs.get_file_info(prefix).type == pafs.FileType.NotFound, "results must be cleaned up"


def test_empty_unload_gives_an_empty_contract_frame(athena, lake):
    athena.athena.token = lambda: "tok-empty"
    got = athena.read_metrics(MetricsQuery.of(business_units=["retail"], start="2030-01-01"))
    assert len(got) == 0
    assert list(got.columns) == [
        "server_id",
        "timestamp",
        "cpu_p95",
        "mem_p95",
        "disk_p95",
        "net_in_p95",
        "net_out_p95",
    ]
    assert str(got["timestamp"].dtype) == "datetime64[us, UTC]"
    assert athena.read_metrics(MetricsQuery.of(server_ids=[])).empty


def test_empty_inventory_is_no_data(athena, moto_server):
    seed_results(moto_server, {"rows": [], "column_info": []})
    with pytest.raises(NoDataError, match=r"fleet\.inventory is empty"):
        athena.read_inventory()


def test_polling_backs_off_until_the_query_succeeds(athena, transitions, moto_server):
    transitions(2)  # QUEUED for 2 polls, RUNNING for 2, then SUCCEEDED
    sleeps: list[float] = []
    athena.athena.sleep = sleeps.append
    seed_results(
        moto_server,
        {"rows": [{"Data": [{"VarCharValue": "1"}]}], "column_info": [{"Name": "n", "Type": "integer"}]},
    )
    table = athena.athena.fetch(SqlQuery("SELECT 1 AS n"), "probe")
    assert table.to_pylist() == [{"n": 1}]
    assert sleeps == [0.25, 0.5, 1.0]


def test_query_timeout_cancels_the_query(athena, transitions, moto_server):
    transitions(10**6)  # never leaves QUEUED
    now = [0.0]
    sleeps: list[float] = []

    def sleep(s: float) -> None:
        sleeps.append(s)
        now[0] += s

    client = athena.athena
    client.sleep, client.clock, client.timeout = sleep, (lambda: now[0]), 6.0
    with pytest.raises(AthenaTimeoutError) as err:
        client.execute(SqlQuery("SELECT 1"), "a slow query")
    assert isinstance(err.value, StoreUnavailableError)
    query_id = executions(moto_server)[-1]["QueryExecutionId"]
    assert query_id in str(err.value)
    assert "after 6 s" in str(err.value)
    assert sleeps == [0.25, 0.5, 1.0, 2.0, 2.25]  # doubling, the last one cut to the deadline
    state = moto_server.client("athena").get_query_execution(QueryExecutionId=query_id)
    assert state["QueryExecution"]["Status"]["State"] == "CANCELLED"


def test_query_cancelled_elsewhere(athena, transitions, moto_server):
    transitions(10**6)
    operator = moto_server.client("athena")

    def someone_cancels(_: float) -> None:
        operator.stop_query_execution(QueryExecutionId=executions(moto_server)[-1]["QueryExecutionId"])

    athena.athena.sleep = someone_cancels
    with pytest.raises(AthenaQueryCancelledError, match="was cancelled"):
        athena.athena.execute(SqlQuery("SELECT 1"), "a query someone stops")


def test_missing_workgroup(env, moto_server):
    with pytest.raises(WorkgroupNotFoundError, match="'nope' does not exist"):
        open_store(URI.replace(f"//{WORKGROUP}/", "//nope/"), **FAST)
    client = AthenaClient(
        moto_server.client("athena"), workgroup="nope", database=DB, output_location=STAGING
    )
    with pytest.raises(WorkgroupNotFoundError, match="'nope' does not exist"):
        client.execute(SqlQuery("SELECT 1"), "probe")


def test_missing_result_location(env, moto_server):
    moto_server.client("athena").create_work_group(Name="no-output", Configuration={})
    with pytest.raises(StoreConfigError, match=r"add \?s3_staging="):
        open_store(f"athena://no-output/{DB}?location={LAKE}", **FAST)


def test_table_location_from_glue(env, moto_server):
    glue = moto_server.client("glue")
    glue.create_database(DatabaseInput={"Name": "from_glue"})
    with pytest.raises(StoreConfigError, match=r"add \?location=s3://bucket/prefix"):
        open_store(f"athena://{WORKGROUP}/from_glue", **FAST)
    glue.create_table(
        DatabaseName="from_glue",
        TableInput={"Name": "inventory", "StorageDescriptor": {"Location": f"{LAKE}/inventory/"}},
    )
    store = open_store(f"athena://{WORKGROUP}/from_glue", **FAST)  # staging from the workgroup
    assert store.tables.uri == LAKE
    assert store.staging.uri == STAGING.rstrip("/")
    assert store.latest_run_id() == "20240301T120000Z-a1b2c3"


# --------------------------------------------------------------------------- failures over the wire


@pytest.fixture(scope="module")
def shared_proxy(moto_server, lake) -> Iterator[tuple[AthenaStore, FaultProxy]]:
    proxy = FaultProxy(moto_server.url)
    store = open_with_env(proxy.url, URI)
    yield store, proxy
    proxy.stop()


@pytest.fixture
def proxied(shared_proxy) -> tuple[AthenaStore, FaultProxy]:
    """A store whose every Athena/S3 call goes through a fault proxy (reset for each test)."""
    store, proxy = shared_proxy
    proxy.reset()
    store.athena.sleep = lambda s: None
    return store, proxy


def test_access_denied_is_not_retried(proxied):
    store, proxy = proxied
    message = "User: arn:aws:iam::123456789012:user/analyst is not authorized to perform: athena:StartQueryExecution"
    proxy.inject(
        *athena_json({"__type": "AccessDeniedException", "Message": message}, 400)[:2],
        headers={"Content-Type": "application/x-amz-json-1.1"},
        match="AmazonAthena.StartQueryExecution",
    )
    with pytest.raises(StoreAccessDeniedError) as err:
        store.athena.execute(SqlQuery("SELECT 1"), "probe")
    assert f"access denied to Athena workgroup '{WORKGROUP}'" in str(err.value)
    assert "athena:StartQueryExecution" in str(err.value)
    assert sum(r.endswith("StartQueryExecution") for r in proxy.requests) == 1


def test_throttled_api_calls_are_retried(proxied):
    store, proxy = proxied
    status, body, headers = athena_json(
        {"__type": "TooManyRequestsException", "Message": "Rate exceeded"}, 400
    )
    proxy.inject(status, body, headers=headers, match="AmazonAthena.StartQueryExecution", times=2)
    n = len(proxy.requests)
    assert store.athena.execute(SqlQuery("SELECT 1"), "probe")["Status"]["State"] == "SUCCEEDED"
    assert len(proxy.requests) - n == 4  # 3 starts (2 throttled) + 1 poll


def failed(reason: str, retryable: bool = False, state: str = "FAILED") -> tuple[int, bytes, dict[str, str]]:
    return athena_json(
        {
            "QueryExecution": {
                "QueryExecutionId": "q-123",
                "Status": {
                    "State": state,
                    "StateChangeReason": reason,
                    "AthenaError": {"ErrorCategory": 2, "ErrorType": 1301, "Retryable": retryable},
                },
            }
        }
    )


@pytest.mark.parametrize(
    ("reason", "error", "fragment"),
    [
        (
            "TABLE_NOT_FOUND: line 1:15: Table 'awsdatacatalog.fleet.inventory' does not exist",
            AthenaTableNotFoundError,
            "python -m forecasting athena-ddl",
        ),
        (
            "Access Denied (Service: Amazon S3; Status Code: 403; Error Code: AccessDenied)",
            StoreAccessDeniedError,
            "s3:GetObject",
        ),
        ("COLUMN_NOT_FOUND: line 1:8: Column 'cpu' cannot be resolved", AthenaQueryError, "COLUMN_NOT_FOUND"),
    ],
)
def test_failed_queries_become_clear_errors(proxied, reason, error, fragment):
    store, proxy = proxied
    status, body, headers = failed(reason)
    proxy.inject(status, body, headers=headers, match="AmazonAthena.GetQueryExecution")
    with pytest.raises(error) as err:
        store.athena.execute(SqlQuery("SELECT 1"), "probe")
    assert fragment in str(err.value)
    assert f"workgroup '{WORKGROUP}'" in str(err.value)


def test_retryable_failure_is_resubmitted(proxied):
    store, proxy = proxied
    status, body, headers = failed("HIVE_CURSOR_ERROR: Please reduce your request rate.", retryable=True)
    proxy.inject(status, body, headers=headers, match="AmazonAthena.GetQueryExecution")
    assert store.athena.execute(SqlQuery("SELECT 1"), "probe")["Status"]["State"] == "SUCCEEDED"
    assert sum(r.endswith("AmazonAthena.StartQueryExecution") for r in proxy.requests) == 2


def test_retryable_failure_gives_up(proxied):
    store, proxy = proxied
    status, body, headers = failed("INTERNAL_ERROR_QUERY_ENGINE", retryable=True)
    proxy.inject(status, body, headers=headers, match="AmazonAthena.GetQueryExecution", times=3)
    with pytest.raises(StoreUnavailableError, match="gave up after 3 attempts"):
        store.athena.execute(SqlQuery("SELECT 1"), "probe")


# --------------------------------------------------------------------------- results typing


def test_results_to_arrow_types_and_nulls():
    pages = [
        {
            "ResultSet": {
                "ResultSetMetadata": {
                    "ColumnInfo": [
                        {"Name": "s", "Type": "varchar"},
                        {"Name": "n", "Type": "bigint"},
                        {"Name": "x", "Type": "double"},
                        {"Name": "t", "Type": "timestamp"},
                        {"Name": "b", "Type": "boolean"},
                    ]
                },
                "Rows": [
                    {"Data": [{"VarCharValue": v} for v in ("s", "n", "x", "t", "b")]},
                    {
                        "Data": [
                            {"VarCharValue": "a"},
                            {"VarCharValue": "1"},
                            {"VarCharValue": "1.5E1"},
                            {"VarCharValue": "2024-01-01 00:00:00.000"},
                            {"VarCharValue": "true"},
                        ]
                    },
                ],
            }
        },
        {"ResultSet": {"Rows": [{"Data": [{"VarCharValue": ""}, {}, {}, {}, {}]}]}},
    ]
    t = results_to_arrow(pages)
    assert t.schema.types == [pa.string(), pa.int64(), pa.float64(), pa.timestamp("us"), pa.bool_()]
    assert t.to_pylist()[1] == {"s": "", "n": None, "x": None, "t": None, "b": None}
    assert t["x"][0].as_py() == 15.0
    bad = [
        {
            "ResultSet": {
                "ResultSetMetadata": {"ColumnInfo": [{"Name": "n", "Type": "bigint"}]},
                "Rows": [{"Data": [{"VarCharValue": "n"}]}, {"Data": [{"VarCharValue": "x"}]}],
            }
        }
    ]
    with pytest.raises(StoreError, match="not a bigint"):
        results_to_arrow(bad)


# --------------------------------------------------------------------------- writes, plan, DDL


def test_writes_and_plan_go_to_the_tables_location(env, athena, lake, moto_server):
    """athena:// batch job → plan on S3 → an s3:// reader (the app) sees it, with symlinks for Athena."""
    run_id = "20240302T080000Z-0f0f0f"
    tables = demo_plan(lake["inventory"], run_no=2)
    athena.publish_run(run_id, tables, {"run_id": run_id})
    reader = open_store(LAKE, **FAST)
    assert reader.latest_run_id() == run_id
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(reader.read_run_table(run_id, name), frame)
        assert athena.read_run_table(run_id, name) is not None
        # the symlink sits where the table's projection template looks, and names the data file
        link = f"athena-lake/fleet/athena-manifests/plan_{name}/run_id={run_id}/symlink.txt"
        with reader.fs.open_input_stream(link) as f:
            target = f.read().decode().strip()
        assert target == f"{LAKE}/runs/{run_id}/{name}.parquet"
        assert reader.fs.get_file_info(target.removeprefix("s3://")).type == pafs.FileType.File
    assert athena.list_runs() == reader.list_runs()
    assert athena.read_manifest(run_id) == {"run_id": run_id}
    assert athena.has_data()
    assert athena.read_store_info() == lake["store"].read_store_info()


def test_athena_store_writes_the_same_layout(env, moto_server, lake):
    moto_server.client("s3").create_bucket(Bucket="athena-fresh")
    store = open_store(f"athena://{WORKGROUP}/{DB}?s3_staging={STAGING}&location=s3://athena-fresh/p", **FAST)
    store.write_inventory(lake["inventory"])
    store.write_metrics(lake["metrics"], lake["inventory"], freq="daily")
    keys = moto_server.client("s3").list_objects_v2(Bucket="athena-fresh")["Contents"]
    files = sorted(k["Key"].removeprefix("p/") for k in keys if not k["Key"].endswith("/"))
    theirs = moto_server.client("s3").list_objects_v2(Bucket="athena-lake", Prefix="fleet/inventory/")[
        "Contents"
    ]
    assert "inventory/servers.parquet" in files
    assert "metrics/business_unit=R%26D%20Labs/year=2024/part-0.parquet" in files
    assert [k["Key"] for k in theirs if not k["Key"].endswith("/")] == ["fleet/inventory/servers.parquet"]
    pd.testing.assert_frame_equal(_sorted(store.tables.read_metrics()), _sorted(lake["store"].read_metrics()))


def test_ddl_matches_the_files(athena, lake):
    schemas = inspect_schemas(athena.tables)
    assert {"inventory", "metrics", "forecasts", "risk"} <= set(schemas)
    statements = ddl(DB, LAKE, schemas=schemas)
    assert statements[0] == f"CREATE DATABASE IF NOT EXISTS `{DB}`"
    by_table = {s.split("`")[3]: s for s in statements[1:]}
    assert set(by_table) == {
        "inventory",
        "metrics",
        "plan_forecasts",
        "plan_risk",
        "plan_recommendations",
        "plan_consolidation",
        "plan_backtest",
    }
    # every file column is declared with the type that reads it
    for table, key in [("inventory", "inventory"), ("metrics", "metrics"), ("plan_risk", "risk")]:
        for field in schemas[key]:
            if field.name in ("business_unit", "year") and table == "metrics":
                continue
            assert f"`{field.name}` {hive_type(field.type, field.name)}" in by_table[table]
    metrics = by_table["metrics"]
    assert "`cpu_p95` float" in metrics and "`timestamp` timestamp" in metrics
    assert "PARTITIONED BY (`business_unit` string, `year` int)" in metrics
    assert "'projection.business_unit.type' = 'injected'" in metrics
    assert "'projection.year.range' = '2000,2099'" in metrics
    # the projection template, filled with each partition present, is a prefix that exists
    template = metrics.split("'storage.location.template' = '")[1].split("'")[0]
    store: S3Store = lake["store"]
    dirs = store.fs.get_file_info(pafs.FileSelector(f"{store.root}/metrics", recursive=True))
    found = {i.path for i in dirs if i.base_name.startswith("year=")}
    assert found
    for path in found:
        bu, year = path.split("business_unit=")[1].split("/year=")
        filled = template.replace("${business_unit}", bu).replace("${year}", year)
        assert filled == f"s3://{path}/"
    assert "SymlinkTextInputFormat" in by_table["plan_forecasts"]
    assert "'projection.run_id.type' = 'injected'" in by_table["plan_forecasts"]


def test_ddl_enum_projection_and_validation():
    text = "\n".join(ddl(DB, LAKE, business_units=["retail", "R&D Labs", "retail"]))
    assert "'projection.business_unit.type' = 'enum'" in text
    assert "'projection.business_unit.values' = 'R%26D%20Labs,retail'" in text
    with pytest.raises(StoreConfigError, match="must not contain quotes"):
        ddl(DB, "s3://lake/it's")
    with pytest.raises(StoreConfigError, match="valid Athena database name"):
        ddl("Fleet-DB", LAKE)
    with pytest.raises(StoreError, match="does not map"):
        hive_type(pa.struct([("a", pa.int8())]), "t.c")


def test_athena_ddl_script(athena, lake):
    offline = athena_ddl(f"athena://{WORKGROUP}/{DB}?location={LAKE}", inspect=False)
    assert offline.startswith("-- Capacity Forecaster tables")
    assert offline.count(";\n") == 8
    online = athena_ddl(URI, store=athena)
    assert "`n_cutoffs` bigint" in online  # typed from the published run's file
    with pytest.raises(StoreConfigError, match="needs \\?location="):
        athena_ddl(f"athena://{WORKGROUP}/{DB}", inspect=False)


def test_create_tables_runs_the_ddl(athena, moto_server):
    statements = athena.create_tables()
    sent = [e["Query"] for e in executions(moto_server)][-len(statements) :]
    assert sent == statements
    assert moto_server.client("athena").get_database(CatalogName="AwsDataCatalog", DatabaseName=DB)


def test_no_metric_partitions_is_no_data(env, moto_server):
    moto_server.client("s3").create_bucket(Bucket="athena-empty")
    store = open_store(f"athena://{WORKGROUP}/{DB}?s3_staging={STAGING}&location=s3://athena-empty/p", **FAST)
    with pytest.raises(NoDataError, match="no metrics under s3://athena-empty/p/metrics"):
        store.read_metrics()
    assert not store.has_data()


def test_unique_unload_prefixes():
    client = AthenaClient(None, workgroup="wg", database="db")
    tokens = {client.token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) == 32 for t in itertools.islice(tokens, 5))


def test_long_server_lists_are_filtered_after_the_read(athena, lake, moto_server, monkeypatch):
    """Beyond MAX_IN_LIST ids the SQL reads the units' rows and the store filters the frame."""
    import forecasting.sources.athena as athena_module

    monkeypatch.setattr(athena_module, "MAX_IN_LIST", 1)
    q = MetricsQuery.of(business_units=["R&D Labs"], server_ids=["srv-o'neil", "srv-0003"])
    select = metrics_query(
        DB, q, [partition_value("R&D Labs")], ["cpu_p95", "mem_p95", "disk_p95", "net_in_p95", "net_out_p95"]
    )
    assert '"server_id" IN' not in select.sql
    athena.athena.token = lambda: "tok-long"
    store: S3Store = lake["store"]
    everything = store.read_metrics(MetricsQuery.of(business_units=["R&D Labs"]))
    rows = pa.Table.from_pandas(everything, preserve_index=False)
    rows = rows.set_column(1, "timestamp", rows["timestamp"].cast(pa.timestamp("us")))
    pq.write_table(rows, "athena-results/staging/capfc-unload/tok-long/part-0", filesystem=store.fs)
    got = athena.read_metrics(q)
    pd.testing.assert_frame_equal(_sorted(got), _sorted(store.read_metrics(q)))
    assert set(got["server_id"]) == {"srv-o'neil", "srv-0003"} & set(everything["server_id"])
    assert (
        executions(moto_server)[-1]["Query"]
        == unload_query(select, "s3://athena-results/staging/capfc-unload/tok-long").sql
    )


def test_selects_ask_athena_to_reuse_recent_results_and_unloads_do_not(athena, lake, duck, moto_server):
    """Athena offers result reuse per query (not per workgroup): the small SELECTs a run repeats
    ask for it; an UNLOAD writes new files and must not (moto records no reuse: the request is
    read from botocore's own parameter hook)."""
    sent: list[dict] = []
    athena.athena.client.meta.events.register(
        "provide-client-params.athena.StartQueryExecution", lambda params, **_: sent.append(dict(params))
    )
    seed_results(moto_server, athena_rows(run_duck(duck, inventory_query(DB))))
    athena.read_inventory()
    reuse = sent[-1]["ResultReuseConfiguration"]["ResultReuseByAgeConfiguration"]
    assert reuse == {"Enabled": True, "MaxAgeInMinutes": 60}
    athena.athena.result_reuse_minutes = 0
    seed_results(moto_server, athena_rows(run_duck(duck, inventory_query(DB))))
    athena.read_inventory()
    assert "ResultReuseConfiguration" not in sent[-1]
    athena.athena.result_reuse_minutes = 60
    athena.athena.token = lambda: "tok-reuse"
    athena.read_metrics(MetricsQuery(business_units=("no-such-unit",)))
    assert sent[-1]["QueryString"].startswith("UNLOAD") and "ResultReuseConfiguration" not in sent[-1]
