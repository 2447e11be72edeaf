"""app.readmodel: the plan prepared for display, checked against the raw plan tables, and the
caching/staleness rules (LATEST re-read at most every TTL, last good run served when the
store is unreachable, runs shared through the cache)."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from cachelib import FileSystemCache

from app.filters import FilterState
from app.readmodel import (
    DataStatus,
    Plan,
    ReadModel,
    breach_markers,
    build_plan,
    quarter_end_spans,
    reforecast,
)
from forecasting.plan import FORECAST_COLUMNS
from forecasting.settings import Settings
from forecasting.sources import MetricsQuery, StoreError, open_store
from forecasting.sources.base import PLAN_TABLES
from tests.plan_fixture import fixture_run_id, make_plan_store

MARKETS = FilterState(business_unit=("Markets",))


class ClockCache:
    """A cachelib-like cache whose expiry follows a test clock (so TTLs need no sleeping)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.data: dict[str, tuple[float, object]] = {}

    def get(self, key):
        hit = self.data.get(key)
        if hit is None or (hit[0] and hit[0] <= self.now):
            return None
        return hit[1]

    def set(self, key, value, timeout=None):
        self.data[key] = ((self.now + timeout) if timeout else 0.0, value)
        return True

    def delete(self, key):
        return self.data.pop(key, None) is not None


class CountingStore:
    """Wraps a store, counting calls and optionally failing like an unreachable bucket."""

    def __init__(self, store) -> None:
        self.store = store
        self.uri = store.uri
        self.calls: dict[str, int] = {}
        self.down = False

    def __getattr__(self, name):
        target = getattr(self.store, name)

        def call(*args, **kwargs):
            self.calls[name] = self.calls.get(name, 0) + 1
            if self.down:
                raise StoreError(f"cannot reach {self.uri}: connection refused")
            return target(*args, **kwargs)

        return call


def counting(store) -> CountingStore:
    from forecasting.sources import Store

    wrapper = CountingStore(store)
    Store.register(type(wrapper))  # a virtual subclass: ReadModel treats it as a store
    return wrapper


# --------------------------------------------------------------------------- the plan vs the raw tables


def test_plan_basics(plan: Plan, plan_store):
    inv = plan_store.read_inventory()
    assert plan.n_servers == len(inv)
    assert plan.run_id == fixture_run_id(0)
    assert plan.metrics == ["cpu_p95", "mem_p95", "disk_p95", "net_in_p95", "net_out_p95"]
    assert plan.options["business_unit"] == sorted(inv["business_unit"].unique())
    assert plan.options["criticality"] == ["critical", "high", "medium", "low"]
    assert plan.horizon == 90 and plan.freq == "daily" and plan.model == "fleet"
    assert plan.created_at == pd.Timestamp(plan.manifest["created_at"])
    assert plan.notes == []


def test_masks_and_for_across_dimensions_or_within(plan: Plan):
    inv = plan.inventory
    m = plan.mask(FilterState(business_unit=("Markets", "Payments"), environment=("prod",)))
    expected = inv["business_unit"].isin(["Markets", "Payments"]) & (inv["environment"] == "prod")
    assert np.array_equal(m, expected.to_numpy())
    assert plan.mask(None).all() and plan.mask(FilterState()).all()
    assert not plan.mask(FilterState(region=("atlantis",))).any()  # unknown values match nothing


def test_joined_tables_filter_by_server_attributes(plan: Plan, plan_store):
    risk = plan.table("risk", MARKETS)
    raw = plan_store.read_run_table(plan.run_id, "risk")
    markets = set(plan.inventory.loc[plan.inventory["business_unit"] == "Markets", "server_id"])
    assert set(risk["server_id"]) == markets
    assert len(risk) == raw["server_id"].isin(markets).sum()
    assert {"hostname", "business_unit", "region", "environment", "criticality", "server_type"} <= set(
        risk.columns
    )
    assert (risk["business_unit"] == "Markets").all()
    assert len(plan.table("risk")) == len(raw)


