"""The Parquet store on S3 (or any S3-compatible object store): ``s3://bucket/prefix``.

Same layout, partitioning and publish order as the local store — it *is* the local store
(:class:`~forecasting.sources.parquet.ParquetStore`) over pyarrow's ``S3FileSystem``. What
this module adds is everything that differs in the cloud:

- **Endpoint.** pyarrow does not read ``AWS_ENDPOINT_URL``; boto3 does. The endpoint is the
  ``endpoint_url`` option (the ``s3_endpoint_url`` setting), else the standard AWS variables
  ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` (unless ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS``
  is true), else AWS itself. This module reads those standard AWS variables (and ``AWS_REGION``
  as a region fallback, since boto3 reads only ``AWS_DEFAULT_REGION``) and nothing else from the
  environment; boto3 and pyarrow are then given the same endpoint and region explicitly.
- **Credentials** come only from boto3's standard chain (environment, shared config/SSO
  profile, web identity, container or instance role). They are handed to pyarrow in memory and
  refreshed when temporary credentials rotate; they never appear in a URI, a setting or a message.
- **Resilience.** Both clients retry transient failures (throttling, 5xx, connection resets,
  timeouts) with exponential backoff — botocore's ``standard`` retry mode and the AWS SDK's
  standard strategy inside pyarrow — under short connect and request timeouts. Permanent
  failures (access denied, no such bucket, bad credentials) are not retried: they fail at once
  with a message naming the bucket and the likely fix.
- **Error types** the app can act on: :class:`StoreUnavailableError` (transient: keep serving
  the last good data, try again later) and :class:`StoreConfigError` with its subclasses
  (permanent: someone must fix a bucket, a permission or a setting).

Publishing a run is safe for concurrent readers and writers: every object of a run is PUT whole
with ``If-None-Match: *`` (never overwriting a published run), and ``runs/LATEST`` is written
last with ``If-Match: <etag>`` and only towards a run on input at least as new
(forecasting/sources/commit.py), so a reader that sees a run id in LATEST finds all of that
run's tables and LATEST never goes back.

boto3 is imported lazily, so importing this module (e.g. for its exception types) is free.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pandas as pd
import pyarrow.fs as pafs

from .base import MetricsQuery, NoDataError, StoreError
from .parquet import ParquetStore, StagedMetrics

log = logging.getLogger(__name__)

DEFAULT_CONNECT_TIMEOUT = 5.0
DEFAULT_REQUEST_TIMEOUT = 30.0
DEFAULT_MAX_ATTEMPTS = 5

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
# S3's "safe" key characters (AWS object key naming guidelines), plus "=" for partitions.
_PREFIX_RE = re.compile(r"^[A-Za-z0-9!_.*'()=/-]*$")


# --------------------------------------------------------------------------- error types


class StoreUnavailableError(StoreError):
    """The store could not be reached in time (network, timeout, throttling, 5xx) — transient.

    Retries with backoff were already made; the data is unchanged. Callers that can (the app)
    keep serving the last good data and try again later.
    """


class StoreConfigError(StoreError):
    """A permanent problem only a person can fix: a missing bucket, a permission, a setting."""


class BucketNotFoundError(StoreConfigError):
    """The bucket named in the data URI does not exist (at this endpoint)."""


class StoreAccessDeniedError(StoreConfigError):
    """The credentials were refused: missing permission, or invalid/expired credentials."""


class CredentialsError(StoreConfigError):
    """No usable AWS credentials in the standard chain."""


# --------------------------------------------------------------------------- URIs, endpoint


@dataclass(frozen=True)
class S3Location:
    """A parsed ``s3://bucket/prefix``."""

    bucket: str
    prefix: str  # no leading/trailing slash; "" for the bucket root

    @property
    def path(self) -> str:
        """bucket/prefix, the form pyarrow's S3FileSystem takes."""
        return f"{self.bucket}/{self.prefix}" if self.prefix else self.bucket

    @property
    def uri(self) -> str:
        return f"s3://{self.path}"

    def child(self, *parts: str) -> S3Location:
        return S3Location(self.bucket, "/".join(p for p in (self.prefix, *parts) if p))


