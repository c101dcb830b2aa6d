"""The source and the predictions table on a real PostgreSQL server (FTI_TEST_POSTGRES_URL)."""

import os
import uuid
from datetime import date

import pandas as pd
import pytest
from dagster import DagsterInstance, materialize
from sqlalchemy import create_engine, text

from fti_assets.ingestion.assets import build_ingestion_assets
from fti_assets.ingestion.standardize import standardize_transactions
from fti_assets.resources.lake import LakeResource
from fti_assets.resources.predictions import PREDICTION_COLUMNS, PredictionStoreResource
from fti_assets.resources.source import SourceResource
from fti_assets.simulate import simulate, write_source
from fti_assets_tests.conftest import small_settings

pytestmark = pytest.mark.postgres
NOW = pd.Timestamp("2026-11-01", tz="UTC")


@pytest.fixture(scope="module")
def tables(postgres_url):
    prefix = f"fti_test_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    names = {
        "transactions": f"{prefix}_transactions",
        "customers": f"{prefix}_customers",
        "predictions": f"{prefix}_predictions",
    }
    yield names
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        for name in names.values():
            conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
    engine.dispose()


@pytest.fixture(scope="module")
def sources(postgres_url, tables, tmp_path_factory):
    """The same simulated data in PostgreSQL and in SQLite, read through the same resource."""
    settings = small_settings(tmp_path_factory.mktemp("pg"))
    data = simulate(n_customers=600, days=30, start=date(2026, 1, 1), seed=11)
    sqlite_url = f"sqlite:///{settings.data_dir}/source.db"
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    write_source(postgres_url, data, customers_table=tables["customers"], transactions_table=tables["transactions"])
    write_source(sqlite_url, data, customers_table=tables["customers"], transactions_table=tables["transactions"])

    def resource(url):
        customers = settings.source.customers.model_copy(update={"table": tables["customers"]})
        return SourceResource(
            url=url,
            transactions_table=tables["transactions"],
            columns=settings.source.columns,
            customers=customers,
            timezone="UTC",
        )

    return settings, resource(postgres_url), resource(sqlite_url)


def test_postgres_source_reads_the_same_rows_as_sqlite(sources):
    _, postgres, sqlite = sources
    first, end = date(2026, 1, 5), date(2026, 1, 12)
    from_pg = standardize_transactions(
        postgres.read_transactions(first, end), postgres.columns, "UTC", NOW, (first, end)
    )
    from_lite = standardize_transactions(sqlite.read_transactions(first, end), sqlite.columns, "UTC", NOW, (first, end))
    key = ["transaction_id"]
    pd.testing.assert_frame_equal(
        from_pg.accepted.sort_values(key).reset_index(drop=True),
        from_lite.accepted.sort_values(key).reset_index(drop=True),
    )
    assert from_pg.rows_read == from_lite.rows_read > 100
    assert (
        postgres.count_outside_range(date(2026, 1, 1), date(2026, 1, 31))
        == sqlite.count_outside_range(date(2026, 1, 1), date(2026, 1, 31))
        > 0
    )


def test_the_raw_asset_materializes_from_postgres(sources, tmp_path):
    settings, postgres, _ = sources
    assets = build_ingestion_assets(settings)
    lake = LakeResource(root=str(tmp_path / "lake"))
    result = materialize(
        assets[:1],
        partition_key="2026-01-07",
        resources={"source": postgres, "lake": lake},
        instance=DagsterInstance.ephemeral(),
    )
    assert result.success
    metadata = result.get_asset_materialization_events()[0].materialization.metadata
    written = pd.read_parquet(lake.day_path("raw_transactions", date(2026, 1, 7)))
    assert metadata["dagster/row_count"].value == len(written) > 0
    assert result.get_asset_check_evaluations()[0].passed


def test_predictions_table_on_postgres_is_replaced_per_day(postgres_url, tables):
    store = PredictionStoreResource(url=postgres_url, table=tables["predictions"])
    rows = pd.DataFrame(
        {
            "customer_id": ["1", "2"],
            "as_of_day": ["2026-01-01", "2026-01-01"],
            "event_timestamp": pd.to_datetime(["2026-01-01 23:59:59"] * 2, utc=True),
            "score": [0.2, 0.9],
            "predicted_label": [0, 1],
            "model_version": "3",
            "feature_service": "customer_churn_v1",
            "run_id": "r1",
        }
    )[PREDICTION_COLUMNS]
    store.replace_days(rows, ["2026-01-01"])
    store.replace_days(rows.assign(run_id="r2", score=[0.3, 0.8]), ["2026-01-01"])
    stored = store.read_days(["2026-01-01"])
    assert len(stored) == 2 and set(stored["run_id"]) == {"r2"}
    assert stored["score"].tolist() == [0.3, 0.8]
