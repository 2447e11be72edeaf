"""The forecast's track record: what each past run predicted against what happened since.

For every published run whose horizon has at least partly elapsed (the store now holds actuals
after its forecast origin), per series (server × metric, with its business unit and model):

- **MASE**: mean |actual − forecast| over the elapsed periods, divided by the in-sample MAE of
  the seasonal naive forecast (lag 7 days / 24 hours) — the package's own definition
  (:mod:`forecasting.metrics_eval`, the same ``score`` the backtest uses). The scale is taken
  over the ``scale_days`` (default 365) before the origin, not the whole history: a year holds
  52 weekly seasons and keeps a 10,000-server read small.
- **Band coverage**: the share of elapsed actuals inside the 80 % band [q10, q90] (and 95 %).
- **Breach calls**: a *call* is the run's expected breach date (risk table, q50 path) for a
  series not already over its threshold at the origin. The *crossing* is the first elapsed
  period that starts a run of at least ``sustain`` (default 2) consecutive observed periods at or
  above that series' threshold (the run's, criticality offset applied): a one-day incident spike
  is not capacity running out (the sizing policy does not upgrade for one either); ``sustain=1``
  counts any period. With tolerance ``N`` days (default 14) and ``T`` the last elapsed period:

  ========== ==================================================================================
  hit        a call and a crossing with |crossing − call| ≤ N days
  missed     a crossing, and either no call or a call more than N days after it (too late)
  false alarm a call, no hit, not missed, and no crossing by call + N days (≤ T): nothing
             happened when the run said it would (a crossing later than call + N is still one)
  pending    a call whose date + N days is after T, no crossing yet: not decidable yet
  quiet      no call and no crossing (a correct all-clear)
  already over the series was over its threshold at the origin: not a prediction
  ========== ==================================================================================

  Precision = hits / (hits + false alarms); recall = hits / (hits + missed).

Runs are immutable (their files are created once, never overwritten: forecasting.sources.commit),
so the figures are not written into ``manifest.json``: each evaluation is an append-only side
record beside the run, ``runs/<run_id>/track-record/<as-of>.json`` (summary) and ``.parquet``
(per series), created with a conditional put (If-None-Match) and named by the actuals' end and
the store's write version; the newest one is the current figure. Clean-up of a run removes them
with it.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..metrics_eval import mase_scale, score, season_of
from ..panel import Panel, build_panel
from ..plan import BAND_80, BAND_95, QUANTILE_COLUMNS
from ..sources import MetricsQuery, Store, StoreError
from ..sources.base import check_run_id
from . import RecordsError

log = logging.getLogger(__name__)

TOLERANCE_DAYS = 14
SUSTAIN_PERIODS = 2  # a crossing lasts at least this many consecutive periods: a one-day spike is an incident
SCALE_DAYS = 365
OUTCOMES = ("hit", "missed", "false_alarm", "pending", "quiet", "already_over")
SIDE_DIR = "track-record"
BAND_COLUMNS = {*BAND_80, *BAND_95}
SERIES_COLUMNS = [
    "server_id",
    "business_unit",
    "metric",
    "model",
    "n_points",
    "mae",
    "mase",
    "coverage_80",
    "coverage_95",
    "threshold",
    "breach_expected",
    "actual_crossing",
    "days_off",
    "outcome",
]


@dataclass(frozen=True)
class TrackRecord:
    """One run measured against the actuals up to ``summary['as_of']``."""

    run_id: str
    summary: dict[str, Any]
    series: pd.DataFrame  # SERIES_COLUMNS, one row per series forecast by the run


def _utc(v: Any) -> pd.Timestamp:
    t = pd.Timestamp(v)
    return t.tz_localize("UTC") if t.tzinfo is None else t.tz_convert("UTC")


def _finite_mean(x: np.ndarray) -> float | None:
    x = x[np.isfinite(x)]
    return round(float(x.mean()), 4) if len(x) else None


def _ratio(a: int, b: int) -> float | None:
    return round(a / b, 4) if b else None


def outcomes(
    expected: pd.Series | pd.DatetimeIndex,
    crossing: pd.Series | pd.DatetimeIndex,
    already_over: np.ndarray,
    last: pd.Timestamp,
    tolerance_days: float = TOLERANCE_DAYS,
) -> np.ndarray:
    """The outcome of each series' breach call (module docstring: the rules, in this order)."""
    e = pd.DatetimeIndex(pd.to_datetime(expected, utc=True))
    c = pd.DatetimeIndex(pd.to_datetime(crossing, utc=True))
    tol = pd.Timedelta(days=tolerance_days)
    has_e, has_c = ~e.isna(), ~c.isna()
    with np.errstate(invalid="ignore"):
        off = np.abs((c - e).total_seconds().to_numpy(dtype=float))
        hit = has_e & has_c & (off <= tol.total_seconds())
        early = has_c & has_e & (c < e - tol)  # crossed well before the call: too late to act
        missed = has_c & ~hit & (~has_e | early)
        false_alarm = has_e & ~hit & ~missed & np.asarray(e + tol <= last)
        pending = has_e & ~hit & ~missed & ~false_alarm
    out = np.full(len(e), "quiet", dtype=object)
    out[pending] = "pending"
    out[false_alarm] = "false_alarm"
    out[missed] = "missed"
    out[hit] = "hit"
    out[np.asarray(already_over, dtype=bool)] = "already_over"
    return out


