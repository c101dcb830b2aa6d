"""The project's resources, built from its settings: for the Definitions, and for processes outside them.

Embedded defaults need no server; environment variables switch each layer to a real one
(FTI_SOURCE_URL, FTI_PREDICTIONS_URL, FTI_MLFLOW_TRACKING_URI [+ FTI_MLFLOW_ARTIFACT_LOCATION, FTI_MLFLOW_UI_URL],
FTI_ONLINE_STORE + FTI_REDIS_URL, FTI_FEAST_REGISTRY_URL, FTI_TORCH_DEVICE). Not MLFLOW_TRACKING_URI:
mlflow.set_tracking_uri() rewrites that variable in-process.

Separate from ``fti_assets.definitions`` so that the online service and the rollback command get the same
resources without importing the asset graph.
"""

from __future__ import annotations

import os

from dagster import EnvVar

from fti_assets.features.spec import as_config
from fti_assets.resources.feast import FeastResource
from fti_assets.resources.lake import LakeResource
from fti_assets.resources.mlflow import ModelRegistryResource, mlflow_tracking
from fti_assets.resources.predictions import PredictionStoreResource
from fti_assets.resources.source import SourceResource
from fti_assets.resources.torch_device import TorchDeviceResource
from fti_assets.settings import PROJECT_ROOT, ProjectSettings


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
            registry_url=_env_or("FTI_FEAST_REGISTRY_URL", None),
            online_store=os.environ.get("FTI_ONLINE_STORE", "sqlite"),
            sqlite_path=str(settings.path("feast", "online_store.db")),
            redis_connection_string=_env_or("FTI_REDIS_URL", None),
            feature_services=as_config(settings.all_feature_services),
        ),
        "mlflow": mlflow_tracking.configured(
            {
                "experiment_name": settings.model_name,
                # Old-style resource config: {"env": NAME} is its EnvVar.
                "mlflow_tracking_uri": {"env": "FTI_MLFLOW_TRACKING_URI"}
                if os.environ.get("FTI_MLFLOW_TRACKING_URI")
                else default_tracking_uri,
                # Where a new experiment keeps its artifacts: a folder, or the tracking server's own store
                # (mlflow-artifacts:/fti: uploads and downloads go through the server).
                "artifact_location": os.environ.get("FTI_MLFLOW_ARTIFACT_LOCATION")
                or str(settings.path("mlflow", "artifacts")),
            }
        ),
        "registry": ModelRegistryResource(
            tracking_uri=_env_or("FTI_MLFLOW_TRACKING_URI", default_tracking_uri),
            model_name=settings.model_name,
            **({"ui_url": os.environ["FTI_MLFLOW_UI_URL"]} if os.environ.get("FTI_MLFLOW_UI_URL") else {}),
        ),
        "predictions": PredictionStoreResource(
            url=_env_or("FTI_PREDICTIONS_URL", f"sqlite:///{settings.path('predictions.db')}")
        ),
        "torch_device": TorchDeviceResource(prefer=os.environ.get("FTI_TORCH_DEVICE", "auto")),
    }


def resolve_env_vars(resource):
    """A copy of a resource with every ``EnvVar`` field replaced by the variable's value.

    ``build_resources`` passes URLs as ``EnvVar`` (resolved by Dagster at run time); outside a Dagster run
    the field holds the variable's *name*, so a process that uses the resource directly resolves them
    itself, from ``os.environ``.
    """
    values, changed = {}, False
    for name in type(resource).model_fields:
        value = getattr(resource, name)
        if isinstance(value, EnvVar):
            resolved = os.environ.get(value.env_var_name)
            if resolved is None:
                raise ValueError(
                    f"{type(resource).__name__}.{name}: environment variable {value.env_var_name} is unset"
                )
            value, changed = resolved, True
        values[name] = value
    return type(resource)(**values) if changed else resource
