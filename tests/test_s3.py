"""S3 store against a real S3-protocol server (SeaweedFS, started by this session) over HTTP.

No in-process patching: faults come from the server itself (missing bucket, refused
identities) or from a proxy in front of it (slow answers, 503s, resets, the server dying).
"""

from __future__ import annotations

import itertools
import threading
import time
from pathlib import Path

import pandas as pd
import pyarrow.fs as pafs
import pytest

from forecasting.sources import MetricsQuery, NoDataError, ParquetStore, StoreError, open_store
from forecasting.sources.s3 import (
    BucketNotFoundError,
    CredentialsError,
    S3Connection,
    S3Store,
    StoreAccessDeniedError,
    StoreConfigError,
    StoreUnavailableError,
    classify_arrow_error,
    open_s3_store,
    parse_s3_uri,
    resolve_endpoint,
)
from tests.s3server import (
    ADMIN,
    NOBODY,
    READER,
    FaultProxy,
    MotoServer,
    aws_env,
    demo_fleet,
    demo_plan,
    s3_error,
    seaweed,
)

__all__ = ["aws_env", "seaweed"]  # fixtures, imported for pytest

FAST = {"connect_timeout": 1.0, "request_timeout": 2.0, "max_attempts": 3}


@pytest.fixture(scope="module")
def fleet() -> tuple[pd.DataFrame, pd.DataFrame]:
    return demo_fleet()


@pytest.fixture(scope="module")
def shared_bucket(seaweed) -> str:
    return seaweed.new_bucket()  # a new bucket costs SeaweedFS ~1 s: share one, prefix per test


@pytest.fixture
def bucket(seaweed, aws_env, shared_bucket) -> str:
    aws_env(ADMIN, seaweed.url)
    return shared_bucket


_prefixes = itertools.count()


@pytest.fixture
def store(bucket) -> S3Store:
    s = open_store(f"s3://{bucket}/fleet/t{next(_prefixes)}", **FAST)
    assert isinstance(s, S3Store)
    return s


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    """Stores return rows grouped by server in time order; compare in one canonical order."""
    return frame.sort_values(["server_id", "timestamp"], ignore_index=True)


def local_twin(tmp_path: Path) -> ParquetStore:
    root = tmp_path / "local"
    root.mkdir()
    return ParquetStore(pafs.LocalFileSystem(), root.as_posix())


def s3_keys(seaweed, bucket: str, prefix: str) -> list[str]:
    pages = seaweed.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix + "/")
    keys = [o["Key"][len(prefix) + 1 :] for page in pages for o in page.get("Contents", [])]
    return sorted(k for k in keys if k and not k.endswith("/"))


def local_files(root: str) -> list[str]:
    base = Path(root)
    return sorted(p.relative_to(base).as_posix() for p in base.rglob("*") if p.is_file())


# --------------------------------------------------------------------------- URIs and endpoints


@pytest.mark.parametrize(
    ("uri", "bucket", "prefix"),
    [
        ("s3://lake", "lake", ""),
        ("s3://lake/", "lake", ""),
        ("s3://my.lake-01/fleet/prod/", "my.lake-01", "fleet/prod"),
        ("s3://lake/a=b/c_d(1)", "lake", "a=b/c_d(1)"),
    ],
)
def test_parse_s3_uri(uri, bucket, prefix):
    loc = parse_s3_uri(uri)
    assert (loc.bucket, loc.prefix) == (bucket, prefix)
    assert loc.uri == f"s3://{bucket}" + (f"/{prefix}" if prefix else "")


@pytest.mark.parametrize(
    ("uri", "fragment"),
    [
        ("s3://Lake/x", "not a valid S3 bucket name"),
        ("s3://a/x", "not a valid S3 bucket name"),
        ("s3://lake/x y", "S3-safe"),
        ("s3://lake/a/../b", "'..'"),
        ("s3://lake/a//b", "empty"),
        ("lake/x", "not an s3:// URI"),
    ],
)
def test_parse_s3_uri_rejects_bad_uris(uri, fragment):
    with pytest.raises(StoreConfigError) as err:
        parse_s3_uri(uri)
    assert fragment in str(err.value)