def sustained(over: np.ndarray, periods: int) -> np.ndarray:
    """(n, T) True where a run of at least ``periods`` consecutive True values starts."""
    if periods <= 1:
        return over
    T = over.shape[1]
    c = np.concatenate([np.zeros((over.shape[0], 1), dtype=np.int64), np.cumsum(over, axis=1)], axis=1)
    out = np.zeros_like(over)
    if periods <= T:
        out[:, : T - periods + 1] = (c[:, periods:] - c[:, : T - periods + 1]) == periods
    return out


def track_record(
    forecasts: pd.DataFrame,
    risk: pd.DataFrame | None,
    manifest: Mapping[str, Any],
    actuals: Panel,
    *,
    inventory: pd.DataFrame | None = None,
    tolerance_days: float = TOLERANCE_DAYS,
    scale_days: int = SCALE_DAYS,
    sustain: int = SUSTAIN_PERIODS,
) -> TrackRecord | None:
    """A run's forecasts (plan.FORECAST_COLUMNS) and risk rows against ``actuals`` (a panel of
    the store's metrics covering the history before the origin and the periods since); None when
    no forecast period has elapsed yet. Pure."""
    run_id = str(manifest.get("run_id", ""))
    origin = _utc(manifest["forecast_origin"])
    fc = forecasts
    steps = pd.DatetimeIndex(pd.to_datetime(fc["timestamp"].unique(), utc=True)).sort_values()
    if not len(steps):
        return None
    pos = actuals.index.get_indexer(steps)
    elapsed = pos >= 0
    if not elapsed.any():
        return None
    He = int(np.flatnonzero(elapsed).max()) + 1  # forecast steps up to the last elapsed one
    steps_e, pos_e = steps[:He], pos[:He]
    last = steps_e[pos_e >= 0][-1]

    # forecasts as arrays (n, He) and (n, He, Q): integer codes, no per-row strings (millions of rows)
    s_codes, s_uni = pd.factorize(fc["server_id"], sort=True)
    m_codes, m_uni = pd.factorize(fc["metric"], sort=True)
    combo = s_codes.astype(np.int64) * len(m_uni) + m_codes
    ucombo, codes = np.unique(combo, return_inverse=True)
    n = len(ucombo)
    keys = pd.DataFrame(
        {
            "server_id": np.asarray(s_uni, dtype=object)[ucombo // len(m_uni)],
            "metric": np.asarray(m_uni, dtype=object)[ucombo % len(m_uni)],
        }
    )
    uniques = (keys["server_id"].astype(str) + "\x1f" + keys["metric"].astype(str)).to_numpy(dtype=object)
    ts = pd.DatetimeIndex(pd.to_datetime(fc["timestamp"], utc=True)).as_unit("us").asi8
    step_i = np.searchsorted(steps.as_unit("us").asi8, ts)
    keep = step_i < He
    ci, si = codes[keep], step_i[keep]
    point = np.full((n, He), np.nan)
    point[ci, si] = fc["yhat"].to_numpy(dtype=float)[keep]
    quants = np.full((n, He, len(QUANTILE_COLUMNS)), np.nan)
    for j, col in enumerate(QUANTILE_COLUMNS):
        if col in BAND_COLUMNS:  # the only levels coverage reads (metrics_eval.score)
            quants[ci, si, j] = fc[col].to_numpy(dtype=float)[keep]
    first_row = np.zeros(n, dtype=np.int64)
    first_row[codes[::-1]] = np.arange(len(codes))[::-1]
    model = fc["model"].to_numpy(dtype=object)[first_row].astype(str).astype(object)

    # actuals for the same series
    pk = actuals.keys["server_id"].astype(str) + "\x1f" + actuals.keys["metric"].astype(str)
    rows = pd.Index(pk).get_indexer(pd.Index(uniques))
    has = rows >= 0
    r = np.maximum(rows, 0)
    actual = np.full((n, He), np.nan)
    observed = np.zeros((n, He), dtype=bool)
    cols = np.where(pos_e >= 0, pos_e, 0)
    if has.any():
        actual[has] = actuals.values[r[has]][:, cols]
        observed[has] = actuals.observed[r[has]][:, cols] & (pos_e >= 0)[None, :]
    # MASE scale: seasonal naive in-sample MAE over the year before the origin
    o = int(actuals.index.searchsorted(origin, side="right"))  # periods up to the origin
    lo = int(actuals.index.searchsorted(origin - pd.Timedelta(days=scale_days), side="right"))
    scale = np.full(n, np.nan)
    if o - lo > season_of(actuals.freq) and has.any():
        scale[has] = mase_scale(
            actuals.values[r[has], lo:o], actuals.observed[r[has], lo:o], season_of(actuals.freq)
        )
    s = score(actual, observed, point, quants, scale)

    # breach calls
    thr = np.full(n, np.nan)
    expected = pd.Series(pd.NaT, index=range(n), dtype="datetime64[us, UTC]")
    over = np.zeros(n, dtype=bool)
    if risk is not None and len(risk):
        rk = risk["server_id"].astype(str) + "\x1f" + risk["metric"].astype(str)
        ri = pd.Index(rk).get_indexer(pd.Index(uniques))
        ok = ri >= 0
        thr[ok] = risk["threshold"].to_numpy(dtype=float)[ri[ok]]
        exp_all = pd.to_datetime(risk["breach_expected"], utc=True).reset_index(drop=True)
        expected[ok] = exp_all.iloc[ri[ok]].to_numpy()
        over[ok] = (risk["status"].astype(str) == "already_over").to_numpy()[ri[ok]]
    with np.errstate(invalid="ignore"):
        crossed = sustained(observed & (actual >= thr[:, None]), sustain)
    first = np.where(crossed.any(axis=1), crossed.argmax(axis=1), -1)
    crossing = pd.Series(pd.NaT, index=range(n), dtype="datetime64[us, UTC]")
    hitrows = first >= 0
    crossing[hitrows] = steps_e[first[hitrows]]
    outcome = outcomes(expected, crossing, over, last, tolerance_days)
    with np.errstate(invalid="ignore"):
        days_off = np.round((crossing - expected).dt.total_seconds().to_numpy(dtype=float) / 86_400.0, 1)

    bu = np.full(n, "unknown", dtype=object)
    if inventory is not None and len(inventory):
        inv = inventory.drop_duplicates("server_id")
        m = pd.Series(inv["business_unit"].astype(str).to_numpy(), index=inv["server_id"].astype(str))
        bu = keys["server_id"].map(m).fillna("unknown").to_numpy(dtype=object)
    series = pd.DataFrame(
        {
            "server_id": keys["server_id"],
            "business_unit": bu,
            "metric": keys["metric"],
            "model": model,
            "n_points": s.n_points.astype(np.int64),
            "mae": np.round(s.mae, 4),
            "mase": np.round(s.mase, 4),
            "coverage_80": np.round(s.coverage_80, 4),
            "coverage_95": np.round(s.coverage_95, 4),
            "threshold": thr,
            "breach_expected": expected.to_numpy(),
            "actual_crossing": crossing.to_numpy(),
            "days_off": days_off,
            "outcome": outcome,
        },
        columns=SERIES_COLUMNS,
    )
    summary = summarize(series)
    horizon = int((manifest.get("config") or {}).get("horizon") or len(steps))
    summary = {
        "run_id": run_id,
        "forecast_origin": origin.isoformat(),
        "as_of": last.isoformat(),
        "elapsed_periods": int((pos_e >= 0).sum()),
        "horizon": horizon,
        "elapsed_share": round(min(1.0, int((pos_e >= 0).sum()) / max(horizon, 1)), 4),
        "tolerance_days": tolerance_days,
        "sustain_periods": sustain,
        "scale_days": scale_days,
        "model": str((manifest.get("config") or {}).get("model", "")),
        **summary,
        "by_model": {
            str(k): summarize(g, calls=False) for k, g in series.groupby("model", sort=True, observed=True)
        },
    }
    return TrackRecord(run_id, summary, series)


def summarize(series: pd.DataFrame, calls: bool = True) -> dict[str, Any]:
    """Pooled figures of a set of series rows: MASE (mean, median), band coverage (pooled over
    points), and the breach-call counts with precision and recall."""
    n = series["n_points"].to_numpy(dtype=float)
    scored = n > 0
    mase = series["mase"].to_numpy(dtype=float)[scored]

    def pooled(col: str) -> float | None:
        v = series[col].to_numpy(dtype=float)[scored]
        w = n[scored]
        ok = np.isfinite(v)
        return round(float((v[ok] * w[ok]).sum() / w[ok].sum()), 4) if ok.any() and w[ok].sum() else None

    out: dict[str, Any] = {
        "series": int(scored.sum()),
        "points": int(n.sum()),
        "mase_mean": _finite_mean(mase),
        "mase_median": round(float(np.nanmedian(mase)), 4) if np.isfinite(mase).any() else None,
        "coverage_80": pooled("coverage_80"),
        "coverage_95": pooled("coverage_95"),
    }
    if calls:
        counts = series["outcome"].value_counts()
        c = {k: int(counts.get(k, 0)) for k in OUTCOMES}
        out["calls"] = c
        out["precision"] = _ratio(c["hit"], c["hit"] + c["false_alarm"])
        out["recall"] = _ratio(c["hit"], c["hit"] + c["missed"])
    return out


def breakdown(series: pd.DataFrame, by: Iterable[str] = ("business_unit", "metric", "model")) -> pd.DataFrame:
    """The figures per group (e.g. business unit × metric × model): one row per group."""
    by = list(by)
    rows = []
    for k, g in series.groupby(by, sort=True, observed=True):
        s = summarize(g)
        calls = s.pop("calls")
        rows.append({**dict(zip(by, k if isinstance(k, tuple) else (k,))), **s, **calls})
    cols = [
        *by,
        "series",
        "points",
        "mase_mean",
        "mase_median",
        "coverage_80",
        "coverage_95",
        *OUTCOMES,
        "precision",
        "recall",
    ]
    return pd.DataFrame(rows, columns=cols)


# --------------------------------------------------------------------------- side records (I/O)


def _ps(store: Store):
    from ..shards import object_store

    return object_store(store)


def _tag(summary: Mapping[str, Any], version: int) -> str:
    return f"{_utc(summary['as_of']):%Y%m%dT%H%M%SZ}-v{int(version):08d}"


def save_record(store: Store, record: TrackRecord, version: int) -> str:
    """Write a record beside its run (created once: an existing one of the same as-of is kept).

    The per-series Parquet goes first and the summary JSON last, so a summary never names
    series that are not there. Returns the record's name."""
    import io

    import pyarrow as pa
    import pyarrow.parquet as pq

    from ..sources.commit import PreconditionFailedError

    ps = _ps(store)
    tag = _tag(record.summary, version)
    base = ps._p("runs", check_run_id(record.run_id), SIDE_DIR)
    sink = io.BytesIO()
    pq.write_table(pa.Table.from_pandas(record.series, preserve_index=False), sink, compression="zstd")
    body = json.dumps({**record.summary, "record": tag}, indent=2, sort_keys=True, default=str).encode()
    for name, data in ((f"{tag}.parquet", sink.getvalue()), (f"{tag}.json", body)):
        try:
            ps.cond.put_new(f"{base}/{name}", data)
        except PreconditionFailedError:
            log.info("track record %s of run %s already written", name, record.run_id)
    return tag


def _names(store: Store, run_id: str) -> list[str]:
    import pyarrow.fs as pafs

    ps = _ps(store)
    base = ps._p("runs", check_run_id(run_id), SIDE_DIR)
    try:
        infos = ps.fs.get_file_info(pafs.FileSelector(base, allow_not_found=True))
    except OSError as e:
        raise StoreError(f"cannot list the track records of run {run_id}: {e}") from e
    return sorted(
        i.base_name[:-5] for i in infos if i.base_name.endswith(".json") and not i.base_name.startswith(".")
    )


def load_summary(store: Store, run_id: str) -> dict[str, Any] | None:
    """The newest saved track-record summary of a run, or None."""
    names = _names(store, run_id)
    if not names:
        return None
    ps = _ps(store)
    path = ps._p("runs", run_id, SIDE_DIR, f"{names[-1]}.json")
    try:
        return json.loads(ps._read_bytes(path))
    except (FileNotFoundError, json.JSONDecodeError) as e:
        raise StoreError(f"track record {path} is not readable: {e}") from e


def load_series(store: Store, run_id: str) -> pd.DataFrame | None:
    """The per-series rows of the newest saved track record of a run, or None."""
    import pyarrow.parquet as pq

    names = _names(store, run_id)
    if not names:
        return None
    ps = _ps(store)
    path = ps._p("runs", run_id, SIDE_DIR, f"{names[-1]}.parquet")
    try:
        return pq.read_table(path, filesystem=ps.fs).to_pandas()
    except (OSError, FileNotFoundError) as e:
        raise StoreError(f"track record {path} is not readable: {e}") from e


def load_summaries(store: Store, limit: int | None = None) -> list[dict[str, Any]]:
    """The newest summary of every run that has one (of the last ``limit`` runs), oldest first."""
    out = []
    runs = store.list_runs()
    for rid in runs[-limit:] if limit else runs:
        s = load_summary(store, rid)
        if s is not None:
            out.append(s)
    return out


def eligible_runs(store: Store, run_ids: Iterable[str] | None = None) -> list[tuple[str, dict]]:
    """(run id, manifest) of the runs whose forecast origin is before the store's newest data."""
    info = store.read_store_info()
    end = info.get("end")
    runs = list(run_ids) if run_ids is not None else store.list_runs()
    known = set(store.list_runs())
    out = []
    for rid in runs:
        if rid not in known:
            raise RecordsError(
                f"unknown run {rid!r} in {store.uri}: the last runs are {', '.join(sorted(known)[-5:]) or 'none'}"
            )
        man = store.read_manifest(rid)
        origin = man.get("forecast_origin")
        if origin and end and _utc(origin) < _utc(end):
            out.append((rid, man))
    return out


def track_runs(
    store: Store,
    run_ids: Iterable[str] | None = None,
    *,
    tolerance_days: float = TOLERANCE_DAYS,
    scale_days: int = SCALE_DAYS,
    sustain: int = SUSTAIN_PERIODS,
    save: bool = True,
) -> list[TrackRecord]:
    """The track record of every run (or of ``run_ids``) whose horizon has partly elapsed,
    against the store's metrics now; saved beside each run unless ``save=False``.

    The metrics are read once (from a year before the earliest origin) for all runs. Without
    ``run_ids``, a run whose saved record already covers its whole horizon under the same rules
    is not scored again (its figures cannot change): its saved record is returned. RecordsError
    when a named run is unknown or none has any elapsed period yet.
    """
    asked = list(run_ids) if run_ids is not None else None
    runs = eligible_runs(store, asked)
    if not runs:
        what = f"run(s) {', '.join(asked)}" if asked else f"any run in {store.uri}"
        raise RecordsError(
            f"no elapsed forecast period for {what}: the store has no data after the forecast origin yet "
            "(a track record needs actuals that arrived after the run)"
        )
    done: dict[str, TrackRecord] = {}
    if asked is None:
        for rid, _ in runs:
            saved = load_summary(store, rid)
            same_rules = saved is not None and (
                saved.get("tolerance_days"),
                saved.get("sustain_periods"),
                saved.get("scale_days"),
            ) == (tolerance_days, sustain, scale_days)
            if same_rules and int(saved["elapsed_periods"]) >= int(saved["horizon"]):
                series = load_series(store, rid)
                if series is not None:
                    done[rid] = TrackRecord(rid, saved, series)
        if len(done) == len(runs):
            return [done[rid] for rid, _ in runs]
        runs_to_score = [(rid, man) for rid, man in runs if rid not in done]
    else:
        runs_to_score = runs
    info = store.read_store_info()
    freq = info.get("freq", "daily")
    start = min(_utc(m["forecast_origin"]) for _, m in runs_to_score) - pd.Timedelta(days=scale_days)
    metrics = store.read_metrics(MetricsQuery.of(start=start))
    panel = build_panel(metrics, freq)
    del metrics
    inventory = store.read_inventory()
    version = int(info.get("version") or 0)
    out = []
    for rid, man in runs:
        if rid in done:
            out.append(done[rid])
            continue
        forecasts = store.read_run_table(rid, "forecasts")
        if forecasts is None or forecasts.empty:
            log.warning("run %s has no forecasts: no track record", rid)
            continue
        rec = track_record(
            forecasts,
            store.read_run_table(rid, "risk"),
            man,
            panel,
            inventory=inventory,
            tolerance_days=tolerance_days,
            scale_days=scale_days,
            sustain=sustain,
        )
        if rec is None:
            continue
        if save:
            rec.summary["record"] = save_record(store, rec, version)
        out.append(rec)
    return out


def summary_lines(rec: Mapping[str, Any]) -> list[str]:
    """A run's track record in words (the CLI's text answer)."""

    def pct(v: Any) -> str:
        return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{100 * v:.0f} %"

    def num(v: Any) -> str:
        return "—" if v is None else f"{v:.2f}"

    c = rec.get("calls") or {}
    return [
        f"Run {rec['run_id']} (forecast from {str(rec['forecast_origin'])[:10]}): "
        f"{rec['elapsed_periods']} of {rec['horizon']} periods elapsed (actuals to {str(rec['as_of'])[:10]})",
        f"  {rec['series']:,} series: MASE {num(rec.get('mase_mean'))} mean, {num(rec.get('mase_median'))} median; "
        f"80 % band held {pct(rec.get('coverage_80'))} of actuals, 95 % band {pct(rec.get('coverage_95'))}",
        f"  breach calls (±{rec['tolerance_days']:g} days, crossings held ≥ {rec.get('sustain_periods', 1)} periods): "
        f"{c.get('hit', 0)} came true, {c.get('missed', 0)} missed, "
        f"{c.get('false_alarm', 0)} false alarms, {c.get('pending', 0)} pending; "
        f"precision {pct(rec.get('precision'))}, recall {pct(rec.get('recall'))}; "
        f"{c.get('already_over', 0)} already over at the origin",
    ]
