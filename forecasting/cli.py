"""Command line: ``python -m forecasting [--data URI] COMMAND``.

Exit codes: 0 success; 2 bad input or usage (nothing written); 3 done, but some rows were
rejected (see the report); 4 the data store could not be read or written; 5 another run holds
the store's lease (stderr: "another run (id …, started … by …) holds the store until …"); 1 anything else.
User errors print one line starting with "error:" on stderr, never a traceback.

Output: a command's *answer* (the validation report, `report`, `athena-ddl`, `--help`) is plain
text on stdout, for a person or a pipe. Everything else is a log record: progress, the summaries
of `generate`, `ingest` and `run`, and errors; with the default CAPFC_LOG_FORMAT=json these are
JSON lines on stdout (with the run's metrics as CloudWatch EMF lines) — on stderr for the
commands with an answer, so stdout holds only the answer — and with `text` readable lines on
stderr plus progress bars (forecasting.observability).
"""

from __future__ import annotations

import argparse
import logging
import re
import sys
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from .files import FileFormatError
from .observability import SERVICE_BATCH, configure_logging, log_format
from .records import RecordsError
from .schema import FREQUENCIES, METRIC_COLUMNS, SchemaError, ValidationReport, validate
from .settings import Settings, SettingsError, load_settings
from .sources import NoDataError, Store, StoreError, open_store
from .sources.commit import LeaseHeldError

EXIT_OK, EXIT_INTERNAL, EXIT_BAD_INPUT, EXIT_REJECTED, EXIT_STORE = 0, 1, 2, 3, 4
EXIT_BUSY = 5  # another run holds the store's lease: try again after the time it names

log = logging.getLogger(__name__)


class UsageError(ValueError):
    """A command line that cannot be carried out as given."""


# --------------------------------------------------------------------------- helpers


def _out(msg: str = "") -> None:
    """A line of the command's answer: plain text on stdout."""
    print(msg, flush=True)


def _say(msg: str) -> None:
    """Progress and summaries: log records (JSON lines unless CAPFC_LOG_FORMAT=text)."""
    log.info(msg.strip())


def _bars() -> bool:
    """Progress bars only for a person's terminal: in JSON logs they would be noise."""
    return log_format() == "text"


def _bar(total: int, desc: str, unit: str = "it") -> tqdm:
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        file=sys.stderr,
        leave=False,
        dynamic_ncols=True,
        disable=not _bars(),
    )


@contextmanager
def _step(desc: str):
    """One log record per stage, with its time: the progress of a long command."""
    t0 = time.perf_counter()
    try:
        yield
    except BaseException:
        log.warning("%s failed after %.1f s", desc, time.perf_counter() - t0, extra={"step": desc})
        raise
    seconds = time.perf_counter() - t0
    log.info("%s: %.1f s", desc, seconds, extra={"step": desc, "seconds": round(seconds, 3)})


def _print_report(report: ValidationReport, limit: int = 30) -> None:
    lines = report.lines()
    for line in lines[:limit]:
        _out(f"  {line}")
    if len(lines) > limit:
        _out(f"  … {len(lines) - limit} more findings")


def _has_rejections(report: ValidationReport) -> bool:
    return any(f.action in ("dropped", "rejected") for f in report.findings)


def _write_validated(
    store: Store, inventory: pd.DataFrame, metrics: pd.DataFrame, freq: str, mode: str
) -> None:
    store.write_inventory(inventory)
    n_bu = inventory["business_unit"].nunique()
    with _bar(max(n_bu, 1), "writing metrics", "partition") as bar:
        store.write_metrics(metrics, inventory, freq=freq, mode=mode, on_partition=lambda _bu: bar.update())


# --------------------------------------------------------------------------- commands


