"""Runs that die release what they hold: their status, their concurrency-pool slots, their temp files.

Runs that `dagster dev` / `dagster-daemon` launch are Dagster's to recover (configs/dagster.yaml,
`run_monitoring`): the code server fails a run whose worker process died, and the monitoring daemon
frees the pool slots of runs that ended. Runs executed in process (`make demo`, `make demo-drift`,
the tests) have no code server watching them, so they carry a tag naming their process
(`run_worker_tags`), and `recover`, run before new work starts (and by the `dead_run_recovery`
sensor), fails those whose process is gone, frees the pool slots of runs that ended, and sweeps the
temp files that killed writers left in the data folder.

    python -m fti_assets.recovery    # the same, by hand, against DAGSTER_HOME
"""

from __future__ import annotations

import argparse
import re
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
from dagster import (
    DagsterInstance,
    DagsterRunStatus,
    DefaultSensorStatus,
    RunsFilter,
    SensorEvaluationContext,
    SkipReason,
    sensor,
)

from fti_assets.settings import ProjectSettings, load_settings

WORKER_TAG = "fti/run_worker"
# Statuses of a run whose worker may still be running.
UNFINISHED = [
    DagsterRunStatus.NOT_STARTED,
    DagsterRunStatus.STARTING,
    DagsterRunStatus.STARTED,
    DagsterRunStatus.CANCELING,
]
# A temp file whose writer is unknown (another host, or an older name) is left alone until this old: no live
# writer leaves a file untouched that long.
STALE_TEMP_SECONDS = 3600
# `.<target>.<pid>-<start ms>@<host>.<mkstemp's 8 characters>.tmp`, as `temp_prefix` names them.
_TEMP_NAME = re.compile(r"\.(?P<pid>\d+)-(?P<started_ms>\d+)@(?P<host>[^@]+)\.[a-z0-9_]{8}\.tmp$")
_TOKEN = re.compile(r"^(?P<pid>\d+)-(?P<started_ms>\d+)@(?P<host>[^@]+)$")


@dataclass(frozen=True)
class Worker:
    """A process, named so that a recycled pid is not mistaken for it: host, pid and start time."""

    host: str
    pid: int
    started_ms: int

    @classmethod
    def current(cls) -> Worker:
        # Not cached: a forked step process is another worker.
        return cls(socket.gethostname(), *_pid_and_start(psutil.Process()))

    @classmethod
    def from_match(cls, match: re.Match | None) -> Worker | None:
        if match is None:
            return None
        return cls(match["host"], int(match["pid"]), int(match["started_ms"]))

    @property
    def token(self) -> str:
        return f"{self.pid}-{self.started_ms}@{self.host}"

    def is_gone(self) -> bool:
        """True only for a worker of this host that no longer runs; another host's can't be judged here."""
        if self.host != socket.gethostname():
            return False
        try:
            process = psutil.Process(self.pid)
            # A killed child its parent has not reaped yet is a zombie: gone, though its pid still answers.
            return process.status() == psutil.STATUS_ZOMBIE or _pid_and_start(process) != (self.pid, self.started_ms)
        except psutil.NoSuchProcess:
            return True
        except psutil.AccessDenied:
            return False


def _pid_and_start(process: psutil.Process) -> tuple[int, int]:
    return process.pid, round(process.create_time() * 1000)


def run_worker_tags() -> dict[str, str]:
    """Tags for a run executed in this process, so that `recover` can tell when the process is gone."""
    return {WORKER_TAG: Worker.current().token}


def temp_prefix(path: Path) -> str:
    """The prefix of a temp file written beside ``path`` (tempfile.mkstemp): it names the writing process."""
    return f".{path.name}.{Worker.current().token}."


@dataclass
class Recovered:
    failed_runs: list[str] = field(default_factory=list)
    freed_runs: list[str] = field(default_factory=list)
    swept_files: list[Path] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.failed_runs or self.freed_runs or self.swept_files)

    def describe(self) -> str:
        if not self:
            return "no dead run, held pool slot or stale temp file"
        return (
            f"{len(self.failed_runs)} dead runs marked failed {self.failed_runs}, pool slots of "
            f"{len(self.freed_runs)} ended runs freed {self.freed_runs}, {len(self.swept_files)} temp files "
            "of dead writers removed"
        )


