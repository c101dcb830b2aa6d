"""`make demo`: fill the embedded source, then materialize the whole asset graph through Dagster.

Runs the stage jobs of the one Definitions against the instance in DAGSTER_HOME, so `make ui`
shows every run and materialization afterwards. Each partitioned stage is one run over the
whole date range (single-run backfill policy), not one run per day.
"""

import argparse
import sys
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
from dagster import DagsterInstance

from fti_assets.definitions import JOBS, build_definitions
from fti_assets.monitoring.drift_gate import DriftGate, HeldBack
from fti_assets.monitoring.sensors import PARTITION_RANGE_END, PARTITION_RANGE_START, contiguous_ranges
from fti_assets.settings import ProjectSettings, load_settings

# The assets' own progress lines, without Dagster's per-event debug lines.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
PARTITIONED_JOBS = {"ingestion_job", "features_job", "batch_inference_job"}


def simulated_source(settings: ProjectSettings):
    from fti_assets.simulate import DriftSpec, simulate

    spec = settings.simulator
    drift = DriftSpec(**spec.drift.model_dump()) if spec.drift else None
    return simulate(n_customers=spec.n_customers, days=spec.days, start=spec.start, seed=spec.seed, drift=drift)


def fill_simulated_source(settings: ProjectSettings, fresh: bool) -> str:
    from fti_assets.simulate import write_source

    db_path = Path(settings.source_url.removeprefix("sqlite:///"))
    if db_path.exists() and not fresh:
        return f"source database kept: {db_path} (--fresh to simulate again)"
    db_path.parent.mkdir(parents=True, exist_ok=True)
    source = simulated_source(settings)
    spec = settings.simulator
    until = spec.start + timedelta(days=spec.available_days) if spec.available_days else None
    write_source(settings.source_url, source, until=until)
    return (
        f"simulated {len(source.customers)} customers, {len(source.transactions)} transactions "
        f"({source.bad_rows} deliberately bad) into {db_path}" + (f"; days from {until} arrive later" if until else "")
    )


def _scorable_ranges(settings: ProjectSettings, defs, first_day: str, last_day: str):
    """Contiguous day ranges the drift gate lets through, and the days it holds back (recorded as held)."""
    gate = DriftGate(settings, defs.resources["registry"].champion())
    passing, held = gate.split(list(pd.date_range(first_day, last_day).strftime("%Y-%m-%d")))
    for verdict in held:
        HeldBack(settings).hold(verdict)
    return contiguous_ranges(passing), [v.day for v in held]


def _metadata(result, asset: str) -> dict:
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        if materialization.asset_key.to_user_string() == asset:
            return {k: v.value for k, v in materialization.metadata.items()}
    return {}


