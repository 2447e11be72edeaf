"""The cost benchmark's model on fixed figures: its arithmetic, limits and manifest reading.

benchmarks/bench_cost.py prices a sharded run on AWS from measured figures; these tests hold the
model to hand-computed answers so the README's table cannot silently go wrong.
"""

from __future__ import annotations

import copy
import importlib.util
import math
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "bench_cost.py"


@pytest.fixture(scope="module")
def bc():
    spec = importlib.util.spec_from_file_location("bench_cost", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up while being defined
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


# A sharded run's manifest as forecasting.shards.publish_shards writes it (engine section), 2,000
# servers in 4 shards: 10 s and 900 MB each, so 20 ms and (900 − 400) / 500 = 1 MB per server
# above a 400 MB base.
MANIFEST = {
    "run_id": "20261204T000000Z-abcd0123456789ab",
    "input": {"servers": 2000, "snapshot": {"bytes": 80_000_000, "count": 40}},
    "engine": {
        "kind": "shards",
        "n_shards": 4,
        "shard_size": 500,
        "shard_seconds": [10.0, 10.0, 10.0, 10.0],
        "shard_peak_rss_mb": [900.0, 900.0, 900.0, 900.0],
        "calibrate_seconds": 12.0,
        "calibrate_peak_rss_mb": 850.0,
        "base_rss_mb": 400.0,
        "publish_peak_rss_mb": 600.0,
    },
    "wall_seconds": 8.0,  # publish_shards' own time
}


def figures(bc, **engine):
    m = copy.deepcopy(MANIFEST)
    m["engine"].update(engine)
    return bc.figures_from_manifest(m, source="test")


def test_manifest_figures_and_rates(bc):
    f = figures(bc)
    assert f.servers == 2000 and f.shard_servers == [500] * 4  # split evenly: no shard_servers
    assert f.publish_seconds == 8.0  # a run published by publish_shards: wall_seconds is Publish's
    assert f.input_bytes == 80_000_000 and f.input_objects == 40
    r = bc.rates(f)
    assert r.basis == "wall seconds"  # no CPU seconds in a manifest
    assert r.shard_s_per_server == pytest.approx(0.02) and r.shard_s_fixed == 0
    assert r.base_mb == 400 and r.shard_mb_per_server == pytest.approx(1.0)
    assert bc.shard_seconds(r, 5000) == pytest.approx(100.0)
    assert bc.shard_mb(r, 5000) == pytest.approx(5400.0)
    assert r.publish_s_per_server == pytest.approx(8.0 / 2000)
    assert bc.publish_mb(r, 10_000) == pytest.approx(400 + 0.1 * 10_000)
    assert "S3 requests" in r.missing and "Plan memory" in r.missing


def test_manifest_robust_to_missing_optional_fields(bc):
    m = {"input": {"servers": 1000}, "engine": {"shard_seconds": [5, 6], "shard_peak_rss_mb": [700, None]}}
    f = bc.figures_from_manifest(m, source="bare")
    assert f.shard_servers == [500, 500] and f.calibrate_seconds is None and f.run_bytes is None
    r = bc.rates(f)
    assert r.base_mb == 0 and any("base RSS" in x for x in r.missing)
    assert {"Calibrate time", "Calibrate memory", "Publish memory"} <= set(r.missing)
    _, rows = bc.table(f, shard_size=5000, sizes=(10_000,))
    assert len(rows) == 4 and all(row.run_usd > 0 for row in rows)
    # a Dask run's wall_seconds is the whole run, not Publish: Publish is then not measured
    dask = {**m, "wall_seconds": 99.0, "engine": {**m["engine"], "engine": "dask"}}
    fd = bc.figures_from_manifest(dask, source="dask")
    assert fd.publish_seconds is None and "high-water mark" in fd.source
    assert "Publish not measured: left out" in bc.lambda_row(bc.rates(f), 10_000, 5000, deployed=False).notes
    # engine.publish_seconds, when the manifest has it, wins
    assert (
        bc.figures_from_manifest(
            {**dask, "engine": {**dask["engine"], "publish_seconds": 4.5}}, source="x"
        ).publish_seconds
        == 4.5
    )


@pytest.mark.parametrize(
    ("manifest", "message"),
    [
        ({"input": {"servers": 10}}, "no engine.shard_seconds"),
        ({"engine": {"shard_seconds": [1.0], "shard_peak_rss_mb": [1.0]}}, "fleet size unknown"),
        ({"input": {"servers": 10}, "engine": {"shard_seconds": [1.0]}}, "shard_peak_rss_mb missing"),
        (
            {"input": {"servers": 10}, "engine": {"shard_seconds": ["x"], "shard_peak_rss_mb": [1]}},
            "not a time",
        ),
    ],
)
def test_manifest_bad_input_says_why(bc, manifest, message):
    with pytest.raises(ValueError, match=message):
        bc.figures_from_manifest(manifest, source="m.json")


def test_lambda_shard_cost_by_hand(bc):
    r = bc.rates(figures(bc))
    row = bc.lambda_row(r, 10_000, 5000, deployed=False)
    mem = math.ceil(5400 * 1.25)  # 6,750 MB ≥ 1,769: a full vCPU, so 100 s of CPU stay 100 s
    assert bc.lambda_memory_mb(5400) == mem
    seconds = 100.0 + bc.ASSUMPTIONS["lambda_init_s"]
    per_invocation = mem / 1024 * seconds * 0.0000166667 + 0.20 / 1_000_000
    assert row.parts["lambda shards"] == pytest.approx(2 * per_invocation * 1.05)
    assert row.parts["step functions"] == pytest.approx((4 + 2 * 1.05) * 0.025 / 1000)
    assert row.n_shards == 2 and row.concurrency == 2 and row.fits
    assert row.run_usd == pytest.approx(sum(row.parts.values()))
    assert row.month_usd == pytest.approx(row.run_usd * 52 / 12)


def test_doubling_servers_doubles_the_shards_cost(bc):
    r = bc.rates(figures(bc))
    for make in (
        lambda n: bc.lambda_row(r, n, 5000, deployed=False).parts["lambda shards"],
        lambda n: bc.lambda_row(r, n, 5000, deployed=True).parts["lambda shards"],
        lambda n: bc.fargate_row(r, n, 5000).parts["fargate shards"],
    ):
        assert make(200_000) == pytest.approx(2 * make(100_000))
    # wall time: with every shard at once, twice the shards take the same time on Lambda …
    a, b = (bc.lambda_row(r, n, 5000, deployed=False) for n in (100_000, 200_000))
    assert a.times["shards"] == b.times["shards"]
    # … but the deployed INLINE Map runs 10 at once: twice the waves
    a, b = (bc.lambda_row(r, n, 5000, deployed=True) for n in (100_000, 200_000))
    assert a.concurrency == b.concurrency == 10
    assert b.times["shards"] == pytest.approx(2 * a.times["shards"])


def test_fifteen_minute_limit_recuts_the_shards(bc):
    # 0.5 s per server: 5,000 servers would take 42 min on one vCPU
    f = figures(bc, shard_seconds=[250.0] * 4, shard_peak_rss_mb=[450.0] * 4)
    r = bc.rates(f)
    budget = 900 * 0.8 - bc.ASSUMPTIONS["lambda_init_s"]
    assert bc.max_lambda_shard(r) == (math.floor(budget / 0.5), "15 min")
    row = bc.lambda_row(r, 100_000, 5000, deployed=False)
    assert not row.fits
    assert row.shard_size == 1430 and row.n_shards == math.ceil(100_000 / 1430)
    assert any(
        "shard size 5,000 does not fit (15 min" in n and "use shard size 1,430" in n for n in row.notes
    )
    assert bc.shard_seconds(r, row.shard_size) + bc.ASSUMPTIONS["lambda_init_s"] <= 900
    # Fargate has no 15-minute limit: the shards stay at 5,000
    assert bc.fargate_row(r, 100_000, 5000).n_shards == 20


def test_memory_limit_recuts_the_shards(bc):
    f = figures(bc, shard_peak_rss_mb=[1400.0] * 4)  # 2 MB per server above 400 MB
    r = bc.rates(f)
    largest, why = bc.max_lambda_shard(r)
    assert why == "10,240 MB" and largest == math.floor((10_240 / 1.25 - 400) / 2)
    row = bc.lambda_row(r, 100_000, 5000, deployed=False)
    assert not row.fits and row.shard_size == largest
    assert bc.lambda_memory_mb(bc.shard_mb(r, largest)) <= 10_240


def test_publish_that_outgrows_lambda_and_fargate_is_flagged(bc):
    r = bc.rates(figures(bc))  # Publish: 400 MB + 0.1 MB per server
    small = bc.lambda_row(r, 10_000, 5000, deployed=False)
    assert "lambda publish" in small.parts and small.fits
    mid = bc.lambda_row(r, 100_000, 5000, deployed=False)  # 10.4 GB × 1.25: past Lambda's 10 GB
    assert "fargate publish" in mid.parts and not mid.fits
    assert any(n.startswith("Publish does not fit a Lambda") for n in mid.notes)
    huge = bc.fargate_row(r, 2_000_000, 5000)  # 200 GB: past Fargate's 120 GB
    assert any("Publish does not fit any Fargate task" in n for n in huge.notes)


def test_limits_and_sizes(bc):
    assert bc.lambda_memory_mb(100) == 1769  # at least one vCPU
    assert bc.lambda_memory_mb(8192) == 10_240 and bc.lambda_memory_mb(8193) is None
    assert bc.lambda_vcpu(10_240) == pytest.approx(10_240 / 1769) and bc.lambda_vcpu(20_000) == 6
    assert bc.lambda_step_seconds(10.0, 885) == pytest.approx(10.0 * 1769 / 885)  # half a vCPU
    assert bc.fargate_size(3000) == (1, 4)  # 3.66 GB → 4 GB, on 1 vCPU
    assert bc.fargate_size(9000) == (2, 11)  # 10.99 GB: past 1 vCPU's 8 GB
    assert bc.fargate_size(30_000) == (8, 40)  # 36.6 GB: 8 vCPU in 4 GB steps
    assert bc.fargate_size(100_000) is None
    hour = 0.04048 + 2 * 0.004445
    assert bc.fargate_cost(1, 2, 10) == bc.fargate_cost(1, 2, 60) == pytest.approx(hour / 60)
    assert bc.fargate_cost(1, 2, 3600) == pytest.approx(hour)


def test_two_shard_sizes_separate_fixed_and_per_server(bc):
    f = figures(bc, shard_seconds=[12.0] * 4, shard_peak_rss_mb=[900.0] * 4)
    f.extra_shards = [{"servers": 2000, "seconds": 42.0, "cpu_seconds": None, "peak_rss_mb": 1800.0}]
    r = bc.rates(f)
    assert r.shard_s_per_server == pytest.approx(0.02) and r.shard_s_fixed == pytest.approx(2.0)
    assert r.shard_mb_per_server == pytest.approx(0.6) and r.base_mb == pytest.approx(600.0)
    assert "500 and 2,000" in r.fit


def test_dask_bills_every_worker_for_the_whole_run(bc):
    r = bc.rates(figures(bc))
    row = bc.dask_row(r, 100_000, 5000)
    assert row.concurrency == 20
    vcpu, gb = bc.fargate_size(bc.shard_mb(r, 5000))
    assert row.parts["fargate workers"] == pytest.approx(20 * bc.fargate_cost(vcpu, gb, row.wall_s))
    assert row.times["start"] == bc.ASSUMPTIONS["dask_cluster_start_s"]


def test_render_and_request_tiers(bc):
    f = figures(bc, shard_seconds=[250.0] * 4, shard_peak_rss_mb=[450.0] * 4)
    f.requests = {
        "plan": {"put": 10, "get": 10, "free": 0},
        "calibrate": {"put": 5, "get": 50, "free": 0},
        **{f"shard{k}": {"put": 40, "get": 100, "free": 0} for k in range(4)},
        "publish": {"put": 20, "get": 80, "free": 4},
    }
    r, rows = bc.table(f, shard_size=5000)
    assert r.requests_per_shard == {"put": 45.0, "get": 120.0}
    count, usd = bc._requests_cost(r, 10)
    assert count == 15 + 10 * 45 + 60 + 10 * 120
    assert usd == pytest.approx((15 + 450) * 0.005 / 1000 + (60 + 1200) * 0.0004 / 1000)
    text = bc.render(f, r, rows, 5000)
    assert "| servers | way | shards | wall | $ per run | $ per month | bottleneck |" in text
    assert text.count("Lambda + Step Functions, sized ⚠") == 3 and "use shard size 1,430" in text
    assert "list price, check before use" in text
    assert bc.classify("PUT /b/lake/runs/x/part-0.parquet") == "put"
    assert bc.classify("GET /b?list-type=2&prefix=lake%2Fmetrics%2F") == "put"  # LIST
    assert bc.classify("GET /b/lake/metrics/part-0.parquet") == "get"
    assert bc.classify("HEAD /b/lake/store.json") == "get"
    assert bc.classify("DELETE /b/lake/runs/x/shards/0/done.json") == "free"
    assert bc.classify("POST /b?delete") == "free"


def test_cli_bad_manifest_exits_2_with_the_reason(bc, tmp_path, capsys):
    bad = tmp_path / "manifest.json"
    bad.write_text('{"run_id": "x"}')
    with pytest.raises(SystemExit) as e:
        bc.main(["--manifest", str(bad)])
    assert e.value.code == 2 and "no engine.shard_seconds" in capsys.readouterr().err


def test_cli_reads_a_manifest_and_its_run_folder(bc, tmp_path, capsys):
    run = tmp_path / "runs" / MANIFEST["run_id"]
    (run / "forecasts").mkdir(parents=True)
    (run / "forecasts" / "part-00000.parquet").write_bytes(b"x" * 3000)
    (run / "manifest.json").write_text(__import__("json").dumps(MANIFEST))
    bc.main(["--manifest", str(run / "manifest.json"), "--publish-rss-mb", "700"])
    out = capsys.readouterr().out
    size = 3000 + (run / "manifest.json").stat().st_size
    assert (
        f"{size / 1e6:,.1f} MB" in out
        and "Publish (grows with the fleet: one process) | wall 8.0 s, peak RSS 700 MB" in out
    )
    assert out.count("| 1,000,000 |") == 4


def test_two_fleet_sizes_separate_publish_fixed_and_per_server(bc):
    f = figures(bc)  # Publish at 2,000 servers: 8 s (wall), 600 MB
    f.extra_publish = [{"servers": 500, "seconds": 3.5, "cpu_seconds": None, "peak_rss_mb": 450.0}]
    r = bc.rates(f)
    assert r.publish_s_per_server == pytest.approx(0.003) and r.publish_s_fixed == pytest.approx(2.0)
    assert r.publish_mb_per_server == pytest.approx(0.1) and r.publish_base_mb == pytest.approx(400.0)
    assert "500 and 2,000" in r.publish_fit
    # Publish's time at 100,000 servers on the sized Lambda row: fixed + per server, plus a cold start
    row = bc.lambda_row(r, 100_000, 5000, deployed=False)
    assert "fargate publish" in row.parts  # 400 MB + 10 GB × 1.25: past Lambda's memory
    assert row.times["publish"] == pytest.approx(2.0 + 0.003 * 100_000 + bc.ASSUMPTIONS["fargate_start_s"])
