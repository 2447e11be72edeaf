"""Cost and time of one sharded run on AWS at 10k / 100k / 1M servers, from measured per-shard figures.

Three ways of running the same four steps (``forecasting/shards.py``: Plan → Calibrate →
shard × n → Publish):

- **Lambda + Step Functions**: the state machine of ``forecasting/aws/`` (each step a Lambda,
  shards in a Map). Two rows: *as deployed* (the CDK's function sizes, ``infra/capfc_infra/
  batch.py``, and the definition's INLINE Map at ``CAPFC_SHARD_CONCURRENCY``) and *sized*
  (memory from the measured peak RSS, a DISTRIBUTED Map up to Lambda's account concurrency).
- **Fargate tasks from Step Functions**: the same machine, every step an ECS RunTask (``.sync``)
  on Fargate, one task per shard: no 15-minute limit, up to 16 vCPU / 120 GB per task.
- **Dask on Fargate**: dask-cloudprovider's ``FargateCluster`` (a scheduler task and N worker
  tasks) and a driver task running ``python -m forecasting run --engine dask --scheduler …``
  (Plan and Publish in the driver, Calibrate and the shards on the workers).

**Measured inputs.** By default it generates a fleet (``--servers``, 5 metrics × 4 years daily),
starts SeaweedFS (a real S3 server, tests/s3server.py) behind a recording proxy, and runs the
four steps of a sharded run each in a fresh process, as Lambda and Fargate run them: wall time,
CPU time, peak RSS, and the S3 requests each step made (counted at the proxy). The published
manifest's ``engine`` section (``shard_seconds``, ``shard_peak_rss_mb``, ``calibrate_*``) and the
published run's size come from that run. Two more points split fixed from per-server costs: the
same fleet planned as one shard (the shard step) and a second, smaller fleet run and published
(``--second-fleet``, Publish). ``--manifest PATH`` reads the figures of an earlier run's
manifest instead (a bigger one); fields it lacks are reported as not measured.

**The model** (pure functions, tested in tests/test_bench_cost.py): shard time = seconds per
server × shard size (CPU seconds of our run by default, since the machine is shared; ``--basis
wall`` to use wall time) + a fixed part per shard; shard memory = a fixed part + RSS per server ×
shard size (lines through the two shard sizes); Calibrate is fixed (its sample does not grow with the fleet); Plan and Publish grow
with the fleet (Publish holds the whole fleet's forecasts until the lead's partitioned publish
lands). Prices are us-east-1 list prices, in one table below. Run:

    .venv/bin/python benchmarks/bench_cost.py                       # 2,000 servers, shards of 500
    .venv/bin/python benchmarks/bench_cost.py --manifest data/runs/<id>/manifest.json
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]

# --------------------------------------------------------------------------- prices and limits

# List price, check before use. AWS public pricing pages, us-east-1, read December 2026:
# aws.amazon.com/lambda/pricing (x86), /step-functions/pricing (Standard), /fargate/pricing
# (Linux/x86, on demand), /s3/pricing (S3 Standard, first 50 TB).
PRICES: dict[str, Any] = {
    "as_of": "2026-12",
    "region": "us-east-1",
    "note": "list price, check before use",
    "lambda_gb_second": 0.0000166667,  # x86, first 6 billion GB-s a month
    "lambda_request": 0.20 / 1_000_000,
    "sfn_transition": 0.025 / 1_000,  # Standard workflows
    "fargate_vcpu_hour": 0.04048,
    "fargate_gb_hour": 0.004445,
    "s3_put_request": 0.005 / 1_000,  # PUT, COPY, POST, LIST
    "s3_get_request": 0.0004 / 1_000,  # GET, SELECT and all other requests (HEAD); DELETE is free
    "s3_gb_month": 0.023,
}

# Service limits (AWS documentation): Lambda memory 128–10,240 MB with CPU in proportion,
# 1,769 MB = one vCPU, 6 vCPU at 10,240 MB; 15-minute timeout; 1,000 concurrent executions per
# account and region by default; an INLINE Map runs ≤ 40 iterations at once, a DISTRIBUTED Map
# ≤ 10,000 child executions; Fargate bills per second from the image pull to the task's end, one
# minute minimum; Fargate task sizes below.
LIMITS: dict[str, Any] = {
    "lambda_min_mb": 128,
    "lambda_max_mb": 10_240,
    "lambda_mb_per_vcpu": 1_769,
    "lambda_max_vcpu": 6,
    "lambda_timeout_s": 900,
    "lambda_account_concurrency": 1_000,
    "inline_map_concurrency": 40,
    "distributed_map_concurrency": 10_000,
    "fargate_min_billed_s": 60,
}

# Fargate (vCPU, memory GB choices), Linux platform 1.4.0.
FARGATE_SIZES: tuple[tuple[float, tuple[float, ...]], ...] = (
    (0.25, (0.5, 1, 2)),
    (0.5, (1, 2, 3, 4)),
    (1, tuple(range(2, 9))),
    (2, tuple(range(4, 17))),
    (4, tuple(range(8, 31))),
    (8, tuple(range(16, 61, 4))),
    (16, tuple(range(32, 121, 8))),
)

# What the project deploys today (infra/capfc_infra/batch.py FUNCTIONS; the definition's Map mode
# and the shard_concurrency setting's default).
DEPLOYED = {
    "plan_mb": 2_048,
    "calibrate_mb": 4_096,
    "shard_mb": 10_240,
    "publish_mb": 4_096,
    "map_concurrency": 10,
}

# Assumptions that no run here can measure (say so wherever they are used).
ASSUMPTIONS: dict[str, Any] = {
    "memory_headroom": 1.25,  # memory setting ≥ measured peak RSS × this
    "time_margin": 0.8,  # a Lambda must be planned to finish within 80 % of its 15 minutes
    "lambda_init_s": 5.0,  # container-image cold start incl. imports (bench_image: init 1.6–4.6 s here)
    "fargate_start_s": 60.0,  # task start: ENI, 1.2 GB image pull, imports; billed (from the pull)
    "dask_cluster_start_s": 180.0,  # FargateCluster: scheduler task up, then the worker tasks
    "dask_max_workers": 100,
    "dask_scheduler": (1, 4),  # dask-cloudprovider's default scheduler task: 1 vCPU, 4 GB
    "fargate_vcpu_quota": 1_000,  # "Fargate On-Demand vCPU resource count": per account, check yours
    "sfn_retry_fraction": 0.05,  # share of tasks retried once (transitions and compute)
    "runs_per_month": 52 / 12,  # weekly runs
    "keep_runs": 30,  # CAPFC_KEEP_RUNS default: published runs kept in S3
}

SIZES = (10_000, 100_000, 1_000_000)


# --------------------------------------------------------------------------- measured figures


@dataclass
class Figures:
    """What one real run measured; None = not measured (the model says so where it matters)."""

    source: str
    servers: int
    shard_servers: list[int]
    shard_seconds: list[float]  # wall
    shard_peak_rss_mb: list[float]
    shard_cpu_seconds: list[float] | None = None
    base_rss_mb: float | None = None  # a fresh process after importing the batch code
    plan_seconds: float | None = None
    plan_cpu_seconds: float | None = None
    plan_peak_rss_mb: float | None = None
    calibrate_seconds: float | None = None
    calibrate_cpu_seconds: float | None = None
    calibrate_peak_rss_mb: float | None = None
    publish_seconds: float | None = None
    publish_cpu_seconds: float | None = None
    publish_peak_rss_mb: float | None = None
    run_bytes: int | None = None  # the published runs/<id>/
    input_bytes: int | None = None  # the input the run read (inventory, metrics)
    requests: dict[str, dict[str, int]] | None = None  # step → {"put": n, "get": n, "free": n}
    load: list[float] = field(default_factory=list)  # 1-minute load averages seen during the run
    cores: int | None = None
    # shards of another size (a second plan over the same fleet): a fixed part and a per-server part
    extra_shards: list[dict] = field(
        default_factory=list
    )  # {"servers", "seconds", "cpu_seconds", "peak_rss_mb"}
    # Publish of another fleet size (a second, smaller fleet): Publish's fixed and per-server parts
    extra_publish: list[dict] = field(
        default_factory=list
    )  # {"servers", "seconds", "cpu_seconds", "peak_rss_mb"}
    inventory_mb: float | None = None  # the fleet's inventory in memory (what Plan holds)
    input_objects: int | None = None  # objects under inventory/ and metrics/ the run read

    def basis(self, step: str, prefer_cpu: bool) -> float | None:
        """The seconds the model scales for a step: CPU seconds when measured and preferred."""
        cpu = getattr(self, f"{step}_cpu_seconds")
        wall = getattr(self, f"{step}_seconds")
        return cpu if prefer_cpu and cpu is not None else wall


def _num(x: Any) -> float | None:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def figures_from_manifest(manifest: dict, *, source: str, run_dir: Path | None = None) -> Figures:
    """The figures of a published sharded run's manifest; optional fields may be absent.

    Required: ``engine.shard_seconds`` and a fleet size (``input.servers`` or the shards'
    servers). Everything else is read when present: ``engine.shard_servers`` (else the servers
    split evenly), ``shard_peak_rss_mb``, ``shard_cpu_seconds``, ``calibrate_*``, ``plan_*``,
    ``publish_seconds``/``publish_peak_rss_mb``/``publish_cpu_seconds`` (for a run published
    by ``publish_shards`` directly, its ``wall_seconds`` is the Publish step's own time),
    ``base_rss_mb``; the run's size from ``run_dir`` (the manifest's folder) when it is there.
    """
    eng = manifest.get("engine")
    if not isinstance(eng, dict) or not eng.get("shard_seconds"):
        raise ValueError(
            f"{source}: no engine.shard_seconds — not the manifest of a sharded run "
            "(run with --engine dask, or forecasting.shards.run_sharded)"
        )
    seconds = [_num(s) for s in eng["shard_seconds"]]
    if any(s is None or s < 0 for s in seconds):
        raise ValueError(
            f"{source}: engine.shard_seconds holds a value that is not a time: {eng['shard_seconds']}"
        )
    n = len(seconds)
    servers = int((manifest.get("input") or {}).get("servers") or 0)
    shard_servers = eng.get("shard_servers")
    if not shard_servers or len(shard_servers) != n:
        if not servers:
            raise ValueError(f"{source}: neither input.servers nor engine.shard_servers: fleet size unknown")
        shard_servers = [servers // n + (1 if k < servers % n else 0) for k in range(n)]
    shard_servers = [int(s) for s in shard_servers]
    servers = servers or sum(shard_servers)
    rss = [_num(r) for r in eng.get("shard_peak_rss_mb") or []]
    rss = [r for r in rss if r is not None]
    if not rss:
        raise ValueError(f"{source}: engine.shard_peak_rss_mb missing: shard memory was not measured")
    cpu = eng.get("shard_cpu_seconds")
    cpu = [float(c) for c in cpu] if cpu and len(cpu) == n and all(_num(c) is not None for c in cpu) else None
    publish_s = _num(eng.get("publish_seconds"))
    if publish_s is None and eng.get("engine") != "dask":
        publish_s = _num(manifest.get("wall_seconds"))  # publish_shards times itself
    run_bytes = None
    if run_dir is not None and run_dir.is_dir():
        run_bytes = sum(p.stat().st_size for p in run_dir.rglob("*") if p.is_file())
    snapshot = (manifest.get("input") or {}).get("snapshot") or {}
    if eng.get("engine") == "dask":
        # a Dask worker runs several tasks: its peak RSS is the high-water mark of all of them
        source += " (Dask: a shard's peak RSS is its worker's high-water mark, Calibrate's included)"
    return Figures(
        source=source,
        servers=servers,
        shard_servers=shard_servers,
        shard_seconds=[float(s) for s in seconds],
        shard_peak_rss_mb=[float(r) for r in rss],
        shard_cpu_seconds=cpu,
        base_rss_mb=_num(eng.get("base_rss_mb")),
        plan_seconds=_num(eng.get("plan_seconds")),
        plan_cpu_seconds=_num(eng.get("plan_cpu_seconds")),
        plan_peak_rss_mb=_num(eng.get("plan_peak_rss_mb")),
        calibrate_seconds=_num(eng.get("calibrate_seconds")),
        calibrate_cpu_seconds=_num(eng.get("calibrate_cpu_seconds")),
        calibrate_peak_rss_mb=_num(eng.get("calibrate_peak_rss_mb")),
        publish_seconds=publish_s,
        publish_cpu_seconds=_num(eng.get("publish_cpu_seconds")),
        publish_peak_rss_mb=_num(eng.get("publish_peak_rss_mb")),
        run_bytes=run_bytes,
        input_bytes=int(snapshot["bytes"]) if _num(snapshot.get("bytes")) is not None else None,
        input_objects=int(snapshot["count"]) if _num(snapshot.get("count")) is not None else None,
    )


# --------------------------------------------------------------------------- the model


@dataclass
class Rates:
    """Per-server and fixed figures the model scales, derived once from the measured run."""

    shard_s_per_server: float
    shard_s_fixed: (
        float  # per shard whatever its size (reading the plan, the pooled choices, listing the input)
    )
    shard_mb_per_server: float
    base_mb: float  # a shard's memory without servers
    fit: str  # how the shard figures were obtained
    calibrate_s: float
    calibrate_mb: float
    plan_s_per_server: float
    plan_mb: float  # Plan's measured peak
    plan_mb_per_server: float  # what it adds per server beyond the measured fleet
    servers: int  # the measured fleet
    publish_s_per_server: float | None
    publish_mb_per_server: float | None
    publish_base_mb: float
    publish_s_fixed: float
    publish_fit: str
    run_bytes_per_server: float | None
    input_bytes_per_server: float | None
    requests_fixed: dict[str, float]  # plan + calibrate
    requests_per_shard: dict[str, float]  # one shard, plus its share of Publish
    basis: str
    missing: list[str]


def _publish_rates(
    f: Figures, publish_s: float | None, use_cpu: bool, base: float, missing: list[str]
) -> dict:
    """Publish's seconds and MB: a line through two fleet sizes when measured, else above a base."""
    extra = [
        e
        for e in f.extra_publish
        if e.get("servers") and e.get("cpu_seconds" if use_cpu else "seconds") is not None
    ]
    if publish_s is None:
        missing.append("Publish time")
    if publish_s is not None and f.publish_peak_rss_mb is not None and extra:
        xs = [float(f.servers)] + [float(e["servers"]) for e in extra]
        s_per, s_fixed = _line(
            xs, [publish_s] + [float(e["cpu_seconds" if use_cpu else "seconds"]) for e in extra]
        )
        mb_per, mb_base = _line(xs, [f.publish_peak_rss_mb] + [float(e["peak_rss_mb"]) for e in extra])
        sizes = " and ".join(f"{int(x):,}" for x in sorted(set(xs)))
        return {
            "publish_s_per_server": s_per,
            "publish_s_fixed": s_fixed,
            "publish_mb_per_server": mb_per,
            "publish_base_mb": mb_base,
            "publish_fit": f"a line through fleets of {sizes} servers",
        }
    return {
        "publish_s_per_server": None if publish_s is None else publish_s / f.servers,
        "publish_s_fixed": 0.0,
        "publish_mb_per_server": (
            None if f.publish_peak_rss_mb is None else max(0.0, f.publish_peak_rss_mb - base) / f.servers
        ),
        "publish_base_mb": base,
        "publish_fit": "one fleet size, proportional above a fresh process's RSS",
    }


