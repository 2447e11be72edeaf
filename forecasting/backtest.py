"""Rolling-origin backtests: how accurate each model has been, per series × metric.

A forecast is only trusted when its past forecasts were checked against what happened. For each
cut-off the models see only the history before it, forecast the configured horizon, and are
scored on the observed actuals after it (metrics_eval). Scores are averaged over cut-offs.
Per-series model selection picks, for each series, the model with the best backtest score.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from .metrics_eval import mase_scale, score, season_of
from .models import ForecastModel, ForecastResult, get_model
from .panel import Panel
from .plan import BACKTEST_COLUMNS
from .schema import MIN_HISTORY

ModelFactory = Callable[[], ForecastModel]
ModelSpec = str | Sequence[str] | Mapping[str, ModelFactory]
_METRICS = ["mase", "smape", "mae", "coverage_80", "coverage_95"]


class BacktestError(ValueError):
    """A backtest that cannot run as asked (e.g. history too short for one cut-off)."""


def rolling_origins(
    length: int, horizon: int, n_cutoffs: int, step: int | None = None, min_train: int = 1
) -> list[int]:
    """Cut-off positions (ascending): the last window ends at the panel's end, earlier ones
    `step` periods apart (default: the horizon, so windows do not overlap). Cut-offs leaving fewer
    than `min_train` periods of history are dropped."""
    if horizon < 1:
        raise BacktestError(f"backtest horizon must be at least 1 period, got {horizon}")
    if n_cutoffs < 1:
        raise BacktestError(f"backtest needs at least 1 cut-off, got {n_cutoffs}")
    step = step or horizon
    if step < 1:
        raise BacktestError(f"backtest step must be at least 1 period, got {step}")
    origins = [length - horizon - k * step for k in range(n_cutoffs)]
    origins = sorted(o for o in origins if o >= min_train)
    if not origins:
        raise BacktestError(
            f"history of {length} periods is too short to backtest a {horizon}-period horizon "
            f"(need at least {min_train + horizon} periods)"
        )
    return origins


def _factories(models: ModelSpec, horizon: int) -> dict[str, ModelFactory]:
    """Label -> factory; registry names build fresh models (the fleet model tuned to the horizon)."""
    if isinstance(models, str):
        models = [models]
    if isinstance(models, Mapping):
        if not models:
            raise BacktestError("no models to backtest")
        return dict(models)
    names = list(models)
    if not names:
        raise BacktestError("no models to backtest")
    out: dict[str, ModelFactory] = {}
    for name in names:
        get_model(name)  # fails fast with the list of known models
        kwargs = {"horizon": horizon} if str(name).strip().lower() == "fleet" else {}
        out[name] = lambda name=name, kwargs=kwargs: get_model(name, **kwargs)
    return out


def backtest(
    panel: Panel,
    models: ModelSpec,
    horizon: int,
    n_cutoffs: int = 3,
    step: int | None = None,
    min_train: int | None = None,
) -> pd.DataFrame:
    """Rolling-origin scores, one row per series × model (plan.BACKTEST_COLUMNS).

    models: a registry name, a list of names, or {label: factory} for configured models.
    Each cut-off refits every model on the history before it. Metrics are means over the
    cut-offs at which the series had observed actuals (n_cutoffs counts them).
    """
    factories = _factories(models, horizon)
    min_train = MIN_HISTORY[panel.freq] if min_train is None else min_train
    origins = rolling_origins(panel.length, horizon, n_cutoffs, step, min_train)
    season = season_of(panel.freq)
    n = panel.n_series
    sums = {name: {m: np.zeros(n) for m in _METRICS} for name in factories}
    counts = {name: {m: np.zeros(n, dtype=np.int64) for m in _METRICS} for name in factories}
    cutoffs = {name: np.zeros(n, dtype=np.int64) for name in factories}
    for origin in origins:
        head = panel.head(origin)
        scale = mase_scale(head.values, head.observed, season)
        window = slice(origin, origin + horizon)
        actual, observed = panel.values[:, window], panel.observed[:, window]
        for name, make in factories.items():
            result = make().fit(head).predict(horizon)
            s = score(actual, observed, result.point, result.quantiles, scale)
            cutoffs[name] += s.n_points > 0
            for m in _METRICS:
                v = getattr(s, m)
                ok = ~np.isnan(v)
                sums[name][m][ok] += v[ok]
                counts[name][m] += ok
    frames = []
    for name in factories:
        frame = panel.keys[["server_id", "metric"]].copy()
        frame["model"] = name
        for m in _METRICS:
            c = counts[name][m]
            frame[m] = np.where(c > 0, sums[name][m] / np.maximum(c, 1), np.nan)
        frame["n_cutoffs"] = cutoffs[name]
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)[BACKTEST_COLUMNS]


def summarize(frame: pd.DataFrame) -> pd.DataFrame:
    """Mean of each score per model over the series that could be scored (for reports)."""
    scored = frame[frame["n_cutoffs"] > 0]
    out = scored.groupby("model", sort=False)[_METRICS].mean()
    out["series"] = scored.groupby("model", sort=False).size()
    return out


def select_models(frame: pd.DataFrame, by: str = "mase", default: str | None = None) -> pd.Series:
    """Per series (server_id, metric), the model with the lowest backtest score `by`.

    Ties go to the model listed first in the frame; a series no model could be scored on gets
    `default` (the first model of the frame when not given).
    """
    if by not in _METRICS:
        raise BacktestError(f"cannot select models by {by!r}: use one of {', '.join(_METRICS)}")
    if frame.empty:
        return pd.Series(dtype="str", index=pd.MultiIndex.from_tuples([], names=["server_id", "metric"]))
    order = list(dict.fromkeys(frame["model"]))
    default = default or order[0]
    wide = frame.pivot_table(
        index=["server_id", "metric"], columns="model", values=by, aggfunc="mean", dropna=False
    )
    wide = wide.reindex(columns=order)
    values = wide.to_numpy(dtype=float)
    if by.startswith("coverage"):  # closeness of the band to its nominal level
        nominal = 0.8 if by == "coverage_80" else 0.95
        values = np.abs(values - nominal)
    filled = np.where(np.isnan(values), np.inf, values)
    best = np.asarray(order, dtype=object)[np.argmin(filled, axis=1)]
    best = np.where(np.isinf(filled).all(axis=1), default, best)
    return pd.Series(best, index=wide.index, name="model", dtype="str")


def apply_selection(results: Mapping[str, ForecastResult], selection: pd.Series) -> ForecastResult:
    """One forecast taking each series from the model `selection` chose for it.

    All results must cover the same series in the same order over the same periods (forecasts
    of one panel). Series missing from the selection keep the first result's forecast.
    """
    if not results:
        raise BacktestError("no forecasts to select from")
    names = list(results)
    first = results[names[0]]
    for name, r in results.items():
        if r.point.shape != first.point.shape or not r.keys[["server_id", "metric"]].equals(
            first.keys[["server_id", "metric"]]
        ):
            raise BacktestError(f"forecast of model {name!r} does not cover the same series and periods")
    idx = pd.MultiIndex.from_frame(first.keys[["server_id", "metric"]])
    chosen = selection.reindex(idx).fillna(names[0]).to_numpy(dtype=object)
    unknown = set(chosen) - set(names)
    if unknown:
        raise BacktestError(f"selection names model(s) {sorted(unknown)} without a forecast; have {names}")
    point = first.point.copy()
    quantiles = first.quantiles.copy()
    model = first.model.astype(object)  # names differ in length: no fixed-width strings
    failures = []
    for name in names:
        rows = chosen == name
        r = results[name]
        point[rows], quantiles[rows], model[rows] = r.point[rows], r.quantiles[rows], r.model[rows]
        if len(r.failures):
            keep = pd.MultiIndex.from_frame(first.keys.loc[rows, ["server_id", "metric"]])
            f = r.failures
            failures.append(f[pd.MultiIndex.from_frame(f[["server_id", "metric"]]).isin(keep)])
    return ForecastResult(
        keys=first.keys,
        index=first.index,
        point=point,
        quantiles=quantiles,
        model=model,
        failures=pd.concat(failures, ignore_index=True) if failures else first.failures.iloc[:0],
    )
