"""Metadata that reads well in the Dagster UI: row counts, column schema, a preview, where the data is."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema


def table_metadata(frame: pd.DataFrame, path: Path | str | None = None, preview_rows: int = 5) -> dict:
    metadata = {
        "dagster/row_count": len(frame),
        "dagster/column_schema": TableSchema(
            columns=[TableColumn(name=str(c), type=str(t)) for c, t in frame.dtypes.items()]
        ),
        "preview": MetadataValue.md(frame.head(preview_rows).to_markdown(index=False) if len(frame) else "(empty)"),
    }
    if path is not None:
        metadata["path"] = MetadataValue.path(str(path))
    return metadata
