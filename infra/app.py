#!/usr/bin/env python3
"""CDK entry point (``cdk synth`` / ``cdk deploy`` run it, see cdk.json and README "Deploy on AWS").

Region and account come from the CLI's environment (``CDK_DEFAULT_REGION``/``CDK_DEFAULT_ACCOUNT``,
i.e. the AWS profile or the OIDC role in CI); choices come from context (``-c web_tier=…``).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT.parent)]  # capfc_infra, and forecasting (Glue columns)

from aws_cdk import Environment  # noqa: E402
from capfc_infra import build_app  # noqa: E402
from capfc_infra.config import ConfigError  # noqa: E402

region = os.environ.get("CDK_DEPLOY_REGION") or os.environ.get("CDK_DEFAULT_REGION") or "eu-west-1"
account = os.environ.get("CDK_DEPLOY_ACCOUNT") or os.environ.get("CDK_DEFAULT_ACCOUNT")
try:
    app, _, _ = build_app(env=Environment(account=account, region=region))
except ConfigError as e:  # one line naming the context key, not a traceback
    print(f"capfc infra: {e}", file=sys.stderr)
    sys.exit(2)
app.synth()
