"""One typed settings object: defaults in code < optional YAML file < CAPFC_ environment.

This is the only module that reads the environment; everything else receives values.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from .schema import CRITICALITY_ORDER, METRICS

DEFAULT_THRESHOLDS = {
    "cpu_p95": 85.0,
    "mem_p95": 90.0,
    "disk_p95": 85.0,
    "net_in_p95": 800.0,
    "net_out_p95": 800.0,
}
# Critical servers warn earlier: points subtracted from the metric threshold per tier.
DEFAULT_CRITICALITY_OFFSETS = {"critical": -10.0, "high": -5.0, "medium": 0.0, "low": 0.0}
# Days from ordering to capacity in service, per server type ("default" for the rest).
DEFAULT_LEAD_TIME_DAYS = {"default": 30, "db": 60, "storage": 60, "batch": 30, "web": 21, "app": 30}
# Sign-in (app/auth.py): the roles, least to most, and the identity-provider groups granting each.
ROLES = ("viewer", "planner", "admin")
DEFAULT_ROLE_GROUPS = {"viewer": ["capfc-viewers"], "planner": ["capfc-planners"], "admin": ["capfc-admins"]}
ALB_KEY_URL = "https://public-keys.auth.elb.{region}.amazonaws.com/{kid}"


class SettingsError(ValueError):
    """A setting that cannot be used; the message names it."""


class Settings(BaseSettings):
    """Capacity Forecaster configuration (see README "Configuration")."""

    model_config = SettingsConfigDict(env_prefix="CAPFC_", extra="forbid", env_nested_delimiter="__")

    data: str = Field(
        "./data", description="data location: a path, s3://bucket/prefix or athena://workgroup/database"
    )
    config: str | None = Field(None, description="optional YAML settings file")
    freq: Literal["daily", "hourly"] = "daily"
    horizon: int | None = Field(
        None, ge=1, le=5000, description="forecast horizon in periods (default 90 days / 168 hours)"
    )
    model: Literal["fleet", "prophet", "naive", "profile", "gbm", "ensemble"] = "fleet"
    backtest_cutoffs: int = Field(3, ge=0, le=20)
    thresholds: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_THRESHOLDS))
    criticality_offsets: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_CRITICALITY_OFFSETS))
    lead_time_days: dict[str, int] = Field(default_factory=lambda: dict(DEFAULT_LEAD_TIME_DAYS))
    headroom: float = Field(
        0.2, ge=0.0, lt=1.0, description="capacity kept free when right-sizing and packing"
    )
    idle_cpu_p95: float = Field(
        10.0, ge=0.0, le=100.0, description="CPU p95 below which a server counts as idle"
    )
    propose: Literal["idle", "overprovisioned", "all"] = Field(
        "overprovisioned", description="what the plan proposes (see README 'How the plan decides')"
    )
    risk_guard_probability: float = Field(
        0.2, ge=0.0, le=1.0, description="P(breach) from which a server is never shrunk or moved"
    )
    min_saving_fraction: float = Field(
        0.1, ge=0.0, le=0.95, description="smallest saving worth proposing, share of current cost"
    )
    min_saving_usd: float = Field(20.0, ge=0.0, description="... and at least this many USD per month")
    sizing_percentile: float = Field(
        99.0, ge=50.0, le=100.0, description="percentile of the period p95s sized for (sustained demand)"
    )
    lookback_days: int = Field(90, ge=1, le=3650, description="history sizing and idle detection read")
    cross_bu_packing: bool = Field(False, description="let business units share a host (no chargeback)")
    critical_per_host: int = Field(1, ge=1, le=64, description="critical servers one host may carry")
    workers: int = Field(0, ge=0, le=256, description="processes for per-series models (0 = all cores)")
    s3_endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint (else AWS_ENDPOINT_URL / AWS)"
    )
    cache_ttl_seconds: int = Field(300, ge=0)
    grid_client_max_rows: int = Field(
        10_000,
        ge=0,
        le=1_000_000,
        description="app: a page's plan table with more rows than this is paged, sorted, filtered and "
        "exported on the server (AG Grid's infinite row model) instead of sent whole to the browser",
    )
    whatif_max_servers: int = Field(
        10_000,
        ge=1,
        le=1_000_000,
        description="app: a fleet larger than this scopes what-ifs to the filtered servers, at most this many "
        "(the page says so when the filters select more); a whole fleet of this size is prepared at once",
    )
    lease_seconds: int = Field(
        600,
        ge=2,
        le=86400,
        description="how long a run's lease on the store (runs/.lease) lasts unless renewed; a run "
        "renews it every third of this, a crashed one blocks others at most this long",
    )
    keep_runs: int = Field(
        30,
        ge=0,
        le=100_000,
        description="published runs the clean-up keeps (newest first; 0 = keep every run); the run "
        "LATEST names, signed-off runs and runs being read are always kept (python -m forecasting clean, "
        "and at the end of each batch run)",
    )
    redis_url: str | None = Field(
        None,
        description="Redis for the web tier's shared state (background-callback jobs run by a Celery "
        "worker, the current run id): redis://host:6379/0 or rediss://… (ElastiCache); unset = "
        "one instance: local disk cache and in-process jobs",
    )
    ready_max_plan_age_hours: float | None = Field(
        None, gt=0, description="plan age beyond which /readyz says 'stale' (still 200: keep serving)"
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        "INFO", description="lowest level logged, every entry point (CLI, Lambda, gunicorn, app)"
    )
    log_format: Literal["json", "text"] = Field(
        "json", description="json (one object per line, for CloudWatch) or text (a developer's terminal)"
    )
    # event-driven batch on AWS (forecasting/aws): what the trigger runs itself, what it hands on
    state_machine_arn: str | None = Field(
        None, description="Step Functions machine the trigger starts for fleets above lambda_max_servers"
    )
    lambda_max_servers: int = Field(
        10_000, ge=0, description="largest fleet the trigger runs inside one Lambda (15 min, 10 GB)"
    )
    trigger_prefix: str | None = Field(
        None, description="S3 key prefix of new telemetry that starts a run (default: the store's metrics/)"
    )
    shard_size: int = Field(
        5_000, ge=1, le=1_000_000, description="servers per shard of a Step Functions (or Dask) run"
    )
    calibration_servers: int = Field(
        500,
        ge=1,
        le=100_000,
        description="servers of the fleet's calibration sample: what the models pool across series is "
        "learned on them once per run (the same choices whatever the shard count)",
    )
    engine: Literal["local", "dask"] = Field(
        "local", description="batch engine: local (this process) or dask (the shards on a Dask cluster)"
    )
    scheduler: str | None = Field(
        None, description="Dask scheduler address (tcp://host:8786); unset = a local cluster of 2 workers"
    )
    shard_retries: int = Field(
        2, ge=0, le=10, description="times a failed shard is retried on the Dask engine"
    )
    shard_concurrency: int = Field(
        10, ge=1, le=1000, description="shards the Step Functions Map runs at once (MaxConcurrencyPath)"
    )
    host: str = "127.0.0.1"
    port: int = Field(8050, ge=1, le=65535)
    # Sign-in and roles (app/auth.py; README "Sign-in and roles"). No default mode: the web app
    # refuses to start until one is chosen, so a container never runs open by accident.
    auth_mode: Literal["alb", "oidc", "dev"] | None = Field(
        None,
        description="alb: behind an ALB that signs users in (x-amzn-oidc-data verified here); "
        "oidc: sign-in in the app (Authorization Code + PKCE); dev: local only, no sign-in",
    )
    auth_issuer: str | None = Field(None, description="the identity provider's issuer URL (iss)")
    auth_client_id: str | None = Field(None, description="this app's client id at the identity provider")
    auth_client_secret: SecretStr | None = Field(None, description="oidc: the client secret")
    auth_scopes: str = Field("openid profile email", description="oidc: scopes asked for")
    auth_redirect_url: str | None = Field(
        None, description="oidc: the full URL of /auth/callback (default: from the request's host)"
    )
    auth_logout_url: str | None = Field(
        None,
        description="where sign-out sends the browser (default oidc: the provider's end_session_endpoint)",
    )
    auth_groups_claim: str = Field("groups", description="the claim listing the user's groups")
    auth_role_groups: dict[str, list[str]] = Field(
        default_factory=lambda: {k: list(v) for k, v in DEFAULT_ROLE_GROUPS.items()},
        description="role -> identity-provider groups granting it (viewer, planner, admin)",
    )
    auth_alb_arn: str | None = Field(None, description="alb: the load balancer's ARN (the token's signer)")
    auth_alb_key_url: str = Field(
        ALB_KEY_URL, description="alb: where the ALB's public key of a kid is fetched ({region}, {kid})"
    )
    auth_leeway_seconds: int = Field(30, ge=0, le=300, description="clock skew allowed on exp/iat")
    session_secret: SecretStr | None = Field(
        None, description="oidc: the key signing the session cookie (32+ characters; never a default)"
    )
    session_cookie_secure: bool = Field(True, description="session cookie only over HTTPS")
    session_hours: float = Field(8.0, gt=0, le=24 * 7, description="how long a sign-in lasts")
    # Web tier hardening (app/security.py; README "Web security"); redis_url above also holds
    # the rate-limit counters
    force_https: bool = Field(False, description="redirect plain HTTP to HTTPS (behind a TLS proxy)")
    proxy_hops: int = Field(
        0, ge=0, le=5, description="reverse proxies in front whose X-Forwarded-For/-Proto/-Host are trusted"
    )
    max_request_bytes: int = Field(
        1_048_576, ge=1024, le=1_073_741_824, description="largest request body accepted (413 above)"
    )
    rate_limit: str = Field(
        "30/minute", description="per user: exports, what-if changes and re-forecasts (e.g. 30/minute)"
    )
    # The REST API (app/api; README "REST API"): bearer tokens from the same identity provider
    api_audience: str | None = Field(
        None,
        description="the audience (aud) API access tokens must carry; unset: the API refuses every "
        "token (dev mode needs none)",
    )
    api_rate_limit: str = Field(
        "600/minute", description="per API client (the token's subject), e.g. 600/minute"
    )
    max_jobs: int = Field(4, ge=1, le=256, description="background jobs (re-forecasts) per instance")
    max_jobs_per_user: int = Field(2, ge=1, le=256, description="background jobs per user at once")

    @field_validator("rate_limit", "api_rate_limit")
    @classmethod
    def _rate(cls, v: str) -> str:
        import re

        v = v.strip()
        unit = r"(second|minute|hour|day)s?"
        if not re.fullmatch(rf"\d+\s*(/|per)\s*(\d+\s+)?{unit}(\s*;\s*\d+\s*(/|per)\s*(\d+\s+)?{unit})*", v):
            raise ValueError(f"{v!r}: write a rate like '30/minute' or '10 per second; 200 per hour'")
        return v

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, v: Any) -> Any:
        return v.strip().upper() if isinstance(v, str) else v

    @field_validator("log_format", mode="before")
    @classmethod
    def _lower(cls, v: Any) -> Any:
        return v.strip().lower() if isinstance(v, str) else v

    @field_validator("thresholds")
    @classmethod
    def _known_metrics(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(METRICS)
        if unknown:
            raise ValueError(f"unknown metric(s) {sorted(unknown)}; known: {list(METRICS)}")
        merged = {**DEFAULT_THRESHOLDS, **v}
        for m, t in merged.items():
            if METRICS[m].kind == "percent" and not 0 < t <= 100:
                raise ValueError(f"{m} threshold {t} must be in (0, 100]")
            if t <= 0:
                raise ValueError(f"{m} threshold {t} must be positive")
        return merged

    @field_validator("criticality_offsets")
    @classmethod
    def _known_tiers(cls, v: dict[str, float]) -> dict[str, float]:
        unknown = set(v) - set(CRITICALITY_ORDER)
        if unknown:
            raise ValueError(f"unknown criticality tier(s) {sorted(unknown)}; known: {CRITICALITY_ORDER}")
        return {**DEFAULT_CRITICALITY_OFFSETS, **v}

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str | None) -> str | None:
        # never echo the value: it may carry a password (an ElastiCache AUTH token)
        v = v.strip() if v else None
        if v and not v.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return v or None

    @field_validator("auth_role_groups")
    @classmethod
    def _role_groups(cls, v: dict[str, list[str]]) -> dict[str, list[str]]:
        unknown = set(v) - set(ROLES)
        if unknown:
            raise ValueError(f"unknown role(s) {sorted(unknown)}; roles: {list(ROLES)}")
        return {role: [g.strip() for g in groups if g and g.strip()] for role, groups in v.items()}

    @field_validator("auth_alb_key_url")
    @classmethod
    def _key_url(cls, v: str) -> str:
        v = v.strip()
        if "{kid}" not in v or not v.startswith(("https://", "http://")):
            raise ValueError("an http(s) URL template containing {kid} (and optionally {region})")
        return v

    @field_validator("data")
    @classmethod
    def _data_uri(cls, v: str) -> str:
        v = v.strip()
        if not v:
            raise ValueError("must not be empty")
        if "://" in v and not v.startswith(("s3://", "athena://", "file://")):
            raise ValueError(f"{v!r}: use a local path, s3://bucket/prefix or athena://workgroup/database")
        return v

    @model_validator(mode="after")
    def _scheduler_means_dask(self) -> Settings:
        """A scheduler address alone (CAPFC_SCHEDULER, as --scheduler) selects the Dask engine;
        an explicit engine wins."""
        if self.scheduler and "engine" not in self.model_fields_set:
            self.engine = "dask"
        return self

    def policy(self):  # -> forecasting.policy.Policy (imported here: the policy needs the analytics)
        """The planner's policy these settings describe."""
        from .policy import Policy

        return Policy(
            propose=self.propose,
            risk_probability=self.risk_guard_probability,
            min_saving_fraction=self.min_saving_fraction,
            min_saving_usd=self.min_saving_usd,
            sizing_percentile=self.sizing_percentile,
            lookback_days=self.lookback_days,
            cross_business_unit=self.cross_bu_packing,
            critical_per_host=self.critical_per_host,
        )

    @property
    def effective_horizon(self) -> int:
        return self.horizon or (90 if self.freq == "daily" else 168)

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        config = init_settings.init_kwargs.get("config")  # type: ignore[attr-defined]
        return (init_settings, env_settings, _YamlSource(settings_cls, config))


