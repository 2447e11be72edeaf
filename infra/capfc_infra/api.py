"""The REST API through an API Gateway HTTP API (context ``api_gateway=true``; ecs-express and
apprunner only): ``/api/v1/{proxy+}`` proxied to the web tier's URL behind a JWT authorizer.

Why, when the app checks bearer tokens itself: the gateway refuses unsigned, expired and
wrong-audience tokens before they reach a web instance, throttles per stage, and logs every
call in its own access log; the app still checks each token (and the caller's role) again.
The service URL serves the same API directly, so the gateway is an option, not a requirement.
"""

from __future__ import annotations

import json

from aws_cdk import CfnOutput, Duration, RemovalPolicy
from aws_cdk import aws_apigatewayv2 as apigw
from aws_cdk import aws_apigatewayv2_authorizers as authorizers
from aws_cdk import aws_apigatewayv2_integrations as integrations
from aws_cdk import aws_logs as logs
from constructs import Construct

from .batch import retention_for
from .config import Config

API_ROUTE = "/api/v1/{proxy+}"
# One JSON line per call in the access log ($context variables of HTTP APIs).
ACCESS_LOG_FORMAT = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "requestTime": "$context.requestTime",
    "httpMethod": "$context.httpMethod",
    "routeKey": "$context.routeKey",
    "path": "$context.path",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "integrationStatus": "$context.integrationStatus",
    "authorizerError": "$context.authorizer.error",
    "principal": "$context.authorizer.claims.sub",
    "client": "$context.authorizer.claims.client_id",
}


class ApiGateway(Construct):
    def __init__(self, scope: Construct, construct_id: str, *, config: Config, web_url: str) -> None:
        super().__init__(scope, construct_id)
        assert config.oidc is not None and config.api_audience  # config.py enforces it
        self.log_group = logs.LogGroup(
            self,
            "AccessLogs",
            retention=retention_for(config.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.api = apigw.HttpApi(
            self,
            "Api",
            api_name="capfc-api",
            description="Capacity Forecaster REST API (/api/v1): JWT-checked proxy to the web tier",
            create_default_stage=False,
        )
        self.stage = apigw.HttpStage(
            self,
            "DefaultStage",
            http_api=self.api,
            stage_name="$default",
            auto_deploy=True,
            throttle=apigw.ThrottleSettings(
                rate_limit=config.api_rate_limit, burst_limit=config.api_burst_limit
            ),
        )
        cfn_stage: apigw.CfnStage = self.stage.node.default_child  # type: ignore[assignment]
        cfn_stage.access_log_settings = apigw.CfnStage.AccessLogSettingsProperty(
            destination_arn=self.log_group.log_group_arn,
            format=json.dumps(ACCESS_LOG_FORMAT, separators=(",", ":")),
        )
        self.authorizer = authorizers.HttpJwtAuthorizer(
            "Jwt",
            config.oidc.issuer,
            jwt_audience=[config.api_audience],
            authorizer_name="capfc-oidc",
        )
        self.api.add_routes(
            path=API_ROUTE,
            methods=[apigw.HttpMethod.ANY],
            integration=integrations.HttpUrlIntegration(
                "Web",
                f"{web_url}/api/v1/{{proxy}}",
                method=apigw.HttpMethod.ANY,
                timeout=Duration.seconds(29),
            ),
            authorizer=self.authorizer,
        )
        self.url = f"{self.api.api_endpoint}/api/v1/"
        CfnOutput(self, "ApiUrl", value=self.url)
