"""The stateless stack: network, the batch (Lambda, triggers, state machine, Fargate task), the
web tier and its Valkey, alarms and the dashboard. Safe to destroy and redeploy: all state is in
the data stack's bucket.
"""

from __future__ import annotations

from aws_cdk import Acknowledgment, CfnOutput, RemovalPolicy, Stack, Token, Validations
from aws_cdk import aws_ec2 as ec2
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from constructs import Construct

from .api import ApiGateway
from .batch import Batch, retention_for
from .config import Config
from .data_stack import DataStack
from .image import image as make_image
from .monitoring import Monitoring
from .web import VPC_CIDR, Web


class AppStack(Stack):
    def __init__(
        self, scope: Construct, construct_id: str, *, config: Config, data: DataStack, **kwargs
    ) -> None:
        super().__init__(scope, construct_id, **kwargs)
        self.config = config
        # The data stack's buckets by name (no exports): deploy it first, destroy it last.
        self.add_stack_dependency(data)
        store_name, logs_name = config.bucket_names(self.account, self.region)
        store = s3.Bucket.from_bucket_name(self, "Store", store_name)
        log_bucket = s3.Bucket.from_bucket_name(self, "AccessLogs", logs_name)
        account = "<AWS::AccountId>" if Token.is_unresolved(self.account) else self.account
        self.store_arn_rendered = "arn:<AWS::Partition>:s3:::" + config.bucket_names(account, self.region)[0]
        self.vpc = self._vpc()
        self.image = make_image(self, config)
        self.cluster = ecs.Cluster(
            self,
            "Cluster",
            vpc=self.vpc,
            container_insights_v2=ecs.ContainerInsights.ENABLED,
        )
        with_nat = config.nat_gateways > 0
        app_subnets = ec2.SubnetSelection(
            subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS if with_nat else ec2.SubnetType.PUBLIC
        )
        # ECS Express puts its ALB where the tasks are: private subnets give an internal ALB.
        if config.web_tier == "ecs-express" and not config.private_ingress:
            web_subnets = ec2.SubnetSelection(subnet_type=ec2.SubnetType.PUBLIC)
        else:
            web_subnets = app_subnets
        self.batch = Batch(
            self,
            "Batch",
            config=config,
            image=self.image,
            bucket=store,
            cluster=self.cluster,
        )
        self.web = Web(
            self,
            "Web",
            config=config,
            image=self.image,
            bucket=store,
            log_bucket=log_bucket,
            vpc=self.vpc,
            cluster=self.cluster,
            app_subnets=web_subnets,
            worker_subnets=app_subnets,
        )
        self.api = (
            ApiGateway(self, "ApiGateway", config=config, web_url=self.web.url)
            if config.api_gateway
            else None
        )
        self.monitoring = Monitoring(
            self, "Monitoring", config=config, batch=self.batch, web=self.web, api=self.api
        )

        CfnOutput(self, "StateMachineArn", value=self.batch.state_machine.state_machine_arn)
        CfnOutput(self, "TriggerFunctionName", value=self.batch.functions["trigger"].function_name)
        CfnOutput(self, "ReportFunctionName", value=self.batch.functions["report"].function_name)
        CfnOutput(self, "ClusterName", value=self.cluster.cluster_name)
        CfnOutput(self, "BatchTaskDefinitionArn", value=self.batch.task_definition.task_definition_arn)
        CfnOutput(
            self,
            "BatchTaskSubnets",
            value=",".join(self.vpc.select_subnets(subnet_type=app_subnets.subnet_type).subnet_ids),
        )
        CfnOutput(self, "BatchTaskSecurityGroupId", value=self.batch_security_group.security_group_id)
        CfnOutput(self, "AlarmTopicArn", value=self.monitoring.topic.topic_arn)

    @property
    def availability_zones(self) -> list[str]:
        """The two zones used, named from the region: CDK would otherwise look them up in the
        account at synth (a network call); ``<region>a``/``<region>b`` exist in every region."""
        return [f"{self.region}a", f"{self.region}b"]

    def _vpc(self) -> ec2.Vpc:
        """Two AZs: public (ALB, NAT), private with egress (tasks; only with NAT), isolated (Valkey)."""
        config = self.config
        subnets = [ec2.SubnetConfiguration(name="public", subnet_type=ec2.SubnetType.PUBLIC, cidr_mask=24)]
        if config.nat_gateways > 0:
            subnets.append(
                ec2.SubnetConfiguration(
                    name="private", subnet_type=ec2.SubnetType.PRIVATE_WITH_EGRESS, cidr_mask=22
                )
            )
        subnets.append(
            ec2.SubnetConfiguration(
                name="isolated", subnet_type=ec2.SubnetType.PRIVATE_ISOLATED, cidr_mask=24
            )
        )
        vpc = ec2.Vpc(
            self,
            "Vpc",
            ip_addresses=ec2.IpAddresses.cidr(VPC_CIDR),
            availability_zones=self.availability_zones,
            nat_gateways=config.nat_gateways,
            subnet_configuration=subnets,
            gateway_endpoints={
                "S3": ec2.GatewayVpcEndpointOptions(service=ec2.GatewayVpcEndpointAwsService.S3)
            },
        )
        Validations.of(vpc).acknowledge(
            Acknowledgment(
                id="CloudFormation-Validate::W3010",
                reason="The stack is bound to one region (ALB access logs need it), so its two zones are "
                "named, not looked up in the account at synth.",
            )
        )
        flow_logs = logs.LogGroup(
            self,
            "VpcFlowLogs",
            retention=retention_for(config.log_retention_days),
            removal_policy=RemovalPolicy.DESTROY,
        )
        vpc.add_flow_log("FlowLogs", destination=ec2.FlowLogDestination.to_cloud_watch_logs(flow_logs))
        self.batch_security_group = ec2.SecurityGroup(
            self, "BatchTaskSecurityGroup", vpc=vpc, description="capfc batch task: outbound only"
        )
        return vpc
