"""The GitHub Actions workflow, linted here because it cannot run here (no GitHub, no AWS):
actionlint (syntax, expressions, runner labels) and zizmor (workflow security), both offline."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
BIN = Path(sys.executable).parent


def _tool(name: str) -> str:
    path = BIN / name
    assert path.exists() or shutil.which(name), f"{name} is missing: make install installs it"
    return str(path) if path.exists() else str(shutil.which(name))


def _run(*cmd: str) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=REPO)


def test_there_is_a_ci_workflow() -> None:
    assert [p.name for p in WORKFLOWS] == ["ci.yml"]


def test_actionlint_is_clean() -> None:
    r = _run(_tool("actionlint"), "-no-color", *map(str, WORKFLOWS))
    assert r.returncode == 0, r.stdout + r.stderr


def test_zizmor_offline_finds_nothing() -> None:
    r = _run(_tool("zizmor"), "--offline", "--no-progress", "--format", "plain", *map(str, WORKFLOWS))
    assert r.returncode == 0, r.stdout + r.stderr


def test_linters_catch_an_injection_and_a_typo(tmp_path: Path) -> None:
    """Both tools are live: a workflow that pastes an attacker-controlled title into a shell
    (template injection) and misspells a context fails them."""
    bad = tmp_path / "bad.yml"
    bad.write_text(
        "on: pull_request_target\n"
        "permissions: write-all\n"
        "jobs:\n"
        "  a:\n"
        "    runs-on: ubuntu-latest\n"
        "    steps:\n"
        "      - uses: actions/checkout@v4\n"
        "      - run: echo '${{ github.event.pull_request.title }}' ${{ github.evnt.x }}\n"
    )
    lint = _run(_tool("actionlint"), "-no-color", str(bad))
    assert lint.returncode == 1 and "evnt" in lint.stdout
    audit = _run(_tool("zizmor"), "--offline", "--no-progress", "--format", "plain", str(bad))
    assert audit.returncode != 0
    assert "template-injection" in audit.stdout and "unpinned-uses" in audit.stdout


@pytest.fixture(scope="module")
def ci() -> dict:
    return yaml.safe_load((REPO / ".github" / "workflows" / "ci.yml").read_text())


def test_every_action_is_pinned_by_commit_sha(ci: dict) -> None:
    uses = [s["uses"] for job in ci["jobs"].values() for s in job["steps"] if "uses" in s]
    assert uses
    for u in uses:
        assert re.fullmatch(r"[\w.-]+/[\w.-]+@[0-9a-f]{40}", u), u


def test_deploy_assumes_a_role_through_oidc_after_approval(ci: dict) -> None:
    assert ci["permissions"] == {}
    test, deploy = ci["jobs"]["test"], ci["jobs"]["deploy"]
    assert test["permissions"] == {"contents": "read"}
    assert deploy["permissions"] == {"contents": "read", "id-token": "write"}
    assert deploy["environment"] == "production"  # required reviewers = the manual approval
    assert deploy["needs"] == "test"
    assert "refs/heads/main" in deploy["if"] and "push" in deploy["if"]
    creds = next(s for s in deploy["steps"] if "configure-aws-credentials" in s.get("uses", ""))
    assert "role-to-assume" in creds["with"]
    assert not any(k in str(deploy) for k in ("aws-access-key-id", "aws-secret-access-key"))
    runs = " ".join(s.get("run", "") for s in deploy["steps"])
    assert "cdk deploy" in runs and "docker build" in runs
    assert "make test" in str(test["steps"]) or ".ci/run" in str(test["steps"])