def test_credentials_in_uri_are_refused_without_echoing_them():
    with pytest.raises(StoreConfigError) as err:
        parse_s3_uri("s3://AKIDX:topsecretvalue@lake/prefix")
    assert "must not contain credentials" in str(err.value)
    assert "topsecretvalue" not in str(err.value)


def test_endpoint_resolution_follows_the_standard_variables():
    env = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000", "AWS_ENDPOINT_URL_S3": "https://s3.internal:8443"}
    assert resolve_endpoint(None, {}) is None
    assert resolve_endpoint("http://minio:9000", env).authority == "minio:9000"  # the setting wins
    assert resolve_endpoint(None, env).url == "https://s3.internal:8443"  # service-specific next
    only_generic = {"AWS_ENDPOINT_URL": "http://127.0.0.1:9000/"}
    ep = resolve_endpoint(None, only_generic)
    assert (ep.scheme, ep.authority) == ("http", "127.0.0.1:9000")
    assert resolve_endpoint(None, {**env, "AWS_IGNORE_CONFIGURED_ENDPOINT_URLS": "true"}) is None


@pytest.mark.parametrize(
    ("value", "fragment"),
    [
        ("minio:9000", "http(s)://host[:port]"),
        ("http://user:pw@minio:9000", "must not contain credentials"),
        ("http://minio:9000/bucket", "without a path"),
        ("http://minio:99999", "invalid port"),
    ],
)
def test_bad_endpoints_name_their_source(value, fragment):
    with pytest.raises(StoreConfigError) as err:
        resolve_endpoint(None, {"AWS_ENDPOINT_URL": value})
    assert "AWS_ENDPOINT_URL" in str(err.value)
    assert fragment in str(err.value)
    assert "pw@" not in str(err.value)


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("AWS Error NO_SUCH_BUCKET during GetObject operation", "bucket"),
        ("Bucket 'x' not found. To create buckets, enable ...", "bucket"),
        ("AWS Error ACCESS_DENIED during HeadObject operation: No response body.", "access"),
        ("AWS Error INVALID_ACCESS_KEY_ID during ListObjectsV2", "credentials"),
        ("curlCode: 28, Timeout was reached", "timeout"),
        ("AWS Error NETWORK_CONNECTION during GetObject: curlCode: 7, Couldn't connect", "unavailable"),
        ("AWS Error SLOW_DOWN during PutObject operation", "unavailable"),
        ("Parquet magic bytes not found in footer", None),
    ],
)
def test_arrow_error_classification(text, kind):
    assert classify_arrow_error(text) == kind


# --------------------------------------------------------------------------- round trip


def test_store_round_trip_matches_local_store(store, fleet, tmp_path, seaweed, bucket):
    inventory, metrics = fleet
    local = local_twin(tmp_path)
    assert not store.has_data()
    for s in (store, local):
        s.write_inventory(inventory)
        s.write_metrics(metrics, inventory, freq="daily")
    assert store.has_data()

    pd.testing.assert_frame_equal(store.read_inventory(), local.read_inventory())
    pd.testing.assert_frame_equal(store.read_inventory(), inventory)
    full = store.read_metrics()
    pd.testing.assert_frame_equal(_sorted(full), _sorted(local.read_metrics()))
    pd.testing.assert_frame_equal(
        _sorted(full), _sorted(metrics), check_dtype=False, rtol=1e-6
    )  # float32 on disk
    assert store.read_store_info() == local.read_store_info()
    for q in [
        MetricsQuery.of(business_units=["R&D Labs"]),
        MetricsQuery.of(server_ids=["srv-o'neil", "srv-0002"], columns=["cpu_p95"]),
        MetricsQuery.of(start="2023-12-30", end="2024-01-03"),
        MetricsQuery.of(business_units=["payments"], start="2024-01-01"),
    ]:
        got = store.read_metrics(q)
        assert len(got) > 0
        pd.testing.assert_frame_equal(_sorted(got), _sorted(local.read_metrics(q)))

    # Same objects, same names: the S3 layout is the local layout.
    assert s3_keys(seaweed, bucket, store.location.prefix) == local_files(local.root)
    assert "metrics/business_unit=R%26D%20Labs/year=2024/part-0.parquet" in local_files(local.root)


