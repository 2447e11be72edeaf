"""What the models pool across series, learned once per run — so a sharded run = the one-process run.

The fleet model pools across its series: which optional seasonality each metric uses, each
metric's default variant, the prior of each series' own variant choice, the band tables (errors
of held-out series, standardised, pooled per metric and variant) and its seasonal-naive
fallback's band factors; the seasonal-naive model pools its band factors per metric. Fitted on a
shard, each would pool that shard's series only, so a sharded plan would differ from the
one-process plan (97–99 % same actions, measured before this module).

Those choices are therefore learned once per run, on the fleet's **calibration sample** — the
`calibration_servers` servers with the smallest keyed hash of their id: the same servers
whatever the shard count, bounded whatever the fleet size — and handed to every panel that is
forecast (:func:`factories`): the whole fleet in one process (``run_batch``), or each shard
(``shards.run_shard``) after the run's Calibrate step wrote them to
``runs/<id>/shards/pooled.json``. One mechanism, so the same code decides in both. Per series,
everything (its fit, its hold-out evidence, its own variant choice against the fleet's prior,
its ramp) stays the series' own.

Why a sample rather than a reduce of every series' hold-out errors: the choices depend on each
other in a chain (structure → default variant → prior of the series choice → bands of each
variant's users), which a reduce would need four rounds over every shard for; the model already
pooled a sample (≤ 600 series per hold-out origin for the structure, ≤ 2,000 errors per band
table), so a fleet-wide sample of a few thousand series loses nothing it used, costs one small
task, and is exact: every shard applies the very same JSON.

The backtest refits its models at each cut-off: the sample's choices are learned for each
cut-off too (keyed by the panel's last period), so the backtest table is equal as well.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import pandas as pd

from .backtest import BacktestError, rolling_origins
from .models.fleet import FleetChoices, FleetModel
from .models.naive import SeasonalNaiveModel
from .panel import Panel
from .schema import MIN_HISTORY

log = logging.getLogger(__name__)

POOLED_MODELS = ("fleet", "naive")  # models whose cross-series choices are learned here
_SALT = b"capfc-calibration-sample"


def calibration_sample(server_ids: Iterable[str], n: int) -> list[str]:
    """The n servers with the smallest keyed hash of their id (sorted): the same set whatever
    the shard count or the order of the inventory, spread evenly over every shard."""
    ids = sorted(set(map(str, server_ids)))
    if n >= len(ids):
        return ids
    h = [int.from_bytes(hashlib.blake2b(s.encode(), digest_size=8, key=_SALT).digest(), "big") for s in ids]
    keep = np.argsort(np.array(h, dtype=np.uint64), kind="stable")[:n]
    return sorted(ids[i] for i in keep)


def ends(panel: Panel, horizon: int, backtest_cutoffs: int) -> list[int]:
    """Panel lengths whose choices a run needs: the forecast's, and each backtest cut-off's."""
    out = [panel.length]
    if backtest_cutoffs > 0:
        with contextlib.suppress(BacktestError):  # too short to backtest: the backtest says so
            out += rolling_origins(panel.length, horizon, backtest_cutoffs, None, MIN_HISTORY[panel.freq])
    return out


def learn(sample: Panel, model: str, horizon: int, backtest_cutoffs: int, workers: int = 0) -> dict[str, Any]:
    """The pooled choices of a run, learned on its calibration sample's panel (fleet grid).

    Returns a JSON-able ``{"model", "horizon", "ends": {iso end: {"fleet": ..., "naive": ...}}}``.
    """
    t0 = time.perf_counter()
    out: dict[str, Any] = {"model": model, "horizon": horizon, "series": sample.n_series, "ends": {}}
    for length in ends(sample, horizon, backtest_cutoffs):
        head = sample.head(length)
        key = pd.Timestamp(head.index[-1]).isoformat()
        entry: dict[str, Any] = {
            "naive": {
                k: np.asarray(v, dtype=float).tolist()
                for k, v in SeasonalNaiveModel()._factor_table(head, horizon).items()
            }
        }
        if model == "fleet":
            entry["fleet"] = FleetModel(horizon=horizon, workers=workers).fit(head).choices().to_json()
        out["ends"][key] = entry
    out["seconds"] = round(time.perf_counter() - t0, 2)
    log.info("learned the pooled choices on %d series in %.1f s", sample.n_series, out["seconds"])
    return out


def model_kwargs(name: str, pooled: dict[str, Any] | None) -> dict[str, Any]:
    """Constructor arguments that hand a model the run's pooled choices (none for other models)."""
    if pooled is None:
        return {}
    if name == "fleet" and all("fleet" in e for e in pooled["ends"].values()):
        return {"pooled": {k: FleetChoices.from_json(e["fleet"]) for k, e in pooled["ends"].items()}}
    if name == "naive":
        return {
            "pooled": {
                k: {g: np.asarray(f, dtype=float) for g, f in e["naive"].items()}
                for k, e in pooled["ends"].items()
            }
        }
    return {}


def sample_panel(panel: Panel, sample_ids: list[str]) -> Panel:
    """The calibration sample's rows of a fleet panel (the one-process run's view of it)."""
    rows = np.flatnonzero(panel.keys["server_id"].isin(set(sample_ids)).to_numpy())
    return panel.subset(rows)


def factory_for(make: Callable[..., Any], name: str, pooled: dict[str, Any] | None) -> Callable[[], Any]:
    """A factory of `name` models carrying the pooled choices (parsed once, shared read-only)."""
    extra = model_kwargs(name, pooled)
    return lambda: make(name, **extra)
