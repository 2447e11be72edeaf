"""cfn-lint on every synthesized template: no errors, and no warnings beyond two reviewed ones."""

from __future__ import annotations

import pytest
from infra_synth import VARIANTS

# W3005: CDK adds an explicit DependsOn on a role's policy next to the GetAtt of the role, so
#        the function never starts before its permissions exist; harmless redundancy.
# W3010: CDK writes the availability-zone names of the stack's region into the subnets (the
#        stack is bound to one region, as ALB access logging requires).
IGNORED = {"W3005", "W3010"}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_cfn_lint_finds_nothing(synthesized, variant: str) -> None:
    from cfnlint.api import ManualArgs, lint_file

    s = synthesized(variant)
    files = sorted(s.outdir.glob("*.template.json"))
    assert len(files) == 2
    for f in files:
        matches = lint_file(f, ManualArgs(regions=["eu-west-1"], ignore_checks=sorted(IGNORED)))
        assert not [str(m) for m in matches], f.name


def test_cfn_lint_catches_a_broken_template(synthesized, tmp_path) -> None:
    """The linter is real: a Lambda function with an impossible memory size is an error."""
    import json

    from cfnlint.api import ManualArgs, lint_file

    app = synthesized("ecs-express").app
    fn = next(v for v in app["Resources"].values() if v["Type"] == "AWS::Lambda::Function")
    fn["Properties"]["MemorySize"] = 99999
    path = tmp_path / "broken.template.json"
    path.write_text(json.dumps(app))
    matches = lint_file(path, ManualArgs(regions=["eu-west-1"], ignore_checks=sorted(IGNORED)))
    assert any(m.rule.id.startswith("E") for m in matches)
