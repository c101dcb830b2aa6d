"""Asset checks: data quality of raw and feature days, feature drift (blocking), prediction drift."""

from datetime import date, timedelta

import pandas as pd
from dagster import AssetCheckExecutionContext, AssetCheckResult, AssetCheckSeverity, MetadataValue, asset_check

from fti_assets.monitoring.drift import evaluate_drift
from fti_assets.monitoring.drift_gate import DRIFTED, DriftGate, HeldBack, drift_settings
from fti_assets.monitoring.quality import WEEKS, quality_issues
from fti_assets.partitions import daily_partitions
from fti_assets.resources.lake import LakeResource
from fti_assets.resources.mlflow import ModelRegistryResource
from fti_assets.resources.predictions import PredictionStoreResource
from fti_assets.settings import ProjectSettings


def _day_quality(
    lake: LakeResource,
    asset: str,
    days: list[str],
    required: list[str],
    non_negative: list[str],
    settings: ProjectSettings,
    judge_row_counts: bool = True,
) -> dict[str, list[str]]:
    """Issues per day; the row-count rule compares each day with the same weekday of the weeks before."""
    lookback = 7 * WEEKS
    first = date.fromisoformat(days[0]) - timedelta(days=lookback)
    counts = {d.isoformat(): 0 for d in (first + timedelta(days=i) for i in range(lookback + len(days)))}
    if judge_row_counts:  # each count reads a file
        for day in counts:
            path = lake.day_path(asset, date.fromisoformat(day))
            if path.exists():
                counts[day] = len(pd.read_parquet(path, columns=required[:1]))
    ordered = list(counts)
    issues = {}
    for day in days:
        frame = pd.read_parquet(lake.day_path(asset, date.fromisoformat(day)))
        history = [counts[d] for d in ordered[: ordered.index(day)]] if judge_row_counts else []
        monitoring = settings.monitoring
        found = quality_issues(
            frame, required, non_negative, history, monitoring.row_count_ratio_bounds, monitoring.row_count_min_median
        )
        if found:
            issues[day] = found
    return issues


def _quality_result(issues: dict[str, list[str]], days: list[str]) -> AssetCheckResult:
    return AssetCheckResult(
        passed=not issues,
        metadata={
            "days_checked": len(days),
            "days_with_issues": len(issues),
            "issues": MetadataValue.json({d: i for d, i in list(issues.items())[:50]}),
        },
    )


def build_monitoring_checks(settings: ProjectSettings) -> list:
    partitions = daily_partitions(settings)

    @asset_check(
        asset="raw_transactions",
        name="raw_data_quality",
        partitions_def=partitions,
        blocking=True,
        description="No nulls in ids, times and amounts; amounts finite and positive; row count not anomalous.",
    )
    def raw_data_quality(context: AssetCheckExecutionContext, lake: LakeResource):
        keys = context.partition_keys
        return _quality_result(
            _day_quality(
                lake, "raw_transactions", keys, ["transaction_id", "customer_id", "ts", "amount"], ["amount"], settings
            ),
            keys,
        )

    @asset_check(
        asset="customer_features",
        name="feature_data_quality",
        partitions_def=partitions,
        blocking=True,
        description="No nulls in feature values, no negative counts or sums.",
    )
    def feature_data_quality(context: AssetCheckExecutionContext, lake: LakeResource):
        from fti_assets.features.transform import FEATURE_COLUMNS

        keys = context.partition_keys
        return _quality_result(
            # Feature rows are the active population: it grows through the look-back's warm-up and shrinks
            # with churn, smoothly; a broken load shows in the raw check's row counts.
            _day_quality(
                lake, "customer_features", keys, ["customer_id", *FEATURE_COLUMNS], FEATURE_COLUMNS, settings, False
            ),
            keys,
        )

    @asset_check(
        asset="customer_features",
        name="feature_drift",
        partitions_def=partitions,
        blocking=True,
        description=(
            "Evidently drift of each day's features against the champion's reference (the features of its "
            "validation and test periods), method pinned in settings. A drifted day is held back from "
            "predictions in every later run too, until a new champion or an explicit override."
        ),
    )
    def feature_drift(context: AssetCheckExecutionContext, registry: ModelRegistryResource):
        gate = DriftGate(settings, registry.champion())
        # The features were just written: judge them afresh rather than trust an older verdict.
        verdicts = [gate.verdict(day, refresh=True) for day in context.partition_keys]
        drifted = [v for v in verdicts if v.status == DRIFTED]
        for verdict in drifted:
            HeldBack(settings).hold(verdict)
        statuses = pd.Series([v.status for v in verdicts]).value_counts().to_dict()
        metadata = {
            "champion_version": gate.model_version or "none",
            "days_by_status": MetadataValue.json(statuses),
            "drifted_days": MetadataValue.json([v.day for v in drifted]),
        }
        if drifted:
            worst = gate.write_report(max(drifted, key=lambda v: v.drift["drifted_share"]))
            metadata.update(
                {
                    "drifted_share": worst.drift["drifted_share"],
                    "columns": MetadataValue.json(worst.drift["columns"]),
                    "method": settings.monitoring.drift_method,
                    "report": MetadataValue.path(worst.report),
                }
            )
        return AssetCheckResult(passed=not drifted, metadata=metadata)

    @asset_check(
        asset="churn_predictions",
        name="prediction_drift",
        partitions_def=partitions,
        description="Drift of each day's score distribution against the champion's validation scores.",
    )
    def prediction_drift(
        context: AssetCheckExecutionContext, registry: ModelRegistryResource, predictions: PredictionStoreResource
    ):
        champion = registry.champion()
        if champion is None:
            return AssetCheckResult(passed=True, metadata={"reason": "no champion yet"})
        reference = registry.validation_scores(champion)
        scored = predictions.read_days(context.partition_keys)
        scored = scored[scored["model_version"] == str(champion.version)]
        if scored.empty:
            return AssetCheckResult(passed=True, metadata={"reason": "no predictions of the champion in these days"})
        result = evaluate_drift(reference, scored, ["score"], drift_settings(settings))
        return AssetCheckResult(
            passed=not result.drifted,
            severity=AssetCheckSeverity.WARN,
            metadata={"champion_version": str(champion.version), **result.as_metadata()},
        )

    return [raw_data_quality, feature_data_quality, feature_drift, prediction_drift]
