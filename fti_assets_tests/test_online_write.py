"""``write_online_features`` stores exactly what Feast's ``materialize`` stores, in SQLite and in Redis.

Each test fills two stores built from the project's feature repo: one with ``FeatureStore.materialize``
from the offline parquet files, one with ``write_online_features`` from the same rows, and compares
what ``get_online_features`` returns and the raw rows (SQLite) or hashes (Redis). Redis runs when
``FTI_TEST_REDIS_URL`` is set (host:port).
"""

from __future__ import annotations

import sqlite3
import uuid
from contextlib import closing
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fti_assets.features.spec import BUILT_IN_SERVICES, as_config
from fti_assets.features.transform import FEATURE_COLUMNS, FEATURE_TABLE_COLUMNS, end_of_day_utc
from fti_assets.resources.feast import FeastResource
from fti_assets.resources.feast_layout import redis_client
from fti_assets.settings import PROJECT_ROOT
from fti_assets_tests.conftest import server_url, small_settings

VIEW = "customer_activity_v1"
SERVICE = "customer_churn_v1"
DAY = date(2026, 3, 10)
INT_FEATURES = [c for c in FEATURE_COLUMNS if not c.startswith("spend_")]
# Values whose encoding is easy to get wrong: shortest float reprs, -0.0, varint boundaries, negatives,
# and 2**53 + 1, which Feast rounds through a double when the column has nulls.
EDGE_FLOATS = [0.0, -0.0, 0.1 + 0.2, 1e16, 1e-05, 1 / 3, 123456.7891, 1.5e300, float("inf"), 9999999999999998.0]
EDGE_INTS = [0, 1, 127, 128, 300, 16384, 2**40, -1, -(2**63), 2**53 + 1]


@pytest.fixture(params=["sqlite", "redis"])
def redis_url(request) -> str | None:
    """None for SQLite; the Redis server's host:port for Redis (skipped without FTI_TEST_REDIS_URL)."""
    if request.param == "sqlite":
        return None
    return server_url("FTI_TEST_REDIS_URL", "Redis")


@pytest.fixture
def stores(tmp_path, redis_url):
    """(materialized by Feast, written by write_online_features): two stores, each in its own data_dir."""
    made = [_store(tmp_path / name, redis_url) for name in ("feast", "fast")]
    yield made
    if redis_url:
        for store in made:
            client = _redis(store)
            for key in list(client.scan_iter(match=b"*" + store.config.project.encode())):
                client.delete(key)


def _store(data_dir: Path, redis_url: str | None):
    settings = small_settings(data_dir)
    feast = FeastResource(
        repo_path=str(PROJECT_ROOT / "feature_repo"),
        lake_root=str(settings.path("lake")),
        registry_path=str(settings.path("feast", "registry.db")),
        online_store="redis" if redis_url else "sqlite",
        sqlite_path=str(settings.path("feast", "online_store.db")),
        redis_connection_string=redis_url,
        # Unique per store: Redis keys end with the project, so parallel runs never collide.
        project=f"t{uuid.uuid4().hex[:12]}",
        # The v1 view alone: the frames here hold its columns.
        feature_services=as_config(BUILT_IN_SERVICES),
    )
    store = feast.store()
    store.apply(feast.definitions())
    return store


def _redis(store):
    return redis_client(store)


def feature_rows(day: date, entities: int, seed: int, nulls: bool = True) -> pd.DataFrame:
    """One day of the feature table: edge values first, then (``nulls``) a null float and int and an
    entity with no values, the rest random."""
    rng = np.random.default_rng(seed)
    ids = [f"C{i:05d}" for i in range(entities)]
    ids[1] = "Zoë-ünïcode"
    frame = pd.DataFrame({"customer_id": pd.array(ids, dtype="string")})
    frame["event_timestamp"] = pd.Series([end_of_day_utc(day, "UTC")] * entities).astype("datetime64[us, UTC]")
    frame["as_of_day"] = day.isoformat()
    for column in FEATURE_COLUMNS:
        if column in INT_FEATURES:
            values = rng.integers(0, 400, entities).astype(object)
            values[: len(EDGE_INTS)] = EDGE_INTS
            frame[column] = pd.array(values.tolist(), dtype="Int64")
        else:
            values = np.round(rng.gamma(2.0, 40.0, entities), 4)
            values[: len(EDGE_FLOATS)] = EDGE_FLOATS
            frame[column] = values
    if nulls:
        frame.loc[2, "spend_mean_30d"] = np.nan
        frame.loc[2, "txn_count_30d"] = pd.NA
        frame.loc[3, FEATURE_COLUMNS] = np.nan
    return frame[FEATURE_TABLE_COLUMNS]


