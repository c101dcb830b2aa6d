"""Feature transformations: exact values on a hand-made history, event times, and no look-ahead."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from fti_assets.features.transform import (
    FEATURE_TABLE_COLUMNS,
    active_population,
    compute_customer_features,
    end_of_day_utc,
    lookback_start,
)

CUSTOMERS = pd.DataFrame(
    {"customer_id": ["a", "b"], "signup_date": pd.to_datetime(["2025-12-01", "2026-01-05"], utc=True)}
)


def tx(rows):
    return pd.DataFrame(rows, columns=["customer_id", "day", "amount"])


def test_rolling_aggregates_match_a_hand_computation():
    history = tx(
        [
            ["a", "2026-01-01", 10.0],
            ["a", "2026-01-01", 30.0],
            ["a", "2026-01-20", 5.0],
            ["b", "2026-01-25", 100.0],
        ]
    )
    features = compute_customer_features(history, CUSTOMERS, date(2026, 1, 25), date(2026, 1, 26), 90, "UTC")
    a = features.set_index("customer_id").loc["a"]
    assert a["spend_sum_7d"] == 5.0 and a["txn_count_7d"] == 1 and a["spend_mean_7d"] == 5.0
    assert a["spend_sum_30d"] == 45.0 and a["txn_count_30d"] == 3 and a["spend_mean_30d"] == 15.0
    assert a["spend_sum_90d"] == 45.0
    assert a["days_since_last_purchase"] == 5
    assert a["tenure_days"] == 55  # signed up 2025-12-01
    b = features.set_index("customer_id").loc["b"]
    assert b["days_since_last_purchase"] == 0 and b["tenure_days"] == 20
    assert list(features.columns) == FEATURE_TABLE_COLUMNS


def test_windows_end_at_the_as_of_day_inclusive_and_start_n_days_back():
    history = tx([["a", "2026-01-01", 1.0], ["a", "2026-01-07", 2.0], ["a", "2026-01-08", 4.0]])
    row = compute_customer_features(history, CUSTOMERS, date(2026, 1, 8), date(2026, 1, 9), 90, "UTC").iloc[0]
    # 7-day window of Jan 8 is Jan 2..Jan 8: the Jan 1 purchase is out.
    assert row["spend_sum_7d"] == 6.0 and row["txn_count_7d"] == 2


def test_customers_leave_the_table_after_the_active_window():
    history = tx([["a", "2026-01-01", 1.0]])
    features = compute_customer_features(history, CUSTOMERS, date(2026, 1, 1), date(2026, 1, 15), 10, "UTC")
    assert features["as_of_day"].tolist() == [f"2026-01-{d:02d}" for d in range(1, 11)]
    assert features["days_since_last_purchase"].tolist() == list(range(10))
    population = active_population(history, date(2026, 1, 1), date(2026, 1, 15), 10)
    assert population["as_of_day"].tolist() == features["as_of_day"].tolist()


def test_event_time_is_the_last_second_of_the_local_day():
    assert end_of_day_utc(date(2026, 7, 1), "Europe/London") == pd.Timestamp("2026-07-01 22:59:59", tz="UTC")
    history = tx([["a", "2026-01-03", 1.0]])
    features = compute_customer_features(history, CUSTOMERS, date(2026, 1, 3), date(2026, 1, 4), 90, "UTC")
    assert features["event_timestamp"].iloc[0] == pd.Timestamp("2026-01-03 23:59:59", tz="UTC")
    assert str(features["event_timestamp"].dtype) == "datetime64[us, UTC]"


def test_unknown_signup_falls_back_to_the_first_purchase_seen():
    history = tx([["zz", "2026-01-02", 1.0]])
    row = compute_customer_features(history, CUSTOMERS, date(2026, 1, 9), date(2026, 1, 10), 90, "UTC").iloc[0]
    assert row["tenure_days"] == 7


def test_changing_anything_after_an_as_of_day_changes_no_feature_of_that_day():
    rng = np.random.default_rng(0)
    days = pd.date_range("2026-01-01", periods=120, freq="D").strftime("%Y-%m-%d")
    history = tx(
        [[f"c{rng.integers(40)}", days[rng.integers(len(days))], float(rng.gamma(2, 10))] for _ in range(3000)]
    )
    as_of = date(2026, 3, 31)
    later = history["day"] > as_of.isoformat()
    mutated = history.copy()
    mutated.loc[later, "amount"] *= 7
    mutated.loc[later, "customer_id"] = "c0"
    mutated = pd.concat([mutated, tx([["c1", "2026-04-01", 999.0], ["new", "2026-04-02", 5.0]])])
    first = lookback_start(as_of, 90)
    assert first == as_of - timedelta(days=89)
    before = compute_customer_features(history, CUSTOMERS, date(2026, 2, 1), as_of + timedelta(days=1), 90, "UTC")
    after = compute_customer_features(mutated, CUSTOMERS, date(2026, 2, 1), as_of + timedelta(days=1), 90, "UTC")
    pd.testing.assert_frame_equal(before, after)
    assert len(before) > 1000


@pytest.mark.parametrize("window", [7, 30, 90])
def test_counts_agree_with_a_plain_pandas_recount(window):
    rng = np.random.default_rng(window)
    days = pd.date_range("2026-01-01", periods=60, freq="D")
    history = tx([[f"c{rng.integers(10)}", days[rng.integers(60)].strftime("%Y-%m-%d"), 1.0] for _ in range(400)])
    as_of = date(2026, 2, 28)
    features = compute_customer_features(history, CUSTOMERS, as_of, as_of + timedelta(days=1), 90, "UTC")
    day = pd.to_datetime(history["day"])
    in_window = history[(day > pd.Timestamp(as_of) - pd.Timedelta(days=window)) & (day <= pd.Timestamp(as_of))]
    expected = in_window.groupby("customer_id").size()
    got = features.set_index("customer_id")[f"txn_count_{window}d"]
    assert got[got > 0].sort_index().to_dict() == expected.sort_index().to_dict()
