"""Data-quality rules for a day of data: nulls, value ranges and row-count anomalies. Pure functions."""

from collections.abc import Mapping, Sequence
from datetime import date, timedelta

import numpy as np
import pandas as pd

WEEKS = 4


def _value_problems(frame: pd.DataFrame, required: list[str], non_negative: list[str]) -> dict[tuple, np.ndarray]:
    """Per rule, which rows break it: a required column null, a column negative or non-finite."""
    problems = {(column, "nulls"): frame[column].isna().to_numpy() for column in required}
    for column in non_negative:
        values = pd.to_numeric(frame[column], errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
        with np.errstate(invalid="ignore"):
            problems[(column, "negative or non-finite values")] = ~np.isfinite(values) | (values < 0)
    return problems


def _described(counts: Mapping[tuple, int]) -> list[str]:
    return [f"{column}: {int(n)} {what}" for (column, what), n in counts.items() if n]


def value_issues(frame: pd.DataFrame, required: list[str], non_negative: list[str]) -> list[str]:
    """Nulls in required columns, negative or non-finite values where they cannot be."""
    return _described({rule: rows.sum() for rule, rows in _value_problems(frame, required, non_negative).items()})


def value_issues_by_day(
    frame: pd.DataFrame, day_column: str, days: list[str], required: list[str], non_negative: list[str]
) -> dict[str, list[str]]:
    """``value_issues`` of each of ``days`` (its rows are those whose ``day_column`` says so): one count per
    rule over the frame's day codes, no pass per day."""
    codes, found_days = pd.factorize(frame[day_column])  # a row without a day (code -1) is no day's
    counts = {
        rule: np.bincount(codes[rows & (codes >= 0)], minlength=len(found_days))
        for rule, rows in _value_problems(frame, required, non_negative).items()
    }
    position = {day: i for i, day in enumerate(found_days)}
    return {
        day: _described({rule: per_day[position[day]] for rule, per_day in counts.items()}) if day in position else []
        for day in days
    }


def row_count_issues(
    rows: int,
    row_count_history: Sequence[int],
    ratio_bounds: tuple[float, float],
    min_median_rows: int = 30,
    previous_rows: int | None = None,
) -> list[str]:
    """What is wrong with a day's row count, judged against history; an empty list means nothing.

    - Against the day's own published version (``previous_rows``): a new version with fewer than
      ``low`` times its rows lost them at the source (an emptied table, a broken extract, a filter gone
      wrong). A re-read of a day gives the same rows or a few more or less, never most of them less.
    - Against the same weekday of the 4 weeks before (``row_count_history``: the consecutive days before,
      oldest first): fewer than ``low`` or more than ``high`` times their median is an outage or a double
      load. Weekdays, so a shop's closed Saturdays do not look like outages; below ``min_median_rows`` a
      count is mostly chance and is not judged.

    ``low`` is the floor of an outage, not of a normal day: a dense source (the simulator) keeps the default
    0.2, a sparse one, whose quiet days fall far below its median by chance, lowers it (0.05 for the
    Online Retail sample: 7 rows on a Sunday whose median was 39 is a quiet day; 1 row is an outage).
    """
    low, high = ratio_bounds
    issues = []
    if previous_rows and rows < low * previous_rows:
        issues.append(f"{rows} rows against {previous_rows} in the published version of the day")
    same_weekday = list(row_count_history)[-7::-7][:WEEKS]
    if len(same_weekday) >= 3:
        median = float(np.median(same_weekday))
        if median >= min_median_rows and not low * median <= rows <= high * median:
            issues.append(f"{rows} rows against a median of {median:.0f} on the same weekday before")
    return issues


def quality_issues(
    frame: pd.DataFrame,
    required: list[str],
    non_negative: list[str],
    row_count_history: Sequence[int],
    ratio_bounds: tuple[float, float],
    min_median_rows: int = 30,
    previous_rows: int | None = None,
) -> list[str]:
    """Human-readable problems of one day's rows (``value_issues`` and ``row_count_issues``); empty when fine."""
    counts = row_count_issues(len(frame), row_count_history, ratio_bounds, min_median_rows, previous_rows)
    return value_issues(frame, required, non_negative) + counts


def history_days(first: date) -> list[date]:
    """The days whose row counts judge a range starting at ``first``: the 4 weeks before it."""
    return [first - timedelta(days=7 * WEEKS - i) for i in range(7 * WEEKS)]


def new_version_issues(
    frame: pd.DataFrame,
    days: list[str],
    published: Mapping[str, int],
    required: list[str],
    non_negative: list[str],
    ratio_bounds: tuple[float, float],
    min_median_rows: int = 30,
) -> dict[str, list[str]]:
    """Issues of each day's new version, judged before it is published, so a failing day never replaces
    its published version.

    ``frame`` holds the new rows of the consecutive ``days`` (ISO keys, in order; its ``day`` column says
    whose); ``published`` the row counts of the days already in the lake, the 4 weeks before the first day
    included (a day never written is absent). The history of a day is what the lake will hold before it:
    published counts before the range, the new counts inside it. One grouping of the frame, no pass per day.
    """
    rows = frame["day"].value_counts()
    values = value_issues_by_day(frame, "day", days, required, non_negative)
    before = [d.isoformat() for d in history_days(date.fromisoformat(days[0]))] if days else []
    counts = [published.get(day, 0) for day in before] + [int(rows.get(day, 0)) for day in days]
    return {
        day: values[day]
        + row_count_issues(
            counts[len(before) + i],
            counts[: len(before) + i],
            ratio_bounds,
            min_median_rows,
            previous_rows=published.get(day),
        )
        for i, day in enumerate(days)
    }
