"""Forecast models behind one interface (see base.ForecastModel), and a registry by name.

`get_model("fleet" | "naive" | "prophet" | "profile" | "gbm" | "ensemble", **kwargs)` builds a
model from its configured name; Prophet and LightGBM are imported only when asked for.
"""

from __future__ import annotations

from .base import ForecastModel, ForecastResult, NotFittedError, finalize
from .fleet import FleetModel
from .naive import SeasonalNaiveModel

MODEL_NAMES = ("fleet", "prophet", "naive", "profile", "gbm", "ensemble")


class UnknownModelError(ValueError):
    """A model name the registry does not know."""


def get_model(name: str, **kwargs: object) -> ForecastModel:
    """A new, unfitted model by registry name; kwargs go to the model's constructor."""
    key = str(name).strip().lower()
    if key == "fleet":
        return FleetModel(**kwargs)
    if key == "naive":
        return SeasonalNaiveModel(**kwargs)
    if key == "profile":
        from .profile import ProfileModel

        return ProfileModel(**kwargs)
    if key == "gbm":
        from .gbm import GBMModel

        return GBMModel(**kwargs)
    if key == "ensemble":
        from .gbm import EnsembleModel

        return EnsembleModel(**kwargs)
    if key == "prophet":
        from .prophet import ProphetModel

        return ProphetModel(**kwargs)
    raise UnknownModelError(f"unknown model {name!r}: use one of {', '.join(MODEL_NAMES)}")


__all__ = [
    "MODEL_NAMES",
    "FleetModel",
    "ForecastModel",
    "ForecastResult",
    "NotFittedError",
    "SeasonalNaiveModel",
    "UnknownModelError",
    "finalize",
    "get_model",
]
