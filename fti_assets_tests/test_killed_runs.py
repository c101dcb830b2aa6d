"""Runs that die release what they hold: `kill -9` a run, recover, and the next run completes with nothing lost.

Each killed run is a real process (`python -c`, against the test's Dagster instance), killed with SIGKILL
while it holds what it holds: a `gpu` pool slot, a half-written lake file, a stage's partial output.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, AssetRecordsFilter, DagsterEventType, DagsterRunStatus, RunsFilter

from fti_assets.demo import run_stage, stage_days
from fti_assets.recovery import WORKER_TAG, recover
from fti_assets.settings import PROJECT_ROOT
from fti_assets_tests.conftest import dagster_instance, small_settings
from fti_assets_tests.processes import start

# A job whose one step sits in the `gpu` pool for argv[2] seconds, run in process like `make demo` runs jobs.
GPU_JOB = """
import sys, time
from dagster import DagsterInstance, job, op
from fti_assets.recovery import run_worker_tags

@op(pool="gpu")
def hold_gpu():
    time.sleep(float(sys.argv[2]))

@job
def gpu_job():
    hold_gpu()

with DagsterInstance.from_config(sys.argv[1]) as instance:
    assert gpu_job.execute_in_process(instance=instance, tags=run_worker_tags()).success
"""
# A lake write that stops inside the parquet write, as a writer killed there does: the temp file is still empty.
STUCK_LAKE_WRITE = """
import sys, time
import pandas as pd
import pyarrow.parquet as pq
from fti_assets.partitions import DaySlices
from fti_assets.resources.lake import LakeResource

pq.write_table = lambda *args, **kwargs: time.sleep(600)
day = DaySlices.of(pd.DataFrame({"day": ["2026-01-01"], "x": [1]}), "day")
LakeResource(root=sys.argv[1]).write_days("raw_transactions", day, ["2026-01-01"])
"""
# One stage of the demo (argv[2]) on the test settings in argv[1], as `make demo` runs it.
STAGE = """
import sys
from pathlib import Path
from dagster import DagsterInstance
from fti_assets.definitions import build_definitions
from fti_assets.demo import run_stage, stage_days
from fti_assets_tests.conftest import small_settings

settings = small_settings(Path(sys.argv[1]))
defs = build_definitions(settings)
with DagsterInstance.from_config(str(settings.path("dagster_home"))) as instance:
    run_stage(defs, sys.argv[2], instance, stage_days(settings, defs))
