"""The event-driven batch: five Lambda functions from the one image, the triggers, the state machine,
the batch as a Fargate task, and the weekly report pack (a sixth function on its own schedule).

Flow: new telemetry under ``<store>/metrics/`` (S3 Object Created through EventBridge) or the
EventBridge Scheduler cron invokes ``trigger``. It runs small fleets itself and starts the
Step Functions machine ``Plan → Map(shard) → Publish`` for large ones. Both event sources keep
failed deliveries in a dead-letter queue; the run is idempotent, so a retried or duplicated
event does no harm. Whole runs (trigger, publish, the task) end in the retention clean-up
(``CAPFC_KEEP_RUNS`` from context ``keep_runs``).
"""

from __future__ import annotations

from pathlib import Path

from aws_cdk import ArnFormat, Duration, RemovalPolicy, Size, Stack
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_events as events
from aws_cdk import aws_events_targets as targets
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_scheduler as scheduler
from aws_cdk import aws_scheduler_targets as scheduler_targets
from aws_cdk import aws_sqs as sqs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from .access import REPORT as REPORT_ACCESS
from .access import RUN_BATCH, SHARD_STEP, grant_store
from .config import Config
from .image import Image
from .nag import ack, ack_ecr_pull

HANDLERS = "forecasting.aws.handlers"
ASL = Path(__file__).resolve().parents[2] / "forecasting" / "aws" / "statemachine.asl.json"
# name: (memory MB, timeout minutes, ephemeral /tmp GiB). trigger and shard do the forecasting
# (trigger runs a small fleet whole), so they get Lambda's maximum; plan only lists the fleet and
# cuts it into shards; calibrate fits the calibration sample once (the fleet model's pooled
# choices, forecasting/pooled.py); publish reduces the shards' results and writes the plan.
FUNCTIONS = {
    "trigger": (10240, 15, 4),
    "plan": (2048, 5, 1),
    "calibrate": (4096, 15, 2),
    "shard": (10240, 15, 4),
    "publish": (4096, 15, 2),
}
STEPS = ("plan", "calibrate", "shard", "publish")  # the state machine's task steps
CLEANUP_FUNCTIONS = ("trigger", "publish")  # whole runs: they end in the retention clean-up
# The weekly report pack (forecasting.aws.handlers.report): reads one run, renders charts with
# matplotlib, writes an xlsx and a PDF (≈ 90 kB each). Measured on a local store: 10k servers
# 4.2 s and 0.42 GB peak (1k servers 9.7 s with a cold matplotlib font cache, as a cold Lambda
# has); S3 reads add seconds. 2 GB and 120 s leave room for both.
REPORT = (2048, 120, 1)


