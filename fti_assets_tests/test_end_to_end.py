"""The whole graph, materialized through a real Dagster instance on a small simulated source.

One run of the demo feeds every test here; each test checks the outputs of one stage, not just
that the runs succeeded.
"""

import sqlite3
from datetime import date

import pandas as pd
import pytest
from dagster import AssetKey

from fti_assets.definitions import JOBS, build_definitions
from fti_assets.demo import summary
from fti_assets.training.dataset import assign_split, split_by_time, stride_sample
from fti_assets_tests.conftest import DAYS, small_settings

pytestmark = pytest.mark.slow


def latest_materialization(instance, asset: str, partition: str | None = None):
    record = instance.get_latest_materialization_event(AssetKey(asset))
    if partition is not None:
        from dagster import AssetRecordsFilter

        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=AssetKey(asset), asset_partitions=[partition]), limit=1
        ).records
        record = records[0].event_log_entry if records else None
    return record.asset_materialization


def test_demo_reports_progress_and_a_summary(e2e):
    settings, _, seen, lines = e2e
    assert any(line.startswith("[source] simulated 400 customers") for line in lines)
    done = [line for line in lines if "done in" in line]
    assert len(done) == len(JOBS) and all(line.endswith("rows/s") for line in done)
    features_line = next(line for line in done if line.startswith("[features_job]"))
    assert f"{seen['customer_features']['dagster/row_count'] + seen['churn_labels']['dagster/row_count']:,} rows" in (
        features_line
    )
    text = summary(settings, seen)
    assert "champion           v1" in text and "make ui" in text


def test_raw_rows_are_all_accounted_for_against_the_source(e2e):
    settings, instance, seen, _ = e2e
    raw = seen["raw_transactions"]
    assert raw["run_rows_accepted"] + raw["run_rows_quarantined"] == raw["run_rows_read"]
    with sqlite3.connect(settings.source_url.removeprefix("sqlite:///")) as conn:
        in_range, total = conn.execute(
            "SELECT sum(purchased_at >= ? AND purchased_at < ?), count(*) FROM transactions",
            ("2026-01-01", settings.end_exclusive.isoformat()),
        ).fetchone()
    assert raw["run_rows_read"] == in_range
    assert raw["source_rows_outside_date_range"] == total - in_range > 0  # the simulator's 2099 rows
    lake = settings.path("lake")
    accepted = pd.concat(pd.read_parquet(p) for p in (lake / "raw_transactions").glob("*.parquet"))
    quarantined = pd.concat(pd.read_parquet(p) for p in (lake / "quarantine" / "raw_transactions").glob("*.parquet"))
    assert len(accepted) == raw["run_rows_accepted"] == raw["dagster/row_count"]
    assert len(quarantined) == raw["rows_quarantined"] == raw["run_rows_quarantined"] - raw["run_rows_without_day"]
    assert accepted["transaction_id"].is_unique
    assert set(quarantined["reason"]) >= {
        "duplicate_transaction_id",
        "missing_customer_id",
        "non_finite_amount",
    }
    assert len(list((lake / "raw_transactions").glob("*.parquet"))) == DAYS


def test_features_are_in_the_offline_source_and_the_online_store(e2e):
    settings, _, seen, _ = e2e
    from fti_assets.definitions import build_resources

    feast = build_resources(settings)["feast"]
    store = feast.store()
    assert sorted(s.name for s in store.list_feature_services()) == ["customer_churn_v1", "customer_churn_v2"]
    last_day = pd.read_parquet(settings.path("lake", "customer_features", f"{settings.end_date}.parquet"))
    assert len(last_day) == seen["online_features"]["entities"] > 50
    assert list(last_day.columns[3:]) == settings.feature_table_spec.columns
    some = last_day.sample(5, random_state=0)
    for service, columns in [
        ("customer_churn_v1", ["spend_sum_30d"]),
        ("customer_churn_v2", ["spend_sum_all", "purchase_gap_mean_days"]),
    ]:
        online = store.get_online_features(
            features=store.get_feature_service(service),
            entity_rows=[{"customer_id": c} for c in some["customer_id"]],
        ).to_df()
        merged = online.merge(some, on="customer_id", suffixes=("_online", "_offline"))
        for column in columns:
            pd.testing.assert_series_equal(merged[f"{column}_online"], merged[f"{column}_offline"], check_names=False)