"""
TIMEOUT = 120


def spawn(code: str, *args: str, log: Path) -> subprocess.Popen:
    return start([sys.executable, "-c", code, *map(str, args)], dict(os.environ), log, cwd=PROJECT_ROOT)


def wait_until(condition, process: subprocess.Popen, log: Path, what: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"exited ({process.returncode}) before {what}; log:\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            pytest.fail(f"no {what} after {TIMEOUT} s; log:\n{log.read_text()[-3000:]}")
        time.sleep(0.1)


def kill_9(process: subprocess.Popen) -> None:
    os.kill(process.pid, signal.SIGKILL)
    process.wait()


def gpu_holders(instance) -> list[str]:
    return [slot.run_id for slot in instance.event_log_storage.get_concurrency_info("gpu").claimed_slots]


def killed_gpu_run(tmp_path: Path, instance):
    """A run killed with `kill -9` while its step holds the `gpu` slot: left STARTED, holding it."""
    log = tmp_path / "holder.log"
    holder = spawn(GPU_JOB, instance.root_directory, 600, log=log)
    wait_until(lambda: gpu_holders(instance), holder, log, "claimed gpu slot")
    kill_9(holder)
    (run,) = instance.get_runs()
    assert run.status == DagsterRunStatus.STARTED and gpu_holders(instance) == [run.run_id]
    return run


def test_a_killed_runs_gpu_slot_is_freed_and_the_next_run_completes(tmp_path):
    settings = small_settings(tmp_path)
    instance = dagster_instance(settings.path("dagster_home"))
    run = killed_gpu_run(tmp_path, instance)

    recovered = recover(instance, settings)
    assert recovered.failed_runs == [run.run_id] and recovered.freed_runs == [run.run_id]
    assert instance.get_run_by_id(run.run_id).status == DagsterRunStatus.FAILURE
    (failure,) = instance.all_logs(run.run_id, of_type=DagsterEventType.RUN_FAILURE)
    assert f"pid {run.tags[WORKER_TAG].split('-')[0]}" in failure.message and "is gone" in failure.message
    assert gpu_holders(instance) == []
    # The next run takes the slot and finishes (before, it waited at the pool forever).
    subprocess.run(
        [sys.executable, "-c", GPU_JOB, instance.root_directory, "0"], cwd=PROJECT_ROOT, timeout=TIMEOUT, check=True
    )
    latest = instance.get_runs(limit=1)[0]
    assert latest.run_id != run.run_id and latest.status == DagsterRunStatus.SUCCESS
    assert gpu_holders(instance) == [] and not recover(instance, settings)
    instance.dispose()


def test_under_dagster_dev_the_monitoring_daemon_frees_the_slot_of_a_run_marked_failed(tmp_path, monkeypatch):
    """What the project's dagster.yaml asks of the daemon: the code server marks a run failed when its worker
    dies, which alone keeps the slot; the monitoring daemon frees it once `free_slots_after_run_end_seconds`
    have passed."""
    from dagster._daemon.monitoring import concurrency

    instance = dagster_instance(tmp_path / "dagster_home")
    assert instance.run_monitoring_enabled
    grace = instance.run_monitoring_settings["free_slots_after_run_end_seconds"]
    run = killed_gpu_run(tmp_path, instance)
    instance.report_run_failed(run, "Run execution process for the run unexpectedly exited")  # the code server
    context = type("WorkspaceProcessContext", (), {"instance": instance})()

    list(concurrency.execute_concurrency_slots_iteration(context, logging.getLogger(__name__)))
    assert gpu_holders(instance) == [run.run_id]  # within the grace a live worker may still free it itself
    later = concurrency.get_current_datetime() + pd.Timedelta(seconds=grace + 1)
    monkeypatch.setattr(concurrency, "get_current_datetime", lambda: later)
    list(concurrency.execute_concurrency_slots_iteration(context, logging.getLogger(__name__)))
    assert gpu_holders(instance) == []
    instance.dispose()


def test_the_temp_file_of_a_killed_writer_is_swept_and_a_live_ones_kept(tmp_path):
    settings = small_settings(tmp_path)
    instance = dagster_instance(settings.path("dagster_home"))
    folder = settings.path("lake", "raw_transactions")
    log = tmp_path / "writer.log"
    writer = spawn(STUCK_LAKE_WRITE, settings.path("lake"), log=log)
    wait_until(lambda: any(folder.glob("*.tmp")), writer, log, "temp file")
    (temp,) = folder.glob("*.tmp")
    assert temp.name.startswith(".2026-01-01.parquet.") and temp.stat().st_size == 0
    # Of writers that are not named: an hour old is stale, younger may be live.
    stale, young = folder / ".2026-01-02.parquet.abcd1234.tmp", folder / ".2026-01-03.parquet.abcd1234.tmp"
    stale.touch()
    young.touch()
    os.utime(stale, (time.time() - 7200,) * 2)

    assert recover(instance, settings).swept_files == [stale]  # the writer still runs: its file stays
    assert temp.exists()
    kill_9(writer)
    assert recover(instance, settings).swept_files == [temp]
    assert sorted(folder.iterdir()) == [young]  # no half-written day either
    instance.dispose()


KILLED_STAGES = ("ingestion_job", "features_job", "training_job", "batch_inference_job")


def under_way(job_name: str, settings, instance, run_id: str) -> bool:
    """The run has started to change what it changes: its first day files, the gpu slot, its step (the
    inference step loads the champion and reads features before it writes its first prediction)."""
    if job_name == "ingestion_job":
        return any(settings.path("lake", "raw_transactions").glob("*.parquet"))
    if job_name == "features_job":
        return any(settings.path("lake", "customer_features").glob("*.parquet"))
    if job_name == "training_job":
        return run_id in gpu_holders(instance)
    return bool(instance.all_logs(run_id, of_type=DagsterEventType.STEP_START))


PARTITIONED_ASSETS = ("raw_transactions", "customer_features", "churn_labels", "churn_predictions")


def started_run(instance, job_name: str) -> str | None:
    runs = instance.get_runs(RunsFilter(job_name=job_name, statuses=[DagsterRunStatus.STARTED]), limit=1)
    return runs[0].run_id if runs else None


def day_versions(instance, asset: str) -> dict[str, str]:
    """Each day's data version in its latest materialization."""
    versions, cursor = {}, None
    while True:
        result = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset)), limit=1000, cursor=cursor, ascending=True
        )
        for record in result.records:
            versions[record.asset_materialization.partition] = record.asset_materialization.tags["dagster/data_version"]
        if not result.has_more:
            return versions
        cursor = result.cursor