class Batch(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Config,
        image: Image,
        bucket: s3.IBucket,
        cluster: ecs.Cluster,
    ) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        data_uri = f"s3://{bucket.bucket_name}/{config.store_prefix}"
        retention = retention_for(config.log_retention_days)
        # Lambda's filesystem is read-only but /tmp: caches (numba, anything under $HOME) go there.
        env = {
            "CAPFC_DATA": data_uri,
            "CAPFC_LOG_LEVEL": "INFO",
            "NUMBA_CACHE_DIR": "/tmp/numba-cache",
            "HOME": "/tmp",
        }

        self.functions: dict[str, lambda_.DockerImageFunction] = {}
        self.roles: dict[str, iam.Role] = {}
        for name, (memory, minutes, tmp_gib) in FUNCTIONS.items():
            role = iam.Role(
                self,
                f"{name.title()}Role",
                assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
                description=f"capfc {name} Lambda: its own log group and the store by prefix",
            )
            log_group = logs.LogGroup(
                self, f"{name.title()}Logs", retention=retention, removal_policy=RemovalPolicy.DESTROY
            )
            log_group.grant_write(role)
            grant_store(
                role,
                bucket,
                config.store_prefix,
                access=SHARD_STEP if name in ("plan", "calibrate", "shard") else RUN_BATCH,
            )
            fn = lambda_.DockerImageFunction(
                self,
                f"{name.title()}Function",
                code=image.lambda_code(f"{HANDLERS}.{name}"),
                role=role,
                memory_size=memory,
                timeout=Duration.minutes(minutes),
                ephemeral_storage_size=Size.gibibytes(tmp_gib),
                architecture=lambda_.Architecture.X86_64,
                environment=dict(env),
                log_group=log_group,
                logging_format=lambda_.LoggingFormat.JSON,
                # One trigger at a time: duplicate S3 events then find their run done (idempotent).
                reserved_concurrent_executions=(
                    config.trigger_reserved_concurrency or None if name == "trigger" else None
                ),
                description=f"Capacity Forecaster batch: {HANDLERS}.{name}",
            )
            self.functions[name] = fn
            self.roles[name] = role
            ack(
                role,
                "IAM5",
                "Object-level S3 actions need object ARNs: the wildcard is the key suffix under one store "
                "prefix (metrics/, inventory/ read; runs/ or only runs/*/shards/ write; whole runs also "
                "read signoffs/ and delete readers/ for the retention clean-up), never the bucket.",
                *_s3_findings(self, config.store_prefix),
            )

        self.state_machine = self._state_machine(retention)
        trigger = self.functions["trigger"]
        trigger.add_environment("CAPFC_STATE_MACHINE_ARN", self.state_machine.state_machine_arn)
        trigger.add_environment("CAPFC_LAMBDA_MAX_SERVERS", str(config.lambda_max_servers))
        self.state_machine.grant_start_execution(trigger)
        trigger.add_to_role_policy(
            iam.PolicyStatement(
                actions=["states:DescribeExecution"],
                resources=[
                    Stack.of(self).format_arn(
                        service="states",
                        resource="execution",
                        resource_name=f"{self.state_machine.state_machine_name}:*",
                        arn_format=ArnFormat.COLON_RESOURCE_NAME,
                    )
                ],
            )
        )
        ack(
            self.roles["trigger"],
            "IAM5",
            "The trigger reads the state of this state machine's own executions (a retried start of a "
            "failed run); execution ARNs end in the execution name, so they need the :* suffix.",
            f"Resource::arn:<AWS::Partition>:states:{_rendered(Stack.of(self).region, 'AWS::Region')}:"
            f"{_rendered(Stack.of(self).account, 'AWS::AccountId')}:execution:<{_logical(self.state_machine)}.Name>:*",
        )
        self.functions["plan"].add_environment("CAPFC_SHARD_CONCURRENCY", str(config.shard_concurrency))
        # The runs that end in the retention clean-up (forecasting/records/retention.py): the
        # trigger's in-Lambda run and publish (the Fargate task gets it below).
        for name in CLEANUP_FUNCTIONS:
            self.functions[name].add_environment("CAPFC_KEEP_RUNS", str(config.keep_runs))

        # Failed deliveries (after retries) of either trigger, and of the report schedule, land
        # here, for a look and a replay.
        self.dlq = sqs.Queue(
            self,
            "TriggerDeadLetters",
            encryption=sqs.QueueEncryption.SQS_MANAGED,
            enforce_ssl=True,
            retention_period=Duration.days(14),
        )
        ack(
            self.dlq,
            "SQS3",
            "This queue is itself the dead-letter queue of the run triggers; nothing consumes it "
            "automatically, so a second-level DLQ would never receive anything.",
        )

        # S3 Object Created (EventBridge notifications on the bucket) under the telemetry prefix.
        self.rule = events.Rule(
            self,
            "NewTelemetry",
            description="New telemetry in the store starts a forecasting run",
            event_pattern=events.EventPattern(
                source=["aws.s3"],
                detail_type=["Object Created"],
                detail={
                    "bucket": {"name": [bucket.bucket_name]},
                    "object": {"key": [{"prefix": config.metrics_prefix}]},
                },
            ),
        )
        self.rule.add_target(
            targets.LambdaFunction(
                trigger,
                dead_letter_queue=self.dlq,
                retry_attempts=4,
                max_event_age=Duration.hours(2),
            )
        )

        schedule_role = iam.Role(
            self,
            "ScheduleRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
            description="EventBridge Scheduler invokes the trigger function (that function only)",
        )
        ack(
            schedule_role,
            "IAM5",
            "The Scheduler target grants invoke on the trigger function and its versions (ARN:*): "
            "one function, nothing else.",
            f"Resource::<{_logical(trigger)}.Arn>:*",
        )
        self.schedule = scheduler.Schedule(
            self,
            "Schedule",
            description="Daily forecasting run",
            schedule=scheduler.ScheduleExpression.expression(
                config.schedule, _time_zone(config.schedule_timezone)
            ),
            target=scheduler_targets.LambdaInvoke(
                trigger,
                input=scheduler.ScheduleTargetInput.from_object(
                    {
                        "trigger": "schedule",
                        "schedule": scheduler.ContextAttribute.schedule_arn,
                        "scheduled_time": scheduler.ContextAttribute.scheduled_time,
                        "execution_id": scheduler.ContextAttribute.execution_id,
                    }
                ),
                role=schedule_role,
                dead_letter_queue=self.dlq,
                retry_attempts=3,
                max_event_age=Duration.hours(6),
            ),
        )

        self._batch_task(image, bucket, cluster, data_uri, retention)
        self._report(image, bucket, env, retention)

    def _state_machine(self, retention: logs.RetentionDays) -> sfn.StateMachine:
        """Plan → Calibrate → Map(shard) → Publish, from the product's own definition
        (``forecasting/aws/statemachine.asl.json``) with the four function ARNs substituted.
        Any failure ends in its ``RunFailed`` state (the ExecutionsFailed alarm sees it) and leaves
        runs/LATEST untouched."""
        log_group = logs.LogGroup(
            self, "StateMachineLogs", retention=retention, removal_policy=RemovalPolicy.DESTROY
        )
        machine = sfn.StateMachine(
            self,
            "StateMachine",
            definition_body=sfn.DefinitionBody.from_string(ASL.read_text()),
            definition_substitutions={
                f"{n.title()}FunctionArn": self.functions[n].function_arn for n in STEPS
            },
            tracing_enabled=True,
            logs=sfn.LogOptions(destination=log_group, level=sfn.LogLevel.ALL, include_execution_data=False),
        )
        for n in STEPS:
            self.functions[n].grant_invoke(machine)
        ack(
            machine.role,
            "IAM5",
            "Step Functions' own grants: invoking a Lambda by ARN also allows its versions (ARN:*), "
            "and X-Ray and CloudWatch Logs delivery actions have no resource-level permissions.",
            *[f"Resource::<{_logical(self.functions[n])}.Arn>:*" for n in STEPS],
            "Resource::*",
        )
        return machine

    def _batch_task(
        self,
        image: Image,
        bucket: s3.IBucket,
        cluster: ecs.Cluster,
        data_uri: str,
        retention: logs.RetentionDays,
    ) -> None:
        """The same batch as a Fargate task (``python -m forecasting run``), for fleets past Lambda."""
        self.task_definition = ecs.FargateTaskDefinition(
            self,
            "BatchTask",
            cpu=self.config.batch_cpu,
            memory_limit_mib=self.config.batch_memory_mib,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        grant_store(self.task_definition.task_role, bucket, self.config.store_prefix, access=RUN_BATCH)
        log_group = logs.LogGroup(
            self, "BatchTaskLogs", retention=retention, removal_policy=RemovalPolicy.DESTROY
        )
        self.task_definition.add_container(
            "batch",
            image=image.container_image(),
            command=["python", "-m", "forecasting", "run"],
            environment={
                "CAPFC_DATA": data_uri,
                "CAPFC_LOG_LEVEL": "INFO",
                "CAPFC_KEEP_RUNS": str(self.config.keep_runs),
            },
            logging=ecs.LogDrivers.aws_logs(stream_prefix="batch", log_group=log_group),
            readonly_root_filesystem=False,
        )
        self.cluster = cluster
        ack(
            self.task_definition,
            "ECS2",
            "The environment holds only non-secret settings (store URI, log level); there are no secrets.",
        )
        ack_ecr_pull(self.task_definition.obtain_execution_role())
        ack(
            self.task_definition.task_role,
            "IAM5",
            "Object-level S3 actions need object ARNs: the wildcard is the key suffix under one store "
            "prefix (metrics/, inventory/, signoffs/, readers/ read; runs/, athena-manifests/ write; "
            "readers/ delete: the retention clean-up), never the bucket.",
            *_s3_findings(self, self.config.store_prefix),
        )

    def _report(
        self, image: Image, bucket: s3.IBucket, env: dict[str, str], retention: logs.RetentionDays
    ) -> None:
        """The weekly report pack: a Lambda (``forecasting.aws.handlers.report``) that writes the
        latest run as xlsx and PDF under ``<store>/reports/``, invoked by its own Scheduler
        schedule (``report_schedule``, in ``schedule_timezone``). Its role reads the plan and its
        records, holds a read lease while it reads, and writes only ``reports/``."""
        memory, seconds, tmp_gib = REPORT
        role = iam.Role(
            self,
            "ReportRole",
            assumed_by=iam.ServicePrincipal("lambda.amazonaws.com"),
            description="capfc report Lambda: read the store and its records, write reports/ and read leases",
        )
        log_group = logs.LogGroup(
            self, "ReportLogs", retention=retention, removal_policy=RemovalPolicy.DESTROY
        )
        log_group.grant_write(role)
        grant_store(role, bucket, self.config.store_prefix, access=REPORT_ACCESS)
        ack(
            role,
            "IAM5",
            "Object-level S3 actions need object ARNs: the wildcard is the key suffix under one store "
            "prefix (runs/, decisions/, signoffs/ read; readers/ write: its read lease; reports/ "
            "create), never the bucket.",
            *_s3_findings(self, self.config.store_prefix),
        )
        fn = lambda_.DockerImageFunction(
            self,
            "ReportFunction",
            code=image.lambda_code(f"{HANDLERS}.report"),
            role=role,
            memory_size=memory,
            timeout=Duration.seconds(seconds),
            ephemeral_storage_size=Size.gibibytes(tmp_gib),
            architecture=lambda_.Architecture.X86_64,
            # matplotlib writes its font cache under MPLCONFIGDIR: only /tmp is writable on Lambda.
            environment={**env, "MPLCONFIGDIR": "/tmp/mpl"},
            log_group=log_group,
            logging_format=lambda_.LoggingFormat.JSON,
            description=f"Capacity Forecaster weekly report pack: {HANDLERS}.report",
        )
        self.functions["report"] = fn
        self.roles["report"] = role

        schedule_role = iam.Role(
            self,
            "ReportScheduleRole",
            assumed_by=iam.ServicePrincipal(
                "scheduler.amazonaws.com",
                conditions={"StringEquals": {"aws:SourceAccount": Stack.of(self).account}},
            ),
            description="EventBridge Scheduler invokes the report function (that function only)",
        )
        ack(
            schedule_role,
            "IAM5",
            "The Scheduler target grants invoke on the report function and its versions (ARN:*): "
            "one function, nothing else.",
            f"Resource::<{_logical(fn)}.Arn>:*",
        )
        self.report_schedule = scheduler.Schedule(
            self,
            "ReportSchedule",
            description="Weekly report pack (xlsx and PDF under reports/)",
            schedule=scheduler.ScheduleExpression.expression(
                self.config.report_schedule, _time_zone(self.config.schedule_timezone)
            ),
            target=scheduler_targets.LambdaInvoke(
                fn,
                input=scheduler.ScheduleTargetInput.from_object({"format": ["xlsx", "pdf"]}),
                role=schedule_role,
                dead_letter_queue=self.dlq,
                retry_attempts=3,
                max_event_age=Duration.hours(6),
            ),
        )


def _rendered(value: str, pseudo: str) -> str:
    """A stack's account or region as cdk-nag prints it in a finding id."""
    from aws_cdk import Token

    return f"<{pseudo}>" if Token.is_unresolved(value) else value


def _logical(construct: Construct) -> str:
    from aws_cdk import Stack

    child = construct.node.default_child
    return Stack.of(construct).get_logical_id(child)  # type: ignore[arg-type]


def _s3_findings(scope: Construct, prefix: str) -> list[str]:
    """cdk-nag finding ids of the store grants (``Resource::arn:…:s3:::bucket/prefix/…*``)."""
    from aws_cdk import Stack

    from .access import PLAN_PREFIXES, READ_PREFIXES, RECORD_PREFIXES, REPORTS, SHARD_WRITES

    arn = Stack.of(scope).store_arn_rendered  # type: ignore[attr-defined]
    parts = (*READ_PREFIXES, *PLAN_PREFIXES, *SHARD_WRITES, *RECORD_PREFIXES, REPORTS)
    return [f"Resource::{arn}/{prefix}/{p}*" for p in parts if p.endswith("/")]


_RETENTION = {
    1: "ONE_DAY",
    3: "THREE_DAYS",
    5: "FIVE_DAYS",
    7: "ONE_WEEK",
    14: "TWO_WEEKS",
    30: "ONE_MONTH",
    60: "TWO_MONTHS",
    90: "THREE_MONTHS",
    120: "FOUR_MONTHS",
    150: "FIVE_MONTHS",
    180: "SIX_MONTHS",
    365: "ONE_YEAR",
    400: "THIRTEEN_MONTHS",
    545: "EIGHTEEN_MONTHS",
    731: "TWO_YEARS",
    1096: "THREE_YEARS",
    1827: "FIVE_YEARS",
    2192: "SIX_YEARS",
    2557: "SEVEN_YEARS",
    2922: "EIGHT_YEARS",
    3288: "NINE_YEARS",
    3653: "TEN_YEARS",
}


def retention_for(days: int) -> logs.RetentionDays:
    """CloudWatch Logs keeps only these periods: the shortest one at least ``days`` long."""
    return getattr(logs.RetentionDays, _RETENTION[min(d for d in _RETENTION if d >= days)])


def _time_zone(name: str):
    from aws_cdk import TimeZone

    return TimeZone.of(name)
