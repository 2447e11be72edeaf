"""The image's warm numba cache (forecasting/jit_cache.py): a seed compiled once, copied into an
empty cache directory, is loaded by numba without compiling (the Lambda cold-start fix).

Each numba run is its own process, as in the image: one builds the seed (the Docker build step),
another starts with an empty cache directory and a read-only seed (a Lambda's empty /tmp).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from forecasting.jit_cache import seed_numba_cache

ROOT = Path(__file__).resolve().parents[1]

# Runs the kernels and reports numba's own cache counters for them.
PROBE = """
import json, sys
from pathlib import Path
from forecasting import consolidation
from forecasting.jit_cache import seed_numba_cache
seeded = seed_numba_cache(Path(sys.argv[1])) if len(sys.argv) > 1 else 0
consolidation.warm_up()
stats = {}
for k in (consolidation._pack_partition, consolidation._group_sums):
    stats[k.py_func.__name__] = {"hits": sum(k.stats.cache_hits.values()),
                                 "misses": sum(k.stats.cache_misses.values())}
print(json.dumps({"seeded": seeded, "kernels": stats}))
"""


def _probe(cache_dir: Path, *args: str) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("NUMBA_")}
    env.update(NUMBA_CACHE_DIR=str(cache_dir), NUMBA_CPU_NAME="generic", PYTHONPATH=str(ROOT))
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, *args], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_a_seeded_empty_cache_loads_the_kernels_without_compiling(tmp_path: Path) -> None:
    seed = tmp_path / "seed"
    built = _probe(seed)  # the image build: compiles into the seed
    assert all(k["misses"] >= 1 and k["hits"] == 0 for k in built["kernels"].values()), built
    for p in [seed, *seed.rglob("*")]:  # read-only, as in the image layer
        p.chmod(0o555 if p.is_dir() else 0o444)
    try:
        cold = _probe(tmp_path / "empty-tmp" / "numba-cache")  # no seed: compiles again
        assert all(k["misses"] >= 1 for k in cold["kernels"].values()), cold
        warm = _probe(tmp_path / "lambda-tmp" / "numba-cache", str(seed))
        assert warm["seeded"] == len([p for p in seed.rglob("*") if p.is_file()]) >= 4
        assert all(k["hits"] >= 1 and k["misses"] == 0 for k in warm["kernels"].values()), warm
    finally:
        for p in [seed, *seed.rglob("*")]:
            p.chmod(0o755 if p.is_dir() else 0o644)


def test_seeding_is_idempotent_and_skips_what_is_there(tmp_path: Path) -> None:
    seed = tmp_path / "seed" / "forecasting_abc"
    seed.mkdir(parents=True)
    (seed / "k-1.py311.1.nbc").write_bytes(b"code")
    (seed / "k-1.py311.nbi").write_bytes(b"index")
    target = tmp_path / "tmp" / "numba-cache"
    assert seed_numba_cache(seed.parent, target) == 2
    assert (target / "forecasting_abc" / "k-1.py311.nbi").read_bytes() == b"index"
    assert seed_numba_cache(seed.parent, target) == 0  # a warm container: nothing copied again
    assert not list(target.rglob("*.tmp"))


def test_seeding_is_a_no_op_without_a_seed_or_into_itself(tmp_path: Path) -> None:
    assert seed_numba_cache(tmp_path / "absent", tmp_path / "cache") == 0
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "a.nbi").write_bytes(b"x")
    assert seed_numba_cache(tmp_path / "seed", tmp_path / "seed") == 0  # the build writing the seed
    assert seed_numba_cache(tmp_path / "seed", "") == 0  # numba without a cache directory


def test_a_target_that_cannot_be_written_is_logged_not_raised(tmp_path: Path, caplog) -> None:
    (tmp_path / "seed").mkdir()
    (tmp_path / "seed" / "a.nbi").write_bytes(b"x")
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert seed_numba_cache(tmp_path / "seed", blocker / "cache") == 0
    assert "kernels compile on first use" in caplog.text
