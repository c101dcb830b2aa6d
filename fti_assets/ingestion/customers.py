"""raw_customers: a snapshot of customer attributes in the standard schema."""

import pandas as pd
from dagster import AssetExecutionContext, AssetsDefinition, DataVersion, MaterializeResult, asset

from fti_assets.ingestion.standardize import (
    customers_from_transactions,
    standardize_customers,
    standardize_transactions,
)
from fti_assets.ingestion.transactions import OWNERS
from fti_assets.metadata import table_metadata
from fti_assets.resources.lake import LakeResource, write_parquet_atomic
from fti_assets.resources.source import SourceResource
from fti_assets.settings import ProjectSettings
from fti_assets.versioning import frame_version


def build_raw_customers(settings: ProjectSettings) -> AssetsDefinition:
    @asset(
        name="raw_customers",
        group_name="ingestion",
        kinds={"sql", "pandas", "parquet"},
        owners=OWNERS,
        code_version="1",
        description=(
            "Snapshot of customer attributes (country, segment, signup date) in the standard schema. "
            "A source without a customer table gets them derived from its transactions "
            "(first purchase as signup, most frequent country)."
        ),
    )
    def raw_customers(context: AssetExecutionContext, source: SourceResource, lake: LakeResource):
        source_frame = source.read_customers()
        if source_frame is None:
            read = source.read_transactions(settings.start_date, settings.end_exclusive)
            batch = standardize_transactions(
                read,
                source.columns,
                source.timezone,
                now=pd.Timestamp.now(tz="UTC"),
                day_range=(settings.start_date, settings.end_exclusive),
            )
            customers = customers_from_transactions(batch.accepted)
            origin, rows_read = "derived from transactions", len(read)
        else:
            customers = standardize_customers(source_frame, source.customers, source.timezone)
            origin, rows_read = f"table {source.customers.table}", len(source_frame)
        customers = customers.sort_values("customer_id").reset_index(drop=True)
        path = write_parquet_atomic(customers, lake.table_path("raw_customers"))
        context.log.info(f"{len(customers)} customers ({origin})")
        return MaterializeResult(
            metadata={
                "origin": origin,
                "source_rows": rows_read,
                "rows_without_customer_id": rows_read - len(customers) if source_frame is not None else 0,
                **table_metadata(customers, path),
            },
            data_version=DataVersion(frame_version(customers)),
        )

    return raw_customers
