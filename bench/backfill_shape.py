"""Backfill shapes: one run per day (Dagster's default) against one range run with per-day truth.

    python bench/backfill_shape.py [--customers 5000] [--days 180] [--per-day 30]

Simulates the source, then backfills raw_transactions -> customer_features (with their checks) over
the last ``--per-day`` days in both shapes on the same instance, and the whole ``--days`` range as one
run. Every shape ends with the same per-day state in the UI: a materialization, row count, data version
and check result per day (verified: the versions of both shapes are equal day by day).

Runs execute in process: a run launched by the daemon also starts a process and imports the code
location (seconds), so the per-day shape is timed at its cheapest here.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dagster import AssetKey, AssetRecordsFilter  # noqa: E402

from fti_assets.definitions import build_definitions  # noqa: E402
from fti_assets.demo import QUIET, fill_simulated_source  # noqa: E402
from fti_assets.monitoring.sensors import PARTITION_RANGE_END, PARTITION_RANGE_START  # noqa: E402
from fti_assets.settings import DEFAULT_CONFIG, load_settings  # noqa: E402
from fti_assets_tests.conftest import dagster_instance  # noqa: E402

JOBS = ("ingestion_job", "features_job")


def run_range(defs, instance, first: str, last: str) -> float:
    started = time.perf_counter()
    for job in JOBS:
        tags = {PARTITION_RANGE_START: first, PARTITION_RANGE_END: last}
        defs.resolve_job_def(job).execute_in_process(instance=instance, tags=tags, run_config=QUIET)
    return time.perf_counter() - started


def run_per_day(defs, instance, days: list[str]) -> float:
    started = time.perf_counter()
    for day in days:
        for job in JOBS:
            defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=day, run_config=QUIET)
    return time.perf_counter() - started


def versions(instance, days: list[str]) -> dict[str, str]:
    records = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("customer_features"), asset_partitions=days), limit=len(days)
    ).records
    return {r.partition_key: r.asset_materialization.tags["dagster/data_version"] for r in records}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--customers", type=int, default=5000)
    parser.add_argument("--days", type=int, default=180)
    parser.add_argument("--per-day", type=int, default=30, help="days backfilled one run per day")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        simulator = {"n_customers": args.customers, "days": args.days, "start": "2026-01-01", "seed": 11}
        first = date.fromisoformat(simulator["start"])
        all_days = [(first + timedelta(days=i)).isoformat() for i in range(args.days)]
        settings = load_settings(
            DEFAULT_CONFIG, data_dir=tmp, simulator=simulator, start_date=all_days[0], end_date=all_days[-1]
        )
        print(fill_simulated_source(settings, fresh=True))
        instance = dagster_instance(Path(tmp, "dagster_home"))
        defs = build_definitions(settings)
        defs.resolve_job_def("reference_data_job").execute_in_process(instance=instance, run_config=QUIET)
        tail = all_days[-args.per_day :]

        whole = run_range(defs, instance, all_days[0], all_days[-1])
        range_tail = run_range(defs, instance, tail[0], tail[-1])
        from_range = versions(instance, tail)
        per_day = run_per_day(defs, instance, tail)
        from_days = versions(instance, tail)
        instance.dispose()

    same = from_range == from_days and len(from_days) == len(tail)
    print()
    print(f"{args.customers:,} customers; jobs {', '.join(JOBS)} (raw -> features, with their checks)")
    print("| shape | days | seconds | seconds per day |")
    print("|---|---|---|---|")
    print(f"| one run per day (baseline) | {len(tail)} | {per_day:.1f} | {per_day / len(tail):.2f} |")
    print(f"| one range run, per-day truth | {len(tail)} | {range_tail:.1f} | {range_tail / len(tail):.2f} |")
    print(f"| one range run, per-day truth | {args.days} | {whole:.1f} | {whole / args.days:.2f} |")
    print(f"speed-up of the range run over one run per day ({len(tail)} days): {per_day / range_tail:.1f}x")
    print(f"data versions equal day by day in both shapes: {same}")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
