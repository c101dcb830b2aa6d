"""Data-quality rules for a day of data: nulls, value ranges and row-count anomalies. Pure functions."""

import numpy as np
import pandas as pd

WEEKS = 4


def quality_issues(
    frame: pd.DataFrame,
    required: list[str],
    non_negative: list[str],
    row_count_history: list[int],
    ratio_bounds: tuple[float, float],
    min_median_rows: int = 30,
) -> list[str]:
    """Human-readable problems of one day's rows; an empty list means the day is fine.

    ``row_count_history`` holds the row counts of the consecutive days before, oldest first. A day with
    fewer or more rows than ``ratio_bounds`` times the median of the same weekday in the 4 weeks before
    is an anomaly (a broken extract, a double load); comparing weekdays keeps a shop's closed Saturdays
    from looking like outages. Below ``min_median_rows`` a count is mostly chance, so it is not judged.
    """
    issues = []
    for column in required:
        nulls = int(frame[column].isna().sum())
        if nulls:
            issues.append(f"{column}: {nulls} nulls")
    for column in non_negative:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = int((~np.isfinite(values) | (values < 0)).sum())
        if bad:
            issues.append(f"{column}: {bad} negative or non-finite values")
    same_weekday = row_count_history[-7::-7][:WEEKS]
    if len(same_weekday) >= 3:
        median = float(np.median(same_weekday))
        low, high = ratio_bounds
        if median >= min_median_rows and not low * median <= len(frame) <= high * median:
            issues.append(f"{len(frame)} rows against a median of {median:.0f} on the same weekday before")
    return issues