def test_merge_and_overwrite_on_s3_match_local(store, fleet, tmp_path, seaweed, bucket):
    inventory, metrics = fleet
    local = local_twin(tmp_path)
    first = metrics[metrics["timestamp"] < "2024-01-15"]
    later = metrics[metrics["timestamp"] >= "2024-01-10"].copy()
    later["cpu_p95"] = 50.0
    for s in (store, local):
        s.write_inventory(inventory)
        s.write_metrics(first, inventory, freq="daily")
        s.write_metrics(later, inventory, freq="daily", mode="merge")
    merged = store.read_metrics()
    pd.testing.assert_frame_equal(_sorted(merged), _sorted(local.read_metrics()))
    assert len(merged) == len(metrics)
    assert (merged.loc[merged["timestamp"] >= "2024-01-10", "cpu_p95"] == 50.0).all()
    assert store.read_store_info() == local.read_store_info()

    # Overwrite with one business unit drops the others' partitions, as locally.
    only = inventory[inventory["business_unit"] == "retail"]
    part = metrics[metrics["server_id"].isin(only["server_id"])]
    for s in (store, local):
        s.write_metrics(part, inventory, freq="daily")
    pd.testing.assert_frame_equal(_sorted(store.read_metrics()), _sorted(local.read_metrics()))
    assert s3_keys(seaweed, bucket, store.location.prefix) == local_files(local.root)


def test_publish_run_and_read_plan(store, fleet):
    inventory, _ = fleet
    assert store.latest_run_id() is None
    assert store.list_runs() == []
    tables = demo_plan(inventory)
    store.publish_run("20240301T120000Z-abc123", tables, {"run_id": "20240301T120000Z-abc123", "rows": 1})
    assert store.latest_run_id() == "20240301T120000Z-abc123"
    assert store.list_runs() == ["20240301T120000Z-abc123"]
    assert store.read_manifest("20240301T120000Z-abc123")["rows"] == 1
    for name, frame in tables.items():
        pd.testing.assert_frame_equal(store.read_run_table("20240301T120000Z-abc123", name), frame)
    some = store.read_run_table("20240301T120000Z-abc123", "forecasts", server_ids=["srv-o'neil"])
    assert set(some["server_id"]) == {"srv-o'neil"}
    with pytest.raises(StoreError, match="no manifest"):
        store.read_manifest("20240301T120000Z-ffffff")


def test_columns_are_read_as_asked_on_s3(store):
    from tests.test_store import assert_columns_are_read_as_asked

    assert_columns_are_read_as_asked(store)


