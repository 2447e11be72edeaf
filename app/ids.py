"""Every component id of the app, in one module (DESIGN.md §2).

Layouts, callbacks and browser tests all name components through these constants, so a
renamed id is one edit and a typo is an ImportError rather than a silently dead callback.

Conventions
- Constant names are UPPER_SNAKE; values are kebab-case and start with the page's prefix:
  ``shell-`` (navbar, filter bar, banners: present on every page), ``ov-`` (fleet overview),
  ``srv-`` (server forecast), ``nf-`` (not found). New pages pick their own prefix
  (``risk-``, ``cons-``, ``whatif-``) and append their block at the end of this module.
- Pattern-matching ids are dicts built from a ``*_TYPE`` constant, e.g.
  ``{"type": NAV_LINK_TYPE, "index": "/risk"}``.
"""

from __future__ import annotations

from forecasting.schema import FILTER_DIMENSIONS

# --------------------------------------------------------------------------- shell
URL = "shell-url"  # dcc.Location: read the query string; set `href` to navigate
FILTERS = "shell-filters"  # dcc.Store: canonical filter state (see app.filters.FilterState.to_data)
FILTER_DROPDOWNS: dict[str, str] = {dim: f"shell-filter-{dim.replace('_', '-')}" for dim in FILTER_DIMENSIONS}
FILTER_CLEAR = "shell-filter-clear"
FILTER_COUNT = "shell-filter-count"
FILTER_NOTICE = "shell-filter-notice"  # unknown values dropped from a shared link
NAV_LINK_TYPE = "shell-nav-link"  # {"type": NAV_LINK_TYPE, "index": <page path>}
AS_OF = "shell-as-of"
STALE_BANNER = "shell-stale-banner"
ERROR_ALERT = "shell-error-alert"
STATUS_INTERVAL = "shell-status-interval"
NAV_DUMMY = "shell-nav-dummy"  # output of the clientside URL writer
DEV_BANNER = "shell-dev-banner"  # "Development mode: no sign-in" (CAPFC_AUTH_MODE=dev)
ACCOUNT = "shell-account"  # signed-in user and role
SIGN_OUT = "shell-sign-out"

# --------------------------------------------------------------------------- fleet overview (/)
OV_KPIS = "ov-kpis"
OV_METRIC = "ov-metric"
OV_HEATMAP = "ov-heatmap"
OV_DISTRIBUTION = "ov-distribution"
OV_TREND = "ov-trend"
OV_TOP_RISKS = "ov-top-risks"
OV_TOP_RISKS_GRID = "ov-top-risks-grid"
OV_TOP_RISKS_NOTE = "ov-top-risks-note"
OV_EMPTY = "ov-empty"
OV_CONTENT = "ov-content"

# --------------------------------------------------------------------------- server forecast (/servers/<id>)
SRV_ID = "srv-id"  # dcc.Store holding the server id from the path
SRV_PICKER = "srv-picker"
SRV_MODEL = "srv-model"
SRV_MODEL_DENIED = "srv-model-denied"  # what a viewer sees instead of the model chooser
SRV_CANCEL = "srv-cancel"
SRV_PROGRESS = "srv-progress"
SRV_PROGRESS_WRAP = "srv-progress-wrap"
SRV_MODEL_STATUS = "srv-model-status"
SRV_REFORECAST = "srv-reforecast"  # dcc.Store: a re-forecast's frame, or None for the plan
SRV_MESSAGE = "srv-message"
SRV_UNKNOWN = "srv-unknown"  # the alert shown for an id not in the plan
SRV_FACTS = "srv-facts"
SRV_ACCURACY = "srv-accuracy"
SRV_RISK = "srv-risk"
SRV_CHARTS = "srv-charts"
SRV_GRAPH_TYPE = "srv-graph"  # {"type": SRV_GRAPH_TYPE, "index": <metric>}
SRV_BODY = "srv-body"
SRV_RISK_TABLE = "srv-risk-table"
SRV_ACCURACY_TABLE = "srv-accuracy-table"

