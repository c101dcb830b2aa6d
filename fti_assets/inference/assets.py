"""Batch inference: the champion model scores each day's active customers, features from Feast.

Reaches models only through the registry alias and features only through the feature service the
model version was trained with.
"""

from datetime import date

import duckdb
import numpy as np
import pandas as pd
from dagster import (
    AssetCheckKey,
    AssetDep,
    AssetExecutionContext,
    AssetKey,
    BackfillPolicy,
    Config,
    Failure,
    MaterializeResult,
    MetadataValue,
    asset,
)
from pydantic import Field

from fti_assets import tags as run_tags
from fti_assets.metadata import column_schema
from fti_assets.monitoring.drift_gate import (
    DRIFT_CHECK,
    FEATURE_TABLE,
    DayVerdict,
    DriftGate,
    HeldBack,
    drift_day_check,
)
from fti_assets.partitions import (
    DaySlices,
    Progress,
    chunk_bounds,
    chunks,
    daily_freshness,
    daily_partitions,
    day_check_evaluations,
    run_days,
    run_days_text,
    withhold_days,
)
from fti_assets.resources.feast import FeastResource
from fti_assets.resources.mlflow import ModelRegistryResource
from fti_assets.resources.predictions import PredictionStoreResource
from fti_assets.settings import ProjectSettings


def _feature_source(feast: FeastResource, feature_service: str) -> str:
    """The offline source (parquet) the feature service's views are built on."""
    store = feast.store()
    service = store.get_feature_service(feature_service)
    return store.get_feature_view(service.feature_view_projections[0].name).batch_source.path


def entities_of_days(feast: FeastResource, feature_service: str, first: date, end: date) -> pd.DataFrame:
    """(customer_id, event_timestamp) of every feature row of the days [first, end), read from the offline
    source the feature service's views are built on."""
    return duckdb.execute(
        """
        SELECT DISTINCT CAST(customer_id AS VARCHAR) AS customer_id, event_timestamp, as_of_day
        FROM read_parquet($path) WHERE as_of_day >= $first AND as_of_day < $end
        ORDER BY as_of_day, customer_id
        """,
        {"path": _feature_source(feast, feature_service), "first": first.isoformat(), "end": end.isoformat()},
    ).df()


def feature_rows_per_day(feast: FeastResource, feature_service: str, days: list[str]) -> dict[str, int]:
    """Feature rows of each of ``days`` (sorted), counted in the offline source without reading its values."""
    if not days:
        return {}
    counted = duckdb.execute(
        "SELECT as_of_day, count(*) FROM read_parquet($path) WHERE as_of_day >= $first AND as_of_day <= $last "
        "GROUP BY as_of_day",
        {"path": _feature_source(feast, feature_service), "first": days[0], "last": days[-1]},
    ).fetchall()
    return {str(day): int(rows) for day, rows in counted}


class PredictionConfig(Config):
    override_drift_gate: bool = Field(
        default=False, description="Score days the drift gate holds back. Recorded on the run and the materialization."
    )
    override_reason: str = Field(default="", description="Why; required with override_drift_gate.")


def _drift_gate(
    context, config: PredictionConfig, settings: ProjectSettings, gate: DriftGate, held_back: HeldBack, days: list[str]
) -> tuple[list[str], list[DayVerdict]]:
    """The days to score, and those held back because their features drifted from the champion's reference.

    A held day is recorded as held and its partition gets an observation saying why; an override scores
    every day and is recorded on the run.
    """
    passing, held = gate.split(days)
    if held and config.override_drift_gate:
        if not config.override_reason.strip():
            raise Failure("override_drift_gate needs an override_reason: it is recorded with the predictions")
        context.instance.add_run_tags(context.run.run_id, {run_tags.DRIFT_OVERRIDE: config.override_reason[:200]})
        context.log.warning(f"drift gate overridden for {[v.day for v in held]}: {config.override_reason}")
        return days, []
    held = list(gate.report_most_drifted(held).values())
    for verdict in held:
        held_back.hold(verdict)
        context.log_event(held_back.observation(settings, verdict))
    if held:
        context.log.warning(
            f"held back by the drift gate: {len(held)} of {len(days)} days drifted from the reference of champion "
            f"v{gate.model_version}; they are released when a new champion passes them (or run with config "
            "override_drift_gate=true and an override_reason)"
        )
    return passing, held


