"""The one container image every entry point runs: built from the repo's Dockerfile, or given.

Why both: ``cdk deploy`` builds and pushes the Dockerfile as an asset (the CLI runs Docker
while publishing; ``synth`` only stages the build context, so it needs no Docker engine). CI
that has already built and pushed the image, and the tests, pass ``-c image_uri=…`` instead,
which skips the asset entirely and pins the exact digest that was tested.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from aws_cdk import aws_ecr as ecr
from aws_cdk import aws_ecr_assets as ecr_assets
from aws_cdk import aws_ecs as ecs
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from constructs import Construct

from .config import Config

REPO_ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Image:
    """One image, usable by Lambda, ECS and App Runner."""

    repository: ecr.IRepository
    tag_or_digest: str
    uri: str
    asset: ecr_assets.DockerImageAsset | None = None

    def lambda_code(self, handler: str) -> lambda_.DockerImageCode:
        """The image as a Lambda function: awslambdaric as entry point, the handler as command."""
        return lambda_.DockerImageCode.from_ecr(
            self.repository,
            tag_or_digest=self.tag_or_digest,
            entrypoint=["python", "-m", "awslambdaric"],
            cmd=[handler],
        )

    def container_image(self) -> ecs.ContainerImage:
        if self.asset is not None:
            return ecs.ContainerImage.from_docker_image_asset(self.asset)
        return ecs.ContainerImage.from_ecr_repository(self.repository, self.tag_or_digest)

    def grant_pull(self, grantee: iam.IGrantable) -> None:
        self.repository.grant_pull(grantee)


def image(scope: Construct, config: Config) -> Image:
    """The configured image: an existing ECR URI (``image_uri``) or the repo's Dockerfile as an asset."""
    if config.image is not None:
        ref = config.image
        repo = ecr.Repository.from_repository_attributes(
            scope,
            "ImageRepository",
            repository_arn=f"arn:aws:ecr:{ref.region}:{ref.account}:repository/{ref.repository}",
            repository_name=ref.repository,
        )
        return Image(repo, ref.tag_or_digest, ref.uri)
    asset = ecr_assets.DockerImageAsset(
        scope,
        "Image",
        directory=str(REPO_ROOT),
        file="Dockerfile",
        platform=ecr_assets.Platform.LINUX_AMD64,
        # The build context is what the repo's .dockerignore leaves (CDK applies it): no .venv,
        # data, tests or infra, so staging the asset at synth copies only the image's sources.
    )
    return Image(asset.repository, asset.image_tag, asset.image_uri, asset)
