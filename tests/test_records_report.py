"""The weekly report pack (forecasting/records/report.py): xlsx read back with openpyxl, PDF
pages rendered with pdftoppm (poppler-utils, scripts/ensure-poppler.sh) and checked non-blank;
the CLI and the Lambda handler, on disk and on a real S3 server."""

from __future__ import annotations

import shutil
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from openpyxl import load_workbook
from PIL import Image

from forecasting.records.decisions import new_decision, record_decision, sign_off
from forecasting.records.report import build_pack, changes_section, to_pdf, to_xlsx, track_record_section
from forecasting.settings import load_settings
from forecasting.sources import open_store
from tests import fault_scenarios as fs
from tests.plan_fixture import fixture_run_id
from tests.s3server import demo_fleet, demo_plan, seaweed  # noqa: F401 (fixture)

RUN = fixture_run_id(0)
PREV = "20260729T060000Z-prev00"


@pytest.fixture
def pack_store(plan_store_root: Path, tmp_path: Path):
    """A copy of the 200-server fixture store, plus an earlier run whose risk table differs from
    the latest by two new and one resolved risk row, and a decision on the top risk."""
    root = tmp_path / "store"
    shutil.copytree(plan_store_root, root)
    store = open_store(str(root))
    risk = store.read_run_table(RUN, "risk")
    at = risk[risk["severity"] != "none"].sort_values("score", ascending=False)
    assert len(at) >= 3
    dropped = at.index[1:3]  # present now, absent before: two "new"
    calm = risk[risk["severity"] == "none"].index[0]  # at risk before, calm now: one "resolved"
    prev_risk = risk.drop(index=dropped)
    prev_risk.loc[calm, "severity"] = "high"
    tables = {n: store.read_run_table(RUN, n) for n in ("forecasts", "recommendations", "backtest")}
    manifest = {**store.read_manifest(RUN), "run_id": PREV}
    manifest["input"] = {**manifest["input"], "snapshot": {"as_of": {"version": 0}}}
    assert store.publish_run(PREV, {**tables, "risk": prev_risk}, manifest) is False  # LATEST stays
    top = at.iloc[0]
    record_decision(
        store,
        new_decision(
            kind="risk",
            server_id=top["server_id"],
            subject=top["metric"],
            decision="ordered",
            reference="PO-7731",
            run_id=RUN,
            user="ann",
            user_name="Ann Planner",
        ),
    )
    sign_off(store, RUN, user="ann", user_name="Ann Planner", note="agreed")
    return store, root, len(at)


def test_pack_sections_and_fallbacks(pack_store):
    store, _root, n_at_risk = pack_store
    pack = build_pack(store, run_id=RUN)
    by_title = {s.title: s for s in pack.sections}
    kpis = by_title["Key figures"].kpis
    assert kpis["Risks (server × metric)"] == n_at_risk
    assert kpis["Risks without a decision"] == n_at_risk - 1
    assert kpis["Signed off"].startswith("Ann Planner at ")
    changes = by_title["Changes since the last plan"]
    # the run diff (records.diff) against the previous run: what it found, and why in words
    assert changes.kpis["New risks"] == 2 and changes.kpis["Resolved risks"] == 1
    listed = changes.table["change"].value_counts()
    assert listed.filter(like="new").sum() == 2 and listed.filter(like="resolved").sum() == 1
    assert "why the runs differ" in changes.note
    top = next(s for t, s in by_title.items() if t.startswith("Top "))
    assert top.table["decision"].iloc[0] == "Ordered (PO-7731)"
    assert (top.table["decision"].iloc[1:] == "— none —").all()
    assert "MASE" in by_title["Track record"].table
    images = [s.image for s in pack.sections if s.image]
    assert len(images) == 3 and all(i.startswith(b"\x89PNG") for i in images)


def test_plugged_in_sections_are_shown_as_given():
    summary = pd.DataFrame({"figure": ["servers at risk"], "before": [10], "after": [12]})
    sec = changes_section({"summary": summary, "note": "from the diff"})
    assert sec.table is summary and sec.note == "from the diff"
    tr = track_record_section({"MASE": 0.81, "breach calls that came true": 14, "table": summary})
    assert tr.kpis == {"MASE": 0.81, "breach calls that came true": 14} and tr.table is summary
    assert track_record_section(None, manifest={"track_record": {"coverage_80": 0.79}}).kpis == {
        "coverage_80": 0.79
    }


def test_xlsx_reads_back(pack_store, tmp_path):
    store, _root, n_at_risk = pack_store
    path = tmp_path / "pack.xlsx"
    path.write_bytes(to_xlsx(build_pack(store, run_id=RUN)))
    book = load_workbook(path)
    assert book.sheetnames == ["Summary", "Changes", "Top risks", "Charts", "Savings", "Track record"]
    summary = {r[0]: r[1] for r in book["Summary"].iter_rows(values_only=True) if r[0]}
    assert summary["Risks without a decision"] == n_at_risk - 1
    assert "Capacity plan — weekly pack" in summary
    top = list(book["Top risks"].iter_rows(values_only=True))
    header = next(r for r in top if r[0] == "server")
    first = top[top.index(header) + 1]
    assert first[header.index("decision")] == "Ordered (PO-7731)"
    assert len(book["Charts"]._images) == 3
    changes = {r[0]: r[1] for r in book["Changes"].iter_rows(values_only=True) if r[0]}
    assert changes["New risks"] == 2 and changes["Resolved risks"] == 1