def test_kpis_match_a_direct_computation_from_the_raw_tables(plan: Plan, plan_store):
    raw = plan_store.read_run_table(plan.run_id, "risk")
    recs = plan_store.read_run_table(plan.run_id, "recommendations")
    inv = plan_store.read_inventory()
    for filters in (
        FilterState(),
        MARKETS,
        FilterState(environment=("prod",), criticality=("critical", "high")),
    ):
        ids = set(inv.loc[plan.mask(filters), "server_id"]) if not filters.is_empty else set(inv["server_id"])
        r = raw[raw["server_id"].isin(ids)]
        rank = r["severity"].map({"critical": 0, "high": 1, "medium": 2, "low": 3, "none": 4})
        worst = rank.groupby(r["server_id"]).min()
        days = r["days_to_breach"].where(r["status"] != "already_over", 0.0).groupby(r["server_id"]).min()
        cpu = r[r["metric"] == "cpu_p95"].set_index("server_id")["current_p95"]
        k = plan.kpis(filters)
        assert k.servers == len(ids)
        assert k.at_risk == {
            s: int((worst == i).sum()) for i, s in enumerate(["critical", "high", "medium", "low"])
        }
        assert k.breach_within == {30: int((days <= 30).sum()), 90: int((days <= 90).sum())}
        assert k.idle == int((cpu < 10).sum())
        savings = recs.loc[recs["server_id"].isin(ids), "monthly_savings"].clip(lower=0).sum()
        assert k.monthly_savings == pytest.approx(savings)


def test_utilization_by_bu_is_the_mean_of_current_over_threshold(plan: Plan, plan_store):
    raw = plan_store.read_run_table(plan.run_id, "risk")
    inv = plan_store.read_inventory().set_index("server_id")
    util = plan.utilization_by_bu()
    r = raw.assign(
        bu=raw["server_id"].map(inv["business_unit"]), pct=100 * raw["current_p95"] / raw["threshold"]
    )
    expected = r.groupby(["bu", "metric"])[["current_p95", "pct"]].mean()
    got = util.set_index(["business_unit", "metric"])
    assert len(got) == len(expected)
    for (bu, metric), row in expected.iterrows():
        assert got.loc[(bu, metric), "mean_value"] == pytest.approx(row["current_p95"])
        assert got.loc[(bu, metric), "pct_of_threshold"] == pytest.approx(row["pct"])
    markets = plan.utilization_by_bu(MARKETS)
    assert set(markets["business_unit"]) == {"Markets"}
    assert plan.utilization_by_bu(FilterState(region=("atlantis",))).empty


def test_bu_trend_history_and_forecast_buckets_match_the_raw_data(plan: Plan, plan_store):
    trend = plan.bu_trend("cpu_p95", MARKETS)
    assert set(trend["business_unit"]) == {"Markets"}
    assert set(trend["kind"]) == {"history", "forecast"}
    t0 = plan.origin + pd.Timedelta(days=1)
    assert trend.loc[trend["kind"] == "forecast", "timestamp"].min() == t0
    assert trend.loc[trend["kind"] == "history", "timestamp"].max() == t0 - pd.Timedelta(days=7)
    ids = plan.inventory.loc[plan.inventory["business_unit"] == "Markets", "server_id"].tolist()
    # the last history week: mean of every Markets cpu value in [t0 - 7 days, t0)
    hist = plan_store.read_metrics(MetricsQuery.of(server_ids=ids, start=t0 - pd.Timedelta(days=7), end=t0))
    last = trend[(trend["kind"] == "history")].iloc[-1]["value"]
    assert last == pytest.approx(hist["cpu_p95"].mean())
    # the first forecast week: mean of the median paths over [t0, t0 + 7 days)
    fc = plan_store.read_run_table(plan.run_id, "forecasts")
    fc = fc[
        fc["server_id"].isin(ids)
        & (fc["metric"] == "cpu_p95")
        & (fc["timestamp"] < t0 + pd.Timedelta(days=7))
    ]
    first = trend[trend["kind"] == "forecast"].iloc[0]["value"]
    assert first == pytest.approx(fc["yhat"].astype(float).mean(), rel=1e-5)
    assert plan.bu_trend("no_such_metric").empty


