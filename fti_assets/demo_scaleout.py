"""`make demo-scaleout`: the whole FTI graph on real engines, then where each piece ran.

The stage jobs of `make demo`, each as a run of the Dagster instance in DAGSTER_HOME (``deploy/dagster.yaml``:
PostgreSQL), orchestrated in this process (``execute_job``) while every step executes in a Celery worker
(``scripts/workers.sh``): the PyTorch step on the ``gpu`` queue's worker, the rest on the default queue's. Steps find
MLflow, the Feast registry, the online store and the predictions table through the same environment variables as
every other process. ``scripts/demo_scaleout.sh`` starts the servers and workers this needs and sets that
environment; this module only runs the graph and reports.

The settings are those of FTI_CONFIG: the workers load the code location with them, so this process must too.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from pathlib import Path

from dagster import DagsterInstance, execute_job

from fti_assets.definitions import JOBS
from fti_assets.demo import PARTITIONED_JOBS, QUIET, _run_metadata, prepare, stage_days, summary
from fti_assets.monitoring.drift_gate import HeldBack
from fti_assets.monitoring.sensors import PARTITION_RANGE_END, PARTITION_RANGE_START
from fti_assets.recovery import run_worker_tags
from fti_assets.resources.build import resolve_env_vars
from fti_assets.scaleout import BACKEND_ENV, BROKER_ENV, EXECUTOR_ENV, reconstructable_job, redact, step_placements
from fti_assets.settings import ProjectSettings, load_settings


def engines(instance: DagsterInstance, defs, settings: ProjectSettings) -> dict[str, str]:
    """Where each layer lives, read from what this process built (URLs without passwords)."""
    env = os.environ.get
    feast = resolve_env_vars(defs.resources["feast"])
    registry_url = getattr(feast, "registry_url", None)
    storages = {type(s).__name__ for s in (instance.run_storage, instance.event_log_storage, instance.schedule_storage)}
    broker = env(BROKER_ENV)
    experiment = None
    with contextlib.suppress(Exception):  # before training there is no experiment; a report never fails the demo
        experiment = resolve_env_vars(defs.resources["registry"]).client().get_experiment_by_name(settings.model_name)
    return {
        "dagster_instance": f"{', '.join(sorted(storages))} at "
        + (redact(env("FTI_DAGSTER_PG_URL")) or instance.root_directory),
        "executor": defs.resolve_job_def("ingestion_job").executor_def.name,
        "broker": redact(broker) or "",
        "result_backend": redact(env(BACKEND_ENV) or (broker if broker and broker.startswith("redis") else "rpc://")),
        "mlflow_tracking": redact(env("FTI_MLFLOW_TRACKING_URI")) or "embedded SQLite",
        "mlflow_backend": redact(env("FTI_MLFLOW_BACKEND_URL")) or "(the server's)",
        "mlflow_artifacts": experiment.artifact_location if experiment else "(no experiment yet)",
        "feast_registry": f"SQL registry {redact(registry_url)}" if registry_url else f"file {feast.registry_path}",
        "online_store": f"{feast.online_store} {feast.redis_connection_string or feast.sqlite_path}",
        "predictions": redact(resolve_env_vars(defs.resources["predictions"]).url),
        "lake": str(defs.resources["lake"].root),
    }


def run_scaleout(settings: ProjectSettings, instance: DagsterInstance, out=print) -> dict:
    """Run every stage job through the configured executor; return what ran where, and each asset's metadata."""
    started = time.perf_counter()
    defs = prepare(settings, instance, fresh=False, out=out)
    executor = defs.resolve_job_def("ingestion_job").executor_def.name
    if executor != "celery":
        raise SystemExit(
            f"the jobs' executor is {executor!r}, not celery: set {EXECUTOR_ENV}=celery and {BROKER_ENV} "
            "(and check that fti_assets/definitions.py passes executor_from_env() to Definitions)"
        )
    first_day, last_day = stage_days(settings, defs)
    seen: dict[str, dict] = {}
    runs: dict[str, dict] = {}
    for job_name, selection in JOBS.items():
        stage_started = time.perf_counter()
        assets = sorted(key.to_user_string() for key in selection.resolve(defs.resolve_asset_graph()))
        out(f"[{job_name}] running {', '.join(assets)}")
        tags = {PARTITION_RANGE_START: first_day, PARTITION_RANGE_END: last_day} if job_name in PARTITIONED_JOBS else {}
        result = execute_job(
            reconstructable_job(job_name),
            instance=instance,
            run_config=QUIET,
            tags={**tags, **run_worker_tags()},
            raise_on_error=True,
        )
        placements = step_placements(instance, result.run_id)
        if not result.success:
            # A step that fails in a worker fails the run without raising here: stop, and say where to look.
            failed = sorted(e.step_key for e in result.get_step_failure_events())
            raise SystemExit(
                f"[{job_name}] run {result.run_id} failed in steps {failed} (workers: "
                + ", ".join(f"{key} -> {placements[key].worker}" for key in failed if key in placements)
                + "); its events are in the instance, the workers' logs in FTI_WORKERS_DIR"
            )
        seen.update(_run_metadata(result))
        seconds = round(time.perf_counter() - stage_started, 1)
        runs[job_name] = {
            "run_id": result.run_id,
            "success": result.success,
            "seconds": seconds,
            "steps": {key: {"worker": p.worker, "queue": p.queue} for key, p in sorted(placements.items())},
        }
        steps = ", ".join(f"{key} -> {p.worker} [{p.queue}]" for key, p in sorted(placements.items()))
        out(f"[{job_name}] done in {seconds} s, run {result.run_id[:8]}: {steps}")
    held = [day for day in HeldBack(settings).days() if first_day <= day <= last_day]
    seen["_held_back_days"] = held
    seen["_stage_seconds"] = {name: run["seconds"] for name, run in runs.items()}
    seen["_total_seconds"] = round(time.perf_counter() - started, 1)
    return {"engines": engines(instance, defs, settings), "runs": runs, "seen": seen}