def write_lake(store, frame: pd.DataFrame) -> None:
    """The offline source of the view: one parquet file per day, as the customer_features asset writes."""
    folder = Path(store.get_data_source("customer_features_daily").path).parent
    folder.mkdir(parents=True, exist_ok=True)
    for day, rows in frame.groupby("as_of_day"):
        rows.to_parquet(folder / f"{day}.parquet", index=False)


def materialize(store, frame: pd.DataFrame) -> None:
    """Feast's materialize over exactly the events of ``frame`` (its files must be in the lake)."""
    times = frame["event_timestamp"]
    store.materialize(
        start_date=times.min().to_pydatetime() - timedelta(seconds=1),
        end_date=times.max().to_pydatetime() + timedelta(seconds=1),
    )


def online_values(store, ids: list[str]) -> dict:
    features = store.get_feature_service(SERVICE)
    return store.get_online_features(features=features, entity_rows=[{"customer_id": i} for i in ids]).to_dict()


def stored(store) -> list:
    """Everything the online store holds for the view, without the project-specific parts."""
    if store.config.online_store.type == "sqlite":
        with closing(sqlite3.connect(store.config.online_store.path)) as conn:  # no type detection: raw values
            return conn.execute(
                f"SELECT entity_key, feature_name, value, typeof(value), value_text, typeof(value_text), event_ts, "
                f'typeof(event_ts), created_ts, vector_value FROM "{store.config.project}_{VIEW}" '
                f"ORDER BY entity_key, feature_name"
            ).fetchall()
    client, project = _redis(store), store.config.project.encode()
    keys = sorted(client.scan_iter(match=b"*" + project))
    return [(key[: -len(project)], client.hgetall(key), client.ttl(key)) for key in keys]


def test_the_layout_is_read_from_the_feast_the_project_pins():
    """feast_layout names Feast internals of one release series: pyproject's pin and the installed Feast agree."""
    import re

    from fti_assets.resources.feast_layout import FEAST_SERIES, feast_is_pinned

    pin = re.search(r'"feast\[[^"]*\]>=([\d.]+),<([\d.]+)"', (PROJECT_ROOT / "pyproject.toml").read_text())
    assert pin is not None and pin.group(1) + "." == FEAST_SERIES and feast_is_pinned()


@pytest.mark.parametrize("chunk", [None, 64], ids=["one_chunk", "chunks_of_64"])
def test_same_values_as_materialize(stores, chunk, monkeypatch) -> None:
    from fti_assets.features import online_write
    from fti_assets.features.online_write import write_online_features

    if chunk:  # several statements (SQLite, built while the previous one writes) or payloads (Redis)
        monkeypatch.setattr(online_write, "SQLITE_CHUNK", chunk)
        monkeypatch.setattr(online_write, "REDIS_CHUNK", chunk)
    baseline, fast = stores
    # Two days: most entities have a row on each, a few only the first; the latest row per entity wins.
    older = feature_rows(DAY - timedelta(days=1), 300, seed=1)
    newer = feature_rows(DAY, 250, seed=2)
    frame = pd.concat([older, newer], ignore_index=True).sample(frac=1, random_state=0)
    write_lake(baseline, frame)
    materialize(baseline, frame)

    assert write_online_features(fast, VIEW, frame) == 300
    ids = frame["customer_id"].unique().tolist()
    assert online_values(fast, ids) == online_values(baseline, ids)
    values = online_values(fast, ["C00002", "C00003", "C00270"])
    assert values["spend_mean_30d"][0] is None and values["txn_count_30d"][0] is None
    assert all(values[c][1] is None for c in FEATURE_COLUMNS)
    assert values["tenure_days"][2] == older["tenure_days"][270]  # only on the first day
    assert stored(fast) == stored(baseline)
    assert len(stored(fast)) == (300 * len(FEATURE_COLUMNS) if fast.config.online_store.type == "sqlite" else 300)


