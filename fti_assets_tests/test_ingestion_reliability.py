"""Ingestion never trades published data for worse: an empty or shrunken source is refused, with the reason.

A new version of a day is judged (raw_data_quality) before it is published; a failing day keeps its
published version. Runs the real `raw_transactions` asset on a simulated SQLite source, and the README's
real-data command's ingestion job on the sample shipped with the project.
"""

from __future__ import annotations

import hashlib
import sqlite3
from datetime import date, timedelta
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
from dagster import DagsterInstance, asset, materialize

from fti_assets.demo import fill_simulated_source
from fti_assets.ingestion.assets import QUARANTINE, build_ingestion_assets
from fti_assets.monitoring.sensors import PARTITION_RANGE_END, PARTITION_RANGE_START
from fti_assets.resources.lake import LakeResource
from fti_assets.resources.source import SourceResource
from fti_assets.settings import PROJECT_ROOT, load_settings
from fti_assets_tests.conftest import small_settings

DAYS = 42
LOST_DAY = "2026-01-20"


@pytest.fixture
def simulated(tmp_path):
    """42 days of 600 simulated customers (about 55 rows a day) in SQLite, ingested once as a range run."""
    settings = small_settings(
        tmp_path,
        simulator={"n_customers": 600, "days": DAYS, "start": "2026-01-01", "seed": 3},
        end_date=(date(2026, 1, 1) + timedelta(days=DAYS - 1)).isoformat(),
    )
    fill_simulated_source(settings, fresh=True)
    instance = DagsterInstance.ephemeral()
    assert ingest(settings, instance).success
    return settings, instance


def ingest(settings, instance, day: str | None = None, first: str | None = None, last: str | None = None):
    """The raw_transactions asset, as the ingestion job runs it: one day, or a range in one run."""
    source = SourceResource(
        url=settings.source_url,
        columns=settings.source.columns,
        customers=settings.source.customers,
        timezone=settings.source.timezone,
    )
    days = {PARTITION_RANGE_START: first or settings.start_date.isoformat()}
    days[PARTITION_RANGE_END] = last or settings.end_date.isoformat()
    return materialize(
        build_ingestion_assets(settings)[:1],
        resources={"source": source, "lake": LakeResource(root=str(settings.path("lake")))},
        instance=instance,
        partition_key=day,
        tags=None if day else days,
        raise_on_error=False,
    )


def lake_files(settings) -> dict[str, str]:
    folder = settings.path("lake")
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.parquet")}


def run_source(settings, sql: str, *params) -> None:
    with sqlite3.connect(settings.source_url.removeprefix("sqlite:///")) as conn:
        conn.execute(sql, params)
    conn.close()


def failure_of(result) -> str:
    failures = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    return failures[0].step_failure_data.user_failure_data.description


def quality_checks(result) -> dict:
    return {e.partition: e for e in result.get_asset_check_evaluations() if e.check_name == "raw_data_quality"}


def test_an_emptied_source_table_is_refused_and_no_published_day_changes(simulated):
    settings, instance = simulated
    before = lake_files(settings)
    assert len([f for f in before if f.startswith("raw_transactions/")]) == DAYS
    run_source(settings, "DELETE FROM transactions")
    result = ingest(settings, instance)
    assert not result.success
    assert "holds no transactions: an empty source is an outage" in failure_of(result)
    assert not result.get_asset_materialization_events()
    assert lake_files(settings) == before


def test_an_empty_source_file_is_refused(tmp_path):
    settings = small_settings(tmp_path, start_date="2026-01-01", end_date="2026-01-03")
    for content in ("", "txn_id,cust_id,purchased_at,total\n"):
        (tmp_path / "source.csv").write_text(content)
        source = SourceResource(path=str(tmp_path / "source.csv"), columns=settings.source.columns)
        result = materialize(
            build_ingestion_assets(settings)[:1],
            resources={"source": source, "lake": LakeResource(root=str(tmp_path / "lake"))},
            instance=DagsterInstance.ephemeral(),
            partition_key="2026-01-02",
            raise_on_error=False,
        )
        assert not result.success and "holds no transactions" in failure_of(result)
    assert not (tmp_path / "lake").exists()


def test_a_day_lost_at_the_source_keeps_its_published_version(simulated):
    settings, instance = simulated
    before = lake_files(settings)
    published = len(pd.read_parquet(settings.path("lake", "raw_transactions", f"{LOST_DAY}.parquet")))
    run_source(
        settings, "DELETE FROM transactions WHERE purchased_at >= ? AND purchased_at < ?", LOST_DAY, "2026-01-21"
    )
    result = ingest(settings, instance, day=LOST_DAY)
    assert not result.success
    assert f"0 rows against {published} in the published version of the day" in failure_of(result)
    check = quality_checks(result)[LOST_DAY]
    assert not check.passed and "not published, the previous version stays" in check.description
    assert check.target_materialization_data is not None  # the failure points at the version that stays
    assert lake_files(settings) == before


def test_a_range_run_publishes_the_good_days_and_withholds_the_lost_one(simulated):
    settings, instance = simulated
    before = lake_files(settings)
    run_source(
        settings, "DELETE FROM transactions WHERE purchased_at >= ? AND purchased_at < ?", LOST_DAY, "2026-01-21"
    )
    result = ingest(settings, instance)
    assert result.success
    days = {e.materialization.partition for e in result.get_asset_materialization_events()}
    assert len(days) == DAYS - 1 and LOST_DAY not in days
    observations = [e.asset_observation_data.asset_observation for e in result.get_asset_observation_events()]
    assert [(o.partition, o.metadata["withheld"].value) for o in observations] == [(LOST_DAY, True)]
    assert "0 rows against" in observations[0].description
    checks = quality_checks(result)
    assert not checks[LOST_DAY].passed and not checks[LOST_DAY].blocking
    assert all(check.passed for day, check in checks.items() if day != LOST_DAY)
    for name in (f"raw_transactions/{LOST_DAY}.parquet", f"{QUARANTINE}/{LOST_DAY}.parquet"):
        assert lake_files(settings)[name] == before[name]


