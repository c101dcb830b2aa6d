"""Point-in-time joins of a Feast feature service over its parquet sources, as one DuckDB ASOF join.

Feast's duckdb offline store builds this join through ibis as an inner join of every entity row with
every earlier feature row, then a window that keeps the latest: 3x slower than DuckDB's own ASOF join
of the same rows, and its memory grows with the product (bench/pipeline_scale.py). This returns what
``FeatureStore.get_historical_features(entity_df, features=service)`` returns for feature views on
parquet FileSources: for each entity row and view, the view's latest row at or before the entity's
timestamp and no older than the view's ttl, else nulls; columns named without view prefixes. Equality
with Feast is tested (fti_assets_tests/test_feast_offline.py, pinned to the Feast in pyproject.toml).
A service this cannot express (another source type, field mappings, created-timestamp tie-breaks,
on-demand views) goes to Feast itself.
"""

from __future__ import annotations

import duckdb
import numpy as np
import pandas as pd

ROW = "__entity_row"


def _plain_parquet_view(view) -> bool:
    from feast.infra.offline_stores.file_source import FileSource

    source = view.batch_source
    return (
        isinstance(source, FileSource)
        and not source.field_mapping
        and not source.created_timestamp_column
        and str(source.path).endswith(".parquet")
    )


def asof_joinable(store, service) -> bool:
    """Whether every view of ``service`` is a plain parquet feature view (and none is on-demand)."""
    if getattr(service, "feature_view_projections", None) is None:
        return False
    try:
        views = [store.get_feature_view(p.name) for p in service.feature_view_projections]
    except Exception:  # an on-demand or stream view: not ours to join
        return False
    return all(_plain_parquet_view(v) for v in views)


def _quoted(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def historical_features(store, service, entity_df: pd.DataFrame, timestamp: str = "event_timestamp") -> pd.DataFrame:
    """``entity_df`` with the service's features joined point-in-time; rows in ``entity_df``'s order."""
    if not asof_joinable(store, service):
        return store.get_historical_features(entity_df=entity_df, features=service).to_df()
    result = entity_df.reset_index(drop=True).copy()
    # As Feast returns it: UTC, in microseconds.
    result[timestamp] = pd.to_datetime(result[timestamp], utc=True).astype("datetime64[us, UTC]")
    if result.empty:
        return store.get_historical_features(entity_df=entity_df, features=service).to_df()
    connection = duckdb.connect()
    try:
        connection.execute("SET TimeZone = 'UTC'")
        selects, joins, key_columns = [], [], set()
        lowest, highest = result[timestamp].min(), result[timestamp].max()
        for n, projection in enumerate(service.feature_view_projections):
            view = store.get_feature_view(projection.name)
            keys = projection.join_key_map or {e.name: e.name for e in view.entity_columns}
            key_columns.update(keys.values())
            source_ts = view.batch_source.timestamp_field
            features = [f.name for f in projection.features]
            alias = f"v{n}"
            # Only the rows that can match: at most ttl before the first entity, at most the last entity.
            ttl = f"INTERVAL '{int(view.ttl.total_seconds())} seconds'" if view.ttl else None
            window = f"{_quoted(source_ts)} <= $highest"
            if ttl:
                window += f" AND {_quoted(source_ts)} >= $lowest - {ttl}"
            columns = ", ".join(
                [f"CAST({_quoted(k)} AS VARCHAR) AS {_quoted(k)}" for k in keys]
                + [f"CAST({_quoted(source_ts)} AS TIMESTAMPTZ) AS __ts"]
                + [_quoted(f) for f in features]
            )
            path = str(view.batch_source.path).replace("'", "''")
            joins.append(
                f"ASOF LEFT JOIN (SELECT {columns} FROM read_parquet('{path}') WHERE {window}) {alias} ON "
                + " AND ".join(f"e.{_quoted(entity)} = {alias}.{_quoted(k)}" for k, entity in keys.items())
                + f" AND e.__ts >= {alias}.__ts"
            )
            fresh = f"{alias}.__ts >= e.__ts - {ttl}" if ttl else "TRUE"
            selects += [f"CASE WHEN {fresh} THEN {alias}.{_quoted(f)} END AS {_quoted(f)}" for f in features]
        entities = pd.DataFrame({ROW: np.arange(len(result))})
        for column in sorted(key_columns):
            entities[column] = result[column].astype("string")
        entities["__ts"] = result[timestamp]
        connection.register("entities", entities)
        joined = connection.execute(
            f"SELECT e.{ROW}, {', '.join(selects)} FROM entities e {' '.join(joins)} ORDER BY e.{ROW}",
            {"lowest": lowest.to_pydatetime(), "highest": highest.to_pydatetime()},
        ).df()
    finally:
        connection.close()
    for column in joined.columns.drop(ROW):
        result[column] = joined[column].to_numpy()
    return result
