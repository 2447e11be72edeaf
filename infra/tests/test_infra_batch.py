"""The batch: Lambda functions from the one image, the two triggers, the state machine, the task."""

from __future__ import annotations

import json

import pytest
from aws_cdk.assertions import Match, Template
from cfn import actions, as_list, one, render, resources, role_of, statements
from infra_synth import IMAGE_URI
from store_access import assert_store_access

HANDLERS = {"trigger", "plan", "calibrate", "shard", "publish", "report"}
BATCH = HANDLERS - {"report"}


@pytest.fixture(scope="module")
def app(synthesized) -> dict:
    return synthesized("ecs-express").app


def _functions(app: dict) -> dict[str, tuple[str, dict]]:
    out = {}
    for lid, fn in resources(app, "AWS::Lambda::Function").items():
        cmd = fn["Properties"].get("ImageConfig", {}).get("Command")
        if cmd:
            out[cmd[0].rsplit(".", 1)[1]] = (lid, fn["Properties"])
    return out


def test_every_function_runs_the_one_image_through_awslambdaric(app: dict) -> None:
    fns = _functions(app)
    assert set(fns) == HANDLERS
    for name, (_, p) in fns.items():
        assert p["PackageType"] == "Image"
        assert render(p["Code"]["ImageUri"]).replace("${AWS::URLSuffix}", "amazonaws.com") == IMAGE_URI
        assert p["ImageConfig"] == {
            "Command": [f"forecasting.aws.handlers.{name}"],
            "EntryPoint": ["python", "-m", "awslambdaric"],
        }
        assert p["Environment"]["Variables"]["CAPFC_DATA"] == "s3://capfc-store-123456789012-eu-west-1/store"
        assert p["LoggingConfig"]["LogFormat"] == "JSON"


def test_trigger_and_shard_get_lambdas_maximum_memory_and_time(app: dict) -> None:
    fns = _functions(app)
    for name in ("trigger", "shard"):
        p = fns[name][1]
        assert (p["MemorySize"], p["Timeout"]) == (10240, 900), name
    trigger = fns["trigger"][1]["Environment"]["Variables"]
    assert trigger["CAPFC_STATE_MACHINE_ARN"] == {"Ref": one(app, "AWS::StepFunctions::StateMachine")[0]}
    assert trigger["CAPFC_LAMBDA_MAX_SERVERS"] == "10000"
    # One trigger at a time (the events README asks for it): duplicates then find their run done.
    assert fns["trigger"][1]["ReservedConcurrentExecutions"] == 1
    assert all(
        "ReservedConcurrentExecutions" not in fns[n][1] for n in ("plan", "calibrate", "shard", "publish")
    )
    assert fns["plan"][1]["Environment"]["Variables"]["CAPFC_SHARD_CONCURRENCY"] == "10"


def test_new_telemetry_under_the_metrics_prefix_invokes_the_trigger(app: dict) -> None:
    trigger_id = _functions(app)["trigger"][0]
    Template.from_json(app).has_resource_properties(
        "AWS::Events::Rule",
        {
            "EventPattern": {
                "source": ["aws.s3"],
                "detail-type": ["Object Created"],
                "detail": {
                    "bucket": {"name": ["capfc-store-123456789012-eu-west-1"]},
                    "object": {"key": [{"prefix": "store/metrics/"}]},
                },
            },
            "Targets": [
                Match.object_like(
                    {
                        "Arn": {"Fn::GetAtt": [trigger_id, "Arn"]},
                        "DeadLetterConfig": Match.any_value(),
                        "RetryPolicy": {"MaximumEventAgeInSeconds": 7200, "MaximumRetryAttempts": 4},
                    }
                )
            ],
        },
    )


def test_scheduler_cron_invokes_the_trigger_with_the_schedule_input(app: dict) -> None:
    trigger_id = _functions(app)["trigger"][0]
    (p,) = [
        s["Properties"]
        for s in resources(app, "AWS::Scheduler::Schedule").values()
        if s["Properties"]["Target"]["Arn"] == {"Fn::GetAtt": [trigger_id, "Arn"]}
    ]
    assert p["ScheduleExpression"] == "cron(0 5 * * ? *)"
    assert p["ScheduleExpressionTimezone"] == "UTC"
    assert p["FlexibleTimeWindow"] == {"Mode": "OFF"}
    assert p["Target"]["Arn"] == {"Fn::GetAtt": [trigger_id, "Arn"]}
    assert json.loads(p["Target"]["Input"]) == {
        "trigger": "schedule",
        "schedule": "<aws.scheduler.schedule-arn>",
        "scheduled_time": "<aws.scheduler.scheduled-time>",
        "execution_id": "<aws.scheduler.execution-id>",
    }
    assert "DeadLetterConfig" in p["Target"]
    # The scheduler's own role may invoke the trigger and nothing else.
    role = p["Target"]["RoleArn"]["Fn::GetAtt"][0]
    invoke = [s for s in statements(app, role) if "lambda:InvokeFunction" in as_list(s["Action"])]
    assert invoke
    for s in invoke:
        assert {render(r) for r in as_list(s["Resource"])} <= {
            "${" + trigger_id + ".Arn}",
            "${" + trigger_id + ".Arn}:*",
        }


