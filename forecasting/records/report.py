"""The weekly report pack for management: one run as an .xlsx workbook or a PDF.

Contents: KPIs, the changes since the last plan, the top risks with their decisions, savings,
the forecast's track record, and charts as images.

Why these libraries: charts are drawn with **matplotlib** (its Agg canvas, no display, no
browser: it runs the same in the Lambda image, where Kaleido would need a Chromium) and the PDF
is laid out with **ReportLab** (pure Python, no system libraries; WeasyPrint needs Pango/Cairo
from apt). The workbook is written with openpyxl, every text cell as text (never a formula).

Sections are plain data (:class:`Section`: a title, a note, KPIs, a table, an image), built by
pure functions from DataFrames and dicts, so other analyses plug in without touching the
renderers: :func:`changes_section` takes the output of a run diff and
:func:`track_record_section` the track-record figures; when none is given they fall back to
what is cheap and exact here (risk rows new/resolved against the previous run; this run's own
rolling-origin backtest).
"""

from __future__ import annotations

import io
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..report import savings_by_business_unit, top_risks
from ..settings import Settings
from ..sources import NoRunError, Store, StoreError
from . import RecordsError
from .decisions import attach_decisions, current_decisions, read_decisions, read_signoff, undecided_count

log = logging.getLogger(__name__)

SEVERITIES = ("critical", "high", "medium", "low")
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r", "\n")
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
FORMATS = ("xlsx", "pdf")


@dataclass
class Section:
    """One part of the pack: any of KPIs (label → value), a table, a PNG image; and a note."""

    title: str
    note: str = ""
    kpis: dict[str, Any] = field(default_factory=dict)
    table: pd.DataFrame | None = None
    image: bytes | None = None
    sheet: str | None = None  # the workbook sheet (default: the title)


@dataclass
class Pack:
    run_id: str
    title: str
    subtitle: str
    sections: list[Section]


# --------------------------------------------------------------------------- charts


def _png(fig: Any) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    return buf.getvalue()


def _figure(width: float = 7.0, height: float = 3.2):
    from matplotlib.figure import Figure  # the Agg canvas: no pyplot state, safe in threads

    fig = Figure(figsize=(width, height))
    return fig, fig.add_subplot(1, 1, 1)


SEVERITY_COLOURS = {"critical": "#b02a37", "high": "#e8590c", "medium": "#f0ad4e", "low": "#6c9bd2"}


def risk_chart(risk: pd.DataFrame, inventory: pd.DataFrame) -> bytes:
    """Servers at risk per business unit, stacked by their worst severity."""
    rank = {s: i for i, s in enumerate(SEVERITIES)}
    at = risk[risk["severity"].astype(str).isin(SEVERITIES)].copy()
    at["rank"] = at["severity"].astype(str).map(rank)
    worst = at.sort_values("rank").drop_duplicates("server_id")
    worst = worst.merge(inventory[["server_id", "business_unit"]], on="server_id", how="left")
    table = pd.crosstab(worst["business_unit"].fillna("unknown"), worst["severity"].astype(str))
    fig, ax = _figure()
    if table.empty:
        ax.text(0.5, 0.5, "No server at risk", ha="center", va="center", fontsize=14)
        ax.set_axis_off()
        return _png(fig)
    bottom = np.zeros(len(table))
    for sev in SEVERITIES:
        if sev in table:
            vals = table[sev].to_numpy(dtype=float)
            ax.bar(table.index.astype(str), vals, bottom=bottom, label=sev, color=SEVERITY_COLOURS[sev])
            bottom += vals
    ax.set_ylabel("servers at risk")
    ax.set_title("Servers at risk by business unit (worst metric)")
    ax.legend(frameon=False, fontsize=8)
    ax.tick_params(axis="x", labelrotation=30, labelsize=8)
    return _png(fig)


def savings_chart(savings: pd.DataFrame) -> bytes:
    """Potential savings per business unit, $/month."""
    fig, ax = _figure()
    vals = savings["monthly savings $"] if "monthly savings $" in savings else pd.Series(dtype=float)
    if vals.empty or float(vals.sum()) <= 0:
        ax.text(0.5, 0.5, "No savings proposed", ha="center", va="center", fontsize=14)
        ax.set_axis_off()
        return _png(fig)
    ax.barh(vals.index.astype(str)[::-1], vals.to_numpy(dtype=float)[::-1], color="#2f7d4f")
    ax.set_xlabel("$ per month")
    ax.set_title("Potential savings by business unit")
    return _png(fig)


