"""The one Definitions object: assets, jobs and resources, wired from the project settings.

Embedded defaults need no server; environment variables switch each layer to a real one
(FTI_SOURCE_URL, FTI_PREDICTIONS_URL, FTI_MLFLOW_TRACKING_URI, FTI_ONLINE_STORE + FTI_REDIS_URL,
FTI_TORCH_DEVICE). Not MLFLOW_TRACKING_URI: mlflow.set_tracking_uri() rewrites that variable in-process.
Code never changes for that.
"""

from __future__ import annotations

import os
import warnings

from dagster import (
    AssetSelection,
    BetaWarning,
    Definitions,
    EnvVar,
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

from fti_assets.features.assets import build_feature_assets
from fti_assets.inference.assets import build_inference_assets
from fti_assets.ingestion.assets import build_ingestion_assets
from fti_assets.ingestion.sensors import build_ingestion_sensors
from fti_assets.monitoring.assets import build_monitoring_assets
from fti_assets.monitoring.checks import build_monitoring_checks
from fti_assets.monitoring.sensors import build_monitoring_sensors
from fti_assets.partitions import install_partition_data_versions
from fti_assets.resources.feast import FeastResource
from fti_assets.resources.lake import LakeResource
from fti_assets.resources.mlflow import ModelRegistryResource, mlflow_tracking
from fti_assets.resources.predictions import PredictionStoreResource
from fti_assets.resources.source import SourceResource
from fti_assets.resources.torch_device import TorchDeviceResource
from fti_assets.settings import PROJECT_ROOT, ProjectSettings, load_settings
from fti_assets.training.assets import build_training_assets
from fti_assets.training.rollback import rollback_job

# Stage jobs: what `make demo` runs, and what a person launches from the UI.
JOBS = {
    "ingestion_job": AssetSelection.assets("raw_transactions"),
    "reference_data_job": AssetSelection.assets("raw_customers", "feature_definitions"),
    "features_job": AssetSelection.assets("customer_features", "churn_labels"),
    "training_job": AssetSelection.assets(
        "training_dataset", "sklearn_model", "mlp_model", "candidate_model", "champion_model"
    ),
    "online_features_job": AssetSelection.assets("online_features", "training_serving_skew"),
    "batch_inference_job": AssetSelection.assets("churn_predictions"),
}
# What the sensors request for one new day of data.
AUTOMATION_JOBS = {
    "daily_job": AssetSelection.assets("raw_transactions", "customer_features", "churn_predictions"),
    "labels_job": AssetSelection.assets("churn_labels"),
}


def _env_or(name: str, default: str | None):
    """EnvVar (resolved at run time, never written into run config) when set, else the embedded default."""
    return EnvVar(name) if os.environ.get(name) else default


def build_resources(settings: ProjectSettings) -> dict:
    default_tracking_uri = f"sqlite:///{settings.path('mlflow', 'mlflow.db')}"
    return {
        "source": SourceResource(
            url=_env_or("FTI_SOURCE_URL", settings.source.url),
            path=settings.source.path,
            transactions_table=settings.source.transactions_table,
            columns=settings.source.columns,
            customers=settings.source.customers,
            timezone=settings.source.timezone,
        ),
        "lake": LakeResource(root=str(settings.path("lake"))),
        "feast": FeastResource(
            repo_path=str(PROJECT_ROOT / "feature_repo"),
            lake_root=str(settings.path("lake")),
            registry_path=str(settings.path("feast", "registry.db")),
            online_store=os.environ.get("FTI_ONLINE_STORE", "sqlite"),
            sqlite_path=str(settings.path("feast", "online_store.db")),
            redis_connection_string=_env_or("FTI_REDIS_URL", None),
        ),
        "mlflow": mlflow_tracking.configured(
            {
                "experiment_name": settings.model_name,
                # Old-style resource config: {"env": NAME} is its EnvVar.
                "mlflow_tracking_uri": {"env": "FTI_MLFLOW_TRACKING_URI"}
                if os.environ.get("FTI_MLFLOW_TRACKING_URI")
                else default_tracking_uri,
                "artifact_location": str(settings.path("mlflow", "artifacts")),
            }
        ),
        "registry": ModelRegistryResource(
            tracking_uri=_env_or("FTI_MLFLOW_TRACKING_URI", default_tracking_uri),
            model_name=settings.model_name,
        ),
        "predictions": PredictionStoreResource(
            url=_env_or("FTI_PREDICTIONS_URL", f"sqlite:///{settings.path('predictions.db')}")
        ),
        "torch_device": TorchDeviceResource(prefer=os.environ.get("FTI_TORCH_DEVICE", "auto")),
    }


def build_definitions(settings: ProjectSettings) -> Definitions:
    # Each day of a range run gets its own data version (see partitions.py), in every process that runs steps.
    install_partition_data_versions()
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
        sensors=[*build_ingestion_sensors(settings, jobs), *build_monitoring_sensors(settings, jobs)],
        resources=build_resources(settings),
    )


defs = build_definitions(load_settings())
