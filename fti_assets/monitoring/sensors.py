"""Closing the loop: drifted days request a retrain; a new champion releases the days held back."""

import json
from datetime import UTC, date, datetime, timedelta

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from fti_assets import tags as run_tags
from fti_assets.monitoring.drift_gate import DriftGate, HeldBack
from fti_assets.resources.lake import LakeResource
from fti_assets.resources.mlflow import ModelRegistryResource
from fti_assets.settings import ProjectSettings

TRAINING_JOB, RELEASE_JOB = "training_job", "batch_inference_job"
PARTITION_RANGE_START, PARTITION_RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


def contiguous_ranges(days: list[str]) -> list[tuple[str, str]]:
    """['01', '02', '04'] -> [('01', '02'), ('04', '04')] for ISO days."""
    ranges: list[list[str]] = []
    for day in sorted(days):
        if ranges and date.fromisoformat(day) - date.fromisoformat(ranges[-1][1]) == timedelta(days=1):
            ranges[-1][1] = day
        else:
            ranges.append([day, day])
    return [(first, last) for first, last in ranges]


def build_monitoring_sensors(settings: ProjectSettings, jobs: dict) -> list:
    cooldown = timedelta(hours=settings.monitoring.retrain_cooldown_hours)
    needed = settings.monitoring.min_labelled_drifted_days

    @sensor(
        name="drift_retrain",
        job=jobs[TRAINING_JOB],
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description=(
            "Failed feature-drift checks request the training pipeline (dataset -> candidates -> gates -> "
            f"promotion) once {needed} drifted days have labels, so the drift is in the training data; at most one "
            f"request per {settings.monitoring.retrain_cooldown_hours:g} h (cooldown) and per champion (run keys), "
            "tagged with the reason and the drifted days."
        ),
    )
    def drift_retrain(context: SensorEvaluationContext, registry: ModelRegistryResource, lake: LakeResource):
        champion = registry.champion()
        if champion is None:
            return SkipReason("no champion: nothing to drift from")
        drifted = [v.day for v in DriftGate(settings, champion).recorded_verdicts() if v.held_back]
        if not drifted:
            return SkipReason(f"no drifted day against champion v{champion.version}")
        labelled = [d for d in drifted if lake.day_path("churn_labels", date.fromisoformat(d)).exists()]
        if len(labelled) < needed:
            return SkipReason(f"{len(drifted)} drifted days, {len(labelled)} labelled: waiting for {needed} labelled")
        state = json.loads(context.cursor) if context.cursor else {}
        now = datetime.now(UTC)
        if state.get("requested_at") and now - datetime.fromisoformat(state["requested_at"]) < cooldown:
            return SkipReason(f"cooldown: a retrain was requested at {state['requested_at']}")
        attempts = state.get("attempts", {})
        attempt = attempts.get(str(champion.version), 0) + 1
        context.update_cursor(
            json.dumps({"requested_at": now.isoformat(), "attempts": {**attempts, str(champion.version): attempt}})
        )
        return RunRequest(
            run_key=f"retrain-after-v{champion.version}-{attempt}",
            tags={
                run_tags.RETRAIN_REASON: f"feature drift against champion v{champion.version}",
                run_tags.DRIFTED_PARTITIONS: (
                    f"{drifted[0]}..{drifted[-1]} ({len(drifted)} days, {len(labelled)} labelled)"
                ),
                run_tags.CHAMPION_VERSION: str(champion.version),
            },
        )

    @sensor(
        name="release_held_predictions",
        job=jobs[RELEASE_JOB],
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description=(
            "When the champion changes, the prediction days the drift gate held back are judged again against "
            "the new champion's reference; those that pass are materialized (one run per contiguous range)."
        ),
    )
    def release_held_predictions(context: SensorEvaluationContext, registry: ModelRegistryResource):
        champion = registry.champion()
        if champion is None:
            return SkipReason("no champion")
        if context.cursor == str(champion.version):
            return SkipReason(f"champion v{champion.version} already handled")
        gate = DriftGate(settings, champion)
        held_back = HeldBack(settings)
        held = held_back.days()
        passing, still_held = gate.split(held)
        for verdict in still_held:
            # The day's page says it was judged again, against the new champion, and is still held.
            held_back.hold(verdict)
            context.instance.report_runless_asset_event(held_back.observation(settings, verdict))
        context.update_cursor(str(champion.version))
        if not passing:
            return SkipReason(f"{len(held)} days held back; none passes against champion v{champion.version}")
        return [
            RunRequest(
                run_key=f"release-v{champion.version}-{first}-{last}",
                tags={
                    PARTITION_RANGE_START: first,
                    PARTITION_RANGE_END: last,
                    run_tags.TRIGGER: f"released by champion v{champion.version}",
                },
            )
            for first, last in contiguous_ranges(passing)
        ]

    return [drift_retrain, release_held_predictions]
