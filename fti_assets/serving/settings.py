"""What the online service needs, built from the project settings (never from the asset graph)."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

from fti_assets.resources.build import build_resources, resolve_env_vars
from fti_assets.resources.feast import FeastResource
from fti_assets.resources.mlflow import ModelRegistryResource


class ServiceSettings(BaseModel):
    """Everything the online service needs; ``from_project`` builds it from the project settings."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    feast: FeastResource = Field(description="Feast store (online store + registry) the features are read from.")
    registry: ModelRegistryResource = Field(description="MLflow registry the champion alias is read from.")
    host: str = Field(default="127.0.0.1", description="Bind address; loopback unless configured.")
    port: int = Field(default=8000, ge=0, le=65535)
    poll_seconds: float = Field(default=5.0, gt=0, description="How often the champion alias is polled.")
    bearer_token: SecretStr | None = Field(
        default_factory=lambda: (
            SecretStr(os.environ["FTI_SERVICE_TOKEN"]) if os.environ.get("FTI_SERVICE_TOKEN") else None
        ),
        description="When set, /predict and /metrics need `Authorization: Bearer <token>` (FTI_SERVICE_TOKEN).",
    )
    cors_origins: list[str] = Field(default_factory=list, description="No CORS middleware unless set.")
    request_log_dir: Path = Field(description="Folder of the request log (one JSON-lines file per UTC day).")
    max_ids: int = Field(default=1000, ge=1, description="Most customer ids in one /predict request (else 413).")
    request_log_writer: str | None = Field(
        default=None, description="Suffix of this process's request log files (set per worker with --workers)."
    )
    model_threads: int | None = Field(
        default=1,
        ge=1,
        description="torch intra-op threads when the model uses torch (None leaves torch's default): small "
        "batches gain nothing from more, and the server's threads need the cores.",
    )
    store_timeout_seconds: float = Field(
        default=1.0,
        gt=0,
        description="Longest wait for an online store that does not answer (a Redis connect or reply) before the "
        "request is answered 503 with the cause.",
    )
    sqlite_lock_wait_seconds: float = Field(
        default=5.0,
        gt=0,
        description="Longest a read waits while a writer holds the SQLite online store (the online_features write "
        "holds it for seconds: 2.9 s measured at 200k entities): such a request is slower, not failed.",
    )
    probe_rows: int = Field(
        default=8,
        ge=1,
        description="Entities read from the online store that a new model version must score (finite, within "
        "[0, 1]) before it serves; zeros only when the store holds none.",
    )

    @property
    def max_body_bytes(self) -> int:
        """Largest /predict body accepted: a body of max_ids ids is well under it."""
        return self.max_ids * 300 + 4096

    @classmethod
    def from_project(cls, project, **overrides: Any) -> ServiceSettings:
        """Settings from the project's settings (``fti_assets.settings.load_settings()``) and the same
        environment variables the Dagster definitions read (FTI_ONLINE_STORE, FTI_REDIS_URL,
        FTI_MLFLOW_TRACKING_URI)."""
        resources = build_resources(project)
        values: dict[str, Any] = {
            "feast": resolve_env_vars(resources["feast"]),
            "registry": resolve_env_vars(resources["registry"]),
            "request_log_dir": project.path("request_log"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)
