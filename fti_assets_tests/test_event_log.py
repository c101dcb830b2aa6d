"""Dagster's SQLite event log written in batches stores what it stores one event at a time."""

import pandas as pd
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    BackfillPolicy,
    DagsterEventType,
    DailyPartitionsDefinition,
    Definitions,
    EventRecordsFilter,
    MaterializeResult,
    asset,
    asset_check,
    define_asset_job,
)
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

from fti_assets.event_log import install_batched_event_log
from fti_assets.partitions import DayCheck, DaySlices, day_check_events, install_partition_data_versions
from fti_assets_tests.conftest import dagster_instance

DAYS = [f"2026-01-{d:02d}" for d in range(1, 11)]
RANGE = {"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]}


def _definitions() -> Definitions:
    install_partition_data_versions()
    install_batched_event_log()
    partitions = DailyPartitionsDefinition(start_date=DAYS[0], end_date="2026-01-11")
    rows = pd.DataFrame({"day": sorted(DAYS * 3), "amount": range(30)})

    @asset(partitions_def=partitions, backfill_policy=BackfillPolicy.single_run(), code_version="1")
    def daily(context):
        slices = DaySlices.of(rows, "day")
        slices.report(
            context, context.partition_keys, {d: {"total": int(slices.rows(d)["amount"].sum())} for d in DAYS}
        )
        return MaterializeResult()

    @asset_check(asset=daily, partitions_def=partitions)
    def positive(context):
        slices = DaySlices.of(rows, "day")
        # One day fails (not blocking: the run goes on), so failed results are compared too.
        verdicts = {
            d: DayCheck(passed=d != DAYS[3], metadata={"rows": slices.count(d)}) for d in context.partition_keys
        }
        yield from day_check_events(context, context.check_specs[0].key, verdicts, blocking=False)

    @asset(partitions_def=partitions, backfill_policy=BackfillPolicy.single_run(), deps=[daily], code_version="1")
    def downstream():
        return MaterializeResult()

    return Definitions(
        assets=[daily, downstream], asset_checks=[positive], jobs=[define_asset_job("both", [daily, downstream])]
    )


def _what_the_instance_holds(instance) -> dict:
    """Per asset and day: the materializations' metadata and data versions, the planned events, the check
    results; with the asset's latest record, as the UI reads them."""
    held = {}
    for key in (AssetKey("daily"), AssetKey("downstream")):
        records = instance.fetch_materializations(AssetRecordsFilter(asset_key=key), limit=100).records
        held[key.to_user_string()] = sorted(
            (
                r.partition_key,
                r.asset_materialization.tags.get("dagster/data_version"),
                sorted((k, str(v.value)) for k, v in r.asset_materialization.metadata.items()),
            )
            for r in records
        )
        planned = instance.get_event_records(
            EventRecordsFilter(DagsterEventType.ASSET_MATERIALIZATION_PLANNED, asset_key=key), limit=100
        )
        held[f"{key.to_user_string()} planned"] = sorted(r.partition_key for r in planned)
        held[f"{key.to_user_string()} latest"] = instance.get_latest_materialization_event(key).dagster_event.partition
    check = AssetCheckKey(AssetKey("daily"), "positive")
    history = instance.event_log_storage.get_asset_check_execution_history(check, limit=100)
    held["checks"] = sorted((r.partition, r.event.dagster_event.event_specific_data.passed) for r in history if r.event)
    held["run events"] = sorted(
        e.dagster_event.event_type_value for e in instance.all_logs(instance.get_runs()[0].run_id) if e.dagster_event
    )
    return held


def _run(home, monkeypatch, batch_size: str) -> dict:
    monkeypatch.setenv("DAGSTER_EVENT_BATCH_SIZE", batch_size)
    defs = _definitions()
    with dagster_instance(home) as instance:
        result = defs.resolve_job_def("both").execute_in_process(instance=instance, tags=RANGE)
        assert result.success
        return _what_the_instance_holds(instance)


def test_a_batched_range_run_stores_exactly_what_one_event_at_a_time_stores(tmp_path, monkeypatch):
    one_by_one = _run(tmp_path / "one_by_one", monkeypatch, "0")
    batches = []
    original = SqliteEventLogStorage.store_event_batch

    def counting(self, events):
        batches.append([event.dagster_event.event_type_value for event in events])
        return original(self, events)

    monkeypatch.setattr(SqliteEventLogStorage, "store_event_batch", counting)
    batched = _run(tmp_path / "batched", monkeypatch, "1000")
    assert batched == one_by_one
    assert len(one_by_one["daily"]) == len(DAYS) and one_by_one["daily latest"] == DAYS[-1]
    assert len({version for _, version, _ in one_by_one["daily"]}) == len(DAYS)  # each day its own version
    assert [passed for _, passed in one_by_one["checks"]] == [day != DAYS[3] for day in DAYS]
    # Dagster hands the range's events over in batches (planned events of each asset and check, and each
    # output's materializations), and the check's day results come as one: if an upgrade stops that, every
    # event is its own commit again.
    kinds = sorted(kind for batch in batches for kind in set(batch) if len(batch) == len(DAYS))
    assert kinds == ["ASSET_CHECK_EVALUATION", "ASSET_MATERIALIZATION", "ASSET_MATERIALIZATION"]
    # With the planned events: one per asset and day, and one of the check for the range.
    assert sum(map(len, batches)) == 5 * len(DAYS) + 1


def test_a_batch_that_fails_half_way_is_rolled_back_and_stored_once_event_by_event(tmp_path, monkeypatch):
    original = SqliteEventLogStorage.store_event
    failures = []

    def store_event(self, event):
        from fti_assets.event_log import _open_batches

        if _open_batches.__dict__.get(id(self)) and not failures and event.dagster_event.partition == DAYS[5]:
            failures.append(event.dagster_event.event_type_value)
            raise OSError("disk full")  # the sixth day, after five days of the batch were written
        return original(self, event)

    monkeypatch.setattr(SqliteEventLogStorage, "store_event", store_event)
    held = _run(tmp_path / "failing", monkeypatch, "1000")
    assert failures
    # Dagster stores the batch again one event at a time: each day once, nothing lost, nothing twice.
    assert [day for day, *_ in held["daily"]] == DAYS
    assert held["daily planned"] == DAYS and held["downstream planned"] == DAYS
    assert [day for day, _ in held["checks"]] == DAYS


def test_a_new_instance_on_the_same_home_reads_what_a_batched_run_committed(tmp_path, monkeypatch):
    """As the UI's instance, or the next run's, would."""
    _run(tmp_path / "home", monkeypatch, "1000")
    with dagster_instance(tmp_path / "home") as reader:
        assert reader.get_latest_materialization_event(AssetKey("downstream")).dagster_event.partition == DAYS[-1]
        assert len(reader.fetch_materializations(AssetKey("daily"), limit=100).records) == len(DAYS)
