"""New source data: every newly complete day of the source becomes partition runs, once."""

from datetime import UTC, date, datetime, timedelta

from dagster import DefaultSensorStatus, RunRequest, SensorEvaluationContext, SkipReason, sensor

from fti_assets import tags as run_tags
from fti_assets.resources.lake import LakeResource, days
from fti_assets.resources.source import SourceResource
from fti_assets.settings import ProjectSettings

DAILY_JOB, LABELS_JOB, ONLINE_JOB = "daily_job", "labels_job", "online_features_job"


def build_ingestion_sensors(settings: ProjectSettings, jobs: dict, max_days_per_tick: int = 31) -> list:
    @sensor(
        name="new_source_days",
        jobs=[jobs[DAILY_JOB], jobs[LABELS_JOB], jobs[ONLINE_JOB]],
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description=(
            "A day is complete once the source holds a row of a later day. Each new complete day D requests "
            "the daily run (raw -> features -> checks -> predictions) for D and the labels of D - horizon, whose "
            "horizon D completes; then one refresh of the online store. Run keys are per day and the cursor is "
            "the last day requested, so a restart or a second tick never duplicates a run."
        ),
    )
    def new_source_days(context: SensorEvaluationContext, source: SourceResource, lake: LakeResource):
        last_complete = source.last_complete_day(datetime.now(UTC), settings.end_date)
        if last_complete is None:
            return SkipReason(f"no rows in {source.description}")
        written = lake.written_days("raw_transactions")
        cursor = (
            date.fromisoformat(context.cursor)
            if context.cursor
            else (written[-1] if written else settings.start_date - timedelta(days=1))
        )
        new_days = days(cursor + timedelta(days=1), last_complete + timedelta(days=1))[:max_days_per_tick]
        if not new_days:
            return SkipReason(f"no new complete day after {cursor} (last complete: {last_complete})")
        requests = []
        for day in new_days:
            key = day.isoformat()
            requests.append(
                RunRequest(
                    job_name=DAILY_JOB,
                    partition_key=key,
                    run_key=f"daily-{key}",
                    tags={run_tags.TRIGGER: "new_source_day"},
                )
            )
            label_day = day - timedelta(days=settings.label_horizon_days)
            if label_day >= settings.start_date:
                requests.append(
                    RunRequest(
                        job_name=LABELS_JOB,
                        partition_key=label_day.isoformat(),
                        run_key=f"labels-{label_day}",
                        tags={run_tags.TRIGGER: f"horizon completed by {key}"},
                    )
                )
        requests.append(
            RunRequest(job_name=ONLINE_JOB, run_key=f"online-{new_days[-1]}", tags={run_tags.TRIGGER: "new_source_day"})
        )
        context.update_cursor(new_days[-1].isoformat())
        return requests

    return [new_source_days]
