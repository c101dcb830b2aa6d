"""The feature store (Feast): the only place where the feature and the training/inference pipelines meet."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Literal

from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from fti_assets.features.spec import BUILT_IN_SERVICES, DEFAULT_SERVICES, as_config
from fti_assets.quiet import silence_known_warnings
from fti_assets.versioning import text_version


def repo_version(repo_path: str | Path) -> str:
    """Hash of the Feast definition files: the code version of what `feast apply` registers."""
    return text_version(p.read_bytes() for p in sorted(Path(repo_path).glob("*.py")))


class FeastResource(ConfigurableResource):
    """A Feast store built from settings: duckdb offline store, SQLite (default) or Redis online store, a registry
    file (default) or a SQL registry (PostgreSQL)."""

    repo_path: str = Field(description="Folder with the Feast definitions (feature_repo/).")
    lake_root: str = Field(description="Lake folder the offline feature table lives in.")
    registry_path: str = Field(description="Feast registry file (unused when registry_url is set).")
    registry_url: str | None = Field(
        default=None,
        description="SQLAlchemy URL of a SQL registry (FTI_FEAST_REGISTRY_URL), e.g. postgresql+psycopg2://...",
    )
    online_store: Literal["sqlite", "redis"] = "sqlite"
    sqlite_path: str | None = Field(default=None, description="Online store file when online_store=sqlite.")
    redis_connection_string: str | None = Field(default=None, description="host:port[,password=...] for Redis.")
    project: str = "fti"
    feature_services: dict[str, dict] = Field(
        default_factory=lambda: as_config({**BUILT_IN_SERVICES, **DEFAULT_SERVICES}),
        description="Feature services by name, each its view and features (spec.as_config of the settings').",
    )

    _store: object | None = PrivateAttr(default=None)

    def registry_location(self) -> str:
        """Where the registry is, for people: the file, or the SQL registry's URL without its password."""
        if not self.registry_url:
            return self.registry_path
        from sqlalchemy.engine import make_url

        return make_url(self.registry_url).render_as_string(hide_password=True)

    def definitions_version(self) -> str:
        return text_version([repo_version(self.repo_path), json.dumps(self.feature_services, sort_keys=True)])

    def definitions(self) -> list:
        """The Feast objects declared in the repo, pointed at this lake."""
        objects = []
        for path in sorted(Path(self.repo_path).glob("*.py")):
            spec = importlib.util.spec_from_file_location(f"fti_feature_repo_{path.stem}", path)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            if hasattr(module, "feature_objects"):
                objects.extend(module.feature_objects(self.lake_root, self.feature_services))
        silence_known_warnings()  # the repo imports Feast, which resets the DeprecationWarning filter
        return objects

    def store(self):
        if self._store is None:
            from feast import FeatureStore
            from feast.repo_config import RepoConfig

            silence_known_warnings()  # after Feast's import, which resets the DeprecationWarning filter

            if self.online_store == "redis":
                if not self.redis_connection_string:
                    raise ValueError("online_store=redis needs redis_connection_string (FTI_REDIS_URL)")
                online = {"type": "redis", "connection_string": self.redis_connection_string}
            else:
                online = {"type": "sqlite", "path": self.sqlite_path}
                Path(self.sqlite_path).parent.mkdir(parents=True, exist_ok=True)
            if self.registry_url:
                # Every process that applies or reads definitions shares it; a process re-reads it after a minute.
                registry = {
                    "registry_type": "sql",
                    "path": self.registry_url,
                    "cache_ttl_seconds": 60,
                    "sqlalchemy_config_kwargs": {"pool_pre_ping": True},
                }
            else:
                Path(self.registry_path).parent.mkdir(parents=True, exist_ok=True)
                registry = self.registry_path
            config = RepoConfig(
                project=self.project,
                provider="local",
                registry=registry,
                # duckdb, not file: the file store silently drops entity rows (feast#6787).
                offline_store={"type": "duckdb"},
                online_store=online,
                entity_key_serialization_version=3,
                repo_path=self.repo_path,
            )
            self._store = FeatureStore(config=config)
        return self._store

    def historical_features(self, feature_service: str, entity_df):
        """Feast's ``get_historical_features`` for the service: one DuckDB ASOF join where its views allow."""
        from fti_assets.resources.feast_offline import historical_features

        store = self.store()
        return historical_features(store, store.get_feature_service(feature_service), entity_df)

    def feature_schema(self, feature_service: str) -> list[tuple[str, str]]:
        """(view__feature, dtype) pairs of a feature service, in order: what a model is trained on."""
        service = self.store().get_feature_service(feature_service)
        return [
            (f"{projection.name_to_use()}__{feature.name}", str(feature.dtype))
            for projection in service.feature_view_projections
            for feature in projection.features
        ]

    def feature_schema_hash(self, feature_service: str) -> str:
        return text_version(f"{name}:{dtype};" for name, dtype in self.feature_schema(feature_service))

    def feature_columns(self, feature_service: str) -> list[str]:
        """Column names ``get_historical_features`` returns for the service (without view prefixes)."""
        return [name.split("__", 1)[1] for name, _ in self.feature_schema(feature_service)]
