"""Capacity Forecaster on AWS (CDK): ``build_app`` makes the two stacks from context."""

from __future__ import annotations

from typing import Any

from aws_cdk import App, Environment, Tags

from .app_stack import AppStack
from .config import Config
from .data_stack import DataStack

__all__ = ["AppStack", "Config", "DataStack", "build_app"]


def build_app(
    context: dict[str, Any] | None = None,
    *,
    env: Environment | None = None,
    outdir: str | None = None,
    nag: bool = True,
) -> tuple[App, DataStack, AppStack]:
    """The CDK app: ``CapfcData`` (bucket, Glue, Athena) and ``CapfcApp`` (everything else).

    ``nag`` registers cdk-nag's AwsSolutions pack as a policy-validation plugin, so a synth with
    an unacknowledged finding fails (in ``cdk synth``/``deploy`` and in the tests alike).
    """
    app = App(context=context or {}, outdir=outdir)
    config = Config.from_context(app.node.try_get_context)
    data = DataStack(
        app, "CapfcData", config=config, env=env, description="Capacity Forecaster: store, Glue, Athena"
    )
    stack = AppStack(
        app,
        "CapfcApp",
        config=config,
        data=data,
        env=env,
        description=f"Capacity Forecaster: batch, web tier ({config.web_tier}), alarms",
    )
    for s in (data, stack):
        Tags.of(s).add("project", "capacity-forecaster")
    if nag:
        from aws_cdk import Validations
        from cdk_nag import AwsSolutionsChecks

        Validations.of(app).add_plugins(AwsSolutionsChecks(app))
    return app, data, stack
