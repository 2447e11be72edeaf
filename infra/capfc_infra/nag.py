"""cdk-nag acknowledgments in one place, each with its reason (cdk-nag 3: CDK's Validations API).

Why a helper: cdk-nag 3 reads acknowledgments from ``Validations.of(construct).acknowledge``
with ids ``AwsSolutions::<rule>[<finding>]``; every call here must carry a reason a reviewer
can check, and ``tests/test_infra_nag.py`` asserts the reasons are real sentences.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, Validations
from constructs import IConstruct

PACK = "AwsSolutions"


def ack(construct: IConstruct, rule: str, reason: str, *findings: str) -> None:
    """Acknowledge ``rule`` (e.g. ``IAM5``) on ``construct``, for each finding if given."""
    ids = [f"{PACK}-{rule}[{f}]" for f in findings] if findings else [f"{PACK}-{rule}"]
    Validations.of(construct).acknowledge(*(Acknowledgment(id=f"{PACK}::{i}", reason=reason) for i in ids))


def ack_ecr_pull(role: IConstruct) -> None:
    """The one wildcard every role that pulls the image carries (execution roles, App Runner's access role)."""
    ack(
        role,
        "IAM5",
        "ecr:GetAuthorizationToken has no resource-level permissions (AWS defines it on *); image "
        "pulls themselves are limited to the one repository.",
        "Resource::*",
    )
