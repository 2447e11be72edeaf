"""Prophet, one model per series: the high-fidelity option and the accuracy reference.

Each series gets its own MAP fit (no MCMC) with the business calendar (month-end, quarter-end,
holidays) as extra regressors and the seasonalities its history can support. Fits run in a
process pool over the cores, shipped in chunks of series so each worker's ~1 s Prophet import is
paid once (a forkserver preloads Prophet, so later pools start in milliseconds). A refit whose
history only grew starts Stan from the previous optimum (Prophet's documented warm start).

Quantiles come from one set of predictive draws per series (``uncertainty_samples`` of them),
so q025…q975 are mutually consistent. Any series Prophet cannot serve — too short, constant,
empty, or a Stan error — falls back to the seasonal naive model, with the reason recorded;
one bad series never fails the panel.

Percent metrics use linear growth and are clipped to 0–100 afterwards: measured on saturating,
trend-crossing, flat and seasonal percent series (1,461 days, 90-day holdout), linear + clip
had the lower mean absolute error (1.74 vs 1.90) at ~1.6× less fit time than logistic growth
with cap=100/floor=0, which only won on series already flattening against the ceiling.
"""

from __future__ import annotations

import hashlib
import logging
import math
import multiprocessing
import os
import pickle
import tempfile
import time
import warnings
import zlib
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Self

import numpy as np
import pandas as pd

from ..calendar import CALENDAR_FEATURES, calendar_features
from ..panel import Panel
from ..plan import QUANTILES
from ..schema import MIN_HISTORY, freq_alias
from .base import ForecastModel, ForecastResult, finalize
from .naive import FAILURE_COLUMNS, SeasonalNaiveModel

if TYPE_CHECKING:
    from prophet import Prophet

log = logging.getLogger(__name__)

MAX_UNCERTAINTY_SAMPLES = 200  # DESIGN.md §6: draws cost time linearly; 200 resolve q025/q975
MIN_UNCERTAINTY_SAMPLES = 40  # fewer and the 2.5 % / 97.5 % quantiles rest on no draw at all
CHUNKS_PER_WORKER = 4  # enough chunks to balance uneven series, few enough to amortise shipping
# A seasonality is only identifiable once the history spans two of its cycles (Prophet's own rule).
SEASONALITY_MIN_SPAN_DAYS = {"daily": 2.0, "weekly": 14.0, "yearly": 730.0}
SEASONALITIES = {"daily": ("weekly", "yearly"), "hourly": ("daily", "weekly", "yearly")}
# Modules the forkserver imports once, so every worker forked from it starts with Prophet loaded.
_PRELOAD = ["prophet", "cmdstanpy", __name__]
_WARM_SCALARS = ("k", "m", "sigma_obs")
_WARM_VECTORS = ("delta", "beta")
_REASON_CHARS = 200
# Prophet trips pandas deprecation warnings on every call: noise in a batch log, not news.
_PROPHET_MODULES = r"prophet(\.|$)"

Progress = Callable[[int, int], None]


# --------------------------------------------------------------------------- work items


@dataclass(frozen=True)
class _Spec:
    """What one series' Prophet looks like; equal specs mean warm-start params fit the shapes."""

    seasonalities: tuple[str, ...]
    regressors: tuple[str, ...]


@dataclass
class _FitTask:
    row: int
    ds: np.ndarray  # naive UTC datetime64 of the observed periods
    y: np.ndarray
    X: np.ndarray  # (len(ds), len(spec.regressors)) calendar regressors
    spec: _Spec
    init: dict[str, Any] | None
    seed: int


@dataclass
class _FitOutcome:
    row: int
    model: bytes | None  # _pack()ed Prophet without its Stan backend
    params: dict[str, Any] | None  # warm-start values for the next refit
    warm: bool
    seconds: float
    reason: str | None


@dataclass
class _PredictOutcome:
    row: int
    point: np.ndarray | None  # (H,)
    quantiles: np.ndarray | None  # (H, Q)
    reason: str | None


@dataclass
class _WarmState:
    """A series' last fit: enough to tell whether new data only extends it, and where Stan ended."""

    spec: _Spec
    first: int  # first and last observed stamp (ns since epoch)
    last: int
    digest: bytes  # hash of the fitted (stamps, values)
    params: dict[str, Any]


# --------------------------------------------------------------------------- model


