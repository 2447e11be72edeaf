"""Alarms (failed run, no successful run in 26 h, Lambda errors incl. the report pack, web 5xx) and the
dashboard."""

from __future__ import annotations

import json
import re

import pytest
from cfn import one, render, resources


def _alarms(app: dict) -> dict[str, dict]:
    return {k: v["Properties"] for k, v in resources(app, "AWS::CloudWatch::Alarm").items()}


def _find(alarms: dict[str, dict], name: str) -> dict:
    found = [v for k, v in alarms.items() if re.fullmatch(f"Monitoring{name}[0-9A-F]{{8}}", k)]
    assert len(found) == 1, (name, sorted(alarms))
    return found[0]


@pytest.mark.parametrize("variant", ["ecs-express", "apprunner", "fargate-alb"])
def test_alarms_notify_one_topic(synthesized, variant: str) -> None:
    app = synthesized(variant).app
    topic_id, _ = one(app, "AWS::SNS::Topic")
    alarms = _alarms(app)
    for name, a in alarms.items():
        assert a["AlarmActions"] == [{"Ref": topic_id}], name
    expected = {"StateMachineRunFailed", "BatchRunFailed", "NoSuccessfulRun", "Web5xx", "TriggerDeadLetters"}
    expected |= {f"{f}Errors" for f in ("Trigger", "Plan", "Calibrate", "Shard", "Publish", "Report")}
    expected |= {
        "ecs-express": set(),
        "apprunner": {"AppRunner5xx"},
        "fargate-alb": {"AlbTarget5xx", "Alb5xx"},
    }[variant]
    for name in expected:
        _find(alarms, name)
    assert len(alarms) == len(expected)


def test_no_successful_run_in_26_hours(synthesized) -> None:
    a = _find(_alarms(synthesized("ecs-express").app), "NoSuccessfulRun")
    assert (a["Namespace"], a["MetricName"]) == ("CapacityForecaster", "RunSucceeded")
    assert a["Dimensions"] == [{"Name": "service", "Value": "capfc-batch"}]
    assert (a["Period"], a["EvaluationPeriods"], a["DatapointsToAlarm"]) == (3600, 26, 26)
    assert a["ComparisonOperator"] == "LessThanThreshold" and a["Threshold"] == 1
    assert a["TreatMissingData"] == "breaching"  # silence is the failure this alarm is for


def test_failed_step_functions_runs_and_web_5xx(synthesized) -> None:
    alarms = _alarms(synthesized("ecs-express").app)
    sm = _find(alarms, "StateMachineRunFailed")
    assert [m["Expression"] for m in sm["Metrics"] if "Expression" in m] == ["failed + timedout + aborted"]
    names = {m["MetricStat"]["Metric"]["MetricName"] for m in sm["Metrics"] if "MetricStat" in m}
    assert names == {"ExecutionsFailed", "ExecutionsTimedOut", "ExecutionsAborted"}
    web = _find(alarms, "Web5xx")
    assert (web["Namespace"], web["MetricName"]) == ("CapacityForecaster", "Http5xx")
    assert web["Dimensions"] == [{"Name": "service", "Value": "capfc-web"}]


def test_dashboard_shows_the_batch_and_web_metrics(synthesized) -> None:
    _, dash = one(synthesized("ecs-express").app, "AWS::CloudWatch::Dashboard")
    body = json.loads(render(dash["Properties"]["DashboardBody"]).replace("${AWS::Region}", "eu-west-1"))
    shown = set()
    for widget in body["widgets"]:
        for metric in widget.get("properties", {}).get("metrics", []):
            if metric and metric[0] == "CapacityForecaster":
                shown.add(metric[1])
    assert shown >= {
        "RunSucceeded",
        "RunFailed",
        "RunDurationSeconds",
        "SeriesForecast",
        "SeriesFailed",
        "InputAgeHours",
        "ServersAtRisk",
        "PlanAgeHours",
        "ExportRows",
        "Http5xx",
        "RequestLatencyMs",
    }


@pytest.mark.parametrize("variant", ["ecs-express-api", "apprunner-api"])
def test_api_gateway_5xx_alarm(synthesized, variant: str) -> None:
    app = synthesized(variant).app
    api_id, _ = one(app, "AWS::ApiGatewayV2::Api")
    a = _find(_alarms(app), "Api5xx")
    assert (a["Namespace"], a["MetricName"], a["Statistic"]) == ("AWS/ApiGateway", "5xx", "Sum")
    assert a["Dimensions"] == [{"Name": "ApiId", "Value": {"Ref": api_id}}]
