"""Feast's online-store layout, in one place: every private Feast name fti-assets relies on.

`features/online_write.py` writes whole columns straight into the online store's tables and hashes, and
`serving/features.py` reads them back, both many times faster than Feast's per-value path (see
bench/online_materialize.py and bench/serving.py). Table names, key encodings and hash fields are Feast
internals, not its API, so they are named here and nowhere else, for the Feast version pyproject.toml pins
(`FEAST_SERIES`). The byte-identity tests beside them compare every stored row with `materialize`
(fti_assets_tests/test_online_write.py) and every served value with `get_online_features`
(fti_assets_tests/test_online_read.py); an upgrade that moves any of this fails those tests first.
"""

from __future__ import annotations

from importlib.metadata import version

from feast.infra.key_encoding_utils import serialize_entity_key_prefix
from feast.infra.online_stores.helpers import _mmh3, compute_table_id
from feast.infra.online_stores.redis import _versioned_fv_name
from feast.infra.online_stores.sqlite import _quote_id, adapt_datetime_epoch

# The Feast release series this layout was read from (pyproject.toml: feast>=0.67,<0.68).
FEAST_SERIES = "0.67."
# Feast's entity-key format this layout writes and reads (RepoConfig.entity_key_serialization_version).
ENTITY_KEY_VERSION = 3

__all__ = [
    "ENTITY_KEY_VERSION",
    "FEAST_SERIES",
    "adapt_datetime_epoch",
    "entity_key_prefix",
    "feast_is_pinned",
    "redis_client",
    "redis_field",
    "redis_view_name",
    "sqlite_path",
    "sqlite_table",
]


def feast_is_pinned() -> bool:
    """Whether the installed Feast is the series this layout was read from."""
    return version("feast").startswith(FEAST_SERIES)


def sqlite_table(config, view) -> str:
    """The quoted name of a feature view's table in the SQLite online store."""
    return _quote_id(compute_table_id(config.project, view, config.registry.enable_online_feature_view_versioning))


def sqlite_path(store) -> str:
    """The SQLite online store's file."""
    return store._get_provider().online_store._get_db_path(store.config)


def entity_key_prefix(join_keys: list[str], key_version: int = ENTITY_KEY_VERSION) -> bytes:
    """The bytes every serialized entity key of these join keys starts with (before its values)."""
    return serialize_entity_key_prefix(join_keys, key_version)


def redis_view_name(view, config) -> str:
    """The name a feature view's fields carry inside each entity's Redis hash."""
    return _versioned_fv_name(view, config)


def redis_field(view_name: str, feature: str) -> bytes:
    """The hash field of one feature of a view in an entity's Redis hash."""
    return _mmh3(f"{view_name}:{feature}")


def redis_client(store):
    """The Redis client of the store's online store."""
    return store._get_provider().online_store._get_client(store.config.online_store)
