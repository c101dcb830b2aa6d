"""Batch inference: the champion model scores each day's active customers, features from Feast.

Reaches models only through the registry alias and features only through the feature service the
model version was trained with.
"""

from datetime import date

import duckdb
import numpy as np
import pandas as pd
from dagster import (
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from fti_assets.partitions import daily_partitions, run_days
from fti_assets.resources.feast import FeastResource
from fti_assets.resources.mlflow import ModelRegistryResource
from fti_assets.resources.predictions import PredictionStoreResource
from fti_assets.settings import ProjectSettings
from fti_assets.versioning import frame_version


def entities_of_days(feast: FeastResource, feature_service: str, first: date, end: date) -> pd.DataFrame:
    """(customer_id, event_timestamp) of every feature row of the days [first, end), read from the offline
    source the feature service's views are built on."""
    store = feast.store()
    service = store.get_feature_service(feature_service)
    view = store.get_feature_view(service.feature_view_projections[0].name)
    return duckdb.execute(
        """
        SELECT DISTINCT CAST(customer_id AS VARCHAR) AS customer_id, event_timestamp, as_of_day
        FROM read_parquet($path) WHERE as_of_day >= $first AND as_of_day < $end
        ORDER BY as_of_day, customer_id
        """,
        {"path": view.batch_source.path, "first": first.isoformat(), "end": end.isoformat()},
    ).df()


def build_inference_assets(settings: ProjectSettings) -> list:
    @asset(
        name="churn_predictions",
        group_name="inference",
        partitions_def=daily_partitions(settings),
        backfill_policy=BackfillPolicy.single_run(),
        deps=[AssetDep("customer_features"), "champion_model"],
        kinds={"mlflow", "feast", "sql"},
        owners=["team:ml"],
        code_version="1",
        description=(
            "Churn scores for the customers active on each day, from the MLflow `champion` model and the "
            "feature service it was trained with. Written to the predictions table; re-running a day "
            "replaces its rows."
        ),
    )
    def churn_predictions(
        context: AssetExecutionContext,
        registry: ModelRegistryResource,
        feast: FeastResource,
        predictions: PredictionStoreResource,
    ):
        first, end = run_days(context)
        champion = registry.champion()
        if champion is None:
            raise Failure(f"no `champion` alias on model {registry.model_name}: materialize champion_model first")
        feature_service = champion.tags["feature_service"]
        served_schema = feast.feature_schema_hash(feature_service)
        if served_schema != champion.tags["feature_schema_hash"]:
            raise Failure(
                f"model version {champion.version} was trained on feature schema "
                f"{champion.tags['feature_schema_hash']}, but {feature_service} now has {served_schema}"
            )
        entities = entities_of_days(feast, feature_service, first, end)
        store = feast.store()
        features = store.get_historical_features(
            entity_df=entities, features=store.get_feature_service(feature_service)
        ).to_df()
        features = features.sort_values(["as_of_day", "customer_id"]).reset_index(drop=True)
        model = registry.load_model(champion.version)
        threshold = float(champion.tags.get("threshold", 0.5))
        # The model's signature names its inputs; all are float64 (Feast returns ints with gaps as floats).
        inputs = features[model.metadata.get_input_schema().input_names()].astype("float64")
        scores = np.asarray(model.predict(inputs), dtype="float64") if len(inputs) else np.array([])
        scored = pd.DataFrame(
            {
                "customer_id": features["customer_id"].astype(str),
                "as_of_day": features["as_of_day"].astype(str),
                "event_timestamp": pd.to_datetime(features["event_timestamp"], utc=True),
                "score": scores.round(6),
                "predicted_label": (scores >= threshold).astype(int),
                "model_version": str(champion.version),
                "feature_service": feature_service,
                "run_id": context.run.run_id,
            }
        )
        day_keys = context.partition_keys
        written = predictions.replace_days(scored, day_keys)
        context.log.info(f"{written} predictions for {len(day_keys)} days with model v{champion.version}")
        # The version is the content, not the run: scoring a day again gives the same version.
        content = scored.drop(columns=["run_id"])
        return MaterializeResult(
            metadata={
                "dagster/row_count": written,
                "days": f"{first} .. {end}",
                "model_version": str(champion.version),
                "feature_service": feature_service,
                "mean_score": float(scores.mean()) if len(scores) else 0.0,
                "predicted_churn_rate": float(scored["predicted_label"].mean()) if len(scored) else 0.0,
                "table": MetadataValue.text(f"{predictions.table} at {predictions.safe_url}"),
            },
            data_version=DataVersion(frame_version(content)),
        )

    return [churn_predictions]
