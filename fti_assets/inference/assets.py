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
    AssetObservation,
    BackfillPolicy,
    Config,
    DataVersion,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from fti_assets import tags as run_tags
from fti_assets.monitoring.drift_gate import DriftGate, HeldBack
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


class PredictionConfig(Config):
    override_drift_gate: bool = Field(
        default=False, description="Score days the drift gate holds back. Recorded on the run and the materialization."
    )
    override_reason: str = Field(default="", description="Why; required with override_drift_gate.")


def _drift_gate(context, config: PredictionConfig, gate: DriftGate, held_back: HeldBack, days: list[str]) -> None:
    """Raise for days whose features drifted from the champion's reference, unless overridden (and recorded)."""
    _, held = gate.split(days)
    if not held:
        return
    if config.override_drift_gate:
        if not config.override_reason.strip():
            raise Failure("override_drift_gate needs an override_reason: it is recorded with the predictions")
        context.instance.add_run_tags(context.run.run_id, {run_tags.DRIFT_OVERRIDE: config.override_reason[:200]})
        context.log.warning(f"drift gate overridden for {[v.day for v in held]}: {config.override_reason}")
        return
    for verdict in held:
        held_back.hold(verdict)
        context.log_event(
            AssetObservation(
                asset_key=context.asset_key,
                partition=verdict.day,
                metadata={
                    "held_back": True,
                    "reason": verdict.describe(),
                    "champion_version": verdict.model_version,
                    **({"report": MetadataValue.path(verdict.report)} if verdict.report else {}),
                },
            )
        )
    raise Failure(
        description=(
            f"held back by the drift gate: {len(held)} of {len(days)} days drifted from the reference of champion "
            f"v{gate.model_version}. They are released when a new champion passes them; to score them anyway, "
            "run with config override_drift_gate=true and an override_reason."
        ),
        metadata={"held_back_days": MetadataValue.json([v.describe() for v in held])},
    )


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
            "replaces its rows. Days whose features drifted from the champion's reference are held back in "
            "every run (sensor, backfill, UI) until a new champion passes them or an operator overrides."
        ),
    )
    def churn_predictions(
        context: AssetExecutionContext,
        config: PredictionConfig,
        registry: ModelRegistryResource,
        feast: FeastResource,
        predictions: PredictionStoreResource,
    ):
        first, end = run_days(context)
        champion = registry.champion()
        if champion is None:
            raise Failure(f"no `champion` alias on model {registry.model_name}: materialize champion_model first")
        day_keys = context.partition_keys
        _drift_gate(context, config, DriftGate(settings, champion), HeldBack(settings), day_keys)
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
        written = predictions.replace_days(scored, day_keys)
        for day in day_keys:
            HeldBack(settings).release(day)
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
                "drift_override": config.override_reason if config.override_drift_gate else "none",
            },
            data_version=DataVersion(frame_version(content)),
        )

    return [churn_predictions]
