"""Retention (forecasting/records/retention.py) on disk and on a real S3 server: the newest
CAPFC_KEEP_RUNS runs, LATEST, signed-off runs and runs being read are kept; the rest removed."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from forecasting.records import retention
from forecasting.records.decisions import sign_off
from forecasting.records.retention import (
    clean_after_run,
    clean_runs,
    live_readers,
    plan_cleanup,
    reading,
    take_read_lease,
)
from forecasting.sources import NoRunError
from tests import fault_scenarios as fs
from tests.s3server import demo_fleet, demo_plan, seaweed  # noqa: F401 (fixture)

RUNS = [f"202601{d:02d}T000000Z-{d:06x}" for d in range(1, 7)]  # six weekly-ish runs, oldest first


@pytest.fixture(params=["local", "s3"])
def target(request, tmp_path):
    if request.param == "local":
        return fs.local_target(tmp_path / "data")
    return fs.s3_target(request.getfixturevalue("seaweed"))


def _publish(store, run_id: str, version: int) -> None:
    inventory, _ = demo_fleet(days=20)
    manifest = {"run_id": run_id, "input": {"end": "2024-03-01", "snapshot": {"as_of": {"version": version}}}}
    store.publish_run(run_id, demo_plan(inventory, version), manifest)


def _six_runs(store, latest_version_at: int = 5) -> None:
    """Six runs; the one at index ``latest_version_at`` read the newest input, so LATEST stays on it."""
    for i, run in enumerate(RUNS):
        _publish(store, run, 100 if i == latest_version_at else i)


def test_plan_cleanup_rules():
    runs = RUNS
    p = plan_cleanup(runs, keep_runs=2, latest=RUNS[1], signed_off={RUNS[0]}, being_read={RUNS[2]})
    assert p.remove == [RUNS[3]]
    assert p.keep == {
        RUNS[0]: "signed off",
        RUNS[1]: "LATEST",
        RUNS[2]: "being read",
        RUNS[4]: "one of the newest 2",
        RUNS[5]: "one of the newest 2",
    }
    with pytest.raises(ValueError, match="at least 1"):
        plan_cleanup(runs, keep_runs=0, latest=None, signed_off=set(), being_read=set())


def test_clean_keeps_latest_signed_off_and_read_runs(target):
    store = target.open()
    _six_runs(store, latest_version_at=1)  # LATEST names an old run (newest input)
    assert store.latest_run_id() == RUNS[1]
    sign_off(store, RUNS[0], user="ann", note="quarter plan")
    lease = take_read_lease(store, RUNS[2], ttl=60, reader="test")
    dry = clean_runs(store, 2, dry_run=True)
    assert dry.removed == [RUNS[3]] and store.list_runs() == RUNS
    result = clean_runs(store, 2)
    assert result.removed == [RUNS[3]]
    assert result.kept[RUNS[2]] == "being read"
    assert store.list_runs() == [RUNS[0], RUNS[1], RUNS[2], RUNS[4], RUNS[5]]
    assert store.read_run_table(RUNS[3], "risk") is None  # the files are gone, not only the manifest
    assert store.latest_run_id() == RUNS[1]
    # the reader finishes: its run goes at the next clean-up; LATEST and the signed-off one stay
    retention.release_read_lease(store, lease)
    assert clean_runs(store, 2).removed == [RUNS[2]]
    assert store.list_runs() == [RUNS[0], RUNS[1], RUNS[4], RUNS[5]]
    assert store.read_run_table(RUNS[0], "risk") is not None


def test_expired_read_lease_does_not_keep_a_run(target):
    store = target.open()
    _six_runs(store)
    take_read_lease(store, RUNS[0], ttl=60)
    later = datetime.now(UTC) + timedelta(seconds=120)
    assert live_readers(store, RUNS[0], now=later) == []
    assert RUNS[0] in clean_runs(store, 5, now=later).removed


def test_unpublished_run_directories_untouched_for_a_day_are_removed(target):
    """What a run that died leaves when no run took its lease over (another host, an expired
    lease): removed once nothing touched it for a day, unless it is read, signed off or holds
    the store's lease; a fresh one (a run still working) is left; a dry run only says so."""
    from forecasting.sources.commit import acquire_lease

    store = target.open()
    _six_runs(store)
    ps = retention._object_store(store)
    dead, held, read = "20251201T000000Z-dead01", "20251202T000000Z-held01", "20251203T000000Z-read01"
    for run in (dead, held, read):
        store._put_new(ps._p("runs", run, "forecasts", "part-00000.parquet"), b"PAR1 half")
        store._put_new(ps._p("runs", run, ".tmp-0a1b-risk.parquet"), b"PAR1")
    acquire_lease(ps.cond, ps.lease_path(), held, 10 * 86400, pid=None)
    tomorrow = datetime.now(UTC) + timedelta(hours=25)
    take_read_lease(store, RUNS[0], ttl=60)  # a lease on a published run: not the orphan's
    retention.write_read_lease(store, f"{ps._p('readers', read)}/r.json", 30 * 3600)

    def dirs() -> set[str]:
        return set(fs.run_dirs(store))

    assert clean_runs(store, 10).orphans == []  # written just now: a run may still be working
    result = clean_runs(store, 10, dry_run=True, now=tomorrow)
    assert result.orphans == [dead] and dead in dirs()
    assert any("unpublished run " + dead in line for line in result.lines())
    assert clean_runs(store, 10, now=tomorrow).orphans == [dead]
    assert dirs() == set(RUNS) | {held, read}
    assert store.list_runs() == RUNS