def test_rewrite_is_idempotent(stores) -> None:
    from fti_assets.features.online_write import write_online_features

    baseline, fast = stores
    frame = feature_rows(DAY, 200, seed=3, nulls=False)  # integer columns stay int64 all the way
    write_lake(baseline, frame)
    materialize(baseline, frame)
    materialize(baseline, frame)

    write_online_features(fast, VIEW, frame)
    first = stored(fast)
    written = write_online_features(fast, VIEW, frame)
    assert stored(fast) == first == stored(baseline)
    # SQLite rewrites every row; Redis skips an entity whose stored time is not older.
    assert written == (200 if fast.config.online_store.type == "sqlite" else 0)


@pytest.mark.parametrize("redis_url", ["sqlite"], indirect=True)
def test_sqlite_write_is_all_or_nothing(stores, monkeypatch) -> None:
    """A write failing in its last chunk leaves every row as it was, and the next write goes through."""
    from fti_assets.features import online_write
    from fti_assets.features.online_write import write_online_features

    monkeypatch.setattr(online_write, "SQLITE_CHUNK", 64)
    baseline, fast = stores
    first, second = feature_rows(DAY - timedelta(days=1), 300, seed=9), feature_rows(DAY, 300, seed=10)
    write_lake(baseline, pd.concat([first, second]))
    for rows in (first, second):
        materialize(baseline, rows)
    write_online_features(fast, VIEW, first)
    before = stored(fast)
    table = f"{fast.config.project}_{VIEW}"
    with closing(sqlite3.connect(fast.config.online_store.path)) as conn, conn:
        # Fails the update of the last entity in key order: the last chunk, after five have been upserted.
        conn.execute(
            f'CREATE TRIGGER fail_last BEFORE UPDATE ON "{table}" WHEN NEW.entity_key = '
            f"(SELECT max(entity_key) FROM \"{table}\") BEGIN SELECT RAISE(ABORT, 'injected'); END"
        )
    with pytest.raises(sqlite3.IntegrityError, match="injected"):
        write_online_features(fast, VIEW, second)
    assert stored(fast) == before
    with closing(sqlite3.connect(fast.config.online_store.path)) as conn, conn:
        conn.execute("DROP TRIGGER fail_last")
    assert write_online_features(fast, VIEW, second) == 300
    assert stored(fast) == stored(baseline)


def test_older_and_newer_rows_as_materialize(stores) -> None:
    """SQLite: the last write wins, whatever its time. Redis: only a newer event replaces a stored one."""
    from fti_assets.features.online_write import write_online_features

    baseline, fast = stores
    older = feature_rows(DAY - timedelta(days=1), 100, seed=4)
    newer = feature_rows(DAY, 100, seed=5)
    write_lake(baseline, pd.concat([older, newer]))
    # Newer first, then older over it; then newer again.
    for rows in (newer, older):
        materialize(baseline, rows)
        write_online_features(fast, VIEW, rows)
        assert stored(fast) == stored(baseline)
    expected = older if fast.config.online_store.type == "sqlite" else newer
    assert online_values(fast, ["C00050"])["tenure_days"] == [expected["tenure_days"][50]]

    materialize(baseline, newer)
    write_online_features(fast, VIEW, newer)
    assert stored(fast) == stored(baseline)
    assert online_values(fast, ["C00050"])["tenure_days"] == [newer["tenure_days"][50]]


