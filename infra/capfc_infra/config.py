"""Deployment settings read from CDK context (``cdk.json`` or ``cdk deploy -c key=value``).

Why one typed object: every construct reads its choices from here, so a typo or a bad value
fails at synth with a message naming the context key, never halfway through a deploy.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

WEB_TIERS = ("apprunner", "ecs-express", "fargate-alb")

# Context keys, with their defaults. README "Deploy on AWS" documents each.
DEFAULTS: dict[str, Any] = {
    "web_tier": "ecs-express",
    "private_ingress": False,
    "image_uri": None,
    "store_prefix": "store",
    "schedule": "cron(0 5 * * ? *)",
    "schedule_timezone": "UTC",
    "lambda_max_servers": 10000,
    "shard_concurrency": 10,
    "trigger_reserved_concurrency": 1,
    "athena_bytes_scanned_cutoff_gb": 10,
    "business_units": None,
    "nat_gateways": 1,
    "web_cpu": 1024,
    "web_memory_mib": 2048,
    "web_min_tasks": 2,
    "web_max_tasks": 4,
    "worker_cpu": 1024,
    "worker_memory_mib": 4096,
    "worker_min_tasks": 1,
    "worker_max_tasks": 4,
    "batch_cpu": 4096,
    "batch_memory_mib": 16384,
    "redis_node_type": "cache.t4g.micro",
    "redis_replicas": 1,
    "certificate_arn": None,
    "oidc": None,
    "alarm_email": None,
    "log_retention_days": 90,
}

OIDC_KEYS = ("issuer", "authorization_endpoint", "token_endpoint", "user_info_endpoint", "client_id")
_IMAGE_URI_RE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repo>[a-z0-9][a-z0-9._/-]*)(?::(?P<tag>[A-Za-z0-9_.-]{1,128})|@(?P<digest>sha256:[0-9a-f]{64}))$"
)
_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*$")
_ARN_ACM_RE = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[A-Za-z0-9-]+$")
_BU_RE = re.compile(r"^[A-Za-z0-9_-]+$")


class ConfigError(ValueError):
    """A context value is missing or invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class Oidc:
    """The identity provider the ALB signs users in with (``authenticate-oidc``)."""

    issuer: str
    authorization_endpoint: str
    token_endpoint: str
    user_info_endpoint: str
    client_id: str
    client_secret_name: str  # Secrets Manager secret holding the client secret (field client_secret)


@dataclass(frozen=True)
class ImageUri:
    """An existing ECR image (``account.dkr.ecr.region.amazonaws.com/repo:tag`` or ``@sha256:…``)."""

    uri: str
    account: str
    region: str
    repository: str
    tag_or_digest: str


