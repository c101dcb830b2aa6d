"""Negative paths of the loop on a real instance: failing gates, the retrain cooldown, the drift-gate
override, and rollback of the champion (with its refusals)."""

import json
from dataclasses import asdict

import pandas as pd
import pytest
from dagster import AssetCheckKey, AssetKey, AssetRecordsFilter, RunsFilter, build_sensor_context

from fti_assets.definitions import build_definitions
from fti_assets.demo import QUIET, run_demo
from fti_assets.monitoring.drift_gate import DRIFTED, DayVerdict, DriftGate, HeldBack, write_json_atomic
from fti_assets.training.rollback import RollbackRefused, rollback
from fti_assets_tests.conftest import dagster_instance, small_settings

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    data = tmp_path_factory.mktemp("gates")
    settings = small_settings(data)
    instance = dagster_instance(data / "dagster_home")
    run_demo(settings, instance, out=lambda line: None)
    yield settings, instance
    instance.dispose()


def retrain(settings, instance, **gates):
    strict = small_settings(settings.data_dir, gates={"min_group_rows": 1000, **gates})
    defs = build_definitions(strict)
    result = defs.resolve_job_def("training_job").execute_in_process(
        instance=instance, run_config=QUIET, raise_on_error=False
    )
    return defs, result


def latest_check(instance, name):
    record = instance.get_latest_asset_check_evaluation_record(AssetCheckKey(AssetKey("candidate_model"), name))
    evaluation = record.event.dagster_event.event_specific_data
    return evaluation.passed, {k: v.value for k, v in evaluation.metadata.items()}


def test_a_worse_candidate_is_not_promoted_and_the_check_says_why(world):
    settings, instance = world
    defs, result = retrain(settings, instance, min_pr_auc_gain=0.5)
    assert not result.success
    registry = defs.resources["registry"]
    assert str(registry.champion().version) == "1"
    passed, metadata = latest_check(instance, "beats_champion")
    assert not passed and "needs >= +0.500" in metadata["reason"]
    newest = max(registry.client().search_model_versions(f"name='{registry.model_name}'"), key=lambda v: int(v.version))
    assert newest.tags["gates"].startswith("failed: beats_champion")


def test_a_candidate_that_does_not_beat_recency_alone_is_not_promoted(world):
    settings, instance = world
    defs, result = retrain(settings, instance, min_gain_over_recency=0.5)
    assert not result.success
    assert str(defs.resources["registry"].champion().version) == "1"
    passed, metadata = latest_check(instance, "beats_recency")
    assert not passed and "vs recency alone" in metadata["reason"] and "needs >= +0.500" in metadata["reason"]
    # The numbers behind the verdict, each also plotted on its own in the UI.
    values = json.loads(metadata["values"]) if isinstance(metadata["values"], str) else metadata["values"]
    assert metadata["recency_pr_auc"] == values["recency_pr_auc"] and 0 < values["recency_pr_auc"] < 1
    assert metadata["candidate_roc_auc"] - metadata["recency_roc_auc"] < 0.5


def test_an_unfair_candidate_is_not_promoted(world):
    settings, instance = world
    defs, result = retrain(settings, instance, max_recall_gap=0.0, max_positive_rate_gap=0.0, min_group_rows=20)
    assert not result.success
    assert str(defs.resources["registry"].champion().version) == "1"
    passed, metadata = latest_check(instance, "fairness")
    assert not passed and "by country" in metadata["reason"]


def test_drift_retrain_sensor_requests_once_then_waits_for_the_cooldown(world):
    settings, instance = world
    defs = build_definitions(settings)
    registry, lake = defs.resources["registry"], defs.resources["lake"]
    gate = DriftGate(settings, registry.champion())
    labelled = lake.written_days("churn_labels")[-8:]
    for day in labelled:
        verdict = DayVerdict(day.isoformat(), DRIFTED, gate.model_version, "now", {"summary": "test"}, None)
        write_json_atomic(gate.ledger_path(day.isoformat()), asdict(verdict))
    sensor = defs.resolve_sensor_def("drift_retrain")

    def tick(cursor):
        with build_sensor_context(
            instance=instance, cursor=cursor, resources={"registry": registry, "lake": lake}
        ) as context:
            return sensor.evaluate_tick(context)

    first = tick(None)
    assert len(first.run_requests) == 1
    request = first.run_requests[0]
    assert request.run_key == "retrain-after-v1-1"
    assert request.tags["fti/retrain_reason"] == "feature drift against champion v1"
    assert "(8 days, 8 labelled)" in request.tags["fti/drifted_partitions"]
    second = tick(first.cursor)
    assert not second.run_requests and "cooldown" in second.skip_message
    expired = json.loads(first.cursor) | {"requested_at": "2000-01-01T00:00:00+00:00"}
    third = tick(json.dumps(expired))
    assert [r.run_key for r in third.run_requests] == ["retrain-after-v1-2"]
    for day in labelled:
        gate.ledger_path(day.isoformat()).unlink()


