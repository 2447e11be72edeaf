"""The event-driven batch (forecasting/aws): recorded event payloads against a real S3 server.

S3 is SeaweedFS (tests/s3server.py), a real S3-protocol server, or the local store. Two AWS
services cannot run here and are stood in for, as said where used: the Step Functions API that
the trigger calls (``start_execution``/``describe_execution``) is moto's server, which records
executions but runs nothing; executing the state machine is tests/sfn_interpreter.py, a small
interpreter of the ASL states our definition uses that calls the real handlers in-process.
"""

from __future__ import annotations

import copy
import itertools
import json
import logging
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from forecasting.aws import DEFINITION_PLACEHOLDERS, STATE_MACHINE_DEFINITION, handlers
from forecasting.aws.handlers import EventError, parse_event
from forecasting.settings import SettingsError
from forecasting.shards import ShardError, snapshot_input
from forecasting.sources import open_store
from forecasting.sources.s3 import StoreUnavailableError
from tests.s3server import ADMIN, aws_env, moto_server, seaweed
from tests.sfn_interpreter import Interpreter, check_definition, substitute
from tests.small_fleet import append_day, write_fleet

__all__ = ["aws_env", "moto_server", "seaweed"]  # fixtures, imported for pytest

EVENTS = Path(__file__).parent / "data" / "events"
_prefixes = itertools.count()


def recorded(name: str) -> dict:
    return json.loads((EVENTS / name).read_text())


def s3_event(bucket: str, key: str, client) -> dict:
    """The recorded 'Object Created' payload for an object the test wrote (its size and time)."""
    head = client.head_object(Bucket=bucket, Key=key)
    ev = copy.deepcopy(recorded("s3-object-created.json"))
    ev["resources"] = [f"arn:aws:s3:::{bucket}"]
    ev["time"] = head["LastModified"].strftime("%Y-%m-%dT%H:%M:%SZ")
    ev["detail"]["bucket"]["name"] = bucket
    ev["detail"]["object"].update(key=key, size=head["ContentLength"], etag=head["ETag"].strip('"'))
    return ev


@pytest.fixture
def fast_env(monkeypatch):
    """Small runs: the settings come from the environment, as in the Lambda."""
    for var, value in {"CAPFC_HORIZON": "14", "CAPFC_BACKTEST_CUTOFFS": "1", "CAPFC_WORKERS": "1"}.items():
        monkeypatch.setenv(var, value)
    monkeypatch.delenv("CAPFC_CONFIG", raising=False)
    monkeypatch.chdir(Path(__file__).parent)  # no ./capfc.yaml here


@pytest.fixture
def lake(seaweed, aws_env, fast_env, monkeypatch):
    """An S3 store with a 12-server fleet; CAPFC_DATA points at it."""
    aws_env(ADMIN, seaweed.url)
    bucket = seaweed.new_bucket()
    uri = f"s3://{bucket}/fleet-{next(_prefixes)}"
    monkeypatch.setenv("CAPFC_DATA", uri)
    store = open_store(uri)
    write_fleet(store)
    return store, bucket, uri.split("/", 3)[3]


def metrics_key(store, bucket: str, prefix: str, client) -> str:
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/metrics/")["Contents"]]
    return sorted(k for k in keys if k.endswith(".parquet"))[0]


# --------------------------------------------------------------------------- parsing


def test_recorded_payloads_parse_or_fail_clearly():
    s3 = parse_event(recorded("s3-object-created.json"))
    assert (s3.kind, s3.bucket, s3.size) == ("s3", "capfc-telemetry", 184233)
    assert s3.key == "fleet/metrics/business_unit=retail/year=2024/part-0.parquet"
    assert s3.time.isoformat() == "2026-12-04T06:00:00+00:00"
    sched = parse_event(recorded("scheduler-input.json"))
    assert (sched.kind, sched.source, sched.event_id) == ("schedule", "scheduler", "d32c5kddcf5bb8c3")
    assert parse_event(recorded("scheduled-event.json")).source == "scheduled-event"
    with pytest.raises(EventError, match="Object Deleted"):
        parse_event(recorded("s3-object-deleted.json"))
    with pytest.raises(EventError, match="through an EventBridge rule"):
        parse_event(recorded("s3-notification-records.json"))
    with pytest.raises(EventError, match="expected a JSON object"):
        parse_event("run please")
    broken = recorded("s3-object-created.json")
    del broken["detail"]["object"]
    with pytest.raises(EventError, match=r"detail\.object\.key"):
        parse_event(broken)


