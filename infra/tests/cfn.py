"""Small readers over synthesized CloudFormation templates (plain dicts)."""

from __future__ import annotations

import json
from typing import Any


def resources(template: dict, type_: str) -> dict[str, dict]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == type_}


def one(template: dict, type_: str) -> tuple[str, dict]:
    found = resources(template, type_)
    assert len(found) == 1, f"expected one {type_}, found {sorted(found)}"
    return next(iter(found.items()))


def render(value: Any) -> str:
    """A string or Fn::Join as text; intrinsic functions become ${Ref}/${Logical.Attr} markers."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict):
        if "Fn::Join" in value:
            sep, parts = value["Fn::Join"]
            return sep.join(render(p) for p in parts)
        if "Ref" in value:
            return "${" + value["Ref"] + "}"
        if "Fn::GetAtt" in value:
            return "${" + ".".join(value["Fn::GetAtt"]) + "}"
        if "Fn::ImportValue" in value:
            return "${Import:" + render(value["Fn::ImportValue"]) + "}"
    return json.dumps(value, sort_keys=True)


def statements(template: dict, role_logical_id: str) -> list[dict]:
    """Every policy statement attached to one role (inline Policies and AWS::IAM::Policy)."""
    out: list[dict] = []
    role = template["Resources"][role_logical_id]
    for p in role["Properties"].get("Policies", []):
        out += p["PolicyDocument"]["Statement"]
    for pol in resources(template, "AWS::IAM::Policy").values():
        if {"Ref": role_logical_id} in pol["Properties"].get("Roles", []):
            out += pol["Properties"]["PolicyDocument"]["Statement"]
    return out


def as_list(v: Any) -> list:
    return v if isinstance(v, list) else [v]


def actions(stmts: list[dict]) -> set[str]:
    return {a for s in stmts if s.get("Effect", "Allow") == "Allow" for a in as_list(s["Action"])}


def role_of(template: dict, logical_id: str) -> str:
    """Logical id of the role a Lambda function / task definition / service uses."""
    props = template["Resources"][logical_id]["Properties"]
    ref = props.get("Role") or props.get("TaskRoleArn")
    return ref["Fn::GetAtt"][0]


STORE_ARN = "arn:${AWS::Partition}:s3:::capfc-store-123456789012-eu-west-1"


def s3_grants(template: dict, role: str) -> dict[str, set[str]]:
    """S3 action -> the resources granted to a role, rendered, with the store bucket's ARN as 'B'."""
    out: dict[str, set[str]] = {}
    for s in statements(template, role):
        if s.get("Effect", "Allow") != "Allow" or "Condition" in s:
            continue
        for a in as_list(s["Action"]):
            if a.startswith("s3:"):
                out.setdefault(a, set()).update(
                    render(r).replace(STORE_ARN, "B") for r in as_list(s["Resource"])
                )
    return out


def allows(grants: dict[str, set[str]], action: str, key: str) -> bool:
    """Whether ``action`` on object ``B/<key>`` is allowed, with IAM's wildcard rules (``*`` matches
    any run of characters, ``/`` included, or none; ``?`` one character)."""
    import re

    def pattern(resource: str) -> re.Pattern:
        return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in resource))

    return any(
        pattern(r).fullmatch(f"B/{key}")
        for a, resources_ in grants.items()
        if a == action or a == "s3:*"
        for r in resources_
    )
