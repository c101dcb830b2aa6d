"""`make demo-drift`: the closed loop, on the console, one line per step.

Stable history -> champion v1; drifted days arrive -> drift checks fail -> predictions held back ->
one retrain -> v2 passes the gates and is promoted -> the held-back days are released with v2.

Sensors are evaluated for real against the Dagster instance, and each run they request is executed
in process unless the instance already has a run with its run key: what the sensor daemon of
`dagster dev` does, made step-by-step and deterministic. `make ui` shows every run afterwards.
"""

import argparse
import sys
from datetime import timedelta

from dagster import DagsterInstance, RunsFilter, build_sensor_context

from fti_assets.definitions import build_definitions
from fti_assets.demo import QUIET, run_demo, simulated_source
from fti_assets.monitoring.drift_gate import HeldBack
from fti_assets.recovery import run_worker_tags
from fti_assets.settings import PROJECT_ROOT, ProjectSettings, load_settings
from fti_assets.simulate import append_transactions

DRIFT_CONFIG = PROJECT_ROOT / "configs" / "simulated_drift.yaml"
SENSORS = ("new_source_days", "drift_retrain", "release_held_predictions")


class SensorHarness:
    """Ticks sensors and runs their requests, skipping run keys already launched (as the daemon does)."""

    def __init__(self, defs, instance: DagsterInstance, out=print) -> None:
        self.defs, self.instance, self.out = defs, instance, out
        self.cursors: dict[str, str | None] = {}

    def tick(self, name: str) -> list:
        sensor = self.defs.resolve_sensor_def(name)
        with build_sensor_context(
            instance=self.instance,
            cursor=self.cursors.get(name),
            definitions=self.defs,
            sensor_name=name,
            resources={key: self.defs.resources[key] for key in sensor.required_resource_keys},
        ) as context:
            data = sensor.evaluate_tick(context)
        self.cursors[name] = data.cursor
        if data.skip_message:
            self.out(f"  [{name}] skipped: {data.skip_message}")
        results = []
        for request in data.run_requests or []:
            tags = {**request.tags, "dagster/run_key": request.run_key, "dagster/sensor_name": name}
            existing = self.instance.get_runs(
                RunsFilter(tags={"dagster/run_key": request.run_key, "dagster/sensor_name": name}), limit=1
            )
            if existing:
                self.out(f"  [{name}] run key {request.run_key} already ran: skipped")
                continue
            job = self.defs.resolve_job_def(request.job_name or sensor.job_name)
            result = job.execute_in_process(
                instance=self.instance,
                partition_key=request.partition_key,
                tags={**tags, **run_worker_tags()},
                run_config=request.run_config or QUIET,
                raise_on_error=False,
            )
            failed_checks = sorted({e.check_name for e in result.get_asset_check_evaluations() if not e.passed})
            outcome = "succeeded" if result.success else "failed"
            if failed_checks:
                outcome += f" (failed checks: {', '.join(failed_checks)}; what depends on them is held back)"
            self.out(f"  [{name}] {request.run_key}: {job.name} {outcome}")
            results.append((request, result))
        return results


def run_drift_demo(settings: ProjectSettings, instance: DagsterInstance, chunk_days: int = 7, out=print) -> dict:
    """Run the loop; returns what happened, for the summary and the scenario test."""
    spec = settings.simulator
    out("[1/4] stable history: the whole graph on the days before the drift")
    seen = run_demo(settings, instance, fresh=True, out=lambda line: out(f"  {line}"))
    out(f"  champion v{seen['champion_model']['champion_version']}")
    defs = build_definitions(settings)
    harness = SensorHarness(defs, instance, out)
    source = simulated_source(settings)
    arrived = spec.start + timedelta(days=spec.available_days)
    final = spec.start + timedelta(days=spec.days)
    events = {"retrains": [], "releases": [], "held_back": set()}
    out(f"[2/4] drifted days arrive from {spec.start + timedelta(days=spec.drift.from_day)}, {chunk_days} at a time")
    while arrived < final:
        until = min(arrived + timedelta(days=chunk_days), final)
        rows = append_transactions(settings.source_url, source, arrived, until)
        out(f"[source] {rows} transactions of {arrived} .. {until - timedelta(days=1)} arrived")
        arrived = until
        harness.tick("new_source_days")
        events["held_back"] |= set(HeldBack(settings).days())
        for request, result in harness.tick("drift_retrain"):
            events["retrains"].append((request, result))
            out(f"  retrain tags: {dict((k, v) for k, v in request.tags.items() if k.startswith('fti/'))}")
            champion = defs.resources["registry"].champion()
            out(f"  champion after the retrain: v{champion.version} ({champion.tags.get('promotion_reason', '')})")
        events["releases"].extend(harness.tick("release_held_predictions"))
    out("[3/4] a second tick of every sensor requests nothing new")
    for name in SENSORS:
        harness.tick(name)
    events["harness"] = harness
    return events


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(DRIFT_CONFIG))
    args = parser.parse_args(argv)
    settings = load_settings(args.config)
    with DagsterInstance.get() as instance:
        events = run_drift_demo(settings, instance)
        registry = build_definitions(settings).resources["registry"]
        out = print
        out("[4/4] summary")
        out(f"  days held back by the drift gate: {len(events['held_back'])}")
        out(f"  retrains requested: {len(events['retrains'])}")
        out(f"  champion now: v{registry.champion().version}")
        for move in registry.alias_moves():
            before = f"v{move['from']}" if move["from"] else "none"
            out(f"  alias move {move['at']}: {before} -> v{move['to']} ({move['action']}: {move['reason']})")
        still_held = HeldBack(settings).days()
        out(f"  released with the new champion: {len(events['held_back']) - len(still_held)} days")
        out(
            f"  still held back: {len(still_held)} days (drifted against the new champion too: the 30/90-day windows "
            "are still filling with the new regime; the next labelled days request the next retrain)"
        )
        out("Browse the loop in the Dagster UI:  make ui-drift   (Runs, the feature_drift check, sensors)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
