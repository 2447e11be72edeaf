"""Plain-text report of a published run: the top risks and the consolidation summary.

What a planner pastes into the weekly capacity mail; the app shows the same with charts.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .schema import METRICS
from .sources import NoRunError, Store


def _date(ts) -> str:
    return "—" if pd.isna(ts) else f"{pd.Timestamp(ts):%d %b %Y}"


def top_risks(risk: pd.DataFrame, inventory: pd.DataFrame, top: int) -> pd.DataFrame:
    """The highest-scoring server × metric rows, joined with what a reader needs to act."""
    at_risk = risk[risk["severity"] != "none"].sort_values(["score", "breach_probability"], ascending=False)
    rows = at_risk.head(top).merge(
        inventory[["server_id", "hostname", "business_unit", "criticality"]], on="server_id", how="left"
    )
    return pd.DataFrame(
        {
            "server": rows["server_id"],
            "business unit": rows["business_unit"],
            "metric": rows["metric"].map(lambda m: METRICS[m].label if m in METRICS else m),
            "now": rows["current_p95"].round(1),
            "limit": rows["threshold"].round(0),
            "expected breach": rows["breach_expected"].map(_date),
            "earliest": rows["breach_pessimistic"].map(_date),
            "P(breach)": (100 * rows["breach_probability"]).round(0).astype("Int64").astype(str) + " %",
            "act by": rows["act_by"].map(_date),
            "severity": rows["severity"],
            "score": rows["score"].round(0).astype("Int64"),
        }
    )


def savings_by_business_unit(recs: pd.DataFrame, inventory: pd.DataFrame) -> pd.DataFrame:
    merged = recs.merge(inventory[["server_id", "business_unit"]], on="server_id", how="left")
    merged["saving"] = merged["monthly_savings"].clip(lower=0)
    table = merged.pivot_table(
        index="business_unit", columns="action", values="server_id", aggfunc="count", fill_value=0
    )
    table["monthly savings $"] = merged.groupby("business_unit")["saving"].sum().round(0)
    return table.sort_values("monthly savings $", ascending=False)


def render_report(store: Store, run_id: str | None = None, top: int = 15) -> str:
    run_id = run_id or store.latest_run_id()
    if not run_id:
        raise NoRunError(f"no published run in {store.uri}: run `python -m forecasting run` first")
    manifest = store.read_manifest(run_id)
    risk = store.read_run_table(run_id, "risk")
    recs = store.read_run_table(run_id, "recommendations")
    inventory = store.read_inventory()
    inp, cfg = manifest.get("input", {}), manifest.get("config", {})
    out = [
        f"Capacity report — run {run_id} ({manifest.get('created_at', '?')}), data {manifest.get('data', store.uri)}",
        f"{inp.get('servers', len(inventory)):,} servers, history {inp.get('start', '?')[:10]} → "
        f"{inp.get('end', '?')[:10]} ({inp.get('freq', '?')}), model {cfg.get('model', '?')}, "
        f"horizon {cfg.get('horizon', '?')} periods",
        "",
    ]
    if risk is None:
        out.append("This run has no risk table.")
    else:
        sev = risk.loc[risk["severity"] != "none"].drop_duplicates("server_id")["severity"].value_counts()
        soon = risk.loc[risk["days_to_breach"] <= 30, "server_id"].nunique()
        out.append(
            "At risk (servers, worst metric): "
            + ", ".join(f"{sev.get(s, 0):,} {s}" for s in ("critical", "high", "medium", "low"))
            + f"; {soon:,} expected to breach within 30 days; "
            f"{(risk['status'] == 'already_over').sum():,} server × metric already over threshold."
        )
        table = top_risks(risk, inventory, top)
        out += [
            "",
            f"Top {len(table)} risks:",
            table.to_string(index=False) if len(table) else "  none",
        ]
        if len(table):
            best = risk.sort_values("score", ascending=False).iloc[0]
            out += ["", f"Why {best['server_id']} tops the list: {best['reason']}"]
    out.append("")
    if recs is None:
        out.append("This run has no recommendations.")
    else:
        c = manifest.get("consolidation") or {}
        counts = recs["action"].value_counts()
        savings = float(np.nansum(recs["monthly_savings"].clip(lower=0)))
        out.append(
            "Recommendations: "
            + ", ".join(
                f"{counts.get(a, 0):,} {a}" for a in ("decommission", "consolidate", "right-size", "upgrade")
            )
            + f"; potential savings ${savings:,.0f}/month."
        )
        if c.get("candidates"):
            out.append(
                f"Consolidation: {c['candidates']:,} candidates on {c['hosts_before']:,} hosts → "
                f"{c['hosts_after']:,} hosts peak-aware ({c.get('violations', 0)} capacity violations on replay) vs "
                f"{c.get('naive_hosts', 0):,} hosts by sum of peaks ({c.get('naive_violations', 0)} violations); "
                f"{c['servers_freed']:,} servers freed, ${c.get('consolidation_monthly_savings', 0):,.0f}/month."
            )
        out += ["", "By business unit:", savings_by_business_unit(recs, inventory).to_string()]
    return "\n".join(out)