def breach_timeline_chart(risk: pd.DataFrame) -> bytes:
    """Expected breaches per week over the horizon (when the work lands)."""
    fig, ax = _figure()
    dates = pd.to_datetime(risk["breach_expected"], utc=True).dropna()
    if dates.empty:
        ax.text(0.5, 0.5, "No breach expected within the horizon", ha="center", va="center", fontsize=14)
        ax.set_axis_off()
        return _png(fig)
    weekly = dates.dt.tz_convert(None).dt.to_period("W").dt.start_time.value_counts().sort_index()
    ax.bar(weekly.index, weekly.to_numpy(), width=5, color="#375a7f")
    ax.set_ylabel("server × metric")
    ax.set_title("Expected breaches per week")
    fig.autofmt_xdate()
    return _png(fig)


# --------------------------------------------------------------------------- sections


def kpi_section(
    manifest: dict,
    risk: pd.DataFrame | None,
    recs: pd.DataFrame | None,
    current: pd.DataFrame,
    signoff: dict | None,
) -> Section:
    kpis: dict[str, Any] = {"Servers": int((manifest.get("input") or {}).get("servers") or 0)}
    if risk is not None:
        at = risk[risk["severity"].astype(str) != "none"]
        kpis["Risks (server × metric)"] = len(at)
        kpis["Servers at risk"] = int(at["server_id"].nunique())
        for sev in SEVERITIES:
            kpis[f"  {sev}"] = int((at["severity"].astype(str) == sev).sum())
        days = pd.to_numeric(risk["days_to_breach"], errors="coerce")
        kpis["Servers breaching within 30 days"] = int(risk.loc[days <= 30, "server_id"].nunique())
        kpis["Risks without a decision"] = undecided_count(risk, current)
    if recs is not None:
        kpis["Decommission reviews"] = int((recs["action"] == "decommission").sum())
        kpis["Right-size"] = int((recs["action"] == "right-size").sum())
        kpis["Consolidate"] = int((recs["action"] == "consolidate").sum())
        kpis["Upgrades"] = int((recs["action"] == "upgrade").sum())
        kpis["Potential savings $/month"] = round(float(np.nansum(recs["monthly_savings"].clip(lower=0))), 0)
    kpis["Signed off"] = f"{signoff.get('user_name')} at {signoff.get('at')}" if signoff else "not yet"
    return Section("Key figures", kpis=kpis, sheet="Summary")


def changes_section(changes: Mapping[str, Any] | None) -> Section:
    """Changes since the last plan.

    ``changes`` (:func:`diff_changes`: the run diff) maps ``"summary"`` to a DataFrame or a
    {figure: value} mapping, optionally ``"table"`` to the rows to list and ``"note"`` to a
    sentence; it is shown as given. None: there is no earlier run to compare with.
    """
    if not changes:
        return Section(
            "Changes since the last plan",
            note="No earlier run in the store to compare with.",
            sheet="Changes",
        )
    summary = changes.get("summary")
    table = changes.get("table")
    kpis = dict(summary) if isinstance(summary, Mapping) else {}
    if isinstance(summary, pd.DataFrame) and table is None:
        table = summary
    return Section(
        "Changes since the last plan",
        note=str(changes.get("note") or ""),
        kpis=kpis,
        table=table,
        sheet="Changes",
    )


