"""The business calendar a bank's load follows: month-end and quarter-end closes, holidays.

Shared by every model that takes regressors (fleet model, Prophet) and by the analytics that
explain seasonal peaks, so "quarter-end" means the same thing everywhere.
"""

from __future__ import annotations

from functools import lru_cache

import holidays
import numpy as np
import pandas as pd

CALENDAR_FEATURES = ["month_end", "quarter_end", "holiday"]
# The books close over the last days of a month: that is when batch and db load peaks.
MONTH_END_DAYS = 3


@lru_cache(maxsize=64)
def _holiday_dates(years: tuple[int, ...]) -> np.ndarray:
    """Union of UK and US public holidays (the markets a typical bank's fleet serves)."""
    days: set = set()
    for cal in (holidays.country_holidays("GB", years=years), holidays.country_holidays("US", years=years)):
        days.update(cal.keys())
    return np.array(sorted(days), dtype="datetime64[D]")


def calendar_features(index: pd.DatetimeIndex) -> pd.DataFrame:
    """0/1 columns month_end, quarter_end, holiday for each period start in index."""
    idx = pd.DatetimeIndex(index)
    naive = idx.tz_convert(None) if idx.tz is not None else idx
    days_left = (naive.days_in_month - naive.day).to_numpy()
    month_end = days_left < MONTH_END_DAYS
    quarter_end = month_end & np.isin(naive.month.to_numpy(), (3, 6, 9, 12))
    day = naive.to_numpy().astype("datetime64[D]")
    years = tuple(range(int(naive.year.min()), int(naive.year.max()) + 1)) if len(naive) else ()
    holiday = np.isin(day, _holiday_dates(years)) if years else np.zeros(0, bool)
    return pd.DataFrame(
        {
            "month_end": month_end.astype(float),
            "quarter_end": quarter_end.astype(float),
            "holiday": holiday.astype(float),
        },
        index=index,
    )