def parse_s3_uri(uri: str) -> S3Location:
    """Split and check ``s3://bucket/prefix``; a bad URI fails here, before any request."""
    if not uri.startswith("s3://"):
        raise StoreConfigError(f"{uri!r} is not an s3:// URI (expected s3://bucket/prefix)")
    rest = uri[len("s3://") :]
    bucket, _, prefix = rest.partition("/")
    if "@" in bucket or ":" in bucket:
        # Never echo the URI: it may hold a secret.
        raise StoreConfigError(
            "the s3:// data URI must not contain credentials or a port; credentials come from the "
            "standard AWS chain (environment, profile, role) and the endpoint from s3_endpoint_url "
            "or AWS_ENDPOINT_URL"
        )
    if not _BUCKET_RE.match(bucket) or ".." in bucket:
        raise StoreConfigError(
            f"{bucket!r} in {uri} is not a valid S3 bucket name "
            "(3–63 characters: lowercase letters, digits, dots and hyphens)"
        )
    prefix = prefix.strip("/")
    if "?" in prefix or "#" in prefix or not _PREFIX_RE.match(prefix):
        raise StoreConfigError(
            f"prefix {prefix!r} in {uri} has characters outside the S3-safe set "
            "(letters, digits and ! _ . * ' ( ) = / -)"
        )
    if any(seg in ("", ".", "..") for seg in prefix.split("/")) and prefix:
        raise StoreConfigError(f"prefix {prefix!r} in {uri} has an empty, '.' or '..' segment")
    return S3Location(bucket, prefix)


@dataclass(frozen=True)
class Endpoint:
    """A custom S3 endpoint (S3-compatible store, VPC endpoint, local test server)."""

    url: str  # scheme://host[:port]
    scheme: str
    authority: str  # host[:port], pyarrow's endpoint_override


def parse_endpoint(url: str, source: str = "s3_endpoint_url") -> Endpoint:
    """Check an endpoint URL; the message names the setting or variable it came from."""
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StoreConfigError(f"{source} must look like http(s)://host[:port] (e.g. http://127.0.0.1:9000)")
    if parts.username or parts.password:
        raise StoreConfigError(f"{source} must not contain credentials; use the standard AWS chain")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise StoreConfigError(f"{source} must be scheme://host[:port] without a path or query")
    try:
        port = parts.port
    except ValueError:
        raise StoreConfigError(f"{source} has an invalid port") from None
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    authority = f"{host}:{port}" if port else host
    return Endpoint(f"{parts.scheme}://{authority}", parts.scheme, authority)


def resolve_endpoint(endpoint_url: str | None, env: Mapping[str, str] | None = None) -> Endpoint | None:
    """The S3 endpoint: the explicit option, else the standard AWS variables, else AWS (None).

    Reading ``AWS_ENDPOINT_URL_S3`` / ``AWS_ENDPOINT_URL`` here mirrors what boto3 does on its
    own, so pyarrow (which ignores them) talks to the same endpoint as boto3.
    """
    if endpoint_url:
        return parse_endpoint(endpoint_url, "s3_endpoint_url")
    env = os.environ if env is None else env
    if env.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").strip().lower() == "true":
        return None
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if env.get(var, "").strip():
            return parse_endpoint(env[var], var)
    return None


# --------------------------------------------------------------------------- error mapping

_ACCESS_CODES = {
    "403",
    "AccessDenied",
    "AccessDeniedException",
    "Forbidden",
    "AllAccessDisabled",
    "AccountProblem",
}
_BAD_CREDENTIAL_CODES = {
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "ExpiredTokenException",
    "InvalidToken",
    "InvalidClientTokenId",
    "UnrecognizedClientException",
    "TokenRefreshRequired",
}
_MISSING_BUCKET_CODES = {"404", "NoSuchBucket", "NotFound"}
_REGION_CODES = {
    "301",
    "PermanentRedirect",
    "AuthorizationHeaderMalformed",
    "IllegalLocationConstraintException",
}

