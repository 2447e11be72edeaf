"""Breach risk per server × metric, from quantile forecasts (issue: capacity analytics §1).

Planners act on ranges and reasons, not on one "days remaining" number, so every row says when
the optimistic (q10), expected (q50) and pessimistic (q90) paths cross the threshold, how likely a
crossing is within the horizon, when to order, and why — in plain language with dates.

The long forecast frame is turned into one array ``(servers, metrics, steps, quantiles)`` once
(:func:`forecasting.inputs.prepare`); everything after that is vectorised array work, so a what-if re-derivation
(:mod:`forecasting.whatif`) costs milliseconds, not a re-fit.

Probability of breach. At each step the quantile forecasts define a predictive CDF: linear
between the quantile knots, with exponential tails beyond the outermost ones fitted to the two
outermost knots. Assuming the quantile paths are *comonotone* (one latent draw U drives every
step, y_t = F_t⁻¹(U): exactly the assumption under which "the q90 path" is a path), the series
crosses the threshold within the horizon iff U ≥ min_t F_t(thr), so
``P(breach within horizon) = max_t P(y_t ≥ thr)``. It is consistent with the breach dates: the
q50 path crosses ⇔ P ≥ 0.5, the q90 path crosses ⇒ P ≥ 0.1, the q10 path crosses ⇒ P ≥ 0.9.

Seasonal peaks. Month-end and quarter-end (forecasting.calendar) uplifts are measured in the last
year of history. When a forecast under-represents an uplift seen in history (e.g. a model without
calendar regressors), the missing part is added to the quantiles on those days — the plan must
survive real peaks — and the reason says so. Rows whose pessimistic path crosses only on
month/quarter-end days get status ``seasonal_peak``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
from numpy.dtypes import StringDType

from .inputs import (
    CURRENT_DAYS,
    I10,
    I50,
    I90,
    LEVELS,
    MONTH_END,
    OFF_PEAK,
    PEAK_NAMES,
    QUARTER_END,
    UPLIFT_MIN_POINTS,
    AnalyticsError,
    AnalyticsInputs,
    prepare,
)
from .plan import RISK_COLUMNS
from .schema import (
    CRITICALITY_ORDER,
    METRICS,
    PERIODS_PER_WEEK,
)
from .settings import DEFAULT_CRITICALITY_OFFSETS, DEFAULT_LEAD_TIME_DAYS, DEFAULT_THRESHOLDS

# Weight of each criticality tier in the 0–100 score (unknown tiers count as medium).
CRITICALITY_WEIGHTS = {"critical": 1.0, "high": 0.9, "medium": 0.8, "low": 0.65}
# Days over which urgency decays once the breach is further away than the lead time.
URGENCY_DAYS = 90.0
# Score bands for severity (status "ok" is always severity "none").
SEVERITY_BANDS = (("critical", 70.0), ("high", 45.0), ("medium", 20.0))
# --------------------------------------------------------------------------- probability


def exceedance_probability(values: np.ndarray, threshold: np.ndarray | float, axis: int = -1) -> np.ndarray:
    """P(Y ≥ threshold) from quantile values (sorted along ``axis``, levels plan.QUANTILES).

    The CDF is linear between knots; beyond the outermost knots it has exponential tails whose
    scale matches the two outermost knots (e.g. above q975: P = 0.025·exp(−(x − q975)/s) with
    s = (q975 − q95)/ln 2). Degenerate tails (equal knots) become a step. NaN values give NaN.
    ``threshold`` broadcasts against the shape of ``values`` without ``axis``.

    Fast path for fleets: most (series, step) cells sit far below their threshold, in the upper
    tail, which needs only the two top knots; the piecewise-linear part (each segment's
    probability times the fraction of it below x) runs on the remaining cells only.
    """
    knots = np.moveaxis(np.asarray(values, dtype=float), axis, 0)  # (Q, …) view
    if knots.ndim == 1:  # one quantile vector: answer a scalar (0-d) like numpy would
        return exceedance_probability(knots[:, None], np.atleast_1d(threshold), axis=0).reshape(
            np.shape(threshold)
        )
    p = LEVELS
    Q = knots.shape[0]
    shape = np.broadcast_shapes(knots.shape[1:], np.shape(threshold))
    x = np.broadcast_to(np.asarray(threshold, dtype=float), shape)
    top, below_top = np.broadcast_to(knots[-1], shape), np.broadcast_to(knots[-2], shape)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore"):
        # upper tail everywhere: P = (1 − pQ) · exp(−(x − vQ)/s), s = (vQ − vQ−1)/ln((1 − pQ−1)/(1 − pQ))
        d_hi = x - top
        scale_hi = (top - below_top) / math.log((1 - p[-2]) / (1 - p[-1]))
        out = (1 - p[-1]) * np.exp(-(d_hi / scale_hi))  # d/0 = inf -> 0: a step
        inner = np.nonzero(~(d_hi > 0))  # x ≤ vQ (and NaN cells, masked at the end)
        if len(inner[0]):
            xs = x[inner]
            ks = [np.broadcast_to(knots[j], shape)[inner] for j in range(Q)]
            cdf = np.full(len(xs), p[0])
            for j in range(1, Q):
                # fraction of segment j below x; a zero-width segment gives ±inf (or 0/0 = NaN
                # at its knot), which fmax/fmin map to 1 when x is above it and 0 otherwise
                frac = np.fmin(np.fmax((xs - ks[j - 1]) / (ks[j] - ks[j - 1]), 0.0), 1.0)
                cdf += (p[j] - p[j - 1]) * frac
            # lower tail: F = p1 · exp(−(v1 − x)/s), s = (v2 − v1)/ln(p2/p1)
            d_lo = ks[0] - xs
            scale_lo = (ks[1] - ks[0]) / math.log(p[1] / p[0])
            z = np.where(
                scale_lo > 0, d_lo / np.where(scale_lo > 0, scale_lo, 1.0), np.where(d_lo > 0, np.inf, 0.0)
            )
            cdf = np.where(d_lo >= 0, p[0] * np.exp(-z), cdf)
            out[inner] = 1.0 - cdf
    missing = np.isnan(knots[0]) | np.isnan(knots[-1]) | np.isnan(knots[Q // 2])
    if missing.any():
        out[np.broadcast_to(missing, shape)] = np.nan
    return out


# --------------------------------------------------------------------------- thresholds


def _merged_thresholds(thresholds: Mapping[str, float] | None) -> dict[str, float]:
    merged = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    unknown = set(merged) - set(METRICS)
    if unknown:
        raise AnalyticsError(f"thresholds: unknown metric(s) {sorted(unknown)}; known: {list(METRICS)}")
    for m, t in merged.items():
        if not (isinstance(t, int | float) and math.isfinite(t) and t > 0):
            raise AnalyticsError(f"thresholds: {m} threshold {t!r} must be a positive number")
        if METRICS[m].kind == "percent" and t > 100:
            raise AnalyticsError(f"thresholds: {m} threshold {t} must be at most 100 (percent)")
    return {m: float(t) for m, t in merged.items()}


def _merged_offsets(offsets: Mapping[str, float] | None) -> dict[str, float]:
    merged = {**DEFAULT_CRITICALITY_OFFSETS, **(offsets or {})}
    unknown = set(merged) - set(CRITICALITY_ORDER)
    if unknown:
        raise AnalyticsError(
            f"criticality_offsets: unknown tier(s) {sorted(unknown)}; known: {CRITICALITY_ORDER}"
        )
    for tier, off in merged.items():
        if not (isinstance(off, int | float) and math.isfinite(off) and -100 < off < 100):
            raise AnalyticsError(
                f"criticality_offsets: {tier} offset {off!r} must be a number in (−100, 100)"
            )
    return {k: float(v) for k, v in merged.items()}


def threshold_matrix(
    inputs: AnalyticsInputs,
    thresholds: Mapping[str, float] | None,
    criticality_offsets: Mapping[str, float] | None,
) -> tuple[np.ndarray, np.ndarray]:
    """(S, M) effective thresholds and the (S, M) tier offsets behind them.

    Percent metrics: threshold + offset points (critical −10 → 85 % becomes 75 %). Mbps metrics:
    the same offset read as a percentage of the threshold (−10 → 800 Mbps becomes 720 Mbps).
    Unknown tiers get no offset. Thresholds never drop below 1 % of the base value.
    """
    thr = _merged_thresholds(thresholds)
    off = _merged_offsets(criticality_offsets)
    tier_off = inputs.inventory["criticality"].map(off).fillna(0.0).to_numpy(dtype=float)
    base = np.array([thr[m] for m in inputs.metrics])
    is_pct = np.array([METRICS[m].kind == "percent" for m in inputs.metrics])
    eff = np.where(is_pct, base + tier_off[:, None], base * (1 + tier_off[:, None] / 100.0))
    eff = np.maximum(eff, base * 0.01)
    return eff, np.broadcast_to(tier_off[:, None], eff.shape)


def lead_times(inputs: AnalyticsInputs, lead_time_days: Mapping[str, int] | None) -> np.ndarray:
    """(S,) procurement lead time per server from its server_type ('default' for the rest)."""
    lt = {**DEFAULT_LEAD_TIME_DAYS, **(lead_time_days or {})}
    for k, v in lt.items():
        if not (isinstance(v, int | float) and math.isfinite(v) and v >= 0):
            raise AnalyticsError(f"lead_time_days: {k} = {v!r} must be a number of days ≥ 0")
    default = float(lt.get("default", DEFAULT_LEAD_TIME_DAYS["default"]))
    return inputs.inventory["server_type"].map(lt).fillna(default).to_numpy(dtype=float)


# --------------------------------------------------------------------------- risk


def _first_true(mask: np.ndarray) -> np.ndarray:
    """Index of the first True along axis 1, −1 where none."""
    has = mask.any(axis=1)
    return np.where(has, mask.argmax(axis=1), -1)


def _slope(y: np.ndarray) -> np.ndarray:
    """Least-squares slope per row along axis 1 (per step), ignoring NaN."""
    w = ~np.isnan(y)
    t = np.arange(y.shape[1], dtype=float)[None, :]
    n = w.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        tm = (t * w).sum(axis=1) / n
        ym = np.nansum(y, axis=1) / n
        dt = np.where(w, t - tm[:, None], 0.0)
        num = (dt * np.where(w, y - ym[:, None], 0.0)).sum(axis=1)
        den = (dt * dt).sum(axis=1)
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)


class _FullRows:
    """Spreads the values of assessed rows (``keep``) over all ``n`` rows, others filled."""

    def __init__(self, keep: np.ndarray | None, n: int) -> None:
        self.pos = None
        if keep is not None:
            self.pos = np.full(n, -1)
            self.pos[keep] = np.arange(len(keep))

    def __call__(self, values: Any, fill: Any = None) -> Any:
        if self.pos is None:
            return values
        if isinstance(values, pd.DatetimeIndex):
            return values.take(self.pos, allow_fill=True, fill_value=pd.NaT)
        out = np.full(len(self.pos), fill, dtype=object if isinstance(fill, str) else values.dtype)
        got = self.pos >= 0
        out[got] = values[self.pos[got]]
        return out


def risk_table(
    inputs: AnalyticsInputs,
    *,
    thresholds: Mapping[str, float] | None = None,
    criticality_offsets: Mapping[str, float] | None = None,
    lead_time_days: Mapping[str, int] | None = None,
    assess: str = "all",
) -> pd.DataFrame:
    """Risk frame (exactly plan.RISK_COLUMNS), one row per server × forecast metric.

    ``assess="flagged"`` fully assesses only the rows that are not "ok" (already over, or
    whose pessimistic path crosses the threshold), found from one quantile path; the "ok" rows
    keep their ids, threshold and current value, status "ok", severity "none", reason "" and
    empty (NaN/NaT) assessments. An interactive what-if lists flagged rows only, and they are a
    few percent of a fleet's rows: this is what keeps a 10,000-server re-derivation interactive.

    Severity and the 0–100 score weigh probability, nearness and criticality:
    ``score = 100 · w_tier · P · (0.4 + 0.6 · urgency)`` with urgency 1 when the pessimistic
    breach is within the lead time, decaying as exp(−days beyond it / 90) and 0 without a
    breach; servers already over threshold score 100 · w_tier. Severity bands: ≥ 70 critical,
    ≥ 45 high, ≥ 20 medium, else low; rows with status "ok" have severity "none".
    """
    thr_sm, off_sm = threshold_matrix(inputs, thresholds, criticality_offsets)
    lead_s = lead_times(inputs, lead_time_days)
    if assess not in ("all", "flagged"):
        raise AnalyticsError(f"assess={assess!r}: use 'all' or 'flagged'")
    s_idx, m_idx = np.nonzero(inputs.present)
    if len(s_idx) == 0:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in RISK_COLUMNS})
    all_s, all_m, keep = s_idx, m_idx, None
    if assess == "flagged":
        q90 = inputs.quantiles[s_idx, m_idx, I90, :]  # (N, H) copy
        if inputs.growth is not None:
            q90 *= inputs.growth[s_idx, m_idx]
        if np.any(inputs.missing_uplift):
            q90 += inputs.peak_adjustment()[s_idx, m_idx]
        t = thr_sm[s_idx, m_idx]
        with np.errstate(invalid="ignore"):
            flagged = (inputs.current_p95[s_idx, m_idx] >= t) | (q90 >= t[:, None]).any(axis=1)
        keep = np.flatnonzero(flagged)
        s_idx, m_idx = s_idx[keep], m_idx[keep]
    N = len(s_idx)
    Vadj = inputs.series_quantiles(s_idx, m_idx, adjusted=False)  # (N, Q, H)
    raw50 = Vadj[:, I50].copy()  # the trend is read off the path without the peak adjustment
    if np.any(inputs.missing_uplift):
        Vadj += inputs.peak_adjustment()[s_idx, m_idx][:, None, :]
    thr = thr_sm[s_idx, m_idx]
    lead = lead_s[s_idx]
    H = Vadj.shape[2]
    q10, q50, q90 = Vadj[:, I10], Vadj[:, I50], Vadj[:, I90]
    with np.errstate(invalid="ignore"):
        c10, c50, c90 = q10 >= thr[:, None], q50 >= thr[:, None], q90 >= thr[:, None]
    f10, f50, f90 = _first_true(c10), _first_true(c50), _first_true(c90)
    prob_t = exceedance_probability(Vadj, thr[:, None], axis=1)
    with np.errstate(invalid="ignore"):
        prob = np.nanmax(np.where(np.isnan(prob_t), -np.inf, prob_t), axis=1)
    prob = np.where(np.isfinite(prob), np.clip(prob, 0.0, 1.0), np.nan)

    idx_ns = inputs.index.as_unit("us").asi8
    origin_us = inputs.origin.value // 1000  # Timestamp.value is ns
    step_days = (idx_ns - origin_us) / 86_400e6  # days from origin to each step

    def dates(first: np.ndarray) -> pd.DatetimeIndex:
        vals = np.where(first >= 0, idx_ns[np.clip(first, 0, H - 1)], np.iinfo(np.int64).min)
        return pd.DatetimeIndex(pd.to_datetime(vals, unit="us", utc=True)).where(first >= 0)

    d10, d50, d90 = dates(f10), dates(f50), dates(f90)
    days50 = np.where(f50 >= 0, step_days[np.clip(f50, 0, H - 1)], np.nan)
    days90 = np.where(f90 >= 0, step_days[np.clip(f90, 0, H - 1)], np.nan)

    current = inputs.current_p95[s_idx, m_idx]
    with np.errstate(invalid="ignore"):
        over = current >= thr
    off_peak = inputs.peak_kind == OFF_PEAK
    seasonal = (f90 >= 0) & ~(c90 & off_peak[None, :]).any(axis=1)
    status = np.where(
        over, "already_over", np.where(f90 >= 0, np.where(seasonal, "seasonal_peak", "at_risk"), "ok")
    )

    # act-by: expected breach (pessimistic if none) − lead time; now when already over
    basis = np.where(f50 >= 0, f50, f90)
    basis_us = np.where(basis >= 0, idx_ns[np.clip(basis, 0, H - 1)], 0)
    act_us = basis_us - (lead * 86_400e6).astype(np.int64)
    act_us = np.where(over, origin_us, act_us)
    has_act = over | (basis >= 0)
    act_by = pd.DatetimeIndex(pd.to_datetime(np.where(has_act, act_us, 0), unit="us", utc=True)).where(
        has_act
    )

    # score
    p_eff = np.where(over, 1.0, np.nan_to_num(prob))
    d_eff = np.where(over, 0.0, days90)
    urgency = np.where(
        np.isnan(d_eff), 0.0, np.exp(-np.maximum(np.nan_to_num(d_eff) - lead, 0.0) / URGENCY_DAYS)
    )
    w = (
        inputs.inventory["criticality"]
        .map(CRITICALITY_WEIGHTS)
        .fillna(CRITICALITY_WEIGHTS["medium"])
        .to_numpy(dtype=float)[s_idx]
    )
    score = np.round(100.0 * w * p_eff * (0.4 + 0.6 * urgency), 1)
    severity = np.full(N, "low", dtype=object)
    for name, floor in reversed(SEVERITY_BANDS):
        severity = np.where(score >= floor, name, severity)
    severity = np.where(status == "ok", "none", severity)

    per_week = PERIODS_PER_WEEK[inputs.freq]
    trend = _slope(raw50) * per_week
    with np.errstate(invalid="ignore"):
        peak50 = np.nanmax(np.where(np.isnan(q50), -np.inf, q50), axis=1)
        peak90 = np.nanmax(np.where(np.isnan(q90), -np.inf, q90), axis=1)
        offpeak50 = np.max(np.where(off_peak[None, :] & ~np.isnan(q50), q50, -np.inf), axis=1)
    peak50 = np.where(np.isfinite(peak50), peak50, np.nan)
    peak90 = np.where(np.isfinite(peak90), peak90, np.nan)
    at50 = np.argmax(np.where(np.isnan(q50), -np.inf, q50), axis=1)

    crossing_kind = np.where(
        (c90 & (inputs.peak_kind == MONTH_END)[None, :]).any(axis=1), MONTH_END, QUARTER_END
    )
    reasons = _reasons(
        inputs,
        s_idx=s_idx,
        m_idx=m_idx,
        thr=thr,
        off=off_sm[s_idx, m_idx],
        lead=lead,
        f10=f10,
        f50=f50,
        f90=f90,
        prob=prob,
        status=status,
        current=current,
        peak50=peak50,
        peak90=peak90,
        at50=at50,
        offpeak50=offpeak50,
        trend=trend,
        act_by=act_by,
        crossing_kind=crossing_kind,
    )
    full = _FullRows(keep, len(all_s))  # the unassessed "ok" rows back in, in row order
    frame = pd.DataFrame(
        {
            "server_id": inputs.server_ids[all_s],
            "metric": np.asarray(inputs.metrics, dtype=object)[all_m],
            "threshold": thr_sm[all_s, all_m],
            "current_p95": inputs.current_p95[all_s, all_m],
            "forecast_peak": full(peak50, np.nan),
            "forecast_peak_upper": full(peak90, np.nan),
            "breach_optimistic": full(d10),
            "breach_expected": full(d50),
            "breach_pessimistic": full(d90),
            "days_to_breach": full(days50, np.nan),
            "days_to_breach_pessimistic": full(days90, np.nan),
            "breach_probability": full(prob, np.nan),
            "act_by": full(act_by),
            "status": full(status, "ok"),
            "severity": full(severity, "none"),
            "score": full(score, np.nan),
            "trend_per_week": full(trend, np.nan),
            "reason": full(np.asarray(reasons, dtype=object), ""),
        }
    )
    return frame[RISK_COLUMNS]


def assess_risk(
    forecasts: pd.DataFrame,
    history: pd.DataFrame,
    inventory: pd.DataFrame,
    *,
    thresholds: Mapping[str, float] | None = None,
    criticality_offsets: Mapping[str, float] | None = None,
    lead_time_days: Mapping[str, int] | None = None,
    origin: pd.Timestamp | str | None = None,
    freq: str | None = None,
    history_days: int | None = None,
) -> pd.DataFrame:
    """Risk frame (plan.RISK_COLUMNS) straight from the frames: :func:`prepare` + :func:`risk_table`."""
    inputs = prepare(forecasts, history, inventory, origin=origin, freq=freq, history_days=history_days)
    return risk_table(
        inputs, thresholds=thresholds, criticality_offsets=criticality_offsets, lead_time_days=lead_time_days
    )


# --------------------------------------------------------------------------- reasons


_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def format_date(ts: pd.Timestamp, origin: pd.Timestamp, hourly: bool = False) -> str:
    """'14 Mar' (year added when it differs from the origin's; time of day when hourly)."""
    return date_labels(pd.DatetimeIndex([ts]), origin, hourly)[0]


def date_labels(index: pd.DatetimeIndex, origin: pd.Timestamp, hourly: bool = False) -> list[str]:
    """:func:`format_date` for a whole index at once ('' for NaT)."""
    idx = pd.DatetimeIndex(index)
    ok = ~np.asarray(idx.isna())
    day = np.where(ok, idx.day, 1).astype(int).tolist()
    month = np.where(ok, idx.month, 1).astype(int).tolist()
    year = np.where(ok, idx.year, origin.year).astype(int).tolist()
    hour = np.where(ok, idx.hour, 0).astype(int).tolist() if hourly else None
    minute = np.where(ok, idx.minute, 0).astype(int).tolist() if hourly else None
    out = []
    for i, good in enumerate(ok.tolist()):
        if not good:
            out.append("")
            continue
        text = f"{day[i]} {_MONTHS[month[i] - 1]}"
        if year[i] != origin.year:
            text += f" {year[i]}"
        if hourly:
            text += f" {hour[i]:02d}:{minute[i]:02d}"
        out.append(text)
    return out


def _fmt_values(values: np.ndarray, pct: np.ndarray) -> list[str]:
    """'85 %' / '1,250 Mbps' / 'n/a' for each value (pct: per-value flag), formatted in numpy."""
    v = np.asarray(values, dtype=float)
    ok = np.isfinite(v)
    whole = np.rint(np.where(ok, v, 0.0)).astype(np.int64)  # round half to even, as "{:.0f}" does
    text = whole.astype(StringDType())
    out = np.where(pct, np.strings.add(text, " %"), np.strings.add(text, " Mbps"))
    out[~ok] = "n/a"
    for i in np.flatnonzero(ok & ~pct & (np.abs(whole) >= 1000)).tolist():
        out[i] = f"{v[i]:,.0f} Mbps"  # thousands separators
    return out.tolist()


def _reasons(inputs: AnalyticsInputs, **a) -> list[str]:
    """One plain-language sentence per row: what, when (with the 80 % range), why, and by when to act.

    Built from per-column string lists (numbers formatted once, threshold texts cached per
    distinct threshold): thousands of rows take a few milliseconds, which keeps what-if
    re-derivations interactive.
    """
    hourly = inputs.freq == "hourly"
    labels = date_labels(inputs.index, inputs.origin, hourly)
    end_label = labels[-1] if labels else ""
    s_idx, m_idx = a["s_idx"], a["m_idx"]
    N = len(s_idx)
    specs = [METRICS[m] for m in inputs.metrics]
    is_pct = np.array([sp.kind == "percent" for sp in specs])[m_idx]
    label_l = [specs[j].label for j in m_idx.tolist()]
    unit_l = np.where(is_pct, "pts", "Mbps").tolist()
    tiers = inputs.inventory["criticality"].to_numpy(dtype=object)[s_idx].tolist()

    # threshold texts: few distinct (threshold, offset, kind, tier) combinations
    cache: dict[tuple, str] = {}
    thr_txt = []
    for thr, off, pct, tier in zip(a["thr"].tolist(), a["off"].tolist(), is_pct.tolist(), tiers, strict=True):
        key = (thr, off, pct, tier if off else "")
        text = cache.get(key)
        if text is None:
            unit = " %" if pct else " Mbps"
            text = f"{thr:,.0f}{unit}" if abs(thr - round(thr)) < 0.05 else f"{thr:,.1f}{unit}"
            if off:
                base = thr - off if pct else thr / (1 + off / 100.0)
                sign = "−" if off < 0 else "+"
                text += (
                    f" ({base:,.0f}{unit} {sign} {abs(off):g}{' pts' if pct else ' %'} for {tier} servers)"
                )
            cache[key] = text
        thr_txt.append(text)

    cur_txt = _fmt_values(a["current"], is_pct)
    p50_txt = _fmt_values(a["peak50"], is_pct)
    p90_txt = _fmt_values(a["peak90"], is_pct)
    off50_txt = _fmt_values(np.where(np.isfinite(a["offpeak50"]), a["offpeak50"], np.nan), is_pct)
    prob = a["prob"]
    p_txt = [
        f"P(breach by {end_label}) {v:.0f} %" if v == v else "probability n/a" for v in (100 * prob).tolist()
    ]
    trend_txt = [f"; trend {t:+.1f} {u}/week" for t, u in zip(a["trend"].tolist(), unit_l, strict=True)]

    # seasonal uplift clauses, only where history shows one
    hist_up = inputs.hist_uplift[s_idx, m_idx]
    missing = inputs.missing_uplift[s_idx, m_idx]
    min_up = np.where(is_pct, UPLIFT_MIN_POINTS, np.maximum(1.0, 0.05 * a["thr"]))
    with np.errstate(invalid="ignore"):
        shown = hist_up >= min_up[:, None]
    uplift_txt = [""] * N
    for i in np.flatnonzero(shown.any(axis=1)).tolist():
        parts = []
        for k, name in ((1, "quarter-end"), (0, "month-end")):
            if shown[i, k]:
                text = f"; {name} peaks add ~{hist_up[i, k]:.0f} {unit_l[i]}"
                if missing[i, k] > 0:
                    text += f" (the forecast lacked ~{missing[i, k]:.0f} {unit_l[i]} of it; added)"
                parts.append(text)
        uplift_txt[i] = "".join(parts)

    # act-by clauses for rows that breach
    act_labels = date_labels(a["act_by"], inputs.origin, hourly)
    origin_us = inputs.origin.value // 1000
    overdue = (np.asarray(a["act_by"].as_unit("us").asi8) <= origin_us).tolist()
    lead_l = np.round(a["lead"]).astype(int).tolist()

    status_l = a["status"].tolist()
    f10_l, f50_l, f90_l = a["f10"].tolist(), a["f50"].tolist(), a["f90"].tolist()
    at50_l, kind_l = a["at50"].tolist(), a["crossing_kind"].tolist()
    rows = []
    for i in range(N):
        status = status_l[i]
        label = label_l[i]
        if status == "ok":
            rows.append(
                f"{label} expected to peak at {p50_txt[i]} ({labels[at50_l[i]]}; pessimistic {p90_txt[i]}), "
                f"below {thr_txt[i]} through {end_label}; {p_txt[i]}{trend_txt[i]}{uplift_txt[i]}."
            )
            continue
        if status == "already_over":
            text = (
                f"{label} already at {cur_txt[i]} (p95 of the last {CURRENT_DAYS} days), over the "
                f"{thr_txt[i]} threshold; act now"
            )
            if p50_txt[i] != "n/a":
                text += f"; expected peak {p50_txt[i]} by {end_label}"
            rows.append(f"{text}{trend_txt[i]}{uplift_txt[i]}.")
            continue
        peaks = f"at {PEAK_NAMES[kind_l[i]]} peaks" if status == "seasonal_peak" else ""
        f10, f50, f90 = f10_l[i], f50_l[i], f90_l[i]
        if f50 >= 0:
            rng_end = labels[f10] if f10 >= 0 else f"after {end_label}"
            text = (
                f"{label} expected to cross {thr_txt[i]} {peaks + ' ' if peaks else ''}on {labels[f50]} "
                f"(80 % range {labels[f90]}–{rng_end}); {p_txt[i]}"
            )
        else:
            text = (
                f"{label} expected to peak at {p50_txt[i]} ({labels[at50_l[i]]}), below {thr_txt[i]}, but the "
                f"pessimistic (90 %) path crosses{' ' + peaks if peaks else ''} on {labels[f90]}; {p_txt[i]}"
            )
        if peaks and off50_txt[i] != "n/a":
            text += f"; off-peak the expected path stays at or below {off50_txt[i]}"
        text += trend_txt[i] + uplift_txt[i]
        if act_labels[i]:
            if overdue[i]:
                text += f"; order now: the {lead_l[i]} d lead time reaches past the breach (act by {act_labels[i]})"
            else:
                text += f"; act by {act_labels[i]} ({lead_l[i]} d lead time)"
        rows.append(text + ".")
    return rows
