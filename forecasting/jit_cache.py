"""A warm numba cache for containers whose only writable place is an empty ``/tmp`` (Lambda).

Why: numba caches compiled kernels in ``NUMBA_CACHE_DIR`` only if that directory is writable
(its locator proves it by creating a file there), so a cache baked into a read-only image layer
is ignored and the first consolidation pays the compile (≈ 3–8 s). A Lambda function's ``/tmp``
is its own empty storage, which hides whatever the image put there. So the image builds the
cache once into :data:`SEED_DIR`, next to the code it was compiled from (read-only), and
:func:`seed_numba_cache` copies it into numba's cache directory before the first kernel runs.

numba keys a cached kernel on the source file's path, modification time and size (the image's
files never change), the numba version, and the CPU it was compiled for; the image sets
``NUMBA_CPU_NAME=generic`` so a cache built on the CI machine matches Lambda's and Fargate's CPUs.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

SEED_DIR = Path(__file__).resolve().parent / "_jit_seed"

log = logging.getLogger(__name__)


def seed_numba_cache(seed: Path = SEED_DIR, target: str | os.PathLike[str] | None = None) -> int:
    """Copy the image's compiled kernels into numba's cache directory; return files copied.

    A no-op (0) without a seed (a source checkout), without a numba cache directory, when the
    seed *is* the cache directory (the image build writing it), or when every file is already
    there (a warm container). Files are copied under a temporary name and renamed, data files
    before their index, so a process reading the cache meanwhile sees whole files only. A failure
    is logged and ignored: numba then compiles, as it would without a seed.
    """
    if target is None:
        from numba.core import config  # numba's own reading of NUMBA_CACHE_DIR

        target = config.CACHE_DIR
    if not target or not seed.is_dir():
        return 0
    dest_root = Path(target)
    if dest_root.resolve() == seed.resolve():
        return 0
    copied = 0
    try:
        # .nbc (compiled code) before .nbi (the index naming it)
        files = sorted((p for p in seed.rglob("*") if p.is_file()), key=lambda p: (p.suffix == ".nbi", p))
        for src in files:
            dest = dest_root / src.relative_to(seed)
            if dest.exists():
                continue
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmp = dest.with_name(f".{dest.name}.{os.getpid()}.tmp")
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
            copied += 1
    except OSError as e:
        log.warning(
            "numba cache not seeded from %s into %s: %s (kernels compile on first use)", seed, target, e
        )
    return copied
