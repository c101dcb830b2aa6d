"""The closed loop, end to end through a Dagster instance, sensor ticks evaluated for real.

Stable history -> champion v1; drifted days arrive -> drift checks fail -> predictions held back ->
exactly one retrain -> v2 trained with the drifted period passes the gates and is promoted ->
held-back predictions released with v2.
"""

from datetime import timedelta

import pandas as pd
import pytest
from dagster import AssetCheckKey, AssetKey, RunsFilter
from dagster._core.event_api import PartitionKeyFilter
from dagster._core.storage.asset_check_execution_record import AssetCheckExecutionRecordStatus

from fti_assets.demo_drift import SENSORS, SensorHarness
from fti_assets.monitoring.drift_gate import DRIFTED, DriftGate, HeldBack

pytestmark = pytest.mark.slow


def test_drifted_days_fail_their_check_and_their_predictions_are_held_back(loop):
    settings, instance, events, _, defs = loop
    held = sorted(events["held_back"])
    drift_start = settings.simulator.start + timedelta(days=settings.simulator.drift.from_day)
    assert len(held) >= 10 and all(day >= drift_start.isoformat() for day in held)
    check_key = AssetCheckKey(AssetKey("customer_features"), "feature_drift")
    history = instance.event_log_storage.get_asset_check_execution_history(check_key, limit=1000)
    failed = {r.partition for r in history if r.status == AssetCheckExecutionRecordStatus.FAILED}
    assert set(held) <= failed
    # The v1 verdicts stay on record, each with its report.
    v1 = DriftGate(settings, defs.resources["registry"].version("1"))
    verdicts = {v.day: v for v in v1.recorded_verdicts()}
    assert all(verdicts[day].status == DRIFTED and verdicts[day].report for day in held)


def test_exactly_one_retrain_was_requested_with_its_reason(loop):
    _, instance, events, _, _ = loop
    assert len(events["retrains"]) == 1
    request, result = events["retrains"][0]
    assert result.success
    assert request.tags["fti/retrain_reason"] == "feature drift against champion v1"
    assert "labelled" in request.tags["fti/drifted_partitions"]
    runs = instance.get_runs(RunsFilter(job_name="training_job"))
    assert len([r for r in runs if r.tags.get("dagster/sensor_name") == "drift_retrain"]) == 1


def test_v2_learnt_the_drifted_period_passed_the_gates_and_serves(loop):
    settings, _, events, _, defs = loop
    registry = defs.resources["registry"]
    champion = registry.champion()
    assert str(champion.version) == "2"
    assert champion.tags["gates"] == "passed"
    assert champion.tags["retrain_reason"] == "feature drift against champion v1"
    dataset = pd.read_parquet(
        settings.path("datasets", "training", f"{champion.tags['training_dataset_version']}.parquet")
    )
    first_held = min(events["held_back"])
    test_days = dataset.loc[dataset["split"] == "test", "as_of_day"]
    assert test_days.min() >= first_held  # the gates judged both models on drifted days
    moves = registry.alias_moves()
    assert [(m["from"], m["to"], m["action"]) for m in moves] == [(None, "1", "promotion"), ("1", "2", "promotion")]


def test_held_back_days_are_released_with_v2_when_they_pass_and_stay_held_otherwise(loop):
    settings, instance, events, _, defs = loop
    predictions = defs.resources["predictions"]
    gate = DriftGate(settings, defs.resources["registry"].champion())
    still_held = set(HeldBack(settings).days())
    released = [day for day in sorted(events["held_back"]) if day not in still_held]
    assert len(released) >= 10
    scored = predictions.read_days(released)
    assert set(scored["model_version"]) == {"2"}
    assert set(scored["as_of_day"]) == set(released)
    for day in still_held:
        assert gate.verdict(day).status == DRIFTED  # judged against v2, not forgotten
    assert predictions.read_days(sorted(still_held)).empty
    # A released day's drift check reads as judged against the new champion, not the old failure.
    check_key = AssetCheckKey(AssetKey("customer_features"), "feature_drift")
    for day in released:
        record = instance.event_log_storage.get_asset_check_execution_history(
            check_key, limit=1, partition_filter=PartitionKeyFilter(key=day)
        )[0]
        assert record.status == AssetCheckExecutionRecordStatus.SUCCEEDED, day
        assert record.event.asset_check_evaluation.metadata["champion_version"].value == "2"


def test_a_second_tick_and_a_restart_request_nothing_new(loop):
    _, instance, _, lines, defs = loop
    second_ticks = lines[lines.index("[3/4] a second tick of every sensor requests nothing new") + 1 :]
    assert second_ticks and all("skipped" in line for line in second_ticks)
    runs_before = len(instance.get_runs())
    restarted = SensorHarness(defs, instance, out=lines.append)  # no cursors: as after a daemon restart
    for name in SENSORS:
        restarted.tick(name)
    assert len(instance.get_runs()) == runs_before
