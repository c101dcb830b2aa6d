"""Feast's ``materialize`` against ``write_online_features``, into the same kind of online store.

    python bench/online_materialize.py [--entities 200000] [--redis 127.0.0.1:6379]

Generates two days of the customer feature table (N entities x the 11 features) and times both writers,
a day at a time, into fresh stores (SQLite, and Redis when ``--redis`` is given): the first day into empty
stores, then the next day over it, as the daily asset runs. After each day it checks that a sample of
entities reads back identically through ``get_online_features``, and it prints a table: wall seconds, the
speed-up, this process's CPU seconds and, for Redis, the server's.

For SQLite it also times SQLite alone writing the same rows into a copy of Feast's table as it was before
the day (an ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` inside the database: no Python, no binding). No
writer into that layout can be faster than that, so Feast's time over it bounds the speed-up any writer can
reach on this machine.
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

from fti_assets.features.spec import BUILT_IN_SERVICES, V1, as_config  # noqa: E402
from fti_assets.features.transform import FEATURE_TABLE_COLUMNS, end_of_day_utc  # noqa: E402
from fti_assets.resources.feast import FeastResource  # noqa: E402
from fti_assets.settings import PROJECT_ROOT  # noqa: E402

DAY = date(2026, 3, 1)
VIEW = "customer_activity_v1"
SERVICE = "customer_churn_v1"
SAMPLE = 1_000


def feature_table(entities: int, day: date = DAY, seed: int = 0) -> pd.DataFrame:
    """One day of the feature table with plausible values, timestamps in microseconds UTC."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"customer_id": pd.array([f"C{i:08d}" for i in range(entities)], dtype="string")})
    frame["event_timestamp"] = pd.Series([end_of_day_utc(day, "UTC")] * entities).astype("datetime64[us, UTC]")
    frame["as_of_day"] = day.isoformat()
    for w in V1.windows:
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
        feature_services=as_config(BUILT_IN_SERVICES),  # the v1 view: the table here holds its columns
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