def test_reader_polling_latest_never_sees_a_partial_run(store, fleet):
    """A reader that sees a run id in LATEST finds every table of that run, complete."""
    inventory, _ = fleet
    reader = open_store(store.uri, **FAST)
    runs = [f"20240301T1200{i:02d}Z-{i:06x}" for i in range(4)]
    done = threading.Event()
    seen: dict[str, int] = {}
    problems: list[str] = []

    def publish() -> None:
        try:
            for i, run_id in enumerate(runs):
                tables = demo_plan(inventory, run_no=i)
                rows = {k: len(v) for k, v in tables.items()}
                store.publish_run(run_id, tables, {"run_id": run_id, "rows": rows})
        finally:
            done.set()

    def read() -> None:
        while not done.is_set() or not seen:
            run_id = reader.latest_run_id()
            if run_id is None:
                continue
            manifest = reader.read_manifest(run_id)
            for name, n in manifest["rows"].items():
                table = reader.read_run_table(run_id, name)
                if table is None or len(table) != n:
                    problems.append(f"{run_id}/{name}: {None if table is None else len(table)} != {n}")
            seen[run_id] = seen.get(run_id, 0) + 1

    threads = [threading.Thread(target=publish), threading.Thread(target=read)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not problems
    assert len(seen) >= 2, f"the reader should have watched LATEST move (saw {seen})"
    assert reader.latest_run_id() == runs[-1]
    assert reader.list_runs() == runs


def test_endpoint_from_aws_endpoint_url_or_option(seaweed, aws_env, bucket):
    uri = f"s3://{bucket}/p"
    assert not open_store(uri, **FAST).has_data()  # endpoint from AWS_ENDPOINT_URL
    aws_env(ADMIN, None)
    s = open_store(uri, endpoint_url=seaweed.url, **FAST)  # from the setting
    assert s.connection.describe() == f"endpoint {seaweed.url}"
    assert not s.has_data()


# --------------------------------------------------------------------------- permanent failures


def test_missing_bucket_fails_fast_with_a_clear_message(seaweed, aws_env):
    proxy = FaultProxy(seaweed.url)
    try:
        aws_env(ADMIN, proxy.url)
        t0 = time.monotonic()
        with pytest.raises(BucketNotFoundError) as err:
            open_store("s3://no-such-bucket-here/fleet", **{**FAST, "max_attempts": 5})
        assert time.monotonic() - t0 < 2
        msg = str(err.value)
        assert "'no-such-bucket-here' does not exist" in msg
        assert "aws s3 mb s3://no-such-bucket-here" in msg
        assert proxy.requests == ["HEAD /no-such-bucket-here"], "a missing bucket must not be retried"
    finally:
        proxy.stop()


def test_bucket_deleted_after_open_is_reported_as_such(seaweed, aws_env, fleet):
    inventory, _ = fleet
    aws_env(ADMIN, seaweed.url)
    doomed = seaweed.new_bucket()
    store = open_store(f"s3://{doomed}/fleet", **FAST)
    store.write_inventory(inventory)
    for page in seaweed.client.get_paginator("list_objects_v2").paginate(Bucket=doomed):
        for obj in page.get("Contents", []):
            seaweed.client.delete_object(Bucket=doomed, Key=obj["Key"])
    seaweed.client.delete_bucket(Bucket=doomed)
    with pytest.raises(BucketNotFoundError, match=doomed):
        store.read_inventory()
    with pytest.raises(BucketNotFoundError, match=doomed):
        store.write_inventory(inventory)


def test_identity_without_permission_is_refused_at_open(seaweed, aws_env, bucket):
    aws_env(NOBODY, seaweed.url)
    with pytest.raises(StoreAccessDeniedError) as err:
        open_store(f"s3://{bucket}/fleet", **FAST)
    msg = str(err.value)
    assert f"s3://{bucket}" in msg
    assert f"s3:ListBucket on arn:aws:s3:::{bucket}" in msg
    assert NOBODY[1] not in msg


def test_read_only_identity_reads_but_cannot_write(seaweed, aws_env, store, fleet, bucket, caplog):
    inventory, metrics = fleet
    store.write_inventory(inventory)
    aws_env(READER, seaweed.url)
    reader = open_store(store.uri, **FAST)
    pd.testing.assert_frame_equal(reader.read_inventory(), inventory)
    for write in (
        lambda: reader.write_inventory(inventory),
        lambda: reader.write_metrics(metrics, inventory, freq="daily"),
        lambda: reader.publish_run("20240301T120000Z-abc123", demo_plan(inventory), {}),
    ):
        with pytest.raises(StoreAccessDeniedError) as err:
            write()
        assert f"access denied to {store.uri}" in str(err.value)
        assert "s3:PutObject" in str(err.value)
        assert READER[1] not in str(err.value)
    assert READER[1] not in caplog.text


def test_wrong_secret_is_reported_as_refused_credentials(seaweed, aws_env, bucket):
    aws_env((ADMIN[0], "not-the-right-secret"), seaweed.url)
    with pytest.raises(StoreAccessDeniedError) as err:
        open_store(f"s3://{bucket}/fleet", **FAST)
    assert "credentials refused" in str(err.value) or "access denied" in str(err.value)
    assert "not-the-right-secret" not in str(err.value)


def test_no_credentials_in_the_chain(aws_env):
    aws_env(None, "http://127.0.0.1:9")
    with pytest.raises(CredentialsError, match="no AWS credentials found in the standard chain"):
        open_store("s3://lake/fleet", **FAST)


# --------------------------------------------------------------------------- transient failures


def test_throttling_and_5xx_are_retried_with_backoff(seaweed, aws_env, store, fleet):
    inventory, _ = fleet
    store.write_inventory(inventory)
    proxy = FaultProxy(seaweed.url)
    try:
        aws_env(ADMIN, proxy.url)
        # boto3 side (bucket check at open): two 503 SlowDown, then the real answer.
        status, body, headers = s3_error("SlowDown", "Please reduce your request rate.", 503)
        proxy.inject(status, b"", headers=headers, match="HEAD /", times=2)
        s = open_store(store.uri, **FAST)
        assert [r.split()[0] for r in proxy.requests] == ["HEAD", "HEAD", "HEAD"]
        # pyarrow side (data reads): a 500 and a 503 on the object, then success.
        n = len(proxy.requests)
        proxy.inject(500, b"", headers=headers, match="servers.parquet", times=1)
        proxy.inject(status, body, headers=headers, match="servers.parquet", times=1)
        pd.testing.assert_frame_equal(s.read_inventory(), inventory)
        later = proxy.requests[n:]
        assert sum("servers.parquet" in r for r in later) >= 3, later
    finally:
        proxy.stop()


def test_connection_resets_are_retried(seaweed, aws_env, store, fleet):
    inventory, _ = fleet
    store.write_inventory(inventory)
    proxy = FaultProxy(seaweed.url)
    try:
        aws_env(ADMIN, proxy.url)
        proxy.reset_next(1)
        s = open_store(store.uri, **FAST)  # first HEAD reset, second answered
        proxy.reset_next(2)
        pd.testing.assert_frame_equal(s.read_inventory(), inventory)
    finally:
        proxy.stop()


def test_persistent_5xx_gives_up_with_an_unavailable_error(seaweed, aws_env, store, fleet):
    inventory, _ = fleet
    store.write_inventory(inventory)
    proxy = FaultProxy(seaweed.url)
    try:
        aws_env(ADMIN, proxy.url)
        s = open_store(store.uri, **FAST)
        status, body, headers = s3_error("ServiceUnavailable", "Service is unable to handle request.", 503)
        proxy.inject(status, body, headers=headers, times=100)
        with pytest.raises(StoreUnavailableError) as err:
            s.read_inventory()
        assert f"S3 unavailable (read the inventory from {store.uri})" in str(err.value)
        assert "after 3 attempt(s)" in str(err.value)
    finally:
        proxy.stop()


def test_slow_endpoint_times_out(seaweed, aws_env, store, fleet):
    inventory, _ = fleet
    store.write_inventory(inventory)
    proxy = FaultProxy(seaweed.url)
    try:
        aws_env(ADMIN, proxy.url)
        opts = {"connect_timeout": 1.0, "request_timeout": 1.0, "max_attempts": 1}
        s = open_store(store.uri, **opts)
        proxy.delay = 6.0
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailableError) as err:
            s.read_inventory()
        assert time.monotonic() - t0 < 4.5
        assert "timed out" in str(err.value)
        assert "within 1 s" in str(err.value)
        t0 = time.monotonic()  # the boto3 side (bucket check) has the same timeout
        with pytest.raises(StoreUnavailableError, match="timed out"):
            open_store(store.uri, **opts)
        assert time.monotonic() - t0 < 4.5
    finally:
        proxy.stop()