def test_state_machine_is_the_products_definition_with_the_functions_substituted(app: dict) -> None:
    """Plan → Map(shard) → Publish as ``forecasting/aws/statemachine.asl.json`` defines it."""
    from capfc_infra.batch import ASL

    fns = {name: lid for name, (lid, _) in _functions(app).items()}
    sm_id, sm = one(app, "AWS::StepFunctions::StateMachine")
    p = sm["Properties"]
    definition = json.loads(render(p["DefinitionString"]))
    assert definition == json.loads(ASL.read_text())
    assert [
        definition["StartAt"],
        definition["States"]["Plan"]["Next"],
        definition["States"]["Calibrate"]["Next"],
        definition["States"]["Shards"]["Next"],
    ] == [
        "Plan",
        "Calibrate",
        "Shards",
        "Publish",
    ]
    assert p["DefinitionSubstitutions"] == {
        f"{n.title()}FunctionArn": {"Fn::GetAtt": [fns[n], "Arn"]}
        for n in ("plan", "calibrate", "shard", "publish")
    }
    assert p["LoggingConfiguration"]["Level"] == "ALL"
    assert p["TracingConfiguration"] == {"Enabled": True}
    # The machine's role may invoke exactly those four functions.
    role = p["RoleArn"]["Fn::GetAtt"][0]
    invoked = {
        render(r).split(".Arn}")[0].lstrip("${")
        for s in statements(app, role)
        if "lambda:InvokeFunction" in as_list(s["Action"])
        for r in as_list(s["Resource"])
    }
    assert invoked == {fns["plan"], fns["calibrate"], fns["shard"], fns["publish"]}, sm_id


def test_batch_runs_as_a_fargate_task_with_the_cli(app: dict) -> None:
    Template.from_json(app).has_resource_properties(
        "AWS::ECS::TaskDefinition",
        {
            "RequiresCompatibilities": ["FARGATE"],
            "Cpu": "4096",
            "Memory": "16384",
            "ContainerDefinitions": [
                Match.object_like(
                    {
                        "Name": "batch",
                        "Command": ["python", "-m", "forecasting", "run"],
                        "LogConfiguration": Match.object_like({"LogDriver": "awslogs"}),
                    }
                )
            ],
        },
    )


def test_batch_roles_read_telemetry_and_write_plans_only_under_runs(app: dict) -> None:
    """plan/calibrate/shard write only a run's shard area; trigger, publish and the task a whole run
    and, for the retention clean-up, read sign-offs and leases and delete leases (never a
    sign-off or a decision; store_access.EXPECTED lists every probe)."""
    roles = {name: role_of(app, lid) for name, (lid, _) in _functions(app).items()}
    task_id = next(k for k in resources(app, "AWS::ECS::TaskDefinition") if k.startswith("BatchBatchTask"))
    roles["task"] = role_of(app, task_id)
    assert len(set(roles.values())) == len(roles), "one role per function and task"
    for name, role in roles.items():
        kind = {"plan": "shard_step", "calibrate": "shard_step", "shard": "shard_step", "report": "report"}
        assert_store_access(app, role, kind.get(name, "run_batch"))
        assert not any("*" in a for a in actions(statements(app, role))), f"{name}: no wildcard actions"


def test_whole_runs_get_the_retention_setting(app: dict, synthesized) -> None:
    """CAPFC_KEEP_RUNS (context keep_runs) where a run ends in the clean-up: trigger, publish, task."""
    fns = _functions(app)
    for name in ("trigger", "publish"):
        assert fns[name][1]["Environment"]["Variables"]["CAPFC_KEEP_RUNS"] == "30", name
    for name in ("plan", "calibrate", "shard", "report"):
        assert "CAPFC_KEEP_RUNS" not in fns[name][1]["Environment"]["Variables"], name
    assert _task_env(app)["CAPFC_KEEP_RUNS"] == "30"
    other = synthesized("fargate-alb-private").app  # keep_runs=0: keep every run
    assert _functions(other)["publish"][1]["Environment"]["Variables"]["CAPFC_KEEP_RUNS"] == "0"
    assert _task_env(other)["CAPFC_KEEP_RUNS"] == "0"


def _task_env(app: dict) -> dict[str, str]:
    _, task = next(
        (k, v)
        for k, v in resources(app, "AWS::ECS::TaskDefinition").items()
        if k.startswith("BatchBatchTask")
    )
    return {e["Name"]: e["Value"] for e in task["Properties"]["ContainerDefinitions"][0]["Environment"]}


def test_only_the_trigger_may_start_the_state_machine(app: dict) -> None:
    sm_id, _ = one(app, "AWS::StepFunctions::StateMachine")
    for name, (lid, _) in _functions(app).items():
        stmts = statements(app, role_of(app, lid))
        starts = [s for s in stmts if "states:StartExecution" in as_list(s["Action"])]
        if name == "trigger":
            assert [render(s["Resource"]) for s in starts] == ["${" + sm_id + "}"]
            describe = [s for s in stmts if "states:DescribeExecution" in as_list(s["Action"])]
            assert len(describe) == 1 and ":execution:" in render(describe[0]["Resource"])
        else:
            assert not starts, name


def test_the_shard_step_may_write_every_table_part_a_shard_writes() -> None:
    """A shard writes its parts of the plan tables into the run (forecasting.shards.PART_TABLES):
    the shard role's prefixes must name each of them, and nothing else of a run."""
    from capfc_infra.access import SHARD_WRITES

    from forecasting.shards import PART_TABLES

    assert set(SHARD_WRITES) == {"runs/*/shards/", *(f"runs/*/{t}/" for t in PART_TABLES)}
