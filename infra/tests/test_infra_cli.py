"""The real entry points: ``cdk synth`` through the pinned CDK CLI (infra/node_modules, offline),
and the default image path, where the repo's Dockerfile becomes a Docker image asset that synth
stages without a Docker engine (``cdk deploy`` builds and pushes it)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from infra_synth import CERT, INFRA, OIDC, REPO

CDK = INFRA / "node_modules" / ".bin" / "cdk"


def test_asset_variant_stages_the_repo_dockerfile_for_every_entry_point(synthesized) -> None:
    s = synthesized("asset")
    assets = json.loads((s.outdir / "CapfcApp.assets.json").read_text())
    images = assets["dockerImages"]
    assert len(images) == 1, "one image for the Lambdas, the batch task and the web tier"
    ((asset_hash, image),) = images.items()
    source = image["source"]
    assert source["dockerFile"] == "Dockerfile" and source["platform"] == "linux/amd64"
    staged = s.outdir / source["directory"]
    assert (staged / "Dockerfile").read_text() == (REPO / "Dockerfile").read_text()
    # .dockerignore applies: the context carries the image's sources, not tests, data or infra.
    assert (staged / "forecasting").is_dir() and (staged / "app").is_dir()
    assert not any((staged / p).exists() for p in ("tests", "infra", ".venv", "data", "benchmarks"))
    app = s.app
    uris = {
        json.dumps(fn["Properties"]["Code"]["ImageUri"])
        for fn in app["Resources"].values()
        if fn["Type"] == "AWS::Lambda::Function" and "ImageUri" in fn["Properties"].get("Code", {})
    }
    assert len(uris) == 1 and asset_hash in uris.pop()
    express = next(v for v in app["Resources"].values() if v["Type"] == "AWS::ECS::ExpressGatewayService")
    assert asset_hash in json.dumps(express["Properties"]["PrimaryContainer"]["Image"])


def _cdk_synth(out: Path, *context: str) -> subprocess.CompletedProcess:
    assert CDK.exists(), "run scripts/ensure-infra.sh (npm ci in infra/) first"
    env = {
        **os.environ,
        "CDK_DISABLE_CLI_TELEMETRY": "true",
        "CDK_DEFAULT_ACCOUNT": "123456789012",
        "CDK_DEFAULT_REGION": "eu-west-1",
        "JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION": "1",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    args = [a for c in context for a in ("-c", c)]
    return subprocess.run(
        [str(CDK), "synth", "--quiet", "--no-notices", "--no-version-reporting", "--output", str(out), *args],
        cwd=INFRA,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.mark.slow
def test_cdk_cli_synthesizes_the_app_offline(tmp_path: Path) -> None:
    out = tmp_path / "cdk.out"
    r = _cdk_synth(
        out,
        "web_tier=fargate-alb",
        "image_uri=123456789012.dkr.ecr.eu-west-1.amazonaws.com/capfc:cli",
        f"certificate_arn={CERT}",
        "oidc=" + json.dumps(OIDC),
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    template = json.loads((out / "CapfcApp.template.json").read_text())
    types = {v["Type"] for v in template["Resources"].values()}
    assert "AWS::ElasticLoadBalancingV2::LoadBalancer" in types
    assert (out / "CapfcData.template.json").exists()


@pytest.mark.slow
def test_cdk_cli_refuses_a_web_tier_without_sign_in(tmp_path: Path) -> None:
    """``cdk synth`` with cdk.json's defaults alone (no oidc, no dev_sign_in): one line, no stack."""
    out = tmp_path / "cdk.out"
    r = _cdk_synth(out, "image_uri=123456789012.dkr.ecr.eu-west-1.amazonaws.com/capfc:cli")
    assert r.returncode != 0
    assert "capfc infra: context oidc is missing: the web tier (ecs-express) must sign users in" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (out / "CapfcApp.template.json").exists()