def test_xlsx_text_is_never_a_formula(pack_store, tmp_path):
    store, _root, _n = pack_store
    pack = build_pack(store, run_id=RUN)
    pack.sections[1].table = pd.DataFrame({"change": ['=HYPERLINK("http://x")', "-12", "@SUM(A1)"]})
    path = tmp_path / "f.xlsx"
    path.write_bytes(to_xlsx(pack))
    values = [c.value for row in load_workbook(path)["Changes"].iter_rows() for c in row if c.value]
    assert '\'=HYPERLINK("http://x")' in values and "'@SUM(A1)" in values and "-12" in values
    assert not any(isinstance(v, str) and v.startswith("=") for v in values)


def _pages(pdf: Path, out: Path) -> list[Path]:
    subprocess.run(["pdftoppm", "-png", "-r", "40", str(pdf), str(out / "page")], check=True, timeout=60)
    return sorted(out.glob("page*.png"))


def _ink(png: Path) -> float:
    """Share of pixels that are not near-white."""
    a = np.asarray(Image.open(png).convert("L"), dtype=float)
    return float((a < 200).mean())


@pytest.mark.slow
def test_pdf_pages_render_and_are_not_blank(pack_store, tmp_path):
    store, _root, _n = pack_store
    pdf = tmp_path / "pack.pdf"
    pdf.write_bytes(to_pdf(build_pack(store, run_id=RUN)))
    assert pdf.read_bytes().startswith(b"%PDF")
    pages = _pages(pdf, tmp_path)
    assert len(pages) >= 2
    inks = [_ink(p) for p in pages]
    assert all(i > 0.005 for i in inks), inks
    text = subprocess.run(["pdftotext", str(pdf), "-"], capture_output=True, text=True, check=True).stdout
    text = " ".join(text.split())  # table cells wrap
    for words in (
        "Key figures",
        "Changes since the last plan",
        "Ordered (PO-7731)",
        "Track record",
        "Savings",
    ):
        assert words in text


@pytest.mark.slow
def test_cli_report_formats(pack_store, tmp_path, capsys):
    from forecasting.cli import main

    _store, root, _n = pack_store
    out = tmp_path / "packs"
    assert main(["--data", str(root), "report", "--format", "xlsx", "--out", f"{out}/"]) == 0
    written = Path(capsys.readouterr().out.strip())
    assert written == out / f"capacity-pack-{RUN}.xlsx" and load_workbook(written).sheetnames[0] == "Summary"
    assert main(["--data", str(root), "report", "--format", "pdf", "--out", str(tmp_path / "w.pdf")]) == 0
    assert (tmp_path / "w.pdf").read_bytes().startswith(b"%PDF")
    assert main(["--data", str(root), "report", "--out", "x.pdf"]) == 2  # text goes to stdout
    assert main(["--data", str(root), "report", "--top", "3"]) == 0
    assert "Top 3 risks" in capsys.readouterr().out  # the text report is unchanged


def test_lambda_report_handler_local(pack_store):
    from forecasting.aws.handlers import EventError, report

    _store, root, _n = pack_store
    settings = load_settings(data=str(root))
    out = report({"trigger": "schedule"}, settings=settings)
    assert out["status"] == "written" and len(out["written"]) == 2
    assert {Path(p).suffix for p in out["written"]} == {".pdf", ".xlsx"}
    assert all(Path(p).parent == root / "reports" for p in out["written"])
    with pytest.raises(EventError, match="format"):
        report({"format": "docx"}, settings=settings)


def test_lambda_report_handler_s3(seaweed, monkeypatch, tmp_path):  # noqa: F811
    from forecasting.aws.handlers import report

    target = fs.s3_target(seaweed)
    for k, v in target.env.items():
        monkeypatch.setenv(k, v)
    store = target.open()
    inventory, _ = demo_fleet(days=20)
    store.write_inventory(inventory)
    run = f"{datetime.now(UTC) - timedelta(days=1):%Y%m%dT%H%M%SZ}-s3pack"
    store.publish_run(run, demo_plan(inventory, 1), {"run_id": run, "input": {"servers": len(inventory)}})
    settings = load_settings(data=target.uri, s3_endpoint_url=target.endpoint)
    out = report({"format": "pdf"}, settings=settings)
    key = f"{target.uri}/reports/capacity-pack-{run}.pdf"
    assert out["written"] == [key]
    bucket, _, path = key.removeprefix("s3://").partition("/")
    body = seaweed.client.get_object(Bucket=bucket, Key=path)["Body"].read()
    assert body.startswith(b"%PDF")
