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
