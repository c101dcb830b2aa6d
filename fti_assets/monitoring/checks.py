"""Asset checks: feature drift, prediction drift. (Data quality is judged by the assets themselves, on each
day's new version before it is published: `raw_transactions` and `customer_features`.)"""

from dagster import AssetCheckExecutionContext, AssetCheckSeverity, asset_check

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
from fti_assets.partitions import DayCheck, daily_partitions, day_check_events
from fti_assets.resources.mlflow import ModelRegistryResource
from fti_assets.resources.predictions import PredictionStoreResource
from fti_assets.settings import ProjectSettings


def build_monitoring_checks(settings: ProjectSettings) -> list:
    partitions = daily_partitions(settings)

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

    return [feature_drift, prediction_drift]