def test_server_stopped_mid_read(aws_env, fleet):
    """A throw-away moto server is killed while a metrics read is half-way through its objects."""
    inventory, metrics = fleet
    server = MotoServer()
    proxy = None
    try:
        server.client("s3").create_bucket(Bucket="doomed")
        aws_env(("AKIDMOTO", "moto-secret"), server.url)
        writer = open_store("s3://doomed/fleet", **FAST)
        writer.write_inventory(inventory)
        writer.write_metrics(metrics, inventory, freq="daily")
        proxy = FaultProxy(server.url)
        aws_env(("AKIDMOTO", "moto-secret"), proxy.url)
        reader = open_store("s3://doomed/fleet", **FAST)
        proxy.cut_at(2, server.stop)  # the 2nd object GET: half a body, then the server is gone
        t0 = time.monotonic()
        with pytest.raises(StoreUnavailableError) as err:
            reader.read_metrics()
        assert time.monotonic() - t0 < 10
        assert "s3://doomed/fleet" in str(err.value)
        assert f"endpoint {proxy.url}" in str(err.value)
        assert sum(r.startswith("GET ") for r in proxy.requests) >= 2
        assert server.proc.poll() is not None
    finally:
        if proxy is not None:
            proxy.stop()
        server.stop()


# --------------------------------------------------------------------------- credentials rotation


