"""Peak-aware consolidation: complementary shapes share a host where sum-of-peaks cannot, placement
rules hold, hosts shrink to the cheapest fit, replay counts violations, and (hypothesis) a packing
never exceeds capacity and places every candidate exactly once or says why not."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from forecasting.consolidation import (
    PlacementRules,
    consolidate,
    default_host_size,
    demand_series,
    pack,
    replay_plan,
    workload_profiles,
)
from forecasting.inputs import AnalyticsError, prepare
from forecasting.plan import CONSOLIDATION_COLUMNS
from forecasting.rightsizing import validate_catalog
from tests.test_risk import ORIGIN, forecast, history, inventory

CATALOG = validate_catalog(
    pd.DataFrame(
        [
            ("c4", "gp", 4, 16, 200.0),
            ("c8", "gp", 8, 32, 400.0),
            ("c12", "gp", 12, 48, 600.0),
            ("c16", "gp", 16, 64, 800.0),
        ],
        columns=["size", "family", "cores", "memory_gb", "monthly_cost_usd"],
    )
)
HIST_DAYS = 70
H = 28


def weekly(weekday: float, weekend: float, index: pd.DatetimeIndex) -> np.ndarray:
    return np.where(np.asarray(index.day_of_week) >= 5, weekend, weekday)


def shaped_fleet(servers: dict[str, tuple[dict, tuple[float, float], float]]) -> tuple:
    """{id: (inventory overrides, (weekday CPU %, weekend CPU %), memory %)}: history and forecast
    follow the same weekly shape, so the packing sees the shapes in both."""
    inv = inventory(*({"server_id": sid, **over} for sid, (over, _, _) in servers.items()))
    hidx = pd.date_range(end=ORIGIN, periods=HIST_DAYS, freq="D")
    fidx = pd.date_range(ORIGIN + pd.Timedelta(days=1), periods=H, freq="D")
    hist = history(
        {sid: {"cpu_p95": weekly(*cpu, hidx), "mem_p95": mem} for sid, (_, cpu, mem) in servers.items()},
        days=HIST_DAYS,
    )
    fc = pd.concat(
        [
            f
            for sid, (_, cpu, mem) in servers.items()
            for f in (
                forecast(sid, "cpu_p95", weekly(*cpu, fidx), spread=0.0),
                forecast(sid, "mem_p95", np.full(H, mem), spread=0.0),
            )
        ],
        ignore_index=True,
    )
    return fc, hist, inv


# 16-core servers: "day" runs 8 cores on weekdays and 1 at weekends, "end" the opposite.
DAY_END = {
    "day": ({"cpu_cores": 16, "memory_gb": 32}, (50.0, 6.25), 10.0),
    "end": ({"cpu_cores": 16, "memory_gb": 32}, (6.25, 50.0), 10.0),
}


def test_complementary_peaks_share_a_host_that_sum_of_peaks_would_not() -> None:
    fc, hist, inv = shaped_fleet(DAY_END)
    res = consolidate(prepare(fc, hist, inv), None, catalog=CATALOG, headroom=0.2, host_size="c16")
    # peaks add to 16 cores > 12.8 (c16 with 20 % headroom); at every step the sum is only 9
    assert res.summary.hosts_after == 1 and res.summary.naive_hosts == 2
    assert res.summary.servers_freed == 1
    assert res.naive_plan.empty and len(res.plan) == 2
    assert list(res.plan.columns) == CONSOLIDATION_COLUMNS
    p = res.plan.iloc[0]
    # the host shrinks to the cheapest size holding 9 cores / 6.4 GB with headroom: 11.25 cores → c12
    assert p["host_size"] == "c12"
    assert p["peak_cpu_util"] == pytest.approx(9 / 12 * 100)
    g = res.groups.iloc[0]
    assert g["sum_of_peaks_cpu_util"] == pytest.approx(16 / 12 * 100)
    assert res.summary.violations == 0 and res.summary.replay_source == "history"
    # two $400 servers become one c12 host priced like them: $600 × 400/(35·16 + 3.75·32 … ) factor
    assert res.summary.monthly_cost_after < res.summary.monthly_cost_before
    assert res.allocated_cost.sum() == pytest.approx(p["host_monthly_cost"])


def test_coinciding_peaks_do_not_share() -> None:
    same = {
        "a": ({"cpu_cores": 16, "memory_gb": 32}, (50.0, 6.25), 10.0),
        "b": ({"cpu_cores": 16, "memory_gb": 32}, (50.0, 6.25), 10.0),
    }
    fc, hist, inv = shaped_fleet(same)
    res = consolidate(prepare(fc, hist, inv), None, catalog=CATALOG, headroom=0.2, host_size="c16")
    assert res.summary.hosts_after == 2 and res.plan.empty
    assert set(res.standalone["server_id"]) == {"a", "b"}
    assert "stays on its own server" in res.standalone["reason"].iloc[0]


@pytest.mark.parametrize(
    ("overrides", "rules"),
    [
        ({"day": {"region": "emea"}, "end": {"region": "amer"}}, PlacementRules()),
        ({"day": {"environment": "prod"}, "end": {"environment": "dev"}}, PlacementRules()),
        ({"day": {"criticality": "critical"}, "end": {"criticality": "critical"}}, PlacementRules()),
        ({"day": {"business_unit": "Markets"}, "end": {}}, PlacementRules(same_business_unit=True)),
        ({}, PlacementRules(anti_affinity=(("day", "end"),))),
        ({}, PlacementRules(max_servers_per_host=1)),
    ],
    ids=["region", "environment", "two-critical", "business-unit", "dr-pair", "max-members"],
)
def test_placement_rules_keep_servers_apart(overrides, rules) -> None:
    spec = {sid: ({**over, **overrides.get(sid, {})}, cpu, mem) for sid, (over, cpu, mem) in DAY_END.items()}
    fc, hist, inv = shaped_fleet(spec)
    res = consolidate(
        prepare(fc, hist, inv), None, catalog=CATALOG, headroom=0.2, host_size="c16", rules=rules
    )
    assert res.plan.empty and res.summary.hosts_after == 2


def test_critical_limit_is_configurable() -> None:
    spec = {sid: ({**over, "criticality": "critical"}, cpu, mem) for sid, (over, cpu, mem) in DAY_END.items()}
    fc, hist, inv = shaped_fleet(spec)
    rules = PlacementRules(max_per_host_by_criticality={"critical": 2})
    res = consolidate(
        prepare(fc, hist, inv), None, catalog=CATALOG, headroom=0.2, host_size="c16", rules=rules
    )
    assert res.summary.hosts_after == 1


def test_unplaceable_candidates_come_with_a_reason() -> None:
    spec = {
        **DAY_END,
        "huge": ({"cpu_cores": 64, "memory_gb": 256, "criticality": "low"}, (50.0, 50.0), 10.0),  # 32 cores
        "gold": ({"criticality": "critical"}, (10.0, 10.0), 10.0),
    }
    fc, hist, inv = shaped_fleet(spec)
    inv = pd.concat([inv, inventory({"server_id": "blind"})], ignore_index=True)  # no data at all
    rules = PlacementRules(excluded_criticality=("critical",))
    res = consolidate(
        prepare(fc, hist, inv), None, catalog=CATALOG, headroom=0.2, host_size="c16", rules=rules
    )
    why = res.unplaceable.set_index("server_id")["reason"]
    assert why["huge"].startswith(
        "needs 32.0 cores / 26 GB at peak, more than one c16 holds with 20 % headroom"
    )
    assert why["gold"] == "critical servers are excluded from consolidation by the placement rules"
    assert why["blind"] == "incomplete CPU or memory demand series"
    placed = set(res.plan["server_id"]) | set(res.standalone["server_id"])
    assert placed | set(why.index) == set(inv["server_id"])
    assert res.summary.unplaceable == 3 and res.summary.candidates == 5


def test_replay_counts_violations_on_actual_series() -> None:
    fc, hist, inv = shaped_fleet(DAY_END)
    res = consolidate(prepare(fc, hist, inv), None, catalog=CATALOG, headroom=0.2, host_size="c16")
    # the future turns out different: both servers run 8 cores on the same two days (16 > 12)
    fidx = pd.date_range(ORIGIN + pd.Timedelta(days=1), periods=5, freq="D")
    cpu = np.array([50.0, 50.0, 6.25, 6.25, 6.25])
    actual = history(
        {"day": {"cpu_p95": cpu, "mem_p95": 10.0}, "end": {"cpu_p95": cpu, "mem_p95": 10.0}},
        days=5,
        end=fidx[-1],
    )
    r = replay_plan(res.plan, actual, inv)
    assert (r.violations, r.groups_violating, r.periods) == (2, 1, 5)
    assert r.worst_cpu_util == pytest.approx(16 / 12 * 100)
    again = consolidate(
        prepare(fc, hist, inv), None, catalog=CATALOG, headroom=0.2, host_size="c16", actuals=actual
    )
    assert again.summary.violations == 2 and again.summary.naive_violations == 0
    assert again.summary.replay_source == "actuals"
    with pytest.raises(AnalyticsError, match="missing column 'mem_p95'"):
        replay_plan(res.plan, actual.drop(columns="mem_p95"), inv)


def test_demand_series_is_history_then_forecast_in_absolute_units() -> None:
    fc, hist, inv = shaped_fleet(DAY_END)
    cpu, mem, index = demand_series(prepare(fc, hist, inv), history_periods=10)
    assert cpu.shape == (2, 10 + H) and len(index) == 10 + H
    assert index[9] == ORIGIN and index[10] == ORIGIN + pd.Timedelta(days=1)
    assert set(np.round(np.unique(cpu[0]), 6)) == {1.0, 8.0}
    assert np.allclose(mem, 3.2)


def test_demand_history_is_computed_once_per_run_and_never_stale() -> None:
    import pickle

    from forecasting.whatif import AddedLoad, add_servers, apply_growth

    fc, hist, inv = shaped_fleet(DAY_END)
    inputs = prepare(fc, hist, inv)
    cpu, _, _ = demand_series(inputs, history_periods=10)
    grown = apply_growth(inputs, 10.0)  # same history: the memoised part is reused
    asked, computed = [], []
    real = grown.memoised

    def spy(key, sources, compute):
        asked.append(key)
        return real(key, sources, lambda: computed.append(key) or compute())

    object.__setattr__(grown, "memoised", spy)
    g_cpu, _, _ = demand_series(grown, history_periods=10)
    assert len(asked) == 2 and computed == []  # CPU and memory, both from the memo
    np.testing.assert_array_equal(g_cpu[:, :10], cpu[:, :10])  # history is what happened
    assert np.all(g_cpu[:, 10:] > cpu[:, 10:])  # the forecast part grew
    more = add_servers(inputs, [AddedLoad("Payments", 2, "day")])  # new rows: recomputed
    assert demand_series(more, history_periods=10)[0].shape == (4, 10 + H)
    assert pickle.loads(pickle.dumps(inputs)).memo == {}  # the shared cache stores no memo


def test_default_host_follows_the_shape_of_demand() -> None:
    cat = validate_catalog(
        pd.DataFrame(
            [("g", "gp", 64, 256, 2240.0), ("m", "mem", 64, 512, 2944.0), ("c", "cpu", 64, 128, 1984.0)],
            columns=["size", "family", "cores", "memory_gb", "monthly_cost_usd"],
        )
    )
    assert default_host_size(cat, np.array([10.0]), np.array([200.0])) == "m"  # memory-heavy
    assert default_host_size(cat, np.array([100.0]), np.array([100.0])) == "c"  # CPU-heavy
    assert default_host_size(cat) == "m"  # no demand: most cores, then most memory


def test_workload_profiles_find_complementary_shapes() -> None:
    spec = {f"d{i}": ({}, (60.0 + i, 10.0), 20.0) for i in range(4)}
    spec |= {f"e{i}": ({}, (10.0, 60.0 + i), 20.0) for i in range(4)}
    fc, hist, inv = shaped_fleet(spec)
    prof = workload_profiles(prepare(fc, hist, inv), n_clusters=2, weeks=4)
    labels = prof.labels.set_index("server_id")["profile"]
    assert labels["d0"] == labels["d3"] != labels["e0"] == labels["e3"]
    names = set(prof.labels["profile_name"])
    assert any("business days" in n for n in names) and any("weekend-heavy" in n for n in names)
    # weekday (≈1.3 × mean) and weekend (≈2.5 × mean) peaks never coincide: 2.7 / 3.8
    assert prof.complementarity["peak_ratio"].iloc[0] == pytest.approx(0.71, abs=0.02)
    assert len(prof.centroids) == 2 * 28


def test_bad_input_is_named() -> None:
    fc, hist, inv = shaped_fleet(DAY_END)
    inputs = prepare(fc, hist, inv)
    with pytest.raises(AnalyticsError, match="host size 'c99' is not in the catalog"):
        consolidate(inputs, None, catalog=CATALOG, headroom=0.2, host_size="c99")
    with pytest.raises(AnalyticsError, match="not in the inventory: ghost"):
        consolidate(inputs, ["ghost"], catalog=CATALOG, headroom=0.2)
    with pytest.raises(AnalyticsError, match="more than once"):
        consolidate(inputs, ["day", "day"], catalog=CATALOG, headroom=0.2)
    with pytest.raises(AnalyticsError, match="unknown criticality tier"):
        PlacementRules(max_per_host_by_criticality={"gold": 1})
    with pytest.raises(AnalyticsError, match="must name two servers"):
        PlacementRules(anti_affinity=(("a", "a"),))
    with pytest.raises(AnalyticsError, match="unknown packing method"):
        pack(np.zeros((1, 1)), np.zeros((1, 1)), host_cores=1, host_memory_gb=1, headroom=0.1, method="magic")


# --------------------------------------------------------------------------- invariants


@st.composite
def packing_problems(draw):
    n = draw(st.integers(1, 12))
    T = draw(st.integers(1, 10))
    cpu = np.array(draw(st.lists(st.lists(st.floats(0, 12), min_size=T, max_size=T), min_size=n, max_size=n)))
    mem = np.array(draw(st.lists(st.lists(st.floats(0, 12), min_size=T, max_size=T), min_size=n, max_size=n)))
    if draw(st.booleans()):
        cpu[draw(st.integers(0, n - 1)), 0] = np.nan  # a candidate without complete data
    part = np.array(
        draw(st.lists(st.sampled_from(["emea|prod", "amer|prod"]), min_size=n, max_size=n)), dtype=object
    )
    tier = np.array(
        draw(st.lists(st.sampled_from(["critical", "high", "low"]), min_size=n, max_size=n)), dtype=object
    )
    pairs = draw(st.lists(st.tuples(st.integers(0, n - 1), st.integers(0, n - 1)), max_size=4))
    pairs = np.array([p for p in pairs if p[0] != p[1]], dtype=int).reshape(-1, 2)
    headroom = draw(st.floats(0, 0.5))
    method = draw(st.sampled_from(["peak-aware", "sum-of-peaks"]))
    return cpu, mem, part, tier, pairs, headroom, method


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(problem=packing_problems())
def test_packing_never_exceeds_capacity_and_places_each_item_once(problem) -> None:
    cpu, mem, part, tier, pairs, headroom, method = problem
    res = pack(
        cpu, mem, host_cores=10, host_memory_gb=10, headroom=headroom, partition=part, tier=tier,
        anti_pairs=pairs, method=method,
    )  # fmt: skip
    cap = 10 * (1 - headroom) + 1e-9
    placed = res.group >= 0
    # each item: placed in exactly one group, or unplaceable with a reason
    assert np.all(placed == (res.reason == ""))
    assert np.all([bool(r) for r in res.reason[~placed]])
    for g in range(res.n_groups):
        members = np.flatnonzero(res.group == g)
        assert len(members) >= 1
        # at every time step the summed demand stays under capacity × (1 − headroom)
        assert np.all(cpu[members].sum(axis=0) <= cap) and np.all(mem[members].sum(axis=0) <= cap)
        np.testing.assert_allclose(
            res.cpu_load[g],
            cpu[members].sum(axis=0) if method == "peak-aware" else cpu[members].max(axis=1).sum(),
        )
        assert len(set(part[members])) == 1
        assert (tier[members] == "critical").sum() <= 1
    for a, b in pairs:
        assert not (placed[a] and res.group[a] == res.group[b])
    # an item that fits alone is never reported unplaceable
    complete = ~np.isnan(cpu).any(axis=1)
    peak_cpu = np.where(complete[:, None], cpu, 0.0).max(axis=1)
    fits_alone = complete & (peak_cpu <= cap) & (mem.max(axis=1) <= cap)
    assert np.all(placed[fits_alone])


def reference_pack(cpu, mem, *, cap, partition, tier, tier_limits, max_members, pairs, method):
    """The packing rule written plainly, host by host: the compiled kernel must agree exactly.

    Items by decreasing size (peak CPU + peak memory as fractions of a host) within each
    partition; peak-aware: the allowed host that fits at every step and whose summed peaks grow
    least (ties: the lowest index); sum of peaks: the first allowed host where the peaks fit.
    """
    limit = cap * (1 + 1e-12) + 1e-9
    d = np.stack([cpu, mem], axis=1)  # (n, 2, T)
    if method == "sum-of-peaks":
        d = d.max(axis=2, keepdims=True)
    size = cpu.max(axis=1) / cap[0] + mem.max(axis=1) / cap[1]
    order = np.argsort(-size, kind="stable")
    group = np.full(len(cpu), -1)
    next_group = 0
    for part in sorted(set(partition)):
        hosts: list[np.ndarray] = []  # (2, T) loads
        members: list[list[int]] = []
        for i in [i for i in order if partition[i] == part]:
            best, best_growth = -1, np.inf
            for b, load in enumerate(hosts):
                if (
                    tier[i] in tier_limits
                    and sum(tier[m] == tier[i] for m in members[b]) >= tier_limits[tier[i]]
                ):
                    continue
                if max_members is not None and len(members[b]) >= max_members:
                    continue
                if any({i, m} == {a, c} for m in members[b] for a, c in pairs):
                    continue
                after = load + d[i]
                if (after > limit[:, None]).any():
                    continue
                if method == "sum-of-peaks":
                    best = b
                    break
                growth = (after.max(axis=1) / cap).sum() - (load.max(axis=1) / cap).sum()
                if growth < best_growth:
                    best, best_growth = b, growth
            if best < 0:
                hosts.append(np.zeros_like(d[i]))
                members.append([])
                best = len(hosts) - 1
            hosts[best] = hosts[best] + d[i]
            members[best].append(i)
            group[i] = next_group + best
        next_group += len(hosts)
    return group


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.integers(0, 2**31 - 1),
    members=st.sampled_from([None, 3]),
    pairs=st.integers(0, 30),
    method=st.sampled_from(["peak-aware", "sum-of-peaks"]),
)
def test_packing_kernel_chooses_exactly_what_the_plain_rule_does(seed, members, pairs, method) -> None:
    """The compiled kernel (rules, bounds, early exits) is an optimisation, never another plan."""
    rng = np.random.default_rng(seed)
    n, T = 200, 24
    base = rng.uniform(0.2, 3.0, (n, 1))
    shape = 1 + 0.6 * np.sin(np.linspace(0, 6.3, T)[None, :] + rng.uniform(0, 6.3, (n, 1)))
    cpu = np.round(base * shape * rng.uniform(0.7, 1.3, (n, T)), int(rng.integers(0, 3)))  # ties too
    mem = np.round(base * rng.uniform(0.5, 1.5, (n, T)), 1)
    partition = rng.choice(["emea|prod", "amer|prod", "apac|prod", "emea|dev", "amer|dev"], n).astype(object)
    tier = rng.choice(["critical", "high", "low"], n).astype(object)
    anti = rng.integers(0, n, (pairs, 2))  # across partitions too: packed as parallel tasks
    anti = anti[anti[:, 0] != anti[:, 1]]
    got = pack(
        cpu, mem, host_cores=8, host_memory_gb=8, headroom=0.2, partition=partition, tier=tier,
        rules=PlacementRules(max_servers_per_host=members), anti_pairs=anti, method=method,
    )  # fmt: skip
    want = reference_pack(
        cpu, mem, cap=np.array([8.0, 8.0]) * 0.8, partition=partition, tier=tier,
        tier_limits={"critical": 1}, max_members=members, pairs=[tuple(p) for p in anti], method=method,
    )  # fmt: skip
    assert got.n_groups > 40  # many hosts open: the bounds and early exits were exercised
    np.testing.assert_array_equal(got.group, want)


def test_each_partition_is_one_task_of_the_pool(monkeypatch) -> None:
    """Partitions pack as separate tasks (threads: the kernel releases the GIL), numbered in
    partition order whatever order they finish in."""
    import forecasting.consolidation as consolidation

    seen: list[int] = []

    def reversed_finish(fn, jobs):
        seen.append(len(jobs))
        return list(reversed([fn(j) for j in reversed(jobs)]))  # run last partition first

    rng = np.random.default_rng(7)
    cpu, mem = rng.uniform(0.5, 2, (60, 12)), rng.uniform(0.5, 2, (60, 12))
    partition = np.repeat(np.array(["a", "b", "c"], dtype=object), 20)
    want = pack(cpu, mem, host_cores=8, host_memory_gb=8, headroom=0.2, partition=partition)
    monkeypatch.setattr(consolidation, "_each_partition", reversed_finish)
    got = pack(cpu, mem, host_cores=8, host_memory_gb=8, headroom=0.2, partition=partition)
    assert seen == [3]
    np.testing.assert_array_equal(got.group, want.group)
    assert (np.diff(want.group[[0, 20, 40]]) > 0).all()  # partition a's hosts first, then b's, c's


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    shapes=st.lists(
        st.tuples(st.floats(1, 80), st.floats(1, 80), st.floats(1, 80), st.sampled_from(["critical", "low"])),
        min_size=1,
        max_size=6,
    ),
    headroom=st.floats(0.05, 0.4),
)
def test_every_candidate_is_planned_once_and_plans_hold_capacity(shapes, headroom) -> None:
    spec = {
        f"s{i}": ({"cpu_cores": 8, "memory_gb": 32, "criticality": t}, (wd, we), m)
        for i, (wd, we, m, t) in enumerate(shapes)
    }
    fc, hist, inv = shaped_fleet(spec)
    inputs = prepare(fc, hist, inv)
    res = consolidate(inputs, None, catalog=CATALOG, headroom=headroom, host_size="c16")
    seen = [*res.plan["server_id"], *res.standalone["server_id"], *res.unplaceable["server_id"]]
    assert sorted(seen) == sorted(spec)
    assert res.unplaceable["reason"].str.len().gt(0).all()
    cpu, mem, _ = demand_series(inputs)
    pos = {sid: i for i, sid in enumerate(inputs.server_ids)}
    for _, grp in res.plan.groupby("target_group"):
        rows = [pos[s] for s in grp["server_id"]]
        host = grp.iloc[0]
        assert np.all(cpu[rows].sum(axis=0) <= host["host_cores"] * (1 - headroom) + 1e-9)
        assert np.all(mem[rows].sum(axis=0) <= host["host_memory_gb"] * (1 - headroom) + 1e-9)
    s = res.summary
    assert s.servers_freed == s.hosts_before - s.hosts_after >= 0
    assert s.hosts_before == len(spec) - len(res.unplaceable)