def track_record_section(
    figures: Any = None, *, manifest: dict | None = None, backtest: pd.DataFrame | None = None
) -> Section:
    """The forecast's track record.

    ``figures`` (from the track record, when available): a DataFrame (shown as the table) or a
    mapping of figure → value (KPIs; a ``"table"`` entry may hold a DataFrame). Without it, the
    manifest's ``track_record`` entry if a run recorded one, else this run's own rolling-origin
    backtest per metric and model (labelled as such: it is the honest figure we have).
    """
    if figures is None and manifest and isinstance(manifest.get("track_record"), Mapping):
        figures = manifest["track_record"]
    if isinstance(figures, pd.DataFrame):
        return Section("Track record", table=figures, sheet="Track record")
    if isinstance(figures, Mapping):
        table = figures.get("table") if isinstance(figures.get("table"), pd.DataFrame) else None
        kpis = {k: v for k, v in figures.items() if k != "table" and not isinstance(v, Mapping | list)}
        return Section(
            "Track record", note=str(figures.get("note", "")), kpis=kpis, table=table, sheet="Track record"
        )
    if backtest is None or backtest.empty:
        return Section("Track record", note="No track record or backtest in this run.", sheet="Track record")
    cols = [c for c in ("mase", "coverage_80", "coverage_95") if c in backtest]
    agg = backtest.groupby(["metric", "model"])[cols].mean().reset_index()
    for c in ("coverage_80", "coverage_95"):
        if c in agg:
            agg[c] = (100 * agg[c]).round(1)
    agg = agg.rename(
        columns={"mase": "MASE", "coverage_80": "80 % band coverage %", "coverage_95": "95 % band coverage %"}
    )
    if "MASE" in agg:
        agg["MASE"] = agg["MASE"].round(3)
    return Section(
        "Track record",
        note="This run's rolling-origin backtest (forecasts made at past cut-offs, scored against what "
        "followed); MASE below 1 beats the seasonal naive forecast.",
        table=agg,
        sheet="Track record",
    )


def diff_changes(store: Store, run_a: str, run_b: str, rows: int = 200) -> dict[str, Any]:
    """The run diff (records.diff) as the pack's changes section: totals as KPIs, the changes
    (new, resolved, moved, changed recommendations; at most ``rows``) as the table, why in words."""
    from .diff import changes_frame, diff_runs

    d = diff_runs(store, run_a, run_b)
    kpis = {
        "New risks": len(d.new_risks),
        "Resolved risks": len(d.resolved_risks),
        "Breach dates moved": len(d.moved_breaches),
        "Recommendations changed": len(d.changed_recommendations),
    }
    table = changes_frame(d)
    note = f"Against run {run_a} (the previous published run); why the runs differ: " + "; ".join(d.causes())
    if len(table) > rows:
        note += f". The first {rows:,} of {len(table):,} changes are listed (`python -m forecasting diff` has all)."
    return {"summary": kpis, "table": table.head(rows), "note": note}


def track_record_figures(store: Store, run_id: str, runs: int = 12) -> dict[str, Any] | None:
    """The saved track records (records.track) of the runs up to this one, newest last: one row per
    past run (what it predicted against what happened since). None when no run has one yet."""
    from .track import load_summaries

    rows = []
    for s in load_summaries(store):
        if str(s.get("run_id", "")) > run_id:
            continue
        calls = s.get("calls") or {}
        rows.append(
            {
                "run": s.get("run_id"),
                "scored to": str(s.get("as_of", ""))[:10],
                "horizon elapsed %": round(100 * float(s.get("elapsed_share") or 0), 1),
                "series": s.get("series"),
                "median MASE": s.get("mase_median"),
                "80 % band coverage %": None
                if s.get("coverage_80") is None
                else round(100 * s["coverage_80"], 1),
                "calls came true": calls.get("hit"),
                "missed": calls.get("missed"),
                "false alarms": calls.get("false_alarm"),
            }
        )
    if not rows:
        return None
    return {
        "note": "Past runs scored against the actuals that arrived since (python -m forecasting track-record); "
        "MASE below 1 beats the seasonal naive forecast.",
        "table": pd.DataFrame(rows[-runs:]),
    }


def previous_run(store: Store, run_id: str) -> str | None:
    """The published run before ``run_id`` (run ids sort by time)."""
    earlier = [r for r in store.list_runs() if r < run_id]
    return earlier[-1] if earlier else None


