"""Least-privilege S3 access to the store, by prefix: who may read telemetry, who may write plans
and the records (decisions, sign-offs, read leases, report packs).

Why by hand and not ``bucket.grant_read_write``: the grants open the whole bucket. Here a batch
role reads ``metrics/`` and ``inventory/`` and writes only ``runs/`` (plus the Athena symlink
manifests), so a run can never write under the prefix that triggers runs; the web tier may only
create records (``decisions/``, ``signoffs/``, ``readers/``), never touch a plan; decisions are
create-only for everyone (nothing deletes one). The record prefixes are those of
``forecasting/records/decisions.py`` (``DECISIONS_DIR``, ``SIGNOFFS_DIR``),
``forecasting/records/retention.py`` (``READERS_DIR``) and ``report.default_out`` (``reports/``);
a test compares them.

The store writes through pyarrow's S3 filesystem, which keeps a directory that a delete empties as
an empty ``dir/`` object (measured: deleting ``readers/<run>/<lease>.json`` PUTs
``readers/<run>/``, deleting the folder ``readers/<run>`` PUTs ``readers/``). A role that deletes
under a prefix therefore also needs PutObject on that folder's marker key, and only that key
(:data:`Access.markers`).
"""

from __future__ import annotations

from dataclasses import dataclass

from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3

READ_PREFIXES = ("metrics/", "inventory/", "store.json")
PLAN_PREFIXES = ("runs/", "athena-manifests/")
DECISIONS = "decisions/"
SIGNOFFS = "signoffs/"
READERS = "readers/"
REPORTS = "reports/"
RECORD_PREFIXES = (DECISIONS, SIGNOFFS, READERS)

# Where each writer may put (and replace: stores write under a temporary name and rename) objects.
RUN_WRITES = ("runs/", "athena-manifests/")  # a whole run: the trigger in-Lambda, publish, the task
# plan, calibrate and shard write a run's shard area and the parts of its plan tables
# (forecasting/shards.py PART_TABLES: runs/<id>/<table>/part-<k>.parquet), never its manifest
SHARD_WRITES = ("runs/*/shards/", "runs/*/forecasts/", "runs/*/risk/", "runs/*/backtest/")


@dataclass(frozen=True)
class Access:
    """What one role may do in the store beyond reading telemetry, inventory and plans.

    ``reads``: more prefixes to GET; ``plans``: put, replace and delete plan objects;
    ``records``: the same on record prefixes; ``creates``: put only (never delete); ``deletes``:
    delete only; ``markers``: the exact folder keys pyarrow re-creates after a delete empties them
    (put, nothing below)."""

    reads: tuple[str, ...] = ()
    plans: tuple[str, ...] = ()
    records: tuple[str, ...] = ()
    creates: tuple[str, ...] = ()
    deletes: tuple[str, ...] = ()
    markers: tuple[str, ...] = ()


# The five kinds of store user in the stacks, one place to review them.
SHARD_STEP = Access(plans=SHARD_WRITES)  # plan, calibrate, shard: a run's shard area and table parts
# trigger, publish, the batch task: a whole run, then the retention clean-up (forecasting/records/
# retention.py): reads sign-offs and read leases, hides a run (deletes runs/<id>/manifest.json,
# puts it back when a reader appeared: both under runs/), deletes its files and stale leases.
RUN_BATCH = Access(reads=(SIGNOFFS, READERS), plans=RUN_WRITES, deletes=(READERS,), markers=(READERS,))
# the web app: records decisions (create-only), signs runs off (and takes a sign-off back when
# the clean-up won the race), holds a read lease on the run it shows.
WEB_APP = Access(reads=RECORD_PREFIXES, creates=(DECISIONS,), records=(SIGNOFFS, READERS))
# the Celery worker loads plans like the web app (read lease), records nothing.
WORKER = Access(reads=RECORD_PREFIXES, records=(READERS,))
# the weekly report pack: reads the plan and its records under a read lease, writes the pack.
REPORT = Access(reads=RECORD_PREFIXES, records=(READERS,), creates=(REPORTS,))


def _objects(bucket: s3.IBucket, prefix: str, parts: tuple[str, ...]) -> list[str]:
    return [bucket.arn_for_objects(f"{prefix}/{p}*" if p.endswith("/") else f"{prefix}/{p}") for p in parts]


def grant_store(
    role: iam.IRole,
    bucket: s3.IBucket,
    prefix: str,
    access: Access | None = None,
) -> None:
    """Read the telemetry, inventory and plans, and whatever ``access`` adds (see :class:`Access`);
    without it the role writes nothing."""
    access = access or Access()
    writes = access.plans
    readable = [*READ_PREFIXES, *PLAN_PREFIXES, *access.reads]
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
    if access.records:
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="WriteRecords",
                actions=["s3:PutObject", "s3:DeleteObject", "s3:AbortMultipartUpload"],
                resources=_objects(bucket, prefix, access.records),
            )
        )
    if access.creates:
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="CreateRecords",
                actions=["s3:PutObject", "s3:AbortMultipartUpload"],
                resources=_objects(bucket, prefix, access.creates),
            )
        )
    if access.deletes:
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="DeleteRecords",
                actions=["s3:DeleteObject"],
                resources=_objects(bucket, prefix, access.deletes),
            )
        )
    if access.markers:
        role.add_to_principal_policy(
            iam.PolicyStatement(
                sid="FolderMarkers",
                actions=["s3:PutObject"],
                resources=[bucket.arn_for_objects(f"{prefix}/{m}") for m in access.markers],
            )
        )
