"""The one interface every forecast model implements, and the result every model returns."""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import ClassVar, Self

import numpy as np
import pandas as pd

from ..panel import Panel
from ..plan import FORECAST_COLUMNS, QUANTILE_COLUMNS, QUANTILES


class NotFittedError(RuntimeError):
    """predict() called before fit()."""


@dataclass
class ForecastResult:
    """Point forecasts and quantiles for every series of a panel over a horizon."""

    keys: pd.DataFrame  # server_id, metric (row i of the arrays)
    index: pd.DatetimeIndex  # the H future period starts
    point: np.ndarray  # (n, H)
    quantiles: np.ndarray  # (n, H, len(QUANTILES)), ordered like plan.QUANTILES
    model: np.ndarray  # (n,) name of the model that produced each series (fallbacks differ)
    failures: pd.DataFrame = field(
        default_factory=lambda: pd.DataFrame(columns=["server_id", "metric", "model", "reason"])
    )

    def to_frame(self) -> pd.DataFrame:
        """Long plan-store frame with plan.FORECAST_COLUMNS (one row per series × step)."""
        n, H = self.point.shape
        out = pd.DataFrame(
            {
                "server_id": np.repeat(self.keys["server_id"].to_numpy(dtype=object), H),
                "metric": np.repeat(self.keys["metric"].to_numpy(dtype=object), H),
                "timestamp": np.tile(self.index.to_numpy(), n),
                "yhat": self.point.reshape(-1).astype("float32"),
            }
        )
        q = self.quantiles.reshape(n * H, len(QUANTILES)).astype("float32")
        for j, col in enumerate(QUANTILE_COLUMNS):
            out[col] = q[:, j]
        out["yhat_lower"] = out["q10"]
        out["yhat_upper"] = out["q90"]
        out["model"] = np.repeat(self.model.astype(object), H)
        out["timestamp"] = pd.to_datetime(out["timestamp"], utc=True)
        return out[FORECAST_COLUMNS]


class ForecastModel(abc.ABC):
    """Fit on a panel, predict a horizon. Fitted state stays inside the model."""

    name: ClassVar[str]

    def __init__(self) -> None:
        self._panel: Panel | None = None

    @abc.abstractmethod
    def fit(self, panel: Panel) -> Self: ...

    @abc.abstractmethod
    def predict(self, horizon: int) -> ForecastResult: ...

    def _require_fitted(self) -> Panel:
        if self._panel is None:
            raise NotFittedError(f"{type(self).__name__}.predict() called before fit()")
        return self._panel


def finalize(point: np.ndarray, quantiles: np.ndarray, upper: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Enforce the contract on any model's output: bounds (0–100 / ≥ 0) and ordered quantiles."""
    hi = upper[:, None]
    point = np.clip(point, 0.0, hi)
    quantiles = np.sort(np.clip(quantiles, 0.0, hi[..., None]), axis=-1)
    return point, quantiles
