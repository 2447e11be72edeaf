"""One snapshot per web tier of both templates (syrupy; update with --snapshot-update after review)."""

from __future__ import annotations

import pytest
from infra_synth import TIERS


@pytest.mark.parametrize("tier", TIERS)
def test_templates_match_the_reviewed_snapshot(synthesized, snapshot, tier: str) -> None:
    s = synthesized(tier)
    assert {"CapfcData": s.data, "CapfcApp": s.app} == snapshot