# pyarrow (AWS SDK for C++) reports errors as text: "AWS Error ACCESS_DENIED during ...".
_ARROW_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    ("bucket", re.compile(r"NO_SUCH_BUCKET|NoSuchBucket|Bucket '[^']*' not found", re.I)),
    (
        "credentials",
        re.compile(
            r"INVALID_ACCESS_KEY_ID|SIGNATURE_DOES_NOT_MATCH|EXPIRED_TOKEN|InvalidAccessKeyId|"
            r"SignatureDoesNotMatch|ExpiredToken|MISSING_AUTHENTICATION_TOKEN",
            re.I,
        ),
    ),
    ("access", re.compile(r"ACCESS_DENIED|AccessDenied|HTTP (?:response code:|status) 403", re.I)),
    ("timeout", re.compile(r"curlCode: 28|Timeout was reached|timed out|REQUEST_TIMEOUT", re.I)),
    (
        "unavailable",
        re.compile(
            r"NETWORK_CONNECTION|curlCode|SERVICE_UNAVAILABLE|SLOW_DOWN|THROTTLING|INTERNAL_FAILURE|"
            r"Connection reset|Connection refused|Broken pipe|HTTP (?:response code:|status) 5\d\d|"
            r"Unable to parse ExceptionName|Unable to connect",
            re.I,
        ),
    ),
]


def classify_arrow_error(message: str) -> str | None:
    """'bucket' | 'credentials' | 'access' | 'timeout' | 'unavailable' | None for a pyarrow error text."""
    for kind, pattern in _ARROW_PATTERNS:
        if pattern.search(message):
            return kind
    return None


def _client_error_code(exc: BaseException) -> str:
    response = getattr(exc, "response", None) or {}
    return str((response.get("Error") or {}).get("Code") or "")


# --------------------------------------------------------------------------- connection

_loader_lock = threading.Lock()
_loader: Any = None


def new_session(region: str | None = None):
    """A boto3 session on the standard credential chain, sharing one model loader per process.

    Parsing botocore's service models costs ~0.3 s per new session; the loader caches them, so
    opening a store again (a new run, another worker thread) costs ~0.05 s.
    """
    import boto3.session
    import botocore.loaders
    import botocore.session

    global _loader
    with _loader_lock:
        if _loader is None:
            _loader = botocore.loaders.create_loader()
        core = botocore.session.Session()
        core.register_component("data_loader", _loader)
        session = boto3.session.Session(botocore_session=core, region_name=region)
        # boto3 appends its resource-model path on every session: keep the shared list unique.
        paths = _loader.search_paths
        paths[:] = list(dict.fromkeys(paths))
    return session