def test_top_risks_are_one_per_server_worst_first(plan: Plan):
    top = plan.top_risks(None, 10)
    at_risk = plan.table("risk").query("severity != 'none'")["server_id"].nunique()
    assert len(top) == min(10, at_risk) and top["server_id"].is_unique
    assert len(top) >= 5
    rank = top["severity"].map({"critical": 0, "high": 1, "medium": 2, "low": 3}).to_numpy()
    assert (np.diff(rank) >= 0).all()
    assert (top["severity"] != "none").all()
    markets = plan.top_risks(MARKETS, 50)
    assert set(markets["business_unit"]) == {"Markets"}
    assert len(markets) == plan.kpis(MARKETS).at_risk_total


def test_one_server_forecast_facts_and_rows(plan: Plan, plan_store, readmodel):
    fc = readmodel.server_forecast(plan, "srv-00031")
    raw = plan_store.read_run_table(plan.run_id, "forecasts", server_ids=["srv-00031"])
    assert len(fc) == len(raw) == 5 * 90
    assert set(fc["metric"]) == set(raw["metric"])
    raw = raw.sort_values(["metric", "timestamp"]).reset_index(drop=True)
    mine = fc.sort_values(["metric", "timestamp"]).reset_index(drop=True)
    assert np.allclose(mine["yhat"], raw["yhat"]) and np.allclose(mine["q975"], raw["q975"])
    assert (
        plan.server("srv-00031")["hostname"]
        == plan.inventory.set_index("server_id").loc["srv-00031", "hostname"]
    )
    assert len(plan.server_rows("risk", "srv-00031")) == 5
    for bad in ("srv-99999", "", None, 42, "../../etc/passwd"):
        assert plan.server(bad) is None
        assert plan.position(bad) is None
    assert readmodel.server_forecast(plan, "srv-99999").empty
    assert plan.threshold("srv-00031", "cpu_p95") in (75.0, 80.0, 85.0)


def test_search_servers_prefix_first_case_insensitive_and_filtered(plan: Plan):
    hits = plan.search_servers("SRV-0003")
    assert hits["server_id"].str.startswith("srv-0003").all() and len(hits) == 10
    host = plan.inventory["hostname"].iloc[5]
    assert plan.search_servers(host.upper())["hostname"].iloc[0] == host
    assert len(plan.search_servers("", limit=7)) == 7
    assert set(plan.search_servers("srv", MARKETS, limit=500)["business_unit"]) == {"Markets"}
    assert plan.search_servers("no-such-thing").empty


def test_missing_plan_tables_read_as_not_in_this_run(tmp_path: Path):
    store = make_plan_store(
        tmp_path, 30, seed=1, omit=("risk", "recommendations", "backtest", "consolidation")
    )
    rm = ReadModel(store, Settings(data=str(tmp_path)))
    plan = rm.plan()
    k = plan.kpis()
    assert k.servers == 30 and k.at_risk is None and k.breach_within is None and k.monthly_savings is None
    assert k.idle is not None  # current CPU comes from history when there is no risk table
    assert (
        plan.table("risk") is None
        and plan.top_risks() is None
        and rm.server_table(plan, "backtest", "srv-00001") is None
    )
    assert len(rm.server_forecast(plan, "srv-00001")) == 5 * 90
    assert not plan.utilization_by_bu().empty


# --------------------------------------------------------------------------- status, caching, staleness


def test_latest_is_rechecked_at_most_every_ttl(tmp_path: Path):
    store = counting(make_plan_store(tmp_path, 20, seed=2))
    cache = ClockCache()
    rm = ReadModel(store, Settings(data=str(tmp_path), cache_ttl_seconds=60), cache)
    first = rm.snapshot()
    assert first.plan is not None and first.status == DataStatus(
        first.plan.run_id, checked_at=first.status.checked_at
    )
    for _ in range(20):
        rm.snapshot()
    assert store.calls["latest_run_id"] == 1
    assert store.calls["read_run_table"] == 5  # the run was loaded once

    newer = "20270101T000000Z-next"
    tables = {n: store.store.read_run_table(first.plan.run_id, n) for n in ("forecasts", "risk")}
    store.store.publish_run(newer, tables, {**first.plan.manifest, "run_id": newer})
    cache.now += 59
    assert rm.snapshot().plan.run_id == first.plan.run_id  # within the TTL: the old run, no store call
    cache.now += 2
    snap = rm.snapshot()
    assert snap.plan.run_id == newer and store.calls["latest_run_id"] == 2
    assert snap.plan.table("recommendations") is None  # the new run has only two tables


