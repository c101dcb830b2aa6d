"""Data-quality rules."""

import numpy as np
import pandas as pd

from fti_assets.monitoring.quality import quality_issues


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
