"""What "only forward, never lose data" costs, and what each fault does to the plan store.

1. Publish cost: the compare-and-swap publish (every run object written only if absent, LATEST
   by If-Match / lock + rename after reading the current run's manifest) against the old one
   (plain writes, LATEST overwritten), on the local disk and on SeaweedFS (S3 on loopback);
   median of several publishes of the same plan tables, in ms.
2. The fault outcomes table: real ``python -m forecasting`` runs and ingests killed with SIGKILL
   at seeded random moments (local and S3), two runs started at once, and the S3 endpoint
   returning 500s, slowed and stopped mid-run (a fault proxy in front of SeaweedFS). Each row has
   passed the invariants of tests/fault_scenarios.py (nothing acknowledged lost, LATEST complete
   and never back, the app's read model serving the previous plan with a notice).

    .venv/bin/python benchmarks/bench_faults.py [--publish-only]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402

from forecasting.sources import new_run_id  # noqa: E402
from forecasting.sources.base import manifest_json  # noqa: E402
from forecasting.sources.parquet import ROW_GROUP_SIZE  # noqa: E402
from tests import fault_scenarios as fs  # noqa: E402
from tests.s3server import SeaweedServer, demo_fleet, demo_plan  # noqa: E402

ROUNDS = 7


def old_publish(store, run_id: str, tables: dict, manifest: dict) -> None:
    """The publish before this change, as it was: each file written (to a temporary name and
    renamed locally, no fsync; one pyarrow PUT on S3), then LATEST overwritten unconditionally."""
    base = store._p("runs", run_id)
    store.fs.create_dir(base, recursive=True)

    def put(path: str, write) -> None:
        if not store.atomic_rename:
            write(path)
            return
        tmp = f"{base}/.tmp-{path.rsplit('/', 1)[1]}"
        write(tmp)
        store.fs.move(tmp, path)

    for name, frame in tables.items():
        table = pa.Table.from_pandas(frame, preserve_index=False)
        put(
            f"{base}/{name}.parquet",
            lambda p, t=table: pq.write_table(
                t, p, filesystem=store.fs, row_group_size=ROW_GROUP_SIZE, compression="zstd"
            ),
        )
    for path, data in (
        (f"{base}/manifest.json", manifest_json(manifest)),
        (store._p("runs", "LATEST"), run_id.encode()),
    ):
        put(path, lambda p, d=data: store._put(p, d))


def _ms(fn, rounds: int = ROUNDS) -> float:
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def publish_costs(targets: list[fs.Target]) -> list[tuple[str, float, float, int]]:
    inventory, _ = demo_fleet(days=20)
    tables = demo_plan(inventory, 0)
    size = 0
    for frame in tables.values():
        sink = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(frame, preserve_index=False), sink, row_group_size=ROW_GROUP_SIZE)
        size += len(sink.getvalue())
    rows = []
    for target in targets:
        store = target.open()
        manifest = {"input": {"snapshot": {"as_of": {"version": 1, "end": "2024-01-01"}}}}

        def new(store=store, manifest=manifest) -> None:
            run = new_run_id()
            store.publish_run(run, tables, {**manifest, "run_id": run})

        def old(store=store, manifest=manifest) -> None:
            run = new_run_id()
            old_publish(store, run, tables, {**manifest, "run_id": run})

        new()  # warm both paths (clients, first directory)
        old()
        rows.append((target.kind, _ms(old), _ms(new), size))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--publish-only", action="store_true", help="skip the fault scenarios (minutes)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="capfc-bench-faults-"))
    weed = SeaweedServer()
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    try:
        print("Publish one run (5 plan tables, demo fleet), median of", ROUNDS, "(ms):")
        print(f"  {'backend':8} {'old (overwrite)':>16} {'CAS publish':>12} {'ratio':>7}  bytes")
        for kind, old_ms, new_ms, size in publish_costs([fs.local_target(work / "pub"), fs.s3_target(weed)]):
            print(f"  {kind:8} {old_ms:16.1f} {new_ms:12.1f} {new_ms / old_ms:6.2f}×  {size:,}")
        if args.publish_only:
            return
        outcomes: list[fs.Outcome] = []
        for target in (fs.local_target(work / "runs-local"), fs.s3_target(weed)):
            fs.seed_fleet(target.open())
            outcomes.append(fs.kill_runs(target, seed=13, points=3))
            outcomes.append(fs.two_runs_at_once(target))
            outcomes.append(
                fs.kill_ingests(target, seed=29, workdir=Path(tempfile.mkdtemp(dir=work)), points=3)
            )
        target = fs.s3_target(weed, proxy=True)
        try:
            fs.seed_fleet(target.open())
            t0 = time.perf_counter()
            assert fs.cli(target, *fs.RUN_ARGS).returncode == 0
            outcomes += fs.s3_faults(target, time.perf_counter() - t0)
        finally:
            target.proxy.stop()
        print(
            "\nFault outcomes (every row passed: nothing acknowledged lost, LATEST complete and never back):"
        )
        print(f"  {'fault':30} {'backend':7} {'runs':>4} {'s':>6}  outcome")
        for o in outcomes:
            print(f"  {o.fault:30} {o.backend:7} {o.runs:4d} {o.seconds:6.0f}  {o.outcome}")
    finally:
        weed.stop()


if __name__ == "__main__":
    main()