def test_handlers_import_neither_boto3_nor_dash():
    """A cold start pays for boto3 only when a handler needs it (S3 store, Step Functions).

    (Powertools' logger imports botocore's top-level package, under a millisecond; botocore's
    session and clients, the expensive part, are not loaded.)"""
    code = (
        "import sys, forecasting.aws.handlers; "
        "print(sorted(m for m in ('boto3', 'botocore.session', 'botocore.client', 'dash') if m in sys.modules))"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root)
    assert out.stdout.strip() == "[]"


# --------------------------------------------------------------------------- in-Lambda runs on S3


@pytest.mark.slow
def test_s3_event_runs_once_ignores_outside_keys_and_late_events(lake, seaweed):
    store, bucket, prefix = lake
    client = seaweed.client
    key = metrics_key(store, bucket, prefix, client)
    first = s3_event(bucket, key, client)

    out = handlers.trigger(first, None)
    assert out["status"] == "published", out
    run1 = out["run_id"]
    assert store.latest_run_id() == run1
    manifest = store.read_manifest(run1)
    assert manifest["trigger"] == "s3"
    assert manifest["input"]["snapshot"]["key"] == out["input_key"]
    assert run1.endswith(out["input_key"][:12])
    assert len(store.read_run_table(run1, "risk")) > 0

    # the same event again (S3 delivers at least once): the completed run, not a new one
    again = handlers.trigger(copy.deepcopy(first), None)
    assert (again["status"], again["run_id"]) == ("duplicate", run1)
    assert store.list_runs() == [run1]

    # keys outside the trigger prefix, or another bucket: ignored, never run
    for other_key in (
        f"{prefix}/runs/{run1}/manifest.json",
        f"{prefix}/inventory/servers.parquet",
        f"{prefix}/metrics/",  # a folder marker pyarrow wrote
    ):
        ev = s3_event(bucket, other_key, client)
        assert handlers.trigger(ev, None)["status"] == "ignored"
    elsewhere = copy.deepcopy(first)
    elsewhere["detail"]["bucket"]["name"] = "some-other-bucket"
    assert handlers.trigger(elsewhere, None)["status"] == "ignored"
    assert store.list_runs() == [run1]

    # new telemetry: a new run
    append_day(store)
    second = s3_event(bucket, key, client)
    out2 = handlers.trigger(second, None)
    assert out2["status"] == "published" and out2["run_id"] != run1
    assert out2["input_key"] != out["input_key"]
    # the first event, delivered late: its object was superseded and already read → nothing
    late = handlers.trigger(copy.deepcopy(first), None)
    assert (late["status"], late["run_id"]) == ("stale", out2["run_id"])
    assert store.latest_run_id() == out2["run_id"]
    assert len(store.list_runs()) == 2


def test_trigger_prefix_over_the_outputs_is_refused(lake, monkeypatch, seaweed):
    store, bucket, prefix = lake
    before = store.list_runs()
    for bad in (f"{prefix}/", f"{prefix}/r", ""):
        monkeypatch.setenv("CAPFC_TRIGGER_PREFIX", bad)
        with pytest.raises(SettingsError, match=r"CAPFC_TRIGGER_PREFIX.*run outputs"):
            handlers.trigger(
                s3_event(bucket, metrics_key(store, bucket, prefix, seaweed.client), seaweed.client)
            )
    assert store.list_runs() == before == []


# --------------------------------------------------------------------------- schedule, local store