def fail_dead_runs(instance: DagsterInstance) -> list[str]:
    """Mark failed (canceled, if it was being canceled) every unfinished run whose worker process is gone."""
    failed = []
    for record in instance.get_run_records(RunsFilter(statuses=UNFINISHED)):
        run = record.dagster_run
        worker = Worker.from_match(_TOKEN.match(run.tags.get(WORKER_TAG, "")))
        if worker is None or not worker.is_gone():
            continue
        message = (
            f"The process that ran this run (pid {worker.pid} on {worker.host}) is gone: killed, or its machine "
            "stopped. fti_assets.recovery marked the run ended and freed its concurrency-pool slots; run it again."
        )
        if run.status == DagsterRunStatus.CANCELING:
            instance.report_run_canceled(run, message)
        else:
            instance.report_run_failed(run, message)
        failed.append(run.run_id)
    return failed


def free_slots_of_ended_runs(instance: DagsterInstance) -> list[str]:
    """Free the pool slots (claimed or waited for) of runs that ended or were deleted.

    A run frees its slots when it ends normally, not when it is killed or marked failed. A run whose
    worker is known to be gone is freed at once; others once `free_slots_after_run_end_seconds` (the
    daemon's grace for a live worker to release them itself) have passed since they ended.
    """
    storage = instance.event_log_storage
    if not storage.supports_global_concurrency_limits:
        return []
    holders = set()
    for key in storage.get_concurrency_keys():
        info = storage.get_concurrency_info(key)
        holders |= {slot.run_id for slot in info.claimed_slots} | {step.run_id for step in info.pending_steps}
    if not holders:
        return []
    records = {r.dagster_run.run_id: r for r in instance.get_run_records(RunsFilter(run_ids=sorted(holders)))}
    grace = instance.run_monitoring_settings.get("free_slots_after_run_end_seconds", 0)
    now = time.time()
    freed = []
    for run_id in sorted(holders):
        record = records.get(run_id)
        if record is not None:
            run = record.dagster_run
            if not run.is_finished:
                continue
            worker = Worker.from_match(_TOKEN.match(run.tags.get(WORKER_TAG, "")))
            ended = record.end_time or record.update_timestamp.timestamp()
            if not (worker is not None and worker.is_gone()) and ended + grace > now:
                continue
        storage.free_concurrency_slots_for_run(run_id)
        freed.append(run_id)
    return freed


def sweep_temp_files(root: Path, stale_seconds: float = STALE_TEMP_SECONDS) -> list[Path]:
    """Remove the temp files under ``root`` of writers that are gone (named by `temp_prefix`), or unknown and stale.

    A live writer's file is never touched: its name says its process runs, or it is younger than
    ``stale_seconds``."""
    now = time.time()
    swept = []
    for path in sorted(Path(root).rglob("*.tmp")):
        writer = Worker.from_match(_TEMP_NAME.search(path.name))
        try:
            if writer is not None and writer.host == socket.gethostname():
                dead = writer.is_gone()
            else:
                dead = now - path.stat().st_mtime > stale_seconds
            if dead:
                path.unlink()
                swept.append(path)
        except FileNotFoundError:  # renamed into place, or removed, by its writer meanwhile
            continue
    return swept


def recover(instance: DagsterInstance, settings: ProjectSettings) -> Recovered:
    """Fail the dead runs, free the pool slots of ended runs, sweep dead writers' temp files."""
    return Recovered(
        failed_runs=fail_dead_runs(instance),
        freed_runs=free_slots_of_ended_runs(instance),
        # Every atomic writer of the project (lake, training datasets, drift reports and ledger) writes under data_dir.
        swept_files=sweep_temp_files(settings.data_dir),
    )


def build_recovery_sensor(settings: ProjectSettings):
    @sensor(
        name="dead_run_recovery",
        default_status=DefaultSensorStatus.RUNNING,
        minimum_interval_seconds=60,
        description=(
            "Runs that die release what they hold: fails in-process runs (make demo) whose process is gone, frees "
            "the concurrency-pool slots of ended runs and removes temp files their killed writers left. Requests "
            "no run."
        ),
    )
    def dead_run_recovery(context: SensorEvaluationContext):
        return SkipReason(recover(context.instance, settings).describe())

    return dead_run_recovery


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="settings YAML (default: FTI_CONFIG or configs/simulated.yaml)")
    args = parser.parse_args(argv)
    with DagsterInstance.get() as instance:
        print(recover(instance, load_settings(args.config)).describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
