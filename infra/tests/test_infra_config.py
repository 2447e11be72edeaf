"""Context validation: a bad value fails at synth with a message naming the key (no AWS, no synth)."""

from __future__ import annotations

import json

import pytest
from capfc_infra.config import Config, ConfigError
from infra_synth import CERT, CLIENT_SECRET_ARN, OIDC, OIDC_APP, cdk_json_context


def cfg(**ctx) -> Config:
    """Config from cdk.json plus ``ctx``; in-app OIDC unless the test chooses sign-in itself."""
    sign_in = {} if {"oidc", "dev_sign_in"} & set(ctx) else {"oidc": OIDC_APP}
    return Config.from_context({**cdk_json_context(), **sign_in, **ctx}.get)


def test_defaults_from_cdk_json() -> None:
    c = cfg()
    assert (c.web_tier, c.private_ingress, c.store_prefix, c.image) == ("ecs-express", False, "store", None)
    assert c.metrics_prefix == "store/metrics/"
    assert c.bucket_names("123456789012", "eu-west-1") == (
        "capfc-store-123456789012-eu-west-1",
        "capfc-logs-123456789012-eu-west-1",
    )


def test_cli_strings_are_parsed() -> None:
    c = cfg(private_ingress="true", nat_gateways="2", business_units="Retail,Payments")
    assert c.private_ingress is True and c.nat_gateways == 2
    assert c.business_units == ("Retail", "Payments")


def test_image_uri_tag_and_digest() -> None:
    tag = cfg(image_uri="123456789012.dkr.ecr.eu-west-1.amazonaws.com/team/capfc:v1.2").image
    assert (tag.repository, tag.tag_or_digest, tag.region) == ("team/capfc", "v1.2", "eu-west-1")
    digest = "sha256:" + "ab" * 32
    assert (
        cfg(image_uri=f"123456789012.dkr.ecr.us-east-1.amazonaws.com/capfc@{digest}").image.tag_or_digest
        == digest
    )


@pytest.mark.parametrize(
    ("ctx", "message"),
    [
        ({"web_tier": "lambda"}, "web_tier='lambda': choose one of apprunner, ecs-express, fargate-alb"),
        ({"image_uri": "docker.io/library/python:3.11"}, "image_uri"),
        ({"store_prefix": "Store/../x"}, "store_prefix"),
        ({"nat_gateways": "many"}, "nat_gateways='many': a whole number"),
        ({"web_min_tasks": 3, "web_max_tasks": 2}, "web_max_tasks must be >= web_min_tasks"),
        ({"private_ingress": True, "nat_gateways": 0}, "private tasks need a NAT gateway"),
        ({"private_ingress": "perhaps"}, "private_ingress='perhaps': true or false"),
        ({"certificate_arn": "arn:aws:iam::123456789012:server-certificate/x"}, "certificate_arn"),
        # App Runner takes only a secret's full ARN; the ALB also takes its name
        (
            {"web_tier": "apprunner", "oidc": OIDC},
            "oidc: missing client_secret_arn (web_tier=apprunner)",
        ),
        (
            {"web_tier": "ecs-express", "oidc": {**OIDC_APP, "client_secret_arn": "capfc/oidc"}},
            "client_secret_arn='capfc/oidc': the secret's full ARN",
        ),
        ({"web_tier": "fargate-alb", "oidc": OIDC}, "oidc needs certificate_arn"),
        (
            {"web_tier": "fargate-alb", "certificate_arn": CERT, "oidc": OIDC_APP},
            "oidc: missing authorization_endpoint, token_endpoint, user_info_endpoint",
        ),
        ({"web_tier": "fargate-alb", "certificate_arn": CERT, "oidc": {"issuer": "x"}}, "oidc: missing"),
        ({"oidc": {**OIDC_APP, "client_secret": "s3cr3t"}}, "oidc: unknown key(s) client_secret"),
        ({"oidc": {**OIDC_APP, "role_groups": {"root": ["x"]}}}, "oidc.role_groups"),
        ({"oidc": {**OIDC_APP, "issuer": "http://idp"}}, "oidc.issuer must be an https:// URL"),
        ({"oidc": "{not json"}, "context oidc: a JSON object"),
        ({"oidc": OIDC_APP, "dev_sign_in": True}, "choose one"),
        ({"api_audience": "two words"}, "api_audience"),
        (
            {"web_tier": "fargate-alb", "certificate_arn": CERT, "oidc": OIDC, "api_gateway": True},
            "its own ALB",
        ),
        ({"api_gateway": True, "private_ingress": True}, "would need a VPC link"),
        ({"dev_sign_in": True, "api_gateway": True}, "api_gateway=true needs oidc"),
        ({"api_rate_limit": 0}, "api_rate_limit=0: between 1 and 10000"),
        (
            {"web_tier": "fargate-alb", "certificate_arn": CERT, "oidc": {**OIDC, "issuer": "http://idp"}},
            "oidc.issuer must be an https:// URL",
        ),
        ({"business_units": ["ok", "not ok!"]}, "business_units"),
        (
            {"report_schedule": "Mondays 6:00"},
            "report_schedule='Mondays 6:00': an EventBridge Scheduler expression",
        ),
        ({"schedule": "daily"}, "schedule='daily': an EventBridge Scheduler expression"),
        ({"keep_runs": -1}, "keep_runs=-1: between 0 and 100000"),
        ({"keep_runs": "thirty"}, "keep_runs='thirty': a whole number"),
    ],
)
def test_bad_context_is_refused_with_the_key_named(ctx: dict, message: str) -> None:
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        cfg(**ctx)


