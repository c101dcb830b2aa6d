"""The scale-out profile: which engine executes a run's steps, switched by environment variables only.

`FTI_EXECUTOR` picks the executor of every job of the one Definitions (``executor_from_env``):

- unset (the embedded default): Dagster's own (a process per step for launched runs; ``make demo`` executes in
  process and is not affected by any of this).
- ``celery``: dagster-celery. Each step is a Celery task on the broker ``FTI_CELERY_BROKER_URL`` (``redis://...`` or
  ``pyamqp://...``), its events come back through ``FTI_CELERY_BACKEND_URL`` (default: the broker for Redis,
  ``rpc://`` for AMQP). A step goes to the queue of its op tag ``dagster-celery/queue`` (the PyTorch step: ``gpu``),
  every other step to ``dagster``. ``scripts/workers.sh`` runs the workers (``fti_assets.celery_app``).
- ``k8s``: dagster-k8s's ``k8s_job_executor`` (a Kubernetes Job per step, sized by the op tag ``dagster-k8s/config``);
  needs the ``K8sRunLauncher`` of ``deploy/helm/values.yaml``.
- ``multiprocess`` / ``in_process``: Dagster's executors, by name.

URLs are passed as ``{"env": NAME}``: resolved in the process that runs the run, never written into run config.
Celery (and Kubernetes) workers execute steps of runs stored in the instance: the instance must be one every worker
reaches (``deploy/dagster.yaml``: PostgreSQL), as must the lake, the MLflow server and the Feast registry.

This module is imported by the Celery workers: it imports no asset code and no heavy library at module level.
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from dataclasses import dataclass

EXECUTOR_ENV = "FTI_EXECUTOR"
BROKER_ENV = "FTI_CELERY_BROKER_URL"
BACKEND_ENV = "FTI_CELERY_BACKEND_URL"
EXECUTORS = ("celery", "k8s", "multiprocess", "in_process")
# dagster-celery's names: the op tag that routes a step, and the queue of every untagged step.
QUEUE_TAG = "dagster-celery/queue"
DEFAULT_QUEUE = "dagster"
GPU_QUEUE = "gpu"
# The code location every process loads (workspace.yaml, the Dockerfile's gRPC server, the workers' tasks).
CODE_MODULE = "fti_assets.definitions"
CODE_ATTRIBUTE = "defs"
# Settings of the Celery app, the same in the executor (which sends) and in the workers (fti_assets.celery_app).
CELERY_CONFIG_SOURCE = {
    # A worker takes one step at a time and a step is acknowledged when it is taken: a step is never run twice.
    "worker_prefetch_multiplier": 1,
    "broker_connection_retry_on_startup": True,
    # Results (each step's serialized events) are read by the run once; they need not stay in the backend for long.
    "result_expires": 24 * 3600,
}


def _redis(url: str) -> bool:
    return url.startswith(("redis://", "rediss://", "redis+socket://"))


def celery_executor_config(environ: Mapping[str, str] | None = None) -> dict:
    """The ``celery_executor`` config: the broker and backend as environment variables, never their values."""
    environ = os.environ if environ is None else environ
    broker = environ.get(BROKER_ENV)
    if not broker:
        raise ValueError(f"{EXECUTOR_ENV}=celery needs {BROKER_ENV} (redis://host:port/db or pyamqp://user@host//)")
    if environ.get(BACKEND_ENV):
        backend: object = {"env": BACKEND_ENV}
    else:
        # Redis stores results itself; with RabbitMQ, results travel back as messages (rpc://).
        backend = {"env": BROKER_ENV} if _redis(broker) else "rpc://"
    return {"broker": {"env": BROKER_ENV}, "backend": backend, "config_source": dict(CELERY_CONFIG_SOURCE)}


def executor_from_env(environ: Mapping[str, str] | None = None):
    """The executor ``FTI_EXECUTOR`` names, or None (Dagster's default) when it is unset."""
    environ = os.environ if environ is None else environ
    kind = environ.get(EXECUTOR_ENV, "").strip().lower().replace("-", "_")
    if not kind:
        return None
    if kind == "celery":
        from dagster_celery import celery_executor

        # dagster-celery declares its task again for every step it sends; Celery 5.7 warns each time, harmlessly.
        warnings.filterwarnings("ignore", message=r"Task name 'execute_plan' is already registered")

        return celery_executor.configured(celery_executor_config(environ))
    if kind == "k8s":
        from dagster_k8s import k8s_job_executor

        return k8s_job_executor
    if kind == "multiprocess":
        from dagster import multiprocess_executor

        return multiprocess_executor
    if kind == "in_process":
        from dagster import in_process_executor

        return in_process_executor
    raise ValueError(f"{EXECUTOR_ENV}={environ[EXECUTOR_ENV]!r}: expected one of {', '.join(EXECUTORS)} or unset")


def celery_app_args(environ: Mapping[str, str] | None = None) -> dict:
    """``CeleryExecutor.for_cli`` arguments of the workers: the executor's config, resolved in this process."""
    environ = os.environ if environ is None else environ
    config = celery_executor_config(environ)
    resolve = lambda value: environ[value["env"]] if isinstance(value, dict) else value  # noqa: E731
    return {
        "broker": resolve(config["broker"]),
        "backend": resolve(config["backend"]),
        "config_source": config["config_source"],
    }


def redact(url: str | None) -> str | None:
    """A URL with its password replaced, for printing."""
    return None if url is None else re.sub(r"(://[^:/@]+:)[^@]*@", r"\1***@", url)


def reconstructable_job(job_name: str):
    """A job of the code location as a reconstructable job: what a worker process loads to run one of its steps."""
    from dagster._core.definitions.reconstruct import ReconstructableRepository

    from fti_assets.settings import PROJECT_ROOT

    repository = ReconstructableRepository.for_module(CODE_MODULE, CODE_ATTRIBUTE, working_directory=str(PROJECT_ROOT))
    return repository.get_reconstructable_job(job_name)


@dataclass(frozen=True)
class StepPlacement:
    """Where one step of a run ran: the Celery worker (``name@host``) or the Kubernetes Job that executed it."""

    step_key: str
    worker: str
    queue: str | None


def step_placements(instance, run_id: str) -> dict[str, StepPlacement]:
    """Per step of a run, the worker that executed it, read back from the run's event log.

    dagster-celery records the queue a step was submitted to and, from inside the task, the worker's name
    (``Celery worker``) in engine events of the step; the k8s executor records the Job's name.
    """
    from dagster import DagsterEventType

    queues: dict[str, str] = {}
    workers: dict[str, str] = {}
    records = instance.get_records_for_run(
        run_id, of_type={DagsterEventType.ENGINE_EVENT, DagsterEventType.STEP_WORKER_STARTING}
    ).records
    for record in records:
        entry = record.event_log_entry
        event = entry.dagster_event
        if event is None or entry.step_key is None:
            continue
        submitted = re.match(r'Submitting celery task for step "[^"]+" to queue "([^"]+)"', event.message or "")
        if submitted:
            queues[entry.step_key] = submitted.group(1)
        metadata = getattr(event.event_specific_data, "metadata", None) or {}
        for key in ("Celery worker", "Kubernetes Job name"):
            if key in metadata:
                workers[entry.step_key] = str(metadata[key].value)
    return {key: StepPlacement(key, worker, queues.get(key)) for key, worker in workers.items()}