class ProphetModel(ForecastModel):
    """Per-series Prophet with calendar regressors, parallel MAP fits and naive fallbacks."""

    name = "prophet"

    def __init__(
        self,
        workers: int = 0,
        uncertainty_samples: int = MAX_UNCERTAINTY_SAMPLES,
        warm_start: bool = True,
        *,
        seed: int = 0,
        progress: Progress | None = None,
    ) -> None:
        """workers: processes (0 = all cores, 1 = in this process); warm_start: refit from the last
        optimum when a series' history only grew; seed: fixes the predictive draws; progress:
        called as progress(done, total) after each chunk of series is fitted, then predicted."""
        super().__init__()
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 0:
            raise ValueError(f"ProphetModel workers must be an integer ≥ 0 (0 = all cores), got {workers!r}")
        if not MIN_UNCERTAINTY_SAMPLES <= uncertainty_samples <= MAX_UNCERTAINTY_SAMPLES:
            raise ValueError(
                f"ProphetModel uncertainty_samples must be in [{MIN_UNCERTAINTY_SAMPLES}, "
                f"{MAX_UNCERTAINTY_SAMPLES}], got {uncertainty_samples!r}"
            )
        self.workers = workers
        self.uncertainty_samples = int(uncertainty_samples)
        self.warm_start = bool(warm_start)
        self.seed = int(seed)
        self.progress = progress
        self._models: list[bytes | None] = []
        self._reasons: dict[int, str] = {}
        self._warm: dict[tuple[str, str], _WarmState] = {}
        self._info = pd.DataFrame()

    # ----------------------------------------------------------------- public API

    @property
    def n_workers(self) -> int:
        """Processes actually used for a large panel (settings.workers semantics: 0 = all cores)."""
        return self.workers or os.cpu_count() or 1

    @property
    def fit_info(self) -> pd.DataFrame:
        """Per series of the last fit: server_id, metric, status, warm_start, fit_seconds, reason."""
        return self._info.copy()

    def fit(self, panel: Panel) -> Self:
        """Fit one Prophet per series; series it cannot serve are marked for the naive fallback."""
        freq_alias(panel.freq)  # unknown frequency -> SchemaError naming it
        if panel.n_series == 0:
            raise ValueError("ProphetModel.fit: the panel has no series")
        if panel.length == 0:
            raise ValueError("ProphetModel.fit: the panel has no periods")

        naive_index = _naive(panel.index)
        stamps = naive_index.as_unit("ns").asi8
        calendar = calendar_features(panel.index)[CALENDAR_FEATURES].to_numpy()
        keys = list(zip(panel.keys["server_id"], panel.keys["metric"]))
        min_history = MIN_HISTORY[panel.freq]

        reasons: dict[int, str] = {}
        tasks: list[_FitTask] = []
        histories: dict[int, tuple[_Spec, np.ndarray, np.ndarray]] = {}
        for i, key in enumerate(keys):
            y_all = panel.values[i]
            mask = panel.observed[i] & np.isfinite(y_all)
            n_obs = int(mask.sum())
            if n_obs == 0:
                reasons[i] = "no observed values"
                continue
            y = y_all[mask]
            if n_obs < min_history:
                reasons[i] = f"too short: {n_obs} observed periods, {min_history} needed"
                continue
            if np.ptp(y) == 0:
                reasons[i] = f"constant: every observed value is {y[0]:g}"
                continue
            spec = _spec(panel.freq, stamps[mask], calendar[mask])
            X = calendar[mask][:, [CALENDAR_FEATURES.index(r) for r in spec.regressors]]
            init = self._warm_init(key, spec, stamps[mask], y)
            histories[i] = (spec, stamps[mask], y)
            seed = _series_seed(self.seed, key)
            tasks.append(_FitTask(i, naive_index[mask].to_numpy(), y, X, spec, init, seed))

        outcomes = _run(_fit_chunk, tasks, self.n_workers, (self.uncertainty_samples,), self.progress)

        models: list[bytes | None] = [None] * panel.n_series
        warm = np.zeros(panel.n_series, bool)
        seconds = np.zeros(panel.n_series)
        for out in outcomes:
            seconds[out.row] = out.seconds
            if out.reason is not None:
                reasons[out.row] = out.reason
                continue
            models[out.row] = out.model
            warm[out.row] = out.warm
            if self.warm_start:
                spec, s, y = histories[out.row]
                self._warm[keys[out.row]] = _WarmState(spec, int(s[0]), int(s[-1]), _digest(s, y), out.params)

        self._models = models
        self._reasons = reasons
        self._info = pd.DataFrame(
            {
                "server_id": panel.keys["server_id"].to_numpy(dtype=object),
                "metric": panel.keys["metric"].to_numpy(dtype=object),
                "status": np.where([m is None for m in models], "fallback", "fitted"),
                "warm_start": warm,
                "fit_seconds": seconds,
                "reason": [reasons.get(i) for i in range(panel.n_series)],
            }
        )
        self._panel = panel
        if reasons:
            log.info("prophet: %d of %d series fall back to seasonal naive", len(reasons), panel.n_series)
        return self

    def predict(self, horizon: int) -> ForecastResult:
        """Point = Prophet's yhat; quantiles = empirical quantiles of seeded predictive draws."""
        panel = self._require_fitted()
        if isinstance(horizon, bool) or not isinstance(horizon, int | np.integer) or horizon < 1:
            raise ValueError(f"ProphetModel.predict: horizon must be a positive integer, got {horizon!r}")
        horizon = int(horizon)
        future_index = panel.future_index(horizon)
        future = calendar_features(future_index)[CALENDAR_FEATURES].reset_index(drop=True)
        future.insert(0, "ds", _naive(future_index))

        n, Q = panel.n_series, len(QUANTILES)
        point = np.full((n, horizon), np.nan)
        quantiles = np.full((n, horizon, Q), np.nan)
        names = np.full(n, self.name, dtype=object)
        reasons = dict(self._reasons)

        keys = list(zip(panel.keys["server_id"], panel.keys["metric"]))
        tasks = [
            (i, blob, _series_seed(self.seed, keys[i]) + 1)
            for i, blob in enumerate(self._models)
            if blob is not None
        ]
        outcomes = _run(_predict_chunk, tasks, self.n_workers, (future, QUANTILES), self.progress)
        done = np.zeros(n, bool)
        for out in outcomes:
            if out.reason is not None:
                reasons[out.row] = out.reason
                continue
            point[out.row], quantiles[out.row] = out.point, out.quantiles
            done[out.row] = True
        if done.any():
            point[done], quantiles[done] = finalize(point[done], quantiles[done], panel.upper_bounds[done])

        frames = []
        if reasons:
            rows = np.array(sorted(reasons))
            own = panel.keys.iloc[rows][["server_id", "metric"]].reset_index(drop=True)
            own["model"] = self.name
            own["reason"] = [reasons[i] for i in rows]
            frames.append(own)
            fallback = SeasonalNaiveModel().fit(panel.subset(rows)).predict(horizon)
            point[rows], quantiles[rows] = fallback.point, fallback.quantiles
            names[rows] = fallback.model
            frames.append(fallback.failures)
        frames = [f[FAILURE_COLUMNS] for f in frames if not f.empty]
        failures = (
            pd.concat(frames, ignore_index=True)
            if frames
            else pd.DataFrame({c: pd.Series(dtype="str") for c in FAILURE_COLUMNS})
        )
        return ForecastResult(
            keys=panel.keys.reset_index(drop=True),
            index=future_index,
            point=point,
            quantiles=quantiles,
            model=names,
            failures=failures,
        )

    def fitted_model(self, server_id: str, metric: str) -> Prophet | None:
        """The fitted Prophet of one series (for plots and inspection); None if it fell back."""
        panel = self._require_fitted()
        hit = np.flatnonzero((panel.keys["server_id"] == server_id) & (panel.keys["metric"] == metric))
        if hit.size == 0:
            raise KeyError(f"no series {server_id!r} / {metric!r} in the fitted panel")
        blob = self._models[int(hit[0])]
        return None if blob is None else _unpack(blob)

    # ----------------------------------------------------------------- warm start

    def _warm_init(
        self, key: tuple[str, str], spec: _Spec, stamps: np.ndarray, y: np.ndarray
    ) -> dict[str, Any] | None:
        """Previous optimum if the new history is the old one plus later periods, else None."""
        if not self.warm_start:
            return None
        state = self._warm.get(key)
        if state is None or state.spec != spec or int(stamps[0]) != state.first or stamps[-1] < state.last:
            return None
        k = int(np.searchsorted(stamps, state.last, side="right"))
        if _digest(stamps[:k], y[:k]) != state.digest:
            return None
        return state.params


