"""Compare two runs: new risks, resolved risks, breach dates that moved (and why), changed
recommendations, fleet totals before/after.

Planners are asked every quarter "what changed since the last plan, and why?". A breach date
moves for three kinds of reasons, and each row names the ones that apply:

- **new data**: the runs read different input (the manifest's input fingerprint or snapshot
  differs: new telemetry, a changed inventory);
- **a changed setting**: the runs' ``config`` differs (named, e.g. ``thresholds.cpu_p95 85 → 80``;
  only the settings that can move that row: a risk row's own metric threshold, the criticality
  offsets, lead times, horizon, model…), or the row's effective threshold itself differs
  (a criticality changed in the inventory);
- **another model**: the series was forecast by another model (the forecasts' ``model`` column).

When code differs (``code_version``) that is named too. :func:`compare` is pure (frames and
manifests in, :class:`RunDiff` out); :func:`diff_runs` reads two runs from a store.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..sources import Store, StoreError
from ..sources.base import check_run_id
from . import RecordsError

RISK_KEY = ["server_id", "metric"]
NOT_IN_RUN = "not in run"
# config keys that can move a risk row (besides thresholds.<its metric>)
RISK_SETTINGS = (
    "criticality_offsets.",
    "lead_time_days.",
    "horizon",
    "model",
    "backtest_cutoffs",
    "calibration_servers",
)
UNKNOWN_BU = "unknown"

NEW_RISK_COLUMNS = [
    "server_id",
    "business_unit",
    "metric",
    "severity_before",
    "severity",
    "breach_expected",
    "breach_probability",
    "score",
    "why",
    "reason",
]
RESOLVED_COLUMNS = [
    "server_id",
    "business_unit",
    "metric",
    "severity_before",
    "breach_expected_before",
    "severity",
    "current_p95",
    "threshold",
    "why",
]
MOVED_COLUMNS = [
    "server_id",
    "business_unit",
    "metric",
    "breach_before",
    "breach_after",
    "days_moved",
    "direction",
    "severity_before",
    "severity",
    "why",
]
CHANGED_REC_COLUMNS = [
    "server_id",
    "business_unit",
    "action_before",
    "action",
    "size_before",
    "size",
    "savings_before",
    "savings",
    "savings_change",
    "why",
    "reason",
]
TOTAL_COLUMNS = ["measure", "before", "after", "change"]


@dataclass(frozen=True)
class RunDiff:
    """What changed from run A (before) to run B (after); every frame may be empty."""

    run_a: str
    run_b: str
    new_risks: pd.DataFrame
    resolved_risks: pd.DataFrame
    moved_breaches: pd.DataFrame
    changed_recommendations: pd.DataFrame
    totals: pd.DataFrame
    settings_changed: dict[str, tuple[Any, Any]] = field(default_factory=dict)
    new_data: bool = False
    input_a: str = ""  # "history to 2026-01-31" (what run A read)
    input_b: str = ""
    models_changed: int = 0  # series whose model differs
    business_units: tuple[str, ...] | None = None  # the filter applied (None = all)

    def tables(self) -> dict[str, pd.DataFrame]:
        """The frames by name, in reading order (what the exports and the page show)."""
        return {
            "totals": self.totals,
            "new_risks": self.new_risks,
            "resolved_risks": self.resolved_risks,
            "moved_breaches": self.moved_breaches,
            "changed_recommendations": self.changed_recommendations,
        }

    def causes(self) -> list[str]:
        """The run-level differences, in words."""
        out = []
        if self.new_data:
            out.append(f"new data ({self.input_a} → {self.input_b})")
        out += [f"setting {k}: {_fmt(a)} → {_fmt(b)}" for k, (a, b) in self.settings_changed.items()]
        if self.models_changed:
            out.append(f"{self.models_changed:,} series forecast by another model")
        return out or ["same input, settings and models"]

    def summary_lines(self) -> list[str]:
        """A short text a planner pastes into a mail."""
        bu = f" (business units: {', '.join(self.business_units)})" if self.business_units else ""
        lines = [
            f"Changes from run {self.run_a} to run {self.run_b}{bu}",
            "  why the runs differ: " + "; ".join(self.causes()),
            f"  {len(self.new_risks):,} new risks, {len(self.resolved_risks):,} resolved, "
            f"{len(self.moved_breaches):,} breach dates moved "
            f"({int((self.moved_breaches['days_moved'] < 0).sum()):,} earlier, "
            f"{int((self.moved_breaches['days_moved'] > 0).sum()):,} later), "
            f"{len(self.changed_recommendations):,} recommendations changed",
        ]
        return lines


def _fmt(v: Any) -> str:
    if v is None:
        return "—"
    if isinstance(v, float):
        return f"{v:g}"
    if isinstance(v, list | dict):
        return json.dumps(v, sort_keys=True)
    return str(v)


def flatten(config: Mapping[str, Any] | None, prefix: str = "") -> dict[str, Any]:
    """{'thresholds': {'cpu_p95': 85}} → {'thresholds.cpu_p95': 85} (lists kept whole)."""
    out: dict[str, Any] = {}
    for k, v in (config or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out


def settings_changed(manifest_a: Mapping, manifest_b: Mapping) -> dict[str, tuple[Any, Any]]:
    """Config keys whose values differ between two runs (plus ``code_version``), sorted."""
    a = flatten(manifest_a.get("config"))
    b = flatten(manifest_b.get("config"))
    out = {k: (a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if not _same(a.get(k), b.get(k))}
    ca, cb = manifest_a.get("code_version"), manifest_b.get("code_version")
    if ca and cb and ca != cb:
        out["code_version"] = (ca, cb)
    return out


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    return a == b


def input_label(manifest: Mapping) -> str:
    inp = manifest.get("input") or {}
    end = str(inp.get("end") or "?")[:10]
    return f"history to {end}"


def new_input(manifest_a: Mapping, manifest_b: Mapping) -> bool:
    """True when the two runs read different input (fingerprint, snapshot key or data span)."""
    a, b = manifest_a.get("input") or {}, manifest_b.get("input") or {}
    for key in ("fingerprint", "end", "start", "servers", "metric_rows"):
        if a.get(key) != b.get(key):
            return True
    sa, sb = (a.get("snapshot") or {}).get("key"), (b.get("snapshot") or {}).get("key")
    return bool(sa and sb and sa != sb)


# --------------------------------------------------------------------------- pure compare


def series_models(plan: Mapping[str, pd.DataFrame | None]) -> pd.DataFrame | None:
    """(server_id, metric, model), one row per series, from ``plan['models']`` or the forecasts."""
    frame = plan.get("models")
    if frame is None:
        frame = plan.get("forecasts")
    if frame is None or "model" not in frame:
        return None
    return frame[["server_id", "metric", "model"]].drop_duplicates(RISK_KEY).astype(str)


def _bu_map(inventory: pd.DataFrame | None) -> pd.Series:
    if inventory is None or "business_unit" not in inventory:
        return pd.Series(dtype=object)
    inv = inventory.drop_duplicates("server_id")
    return pd.Series(inv["business_unit"].astype(str).to_numpy(), index=inv["server_id"].astype(str))


def _keep(frame: pd.DataFrame | None, servers: set[str] | None) -> pd.DataFrame | None:
    if frame is None or servers is None:
        return frame
    return frame[frame["server_id"].astype(str).isin(servers).to_numpy()]


def _risk(frame: pd.DataFrame | None) -> pd.DataFrame:
    cols = [
        "server_id",
        "metric",
        "threshold",
        "current_p95",
        "breach_expected",
        "breach_probability",
        "severity",
        "score",
        "status",
        "days_to_breach",
        "reason",
    ]
    if frame is None:
        out = pd.DataFrame({c: pd.Series(dtype=object) for c in cols})
        out["breach_expected"] = pd.Series(dtype="datetime64[us, UTC]")
        return out
    out = frame[[c for c in cols if c in frame]].copy()
    out["server_id"] = out["server_id"].astype(str)
    out["metric"] = out["metric"].astype(str)
    out["severity"] = out["severity"].astype(str)
    out["breach_expected"] = pd.to_datetime(out["breach_expected"], utc=True)
    return out


def _why(
    frame: pd.DataFrame,
    *,
    new_data: str,
    settings: Mapping[str, tuple[Any, Any]],
    metric_col: str | None,
    models: tuple[pd.Series, pd.Series] | None,
    threshold_cols: tuple[str, str] | None = None,
    setting_filter: Sequence[str] | None = None,
) -> np.ndarray:
    """Per row, the causes that apply, joined with '; ' (vectorised over rows)."""
    n = len(frame)
    parts: list[np.ndarray] = []
    if new_data:
        parts.append(np.full(n, new_data, dtype=object))
    # settings: global ones once, metric thresholds per row
    generic = {
        k: v
        for k, v in settings.items()
        if not k.startswith("thresholds.")
        and (setting_filter is None or any(k.startswith(p) for p in setting_filter) or k == "code_version")
    }
    if generic:
        text = "; ".join(f"setting {k} {_fmt(a)} → {_fmt(b)}" for k, (a, b) in generic.items())
        parts.append(np.full(n, text, dtype=object))
    thr_changes = {k.split(".", 1)[1]: v for k, v in settings.items() if k.startswith("thresholds.")}
    if thr_changes:
        if metric_col is not None:
            m = frame[metric_col].astype(str).to_numpy()
            col = np.full(n, "", dtype=object)
            for metric, (a, b) in thr_changes.items():
                col[m == metric] = f"setting thresholds.{metric} {_fmt(a)} → {_fmt(b)}"
            parts.append(col)
        else:
            parts.append(
                np.full(
                    n,
                    "; ".join(
                        f"setting thresholds.{k} {_fmt(a)} → {_fmt(b)}" for k, (a, b) in thr_changes.items()
                    ),
                    dtype=object,
                )
            )
    if threshold_cols is not None:  # the row's own threshold moved without a setting saying so
        ta = pd.to_numeric(frame[threshold_cols[0]], errors="coerce").to_numpy(dtype=float)
        tb = pd.to_numeric(frame[threshold_cols[1]], errors="coerce").to_numpy(dtype=float)
        with np.errstate(invalid="ignore"):
            moved = np.isfinite(ta) & np.isfinite(tb) & (np.abs(ta - tb) > 1e-9)
        if metric_col is not None and thr_changes:
            moved &= ~np.isin(frame[metric_col].astype(str).to_numpy(), list(thr_changes))
        col = np.full(n, "", dtype=object)
        if moved.any():
            col[moved] = [
                f"threshold {a:g} → {b:g} (criticality or offsets)" for a, b in zip(ta[moved], tb[moved])
            ]
        parts.append(col)
    if models is not None and n:
        series_change, server_change = models
        sid = frame["server_id"].astype(str).to_numpy(dtype=object)
        if metric_col is not None and len(series_change):
            key = pd.Index(sid + "\x1f" + frame[metric_col].astype(str).to_numpy(dtype=object))
            hit = series_change.reindex(key).to_numpy(dtype=object)
            parts.append(np.where(pd.isna(hit), "", hit).astype(object))
        elif metric_col is None and len(server_change):
            hit = server_change.reindex(pd.Index(sid)).to_numpy(dtype=object)
            parts.append(np.where(pd.isna(hit), "", hit).astype(object))
    if not parts:
        return np.full(n, "same input, settings and model", dtype=object)
    out = []
    for row in zip(*parts):
        text = "; ".join(p for p in row if p)
        out.append(text or "same input, settings and model")
    return np.asarray(out, dtype=object)


def model_changes(ma: pd.DataFrame | None, mb: pd.DataFrame | None) -> tuple[pd.Series, pd.Series]:
    """Series whose model differs ('server\x1fmetric' → 'model a → b') and per server the
    metrics concerned ('another model for cpu_p95, mem_p95'): computed once per comparison."""
    if ma is None or mb is None:
        empty = pd.Series(dtype=object)
        return empty, empty
    both = ma.merge(mb, on=RISK_KEY, suffixes=("_a", "_b"))
    diff = both[(both["model_a"] != both["model_b"]).to_numpy()]
    series = pd.Series(
        ("model " + diff["model_a"] + " → " + diff["model_b"]).to_numpy(dtype=object),
        index=pd.Index((diff["server_id"] + "\x1f" + diff["metric"]).to_numpy(dtype=object)),
    )
    per = diff.groupby("server_id", sort=True)["metric"].agg(lambda m: ", ".join(sorted(m)))
    server = pd.Series(("another model for " + per).to_numpy(dtype=object), index=per.index.astype(object))
    return series, server


def _days(delta: pd.Series) -> np.ndarray:
    return np.round(delta.dt.total_seconds().to_numpy(dtype=float) / 86_400.0, 1)


def compare(
    plan_a: Mapping[str, pd.DataFrame | None],
    manifest_a: Mapping[str, Any],
    plan_b: Mapping[str, pd.DataFrame | None],
    manifest_b: Mapping[str, Any],
    *,
    inventory: pd.DataFrame | None = None,
    business_units: Iterable[str] | None = None,
    server_ids: Iterable[str] | None = None,
) -> RunDiff:
    """What changed from plan A to plan B (pure).

    ``plan_*``: plan tables by name: ``risk``, ``recommendations`` and, for the model
    attribution, ``models`` (server_id, metric, model) or ``forecasts``; a missing table gives
    empty frames. ``inventory`` supplies business units; ``business_units`` keeps only their
    servers (totals included); ``server_ids`` keeps only those servers (the app's filter bar).
    """
    bu_of = _bu_map(inventory)
    bus = tuple(sorted({str(b) for b in business_units})) if business_units else None
    servers = set(bu_of.index[bu_of.isin(bus)]) if bus else None
    if server_ids is not None:
        wanted = {str(s) for s in server_ids}
        servers = wanted if servers is None else servers & wanted

    risk_a = _risk(_keep(plan_a.get("risk"), servers))
    risk_b = _risk(_keep(plan_b.get("risk"), servers))
    recs_a = _keep(plan_a.get("recommendations"), servers)
    recs_b = _keep(plan_b.get("recommendations"), servers)
    models = (_keep(series_models(plan_a), servers), _keep(series_models(plan_b), servers))

    settings = settings_changed(manifest_a, manifest_b)
    fresh = new_input(manifest_a, manifest_b)
    data_text = f"new data ({input_label(manifest_a)} → {input_label(manifest_b)})" if fresh else ""
    changes = model_changes(*models)
    n_models = len(changes[0])

    def bu(s: pd.Series) -> np.ndarray:
        return s.astype(str).map(bu_of).fillna(UNKNOWN_BU).to_numpy(dtype=object)

    merged = risk_a.merge(risk_b, on=RISK_KEY, how="outer", suffixes=("_a", "_b"), indicator=True)
    sev_a = (
        merged["severity_a"]
        .where(merged["_merge"] != "right_only", NOT_IN_RUN)
        .fillna(NOT_IN_RUN)
        .astype(str)
    )
    sev_b = (
        merged["severity_b"].where(merged["_merge"] != "left_only", NOT_IN_RUN).fillna(NOT_IN_RUN).astype(str)
    )
    risky_a = ~sev_a.isin(["none", NOT_IN_RUN])
    risky_b = ~sev_b.isin(["none", NOT_IN_RUN])
    why_kw = {
        "new_data": data_text,
        "settings": settings,
        "metric_col": "metric",
        "models": changes,
        "threshold_cols": ("threshold_a", "threshold_b"),
        "setting_filter": RISK_SETTINGS,
    }

    nr = merged[(risky_b & ~risky_a).to_numpy()]
    new_risks = pd.DataFrame(
        {
            "server_id": nr["server_id"].to_numpy(dtype=object),
            "business_unit": bu(nr["server_id"]),
            "metric": nr["metric"].to_numpy(dtype=object),
            "severity_before": sev_a[nr.index].to_numpy(dtype=object),
            "severity": sev_b[nr.index].to_numpy(dtype=object),
            "breach_expected": nr["breach_expected_b"].to_numpy(),
            "breach_probability": nr["breach_probability_b"].to_numpy(dtype=float),
            "score": nr["score_b"].to_numpy(dtype=float),
            "why": _why(nr, **why_kw),
            "reason": nr["reason_b"].fillna("").to_numpy(dtype=object),
        },
        columns=NEW_RISK_COLUMNS,
    ).sort_values(["score", "server_id"], ascending=[False, True], kind="stable")

    rr = merged[(risky_a & ~risky_b).to_numpy()]
    resolved = pd.DataFrame(
        {
            "server_id": rr["server_id"].to_numpy(dtype=object),
            "business_unit": bu(rr["server_id"]),
            "metric": rr["metric"].to_numpy(dtype=object),
            "severity_before": sev_a[rr.index].to_numpy(dtype=object),
            "breach_expected_before": rr["breach_expected_a"].to_numpy(),
            "severity": sev_b[rr.index].to_numpy(dtype=object),
            "current_p95": rr["current_p95_b"].to_numpy(dtype=float),
            "threshold": rr["threshold_b"].to_numpy(dtype=float),
            "why": _why(rr, **why_kw),
        },
        columns=RESOLVED_COLUMNS,
    ).sort_values(["server_id", "metric"], kind="stable")

    ea, eb = merged["breach_expected_a"], merged["breach_expected_b"]
    mv = merged[(ea.notna() & eb.notna() & (ea != eb)).to_numpy()]
    days = _days(mv["breach_expected_b"] - mv["breach_expected_a"])
    moved = pd.DataFrame(
        {
            "server_id": mv["server_id"].to_numpy(dtype=object),
            "business_unit": bu(mv["server_id"]),
            "metric": mv["metric"].to_numpy(dtype=object),
            "breach_before": mv["breach_expected_a"].to_numpy(),
            "breach_after": mv["breach_expected_b"].to_numpy(),
            "days_moved": days,
            "direction": np.where(days < 0, "earlier", "later").astype(object),
            "severity_before": sev_a[mv.index].to_numpy(dtype=object),
            "severity": sev_b[mv.index].to_numpy(dtype=object),
            "why": _why(mv, **why_kw),
        },
        columns=MOVED_COLUMNS,
    )
    moved = moved.iloc[np.lexsort((moved["server_id"].to_numpy(dtype=str), -np.abs(days)))].reset_index(
        drop=True
    )

    changed = _changed_recs(recs_a, recs_b, bu, data_text, settings, changes)
    totals = _totals(risk_a, risk_b, recs_a, recs_b, manifest_a, manifest_b)
    return RunDiff(
        run_a=str(manifest_a.get("run_id", "A")),
        run_b=str(manifest_b.get("run_id", "B")),
        new_risks=new_risks.reset_index(drop=True),
        resolved_risks=resolved.reset_index(drop=True),
        moved_breaches=moved,
        changed_recommendations=changed,
        totals=totals,
        settings_changed=settings,
        new_data=fresh,
        input_a=input_label(manifest_a),
        input_b=input_label(manifest_b),
        models_changed=n_models,
        business_units=bus,
    )


def _changed_recs(
    recs_a: pd.DataFrame | None,
    recs_b: pd.DataFrame | None,
    bu: Any,
    data_text: str,
    settings: Mapping[str, tuple[Any, Any]],
    models: tuple[pd.Series, pd.Series],
) -> pd.DataFrame:
    if recs_a is None or recs_b is None:
        return pd.DataFrame({c: pd.Series(dtype=object) for c in CHANGED_REC_COLUMNS})
    cols = ["server_id", "action", "recommended_size", "monthly_savings", "reason"]
    a = recs_a[[c for c in cols if c in recs_a]].copy()
    b = recs_b[[c for c in cols if c in recs_b]].copy()
    for f in (a, b):
        f["server_id"] = f["server_id"].astype(str)
        if "recommended_size" not in f:
            f["recommended_size"] = ""
    m = a.merge(b, on="server_id", how="outer", suffixes=("_a", "_b"))
    act_a = m["action_a"].fillna(NOT_IN_RUN).astype(str)
    act_b = m["action_b"].fillna(NOT_IN_RUN).astype(str)
    size_a = m["recommended_size_a"].fillna("").astype(str)
    size_b = m["recommended_size_b"].fillna("").astype(str)
    ch = m[((act_a != act_b) | (size_a != size_b)).to_numpy()]
    sa = pd.to_numeric(ch["monthly_savings_a"], errors="coerce").to_numpy(dtype=float)
    sb = pd.to_numeric(ch["monthly_savings_b"], errors="coerce").to_numpy(dtype=float)
    out = pd.DataFrame(
        {
            "server_id": ch["server_id"].to_numpy(dtype=object),
            "business_unit": bu(ch["server_id"]),
            "action_before": act_a[ch.index].to_numpy(dtype=object),
            "action": act_b[ch.index].to_numpy(dtype=object),
            "size_before": size_a[ch.index].to_numpy(dtype=object),
            "size": size_b[ch.index].to_numpy(dtype=object),
            "savings_before": np.round(sa, 2),
            "savings": np.round(sb, 2),
            "savings_change": np.round(np.nan_to_num(sb) - np.nan_to_num(sa), 2),
            "why": _why(ch, new_data=data_text, settings=settings, metric_col=None, models=models),
            "reason": ch["reason_b"].fillna("").astype(str).to_numpy(dtype=object)
            if "reason_b" in ch
            else np.full(len(ch), "", dtype=object),
        },
        columns=CHANGED_REC_COLUMNS,
    )
    return out.sort_values(["server_id"], kind="stable").reset_index(drop=True)


def _risk_totals(risk: pd.DataFrame) -> dict[str, float]:
    sev = risk["severity"].astype(str)
    at = risk[(sev != "none").to_numpy()]
    days = pd.to_numeric(risk["days_to_breach"], errors="coerce") if "days_to_breach" in risk else None
    out: dict[str, float] = {
        "server × metric at risk": len(at),
        "servers at risk": at["server_id"].nunique(),
    }
    for s in ("critical", "high", "medium", "low"):
        out[f"at risk: {s}"] = int((sev == s).sum())
    if days is not None:
        for d in (30, 90):
            out[f"servers breaching within {d} days"] = risk.loc[
                (days <= d).to_numpy(), "server_id"
            ].nunique()
    if "status" in risk:
        out["server × metric already over"] = int((risk["status"].astype(str) == "already_over").sum())
    return out


def _rec_totals(recs: pd.DataFrame | None) -> dict[str, float]:
    if recs is None:
        return {}
    act = recs["action"].astype(str).value_counts()
    out: dict[str, float] = {
        f"recommended: {a}": int(act.get(a, 0))
        for a in ("upgrade", "decommission", "consolidate", "right-size")
    }
    out["potential savings $/month"] = round(
        float(np.nansum(pd.to_numeric(recs["monthly_savings"], errors="coerce").clip(lower=0))), 2
    )
    return out


def _totals(
    risk_a: pd.DataFrame,
    risk_b: pd.DataFrame,
    recs_a: pd.DataFrame | None,
    recs_b: pd.DataFrame | None,
    manifest_a: Mapping,
    manifest_b: Mapping,
) -> pd.DataFrame:
    def servers(risk: pd.DataFrame, recs: pd.DataFrame | None) -> int:
        ids = [risk["server_id"].astype(str)]
        if recs is not None:
            ids.append(recs["server_id"].astype(str))
        return int(pd.concat(ids, ignore_index=True).nunique())

    a = {"servers": servers(risk_a, recs_a), **_risk_totals(risk_a), **_rec_totals(recs_a)}
    b = {"servers": servers(risk_b, recs_b), **_risk_totals(risk_b), **_rec_totals(recs_b)}
    rows = []
    for k in dict.fromkeys([*a, *b]):
        va, vb = a.get(k, math.nan), b.get(k, math.nan)
        rows.append((k, float(va), float(vb), float(vb) - float(va)))
    return pd.DataFrame(rows, columns=TOTAL_COLUMNS)


# --------------------------------------------------------------------------- one frame for export


def changes_frame(diff: RunDiff) -> pd.DataFrame:
    """Every change in one long frame (the CSV export): change, server, business unit, metric,
    before, after, days moved, why, reason."""
    cols = [
        "change",
        "server_id",
        "business_unit",
        "metric",
        "before",
        "after",
        "days_moved",
        "why",
        "reason",
    ]

    def d(s: pd.Series) -> pd.Series:
        t = pd.to_datetime(s, utc=True)
        return t.dt.strftime("%Y-%m-%d").fillna("")

    parts = []
    n = diff.new_risks
    if len(n):
        parts.append(
            pd.DataFrame(
                {
                    "change": "new risk",
                    "server_id": n["server_id"],
                    "business_unit": n["business_unit"],
                    "metric": n["metric"],
                    "before": n["severity_before"],
                    "after": n["severity"]
                    + (" (breach " + d(n["breach_expected"]) + ")").where(d(n["breach_expected"]) != "", ""),
                    "days_moved": math.nan,
                    "why": n["why"],
                    "reason": n["reason"],
                }
            )
        )
    r = diff.resolved_risks
    if len(r):
        parts.append(
            pd.DataFrame(
                {
                    "change": "resolved risk",
                    "server_id": r["server_id"],
                    "business_unit": r["business_unit"],
                    "metric": r["metric"],
                    "before": r["severity_before"],
                    "after": r["severity"],
                    "days_moved": math.nan,
                    "why": r["why"],
                    "reason": "",
                }
            )
        )
    m = diff.moved_breaches
    if len(m):
        parts.append(
            pd.DataFrame(
                {
                    "change": "breach date moved",
                    "server_id": m["server_id"],
                    "business_unit": m["business_unit"],
                    "metric": m["metric"],
                    "before": d(m["breach_before"]),
                    "after": d(m["breach_after"]),
                    "days_moved": m["days_moved"],
                    "why": m["why"],
                    "reason": "",
                }
            )
        )
    c = diff.changed_recommendations
    if len(c):
        size_b = c["size_before"].where(c["size_before"] == "", " " + c["size_before"])
        size_a = c["size"].where(c["size"] == "", " " + c["size"])
        parts.append(
            pd.DataFrame(
                {
                    "change": "recommendation changed",
                    "server_id": c["server_id"],
                    "business_unit": c["business_unit"],
                    "metric": "",
                    "before": c["action_before"] + size_b,
                    "after": c["action"] + size_a,
                    "days_moved": math.nan,
                    "why": c["why"],
                    "reason": c["reason"],
                }
            )
        )
    if not parts:
        return pd.DataFrame({k: pd.Series(dtype=object) for k in cols})
    return pd.concat(parts, ignore_index=True)[cols]


def export_about(diff: RunDiff) -> list[tuple[str, str]]:
    """What an export holds: the two runs, the filter and the run-level causes."""
    return [
        ("Changes", f"run {diff.run_a} → run {diff.run_b}"),
        ("Business units", ", ".join(diff.business_units) if diff.business_units else "all"),
        ("Why the runs differ", "; ".join(diff.causes())),
        *[(f"Total: {row.measure}", f"{row.before:g} → {row.after:g}") for row in diff.totals.itertuples()],
    ]


def to_json(diff: RunDiff) -> dict[str, Any]:
    """A JSON-ready dict of the diff (dates as ISO strings, NaN as null)."""

    def records(frame: pd.DataFrame) -> list[dict[str, Any]]:
        out = frame.copy()
        for col in out.columns:
            if pd.api.types.is_datetime64_any_dtype(out[col]):
                out[col] = out[col].dt.strftime("%Y-%m-%dT%H:%M:%SZ")
        out = out.astype(object).where(out.notna(), None)
        return out.to_dict("records")

    return {
        "run_a": diff.run_a,
        "run_b": diff.run_b,
        "business_units": list(diff.business_units) if diff.business_units else None,
        "new_data": diff.new_data,
        "settings_changed": {k: [a, b] for k, (a, b) in diff.settings_changed.items()},
        "models_changed": diff.models_changed,
        "causes": diff.causes(),
        **{name: records(frame) for name, frame in diff.tables().items()},
    }


# --------------------------------------------------------------------------- I/O


def resolve_pair(store: Store, run_a: str | None = None, run_b: str | None = None) -> tuple[str, str]:
    """(before, after) run ids: given ones checked, else the latest run and the one before it.

    RecordsError names what is wrong: an unknown id (and the runs there are), or a store with
    fewer than two runs.
    """
    runs = store.list_runs()
    latest = store.latest_run_id()
    known = set(runs)
    for rid in (run_a, run_b):
        if rid is not None:
            try:
                check_run_id(rid)
            except StoreError:
                raise RecordsError(f"{rid!r} is not a run id (like 20260805T060000Z-1a2b3c)") from None
            if rid not in known:
                shown = ", ".join(runs[-5:]) or "none"
                raise RecordsError(f"unknown run {rid!r} in {store.uri}: the last runs are {shown}")
    if run_a and run_b:
        return run_a, run_b
    if len(runs) < 2:
        only = f" (only {runs[0]})" if runs else ""
        raise RecordsError(
            f"{store.uri} has {len(runs)} published run(s){only}: a comparison needs two — "
            "run `python -m forecasting run` again when new data has arrived"
        )
    after = run_b or (latest if latest in known else runs[-1])
    if run_a:
        return run_a, after
    earlier = [r for r in runs if r < after]
    if not earlier:
        raise RecordsError(f"no run before {after} in {store.uri} to compare it with")
    return earlier[-1], after


def read_models(store: Store, run_id: str) -> pd.DataFrame | None:
    """(server_id, metric, model) per series of a run, reading only those columns of the
    forecasts and only their first step (a fleet's forecasts are millions of rows)."""
    try:
        import pyarrow.compute as pc

        from ..shards import object_store

        dataset = object_store(store).run_table_dataset(check_run_id(run_id), "forecasts")
        if dataset is None:
            return None
        table = dataset.to_table(columns=["server_id", "metric", "timestamp", "model"])
    except (StoreError, OSError):
        frame = store.read_run_table(run_id, "forecasts")
        return None if frame is None else series_models({"forecasts": frame})
    first = pc.min(table["timestamp"])
    table = table.filter(pc.equal(table["timestamp"], first)).drop_columns(["timestamp"])
    return table.to_pandas().drop_duplicates(RISK_KEY).astype(str)


def read_plan(store: Store, run_id: str) -> tuple[dict[str, pd.DataFrame | None], dict]:
    """The tables a comparison reads (risk, recommendations, models) and the manifest of a run."""
    manifest = store.read_manifest(run_id)
    plan = {
        "risk": store.read_run_table(run_id, "risk"),
        "recommendations": store.read_run_table(run_id, "recommendations"),
        "models": read_models(store, run_id),
    }
    return plan, manifest


def diff_runs(
    store: Store,
    run_a: str | None = None,
    run_b: str | None = None,
    *,
    business_units: Iterable[str] | None = None,
) -> RunDiff:
    """Compare two runs of a store (default: the one before the latest, and the latest)."""
    a, b = resolve_pair(store, run_a, run_b)
    if a == b:
        raise RecordsError(f"run {a} compared with itself: give two different runs")
    plan_a, man_a = read_plan(store, a)
    plan_b, man_b = read_plan(store, b)
    inventory = store.read_inventory()
    bus = list(business_units) if business_units else None
    if bus:
        known = set(inventory["business_unit"].astype(str))
        unknown = [x for x in bus if x not in known]
        if unknown:
            raise RecordsError(
                f"unknown business unit(s) {', '.join(unknown)}: the fleet has {', '.join(sorted(known))}"
            )
    return compare(plan_a, man_a, plan_b, man_b, inventory=inventory, business_units=bus)