class _YamlSource(PydanticBaseSettingsSource):
    """Values from the YAML file given as --config / CAPFC_CONFIG (or ./capfc.yaml when present)."""

    def __init__(self, settings_cls: type[BaseSettings], path: str | None):
        super().__init__(settings_cls)
        self.path = path

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:  # pragma: no cover
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        path = (
            self.path
            or os.environ.get("CAPFC_CONFIG")
            or ("capfc.yaml" if Path("capfc.yaml").exists() else None)
        )
        if not path:
            return {}
        try:
            loaded = yaml.safe_load(Path(path).read_text()) or {}
        except FileNotFoundError:
            raise SettingsError(f"settings file {path} (CAPFC_CONFIG) does not exist") from None
        except yaml.YAMLError as e:
            raise SettingsError(f"settings file {path} is not valid YAML: {e}") from None
        if not isinstance(loaded, dict):
            raise SettingsError(f"settings file {path} must hold a mapping of setting: value")
        return loaded


def load_settings(**overrides: Any) -> Settings:
    """Build settings, turning pydantic's errors into one message naming each bad setting."""
    try:
        return Settings(**{k: v for k, v in overrides.items() if v is not None})
    except ValidationError as e:
        parts = []
        for err in e.errors():
            name = ".".join(str(p) for p in err["loc"]) or "settings"
            parts.append(f"CAPFC_{name.upper()} ({name}): {err['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(parts)) from None
