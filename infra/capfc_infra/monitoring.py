"""Alarms and the dashboard: a failed run, no successful run in 26 h, Lambda errors (the batch
functions and the weekly report pack), web 5xx.

The batch and the app publish CloudWatch Embedded Metric Format lines (``forecasting/
observability.py``): namespace ``CapacityForecaster``, dimension ``service`` = ``capfc-batch``
(RunSucceeded, RunFailed, RunDurationSeconds, SeriesForecast, SeriesFailed, InputAgeHours,
ServersAtRisk) or ``capfc-web`` (Http5xx, RequestLatencyMs, PlanAgeHours, ExportRows).
"""

from __future__ import annotations

from aws_cdk import Duration
from aws_cdk import aws_cloudwatch as cw
from aws_cdk import aws_cloudwatch_actions as cw_actions
from aws_cdk import aws_sns as sns
from aws_cdk import aws_sns_subscriptions as subs
from constructs import Construct

from .api import ApiGateway
from .batch import Batch
from .config import Config
from .nag import ack
from .web import Web

NAMESPACE = "CapacityForecaster"
BATCH_SERVICE = "capfc-batch"
WEB_SERVICE = "capfc-web"
BATCH_METRICS = (
    "RunSucceeded",
    "RunFailed",
    "RunDurationSeconds",
    "SeriesForecast",
    "SeriesFailed",
    "InputAgeHours",
    "ServersAtRisk",
)
NO_RUN_HOURS = 26


def app_metric(name: str, service: str, statistic: str = "Sum", period: Duration | None = None) -> cw.Metric:
    """One of the app's EMF metrics, by name and service (5-minute periods unless given)."""
    period = period or Duration.minutes(5)
    return cw.Metric(
        namespace=NAMESPACE,
        metric_name=name,
        dimensions_map={"service": service},
        statistic=statistic,
        period=period,
    )