@pytest.mark.slow
def test_schedule_runs_on_the_local_store(tmp_path, monkeypatch, fast_env, caplog):
    root = tmp_path / "store"
    monkeypatch.setenv("CAPFC_DATA", str(root))
    store = open_store(str(root))
    write_fleet(store, n=8)
    caplog.set_level(logging.INFO, logger="forecasting.aws.handlers")
    context = SimpleNamespace(  # the plain-data fields of Lambda's context that Powertools reads
        aws_request_id="req-1",
        function_name="capfc-trigger",
        memory_limit_in_mb=10240,
        invoked_function_arn="arn:aws:lambda:eu-west-1:123456789012:function:capfc-trigger",
    )
    out = handlers.trigger(recorded("scheduler-input.json"), context)
    assert out["status"] == "published" and out["trigger"] == "schedule"
    # context travels as logging extras (the observability helper formats them as JSON fields)
    tagged = [r for r in caplog.records if getattr(r, "run_id", None) == out["run_id"]]
    assert tagged and all(r.trigger == "schedule" and r.request_id == "req-1" for r in tagged)
    assert store.read_manifest(out["run_id"])["trigger"] == "schedule"
    # the classic rule's shape starts the same run: same input → the same, completed run
    same = handlers.trigger(recorded("scheduled-event.json"), None)
    assert (same["status"], same["run_id"]) == ("duplicate", out["run_id"])
    # an S3 event cannot name a local store's objects
    with pytest.raises(EventError, match="local store"):
        handlers.trigger(recorded("s3-object-created.json"), None)
    with pytest.raises(EventError, match="unsupported event"):
        handlers.trigger({"hello": "world"}, None)


# --------------------------------------------------------------------------- state machine


def load_definition() -> dict:
    return json.loads(STATE_MACHINE_DEFINITION.read_text())


def test_state_machine_definition_is_well_formed():
    definition = load_definition()
    assert check_definition(definition, set(DEFINITION_PLACEHOLDERS)) == []
    states = definition["States"]
    assert list(states) == ["Plan", "Calibrate", "Shards", "Publish", "Abandon", "RunFailed"]
    assert states["Plan"]["Next"] == "Calibrate" and states["Calibrate"]["Next"] == "Shards"
    assert states["Calibrate"]["ResultPath"] is None  # the plan's output (the shard ids) reaches the Map
    assert states["Shards"]["ItemsPath"] == "$.shards"
    assert states["Shards"]["ResultPath"] is None  # the plan's output reaches Publish
    # Plan releases its own lease when it fails; a planned run that fails is abandoned (its lease
    # released, its partial files removed) before the execution fails with the original error
    assert states["Plan"]["Catch"][0]["Next"] == "RunFailed"
    for name in ("Calibrate", "Shards", "Publish"):
        assert states[name]["Catch"][0]["Next"] == "Abandon"
    assert states["Abandon"]["ResultPath"] == "$.abandoned" and states["Abandon"]["Next"] == "RunFailed"
    assert states["Abandon"]["Catch"][0]["ResultPath"] != "$.error"  # never hides the run's own error
    shard_retry = states["Shards"]["ItemProcessor"]["States"]["Shard"]["Retry"][0]["ErrorEquals"]
    assert "Lambda.ServiceException" in shard_retry and "StoreUnavailableError" in shard_retry
    broken = load_definition()
    broken["States"]["Plan"]["Next"] = "Nowhere"
    del broken["States"]["Publish"]["End"]
    problems = check_definition(broken, set(DEFINITION_PLACEHOLDERS))
    assert any("Nowhere" in p for p in problems) and any("Publish: needs exactly one" in p for p in problems)


@pytest.mark.slow
def test_state_machine_definition_passes_cfn_lint():
    """cfn-lint checks the definition against the States Language schema AWS publishes (E3601),
    as CloudFormation receives it from CDK: Definition with DefinitionSubstitutions."""
    import cfnlint.api

    def template(definition: dict) -> str:
        machine = {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "RoleArn": "arn:aws:iam::123456789012:role/capfc-state-machine",
                "Definition": definition,
                "DefinitionSubstitutions": ARNS,
            },
        }
        return json.dumps({"AWSTemplateFormatVersion": "2010-09-09", "Resources": {"Machine": machine}})

    assert [str(m) for m in cfnlint.api.lint(template(load_definition()))] == []
    broken = load_definition()
    broken["States"]["Shards"]["Type"] = "Loop"
    assert any("E3601" in str(m) for m in cfnlint.api.lint(template(broken)))


