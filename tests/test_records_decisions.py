"""Planner decisions and sign-off (forecasting/records/decisions.py), on disk and on a real S3
server (SeaweedFS): validation, carry-forward, deferral expiry, concurrent writers, sign-off once."""

from __future__ import annotations

import subprocess
import sys
import threading
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from forecasting.records.decisions import (
    DecisionError,
    DecisionLog,
    attach_decisions,
    check_row,
    current_decisions,
    new_decision,
    read_decisions,
    read_signoff,
    record_decision,
    sign_off,
    signed_off_runs,
    undecided_count,
)
from forecasting.sources import StoreError
from tests import fault_scenarios as fs
from tests.s3server import demo_fleet, demo_plan, seaweed  # noqa: F401 (fixture)

TODAY = datetime.now(UTC).date()


@pytest.fixture(params=["local", "s3"])
def target(request, tmp_path):
    if request.param == "local":
        return fs.local_target(tmp_path / "data")
    return fs.s3_target(request.getfixturevalue("seaweed"))


def _manifest(run_id: str, version: int) -> dict:
    return {"run_id": run_id, "input": {"end": "2024-03-01", "snapshot": {"as_of": {"version": version}}}}


def _publish(store, run_id: str, version: int) -> None:
    inventory, _ = demo_fleet(days=20)
    assert store.publish_run(run_id, demo_plan(inventory, version), _manifest(run_id, version))


def _d(run_id: str, server: str = "srv-0001", decision: str = "accepted", **kw) -> object:
    kw.setdefault("kind", "risk")
    kw.setdefault("subject", "cpu_p95")
    return new_decision(server_id=server, decision=decision, run_id=run_id, user="u1", user_name="Ann", **kw)


RUN0, RUN1, RUN2 = "20260101T000000Z-aaaaaa", "20260108T000000Z-bbbbbb", "20260115T000000Z-cccccc"


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"decision": "deferred"}, "needs the date"),
        ({"decision": "deferred", "until": "2020-01-01"}, "future date"),
        ({"decision": "deferred", "until": "next week"}, "YYYY-MM-DD"),
        ({"decision": "ordered"}, "reference"),
        ({"decision": "rejected"}, "reason is required"),
        ({"decision": "accepted", "until": "2099-01-01"}, "only a deferral"),
        ({"decision": "maybe"}, "decision must be one of"),
        ({"kind": "server"}, "kind must be one of"),
        ({"decision": "rejected", "reason": "x" * 501}, "at most 500"),
        ({"decision": "rejected", "reason": "bad\x00"}, "control characters"),
        ({"server": " "}, "server is required"),
    ],
)
def test_invalid_decisions_are_refused_naming_the_field(kw, message):
    with pytest.raises(DecisionError, match=message):
        _d(RUN0, **kw)


def test_bad_run_id_is_a_decision_error():
    with pytest.raises(DecisionError, match="invalid run id"):
        _d("../../etc")


def test_record_read_carry_forward_and_latest_wins(target):
    store = target.open()
    _publish(store, RUN0, 1)
    _publish(store, RUN1, 2)
    record_decision(store, _d(RUN1, decision="ordered", reference="PO-1"))
    record_decision(store, _d(RUN1, server="srv-0002", decision="rejected", reason="known batch peak"))
    log = read_decisions(store)
    assert len(log) == 2 and set(log["user"]) == {"u1"}
    # a new run is published: the decisions are still there and apply to it (carried forward)
    _publish(store, RUN2, 3)
    cur2 = current_decisions(read_decisions(store), run_id=RUN2)
    assert dict(zip(cur2["server_id"], cur2["label"], strict=True)) == {
        "srv-0001": "Ordered (PO-1)",
        "srv-0002": "Rejected: known batch peak",
    }
    # never carried backward to an earlier run
    assert current_decisions(read_decisions(store), run_id=RUN0).empty
    # a later decision on the same row supersedes; the history keeps both
    later = _d(RUN2, decision="accepted", now=datetime.now(UTC) + timedelta(seconds=5))
    record_decision(store, later)
    cur = current_decisions(read_decisions(store), run_id=RUN2)
    assert cur.set_index("server_id").loc["srv-0001", "label"] == "Accepted"
    assert len(read_decisions(store)) == 3
    # and on RUN1 the decision in force there is still the order
    assert (
        current_decisions(read_decisions(store), run_id=RUN1).set_index("server_id").loc["srv-0001", "label"]
        == "Ordered (PO-1)"
    )


