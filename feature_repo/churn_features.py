"""Feast definitions of the churn use case: the feature contract between the pipelines.

Versioned by name and never edited in place once a model depends on them: a change is a new
feature view / feature service (``..._v3``) declared beside the old ones in the settings
(``feature_services``); ``customer_churn_v1`` is built in (``features.spec.BUILT_IN_SERVICES``).
"""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

from feast import Entity, FeatureService, FeatureView, Field, FileSource, ValueType
from feast.types import Float64, Int64

from fti_assets.features.spec import FeatureSpec, as_config
from fti_assets.settings import load_settings

FEATURE_TABLE = "customer_features"


def feature_objects(lake_root: str, service_specs: dict[str, dict]) -> list:
    """Entity, source, and per service (``spec.as_config`` of the settings' services) its feature view and the
    service itself, reading the feature table under ``lake_root``."""
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
    views, services = [], []
    for name, service in service_specs.items():
        spec = FeatureSpec.model_validate(service["features"])
        integer = set(spec.integer_columns)
        view = FeatureView(
            name=service["view"],
            entities=[customer],
            # One row per active customer and day: a row older than a day describes someone no longer active.
            ttl=timedelta(days=1),
            schema=[Field(name=c, dtype=Int64 if c in integer else Float64) for c in spec.columns],
            source=daily_source,
            online=True,
            owner="team:ml-platform",
            tags={"use_case": "churn"},
        )
        views.append(view)
        services.append(
            FeatureService(
                name=name, features=[view], description=f"Features churn models {name} are trained and served with."
            )
        )
    return [customer, daily_source, *views, *services]


# Module-level objects, so `feast apply` run in this folder finds them too.
# The services come from the settings (FTI_CONFIG, or the embedded default), as in the Dagster project.
_lake = os.environ.get("FTI_LAKE_DIR", str(Path(__file__).parent.parent / "data" / "lake"))
_objects = feature_objects(_lake, as_config(load_settings().all_feature_services))