ARNS = {
    "PlanFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:capfc-plan",
    "CalibrateFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:capfc-calibrate",
    "ShardFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:capfc-shard",
    "PublishFunctionArn": "arn:aws:lambda:us-east-1:123456789012:function:capfc-publish",
}


def interpreter(shard=handlers.shard) -> Interpreter:
    """The definition as CDK deploys it (placeholders substituted), run by the stand-in."""
    definition = json.loads(substitute(STATE_MACHINE_DEFINITION.read_text(), ARNS))
    return Interpreter(
        definition,
        {
            ARNS["PlanFunctionArn"]: handlers.plan,
            ARNS["CalibrateFunctionArn"]: handlers.calibrate,
            ARNS["ShardFunctionArn"]: shard,
            ARNS["PublishFunctionArn"]: handlers.publish,
        },
    )


@pytest.fixture
def state_machine(moto_server, aws_env, monkeypatch) -> str:
    """The machine registered with moto's Step Functions API (records executions, runs none)."""
    monkeypatch.setenv("AWS_ENDPOINT_URL_SFN", moto_server.url)
    sfn = moto_server.client("stepfunctions")
    arn = sfn.create_state_machine(
        name=f"capfc-batch-{next(_prefixes)}",
        definition=substitute(STATE_MACHINE_DEFINITION.read_text(), ARNS),
        roleArn="arn:aws:iam::123456789012:role/capfc-state-machine",
    )["stateMachineArn"]
    monkeypatch.setenv("CAPFC_STATE_MACHINE_ARN", arn)
    return arn


@pytest.mark.slow
def test_big_fleet_starts_the_state_machine_once_and_it_publishes(
    lake, seaweed, state_machine, moto_server, monkeypatch
):
    store, bucket, prefix = lake
    monkeypatch.setenv("CAPFC_LAMBDA_MAX_SERVERS", "5")  # 12 servers: too many for "one Lambda"
    monkeypatch.setenv("CAPFC_SHARD_SIZE", "5")  # → 3 shards
    monkeypatch.setenv("CAPFC_SHARD_CONCURRENCY", "2")
    event = s3_event(bucket, metrics_key(store, bucket, prefix, seaweed.client), seaweed.client)
    out = handlers.trigger(event, None)
    assert out["status"] == "started", out
    assert out["execution"] == f"capfc-{out['input_key']}"
    sfn = moto_server.client("stepfunctions")
    execution = sfn.describe_execution(executionArn=out["execution_arn"])
    assert json.loads(execution["input"]) == {"input_key": out["input_key"], "trigger": "s3"}
    # a duplicate delivery while it runs: Step Functions answers a start with the same name and
    # input with the running execution; the schedule (another input) gets ExecutionAlreadyExists,
    # which counts as started
    again = handlers.trigger(copy.deepcopy(event), None)
    assert (again["status"], again["execution_arn"]) == ("started", out["execution_arn"])
    scheduled = handlers.trigger(recorded("scheduler-input.json"), None)
    assert (scheduled["status"], scheduled["execution"]) == ("already-started", out["execution"])

    def names() -> list[str]:
        return sorted(e["name"] for e in sfn.list_executions(stateMachineArn=state_machine)["executions"])

    assert names() == [out["execution"]]
    # that execution ends without publishing (aborted here): the next event starts the input again
    sfn.stop_execution(executionArn=out["execution_arn"], error="ShardError", cause="stopped by the test")
    retry = handlers.trigger(copy.deepcopy(event), None)
    assert (retry["status"], retry["execution"]) == ("started", f"{out['execution']}-r1")
    assert names() == [out["execution"], retry["execution"]]
    assert store.list_runs() == []

    # what the service would now run: Plan → Calibrate → Map(shard) → Publish, through the stand-in
    run = interpreter()
    ex = run.run(json.loads(execution["input"]))
    assert ex.status == "SUCCEEDED", (ex.error, ex.cause)
    assert ex.output["status"] == "published"
    run_id = ex.output["run_id"]
    assert store.latest_run_id() == run_id
    manifest = store.read_manifest(run_id)
    assert manifest["engine"]["n_shards"] == 3
    assert manifest["input"]["snapshot"]["key"] == out["input_key"]
    assert manifest["input"]["servers"] == 12
    assert store.read_run_table(run_id, "recommendations")["server_id"].nunique() == 12
    assert len(store.read_run_table(run_id, "risk")) == manifest["rows"]["risk"] > 0
    shard_calls = [c for r, c in run.calls if r == ARNS["ShardFunctionArn"]]
    assert sorted(c["shard"] for c in shard_calls) == [0, 1, 2]
    # calibrated once, before the Map, on the run the Plan made
    resources = [r for r, _ in run.calls]
    assert resources.count(ARNS["CalibrateFunctionArn"]) == 1
    assert resources.index(ARNS["CalibrateFunctionArn"]) < resources.index(ARNS["ShardFunctionArn"])
    assert manifest["config"]["calibration_servers"] == 12
    assert all(len(json.dumps(c)) < 256 * 1024 for _, c in run.calls)  # Step Functions' payload limit
    # the partial tables are gone once published; the run itself is complete
    listed = client_keys(seaweed.client, bucket, f"{prefix}/runs/{run_id}/")
    assert not any("/shards/" in k for k in listed) and any(k.endswith("manifest.json") for k in listed)
    # published: the next delivery of the event finds the run
    assert handlers.trigger(copy.deepcopy(event), None)["status"] in ("duplicate", "stale")


