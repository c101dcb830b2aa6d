"""Data-quality rules for a day of data: nulls, value ranges and row-count anomalies. Pure functions."""

import numpy as np
import pandas as pd


def quality_issues(
    frame: pd.DataFrame,
    required: list[str],
    non_negative: list[str],
    row_count_history: list[int],
    ratio_bounds: tuple[float, float],
) -> list[str]:
    """Human-readable problems of one day's rows; an empty list means the day is fine.

    ``row_count_history`` holds the row counts of the days before (the last 14 are used): a day with
    fewer or more rows than ``ratio_bounds`` times their median is an anomaly (a broken extract, a
    double load), not drift.
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
    history = [n for n in row_count_history[-14:] if n > 0]
    if len(history) >= 7:
        median = float(np.median(history))
        low, high = ratio_bounds
        if not low * median <= len(frame) <= high * median:
            issues.append(f"{len(frame)} rows against a median of {median:.0f} over the days before")
    return issues
