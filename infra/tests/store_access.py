"""The store access each kind of role must have, as a truth table over real object keys.

Why keys and not the policy's own strings: a test that compared the policy with the prefixes the
code grants would pass whatever the code grants. Here each kind of role is probed with the keys
the product writes (forecasting/sources: runs and manifests; forecasting/records: decisions,
sign-offs, read leases, packs; pyarrow's folder markers after a delete), and every probe must be
allowed or refused exactly as listed, with IAM's wildcard rules (``cfn.allows``).
"""

from __future__ import annotations

from cfn import allows, s3_grants

RUN = "20261204T050000Z-a1b2c3"
PROBES = {
    "metrics": "store/metrics/business_unit=Retail/year=2026/part-0.parquet",
    "inventory": "store/inventory/inventory.parquet",
    "store_json": "store/store.json",
    "manifest": f"store/runs/{RUN}/manifest.json",
    "run_file": f"store/runs/{RUN}/risks.parquet",
    "shard": f"store/runs/{RUN}/shards/0003/facts.parquet",
    "table_part": f"store/runs/{RUN}/forecasts/part-00003.parquet",
    "latest": "store/runs/LATEST",
    "runs_marker": "store/runs/",
    "athena": f"store/athena-manifests/plan_risks/run_id={RUN}/symlink.txt",
    "decision": "store/decisions/20261204T101500Z-0f1e2d3c4b5a69788796a5b4c3d2e1f0.json",
    "signoff": f"store/signoffs/{RUN}.json",
    "signoffs_marker": "store/signoffs/",
    "lease": f"store/readers/{RUN}/0f1e2d3c4b5a69788796a5b4c3d2e1f0.json",
    "lease_marker": f"store/readers/{RUN}/",
    "readers_marker": "store/readers/",
    "report": f"store/reports/capacity-pack-{RUN}.pdf",
    "outside": "other/metrics/x.parquet",
    "bare_metrics": "store/metrics",
}
MARKERS = {"runs_marker", "signoffs_marker", "lease_marker", "readers_marker"}
PLAN_READS = {
    "metrics",
    "inventory",
    "store_json",
    "manifest",
    "run_file",
    "shard",
    "table_part",
    "latest",
    "athena",
}
WHOLE_RUN = {"manifest", "run_file", "shard", "table_part", "latest", "athena", "runs_marker"}
LEASES = {"lease", "lease_marker", "readers_marker"}

# kind -> {"get": probes, "put": probes, "delete": probes}: everything else must be refused.
EXPECTED: dict[str, dict[str, set[str]]] = {
    # the web app: plans and records; creates decisions (never deletes one), signs off and may take
    # a sign-off back (retention race), holds read leases
    "web": {
        "get": PLAN_READS | {"decision", "signoff", "lease"},
        "put": {"decision", "signoff", "signoffs_marker"} | LEASES,
        "delete": {"signoff", "signoffs_marker"} | LEASES,
    },
    # the Celery worker: loads plans like the web app (read lease), records nothing
    "worker": {
        "get": PLAN_READS | {"decision", "signoff", "lease"},
        "put": set(LEASES),
        "delete": set(LEASES),
    },
    # trigger, publish, the batch task: a whole run, then the clean-up (hides a run by deleting its
    # manifest and may put it back; removes its files and its stale leases; never a sign-off)
    "run_batch": {
        "get": PLAN_READS | {"signoff", "lease"},
        "put": WHOLE_RUN | {"readers_marker"},
        "delete": WHOLE_RUN | LEASES,
    },
    # plan, calibrate, shard: a run's shard area and its table parts, never its manifest or LATEST
    "shard_step": {"get": set(PLAN_READS), "put": {"shard", "table_part"}, "delete": {"shard", "table_part"}},
    # the weekly pack: reads the plan and records under a read lease, writes reports/ (never deletes one)
    "report": {
        "get": PLAN_READS | {"decision", "signoff", "lease"},
        "put": LEASES | {"report"},
        "delete": set(LEASES),
    },
}
ACTIONS = {"get": "s3:GetObject", "put": "s3:PutObject", "delete": "s3:DeleteObject"}


def assert_store_access(template: dict, role: str, kind: str) -> None:
    """Every probe key is allowed or refused for get/put/delete exactly as ``EXPECTED[kind]`` says."""
    grants = s3_grants(template, role)
    got = {
        verb: {
            name
            for name, key in PROBES.items()
            if not (verb == "get" and name in MARKERS) and allows(grants, action, key)
        }
        for verb, action in ACTIONS.items()
    }
    assert got == EXPECTED[kind], (kind, role)
    # nothing but these, on objects; listing (and HeadBucket) on the bucket itself
    assert set(grants) <= {*ACTIONS.values(), "s3:AbortMultipartUpload", "s3:ListBucket"}, grants
    assert grants.get("s3:ListBucket") == {"B"}, grants
