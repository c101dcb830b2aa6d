"""Feast's ``materialize`` against ``write_online_features``, into the same kind of online store.

    python bench/online_materialize.py [--entities 200000] [--redis 127.0.0.1:6379]

Generates one day of the customer feature table (N entities x the 11 features), times both writers
into fresh stores (SQLite, and Redis when ``--redis`` is given), checks that a sample of entities reads
back identically through ``get_online_features``, and prints a table: wall seconds, the speed-up, this
process's CPU seconds and, for Redis, the server's.

For SQLite it also times SQLite alone inserting the same rows into an empty table of Feast's layout (an
``INSERT ... SELECT`` inside the database: no Python, no binding). No writer into that layout can be faster
than that, so Feast's time over it bounds the speed-up any writer can reach on this machine.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from fti_assets.features.transform import FEATURE_TABLE_COLUMNS, WINDOWS, end_of_day_utc  # noqa: E402
from fti_assets.resources.feast import FeastResource  # noqa: E402
from fti_assets.settings import PROJECT_ROOT  # noqa: E402

DAY = date(2026, 3, 1)
VIEW = "customer_activity_v1"
SERVICE = "customer_churn_v1"
SAMPLE = 1_000


def feature_table(entities: int, seed: int = 0) -> pd.DataFrame:
    """One day of the feature table with plausible values, timestamps in microseconds UTC."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"customer_id": pd.array([f"C{i:08d}" for i in range(entities)], dtype="string")})
    frame["event_timestamp"] = pd.Series([end_of_day_utc(DAY, "UTC")] * entities).astype("datetime64[us, UTC]")
    frame["as_of_day"] = DAY.isoformat()
    for w in WINDOWS:
        count = rng.poisson(w / 7, entities).astype("int64")
        spend = np.where(count > 0, np.round(rng.gamma(2.0, 30.0, entities) * count, 4), 0.0)
        frame[f"txn_count_{w}d"] = count
        frame[f"spend_sum_{w}d"] = spend
        frame[f"spend_mean_{w}d"] = np.round(spend / np.maximum(count, 1), 4)
    frame["days_since_last_purchase"] = rng.integers(0, 90, entities)
    frame["tenure_days"] = rng.integers(0, 2_000, entities)
    return frame[FEATURE_TABLE_COLUMNS]


def make_store(root: Path, name: str, lake: Path, redis: str | None):
    """A Feast store with the project's definitions applied; a unique project keeps Redis keys apart."""
    feast = FeastResource(
        repo_path=str(PROJECT_ROOT / "feature_repo"),
        lake_root=str(lake),
        registry_path=str(root / name / "registry.db"),
        online_store="redis" if redis else "sqlite",
        sqlite_path=str(root / name / "online_store.db"),
        redis_connection_string=redis,
        project=f"bench_{name}_{uuid.uuid4().hex[:8]}",
    )
    store = feast.store()
    store.apply(feast.definitions())
    return store


def drop_redis_keys(store) -> None:
    client = store._get_provider().online_store._get_client(store.config.online_store)
    keys = list(client.scan_iter(match=b"*" + store.config.project.encode(), count=10_000))
    for start in range(0, len(keys), 10_000):
        client.delete(*keys[start : start + 10_000])


def online_values(store, ids: list[str]) -> dict:
    return store.get_online_features(
        features=store.get_feature_service(SERVICE), entity_rows=[{"customer_id": i} for i in ids]
    ).to_dict()


def timed(write) -> tuple[float, float]:
    """Wall and CPU seconds of ``write()``: the CPU time of this process shows less of other load."""
    wall, cpu = time.perf_counter(), time.process_time()
    write()
    return time.perf_counter() - wall, time.process_time() - cpu


def sqlite_insert_alone(store) -> float:
    """Seconds SQLite takes to insert the view's stored rows into an empty copy of its table (same columns,
    primary key and index), committed. A WHERE clause keeps SQLite from copying pages instead of inserting."""
    import sqlite3
    from contextlib import closing

    from feast.infra.online_stores.helpers import compute_table_id

    config = store.config
    table = compute_table_id(config.project, store.get_feature_view(VIEW), False)
    with closing(sqlite3.connect(config.online_store.path)) as conn:
        schema = conn.execute("SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL", (table,))
        statements = [sql.replace(table, "bench_copy") for (sql,) in schema]
        for sql in statements:
            conn.execute(sql)
        conn.commit()
        started = time.perf_counter()
        with conn:
            conn.execute(f'INSERT INTO bench_copy SELECT * FROM "{table}" WHERE true')
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE bench_copy")
    return seconds


