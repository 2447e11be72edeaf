"""The web tier, in each of its three forms, and the shared Valkey (Redis protocol) manager."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from aws_cdk.assertions import Match, Template
from cfn import actions, as_list, one, render, resources, role_of, statements
from infra_synth import API_AUDIENCE, CLIENT_SECRET_ARN, REPO
from store_access import assert_store_access

STORE = "s3://capfc-store-123456789012-eu-west-1/store"


def _env(pairs: list[dict]) -> dict[str, str]:
    return {p["Name"]: render(p["Value"]) for p in pairs}


def _assert_web_env(env: dict[str, str], redis_id: str) -> None:
    assert env["CAPFC_DATA"] == STORE
    assert env["CAPFC_REDIS_URL"] == (
        f"rediss://${{{redis_id}.PrimaryEndPoint.Address}}:${{{redis_id}.PrimaryEndPoint.Port}}/0?ssl_cert_reqs=required"
    )


def _assert_in_app_sign_in(app: dict, env: dict[str, str], secrets: dict[str, object], reader: str) -> None:
    """ecs-express and apprunner: the app signs users in (app/auth.py, mode oidc) with the
    client secret and a generated session key injected from Secrets Manager, which only
    ``reader`` (the role that fetches them for the container) may read."""
    assert env["CAPFC_AUTH_MODE"] == "oidc"
    assert (env["CAPFC_AUTH_ISSUER"], env["CAPFC_AUTH_CLIENT_ID"]) == ("https://idp.example.com", "capfc-web")
    assert env["CAPFC_AUTH_GROUPS_CLAIM"] == "cognito:groups"
    assert json.loads(env["CAPFC_AUTH_ROLE_GROUPS"])["planner"] == ["planners"]
    assert "CAPFC_API_AUDIENCE" in env  # bearer tokens of the REST API (app/api)
    # no secret in plain environment
    assert not {"CAPFC_AUTH_CLIENT_SECRET", "CAPFC_SESSION_SECRET"} & set(env)
    assert secrets["CAPFC_AUTH_CLIENT_SECRET"] == f"{CLIENT_SECRET_ARN}:client_secret::"
    session_id, session = one(app, "AWS::SecretsManager::Secret")
    assert secrets["CAPFC_SESSION_SECRET"] == {"Ref": session_id}
    generated = session["Properties"]["GenerateSecretString"]
    assert generated["PasswordLength"] >= 32 and "SecretStringTemplate" not in generated  # the value itself
    readers = {}
    for pol in resources(app, "AWS::IAM::Policy").values():
        for st in pol["Properties"]["PolicyDocument"]["Statement"]:
            if any(a.startswith("secretsmanager:") for a in as_list(st["Action"])):
                for role in pol["Properties"]["Roles"]:
                    readers.setdefault(role["Ref"], []).append(st)
    assert list(readers) == [reader], readers
    (st,) = readers[reader]
    assert set(as_list(st["Action"])) == {"secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"}
    assert sorted(map(json.dumps, as_list(st["Resource"]))) == sorted(
        map(json.dumps, [CLIENT_SECRET_ARN, {"Ref": session_id}])
    )


def _assert_web_store_access(app: dict, role: str, kind: str = "web") -> None:
    """Reads the store; writes only records (decisions, sign-offs, read leases; see store_access);
    starts no run."""
    assert_store_access(app, role, kind)
    assert "states:StartExecution" not in actions(statements(app, role))


@pytest.mark.parametrize("variant", ["ecs-express", "apprunner", "fargate-alb"])
def test_valkey_requires_tls_is_encrypted_and_admits_only_the_web_tasks(synthesized, variant: str) -> None:
    app = synthesized(variant).app
    _, redis = one(app, "AWS::ElastiCache::ReplicationGroup")
    p = redis["Properties"]
    assert (p["Engine"], p["TransitEncryptionEnabled"], p["TransitEncryptionMode"]) == (
        "valkey",
        True,
        "required",
    )
    assert p["AtRestEncryptionEnabled"] is True
    assert (p["NumCacheClusters"], p["MultiAZEnabled"], p["AutomaticFailoverEnabled"]) == (2, True, True)
    redis_sg = p["SecurityGroupIds"][0]["Fn::GetAtt"][0]
    ingress = [
        r["Properties"]
        for r in resources(app, "AWS::EC2::SecurityGroupIngress").values()
        if r["Properties"]["GroupId"] == {"Fn::GetAtt": [redis_sg, "GroupId"]}
    ]
    assert len(ingress) == 1 and ingress[0]["FromPort"] == p["Port"] == 6380
    assert "WebWebSecurityGroup" in ingress[0]["SourceSecurityGroupId"]["Fn::GetAtt"][0]


def test_ecs_express_service(synthesized) -> None:
    app = synthesized("ecs-express").app
    redis_id, _ = one(app, "AWS::ElastiCache::ReplicationGroup")
    sid, svc = one(app, "AWS::ECS::ExpressGatewayService")
    p = svc["Properties"]
    assert p["HealthCheckPath"] == "/healthz"
    assert p["PrimaryContainer"]["ContainerPort"] == 8080
    assert (p["Cpu"], p["Memory"]) == ("1024", "2048")
    assert p["ScalingTarget"]["MinTaskCount"] == 2 and p["ScalingTarget"]["MaxTaskCount"] == 4
    env = _env(p["PrimaryContainer"]["Environment"])
    _assert_web_env(env, redis_id)
    secrets = {s["Name"]: s["ValueFrom"] for s in p["PrimaryContainer"]["Secrets"]}
    # ECS fetches secrets with the execution role; the app's task role reads none
    _assert_in_app_sign_in(app, env, secrets, p["ExecutionRoleArn"]["Fn::GetAtt"][0])
    assert env["CAPFC_API_AUDIENCE"] == "capfc-web"  # default: the client id
    # Public ingress: ECS Express puts its (internet-facing) ALB in the subnets it is given.
    assert all("public" in s["Ref"] for s in p["NetworkConfiguration"]["Subnets"])
    _assert_web_store_access(app, role_of(app, sid))
    infra_role = app["Resources"][p["InfrastructureRoleArn"]["Fn::GetAtt"][0]]["Properties"]
    assert "AmazonECSInfrastructureRoleforExpressGatewayServices" in render(
        infra_role["ManagedPolicyArns"][0]
    )


def test_app_runner_service_public_with_vpc_egress(synthesized) -> None:
    app = synthesized("apprunner").app
    redis_id, _ = one(app, "AWS::ElastiCache::ReplicationGroup")
    sid, svc = one(app, "AWS::AppRunner::Service")
    p = svc["Properties"]
    assert p["HealthCheckConfiguration"]["Path"] == "/healthz"
    assert p["HealthCheckConfiguration"]["Protocol"] == "HTTP"
    image = p["SourceConfiguration"]["ImageRepository"]
    assert image["ImageRepositoryType"] == "ECR"
    assert image["ImageConfiguration"]["Port"] == "8080"
    env = _env(image["ImageConfiguration"]["RuntimeEnvironmentVariables"])
    _assert_web_env(env, redis_id)
    secrets = {s["Name"]: s["Value"] for s in image["ImageConfiguration"]["RuntimeEnvironmentSecrets"]}
    # App Runner fetches secrets with the instance role (the app's own role)
    _assert_in_app_sign_in(app, env, secrets, p["InstanceConfiguration"]["InstanceRoleArn"]["Fn::GetAtt"][0])
    assert p["NetworkConfiguration"]["EgressConfiguration"]["EgressType"] == "VPC"
    assert p["NetworkConfiguration"]["IngressConfiguration"]["IsPubliclyAccessible"] is True
    assert not resources(app, "AWS::AppRunner::VpcIngressConnection")
    _assert_web_store_access(app, p["InstanceConfiguration"]["InstanceRoleArn"]["Fn::GetAtt"][0])
    assert sid


def test_app_runner_private_ingress_goes_through_a_vpc_endpoint(synthesized) -> None:
    app = synthesized("apprunner-private").app
    _, svc = one(app, "AWS::AppRunner::Service")
    assert svc["Properties"]["NetworkConfiguration"]["IngressConfiguration"]["IsPubliclyAccessible"] is False
    _, conn = one(app, "AWS::AppRunner::VpcIngressConnection")
    endpoint_id = conn["Properties"]["IngressVpcConfiguration"]["VpcEndpointId"]["Ref"]
    endpoint = app["Resources"][endpoint_id]["Properties"]
    assert endpoint["VpcEndpointType"] == "Interface"
    assert "apprunner.requests" in render(endpoint["ServiceName"])


def test_fargate_alb_signs_users_in_with_oidc_over_https(synthesized) -> None:
    app = synthesized("fargate-alb").app
    t = Template.from_json(app)
    t.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {
            "Port": 443,
            "Protocol": "HTTPS",
            "Certificates": [{"CertificateArn": Match.string_like_regexp("^arn:aws:acm:")}],
            "DefaultActions": [
                Match.object_like(
                    {
                        "Type": "authenticate-oidc",
                        "Order": 1,
                        "AuthenticateOidcConfig": Match.object_like(
                            {
                                "Issuer": "https://idp.example.com",
                                "ClientId": "capfc-web",
                                "ClientSecret": "{{resolve:secretsmanager:capfc/oidc:SecretString:client_secret::}}",
                                "OnUnauthenticatedRequest": "authenticate",
                            }
                        ),
                    }
                ),
                Match.object_like({"Type": "forward", "Order": 2}),
            ],
        },
    )
    t.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::Listener",
        {"Port": 80, "DefaultActions": [Match.object_like({"Type": "redirect"})]},
    )
    t.has_resource_properties(
        "AWS::ElasticLoadBalancingV2::TargetGroup",
        Match.object_like({"HealthCheckPath": "/healthz", "Port": 8080, "TargetType": "ip"}),
    )
    _, lb = one(app, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    attrs = {a["Key"]: render(a["Value"]) for a in lb["Properties"]["LoadBalancerAttributes"]}
    assert lb["Properties"]["Scheme"] == "internet-facing"
    assert attrs["access_logs.s3.enabled"] == "true"
    assert attrs["access_logs.s3.bucket"] == "capfc-logs-123456789012-eu-west-1"
    assert attrs["routing.http.drop_invalid_header_fields.enabled"] == "true"
    redis_id, _ = one(app, "AWS::ElastiCache::ReplicationGroup")
    tid, task = next(
        (k, v) for k, v in resources(app, "AWS::ECS::TaskDefinition").items() if "WebWebTask" in k
    )
    env = _env(task["Properties"]["ContainerDefinitions"][0]["Environment"])
    _assert_web_env(env, redis_id)
    _assert_web_store_access(app, role_of(app, tid))
    # the app verifies the header this ALB signs (app/auth.py): mode, signer, issuer, client
    lb_id, _ = one(app, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert env["CAPFC_AUTH_MODE"] == "alb" and env["CAPFC_AUTH_ALB_ARN"] == f"${{{lb_id}}}"
    assert (env["CAPFC_AUTH_ISSUER"], env["CAPFC_AUTH_CLIENT_ID"]) == ("https://idp.example.com", "capfc-web")
    assert env["CAPFC_PROXY_HOPS"] == "1"
    assert env["CAPFC_API_AUDIENCE"] == "capfc-web"
    # the ALB holds the client secret: the container gets no secret, and nothing reads one
    assert "Secrets" not in task["Properties"]["ContainerDefinitions"][0]
    assert not resources(app, "AWS::SecretsManager::Secret")


def test_fargate_alb_forwards_the_rest_api_without_the_browser_sign_in(synthesized) -> None:
    """Machine clients send bearer tokens (checked by the app), so /api/v1 is forwarded by a
    listener rule evaluated before the default authenticate-oidc action."""
    app = synthesized("fargate-alb").app
    listeners = resources(app, "AWS::ElasticLoadBalancingV2::Listener")
    https_id = next(k for k, v in listeners.items() if v["Properties"]["Port"] == 443)
    tg_id, _ = one(app, "AWS::ElasticLoadBalancingV2::TargetGroup")
    _, rule = one(app, "AWS::ElasticLoadBalancingV2::ListenerRule")
    p = rule["Properties"]
    assert p["ListenerArn"] == {"Ref": https_id}
    assert p["Priority"] == 10  # rules come before the listener's default action
    assert p["Conditions"] == [
        {"Field": "path-pattern", "PathPatternConfig": {"Values": ["/api/v1", "/api/v1/*"]}}
    ]
    assert p["Actions"] == [{"Type": "forward", "TargetGroupArn": {"Ref": tg_id}}]  # no authenticate-oidc


def test_dev_sign_in_is_explicit_and_serves_no_one(synthesized) -> None:
    """Without oidc the synth fails (test_infra_config); dev_sign_in=true is the explicit
    sandbox: mode dev answers loopback clients only, so behind the ALB the pages serve no one."""
    app = synthesized("fargate-alb-private").app
    task = next(v for k, v in resources(app, "AWS::ECS::TaskDefinition").items() if "WebWebTask" in k)
    env = _env(task["Properties"]["ContainerDefinitions"][0]["Environment"])
    assert env["CAPFC_AUTH_MODE"] == "dev"
    assert not [k for k in env if k.startswith(("CAPFC_AUTH_ISSUER", "CAPFC_API_"))]
    assert not resources(app, "AWS::ElasticLoadBalancingV2::ListenerRule")
    assert not resources(app, "AWS::SecretsManager::Secret")


@pytest.mark.parametrize("variant", ["ecs-express", "apprunner", "fargate-alb"])
def test_no_api_gateway_unless_asked(synthesized, variant: str) -> None:
    assert not [k for k in synthesized(variant).app["Resources"] if k.startswith("ApiGateway")]


@pytest.mark.parametrize(
    ("variant", "audience", "upstream"),
    [
        ("ecs-express-api", API_AUDIENCE, "Endpoint"),
        ("apprunner-api", "capfc-web", "ServiceUrl"),
    ],
)
def test_api_gateway_checks_the_jwt_and_proxies_the_rest_api(
    synthesized, variant, audience, upstream
) -> None:
    app = synthesized(variant).app
    api_id, api = one(app, "AWS::ApiGatewayV2::Api")
    assert api["Properties"]["ProtocolType"] == "HTTP"
    authz_id, authz = one(app, "AWS::ApiGatewayV2::Authorizer")
    assert authz["Properties"]["AuthorizerType"] == "JWT"
    assert authz["Properties"]["IdentitySource"] == ["$request.header.Authorization"]
    assert authz["Properties"]["JwtConfiguration"] == {
        "Issuer": "https://idp.example.com",
        "Audience": [audience],
    }
    _, route = one(app, "AWS::ApiGatewayV2::Route")  # the only way in: no $default route
    assert route["Properties"]["RouteKey"] == "ANY /api/v1/{proxy+}"
    assert route["Properties"]["AuthorizationType"] == "JWT"
    assert route["Properties"]["AuthorizerId"] == {"Ref": authz_id}
    _, integ = one(app, "AWS::ApiGatewayV2::Integration")
    i = integ["Properties"]
    assert (i["IntegrationType"], i["IntegrationMethod"]) == ("HTTP_PROXY", "ANY")
    uri = json.dumps(i["IntegrationUri"])
    assert uri.startswith('{"Fn::Join": ["", ["https://", ') and uri.endswith('"/api/v1/{proxy}"]]}')
    assert f'["WebServiceDF29B54C", "{upstream}"]' in uri  # the web tier's own URL
    _, stage = one(app, "AWS::ApiGatewayV2::Stage")
    st = stage["Properties"]
    assert (st["StageName"], st["AutoDeploy"]) == ("$default", True)
    assert st["DefaultRouteSettings"] == {"ThrottlingBurstLimit": 100, "ThrottlingRateLimit": 50}
    log_id = st["AccessLogSettings"]["DestinationArn"]["Fn::GetAtt"][0]
    assert app["Resources"][log_id]["Type"] == "AWS::Logs::LogGroup"
    fields = json.loads(st["AccessLogSettings"]["Format"])
    assert {"requestId", "status", "routeKey", "authorizerError", "integrationStatus"} <= set(fields)
    assert "Authorization" not in st["AccessLogSettings"]["Format"]  # tokens are never logged
    outputs = {k: render(v["Value"]) for k, v in app["Outputs"].items()}
    assert any(v == f"${{{api_id}.ApiEndpoint}}/api/v1/" for v in outputs.values()), outputs
    # the app checks each token again, for the same audience
    _, svc = one(
        app, "AWS::ECS::ExpressGatewayService" if "express" in variant else "AWS::AppRunner::Service"
    )
    p = svc["Properties"]
    pairs = (
        p["PrimaryContainer"]["Environment"]
        if "express" in variant
        else p["SourceConfiguration"]["ImageRepository"]["ImageConfiguration"]["RuntimeEnvironmentVariables"]
    )
    assert _env(pairs)["CAPFC_API_AUDIENCE"] == audience


def test_fargate_alb_private_ingress_is_an_internal_alb_open_to_the_vpc_only(synthesized) -> None:
    app = synthesized("fargate-alb-private").app
    _, lb = one(app, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert lb["Properties"]["Scheme"] == "internal"
    alb_sg = lb["Properties"]["SecurityGroups"][0]["Fn::GetAtt"][0]
    rules = app["Resources"][alb_sg]["Properties"]["SecurityGroupIngress"]
    assert {r["CidrIp"] for r in rules} == {"10.42.0.0/16"}


def test_alb_logs_are_allowed_into_the_log_bucket(synthesized) -> None:
    data = synthesized("fargate-alb").data
    policies = [
        s
        for p in resources(data, "AWS::S3::BucketPolicy").values()
        for s in p["Properties"]["PolicyDocument"]["Statement"]
        if s.get("Sid") == "AlbAccessLogs"
    ]
    assert len(policies) == 1
    # eu-west-1's Elastic Load Balancing account
    assert "156460612806" in render(policies[0]["Principal"]["AWS"])
    assert render(as_list(policies[0]["Resource"])[0]).endswith("/alb/AWSLogs/123456789012/*")


@pytest.mark.parametrize("variant", ["ecs-express", "apprunner", "fargate-alb"])
def test_celery_worker_runs_beside_every_web_tier(synthesized, variant: str) -> None:
    """Background callbacks are run by ``celery -A app.worker worker`` from the same image, on
    the same Valkey and store, reading (and holding a read lease on the run it loads; README
    "Several web instances")."""
    app = synthesized(variant).app
    redis_id, _ = one(app, "AWS::ElastiCache::ReplicationGroup")
    tid, task = next(
        (k, v) for k, v in resources(app, "AWS::ECS::TaskDefinition").items() if "WebWorkerTask" in k
    )
    (container,) = task["Properties"]["ContainerDefinitions"]
    assert container["Command"] == [
        "celery",
        "-A",
        "app.worker",
        "worker",
        "--loglevel=INFO",
        "--concurrency=2",
    ]
    _assert_web_env(_env(container["Environment"]), redis_id)
    _assert_web_store_access(app, role_of(app, tid), "worker")
    services = [
        v["Properties"]
        for v in resources(app, "AWS::ECS::Service").values()
        if v["Properties"]["TaskDefinition"] == {"Ref": tid}
    ]
    assert len(services) == 1 and services[0]["LaunchType"] == "FARGATE"
    assert services[0]["DesiredCount"] == 1
    sgs = services[0]["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"]
    assert any("WebWebSecurityGroup" in sg["Fn::GetAtt"][0] for sg in sgs)  # the one Valkey admits


START_CHECK = (
    "from forecasting.settings import load_settings; from app.auth import check_config; "
    "s = load_settings(); check_config(s); print(s.auth_mode)"
)


@pytest.mark.parametrize("variant", ["ecs-express", "apprunner", "fargate-alb", "fargate-alb-private"])
def test_the_stacks_sign_in_settings_let_the_web_app_start(synthesized, variant: str) -> None:
    """The names the stack sets are the ones the app reads: with the container's environment
    (secrets filled in as the platform injects them, the ALB's ARN as it will be once
    deployed), forecasting.settings loads and app.auth.check_config (the web start's gate)
    accepts the sign-in configuration, in a process of its own."""
    app = synthesized(variant).app
    if variant.startswith("fargate-alb"):
        task = next(v for k, v in resources(app, "AWS::ECS::TaskDefinition").items() if "WebWebTask" in k)
        container = task["Properties"]["ContainerDefinitions"][0]
        env, secrets = _env(container["Environment"]), container.get("Secrets", [])
    elif variant == "ecs-express":
        c = one(app, "AWS::ECS::ExpressGatewayService")[1]["Properties"]["PrimaryContainer"]
        env, secrets = _env(c["Environment"]), c["Secrets"]
    else:
        svc = one(app, "AWS::AppRunner::Service")[1]["Properties"]
        ic = svc["SourceConfiguration"]["ImageRepository"]["ImageConfiguration"]
        env, secrets = _env(ic["RuntimeEnvironmentVariables"]), ic["RuntimeEnvironmentSecrets"]
    if "CAPFC_AUTH_ALB_ARN" in env:
        env["CAPFC_AUTH_ALB_ARN"] = (
            "arn:aws:elasticloadbalancing:eu-west-1:123456789012:loadbalancer/app/capfc/0123456789abcdef"
        )
    env.update({s["Name"]: "x" * 64 for s in secrets})
    base = {k: v for k, v in os.environ.items() if not k.startswith("CAPFC_")}
    proc = subprocess.run(
        [sys.executable, "-c", START_CHECK],
        cwd=REPO,
        env={**base, **env, "PYTHONPATH": str(REPO)},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    expected = {"fargate-alb": "alb", "fargate-alb-private": "dev"}.get(variant, "oidc")
    assert proc.stdout.strip().splitlines()[-1] == expected
