"""Per-day truth in range runs: day slices, day versions, and what a range run records for each day."""

import pandas as pd
import pytest
from dagster import (
    AssetCheckKey,
    AssetKey,
    AssetRecordsFilter,
    BackfillPolicy,
    DagsterInstance,
    DailyPartitionsDefinition,
    Definitions,
    MaterializeResult,
    asset,
    asset_check,
    define_asset_job,
)

from fti_assets.metadata import preview, previews
from fti_assets.partitions import (
    DayCheck,
    DaySlices,
    chunks,
    day_check_events,
    install_partition_data_versions,
    withhold_days,
)
from fti_assets.versioning import frame_version

DAYS = ["2026-01-01", "2026-01-02", "2026-01-03", "2026-01-04"]


def frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": ["2026-01-01", "2026-01-01", "2026-01-02", "2026-01-04", "2026-01-04", "2026-01-04"],
            "customer_id": ["a", "b", "a", "a", "c", "d"],
            "amount": [1.0, 2.5, 3.0, 4.0, 5.0, 6.0],
        }
    )


def test_day_slices_give_each_days_rows_and_the_version_of_that_day_alone():
    rows = frame()
    slices = DaySlices.of(rows, "day")
    assert [slices.count(d) for d in DAYS] == [2, 1, 0, 3]
    pd.testing.assert_frame_equal(slices.rows("2026-01-04"), rows.iloc[3:].reset_index(drop=True))
    assert slices.rows("2026-01-03").empty and list(slices.rows("2026-01-03").columns) == list(rows.columns)
    versions = slices.versions(DAYS)
    for day in DAYS:
        # What a run of that one day computes for its rows.
        assert versions[day] == frame_version(slices.rows(day))
    assert len(set(versions.values())) == 4
    without_amount = slices.versions(DAYS, exclude=("amount",))
    assert without_amount["2026-01-01"] == frame_version(rows.iloc[:2].drop(columns="amount"))


def test_chunks_end_at_the_day_limit_or_before_the_row_limit_and_keep_every_day_in_order():
    days = [f"2026-01-{d:02d}" for d in range(1, 11)]
    assert chunks(days, 4) == [days[0:4], days[4:8], days[8:10]]
    rows = dict(zip(days, [300, 300, 300, 900, 1200, 100, 100, 100, 100, 100], strict=True))
    # A day that alone passes the row limit is a chunk of its own; the day limit still holds.
    assert chunks(days, 4, rows, max_rows=1000) == [days[0:3], days[3:4], days[4:5], days[5:9], days[9:10]]
    assert chunks(days, 30, rows, max_rows=10**9) == [days]
    assert chunks([], 4, rows, max_rows=1000) == []


def test_written_days_read_back_as_each_days_rows_written_alone(tmp_path):
    from datetime import date

    from fti_assets.resources.lake import LakeResource

    rows = frame().assign(at=pd.to_datetime(frame()["day"]).dt.tz_localize("UTC"), n=pd.array([1, None, 3, 4, 5, 6]))
    lake = LakeResource(root=str(tmp_path))
    lake.write_days("daily", DaySlices.of(rows, "day"), DAYS)
    slices = DaySlices.of(rows, "day")
    for day in DAYS:  # 2026-01-03 has no rows: an empty file with the same schema
        alone = tmp_path / f"{day}.parquet"
        slices.rows(day).to_parquet(alone, index=False)
        written = pd.read_parquet(lake.day_path("daily", date.fromisoformat(day)))
        pd.testing.assert_frame_equal(written, pd.read_parquet(alone))
    assert lake.row_counts("daily", [date.fromisoformat(d) for d in DAYS]) == dict(zip(DAYS, [2, 1, 0, 3], strict=True))


def test_read_days_joins_the_written_days_as_pandas_reads_each_and_takes_older_empty_files(tmp_path):
    from datetime import date

    from fti_assets.resources.lake import LakeResource

    rows = frame().assign(at=pd.to_datetime(frame()["day"]).dt.tz_localize("UTC"))
    lake = LakeResource(root=str(tmp_path))
    lake.write_days("daily", DaySlices.of(rows, "day"), ["2026-01-01", "2026-01-02", "2026-01-04"])
    # An empty day as DataFrame.to_parquet wrote it before: its text columns have Arrow type null.
    rows.iloc[:0].to_parquet(lake.day_path("daily", date(2026, 1, 3)), index=False)
    read = lake.read_days("daily", date(2026, 1, 1), date(2026, 1, 6))
    one_by_one = [pd.read_parquet(lake.day_path("daily", date.fromisoformat(d))) for d in DAYS]
    pd.testing.assert_frame_equal(read, pd.concat(one_by_one, ignore_index=True))
    pd.testing.assert_frame_equal(read, rows)
    assert list(lake.read_days("daily", date(2026, 1, 2), date(2026, 1, 4), columns=["amount"])["amount"]) == [3.0]


