"""Least-privilege S3 access to the store, by prefix: who may read telemetry, who may write plans.

Why by hand and not ``bucket.grant_read_write``: the grants open the whole bucket. Here a batch
role reads ``metrics/`` and ``inventory/`` and writes only ``runs/`` (plus the Athena symlink
manifests), so a run can never write under the prefix that triggers runs, and the web tier
writes nothing at all.
"""

from __future__ import annotations

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3

READ_PREFIXES = ("metrics/", "inventory/", "store.json")
PLAN_PREFIXES = ("runs/", "athena-manifests/")


def _objects(bucket: s3.IBucket, prefix: str, parts: tuple[str, ...]) -> list[str]:
    return [bucket.arn_for_objects(f"{prefix}/{p}*" if p.endswith("/") else f"{prefix}/{p}") for p in parts]


# Where each writer may put (and replace: stores write under a temporary name and rename) objects.
RUN_WRITES = ("runs/", "athena-manifests/")  # a whole run: the trigger in-Lambda, publish, the task
SHARD_WRITES = ("runs/*/shards/",)  # plan, calibrate and shard write only a run's shard area


def grant_store(role: iam.IRole, bucket: s3.IBucket, prefix: str, *, writes: tuple[str, ...] = ()) -> None:
    """Read the telemetry, inventory and plans; write (put, replace) only under ``writes``."""
    readable = [*READ_PREFIXES, *PLAN_PREFIXES]
    role.add_to_principal_policy(
        iam.PolicyStatement(
            # HeadBucket (the store's fail-fast check) is authorised by s3:ListBucket and sends
            # no s3:prefix, so a prefix condition would refuse it; key names are all it lists.
            sid="ListStore",
            actions=["s3:ListBucket"],
            resources=[bucket.bucket_arn],
        )
    )
    role.add_to_principal_policy(
        iam.PolicyStatement(
            sid="ReadStore",
            actions=["s3:GetObject"],
            resources=_objects(bucket, prefix, tuple(readable)),
        )
    )
    if writes:
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="WritePlans",
                actions=["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                resources=_objects(bucket, prefix, writes),
            )
        )
