"""cdk-nag (AwsSolutions pack, cdk-nag 3 through CDK policy validation) on every variant."""

from __future__ import annotations

import json

import pytest
from infra_synth import VARIANTS


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_awssolutions_passes_with_every_finding_acknowledged(synthesized, variant: str) -> None:
    s = synthesized(variant)
    assert s.nag_ok, s.nag_error


def _acknowledgments(s) -> dict[str, str]:
    out = {}
    for stack in ("CapfcData", "CapfcApp"):
        for path, entries in s.metadata(stack).items():
            for e in entries:
                if e["type"] == "aws:cdk:acknowledged-rules":
                    for rule, reason in e["data"].items():
                        if rule.startswith("AwsSolutions::"):
                            out[f"{path} {rule}"] = reason
    return out


@pytest.mark.parametrize("variant", ["ecs-express", "apprunner", "fargate-alb"])
def test_every_acknowledgment_gives_a_reason(synthesized, variant: str) -> None:
    acks = _acknowledgments(synthesized(variant))
    assert acks
    for where, reason in acks.items():
        assert len(reason) >= 60 and reason.rstrip().endswith("."), where


def test_acknowledged_rules_are_the_reviewed_set(synthesized) -> None:
    """A new kind of acknowledgment must be reviewed and added here (README lists the reasons)."""
    rules = set()
    for variant in ("ecs-express", "apprunner", "fargate-alb", "ecs-express-api"):
        for where in _acknowledgments(synthesized(variant)):
            rules.add(where.split("AwsSolutions::AwsSolutions-", 1)[1].split("[", 1)[0])
    assert rules == {"S1", "IAM4", "IAM5", "SQS3", "ECS2", "AEC3", "AEC6", "SNS2", "EC23", "SMG4"}


def test_nag_fails_the_synth_on_an_unacknowledged_finding(tmp_path) -> None:
    """The plugin is live: a bucket without TLS enforcement or logging stops the synth."""
    import os

    os.environ.setdefault("JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION", "1")
    from aws_cdk import App, Stack, Validations
    from aws_cdk import aws_s3 as s3
    from cdk_nag import AwsSolutionsChecks

    app = App(outdir=str(tmp_path))
    s3.Bucket(Stack(app, "Bad"), "Open")
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    with pytest.raises(RuntimeError, match="ValidationFailed"):
        app.synth()
    report = json.loads((tmp_path / "validation-report.json").read_text())
    rules = {v["ruleName"] for p in report["pluginReports"] for v in p["violations"]}
    assert {"AwsSolutions-S1", "AwsSolutions-S10"} <= rules