def client_keys(client, bucket: str, prefix: str) -> list[str]:
    return [o["Key"] for o in client.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])]


@pytest.mark.slow
def test_a_failing_shard_publishes_nothing(lake, monkeypatch, seaweed):
    store, bucket, prefix = lake
    monkeypatch.setenv("CAPFC_SHARD_SIZE", "5")
    previous = handlers.trigger(recorded("scheduler-input.json"), None)["run_id"]  # 12 ≤ default max
    append_day(store)
    calls = []

    def flaky_shard(event, context):
        calls.append(event["shard"])
        if event["shard"] == 1:
            raise StoreUnavailableError("S3 unavailable (read metrics) after 5 attempt(s)")
        return handlers.shard(event, context)

    run = interpreter(shard=flaky_shard)
    ex = run.run({"input_key": snapshot_input(store)["key"], "trigger": "schedule"})
    assert ex.status == "FAILED"
    assert ex.error == "StoreUnavailableError" and "S3 unavailable" in json.loads(ex.cause)["errorMessage"]
    assert calls.count(1) == 3  # the first try and the definition's two retries
    assert ("Shards", "caught StoreUnavailableError") in ex.history
    # the only call to the publish function is the Abandon state's: lease released, partials gone
    abandon = [c for r, c in run.calls if r == ARNS["PublishFunctionArn"]]
    assert len(abandon) == 1 and abandon[0]["error"]["Error"] == "StoreUnavailableError"
    assert store.latest_run_id() == previous and store.list_runs() == [previous]
    planned = next(c for r, c in run.calls if r == ARNS["ShardFunctionArn"])["run_id"]
    assert not [k for k in client_keys(seaweed.client, bucket, f"{prefix}/runs/{planned}/") if k[-1] != "/"]
    # a late Map item of the failed run, or publishing it by hand, finds no plan and says so
    with pytest.raises(ShardError, match="has no shard plan"):
        handlers.shard({"run_id": planned, "shard": 2}, None)
    with pytest.raises(ShardError, match="has no shard plan"):
        handlers.publish({"run_id": planned}, None)
    assert store.latest_run_id() == previous
    # the store is free at once: the next run does not wait for the failed run's lease to expire
    again = interpreter().run({"input_key": snapshot_input(store)["key"], "trigger": "schedule"})
    assert again.status == "SUCCEEDED", again.history
    assert store.latest_run_id() not in (previous, planned)
