"""Data-quality rules."""

import numpy as np
import pandas as pd

from fti_assets.monitoring.quality import (
    new_version_issues,
    quality_issues,
    row_count_issues,
    value_issues,
    value_issues_by_day,
)


def test_a_clean_day_has_no_issues():
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": [0, 3]})
    assert quality_issues(frame, ["a"], ["a", "b"], [2] * 10, (0.2, 5.0)) == []


def test_nulls_negatives_and_infinities_are_named():
    frame = pd.DataFrame({"a": [1.0, None], "b": [-1.0, np.inf]})
    issues = quality_issues(frame, ["a"], ["b"], [], (0.2, 5.0))
    assert issues == ["a: 1 nulls", "b: 2 negative or non-finite values"]


def test_row_count_anomalies_against_the_same_weekday_of_earlier_weeks():
    frame = pd.DataFrame({"a": range(10)})
    assert quality_issues(frame, [], [], [100] * 28, (0.2, 5.0)) == [
        "10 rows against a median of 100 on the same weekday before"
    ]
    assert quality_issues(frame, [], [], [40] * 28, (0.2, 5.0)) == []


def test_a_weekly_closing_day_is_not_an_anomaly():
    week = [0, 100, 100, 100, 100, 100, 100]  # closed every seventh day
    closed = pd.DataFrame({"a": []})
    assert quality_issues(closed, [], [], week * 4, (0.2, 5.0)) == []
    opened = pd.DataFrame({"a": range(100)})
    assert quality_issues(opened, [], [], (week * 4)[1:] + [0], (0.2, 5.0)) == []


def test_no_count_verdict_without_enough_history_or_rows():
    frame = pd.DataFrame({"a": range(1)})
    assert quality_issues(frame, [], [], [100] * 13, (0.2, 5.0)) == []
    assert quality_issues(frame, [], [], [12] * 28, (0.2, 5.0), min_median_rows=30) == []


def test_a_new_version_that_loses_most_of_its_published_rows_is_refused():
    assert row_count_issues(0, [], (0.2, 5.0), previous_rows=50) == [
        "0 rows against 50 in the published version of the day"
    ]
    assert row_count_issues(45, [], (0.2, 5.0), previous_rows=50) == []  # a correction, not a loss
    assert row_count_issues(0, [], (0.2, 5.0), previous_rows=3) != []  # counts of one day are not chance


def test_the_floor_tells_an_outage_from_a_quiet_day_of_a_sparse_source():
    history = [39] * 28  # the Online Retail sample's busiest Sundays
    sparse, dense = (0.05, 5.0), (0.2, 5.0)
    assert row_count_issues(7, history, sparse) == []  # 2010-12-19: a quiet Sunday
    assert row_count_issues(1, history, sparse) == ["1 rows against a median of 39 on the same weekday before"]
    assert row_count_issues(0, history, sparse) != []  # an outage
    assert row_count_issues(7, history, dense) != []  # the default floor fits dense sources only


def test_new_versions_are_judged_against_the_lake_before_them_and_each_other():
    days = ["2026-02-01", "2026-02-02", "2026-02-03"]
    frame = pd.DataFrame({"day": ["2026-02-01"] * 100 + ["2026-02-03"] * 2, "amount": [1.0] * 101 + [np.nan]})
    before = {d.strftime("%Y-%m-%d"): 100 for d in pd.date_range("2026-01-04", "2026-01-31")}
    issues = new_version_issues(frame, days, {**before, "2026-02-02": 80}, ["amount"], ["amount"], (0.2, 5.0))
    assert issues["2026-02-01"] == []
    assert issues["2026-02-02"] == [  # its published version had 80 rows; the weekday before, 100
        "0 rows against 80 in the published version of the day",
        "0 rows against a median of 100 on the same weekday before",
    ]
    assert issues["2026-02-03"] == [
        "amount: 1 nulls",
        "amount: 1 negative or non-finite values",
        "2 rows against a median of 100 on the same weekday before",
    ]


def test_issues_by_day_are_each_days_own_issues():
    rng = np.random.default_rng(3)
    frame = pd.DataFrame(
        {
            "day": rng.choice(["2026-01-01", "2026-01-02", "2026-01-03", None], size=400),
            "count": pd.array(rng.integers(-2, 50, size=400), dtype="Int64"),
            "spend": rng.normal(10, 20, size=400),
            "customer_id": rng.choice(["a", "b", None], size=400),
        }
    )
    frame.loc[rng.choice(400, 30), "spend"] = np.nan
    frame.loc[rng.choice(400, 5), "spend"] = np.inf
    frame.loc[rng.choice(400, 20), "count"] = pd.NA
    days = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]
    by_day = value_issues_by_day(frame, "day", days, ["customer_id", "count"], ["count", "spend"])
    for day in days:
        own = frame[frame["day"] == day]
        assert by_day[day] == value_issues(own, ["customer_id", "count"], ["count", "spend"])
    assert by_day["2026-01-01"] and by_day["2026-01-04"] == []
    # The rows without a day count for none of them.
    assert sum(int(i.split(": ")[1].split()[0]) for d in days for i in by_day[d]) < sum(
        int(i.split(": ")[1].split()[0]) for i in value_issues(frame, ["customer_id", "count"], ["count", "spend"])
    )
