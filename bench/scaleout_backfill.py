"""A 180-day backfill spread over Celery workers: wall time with one worker and with two.

    python bench/scaleout_backfill.py [--customers 5000] [--days 180] [--chunk-days 30] [--workers 1 2] [--repeats 2]

Partitions are the unit of parallelism: the backfill of raw_transactions -> customer_features + churn_labels (with
their checks) is cut into runs of ``--chunk-days`` days each (every run still a single-run range, so each day keeps
its own metadata, version and check results). All ingestion chunks are submitted at once, then all feature chunks
(a day's features read the 90 days before it, so they wait for the raw data); each run's one step is a Celery task,
taken by whichever worker is free. The same backfill is timed with 1 worker, then with 2 (``scripts/workers.sh``,
one step at a time each), ``--repeats`` times each: the first pass of a worker set includes each worker loading the
code location once, later passes do not.

Needs PostgreSQL (the instance: ``deploy/dagster.yaml``) and a broker: FTI_TEST_POSTGRES_URL and FTI_TEST_REDIS_URL
(or --postgres / --broker). Creates and drops its own database; Redis database 13 holds its queues. On a 2-core
machine two workers share the cores with the orchestrators and PostgreSQL: the figures are reported, not judged.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import date, timedelta
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

JOBS = ("ingestion_job", "features_job")


def chunk_ranges(first: date, last: date, chunk_days: int) -> list[tuple[str, str]]:
    ranges, start = [], first
    while start <= last:
        end = min(start + timedelta(days=chunk_days - 1), last)
        ranges.append((start.isoformat(), end.isoformat()))
        start = end + timedelta(days=1)
    return ranges


def feature_ranges(ranges: list[tuple[str, str]], last: date, horizon_days: int) -> list[tuple[str, str]]:
    """The chunks of the features job: a trailing chunk whose days all wait for their label horizon joins the one
    before it (a churn_labels range run without a single labelled day fails: see the report of this bench)."""
    ranges = list(ranges)
    while len(ranges) > 1 and date.fromisoformat(ranges[-1][0]) > last - timedelta(days=horizon_days):
        ranges[-2:] = [(ranges[-2][0], ranges[-1][1])]
    return ranges


def run_chunk(job_name: str, days: tuple[str, str]) -> tuple[str, bool, float]:
    """One chunk run, orchestrated in this (forked) process, its step executed by a Celery worker."""
    from dagster import DagsterInstance, execute_job

    from fti_assets.demo import QUIET
    from fti_assets.monitoring.sensors import PARTITION_RANGE_END, PARTITION_RANGE_START
    from fti_assets.scaleout import reconstructable_job

    started = time.perf_counter()
    with DagsterInstance.get() as instance:
        result = execute_job(
            reconstructable_job(job_name),
            instance=instance,
            run_config=QUIET,
            tags={PARTITION_RANGE_START: days[0], PARTITION_RANGE_END: days[1]},
        )
        return result.run_id, result.success, time.perf_counter() - started


def backfill(pool, chunks: dict[str, list[tuple[str, str]]]) -> dict[str, float]:
    seconds = {}
    for job_name in JOBS:
        started = time.perf_counter()
        results = pool.starmap(run_chunk, [(job_name, days) for days in chunks[job_name]])
        failed = [run_id for run_id, success, _ in results if not success]
        if failed:
            raise SystemExit(f"{job_name}: runs failed: {failed}")
        seconds[job_name] = time.perf_counter() - started
    seconds["total"] = sum(seconds.values())
    return seconds


def workers(action: str, names: list[str]) -> None:
    env = {**os.environ, "FTI_WORKERS": " ".join(f"{name}:dagster" for name in names)}
    subprocess.run([str(ROOT / "scripts" / "workers.sh"), action], env=env, check=True, stdout=subprocess.DEVNULL)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--chunk-days", type=int, default=30)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--postgres", default=os.environ.get("FTI_TEST_POSTGRES_URL"))
    parser.add_argument("--broker", default=None, help="default: redis://$FTI_TEST_REDIS_URL/13")
    args = parser.parse_args()
    redis = os.environ.get("FTI_TEST_REDIS_URL")
    broker = args.broker or (f"redis://{redis.removeprefix('redis://')}/13" if redis else None)
    if not args.postgres or not broker:
        raise SystemExit("needs FTI_TEST_POSTGRES_URL and FTI_TEST_REDIS_URL (or --postgres and --broker)")

    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    tmp = Path(tempfile.mkdtemp(prefix="fti-scaleout-bench-"))
    database = f"fti_bench_{os.getpid()}_{uuid.uuid4().hex[:4]}"
    admin = create_engine(args.postgres, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{database}"'))
    settings_file = tmp / "settings.yaml"
    raw = yaml.safe_load((ROOT / "configs" / "simulated.yaml").read_text())
    start = date.fromisoformat(str(raw["start_date"]))
    raw.update(
        data_dir=str(tmp / "data"),
        end_date=(start + timedelta(days=args.days - 1)).isoformat(),
        simulator={**raw["simulator"], "n_customers": args.customers, "days": args.days},
    )
    settings_file.write_text(yaml.safe_dump(raw))
    home = tmp / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text((ROOT / "deploy" / "dagster.yaml").read_text())
    # Before any project import: the code location (here, in the forked orchestrators and in the workers) reads these.
    os.environ.update(
        FTI_CONFIG=str(settings_file),
        FTI_DATA_DIR=str(tmp / "data"),
        DAGSTER_HOME=str(home),
        FTI_DAGSTER_PG_URL=make_url(args.postgres).set(database=database).render_as_string(hide_password=False),
        FTI_EXECUTOR="celery",
        FTI_CELERY_BROKER_URL=broker,
        FTI_WORKERS_DIR=str(tmp / "workers"),
        MLFLOW_DISABLE_TELEMETRY="true",
        DAGSTER_DISABLE_TELEMETRY="true",
    )
    for name in ("FTI_MLFLOW_TRACKING_URI", "FTI_FEAST_REGISTRY_URL", "FTI_ONLINE_STORE", "FTI_PREDICTIONS_URL"):
        os.environ.pop(name, None)

    from dagster import DagsterInstance, execute_job

    from fti_assets.definitions import build_definitions
    from fti_assets.demo import QUIET, fill_simulated_source
    from fti_assets.scaleout import reconstructable_job
    from fti_assets.settings import load_settings

    settings = load_settings()
    print(f"source: {fill_simulated_source(settings, fresh=True)}")
    defs = build_definitions(settings)
    if defs.resolve_job_def("ingestion_job").executor_def.name != "celery":
        raise SystemExit("the jobs' executor is not celery: fti_assets/definitions.py must pass executor_from_env()")
    ranges = chunk_ranges(settings.start_date, settings.end_date, args.chunk_days)
    chunks = {
        "ingestion_job": ranges,
        "features_job": feature_ranges(ranges, settings.end_date, settings.label_horizon_days),
    }
    print(
        f"backfill: {args.days} days x {args.customers} customers, chunks of {args.chunk_days} days: "
        + "; ".join(f"{job} {len(days)} runs" for job, days in chunks.items())
        + f"; instance on PostgreSQL, broker {broker}"
    )
    results: dict[int, list[dict[str, float]]] = {}
    context = multiprocessing.get_context("fork")  # the orchestrators share this process's imports
    try:
        for count in args.workers:
            names = [f"bench{i + 1}" for i in range(count)]
            subprocess.run(
                [str(ROOT / ".venv" / "bin" / "celery"), "-A", "fti_assets.celery_app", "purge", "-f", "-Q", "dagster"],
                check=True,
                stdout=subprocess.DEVNULL,
            )
            workers("start", names)
            try:
                with DagsterInstance.get() as instance:  # raw_customers + feature_definitions, untimed
                    execute_job(reconstructable_job("reference_data_job"), instance=instance, run_config=QUIET)
                pool = context.Pool(len(ranges))
                try:
                    for repeat in range(args.repeats):
                        seconds = backfill(pool, chunks)
                        results.setdefault(count, []).append(seconds)
                        print(
                            f"{count} worker(s), pass {repeat + 1}: "
                            + ", ".join(f"{k} {v:.1f} s" for k, v in seconds.items())
                        )
                finally:
                    pool.close()
                    pool.join()
            finally:
                workers("stop", names)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(tmp, ignore_errors=True)

    print(f"\nload average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; wall seconds of the backfill:")
    print("| workers | pass | ingestion | features + labels | total | vs 1 worker |")
    print("|---|---|---|---|---|---|")
    baseline = {i: s["total"] for i, s in enumerate(results.get(1, []))}
    for count, passes in results.items():
        for i, s in enumerate(passes):
            ratio = f"{baseline[i] / s['total']:.2f}x" if i in baseline else ""
            print(
                f"| {count} | {i + 1} | {s['ingestion_job']:.1f} | {s['features_job']:.1f} | {s['total']:.1f} | "
                f"{ratio} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
