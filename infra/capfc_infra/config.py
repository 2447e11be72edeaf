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
    "report_schedule": "cron(0 6 ? * MON *)",
    "keep_runs": 30,
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
    "dev_sign_in": False,
    "api_audience": None,
    "api_gateway": False,
    "api_rate_limit": 50,
    "api_burst_limit": 100,
    "alarm_email": None,
    "log_retention_days": 90,
}

# The ALB signs users in itself, so it needs the provider's endpoints; the app (in-app sign-in)
# reads them from the issuer's discovery document.
ALB_ENDPOINT_KEYS = ("authorization_endpoint", "token_endpoint", "user_info_endpoint")
OIDC_KEYS = ("issuer", *ALB_ENDPOINT_KEYS, "client_id")  # the fargate-alb set, in order
OIDC_OPTIONAL = ("scopes", "groups_claim", "role_groups", "logout_url")
_ARN_SECRET_RE = re.compile(
    r"^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:\d{12}:secret:[A-Za-z0-9/_+=.@-]+-[A-Za-z0-9]{6}$"
)
_AUDIENCE_RE = re.compile(r"^[\x21-\x7e]{1,256}$")  # one printable token: a client id or an API URI
_IMAGE_URI_RE = re.compile(
    r"^(?P<account>\d{12})\.dkr\.ecr\.(?P<region>[a-z0-9-]+)\.amazonaws\.com(?:\.cn)?/"
    r"(?P<repo>[a-z0-9][a-z0-9._/-]*)(?::(?P<tag>[A-Za-z0-9_.-]{1,128})|@(?P<digest>sha256:[0-9a-f]{64}))$"
)
_PREFIX_RE = re.compile(r"^[a-z0-9][a-z0-9_-]*(/[a-z0-9][a-z0-9_-]*)*$")
_ARN_ACM_RE = re.compile(r"^arn:aws[a-z-]*:acm:[a-z0-9-]+:\d{12}:certificate/[A-Za-z0-9-]+$")
_BU_RE = re.compile(r"^[A-Za-z0-9_-]+$")
_SCHEDULE_RE = re.compile(r"^(cron\([^()]+\)|rate\([^()]+\)|at\([^()]+\))$")  # Scheduler checks the rest


class ConfigError(ValueError):
    """A context value is missing or invalid; the message names the key and the fix."""


