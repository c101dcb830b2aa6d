"""Monitoring assets: training-serving skew of the online store and of what the service was asked."""

import numpy as np
import pandas as pd
from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, MaterializeResult, MetadataValue, asset

from fti_assets.monitoring.drift import evaluate_drift
from fti_assets.monitoring.drift_gate import DriftGate, drift_settings
from fti_assets.monitoring.skew import value_mismatches
from fti_assets.resources.feast import FeastResource
from fti_assets.resources.lake import LakeResource
from fti_assets.resources.mlflow import ModelRegistryResource
from fti_assets.settings import ProjectSettings

SAMPLE_ENTITIES = 500
MIN_LOGGED_REQUESTS = 200


def build_monitoring_assets(settings: ProjectSettings) -> list:
    @asset(
        name="training_serving_skew",
        group_name="monitoring",
        deps=["online_features"],
        kinds={"feast", "evidently"},
        owners=["team:ml-platform"],
        code_version="1",
        check_specs=[
            AssetCheckSpec(
                "online_matches_offline",
                asset="training_serving_skew",
                blocking=True,
                description="Online feature values equal the offline point-in-time values as of the same time.",
            ),
            AssetCheckSpec(
                "served_features_match_training",
                asset="training_serving_skew",
                description="The features the online service was asked about do not drift from training.",
            ),
        ],
        description=(
            f"For a sample of up to {SAMPLE_ENTITIES} customers of the latest feature day, the Feast online "
            "values against the offline point-in-time values as of the same time (mismatch rate), and the "
            "features in the online service's request log against the champion's training reference "
            "(Evidently, the pinned drift method)."
        ),
    )
    def training_serving_skew(
        context: AssetExecutionContext, feast: FeastResource, lake: LakeResource, registry: ModelRegistryResource
    ):
        champion = registry.champion()
        service_name = champion.tags["feature_service"] if champion is not None else settings.feature_service
        features = feast.feature_columns(service_name)
        day = lake.written_days("customer_features")[-1]
        latest = pd.read_parquet(lake.day_path("customer_features", day), columns=["customer_id", "event_timestamp"])
        sample = latest.sample(min(SAMPLE_ENTITIES, len(latest)), random_state=0)
        store = feast.store()
        service = store.get_feature_service(service_name)
        offline = store.get_historical_features(entity_df=sample, features=service).to_df()
        online = store.get_online_features(
            features=service, entity_rows=[{"customer_id": c} for c in sample["customer_id"]]
        ).to_df()
        mismatches = value_mismatches(offline, online, "customer_id", features)
        rate = len(mismatches) / max(1, len(sample) * len(features))

        from fti_assets.serving.request_log import read_request_log

        served = read_request_log(settings.path("request_log"))
        served = (
            served[served.get("known", pd.Series(dtype=bool)).fillna(False).astype(bool)] if len(served) else served
        )
        reference = DriftGate(settings, champion).reference() if champion is not None else None
        drifted: list[str] = []
        request_drift: dict = {"reason": f"fewer than {MIN_LOGGED_REQUESTS} logged predictions"}
        if reference is not None and len(served) >= MIN_LOGGED_REQUESTS:
            result = evaluate_drift(reference.features, served, features, drift_settings(settings))
            drifted = [c.column for c in result.columns if c.drifted]
            request_drift = result.as_metadata()
        context.log.info(f"{len(mismatches)} online/offline mismatches in {len(sample)} customers; drifted {drifted}")
        return MaterializeResult(
            metadata={
                "as_of_day": day.isoformat(),
                "entities_compared": len(sample),
                "mismatch_rate": float(rate),
                "mismatches": MetadataValue.md(
                    mismatches.head(20).to_markdown(index=False) if len(mismatches) else "none"
                ),
                "logged_predictions": len(served),
                "drifted_served_features": MetadataValue.json(drifted),
            },
            check_results=[
                AssetCheckResult(
                    check_name="online_matches_offline",
                    passed=bool(np.isclose(rate, 0.0)),
                    metadata={"mismatch_rate": float(rate), "mismatched_values": len(mismatches)},
                ),
                AssetCheckResult(
                    check_name="served_features_match_training",
                    passed=not drifted,
                    metadata={"drift": MetadataValue.json(request_drift)},
                ),
            ],
        )

    return [training_serving_skew]