def outputs(settings, instance) -> dict:
    """What a pipeline left: every day's version per asset, the training dataset, the champion, the rows."""
    from fti_assets.definitions import build_resources

    predictions = build_resources(settings)["predictions"]
    days = [d.isoformat() for d in pd.date_range(settings.start_date, settings.end_date).date]
    quarantine = pd.concat(pd.read_parquet(p) for p in sorted(settings.path("lake", "quarantine").rglob("*.parquet")))
    return {
        "versions": {asset: day_versions(instance, asset) for asset in PARTITIONED_ASSETS},
        "training_dataset": instance.get_latest_materialization_event(
            AssetKey("training_dataset")
        ).asset_materialization.tags["dagster/data_version"],
        "champion": build_resources(settings)["registry"].champion().version,
        "predictions": predictions.read_days(days).drop(columns=["run_id"]),
        "quarantined": quarantine.sort_values(list(quarantine.columns)).reset_index(drop=True),
    }


@pytest.mark.slow
def test_a_run_killed_in_any_stage_reruns_to_what_a_clean_run_gives(e2e, tmp_path):
    from fti_assets.definitions import JOBS, build_definitions
    from fti_assets.demo import fill_simulated_source

    clean_settings, clean_instance = e2e[:2]  # the demo run once, never killed
    settings = small_settings(tmp_path)
    instance = dagster_instance(settings.path("dagster_home"))
    fill_simulated_source(settings, fresh=True)
    defs = build_definitions(settings)
    days = stage_days(settings, defs)
    for job_name in JOBS:
        if job_name in KILLED_STAGES:
            log = tmp_path / f"{job_name}.log"
            process = spawn(STAGE, tmp_path, job_name, log=log)
            run_id = None

            def halfway(job_name=job_name):
                nonlocal run_id
                run_id = run_id or started_run(instance, job_name)
                return run_id is not None and under_way(job_name, settings, instance, run_id)

            wait_until(halfway, process, log, f"{job_name} under way")
            kill_9(process)
            assert instance.get_run_by_id(run_id).status == DagsterRunStatus.STARTED, f"{job_name} ended before"
            recovered = recover(instance, settings)
            assert recovered.failed_runs == [run_id], job_name
            assert recovered.freed_runs == ([run_id] if job_name == "training_job" else []), job_name
            assert gpu_holders(instance) == [], job_name  # else the rerun would wait at the pool forever
            assert not list(settings.data_dir.rglob("*.tmp")), job_name
        assert run_stage(defs, job_name, instance, days).success
    assert gpu_holders(instance) == []

    killed, expected = outputs(settings, instance), outputs(clean_settings, clean_instance)
    for asset in PARTITIONED_ASSETS:
        assert killed["versions"][asset] == expected["versions"][asset], asset
    assert killed["training_dataset"] == expected["training_dataset"]
    assert str(killed["champion"]) == str(expected["champion"]) == "1"  # the killed training registered nothing
    pd.testing.assert_frame_equal(killed["predictions"], expected["predictions"])
    pd.testing.assert_frame_equal(killed["quarantined"], expected["quarantined"])
    # Every dead run reads as failed, with why; nothing is left STARTED.
    statuses = [run.status for run in instance.get_runs()]
    assert statuses.count(DagsterRunStatus.FAILURE) == len(KILLED_STAGES) and DagsterRunStatus.STARTED not in statuses
    instance.dispose()
