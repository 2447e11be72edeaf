"""Plans as records: what changed between two runs, and how right past runs were.

- :mod:`forecasting.records.diff` — :func:`~forecasting.records.diff.compare` (pure) and
  :func:`~forecasting.records.diff.diff_runs` (reads two runs from the store).
- :mod:`forecasting.records.track` — :func:`~forecasting.records.track.track_record` (pure) and
  :func:`~forecasting.records.track.track_runs` (every past run against the actuals since,
  saved beside each run as an immutable side record).
"""

from __future__ import annotations


class RecordsError(ValueError):
    """A comparison or track record that cannot be made as asked (unknown run, one run only…)."""
