"""Churn labels and the time-based split."""

from datetime import date

import pandas as pd
import pytest

from fti_assets.training.dataset import assign_split, dataset_rows, split_by_time
from fti_assets.training.labels import compute_churn_labels, label_days


def tx(rows):
    return pd.DataFrame(rows, columns=["customer_id", "day", "amount"])


def test_churned_means_no_purchase_within_the_horizon_after_the_day():
    history = tx(
        [
            ["stays", "2026-01-01", 1.0],
            ["stays", "2026-01-11", 1.0],  # 10 days later: inside a 10-day horizon
            ["leaves", "2026-01-01", 1.0],
            ["leaves", "2026-01-12", 1.0],  # 11 days later: outside it
        ]
    )
    labels = compute_churn_labels(history, date(2026, 1, 1), date(2026, 1, 2), 30, 10, "UTC")
    assert labels.set_index("customer_id")["churned"].to_dict() == {"leaves": 1, "stays": 0}
    assert labels["event_timestamp"].iloc[0] == pd.Timestamp("2026-01-01 23:59:59", tz="UTC")


def test_a_purchase_later_the_same_day_does_not_count_as_returning():
    history = tx([["a", "2026-01-01", 1.0], ["a", "2026-01-01", 2.0]])
    labels = compute_churn_labels(history, date(2026, 1, 1), date(2026, 1, 2), 30, 5, "UTC")
    assert labels["churned"].tolist() == [1]


def test_days_whose_horizon_is_not_complete_get_no_label():
    assert label_days(date(2026, 1, 1), date(2026, 2, 1), 10, date(2026, 1, 20)) == (
        date(2026, 1, 1),
        date(2026, 1, 11),
    )
    assert label_days(date(2026, 1, 1), date(2026, 2, 1), 10, None) == (date(2026, 1, 1), date(2026, 1, 1))
    assert label_days(date(2026, 1, 15), date(2026, 2, 1), 10, date(2026, 1, 20))[1] == date(2026, 1, 15)


def test_split_takes_test_then_validation_from_the_end():
    days = [f"2026-01-{d:02d}" for d in range(1, 31)]
    periods = split_by_time(days, validation_days=5, test_days=3, horizon_days=0)
    assert periods.test == ("2026-01-28", "2026-01-30")
    assert periods.validation == ("2026-01-23", "2026-01-27")
    assert periods.train == ("2026-01-01", "2026-01-22")
    split = assign_split(pd.Series(days), periods)
    assert split.value_counts().to_dict() == {"train": 22, "validation": 5, "test": 3}


def test_split_purges_train_days_whose_labels_reach_validation():
    days = [f"2026-01-{d:02d}" for d in range(1, 31)]
    periods = split_by_time(days, validation_days=5, test_days=3, horizon_days=4)
    # Validation starts on the 23rd: a label of the 18th looks at the 19th..22nd, one of the 19th reaches the 23rd.
    assert periods.train == ("2026-01-01", "2026-01-18")
    assert periods.purged == ("2026-01-19", "2026-01-22")
    assert periods.validation == ("2026-01-23", "2026-01-27")
    assert periods.as_metadata()["purged"] == "2026-01-19 .. 2026-01-22"
    split = assign_split(pd.Series(days), periods)
    assert split.value_counts().to_dict() == {"train": 18, "purged": 4, "validation": 5, "test": 3}
    labels = pd.DataFrame({"customer_id": "c1", "as_of_day": days})
    kept = labels[dataset_rows(labels, periods, stride_days=1)]
    assert kept["as_of_day"].tolist() == days[:18] + days[22:]
    # Without a horizon nothing is purged.
    assert split_by_time(days, 5, 3, horizon_days=0).purged is None


def test_split_refuses_too_few_days_with_a_clear_message():
    with pytest.raises(ValueError, match="cannot hold 5 validation"):
        split_by_time(["2026-01-01", "2026-01-02"], 5, 5, horizon_days=0)
    days = [f"2026-01-{d:02d}" for d in range(1, 11)]
    with pytest.raises(ValueError, match="no training day is left.*30-day label horizon"):
        split_by_time(days, 3, 3, horizon_days=30)


def test_stride_keeps_each_customer_every_n_days_and_every_day_a_share():
    from fti_assets.training.dataset import stride_sample

    days = [f"2026-02-{d:02d}" for d in range(1, 29)]
    frame = pd.DataFrame([(f"C{c}", d) for c in range(700) for d in days], columns=["customer_id", "as_of_day"]).sample(
        frac=1.0, random_state=0
    )
    kept = frame[stride_sample(frame, 7)]
    assert kept.groupby("customer_id").size().eq(4).all()
    gaps = kept.assign(t=pd.to_datetime(kept["as_of_day"])).sort_values("t").groupby("customer_id")["t"].diff()
    assert gaps.dropna().eq(pd.Timedelta(days=7)).all()
    per_day = kept.groupby("as_of_day").size()
    assert len(per_day) == 28 and per_day.between(60, 140).all()
    # A row's fate is its own: the same rows are kept from any subset, in any order.
    part = frame.iloc[:5000]
    assert stride_sample(part, 7).equals(stride_sample(frame, 7).loc[part.index])
    assert stride_sample(frame, 1).all()


def test_dataset_written_in_parts_has_the_version_of_the_whole(tmp_path):
    from fti_assets.training.dataset import VersionedParquetWriter
    from fti_assets.versioning import frame_version

    frame = pd.DataFrame({"customer_id": pd.array([f"C{i}" for i in range(100)], dtype="string"), "x": range(100)})
    writer = VersionedParquetWriter(tmp_path)
    for start in range(0, 100, 30):
        writer.write(frame.iloc[start : start + 30])
    version, path = writer.publish()
    assert version == frame_version(frame) and path.name == f"{version}.parquet"
    pd.testing.assert_frame_equal(pd.read_parquet(path), frame)
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    again = VersionedParquetWriter(tmp_path)
    again.write(frame)
    assert again.publish() == (version, path) and len(list(tmp_path.iterdir())) == 1
    failed = VersionedParquetWriter(tmp_path)
    failed.write(frame.head(3))
    failed.discard()
    assert len(list(tmp_path.iterdir())) == 1