def test_other_columns_fall_back_to_feast(stores) -> None:
    """A feature column the fast path does not encode (objects) goes through write_to_online_store."""
    from fti_assets.features.online_write import write_online_features

    baseline, fast = stores
    frame = feature_rows(DAY, 50, seed=6)
    write_lake(baseline, frame)
    materialize(baseline, frame)
    objects = frame.assign(tenure_days=frame["tenure_days"].astype(object))
    assert write_online_features(fast, VIEW, objects) == 50
    ids = frame["customer_id"].tolist()
    assert online_values(fast, ids) == online_values(baseline, ids)


@pytest.mark.parametrize("redis_url", ["sqlite"], indirect=True)
def test_sqlite_without_serialize_falls_back_to_feast(stores, monkeypatch) -> None:
    """A Python whose SQLite library lacks serialize/deserialize writes through Feast, with the same rows."""
    from types import SimpleNamespace

    from fti_assets.features import online_write
    from fti_assets.features.online_write import write_online_features

    monkeypatch.setattr(online_write, "sqlite3", SimpleNamespace(Connection=object))
    monkeypatch.setattr(online_write, "_write_sqlite", None)  # calling it would fail the test
    baseline, fast = stores
    frame = feature_rows(DAY, 40, seed=11)
    write_lake(baseline, frame)
    materialize(baseline, frame)
    assert write_online_features(fast, VIEW, frame) == 40
    assert stored(fast) == stored(baseline)


@pytest.mark.parametrize("redis_url", ["redis"], indirect=True)
def test_redis_expiry_and_skip_dedup_as_feast(stores) -> None:
    """Redis with ``key_ttl_seconds`` (an EXPIRE after each HSET) and ``skip_dedup`` (no time check)."""
    from fti_assets.features.online_write import write_online_features

    baseline, fast = stores
    for store in stores:
        store.config.online_store.key_ttl_seconds = 3600
        store.config.online_store.skip_dedup = True
    older = feature_rows(DAY - timedelta(days=1), 60, seed=7)
    newer = feature_rows(DAY, 60, seed=8)
    write_lake(baseline, pd.concat([older, newer]))
    for rows in (newer, older):
        materialize(baseline, rows)
        assert write_online_features(fast, VIEW, rows) == 60
    assert [(key, values) for key, values, _ in stored(fast)] == [(key, values) for key, values, _ in stored(baseline)]
    assert all(3600 - 60 < ttl <= 3600 for store in stores for _, _, ttl in stored(store))
    # Without the time check, the older rows written last win, as in Feast.
    assert online_values(fast, ["C00010"])["tenure_days"] == [older["tenure_days"][10]]


@pytest.mark.parametrize("features", [1, 11, 12, 13, 30])
def test_packed_lengths_read_back_in_sql(features) -> None:
    """The SQL statement reads each (entity, feature) length back out of the per-entity words, across words."""
    from fti_assets.features.online_write import LENGTH_BITS, LENGTHS_PER_WORD, _packed_lengths, _unpacked_sql

    lengths = np.random.default_rng(features).integers(0, 25, (40, features))
    lengths[0] = 24  # every bit of every length set
    words = _packed_lengths(lengths)
    assert words.shape == (40, -(-features // LENGTHS_PER_WORD)) and (words >= 0).all()
    columns = [f"n{w}" for w in range(words.shape[1])]
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.execute(f"CREATE TABLE k (i INTEGER PRIMARY KEY, {', '.join(columns)})")
        conn.executemany(
            f"INSERT INTO k VALUES (?, {', '.join('?' * len(columns))})",
            [(i, *map(int, w)) for i, w in enumerate(words)],
        )
        conn.execute("CREATE TABLE f (j INTEGER PRIMARY KEY, word, shift)")
        conn.executemany(
            "INSERT INTO f VALUES (?, ?, ?)",
            [(j, j // LENGTHS_PER_WORD, j % LENGTHS_PER_WORD * LENGTH_BITS) for j in range(features)],
        )
        rows = conn.execute(f"SELECT k.i, f.j, {_unpacked_sql('n', len(columns))} FROM k, f").fetchall()
    assert sorted(rows) == [(i, j, int(lengths[i, j])) for i in range(40) for j in range(features)]