def build_inference_assets(settings: ProjectSettings) -> list:
    @asset(
        name="churn_predictions",
        freshness_policy=daily_freshness(),
        group_name="inference",
        partitions_def=daily_partitions(settings),
        backfill_policy=BackfillPolicy.single_run(),
        deps=[AssetDep("customer_features"), "champion_model"],
        kinds={"mlflow", "feast", "sql"},
        owners=["team:ml"],
        code_version="1",
        description=(
            "Churn scores for the customers active on each day, from the MLflow `champion` model and the "
            "feature service it was trained with. Written to the predictions table; re-running a day "
            "replaces its rows. Days whose features drifted from the champion's reference are held back in "
            "every run (sensor, backfill, UI) until a new champion passes them or an operator overrides."
        ),
    )
    def churn_predictions(
        context: AssetExecutionContext,
        config: PredictionConfig,
        registry: ModelRegistryResource,
        feast: FeastResource,
        predictions: PredictionStoreResource,
    ):
        first, end = run_days(context)
        champion = registry.champion()
        if champion is None:
            raise Failure(f"no `champion` alias on model {registry.model_name}: materialize champion_model first")
        day_keys = context.partition_keys
        gate = DriftGate(settings, champion)
        held_back = HeldBack(settings)
        scored_days, held = _drift_gate(context, config, settings, gate, held_back, day_keys)
        feature_service = champion.tags["feature_service"]
        served_schema = feast.feature_schema_hash(feature_service)
        if served_schema != champion.tags["feature_schema_hash"]:
            raise Failure(
                f"model version {champion.version} was trained on feature schema "
                f"{champion.tags['feature_schema_hash']}, but {feature_service} now has {served_schema}"
            )
        model = registry.load_model(champion.version)
        inputs_of_model = model.metadata.get_input_schema().input_names()
        threshold = float(champion.tags.get("threshold", 0.5))
        released = sorted(set(held_back.days()) & set(scored_days))
        progress = Progress(context, len(scored_days))
        schema = None
        # A chunk of days at a time, of at most range_chunk_rows rows: memory follows the chunk, not the range.
        rows_per_day = feature_rows_per_day(feast, feature_service, scored_days)
        for chunk in chunks(scored_days, settings.range_chunk_days, rows_per_day, settings.range_chunk_rows):
            entities = entities_of_days(feast, feature_service, *chunk_bounds(chunk))
            entities = entities[entities["as_of_day"].isin(chunk)]
            # Entities in (as_of_day, customer_id) order, and the join keeps their order.
            features = feast.historical_features(feature_service, entities)
            # The model's signature names its inputs; all are float64 (Feast returns ints with gaps as floats).
            inputs = features[inputs_of_model].astype("float64")
            scores = np.asarray(model.predict(inputs), dtype="float64") if len(inputs) else np.array([])
            scored = pd.DataFrame(
                {
                    "customer_id": features["customer_id"].astype(str),
                    "as_of_day": features["as_of_day"].astype(str),
                    "event_timestamp": pd.to_datetime(features["event_timestamp"], utc=True),
                    "score": scores.round(6),
                    "predicted_label": (scores >= threshold).astype(int),
                    "model_version": str(champion.version),
                    "feature_service": feature_service,
                    "run_id": context.run.run_id,
                }
            )
            predictions.replace_days(scored, chunk)
            for day in chunk:
                held_back.release(day)
            # Each day's own figures and version; the version is the content, not the run.
            by_day = scored.groupby("as_of_day").agg(
                mean_score=("score", "mean"), predicted_churn_rate=("predicted_label", "mean")
            )
            DaySlices.of(scored, "as_of_day").report(
                context, chunk, by_day.round(6).to_dict(orient="index"), exclude=("run_id",)
            )
            schema = column_schema(scored)
            progress.add(len(chunk), len(scored))
        context.log.info(f"{progress.rows} predictions for {len(scored_days)} days with model v{champion.version}")
        # A held day is not published: its partition keeps what it had, with the observation saying why.
        withhold_days(context, {v.day: v.describe() for v in held})
        yield MaterializeResult(
            metadata={
                **({"dagster/column_schema": schema} if schema else {}),
                "run_days": run_days_text(context),
                "model_version": str(champion.version),
                "feature_service": feature_service,
                "table": MetadataValue.text(f"{predictions.table} at {predictions.safe_url}"),
                "drift_override": config.override_reason if config.override_drift_gate else "none",
            }
        )
        # Days held back under an earlier champion that pass this one: their drift check says so too.
        judged = [gate.verdict(day) for day in released]
        passing = {v.day: check for v in judged if not v.held_back and (check := drift_day_check(settings, v))}
        if passing:
            yield from day_check_evaluations(
                context.instance, AssetCheckKey(AssetKey(FEATURE_TABLE), DRIFT_CHECK), passing, blocking=False
            )

    return [churn_predictions]
