"""The web tier, one of three (context ``web_tier``), all running the same image with gunicorn on 8080.

- ``apprunner``: App Runner service (closed to new AWS customers since 30 Apr 2026; existing
  customers keep it). Egress through a VPC connector to reach Redis; private ingress through an
  App Runner VPC ingress connection and an interface endpoint.
- ``ecs-express``: ECS Express Mode (``AWS::ECS::ExpressGatewayService``, L1 only): ECS creates
  and runs the ALB, target group and scaling. Private subnets give an internal ALB.
- ``fargate-alb``: a Fargate service behind an ALB of our own: HTTPS with an ACM certificate,
  OIDC sign-in on the listener (``authenticate-oidc``), access logs, internal when private.

Sign-in on every tier (context ``oidc``; README "Deploy on AWS"): the ALB signs browsers in and
the app verifies its header (``CAPFC_AUTH_MODE=alb``); App Runner and ECS Express have no
listener of ours, so the app signs users in itself (``CAPFC_AUTH_MODE=oidc``) with the client
secret and a session-signing key that the container receives from Secrets Manager, never in
plain environment. The REST API (``/api/v1/*``, same server) takes OIDC bearer tokens that the
app checks (audience ``CAPFC_API_AUDIENCE``): behind the ALB a listener rule forwards that path
without the browser sign-in action; the other tiers serve it on their URL, and optionally
through an API Gateway HTTP API with a JWT authorizer (``api.py``).

All three: ``CAPFC_DATA`` (the store), ``CAPFC_REDIS_URL`` (ElastiCache Valkey, TLS, for the
background-callback manager shared by every instance), health check ``/healthz``, read access
to the store; the only writes are records (``access.WEB_APP``: decisions, sign-offs, read leases).
"""

from __future__ import annotations

from aws_cdk import CfnOutput, Duration, Fn, RemovalPolicy, SecretValue
from aws_cdk import aws_apprunner as apprunner
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_elasticache as elasticache
from aws_cdk import aws_elasticloadbalancingv2 as elbv2
from aws_cdk import aws_iam as iam
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from .access import WEB_APP, WORKER, grant_store
from .batch import _s3_findings, retention_for
from .config import Config, ConfigError
from .image import Image
from .nag import ack, ack_ecr_pull

PORT = 8080
HEALTH_PATH = "/healthz"
API_PATHS = ("/api/v1", "/api/v1/*")  # the REST API (app/api), bearer tokens checked by the app
API_RULE_PRIORITY = 10
REDIS_PORT = 6380  # not the default 6379 (AwsSolutions-AEC5)
VPC_CIDR = "10.42.0.0/16"  # a literal, so security-group rules (and cdk-nag) see the real range


