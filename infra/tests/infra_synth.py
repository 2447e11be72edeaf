"""Synthesize the CDK app once per variant and share the cloud assembly between test modules
and pytest-xdist workers (a file lock per variant; the first process to get it synthesizes).

Synthesis runs in Python (``aws_cdk`` through jsii), never the CDK CLI, with cdk-nag's
AwsSolutions pack registered: a variant whose synth reports a finding records it in
``result.json`` instead of raising here, so each test says what it checks.
"""

from __future__ import annotations

import fcntl
import json
import os
import sys
import traceback
from dataclasses import dataclass
from pathlib import Path

INFRA = Path(__file__).resolve().parents[1]
REPO = INFRA.parent
for p in (str(INFRA), str(REPO)):
    if p not in sys.path:
        sys.path.insert(0, p)

ACCOUNT = "123456789012"
REGION = "eu-west-1"
IMAGE_URI = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/capfc:test"
CERT = f"arn:aws:acm:{REGION}:{ACCOUNT}:certificate/0f0e0d0c-0b0a-0908-0706-050403020100"
# The provider the ALB signs users in with (fargate-alb: endpoints, client secret by name).
OIDC = {
    "issuer": "https://idp.example.com",
    "authorization_endpoint": "https://idp.example.com/authorize",
    "token_endpoint": "https://idp.example.com/token",
    "user_info_endpoint": "https://idp.example.com/userinfo",
    "client_id": "capfc-web",
    "client_secret_name": "capfc/oidc",
}
CLIENT_SECRET_ARN = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:capfc/oidc-AbCdEf"
# In-app sign-in (ecs-express, apprunner): the app discovers the endpoints from the issuer.
OIDC_APP = {
    "issuer": "https://idp.example.com",
    "client_id": "capfc-web",
    "client_secret_arn": CLIENT_SECRET_ARN,
    "groups_claim": "cognito:groups",
    "role_groups": {"viewer": ["readers"], "planner": ["planners"], "admin": ["admins"]},
}
API_AUDIENCE = "https://capfc.example.com/api"
TIERS = ("apprunner", "ecs-express", "fargate-alb")
VARIANTS: dict[str, dict] = {
    "ecs-express": {"web_tier": "ecs-express", "image_uri": IMAGE_URI, "oidc": OIDC_APP},
    "apprunner": {"web_tier": "apprunner", "image_uri": IMAGE_URI, "oidc": OIDC_APP},
    "fargate-alb": {"web_tier": "fargate-alb", "image_uri": IMAGE_URI, "certificate_arn": CERT, "oidc": OIDC},
    "apprunner-private": {
        "web_tier": "apprunner",
        "image_uri": IMAGE_URI,
        "private_ingress": True,
        "oidc": OIDC_APP,
    },
    # a sandbox without sign-in: said explicitly, and then the web pages serve no one
    "fargate-alb-private": {
        "web_tier": "fargate-alb",
        "image_uri": IMAGE_URI,
        "private_ingress": True,
        "dev_sign_in": True,
        # and the schedule settings overridden (the tiers above keep cdk.json's defaults)
        "report_schedule": "cron(30 7 ? * FRI *)",
        "schedule_timezone": "Europe/Zurich",
        "keep_runs": 0,
    },
    # the REST API through API Gateway (HTTP API, JWT authorizer) in front of each in-app tier
    "ecs-express-api": {
        "web_tier": "ecs-express",
        "image_uri": IMAGE_URI,
        "oidc": OIDC_APP,
        "api_gateway": True,
        "api_audience": API_AUDIENCE,
    },
    "apprunner-api": {"web_tier": "apprunner", "image_uri": IMAGE_URI, "oidc": OIDC_APP, "api_gateway": True},
    # No image_uri: the repo's Dockerfile becomes an image asset (staged, not built: no Docker).
    "asset": {"web_tier": "ecs-express", "oidc": OIDC_APP},
}


def cdk_json_context() -> dict:
    """The context committed in infra/cdk.json (defaults and feature flags), as the CLI passes it."""
    return json.loads((INFRA / "cdk.json").read_text())["context"]


@dataclass(frozen=True)
class Synth:
    """One synthesized variant: its cloud assembly directory and whether cdk-nag passed."""

    name: str
    outdir: Path
    nag_ok: bool
    nag_error: str

    def template(self, stack: str) -> dict:
        return json.loads((self.outdir / f"{stack}.template.json").read_text())

    @property
    def app(self) -> dict:
        return self.template("CapfcApp")

    @property
    def data(self) -> dict:
        return self.template("CapfcData")

    def metadata(self, stack: str) -> dict:
        return json.loads((self.outdir / f"{stack}.metadata.json").read_text())


def synth(name: str, root: Path) -> Synth:
    """The variant ``name`` synthesized under ``root`` (shared by all workers of one session)."""
    outdir = root / name
    root.mkdir(parents=True, exist_ok=True)
    with open(root / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        result = outdir / "result.json"
        if not result.exists():
            _synth(name, outdir)
    r = json.loads(result.read_text())
    return Synth(name, outdir, r["nag_ok"], r["nag_error"])


def _synth(name: str, outdir: Path) -> None:
    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    from aws_cdk import Environment
    from capfc_infra import build_app

    context = {**cdk_json_context(), **VARIANTS[name]}
    app, _, _ = build_app(context, env=Environment(account=ACCOUNT, region=REGION), outdir=str(outdir))
    ok, error = True, ""
    try:
        app.synth()
    except RuntimeError as e:  # jsii surfaces policy-validation failures as RuntimeError
        if "ValidationFailed" not in str(e):
            raise
        ok, error = False, (outdir / "validation-report.json").read_text() or traceback.format_exc()
    (outdir / "result.json").write_text(json.dumps({"nag_ok": ok, "nag_error": error}))
