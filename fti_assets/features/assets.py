"""Feature pipeline: raw transactions -> daily customer features -> Feast offline and online stores."""

import time
from datetime import date

import pandas as pd
from dagster import (
    AssetCheckKey,
    AssetCheckSpec,
    AssetDep,
    AssetExecutionContext,
    BackfillPolicy,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    TimeWindowPartitionMapping,
    asset,
)

from fti_assets.features.spec import as_config, history_start
from fti_assets.features.transform import PurchaseDays, compute_customer_features
from fti_assets.metadata import column_schema
from fti_assets.monitoring.quality import value_issues_by_day
from fti_assets.partitions import (
    DaySlices,
    JudgedDays,
    Progress,
    chunk_bounds,
    chunks,
    daily_partitions,
    run_days,
    run_days_text,
)
from fti_assets.resources.feast import FeastResource, repo_version
from fti_assets.resources.lake import LakeResource
from fti_assets.settings import PROJECT_ROOT, ProjectSettings
from fti_assets.versioning import frame_version, text_version

OWNERS = ["team:ml-platform"]
FEATURE_TABLE = "customer_features"
QUALITY_CHECK = "feature_data_quality"


def build_feature_assets(settings: ProjectSettings) -> list:
    table_spec = settings.feature_table_spec
    partitions = daily_partitions(settings)
    # What a day's features read: the whole history before it, or the look-back of the longest window.
    read_from = history_start(settings.end_date, settings.active_window_days, table_spec, settings.start_date)
    lookback_days = (settings.end_date - read_from).days

    @asset(
        name="feature_definitions",
        group_name="features",
        kinds={"feast"},
        owners=OWNERS,
        # Any edit of feature_repo/ changes the code version, so the UI marks what depends on it as stale.
        code_version=repo_version(PROJECT_ROOT / "feature_repo"),
        description=(
            "`feast apply` of feature_repo/: the customer entity, the daily feature source, the feature views "
            "and the versioned FeatureServices that training and inference ask for by name."
        ),
    )
    def feature_definitions(context: AssetExecutionContext, feast: FeastResource):
        objects = feast.definitions()
        store = feast.store()
        store.apply(objects)
        services = {o.name: feast.feature_schema_hash(o.name) for o in store.list_feature_services()}
        context.log.info(f"applied {len(objects)} Feast objects; feature services: {sorted(services)}")
        return MaterializeResult(
            metadata={
                "feature_views": MetadataValue.json(sorted(v.name for v in store.list_feature_views())),
                "feature_services": MetadataValue.json(services),
                "registry": MetadataValue.text(feast.registry_location()),
            },
            data_version=DataVersion(feast.definitions_version()),
        )

    @asset(
        name=FEATURE_TABLE,
        group_name="features",
        partitions_def=partitions,
        backfill_policy=BackfillPolicy.single_run(),
        deps=[
            AssetDep("raw_transactions", partition_mapping=TimeWindowPartitionMapping(start_offset=-lookback_days)),
            "raw_customers",
            "feature_definitions",
        ],
        kinds={"duckdb", "parquet", "feast"},
        owners=OWNERS,
        check_specs=[
            AssetCheckSpec(
                QUALITY_CHECK,
                asset=FEATURE_TABLE,
                partitions_def=partitions,
                blocking=True,
                description=(
                    "Judged on each day's new rows before they are written: no null customer or feature value, no "
                    "negative or non-finite value. A failing day is not published: its previous version stays."
                ),
            )
        ],
        # The features the settings declare are part of the code: a new service version marks the table stale.
        code_version=f"2.{text_version([repr(as_config(settings.all_feature_services))])}",
        description=(
            "Per active customer and day, as of the end of the day: the columns of every feature service's view "
            "(settings: feature_services), e.g. spend sum/mean/max, transactions and purchase days over 7/30/90 "
            "days and the whole history, days since the last purchase, tenure, purchase gaps and trend. The Feast "
            "offline source of the feature views. A day is published only when feature_data_quality passes on it."
        ),
    )
    def customer_features(context: AssetExecutionContext, lake: LakeResource):
        first, end = run_days(context)
        customers = pd.read_parquet(lake.table_path("raw_customers"))
        # The purchase log is small beside customers x days: read and reduced to purchase days once per run.
        raw_first = history_start(first, settings.active_window_days, table_spec, settings.start_date)
        transactions = lake.read_days("raw_transactions", raw_first, end, columns=["customer_id", "day", "amount"])
        purchases = PurchaseDays.of(transactions)
        progress = Progress(context, len(context.partition_keys))
        quality = JudgedDays(AssetCheckKey(context.asset_key, QUALITY_CHECK))
        written = {day.isoformat() for day in lake.written_days(FEATURE_TABLE)}
        # No null customer or value, no negative or non-finite value: every feature is a count, sum, mean,
        # maximum, gap or ratio.
        required = ["customer_id", *table_spec.columns]
        # A chunk of days at a time: memory follows the chunk, not the range.
        for chunk in chunks(context.partition_keys, settings.range_chunk_days):
            features = compute_customer_features(
                purchases,
                customers,
                *chunk_bounds(chunk),
                settings.active_window_days,
                settings.source.timezone,
                table_spec,
            )
            feature_days = DaySlices.of(features, "as_of_day")
            # Each day's new rows are judged before they are written.
            issues = value_issues_by_day(features, "as_of_day", chunk, required, table_spec.columns)
            quality.add(issues, {key: {"rows": feature_days.count(key)} for key in chunk}, written)
            published = [key for key in chunk if quality.verdicts[key].passed]
            lake.write_days(FEATURE_TABLE, feature_days, published)
            # Each day's own figures, from one grouping of the chunk's rows.
            means = features.groupby("as_of_day")[table_spec.columns].mean().round(4).add_prefix("mean_")
            means = means.to_dict(orient="index")
            feature_days.report(
                context,
                published,
                {
                    key: {
                        **means.get(key, {}),
                        "file": MetadataValue.path(str(lake.day_path(FEATURE_TABLE, date.fromisoformat(key)))),
                    }
                    for key in published
                },
            )
            progress.add(len(chunk), len(features))
        yield from quality.refuse_if_none_passed(context)
        yield from quality.withheld_observations(context)
        withheld = quality.withheld
        yield MaterializeResult(
            metadata={
                "dagster/column_schema": column_schema(features),
                "run_days": run_days_text(context),
                **({"withheld_days": MetadataValue.json(withheld)} if withheld else {}),
            }
        )
        yield from quality.check_events(context)

    @asset(
        name="online_features",
        group_name="features",
        deps=[AssetDep(FEATURE_TABLE), "feature_definitions"],
        kinds={"feast", "sqlite"},
        owners=OWNERS,
        code_version="1",
        description=(
            "The latest feature values per customer, written from the offline table into the Feast online store "
            "(SQLite by default, Redis by configuration) with batched writes that store exactly what Feast's "
            "materialize stores (a test compares them), for online serving."
        ),
    )
    def online_features(context: AssetExecutionContext, feast: FeastResource, lake: LakeResource):
        written = lake.written_days(FEATURE_TABLE)
        if not written:
            raise ValueError("no customer_features partition has been materialized yet")
        from fti_assets.features.online_write import write_online_features

        # The latest day only: rows older than the views' one-day TTL describe customers no longer active.
        latest = pd.read_parquet(lake.day_path(FEATURE_TABLE, written[-1]))
        store = feast.store()
        started = time.perf_counter()
        views = [view.name for view in store.list_feature_views()]
        for view in views:
            # Batched writes of exactly what `FeatureStore.materialize` stores, an order of magnitude faster.
            write_online_features(store, view, latest)
        seconds = time.perf_counter() - started
        context.log.info(f"wrote {len(latest)} customers as of {written[-1]} to {views} in {seconds:.1f} s")
        return MaterializeResult(
            metadata={
                "as_of_day": written[-1].isoformat(),
                "dagster/row_count": len(latest),
                "entities": len(latest),
                "write_seconds": round(seconds, 2),
                "feature_views": MetadataValue.json(views),
                "online_store": feast.online_store,
            },
            data_version=DataVersion(frame_version(latest)),
        )

    return [feature_definitions, customer_features, online_features]
