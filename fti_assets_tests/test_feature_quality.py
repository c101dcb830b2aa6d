"""A feature day is judged (feature_data_quality) before it is written: a failing day keeps its published
version, the other days of the run are published, and a run where no day passes fails saying why."""

from __future__ import annotations

import hashlib
from datetime import date, timedelta

import numpy as np
import pytest
from dagster import AssetKey

import fti_assets.features.assets as feature_assets
from fti_assets.definitions import build_definitions
from fti_assets.demo import prepare, run_stage
from fti_assets_tests.conftest import dagster_instance, small_settings

DAYS = 40
FIRST, LAST = "2026-01-01", (date(2026, 1, 1) + timedelta(days=DAYS - 1)).isoformat()
BAD_DAY = "2026-01-25"


@pytest.fixture
def published(tmp_path):
    settings = small_settings(
        tmp_path,
        simulator={"n_customers": 300, "days": DAYS, "start": FIRST, "seed": 3},
        end_date=LAST,
    )
    instance = dagster_instance(tmp_path / "dagster_home")
    defs = prepare(settings, instance, fresh=True, out=lambda line: None)
    for job in ("ingestion_job", "reference_data_job", "features_job"):
        run_stage(defs, job, instance, (FIRST, LAST))
    yield settings, instance
    instance.dispose()


def feature_files(settings) -> dict[str, str]:
    folder = settings.path("lake", "customer_features")
    return {p.stem: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.glob("*.parquet")}


def spoiled(days: set[str]):
    """compute_customer_features, with a null spend and a negative count on each of ``days``."""
    compute = feature_assets.compute_customer_features

    def compute_spoiled(*args, **kwargs):
        features = compute(*args, **kwargs)
        rows = np.flatnonzero(features["as_of_day"].isin(days).to_numpy())
        features.loc[rows[::2], "spend_sum_30d"] = np.nan
        features.loc[rows[1::2], "txn_count_7d"] = -1
        return features

    return compute_spoiled


def features_run(settings, instance):
    return (
        build_definitions(settings)
        .resolve_job_def("features_job")
        .execute_in_process(
            instance=instance,
            tags={"dagster/asset_partition_range_start": FIRST, "dagster/asset_partition_range_end": LAST},
            raise_on_error=False,
        )
    )


def test_a_failing_day_keeps_its_published_version_and_the_other_days_are_published(published, monkeypatch):
    settings, instance = published
    before = feature_files(settings)
    previous = {
        r.partition_key: r.storage_id
        for r in instance.fetch_materializations(AssetKey("customer_features"), limit=1000).records
    }
    monkeypatch.setattr(feature_assets, "compute_customer_features", spoiled({BAD_DAY}))
    result = features_run(settings, instance)

    assert result.success  # the other days were published; the run goes on
    days = {
        e.materialization.partition
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == AssetKey("customer_features")
    }
    assert BAD_DAY not in days and len(days) == DAYS - 1
    (published,) = [e.materialization for e in result.get_asset_materialization_events()][-1:]
    assert published.metadata["run_days"].value == f"{FIRST} .. {LAST}"  # the run's first and last day
    after = feature_files(settings)
    assert after[BAD_DAY] == before[BAD_DAY]  # the published version stays, byte for byte
    checks = {e.partition: e for e in result.get_asset_check_evaluations() if e.check_name == "feature_data_quality"}
    assert len(checks) == DAYS and [day for day, e in checks.items() if not e.passed] == [BAD_DAY]
    failed = checks[BAD_DAY]
    assert "spend_sum_30d:" in failed.description and "nulls" in failed.description
    assert "txn_count_7d:" in failed.description and "negative or non-finite values" in failed.description
    assert failed.description.endswith("not published, the previous version stays")
    # The failure points at the version that stays; a published day's result at its new version.
    assert failed.target_materialization_data.storage_id == previous[BAD_DAY]
    assert checks[LAST].target_materialization_data.run_id == result.run_id
    (observation,) = [e.asset_observation_data.asset_observation for e in result.all_events if e.is_asset_observation]
    assert observation.partition == BAD_DAY and observation.metadata["withheld"].value is True


def test_a_run_where_no_day_passes_fails_saying_why_and_writes_nothing(published, monkeypatch):
    settings, instance = published
    before = feature_files(settings)
    every_day = {(date(2026, 1, 1) + timedelta(days=i)).isoformat() for i in range(DAYS)}
    monkeypatch.setattr(feature_assets, "compute_customer_features", spoiled(every_day))
    result = features_run(settings, instance)

    assert not result.success
    (failure,) = [e for e in result.all_events if e.event_type_value == "STEP_FAILURE"]
    assert f"no day of {FIRST} .. {LAST} is published" in failure.step_failure_data.user_failure_data.description
    assert feature_files(settings) == before
    assert not [
        e
        for e in result.get_asset_materialization_events()
        if e.materialization.asset_key == AssetKey("customer_features")
    ]
    checks = [e for e in result.get_asset_check_evaluations() if e.check_name == "feature_data_quality"]
    assert len(checks) == DAYS and not any(e.passed for e in checks)