# --------------------------------------------------------------------------- not found
NF_HOME = "nf-home"

# --------------------------------------------------------------------------- what-if (on /risk and /consolidation)
# One set of controls, rendered by whichever of the two pages is open (never both at once).
WHATIF_GROWTH = "whatif-growth"
WHATIF_THRESHOLDS: dict[str, str] = {
    "cpu_p95": "whatif-threshold-cpu",
    "mem_p95": "whatif-threshold-mem",
    "disk_p95": "whatif-threshold-disk",
}
WHATIF_HEADROOM = "whatif-headroom"
# Policy knobs (app.whatif.POLICY_PARAMS order): shown on /consolidation, hidden on /risk.
WHATIF_PROPOSE = "whatif-propose"
WHATIF_MIN_SAVING_PCT = "whatif-min-saving-pct"
WHATIF_MIN_SAVING_USD = "whatif-min-saving-usd"
WHATIF_RISK_GUARD = "whatif-risk-guard"
WHATIF_SIZING_PCT = "whatif-sizing-pct"
WHATIF_POLICY = [
    WHATIF_PROPOSE,
    WHATIF_MIN_SAVING_PCT,
    WHATIF_MIN_SAVING_USD,
    WHATIF_RISK_GUARD,
    WHATIF_SIZING_PCT,
]
WHATIF_RESET = "whatif-reset"
WHATIF_SUMMARY = "whatif-summary"
WHATIF_DENIED = "whatif-denied"  # the note a viewer sees instead of the controls
WHATIF_STATE = "whatif-state"  # dcc.Store: app.whatif.ScenarioState.to_data()
SCENARIO_CARRY = "shell-scenario"  # the last what-if scenario (query), carried by scenario pages' links

# --------------------------------------------------------------------------- utilization risk (/risk)
RISK_KPIS = "risk-kpis"
RISK_EMPTY = "risk-empty"
RISK_GRID = "risk-grid"
RISK_SEARCH = "risk-search"
RISK_NOTE = "risk-note"
WHATIF_SCOPE_ALERT = "whatif-scope-alert"  # a what-if scoped to more servers than it may cover
RISK_GRID_ALERT = "risk-grid-alert"  # a server-paged grid's refusal of a bad sort or filter
RISK_GRID_PURGE = "risk-grid-purge"  # written when a server-paged grid is told to fetch again
RISK_EXPORT_CSV = "risk-export-csv"
RISK_EXPORT_XLSX = "risk-export-xlsx"
RISK_DOWNLOAD = "risk-download"
RISK_COUNT = "risk-count"  # the at-risk row count under filters and scenario

# --------------------------------------------------------------------------- consolidation (/consolidation)
CONS_KPIS = "cons-kpis"
CONS_EMPTY = "cons-empty"
CONS_RECS_GRID = "cons-recs-grid"
CONS_RECS_SEARCH = "cons-recs-search"
CONS_RECS_NOTE = "cons-recs-note"
CONS_RECS_ALERT = "cons-recs-alert"  # a server-paged grid's refusal of a bad sort or filter
CONS_RECS_PURGE = "cons-recs-purge"
CONS_EXPORT_CSV = "cons-export-csv"
CONS_EXPORT_XLSX = "cons-export-xlsx"
CONS_DOWNLOAD = "cons-download"
CONS_PLAN_GRID = "cons-plan-grid"
CONS_PLAN_NOTE = "cons-plan-note"
CONS_GROUP = "cons-group"  # dcc.Store: the host group whose load is charted
CONS_HOST_CHART = "cons-host-chart"
CONS_SAVINGS_CHART = "cons-savings-chart"
CONS_SAVINGS_TABLE = "cons-savings-table"
CONS_TABS = "cons-tabs"  # recommendations | host plan (mounted when opened)
CONS_TAB_RECS = "cons-tab-recs"
CONS_TAB_PLAN = "cons-tab-plan"
CONS_TAB_HELD = "cons-tab-held"  # servers held back from the plan, and why (mounted when opened)
CONS_HELD_BADGES = "cons-held-badges"  # counts per held_back category
CONS_HELD_CHART = "cons-held-chart"
CONS_HELD_CATEGORY = "cons-held-category"  # category filter of the held-back grid
CONS_HELD_GRID = "cons-held-grid"
CONS_HELD_NOTE = "cons-held-note"
CONS_HELD_ALERT = "cons-held-alert"  # a server-paged grid's refusal of a bad sort or filter
CONS_HELD_PURGE = "cons-held-purge"