def build_pack(
    store: Store,
    settings: Settings | None = None,
    *,
    run_id: str | None = None,
    top: int = 15,
    changes: Mapping[str, Any] | None = None,
    track_record: Any = None,
    as_of: date | None = None,
) -> Pack:
    """Every section of the pack for a run (default: the latest), read from the store.

    ``changes`` / ``track_record``: figures computed elsewhere (the run diff, the track record);
    None uses the fallbacks of :func:`changes_section` / :func:`track_record_section`.
    """
    from .retention import reading

    run_id = run_id or store.latest_run_id()
    if not run_id:
        raise NoRunError(f"no published run in {store.uri}: run `python -m forecasting run` first")
    with reading(store, run_id, reader="report pack"):
        manifest = store.read_manifest(run_id)
        risk = store.read_run_table(run_id, "risk")
        recs = store.read_run_table(run_id, "recommendations")
        backtest = store.read_run_table(run_id, "backtest")
        prev = previous_run(store, run_id) if changes is None else None
        if prev:
            try:
                with reading(store, prev, reader="report pack"):
                    changes = diff_changes(store, prev, run_id)
            except (StoreError, RecordsError) as e:  # removed meanwhile: nothing to compare
                log.warning("previous run %s unreadable: %s", prev, e)
                prev = None
        if track_record is None:
            track_record = track_record_figures(store, run_id)
    inventory = store.read_inventory()
    current = current_decisions(read_decisions(store), run_id=run_id, as_of=as_of)
    signoff = read_signoff(store, run_id)
    sections = [kpi_section(manifest, risk, recs, current, signoff)]
    sections.append(changes_section(changes))
    if risk is not None:
        top_table = top_risks(risk, inventory, top)
        keyed = (
            risk[risk["severity"] != "none"]
            .sort_values(["score", "breach_probability"], ascending=False)
            .head(top)
        )
        decided = attach_decisions(keyed[["server_id", "metric"]].reset_index(drop=True), current, "risk")
        top_table["decision"] = decided["decision"].replace("", "— none —").to_numpy()
        top_table["decided by"] = decided["decision_by"].to_numpy()
        sections.append(
            Section(
                f"Top {len(top_table)} risks with decisions",
                note="Highest score first. A deferral past its date shows as expired (no decision in force).",
                table=top_table,
                sheet="Top risks",
            )
        )
        sections.append(Section("Expected breaches", image=breach_timeline_chart(risk), sheet="Charts"))
        sections.append(Section("Risk by business unit", image=risk_chart(risk, inventory), sheet="Charts"))
    if recs is not None:
        savings = savings_by_business_unit(recs, inventory)
        rec_keyed = recs[recs["action"] != "keep"][["server_id", "action"]]
        decided = attach_decisions(rec_keyed, current, "recommendation", subject="action")
        n_decided = int(decided["decided"].sum())
        sections.append(
            Section(
                "Savings",
                note=f"Recommendations by business unit; {n_decided:,} of {len(rec_keyed):,} actions have a decision.",
                table=savings.reset_index().rename(columns={"business_unit": "business unit"}),
                sheet="Savings",
            )
        )
        sections.append(Section("Savings by business unit", image=savings_chart(savings), sheet="Charts"))
    sections.append(track_record_section(track_record, manifest=manifest, backtest=backtest))
    created = str(manifest.get("created_at") or "")[:16].replace("T", " ")
    inp = manifest.get("input") or {}
    return Pack(
        run_id=run_id,
        title="Capacity plan — weekly pack",
        subtitle=f"Run {run_id}"
        + (f" of {created} UTC" if created else "")
        + (f" · data to {str(inp.get('end'))[:10]}" if inp.get("end") else "")
        + f" · generated {datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        sections=sections,
    )


# --------------------------------------------------------------------------- renderers


def _safe_text(value: Any) -> str:
    text = _CONTROL.sub("", str(value))
    risky = text.startswith(FORMULA_PREFIXES) or text.lstrip(" ").startswith(FORMULA_PREFIXES)
    # a negative number shown as text stays readable; anything else gets the usual quote
    if risky and not re.fullmatch(r"\s*-?[\d,.]+\s*%?", text):
        return "'" + text
    return text


def _cell_value(value: Any) -> Any:
    if value is None or value is pd.NaT:
        return None
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, pd.Timestamp | datetime):
        return f"{pd.Timestamp(value):%Y-%m-%d}"
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return _safe_text(value)


def _write(ws: Any, row: int, col: int, value: Any, bold: bool = False) -> None:
    from openpyxl.styles import Font

    v = _cell_value(value)
    if v is None:
        return
    cell = ws.cell(row=row, column=col)
    cell.value = v
    if isinstance(v, str):
        cell.data_type = "s"  # text, even if openpyxl would take it for a formula
    if bold:
        cell.font = Font(bold=True)