def where_it_ran(report: dict) -> str:
    where = report["engines"]
    workers: dict[str, list[str]] = {}
    for run in report["runs"].values():
        for step, placement in run["steps"].items():
            workers.setdefault(f"{placement['worker']} [queue {placement['queue']}]", []).append(step)
    lines = [
        "",
        "fti-assets scale-out: where each piece ran",
        f"  Dagster instance   {where['dagster_instance']}",
        f"  step executor      {where['executor']}: broker {where['broker']}, results {where['result_backend']}",
        *(f"  worker             {worker}: {', '.join(sorted(steps))}" for worker, steps in sorted(workers.items())),
        f"  MLflow             tracking server {where['mlflow_tracking']} (backend {where['mlflow_backend']}, "
        f"artifacts {where['mlflow_artifacts']})",
        f"  Feast registry     {where['feast_registry']}",
        f"  online store       {where['online_store']}",
        f"  predictions table  {where['predictions']}",
        f"  lake               {where['lake']} (a folder every worker shares)",
        "  runs               "
        + ", ".join(f"{name} {run['run_id'][:8]} ({run['seconds']} s)" for name, run in report["runs"].items()),
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--report", type=Path, help="also write what ran where as JSON to this file")
    args = parser.parse_args(argv)
    settings = load_settings()
    with DagsterInstance.get() as instance:
        report = run_scaleout(settings, instance)
    # The summary of `make demo`, without its pointer to `make ui` (that UI reads the embedded instance).
    print("\n".join(line for line in summary(settings, report["seen"]).splitlines() if "make ui" not in line))
    print(where_it_ran(report))
    if args.report:
        args.report.write_text(json.dumps({k: v for k, v in report.items() if k != "seen"}, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