def test_a_held_back_day_needs_an_explicit_override_which_is_recorded(world):
    settings, instance = world
    defs = build_definitions(settings)
    registry = defs.resources["registry"]
    gate = DriftGate(settings, registry.champion())
    day = settings.end_date.isoformat()
    assert day > gate.reference().last_training_day
    drift = {"summary": "forced for the test", "drifted_share": 0.75}
    write_json_atomic(gate.ledger_path(day), asdict(DayVerdict(day, DRIFTED, gate.model_version, "now", drift, None)))
    job = defs.resolve_job_def("batch_inference_job")
    before = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("churn_predictions"), asset_partitions=[day]), limit=1
    ).records

    # Held back, not crashed: the run succeeds, publishes nothing for the day and says why on it.
    held = job.execute_in_process(instance=instance, partition_key=day, run_config=QUIET)
    assert held.success and not held.get_asset_materialization_events()
    after = instance.fetch_materializations(
        AssetRecordsFilter(asset_key=AssetKey("churn_predictions"), asset_partitions=[day]), limit=1
    ).records
    assert [r.storage_id for r in after] == [r.storage_id for r in before]
    assert day in HeldBack(settings).days()
    observation = instance.fetch_observations(AssetKey("churn_predictions"), limit=1).records[0]
    assert observation.partition_key == day
    metadata = observation.asset_observation.metadata
    assert metadata["held_back"].value is True and metadata["drifted_share"].value == 0.75
    assert metadata["champion_version"].value == gate.model_version
    assert metadata["report"].value.startswith("http://127.0.0.1:3001/feature_drift/")

    override = {"ops": {"churn_predictions": {"config": {"override_drift_gate": True, "override_reason": "audit"}}}}
    released = job.execute_in_process(instance=instance, partition_key=day, run_config=override)
    assert released.success
    run = instance.get_run_by_id(released.run_id)
    assert run.tags["fti/drift_override"] == "audit"
    assert day not in HeldBack(settings).days()
    metadata = released.get_asset_materialization_events()[0].materialization.metadata
    assert metadata["drift_override"].value == "audit"
    assert len(defs.resources["predictions"].read_days([day])) > 0
    gate.ledger_path(day).unlink()


def test_rollback_moves_the_champion_and_records_every_move(world):
    settings, instance = world
    defs = build_definitions(settings)
    registry, feast = defs.resources["registry"], defs.resources["feast"]
    versions = sorted(int(v.version) for v in registry.client().search_model_versions(f"name='{registry.model_name}'"))
    assert len(versions) >= 2
    result = defs.resolve_job_def("rollback_job").execute_in_process(
        instance=instance,
        run_config={"ops": {"rollback_champion": {"config": {"version": str(versions[-1]), "reason": "try newest"}}}},
    )
    assert result.success
    assert str(registry.champion().version) == str(versions[-1])
    move = rollback(registry, feast, "1", "back to the first")
    assert move["from"] == str(versions[-1]) and move["to"] == "1"
    moves = registry.alias_moves()
    assert [(m["to"], m["action"]) for m in moves][-2:] == [(str(versions[-1]), "rollback"), ("1", "rollback")]
    assert moves[0]["action"] == "promotion" and moves[0]["from"] is None
    champion_history = instance.fetch_materializations(AssetKey("champion_model"), limit=5).records
    assert any(r.asset_materialization.metadata["reason"].value == "rollback: try newest" for r in champion_history)


@pytest.mark.parametrize(
    ("tags", "message"),
    [
        ({"feature_service": "customer_churn_v0"}, "'customer_churn_v0', which no longer exists"),
        ({"feature_schema_hash": "deadbeef"}, "was trained on deadbeef"),
    ],
)
def test_rollback_refuses_a_version_whose_features_are_gone(world, tags, message):
    settings, instance = world
    defs = build_definitions(settings)
    registry, feast = defs.resources["registry"], defs.resources["feast"]
    client = registry.client()
    source = client.get_model_version(registry.model_name, "1")
    orphan = client.create_model_version(registry.model_name, source.source, tags={**source.tags, **tags})
    before = str(registry.champion().version)
    with pytest.raises(RollbackRefused, match=message):
        rollback(registry, feast, orphan.version, "should not happen")
    assert str(registry.champion().version) == before
    refused = defs.resolve_job_def("rollback_job").execute_in_process(
        instance=instance,
        run_config={"ops": {"rollback_champion": {"config": {"version": str(orphan.version), "reason": "x"}}}},
        raise_on_error=False,
    )
    assert not refused.success
    assert instance.get_runs(RunsFilter(job_name="rollback_job"), limit=1)[0].status.value == "FAILURE"