def to_xlsx(pack: Pack) -> bytes:
    """The pack as a workbook: one sheet per section kind (Summary, Changes, Top risks, Savings,
    Track record, Charts with the images)."""
    from openpyxl import Workbook
    from openpyxl.drawing.image import Image
    from openpyxl.utils import get_column_letter

    book = Workbook()
    sheets: dict[str, Any] = {}
    cursor: dict[str, int] = {}

    def sheet(name: str) -> Any:
        if name not in sheets:
            ws = book.active if not sheets else book.create_sheet()
            ws.title = re.sub(r"[\[\]:*?/\\]", "", name)[:31]
            sheets[name] = ws
            cursor[name] = 1
        return sheets[name]

    ws = sheet("Summary")
    _write(ws, 1, 1, pack.title, bold=True)
    _write(ws, 2, 1, pack.subtitle)
    cursor["Summary"] = 4
    for sec in pack.sections:
        name = sec.sheet or sec.title
        ws = sheet(name)
        r = cursor[name]
        _write(ws, r, 1, sec.title, bold=True)
        r += 1
        if sec.note:
            _write(ws, r, 1, sec.note)
            r += 1
        for k, v in sec.kpis.items():
            _write(ws, r, 1, k)
            _write(ws, r, 2, v)
            r += 1
        if sec.table is not None and not sec.table.empty:
            for c, col in enumerate(sec.table.columns, start=1):
                _write(ws, r, c, str(col), bold=True)
            for values in sec.table.itertuples(index=False, name=None):
                r += 1
                for c, v in enumerate(values, start=1):
                    _write(ws, r, c, v)
            r += 1
        elif sec.table is not None:
            _write(ws, r, 1, "none")
            r += 1
        if sec.image:
            img = Image(io.BytesIO(sec.image))
            ws.add_image(img, f"A{r}")
            r += int(img.height / 20) + 2
        cursor[name] = r + 1
    for ws in book.worksheets:
        for i, column in enumerate(ws.iter_cols(max_row=200), start=1):
            width = max((len(str(c.value)) for c in column if c.value is not None), default=8)
            ws.column_dimensions[get_column_letter(i)].width = min(max(width + 2, 8), 60)
    buf = io.BytesIO()
    book.save(buf)
    return buf.getvalue()


def to_pdf(pack: Pack) -> bytes:
    """The pack as an A4 landscape PDF: title, then each section (KPIs, table, chart)."""
    from xml.sax.saxutils import escape

    from reportlab.lib import colors
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.styles import getSampleStyleSheet
    from reportlab.lib.units import cm
    from reportlab.platypus import Image, LongTable, Paragraph, SimpleDocTemplate, Spacer, TableStyle

    styles = getSampleStyleSheet()
    small = styles["BodyText"].clone("small", fontSize=7.5, leading=9)
    buf = io.BytesIO()
    doc = SimpleDocTemplate(
        buf,
        pagesize=landscape(A4),
        leftMargin=1.5 * cm,
        rightMargin=1.5 * cm,
        topMargin=1.2 * cm,
        bottomMargin=1.2 * cm,
        title=pack.title,
        author="Capacity Forecaster",
    )
    width = doc.width
    story: list[Any] = [
        Paragraph(escape(pack.title), styles["Title"]),
        Paragraph(escape(pack.subtitle), styles["Normal"]),
    ]

    def para(value: Any) -> Paragraph:
        v = _cell_value(value)
        return Paragraph(
            escape("" if v is None else (f"{v:,.6g}" if isinstance(v, float) else str(v))), small
        )

    grid = TableStyle(
        [
            ("GRID", (0, 0), (-1, -1), 0.25, colors.grey),
            ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#e9ecef")),
            ("VALIGN", (0, 0), (-1, -1), "TOP"),
        ]
    )
    for sec in pack.sections:
        story += [Spacer(1, 0.4 * cm), Paragraph(escape(sec.title), styles["Heading2"])]
        if sec.note:
            story.append(Paragraph(escape(sec.note), styles["Normal"]))
        if sec.kpis:
            rows = [[para(k), para(v)] for k, v in sec.kpis.items()]
            t = LongTable(rows, colWidths=[7 * cm, 8 * cm], hAlign="LEFT")
            t.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.25, colors.lightgrey)]))
            story.append(t)
        if sec.table is not None and not sec.table.empty:
            cols = list(sec.table.columns)
            rows = [[para(c) for c in cols]] + [
                [para(v) for v in r] for r in sec.table.itertuples(index=False, name=None)
            ]
            t = LongTable(rows, colWidths=[width / len(cols)] * len(cols), repeatRows=1, hAlign="LEFT")
            t.setStyle(grid)
            story.append(t)
        if sec.image:
            img = Image(io.BytesIO(sec.image))
            scale = min(1.0, (width * 0.75) / img.drawWidth, (doc.height * 0.7) / img.drawHeight)
            img.drawWidth *= scale
            img.drawHeight *= scale
            story.append(img)
    doc.build(story)
    return buf.getvalue()


