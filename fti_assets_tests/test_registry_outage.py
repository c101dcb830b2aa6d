"""A registry that is down fails fast and says so; one that answers without a champion gives None."""

import time

import pytest
from dagster import DagsterEventType

from fti_assets.resources.mlflow import ModelRegistryResource, RegistryUnavailable
from fti_assets_tests.conftest import dagster_instance, small_settings
from fti_assets_tests.processes import free_port

# MLflow's own retry policy takes about 280 s to give up on a closed port; ours a few seconds.
FAST = 10


def test_an_unreachable_registry_fails_the_inference_run_in_seconds_naming_the_uri(tmp_path, monkeypatch):
    from fti_assets.definitions import build_definitions

    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    monkeypatch.setenv("FTI_MLFLOW_TRACKING_URI", uri)
    job = build_definitions(small_settings(tmp_path)).resolve_job_def("batch_inference_job")
    instance = dagster_instance(tmp_path / "dagster_home")
    result = job.execute_in_process(instance=instance, partition_key="2026-03-01", raise_on_error=False)
    (failure,) = result.get_step_failure_events()
    message = failure.step_failure_data.error.to_string()  # with its cause: what the UI shows
    assert not result.success
    step = {e.dagster_event_type: e.timestamp for e in instance.all_logs(result.run_id) if e.is_dagster_event}
    seconds = step[DagsterEventType.STEP_FAILURE] - step[DagsterEventType.STEP_START]
    # MLflow's first import in the step included; the retries themselves take about 3 s.
    assert seconds < 2 * FAST, f"{seconds:.0f} s to give up"
    assert "RegistryUnavailable" in message and uri in message and "Connection refused" in message
    assert "materialize champion_model first" not in message  # not the wrong diagnosis any more
    instance.dispose()


def test_no_model_or_no_alias_is_no_champion_and_a_closed_port_fails_fast(tmp_path):
    registry = ModelRegistryResource(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    # An embedded registry not yet written is not created just to be asked.
    assert registry.champion() is None and registry.version("1") is None and registry.alias_moves() == []
    assert not (tmp_path / "mlflow.db").exists()
    # What the registry answers as absent is "no champion yet", not an outage (MLflow's REST server relays the
    # same error codes as its SQL store).
    registry.client().search_registered_models()  # MLflow creates the database
    assert registry.champion() is None and registry.alias_moves() == [] and registry.version("1") is None
    registry.client().create_registered_model(registry.model_name)
    assert registry.champion() is None and registry.version("1") is None

    uri = f"http://127.0.0.1:{free_port()}"
    down = ModelRegistryResource(tracking_uri=uri)
    down.client()  # MLflow's imports, outside the timing
    started = time.perf_counter()
    with pytest.raises(RegistryUnavailable, match="the `champion` alias of model customer_churn") as raised:
        down.champion()
    assert time.perf_counter() - started < FAST
    assert uri in str(raised.value) and "Connection refused" in str(raised.value)
    with pytest.raises(RegistryUnavailable, match="version 1 of model customer_churn"):
        ModelRegistryResource(tracking_uri=uri, http_max_retries=0).version("1")


def test_a_password_in_the_uri_stays_out_of_the_error():
    port = free_port()
    registry = ModelRegistryResource(tracking_uri=f"http://ops:s3cret@127.0.0.1:{port}", http_max_retries=0)
    with pytest.raises(RegistryUnavailable) as raised:
        registry.champion()
    assert f"http://ops:***@127.0.0.1:{port}" in str(raised.value) and "Connection refused" in str(raised.value)
    assert raised.value.__cause__ is None and "s3cret" not in str(raised.value)


def test_an_mlflow_run_left_open_in_another_store_does_not_fail_the_next_run(tmp_path):
    """A failed training step leaves its MLflow run open in the process; the next Dagster run of that process,
    tracking into another store (the tests, a demo after another), must start, and the old run be ended."""
    import mlflow
    from dagster import job, op
    from mlflow.tracking import MlflowClient

    from fti_assets.resources.mlflow import ensure_sqlite_folder, mlflow_tracking

    first, second = (f"sqlite:///{tmp_path / name / 'mlflow.db'}" for name in ("first", "second"))
    ensure_sqlite_folder(first)
    mlflow.set_tracking_uri(first)
    earlier = MlflowClient(first).create_experiment("earlier", artifact_location=str(tmp_path / "first"))
    left_open = mlflow.start_run(experiment_id=earlier, tags={"dagster_run_id": "an-earlier-dagster-run"}).info.run_id
    tracking = mlflow_tracking.configured(
        {"experiment_name": "churn", "mlflow_tracking_uri": second, "artifact_location": str(tmp_path / "artifacts")}
    )

    @op(required_resource_keys={"mlflow"})
    def log_a_metric(context):
        context.resources.mlflow.log_metric("rows", 1)

    @job(resource_defs={"mlflow": tracking})
    def training():
        log_a_metric()

    try:
        assert training.execute_in_process().success
        assert MlflowClient(first).get_run(left_open).info.status == "FINISHED"
        runs = MlflowClient(second).search_runs([MlflowClient(second).get_experiment_by_name("churn").experiment_id])
        assert [run.data.metrics for run in runs] == [{"rows": 1.0}]
    finally:
        while mlflow.active_run():
            mlflow.end_run()
