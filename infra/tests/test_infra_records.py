"""Plans as records on AWS: the weekly report Lambda and its schedule, alarm and dashboard line,
and the store prefixes of decisions, sign-offs, read leases and packs (issue 14)."""

from __future__ import annotations

import json
import re

import pytest
from cfn import as_list, one, render, resources, role_of, statements
from store_access import assert_store_access

STORE = "s3://capfc-store-123456789012-eu-west-1/store"


def _report_function(app: dict) -> tuple[str, dict]:
    found = [
        (lid, fn["Properties"])
        for lid, fn in resources(app, "AWS::Lambda::Function").items()
        if fn["Properties"].get("ImageConfig", {}).get("Command") == ["forecasting.aws.handlers.report"]
    ]
    assert len(found) == 1, found
    return found[0]


def _report_schedule(app: dict, fn_id: str) -> dict:
    found = [
        s["Properties"]
        for s in resources(app, "AWS::Scheduler::Schedule").values()
        if s["Properties"]["Target"]["Arn"] == {"Fn::GetAtt": [fn_id, "Arn"]}
    ]
    assert len(found) == 1, found
    return found[0]


@pytest.fixture(scope="module")
def app(synthesized) -> dict:
    return synthesized("ecs-express").app


def test_the_store_prefixes_are_the_products_own() -> None:
    """The stack grants by prefix; these are the folders forecasting/records writes."""
    from capfc_infra import access

    from forecasting.records import decisions, retention

    assert access.DECISIONS == decisions.DECISIONS_DIR + "/"
    assert access.SIGNOFFS == decisions.SIGNOFFS_DIR + "/"
    assert access.READERS == retention.READERS_DIR + "/"


def test_the_packs_default_folder_is_reports(tmp_path) -> None:
    """The handler writes under ``default_out(store)``: ``<store>/reports/``, where the role may put."""
    from capfc_infra import access

    from forecasting.records.report import default_out
    from forecasting.sources import open_store

    store = open_store(str(tmp_path / "store"))
    assert default_out(store) == str(tmp_path / "store" / access.REPORTS.rstrip("/")) + "/"


def test_report_lambda_runs_the_handler_from_the_one_image(app: dict) -> None:
    fn_id, p = _report_function(app)
    assert p["PackageType"] == "Image"
    assert p["ImageConfig"]["EntryPoint"] == ["python", "-m", "awslambdaric"]
    trigger = next(
        f["Properties"]
        for f in resources(app, "AWS::Lambda::Function").values()
        if f["Properties"].get("ImageConfig", {}).get("Command") == ["forecasting.aws.handlers.trigger"]
    )
    assert p["Code"] == trigger["Code"], "the same image as the batch"
    assert 60 <= p["Timeout"] <= 120
    assert p["MemorySize"] >= 2048
    env = p["Environment"]["Variables"]
    assert env["MPLCONFIGDIR"] == "/tmp/mpl"  # matplotlib's cache: only /tmp is writable
    assert env["CAPFC_DATA"] == STORE and env["HOME"] == "/tmp"
    assert p["LoggingConfig"]["LogFormat"] == "JSON"
    assert "ReservedConcurrentExecutions" not in p
    role = role_of(app, fn_id)
    others = {role_of(app, lid) for lid in resources(app, "AWS::Lambda::Function") if lid != fn_id}
    assert role not in others, "its own role"


def test_report_role_reads_the_plan_and_records_and_writes_only_reports_and_its_lease(app: dict) -> None:
    fn_id, _ = _report_function(app)
    role = role_of(app, fn_id)
    assert_store_access(app, role, "report")
    non_s3 = {
        a for s in statements(app, role) for a in as_list(s["Action"]) if not a.startswith(("s3:", "logs:"))
    }
    assert not non_s3, non_s3  # no states:, no lambda:, no secrets


