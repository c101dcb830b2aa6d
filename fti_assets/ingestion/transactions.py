"""raw_transactions: source rows -> standardized, validated, day-partitioned raw data in the lake."""

from datetime import date

import pandas as pd
from dagster import (
    AssetCheckKey,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)

from fti_assets.ingestion.standardize import (
    normalize_ids,
    standardize_transactions,
)
from fti_assets.metadata import column_schema
from fti_assets.monitoring.quality import history_days, new_version_issues
from fti_assets.partitions import (
    DayCheck,
    DaySlices,
    JudgedDays,
    daily_freshness,
    daily_partitions,
    day_check_events,
    run_days,
    run_days_text,
)
from fti_assets.resources.lake import LakeResource, write_parquet_atomic
from fti_assets.resources.source import SourceResource
from fti_assets.settings import ProjectSettings

OWNERS = ["team:data-engineering"]
QUARANTINE = "quarantine/raw_transactions"
REQUIRED = ["transaction_id", "customer_id", "ts", "amount"]
ACCOUNTING_CHECK, QUALITY_CHECK = "rows_accounted_for", "raw_data_quality"


def judge_new_versions(
    check_key: AssetCheckKey,
    lake: LakeResource,
    accepted: pd.DataFrame,
    accepted_days: DaySlices,
    first: date,
    day_keys: list[str],
    monitoring,
) -> JudgedDays:
    """raw_data_quality of each day's new version, judged before anything is written: against the same
    weekday's history and against the day's published version."""
    published = lake.row_counts("raw_transactions", history_days(first) + [date.fromisoformat(k) for k in day_keys])
    issues = new_version_issues(
        accepted,
        day_keys,
        published,
        REQUIRED,
        ["amount"],
        monitoring.row_count_ratio_bounds,
        monitoring.row_count_min_median,
    )
    judged = JudgedDays(check_key)
    judged.add(
        issues,
        {key: {"rows": accepted_days.count(key), "published_rows": published.get(key, 0)} for key in issues},
        published,
    )
    return judged


def day_figures(accepted: pd.DataFrame, placed: pd.DataFrame, unknown_customer, keys: list[str]) -> dict[str, dict]:
    """Each day's own figures, from one grouping of the run's rows: customers, amount, unknown customers
    and the quarantine's reasons."""
    by_day = (
        accepted.assign(unknown_customer=unknown_customer)
        .groupby("day")
        .agg(
            customers=("customer_id", "nunique"),
            total_amount=("amount", "sum"),
            rows_unknown_customer=("unknown_customer", "sum"),
        )
        .round({"total_amount": 2})
        .to_dict(orient="index")
    )
    reasons: dict[str, dict[str, int]] = {}
    for (key, reason), count in placed.groupby(["day", "reason"]).size().items():
        reasons.setdefault(key, {})[reason] = int(count)
    return {
        key: {**by_day.get(key, {}), "quarantine_reasons": MetadataValue.json(reasons.get(key, {}))} for key in keys
    }