@dataclass(frozen=True)
class Oidc:
    """The identity provider users sign in with: on the ALB (``fargate-alb``, ``authenticate-oidc``)
    or in the app (``ecs-express``, ``apprunner``: ``CAPFC_AUTH_MODE=oidc``, endpoints from the
    issuer's discovery document).

    ``client_secret`` names the Secrets Manager secret holding the client secret in its JSON field
    ``client_secret``: its full ARN (``client_secret_arn``, required where the container reads it:
    App Runner takes full ARNs only) or, for the ALB, its name (``client_secret_name``).
    """

    issuer: str
    client_id: str
    client_secret: str
    authorization_endpoint: str | None = None
    token_endpoint: str | None = None
    user_info_endpoint: str | None = None
    scopes: str | None = None
    groups_claim: str | None = None
    role_groups: str | None = None  # JSON, as CAPFC_AUTH_ROLE_GROUPS takes it
    logout_url: str | None = None

    @property
    def client_secret_is_arn(self) -> bool:
        return bool(_ARN_SECRET_RE.match(self.client_secret))


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
    report_schedule: str = "cron(0 6 ? * MON *)"
    keep_runs: int = 30
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
    dev_sign_in: bool = False
    api_audience: str | None = None
    api_gateway: bool = False
    api_rate_limit: int = 50
    api_burst_limit: int = 100
    alarm_email: str | None = None
    log_retention_days: int = 90

    @property
    def in_app_sign_in(self) -> bool:
        """The app signs users in itself (``CAPFC_AUTH_MODE=oidc``): every tier but the ALB's."""
        return self.oidc is not None and self.web_tier != "fargate-alb"

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
        oidc = _oidc(raw["oidc"], tier)
        dev = _bool("dev_sign_in", raw["dev_sign_in"])
        if oidc and dev:
            raise ConfigError(
                "context oidc and dev_sign_in=true: choose one (dev_sign_in is for a sandbox only)"
            )
        if not oidc and not dev:
            raise ConfigError(
                f"context oidc is missing: the web tier ({tier}) must sign users in. Give "
                '-c oidc=\'{"issuer": "https://…", "client_id": "…", "client_secret_arn": "arn:aws:secretsmanager:…"}\' '
                "(fargate-alb also needs authorization_endpoint, token_endpoint, user_info_endpoint and "
                "certificate_arn; see README 'Deploy on AWS'), or -c dev_sign_in=true for a sandbox "
                "whose web pages serve no one (CAPFC_AUTH_MODE=dev answers loopback clients only)"
            )
        if oidc and tier == "fargate-alb" and not cert:
            raise ConfigError("context oidc needs certificate_arn: the ALB authenticates on HTTPS only")
        audience = raw["api_audience"] or (oidc.client_id if oidc else None)
        if audience is not None and not _AUDIENCE_RE.match(str(audience)):
            raise ConfigError(f"context api_audience={audience!r}: one token of printable characters")
        api_gateway = _bool("api_gateway", raw["api_gateway"])
        if api_gateway:
            if tier == "fargate-alb":
                raise ConfigError(
                    "context api_gateway=true with web_tier=fargate-alb: that tier serves /api/v1 through "
                    "its own ALB (a listener rule without the sign-in action); API Gateway fronts "
                    "ecs-express or apprunner"
                )
            if not oidc:
                raise ConfigError(
                    "context api_gateway=true needs oidc: its JWT authorizer checks that issuer"
                )
            if _bool("private_ingress", raw["private_ingress"]):
                raise ConfigError(
                    "context api_gateway=true with private_ingress=true: the HTTP API reaches the web "
                    "tier over its public URL; a private web tier would need a VPC link (not built)"
                )
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
                ("keep_runs", 0, 100_000),
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
                ("api_rate_limit", 1, 10_000),
                ("api_burst_limit", 1, 5_000),
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
        for key in ("schedule", "report_schedule"):
            if not _SCHEDULE_RE.match(str(raw[key])):
                raise ConfigError(
                    f"context {key}={raw[key]!r}: an EventBridge Scheduler expression, "
                    "cron(minutes hours day-of-month month day-of-week year), rate(…) or at(…)"
                )
        return cls(
            web_tier=tier,
            private_ingress=private,
            image=image,
            store_prefix=prefix,
            schedule=str(raw["schedule"]),
            schedule_timezone=str(raw["schedule_timezone"]),
            report_schedule=str(raw["report_schedule"]),
            business_units=bus,
            redis_node_type=str(raw["redis_node_type"]),
            certificate_arn=cert,
            oidc=oidc,
            dev_sign_in=dev,
            api_audience=str(audience) if audience is not None else None,
            api_gateway=api_gateway,
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


def _oidc(v: Any, tier: str) -> Oidc | None:
    if not v:
        return None
    if isinstance(v, str):
        try:
            v = json.loads(v)
        except json.JSONDecodeError:
            raise ConfigError("context oidc: a JSON object") from None
    if not isinstance(v, dict):
        raise ConfigError("context oidc: a JSON object")
    alb = tier == "fargate-alb"
    required = ["issuer", *(ALB_ENDPOINT_KEYS if alb else ()), "client_id"]
    missing = [k for k in required if not v.get(k)]
    secret = v.get("client_secret_arn") or (v.get("client_secret_name") if alb else None)
    if not secret:
        missing.append("client_secret_arn" if not alb else "client_secret_arn (or client_secret_name)")
    if missing:
        raise ConfigError(f"context oidc: missing {', '.join(missing)} (web_tier={tier})")
    unknown = set(v) - {*OIDC_KEYS, *OIDC_OPTIONAL, "client_secret_arn", "client_secret_name"}
    if unknown:
        raise ConfigError(f"context oidc: unknown key(s) {', '.join(sorted(unknown))}")
    for k in ("issuer", *ALB_ENDPOINT_KEYS, "logout_url"):
        if v.get(k) and not str(v[k]).startswith("https://"):
            raise ConfigError(f"context oidc.{k} must be an https:// URL")
    if v.get("client_secret_arn") and not _ARN_SECRET_RE.match(str(v["client_secret_arn"])):
        raise ConfigError(
            f"context oidc.client_secret_arn={v['client_secret_arn']!r}: the secret's full ARN "
            "(arn:aws:secretsmanager:REGION:ACCOUNT:secret:NAME-AbCdEf, with its 6-character suffix)"
        )
    role_groups = v.get("role_groups")
    if role_groups is not None:
        if isinstance(role_groups, str):
            try:
                role_groups = json.loads(role_groups)
            except json.JSONDecodeError:
                raise ConfigError("context oidc.role_groups: a JSON object {role: [groups]}") from None
        ok = isinstance(role_groups, dict) and all(
            r in ("viewer", "planner", "admin") and isinstance(g, list) and all(isinstance(x, str) for x in g)
            for r, g in role_groups.items()
        )
        if not ok:
            raise ConfigError('context oidc.role_groups: {"viewer"|"planner"|"admin": [group names]}')
        role_groups = json.dumps(role_groups, sort_keys=True)
    return Oidc(
        issuer=str(v["issuer"]),
        client_id=str(v["client_id"]),
        client_secret=str(secret),
        **{
            k: (str(v[k]) if v.get(k) else None)
            for k in (*ALB_ENDPOINT_KEYS, "scopes", "groups_claim", "logout_url")
        },
        role_groups=role_groups,
    )