def test_weekly_schedule_invokes_the_report_with_both_formats(app: dict) -> None:
    from forecasting.records.report import FORMATS

    fn_id, _ = _report_function(app)
    p = _report_schedule(app, fn_id)
    assert p["ScheduleExpression"] == "cron(0 6 ? * MON *)"
    assert p["ScheduleExpressionTimezone"] == "UTC"  # the batch schedule's timezone setting
    assert p["FlexibleTimeWindow"] == {"Mode": "OFF"}
    event = json.loads(p["Target"]["Input"])
    assert event == {"format": ["xlsx", "pdf"]}
    assert set(event["format"]) <= set(FORMATS)  # what the handler accepts
    assert "DeadLetterConfig" in p["Target"]
    assert p["Target"]["RetryPolicy"]["MaximumRetryAttempts"] == 3
    # its own scheduler role, which may invoke the report function and nothing else
    role = p["Target"]["RoleArn"]["Fn::GetAtt"][0]
    trigger_schedule = next(
        s["Properties"]
        for s in resources(app, "AWS::Scheduler::Schedule").values()
        if s["Properties"] is not p
    )
    assert trigger_schedule["Target"]["RoleArn"]["Fn::GetAtt"][0] != role
    invoke = [s for s in statements(app, role) if "lambda:InvokeFunction" in as_list(s["Action"])]
    assert invoke
    for s in invoke:
        assert {render(r) for r in as_list(s["Resource"])} <= {
            "${" + fn_id + ".Arn}",
            "${" + fn_id + ".Arn}:*",
        }
    conditions = app["Resources"][role]["Properties"]["AssumeRolePolicyDocument"]["Statement"][0]["Condition"]
    assert conditions == {"StringEquals": {"aws:SourceAccount": "123456789012"}}


def test_the_handler_accepts_the_scheduled_event(app: dict, tmp_path) -> None:
    """The schedule's input, from the template, given to the real handler on a store without a
    run: it gets past the event check (a bad event is an EventError before the store is read)
    and fails only on the missing run."""
    from forecasting.aws import handlers
    from forecasting.settings import Settings
    from forecasting.sources import StoreError

    fn_id, _ = _report_function(app)
    event = json.loads(_report_schedule(app, fn_id)["Target"]["Input"])
    (tmp_path / "store").mkdir()
    settings = Settings(data=str(tmp_path / "store"))
    with pytest.raises(handlers.EventError):
        handlers.report({**event, "format": ["docx"]}, settings=settings)
    with pytest.raises(StoreError) as e:
        handlers.report(event, settings=settings)
    assert not isinstance(e.value, handlers.EventError)
    assert not (tmp_path / "store" / "reports").exists() or not any(
        (tmp_path / "store" / "reports").iterdir()
    )


def test_report_schedule_and_timezone_come_from_context(synthesized) -> None:
    app = synthesized("fargate-alb-private").app  # report_schedule, schedule_timezone overridden
    fn_id, _ = _report_function(app)
    p = _report_schedule(app, fn_id)
    assert (p["ScheduleExpression"], p["ScheduleExpressionTimezone"]) == (
        "cron(30 7 ? * FRI *)",
        "Europe/Zurich",
    )


def test_report_errors_alarm_notifies_the_alarm_topic(app: dict) -> None:
    fn_id, _ = _report_function(app)
    topic_id, _ = one(app, "AWS::SNS::Topic")
    found = [
        a["Properties"]
        for k, a in resources(app, "AWS::CloudWatch::Alarm").items()
        if re.fullmatch("MonitoringReportErrors[0-9A-F]{8}", k)
    ]
    assert len(found) == 1
    a = found[0]
    assert (a["Namespace"], a["MetricName"], a["Statistic"]) == ("AWS/Lambda", "Errors", "Sum")
    assert a["Dimensions"] == [{"Name": "FunctionName", "Value": {"Ref": fn_id}}]
    assert a["Threshold"] == 1 and a["ComparisonOperator"] == "GreaterThanOrEqualToThreshold"
    assert a["AlarmActions"] == [{"Ref": topic_id}]
    assert "report" in a["AlarmDescription"]


def test_dashboard_shows_the_report_functions_errors(app: dict) -> None:
    fn_id, _ = _report_function(app)
    _, dash = one(app, "AWS::CloudWatch::Dashboard")
    body = json.loads(render(dash["Properties"]["DashboardBody"]).replace("${AWS::Region}", "eu-west-1"))
    lambda_metrics = [
        m
        for w in body["widgets"]
        for m in w.get("properties", {}).get("metrics", [])
        if m and m[0] == "AWS/Lambda"
    ]
    assert ["AWS/Lambda", "Errors", "FunctionName", "${" + fn_id + "}"] in [m[:4] for m in lambda_metrics]


def test_report_function_name_is_an_output(app: dict) -> None:
    fn_id, _ = _report_function(app)
    assert app["Outputs"]["ReportFunctionName"]["Value"] == {"Ref": fn_id}
