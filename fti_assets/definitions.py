"""The one Definitions object: assets, jobs and resources, wired from the project settings.

Embedded defaults need no server; environment variables switch each layer to a real one
(FTI_SOURCE_URL, FTI_PREDICTIONS_URL, FTI_MLFLOW_TRACKING_URI, FTI_ONLINE_STORE + FTI_REDIS_URL,
FTI_FEAST_REGISTRY_URL, FTI_TORCH_DEVICE), and FTI_EXECUTOR the executor of every job (fti_assets/scaleout.py: celery,
k8s). Not MLFLOW_TRACKING_URI: mlflow.set_tracking_uri() rewrites that variable in-process.
Code never changes for that.
"""

from __future__ import annotations

import warnings

from dagster import (
    AssetSelection,
    BetaWarning,
    Definitions,
    PreviewWarning,
    define_asset_job,
    with_source_code_references,
)

from fti_assets.quiet import silence_known_warnings

# Backfill policies, pools and dagster-mlflow are chosen deliberately; their beta notices are noise here.
warnings.filterwarnings("ignore", category=BetaWarning)
warnings.filterwarnings("ignore", category=PreviewWarning)
silence_known_warnings()

from dagster_mlflow import end_mlflow_on_run_finished

from fti_assets.event_log import install_batched_event_log
from fti_assets.features.assets import build_feature_assets
from fti_assets.inference.assets import build_inference_assets
from fti_assets.ingestion.assets import build_ingestion_assets
from fti_assets.ingestion.sensors import build_ingestion_sensors
from fti_assets.monitoring.assets import build_monitoring_assets
from fti_assets.monitoring.checks import build_monitoring_checks
from fti_assets.monitoring.sensors import build_monitoring_sensors
from fti_assets.partitions import install_partition_data_versions
from fti_assets.recovery import build_recovery_sensor
from fti_assets.resources.build import build_resources
from fti_assets.scaleout import executor_from_env
from fti_assets.settings import ProjectSettings, load_settings
from fti_assets.training.assets import build_training_assets
from fti_assets.training.rollback import rollback_job

# Stage jobs: what `make demo` runs, and what a person launches from the UI.
JOBS = {
    "ingestion_job": AssetSelection.assets("raw_transactions"),
    "reference_data_job": AssetSelection.assets("raw_customers", "feature_definitions"),
    "features_job": AssetSelection.assets("customer_features", "churn_labels"),
    "training_job": AssetSelection.assets(
        "training_dataset",
        "sklearn_model",
        "hgb_model",
        "mlp_model",
        "ensemble_model",
        "candidate_model",
        "champion_model",
    ),
    "online_features_job": AssetSelection.assets("online_features", "training_serving_skew"),
    "batch_inference_job": AssetSelection.assets("churn_predictions"),
}
# What the sensors request for one new day of data.
AUTOMATION_JOBS = {
    "daily_job": AssetSelection.assets("raw_transactions", "customer_features", "churn_predictions"),
    "labels_job": AssetSelection.assets("churn_labels"),
}


def build_definitions(settings: ProjectSettings) -> Definitions:
    # Each day of a range run gets its own data version (see partitions.py), in every process that runs steps.
    install_partition_data_versions()
    # A range run's per-day events, written to Dagster's SQLite event log in one transaction each batch.
    install_batched_event_log()
    # Each asset links to the file and line of its definition in the UI.
    assets = with_source_code_references(
        [
            *build_ingestion_assets(settings),
            *build_feature_assets(settings),
            *build_training_assets(settings),
            *build_inference_assets(settings),
            *build_monitoring_assets(settings),
        ]
    )
    jobs = {
        name: define_asset_job(name, selection, hooks={end_mlflow_on_run_finished} if name == "training_job" else None)
        for name, selection in {**JOBS, **AUTOMATION_JOBS}.items()
    }
    return Definitions(
        assets=assets,
        asset_checks=build_monitoring_checks(settings),
        jobs=[*jobs.values(), rollback_job],
        sensors=[
            *build_ingestion_sensors(settings, jobs),
            *build_monitoring_sensors(settings, jobs),
            build_recovery_sensor(settings),
        ],
        resources=build_resources(settings),
        # None (Dagster's default) unless FTI_EXECUTOR names one: celery (workers of scripts/workers.sh) or k8s.
        executor=executor_from_env(),
    )


defs = build_definitions(load_settings())
