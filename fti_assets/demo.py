"""`make demo`: fill the embedded source, then materialize the whole asset graph through Dagster.

Runs the stage jobs of the one Definitions against the instance in DAGSTER_HOME, so `make ui`
shows every run and materialization afterwards. Each partitioned stage is one run over the
whole date range (single-run backfill policy), not one run per day.
"""

import argparse
import sys
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import DagsterInstance

from fti_assets.definitions import JOBS, build_definitions
from fti_assets.monitoring.drift_gate import HeldBack
from fti_assets.monitoring.sensors import PARTITION_RANGE_END, PARTITION_RANGE_START
from fti_assets.recovery import recover, run_worker_tags
from fti_assets.settings import ProjectSettings, load_settings

# The assets' own progress lines, without Dagster's per-event debug lines.
QUIET = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}
PARTITIONED_JOBS = {"ingestion_job", "features_job", "batch_inference_job"}


def simulated_source(settings: ProjectSettings):
    from fti_assets.simulate import DriftSpec, simulate

    spec = settings.simulator
    drift = DriftSpec(**spec.drift.model_dump()) if spec.drift else None
    return simulate(
        n_customers=spec.n_customers,
        days=spec.days,
        start=spec.start,
        seed=spec.seed,
        drift=drift,
        purchase_rate_multiplier=spec.purchase_rate_multiplier,
    )


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


def _run_metadata(result) -> dict[str, dict]:
    """Per asset, what a run materialized: one asset's metadata, or a range's days added up.

    Counts are summed over the days, reason counts merged, rates weighted by the day's rows; the
    rest (schema, model version) is the same on every day. Run totals of the ingestion come from its
    accounting check.
    """
    days: dict[str, list[dict]] = {}
    for event in result.get_asset_materialization_events():
        materialization = event.event_specific_data.materialization
        metadata = {k: v.value for k, v in materialization.metadata.items()}
        days.setdefault(materialization.asset_key.to_user_string(), []).append(metadata)
    seen = {}
    for asset, per_day in days.items():
        total = dict(per_day[-1])
        rows = [m.get("dagster/row_count", 0) for m in per_day]
        for key in ("dagster/row_count", "rows_quarantined"):
            if key in total:
                total[key] = sum(m.get(key, 0) for m in per_day)
        for key in ("positive_rate", "predicted_churn_rate", "mean_score"):
            rated = [(m[key], n) for m, n in zip(per_day, rows, strict=True) if key in m]
            if rated:
                total[key] = sum(rate * n for rate, n in rated) / max(sum(n for _, n in rated), 1)
        if "quarantine_reasons" in total:
            total["quarantine_reasons"] = dict(sum((Counter(m["quarantine_reasons"]) for m in per_day), Counter()))
        if "labelled" in total:
            total["labelled_days"] = sum(bool(m["labelled"]) for m in per_day)
        seen[asset] = total
    for evaluation in result.get_asset_check_evaluations():
        if evaluation.check_name == "rows_accounted_for":
            seen["raw_transactions"].update(
                {k: v.value for k, v in evaluation.metadata.items() if k.startswith("run_")}
            )
    return seen


def stage_days(settings: ProjectSettings, defs) -> tuple[str, str]:
    """The first and last day of the partitioned stages: only days the source has completely (a later day
    exists); the drift demo lets the rest arrive later."""
    last = defs.resources["source"].last_complete_day(datetime.now(UTC), settings.end_date) or settings.end_date
    return settings.start_date.isoformat(), last.isoformat()


def run_stage(defs, job_name: str, instance: DagsterInstance, days: tuple[str, str]):
    """One run of a stage job in this process, tagged with the process so that a later `recover` can tell
    when it died. A partitioned stage is one run over the whole range: each day still gets its own metadata,
    version and check results."""
    tags = {PARTITION_RANGE_START: days[0], PARTITION_RANGE_END: days[1]} if job_name in PARTITIONED_JOBS else {}
    return defs.resolve_job_def(job_name).execute_in_process(
        instance=instance, tags={**tags, **run_worker_tags()}, run_config=QUIET, raise_on_error=True
    )


