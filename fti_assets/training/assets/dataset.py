"""training_dataset: labels joined point-in-time to their features, split by time, one file per content hash."""

from dagster import (
    AssetDep,
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    MetadataValue,
    Output,
    asset,
)

from fti_assets.metadata import column_schema, preview
from fti_assets.partitions import DaySlices, Progress, chunks
from fti_assets.resources.feast import FeastResource
from fti_assets.resources.lake import LakeResource
from fti_assets.settings import ProjectSettings
from fti_assets.training.assets.common import LABELS, OWNERS
from fti_assets.training.dataset import VersionedParquetWriter, assign_split, dataset_rows, split_by_time


def build_training_dataset(settings: ProjectSettings) -> AssetsDefinition:
    @asset(
        name="training_dataset",
        group_name="training",
        deps=[AssetDep(LABELS), AssetDep("customer_features"), "feature_definitions"],
        kinds={"feast", "parquet"},
        owners=OWNERS,
        code_version="3",
        description=(
            f"Labels joined point-in-time to the features of the `{settings.feature_service}` FeatureService "
            "(Feast's get_historical_features semantics, as one DuckDB ASOF join), split by time into train / "
            f"validation / test; the train split keeps one example per customer every "
            f"{settings.split.train_stride_days} days, and none of the last {settings.label_horizon_days} days "
            "before validation, whose labels look into it (purged). Written once per content hash under "
            "datasets/training/ and never overwritten."
        ),
    )
    def training_dataset(context: AssetExecutionContext, lake: LakeResource, feast: FeastResource):
        labels = lake.read_days(LABELS, settings.start_date, settings.end_exclusive)
        if labels.empty:
            raise ValueError("no labelled day yet: materialize churn_labels for days whose horizon is complete")
        periods = split_by_time(
            labels["as_of_day"].unique().tolist(),
            settings.split.validation_days,
            settings.split.test_days,
            settings.label_horizon_days,
        )
        stride = settings.split.train_stride_days
        labels = labels[dataset_rows(labels, periods, stride)]
        entity_df = labels[["customer_id", "event_timestamp", "as_of_day", "churned"]]
        label_days = DaySlices.of(entity_df, "as_of_day")
        feature_columns = feast.feature_columns(settings.feature_service)
        columns = ["customer_id", "event_timestamp", "as_of_day", "split", "churned", *feature_columns]
        progress = Progress(context, len(label_days.bounds))
        writer = VersionedParquetWriter(settings.path("datasets", "training"))
        split_rows, positives, missing, head = {}, 0, 0, None
        try:
            # A chunk of days at a time, each written as it is joined: memory follows the chunk. Each row's
            # point-in-time join is its own, so the chunks change nothing in the result.
            for chunk in chunks(sorted(label_days.bounds), settings.range_chunk_days):
                start, end = label_days.bounds[chunk[0]][0], label_days.bounds[chunk[-1]][1]
                part = feast.historical_features(settings.feature_service, entity_df.iloc[start:end])
                # Sorted, so the same inputs give the same bytes and version; float features, so every part
                # has one schema whether or not its ints have gaps.
                part = part.sort_values(["as_of_day", "customer_id"], ignore_index=True)
                part["customer_id"] = part["customer_id"].astype("string")
                part["split"] = assign_split(part["as_of_day"], periods)
                part = part[columns].astype({c: "float64" for c in feature_columns})
                writer.write(part)
                for name, count in part["split"].value_counts().items():
                    split_rows[name] = split_rows.get(name, 0) + int(count)
                positives += int(part["churned"].sum())
                missing += int(part[feature_columns].isna().any(axis=1).sum())
                head = part.head(5) if head is None else head
                progress.add(len(chunk), len(part))
            version, path = writer.publish()
        except BaseException:
            writer.discard()
            raise
        context.log.info(
            f"training dataset {version}: {writer.rows} rows {split_rows} (train: one example per customer "
            f"every {stride} days; purged: {periods.purged or 'none'})"
        )
        value = {
            "version": version,
            "path": str(path),
            "feature_service": settings.feature_service,
            "feature_schema_hash": feast.feature_schema_hash(settings.feature_service),
            "features": feature_columns,
            "periods": periods.as_metadata(),
        }
        return Output(
            value,
            metadata={
                "dataset_version": version,
                "positive_rate": positives / max(writer.rows, 1),
                "rows_per_split": MetadataValue.json(split_rows),
                "train_stride_days": stride,
                "periods": MetadataValue.json(periods.as_metadata()),
                "feature_refs": MetadataValue.json([f"{settings.feature_service}: {c}" for c in feature_columns]),
                "rows_missing_features": missing,
                "dagster/row_count": writer.rows,
                "dagster/column_schema": column_schema(head),
                "preview": preview(head),
                "file": MetadataValue.path(str(path)),
            },
            data_version=DataVersion(version),
        )

    return training_dataset
