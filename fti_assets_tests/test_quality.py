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


def test_row_count_anomalies_against_the_median_of_earlier_days():
    frame = pd.DataFrame({"a": range(10)})
    assert quality_issues(frame, [], [], [100] * 14, (0.2, 5.0)) == [
        "10 rows against a median of 100 over the days before"
    ]
    assert quality_issues(frame, [], [], [40] * 14, (0.2, 5.0)) == []
    # Too little history: no verdict on the count.
    assert quality_issues(frame, [], [], [100] * 3, (0.2, 5.0)) == []