def prepare(settings: ProjectSettings, instance: DagsterInstance, fresh: bool, out=print):
    """What every demo does first: recover what a killed run left, fill the simulated source, build the
    Definitions."""
    # Runs an earlier, killed demo left behind would hold the `gpu` pool slot: the training step would wait forever.
    recovered = recover(instance, settings)
    if recovered:
        out(f"[recovery] {recovered.describe()}")
    if settings.simulator is not None:
        out(f"[source] {fill_simulated_source(settings, fresh)}")
    return build_definitions(settings)


def run_demo(settings: ProjectSettings, instance: DagsterInstance, fresh: bool = False, out=print) -> dict:
    """Run every stage job once; return the metadata of each asset's materialization by name."""
    started = time.perf_counter()
    defs = prepare(settings, instance, fresh, out)
    first_day, last_day = stage_days(settings, defs)
    seen: dict[str, dict] = {}
    stage_seconds: dict[str, float] = {}
    stage_rows: dict[str, int] = {}
    for job_name, selection in JOBS.items():
        stage_started = time.perf_counter()
        assets = sorted(key.to_user_string() for key in selection.resolve(defs.resolve_asset_graph()))
        out(f"[{job_name}] running {', '.join(assets)}")
        result = run_stage(defs, job_name, instance, (first_day, last_day))
        produced = _run_metadata(result)
        seen.update(produced)
        if job_name == "batch_inference_job":
            held = [day for day in HeldBack(settings).days() if first_day <= day <= last_day]
            seen["_held_back_days"] = held
            if held:
                out(f"[{job_name}] {len(held)} days held back by the drift gate: {held[0]} .. {held[-1]}")
        seconds = time.perf_counter() - stage_started
        stage_seconds[job_name] = round(seconds, 1)
        rows = stage_rows[job_name] = sum(m.get("dagster/row_count", 0) for m in produced.values())
        out(f"[{job_name}] done in {stage_seconds[job_name]} s (1 run): {rows:,} rows, {rows / seconds:,.0f} rows/s")
    seen["_stage_seconds"] = stage_seconds
    seen["_stage_rows"] = stage_rows
    seen["_total_seconds"] = round(time.perf_counter() - started, 1)
    return seen


def summary(settings: ProjectSettings, seen: dict) -> str:
    raw, features, labels = seen["raw_transactions"], seen["customer_features"], seen["churn_labels"]
    dataset, candidate, champion = seen["training_dataset"], seen["candidate_model"], seen["champion_model"]
    predictions = seen["churn_predictions"]
    lines = [
        "",
        "fti-assets demo: the whole FTI graph, materialized",
        f"  raw transactions   {raw['run_rows_accepted']:>9,} accepted, {raw['run_rows_quarantined']:,} quarantined "
        f"(of {raw['run_rows_read']:,} read): {', '.join(f'{k} {v}' for k, v in raw['quarantine_reasons'].items())}",
        f"  customer features  {features['dagster/row_count']:>9,} rows (customer x day) in Feast's offline source",
        f"  online features    {seen['online_features']['entities']:>9,} customers in the online store; "
        f"online vs offline mismatch rate {seen['training_serving_skew']['mismatch_rate']:.2%}",
        f"  churn labels       {labels['dagster/row_count']:>9,} rows, positive rate {labels['positive_rate']:.1%}",
        f"  training dataset   {dataset['dagster/row_count']:>9,} rows, version {dataset['dataset_version']}, "
        f"splits {dataset['rows_per_split']}",
        f"  candidate model    v{candidate['model_version']} ({candidate['model_kind']}), validation PR-AUC by "
        f"kind {candidate['compared']}",
        f"                     test: PR-AUC {candidate['test_pr_auc']:.3f}, ROC-AUC {candidate['test_roc_auc']:.3f}, "
        f"Brier {candidate['test_brier']:.3f}, positive rate {candidate['test_positive_rate']:.3f}",
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
    settings = load_settings(args.config)
    with DagsterInstance.get() as instance:
        seen = run_demo(settings, instance, fresh=args.fresh)
    print(summary(settings, seen))
    return 0


if __name__ == "__main__":
    sys.exit(main())
