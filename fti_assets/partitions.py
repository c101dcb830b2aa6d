"""Daily partitions, in the time zone of the data, and the day range a run covers."""

from __future__ import annotations

from datetime import date

from dagster import AssetExecutionContext, DailyPartitionsDefinition

from fti_assets.settings import ProjectSettings


def daily_partitions(settings: ProjectSettings) -> DailyPartitionsDefinition:
    return DailyPartitionsDefinition(
        start_date=settings.start_date.isoformat(),
        end_date=settings.end_exclusive.isoformat(),
        timezone=settings.source.timezone,
    )


def run_days(context: AssetExecutionContext) -> tuple[date, date]:
    """[first, end) of the partitions this run materializes (one day, or a backfill's whole range)."""
    window = context.partition_time_window
    return window.start.date(), window.end.date()