# --------------------------------------------------------------------------- helpers (parent)


def _naive(index: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """Prophet wants tz-naive stamps: UTC wall time without the zone."""
    return index.tz_convert(None) if index.tz is not None else index


def _spec(freq: str, stamps: np.ndarray, calendar: np.ndarray) -> _Spec:
    """Seasonalities the span supports; calendar regressors that actually vary in this history."""
    step = pd.Timedelta(1, freq_alias(freq)).value  # the last period counts in full
    span_days = (int(stamps[-1]) - int(stamps[0]) + step) / 86_400e9
    seasonalities = tuple(s for s in SEASONALITIES[freq] if span_days >= SEASONALITY_MIN_SPAN_DAYS[s])
    varies = calendar.min(axis=0) != calendar.max(axis=0)
    regressors = tuple(c for c, v in zip(CALENDAR_FEATURES, varies) if v)
    return _Spec(seasonalities, regressors)


def _series_seed(base: int, key: tuple[str, str]) -> int:
    """Stable per-series seed: the same draws whatever the chunking or worker count."""
    return (zlib.crc32(f"{key[0]}\x1f{key[1]}".encode()) ^ (base * 2_654_435_761)) % (2**31 - 2)


def _digest(stamps: np.ndarray, y: np.ndarray) -> bytes:
    h = hashlib.blake2b(digest_size=16)
    h.update(np.ascontiguousarray(stamps, dtype=np.int64).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return h.digest()


def _chunks(items: Sequence[Any], n_workers: int) -> list[list[Any]]:
    size = max(1, math.ceil(len(items) / (n_workers * CHUNKS_PER_WORKER)))
    return [list(items[i : i + size]) for i in range(0, len(items), size)]


def _mp_context() -> multiprocessing.context.BaseContext:
    """forkserver (workers fork from a server that already imported Prophet); spawn elsewhere.

    Plain fork is avoided: the caller may hold threads (Arrow pools, a web server) that fork
    would copy mid-lock.
    """
    if "forkserver" in multiprocessing.get_all_start_methods():
        ctx = multiprocessing.get_context("forkserver")
        ctx.set_forkserver_preload(_PRELOAD)  # takes effect when the server first starts
        return ctx
    return multiprocessing.get_context("spawn")


def _run(
    fn: Callable[..., list[Any]],
    items: Sequence[Any],
    n_workers: int,
    args: tuple[Any, ...],
    progress: Progress | None,
) -> list[Any]:
    """fn(chunk, *args) over chunks of items: in a process pool when it can, else in-process.

    If the pool cannot start (e.g. inside a daemon process) or breaks, the chunks it did not
    finish run here, so a genuine bug in fn still surfaces with its own traceback.
    """
    if not items:
        return []
    chunks = _chunks(items, n_workers)
    total, finished = len(items), 0
    results: list[list[Any] | None] = [None] * len(chunks)
    if n_workers > 1 and len(chunks) > 1:
        try:
            with ProcessPoolExecutor(min(n_workers, len(chunks)), mp_context=_mp_context()) as pool:
                pending = {pool.submit(fn, chunk, *args): k for k, chunk in enumerate(chunks)}
                while pending:
                    ready, _ = wait(pending, return_when=FIRST_COMPLETED)
                    for fut in ready:
                        k = pending.pop(fut)
                        results[k] = fut.result()
                        finished += len(chunks[k])
                        if progress is not None:
                            progress(finished, total)
        except Exception as exc:  # the pool itself failed; finish below, in this process
            log.warning(
                "prophet: process pool failed (%s: %s); continuing in-process", type(exc).__name__, exc
            )
    for k, chunk in enumerate(chunks):
        if results[k] is None:
            results[k] = fn(chunk, *args)
            finished += len(chunk)
            if progress is not None:
                progress(finished, total)
    return [out for res in results for out in (res or [])]


# --------------------------------------------------------------------------- workers


def _silence_stan() -> None:
    """Stan's and Prophet's per-fit chatter would drown a batch log of thousands of fits."""
    stan = logging.getLogger("cmdstanpy")
    stan.disabled = True
    stan.setLevel(logging.WARNING)
    stan.propagate = False
    logging.getLogger("prophet").setLevel(logging.WARNING)


def _reason(stage: str, exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    detail = f"{type(exc).__name__}: {text[0]}" if text else type(exc).__name__
    return f"prophet {stage} failed ({detail})"[:_REASON_CHARS]


def _new_prophet(spec: _Spec, uncertainty_samples: int) -> Prophet:
    from prophet import Prophet

    m = Prophet(
        growth="linear",
        daily_seasonality="daily" in spec.seasonalities,
        weekly_seasonality="weekly" in spec.seasonalities,
        yearly_seasonality="yearly" in spec.seasonalities,
        mcmc_samples=0,
        uncertainty_samples=uncertainty_samples,
    )
    for name in spec.regressors:
        m.add_regressor(name, standardize=False)
    return m


def _pack(m: Prophet) -> bytes:
    """A fitted model as compact bytes: it crosses process boundaries and waits for predict().

    zlib level 1 halves a 4-year daily model (~125 kB → ~58 kB) for ~2 ms.
    """
    return zlib.compress(pickle.dumps(m, protocol=pickle.HIGHEST_PROTOCOL), 1)


def _unpack(blob: bytes) -> Prophet:
    return pickle.loads(zlib.decompress(blob))


def _warm_params(m: Prophet) -> dict[str, Any]:
    """Prophet docs, "Updating fitted models": the MAP optimum as Stan inits."""
    params = {p: float(m.params[p][0][0]) for p in _WARM_SCALARS}
    params.update({p: np.asarray(m.params[p][0], dtype=float).copy() for p in _WARM_VECTORS})
    return params


def _fit_chunk(tasks: list[_FitTask], uncertainty_samples: int) -> list[_FitOutcome]:
    """Fit a chunk of series (runs in a worker or in-process); a failure is one outcome, not a raise."""
    _silence_stan()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=_PROPHET_MODULES)
        return [_fit_one(task, uncertainty_samples) for task in tasks]


def _fit_one(task: _FitTask, uncertainty_samples: int) -> _FitOutcome:
    start = time.perf_counter()
    try:
        m = _new_prophet(task.spec, uncertainty_samples)
        df = pd.DataFrame({"ds": task.ds, "y": task.y})
        for j, name in enumerate(task.spec.regressors):
            df[name] = task.X[:, j]
        kwargs: dict[str, Any] = {"show_console": False, "seed": task.seed}
        if task.init is not None:
            kwargs["init"] = task.init
        # Stan's CSV and console files go to a directory removed right after the fit.
        with tempfile.TemporaryDirectory(prefix="capfc-stan-") as out_dir:
            m.fit(df, output_dir=out_dir, **kwargs)
        params = _warm_params(m)
        if not all(np.all(np.isfinite(v)) for v in params.values()):
            raise FloatingPointError("non-finite parameters at the optimum")
        warm = task.init is not None and all(
            np.shape(task.init[p]) == np.shape(params[p]) for p in _WARM_VECTORS
        )
        m.stan_backend = None  # holds the compiled model and run files: not needed to predict
        m.stan_fit = None
        m.fit_kwargs = {}
        return _FitOutcome(task.row, _pack(m), params, warm, time.perf_counter() - start, None)
    except Exception as exc:  # one series' failure must not stop the panel
        return _FitOutcome(task.row, None, None, False, time.perf_counter() - start, _reason("fit", exc))


def _predict_chunk(
    tasks: list[tuple[int, bytes, int]], future: pd.DataFrame, quantiles: tuple[float, ...]
) -> list[_PredictOutcome]:
    """yhat and predictive-draw quantiles for a chunk of fitted series."""
    _silence_stan()
    probs = np.asarray(quantiles, dtype=float)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", module=_PROPHET_MODULES)
        return [_predict_one(row, blob, seed, future, probs) for row, blob, seed in tasks]


def _predict_one(
    row: int, blob: bytes, seed: int, future: pd.DataFrame, probs: np.ndarray
) -> _PredictOutcome:
    try:
        m = _unpack(blob)
        samples, m.uncertainty_samples = m.uncertainty_samples, 0
        point = m.predict(future)["yhat"].to_numpy(dtype=float)
        m.uncertainty_samples = samples
        state = np.random.get_state()  # Prophet draws from the global RNG: seed it, then restore
        try:
            np.random.seed(seed)
            draws = m.predictive_samples(future)["yhat"]  # (H, samples)
        finally:
            np.random.set_state(state)
        q = np.quantile(draws, probs, axis=1).T
        if not (np.all(np.isfinite(point)) and np.all(np.isfinite(q))):
            raise FloatingPointError("non-finite forecast")
        return _PredictOutcome(row, point, q, None)
    except Exception as exc:  # one series' failure must not stop the panel
        return _PredictOutcome(row, None, None, _reason("predict", exc))
