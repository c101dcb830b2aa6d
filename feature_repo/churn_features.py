"""Feast definitions of the churn use case: the feature contract between the pipelines.

Versioned by name and never edited in place once a model depends on them: a change is a new
feature view / feature service (``..._v2``) declared beside the old one.
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

FEATURE_TABLE = "customer_features"


def feature_objects(lake_root: str) -> list:
    """Entity, source, feature views and feature services, reading the feature table under ``lake_root``."""
    customer = Entity(
        name="customer",
        join_keys=["customer_id"],
        value_type=ValueType.STRING,
        description="A customer of the retailer, by the source system's id.",
    )
    daily_source = FileSource(
        name="customer_features_daily",
        path=f"{Path(lake_root).resolve()}/{FEATURE_TABLE}/*.parquet",
        timestamp_field="event_timestamp",
        description="One parquet file per day: rolling aggregates as of the end of that day.",
    )
    activity_v1 = FeatureView(
        name="customer_activity_v1",
        entities=[customer],
        # One row per active customer and day: a row older than a day describes someone no longer active.
        ttl=timedelta(days=1),
        schema=[
            *(Field(name=f"spend_sum_{w}d", dtype=Float64) for w in (7, 30, 90)),
            *(Field(name=f"spend_mean_{w}d", dtype=Float64) for w in (7, 30, 90)),
            *(Field(name=f"txn_count_{w}d", dtype=Int64) for w in (7, 30, 90)),
            Field(name="days_since_last_purchase", dtype=Int64),
            Field(name="tenure_days", dtype=Int64),
        ],
        source=daily_source,
        online=True,
        owner="team:ml-platform",
        tags={"use_case": "churn"},
    )
    churn_v1 = FeatureService(
        name="customer_churn_v1",
        features=[activity_v1],
        description="Features the churn model v1 is trained and served with.",
    )
    return [customer, daily_source, activity_v1, churn_v1]


# Module-level objects, so `feast apply` run in this folder finds them too.
_objects = feature_objects(os.environ.get("FTI_LAKE_DIR", str(Path(__file__).parent.parent / "data" / "lake")))
customer, customer_features_daily, customer_activity_v1, customer_churn_v1 = _objects
