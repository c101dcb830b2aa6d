"""MLflow: experiment tracking through dagster-mlflow, and the model registry with the champion alias."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TypeVar
from urllib.parse import urlsplit

import pandas as pd
from dagster import ConfigurableResource, Field, InitResourceContext, resource
from dagster_mlflow.resources import CONFIG_SCHEMA, MlFlow
from pydantic import Field as PydanticField

CHAMPION = "champion"
ALIAS_MOVE_TAG = "champion_move_"
VALIDATION_SCORES = "validation_scores.parquet"
# What MLflow answers for something absent: a model or version (RESOURCE_DOES_NOT_EXIST), an alias
# (INVALID_PARAMETER_VALUE, from its SQL store and its REST server alike).
ABSENT = {"RESOURCE_DOES_NOT_EXIST", "INVALID_PARAMETER_VALUE"}
T = TypeVar("T")


class RegistryUnavailable(RuntimeError):
    """The registry did not answer (unreachable, or failing): nothing can be said about what it holds."""


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
    active = mlflow.active_run()
    if active is not None and active.data.tags.get("dagster_run_id") != context.run_id:
        # A run of an earlier Dagster run in this process (tests, the demo), left open when it failed, must not
        # swallow this one. Ended before switching stores: it lives in the earlier run's store, and ending it in
        # this one fails ("Run ... not found"), which failed every later run of the process.
        mlflow.end_run()
    ensure_sqlite_folder(config["mlflow_tracking_uri"])
    mlflow.set_tracking_uri(config["mlflow_tracking_uri"])
    if mlflow.get_experiment_by_name(config["experiment_name"]) is None:
        # Otherwise MLflow puts artifacts in ./mlruns of whatever folder the process started in.
        if "://" not in config["artifact_location"] and not config["artifact_location"].startswith("mlflow-artifacts:"):
            Path(config["artifact_location"]).mkdir(parents=True, exist_ok=True)
        mlflow.create_experiment(config["experiment_name"], artifact_location=config["artifact_location"])
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
    # MLflow's own defaults (7 retries, backoff factor 2, 120 s timeout) keep a caller waiting about 4.5
    # minutes on a registry that is down; these fail in seconds.
    http_max_retries: int = PydanticField(default=2, ge=0, description="Retries of a failed HTTP request to MLflow.")
    http_backoff_factor: int = PydanticField(
        default=1, ge=0, description="Wait before retry n > 1: factor x 2^(n - 1) s, plus up to 1 s of jitter."
    )
    http_timeout_seconds: int = PydanticField(
        default=10, ge=1, description="Connect and read timeout of one HTTP request to MLflow."
    )

    def client(self):
        from mlflow import MlflowClient

        ensure_sqlite_folder(self.tracking_uri)
        # MLflow reads its HTTP retry policy only from these variables, at each request (so for the whole process).
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] = str(self.http_max_retries)
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"] = str(self.http_backoff_factor)
        os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] = str(self.http_timeout_seconds)
        return MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)

    def _absent_as_none(self, read: Callable[[], T], what: str) -> T | None:
        """``read()``, or None when the registry answers that ``what`` does not exist. A registry that does not
        answer raises: an outage must not read as "no model"."""
        if (
            self.tracking_uri.startswith("sqlite:///")
            and not Path(self.tracking_uri.removeprefix("sqlite:///")).exists()
        ):
            # An embedded registry never written holds nothing. Asking MLflow would first build its schema
            # (about 2 s of migrations, inside the features stage of a first run) to answer the same.
            return None
        from mlflow.exceptions import MlflowException

        try:
            return read()
        except MlflowException as exc:
            if exc.error_code in ABSENT:
                return None
            message = (
                f"cannot read {what} of model {self.model_name}: the MLflow registry at {self.tracking_uri} is "
                f"unreachable or failing (FTI_MLFLOW_TRACKING_URI; {self.http_max_retries} retries, "
                f"{self.http_timeout_seconds} s timeout): {exc.message}"
            )
            password = urlsplit(self.tracking_uri).password
            # The cause is in the message, without a password the URI may carry (MLflow's own message repeats it).
            raise RegistryUnavailable(message.replace(password, "***") if password else message) from None

    def champion(self):
        """The ModelVersion the champion alias points at, or None before the first promotion.

        Raises RegistryUnavailable when the registry does not answer."""
        return self._absent_as_none(
            lambda: self.client().get_model_version_by_alias(self.model_name, CHAMPION), f"the `{CHAMPION}` alias"
        )

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
        model = self._absent_as_none(lambda: self.client().get_registered_model(self.model_name), "the alias moves")
        tags = model.tags if model is not None else {}
        return sorted((json.loads(v) for k, v in tags.items() if k.startswith(ALIAS_MOVE_TAG)), key=lambda m: m["at"])

    def version(self, version: str):
        return self._absent_as_none(
            lambda: self.client().get_model_version(self.model_name, str(version)), f"version {version}"
        )

    def validation_scores(self, model_version) -> pd.DataFrame:
        """The scores the version gave its validation period: the reference for prediction drift."""
        return pd.read_parquet(self.client().download_artifacts(model_version.tags["mlflow_run_id"], VALIDATION_SCORES))

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