def render(pack: Pack, fmt: str) -> bytes:
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    return to_xlsx(pack) if fmt == "xlsx" else to_pdf(pack)


def pack_name(run_id: str, fmt: str) -> str:
    return f"capacity-pack-{run_id}.{fmt}"


def write_pack(
    store: Store,
    settings: Settings | None = None,
    *,
    fmt: str,
    out: str | None = None,
    run_id: str | None = None,
    top: int = 15,
    changes: Mapping[str, Any] | None = None,
    track_record: Any = None,
) -> str:
    """Build, render and write the pack; returns where it went (a local path or s3:// URI).

    ``out``: a file, a directory (local, or an ``s3://bucket/prefix/`` ending in ``/``), or None
    for ``./capacity-pack-<run>.<fmt>``. Local files are written under a temporary name and
    renamed (never half a file)."""
    pack = build_pack(store, settings, run_id=run_id, top=top, changes=changes, track_record=track_record)
    data = render(pack, fmt)
    name = pack_name(pack.run_id, fmt)
    if out and out.startswith("s3://"):
        target = out + name if out.endswith("/") else out
        _put_s3(target, data, settings, store)
        return target
    path = Path(out) if out else Path(name)
    if path.is_dir() or (out or "").endswith("/"):
        path.mkdir(parents=True, exist_ok=True)
        path = path / name
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".tmp-{path.name}")
    tmp.write_bytes(data)
    tmp.replace(path)
    return str(path)


def _put_s3(uri: str, data: bytes, settings: Settings | None, store: Store | None = None) -> None:
    """PUT the pack at ``uri`` through the store's own S3 connection when it has one (same
    credentials and endpoint), else a new one from the settings."""
    from ..sources.s3 import S3Connection, parse_s3_uri, resolve_endpoint

    loc = parse_s3_uri(uri)
    if not loc.prefix:
        raise ValueError(f"{uri}: give the object key of the pack (or a prefix ending in /)")
    conn = getattr(_object_store_or_none(store), "connection", None)
    if conn is None:
        conn = S3Connection(endpoint=resolve_endpoint(settings.s3_endpoint_url if settings else None))
    content = (
        "application/pdf"
        if uri.endswith(".pdf")
        else "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    )
    try:
        conn.client("s3").put_object(Bucket=loc.bucket, Key=loc.prefix, Body=data, ContentType=content)
    except Exception as e:
        raise conn.translate_boto_error(e, loc, "write the report pack to") from e


def _object_store_or_none(store: Store | None) -> Any:
    if store is None:
        return None
    from ..shards import object_store

    try:
        return object_store(store)
    except StoreError:
        return None


def default_out(store: Store) -> str:
    """Where a scheduled pack goes: ``reports/`` under the store (s3://… or a local directory)."""
    ps = _object_store_or_none(store)
    loc = getattr(ps, "location", None)
    if loc is not None:
        return loc.child("reports").uri + "/"
    return str(Path(ps.root if ps is not None else ".") / "reports") + "/"


def figures(pack: Pack) -> dict[str, Any]:
    """The pack's KPIs by section (what the Lambda handler returns and logs)."""
    return {s.title: s.kpis for s in pack.sections if s.kpis}


__all__: Sequence[str] = [
    "Pack",
    "Section",
    "build_pack",
    "changes_section",
    "render",
    "to_pdf",
    "to_xlsx",
    "track_record_section",
    "write_pack",
]