def test_ttl_zero_checks_every_time(tmp_path: Path):
    store = counting(make_plan_store(tmp_path, 10, seed=3))
    rm = ReadModel(store, Settings(data=str(tmp_path), cache_ttl_seconds=0), ClockCache())
    for _ in range(3):
        rm.snapshot()
    assert store.calls["latest_run_id"] == 3 and store.calls["read_manifest"] == 1


def test_unreachable_store_keeps_serving_the_last_good_run(tmp_path: Path):
    store = counting(make_plan_store(tmp_path, 10, seed=4))
    cache = ClockCache()
    rm = ReadModel(store, Settings(data=str(tmp_path), cache_ttl_seconds=60), cache)
    good = rm.snapshot()
    store.down = True
    cache.now += 61
    snap = rm.snapshot()
    assert snap.plan is good.plan
    assert snap.status.stale and snap.status.run_id == good.plan.run_id
    # users read a reference; the detail ("connection refused") is only in the log
    assert "could not be reached (reference " in snap.status.message
    assert "connection refused" not in snap.status.message
    # it looks again after 30 s (sooner than the TTL) and recovers
    store.down = False
    cache.now += 31
    assert not rm.snapshot().status.stale


def test_unreachable_at_boot_then_recovering(tmp_path: Path):
    real = make_plan_store(tmp_path, 10, seed=5)
    attempts = []

    def opener():
        attempts.append(1)
        if len(attempts) == 1:
            raise StoreError("cannot reach s3://bucket/prefix: timed out")
        return real

    cache = ClockCache()
    rm = ReadModel(opener, Settings(data=str(tmp_path), cache_ttl_seconds=60), cache)
    snap = rm.snapshot()
    assert snap.plan is None and snap.status.stale and "timed out" not in snap.status.message
    assert snap.status.message.startswith("The data store could not be reached (reference ")
    assert snap.as_of == "no forecast run"
    cache.now += 31
    assert rm.snapshot().plan is not None


def test_no_run_and_no_data_messages(tmp_path: Path):
    empty = open_store(str(tmp_path / "empty"))
    snap = ReadModel(empty, Settings(data=str(tmp_path / "empty"))).snapshot()
    assert snap.plan is None and not snap.status.stale
    assert "python -m forecasting run" in snap.status.message
    assert "python -m forecasting generate" in snap.status.message


def test_unreadable_run_falls_back_to_the_previous_one(tmp_path: Path):
    store = make_plan_store(tmp_path, 10, seed=6)
    cache = ClockCache()
    rm = ReadModel(store, Settings(data=str(tmp_path), cache_ttl_seconds=60), cache)
    good = rm.snapshot().plan
    broken = "20270101T000000Z-broken"
    run_dir = tmp_path / "runs" / broken
    shutil.copytree(tmp_path / "runs" / good.run_id, run_dir)
    (run_dir / "manifest.json").write_text("{not json")
    (tmp_path / "runs" / "LATEST").write_text(broken)
    cache.now += 61
    snap = rm.snapshot()
    assert snap.plan is good and snap.status.stale
    assert broken in snap.status.message and "(reference " in snap.status.message
    assert "not valid JSON" not in snap.status.message


def test_runs_are_shared_between_workers_through_the_file_system_cache(tmp_path: Path):
    store_a = counting(make_plan_store(tmp_path / "data", 15, seed=7))
    settings = Settings(data=str(tmp_path / "data"))
    shared = tmp_path / "cache"
    ReadModel(store_a, settings, FileSystemCache(str(shared))).snapshot()
    assert store_a.calls["read_run_table"] == 5
    store_b = counting(open_store(str(tmp_path / "data")))
    plan_b = ReadModel(store_b, settings, FileSystemCache(str(shared))).snapshot().plan
    assert plan_b is not None and plan_b.n_servers == 15
    assert "read_run_table" not in store_b.calls and "latest_run_id" not in store_b.calls
    # and a worker that starts while the store is down still serves the last good run
    store_c = counting(open_store(str(tmp_path / "data")))
    store_c.down = True
    rm_c = ReadModel(store_c, settings, FileSystemCache(str(shared)))
    rm_c.cache.delete(rm_c._key("status"))
    snap = rm_c.snapshot()
    assert snap.plan is not None and snap.status.stale


