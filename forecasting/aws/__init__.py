"""The batch job on AWS: Lambda handlers for event-driven runs and the Step Functions machine.

``handlers.trigger`` takes an S3 "Object Created" event (through EventBridge) or an
EventBridge Scheduler invocation and either runs the batch inside the Lambda (small fleets) or
starts the state machine in ``statemachine.asl.json`` (Plan → Calibrate → Map(shard) → Publish),
whose tasks are ``handlers.plan``, ``handlers.calibrate``, ``handlers.shard`` and ``handlers.publish``. boto3 is imported
only when a handler needs it; nothing here imports Dash.
"""

from __future__ import annotations

from pathlib import Path

STATE_MACHINE_DEFINITION = Path(__file__).with_name("statemachine.asl.json")
# The placeholders of the definition (CDK: DefinitionBody.from_string + definition_substitutions).
DEFINITION_PLACEHOLDERS = (
    "PlanFunctionArn",
    "CalibrateFunctionArn",
    "ShardFunctionArn",
    "PublishFunctionArn",
)