class S3Connection:
    """One endpoint, region, credential chain and retry policy shared by boto3 and pyarrow.

    Thread-safe: boto3 clients are created once (clients are thread-safe, sessions are not), and
    the pyarrow filesystem is rebuilt under a lock when temporary credentials rotate.
    """

    def __init__(
        self,
        *,
        endpoint: Endpoint | None,
        region: str | None = None,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
        max_attempts: int = DEFAULT_MAX_ATTEMPTS,
        session: Any = None,
        env: Mapping[str, str] | None = None,
    ):
        if connect_timeout <= 0 or request_timeout <= 0:
            raise StoreConfigError("S3 connect and request timeouts must be positive")
        if not 1 <= max_attempts <= 20:
            raise StoreConfigError(f"S3 max_attempts {max_attempts} must be between 1 and 20")
        self.endpoint = endpoint
        self.connect_timeout = float(connect_timeout)
        self.request_timeout = float(request_timeout)
        self.max_attempts = int(max_attempts)
        self.session = session or new_session(region)
        # boto3 reads AWS_DEFAULT_REGION / the profile; AWS_REGION is what other SDKs and AWS
        # runtimes (Lambda, ECS, App Runner) set, so it counts too.
        env = os.environ if env is None else env
        self.region = region or self.session.region_name or env.get("AWS_REGION") or None
        self._credentials = self.session.get_credentials()
        if self._credentials is None:
            raise CredentialsError(
                "no AWS credentials found in the standard chain: set AWS_ACCESS_KEY_ID and "
                "AWS_SECRET_ACCESS_KEY, or AWS_PROFILE (shared config / SSO), or run with an "
                "instance, container or web-identity role"
            )
        self._lock = threading.Lock()
        self._clients: dict[str, Any] = {}
        self._fs: pafs.S3FileSystem | None = None
        self._fs_key: tuple | None = None

    # ---- boto3
    def botocore_config(self, **overrides: Any):
        """Timeouts and botocore's standard retry mode (exponential backoff with jitter)."""
        from botocore.config import Config

        return Config(
            connect_timeout=self.connect_timeout,
            read_timeout=self.request_timeout,
            retries={"mode": "standard", "total_max_attempts": self.max_attempts},
            user_agent_extra="capacity-forecaster",
            **overrides,
        )

    def client(self, service: str, endpoint_url: str | None = None):
        """A boto3 client for ``service``; S3 uses this connection's endpoint, others boto3's own."""
        with self._lock:
            if service not in self._clients:
                if service == "s3" and self.endpoint is not None:
                    endpoint_url = self.endpoint.url
                extra = {"s3": {"addressing_style": "path"}} if service == "s3" and self.endpoint else {}
                self._clients[service] = self.session.client(
                    service,
                    region_name=self.region or ("us-east-1" if service == "s3" else None),
                    endpoint_url=endpoint_url,
                    config=self.botocore_config(**extra),
                )
            return self._clients[service]

    # ---- pyarrow
    def filesystem(self) -> pafs.S3FileSystem:
        """pyarrow's S3 filesystem with the current credentials (rebuilt after a rotation)."""
        creds = self._credentials.get_frozen_credentials()
        key = (creds.access_key, creds.secret_key, creds.token)
        with self._lock:
            if self._fs is None or key != self._fs_key:
                kwargs: dict[str, Any] = {
                    "access_key": creds.access_key,
                    "secret_key": creds.secret_key,
                    "session_token": creds.token,
                    "region": self.region or "us-east-1",
                    "connect_timeout": self.connect_timeout,
                    "request_timeout": self.request_timeout,
                    "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
                    "allow_bucket_creation": False,
                    "allow_bucket_deletion": False,
                }
                if self.endpoint is not None:
                    kwargs.update(endpoint_override=self.endpoint.authority, scheme=self.endpoint.scheme)
                self._fs = pafs.S3FileSystem(**kwargs)
                self._fs_key = key
            return self._fs

    def describe(self) -> str:
        """Where requests go, for messages (never credentials)."""
        if self.endpoint is not None:
            return f"endpoint {self.endpoint.url}"
        return f"AWS S3 ({self.region or 'us-east-1'})"

    # ---- checks
    def check_bucket(self, location: S3Location) -> str | None:
        """Fail fast and clearly when the bucket is missing or refused; returns its region."""
        client = self.client("s3")
        try:
            response = client.head_bucket(Bucket=location.bucket)
        except Exception as e:
            raise self.translate_boto_error(e, location, "open") from e
        headers = response.get("ResponseMetadata", {}).get("HTTPHeaders", {})
        return response.get("BucketRegion") or headers.get("x-amz-bucket-region")

    def bucket_exists(self, location: S3Location) -> bool | None:
        """True/False when S3 says so; None when it cannot be told (refused, unreachable)."""
        try:
            self.client("s3").head_bucket(Bucket=location.bucket)
        except Exception as e:
            return False if _client_error_code(e) in _MISSING_BUCKET_CODES else None
        return True

    # ---- error translation
    def translate_boto_error(self, exc: BaseException, location: S3Location, action: str) -> StoreError:
        """A botocore exception as one of this module's error types, with the likely fix."""
        from botocore import exceptions as bex

        code = _client_error_code(exc)
        where = f"s3://{location.bucket}" if action == "open" else location.uri
        if isinstance(exc, bex.NoCredentialsError | bex.PartialCredentialsError):
            return CredentialsError(f"cannot {action} {where}: {exc}; configure the standard AWS chain")
        if code in _MISSING_BUCKET_CODES:
            return self.missing_bucket(location)
        if code in _BAD_CREDENTIAL_CODES:
            return StoreAccessDeniedError(self._bad_credentials_message(location, action, code))
        if code in _ACCESS_CODES:
            return StoreAccessDeniedError(self._access_message(location, action))
        if code in _REGION_CODES:
            return StoreConfigError(
                f"cannot {action} {where}: the bucket is in another region than {self.region or 'us-east-1'}; "
                "set AWS_REGION (or AWS_DEFAULT_REGION) to the bucket's region"
            )
        if isinstance(exc, bex.ConnectTimeoutError | bex.ReadTimeoutError):
            return StoreUnavailableError(self._timeout_message(location, action, str(exc)))
        if isinstance(exc, bex.EndpointConnectionError | bex.ConnectionClosedError | bex.HTTPClientError):
            return StoreUnavailableError(self._unavailable_message(location, action, str(exc)))
        status = (getattr(exc, "response", None) or {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
        if (status and int(status) >= 500) or code in ("SlowDown", "Throttling", "ThrottlingException"):
            return StoreUnavailableError(self._unavailable_message(location, action, str(exc)))
        return StoreError(f"cannot {action} {where}: {exc}")

    def translate_arrow_error(self, exc: BaseException, location: S3Location, action: str) -> StoreError:
        """A pyarrow OSError (or a StoreError wrapping one) as one of this module's error types."""
        text = str(exc)
        kind = classify_arrow_error(text)
        if kind == "bucket":
            return self.missing_bucket(location)
        if kind == "credentials":
            return StoreAccessDeniedError(self._bad_credentials_message(location, action, text))
        if kind == "access":
            return StoreAccessDeniedError(self._access_message(location, action, text))
        if kind == "timeout":
            return StoreUnavailableError(self._timeout_message(location, action, text))
        if kind == "unavailable":
            return StoreUnavailableError(self._unavailable_message(location, action, text))
        if isinstance(exc, StoreError):
            return exc
        return StoreError(f"cannot {action} {location.uri}: {text}")

    def missing_bucket(self, location: S3Location) -> BucketNotFoundError:
        return BucketNotFoundError(
            f"bucket {location.bucket!r} does not exist at {self.describe()}: create it "
            f"(aws s3 mb s3://{location.bucket}) or fix the data URI {location.uri}"
            + (" / s3_endpoint_url" if self.endpoint else "")
        )

    def _access_message(self, location: S3Location, action: str, detail: str = "") -> str:
        return (
            f"access denied to {location.uri} ({action}) at {self.describe()}: the identity from the "
            f"standard AWS chain needs s3:ListBucket on arn:aws:s3:::{location.bucket} and "
            f"s3:GetObject, s3:PutObject, s3:DeleteObject on arn:aws:s3:::{location.path}/*"
            + (f" [{_short(detail)}]" if detail else "")
        )

    def _bad_credentials_message(self, location: S3Location, action: str, detail: str) -> str:
        return (
            f"credentials refused for {location.uri} ({action}) at {self.describe()}: the access key "
            "is unknown, the secret is wrong or the session token expired; refresh the credentials "
            f"in the standard AWS chain (e.g. aws sso login, or re-export AWS_* variables) [{_short(detail)}]"
        )

    def _timeout_message(self, location: S3Location, action: str, detail: str) -> str:
        return (
            f"S3 timed out ({action} {location.uri}) at {self.describe()}: no answer within "
            f"{self.request_timeout:g} s after {self.max_attempts} attempt(s); the data is unchanged, "
            f"try again later [{_short(detail)}]"
        )

    def _unavailable_message(self, location: S3Location, action: str, detail: str) -> str:
        return (
            f"S3 unavailable ({action} {location.uri}) at {self.describe()} after "
            f"{self.max_attempts} attempt(s) with backoff; the data is unchanged, try again later "
            f"[{_short(detail)}]"
        )


def _short(text: str, limit: int = 300) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


# --------------------------------------------------------------------------- the store


class S3Store(ParquetStore):
    """:class:`ParquetStore` on S3 with the cloud's failures turned into clear error types."""

    def __init__(self, connection: S3Connection, location: S3Location):
        self.connection = connection
        self.location = location
        super().__init__(connection.filesystem(), location.path, uri=location.uri)
        from .commit import S3CondIO

        self.cond = S3CondIO(connection, location)  # If-None-Match / If-Match PutObject

    # The filesystem is owned by the connection, which swaps it when credentials rotate.
    @property
    def fs(self) -> pafs.FileSystem:  # type: ignore[override]
        return self.connection.filesystem()

    @fs.setter
    def fs(self, value: pafs.FileSystem) -> None:
        if not isinstance(value, pafs.S3FileSystem):
            raise TypeError("S3Store works over the connection's S3FileSystem only")

    @contextlib.contextmanager
    def _errors(self, action: str) -> Iterator[None]:
        try:
            yield
        except (StoreConfigError, StoreUnavailableError):
            raise
        except NoDataError:
            # pyarrow reports a vanished bucket as a missing file: say which it was.
            if self.connection.bucket_exists(self.location) is False:
                raise self.connection.missing_bucket(self.location) from None
            raise
        except StoreError as e:
            if isinstance(e.__cause__, OSError):
                raise self.connection.translate_arrow_error(e, self.location, action) from e
            raise
        except OSError as e:
            raise self.connection.translate_arrow_error(e, self.location, action) from e

    def write_object(self, key: str, data: bytes) -> None:
        """PUT one small object at ``key`` under the store's root (e.g. Athena symlink manifests)."""
        parts = key.split("/")
        if any(p in ("", ".", "..") for p in parts):
            raise StoreError(f"invalid object key {key!r} under {self.uri}")
        with self._errors(f"write {key} to"):
            self._write_bytes(self._p(*parts), data)

    def has_data(self) -> bool:
        with self._errors("check for data in"):
            return super().has_data()

    def read_inventory(self) -> pd.DataFrame:
        with self._errors("read the inventory from"):
            return super().read_inventory()

    def write_inventory(self, inventory: pd.DataFrame) -> None:
        with self._errors("write the inventory to"):
            super().write_inventory(inventory)

    def read_metrics(self, query: MetricsQuery | None = None) -> pd.DataFrame:
        with self._errors("read metrics from"):
            return super().read_metrics(query)

    def write_metrics(
        self,
        metrics: pd.DataFrame,
        inventory: pd.DataFrame,
        *,
        freq: str,
        mode: str = "overwrite",
        on_partition: Callable[[str], None] | None = None,
    ) -> None:
        with self._errors("write metrics to"):
            super().write_metrics(metrics, inventory, freq=freq, mode=mode, on_partition=on_partition)

    def merge_metrics(
        self,
        staged: StagedMetrics,
        inventory: pd.DataFrame,
        *,
        freq: str,
        on_partition: Callable[[str], None] | None = None,
    ) -> None:
        with self._errors("write metrics to"):
            super().merge_metrics(staged, inventory, freq=freq, on_partition=on_partition)

    def read_store_info(self) -> dict:
        with self._errors("read store.json from"):
            return super().read_store_info()

    def publish_run(
        self, run_id: str, tables: Mapping[str, pd.DataFrame], manifest: dict, parts: Sequence[str] = ()
    ) -> bool:
        with self._errors(f"publish run {run_id} to"):
            return super().publish_run(run_id, tables, manifest, parts)

    def latest_run_id(self) -> str | None:
        with self._errors("read runs/LATEST from"):
            return super().latest_run_id()

    def list_runs(self) -> list[str]:
        with self._errors("list runs in"):
            return super().list_runs()

    def read_manifest(self, run_id: str) -> dict:
        with self._errors(f"read the manifest of run {run_id} from"):
            return super().read_manifest(run_id)

    def read_run_table(
        self,
        run_id: str,
        name: str,
        server_ids: Iterable[str] | None = None,
        columns: Sequence[str] | None = None,
    ) -> pd.DataFrame | None:
        with self._errors(f"read plan table {name} of run {run_id} from"):
            return super().read_run_table(run_id, name, server_ids, columns)


def open_s3_store(
    uri: str,
    *,
    endpoint_url: str | None = None,
    region: str | None = None,
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
    request_timeout: float = DEFAULT_REQUEST_TIMEOUT,
    max_attempts: int = DEFAULT_MAX_ATTEMPTS,
    check_bucket: bool = True,
    env: Mapping[str, str] | None = None,
    session: Any = None,
    connection: S3Connection | None = None,
) -> S3Store:
    """Open ``s3://bucket/prefix`` as a store, checking the bucket once (fail fast, clearly).

    ``endpoint_url``: an S3-compatible endpoint (the ``s3_endpoint_url`` setting); default the
    standard ``AWS_ENDPOINT_URL_S3``/``AWS_ENDPOINT_URL`` variables, else AWS. ``region``: default
    boto3's (``AWS_REGION``/profile), else the bucket's own. Timeouts are per request, in seconds;
    ``max_attempts`` counts the first try. ``env`` and ``session`` exist for tests and embedding;
    an existing ``connection`` (shared with Athena) replaces all of the connection options.
    """
    location = parse_s3_uri(uri)
    if connection is None:
        connection = S3Connection(
            endpoint=resolve_endpoint(endpoint_url, env),
            region=region,
            connect_timeout=connect_timeout,
            request_timeout=request_timeout,
            max_attempts=max_attempts,
            session=session,
            env=env,
        )
    if check_bucket:
        bucket_region = connection.check_bucket(location)
        if connection.region is None and bucket_region:
            connection.region = bucket_region
    return S3Store(connection, location)