def test_the_later_of_two_decisions_in_one_second_wins(tmp_path):
    """Decisions carry their time to the microsecond: a planner who corrects a decision at once
    sees the correction in force, not a coin toss between the two."""
    store = fs.local_target(tmp_path / "d").open()
    _publish(store, RUN0, 1)
    t = datetime(2026, 12, 4, 9, 0, 0, 900_000, tzinfo=UTC)
    for i in range(20):  # many pairs: a tie broken by the random id would lose about half of them
        first = _d(RUN0, server=f"srv-{i:04d}", decision="rejected", reason="typo", now=t)
        second = _d(RUN0, server=f"srv-{i:04d}", decision="accepted", now=t + timedelta(microseconds=50))
        record_decision(store, second)  # written first: the order of writes does not decide
        record_decision(store, first)
    cur = current_decisions(read_decisions(store), run_id=RUN0)
    assert len(cur) == 20 and set(cur["label"]) == {"Accepted"}


def test_decision_on_a_missing_run_is_refused(target):
    store = target.open()
    _publish(store, RUN0, 1)
    with pytest.raises(StoreError, match="no manifest"):
        record_decision(store, _d(RUN1))
    assert read_decisions(store).empty


def test_check_row_names_what_the_run_has(tmp_path):
    store = fs.local_target(tmp_path / "d").open()
    _publish(store, RUN0, 1)
    check_row(store, RUN0, "risk", "srv-0001", "cpu_p95")
    check_row(store, RUN0, "recommendation", "srv-0001", "keep")
    with pytest.raises(DecisionError, match="srv-0001 has cpu_p95"):
        check_row(store, RUN0, "risk", "srv-0001", "mem_p95")
    with pytest.raises(DecisionError, match="no row for server nope"):
        check_row(store, RUN0, "recommendation", "nope", "keep")


def test_deferral_expires_at_its_date():
    until = TODAY + timedelta(days=10)
    d = _d(RUN0, decision="deferred", until=until.isoformat())
    log = pd.DataFrame([d.__dict__])
    risk = pd.DataFrame(
        {"server_id": ["srv-0001", "srv-0002"], "metric": ["cpu_p95"] * 2, "severity": ["high"] * 2}
    )
    on_day = current_decisions(log, as_of=until)  # the last day of the deferral: still in force
    assert on_day["in_effect"].tolist() == [True]
    assert on_day["label"].tolist() == [f"Deferred until {until}"]
    assert undecided_count(risk, on_day) == 1
    after = current_decisions(log, as_of=until + timedelta(days=1))
    assert after["in_effect"].tolist() == [False]
    assert after["label"].tolist() == [f"Deferral expired {until}"]
    assert undecided_count(risk, after) == 2
    shown = attach_decisions(risk, after, "risk")
    assert shown["decision"].tolist() == [f"Deferral expired {until}", ""]
    assert shown["decided"].tolist() == [False, False]


def test_recommendation_decision_follows_the_action():
    d = _d(RUN0, kind="recommendation", subject="right-size", decision="accepted")
    cur = current_decisions(pd.DataFrame([d.__dict__]))
    recs = pd.DataFrame({"server_id": ["srv-0001", "srv-0001"], "action": ["right-size", "upgrade"]})
    out = attach_decisions(recs, cur, "recommendation", subject="action")
    assert out["decision"].tolist() == ["Accepted", ""]
    # a risk decision never shows on a recommendation and vice versa
    risk = pd.DataFrame({"server_id": ["srv-0001"], "metric": ["right-size"]})
    assert attach_decisions(risk, cur, "risk")["decision"].tolist() == [""]


def test_concurrent_writers_lose_nothing(target):
    """24 decisions from 8 threads, each with its own store connection, at once: all 24 kept."""
    store = target.open()
    _publish(store, RUN0, 1)
    barrier = threading.Barrier(8)
    errors: list[BaseException] = []

    def writer(k: int) -> None:
        own = target.open()
        barrier.wait()
        try:
            for j in range(3):
                record_decision(own, _d(RUN0, server=f"srv-w{k}-{j}", decision="accepted"))
        except BaseException as e:  # pragma: no cover - reported below
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    log = read_decisions(store)
    assert len(log) == 24 and log["id"].nunique() == 24
    assert set(log["server_id"]) == {f"srv-w{k}-{j}" for k in range(8) for j in range(3)}


