"""A fleet streamed block by block (issue 12, item 3) is the fleet generated at once.

The generator simulates `BLOCK_SERVERS` servers at a time and `generate` writes each block as it
comes (the store's `append` mode), so memory is set by the block, not the fleet. These tests
shrink the block so a small fleet spans several, and hold the streamed store to the one-shot
fleet: same inventory, same rows, same plan.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from forecasting import synthetic
from forecasting.batch import run_batch
from forecasting.cli import EXIT_OK, main
from forecasting.schema import validate
from forecasting.settings import load_settings
from forecasting.sources import open_store
from forecasting.synthetic import fleet_blocks, generate_fleet
from tests.same_plan import assert_same_plan

N, DAYS, SEED, BLOCK, START = 300, 400, 11, 70, "2022-01-01"


def _sorted(m: pd.DataFrame) -> pd.DataFrame:
    return m.sort_values(["server_id", "timestamp"], ignore_index=True)


def test_a_fleet_within_one_block_is_unchanged():
    """Block 0 draws from the streams a one-block fleet always used: small fleets keep their data."""
    whole = generate_fleet(120, days=60, start=START, seed=SEED)
    (only,) = fleet_blocks(120, days=60, start=START, seed=SEED, block_servers=500)
    pd.testing.assert_frame_equal(whole.metrics, only.metrics)
    pd.testing.assert_frame_equal(whole.profiles, only.profiles)


def test_blocks_partition_the_fleet_and_keep_dr_pairs_together():
    parts = list(fleet_blocks(N, days=DAYS, start=START, seed=SEED, block_servers=BLOCK))
    assert len(parts) == -(-N // BLOCK)
    ids = np.concatenate([p.inventory["server_id"].to_numpy(dtype=object) for p in parts])
    assert len(ids) == len(set(ids)) == N
    pairs = 0
    for p in parts:
        partners = p.inventory["dr_partner_id"].dropna()
        pairs += len(partners)
        assert set(partners) <= set(p.inventory["server_id"])  # a standby's series follow its primary's
        assert set(p.metrics["server_id"].unique()) == set(p.inventory["server_id"])
    assert pairs > 0
    # the blocks' own random streams: two blocks are not copies of each other
    a, b = parts[0].metrics["cpu_p95"].to_numpy(), parts[1].metrics["cpu_p95"].to_numpy()
    assert not np.allclose(a[: min(len(a), len(b))], b[: min(len(a), len(b))])


def test_generate_fleet_is_its_blocks_in_inventory_order():
    whole = generate_fleet(N, days=DAYS, start=START, seed=SEED, block_servers=BLOCK)
    parts = list(fleet_blocks(N, days=DAYS, start=START, seed=SEED, block_servers=BLOCK))
    assert whole.inventory["server_id"].is_monotonic_increasing
    ids = whole.metrics["server_id"].to_numpy(dtype=object)
    assert (ids[1:] >= ids[:-1]).all()  # sorted by server then time, as the Fleet promises
    pd.testing.assert_frame_equal(whole.metrics, _sorted(pd.concat([p.metrics for p in parts])))
    assert whole.profiles["server_id"].tolist() == whole.inventory["server_id"].tolist()


def test_a_bad_block_size_is_refused():
    with pytest.raises(ValueError, match="block_servers must be a positive integer"):
        next(fleet_blocks(10, days=60, block_servers=0))


@pytest.mark.slow
def test_streamed_generate_writes_the_fleet_and_runs_to_the_same_plan(tmp_path, monkeypatch):
    monkeypatch.setattr(synthetic, "BLOCK_SERVERS", BLOCK)
    streamed = tmp_path / "streamed"
    argv = ["--data", str(streamed), "generate", "--servers", str(N), "--days", str(DAYS)]
    assert main([*argv, "--seed", str(SEED), "--start", START]) == EXIT_OK
    # a second streamed generate with --force replaces every block's files, leaving no stale ones
    assert main([*argv, "--seed", str(SEED), "--start", START, "--force"]) == EXIT_OK

    fleet = generate_fleet(N, days=DAYS, start=START, seed=SEED, block_servers=BLOCK)
    v = validate(fleet.inventory, fleet.metrics, fleet.freq, source="generated fleet")
    at_once = open_store(str(tmp_path / "at_once"))
    at_once.write_inventory(v.inventory)
    at_once.write_metrics(v.metrics, v.inventory, freq=fleet.freq, mode="overwrite")

    s = open_store(str(streamed))
    pd.testing.assert_frame_equal(s.read_inventory(), at_once.read_inventory())
    pd.testing.assert_frame_equal(_sorted(s.read_metrics()), _sorted(at_once.read_metrics()))
    files = list((streamed / "metrics").rglob("*.parquet"))
    assert len({f.name for f in files}) == -(-N // BLOCK)  # one file name per block

    a = run_batch(s, load_settings(data=str(streamed)), progress=False)["run_id"]
    b = run_batch(at_once, load_settings(data=str(tmp_path / "at_once")), progress=False)["run_id"]
    assert_same_plan(s, a, b, store_b=at_once)


# --------------------------------------------------------------------------- streamed ingest
# `ingest` streams the same way: files read in chunks, samples partitioned by a stable hash of the
# server into blocks, each block rolled up alone, then merged into the store a partition file and a
# range of servers at a time. These hold it to the in-memory ingest followed by a merge.


def _raw_fleet(rng: np.random.Generator, servers: int, days: int, start: str = "2024-03-01") -> pd.DataFrame:
    """Long 15-minute samples of CPU, memory and NetworkIn (bytes per sample period) per server."""
    ts = pd.date_range(start, periods=days * 96, freq="15min", tz="UTC")
    frames = []
    for i in range(servers):
        sid = f"srv-{i:04d}"
        for metric, scale in (("CPUUtilization", 60), ("mem_used_percent", 70), ("NetworkIn", 4e8)):
            frames.append(
                pd.DataFrame(
                    {
                        "server_id": sid,
                        "timestamp": ts.strftime("%Y-%m-%dT%H:%M:%SZ"),
                        "metric": metric,
                        "value": rng.gamma(4.0, scale / 4.0, len(ts)).round(3),
                    }
                )
            )
    return pd.concat(frames, ignore_index=True)


def _messy_inputs(tmp_path) -> list:
    """Three files — CSV, gzipped CSV, Parquet — with servers split across them (one server's day
    cut at noon between two files), duplicates, text, impossible values and a metric that is not a
    capacity metric, so every rule of the report fires in several blocks and chunks."""
    rng = np.random.default_rng(7)
    raw = _raw_fleet(rng, servers=24, days=9)
    raw["value"] = raw["value"].astype(str)  # text in a Parquet file too: the reader parses it
    raw.loc[rng.choice(len(raw), 40, replace=False), "value"] = "n/a"
    raw.loc[rng.choice(len(raw), 30, replace=False), "value"] = "180"
    dups = raw.sample(50, random_state=1)
    other = raw.sample(200, random_state=2).assign(metric="DiskWriteOps")
    raw = pd.concat([raw, dups, other], ignore_index=True)
    cut = pd.to_datetime(raw["timestamp"]) < pd.Timestamp("2024-03-05T12:00Z")
    a, b = raw[cut], raw[~cut]
    paths = [tmp_path / "export-a.csv", tmp_path / "export-b.csv.gz", tmp_path / "export-c.parquet"]
    a.to_csv(paths[0], index=False)
    b[b["server_id"] < "srv-0012"].to_csv(paths[1], index=False, compression="gzip")
    b[b["server_id"] >= "srv-0012"].to_parquet(paths[2], index=False)
    return paths


def _findings(report) -> dict:
    return {(f.table, f.rule, f.action, f.detail): f.count for f in report.findings}


def _store_rows(store) -> pd.DataFrame:
    return _sorted(store.read_metrics())


@pytest.mark.parametrize(
    ("existing", "freq"),
    [(False, "daily"), (True, "daily"), (False, "hourly")],
    ids=["empty store", "merged on top", "hourly"],
)
def test_streamed_ingest_is_the_in_memory_ingest(tmp_path, existing, freq, monkeypatch):
    from forecasting.ingest import ingest, ingest_to_store
    from forecasting.sources import parquet

    paths = _messy_inputs(tmp_path)
    one, many = open_store(str(tmp_path / "in-memory")), open_store(str(tmp_path / "streamed"))
    inventory = None
    if existing:  # the same earlier data in both, some of it overlapping the new days
        before = generate_fleet(30, days=28, start="2024-02-12", seed=3)
        before.metrics["server_id"] = before.metrics["server_id"].str.replace("srv-0", "srv-", regex=False)
        before.inventory["server_id"] = before.inventory["server_id"].str.replace(
            "srv-0", "srv-", regex=False
        )
        v = validate(before.inventory, before.metrics, "daily")
        for s in (one, many):
            s.write_inventory(v.inventory)
            s.write_metrics(v.metrics, v.inventory, freq="daily")
        inventory = v.inventory

    whole = ingest(paths, inventory=inventory, add_missing=True, freq=freq)
    one.write_inventory(whole.inventory)
    one.write_metrics(whole.metrics, whole.inventory, freq=freq, mode="merge")

    monkeypatch.setattr(parquet, "MERGE_ROWS", 40)  # several server ranges per partition file too
    blocks = []
    streamed = ingest_to_store(
        many, paths, inventory=inventory, add_missing=True, freq=freq, block_rows=10_000, chunk_rows=7_000,
        on_block=lambda k, n: blocks.append(k),
    )  # fmt: skip
    assert streamed.blocks == len(blocks) >= 5

    pd.testing.assert_frame_equal(_store_rows(many), _store_rows(one))
    pd.testing.assert_frame_equal(many.read_inventory(), one.read_inventory())
    assert streamed.rows == len(whole.metrics) and streamed.servers == whole.metrics["server_id"].nunique()
    assert streamed.added_servers == whole.added_servers
    # the same report: every finding's count, rows in and out, gaps and short series
    assert _findings(streamed.report) == _findings(whole.report)
    assert streamed.report.rows_in == whole.report.rows_in
    assert streamed.report.rows_out == whole.report.rows_out
    assert sorted(streamed.report.short_series) == sorted(whole.report.short_series)
    assert len(streamed.report.gaps) == len(whole.report.gaps)
    for rule in ("non_numeric", "out_of_range", "duplicate_sample", "unsupported_metric"):
        assert streamed.report.count(rule) > 0, rule
    assert not list((tmp_path / "streamed").glob(".ingest-staging-*"))  # the scratch space is gone
    info_one, info_many = one.read_store_info(), many.read_store_info()
    assert {k: info_many[k] for k in ("freq", "metric_columns", "start", "end", "version")} == {
        k: info_one[k] for k in ("freq", "metric_columns", "start", "end", "version")
    }


def test_a_server_split_across_two_files_rolls_up_as_one(tmp_path):
    """The day's p95 needs all of the day's samples: half in one file, half in another (and in
    different chunks) is one complete day with the p95 of all of them."""
    from forecasting.ingest import ingest_to_store

    ts = pd.date_range("2024-05-01", periods=3 * 288, freq="5min", tz="UTC")
    values = np.random.default_rng(1).uniform(0, 100, len(ts)).round(2)
    frame = pd.DataFrame({"timestamp": ts.strftime("%Y-%m-%d %H:%M:%S"), "value": values})
    half = len(ts) // 2 + 17  # mid-day
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir(), b.mkdir()
    frame.iloc[:half].to_csv(a / "web01_cpu_utilization.csv", index=False)
    frame.iloc[half:].to_csv(b / "web01_cpu_utilization.csv", index=False)
    store = open_store(str(tmp_path / "data"))
    result = ingest_to_store(
        store, [a / "web01_cpu_utilization.csv", b / "web01_cpu_utilization.csv"], chunk_rows=100
    )
    got = store.read_metrics()
    day = ts.floor("D")
    want = pd.Series(values).groupby(day).quantile(0.95)
    assert got["timestamp"].tolist() == list(want.index)
    np.testing.assert_allclose(got["cpu_p95"], want.to_numpy(), rtol=1e-6)  # stored as float32
    assert result.report.count("partial_period") == 0 and result.report.count("low_coverage") == 0


def _snapshot(root) -> dict:
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != ".capfc.lock"
    }


def test_a_bad_file_or_block_mid_way_leaves_the_store_as_it_was(tmp_path):
    """Input that fails late — a ragged row in a file's last chunk, after other files and chunks
    were staged; a server sampled too coarsely, found when its block is rolled up — stops the
    ingest with the reason before anything is written: the store is byte for byte as it was."""
    from forecasting.files import FileFormatError
    from forecasting.ingest import ingest_to_store

    paths = _messy_inputs(tmp_path)
    data = tmp_path / "data"
    store = open_store(str(data))
    ingest_to_store(store, paths[:1], chunk_rows=5_000)
    before = _snapshot(data)

    ragged = tmp_path / "export-d.csv"
    text = paths[0].read_text().splitlines()
    ragged.write_text("\n".join([*text[:30_000], text[30_000] + ",1,2", *text[30_001:40_000]]) + "\n")
    with pytest.raises(
        FileFormatError, match=r"export-d.csv is not a well-formed CSV file: 1 row\(s\) .* line 30001"
    ):
        ingest_to_store(store, [*paths[1:], ragged], chunk_rows=5_000, block_rows=10_000)
    assert _snapshot(data) == before

    coarse = tmp_path / "export-e.csv"
    hours = pd.date_range("2024-03-01", periods=200, freq="2h", tz="UTC")
    pd.DataFrame(
        {
            "server_id": "srv-coarse",
            "timestamp": hours.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "metric": "cpu",
            "value": 5.0,
        }
    ).to_csv(coarse, index=False)
    from forecasting.schema import SchemaError

    with pytest.raises(SchemaError, match="srv-coarse cpu_p95 every 0 days 02:00:00"):
        ingest_to_store(store, [*paths[1:], coarse], freq="hourly", block_rows=10_000)
    assert _snapshot(data) == before
    assert not list(data.glob(".ingest-staging-*"))


def test_memory_is_set_by_the_block_not_the_input(tmp_path, monkeypatch):
    """No step holds more than a block: the rollup sees one block's samples at a time, the merge one
    range of servers' rows at a time; a smaller block means more, smaller steps, same store."""
    from forecasting import ingest as ingest_mod
    from forecasting.sources import parquet

    paths = _messy_inputs(tmp_path)
    total = len(paths[0].read_text().splitlines()) - 1
    rolled, merged = [], []
    real_rollup, real_dedupe = ingest_mod._rollup, parquet._dedupe

    def rollup(samples, *a, **kw):
        rolled.append(len(samples))
        return real_rollup(samples, *a, **kw)

    def dedupe(parts, src, schema):
        out = real_dedupe(parts, src, schema)
        merged.append(out.num_rows)
        return out

    monkeypatch.setattr(ingest_mod, "_rollup", rollup)
    monkeypatch.setattr(parquet, "_dedupe", dedupe)
    monkeypatch.setattr(parquet, "MERGE_ROWS", 10)
    stores = {}
    for block in (total, total // 8):
        rolled.clear(), merged.clear()
        store = stores[block] = open_store(str(tmp_path / f"b{block}"))
        result = ingest_mod.ingest_to_store(store, paths[:1], block_rows=block, chunk_rows=3_000)
        assert result.blocks in (-(-total // block), -(-total // block) + 1)  # the size is estimated
        assert 0.7 * result.blocks <= len(rolled) <= result.blocks  # a block may draw none of the 24 servers
        assert max(rolled) <= 2.5 * block  # a stable hash balances the blocks, roughly
        assert sum(rolled) < total  # the rest were rejected on reading (text, a non-capacity metric)
        assert len(merged) >= 10 and max(merged) <= 2 * 10
    small, large = stores[total // 8], stores[total]
    pd.testing.assert_frame_equal(_store_rows(small), _store_rows(large))


def test_cli_ingest_streams_and_says_how_many_blocks(tmp_path, monkeypatch, capsys):
    from forecasting import ingest as ingest_mod

    paths = _messy_inputs(tmp_path)
    monkeypatch.setattr(ingest_mod, "BLOCK_ROWS", 12_000)
    code = main(["--data", str(tmp_path / "data"), "ingest", *map(str, paths)])
    out = capsys.readouterr().out
    assert code == 3  # text and impossible values were rejected, the rest written
    blocks = int(out.split(" block(s))")[0].rsplit("(", 1)[1])
    assert blocks >= 4
    assert "non_numeric" in out and "srv-0023" in set(
        open_store(str(tmp_path / "data")).read_inventory()["server_id"]
    )