def test_previews_of_row_ranges_are_markdown_tables_of_each_ranges_first_rows():
    rows = pd.DataFrame(
        {
            "customer_id": ["a|1", "b", "c", "d", "e", "f", "g", "h"],
            "amount": [1.0, 2.5, float("nan"), 1234567.0, 0.1, 6.0, 7.0, 8.0],
            "count": pd.array([1, None, 3, 4, 5, 6, 7, 8], dtype="Int64"),
        }
    )
    tables = previews(rows, {"first": (0, 7), "last": (7, 8), "none": (3, 3)}, rows=5)
    header = "| customer_id | amount | count |\n|:---|---:|---:|\n"
    assert tables["first"].value == header + "\n".join(
        [
            "| a\\|1 | 1 | 1 |",  # a pipe in a value does not split the cell
            "| b | 2.5 | <NA> |",
            "| c | nan | 3 |",
            "| d | 1.23457e+06 | 4 |",
            "| e | 0.1 | 5 |",
        ]
    )
    assert tables["last"].value == header + "| h | 8 | 8 |"
    assert tables["none"].value == "(empty)"
    assert preview(rows.iloc[7:]).value == tables["last"].value and preview(rows.iloc[:0]).value == "(empty)"


def test_day_slices_refuse_an_unsorted_frame_and_take_an_empty_one():
    with pytest.raises(ValueError, match="sorted by day"):
        DaySlices.of(frame().iloc[::-1], "day")
    empty = DaySlices.of(frame().iloc[:0], "day")
    assert empty.count("2026-01-01") == 0 and empty.versions(["2026-01-01"])["2026-01-01"] == frame_version(
        frame().iloc[:0]
    )


def _definitions():
    install_partition_data_versions()
    partitions = DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-01-05")

    @asset(partitions_def=partitions, backfill_policy=BackfillPolicy.single_run(), code_version="1")
    def daily(context):
        slices = DaySlices.of(frame(), "day")
        published = [day for day in context.partition_keys if day != "2026-01-02"]
        slices.report(
            context, published, {day: {"customers": slices.rows(day)["customer_id"].nunique()} for day in published}
        )
        withhold_days(context, {day: "not ready" for day in context.partition_keys if day not in published})
        return MaterializeResult(metadata={"run_days": f"{context.partition_keys[0]} .. {context.partition_keys[-1]}"})

    @asset_check(asset=daily, partitions_def=partitions, blocking=True)
    def has_rows(context):
        slices = DaySlices.of(frame(), "day")
        verdicts = {day: DayCheck(passed=slices.count(day) > 0, metadata={"rows": slices.count(day)}) for day in DAYS}
        yield from day_check_events(context, context.check_specs[0].key, verdicts, blocking=True)

    @asset(partitions_def=partitions, backfill_policy=BackfillPolicy.single_run(), deps=[daily])
    def downstream():
        return None

    return Definitions(
        assets=[daily, downstream], asset_checks=[has_rows], jobs=[define_asset_job("both", [daily, downstream])]
    )


def test_a_range_run_records_each_days_rows_version_and_check_and_publishes_no_withheld_day():
    defs = _definitions()
    instance = DagsterInstance.ephemeral()
    result = defs.resolve_job_def("both").execute_in_process(
        instance=instance,
        tags={"dagster/asset_partition_range_start": DAYS[0], "dagster/asset_partition_range_end": DAYS[-1]},
        raise_on_error=False,
    )
    published = {
        e.materialization.partition: e.materialization
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == AssetKey("daily")
    }
    assert sorted(published) == ["2026-01-01", "2026-01-03", "2026-01-04"]  # 2026-01-02 withheld
    slices = DaySlices.of(frame(), "day")
    for day, materialization in published.items():
        assert materialization.tags["dagster/data_version"] == frame_version(slices.rows(day))
        assert materialization.metadata["dagster/row_count"].value == slices.count(day)
        assert materialization.metadata["run_days"].value == f"{DAYS[0]} .. {DAYS[-1]}"
        assert materialization.metadata["customers"].value == slices.rows(day)["customer_id"].nunique()
        assert materialization.metadata["content_version"].value == frame_version(slices.rows(day))
        assert materialization.metadata["preview"].value == preview(slices.rows(day)).value
    evaluations = {e.partition: e for e in result.get_asset_check_evaluations()}
    assert {d: e.passed for d, e in evaluations.items()} == {d: d != "2026-01-03" for d in DAYS}
    assert evaluations["2026-01-01"].target_materialization_data.run_id == result.run_id
    records = instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey("daily")), limit=100).records
    for record in records:  # each published day's evaluation points at its materialization
        target = evaluations[record.partition_key].target_materialization_data
        assert (target.storage_id, target.run_id) == (record.storage_id, record.run_id)
        assert abs(target.timestamp - record.timestamp) < 1e-3
    assert evaluations["2026-01-02"].target_materialization_data is None  # never published
    # A failed blocking day fails the check step after every day is reported: downstream does not start.
    assert not result.success
    assert not instance.fetch_materializations(AssetRecordsFilter(asset_key=AssetKey("downstream")), limit=1).records
    check_key = AssetCheckKey(AssetKey("daily"), "has_rows")
    assert len(instance.event_log_storage.get_asset_check_execution_history(check_key, limit=10)) == 4


def test_a_one_day_run_gets_the_same_version_as_the_range_run():
    defs = _definitions()
    instance = DagsterInstance.ephemeral()
    job = defs.resolve_job_def("both")
    job.execute_in_process(instance=instance, partition_key="2026-01-04", raise_on_error=False)
    record = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("daily"), asset_partitions=["2026-01-04"]), limit=1
    ).records[0]
    slices = DaySlices.of(frame(), "day")
    assert record.asset_materialization.tags["dagster/data_version"] == frame_version(slices.rows("2026-01-04"))