def test_a_new_day_far_below_its_weekday_history_is_not_published(simulated):
    settings, instance = simulated
    day = settings.end_date.isoformat()
    path = settings.path("lake", "raw_transactions", f"{day}.parquet")
    path.unlink()  # the newest day arrives for the first time
    # An extract that broke after the first hour of the day: a handful of rows against a weekday median of ~55.
    run_source(settings, "DELETE FROM transactions WHERE purchased_at >= ?", f"{day} 09:00:00")
    result = ingest(settings, instance, day=day)
    assert not result.success
    assert "on the same weekday before" in failure_of(result)
    assert not path.exists()


def test_purchases_of_customers_missing_from_the_customer_table_are_kept_and_counted(simulated):
    """A customer table is a snapshot: a new customer's first purchase can arrive before it is refreshed."""
    settings, instance = simulated
    run_source(
        settings,
        "INSERT INTO transactions (txn_id, cust_id, purchased_at, total) VALUES (?, ?, ?, ?)",
        "new-1",
        "ghost",
        f"{LOST_DAY} 12:00:00.000000",
        25.0,
    )
    result = ingest(settings, instance, day=LOST_DAY)
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["rows_unknown_customer"].value == 1
    raw = pd.read_parquet(settings.path("lake", "raw_transactions", f"{LOST_DAY}.parquet"))
    assert "ghost" in set(raw["customer_id"])


def test_a_quiet_day_of_the_real_sample_is_published_by_the_readme_command(tmp_path, monkeypatch):
    """`FTI_CONFIG=configs/online_retail.yaml make demo` ingests the shipped sample, from any working folder."""
    from fti_assets.definitions import build_definitions

    monkeypatch.chdir(tmp_path)  # as from another clone: nothing may depend on the working folder
    settings = load_settings(PROJECT_ROOT / "configs" / "online_retail.yaml", data_dir=str(tmp_path / "data"))
    assert Path(settings.source.path).resolve().is_relative_to(PROJECT_ROOT)  # shipped inside the repository
    instance = DagsterInstance.ephemeral()
    result = (
        build_definitions(settings)
        .resolve_job_def("ingestion_job")
        .execute_in_process(
            instance=instance,
            tags={
                PARTITION_RANGE_START: settings.start_date.isoformat(),
                PARTITION_RANGE_END: settings.end_date.isoformat(),
            },
            run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}},
        )
    )
    assert result.success
    days = {e.materialization.partition for e in result.get_asset_materialization_events()}
    assert len(days) == (settings.end_date - settings.start_date).days + 1
    checks = quality_checks(result)
    assert checks["2010-12-19"].passed and checks["2010-12-19"].metadata["rows"].value == 7  # a quiet Sunday
    accounting = next(e for e in result.get_asset_check_evaluations() if e.check_name == "rows_accounted_for")
    assert accounting.metadata["run_rows_read"].value == 10_000
    assert accounting.metadata["run_rows_accepted"].value == 10_000  # the repeated lines are separate purchases
    raw = pd.read_parquet(settings.path("lake", "raw_transactions", "2010-10-14.parquet"))
    assert {"527043:84997D", "527043:84997D#1"} <= set(raw["transaction_id"])


def test_feature_drift_reports_a_day_without_feature_rows_as_not_compared(tmp_path, monkeypatch):
    """Drift of a day with no feature rows has no verdict: the check skips it and says why, instead of crashing."""
    from fti_assets.monitoring import drift_gate
    from fti_assets.monitoring.checks import build_monitoring_checks
    from fti_assets.partitions import daily_partitions

    settings = small_settings(tmp_path, start_date="2026-01-01", end_date="2026-01-31")
    features = pd.DataFrame(
        {"customer_id": ["1", "2", "3"], "as_of_day": "2026-01-11", "spend_sum_7d": [1.0, 2.0, 3.0]}
    )
    reference = drift_gate.Reference("1", "d1", "2026-01-05", features.assign(as_of_day="2026-01-04"))
    monkeypatch.setattr(drift_gate.DriftGate, "reference", lambda self: reference)
    folder = settings.path("lake", "customer_features")
    folder.mkdir(parents=True)
    features.iloc[:0].to_parquet(folder / "2026-01-10.parquet")  # nobody active that day
    features.to_parquet(folder / "2026-01-11.parquet")

    @asset(name="customer_features", partitions_def=daily_partitions(settings))
    def customer_features() -> None:
        return None

    check = next(c for c in build_monitoring_checks(settings) if c.check_key.name == "feature_drift")
    registry = SimpleNamespace(champion=lambda: SimpleNamespace(version=1, tags={}))
    instance = DagsterInstance.ephemeral()
    result = materialize(
        [customer_features, check],
        resources={"registry": registry},
        instance=instance,
        tags={PARTITION_RANGE_START: "2026-01-10", PARTITION_RANGE_END: "2026-01-11"},
        raise_on_error=False,
    )
    assert result.success
    evaluations = {e.partition: e.passed for e in result.get_asset_check_evaluations()}
    assert evaluations == {"2026-01-11": True}  # 2026-01-10 reads as skipped, not passed
    logged = [entry.user_message for entry in instance.all_logs(result.run_id)]
    assert any("1 days have no feature rows, nothing to compare: 2026-01-10" in message for message in logged)
