"""Infra test fixtures: every synthesized variant, built once per test session (see infra_synth)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from infra_synth import Synth, synth


def _shared_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.getbasetemp()
    # Under pytest-xdist every worker has its own basetemp below one shared session directory.
    return (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "cdk-synth"


@pytest.fixture(scope="session")
def synthesized(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], Synth]:
    root = _shared_root(tmp_path_factory)
    cache: dict[str, Synth] = {}

    def get(name: str) -> Synth:
        if name not in cache:
            cache[name] = synth(name, root)
        return cache[name]

    return get


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that synthesize (about 10 s for the first stack in a process) are slow."""
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).parent == here and "synthesized" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