def run_demo(settings: ProjectSettings, instance: DagsterInstance, fresh: bool = False, out=print) -> dict:
    """Run every stage job once; return the metadata of each asset's materialization by name."""
    started = time.perf_counter()
    if settings.simulator is not None:
        out(f"[source] {fill_simulated_source(settings, fresh)}")
    defs = build_definitions(settings)
    # Only days the source has completely (a later day exists); the drift demo lets the rest arrive later.
    last = defs.resources["source"].last_complete_day(datetime.now(UTC), settings.end_date) or settings.end_date
    first_day, last_day = settings.start_date.isoformat(), last.isoformat()
    seen: dict[str, dict] = {}
    stage_seconds: dict[str, float] = {}
    for job_name, selection in JOBS.items():
        stage_started = time.perf_counter()
        assets = sorted(key.to_user_string() for key in selection.resolve(defs.resolve_asset_graph()))
        out(f"[{job_name}] running {', '.join(assets)}")
        job = defs.resolve_job_def(job_name)
        if job_name == "batch_inference_job":
            ranges, held = _scorable_ranges(settings, defs, first_day, last_day)
            seen["_held_back_days"] = held
            if held:
                out(f"[{job_name}] {len(held)} days held back by the drift gate: {held[0]} .. {held[-1]}")
        else:
            ranges = [(first_day, last_day)] if job_name in PARTITIONED_JOBS else [None]
        for day_range in ranges:
            tags = {} if day_range is None else {PARTITION_RANGE_START: day_range[0], PARTITION_RANGE_END: day_range[1]}
            result = job.execute_in_process(instance=instance, tags=tags, run_config=QUIET, raise_on_error=True)
            # A range run reports one materialization per day, all with the run's metadata: take it once.
            names = {
                e.event_specific_data.materialization.asset_key.to_user_string()
                for e in result.get_asset_materialization_events()
            }
            for name in names:
                metadata = _metadata(result, name)
                if name == "churn_predictions" and name in seen:  # several ranges: add their rows up
                    metadata["dagster/row_count"] += seen[name]["dagster/row_count"]
                seen[name] = metadata
        stage_seconds[job_name] = round(time.perf_counter() - stage_started, 1)
        out(f"[{job_name}] done in {stage_seconds[job_name]} s ({len(ranges)} run(s))")
    seen["_stage_seconds"] = stage_seconds
    seen["_total_seconds"] = round(time.perf_counter() - started, 1)
    return seen


def summary(settings: ProjectSettings, seen: dict) -> str:
    raw, features, labels = seen["raw_transactions"], seen["customer_features"], seen["churn_labels"]
    dataset, candidate, champion = seen["training_dataset"], seen["candidate_model"], seen["champion_model"]
    predictions = seen["churn_predictions"]
    metrics = candidate["metrics"]
    lines = [
        "",
        "fti-assets demo: the whole FTI graph, materialized",
        f"  raw transactions   {raw['rows_accepted']:>9,} accepted, {raw['rows_quarantined']:,} quarantined "
        f"(of {raw['rows_read']:,} read): {', '.join(f'{k} {v}' for k, v in raw['quarantine_reasons'].items() if v)}",
        f"  customer features  {features['dagster/row_count']:>9,} rows (customer x day) in Feast's offline source",
        f"  online features    {seen['online_features']['entities']:>9,} customers in the online store; "
        f"online vs offline mismatch rate {seen['training_serving_skew']['mismatch_rate']:.2%}",
        f"  churn labels       {labels['dagster/row_count']:>9,} rows, positive rate {labels['positive_rate']:.1%}",
        f"  training dataset   {dataset['dagster/row_count']:>9,} rows, version {dataset['dataset_version']}, "
        f"splits {dataset['rows_per_split']}",
        f"  candidate model    v{candidate['model_version']} ({candidate['model_kind']}), validation PR-AUC by "
        f"kind {candidate['compared']}",
        f"                     test: PR-AUC {metrics['test_pr_auc']:.3f}, ROC-AUC {metrics['test_roc_auc']:.3f}, "
        f"Brier {metrics['test_brier']:.3f}, positive rate {metrics['test_positive_rate']:.3f}",
        f"  champion           v{champion['champion_version']} ({champion['reason']})",
        f"  predictions        {predictions['dagster/row_count']:,} rows in {predictions['table']}"
        + (f"; {len(seen['_held_back_days'])} days held back by the drift gate" if seen["_held_back_days"] else ""),
        f"  stage seconds      {seen['_stage_seconds']} total {seen['_total_seconds']} s",
        "",
        "Browse it all in the Dagster UI:  make ui   (http://127.0.0.1:3000)",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="settings YAML (default: FTI_CONFIG or configs/simulated.yaml)")
    parser.add_argument("--fresh", action="store_true", help="simulate the source database again")
    args = parser.parse_args(argv)
    # Libraries' notices about their own internals would bury the progress lines.
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=FutureWarning)
    settings = load_settings(args.config)
    with DagsterInstance.get() as instance:
        seen = run_demo(settings, instance, fresh=args.fresh)
    print(summary(settings, seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