@dataclass(frozen=True)
class Config:
    web_tier: str = "ecs-express"
    private_ingress: bool = False
    image: ImageUri | None = None
    store_prefix: str = "store"
    schedule: str = "cron(0 5 * * ? *)"
    schedule_timezone: str = "UTC"
    lambda_max_servers: int = 10000
    shard_concurrency: int = 10
    trigger_reserved_concurrency: int = 1
    athena_bytes_scanned_cutoff_gb: int = 10
    business_units: tuple[str, ...] | None = None
    nat_gateways: int = 1
    web_cpu: int = 1024
    web_memory_mib: int = 2048
    web_min_tasks: int = 2
    web_max_tasks: int = 4
    worker_cpu: int = 1024
    worker_memory_mib: int = 4096
    worker_min_tasks: int = 1
    worker_max_tasks: int = 4
    batch_cpu: int = 4096
    batch_memory_mib: int = 16384
    redis_node_type: str = "cache.t4g.micro"
    redis_replicas: int = 1
    certificate_arn: str | None = None
    oidc: Oidc | None = None
    alarm_email: str | None = None
    log_retention_days: int = 90

    @staticmethod
    def bucket_names(account: str, region: str) -> tuple[str, str]:
        """(store, access logs) bucket names. Named, so the app stack finds the store without a
        cross-stack export: either stack can be updated or destroyed on its own."""
        return f"capfc-store-{account}-{region}", f"capfc-logs-{account}-{region}"

    @property
    def metrics_prefix(self) -> str:
        """The telemetry key prefix that triggers a run (the store's ``metrics/``)."""
        return f"{self.store_prefix}/metrics/"

    @classmethod
    def from_context(cls, get: Any) -> Config:
        """Build from a context getter (``node.try_get_context``); values may be CLI strings."""
        raw = {k: _value(get(k), DEFAULTS[k]) for k in DEFAULTS}
        tier = str(raw["web_tier"])
        if tier not in WEB_TIERS:
            raise ConfigError(f"context web_tier={tier!r}: choose one of {', '.join(WEB_TIERS)}")
        prefix = str(raw["store_prefix"]).strip("/")
        if not _PREFIX_RE.match(prefix):
            raise ConfigError(
                f"context store_prefix={prefix!r}: lowercase letters, digits, '-', '_' and '/' only"
            )
        image = None
        if raw["image_uri"]:
            m = _IMAGE_URI_RE.match(str(raw["image_uri"]))
            if not m:
                raise ConfigError(
                    f"context image_uri={raw['image_uri']!r} is not an ECR image URI "
                    "(123456789012.dkr.ecr.REGION.amazonaws.com/REPO:TAG or @sha256:DIGEST)"
                )
            image = ImageUri(
                uri=m.group(0),
                account=m["account"],
                region=m["region"],
                repository=m["repo"],
                tag_or_digest=m["tag"] or m["digest"],
            )
        cert = raw["certificate_arn"] or None
        if cert and not _ARN_ACM_RE.match(cert):
            raise ConfigError(f"context certificate_arn={cert!r} is not an ACM certificate ARN")
        oidc = _oidc(raw["oidc"])
        if oidc and tier != "fargate-alb":
            raise ConfigError(
                f"context oidc is set but web_tier={tier}: ALB OIDC sign-in needs web_tier=fargate-alb "
                "(App Runner and ECS Express have no listener of ours to authenticate on)"
            )
        if oidc and not cert:
            raise ConfigError("context oidc needs certificate_arn: the ALB authenticates on HTTPS only")
        bus = raw["business_units"]
        if bus is not None:
            bus = tuple(bus.split(",") if isinstance(bus, str) else bus)
            bad = [b for b in bus if not _BU_RE.match(str(b))]
            if bad or not bus:
                raise ConfigError(f"context business_units: invalid values {bad or bus}")
        ints = {
            k: _int(k, raw[k], lo, hi)
            for k, lo, hi in (
                ("lambda_max_servers", 1, 1_000_000),
                ("shard_concurrency", 1, 1000),
                ("trigger_reserved_concurrency", 0, 1000),
                ("athena_bytes_scanned_cutoff_gb", 1, 10_000),
                ("nat_gateways", 0, 3),
                ("web_cpu", 256, 16384),
                ("web_memory_mib", 512, 122880),
                ("web_min_tasks", 1, 100),
                ("web_max_tasks", 1, 100),
                ("worker_cpu", 256, 16384),
                ("worker_memory_mib", 512, 122880),
                ("worker_min_tasks", 1, 100),
                ("worker_max_tasks", 1, 100),
                ("batch_cpu", 256, 16384),
                ("batch_memory_mib", 512, 122880),
                ("redis_replicas", 0, 5),
                ("log_retention_days", 1, 3653),
            )
        }
        for kind in ("web", "worker"):
            if ints[f"{kind}_max_tasks"] < ints[f"{kind}_min_tasks"]:
                raise ConfigError(f"context {kind}_max_tasks must be >= {kind}_min_tasks")
        private = _bool("private_ingress", raw["private_ingress"])
        if private and ints["nat_gateways"] == 0:
            raise ConfigError(
                "context private_ingress=true with nat_gateways=0: private tasks need a NAT gateway "
                "to reach ECR, CloudWatch and S3"
            )
        return cls(
            web_tier=tier,
            private_ingress=private,
            image=image,
            store_prefix=prefix,
            schedule=str(raw["schedule"]),
            schedule_timezone=str(raw["schedule_timezone"]),
            business_units=bus,
            redis_node_type=str(raw["redis_node_type"]),
            certificate_arn=cert,
            oidc=oidc,
            alarm_email=raw["alarm_email"] or None,
            **ints,
        )


def _value(v: Any, default: Any) -> Any:
    return default if v is None or v == "" else v


def _bool(key: str, v: Any) -> bool:
    if isinstance(v, bool):
        return v
    s = str(v).strip().lower()
    if s in ("true", "1", "yes"):
        return True
    if s in ("false", "0", "no"):
        return False
    raise ConfigError(f"context {key}={v!r}: true or false")


def _int(key: str, v: Any, lo: int, hi: int) -> int:
    try:
        n = int(v)
    except (TypeError, ValueError):
        raise ConfigError(f"context {key}={v!r}: a whole number") from None
    if not lo <= n <= hi:
        raise ConfigError(f"context {key}={n}: between {lo} and {hi}")
    return n


def _oidc(v: Any) -> Oidc | None:
    if not v:
        return None
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise ConfigError("context oidc: a JSON object") from None
    if not isinstance(v, dict):
        raise ConfigError("context oidc: a JSON object")
    missing = [k for k in (*OIDC_KEYS, "client_secret_name") if not v.get(k)]
    if missing:
        raise ConfigError(f"context oidc: missing {', '.join(missing)}")
    for k in OIDC_KEYS[:4]:
        if not str(v[k]).startswith("https://"):
            raise ConfigError(f"context oidc.{k} must be an https:// URL")
    return Oidc(**{k: str(v[k]) for k in (*OIDC_KEYS, "client_secret_name")})