# --------------------------------------------------------------------------- planner decisions and sign-off
DECIDE_MODAL = "decide-modal"
DECIDE_TARGET = "decide-target"  # dcc.Store: the row decided on {kind, server_id, subject, run_id, label}
DECIDE_ROW = "decide-row"  # the row named in the modal
DECIDE_CHOICE = "decide-choice"
DECIDE_UNTIL = "decide-until"
DECIDE_REFERENCE = "decide-reference"
DECIDE_REASON = "decide-reason"
DECIDE_NOTE = "decide-note"
DECIDE_SAVE = "decide-save"
DECIDE_CANCEL = "decide-cancel"
DECIDE_ERROR = "decide-error"
DECIDE_SAVED = "decide-saved"  # dcc.Store: bumped after each decision (grids and counts refresh)
DECIDE_DENIED = "decide-denied"  # what a viewer sees in place of the form
OV_RECORD = "ov-record"  # overview: risks without a decision, sign-off status and button
OV_UNDECIDED = "ov-undecided"
SIGNOFF_OPEN = "signoff-open"
SIGNOFF_MODAL = "signoff-modal"
SIGNOFF_NOTE = "signoff-note"
SIGNOFF_SAVE = "signoff-save"
SIGNOFF_CANCEL = "signoff-cancel"
SIGNOFF_ERROR = "signoff-error"
SIGNOFF_SAVED = "signoff-saved"  # dcc.Store: bumped after a sign-off
SIGNOFF_STATUS = "signoff-status"
# --------------------------------------------------------------------------- changes between runs (/changes)
CHG_RUN_A = "chg-run-a"  # the earlier run (before)
CHG_RUN_B = "chg-run-b"  # the later run (after)
CHG_ALERT = "chg-alert"  # unknown run, one run only, unreadable run: a visible alert
CHG_CAUSES = "chg-causes"  # why the two runs differ (data, settings, models)
CHG_KPIS = "chg-kpis"
CHG_TOTALS_CHART = "chg-totals-chart"
CHG_MOVES_CHART = "chg-moves-chart"
CHG_TABS = "chg-tabs"
CHG_NEW_GRID = "chg-new-grid"
CHG_RESOLVED_GRID = "chg-resolved-grid"
CHG_MOVED_GRID = "chg-moved-grid"
CHG_RECS_GRID = "chg-recs-grid"
CHG_TOTALS_GRID = "chg-totals-grid"
CHG_EXPORT_CSV = "chg-export-csv"
CHG_EXPORT_XLSX = "chg-export-xlsx"
CHG_DOWNLOAD = "chg-download"

# --------------------------------------------------------------------------- track record (/track-record)
TR_RUN = "tr-run"
TR_SERVER = "tr-server"
TR_METRIC = "tr-metric"
TR_ALERT = "tr-alert"
TR_KPIS = "tr-kpis"
TR_PATH_CHART = "tr-path-chart"  # predicted path and band against the actuals
TR_COVERAGE_CHART = "tr-coverage-chart"  # band coverage over time across runs
TR_RUNS_GRID = "tr-runs-grid"  # one row per run
TR_BREAKDOWN_GRID = "tr-breakdown-grid"  # business unit × metric × model of the chosen run
TR_SERIES_GRID = "tr-series-grid"  # the calls of the chosen run (hits, misses, false alarms)