def test_labels_exist_only_where_the_horizon_is_complete(e2e):
    settings, _, seen, _ = e2e
    labels = seen["churn_labels"]
    assert labels["labelled_days"] == DAYS - settings.label_horizon_days
    assert 0.05 < labels["positive_rate"] < 0.6


def test_training_dataset_is_point_in_time_immutable_and_split_by_time(e2e):
    settings, _, seen, _ = e2e
    meta = seen["training_dataset"]
    path = settings.path("datasets", "training", f"{meta['dataset_version']}.parquet")
    dataset = pd.read_parquet(path)
    # Every validation and test label, and the train labels of the stride, each once.
    labels = pd.concat(pd.read_parquet(p) for p in sorted(settings.path("lake", "churn_labels").glob("*.parquet")))
    assert len(labels) == seen["churn_labels"]["dagster/row_count"]
    periods = split_by_time(labels["as_of_day"].tolist(), 10, 10, settings.label_horizon_days)
    labels["split"] = assign_split(labels["as_of_day"], periods)
    sampled = stride_sample(labels, settings.split.train_stride_days)
    expected_rows = labels[labels["split"].isin(["validation", "test"]) | ((labels["split"] == "train") & sampled)]
    key = ["customer_id", "as_of_day", "split", "churned"]
    pd.testing.assert_frame_equal(
        dataset[key].astype({"customer_id": str}).sort_values(key, ignore_index=True),
        expected_rows[key].astype({"customer_id": str}).sort_values(key, ignore_index=True),
    )
    assert len(dataset[dataset["split"] == "train"]) < len(labels[labels["split"] == "train"]) / 5
    assert (
        dataset.groupby("split")["as_of_day"].agg(["min", "max"]).loc["test", "min"]
        > (dataset.groupby("split")["as_of_day"].max()["validation"])
    )
    # No train label looks into the validation days: the last train day's window ends before them.
    last_train = pd.Timestamp(dataset.loc[dataset["split"] == "train", "as_of_day"].max())
    first_validation = pd.Timestamp(dataset.loc[dataset["split"] == "validation", "as_of_day"].min())
    assert last_train + pd.Timedelta(days=settings.label_horizon_days) < first_validation
    assert meta["periods"]["purged"].startswith((last_train + pd.Timedelta(days=1)).strftime("%Y-%m-%d"))
    # Features of a row come from its own day: spot-check against the offline table.
    row = dataset.iloc[len(dataset) // 2]
    day = pd.read_parquet(settings.path("lake", "customer_features", f"{row['as_of_day']}.parquet"))
    expected = day.set_index("customer_id").loc[row["customer_id"]]
    assert row["spend_sum_90d"] == expected["spend_sum_90d"]
    assert row["days_since_last_purchase"] == expected["days_since_last_purchase"]


def test_models_are_in_mlflow_and_the_champion_carries_its_contract(e2e):
    settings, _, seen, _ = e2e
    from fti_assets.definitions import build_resources

    registry = build_resources(settings)["registry"]
    champion = registry.champion()
    assert champion is not None and str(champion.version) == seen["champion_model"]["champion_version"] == "1"
    for tag in (
        "feature_service",
        "feature_schema_hash",
        "training_dataset_version",
        "code_version",
        "git_commit",
    ):
        assert champion.tags[tag], tag
    assert champion.tags["training_dataset_version"] == seen["training_dataset"]["dataset_version"]
    assert float(champion.tags["test_roc_auc"]) > 0.6
    compared = seen["candidate_model"]["compared"]
    assert set(compared) == {"sklearn", "hgb", "mlp", "ensemble"}
    # Each candidate says what its scores draw on: one importance entry per feature.
    features = seen["training_dataset"]["feature_refs"]
    for kind in ("sklearn_model", "hgb_model", "mlp_model", "ensemble_model"):
        assert len([k for k in seen[kind] if k.startswith("importance/")]) == len(features), kind


def test_the_ensemble_in_mlflow_scores_the_mean_of_the_members_it_names(e2e):
    """The ensemble picked its members on validation and carries their weights: loaded from MLflow alone, it
    scores as the mean of those members' own logged models."""
    import mlflow
    import numpy as np

    from fti_assets.definitions import build_resources
    from fti_assets.training.models import mean_in_order

    settings, _, seen, _ = e2e
    ensemble = seen["ensemble_model"]
    assert set(ensemble["compared"]) == {"sklearn+hgb", "sklearn+mlp", "hgb+mlp", "sklearn+hgb+mlp"}
    assert ensemble["members"] in ensemble["compared"]
    meta = seen["training_dataset"]
    dataset = pd.read_parquet(settings.path("datasets", "training", f"{meta['dataset_version']}.parquet"))
    columns = [ref.split(": ", 1)[1] for ref in meta["feature_refs"]]
    rows = dataset.loc[dataset["split"] == "test", columns].astype("float64").head(500)
    mlflow.set_tracking_uri(build_resources(settings)["registry"].tracking_uri)
    members = [mlflow.pyfunc.load_model(seen[f"{kind}_model"]["model_uri"]) for kind in ensemble["members"].split("+")]
    expected = mean_in_order([np.asarray(member.predict(rows), dtype="float64") for member in members])
    scores = mlflow.pyfunc.load_model(ensemble["model_uri"]).predict(rows)
    np.testing.assert_allclose(scores, expected, rtol=1e-12, atol=0)


def test_predictions_cover_every_active_customer_of_every_day_once(e2e):
    settings, _, seen, _ = e2e
    from fti_assets.definitions import build_resources

    store = build_resources(settings)["predictions"]
    days = [d.isoformat() for d in pd.date_range(settings.start_date, settings.end_date).date]
    predictions = store.read_days(days)
    features = pd.concat(
        pd.read_parquet(p, columns=["customer_id", "as_of_day"])
        for p in settings.path("lake", "customer_features").glob("*.parquet")
    )
    assert len(predictions) == len(features) == seen["churn_predictions"]["dagster/row_count"]
    assert not predictions.duplicated(["as_of_day", "customer_id"]).any()
    assert set(predictions["model_version"]) == {"1"}
    assert set(predictions["feature_service"]) == {settings.feature_service}
    assert predictions["score"].between(0, 1).all()


def test_each_day_of_a_range_run_reports_its_own_rows_version_and_checks(e2e):
    """The demo ran each stage once over all days; every day still reads as if it had run alone."""
    from dagster import AssetCheckKey
    from dagster._core.event_api import PartitionKeyFilter

    from fti_assets.versioning import frame_version

    settings, instance, _, _ = e2e
    versions = set()
    for day in ("2026-02-02", "2026-03-15", "2026-04-20"):
        for asset, folder in (("raw_transactions", "raw_transactions"), ("customer_features", "customer_features")):
            rows = pd.read_parquet(settings.path("lake", folder, f"{day}.parquet"))
            materialization = latest_materialization(instance, asset, day)
            assert materialization.metadata["dagster/row_count"].value == len(rows) > 0, (asset, day)
            assert materialization.tags["dagster/data_version"] == frame_version(rows), (asset, day)
            versions.add(materialization.tags["dagster/data_version"])
        predictions = latest_materialization(instance, "churn_predictions", day)
        scored = build_definitions(settings).resources["predictions"].read_days([day])
        assert predictions.metadata["dagster/row_count"].value == len(scored)
        assert abs(predictions.metadata["mean_score"].value - scored["score"].mean()) < 1e-6
        for asset, check in (("raw_transactions", "raw_data_quality"), ("customer_features", "feature_data_quality")):
            record = instance.event_log_storage.get_asset_check_execution_history(
                AssetCheckKey(AssetKey(asset), check), limit=1, partition_filter=PartitionKeyFilter(key=day)
            )[0]
            evaluation = record.event.dagster_event.event_specific_data
            assert evaluation.partition == day and evaluation.passed, (check, day)
            assert evaluation.target_materialization_data is not None
    assert len(versions) == 6  # no two days share a version


def test_rematerializing_a_partition_gives_the_same_data_version_and_no_duplicates(e2e):
    """A day run alone, three times after the range run, keeps the version the range run gave it."""
    settings, instance, _, _ = e2e
    defs = build_definitions(settings)
    day = "2026-03-15"
    versions = {}
    for job, asset in (
        ("ingestion_job", "raw_transactions"),
        ("features_job", "customer_features"),
        ("batch_inference_job", "churn_predictions"),
    ):
        from_range_run = latest_materialization(instance, asset, day).tags["dagster/data_version"]
        for _ in range(3):
            defs.resolve_job_def(job).execute_in_process(instance=instance, partition_key=day)
            assert latest_materialization(instance, asset, day).tags["dagster/data_version"] == from_range_run, asset
        versions[asset] = from_range_run
    predictions = build_definitions(settings).resources["predictions"].read_days([day])
    assert not predictions.duplicated(["customer_id"]).any()
    assert len(predictions) == len(pd.read_parquet(settings.path("lake", "customer_features", f"{day}.parquet")))
    assert len(set(versions.values())) == 3


def test_leakage_through_feast_later_data_changes_no_feature_as_of_an_earlier_time(e2e, tmp_path):
    """Rewrite every day after the as-of day with other values, join again: the as-of rows are unchanged."""
    import shutil

    settings, _, _, _ = e2e
    from fti_assets.definitions import build_resources

    copy = small_settings(tmp_path)
    shutil.copytree(settings.path("lake", "customer_features"), copy.path("lake", "customer_features"))
    feast = build_resources(copy)["feast"]
    feast.store().apply(feast.definitions())
    as_of_day = date(2026, 3, 1)
    labels = pd.read_parquet(settings.path("lake", "churn_labels", f"{as_of_day}.parquet"))
    entity_df = labels[["customer_id", "event_timestamp"]]

    def join():
        service = feast.store().get_feature_service("customer_churn_v1")
        out = feast.store().get_historical_features(entity_df=entity_df, features=service).to_df()
        return out.sort_values("customer_id").reset_index(drop=True)

    before = join()
    for path in copy.path("lake", "customer_features").glob("*.parquet"):
        if path.stem > as_of_day.isoformat():
            later = pd.read_parquet(path)
            later["spend_sum_90d"] = later["spend_sum_90d"] * 10 + 1
            later["days_since_last_purchase"] = 999
            later.to_parquet(path, index=False)
    after = join()
    pd.testing.assert_frame_equal(before, after)
    assert before["spend_sum_90d"].notna().all()


def test_skew_check_catches_a_corrupted_online_value(e2e):
    settings, instance, seen, _ = e2e
    assert seen["training_serving_skew"]["mismatch_rate"] == 0.0
    defs = build_definitions(settings)
    store = defs.resources["feast"].store()
    latest = pd.read_parquet(settings.path("lake", "customer_features", f"{settings.end_date}.parquet"))
    corrupted = latest.head(1).copy()
    victim = corrupted["customer_id"].iat[0]
    corrupted["spend_sum_30d"] = corrupted["spend_sum_30d"] + 1000.0
    store.write_to_online_store(settings.all_feature_services[settings.feature_service].view, corrupted)
    from dagster import materialize

    result = materialize(
        [defs.resolve_assets_def(AssetKey("training_serving_skew"))],
        instance=instance,
        raise_on_error=False,
    )
    evaluation = next(e for e in result.get_asset_check_evaluations() if e.check_name == "online_matches_offline")
    assert not evaluation.passed and evaluation.metadata["mismatched_values"].value >= 1
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    assert victim in metadata["mismatches"].value and "spend_sum_30d" in metadata["mismatches"].value
    # Put the online store right again for whatever runs next.
    defs.resolve_job_def("online_features_job").execute_in_process(instance=instance)


def test_features_written_a_chunk_at_a_time_equal_one_pass_over_the_whole_range(e2e):
    from fti_assets.features.transform import compute_customer_features

    settings, _, _, _ = e2e
    assert settings.range_chunk_days < DAYS  # the demo's range run wrote several chunks
    lake = settings.path("lake")
    raw = pd.concat(pd.read_parquet(p) for p in sorted((lake / "raw_transactions").glob("*.parquet")))
    customers = pd.read_parquet(lake / "raw_customers.parquet")
    one_pass = compute_customer_features(
        raw,
        customers,
        settings.start_date,
        settings.end_exclusive,
        settings.active_window_days,
        settings.source.timezone,
        settings.feature_table_spec,
    )
    written = pd.concat(pd.read_parquet(p) for p in sorted((lake / "customer_features").glob("*.parquet"))).reset_index(
        drop=True
    )
    pd.testing.assert_frame_equal(written, one_pass)