class Monitoring(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Config,
        batch: Batch,
        web: Web,
        api: ApiGateway | None = None,
    ) -> None:
        super().__init__(scope, construct_id)
        self.topic = sns.Topic(self, "Alarms", display_name="Capacity Forecaster alarms", enforce_ssl=True)
        ack(
            self.topic,
            "SNS2",
            "Alarm notifications carry only alarm names and states; CloudWatch cannot publish to a topic "
            "encrypted with the AWS-managed SNS key, and a customer key would protect no data here.",
        )
        if config.alarm_email:
            self.topic.add_subscription(subs.EmailSubscription(config.alarm_email))
        action = cw_actions.SnsAction(self.topic)
        self.alarms: dict[str, cw.Alarm] = {}

        def alarm(name: str, metric: cw.IMetric, description: str, **kw) -> cw.Alarm:
            a = cw.Alarm(
                self,
                name,
                metric=metric,
                alarm_description=description,
                threshold=kw.pop("threshold", 1),
                evaluation_periods=kw.pop("evaluation_periods", 1),
                comparison_operator=kw.pop(
                    "comparison_operator", cw.ComparisonOperator.GREATER_THAN_OR_EQUAL_TO_THRESHOLD
                ),
                treat_missing_data=kw.pop("treat_missing_data", cw.TreatMissingData.NOT_BREACHING),
                **kw,
            )
            a.add_alarm_action(action)
            self.alarms[name] = a
            return a

        sm = batch.state_machine
        alarm(
            "StateMachineRunFailed",
            cw.MathExpression(
                expression="failed + timedout + aborted",
                using_metrics={
                    "failed": sm.metric_failed(period=Duration.minutes(5)),
                    "timedout": sm.metric_timed_out(period=Duration.minutes(5)),
                    "aborted": sm.metric_aborted(period=Duration.minutes(5)),
                },
                label="failed runs (Step Functions)",
                period=Duration.minutes(5),
            ),
            "A Step Functions forecasting run failed, timed out or was aborted; runs/LATEST still names the last good run.",
        )
        alarm(
            "BatchRunFailed",
            app_metric("RunFailed", BATCH_SERVICE),
            "A forecasting run reported RunFailed (Lambda, container task or state machine).",
        )
        alarm(
            "NoSuccessfulRun",
            app_metric("RunSucceeded", BATCH_SERVICE, period=Duration.hours(1)),
            f"No successful forecasting run in {NO_RUN_HOURS} h: the plan planners see is getting stale.",
            threshold=1,
            comparison_operator=cw.ComparisonOperator.LESS_THAN_THRESHOLD,
            evaluation_periods=NO_RUN_HOURS,
            datapoints_to_alarm=NO_RUN_HOURS,
            treat_missing_data=cw.TreatMissingData.BREACHING,
        )
        for name, fn in batch.functions.items():
            alarm(
                f"{name.title()}Errors",
                fn.metric_errors(period=Duration.minutes(5), statistic="Sum"),
                "The weekly report pack failed (no pack under reports/ this time; see its log group)."
                if name == "report"
                else f"The {name} Lambda function raised errors.",
            )
        alarm(
            "TriggerDeadLetters",
            batch.dlq.metric_approximate_number_of_messages_visible(
                period=Duration.minutes(5), statistic="Maximum"
            ),
            "A run trigger (S3 event or schedule) or the weekly report schedule could not be delivered "
            "after retries; see the dead-letter queue.",
        )
        alarm(
            "Web5xx",
            app_metric("Http5xx", WEB_SERVICE),
            "The web app answered 5xx (app-side count, every web tier).",
            threshold=5,
            evaluation_periods=2,
        )
        if web.load_balancer is not None:
            alarm(
                "AlbTarget5xx",
                web.load_balancer.metrics.http_code_target(
                    code=_elb_code("TARGET_5XX_COUNT"), period=Duration.minutes(5), statistic="Sum"
                ),
                "The ALB saw 5xx from the web tasks.",
                threshold=5,
                evaluation_periods=2,
            )
            alarm(
                "Alb5xx",
                web.load_balancer.metrics.http_code_elb(
                    code=_elb_code("ELB_5XX_COUNT"), period=Duration.minutes(5), statistic="Sum"
                ),
                "The ALB itself answered 5xx (no healthy target, sign-in failures).",
                threshold=5,
                evaluation_periods=2,
            )
        if config.web_tier == "apprunner":
            alarm(
                "AppRunner5xx",
                cw.Metric(
                    namespace="AWS/AppRunner",
                    metric_name="5xxStatusResponses",
                    dimensions_map={"ServiceName": web.service_name, "ServiceID": _apprunner_id(web)},
                    statistic="Sum",
                    period=Duration.minutes(5),
                ),
                "App Runner answered 5xx.",
                threshold=5,
                evaluation_periods=2,
            )
        if api is not None:
            alarm(
                "Api5xx",
                api.api.metric_server_error(period=Duration.minutes(5), statistic="Sum"),
                "The API Gateway HTTP API answered 5xx (the web tier failed or timed out behind it).",
                threshold=5,
                evaluation_periods=2,
            )
        self.dashboard = self._dashboard(batch)

    def _dashboard(self, batch: Batch) -> cw.Dashboard:
        d = cw.Dashboard(self, "Dashboard", default_interval=Duration.days(7))
        d.add_widgets(
            cw.TextWidget(markdown="# Capacity Forecaster\nRuns, forecasts, web health", width=24, height=1)
        )
        d.add_widgets(
            cw.GraphWidget(
                title="Runs",
                left=[
                    app_metric("RunSucceeded", BATCH_SERVICE, period=Duration.hours(1)),
                    app_metric("RunFailed", BATCH_SERVICE, period=Duration.hours(1)),
                ],
                width=8,
            ),
            cw.GraphWidget(
                title="Run duration (s)",
                left=[app_metric("RunDurationSeconds", BATCH_SERVICE, "Maximum", Duration.hours(1))],
                width=8,
            ),
            cw.GraphWidget(
                title="Series forecast / failed",
                left=[app_metric("SeriesForecast", BATCH_SERVICE, period=Duration.hours(1))],
                right=[app_metric("SeriesFailed", BATCH_SERVICE, period=Duration.hours(1))],
                width=8,
            ),
        )
        d.add_widgets(
            cw.SingleValueWidget(
                title="Servers at risk",
                metrics=[app_metric("ServersAtRisk", BATCH_SERVICE, "Maximum", Duration.days(1))],
                width=6,
            ),
            cw.GraphWidget(
                title="Input age / plan age (h)",
                left=[app_metric("InputAgeHours", BATCH_SERVICE, "Maximum", Duration.hours(1))],
                right=[app_metric("PlanAgeHours", WEB_SERVICE, "Maximum", Duration.hours(1))],
                width=6,
            ),
            cw.GraphWidget(
                title="Web 5xx / latency p95 (ms)",
                left=[app_metric("Http5xx", WEB_SERVICE)],
                right=[app_metric("RequestLatencyMs", WEB_SERVICE, "p95")],
                width=6,
            ),
            cw.GraphWidget(
                title="Export rows",
                left=[app_metric("ExportRows", WEB_SERVICE, period=Duration.hours(1))],
                width=6,
            ),
        )
        d.add_widgets(
            cw.GraphWidget(
                title="State machine executions",
                left=[
                    batch.state_machine.metric_succeeded(),
                    batch.state_machine.metric_failed(),
                    batch.state_machine.metric_timed_out(),
                ],
                width=12,
            ),
            cw.GraphWidget(
                title="Lambda errors / duration p95",
                left=[fn.metric_errors() for fn in batch.functions.values()],
                right=[fn.metric_duration(statistic="p95") for fn in batch.functions.values()],
                width=12,
            ),
        )
        d.add_widgets(
            cw.AlarmStatusWidget(title="Alarms", alarms=list(self.alarms.values()), width=24, height=4)
        )
        return d


def _elb_code(name: str):
    from aws_cdk import aws_elasticloadbalancingv2 as elbv2

    return getattr(elbv2.HttpCodeTarget if "TARGET" in name else elbv2.HttpCodeElb, name)


def _apprunner_id(web: Web) -> str:
    return web.apprunner_service.attr_service_id
