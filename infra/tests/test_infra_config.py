"""Context validation: a bad value fails at synth with a message naming the key (no AWS, no synth)."""

from __future__ import annotations

import pytest
from capfc_infra.config import Config, ConfigError
from infra_synth import CERT, OIDC, cdk_json_context


def cfg(**ctx) -> Config:
    return Config.from_context({**cdk_json_context(), **ctx}.get)


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
        ({"web_tier": "apprunner", "oidc": OIDC, "certificate_arn": CERT}, "needs web_tier=fargate-alb"),
        ({"web_tier": "fargate-alb", "oidc": OIDC}, "oidc needs certificate_arn"),
        ({"web_tier": "fargate-alb", "certificate_arn": CERT, "oidc": {"issuer": "x"}}, "oidc: missing"),
        (
            {"web_tier": "fargate-alb", "certificate_arn": CERT, "oidc": {**OIDC, "issuer": "http://idp"}},
            "oidc.issuer must be an https:// URL",
        ),
        ({"business_units": ["ok", "not ok!"]}, "business_units"),
    ],
)
def test_bad_context_is_refused_with_the_key_named(ctx: dict, message: str) -> None:
    with pytest.raises(
        ConfigError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")
    ):
        cfg(**ctx)
