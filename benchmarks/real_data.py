"""Real-data accuracy: every model on real VM traces, scored by the project's rolling-origin backtest.

    .venv/bin/python benchmarks/real_data.py [--quick] [--models fleet,naive,profile,gbm,ensemble]

Data sets (the shared copies when present, else the small copies under tests/data/):
(a) Azure Public Dataset V1 (2017): 78 VM CPU traces, 5-minute readings, ~29 days
    (`/work/shared/data/azure_v1_periodic78/`, the 5-minute *average* readings; tests/data/azure/
    holds 12 of them). There are no timestamps: step 1 is put at 2017-01-02 00:00 UTC (a Monday).
    The readings are rolled up to hourly p95 by forecasting.ingest.rollup, as real telemetry is.
    Horizon 168 h (a week: the engine's hourly default), 3 origins a week apart.
(b) NAB realAWSCloudwatch (5-minute samples, ~14 days): hourly p95 via forecasting.ingest,
    horizon 24 h, 5 origins a day apart (two weeks of history leave no room for weekly windows),
    one panel per shared time span.
Columns: MASE (seasonal-naive scale), its ratio to the 24 h seasonal naive's MASE on the same
series, 80 % and 95 % band coverage, series scored, seconds (fit + predict over all origins).
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np
import pandas as pd

from forecasting.backtest import backtest, summarize
from forecasting.ingest import ingest, rollup
from forecasting.panel import build_panel

ROOT = Path(__file__).resolve().parents[1]
AZURE_DIRS = [Path("/work/shared/data/azure_v1_periodic78"), ROOT / "tests/data/azure"]
NAB_DIRS = [Path("/work/shared/data/nab/realAWSCloudwatch"), ROOT / "tests/data/nab/realAWSCloudwatch"]
AZURE_START = pd.Timestamp("2017-01-02", tz="UTC")
COLUMNS = ["dataset", "model", "mase", "ratio_to_naive", "coverage_80", "coverage_95", "series", "seconds"]


def _first(dirs: list[Path], pattern: str) -> Path | None:
    return next((d for d in dirs if d.is_dir() and any(d.glob(pattern))), None)


def azure_metrics(folder: Path | None = None, max_vms: int | None = None) -> pd.DataFrame:
    """The Azure traces as contract metrics (hourly p95 of the 5-minute average readings)."""
    folder = folder or _first(AZURE_DIRS, "*avg*.csv.gz")
    if folder is None:
        raise FileNotFoundError("no Azure data in " + " or ".join(map(str, AZURE_DIRS)))
    wide = pd.read_csv(next(iter(sorted(folder.glob("*avg*.csv.gz")))))
    vms = [c for c in wide.columns if c != "step"][:max_vms]
    ts = AZURE_START + pd.to_timedelta((wide["step"].to_numpy() - 1) * 300, unit="s")
    long = pd.DataFrame(
        {
            "server_id": np.repeat(np.array([f"az-{c}" for c in vms], dtype=object), len(wide)),
            "timestamp": np.tile(ts, len(vms)),
            "metric": "cpu_p95",
            "value": wide[vms].to_numpy().T.reshape(-1),
        }
    )
    metrics, _ = rollup(long, freq="hourly")
    return metrics


def nab_panels(folder: Path | None = None) -> list:
    """NAB CloudWatch series as hourly panels, one per shared time span."""
    folder = folder or _first(NAB_DIRS, "*.csv")
    if folder is None:
        return []
    frames = []
    for f in sorted(folder.glob("*.csv")):
        kw = {"metric": "net_out_p95"} if "disk_write" in f.name else {}
        frames.append(ingest(f, freq="hourly", **kw).metrics)
    metrics = pd.concat(frames, ignore_index=True)
    spans = metrics.groupby("server_id")["timestamp"].agg(["min", "max"])
    return [
        build_panel(metrics[metrics["server_id"].isin(g.index)], "hourly")
        for _, g in spans.groupby(["min", "max"])
    ]


def _score(panels: list, names: list[str], horizon: int, n_cutoffs: int, step: int) -> pd.DataFrame:
    rows = []
    frames = {name: [] for name in dict.fromkeys(["naive", *names])}
    seconds = dict.fromkeys(frames, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for panel in panels:
            for name in frames:
                t = time.perf_counter()
                frames[name].append(backtest(panel, [name], horizon=horizon, n_cutoffs=n_cutoffs, step=step))
                seconds[name] += time.perf_counter() - t
    naive = summarize(pd.concat(frames["naive"], ignore_index=True)).loc["naive"]
    for name in dict.fromkeys(names):
        s = summarize(pd.concat(frames[name], ignore_index=True)).loc[name]
        rows.append(
            {
                "model": name,
                "mase": s["mase"],
                "ratio_to_naive": s["mase"] / naive["mase"],
                "coverage_80": s["coverage_80"],
                "coverage_95": s["coverage_95"],
                "series": int(s["series"]),
                "seconds": round(seconds[name], 2),
            }
        )
    return pd.DataFrame(rows)


def real_accuracy(model_names: list[str], quick: bool = False) -> pd.DataFrame:
    """Rows dataset × model: MASE, ratio to the 24 h seasonal naive, band coverage, series, seconds.

    quick: 12 Azure VMs and 2 origins (seconds instead of a minute).
    """
    out = []
    az = azure_metrics(max_vms=12 if quick else None)
    panel = build_panel(az, "hourly")
    t = _score([panel], model_names, horizon=168, n_cutoffs=2 if quick else 3, step=168)
    t.insert(0, "dataset", "azure hourly (168 h)")
    out.append(t)
    panels = nab_panels()
    if panels:
        t = _score(panels, model_names, horizon=24, n_cutoffs=3 if quick else 5, step=24)
        t.insert(0, "dataset", "nab hourly (24 h)")
        out.append(t)
    return pd.concat(out, ignore_index=True)[COLUMNS]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--models", default="fleet,naive,profile,gbm,ensemble")
    args = ap.parse_args()
    table = real_accuracy(args.models.split(","), quick=args.quick)
    with pd.option_context("display.float_format", "{:.3f}".format, "display.width", 140):
        print(table.to_string(index=False))


if __name__ == "__main__":
    main()
