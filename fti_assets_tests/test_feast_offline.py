"""The DuckDB ASOF join returns what Feast's get_historical_features returns, row for row."""

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from fti_assets.resources.feast_offline import asof_joinable, historical_features
from fti_assets_tests.test_online_write import SERVICE, _store, feature_rows, write_lake

DAYS = [date(2026, 3, 1) + timedelta(days=d) for d in (0, 1, 2, 5)]


@pytest.fixture
def store(tmp_path):
    store = _store(tmp_path, None)
    # Four days with a gap: rows with nulls, an entity missing on some days, a value per day.
    frames = []
    for n, day in enumerate(DAYS):
        frame = feature_rows(day, 60 - 10 * (n % 2), seed=n)
        frames.append(frame)
    write_lake(store, pd.concat(frames, ignore_index=True))
    return store


def entity_rows() -> pd.DataFrame:
    """Exact feature times, times between rows, past the 1-day ttl, before any row, unknown ids."""
    rng = np.random.default_rng(0)
    base = pd.Timestamp("2026-03-01T23:59:59", tz="UTC")
    offsets = [
        timedelta(0),
        timedelta(days=1),
        timedelta(days=2),
        timedelta(days=5),
        timedelta(hours=12),
        timedelta(days=1, hours=23),
        timedelta(days=3, hours=1),  # more than the ttl after day 2: nulls
        timedelta(days=-1),  # before any row
        timedelta(days=2, seconds=-1),  # a second before day 2's rows: day 1's
    ]
    ids = [f"C{i:05d}" for i in range(60)] + ["Zoë-ünïcode", "nobody"]
    rows = [(c, base + o) for c in ids for o in offsets]
    frame = pd.DataFrame(rows, columns=["customer_id", "event_timestamp"])
    frame["label"] = rng.integers(0, 2, len(frame))
    return frame.sample(frac=1.0, random_state=1).reset_index(drop=True)


def test_same_rows_and_values_as_feast(store) -> None:
    service = store.get_feature_service(SERVICE)
    assert asof_joinable(store, service)
    entities = entity_rows()
    ours = historical_features(store, service, entities)
    feast = store.get_historical_features(entity_df=entities, features=service).to_df()
    order = ["customer_id", "event_timestamp"]
    ours = ours.sort_values(order).reset_index(drop=True)
    feast = feast.sort_values(order).reset_index(drop=True)[list(ours.columns)]
    pd.testing.assert_frame_equal(ours, feast)
    # The cases exist: some rows matched exactly, some are null for being stale or unknown.
    assert ours["spend_sum_7d"].notna().sum() > 200
    assert ours["spend_sum_7d"].isna().sum() > 60


def test_keeps_the_entity_order_and_columns(store) -> None:
    service = store.get_feature_service(SERVICE)
    entities = entity_rows()
    ours = historical_features(store, service, entities)
    expected = entities.assign(event_timestamp=entities["event_timestamp"].astype("datetime64[us, UTC]"))
    pd.testing.assert_frame_equal(ours[entities.columns], expected)


def test_a_source_it_cannot_express_goes_to_feast(store, monkeypatch) -> None:
    service = store.get_feature_service(SERVICE)
    view = store.get_feature_view("customer_activity_v1")
    monkeypatch.setattr(view.batch_source, "created_timestamp_column", "created")
    monkeypatch.setattr(store, "get_feature_view", lambda name: view)
    assert not asof_joinable(store, service)