class Web(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        config: Config,
        image: Image,
        bucket: s3.IBucket,
        log_bucket: s3.IBucket,
        vpc: ec2.IVpc,
        cluster: ecs.Cluster,
        app_subnets: ec2.SubnetSelection,
        worker_subnets: ec2.SubnetSelection,
    ) -> None:
        super().__init__(scope, construct_id)
        self.config = config
        self.vpc = vpc
        self.security_group = ec2.SecurityGroup(
            self, "WebSecurityGroup", vpc=vpc, description="capfc web tasks", allow_all_outbound=True
        )
        self.redis_url = self._redis(vpc)
        self.environment = {
            "CAPFC_DATA": f"s3://{bucket.bucket_name}/{config.store_prefix}",
            "CAPFC_REDIS_URL": self.redis_url,
            "CAPFC_LOG_LEVEL": "INFO",
            "CAPFC_PROXY_HOPS": "1",  # one proxy in front on every tier (ALB, App Runner's, Express's ALB)
            "PORT": str(PORT),
        }
        self.log_group = logs.LogGroup(
            self,
            "WebLogs",
            retention=retention_for(config.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        self.task_role = iam.Role(
            self,
            "WebTaskRole",
            assumed_by=iam.ServicePrincipal(
                "tasks.apprunner.amazonaws.com"
                if config.web_tier == "apprunner"
                else "ecs-tasks.amazonaws.com"
            ),
            description="capfc web: read the store; write only decisions, sign-offs, read leases",
        )
        grant_store(self.task_role, bucket, config.store_prefix, access=WEB_APP)
        ack(
            self.task_role,
            "IAM5",
            "Object-level S3 actions need object ARNs: the wildcard is the key suffix under one store "
            "prefix (metrics/, inventory/, runs/, athena-manifests/ read; decisions/ create; signoffs/, "
            "readers/ write), never the bucket.",
            *_s3_findings(self, config.store_prefix),
        )
        self.sign_in_environment, self.secrets = self._sign_in()
        self.url: str
        self.load_balancer: elbv2.ApplicationLoadBalancer | None = None
        self.service_name: str | None = None
        if config.web_tier == "apprunner":
            self._apprunner(image, app_subnets)
        elif config.web_tier == "ecs-express":
            self._express(image, cluster, app_subnets)
        else:
            self._fargate_alb(image, cluster, app_subnets, log_bucket)
        self._worker(image, cluster, bucket, worker_subnets)
        CfnOutput(self, "Url", value=self.url)

    # ------------------------------------------------------------------ Celery worker
    def _worker(
        self, image: Image, cluster: ecs.Cluster, bucket: s3.IBucket, subnets: ec2.SubnetSelection
    ) -> None:
        """The Celery worker that runs the background callbacks (re-forecasts) the web instances
        queue in Valkey: the same image and settings, ``celery -A app.worker worker``, on Fargate
        beside any of the three web tiers, scaled on CPU."""
        role = iam.Role(
            self,
            "WorkerTaskRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="capfc Celery worker: read the store (re-forecasts); write only read leases",
        )
        grant_store(role, bucket, self.config.store_prefix, access=WORKER)
        ack(
            role,
            "IAM5",
            "Object-level S3 actions need object ARNs: the wildcard is the key suffix under one store "
            "prefix (metrics/, inventory/, runs/, athena-manifests/ read; readers/ write: read leases), "
            "never the bucket.",
            *_s3_findings(self, self.config.store_prefix),
        )
        task = ecs.FargateTaskDefinition(
            self,
            "WorkerTask",
            cpu=self.config.worker_cpu,
            memory_limit_mib=self.config.worker_memory_mib,
            task_role=role,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        env = {k: v for k, v in self.environment.items() if k != "PORT"}
        task.add_container(
            "worker",
            image=image.container_image(),
            command=["celery", "-A", "app.worker", "worker", "--loglevel=INFO", "--concurrency=2"],
            environment=env,
            logging=ecs.LogDrivers.aws_logs(stream_prefix="worker", log_group=self.log_group),
        )
        ack_ecr_pull(task.obtain_execution_role())
        ack(
            task,
            "ECS2",
            "The environment holds only non-secret settings (store URI, Valkey endpoint without "
            "credentials, log level); there are no secrets.",
        )
        self.worker = ecs.FargateService(
            self,
            "Worker",
            cluster=cluster,
            task_definition=task,
            desired_count=self.config.worker_min_tasks,
            vpc_subnets=subnets,
            assign_public_ip=subnets.subnet_type == ec2.SubnetType.PUBLIC,
            security_groups=[self.security_group],
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            min_healthy_percent=100,
        )
        scaling = self.worker.auto_scale_task_count(
            min_capacity=self.config.worker_min_tasks, max_capacity=self.config.worker_max_tasks
        )
        scaling.scale_on_cpu_utilization("Cpu", target_utilization_percent=60)

    # ------------------------------------------------------------------ sign-in
    def _sign_in(self) -> tuple[dict[str, str], dict[str, tuple[secretsmanager.ISecret, str | None]]]:
        """The web container's sign-in settings: plain environment, and secrets as
        ``{env name: (secret, JSON field or None)}`` that the container platform injects.

        ``fargate-alb`` (mode ``alb``) gets its ALB-specific settings in ``_fargate_alb`` and
        needs no secret in the container (the ALB holds the client secret); ``dev_sign_in`` sets
        ``dev``, which serves loopback clients only, i.e. no one behind a load balancer.
        """
        config = self.config
        if config.oidc is None:
            return {"CAPFC_AUTH_MODE": "dev"}, {}
        o = config.oidc
        env = {"CAPFC_AUTH_ISSUER": o.issuer, "CAPFC_AUTH_CLIENT_ID": o.client_id}
        if config.api_audience:
            env["CAPFC_API_AUDIENCE"] = config.api_audience
        for key, value in (
            ("CAPFC_AUTH_GROUPS_CLAIM", o.groups_claim),
            ("CAPFC_AUTH_ROLE_GROUPS", o.role_groups),
            ("CAPFC_AUTH_LOGOUT_URL", o.logout_url),
        ):
            if value:
                env[key] = value
        if not config.in_app_sign_in:
            return env, {}
        env["CAPFC_AUTH_MODE"] = "oidc"
        if o.scopes:
            env["CAPFC_AUTH_SCOPES"] = o.scopes
        client_secret = secretsmanager.Secret.from_secret_complete_arn(
            self, "OidcClientSecret", o.client_secret
        )
        session_secret = secretsmanager.Secret(
            self,
            "SessionSecret",
            description="capfc web: the key signing the sign-in session cookie (CAPFC_SESSION_SECRET)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=64, exclude_punctuation=True
            ),
            removal_policy=RemovalPolicy.DESTROY,
        )
        ack(
            session_secret,
            "SMG4",
            "The session-signing key is read by the web containers at start only, so a scheduled "
            "rotation would not reach running tasks and would sign every user out at the next start; "
            "replace it on purpose (put-secret-value, then redeploy) to end all sessions.",
        )
        self.session_secret = session_secret
        self.client_secret = client_secret
        return env, {
            "CAPFC_AUTH_CLIENT_SECRET": (client_secret, "client_secret"),
            "CAPFC_SESSION_SECRET": (session_secret, None),
        }

    def _secret_refs(self) -> list[tuple[str, str]]:
        """(env name, ``valueFrom``) pairs: the secret's ARN, with ``:field::`` for a JSON field
        (the form ECS and App Runner both take)."""
        return [
            (name, f"{secret.secret_arn}:{field}::" if field else secret.secret_arn)
            for name, (secret, field) in self.secrets.items()
        ]

    def _grant_secrets(self, role: iam.IRole) -> None:
        """Only the role that fetches them for the container (ECS: the execution role; App
        Runner: the instance role) may read the sign-in secrets, and only these."""
        for secret, _ in self.secrets.values():
            secret.grant_read(role)

    # ------------------------------------------------------------------ shared manager
    def _redis(self, vpc: ec2.IVpc) -> str:
        """ElastiCache Valkey (Redis protocol) for the background-callback manager, TLS required."""
        sg = ec2.SecurityGroup(
            self, "RedisSecurityGroup", vpc=vpc, description="capfc Valkey", allow_all_outbound=False
        )
        sg.add_ingress_rule(self.security_group, ec2.Port.tcp(REDIS_PORT), "web tasks to Valkey")
        subnets = elasticache.CfnSubnetGroup(
            self,
            "RedisSubnets",
            description="capfc Valkey subnets",
            subnet_ids=vpc.select_subnets(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED).subnet_ids,
        )
        replicas = self.config.redis_replicas
        self.redis = elasticache.CfnReplicationGroup(
            self,
            "Redis",
            replication_group_description="capfc background-callback manager (Celery broker and results)",
            engine="valkey",
            engine_version="8.0",
            cache_node_type=self.config.redis_node_type,
            num_cache_clusters=1 + replicas,
            automatic_failover_enabled=replicas > 0,
            multi_az_enabled=replicas > 0,
            port=REDIS_PORT,
            at_rest_encryption_enabled=True,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            cache_subnet_group_name=subnets.ref,
            security_group_ids=[sg.security_group_id],
            snapshot_retention_limit=0,
        )
        ack(
            self.redis,
            "AEC6",
            "No AUTH token: Celery would need it inside CAPFC_REDIS_URL, i.e. in plain task environment. "
            "Access is instead limited to the web tasks' security group in isolated subnets, with TLS required.",
        )
        if replicas == 0:
            ack(
                self.redis,
                "AEC4",
                "Single node by choice (context redis_replicas=0): it holds only "
                "short-lived background-job state, which a restart loses at no cost to plans.",
            )
        ack(
            self.redis,
            "AEC3",
            "Encryption at rest and in transit are both enabled (TLS required); the rule does not read "
            "the Valkey engine's settings.",
        )
        host = self.redis.attr_primary_end_point_address
        port = self.redis.attr_primary_end_point_port
        return f"rediss://{host}:{port}/0?ssl_cert_reqs=required"

    # ------------------------------------------------------------------ App Runner
    def _apprunner(self, image: Image, subnets: ec2.SubnetSelection) -> None:
        access_role = iam.Role(
            self,
            "AppRunnerAccessRole",
            assumed_by=iam.ServicePrincipal("build.apprunner.amazonaws.com"),
            description="App Runner pulls the image from ECR",
        )
        image.grant_pull(access_role)
        ack_ecr_pull(access_role)
        self._grant_secrets(self.task_role)
        connector = apprunner.CfnVpcConnector(
            self,
            "VpcConnector",
            subnets=self.vpc.select_subnets(**_selection(subnets)).subnet_ids,
            security_groups=[self.security_group.security_group_id],
        )
        scaling = apprunner.CfnAutoScalingConfiguration(
            self,
            "Scaling",
            min_size=self.config.web_min_tasks,
            max_size=self.config.web_max_tasks,
            max_concurrency=80,
        )
        service = apprunner.CfnService(
            self,
            "Service",
            service_name="capfc-web",
            source_configuration=apprunner.CfnService.SourceConfigurationProperty(
                auto_deployments_enabled=False,
                authentication_configuration=apprunner.CfnService.AuthenticationConfigurationProperty(
                    access_role_arn=access_role.role_arn
                ),
                image_repository=apprunner.CfnService.ImageRepositoryProperty(
                    image_identifier=image.uri,
                    image_repository_type="ECR",
                    image_configuration=apprunner.CfnService.ImageConfigurationProperty(
                        port=str(PORT),
                        runtime_environment_variables=[
                            apprunner.CfnService.KeyValuePairProperty(name=k, value=v)
                            for k, v in {**self.environment, **self.sign_in_environment}.items()
                            if k != "PORT"
                        ],
                        runtime_environment_secrets=[
                            apprunner.CfnService.KeyValuePairProperty(name=k, value=v)
                            for k, v in self._secret_refs()
                        ]
                        or None,
                    ),
                ),
            ),
            instance_configuration=apprunner.CfnService.InstanceConfigurationProperty(
                cpu=_apprunner_cpu(self.config.web_cpu),
                memory=_apprunner_memory(self.config.web_memory_mib),
                instance_role_arn=self.task_role.role_arn,
            ),
            health_check_configuration=apprunner.CfnService.HealthCheckConfigurationProperty(
                protocol="HTTP",
                path=HEALTH_PATH,
                interval=10,
                timeout=5,
                healthy_threshold=1,
                unhealthy_threshold=3,
            ),
            network_configuration=apprunner.CfnService.NetworkConfigurationProperty(
                egress_configuration=apprunner.CfnService.EgressConfigurationProperty(
                    egress_type="VPC", vpc_connector_arn=connector.attr_vpc_connector_arn
                ),
                ingress_configuration=apprunner.CfnService.IngressConfigurationProperty(
                    is_publicly_accessible=not self.config.private_ingress
                ),
            ),
            auto_scaling_configuration_arn=scaling.attr_auto_scaling_configuration_arn,
        )
        # The roles' policies must exist before App Runner first pulls and starts the image.
        service.node.add_dependency(access_role, self.task_role)
        self.apprunner_service = service
        self.service_name = "capfc-web"
        self.url = "https://" + service.attr_service_url
        if self.config.private_ingress:
            endpoint = ec2.InterfaceVpcEndpoint(
                self,
                "AppRunnerRequestsEndpoint",
                vpc=self.vpc,
                service=ec2.InterfaceVpcEndpointAwsService.APP_RUNNER_REQUESTS,
                subnets=ec2.SubnetSelection(subnet_type=ec2.SubnetType.PRIVATE_ISOLATED),
                private_dns_enabled=False,
                open=False,  # the rule below, with the literal VPC range
            )
            endpoint.connections.allow_default_port_from(ec2.Peer.ipv4(VPC_CIDR), "HTTPS from the VPC")
            ingress = apprunner.CfnVpcIngressConnection(
                self,
                "PrivateIngress",
                service_arn=service.attr_service_arn,
                ingress_vpc_configuration=apprunner.CfnVpcIngressConnection.IngressVpcConfigurationProperty(
                    vpc_id=self.vpc.vpc_id, vpc_endpoint_id=endpoint.vpc_endpoint_id
                ),
            )
            self.url = "https://" + ingress.attr_domain_name

    # ------------------------------------------------------------------ ECS Express
    def _express(self, image: Image, cluster: ecs.Cluster, subnets: ec2.SubnetSelection) -> None:
        infra_role = iam.Role(
            self,
            "ExpressInfrastructureRole",
            assumed_by=iam.ServicePrincipal("ecs.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name(
                    "service-role/AmazonECSInfrastructureRoleforExpressGatewayServices"
                )
            ],
            description="ECS Express Mode manages the ALB, target groups and scaling for the web service",
        )
        ack(
            infra_role,
            "IAM4",
            "AWS's own policy for ECS Express Mode's infrastructure role: it is what ECS needs to create "
            "and update the load balancer, target groups and scaling it manages, and AWS keeps it current.",
            "Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AmazonECSInfrastructureRoleforExpressGatewayServices",
        )
        execution_role = iam.Role(
            self,
            "ExpressExecutionRole",
            assumed_by=iam.ServicePrincipal("ecs-tasks.amazonaws.com"),
            description="ECS pulls the image and writes the web logs",
        )
        image.grant_pull(execution_role)
        self.log_group.grant_write(execution_role)
        ack_ecr_pull(execution_role)
        self._grant_secrets(execution_role)
        self.execution_role = execution_role
        service = ecs.CfnExpressGatewayService(
            self,
            "Service",
            infrastructure_role_arn=infra_role.role_arn,
            execution_role_arn=execution_role.role_arn,
            task_role_arn=self.task_role.role_arn,
            cluster=cluster.cluster_name,
            cpu=str(self.config.web_cpu),
            memory=str(self.config.web_memory_mib),
            health_check_path=HEALTH_PATH,
            network_configuration=ecs.CfnExpressGatewayService.ExpressGatewayServiceNetworkConfigurationProperty(
                subnets=self.vpc.select_subnets(**_selection(subnets)).subnet_ids,
                security_groups=[self.security_group.security_group_id],
            ),
            primary_container=ecs.CfnExpressGatewayService.ExpressGatewayContainerProperty(
                image=image.uri,
                container_port=PORT,
                environment=[
                    ecs.CfnExpressGatewayService.KeyValuePairProperty(name=k, value=v)
                    for k, v in {**self.environment, **self.sign_in_environment}.items()
                ],
                secrets=[
                    ecs.CfnExpressGatewayService.SecretProperty(name=k, value_from=v)
                    for k, v in self._secret_refs()
                ]
                or None,
                aws_logs_configuration=ecs.CfnExpressGatewayService.ExpressGatewayServiceAwsLogsConfigurationProperty(
                    log_group=self.log_group.log_group_name, log_stream_prefix="web"
                ),
            ),
            scaling_target=ecs.CfnExpressGatewayService.ExpressGatewayScalingTargetProperty(
                auto_scaling_metric="AVERAGE_CPU",
                auto_scaling_target_value=60,
                min_task_count=self.config.web_min_tasks,
                max_task_count=self.config.web_max_tasks,
            ),
        )
        # The roles' policies must exist before ECS creates the ALB and starts the first tasks.
        service.node.add_dependency(infra_role, execution_role, self.task_role)
        self.express_service = service
        self.service_name = service.attr_service_arn
        # The endpoint's documented form is a host name; strip a scheme should it carry one.
        self.url = "https://" + Fn.join("", Fn.split("https://", service.attr_endpoint))

    # ------------------------------------------------------------------ Fargate + ALB
    def _fargate_alb(
        self, image: Image, cluster: ecs.Cluster, subnets: ec2.SubnetSelection, log_bucket: s3.IBucket
    ) -> None:
        config = self.config
        task = ecs.FargateTaskDefinition(
            self,
            "WebTask",
            cpu=config.web_cpu,
            memory_limit_mib=config.web_memory_mib,
            task_role=self.task_role,
            runtime_platform=ecs.RuntimePlatform(
                cpu_architecture=ecs.CpuArchitecture.X86_64,
                operating_system_family=ecs.OperatingSystemFamily.LINUX,
            ),
        )
        web = task.add_container(
            "web",
            image=image.container_image(),
            port_mappings=[ecs.PortMapping(container_port=PORT)],
            environment={**self.environment, **self.sign_in_environment},
            logging=ecs.LogDrivers.aws_logs(stream_prefix="web", log_group=self.log_group),
        )
        ack_ecr_pull(task.obtain_execution_role())
        ack(
            task,
            "ECS2",
            "The environment holds only non-secret settings (store URI, Valkey endpoint without "
            "credentials, log level, port, issuer and client id); the OIDC client secret stays in "
            "Secrets Manager on the ALB.",
        )
        service = ecs.FargateService(
            self,
            "Service",
            cluster=cluster,
            task_definition=task,
            desired_count=config.web_min_tasks,
            vpc_subnets=subnets,
            assign_public_ip=subnets.subnet_type == ec2.SubnetType.PUBLIC,
            security_groups=[self.security_group],
            circuit_breaker=ecs.DeploymentCircuitBreaker(rollback=True),
            min_healthy_percent=100,
        )
        scaling = service.auto_scale_task_count(
            min_capacity=config.web_min_tasks, max_capacity=config.web_max_tasks
        )
        scaling.scale_on_cpu_utilization("Cpu", target_utilization_percent=60)

        alb_sg = ec2.SecurityGroup(
            self, "AlbSecurityGroup", vpc=self.vpc, description="capfc web ALB", allow_all_outbound=False
        )
        peer = ec2.Peer.ipv4(VPC_CIDR) if config.private_ingress else ec2.Peer.any_ipv4()
        https = bool(config.certificate_arn)
        alb_sg.add_ingress_rule(peer, ec2.Port.tcp(443 if https else 80), "web users")
        if https:
            alb_sg.add_ingress_rule(peer, ec2.Port.tcp(80), "redirect to HTTPS")
        if not config.private_ingress:
            ack(
                alb_sg,
                "EC23",
                "The web entry point is public by choice (context private_ingress=false); "
                "the ALB admits HTTPS (and HTTP only to redirect), and sign-in is OIDC on the listener.",
            )
        alb = elbv2.ApplicationLoadBalancer(
            self,
            "Alb",
            vpc=self.vpc,
            internet_facing=not config.private_ingress,
            security_group=alb_sg,
            vpc_subnets=ec2.SubnetSelection(
                subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS
                if config.private_ingress
                else ec2.SubnetType.PUBLIC
            ),
            drop_invalid_header_fields=True,
        )
        # The log bucket (data stack) grants the regional ELB account; CDK's log_access_logs would
        # try to edit that policy from here, which an imported bucket cannot.
        alb.set_attribute("access_logs.s3.enabled", "true")
        alb.set_attribute("access_logs.s3.bucket", log_bucket.bucket_name)
        alb.set_attribute("access_logs.s3.prefix", "alb")
        self.load_balancer = alb
        target_group = elbv2.ApplicationTargetGroup(
            self,
            "Targets",
            vpc=self.vpc,
            port=PORT,
            protocol=elbv2.ApplicationProtocol.HTTP,
            target_type=elbv2.TargetType.IP,
            targets=[service],
            deregistration_delay=Duration.seconds(30),
            health_check=elbv2.HealthCheck(
                path=HEALTH_PATH, healthy_http_codes="200", interval=Duration.seconds(15)
            ),
        )
        self.target_group = target_group
        alb_sg.add_egress_rule(self.security_group, ec2.Port.tcp(PORT), "ALB to web tasks")
        self.security_group.add_ingress_rule(alb_sg, ec2.Port.tcp(PORT), "from the ALB")
        forward = elbv2.ListenerAction.forward([target_group])
        if https:
            if config.oidc:
                o = config.oidc
                action = elbv2.ListenerAction.authenticate_oidc(
                    issuer=o.issuer,
                    authorization_endpoint=o.authorization_endpoint,
                    token_endpoint=o.token_endpoint,
                    user_info_endpoint=o.user_info_endpoint,
                    client_id=o.client_id,
                    client_secret=SecretValue.secrets_manager(o.client_secret, json_field="client_secret"),
                    scope=o.scopes or "openid email profile",
                    session_timeout=Duration.hours(8),
                    on_unauthenticated_request=elbv2.UnauthenticatedAction.AUTHENTICATE,
                    next=forward,
                )
                # The app verifies the ALB's signed x-amzn-oidc-data on every request (app/auth.py):
                # its signer must be this ALB and its issuer the provider the ALB signs users in with.
                # (issuer, client id, API audience and groups are in sign_in_environment)
                web.add_environment("CAPFC_AUTH_MODE", "alb")
                web.add_environment("CAPFC_AUTH_ALB_ARN", alb.load_balancer_arn)
            else:
                action = forward
            listener = alb.add_listener(
                "Https",
                port=443,
                protocol=elbv2.ApplicationProtocol.HTTPS,
                certificates=[elbv2.ListenerCertificate.from_arn(config.certificate_arn)],
                ssl_policy=elbv2.SslPolicy.RECOMMENDED_TLS,
                default_action=action,
                open=False,
            )
            if config.oidc:
                # The REST API: machine clients cannot follow the browser sign-in, they send an
                # OIDC bearer token that the app checks against the provider's keys. This rule
                # is evaluated before the default action, so /api/v1 is forwarded as it is.
                elbv2.ApplicationListenerRule(
                    self,
                    "ApiRule",
                    listener=listener,
                    priority=API_RULE_PRIORITY,
                    conditions=[elbv2.ListenerCondition.path_patterns(list(API_PATHS))],
                    action=elbv2.ListenerAction.forward([target_group]),
                )
            alb.add_redirect(source_port=80, target_port=443, open=False)
            scheme = "https"
        else:
            alb.add_listener(
                "Http", port=80, protocol=elbv2.ApplicationProtocol.HTTP, default_action=forward, open=False
            )
            scheme = "http"
        self.url = f"{scheme}://{alb.load_balancer_dns_name}"


def _selection(s: ec2.SubnetSelection) -> dict:
    return {"subnet_type": s.subnet_type}


def _apprunner_cpu(units: int) -> str:
    allowed = {256: "0.25 vCPU", 512: "0.5 vCPU", 1024: "1 vCPU", 2048: "2 vCPU", 4096: "4 vCPU"}
    if units not in allowed:
        raise ConfigError(f"context web_cpu={units}: App Runner takes {sorted(allowed)}")
    return allowed[units]


def _apprunner_memory(mib: int) -> str:
    gb = mib / 1024
    if gb not in (0.5, 1, 2, 3, 4, 6, 8, 10, 12):
        raise ConfigError(f"context web_memory_mib={mib}: App Runner takes 512, 1024, 2048 … 12288 MiB")
    return f"{gb:g} GB"