def test_predictions_of_the_backfill_are_complete(world):
    settings, _ = world
    predictions = build_definitions(settings).resources["predictions"]
    days = [d.isoformat() for d in pd.date_range(settings.start_date, settings.end_date).date]
    assert predictions.read_days(days)["as_of_day"].nunique() == len(days)


def test_a_candidate_whose_scores_are_not_probabilities_is_not_promoted(world):
    """Gates passed, but the registered version answers NaN: the probe refuses it, the champion stays."""
    import mlflow
    import numpy as np
    from dagster import build_asset_context
    from mlflow.models import infer_signature

    settings, instance = world
    defs = build_definitions(settings)
    registry, feast = defs.resources["registry"], defs.resources["feast"]
    champion = str(registry.champion().version)
    features = feast.feature_columns(settings.feature_service)
    version = instance.get_latest_materialization_event(AssetKey("training_dataset")).asset_materialization
    dataset_version = version.metadata["dataset_version"].value
    dataset = {
        "path": str(settings.path("datasets", "training", f"{dataset_version}.parquet")),
        "features": features,
        "feature_service": settings.feature_service,
    }

    class AnswersNaN(mlflow.pyfunc.PythonModel):
        def predict(self, context, model_input, params=None):
            return np.full(len(model_input), np.nan)

    example = pd.DataFrame([[1.0] * len(features)], columns=features)
    mlflow.set_tracking_uri(registry.tracking_uri)
    with mlflow.start_run():
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=AnswersNaN(),
            signature=infer_signature(example, np.array([0.5])),
            registered_model_name=registry.model_name,
        )
    candidate = {
        "version": str(info.registered_model_version),
        "gates": {"passed": True, "reason": "every gate passed"},
        "champion_at_evaluation": champion,
    }
    result = defs.get_assets_def("champion_model")(
        build_asset_context(instance=instance),
        registry=registry,
        feast=feast,
        candidate_model=candidate,
        training_dataset=dataset,
    )
    assert str(registry.champion().version) == champion
    assert result.metadata["promoted"] is False
    reason = result.metadata["reason"]
    assert "probe rows" in reason and "not finite" in reason, reason


def test_rollback_across_feature_service_versions_scores_with_the_champions_own_service(world):
    """A model on customer_churn_v1 and one on customer_churn_v2 in the registry: whichever is the champion,
    batch inference reads that model's own service, and rolling back and forth needs no other change.
    Last in the module: it leaves a v1 training dataset behind."""
    settings, instance = world
    on_v1 = build_definitions(small_settings(settings.data_dir, feature_service="customer_churn_v1"))
    on_v1.resolve_job_def("training_job").execute_in_process(instance=instance, run_config=QUIET, raise_on_error=False)
    defs = build_definitions(settings)
    registry, feast, predictions = defs.resources["registry"], defs.resources["feast"], defs.resources["predictions"]
    latest = {}
    for version in registry.client().search_model_versions(f"name='{registry.model_name}'"):
        service = version.tags.get("feature_service")
        # Not the other tests' hand-made versions, whose services or schemas are gone.
        if service in ("customer_churn_v1", "customer_churn_v2") and version.tags["feature_schema_hash"] == (
            feast.feature_schema_hash(service)
        ):
            latest[service] = max(latest.get(service, 0), int(version.version))
    assert {"customer_churn_v1", "customer_churn_v2"} <= set(latest)
    day = settings.end_date.isoformat()
    for service in ["customer_churn_v1", "customer_churn_v2", "customer_churn_v1"]:
        rollback(registry, feast, str(latest[service]), f"to the model on {service}")
        scored = defs.resolve_job_def("batch_inference_job").execute_in_process(
            instance=instance, partition_key=day, run_config=QUIET
        )
        metadata = scored.get_asset_materialization_events()[0].materialization.metadata
        assert (metadata["feature_service"].value, metadata["model_version"].value) == (service, str(latest[service]))
        rows = predictions.read_days([day])
        assert len(rows) > 50 and set(rows["feature_service"]) == {service}
