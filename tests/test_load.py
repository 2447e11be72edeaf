"""The load test's locustfile, for real: 5 Locust planners against the container's gunicorn
command on the shared 200-server plan, 2 actions each (about 10 s; 45 s at most), each signed in
first through a real OpenID Connect code flow against the test provider (tests/oidc_provider.py;
the app in ``oidc`` mode). Every request must succeed, every planner action (pages, filters,
what-ifs, exports, drill-downs) must have run — users start spread over the tour of actions, so
5 users × 2 actions cover all 7 — and every request in the server's access log must carry one of
the 5 signed-in users."""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _module(name: str):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


@pytest.mark.slow
def test_locust_planners_against_gunicorn_all_actions_no_failures(plan_store_root, tmp_path, monkeypatch):
    bench = _module("bench_load")
    # the locustfile's action table, read without importing locust here (it monkey-patches with gevent)
    text = (ROOT / "benchmarks" / "locustfile.py").read_text()
    table = text.split("ACTION_REQUESTS = {", 1)[1].split("}", 1)[0]
    expected = dict(
        line.strip().rstrip(",").replace('"', "").split(": ", 1) for line in table.strip().splitlines()
    )
    assert len(expected) == 7, expected

    monkeypatch.setenv("LOAD_THINK_S", "0.1,0.5")  # short pauses between actions
    prefix = tmp_path / "locust"
    with (
        bench.identity_provider() as (issuer, auth_env),
        bench.serve(plan_store_root, tmp_path / "gunicorn.log", TMPDIR=str(tmp_path), **auth_env) as base,
    ):
        assert base.startswith("http://127.0.0.1:") and auth_env["CAPFC_AUTH_MODE"] == "oidc"
        # the run ends once every user did its 2 tasks (11 s here when idle); the time cap only
        # bounds a stuck run: under `make test`'s parallel load 45 s cut the last action short
        rc = bench.run_locust(
            base, users=5, rate=5, seconds=180, csv_prefix=prefix, max_tasks=2, issuer=issuer
        )

    rows = bench.read_stats(prefix)
    failures = bench.read_failures(prefix)
    exceptions = bench.read_exceptions(prefix)
    assert not failures and not exceptions, (failures, exceptions)
    assert rc == 0
    counts = {r["Name"]: int(r["Request Count"]) for r in rows}
    missing = {action: name for action, name in expected.items() if counts.get(name, 0) == 0}
    assert not missing, f"actions that never ran: {missing}; requests: {counts}"
    assert all(int(r["Failure Count"]) == 0 for r in rows)
    log = (tmp_path / "gunicorn.log").read_text(errors="replace")
    assert "Traceback" not in log
    assert os.path.getsize(f"{prefix}_stats.csv") > 0
    assert counts.get("sign-in (OIDC code flow)") == 5  # each user signed in once, for real
    users = bench.signed_in_users(tmp_path / "gunicorn.log")
    assert set(users) == {f"u-load-{i}" for i in range(5)}, users  # no request without a user
