"""Asset checks: data quality of feature days, feature drift, prediction drift. (The raw data's checks are
judged by `raw_transactions` itself, before a day is published: see `fti_assets.ingestion.assets`.)"""

from datetime import date

from dagster import AssetCheckExecutionContext, AssetCheckSeverity, MetadataValue, asset_check

from fti_assets.monitoring.drift import evaluate_drift
from fti_assets.monitoring.drift_gate import (
    DRIFT_CHECK,
    FEATURE_TABLE,
    NO_FEATURES,
    DriftGate,
    HeldBack,
    drift_day_check,
    drift_settings,
    in_training_period,
)
from fti_assets.monitoring.quality import value_issues_by_day
from fti_assets.partitions import DayCheck, chunks, daily_partitions, day_check_events
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
    chunk_days: int,
) -> dict[str, DayCheck]:
    """A result per day: nulls and value ranges of the day's rows, ``chunk_days`` days' files read and judged
    at a time (one read and one grouping each; memory follows the chunk, not the range)."""
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys(["as_of_day", *required, *non_negative]))
    results = {}
    for chunk in chunks(days, chunk_days):
        paths = {day: lake.day_path(asset, date.fromisoformat(day)) for day in chunk}
        written = [day for day, path in paths.items() if path.exists()]
        if not written:
            continue
        frame = pq.ParquetDataset([str(paths[day]) for day in written]).read(columns=columns).to_pandas()
        found = value_issues_by_day(frame, "as_of_day", written, required, non_negative)
        rows = frame["as_of_day"].value_counts()
        for day in written:
            results[day] = DayCheck(
                passed=not found[day],
                metadata={"rows": int(rows.get(day, 0)), "issues": MetadataValue.json(found[day])},
                description="; ".join(found[day]) if found[day] else None,
            )
    return results


def build_monitoring_checks(settings: ProjectSettings) -> list:
    partitions = daily_partitions(settings)

    @asset_check(
        asset=FEATURE_TABLE,
        name="feature_data_quality",
        partitions_def=partitions,
        blocking=True,
        description="No nulls in feature values, no negative counts or sums.",
    )
    def feature_data_quality(context: AssetCheckExecutionContext, lake: LakeResource):
        columns = settings.feature_table_spec.columns
        # Feature rows are the active population: it grows through the look-back's warm-up and shrinks
        # with churn, smoothly; a broken load shows in the raw check's row counts.
        results = _day_quality(
            lake,
            FEATURE_TABLE,
            context.partition_keys,
            ["customer_id", *columns],
            columns,
            settings.range_chunk_days,
        )
        yield from day_check_events(context, context.check_specs[0].key, results, blocking=True)

    @asset_check(
        asset=FEATURE_TABLE,
        name=DRIFT_CHECK,
        partitions_def=partitions,
        # Not blocking: churn_predictions holds drifted days back itself, in every run, and says so on the
        # day; failing this run would hide that and show the day as a crash.
        blocking=False,
        description=(
            "Drift of each day's features against the champion's reference (the features of its validation and "
            "test periods), per column with the method pinned in settings, through Evidently's stat tests. A "
            "drifted day is held back from predictions in every run (sensor, backfill, UI), until a new champion "
            "passes it or an operator overrides. Not evaluated (skipped) while there is no champion: nothing to "
            "compare with."
        ),
    )
    def feature_drift(context: AssetCheckExecutionContext, registry: ModelRegistryResource):
        gate = DriftGate(settings, registry.champion())
        # The features were just written: judge them afresh rather than trust an older verdict. A day without
        # feature rows (nobody active in the window) has nothing to compare: skipped, with the reason logged.
        verdicts = [gate.verdict(day, refresh=True) for day in context.partition_keys]
        empty = [v.day for v in verdicts if v.status == NO_FEATURES]
        if empty:
            context.log.warning(f"{len(empty)} days have no feature rows, nothing to compare: {', '.join(empty)}")
        reported = gate.report_most_drifted(verdicts)
        held_back = HeldBack(settings)
        for verdict in reported.values():
            held_back.hold(verdict)
        results = {v.day: check for v in verdicts if (check := drift_day_check(settings, reported.get(v.day, v)))}
        not_compared = [v for v in verdicts if v.day not in results]
        if not_compared:
            reasons = sorted({v.status.replace("_", " ") for v in not_compared})
            context.log.info(f"{len(not_compared)} days not compared ({', '.join(reasons)}): they read as skipped")
        yield from day_check_events(context, context.check_specs[0].key, results, blocking=False)

    @asset_check(
        asset="churn_predictions",
        name="prediction_drift",
        partitions_def=partitions,
        description=(
            "Drift of each day's score distribution against the champion's validation scores, with the "
            "feature drift method and column threshold (a warning, not a gate). Days inside the champion's "
            "training period pass as its reference; days without predictions of the champion are skipped."
        ),
    )
    def prediction_drift(
        context: AssetCheckExecutionContext, registry: ModelRegistryResource, predictions: PredictionStoreResource
    ):
        champion = registry.champion()
        results = {}
        if champion is not None:
            reference = registry.validation_scores(champion)
            # Scores of the days the champion learnt from, the look-back's warm-up included, are not drift:
            # only the later days' scores are read back.
            last_training_day = DriftGate(settings, champion).reference().last_training_day
            learnt = [day for day in context.partition_keys if day <= last_training_day]
            results = {day: in_training_period(str(champion.version)) for day in learnt}
            judged = sorted(set(context.partition_keys) - set(learnt))
            scored = predictions.read_days(judged, ["as_of_day", "score", "model_version"])
            scored = scored[scored["model_version"] == str(champion.version)]
            for day, rows in scored.groupby("as_of_day"):
                result = evaluate_drift(reference, rows, ["score"], drift_settings(settings))
                column = result.columns[0]
                results[day] = DayCheck(
                    passed=not result.drifted,
                    severity=AssetCheckSeverity.WARN,
                    description=result.summary(),
                    metadata={
                        "champion_version": str(champion.version),
                        "score_drift": column.score,
                        "threshold": column.threshold,
                        "method": column.method,
                        "rows": len(rows),
                    },
                )
        skipped = len(context.partition_keys) - len(results)
        if skipped:
            context.log.info(f"{skipped} days not compared: no champion, or no predictions of the champion")
        yield from day_check_events(context, context.check_specs[0].key, results, blocking=False)

    return [feature_data_quality, feature_drift, prediction_drift]
