"""``OnlineFeatureReader`` gives the service exactly what ``get_online_features`` gives, in SQLite and Redis.

The stores are filled by Feast's own ``materialize`` with the edge values of ``test_online_write`` (shortest
float reprs, -0.0, infinities, varint boundaries, nulls, an entity with no values, a non-ASCII id).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from fti_assets.features.transform import FEATURE_COLUMNS, end_of_day_utc
from fti_assets_tests.test_online_write import (  # noqa: F401 (fixtures)
    DAY,
    SERVICE,
    feature_rows,
    materialize,
    redis_url,
    stores,
    write_lake,
)


@pytest.fixture
def filled(stores):  # noqa: F811 (the imported fixture)
    """A store materialized by Feast, and the rows it holds."""
    store = stores[0]
    frame = feature_rows(DAY, 300, seed=5)
    write_lake(store, frame)
    materialize(store, frame)
    return store, frame


def test_values_known_flags_and_times_equal_get_online_features(filled) -> None:
    from fti_assets.serving.features import OnlineFeatureReader

    store, frame = filled
    service = store.get_feature_service(SERVICE)
    # Another column order than the view's, as a model's signature may have.
    inputs = tuple(reversed(FEATURE_COLUMNS))
    reader = OnlineFeatureReader(store, service, inputs)
    stored_ids = frame["customer_id"].tolist()
    # Unknown ids, an empty one and repeats, between stored ones.
    ids = [*stored_ids, "no-such-customer", "", stored_ids[0], stored_ids[1]]
    rows = reader.read(ids)

    expected = store.get_online_features(features=service, entity_rows=[{"customer_id": i} for i in ids]).to_dict()
    want = np.array([[math.nan if v is None else float(v) for v in expected[name]] for name in inputs]).T
    assert rows.matrix.shape == (len(ids), len(inputs))
    np.testing.assert_array_equal(rows.matrix, want)  # NaN == NaN here; -0.0 and infinities included
    assert np.signbit(rows.matrix[ids.index(stored_ids[1]), inputs.index("spend_sum_7d")]) == np.signbit(
        want[ids.index(stored_ids[1]), inputs.index("spend_sum_7d")]
    )
    any_value = ~np.isnan(want).all(axis=1)
    assert rows.known.tolist() == any_value.tolist()
    assert not rows.known[stored_ids.index(frame["customer_id"].iloc[3])]  # stored, but every value null
    assert rows.known[-2:].all() and not rows.known[len(stored_ids) : len(stored_ids) + 2].any()
    day_end = end_of_day_utc(DAY, "UTC").timestamp()
    assert rows.event_seconds == [day_end if k else None for k in rows.known]


def test_a_service_without_the_models_inputs_is_refused(filled) -> None:
    from fti_assets.serving.features import OnlineFeatureReader

    store, _ = filled
    with pytest.raises(ValueError, match="does not serve.*not_a_feature"):
        OnlineFeatureReader(store, store.get_feature_service(SERVICE), ("spend_sum_7d", "not_a_feature"))


def test_the_read_path_follows_the_online_store(filled) -> None:
    from fti_assets.serving.features import OnlineFeatureReader

    store, _ = filled
    reader = OnlineFeatureReader(store, store.get_feature_service(SERVICE), tuple(FEATURE_COLUMNS))
    assert reader.path == ("sqlite_select" if store.config.online_store.type == "sqlite" else "online_read")
