"""The trust benchmark's figures, on hand-made frames: each rule counts what it says it counts."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from forecasting.schema import validate_inventory

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_trust.py"


@pytest.fixture(scope="module")
def bt():
    spec = importlib.util.spec_from_file_location("bench_trust", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


T0 = pd.Timestamp("2026-01-01", tz="UTC")
IDS = [f"s{i}" for i in range(10)]


def frames() -> dict[str, pd.DataFrame]:
    """Ten servers, every rule broken exactly once (or a stated number of times)."""
    profiles = pd.DataFrame(
        {
            "server_id": IDS,
            # s0–s3 breach soon, s4 already breached, s5–s7 steady, s8 DR standby, s9 idle
            "scenario": ["breach_next_quarter"] * 4 + ["breached"] + ["steady"] * 3 + ["dr_standby", "idle"],
            "breach_metric": ["cpu_p95", "mem_p95", "disk_p95", "cpu_p95", "cpu_p95"] + [None] * 5,
            "breach_date": [T0 + pd.Timedelta(days=d) for d in (10, 20, 30, 40, -5)] + [pd.NaT] * 5,
        }
    )
    inv = pd.DataFrame(
        {
            "server_id": IDS,
            "hostname": IDS,
            "business_unit": ["Retail"] * 8 + ["Markets", "Retail"],
            "region": ["emea"] * 10,
            "environment": ["prod"] * 10,
            "criticality": ["critical", "critical"] + ["low"] * 8,
            "server_type": ["app"] * 10,
            "cpu_cores": 8.0,
            "memory_gb": 32.0,
            "disk_gb": 100.0,
            "monthly_cost_usd": 400.0,
            "dr_role": [None] * 7 + ["primary", "standby", None],
            "dr_partner_id": [None] * 7 + ["s8", "s7", None],
            "anti_affinity_group": ["aag-1", None, None, None, None, "aag-2", "aag-2", None, None, "aag-1"],
            "pinned": [None] * 9 + ["yes"],
        }
    )
    inventory, report = validate_inventory(inv)
    assert report.clean, report.lines()
    risk = pd.DataFrame(
        {
            "server_id": ["s0", "s1", "s2", "s3", "s4", "s5", "s6", "s0"],
            # s0 cpu: 2 days late; s1 mem: 10 early; s2: a row for another metric only; s3: none
            "metric": [
                "cpu_p95",
                "mem_p95",
                "cpu_p95",
                "cpu_p95",
                "cpu_p95",
                "cpu_p95",
                "mem_p95",
                "mem_p95",
            ],
            "breach_expected": [T0 + pd.Timedelta(days=12), T0 + pd.Timedelta(days=10), T0, pd.NaT]
            + [pd.NaT] * 4,
            "status": ["at_risk", "at_risk", "at_risk", "ok", "already_over", "ok", "at_risk", "ok"],
            "severity": ["high", "medium", "low", "none", "critical", "low", "medium", "none"],
        }
    )
    actions = ["keep", "consolidate", "right-size", "keep", "decommission"]
    actions += ["consolidate", "consolidate", "consolidate", "consolidate", "consolidate"]
    recommendations = pd.DataFrame(
        {
            "server_id": IDS,
            "action": actions,
            "target_group": ["", "g1", "", "", "", "g2", "g2", "g1", "g1", "g1"],
            "current_monthly_cost": 400.0,
            # s1 saves 100 (ok), s5 saves 30 (< 10 % of 400), s6 saves 0, s7 −5, s8 50, s9 100
            "monthly_savings": [0.0, 100.0, 50.0, 0.0, 400.0, 30.0, 0.0, -5.0, 50.0, 100.0],
        }
    )
    consolidation = pd.DataFrame(
        {
            "target_group": ["g1", "g1", "g1", "g1", "g2", "g2"],
            "server_id": ["s1", "s7", "s8", "s9", "s5", "s6"],
        }
    )
    return {
        "profiles": profiles,
        "inventory": inventory,
        "risk": risk,
        "recommendations": recommendations,
        "consolidation": consolidation,
    }


def test_breach_recall_and_date_error(bt):
    f = bt.trust_figures(**frames())
    assert (f["planted_soon"], f["recalled"]) == (4, 2)  # s2's row is for the wrong metric
    assert f["recall"] == 0.5
    assert sorted(f["error_days"]) == [2.0, 10.0]
    assert f["median_error_days"] == 6.0
    assert f["p90_error_days"] == pytest.approx(9.2)
    assert f["median_signed_days"] == -4.0  # (+2 − 10) / 2
    assert (f["planted_breached"], f["already_over"]) == (1, 1)


def test_false_alarms_on_steady_servers(bt):
    f = bt.trust_figures(**frames())
    # s5 has only a low row, s6 a medium one, s7 none
    assert (f["steady"], f["steady_flagged"]) == (3, 1)
    assert f["steady_flagged_share"] == pytest.approx(1 / 3)


def test_breaches_shrunk_and_costly_consolidations(bt):
    f = bt.trust_figures(**frames())
    # s1 consolidate, s2 right-size, s4 decommission; s0 and s3 keep
    assert (f["planted_breaches"], f["breaches_shrunk"]) == (5, 3)
    assert f["consolidations"] == 6
    # below max(40, 20): s5 (30), s6 (0), s7 (−5); at or above: s1, s9 (100), s8 (50)
    assert f["consolidations_below_minimum"] == 3
    assert f["consolidations_losing_money"] == 2
    assert (f["standbys"], f["standbys_removed"]) == (1, 1)


def test_placement_rules(bt):
    f = bt.trust_figures(**frames())
    assert f["groups"] == 2
    assert f["dr_pairs_together"] == 1  # s7 and s8 share g1
    assert f["anti_affinity_together"] == 1  # aag-2 twice in g2; aag-1 (s0, s9) not together
    assert (f["pinned"], f["pinned_changed"]) == (1, 1)  # s9 pinned, consolidated
    assert f["groups_mixing_bu"] == 1  # g1 holds Markets (s8) and Retail
    assert f["groups_two_critical"] == 0  # the two critical servers are not in one group
    assert f["not_keep"] == 8
    assert f["actions"] == {"consolidate": 6, "right-size": 1, "decommission": 1}


def test_a_clean_plan_scores_zero(bt):
    fr = frames()
    rec = fr["recommendations"].assign(action="keep", target_group="", monthly_savings=0.0)
    fr["recommendations"] = rec
    fr["consolidation"] = fr["consolidation"].iloc[:0]
    f = bt.trust_figures(**fr)
    for key in (
        "breaches_shrunk",
        "consolidations",
        "consolidations_below_minimum",
        "standbys_removed",
        "dr_pairs_together",
        "anti_affinity_together",
        "pinned_changed",
        "groups_mixing_bu",
        "groups_two_critical",
        "not_keep",
    ):
        assert f[key] == 0, key


def test_two_critical_servers_in_one_group_and_unknown_placement(bt):
    fr = frames()
    fr["consolidation"] = pd.DataFrame({"target_group": ["g1", "g1"], "server_id": ["s0", "s1"]})
    # an inventory without the optional columns: nothing is known, so no placement rule can fire
    fr["inventory"] = fr["inventory"].drop(
        columns=["dr_role", "dr_partner_id", "anti_affinity_group", "pinned"]
    )
    f = bt.trust_figures(**fr)
    assert f["groups_two_critical"] == 1
    assert (f["dr_pairs_together"], f["anti_affinity_together"], f["pinned"], f["standbys"]) == (0, 0, 0, 0)


def test_pooling_seeds_keeps_servers_and_groups_apart(bt):
    pooled = bt.pooled({1: frames(), 2: frames()})
    f = bt.trust_figures(**pooled)
    one = bt.trust_figures(**frames())
    assert f["groups"] == 2 * one["groups"]
    assert f["dr_pairs_together"] == 2 * one["dr_pairs_together"]
    assert f["recalled"] == 2 * one["recalled"] and f["recall"] == one["recall"]
    assert np.isclose(f["median_error_days"], one["median_error_days"])
