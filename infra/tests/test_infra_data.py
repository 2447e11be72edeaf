"""The data stack: the store bucket, the Glue tables (against the product's own DDL) and Athena."""

from __future__ import annotations

import re

import pytest
from aws_cdk.assertions import Match, Template
from cfn import one, render, resources


@pytest.fixture(scope="module")
def data(synthesized) -> dict:
    return synthesized("ecs-express").data


def test_store_bucket_is_versioned_encrypted_private_and_access_logged(data: dict) -> None:
    t = Template.from_json(data)
    t.has_resource_properties(
        "AWS::S3::Bucket",
        {
            "BucketName": "capfc-store-123456789012-eu-west-1",
            "VersioningConfiguration": {"Status": "Enabled"},
            "BucketEncryption": {
                "ServerSideEncryptionConfiguration": [
                    {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                ]
            },
            "PublicAccessBlockConfiguration": {
                "BlockPublicAcls": True,
                "BlockPublicPolicy": True,
                "IgnorePublicAcls": True,
                "RestrictPublicBuckets": True,
            },
            "LoggingConfiguration": {
                "DestinationBucketName": {"Ref": Match.string_like_regexp("AccessLogs")},
                "LogFilePrefix": "s3/store/",
            },
        },
    )
    # Both buckets are kept when the stack is deleted: they hold the data and its audit trail.
    for bucket in resources(data, "AWS::S3::Bucket").values():
        assert bucket["DeletionPolicy"] == "Retain"


def test_deleted_runs_and_leases_are_restorable_for_30_days_then_gone(data: dict) -> None:
    """The retention clean-up deletes runs and read leases; on the versioned bucket their old
    versions expire after 30 days and the delete markers left behind are removed."""
    _, bucket = next(
        (k, v)
        for k, v in resources(data, "AWS::S3::Bucket").items()
        if v["Properties"].get("BucketName") == "capfc-store-123456789012-eu-west-1"
    )
    (rule,) = [
        r for r in bucket["Properties"]["LifecycleConfiguration"]["Rules"] if r["Id"] == "old-versions"
    ]
    assert rule["Status"] == "Enabled" and "Prefix" not in rule
    assert rule["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert rule["ExpiredObjectDeleteMarker"] is True
    assert "ExpirationInDays" not in rule  # current objects never expire


def test_every_bucket_refuses_plain_http(data: dict) -> None:
    policies = resources(data, "AWS::S3::BucketPolicy")
    assert len(policies) == 2
    for policy in policies.values():
        denies = [
            s
            for s in policy["Properties"]["PolicyDocument"]["Statement"]
            if s["Effect"] == "Deny"
            and s.get("Condition", {}).get("Bool", {}).get("aws:SecureTransport") == "false"
        ]
        assert denies, policy


def test_store_bucket_sends_eventbridge_notifications(data: dict) -> None:
    Template.from_json(data).has_resource_properties(
        "Custom::S3BucketNotifications",
        {"NotificationConfiguration": {"EventBridgeConfiguration": {}}},
    )


def test_athena_workgroup_enforces_encrypted_results_and_a_scan_cutoff(data: dict) -> None:
    _, wg = one(data, "AWS::Athena::WorkGroup")
    conf = wg["Properties"]["WorkGroupConfiguration"]
    assert wg["Properties"]["Name"] == "capfc"
    assert conf["EnforceWorkGroupConfiguration"] is True
    assert conf["PublishCloudWatchMetricsEnabled"] is True
    assert conf["BytesScannedCutoffPerQuery"] == 10 * 1024**3
    assert conf["ResultConfiguration"]["EncryptionConfiguration"] == {"EncryptionOption": "SSE_S3"}
    assert render(conf["ResultConfiguration"]["OutputLocation"]).endswith("/athena-results/")


def _ddl_tables() -> dict[str, dict]:
    """The product's own CREATE TABLE statements, parsed: columns, partitions, properties."""
    from forecasting.sources.athena import ddl

    out = {}
    for stmt in ddl("capfc", "s3://capfc-store-123456789012-eu-west-1/store"):
        m = re.match(r"CREATE EXTERNAL TABLE IF NOT EXISTS `capfc`\.`(\w+)` \(\n(.*?)\n\)\n", stmt, re.S)
        if not m:
            continue
        cols = re.findall(r"^  `(\w+)` (\S+?),?$", m.group(2), re.M)
        parts = re.search(r"PARTITIONED BY \((.*?)\)\n", stmt)
        partitions = re.findall(r"`(\w+)` (\w+)", parts.group(1)) if parts else []
        props = (
            dict(re.findall(r"'([^']+)' = '([^']*)'", stmt.split("TBLPROPERTIES", 1)[1]))
            if "TBLPROPERTIES" in stmt
            else {}
        )
        location = re.search(r"LOCATION '([^']+)'", stmt).group(1)
        out[m.group(1)] = {
            "columns": cols,
            "partitions": partitions,
            "props": props,
            "location": location,
            "symlink": "SymlinkTextInputFormat" in stmt,
        }
    return out


def test_glue_tables_are_the_products_athena_ddl(data: dict) -> None:
    expected = _ddl_tables()
    assert {"inventory", "metrics", "plan_forecasts", "plan_risk"} <= set(expected)
    tables = {
        t["Properties"]["TableInput"]["Name"]: t["Properties"]["TableInput"]
        for t in resources(data, "AWS::Glue::Table").values()
    }
    assert set(tables) == set(expected)
    for name, want in expected.items():
        got = tables[name]
        sd = got["StorageDescriptor"]
        assert [(c["Name"], c["Type"]) for c in sd["Columns"]] == want["columns"], name
        assert [(c["Name"], c["Type"]) for c in got.get("PartitionKeys", [])] == want["partitions"], name
        assert render(sd["Location"]) == want["location"], name
        params = {k: render(v) for k, v in got["Parameters"].items()}
        for key, value in want["props"].items():
            assert params[key] == value, (name, key)
        assert ("SymlinkTextInputFormat" in sd["InputFormat"]) == want["symlink"], name
        assert sd["SerdeInfo"]["SerializationLibrary"].endswith("ParquetHiveSerDe")


def test_metrics_table_projects_business_unit_and_year_partitions(data: dict) -> None:
    Template.from_json(data).has_resource_properties(
        "AWS::Glue::Table",
        {
            "TableInput": Match.object_like(
                {
                    "Name": "metrics",
                    "PartitionKeys": [
                        {"Name": "business_unit", "Type": "string"},
                        {"Name": "year", "Type": "int"},
                    ],
                    "Parameters": Match.object_like(
                        {
                            "projection.enabled": "true",
                            "projection.business_unit.type": "injected",
                            "projection.year.type": "integer",
                            "storage.location.template": (
                                "s3://capfc-store-123456789012-eu-west-1/store/metrics/"
                                "business_unit=${business_unit}/year=${year}/"
                            ),
                        }
                    ),
                }
            )
        },
    )


def test_business_units_context_makes_an_enum_projection_like_the_ddl() -> None:
    """``-c business_units=…`` gives the same enum projection ``ddl(business_units=…)`` prints."""
    from capfc_infra.glue_schema import table_defs

    from forecasting.sources.athena import ddl

    units = ["Retail", "Payments", "Core Banking"]
    metrics = next(t for t in table_defs(units) if t.name == "metrics")
    stmt = next(s for s in ddl("capfc", "s3://b-bucket/store", business_units=units) if "`metrics`" in s)
    values = re.search(r"'projection.business_unit.values' = '([^']*)'", stmt).group(1)
    assert metrics.parameters["projection.business_unit.type"] == "enum"
    assert metrics.parameters["projection.business_unit.values"] == values