@pytest.mark.slow
def test_concurrent_cli_processes_lose_nothing(target):
    """Four `python -m forecasting decide` processes at once on one row: four decisions kept."""
    store = target.open()
    _publish(store, RUN0, 1)
    env = {**target.child_env(), "CAPFC_LOG_FORMAT": "text"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "forecasting",
                "--data",
                target.uri,
                "decide",
                "srv-0001",
                "--metric",
                "cpu_p95",
                "--decision",
                "rejected",
                "--reason",
                f"writer {k}",
                "--user",
                f"u{k}",
            ],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for k in range(4)
    ]
    outs = [p.communicate(timeout=120) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outs
    log = read_decisions(store)
    assert sorted(log["reason"]) == [f"writer {k}" for k in range(4)]
    assert all("Recorded: rejected on risk srv-0001/cpu_p95" in o for o, _ in outs)


def test_decision_log_reads_each_object_once(tmp_path):
    store = fs.local_target(tmp_path / "d").open()
    _publish(store, RUN0, 1)
    log = DecisionLog(store)
    record_decision(store, _d(RUN0))
    assert len(log.decisions()) == 1
    calls = []
    orig = log._fetch
    log._fetch = lambda ps, n: calls.append(n) or orig(ps, n)  # type: ignore[method-assign]
    record_decision(store, _d(RUN0, server="srv-0002"))
    assert len(log.decisions()) == 2 and len(calls) == 1


def test_unreadable_decision_object_is_skipped_not_fatal(tmp_path):
    store = fs.local_target(tmp_path / "d").open()
    _publish(store, RUN0, 1)
    record_decision(store, _d(RUN0))
    (tmp_path / "d" / "decisions" / "20260101T000000Z-broken.json").write_text("{not json")
    assert len(read_decisions(store)) == 1


def test_sign_off_once_with_who_when_and_note(target):
    store = target.open()
    _publish(store, RUN0, 1)
    rec = sign_off(store, RUN0, user="u1", user_name="Ann", note="Q1 plan agreed")
    assert rec["user_name"] == "Ann" and rec["note"] == "Q1 plan agreed" and rec["at"]
    assert read_signoff(store, RUN0)["user"] == "u1"
    assert signed_off_runs(store) == {RUN0}
    with pytest.raises(DecisionError, match="already signed off by Ann"):
        sign_off(store, RUN0, user="u2")
    with pytest.raises(StoreError, match="no manifest"):
        sign_off(store, RUN1, user="u1")
    assert signed_off_runs(store) == {RUN0}


def test_cli_decide_list_and_sign_off(tmp_path, capsys):
    from forecasting.cli import main

    root = tmp_path / "d"
    store = fs.local_target(root).open()
    _publish(store, RUN0, 1)
    until = (date.today() + timedelta(days=30)).isoformat()
    assert (
        main(
            [
                "--data",
                str(root),
                "decide",
                "srv-0001",
                "--metric",
                "cpu_p95",
                "--decision",
                "deferred",
                "--until",
                until,
                "--user",
                "ann",
            ]
        )
        == 0
    )
    assert (
        main(
            [
                "--data",
                str(root),
                "decide",
                "srv-0002",
                "--recommendation",
                "--decision",
                "ordered",
                "--reference",
                "CHG-42",
            ]
        )
        == 0
    )
    capsys.readouterr()
    assert main(["--data", str(root), "decide", "--list"]) == 0
    out = capsys.readouterr().out
    assert f"Deferred until {until}" in out and "Ordered (CHG-42)" in out
    # bad input: one line, exit 2, nothing written
    assert (
        main(["--data", str(root), "decide", "srv-0001", "--metric", "cpu_p95", "--decision", "ordered"]) == 2
    )
    assert "reference" in capsys.readouterr().err
    assert (
        main(["--data", str(root), "decide", "srv-0001", "--metric", "nope", "--decision", "accepted"]) == 2
    )
    assert len(read_decisions(store)) == 2
    assert main(["--data", str(root), "sign-off", "latest", "--note", "ok", "--user", "bob"]) == 0
    assert f"Run {RUN0} signed off by bob" in capsys.readouterr().out
    assert main(["--data", str(root), "sign-off", RUN0]) == 2
    assert "already signed off" in capsys.readouterr().err


def test_each_decision_and_sign_off_is_an_audit_event(tmp_path, caplog):
    from forecasting.observability import AUDIT_LOGGER

    store = fs.local_target(tmp_path / "d").open()
    _publish(store, RUN0, 1)
    with caplog.at_level("INFO", logger=AUDIT_LOGGER):
        d = record_decision(store, _d(RUN0, decision="rejected", reason="known peak"))
        sign_off(store, RUN0, user="u1", note="fine")
    events = [r for r in caplog.records if r.name == AUDIT_LOGGER]
    assert [r.event for r in events] == ["decision", "sign-off"]
    assert events[0].decision_id == d.id and events[0].reason == "known peak" and events[0].decided_by == "u1"
    assert events[1].run_id == RUN0 and events[1].signed_by == "u1"
