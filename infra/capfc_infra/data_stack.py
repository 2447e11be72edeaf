"""The stateful stack: the store bucket, its access-log bucket, the Glue catalog and Athena.

Why a stack of its own: data outlives compute. This stack is deployed rarely, retains its
buckets on delete, and the app stack (Lambdas, state machine, web tier) can be torn down and
redeployed freely against it.
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, RemovalPolicy, Stack, Token
from aws_cdk import aws_athena as athena
from aws_cdk import aws_glue as glue
from aws_cdk import aws_iam as iam
from aws_cdk import aws_s3 as s3
from aws_cdk.region_info import RegionInfo
from constructs import Construct

from .config import Config
from .glue_schema import (
    IGNORE_KEY_OUTPUT,
    PARQUET_INPUT,
    PARQUET_OUTPUT,
    PARQUET_SERDE,
    SYMLINK_INPUT,
    table_defs,
)
from .nag import ack

ATHENA_RESULTS_PREFIX = "athena-results/"
GLUE_DATABASE = "capfc"
WORKGROUP = "capfc"


class DataStack(Stack):
    """S3 store bucket (versioned, SSE, TLS only, no public access, access-logged), Glue, Athena."""

    def __init__(self, scope: Construct, construct_id: str, *, config: Config, **kwargs) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config

        store_name, logs_name = config.bucket_names(self.account, self.region)
        self.log_bucket = s3.Bucket(
            self,
            "AccessLogs",
            bucket_name=logs_name,
            encryption=s3.BucketEncryption.S3_MANAGED,  # S3 server access and ALB logs need SSE-S3
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[s3.LifecycleRule(expiration=Duration.days(365))],
            removal_policy=RemovalPolicy.RETAIN,
        )
        ack(
            self.log_bucket,
            "S1",
            "This is the access-log target bucket itself: logging it into itself would loop, "
            "and a second log bucket would only move the question.",
        )
        ack(
            self,
            "IAM4",
            "CDK's own bucket-notifications custom resource (it turns on EventBridge notifications for the "
            "store bucket) uses the AWS Lambda basic execution policy: CloudWatch Logs for itself only.",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
        )

        # ALB access logs (web_tier=fargate-alb): the regional ELB account, or the log-delivery
        # service in regions opened since August 2022.
        elb_account = (
            RegionInfo.get(self.region).elbv2_account if not Token.is_unresolved(self.region) else None
        )
        self.log_bucket.add_to_resource_policy(
            iam.PolicyStatement(
                sid="AlbAccessLogs",
                actions=["s3:PutObject"],
                principals=[
                    iam.AccountPrincipal(elb_account)
                    if elb_account
                    else iam.ServicePrincipal("logdelivery.elasticloadbalancing.amazonaws.com")
                ],
                resources=[self.log_bucket.arn_for_objects(f"alb/AWSLogs/{self.account}/*")],
            )
        )

        self.bucket = s3.Bucket(
            self,
            "Store",
            bucket_name=store_name,
            versioned=True,
            encryption=s3.BucketEncryption.S3_MANAGED,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            enforce_ssl=True,
            minimum_tls_version=1.2,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.log_bucket,
            server_access_logs_prefix="s3/store/",
            event_bridge_enabled=True,  # Object Created events start a run (app stack's rule)
            lifecycle_rules=[
                # Overwritten and deleted objects (runs the retention clean-up removed, renewed and
                # released read leases) stay restorable for 30 days, then go; so do the delete
                # markers left with no version behind them (leases churn: one per lease).
                s3.LifecycleRule(
                    id="old-versions",
                    noncurrent_version_expiration=Duration.days(30),
                    expired_object_delete_marker=True,
                    abort_incomplete_multipart_upload_after=Duration.days(7),
                ),
                s3.LifecycleRule(
                    id="athena-results", prefix=ATHENA_RESULTS_PREFIX, expiration=Duration.days(7)
                ),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )

        self.database = glue.CfnDatabase(
            self,
            "Database",
            catalog_id=self.account,
            database_input=glue.CfnDatabase.DatabaseInputProperty(
                name=GLUE_DATABASE,
                description="Capacity Forecaster store: inventory, metrics and plan tables",
            ),
        )
        root = f"s3://{store_name}/{config.store_prefix}/"  # the name, as the product's DDL writes it
        self.tables: dict[str, glue.CfnTable] = {}
        for t in table_defs(config.business_units):
            params = dict(t.parameters)
            if "storage.location.template" in params:
                params["storage.location.template"] = root + params["storage.location.template"]
            table = glue.CfnTable(
                self,
                f"Table-{t.name}",
                catalog_id=self.account,
                database_name=GLUE_DATABASE,
                table_input=glue.CfnTable.TableInputProperty(
                    name=t.name,
                    table_type="EXTERNAL_TABLE",
                    parameters=params,
                    partition_keys=[
                        glue.CfnTable.ColumnProperty(name=n, type=ty) for n, ty in t.partition_keys
                    ],
                    storage_descriptor=glue.CfnTable.StorageDescriptorProperty(
                        columns=[glue.CfnTable.ColumnProperty(name=n, type=ty) for n, ty in t.columns],
                        location=root + t.location,
                        input_format=SYMLINK_INPUT if t.symlink else PARQUET_INPUT,
                        output_format=IGNORE_KEY_OUTPUT if t.symlink else PARQUET_OUTPUT,
                        serde_info=glue.CfnTable.SerdeInfoProperty(serialization_library=PARQUET_SERDE),
                    ),
                ),
            )
            table.add_resource_dependency(self.database)
            self.tables[t.name] = table

        self.workgroup = athena.CfnWorkGroup(
            self,
            "WorkGroup",
            name=WORKGROUP,
            description="Capacity Forecaster batch queries (enforced settings, scan limit)",
            state="ENABLED",
            recursive_delete_option=True,
            work_group_configuration=athena.CfnWorkGroup.WorkGroupConfigurationProperty(
                enforce_work_group_configuration=True,
                publish_cloud_watch_metrics_enabled=True,
                bytes_scanned_cutoff_per_query=config.athena_bytes_scanned_cutoff_gb * 1024**3,
                engine_version=athena.CfnWorkGroup.EngineVersionProperty(
                    selected_engine_version="Athena engine version 3"
                ),
                result_configuration=athena.CfnWorkGroup.ResultConfigurationProperty(
                    output_location=f"s3://{store_name}/{ATHENA_RESULTS_PREFIX}",
                    encryption_configuration=athena.CfnWorkGroup.EncryptionConfigurationProperty(
                        encryption_option="SSE_S3"
                    ),
                    expected_bucket_owner=self.account,
                ),
            ),
        )

        CfnOutput(self, "BucketName", value=self.bucket.bucket_name)
        CfnOutput(self, "DataUri", value=f"s3://{self.bucket.bucket_name}/{config.store_prefix}")
        CfnOutput(
            self,
            "AthenaUri",
            value=f"athena://{WORKGROUP}/{GLUE_DATABASE}?location=s3://{self.bucket.bucket_name}/{config.store_prefix}",
        )

    @property
    def results_prefix(self) -> str:
        return ATHENA_RESULTS_PREFIX
