"""Daily partitions, and per-day truth for runs that cover many days.

A range run (single-run backfill policy) computes all of its days in one vectorised pass, then reports
each day as if it had run alone: the day's own metadata (``DaySlices.report``), its own data version (the
hash of that day's rows, equal to what a one-day run of the same day gives) and its own check results
(``day_check_events``). So the UI's partition pages, plots by partition and staleness tell the truth
without a run per day.

Dagster gives every partition of a range run's output the same data version (dagster#18123, #18649,
open upstream). ``install_partition_data_versions`` closes that gap narrowly: a materialization event
of one partition takes its data version from that partition's ``DAY_VERSION`` metadata entry, and a day
marked ``WITHHELD`` (computed, but not to be published) gets no materialization at all.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, timedelta

import numpy as np
import pandas as pd
from dagster import (
    AssetCheckEvaluation,
    AssetCheckKey,
    AssetCheckSeverity,
    AssetKey,
    AssetMaterialization,
    AssetObservation,
    DagsterEventType,
    DagsterInstance,
    DailyPartitionsDefinition,
    Failure,
    FreshnessPolicy,
    MetadataValue,
    Output,
)
from dagster._core.definitions.asset_checks.asset_check_evaluation import (
    AssetCheckEvaluationTargetMaterializationData,
)

from fti_assets.event_log import in_one_batch
from fti_assets.metadata import previews
from fti_assets.settings import ProjectSettings
from fti_assets.versioning import digest_version, row_hashes, schema_digest

# Metadata entry of a day's materialization that becomes its data version.
DAY_VERSION = "content_version"
# Metadata entry (the reason) of a day the run computed but does not publish: it gets no materialization,
# so the partition keeps its previous version; the asset says why in an observation of that day.
WITHHELD = "withheld"


def daily_partitions(settings: ProjectSettings) -> DailyPartitionsDefinition:
    return DailyPartitionsDefinition(
        start_date=settings.start_date.isoformat(),
        end_date=settings.end_exclusive.isoformat(),
        timezone=settings.source.timezone,
    )


def daily_freshness() -> FreshnessPolicy:
    """A daily asset is expected every day: late after a day and a few hours, failing after two days."""
    return FreshnessPolicy.time_window(fail_window=timedelta(hours=48), warn_window=timedelta(hours=26))


def run_days(context) -> tuple[date, date]:
    """[first, end) of the partitions this run materializes (one day, or a backfill's whole range)."""
    window = context.partition_time_window
    return window.start.date(), window.end.date()


def run_days_text(context) -> str:
    """The run's days as the UI shows them, first and last inclusive."""
    return f"{context.partition_keys[0]} .. {context.partition_keys[-1]}"


def chunks(
    day_keys: list[str], size: int, rows_per_day: dict[str, int] | None = None, max_rows: int | None = None
) -> list[list[str]]:
    """Consecutive runs of at most ``size`` of the (sorted) days: what a range run computes at a time.

    With ``rows_per_day`` and ``max_rows``, a run also ends before its rows would pass ``max_rows`` (a day
    with more is a run of its own): memory then follows the rows, whatever the number of customers."""
    counts = rows_per_day or {}
    runs: list[list[str]] = []
    rows = 0
    for day in day_keys:
        day_rows = counts.get(day, 0)
        full = runs and (len(runs[-1]) >= size or (max_rows is not None and rows + day_rows > max_rows))
        if not runs or full:
            runs.append([])
            rows = 0
        runs[-1].append(day)
        rows += day_rows
    return runs


def chunk_bounds(chunk: list[str]) -> tuple[date, date]:
    """[first, end) covering a chunk of days."""
    return date.fromisoformat(chunk[0]), date.fromisoformat(chunk[-1]) + timedelta(days=1)


class Progress:
    """One log line per chunk of a long range run: days done, rows, rows per second."""

    def __init__(self, context, total_days: int) -> None:
        self.context, self.total_days = context, total_days
        self.days = self.rows = 0
        self.started = time.perf_counter()

    def add(self, days: int, rows: int) -> None:
        self.days, self.rows = self.days + days, self.rows + rows
        seconds = time.perf_counter() - self.started
        self.context.log.info(
            f"{self.days}/{self.total_days} days, {self.rows:,} rows in {seconds:.1f} s "
            f"({self.rows / max(seconds, 1e-9):,.0f} rows/s)"
        )


def install_partition_data_versions() -> None:
    """Give each partition event of an output the data version in its ``DAY_VERSION`` metadata, and drop the
    events of ``WITHHELD`` days.

    Wraps the one function in Dagster that builds an output's asset events. Idempotent; a test fails
    if a Dagster upgrade moves it (``test_partitions``).
    """
    from dagster._core.definitions.data_version import DATA_VERSION_IS_USER_PROVIDED_TAG, DATA_VERSION_TAG
    from dagster._core.execution.plan import execute_step

    original = execute_step._get_output_asset_events
    if getattr(original, "_fti_day_versions", False):
        return

    def output_asset_events(*args, **kwargs):
        for event in original(*args, **kwargs):
            if event.partition and WITHHELD in event.metadata:
                continue
            version = event.metadata.get(DAY_VERSION) if event.partition else None
            if isinstance(event, AssetMaterialization) and version is not None:
                tags = {**(event.tags or {}), DATA_VERSION_TAG: str(version.value)}
                tags[DATA_VERSION_IS_USER_PROVIDED_TAG] = "true"
                event = event._replace(tags=tags)
            yield event

    output_asset_events._fti_day_versions = True
    execute_step._get_output_asset_events = output_asset_events


@dataclass(frozen=True)
class DaySlices:
    """Row ranges of each day in a frame sorted by its day column: one pass, no per-day masks."""

    frame: pd.DataFrame
    bounds: dict[str, tuple[int, int]]

    @classmethod
    def of(cls, frame: pd.DataFrame, day_column: str) -> DaySlices:
        values = frame[day_column].astype(str).to_numpy()
        if len(values) and (values[1:] < values[:-1]).any():
            raise ValueError(f"frame must be sorted by {day_column}")
        # Sorted, a day starts where the value changes: one comparison of neighbours, no sort of the column.
        starts = np.flatnonzero(np.r_[True, values[1:] != values[:-1]]) if len(values) else []
        ends = [*starts[1:], len(values)] if len(values) else []
        return cls(frame, {str(values[s]): (int(s), int(e)) for s, e in zip(starts, ends, strict=True)})

    def rows(self, day: str) -> pd.DataFrame:
        start, end = self.bounds.get(day, (0, 0))
        return self.frame.iloc[start:end].reset_index(drop=True)

    def count(self, day: str) -> int:
        start, end = self.bounds.get(day, (0, 0))
        return end - start

    def versions(self, days: list[str], exclude: tuple[str, ...] = ()) -> dict[str, str]:
        """Per day, ``versioning.frame_version`` of exactly that day's rows, from one hash of the frame."""
        content = self.frame.drop(columns=list(exclude))
        hashes = row_hashes(content)
        schema = schema_digest(content)
        return {day: digest_version(content, hashes[slice(*self.bounds.get(day, (0, 0)))], schema) for day in days}

    def report(
        self, context, days: list[str], figures: Mapping[str, Mapping] | None = None, exclude: tuple[str, ...] = ()
    ) -> None:
        """Each day's event gets that day's row count, preview and data version (of its rows less ``exclude``),
        plus the asset's own ``figures`` of the day."""
        versions = self.versions(days, exclude)
        tables = previews(self.frame, {day: self.bounds.get(day, (0, 0)) for day in days})
        for day in days:
            metadata = {
                "dagster/row_count": self.count(day),
                "preview": tables[day],
                **(figures or {}).get(day, {}),
                DAY_VERSION: versions[day],
            }
            context.add_asset_metadata(metadata, partition_key=day)


def withhold_days(context, reasons: Mapping[str, str]) -> None:
    """Days computed but not to be published: no materialization; the asset says why in an observation."""
    for day, reason in reasons.items():
        context.add_asset_metadata({WITHHELD: reason}, partition_key=day)


@dataclass(frozen=True)
class DayCheck:
    """One day's result of a check."""

    passed: bool
    metadata: dict = field(default_factory=dict)
    description: str | None = None
    severity: AssetCheckSeverity = AssetCheckSeverity.ERROR


def _latest_materializations(
    instance: DagsterInstance, asset_key: AssetKey, days: list[str]
) -> dict[str, AssetCheckEvaluationTargetMaterializationData]:
    """The newest materialization of each day, for the check results to point at: its storage id, run and time
    read from the event log's columns, without deserializing the events (their metadata costs a millisecond
    each; a range run points at hundreds)."""
    import sqlalchemy as sa
    from dagster._core.storage.event_log.schema import SqlEventLogStorageTable

    storage = instance.event_log_storage
    latest = storage.get_latest_storage_id_by_partition(asset_key, DagsterEventType.ASSET_MATERIALIZATION, set(days))
    if not latest:
        return {}
    table = SqlEventLogStorageTable
    with storage.index_connection() as connection:
        rows = connection.execute(
            sa.select(table.c.id, table.c.run_id, table.c.timestamp).where(table.c.id.in_(list(latest.values())))
        ).fetchall()
    found = {storage_id: (run_id, moment) for storage_id, run_id, moment in rows}
    return {
        day: AssetCheckEvaluationTargetMaterializationData(
            run_id=found[storage_id][0],
            storage_id=storage_id,
            timestamp=found[storage_id][1].replace(tzinfo=UTC).timestamp(),
        )
        for day, storage_id in latest.items()
        if storage_id in found
    }


def day_check_evaluations(
    instance: DagsterInstance, check_key: AssetCheckKey, verdicts: Mapping[str, DayCheck], blocking: bool
) -> list[AssetCheckEvaluation]:
    """One check evaluation per judged day, pointing at that day's newest materialization.

    Yielded from a step, a failed blocking evaluation fails the step after every day has been reported,
    as Dagster does for a check result, so downstream steps of the run do not start.
    """
    targets = _latest_materializations(instance, check_key.asset_key, list(verdicts))
    # Yielded together, so stored together: one transaction for the run's days, not one per day.
    evaluations = [
        AssetCheckEvaluation(
            asset_key=check_key.asset_key,
            check_name=check_key.name,
            passed=verdict.passed,
            metadata=verdict.metadata,
            description=verdict.description,
            severity=verdict.severity,
            blocking=blocking,
            partition=day,
            target_materialization_data=targets.get(day),
        )
        for day, verdict in verdicts.items()
    ]
    return in_one_batch(instance, evaluations)


def day_check_events(context, check_key: AssetCheckKey, verdicts: Mapping[str, DayCheck], blocking: bool) -> Iterator:
    """What a check step yields for per-day results: the evaluations, then the check's output.

    Days without a verdict were not evaluated and read as skipped.
    """
    op_context = getattr(context, "op_execution_context", context)
    yield from day_check_evaluations(op_context.instance, check_key, verdicts, blocking)
    yield Output(None, output_name=op_context.assets_def.get_output_name_for_asset_check_key(check_key))


# How a refused day's result ends: what its partition holds afterwards.
_KEPT, _NOT_WRITTEN = ": not published, the previous version stays", ": not published, the day stays unwritten"


@dataclass
class JudgedDays:
    """A range run's days judged by a blocking check before they are published. A failing day is withheld:
    no materialization, its previous version stays, and its failure stays on the day's check until a new
    version passes; the other days are published and the run goes on."""

    check_key: AssetCheckKey
    verdicts: dict[str, DayCheck] = field(default_factory=dict)

    def add(self, issues: Mapping[str, list[str]], metadata: Mapping[str, dict], published: Collection[str]) -> None:
        """Each day's verdict from its issues (none: it passes), with its ``metadata`` and the issues. A failing
        day says what its partition keeps: its version in ``published`` (the days the lake holds), or nothing."""
        for day, found in issues.items():
            self.verdicts[day] = DayCheck(
                passed=not found,
                metadata={**metadata[day], "issues": MetadataValue.json(found)},
                description="; ".join(found) + (_KEPT if day in published else _NOT_WRITTEN) if found else None,
            )

    @property
    def withheld(self) -> dict[str, str]:
        return {day: verdict.description or "failed" for day, verdict in self.verdicts.items() if not verdict.passed}

    @property
    def published(self) -> list[str]:
        return [day for day, verdict in self.verdicts.items() if verdict.passed]

    def refuse_if_none_passed(self, context) -> Iterator:
        """When no day passed, every day's result is recorded and the run fails saying why: nothing is published."""
        withheld = self.withheld
        if not self.verdicts or len(withheld) < len(self.verdicts):
            return
        yield from day_check_evaluations(context.instance, self.check_key, self.verdicts, blocking=True)
        days = sorted(self.verdicts)
        raise Failure(
            description=f"no day of {days[0]} .. {days[-1]} is published: "
            + "; ".join(f"{day}: {why}" for day, why in list(withheld.items())[:5])
            + (f"; and {len(withheld) - 5} more days" if len(withheld) > 5 else ""),
            metadata={"withheld_days": MetadataValue.json(withheld)},
        )

    def withheld_observations(self, context) -> Iterator[AssetObservation]:
        """The withheld days get no materialization; an observation of each says why."""
        withheld = self.withheld
        if not withheld:
            return
        context.log.warning(f"{len(withheld)} days not published: {withheld}")
        withhold_days(context, withheld)
        for day, why in withheld.items():
            yield AssetObservation(
                asset_key=context.asset_key,
                partition=day,
                description=f"New version not published: {why}",
                metadata={"withheld": True, "reason": why, **self.verdicts[day].metadata},
            )

    def check_events(self, context) -> Iterator:
        """After the materializations: the withheld days' failures, recorded without failing the run, then the
        published days' results (blocking)."""
        withheld = self.withheld
        yield from day_check_evaluations(
            context.instance, self.check_key, {day: self.verdicts[day] for day in withheld}, blocking=False
        )
        yield from day_check_events(
            context, self.check_key, {day: self.verdicts[day] for day in self.published}, blocking=True
        )