def test_workers_booting_together_build_a_run_once(tmp_path: Path, monkeypatch):
    """Two workers (their own ReadModel and cache handle on one cache directory) load a run
    that is not cached yet, at the same moment: one builds the plan and the what-if inputs,
    the other waits and reads them from the cache. A builder that fails leaves the build to
    the waiter (the lock dies with its holder's attempt)."""
    import threading

    from app import readmodel as rmod

    make_plan_store(tmp_path / "data", 12, seed=4)
    settings = Settings(data=str(tmp_path / "data"))
    builds: dict[str, list[str]] = {"plan": [], "inputs": []}
    real_plan, real_inputs = rmod.build_plan, rmod.build_analytics_inputs
    fail_first = threading.Event()

    def slow_plan(store, run_id, settings_):
        builds["plan"].append(threading.current_thread().name)
        time.sleep(0.5)  # the other worker arrives while this one builds
        if fail_first.is_set() and len(builds["plan"]) == 1:
            raise StoreError("the store went away mid-build")
        return real_plan(store, run_id, settings_)

    def slow_inputs(store, plan):
        builds["inputs"].append(threading.current_thread().name)
        time.sleep(0.5)
        return real_inputs(store, plan)

    monkeypatch.setattr(rmod, "build_plan", slow_plan)
    monkeypatch.setattr(rmod, "build_analytics_inputs", slow_inputs)

    def boot(cache_dir: Path) -> dict:
        got: dict = {}
        start = threading.Barrier(2)

        def worker(name: str) -> None:
            rm = ReadModel(open_store(settings.data), settings, FileSystemCache(str(cache_dir)))
            start.wait()
            try:
                plan = rm.plan()
                got[name] = (plan, rm.analytics_inputs(plan))
            except Exception as e:
                got[name] = e

        threads = [threading.Thread(target=worker, args=(n,), name=n) for n in ("w1", "w2")]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        return got

    got = boot(tmp_path / "cache")
    assert len(builds["plan"]) == 1 and len(builds["inputs"]) == 1, builds
    (p1, i1), (p2, i2) = got["w1"], got["w2"]
    assert p1.run_id == p2.run_id and p1.n_servers == p2.n_servers == 12
    assert np.array_equal(i1.quantiles, i2.quantiles, equal_nan=True)

    builds["plan"].clear()
    fail_first.set()
    got = boot(tmp_path / "cache-2")
    assert len(builds["plan"]) == 2, builds  # the first builder failed: the waiter built
    failed = [n for n, v in got.items() if isinstance(v, Exception)]
    assert failed == [builds["plan"][0]]
    assert [n for n, v in got.items() if not isinstance(v, Exception)] == [builds["plan"][1]]


def test_warm_loads_the_run_in_the_background(tmp_path: Path):
    store = counting(make_plan_store(tmp_path, 10, seed=10))
    rm = ReadModel(store, Settings(data=str(tmp_path)))
    rm.warm().join(timeout=60)
    assert store.calls["read_run_table"] == 5
    assert rm.snapshot().plan is not None and store.calls["read_run_table"] == 5


def test_server_history_is_read_once_and_unknown_servers_refused(tmp_path: Path):
    store = counting(make_plan_store(tmp_path, 10, seed=8))
    rm = ReadModel(store, Settings(data=str(tmp_path)))
    plan = rm.plan()
    at_load = store.calls["read_metrics"]
    # the trend streams one business unit and a quarter at a time
    assert at_load == 4 * len(plan.options["business_unit"])
    h1 = rm.server_history(plan, "srv-00003")
    h2 = rm.server_history(plan, "srv-00003")
    assert store.calls["read_metrics"] == at_load + 1  # this server, once
    assert len(h1) == len(h2) == 400 and set(h1["server_id"]) == {"srv-00003"}
    with pytest.raises(KeyError, match="unknown server"):
        rm.server_history(plan, "srv-12345")


# --------------------------------------------------------------------------- server page helpers


def _path_frame(values: list[float], lower: float = -5, upper: float = 5) -> pd.DataFrame:
    ts = pd.date_range("2026-01-01", periods=len(values), freq="D", tz="UTC")
    v = np.asarray(values, dtype=float)
    return pd.DataFrame({"timestamp": ts, "yhat": v, "q10": v + lower, "q90": v + upper})