def test_filesystem_follows_rotating_credentials(seaweed, aws_env, store, fleet):
    """Temporary credentials (roles, SSO) rotate; the pyarrow filesystem must follow them."""
    from datetime import UTC, datetime, timedelta

    import boto3
    import botocore.session
    from botocore.credentials import CredentialProvider, CredentialResolver, RefreshableCredentials

    inventory, _ = fleet
    store.write_inventory(inventory)
    now = [datetime.now(UTC)]

    def refresh() -> dict:  # the role's next credentials: the admin key, valid 2 h
        expiry = now[0] + timedelta(hours=2)
        return {
            "access_key": ADMIN[0],
            "secret_key": ADMIN[1],
            "token": None,
            "expiry_time": expiry.isoformat(),
        }

    class Rotating(CredentialProvider):
        METHOD = "capfc-test-rotation"

        def load(self):  # first credentials: the read-only key, valid 1 h
            expiry = now[0] + timedelta(hours=1)
            return RefreshableCredentials(
                READER[0], READER[1], None, expiry, refresh, self.METHOD, time_fetcher=lambda: now[0]
            )

    core = botocore.session.Session()
    core.register_component("credential_provider", CredentialResolver([Rotating()]))
    session = boto3.session.Session(botocore_session=core, region_name="us-east-1")
    conn = S3Connection(endpoint=resolve_endpoint(seaweed.url), session=session, **FAST)
    rotating = S3Store(conn, store.location)
    before = rotating.fs
    pd.testing.assert_frame_equal(rotating.read_inventory(), inventory)
    with pytest.raises(StoreAccessDeniedError):
        rotating.write_inventory(inventory)
    now[0] += timedelta(minutes=55)  # inside the refresh window: the next use rotates
    rotating.write_inventory(inventory)
    assert rotating.fs is not before
    assert rotating.fs is rotating.fs  # rebuilt once, then reused
    assert conn._fs_key[0] == ADMIN[0]


def test_no_data_is_still_no_data(store):
    with pytest.raises(NoDataError, match="no inventory"):
        store.read_inventory()
    with pytest.raises(NoDataError, match="no metrics"):
        store.read_metrics()
    assert open_s3_store(store.uri, **FAST).read_store_info() == {}


def test_connection_options_are_checked():
    with pytest.raises(StoreConfigError, match="max_attempts 0"):
        S3Connection(endpoint=None, max_attempts=0)
    with pytest.raises(StoreConfigError, match="timeouts must be positive"):
        S3Connection(endpoint=None, request_timeout=0)


def test_write_object_refuses_escaping_keys(store):
    for key in ("../outside", "/abs", "a//b"):
        with pytest.raises(StoreError, match="invalid object key"):
            store.write_object(key, b"x")
    store.write_object("athena-manifests/t/run_id=1/symlink.txt", b"s3://x\n")
    with store.fs.open_input_stream(f"{store.root}/athena-manifests/t/run_id=1/symlink.txt") as f:
        assert f.read() == b"s3://x\n"
