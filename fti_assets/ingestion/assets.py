"""Data collection: source rows -> standardized, validated, day-partitioned raw data in the lake."""

from datetime import date

import pandas as pd
from dagster import (
    AssetCheckKey,
    AssetCheckSpec,
    AssetExecutionContext,
    BackfillPolicy,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from fti_assets.ingestion.standardize import (
    customers_from_transactions,
    standardize_customers,
    standardize_transactions,
)
from fti_assets.metadata import column_schema, table_metadata
from fti_assets.partitions import (
    DayCheck,
    DaySlices,
    daily_freshness,
    daily_partitions,
    day_check_events,
    run_days,
)
from fti_assets.resources.lake import LakeResource, write_parquet_atomic
from fti_assets.resources.source import SourceResource
from fti_assets.settings import ProjectSettings
from fti_assets.versioning import frame_version

OWNERS = ["team:data-engineering"]
QUARANTINE = "quarantine/raw_transactions"


def build_ingestion_assets(settings: ProjectSettings) -> list:
    @asset(
        name="raw_transactions",
        freshness_policy=daily_freshness(),
        group_name="ingestion",
        partitions_def=daily_partitions(settings),
        backfill_policy=BackfillPolicy.single_run(),
        kinds={"sql", "pandas", "parquet"},
        owners=OWNERS,
        code_version="1",
        check_specs=[
            AssetCheckSpec(
                "rows_accounted_for",
                asset="raw_transactions",
                description="Every row read is accepted or quarantined: accepted + quarantined == read.",
                blocking=True,
                partitions_def=daily_partitions(settings),
            )
        ],
        description=(
            "Purchase transactions of one day from the source, mapped to the standard schema (configuration, "
            "not code), typed, in UTC and deduplicated by transaction id. Bad rows go to "
            "`quarantine/raw_transactions/<day>.parquet` with a reason; none are dropped."
        ),
    )
    def raw_transactions(context: AssetExecutionContext, source: SourceResource, lake: LakeResource):
        first, end = run_days(context)
        context.log.info(f"reading {source.description} for {first} .. {end}")
        frame = source.read_transactions(first, end)
        batch = standardize_transactions(
            frame, source.columns, source.timezone, now=pd.Timestamp.now(tz="UTC"), day_range=(first, end)
        )
        accepted = batch.accepted.sort_values(["day", "ts", "transaction_id"]).reset_index(drop=True)
        quarantined = batch.quarantined
        placed = quarantined[quarantined["day"].notna()].sort_values("day", kind="stable").reset_index(drop=True)
        accepted_days, quarantined_days = DaySlices.of(accepted, "day"), DaySlices.of(placed, "day")
        day_keys = context.partition_keys
        for key in day_keys:
            day = date.fromisoformat(key)
            lake.write_day("raw_transactions", day, accepted_days.rows(key))
            lake.write_day(QUARANTINE, day, quarantined_days.rows(key))
        unplaceable = quarantined[quarantined["day"].isna()]
        if len(unplaceable):
            # Rows without a usable time belong to no day; a file source re-reads them whole every run.
            write_parquet_atomic(unplaceable.reset_index(drop=True), lake.table_path(f"{QUARANTINE}_unplaceable"))
        outside = source.count_outside_range(settings.start_date, settings.end_exclusive)
        if outside:
            context.log.warning(
                f"{outside} source rows have no time or one outside {settings.start_date} .. {settings.end_date}: "
                "no partition reads them"
            )
        accounted = len(accepted) + len(quarantined) == batch.rows_read
        context.log.info(f"{batch.rows_read} rows read: {len(accepted)} accepted, {len(quarantined)} quarantined")

        # Each day's own figures, from one grouping of the run's rows.
        by_day = accepted.groupby("day").agg(customers=("customer_id", "nunique"), total_amount=("amount", "sum"))
        by_day = by_day.round({"total_amount": 2}).to_dict(orient="index")
        reasons: dict[str, dict[str, int]] = {}
        for (key, reason), count in placed.groupby(["day", "reason"]).size().items():
            reasons.setdefault(key, {})[reason] = int(count)
        accepted_days.report(
            context,
            day_keys,
            {
                key: {
                    **by_day.get(key, {}),
                    "rows_quarantined": quarantined_days.count(key),
                    "quarantine_reasons": MetadataValue.json(reasons.get(key, {})),
                    "file": MetadataValue.path(str(lake.day_path("raw_transactions", date.fromisoformat(key)))),
                }
                for key in day_keys
            },
        )
        rows_accounted = AssetCheckKey(context.asset_key, "rows_accounted_for")
        run_totals = {
            "run_rows_read": batch.rows_read,
            "run_rows_accepted": len(accepted),
            "run_rows_quarantined": len(quarantined),
            "run_rows_without_day": len(unplaceable),
        }
        yield MaterializeResult(
            metadata={
                "dagster/column_schema": column_schema(accepted),
                "run_days": f"{first} .. {end}",
                "source_rows_outside_date_range": outside,
            }
        )
        # The accounting holds for the run's read as a whole; each day reports it with its own counts.
        yield from day_check_events(
            context,
            rows_accounted,
            {
                key: DayCheck(
                    passed=accounted,
                    metadata={
                        "rows_accepted": accepted_days.count(key),
                        "rows_quarantined": quarantined_days.count(key),
                        **run_totals,
                    },
                )
                for key in day_keys
            },
            blocking=True,
        )

    @asset(
        name="raw_customers",
        group_name="ingestion",
        kinds={"sql", "pandas", "parquet"},
        owners=OWNERS,
        code_version="1",
        description=(
            "Snapshot of customer attributes (country, segment, signup date) in the standard schema. "
            "A source without a customer table gets them derived from its transactions "
            "(first purchase as signup, most frequent country)."
        ),
    )
    def raw_customers(context: AssetExecutionContext, source: SourceResource, lake: LakeResource):
        source_frame = source.read_customers()
        if source_frame is None:
            read = source.read_transactions(settings.start_date, settings.end_exclusive)
            batch = standardize_transactions(
                read,
                source.columns,
                source.timezone,
                now=pd.Timestamp.now(tz="UTC"),
                day_range=(settings.start_date, settings.end_exclusive),
            )
            customers = customers_from_transactions(batch.accepted)
            origin, rows_read = "derived from transactions", len(read)
        else:
            customers = standardize_customers(source_frame, source.customers, source.timezone)
            origin, rows_read = f"table {source.customers.table}", len(source_frame)
        customers = customers.sort_values("customer_id").reset_index(drop=True)
        path = write_parquet_atomic(customers, lake.table_path("raw_customers"))
        context.log.info(f"{len(customers)} customers ({origin})")
        return MaterializeResult(
            metadata={
                "origin": origin,
                "source_rows": rows_read,
                "rows_without_customer_id": rows_read - len(customers) if source_frame is not None else 0,
                **table_metadata(customers, path),
            },
            data_version=DataVersion(frame_version(customers)),
        )

    return [raw_transactions, raw_customers]