def cmd_generate(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    """Simulate and write the fleet a block of servers at a time (synthetic.fleet_blocks): memory is
    bounded by the block, not the fleet, so 100,000 servers generate on a small machine."""
    from .synthetic import BLOCK_SERVERS, fleet_blocks

    if store.has_data() and not args.force:
        raise UsageError(f"{store.uri} already holds data; pass --force to replace it with a generated fleet")
    if args.servers < 1:
        raise UsageError("--servers must be at least 1")
    t0 = time.perf_counter()
    _say(f"Generating {args.servers:,} servers × {args.days:,} days ({args.freq}) into {store.uri}")
    try:
        blocks = fleet_blocks(args.servers, days=args.days, start=args.start, freq=args.freq, seed=args.seed)
        n_blocks = -(-args.servers // BLOCK_SERVERS)
        inventories, rows, lo, hi = [], 0, None, None
        with _writer_lease(store, settings, "generate"), _bar(n_blocks, "generating", "block") as bar:
            for k, fleet in enumerate(blocks):
                v = validate(fleet.inventory, fleet.metrics, args.freq, source="generated fleet")
                del fleet
                store.write_metrics(
                    v.metrics, v.inventory, freq=args.freq, mode="overwrite" if k == 0 else "append"
                )
                inventories.append(v.inventory)
                rows += len(v.metrics)
                ts = v.metrics["timestamp"]
                lo, hi = (ts.min(), ts.max()) if lo is None else (min(lo, ts.min()), max(hi, ts.max()))
                del v, ts
                bar.update()
            # the inventory last: a run never sees servers whose metrics are not written yet
            store.write_inventory(
                pd.concat(inventories, ignore_index=True).sort_values("server_id", ignore_index=True)
            )
    except ValueError as e:  # the generator's own argument checks
        raise UsageError(str(e)) from None
    _say(
        f"Done in {time.perf_counter() - t0:.1f} s: {args.servers:,} servers, "
        f"{rows:,} {args.freq} rows, {lo:%Y-%m-%d} → {hi:%Y-%m-%d}."
    )
    return EXIT_OK


def _writer_lease(store: Store, settings: Settings, what: str):
    """One writer of the metric store at a time (``.ingest-lease``): the inventory and the
    partitions are read, merged and rewritten, so two ingests at once could drop each other's rows."""
    import contextlib

    from .shards import object_store
    from .sources.base import new_run_id
    from .sources.commit import hold_lease

    try:
        ps = object_store(store)
    except StoreError:
        return contextlib.nullcontext()
    return hold_lease(ps.cond, ps._p(".ingest-lease"), f"{what}-{new_run_id()}", settings.lease_seconds)


def cmd_ingest(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    with _writer_lease(store, settings, "ingest"):
        return _ingest(args, settings, store)


def _ingest(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    from .files import read_frame
    from .ingest import ingest_to_store
    from .sources.parquet import ParquetStore

    paths = [Path(p) for p in args.files]
    info = store.read_store_info() if store.has_data() else {}
    if info.get("freq") and info["freq"] != args.freq:
        raise UsageError(f"{store.uri} holds {info['freq']} metrics; ingest with --freq {info['freq']}")
    inventory, inv_report = None, None
    existing = store.read_inventory() if store.has_data() else None
    if args.inventory:
        from .schema import validate_inventory

        # a DR partner may be a server the store already holds
        known = existing["server_id"].astype(str) if existing is not None else ()
        inventory, inv_report = validate_inventory(
            read_frame(args.inventory, table="inventory"), str(args.inventory), known_servers=known
        )
        if inv_report.findings:
            _print_report(inv_report)
    if inventory is None and existing is not None:
        inventory = existing
    elif inventory is not None and existing is not None:
        inventory = pd.concat([existing, inventory]).drop_duplicates("server_id", keep="last")
    t0 = time.perf_counter()
    from .shards import object_store

    target = store if isinstance(store, ParquetStore) else object_store(store)  # Athena: its S3 tables
    with (
        _step(f"read, roll up and write {len(paths)} file(s) as {args.freq} p95"),
        _bar(1, "rolling up", "block") as bar,
    ):

        def progress(k: int, n: int) -> None:
            bar.total = n
            bar.update()

        result = ingest_to_store(
            target,
            paths,
            server_id=args.server_id,
            metric=args.metric,
            freq=args.freq,
            inventory=inventory,
            add_missing=not args.inventory,
            on_block=progress,
        )
    _print_report(result.report)
    _say(
        f"Ingested {result.rows:,} {args.freq} rows for {result.servers:,} server(s) into {store.uri} "
        f"in {time.perf_counter() - t0:.1f} s ({result.blocks} block(s))."
    )
    # the inventory file's own rejections (e.g. a bad pinned value) count too, not just the samples'
    if _has_rejections(result.report) or (inv_report is not None and _has_rejections(inv_report)):
        _out("Some rows were rejected (see above); the valid rows were written.")
        return EXIT_REJECTED
    return EXIT_OK


def cmd_validate(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    from .files import read_frame

    if args.inventory or args.metrics:
        if not (args.inventory and args.metrics):
            raise UsageError(
                "give both --inventory and --metrics to validate files (or neither for the store)"
            )
        inventory = read_frame(args.inventory, table="inventory")
        metrics = read_frame(args.metrics, table="metrics")
        source, freq = f"{args.inventory} + {args.metrics}", args.freq or settings.freq
    else:
        with _step(f"read {store.uri}"):
            inventory = store.read_inventory()
            metrics = store.read_metrics()
        source, freq = store.uri, args.freq or store.read_store_info().get("freq", settings.freq)
    with _step("validate"):
        v = validate(inventory, metrics, freq, source=source)
    _out(f"Validation of {source} ({freq}):")
    _print_report(v.report, limit=args.limit)
    if _has_rejections(v.report):
        _out("Result: problems found — the rows above would be dropped or rejected.")
        return EXIT_REJECTED
    _out(f"Result: OK — {len(v.inventory):,} servers, {len(v.metrics):,} rows pass the contract.")
    return EXIT_OK


def cmd_run(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    from .engine import run

    engine = args.engine or ("dask" if args.scheduler else None)
    updates = {k: v for k, v in (("engine", engine), ("scheduler", args.scheduler)) if v}
    manifest = run(
        store,
        settings.model_copy(update=updates) if updates else settings,
        model=args.model,
        horizon=args.horizon,
        backtest=not args.no_backtest,
        echo=_say,
        progress=_bars(),
        trigger=args.trigger,
    )
    return EXIT_OK if manifest else EXIT_INTERNAL


def cmd_report(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    if args.run and args.run not in store.list_runs():  # a mistyped id is bad input, not a store fault
        latest = store.latest_run_id()
        raise UsageError(
            f"no run {args.run[:80]} in {store.uri}"
            + (f"; the latest is {latest}" if latest else "; it holds no run yet")
        )
    if args.format == "text":
        from .report import render_report

        if args.out:
            raise UsageError("--out is for --format xlsx or pdf (the text report goes to stdout)")
        _out(render_report(store, run_id=args.run, top=args.top))
        return EXIT_OK
    from .records.report import write_pack

    path = write_pack(store, settings, fmt=args.format, out=args.out, run_id=args.run, top=args.top)
    _out(str(path))
    return EXIT_OK


def _run_arg(store: Store, run: str | None) -> str:
    """A run id from the command line ('latest' or none: the run LATEST names)."""
    from .sources import NoRunError
    from .sources.base import check_run_id

    if not run or run == "latest":
        latest = store.latest_run_id()
        if not latest:
            raise NoRunError(f"no published run in {store.uri}: run `python -m forecasting run` first")
        return latest
    try:
        return check_run_id(run)
    except StoreError as e:
        raise UsageError(str(e)) from None


def _cli_user(args: argparse.Namespace) -> tuple[str, str]:
    """(user id, display name) recorded for a decision or sign-off made from a script."""
    from .sources.commit import who

    if args.user:
        return args.user, f"{args.user} (cli, {who()})"
    return who(), who()


def cmd_decide(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    from .records.decisions import (
        DecisionError,
        check_row,
        current_decisions,
        new_decision,
        read_decisions,
        record_decision,
    )

    try:
        if args.list:
            run_id = _run_arg(store, args.run)
            cur = current_decisions(read_decisions(store), run_id=run_id)
            if cur.empty:
                _out(f"No decisions recorded up to run {run_id}.")
                return EXIT_OK
            shown = cur[["kind", "server_id", "subject", "label", "in_effect", "user_name", "at"]]
            _out(f"Decisions in force for run {run_id}:")
            _out(shown.to_string(index=False))
            return EXIT_OK
        if not args.server or not args.decision:
            raise UsageError("give SERVER and --decision (or --list)")
        if bool(args.metric) == bool(args.recommendation):
            raise UsageError(
                "give either --metric METRIC (a risk row) or --recommendation (its recommendation)"
            )
        run_id = _run_arg(store, args.run)
        if args.metric:
            kind, subject = "risk", args.metric
        else:
            kind = "recommendation"
            recs = store.read_run_table(run_id, "recommendations", server_ids=[args.server])
            if recs is None or recs.empty:
                raise DecisionError(f"run {run_id} has no recommendation for server {args.server}")
            subject = str(recs["action"].iat[0])
        check_row(store, run_id, kind, args.server, subject)
        user, name = _cli_user(args)
        d = record_decision(
            store,
            new_decision(
                kind=kind,
                server_id=args.server,
                subject=subject,
                decision=args.decision,
                run_id=run_id,
                user=user,
                user_name=name,
                until=args.until,
                reference=args.reference,
                reason=args.reason,
                note=args.note,
                source="cli",
            ),
        )
    except DecisionError as e:
        raise UsageError(str(e)) from None
    _out(
        f"Recorded: {d.decision} on {kind} {d.server_id}/{d.subject} (run {run_id}) by {d.user_name}, id {d.id}"
    )
    return EXIT_OK


def cmd_sign_off(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    from .records.decisions import DecisionError, sign_off

    run_id = _run_arg(store, args.run)
    user, name = _cli_user(args)
    try:
        rec = sign_off(store, run_id, user=user, user_name=name, note=args.note, source="cli")
    except DecisionError as e:
        raise UsageError(str(e)) from None
    _out(
        f"Run {run_id} signed off by {rec['user_name']} at {rec['at']}"
        + (f": {rec['note']}" if rec["note"] else "")
    )
    return EXIT_OK


def cmd_clean(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    from .records.retention import clean_runs

    keep = settings.keep_runs if args.keep is None else args.keep
    if keep < 0:
        raise UsageError("--keep must be 0 (keep every run: remove only orphaned files) or more")
    for line in clean_runs(store, keep, dry_run=args.dry_run).lines():
        _out(line)
    return EXIT_OK


def _write_out(path: str, data: bytes) -> None:
    """An answer written to a file whole (temporary name, then rename): never half a file."""
    import os
    import tempfile

    target = Path(path)
    if target.is_dir():
        raise UsageError(f"--out {path} is a directory: give a file name")
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _answer(args: argparse.Namespace, text: str | None, data: bytes | None = None) -> None:
    if args.out:
        _write_out(args.out, data if data is not None else (text or "").encode())
        _say(f"wrote {args.out}")
    elif data is not None and text is None:
        raise UsageError(f"--format {args.format} is binary: give --out FILE")
    else:
        _out(text if text is not None else data.decode("utf-8-sig"))


def cmd_diff(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    import json

    from .exports import csv_bytes, excel_book
    from .records.diff import changes_frame, diff_runs, export_about, to_json

    d = diff_runs(store, args.run_a, args.run_b, business_units=args.business_unit)
    if args.format == "json":
        _answer(args, json.dumps(to_json(d), indent=2, default=str))
    elif args.format == "csv":
        data = csv_bytes(changes_frame(d), export_about(d))
        _answer(args, data.decode("utf-8-sig") if not args.out else None, data)
    elif args.format == "xlsx":
        _answer(
            args, None, excel_book({k.replace("_", " "): v for k, v in d.tables().items()}, export_about(d))
        )
    else:
        lines = d.summary_lines()
        with pd.option_context("display.width", 200, "display.max_colwidth", 60):
            for name, frame in d.tables().items():
                lines += ["", f"{name.replace('_', ' ').capitalize()} ({len(frame):,}):"]
                shown = frame.drop(columns=[c for c in ("reason",) if c in frame]).head(args.top)
                lines.append(shown.to_string(index=False) if len(frame) else "  none")
        _answer(args, "\n".join(lines))
    return EXIT_OK


def cmd_track_record(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    import json

    from .exports import csv_bytes
    from .records.track import summary_lines as track_lines
    from .records.track import track_runs

    if args.tolerance_days < 0:
        raise UsageError("--tolerance-days must be 0 or more")
    if args.sustain < 1:
        raise UsageError("--sustain must be at least 1 period")
    records = track_runs(
        store,
        args.runs or None,
        tolerance_days=args.tolerance_days,
        sustain=args.sustain,
        save=not args.no_save,
    )
    if args.format == "json":
        _answer(args, json.dumps([r.summary for r in records], indent=2, default=str))
    elif args.format == "csv":
        frame = pd.concat([r.series.assign(run_id=r.run_id) for r in records], ignore_index=True)
        data = csv_bytes(
            frame, [("Track record", f"{len(records)} run(s), tolerance ±{args.tolerance_days:g} days")]
        )
        _answer(args, data.decode("utf-8-sig") if not args.out else None, data)
    else:
        lines = []
        for r in records:
            lines += [*track_lines(r.summary), ""]
        _answer(args, "\n".join(lines).rstrip())
    return EXIT_OK


def cmd_has_data(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    return EXIT_OK if store.has_data() else EXIT_INTERNAL


def cmd_has_plan(args: argparse.Namespace, settings: Settings, store: Store) -> int:
    return EXIT_OK if store.latest_run_id() else EXIT_INTERNAL


def cmd_athena_ddl(args: argparse.Namespace, settings: Settings, store: Store | None) -> int:
    from .sources.athena import athena_ddl

    if not settings.data.startswith("athena://"):
        raise UsageError("athena-ddl needs an athena://workgroup/database?location=s3://… data URI (--data)")
    _out(athena_ddl(settings.data, endpoint_url=settings.s3_endpoint_url, inspect=args.inspect))
    return EXIT_OK


# --------------------------------------------------------------------------- parser


def _trigger(value: str) -> str:
    if not re.fullmatch(r"[a-z0-9][a-z0-9_-]{0,31}", value):
        raise argparse.ArgumentTypeError("use up to 32 lower-case letters, digits, - or _")
    return value


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m forecasting",
        description="Capacity Forecaster: generate or ingest fleet telemetry, validate it, forecast it.",
        epilog="Exit codes: 0 ok, 2 bad input, 3 done with rejected rows, 4 store unreachable, "
        "5 another run holds the store (its id and until when on stderr), 1 other.",
    )
    p.add_argument(
        "--data",
        help="data location: path, s3://bucket/prefix or athena://… (env CAPFC_DATA; default ./data)",
    )
    p.add_argument("--config", help="YAML settings file (env CAPFC_CONFIG)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    g = sub.add_parser("generate", help="generate a realistic synthetic fleet into the store")
    g.add_argument("--servers", type=int, default=1000, help="number of servers (default 1000)")
    g.add_argument("--days", type=int, default=1461, help="days of history (default 1461 = 4 years)")
    g.add_argument("--freq", choices=list(FREQUENCIES), default="daily")
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--start", help="first day, YYYY-MM-DD (default: so that the data ends yesterday)")
    g.add_argument("--force", action="store_true", help="replace data already in the store")
    g.set_defaults(func=cmd_generate)

    i = sub.add_parser(
        "ingest",
        help="ingest raw samples (long CSV/Parquet, or one timestamp,value file per series) as p95 per period",
        description="Long files carry server_id, timestamp, metric, value columns. One-series files (timestamp,value) take "
        "the server and metric from --server-id/--metric or from a CloudWatch-style name such as "
        "ec2_cpu_utilization_24ae8d.csv. Servers not in the inventory are added with unknown attributes unless "
        "--inventory is given. Metric names: " + ", ".join(METRIC_COLUMNS),
    )
    i.add_argument("files", nargs="+", metavar="FILE")
    i.add_argument("--server-id", help="server of a one-series file")
    i.add_argument("--metric", help="metric of a one-series file (e.g. cpu_p95 or cpu_utilization)")
    i.add_argument("--freq", choices=list(FREQUENCIES), default="daily")
    i.add_argument("--inventory", help="inventory file (CSV/Parquet); unknown servers are then rejected")
    i.set_defaults(func=cmd_ingest)

    v = sub.add_parser(
        "validate", help="check the store (or given files) against the data contract and print the report"
    )
    v.add_argument("--inventory", help="validate this inventory file instead of the store")
    v.add_argument("--metrics", help="validate this metrics file instead of the store")
    v.add_argument("--freq", choices=list(FREQUENCIES))
    v.add_argument("--limit", type=int, default=40, help="findings to print (default 40)")
    v.set_defaults(func=cmd_validate, answers=True)

    r = sub.add_parser(
        "run", help="batch job: forecast every server × metric, backtest, risk, recommendations, publish"
    )
    r.add_argument("--horizon", type=int, help="periods ahead (default 90 days / 168 hours)")
    r.add_argument(
        "--model",
        choices=["fleet", "prophet", "naive", "profile", "gbm", "ensemble"],
        help="forecast model (default fleet)",
    )
    r.add_argument("--no-backtest", action="store_true", help="skip the rolling-origin backtest")
    r.add_argument(
        "--engine",
        choices=["local", "dask"],
        help="local: this process (default); dask: the run's shards on a Dask cluster (settings engine)",
    )
    r.add_argument(
        "--scheduler",
        help="Dask scheduler address, e.g. tcp://10.0.0.5:8786 (default: a local cluster of 2 workers)",
    )
    r.add_argument(
        "--trigger",
        type=_trigger,
        default="cli",
        help="what started the run, on every log line and metric (default cli; e.g. schedule, s3)",
    )
    r.set_defaults(func=cmd_run)

    rep = sub.add_parser(
        "report",
        help="print the top risks and the consolidation summary of a run, or write the weekly pack (xlsx/pdf)",
    )
    rep.add_argument("--top", type=int, default=15)
    rep.add_argument("--run", help="run id (default: the latest)")
    rep.add_argument(
        "--format",
        choices=["text", "xlsx", "pdf"],
        default="text",
        help="text (stdout, default) or the weekly pack for management as xlsx or pdf",
    )
    rep.add_argument(
        "--out",
        help="file or directory (local path or s3://bucket/key) for the pack "
        "(default ./capacity-pack-<run>.<format>); the path written is printed",
    )
    rep.set_defaults(func=cmd_report, answers=True)

    d = sub.add_parser(
        "decide",
        help="record a planner decision on a risk or recommendation row (or --list the decisions in force)",
        description="Decisions are appended to the store (decisions/), never edited; the latest on a row "
        "wins and is carried forward to later runs. accepted; deferred --until DATE; ordered --reference REF; "
        "rejected --reason TEXT.",
    )
    d.add_argument("server", nargs="?", metavar="SERVER", help="server id")
    d.add_argument("--metric", help="the risk row's metric (e.g. cpu_p95)")
    d.add_argument("--recommendation", action="store_true", help="decide on the server's recommendation")
    d.add_argument("--decision", choices=["accepted", "deferred", "ordered", "rejected"])
    d.add_argument("--until", help="deferred: the last day of the deferral (YYYY-MM-DD)")
    d.add_argument("--reference", help="ordered: the order or change reference")
    d.add_argument("--reason", help="rejected: why (optional for the others)")
    d.add_argument("--note", help="free text")
    d.add_argument("--run", help="run the row is in (default: the latest)")
    d.add_argument("--user", help="who decides (default: the OS user@host)")
    d.add_argument("--list", action="store_true", help="print the decisions in force for the run")
    d.set_defaults(func=cmd_decide, answers=True)

    so = sub.add_parser("sign-off", help="sign a run off (kept from clean-up for ever)")
    so.add_argument("run", metavar="RUN", help="run id, or 'latest'")
    so.add_argument("--note", help="free text")
    so.add_argument("--user", help="who signs (default: the OS user@host)")
    so.set_defaults(func=cmd_sign_off, answers=True)

    cl = sub.add_parser(
        "clean",
        help="remove old runs: keeps CAPFC_KEEP_RUNS newest, LATEST, signed-off runs and runs being read",
    )
    cl.add_argument("--keep", type=int, help="runs to keep (default CAPFC_KEEP_RUNS)")
    cl.add_argument("--dry-run", action="store_true", help="say what would be removed, remove nothing")
    cl.set_defaults(func=cmd_clean, answers=True)
    df = sub.add_parser(
        "diff",
        help="what changed between two runs: new and resolved risks, moved breach dates and why, "
        "changed recommendations, totals (default: the latest run against the one before)",
    )
    df.add_argument(
        "run_a", nargs="?", metavar="RUN_A", help="the earlier run (default: the one before RUN_B)"
    )
    df.add_argument("run_b", nargs="?", metavar="RUN_B", help="the later run (default: the latest)")
    df.add_argument(
        "--business-unit", action="append", metavar="BU", help="only this business unit (repeatable)"
    )
    df.add_argument("--format", choices=["text", "csv", "json", "xlsx"], default="text")
    df.add_argument("--out", help="write the answer to this file (required for xlsx)")
    df.add_argument("--top", type=int, default=20, help="rows per table in the text answer (default 20)")
    df.set_defaults(func=cmd_diff, answers=True)

    tr = sub.add_parser(
        "track-record",
        help="how right past runs were: MASE, band coverage, breach calls that came true, were missed "
        "or were false alarms; saved beside each run",
    )
    tr.add_argument(
        "runs", nargs="*", metavar="RUN", help="run id(s) (default: every run with elapsed periods)"
    )
    tr.add_argument(
        "--tolerance-days", type=float, default=14.0, help="a call is a hit within ± this (default 14)"
    )
    tr.add_argument(
        "--sustain",
        type=int,
        default=2,
        help="periods a crossing must last to count (default 2: a one-period spike is an incident)",
    )
    tr.add_argument("--format", choices=["text", "csv", "json"], default="text")
    tr.add_argument("--out", help="write the answer to this file")
    tr.add_argument("--no-save", action="store_true", help="do not write the side records beside the runs")
    tr.set_defaults(func=cmd_track_record, answers=True)

    a = sub.add_parser("athena-ddl", help="print the Athena/Glue table definitions for an athena:// data URI")
    a.add_argument(
        "--inspect",
        action="store_true",
        help="read column types from the Parquet files already in the location",
    )
    a.set_defaults(func=cmd_athena_ddl, needs_store=False, answers=True)

    for name, func, text in (
        ("has-data", cmd_has_data, "exit 0 when the store holds data (for scripts)"),
        ("has-plan", cmd_has_plan, "exit 0 when a published run exists (for scripts)"),
    ):
        sub.add_parser(name, help=text).set_defaults(func=func)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = load_settings(data=args.data, config=args.config)
        # commands that answer on stdout keep it for the answer: their log lines go to stderr
        stream = "stderr" if getattr(args, "answers", False) else None
        configure_logging(settings.log_level, SERVICE_BATCH, settings.log_format, stream=stream)
        store = (
            open_store(settings.data, endpoint_url=settings.s3_endpoint_url)
            if getattr(args, "needs_store", True)
            else None
        )
        return args.func(args, settings, store)
    except (SchemaError, SettingsError, UsageError, NoDataError, FileFormatError, RecordsError) as e:
        return _fail(f"error: {e}", EXIT_BAD_INPUT)
    except LeaseHeldError as e:
        return _fail(f"error: {e}", EXIT_BUSY)
    except StoreError as e:
        return _fail(f"error: {e}", EXIT_STORE)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except Exception as e:  # a bug or an environment failure: the traceback goes to the log
        log.exception("unexpected error")
        print(f"error: unexpected {type(e).__name__}: {e} (details in the log)", file=sys.stderr, flush=True)
        return EXIT_INTERNAL


def _fail(line: str, code: int) -> int:
    """The one-line reason on stderr (for the person or script that ran the command) and, in
    JSON mode, the same as an ERROR record (for whoever reads the logs in CloudWatch)."""
    if log_format() == "json" and logging.getLogger().handlers:
        log.error(line, extra={"exit_code": code})
    print(line, file=sys.stderr, flush=True)
    return code