def build_raw_transactions(settings: ProjectSettings) -> AssetsDefinition:
    partitions = daily_partitions(settings)
    monitoring = settings.monitoring

    @asset(
        name="raw_transactions",
        freshness_policy=daily_freshness(),
        group_name="ingestion",
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        kinds={"sql", "pandas", "parquet"},
        owners=OWNERS,
        code_version="2",
        check_specs=[
            AssetCheckSpec(
                ACCOUNTING_CHECK,
                asset="raw_transactions",
                description="Every row read is accepted or quarantined: accepted + quarantined == read.",
                blocking=True,
                partitions_def=partitions,
            ),
            AssetCheckSpec(
                QUALITY_CHECK,
                asset="raw_transactions",
                description=(
                    "Judged on each day's new version before it is published: no nulls in ids, times and amounts; "
                    "amounts finite and positive; the row count is no outage or double load (below "
                    "monitoring.row_count_ratio_bounds[0] or above [1] times the median of the same weekday in "
                    "the 4 weeks before) and keeps most of the rows of the day's published version. A failing "
                    "day is not published: its previous version stays."
                ),
                blocking=True,
                partitions_def=partitions,
            ),
        ],
        description=(
            "Purchase transactions of one day from the source, mapped to the standard schema (configuration, "
            "not code), typed, in UTC and deduplicated by transaction id. Bad rows go to "
            "`quarantine/raw_transactions/<day>.parquet` with a reason; none are dropped. A day's new version "
            "is published only when raw_data_quality passes on it; an empty source is refused whole."
        ),
    )
    def raw_transactions(context: AssetExecutionContext, source: SourceResource, lake: LakeResource):
        first, end = run_days(context)
        now = pd.Timestamp.now(tz="UTC")
        context.log.info(f"reading {source.description} for {first} .. {end}")
        frame = source.read_transactions(first, end, now)
        if frame.empty and source.is_empty():
            raise Failure(
                description=(
                    f"{source.description} holds no transactions: an empty source is an outage, not data. "
                    "Nothing was written; every published day keeps its version."
                )
            )
        batch = standardize_transactions(frame, source.columns, source.timezone, now=now, day_range=(first, end))
        accepted = batch.accepted.sort_values(["day", "ts", "transaction_id"]).reset_index(drop=True)
        quarantined = batch.quarantined
        placed = quarantined[quarantined["day"].notna()].sort_values("day", kind="stable").reset_index(drop=True)
        accepted_days, quarantined_days = DaySlices.of(accepted, "day"), DaySlices.of(placed, "day")
        day_keys = context.partition_keys

        # Each day's new version is judged before it is published: a failing day keeps the version it had.
        quality = judge_new_versions(
            AssetCheckKey(context.asset_key, QUALITY_CHECK), lake, accepted, accepted_days, first, day_keys, monitoring
        )
        yield from quality.refuse_if_none_passed(context)
        withheld, published = quality.withheld, quality.published
        lake.write_days("raw_transactions", accepted_days, published)
        lake.write_days(QUARANTINE, quarantined_days, published)
        # Rows no day holds: without a usable time, or future-dated beyond the range. Replaced every run.
        stray = pd.concat([quarantined[quarantined["day"].isna()], batch.beyond_range], ignore_index=True)
        stray_path = lake.table_path(f"{QUARANTINE}_unplaceable")
        if len(stray) or stray_path.exists():
            write_parquet_atomic(stray, stray_path)
        yield from quality.withheld_observations(context)
        outside = source.count_outside_range(settings.start_date, settings.end_exclusive)
        if outside:
            context.log.warning(
                f"{outside} source rows have a time outside {settings.start_date} .. {settings.end_date}: no "
                f"partition reads them; {len(batch.beyond_range)} of them, dated in the future, are quarantined"
            )
        accounted = len(accepted) + len(quarantined) == batch.rows_read
        context.log.info(f"{batch.rows_read} rows read: {len(accepted)} accepted, {len(quarantined)} quarantined")

        # Flagged, not quarantined: a customer table is a snapshot, and a new customer buys before it is refreshed.
        known = source.read_customer_ids()
        unknown = ~accepted["customer_id"].isin(normalize_ids(known)) if known is not None else False
        unknown_rows = int(pd.Series(unknown).sum())
        if unknown_rows:
            context.log.warning(f"{unknown_rows} accepted rows name customers missing from {source.customers.table}")

        figures = day_figures(accepted, placed, unknown, published)
        accepted_days.report(
            context,
            published,
            {
                key: {
                    **figures[key],
                    "rows_quarantined": quarantined_days.count(key),
                    "file": MetadataValue.path(str(lake.day_path("raw_transactions", date.fromisoformat(key)))),
                }
                for key in published
            },
        )
        run_totals = {
            "run_rows_read": batch.rows_read,
            "run_rows_accepted": len(accepted),
            "run_rows_quarantined": len(quarantined),
            "run_rows_without_day": int(quarantined["day"].isna().sum()),
            "run_rows_unknown_customer": unknown_rows,
            "run_days_withheld": len(withheld),
        }
        yield MaterializeResult(
            metadata={
                "dagster/column_schema": column_schema(accepted),
                "run_days": run_days_text(context),
                "source_rows_outside_date_range": outside,
                "source_rows_outside_date_range_quarantined": len(batch.beyond_range),
                **({"withheld_days": MetadataValue.json(withheld)} if withheld else {}),
            }
        )
        # The accounting holds for the run's read as a whole; each day reports it with its own counts.
        yield from day_check_events(
            context,
            AssetCheckKey(context.asset_key, ACCOUNTING_CHECK),
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
        yield from quality.check_events(context)

    return raw_transactions
