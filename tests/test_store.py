"""Local Parquet store: round trips, partition pruning, atomic writes, the plan store."""

from __future__ import annotations

import json
import os

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from forecasting.schema import ALL_INVENTORY_COLUMNS, OPTIONAL_INVENTORY_COLUMNS
from forecasting.sources import MetricsQuery, NoDataError, StoreError, new_run_id, open_store
from forecasting.sources.parquet import ParquetStore
from tests.test_schema import inventory


def fleet(n: int = 6, days: int = 400):
    inv = inventory(n)
    inv["business_unit"] = ["Retail", "Markets", "Risk & Finance"] * (n // 3)
    ts = pd.date_range("2024-06-01", periods=days, freq="D", tz="UTC")
    rng = np.random.default_rng(1)
    met = pd.concat(
        [
            pd.DataFrame(
                {
                    "server_id": s,
                    "timestamp": ts,
                    "cpu_p95": rng.uniform(0, 100, days),
                    "net_in_p95": rng.uniform(0, 900, days),
                }
            )
            for s in inv["server_id"]
        ],
        ignore_index=True,
    )
    return inv, met


@pytest.fixture
def store(tmp_path) -> ParquetStore:
    s = open_store(str(tmp_path / "data"))
    inv, met = fleet()
    s.write_inventory(inv)
    s.write_metrics(met, inv, freq="daily")
    return s


def test_round_trip(store):
    inv, met = fleet()
    got_inv = store.read_inventory()
    pd.testing.assert_frame_equal(
        got_inv[list(inv.columns)].astype(inv.dtypes.to_dict()), inv, check_dtype=False
    )
    # an inventory without the optional placement columns is stored with them, all unknown
    assert list(got_inv.columns) == ALL_INVENTORY_COLUMNS
    assert got_inv[list(OPTIONAL_INVENTORY_COLUMNS)].isna().all().all()
    got = store.read_metrics().sort_values(["server_id", "timestamp"], ignore_index=True)
    assert list(got.columns) == ["server_id", "timestamp", "cpu_p95", "net_in_p95"]
    expected = met.sort_values(["server_id", "timestamp"], ignore_index=True)
    np.testing.assert_allclose(got["cpu_p95"], expected["cpu_p95"])
    assert (got["timestamp"] == expected["timestamp"]).all()
    assert store.read_store_info()["freq"] == "daily"


def test_partitioned_by_business_unit_and_year(store):
    root = store.root + "/metrics"
    dirs = sorted(os.listdir(root))
    assert dirs == ["business_unit=Markets", "business_unit=Retail", "business_unit=Risk%20%26%20Finance"]
    assert sorted(os.listdir(f"{root}/business_unit=Retail")) == ["year=2024", "year=2025"]


def test_filters_read_only_needed_partitions(store):
    # Corrupt every partition but Retail 2025: a filtered read must never open them.
    root = store.root + "/metrics"
    for dirpath, _, files in os.walk(root):
        for f in files:
            if not ("Retail" in dirpath and "2025" in dirpath):
                with open(os.path.join(dirpath, f), "wb") as fh:
                    fh.write(b"garbage")
    got = store.read_metrics(MetricsQuery.of(business_units=["Retail"], start="2025-01-01"))
    assert set(got["server_id"]) == {"srv-000", "srv-003"}
    assert got["timestamp"].min() == pd.Timestamp("2025-01-01", tz="UTC")
    with pytest.raises(StoreError, match="not readable"):
        store.read_metrics()


def test_server_and_time_range_filter(store):
    got = store.read_metrics(MetricsQuery.of(server_ids=["srv-004"], start="2024-07-01", end="2024-07-11"))
    assert set(got["server_id"]) == {"srv-004"}
    assert len(got) == 10


def test_column_selection(store):
    got = store.read_metrics(MetricsQuery.of(columns=["cpu_p95"]))
    assert list(got.columns) == ["server_id", "timestamp", "cpu_p95"]


def test_merge_keeps_old_rows_and_replaces_overlap(store):
    inv, met = fleet()
    new = met[met["server_id"] == "srv-000"].tail(3).assign(cpu_p95=1.5)
    extra = new.assign(timestamp=new["timestamp"] + pd.Timedelta(days=3))
    store.write_metrics(pd.concat([new, extra]), inv, freq="daily", mode="merge")
    got = store.read_metrics(MetricsQuery.of(server_ids=["srv-000"]))
    assert len(got) == 403
    assert (got.tail(6)["cpu_p95"] == 1.5).all()
    assert len(store.read_metrics()) == 6 * 400 + 3
    assert store.read_store_info()["end"].startswith("2025-07-08")


def test_overwrite_removes_stale_partitions(store):
    inv, met = fleet()
    store.write_metrics(met[met["server_id"] == "srv-000"], inv, freq="daily")
    assert sorted(os.listdir(store.root + "/metrics")) == ["business_unit=Retail"]


def test_crash_mid_write_leaves_old_file_and_no_half_file(store, monkeypatch):
    inv = store.read_inventory()

    def crash(table, where, **kw):
        with open(where, "wb") as f:
            f.write(b"PAR1 half a file")
        raise OSError("disk full")

    monkeypatch.setattr(pq, "write_table", crash)
    with pytest.raises(OSError, match="disk full"):
        store.write_inventory(inv.assign(hostname="new"))
    monkeypatch.undo()
    assert (store.read_inventory()["hostname"] != "new").all()
    leftovers = [f for f in os.listdir(store.root + "/inventory") if f != "servers.parquet"]
    assert leftovers == []


def test_crash_mid_partition_write_keeps_old_partition(store, monkeypatch):
    inv, met = fleet()
    real = pq.write_table
    calls = {"n": 0}

    def crash_second(table, where, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            raise OSError("killed")
        return real(table, where, **kw)

    monkeypatch.setattr(pq, "write_table", crash_second)
    with pytest.raises(OSError, match="killed"):
        store.write_metrics(met.assign(cpu_p95=0.0), inv, freq="daily")
    monkeypatch.undo()
    got = store.read_metrics(MetricsQuery.of(business_units=["Markets"]))
    assert got["cpu_p95"].max() > 0  # Markets partition untouched, still the old data
    assert len(store.read_metrics()) == 2400


def test_truncated_parquet_is_a_clear_error(store):
    path = store.root + "/inventory/servers.parquet"
    with open(path, "rb") as f:
        data = f.read()
    with open(path, "wb") as f:
        f.write(data[: len(data) // 2])
    with pytest.raises(StoreError, match=r"inventory .*servers\.parquet is not a readable Parquet file"):
        store.read_inventory()


def test_empty_store_says_what_to_do(tmp_path):
    s = open_store(str(tmp_path / "empty"))
    assert not s.has_data()
    with pytest.raises(NoDataError, match="generate"):
        s.read_inventory()
    with pytest.raises(NoDataError, match="no metrics"):
        s.read_metrics()
    assert s.latest_run_id() is None and s.list_runs() == []


def test_data_location_that_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(StoreError, match="is a file"):
        open_store(str(f))


def test_publish_run_and_latest(store):
    assert store.latest_run_id() is None
    first = new_run_id()
    risk = pd.DataFrame(
        {"server_id": ["srv-000", "srv-001"], "metric": ["cpu_p95"] * 2, "score": [80.0, 10.0]}
    )
    store.publish_run(first, {"risk": risk}, {"run_id": first, "rows": {"risk": 2}})
    assert store.latest_run_id() == first
    assert store.read_manifest(first)["rows"] == {"risk": 2}
    assert store.read_run_table(first, "forecasts") is None
    got = store.read_run_table(first, "risk", server_ids=["srv-001"])
    assert got["score"].tolist() == [10.0]
    second = new_run_id()
    store.publish_run(second, {"risk": risk}, {"run_id": second})
    assert store.latest_run_id() == second
    assert store.list_runs() == sorted([first, second])


def test_some_servers_rows_are_read_by_row_group_whatever_the_order(store, monkeypatch):
    """A server filter reads only the row groups whose server range can hold one asked for,
    exactly the rows a full read filters to, in files sorted by server or not; a table without
    server_id is named, never a traceback."""
    import forecasting.sources.parquet as parquet

    rng = np.random.default_rng(3)
    ids = [f"srv-{i:03d}" for i in range(300)]
    risk = pd.DataFrame({"server_id": np.repeat(ids, 5), "score": rng.uniform(0, 100, 1500)})
    shuffled = risk.sample(frac=1, random_state=1).reset_index(drop=True)
    monkeypatch.setattr(parquet, "ROW_GROUP_SIZE", 100)  # 15 row groups
    runs = []
    for frame in (risk, shuffled):
        run = new_run_id()
        runs.append(run)
        store.publish_run(run, {"risk": frame, "recommendations": frame}, {"run_id": run})
        asked = ["srv-007", "srv-150", "srv-299", "srv-nope"]
        got = store.read_run_table(run, "risk", server_ids=asked)
        want = frame[frame["server_id"].isin(asked)]
        assert sorted(map(tuple, got.to_numpy().tolist())) == sorted(map(tuple, want.to_numpy().tolist()))
        assert store.read_run_table(run, "risk", server_ids=["srv-nope"]).empty
    read = []
    real = pq.ParquetFile.read_row_groups
    monkeypatch.setattr(
        pq.ParquetFile,
        "read_row_groups",
        lambda self, gs, *a, **k: read.extend(gs) or real(self, gs, *a, **k),
    )
    store.read_run_table(runs[0], "risk", server_ids=["srv-150"])  # the file sorted by server
    assert len(read) == 1  # one group of the 15
    bad = new_run_id()
    store.publish_run(bad, {"risk": pd.DataFrame({"metric": ["cpu_p95"]})}, {"run_id": bad})
    with pytest.raises(StoreError, match="no server_id column"):
        store.read_run_table(bad, "risk", server_ids=["srv-001"])


def test_some_servers_metrics_are_read_by_row_group(tmp_path, monkeypatch):
    """A server filter on the metrics reads only the row groups whose server range can hold one
    asked for (metrics files are written sorted by server): the same rows as a full read
    filtered, with the business-unit and time filters still applied."""
    import forecasting.sources.parquet as parquet

    monkeypatch.setattr(parquet, "ROW_GROUP_SIZE", 200)
    s = open_store(str(tmp_path / "data"))
    inv, met = fleet(n=30, days=400)
    s.write_inventory(inv)
    s.write_metrics(met, inv, freq="daily")
    asked = [inv["server_id"].iloc[i] for i in (2, 16, 27)] + ["srv-nope"]  # three business units
    start = pd.Timestamp("2025-01-01", tz="UTC")
    everything = s.read_metrics(MetricsQuery.of(start=start))
    want = everything[everything["server_id"].astype(str).isin(asked)]
    scanned: list[int] = []
    real = parquet._row_groups_of

    def counted(*args):
        cut = real(*args)
        scanned.append(sum(f.num_row_groups for f in cut.get_fragments()))
        return cut

    monkeypatch.setattr(parquet, "_row_groups_of", counted)
    got = s.read_metrics(MetricsQuery.of(start=start, server_ids=asked))
    key = ["server_id", "timestamp"]
    pd.testing.assert_frame_equal(
        got.sort_values(key, ignore_index=True), want.sort_values(key, ignore_index=True), check_dtype=False
    )
    total = sum(f.num_row_groups for f in s._metrics_dataset().get_fragments())
    assert 0 < scanned[0] < total / 3  # 3 servers' groups, not the partitions'
    one_unit = s.read_metrics(
        MetricsQuery.of(
            server_ids=asked, business_units=[inv.set_index("server_id").loc[asked[0], "business_unit"]]
        )
    )
    assert set(one_unit["server_id"].astype(str)) == {asked[0]}
    assert s.read_metrics(MetricsQuery.of(server_ids=["srv-nope"])).empty


def test_crash_during_publish_keeps_previous_latest(store, monkeypatch):
    first = new_run_id()
    frame = pd.DataFrame({"server_id": ["a"], "metric": ["cpu_p95"]})
    store.publish_run(first, {"risk": frame}, {"run_id": first})
    real = store.cond.put_new

    def crash_on_backtest(path, data):
        if "backtest" in path:
            raise OSError("killed")
        return real(path, data)

    monkeypatch.setattr(store.cond, "put_new", crash_on_backtest)
    with pytest.raises(OSError):
        store.publish_run(new_run_id(), {"risk": frame, "backtest": frame}, {})
    assert store.latest_run_id() == first


@pytest.mark.parametrize("bad", ["../../etc", "LATEST", "", "20250101T000000Z/../x"])
def test_run_ids_are_checked(store, bad):
    with pytest.raises(StoreError, match="invalid run id"):
        store.read_manifest(bad)


def test_corrupt_manifest_and_latest(store):
    run = new_run_id()
    store.publish_run(run, {}, {"run_id": run})
    with open(f"{store.root}/runs/{run}/manifest.json", "w") as f:
        f.write("{not json")
    with pytest.raises(StoreError, match="not valid JSON"):
        store.read_manifest(run)
    with open(f"{store.root}/runs/LATEST", "w") as f:
        f.write("../../../etc/passwd")
    with pytest.raises(StoreError, match="invalid run id"):
        store.latest_run_id()


def test_manifest_is_json(store):
    run = new_run_id()
    store.publish_run(run, {}, {"run_id": run, "when": pd.Timestamp("2025-01-01")})
    with open(f"{store.root}/runs/{run}/manifest.json") as f:
        assert json.load(f)["when"].startswith("2025-01-01")


def test_merge_moves_a_server_that_changed_business_unit(store):
    inv, met = fleet()
    inv.loc[inv["server_id"] == "srv-000", "business_unit"] = "Payments"  # was Retail
    new = met[met["server_id"] == "srv-000"].tail(2)
    store.write_metrics(new, inv, freq="daily", mode="merge")
    retail = store.read_metrics(MetricsQuery.of(business_units=["Retail"]))
    payments = store.read_metrics(MetricsQuery.of(business_units=["Payments"]))
    assert "srv-000" not in set(retail["server_id"])
    assert len(payments) == 400  # its whole history moved, nothing duplicated or lost
    assert len(store.read_metrics()) == 6 * 400


def test_placement_columns_round_trip(tmp_path):
    from forecasting.schema import validate_inventory

    raw = inventory(4).assign(
        dr_role=["primary", "standby", None, None],
        dr_partner_id=["srv-001", "srv-000", None, None],
        anti_affinity_group=[None, None, "grp-0007", "grp-0007"],
        pinned=["yes", None, "no", None],
    )
    clean, _ = validate_inventory(raw)
    s = open_store(str(tmp_path / "data"))
    s.write_inventory(clean)
    back = s.read_inventory()
    assert list(back.columns) == ALL_INVENTORY_COLUMNS
    assert str(back["pinned"].dtype) == "boolean"  # unknown stays unknown, not False
    again, report = validate_inventory(back)
    assert report.clean
    pd.testing.assert_frame_equal(again, clean)


def test_run_ids_sort_in_the_order_they_were_made_even_within_one_second(tmp_path):
    """Runs are ordered by id (diff's "run before", retention's newest). Two runs started in one
    second used to be ordered by their random suffixes: CI saw the diff find no run before the
    latest."""
    from datetime import UTC, datetime, timedelta

    from forecasting.records.diff import resolve_pair
    from forecasting.shards import run_id_for

    t0 = datetime(2026, 12, 5, 11, 2, 29, 999_000, tzinfo=UTC)
    times = [t0 + timedelta(microseconds=us) for us in (0, 1, 2, 999, 1_000, 500_000, 999_999)]
    for make in (new_run_id, lambda now: run_id_for("ab" * 32, now)):
        for _ in range(20):  # the random parts must never decide the order
            ids = [make(t) for t in times]
            assert ids == sorted(ids) and len(set(ids)) == len(ids)
    frame = pd.DataFrame({"server_id": ["srv-000"], "metric": ["cpu_p95"], "score": [1.0]})
    for i in range(10):
        store = open_store(str(tmp_path / str(i)))
        first, second = new_run_id(t0), new_run_id(t0 + timedelta(microseconds=300))
        for run in (first, second):
            store.publish_run(run, {"risk": frame}, {"run_id": run})
        assert resolve_pair(store) == (first, second)


def assert_columns_are_read_as_asked(store) -> None:
    """``columns`` reads those columns only, in the order asked, for every server or some; a
    column the table lacks is left out (its reader names what it misses), and server_id is
    read to filter but not returned unless asked."""
    rng = np.random.default_rng(5)
    ids = [f"srv-{i:03d}" for i in range(40)]
    frame = pd.DataFrame(
        {
            "server_id": np.repeat(ids, 3),
            "metric": ["cpu_p95", "mem_p95", "disk_used_pct"] * 40,
            "q50": rng.uniform(0, 100, 120),
            "yhat": rng.uniform(0, 100, 120),
            "model": "fleet",
        }
    )
    run = new_run_id()
    store.publish_run(run, {"forecasts": frame}, {"run_id": run})
    asked = ["model", "q50", "server_id", "not_a_column"]
    whole = store.read_run_table(run, "forecasts", columns=asked)
    assert whole.columns.tolist() == ["model", "q50", "server_id"] and len(whole) == 120
    some = store.read_run_table(run, "forecasts", server_ids=["srv-003", "srv-039"], columns=asked)
    assert some.columns.tolist() == ["model", "q50", "server_id"]
    want = frame[frame["server_id"].isin(["srv-003", "srv-039"])][["model", "q50", "server_id"]]
    pd.testing.assert_frame_equal(some.reset_index(drop=True), want.reset_index(drop=True))
    no_id = store.read_run_table(run, "forecasts", server_ids=["srv-003"], columns=["q50"])
    assert no_id.columns.tolist() == ["q50"] and len(no_id) == 3
    none = store.read_run_table(run, "forecasts", server_ids=["srv-nope"], columns=asked)
    assert none.empty and none.columns.tolist() == ["model", "q50", "server_id"]


def test_columns_are_read_as_asked(store):
    assert_columns_are_read_as_asked(store)