def timed(function, *args, **kwargs) -> tuple[float, float, object]:
    """Wall and CPU seconds of the call, and what it returned: the CPU time of this process shows less of
    other load."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function(*args, **kwargs)
    return time.perf_counter() - wall, time.process_time() - cpu, result


def sqlite_table(store) -> str:
    from feast.infra.online_stores.helpers import compute_table_id

    return compute_table_id(store.config.project, store.get_feature_view(VIEW), False)


def sqlite_keep_previous(store) -> None:
    """Keep a copy of the view's rows as they are now, for ``sqlite_alone`` after the next day's write."""
    import sqlite3
    from contextlib import closing

    with closing(sqlite3.connect(store.config.online_store.path)) as conn, conn:
        conn.execute(f'CREATE TABLE bench_previous AS SELECT * FROM "{sqlite_table(store)}"')


def sqlite_alone(store) -> float:
    """Seconds SQLite takes to upsert the view's stored rows into a copy of its table (same columns, primary
    key and index), committed: a copy holding the rows that ``sqlite_keep_previous`` kept, or an empty one.
    A WHERE clause keeps SQLite from copying pages instead of inserting."""
    import sqlite3
    from contextlib import closing

    table = sqlite_table(store)
    with closing(sqlite3.connect(store.config.online_store.path)) as conn:
        schema = conn.execute("SELECT sql FROM sqlite_master WHERE tbl_name = ? AND sql IS NOT NULL", (table,))
        for (sql,) in schema.fetchall():
            conn.execute(sql.replace(table, "bench_copy"))
        previous = conn.execute("SELECT 1 FROM sqlite_master WHERE name = 'bench_previous'").fetchone()
        if previous:
            conn.execute("INSERT INTO bench_copy SELECT * FROM bench_previous")
            conn.execute("DROP TABLE bench_previous")
        conn.commit()
        updated = ["value", "value_text", "vector_value", "event_ts", "created_ts"]
        started = time.perf_counter()
        with conn:
            conn.execute(
                f'INSERT INTO bench_copy SELECT * FROM "{table}" WHERE true ON CONFLICT(entity_key, feature_name) '
                f"DO UPDATE SET {', '.join(f'{c} = excluded.{c}' for c in updated)}"
            )
        seconds = time.perf_counter() - started
        conn.execute("DROP TABLE bench_copy")
    return seconds


def redis_server_cpu(store) -> float:
    info = store._get_provider().online_store._get_client(store.config.online_store).info("cpu")
    return info["used_cpu_user"] + info["used_cpu_sys"]


def compare(kind: str, entities: int, day_files: list[Path], lake: Path, root: Path, redis: str | None) -> list[dict]:
    """Both writers into fresh stores of one kind, a day at a time: the first day into empty stores, the next
    over it (the daily case: every entity updated). After each day the sampled values must read back the same."""
    from fti_assets.features.online_write import write_online_features

    baseline, fast = make_store(root, f"{kind}_feast", lake, redis), make_store(root, f"{kind}_fast", lake, redis)
    rows = []
    try:
        for case, day_file in zip(["empty store", "next day"], day_files, strict=True):
            end = pd.read_parquet(day_file, columns=["event_timestamp"])["event_timestamp"].max().to_pydatetime()
            end += timedelta(seconds=1)
            server = [redis_server_cpu(baseline)] if redis else []
            feast_s, feast_cpu, _ = timed(baseline.materialize, start_date=end - timedelta(days=1), end_date=end)
            server += [redis_server_cpu(baseline)] if redis else []
            if kind == "sqlite" and case == "next day":
                sqlite_keep_previous(fast)
            # The asset reads the day's file too, so reading it is part of the fast path's time.
            fast_s, fast_cpu, written = timed(
                lambda path: write_online_features(fast, VIEW, pd.read_parquet(path)), day_file
            )
            server += [redis_server_cpu(fast)] if redis else []
            if written != entities:
                raise SystemExit(f"{kind}, {case}: wrote {written} entities, expected {entities}")
            ids = pd.read_parquet(day_file, columns=["customer_id"])["customer_id"]
            ids = ids.sample(SAMPLE, random_state=1).tolist()
            if online_values(baseline, ids) != online_values(fast, ids):
                raise SystemExit(f"{kind}, {case}: the two stores return different values")
            floor = sqlite_alone(fast) if kind == "sqlite" else None
            rows.append(
                {
                    "store": kind,
                    "case": case,
                    "entities": entities,
                    "feast materialize s": feast_s,
                    "fast write s": fast_s,
                    "speed-up x": feast_s / fast_s,
                    "feast cpu s": feast_cpu,
                    "fast cpu s": fast_cpu,
                    # The server's CPU while each writer ran (other clients of the server included).
                    "redis cpu s feast/fast": f"{server[1] - server[0]:.2f}/{server[2] - server[1]:.2f}"
                    if redis
                    else "",
                    "sqlite alone s": "" if floor is None else f"{floor:.2f}",
                    "bound x": "" if floor is None else f"{feast_s / floor:.1f}",
                }
            )
    finally:
        if redis:
            drop_redis_keys(baseline)
            drop_redis_keys(fast)
    return rows


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
        day_files = [lake / "customer_features" / f"{(DAY + timedelta(days=d)).isoformat()}.parquet" for d in (0, 1)]
        day_files[0].parent.mkdir(parents=True)
        for offset, day_file in enumerate(day_files):
            feature_table(args.entities, DAY + timedelta(days=offset), seed=offset).to_parquet(day_file, index=False)
        rows = compare("sqlite", args.entities, day_files, lake, root, None)
        if args.redis:
            rows += compare("redis", args.entities, day_files, lake, root, args.redis)
    print(f"\nload average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    cells = [
        [f"{v:,}" if isinstance(v, int) else f"{v:.2f}" if isinstance(v, float) else v for v in row.values()]
        for row in rows
    ]
    widths = [max(len(name), *(len(line[i]) for line in cells)) for i, name in enumerate(rows[0])]
    for line in [list(rows[0]), *cells]:
        print(" | ".join(f"{cell:>{width}}" for cell, width in zip(line, widths, strict=True)))
    print(f"values of {SAMPLE} sampled entities identical through get_online_features")
    print("bound x: Feast's time over SQLite's own write of the same rows, the most any SQLite writer can gain")


if __name__ == "__main__":
    main()