@pytest.mark.parametrize("tier", ["ecs-express", "apprunner", "fargate-alb"])
def test_no_sign_in_context_fails_the_synth_naming_the_fix(tier: str) -> None:
    """A bank never deploys a web tier without sign-in: no oidc and no explicit dev_sign_in."""
    with pytest.raises(ConfigError) as e:
        Config.from_context({**cdk_json_context(), "web_tier": tier}.get)
    message = str(e.value)
    assert f"context oidc is missing: the web tier ({tier}) must sign users in" in message
    assert "-c oidc=" in message and "dev_sign_in=true" in message


def test_sign_in_per_tier() -> None:
    app_runner = cfg(web_tier="apprunner", api_gateway="true")
    assert app_runner.in_app_sign_in and app_runner.oidc.client_secret == CLIENT_SECRET_ARN
    assert app_runner.api_gateway and app_runner.api_audience == "capfc-web"  # defaults to the client id
    alb = cfg(web_tier="fargate-alb", certificate_arn=CERT, oidc=json.dumps(OIDC))  # a CLI string
    assert not alb.in_app_sign_in and alb.oidc.client_secret == "capfc/oidc"
    assert alb.oidc.token_endpoint == "https://idp.example.com/token"
    dev = cfg(web_tier="ecs-express", dev_sign_in="true")
    assert dev.oidc is None and dev.dev_sign_in and not dev.in_app_sign_in and dev.api_audience is None
    groups = cfg(oidc={**OIDC_APP, "role_groups": '{"viewer": ["a"]}'}).oidc.role_groups
    assert json.loads(groups) == {"viewer": ["a"]}


def test_report_schedule_and_retention_defaults_and_overrides() -> None:
    c = cfg()
    assert (c.report_schedule, c.schedule_timezone, c.keep_runs) == ("cron(0 6 ? * MON *)", "UTC", 30)
    o = cfg(report_schedule="rate(7 days)", keep_runs="0")  # CLI strings; 0 keeps every run
    assert (o.report_schedule, o.keep_runs) == ("rate(7 days)", 0)


def test_every_context_key_is_in_the_readme() -> None:
    """README "Deploy on AWS" documents each key (a new key without a line there fails here)."""
    from capfc_infra.config import DEFAULTS
    from infra_synth import REPO

    readme = (REPO / "README.md").read_text(encoding="utf-8")
    section = readme.split("## Deploy on AWS", 1)[1].split("\n## ", 1)[0]
    assert [k for k in DEFAULTS if f"`{k}`" not in section] == []