def test_breach_markers_are_first_crossings_of_each_path():
    f = _path_frame([70, 76, 80, 86, 90])
    b = breach_markers(f, 85.0)
    assert b["pessimistic"] == pd.Timestamp("2026-01-03", tz="UTC")  # 80 + 5
    assert b["expected"] == pd.Timestamp("2026-01-04", tz="UTC")
    assert b["optimistic"] == pd.Timestamp("2026-01-05", tz="UTC")  # 90 - 5
    assert breach_markers(f, 99.0) == {"optimistic": None, "expected": None, "pessimistic": None}
    assert breach_markers(f, float("nan"))["expected"] is None


def test_quarter_end_spans_follow_the_business_calendar():
    spans = quarter_end_spans(pd.Timestamp("2026-01-01", tz="UTC"), pd.Timestamp("2026-12-31", tz="UTC"))
    assert [(a.strftime("%m-%d"), b.strftime("%m-%d")) for a, b in spans] == [
        ("03-29", "04-01"),
        ("06-28", "07-01"),
        ("09-28", "10-01"),
        ("12-29", "01-01"),  # the span ends where the last close day does
    ]
    assert quarter_end_spans(pd.Timestamp("2026-04-02", tz="UTC"), pd.Timestamp("2026-05-01", tz="UTC")) == []


def test_reforecast_one_server_reports_progress(tmp_path: Path, readmodel, plan):
    history = readmodel.server_history(plan, "srv-00031")
    seen = []
    started = time.perf_counter()
    fc = reforecast(history, "naive", "daily", 30, progress=lambda i, n, m: seen.append((i, n, m)))
    assert time.perf_counter() - started < 10
    assert list(fc.columns) == FORECAST_COLUMNS
    assert len(fc) == 5 * 30 and set(fc["model"]) == {"naive"}
    assert [s[0] for s in seen] == [1, 2, 3, 4, 5] and seen[-1][2] == "net_out_p95"
    with pytest.raises(ValueError, match="unknown model 'arima'"):
        reforecast(history, "arima", "daily", 30)
    with pytest.raises(ValueError, match="no metric history"):
        reforecast(history[["server_id", "timestamp"]], "naive", "daily", 30)


def test_build_plan_notes_rows_for_servers_not_in_the_inventory(tmp_path: Path):
    store = make_plan_store(tmp_path, 12, seed=9)
    run = store.latest_run_id()
    risk = store.read_run_table(run, "risk")
    ghost = risk.iloc[:3].assign(server_id="srv-ghost")
    # a published run is never overwritten: the same run's tables with ghost rows, as a new run
    tables = {n: t for n in PLAN_TABLES if (t := store.read_run_table(run, n)) is not None}
    tables["risk"] = pd.concat([risk, ghost], ignore_index=True)
    ghost_run = run.split("-")[0] + "-ghost"
    store.publish_run(ghost_run, tables, {**store.read_manifest(run), "run_id": ghost_run})
    plan = build_plan(store, ghost_run, Settings(data=str(tmp_path)))
    assert any("risk: 3 row(s) for servers not in the inventory" in n for n in plan.notes)
    assert "srv-ghost" not in set(plan.table("risk")["server_id"])


def test_hourly_runs_trend_by_day_and_chart_every_metric(tmp_path: Path):
    from callbacks import server as srv

    store = make_plan_store(tmp_path, 8, seed=11, days=40, freq="hourly")
    rm = ReadModel(store, Settings(data=str(tmp_path)))
    plan = rm.plan()
    assert plan.freq == "hourly" and plan.horizon == 168
    trend = plan.bu_trend("cpu_p95")
    steps = trend.drop_duplicates("timestamp")["timestamp"].diff().dropna().unique()
    assert list(steps) == [pd.Timedelta(days=1)]  # hourly runs trend by day, not week
    assert (trend["kind"] == "forecast").sum() == 7 * trend["business_unit"].nunique()
    assert plan.kpis().idle is not None
    *_, charts, style = srv.server_view(rm, "srv-00001")
    assert style == {} and len(charts.children) == len(plan.metrics)