def test_reader_of_a_removed_run_is_told_it_is_gone(tmp_path):
    store = fs.local_target(tmp_path / "d").open()
    _six_runs(store)
    clean_runs(store, 5)
    with pytest.raises(NoRunError, match="removed by clean-up"), reading(store, RUNS[0]):
        pass
    assert not (tmp_path / "d" / "readers" / RUNS[0]).exists() or not any(
        (tmp_path / "d" / "readers" / RUNS[0]).iterdir()
    )


def test_reader_arriving_during_clean_up_keeps_the_run(target, monkeypatch):
    """The handshake: a lease that appears after the first look but before the second puts the
    manifest back and keeps the run whole."""
    store = target.open()
    _six_runs(store)
    looks = {"n": 0}
    real = retention.live_readers

    def racing(store_, run_id, now=None):
        looks["n"] += 1
        if run_id == RUNS[0] and looks["n"] == 2:  # between hiding and the second look
            take_lease_without_check(store_, run_id)
        return real(store_, run_id, now)

    def take_lease_without_check(store_, run_id):
        ps = retention._object_store(store_)
        path = f"{ps._p('readers', run_id)}/racer.json"
        expires = (datetime.now(UTC) + timedelta(minutes=5)).isoformat()
        ps.cond.put_new(path, json.dumps({"reader": "racer", "expires": expires}).encode())

    monkeypatch.setattr(retention, "live_readers", racing)
    result = clean_runs(store, 5)
    assert result.removed == [] and result.kept[RUNS[0]] == "being read"
    assert RUNS[0] in store.list_runs()
    assert store.read_manifest(RUNS[0])["run_id"] == RUNS[0]
    assert store.read_run_table(RUNS[0], "forecasts") is not None


def test_sign_off_during_clean_up_keeps_the_run(tmp_path, monkeypatch):
    store = fs.local_target(tmp_path / "d").open()
    _six_runs(store)
    real = retention.signed_off_runs
    calls = {"n": 0}

    def racing(store_):
        calls["n"] += 1
        if calls["n"] == 2:  # the second look, after the run was hidden: a sign-off landed before
            ps = retention._object_store(store_)
            ps.cond.put_new(ps._p("signoffs", f"{RUNS[0]}.json"), b'{"user": "ann"}')
        return real(store_)

    monkeypatch.setattr(retention, "signed_off_runs", racing)
    result = clean_runs(store, 5)
    assert result.kept[RUNS[0]] == "signed off" and RUNS[0] in store.list_runs()


def test_clean_after_run_and_cli(tmp_path, capsys):
    from forecasting.cli import main

    root = tmp_path / "d"
    store = fs.local_target(root).open()
    _six_runs(store)
    none = clean_after_run(store, 0)  # 0 = keep every run (orphans still go)
    assert none is not None and none.removed == [] and none.orphans == []
    assert len(store.list_runs()) == 6
    assert main(["--data", str(root), "clean", "--keep", "4", "--dry-run"]) == 0
    assert "would remove 2 run(s)" in capsys.readouterr().out
    assert len(store.list_runs()) == 6
    assert main(["--data", str(root), "clean", "--keep", "4"]) == 0
    assert store.list_runs() == RUNS[2:]
    assert clean_after_run(store, 3).removed == [RUNS[2]]
    assert main(["--data", str(root), "clean", "--keep", "0"]) == 0
    assert store.list_runs() == RUNS[3:]
    assert main(["--data", str(root), "clean", "--keep", "-1"]) == 2


@pytest.mark.slow
def test_batch_run_cleans_up_after_publishing(tmp_path, monkeypatch):
    """A real batch run with CAPFC_KEEP_RUNS=2 publishes, then removes the oldest runs."""
    from forecasting.batch import run_batch
    from forecasting.settings import load_settings

    store = fs.local_target(tmp_path / "d").open()
    fs.seed_fleet(store, n=6, days=120)
    _six_runs(store, latest_version_at=5)
    # the hand-made runs read "older input" (versions < the store's), so the new run takes LATEST
    for run in RUNS:
        m = store.read_manifest(run)
        assert m["input"]["snapshot"]["as_of"]["version"] <= 100
    settings = load_settings(data=str(tmp_path / "d"), keep_runs=2, backtest_cutoffs=0)
    manifest = run_batch(store, settings, backtest=False, progress=False)
    runs = store.list_runs()
    assert manifest["run_id"] in runs and len(runs) == 2


def test_keep_runs_setting(monkeypatch):
    from forecasting.settings import SettingsError, load_settings

    monkeypatch.setenv("CAPFC_KEEP_RUNS", "12")
    assert load_settings().keep_runs == 12
    monkeypatch.setenv("CAPFC_KEEP_RUNS", "-1")
    with pytest.raises(SettingsError, match="CAPFC_KEEP_RUNS"):
        load_settings()
    monkeypatch.delenv("CAPFC_KEEP_RUNS")
    assert load_settings().keep_runs == 30
