"""MLflow: experiment tracking through dagster-mlflow, and the model registry with the champion alias."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
from dagster import ConfigurableResource, Field, InitResourceContext, resource
from dagster_mlflow.resources import CONFIG_SCHEMA, MlFlow
from pydantic import Field as PydanticField

CHAMPION = "champion"
ALIAS_MOVE_TAG = "champion_move_"
VALIDATION_SCORES = "validation_scores.parquet"


@resource(
    config_schema={
        **CONFIG_SCHEMA,
        "artifact_location": Field(str, description="Where the experiment keeps its artifacts."),
    },
    description="dagster-mlflow's tracking run, with the experiment's artifacts kept under the data folder.",
)
def mlflow_tracking(context: InitResourceContext) -> MlFlow:
    import mlflow

    config = context.resource_config
    ensure_sqlite_folder(config["mlflow_tracking_uri"])
    mlflow.set_tracking_uri(config["mlflow_tracking_uri"])
    if mlflow.get_experiment_by_name(config["experiment_name"]) is None:
        # Otherwise MLflow puts artifacts in ./mlruns of whatever folder the process started in.
        Path(config["artifact_location"]).mkdir(parents=True, exist_ok=True)
        mlflow.create_experiment(config["experiment_name"], artifact_location=config["artifact_location"])
    active = mlflow.active_run()
    if active is not None and active.data.tags.get("dagster_run_id") != context.run_id:
        # A run of an earlier Dagster run in this process (tests, the demo) must not swallow this one.
        mlflow.end_run()
    return MlFlow(context)


def ensure_sqlite_folder(uri: str) -> None:
    """MLflow creates a SQLite database but not the folder it lives in."""
    if uri.startswith("sqlite:///"):
        Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)


class ModelRegistryResource(ConfigurableResource):
    """The MLflow model registry: the only way inference reaches a model."""

    tracking_uri: str = PydanticField(description="MLflow tracking/registry URI (FTI_MLFLOW_TRACKING_URI).")
    model_name: str = "customer_churn"
    ui_url: str = PydanticField(default="http://127.0.0.1:5000", description="MLflow UI (`make mlflow-ui`).")

    def client(self):
        from mlflow import MlflowClient

        ensure_sqlite_folder(self.tracking_uri)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def champion(self):
        """The ModelVersion the champion alias points at, or None before the first promotion."""
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version_by_alias(self.model_name, CHAMPION)
        except MlflowException:
            return None

    def move_champion(self, version: str, action: str, reason: str) -> dict:
        """Point the alias at ``version`` and record the move (when, from, to, why) in the registry itself."""
        client = self.client()
        current = self.champion()
        move = {
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "from": str(current.version) if current is not None else None,
            "to": str(version),
            "action": action,
            "reason": reason,
        }
        client.set_registered_model_alias(self.model_name, CHAMPION, str(version))
        client.set_model_version_tag(self.model_name, str(version), f"{action}_reason", reason)
        key = f"{ALIAS_MOVE_TAG}{move['at'].replace('+', '_')}_v{move['to']}"
        client.set_registered_model_tag(self.model_name, key, json.dumps(move))
        return move

    def alias_moves(self) -> list[dict]:
        """Every recorded move of the champion alias, oldest first."""
        from mlflow.exceptions import MlflowException

        try:
            tags = self.client().get_registered_model(self.model_name).tags
        except MlflowException:
            return []
        return sorted((json.loads(v) for k, v in tags.items() if k.startswith(ALIAS_MOVE_TAG)), key=lambda m: m["at"])

    def version(self, version: str):
        from mlflow.exceptions import MlflowException

        try:
            return self.client().get_model_version(self.model_name, str(version))
        except MlflowException:
            return None

    def validation_scores(self, model_version) -> pd.DataFrame:
        """The scores the version gave its validation period: the reference for prediction drift."""
        import mlflow.artifacts

        path = mlflow.artifacts.download_artifacts(
            run_id=model_version.tags["mlflow_run_id"],
            artifact_path=VALIDATION_SCORES,
            tracking_uri=self.tracking_uri,
        )
        return pd.read_parquet(path)

    def load_model(self, version: str):
        """The pyfunc model of a version (the champion's, for inference), from this registry's URI,
        not the process-wide one (which a step that never used the tracking resource leaves unset)."""
        import mlflow.artifacts
        import mlflow.pyfunc

        uri = self.client().get_model_version_download_uri(self.model_name, str(version))
        path = mlflow.artifacts.download_artifacts(artifact_uri=uri, tracking_uri=self.tracking_uri)
        return mlflow.pyfunc.load_model(path)

    def version_url(self, version: str) -> str:
        return f"{self.ui_url}/#/models/{self.model_name}/versions/{version}"

    def run_url(self, run_id: str) -> str:
        experiment_id = self.client().get_run(run_id).info.experiment_id
        return f"{self.ui_url}/#/experiments/{experiment_id}/runs/{run_id}"
