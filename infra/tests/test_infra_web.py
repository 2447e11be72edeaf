"""The web tier, in each of its three forms, and the shared Valkey (Redis protocol) manager."""

from __future__ import annotations

import pytest
from aws_cdk.assertions import Match, Template
from cfn import actions, as_list, one, render, resources, role_of, statements

STORE = "s3://capfc-store-123456789012-eu-west-1/store"


def _env(pairs: list[dict]) -> dict[str, str]:
    return {p["Name"]: render(p["Value"]) for p in pairs}


def _assert_web_env(env: dict[str, str], redis_id: str) -> None:
    assert env["CAPFC_DATA"] == STORE
    assert env["CAPFC_REDIS_URL"] == (
        f"rediss://${{{redis_id}.PrimaryEndPoint.Address}}:${{{redis_id}.PrimaryEndPoint.Port}}/0?ssl_cert_reqs=required"
    )


def _assert_read_only(app: dict, role: str) -> None:
    granted = actions(statements(app, role))
    assert "s3:GetObject" in granted
    assert not granted & {"s3:PutObject", "s3:DeleteObject", "states:StartExecution"}, granted


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
    _assert_web_env(_env(p["PrimaryContainer"]["Environment"]), redis_id)
    # Public ingress: ECS Express puts its (internet-facing) ALB in the subnets it is given.
    assert all("public" in s["Ref"] for s in p["NetworkConfiguration"]["Subnets"])
    _assert_read_only(app, role_of(app, sid))
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
    _assert_web_env(_env(image["ImageConfiguration"]["RuntimeEnvironmentVariables"]), redis_id)
    assert p["NetworkConfiguration"]["EgressConfiguration"]["EgressType"] == "VPC"
    assert p["NetworkConfiguration"]["IngressConfiguration"]["IsPubliclyAccessible"] is True
    assert not resources(app, "AWS::AppRunner::VpcIngressConnection")
    _assert_read_only(app, p["InstanceConfiguration"]["InstanceRoleArn"]["Fn::GetAtt"][0])
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
    _assert_read_only(app, role_of(app, tid))
    # the app verifies the header this ALB signs (app/auth.py): mode, signer, issuer, client
    lb_id, _ = one(app, "AWS::ElasticLoadBalancingV2::LoadBalancer")
    assert env["CAPFC_AUTH_MODE"] == "alb" and env["CAPFC_AUTH_ALB_ARN"] == f"${{{lb_id}}}"
    assert (env["CAPFC_AUTH_ISSUER"], env["CAPFC_AUTH_CLIENT_ID"]) == ("https://idp.example.com", "capfc-web")
    assert env["CAPFC_PROXY_HOPS"] == "1"


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
    the same Valkey and store, reading only (README "Several web instances")."""
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
    _assert_read_only(app, role_of(app, tid))
    services = [
        v["Properties"]
        for v in resources(app, "AWS::ECS::Service").values()
        if v["Properties"]["TaskDefinition"] == {"Ref": tid}
    ]
    assert len(services) == 1 and services[0]["LaunchType"] == "FARGATE"
    assert services[0]["DesiredCount"] == 1
    sgs = services[0]["NetworkConfiguration"]["AwsvpcConfiguration"]["SecurityGroups"]
    assert any("WebWebSecurityGroup" in sg["Fn::GetAtt"][0] for sg in sgs)  # the one Valkey admits