def _line(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least-squares slope and intercept (intercept ≥ 0; through the origin with one x)."""
    if len(set(xs)) < 2:
        return sum(ys) / sum(xs), 0.0
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    intercept = my - slope * mx
    if intercept < 0 or slope <= 0:
        return sum(x * y for x, y in zip(xs, ys)) / sum(x * x for x in xs), 0.0
    return slope, intercept


def rates(f: Figures, *, prefer_cpu: bool = True) -> Rates:
    """Seconds and MB per server (shards, Plan, Publish), fixed costs (Calibrate), requests."""
    missing: list[str] = []
    extra = [e for e in f.extra_shards if e.get("servers")]
    use_cpu = (
        prefer_cpu
        and f.shard_cpu_seconds is not None
        and all(e.get("cpu_seconds") is not None for e in extra)
    )
    shard_s = f.shard_cpu_seconds if use_cpu else f.shard_seconds
    servers = sum(f.shard_servers)
    if servers <= 0:
        raise ValueError("the measured shards hold no servers")
    xs = [float(n) for n in f.shard_servers] + [float(e["servers"]) for e in extra]
    ts = list(shard_s) + [float(e["cpu_seconds" if use_cpu else "seconds"]) for e in extra]
    ms = list(f.shard_peak_rss_mb) + [float(e["peak_rss_mb"]) for e in extra]
    sizes = sorted({int(x) for x in xs})
    if len(sizes) >= 2:
        s_per, s_fixed = _line(xs, ts)
        mb_per, base = _line(xs, ms)
        fit = f"a line through shards of {' and '.join(f'{n:,}' for n in sizes)} servers"
    else:
        s_per, s_fixed = sum(ts) / sum(xs), 0.0
        base = f.base_rss_mb if f.base_rss_mb is not None else 0.0
        # memory per server: the worst shard, above a fresh process's base
        mb_per = max((m - base) / max(1.0, x) for x, m in zip(xs, ms))
        if f.base_rss_mb is None:
            missing.append("base RSS (shard memory taken as proportional to its servers)")
            fit = "proportional to the servers of one shard size"
        else:
            fit = "one shard size, above a fresh process's RSS"
    import_base = f.base_rss_mb if f.base_rss_mb is not None else 0.0

    calibrate_s = f.basis("calibrate", use_cpu)
    if calibrate_s is None:
        missing.append("Calibrate time")
    if f.calibrate_peak_rss_mb is None:
        missing.append("Calibrate memory")
    plan_s = f.basis("plan", use_cpu)
    publish_s = f.basis("publish", use_cpu)
    if f.plan_peak_rss_mb is None:
        missing.append("Plan memory")
    # Plan holds the inventory (read, validated, with its shard column: three copies)
    plan_mb_per = (
        3 * f.inventory_mb / f.servers
        if f.inventory_mb is not None
        else max(0.0, (f.plan_peak_rss_mb or import_base) - import_base) / f.servers
    )
    req_fixed: dict[str, float] = {"put": 0.0, "get": 0.0}
    req_shard: dict[str, float] = {"put": 0.0, "get": 0.0}
    if f.requests:
        n = len(f.shard_servers)
        for kind in ("put", "get"):
            req_fixed[kind] = sum(f.requests.get(s, {}).get(kind, 0) for s in ("plan", "calibrate"))
            req_shard[kind] = (
                sum(v.get(kind, 0) for k, v in f.requests.items() if k.startswith("shard"))
                + f.requests.get("publish", {}).get(kind, 0)
            ) / n
    else:
        missing.append("S3 requests")
    return Rates(
        shard_s_per_server=s_per,
        shard_s_fixed=s_fixed,
        shard_mb_per_server=mb_per,
        base_mb=base,
        fit=fit,
        calibrate_s=calibrate_s or 0.0,
        calibrate_mb=f.calibrate_peak_rss_mb or 0.0,
        plan_s_per_server=(plan_s or 0.0) / f.servers,
        plan_mb=f.plan_peak_rss_mb or import_base,
        plan_mb_per_server=plan_mb_per,
        servers=f.servers,
        **_publish_rates(f, publish_s, use_cpu, import_base, missing),
        run_bytes_per_server=None if f.run_bytes is None else f.run_bytes / f.servers,
        input_bytes_per_server=None if f.input_bytes is None else f.input_bytes / f.servers,
        requests_fixed=req_fixed,
        requests_per_shard=req_shard,
        basis="CPU seconds" if use_cpu else "wall seconds",
        missing=missing + (["Publish memory"] if f.publish_peak_rss_mb is None else []),
    )


def shard_seconds(r: Rates, size: int) -> float:
    return r.shard_s_fixed + r.shard_s_per_server * size


def plan_mb(r: Rates, servers: int) -> float:
    return r.plan_mb + r.plan_mb_per_server * max(0, servers - r.servers)


def publish_mb(r: Rates, servers: int) -> float:
    return r.publish_base_mb + (r.publish_mb_per_server or 0.0) * servers


def shard_mb(r: Rates, size: int) -> float:
    return r.base_mb + r.shard_mb_per_server * size


def lambda_memory_mb(peak_mb: float, headroom: float = ASSUMPTIONS["memory_headroom"]) -> int | None:
    """The Lambda memory setting for a step: peak RSS × headroom, at least one full vCPU
    (1,769 MB: the steps are CPU-bound and single-threaded, so less memory is as costly — time
    grows as the CPU share falls — and slower); None when it exceeds 10,240 MB."""
    need = max(math.ceil(peak_mb * headroom), LIMITS["lambda_mb_per_vcpu"], LIMITS["lambda_min_mb"])
    return need if need <= LIMITS["lambda_max_mb"] else None


def lambda_vcpu(memory_mb: int) -> float:
    return min(LIMITS["lambda_max_vcpu"], memory_mb / LIMITS["lambda_mb_per_vcpu"])


def lambda_step_seconds(cpu_seconds: float, memory_mb: int) -> float:
    """A single-threaded step on a Lambda: one vCPU at ≥ 1,769 MB, a share of one below."""
    return cpu_seconds / min(1.0, lambda_vcpu(memory_mb))


def fargate_size(peak_mb: float, min_vcpu: float = 1, headroom: float = ASSUMPTIONS["memory_headroom"]):
    """The smallest valid Fargate (vCPU, GB) with ≥ min_vcpu and memory ≥ peak × headroom; None if none."""
    need_gb = peak_mb * headroom / 1024
    for vcpu, mems in FARGATE_SIZES:
        if vcpu < min_vcpu:
            continue
        for gb in mems:
            if gb >= need_gb:
                return vcpu, gb
    return None


def fargate_cost(vcpu: float, gb: float, seconds: float) -> float:
    billed = max(LIMITS["fargate_min_billed_s"], math.ceil(seconds))
    return billed / 3600 * (vcpu * PRICES["fargate_vcpu_hour"] + gb * PRICES["fargate_gb_hour"])


def lambda_cost(memory_mb: int, seconds: float, invocations: int = 1) -> float:
    return invocations * (memory_mb / 1024 * seconds * PRICES["lambda_gb_second"] + PRICES["lambda_request"])


def lambda_shard_bounds(r: Rates, memory_cap_mb: int = LIMITS["lambda_max_mb"]) -> dict[str, int]:
    """Largest shard a Lambda finishes within the time margin of 15 min, and holds in its memory."""
    budget = LIMITS["lambda_timeout_s"] * ASSUMPTIONS["time_margin"] - ASSUMPTIONS["lambda_init_s"]
    big = 10**9
    by_time = (
        math.floor((budget - r.shard_s_fixed) / r.shard_s_per_server) if r.shard_s_per_server > 0 else big
    )
    usable = memory_cap_mb / ASSUMPTIONS["memory_headroom"] - r.base_mb
    by_mem = math.floor(usable / r.shard_mb_per_server) if r.shard_mb_per_server > 0 else big
    return {"15 min": by_time, f"{memory_cap_mb:,} MB": by_mem}


def max_lambda_shard(r: Rates, memory_cap_mb: int = LIMITS["lambda_max_mb"]) -> tuple[int, str]:
    """The largest shard that fits both bounds, and which bound it is."""
    bounds = lambda_shard_bounds(r, memory_cap_mb)
    why = min(bounds, key=lambda k: bounds[k])
    return bounds[why], why


def _requests_cost(r: Rates, n_shards: int) -> tuple[float, float]:
    put = r.requests_fixed["put"] + r.requests_per_shard["put"] * n_shards
    get = r.requests_fixed["get"] + r.requests_per_shard["get"] * n_shards
    return put + get, put * PRICES["s3_put_request"] + get * PRICES["s3_get_request"]


def _transitions(n_shards: int) -> float:
    # Plan, Calibrate, the Map, Publish, plus one Task per shard (and its retries)
    return 4 + n_shards * (1 + ASSUMPTIONS["sfn_retry_fraction"])


@dataclass
class Row:
    way: str
    servers: int
    shard_size: int
    n_shards: int
    concurrency: int
    wall_s: float
    run_usd: float
    month_usd: float
    bottleneck: str
    sizes: str
    fits: bool = True
    notes: list[str] = field(default_factory=list)
    parts: dict[str, float] = field(default_factory=dict)  # $ per run by item
    times: dict[str, float] = field(default_factory=dict)  # s of wall by phase


def _bottleneck(times: dict[str, float]) -> str:
    total = sum(times.values())
    name, t = max(times.items(), key=lambda kv: kv[1])
    return f"{name} ({100 * t / total:.0f} % of wall)" if total > 0 else "—"


def _finish(row: Row, r: Rates) -> Row:
    row.wall_s = sum(row.times.values())
    row.run_usd = sum(row.parts.values())
    row.month_usd = row.run_usd * ASSUMPTIONS["runs_per_month"]
    row.bottleneck = _bottleneck(row.times)
    assert row.wall_s > 0 and row.run_usd > 0, row
    return row


def lambda_row(r: Rates, servers: int, shard_size: int, *, deployed: bool) -> Row:
    """Step Functions + Lambda. deployed: the CDK's sizes and INLINE Map; else sized from the
    measured RSS with a DISTRIBUTED Map. A shard that does not fit is re-cut to the largest that
    does, and the row says so."""
    notes: list[str] = []
    fits = True
    cap_mb = DEPLOYED["shard_mb"] if deployed else LIMITS["lambda_max_mb"]
    largest, why = max_lambda_shard(r, cap_mb)
    if largest < 1:
        raise ValueError("one server's shard does not fit a Lambda: check the measured figures")
    size = shard_size
    if shard_size > largest:
        fits = False
        size = largest
        notes.append(
            f"shard size {shard_size:,} does not fit ({why}: {shard_seconds(r, shard_size) / 60:.0f} min, "
            f"{shard_mb(r, shard_size):,.0f} MB): use shard size {largest:,}"
        )
    n = math.ceil(servers / size)
    per = min(size, servers)
    s_shard = shard_seconds(r, per)
    if deployed:
        shard_mem = DEPLOYED["shard_mb"]
        conc = min(n, DEPLOYED["map_concurrency"], LIMITS["inline_map_concurrency"])
    else:
        shard_mem = lambda_memory_mb(shard_mb(r, per))
        assert shard_mem is not None and shard_mem <= LIMITS["lambda_max_mb"], (per, shard_mem)
        conc = min(n, LIMITS["lambda_account_concurrency"], LIMITS["distributed_map_concurrency"])
    t_shard = lambda_step_seconds(s_shard, shard_mem) + ASSUMPTIONS["lambda_init_s"]
    assert t_shard <= LIMITS["lambda_timeout_s"], (size, t_shard)
    waves = math.ceil(n / conc)
    init = ASSUMPTIONS["lambda_init_s"]
    plan_s = r.plan_s_per_server * servers
    plan_mem = DEPLOYED["plan_mb"] if deployed else lambda_memory_mb(plan_mb(r, servers))
    cal_mem = DEPLOYED["calibrate_mb"] if deployed else lambda_memory_mb(r.calibrate_mb)
    # cold starts of Plan and Calibrate (a shard's and Publish's are in their own times)
    times = {"start": 2 * init, "plan": plan_s, "calibrate": r.calibrate_s, "shards": waves * t_shard}
    parts = {
        "lambda shards": lambda_cost(shard_mem, t_shard, n) * (1 + ASSUMPTIONS["sfn_retry_fraction"]),
        "lambda plan+calibrate": lambda_cost(plan_mem or LIMITS["lambda_max_mb"], plan_s + init)
        + lambda_cost(cal_mem or LIMITS["lambda_max_mb"], r.calibrate_s + init),
        "step functions": _transitions(n) * PRICES["sfn_transition"],
    }
    for name, mem in (("Plan", plan_mem), ("Calibrate", cal_mem)):
        if mem is None:
            fits = False
            notes.append(f"{name} needs more than 10,240 MB")
    if deployed and r.calibrate_mb * ASSUMPTIONS["memory_headroom"] > DEPLOYED["calibrate_mb"]:
        notes.append(f"Calibrate peak {r.calibrate_mb:,.0f} MB is close to its 4,096 MB function")
    _publish(r, servers, parts, times, notes, lambda_publish_mb=DEPLOYED["publish_mb"] if deployed else None)
    if any(n.startswith("Publish does not fit") for n in notes):
        fits = False
    _, parts["s3 requests"] = _requests_cost(r, n)
    if deployed:
        sizes = f"shard {shard_mem:,} MB (as deployed), Map INLINE × {conc}"
        if n > conc:
            notes.append(
                f"{waves} waves of {conc}: raise CAPFC_SHARD_CONCURRENCY (INLINE Map ≤ 40) or use a DISTRIBUTED Map"
            )
    else:
        sizes = f"shard {shard_mem:,} MB ({lambda_vcpu(shard_mem):.1f} vCPU), DISTRIBUTED Map × {conc}"
        if n > conc:
            notes.append(
                f"{waves} waves: Lambda account concurrency {LIMITS['lambda_account_concurrency']:,}"
            )
    way = "Lambda + Step Functions, as deployed" if deployed else "Lambda + Step Functions, sized"
    row = Row(way, servers, size, n, conc, 0, 0, 0, "", sizes, fits, notes, parts, times)
    return _finish(row, r)


def _publish(
    r: Rates,
    servers: int,
    parts: dict[str, float],
    times: dict[str, float],
    notes: list[str],
    *,
    lambda_publish_mb: int | None,
    fargate: bool = False,
) -> None:
    """Publish as a Lambda when it fits (15 min, 10,240 MB), else as a Fargate task: adds to parts/times."""
    if r.publish_s_per_server is None:
        notes.append("Publish not measured: left out")
        return
    s = r.publish_s_fixed + r.publish_s_per_server * servers
    peak = publish_mb(r, servers)
    if r.publish_mb_per_server is None:
        notes.append("Publish memory not measured: sized as the base process")
    if not fargate:
        mem = lambda_publish_mb or lambda_memory_mb(peak)
        t = lambda_step_seconds(s, mem) + ASSUMPTIONS["lambda_init_s"] if mem else math.inf
        budget = LIMITS["lambda_timeout_s"] * ASSUMPTIONS["time_margin"]
        if mem is not None and peak * ASSUMPTIONS["memory_headroom"] <= mem and t <= budget:
            parts["lambda publish"] = lambda_cost(mem, t)
            times["publish"] = t
            return
        why = f"{t / 60:.0f} min" if t > budget and math.isfinite(t) else f"{peak / 1024:,.1f} GB peak"
        notes.append(f"Publish does not fit a Lambda ({why}): priced as a Fargate task")
    size = fargate_size(peak, min_vcpu=1)
    if size is None:
        notes.append(
            f"Publish does not fit any Fargate task ({peak / 1024:,.0f} GB peak > 120 GB): "
            "needs the partitioned Publish; priced at 16 vCPU / 120 GB"
        )
        size = (16, 120)
    t = s + ASSUMPTIONS["fargate_start_s"]
    parts["fargate publish"] = fargate_cost(*size, t)
    times["publish"] = t
    notes.append(f"Publish task {size[0]:g} vCPU / {size[1]:g} GB")


def fargate_row(r: Rates, servers: int, shard_size: int) -> Row:
    """Step Functions, every step an ECS RunTask on Fargate, one task per shard (DISTRIBUTED Map)."""
    notes: list[str] = []
    n = math.ceil(servers / shard_size)
    per = min(shard_size, servers)
    size = fargate_size(shard_mb(r, per))
    fits = size is not None
    if size is None:
        notes.append(f"a {per:,}-server shard needs {shard_mb(r, per) / 1024:,.0f} GB: more than 120 GB")
        size = (16, 120)
    vcpu, gb = size
    start = ASSUMPTIONS["fargate_start_s"]
    t_shard = shard_seconds(r, per) + start
    by_quota = max(1, int(ASSUMPTIONS["fargate_vcpu_quota"] // vcpu))
    conc = min(n, LIMITS["distributed_map_concurrency"], by_quota)
    waves = math.ceil(n / conc)
    plan_task = fargate_size(plan_mb(r, servers)) or (16, 120)
    cal_task = fargate_size(r.calibrate_mb) or (16, 120)
    plan_s = r.plan_s_per_server * servers + start
    cal_s = r.calibrate_s + start
    times = {"plan": plan_s, "calibrate": cal_s, "shards": waves * t_shard}
    parts = {
        "fargate shards": n * fargate_cost(vcpu, gb, t_shard) * (1 + ASSUMPTIONS["sfn_retry_fraction"]),
        "fargate plan+calibrate": fargate_cost(*plan_task, plan_s) + fargate_cost(*cal_task, cal_s),
        "step functions": _transitions(n) * PRICES["sfn_transition"],
    }
    _publish(r, servers, parts, times, notes, lambda_publish_mb=None, fargate=True)
    _, parts["s3 requests"] = _requests_cost(r, n)
    if n > conc:
        notes.append(
            f"{waves} waves: Fargate vCPU quota {ASSUMPTIONS['fargate_vcpu_quota']:,} (an account setting)"
        )
    if n > 100:
        notes.append(
            f"{n:,} task launches: Fargate starts ≤ 100 at once, then 20/s (≈ {(n - 100) / 20:.0f} s more)"
        )
        times["start"] = max(0.0, (n - 100) / 20)
    sizes = f"shard task {vcpu:g} vCPU / {gb:g} GB, DISTRIBUTED Map × {conc}"
    row = Row(
        "Fargate tasks + Step Functions",
        servers,
        shard_size,
        n,
        conc,
        0,
        0,
        0,
        "",
        sizes,
        fits,
        notes,
        parts,
        times,
    )
    return _finish(row, r)


def dask_row(r: Rates, servers: int, shard_size: int) -> Row:
    """dask-cloudprovider FargateCluster: scheduler + N single-threaded workers, and a driver task."""
    notes: list[str] = []
    n = math.ceil(servers / shard_size)
    per = min(shard_size, servers)
    worker = fargate_size(max(shard_mb(r, per), r.calibrate_mb))
    fits = worker is not None
    if worker is None:
        notes.append(f"a {per:,}-server shard needs more than 120 GB")
        worker = (16, 120)
    vcpu, gb = worker
    workers = min(
        n, ASSUMPTIONS["dask_max_workers"], max(1, int(ASSUMPTIONS["fargate_vcpu_quota"] // vcpu) - 2)
    )
    waves = math.ceil(n / workers)
    plan_s = r.plan_s_per_server * servers
    times = {
        "start": ASSUMPTIONS["dask_cluster_start_s"],
        "plan": plan_s,
        "calibrate": r.calibrate_s,
        "shards": waves * shard_seconds(r, per),
    }
    pub: dict[str, float] = {}
    pub_times: dict[str, float] = {}
    _publish(r, servers, pub, pub_times, notes, lambda_publish_mb=None, fargate=True)
    # the driver publishes in its own process: its task is sized for Publish (or Plan if larger)
    driver = fargate_size(max(publish_mb(r, servers), plan_mb(r, servers))) or (16, 120)
    if "publish" in pub_times:
        times["publish"] = pub_times["publish"] - ASSUMPTIONS["fargate_start_s"]
    wall = sum(times.values())
    sched = ASSUMPTIONS["dask_scheduler"]
    parts = {
        "fargate workers": workers * fargate_cost(vcpu, gb, wall),
        "fargate scheduler": fargate_cost(*sched, wall),
        "fargate driver": fargate_cost(*driver, wall),
    }
    _, parts["s3 requests"] = _requests_cost(r, n)
    idle = 1 - (n * shard_seconds(r, per) + r.calibrate_s) / (workers * wall)
    notes = [x for x in notes if not x.startswith("Publish task")]
    notes.append(
        f"driver {driver[0]:g} vCPU / {driver[1]:g} GB; workers idle {100 * idle:.0f} % of their billed time"
    )
    sizes = (
        f"{workers} workers × {vcpu:g} vCPU / {gb:g} GB (1 thread), scheduler {sched[0]} vCPU / {sched[1]} GB"
    )
    row = Row(
        "Dask on Fargate (FargateCluster)",
        servers,
        shard_size,
        n,
        workers,
        0,
        0,
        0,
        "",
        sizes,
        fits,
        notes,
        parts,
        times,
    )
    return _finish(row, r)


def table(
    f: Figures, *, shard_size: int, sizes: Iterable[int] = SIZES, prefer_cpu: bool = True
) -> tuple[Rates, list[Row]]:
    """Every way × fleet size, as rows."""
    r = rates(f, prefer_cpu=prefer_cpu)
    rows: list[Row] = []
    for n in sizes:
        rows.append(lambda_row(r, n, shard_size, deployed=True))
        rows.append(lambda_row(r, n, shard_size, deployed=False))
        rows.append(fargate_row(r, n, shard_size))
        rows.append(dask_row(r, n, shard_size))
    return r, rows


def storage(r: Rates, servers: int) -> dict[str, float | None]:
    """S3 storage a month: the kept runs, and the input the runs read (the same for every way)."""
    run_gb = None if r.run_bytes_per_server is None else r.run_bytes_per_server * servers / 1e9
    in_gb = None if r.input_bytes_per_server is None else r.input_bytes_per_server * servers / 1e9
    keep = ASSUMPTIONS["keep_runs"]
    return {
        "run_gb": run_gb,
        "runs_kept_usd": None if run_gb is None else run_gb * keep * PRICES["s3_gb_month"],
        "input_gb": in_gb,
        "input_usd": None if in_gb is None else in_gb * PRICES["s3_gb_month"],
    }


# --------------------------------------------------------------------------- report


def _dur(s: float) -> str:
    if s < 90:
        return f"{s:.0f} s"
    if s < 5400:
        return f"{s / 60:.0f} min"
    return f"{s / 3600:.1f} h"


def _usd(x: float) -> str:
    return f"${x:,.2f}" if x >= 0.995 else f"${x:.3f}" if x >= 0.001 else "< $0.001"


def render(f: Figures, r: Rates, rows: list[Row], shard_size: int) -> str:
    out: list[str] = []
    load = (
        f"load average {min(f.load):.1f}–{max(f.load):.1f} on {f.cores} cores"
        if f.load
        else "load not recorded"
    )
    out.append(f"### Measured inputs ({f.source}; {load})\n")
    out.append("| figure | value |")
    out.append("|---|---|")
    n = len(f.shard_servers)
    out.append(
        f"| fleet, shards | {f.servers:,} servers × 5 metrics, {n} shards of {min(f.shard_servers):,}–{max(f.shard_servers):,} |"
    )
    cpu = (
        ""
        if f.shard_cpu_seconds is None
        else f", CPU {min(f.shard_cpu_seconds):.1f}–{max(f.shard_cpu_seconds):.1f} s"
    )
    out.append(
        f"| shard step | wall {min(f.shard_seconds):.1f}–{max(f.shard_seconds):.1f} s{cpu}; peak RSS {min(f.shard_peak_rss_mb):,.0f}–{max(f.shard_peak_rss_mb):,.0f} MB |"
    )
    for e in f.extra_shards:
        out.append(
            f"| one shard of {e['servers']:,} servers (a second plan of the same fleet) | wall {e['seconds']:.1f} s"
            + ("" if e.get("cpu_seconds") is None else f", CPU {e['cpu_seconds']:.1f} s")
            + f"; peak RSS {e['peak_rss_mb']:,.0f} MB |"
        )
    out.append(
        f"| **shard step: seconds per server** ({r.basis}, {r.fit}) | **{1000 * r.shard_s_per_server:.1f} ms** per server"
        f" + {r.shard_s_fixed:.1f} s per shard (5,000 servers: {shard_seconds(r, 5000):,.0f} s on one vCPU) |"
    )
    out.append(
        f"| **shard step: memory** | **{r.base_mb:,.0f} MB + {r.shard_mb_per_server:.3f} MB per server** "
        f"(5,000 servers: {shard_mb(r, 5000):,.0f} MB) |"
    )

    def step(name: str, key: str) -> None:
        s, c, m = (
            getattr(f, f"{key}_seconds"),
            getattr(f, f"{key}_cpu_seconds"),
            getattr(f, f"{key}_peak_rss_mb"),
        )
        if s is None and m is None:
            out.append(f"| {name} | not measured |")
            return
        parts = [] if s is None else [f"wall {s:.1f} s"]
        parts += [] if c is None else [f"CPU {c:.1f} s"]
        parts += [] if m is None else [f"peak RSS {m:,.0f} MB"]
        out.append(f"| {name} | {', '.join(parts)} |")

    step("Plan (grows with the fleet)", "plan")
    step("Calibrate (fixed: its sample of 500 servers)", "calibrate")
    step("Publish (grows with the fleet: one process)", "publish")
    for e in f.extra_publish:
        out.append(
            f"| Publish of a second fleet of {e['servers']:,} servers | wall {e['seconds']:.1f} s"
            + ("" if e.get("cpu_seconds") is None else f", CPU {e['cpu_seconds']:.1f} s")
            + f", peak RSS {e['peak_rss_mb']:,.0f} MB |"
        )
    if r.publish_s_per_server is not None:
        out.append(
            f"| **Publish: per server** ({r.publish_fit}) | {1000 * r.publish_s_per_server:.2f} ms + "
            f"{r.publish_s_fixed:.1f} s; {r.publish_base_mb:,.0f} MB + {r.publish_mb_per_server or 0:.3f} MB per server "
            f"(100,000 servers: {publish_mb(r, 100_000) / 1024:,.1f} GB) |"
        )
    if f.base_rss_mb is not None:
        out.append(f"| a fresh process after importing the batch code | {f.base_rss_mb:,.0f} MB |")
    if f.inventory_mb is not None:
        out.append(f"| the inventory in memory (Plan holds ≈ 3 copies) | {f.inventory_mb:,.1f} MB |")
    if f.run_bytes is not None:
        out.append(
            f"| published run (runs/&lt;id&gt;/) | {f.run_bytes / 1e6:,.1f} MB ({r.run_bytes_per_server / 1e3:,.1f} kB per server) |"
        )
    if f.input_bytes is not None:
        out.append(
            f"| input read (inventory, metrics) | {f.input_bytes / 1e6:,.1f} MB ({r.input_bytes_per_server / 1e3:,.1f} kB per server) |"
        )
    if f.requests:
        shards = [v for k, v in f.requests.items() if k.startswith("shard")]
        req = lambda d: f"{d.get('put', 0):,} PUT/LIST + {d.get('get', 0):,} GET/HEAD"  # noqa: E731
        out.append(
            f"| S3 requests: Plan · Calibrate · Publish | {req(f.requests.get('plan', {}))} · {req(f.requests.get('calibrate', {}))} · {req(f.requests.get('publish', {}))} |"
        )
        out.append(
            f"| S3 requests per shard (mean of {len(shards)}) | {r.requests_per_shard['put']:,.0f} PUT/LIST + {r.requests_per_shard['get']:,.0f} GET/HEAD (Publish's share included) |"
        )
    if r.missing:
        out.append(f"| not measured | {'; '.join(r.missing)} |")
    largest, why = max_lambda_shard(r)
    b = lambda_shard_bounds(r)
    out.append(
        f"| **largest shard a Lambda runs** ({r.basis} on one vCPU) | **{largest:,} servers**, bound by {why} "
        f"(≤ {ASSUMPTIONS['time_margin']:.0%} of 15 min: {b['15 min']:,} servers; peak × "
        f"{ASSUMPTIONS['memory_headroom']} ≤ 10,240 MB: {b['10,240 MB']:,} servers) |"
    )
    out.append("")
    out.append(
        f"### Cost and time per run (shard size {shard_size:,}; weekly runs = {ASSUMPTIONS['runs_per_month']:.2f} a month)\n"
    )
    out.append("| servers | way | shards | wall | $ per run | $ per month | bottleneck | sizes and notes |")
    out.append("|---|---|---|---|---|---|---|---|")
    for row in rows:
        flag = "" if row.fits else " ⚠"
        notes = "; ".join([row.sizes, *row.notes])
        shards = f"{row.n_shards:,} × {min(row.shard_size, row.servers):,}"
        out.append(
            f"| {row.servers:,} | {row.way}{flag} | {shards} | {_dur(row.wall_s)} | {_usd(row.run_usd)} | "
            f"{_usd(row.month_usd)} | {row.bottleneck} | {notes} |"
        )
    out.append("")
    out.append("S3 storage (the same for every way): ")
    for n in sorted({row.servers for row in rows}):
        s = storage(r, n)
        if s["run_gb"] is None:
            out.append(f"- {n:,} servers: run size not measured")
            continue
        line = f"- {n:,} servers: a run {s['run_gb']:,.2f} GB, {ASSUMPTIONS['keep_runs']} runs kept {_usd(s['runs_kept_usd'])}/month"
        if s["input_gb"] is not None:
            line += f"; the input (4 years daily) {s['input_gb']:,.1f} GB, {_usd(s['input_usd'])}/month"
        out.append(line)
    if f.requests:
        out.append("")
        out.append(f"S3 requests per run (shards of {shard_size:,}; priced in the table's $ per run):")
        for n in sorted({row.servers for row in rows}):
            count, usd = _requests_cost(r, math.ceil(n / shard_size))
            line = f"- {n:,} servers: {count:,.0f} requests, {_usd(usd)}"
            if f.input_objects:
                # each shard lists the input and opens every metrics file's footer: with the
                # metrics in generate's layout (files per block of 5,000 servers) that grows too
                grow = max(1.0, n / 5000) / max(1.0, f.servers / 5000)
                shards = math.ceil(n / shard_size)
                bound = r.requests_fixed["get"] + r.requests_per_shard["get"] * grow * shards
                line += (
                    f"; if the metrics stay in files of 5,000 servers each ({f.input_objects * grow:,.0f} objects), "
                    f"each shard reads every file's footer: up to {bound:,.0f} GETs, {_usd(bound * PRICES['s3_get_request'])}"
                )
            out.append(line)
    out.append("")
    out.append(
        f"Prices: {PRICES['region']} list prices as of {PRICES['as_of']} ({PRICES['note']}): Lambda "
        f"${PRICES['lambda_gb_second']:.10f}/GB-s + $0.20/1M requests; Step Functions Standard $0.025/1,000 "
        f"transitions; Fargate ${PRICES['fargate_vcpu_hour']}/vCPU-h + ${PRICES['fargate_gb_hour']}/GB-h (per "
        "second, 1 min minimum); S3 $0.005/1,000 PUT/LIST, $0.0004/1,000 GET, $0.023/GB-month. "
        f"Assumptions (not measurable here): Lambda cold start {ASSUMPTIONS['lambda_init_s']:.0f} s, Fargate task "
        f"start {ASSUMPTIONS['fargate_start_s']:.0f} s (billed), Dask cluster start "
        f"{ASSUMPTIONS['dask_cluster_start_s']:.0f} s, ≤ {ASSUMPTIONS['dask_max_workers']} Dask workers, Fargate "
        f"vCPU quota {ASSUMPTIONS['fargate_vcpu_quota']:,}, memory = peak × {ASSUMPTIONS['memory_headroom']}, "
        f"{ASSUMPTIONS['sfn_retry_fraction']:.0%} of tasks retried once; single-threaded steps (more vCPUs "
        "do not shorten a step); S3 read latency at AWS not modelled (here: S3 on loopback). ⚠ = the row "
        "needed a change to fit (see its notes)."
    )
    return "\n".join(out)


# --------------------------------------------------------------------------- the measured run

CHILD = r"""
import json, os, resource, sys, time
t_import = time.perf_counter()
from forecasting import shards
from forecasting.batch import _peak_rss_mb
from forecasting.settings import load_settings
from forecasting.sources import open_store
base_rss = _peak_rss_mb()
step, data, shard_size = sys.argv[1], sys.argv[2], int(sys.argv[3])
run_id = sys.argv[4] if len(sys.argv) > 4 else None
settings = load_settings(data=data, shard_size=shard_size)
store = open_store(settings.data, endpoint_url=settings.s3_endpoint_url)
load0 = os.getloadavg()[0]
r0 = resource.getrusage(resource.RUSAGE_SELF)
t0 = time.perf_counter()
if step == "plan":
    result = shards.plan_shards(store, settings, trigger="bench_cost")
elif step == "calibrate":
    result = shards.calibrate_shards(store, settings, run_id)
elif step == "publish":
    result = shards.publish_shards(store, settings, run_id)
else:
    result = shards.run_shard(store, settings, run_id, int(step.removeprefix("shard")))
wall = time.perf_counter() - t0
r1 = resource.getrusage(resource.RUSAGE_SELF)
cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
peak = _peak_rss_mb()
inventory_mb = None
if step == "plan":  # after the peak was read: what the inventory takes in memory
    inventory_mb = float(store.read_inventory().memory_usage(deep=True).sum()) / 2**20
print("RESULT " + json.dumps({"step": step, "wall": wall, "cpu": cpu, "peak_rss_mb": peak,
    "base_rss_mb": base_rss, "load": [load0, os.getloadavg()[0]], "inventory_mb": inventory_mb,
    "result": result}, default=str))
"""


def classify(line: str) -> str:
    """S3 price tier of a recorded request line ("GET /bucket/key?query")."""
    method, _, rest = line.partition(" ")
    path, _, query = rest.partition("?")
    if method == "DELETE" or (method == "POST" and "delete" in query.split("&")):
        return "free"
    if method in ("PUT", "POST", "COPY"):
        return "put"
    if method == "GET" and path.strip("/").count("/") == 0:  # a bucket-level GET is a LIST
        return "put"
    return "get"


def measure(servers: int, shard_size: int, days: int, seed: int, second_fleet: int = 0) -> Figures:
    """Generate a fleet into SeaweedFS, run each step of a sharded run in a fresh process through
    a recording proxy, and return what was measured (the manifest's engine section included).
    Two more points: the same fleet in one shard (a shard's fixed and per-server parts) and, when
    second_fleet > 0, a second fleet of that size run and published (Publish's parts)."""
    sys.path.insert(0, str(ROOT))
    from tests.s3server import ADMIN, REGION, FaultProxy, SeaweedServer

    weed = SeaweedServer()
    proxy = FaultProxy(weed.url)
    bucket = weed.new_bucket()
    data = f"s3://{bucket}/lake"
    env = {
        **os.environ,
        "PYTHONPATH": str(ROOT),
        "AWS_ACCESS_KEY_ID": ADMIN[0],
        "AWS_SECRET_ACCESS_KEY": ADMIN[1],
        "AWS_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": os.devnull,
        "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        "CAPFC_LOG_LEVEL": "WARNING",
    }
    try:

        def generate(where: str, n: int) -> None:
            t0 = time.perf_counter()
            _run([sys.executable, "-m", "forecasting", "--data", where, "generate", "--servers", str(n),
                  "--days", str(days), "--seed", str(seed)], {**env, "CAPFC_S3_ENDPOINT_URL": weed.url})  # fmt: skip
            print(
                f"generated {n:,} servers × {days} days into SeaweedFS in {time.perf_counter() - t0:.0f} s",
                flush=True,
            )

        generate(data, servers)
        penv = {**env, "CAPFC_S3_ENDPOINT_URL": proxy.url}
        steps: dict[str, dict] = {}
        requests: dict[str, dict[str, int]] = {}

        def step(
            name: str, run_id: str | None = None, size: int = shard_size, tag: str = "", where: str = data
        ) -> dict:
            before = len(proxy.requests)
            args = [sys.executable, "-c", CHILD, name, where, str(size)] + ([run_id] if run_id else [])
            out = _run(args, penv)
            res = json.loads(next(x for x in out.splitlines() if x.startswith("RESULT "))[len("RESULT ") :])
            counts = {"put": 0, "get": 0, "free": 0}
            for line in proxy.requests[before:]:
                counts[classify(line)] += 1
            requests[tag + name] = counts
            steps[tag + name] = res
            print(f"  {tag}{name}: wall {res['wall']:.1f} s, CPU {res['cpu']:.1f} s, peak {res['peak_rss_mb']:,.0f} MB, "
                  f"{sum(counts.values())} S3 requests, load {res['load'][1]:.1f}", flush=True)  # fmt: skip
            return res

        plan = step("plan")["result"]
        run_id, n = plan["run_id"], plan["n_shards"]
        step("calibrate", run_id)
        for k in range(n):
            step(f"shard{k}", run_id)
        manifest = step("publish", run_id)["result"]
        run_bytes = _s3_size(weed, bucket, f"lake/runs/{run_id}/")
        # a second shard size over the same fleet (the whole fleet in one shard): it separates a
        # shard's fixed time and memory from what each server adds
        print(f"second point: one shard of {servers:,} servers", flush=True)
        big = step("plan", size=servers, tag="one-")["result"]["run_id"]
        step("calibrate", big, size=servers, tag="one-")
        step("shard0", big, size=servers, tag="one-")
        if second_fleet > 0:
            # a second fleet size, run and published: Publish's fixed and per-server parts
            print(f"second fleet: {second_fleet:,} servers", flush=True)
            data2 = f"s3://{weed.new_bucket()}/lake"
            generate(data2, second_fleet)
            run2 = step("plan", tag="fleet2-", where=data2)["result"]
            step("calibrate", run2["run_id"], tag="fleet2-", where=data2)
            for k in range(run2["n_shards"]):
                step(f"shard{k}", run2["run_id"], tag="fleet2-", where=data2)
            step("publish", run2["run_id"], tag="fleet2-", where=data2)
    finally:
        proxy.stop()
        weed.stop()
    f = figures_from_manifest(
        manifest, source=f"measured: {servers:,}-server run, shards of {shard_size:,}, S3 (SeaweedFS)"
    )
    shard_keys = [f"shard{k}" for k in range(n)]
    f.shard_cpu_seconds = [steps[k]["cpu"] for k in shard_keys]
    f.base_rss_mb = min(s["base_rss_mb"] for s in steps.values())
    f.plan_seconds, f.plan_cpu_seconds = steps["plan"]["wall"], steps["plan"]["cpu"]
    f.plan_peak_rss_mb = steps["plan"]["peak_rss_mb"]
    f.calibrate_cpu_seconds = steps["calibrate"]["cpu"]
    f.publish_seconds, f.publish_cpu_seconds = steps["publish"]["wall"], steps["publish"]["cpu"]
    f.publish_peak_rss_mb = steps["publish"]["peak_rss_mb"]
    f.run_bytes = run_bytes
    f.requests = {k: v for k, v in requests.items() if not k.startswith(("one-", "fleet2-"))}
    if "fleet2-publish" in steps:
        p2 = steps["fleet2-publish"]
        f.extra_publish = [
            {
                "servers": second_fleet,
                "seconds": p2["wall"],
                "cpu_seconds": p2["cpu"],
                "peak_rss_mb": p2["peak_rss_mb"],
            }
        ]
    one = steps["one-shard0"]
    f.extra_shards = [
        {
            "servers": servers,
            "seconds": one["wall"],
            "cpu_seconds": one["cpu"],
            "peak_rss_mb": one["peak_rss_mb"],
        }
    ]
    f.inventory_mb = steps["plan"]["inventory_mb"]
    f.load = [x for s in steps.values() for x in s["load"]]
    f.cores = os.cpu_count()
    return f


def _run(args: list[str], env: dict[str, str]) -> str:
    out = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"`{' '.join(args[:5])} …` failed ({out.returncode}): {out.stderr[-3000:]}")
    return out.stdout


def _s3_size(weed: Any, bucket: str, prefix: str) -> int:
    total = 0
    for page in weed.client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        total += sum(o["Size"] for o in page.get("Contents", []))
    return total


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--servers", type=int, default=2_000, help="fleet of the measured run (default 2,000)")
    ap.add_argument("--measure-shard-size", type=int, default=500, help="shard size of the measured run")
    ap.add_argument("--days", type=int, default=1461)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument(
        "--second-fleet",
        type=int,
        help="servers of a second, published fleet (Publish's growth; default ¼, 0 = none)",
    )
    ap.add_argument("--manifest", type=Path, help="use this manifest.json's figures instead of measuring")
    ap.add_argument("--figures", type=Path, help="use figures saved with --save (no new run)")
    ap.add_argument("--save", type=Path, help="write the measured figures to this JSON file")
    ap.add_argument(
        "--shard-size", type=int, default=5_000, help="shard size of the modelled runs (CAPFC_SHARD_SIZE)"
    )
    ap.add_argument("--basis", choices=("cpu", "wall"), default="cpu", help="scale CPU or wall seconds")
    ap.add_argument(
        "--base-rss-mb", type=float, help="a shard's memory without servers, when the manifest lacks it"
    )
    ap.add_argument("--publish-seconds", type=float, help="Publish's time, when the manifest lacks it")
    ap.add_argument("--publish-rss-mb", type=float, help="Publish's peak RSS, when the manifest lacks it")
    args = ap.parse_args(argv)
    if args.second_fleet is None:
        args.second_fleet = max(100, args.servers // 4)
    if args.manifest:
        try:
            manifest = json.loads(args.manifest.read_text())
            f = figures_from_manifest(manifest, source=str(args.manifest), run_dir=args.manifest.parent)
        except (OSError, ValueError) as e:  # bad input: exit 2, as the project's CLI does
            print(f"--manifest: {e}", file=sys.stderr)
            raise SystemExit(2) from None
    elif args.figures:
        f = Figures(**json.loads(args.figures.read_text()))
    else:
        f = measure(args.servers, args.measure_shard_size, args.days, args.seed, args.second_fleet)
    for name in ("base_rss_mb", "publish_seconds", "publish_rss_mb"):
        value = getattr(args, name)
        if value is not None:
            if value < 0:
                sys.exit(f"--{name.replace('_', '-')} must not be negative")
            setattr(f, "publish_peak_rss_mb" if name == "publish_rss_mb" else name, value)
    if args.save:
        args.save.write_text(json.dumps(asdict(f), indent=2))
    r, rows = table(f, shard_size=args.shard_size, prefer_cpu=args.basis == "cpu")
    print(render(f, r, rows, args.shard_size))


if __name__ == "__main__":
    main()
