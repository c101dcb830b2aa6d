"""churn_labels: one label per customer in the population and as-of day, once its horizon is complete."""

from datetime import date, timedelta

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    BackfillPolicy,
    MaterializeResult,
    TimeWindowPartitionMapping,
    asset,
)

from fti_assets.features.transform import lookback_start
from fti_assets.metadata import column_schema
from fti_assets.partitions import DaySlices, daily_partitions, run_days, run_days_text
from fti_assets.resources.lake import LakeResource, days
from fti_assets.settings import ProjectSettings
from fti_assets.training.assets.common import LABELS, OWNERS
from fti_assets.training.labels import compute_churn_labels, label_days


def build_churn_labels(settings: ProjectSettings) -> AssetsDefinition:
    lookback_days = (settings.start_date - lookback_start(settings.start_date, settings.active_window_days)).days
    horizon = settings.label_horizon_days

    @asset(
        name=LABELS,
        group_name="training",
        partitions_def=daily_partitions(settings),
        backfill_policy=BackfillPolicy.single_run(),
        deps=[
            AssetDep(
                "raw_transactions",
                partition_mapping=TimeWindowPartitionMapping(
                    start_offset=-lookback_days,
                    end_offset=horizon,
                    allow_nonexistent_upstream_partitions=True,
                ),
            )
        ],
        kinds={"pandas", "parquet"},
        owners=OWNERS,
        code_version="1",
        description=(
            f"churned = 1 when a customer active on day D buys nothing in (D, D+{horizon} days]. Reads raw days "
            "after D, so a day whose horizon is not complete yet gets no labels (and is labelled once it is)."
        ),
    )
    def churn_labels(context: AssetExecutionContext, lake: LakeResource):
        first, end = run_days(context)
        written = [d for d in lake.written_days("raw_transactions") if d <= settings.end_date]
        last_complete = written[-1] if written else None
        first, labelled_end = label_days(first, end, horizon, last_complete)
        transactions = lake.read_days(
            "raw_transactions",
            lookback_start(first, settings.active_window_days),
            labelled_end + timedelta(days=horizon),
            columns=["customer_id", "day", "amount"],
        )
        labels = compute_churn_labels(
            transactions, first, labelled_end, settings.active_window_days, horizon, settings.source.timezone
        )
        label_slices = DaySlices.of(labels, "as_of_day")
        labelled = {d.isoformat() for d in days(first, labelled_end)}
        lake.write_days(LABELS, label_slices, sorted(labelled))
        unlabelled = (end - labelled_end).days
        context.log.info(
            f"{len(labels)} labels for {(labelled_end - first).days} days; {unlabelled} days wait for their horizon"
        )
        # float64: an empty frame (every day still inside its horizon) has an object column here.
        positive_rate = labels.groupby("as_of_day")["churned"].mean().astype("float64").round(4).to_dict()
        label_slices.report(
            context,
            context.partition_keys,
            {
                key: {"labelled": True, "positive_rate": positive_rate.get(key, 0.0)}
                if key in labelled
                else {
                    "labelled": False,
                    "waiting_for_horizon_until": (date.fromisoformat(key) + timedelta(days=horizon)).isoformat(),
                }
                for key in context.partition_keys
            },
        )
        return MaterializeResult(
            metadata={
                "dagster/column_schema": column_schema(labels),
                "run_days": run_days_text(context),
                "horizon_days": horizon,
            }
        )

    return churn_labels
