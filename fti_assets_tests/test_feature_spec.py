"""Features by configuration: the v1 spec is the v1 feature table, whole-history values by hand, no look-ahead."""

from datetime import date

import pandas as pd
import pytest
from pydantic import ValidationError

from fti_assets.features.spec import V1, FeatureSpec, compute_features, history_start, merged
from fti_assets.features.transform import FEATURE_COLUMNS, compute_customer_features, lookback_start

FIRST, END = date(2026, 3, 1), date(2026, 4, 1)


def purchases(rows: list[tuple[str, str, float]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["customer_id", "day", "amount"])


def no_signups(ids) -> pd.DataFrame:
    ids = list(ids)
    return pd.DataFrame(
        {"customer_id": ids, "signup_date": pd.Series([pd.NaT] * len(ids), dtype="datetime64[us, UTC]")}
    )


def test_the_v1_spec_gives_the_v1_feature_table_value_for_value():
    from fti_assets.ingestion.standardize import standardize_customers, standardize_transactions
    from fti_assets.settings import load_settings
    from fti_assets.simulate import simulate

    settings = load_settings()
    source = simulate(n_customers=300, days=150, seed=4)
    now = pd.Timestamp.now(tz="UTC")
    transactions = standardize_transactions(source.transactions, settings.source.columns, "UTC", now).accepted
    customers = standardize_customers(source.customers, settings.source.customers, "UTC")
    expected = compute_customer_features(transactions, customers, FIRST, END, 30, "UTC")
    assert V1.columns == FEATURE_COLUMNS and len(expected) > 1000
    ours = compute_features(transactions, customers, FIRST, END, 30, "UTC", V1)
    pd.testing.assert_frame_equal(ours, expected.drop(columns="event_timestamp"))


def test_whole_history_aggregates_gaps_and_trend_by_hand():
    log = purchases(
        [
            ("a", "2026-01-01", 10.0),
            ("a", "2026-01-01", 30.0),  # two transactions, one purchase day
            ("a", "2026-01-21", 5.0),
            ("a", "2026-03-10", 20.0),
            ("a", "2026-03-20", 1.0),  # after the as-of day below: never in its values
            ("b", "2026-03-09", 7.0),
        ]
    )
    spec = FeatureSpec(windows=[30, "all"], trends=[(30, "all")])
    features = compute_features(log, no_signups("ab"), date(2026, 3, 15), date(2026, 3, 16), 60, "UTC", spec)
    a = features.set_index("customer_id").loc["a"]
    assert (a["spend_sum_all"], a["txn_count_all"], a["purchase_days_all"]) == (65.0, 4, 3)
    assert (a["spend_mean_all"], a["spend_max_all"]) == (16.25, 30.0)
    assert (a["spend_sum_30d"], a["purchase_days_30d"], a["spend_max_30d"]) == (20.0, 1, 20.0)
    assert a["days_since_last_purchase"] == 5 and a["days_since_first_purchase"] == 73
    assert a["tenure_days"] == 73  # no signup date: the first purchase bounds it
    assert a["purchase_gap_mean_days"] == pytest.approx(68 / 2) and a["purchase_gap_last_days"] == 48
    # 1 purchase day in 30 days against 3 in the 74 days since the first.
    assert a["purchase_trend_30d_all"] == pytest.approx(round((1 / 30) / (3 / 74), 4))
    assert a["expected_purchases_missed"] == pytest.approx(round(3 / 74 * 5, 4))
    b = features.set_index("customer_id").loc["b"]
    # One purchase day: no gap yet; its whole history is 7 days long.
    assert (b["purchase_gap_mean_days"], b["purchase_gap_last_days"], b["days_since_first_purchase"]) == (0.0, 0, 6)
    assert b["purchase_trend_30d_all"] == pytest.approx(round((1 / 30) / (1 / 7), 4))
    assert list(features.columns) == ["customer_id", "as_of_day", *spec.columns]
    assert set(spec.integer_columns) < set(spec.columns)
    assert features[spec.integer_columns].dtypes.eq("int64").all()


def test_a_day_never_sees_later_transactions_and_inactive_customers_drop_out():
    log = purchases([("a", "2026-01-05", 10.0), ("a", "2026-02-10", 4.0), ("c", "2026-01-02", 3.0)])
    spec = FeatureSpec()
    first, end = date(2026, 2, 1), date(2026, 2, 15)
    features = compute_features(log, no_signups("ac"), first, end, 30, "UTC", spec)
    with_later = pd.concat([log, purchases([("a", "2026-02-12", 99.0)])])
    later = compute_features(with_later, no_signups("ac"), first, date(2026, 2, 12), 30, "UTC", spec)
    before = features[features["as_of_day"] < "2026-02-12"].reset_index(drop=True)
    pd.testing.assert_frame_equal(later, before)
    # c bought on Jan 2 only: in the 30-day population until Jan 31, so on no day from Feb 1.
    assert set(features["customer_id"]) == {"a"}
    assert features.set_index("as_of_day").loc["2026-02-10", "purchase_days_all"] == 2


def test_whole_history_specs_read_from_the_first_day_of_data():
    assert history_start(FIRST, 30, V1, date(2025, 1, 1)) == lookback_start(FIRST, 30)  # the 90-day window
    assert history_start(FIRST, 30, FeatureSpec(), date(2025, 1, 1)) == date(2025, 1, 1)
    # Only a week's window: the 30-day population decides.
    short = FeatureSpec(windows=[7], gaps=False, trends=[])
    assert history_start(FIRST, 30, short, date(2025, 1, 1)) == date(2026, 1, 31)


@pytest.mark.parametrize(
    "bad",
    [{"windows": [0]}, {"windows": [7, 7]}, {"trends": [(30, 7)]}, {"aggregates": ["median"]}, {"window": [7]}],
)
def test_a_bad_spec_is_refused_with_the_reason(bad):
    with pytest.raises(ValidationError):
        FeatureSpec(**bad)


def test_one_table_holds_every_views_columns():
    v2 = FeatureSpec()
    table = merged([V1, v2, FeatureSpec(windows=[14], aggregates=["max"], gaps=False, trends=[(7, 14)])])
    assert set(V1.columns) | set(v2.columns) | {"spend_max_14d", "purchase_trend_7d_14d"} <= set(table.columns)
    assert merged([V1]) == V1
    assert table.columns[:3] == ["spend_sum_7d", "spend_sum_30d", "spend_sum_90d"]