def redis_server_cpu(store) -> float:
    info = store._get_provider().online_store._get_client(store.config.online_store).info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def compare(kind: str, entities: int, day_file: Path, lake: Path, root: Path, redis: str | None) -> dict:
    """Both writers into fresh stores of one kind; the sampled values must read back identically."""
    from fti_assets.features.online_write import write_online_features

    baseline, fast = make_store(root, f"{kind}_feast", lake, redis), make_store(root, f"{kind}_fast", lake, redis)
    try:
        end = pd.read_parquet(day_file, columns=["event_timestamp"])["event_timestamp"].max().to_pydatetime()
        end += timedelta(seconds=1)
        server = [redis_server_cpu(baseline)] if redis else []
        feast_s, feast_cpu = timed(lambda: baseline.materialize(start_date=end - timedelta(days=1), end_date=end))
        server += [redis_server_cpu(baseline)] if redis else []
        written: list[int] = []
        # The asset reads the day's file too, so reading it is part of the fast path's time.
        fast_s, fast_cpu = timed(lambda: written.append(write_online_features(fast, VIEW, pd.read_parquet(day_file))))
        server += [redis_server_cpu(fast)] if redis else []
        if written != [entities]:
            raise SystemExit(f"{kind}: wrote {written} entities, expected {entities}")
        ids = pd.read_parquet(day_file, columns=["customer_id"])["customer_id"].sample(SAMPLE, random_state=1).tolist()
        if online_values(baseline, ids) != online_values(fast, ids):
            raise SystemExit(f"{kind}: the two stores return different values")
        floor = None if redis else sqlite_insert_alone(fast)
    finally:
        if redis:
            drop_redis_keys(baseline)
            drop_redis_keys(fast)
    return {
        "store": kind,
        "entities": entities,
        "feast materialize s": feast_s,
        "fast write s": fast_s,
        "speed-up x": feast_s / fast_s,
        "feast cpu s": feast_cpu,
        "fast cpu s": fast_cpu,
        # The server's CPU while each writer ran (other clients of the server included).
        "redis cpu s feast/fast": f"{server[1] - server[0]:.2f}/{server[2] - server[1]:.2f}" if redis else "",
        "sqlite insert alone s": "" if floor is None else f"{floor:.2f}",
        "bound x": "" if floor is None else f"{feast_s / floor:.1f}",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entities", type=int, default=200_000)
    parser.add_argument("--redis", help="127.0.0.1:port of a Redis server to benchmark too")
    args = parser.parse_args()
    if args.redis and not args.redis.split(",")[0].startswith("127.0.0.1:"):
        parser.error("--redis must point at 127.0.0.1")
    with tempfile.TemporaryDirectory(prefix="fti_bench_") as tmp:
        root = Path(tmp)
        lake = root / "lake"
        day_file = lake / "customer_features" / f"{DAY.isoformat()}.parquet"
        day_file.parent.mkdir(parents=True)
        feature_table(args.entities).to_parquet(day_file, index=False)
        rows = [compare("sqlite", args.entities, day_file, lake, root, None)]
        if args.redis:
            rows.append(compare("redis", args.entities, day_file, lake, root, args.redis))
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(" | ".join(f"{name:>{max(len(name), 8)}}" for name in rows[0]))
    for row in rows:
        cells = [f"{v:,}" if isinstance(v, int) else f"{v:.2f}" if isinstance(v, float) else v for v in row.values()]
        print(" | ".join(f"{cell:>{max(len(name), 8)}}" for name, cell in zip(row, cells, strict=True)))
    print(f"values of {SAMPLE} sampled entities identical through get_online_features")
    print("bound x: Feast's time over SQLite's own insert of the same rows, the most any SQLite writer can gain")


if __name__ == "__main__":
    main()
