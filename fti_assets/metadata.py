"""Metadata that reads well in the Dagster UI: row counts, column schema with descriptions, a preview, where."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd
from dagster import MetadataValue, TableColumn, TableSchema

# What each standard column means, shown in the UI's table schemas.
COLUMN_DESCRIPTIONS = {
    "transaction_id": "Source transaction id (trimmed text); unique among accepted rows.",
    "customer_id": "Customer id as text, the Feast entity key.",
    "ts": "Purchase time in UTC (naive source times are read in the configured time zone).",
    "day": "Local calendar day of the purchase in the configured time zone: the partition key.",
    "amount": "Purchase amount, finite and positive, in the source's currency.",
    "country": "Customer country from the source.",
    "segment": "Customer segment from the source.",
    "signup_date": "Customer signup time in UTC.",
    "reason": "Why the row was quarantined (the first rule it broke).",
    "source_row": "The row as read from the source, as JSON.",
    "as_of_day": "The day the row describes, as of its last second (local time): the partition key.",
    "event_timestamp": "Last second of the as-of day in UTC: Feast's event time for point-in-time joins.",
    "days_since_last_purchase": "Whole days from the last purchase to the as-of day.",
    "tenure_days": "Whole days since signup (or the first purchase seen when signup is unknown).",
    "churned": "1 when the customer buys nothing in the label horizon after the as-of day.",
    "score": "Churn probability from the champion model.",
    "predicted_label": "1 when the score is at least the model version's decision threshold.",
    "model_version": "Registered model version (MLflow) that scored the row.",
    "feature_service": "Feast FeatureService the features were read through.",
    "run_id": "Dagster run that wrote the row.",
}
for _window in (7, 30, 90):
    COLUMN_DESCRIPTIONS[f"spend_sum_{_window}d"] = f"Sum of purchase amounts in the {_window} days up to the as-of day."
    COLUMN_DESCRIPTIONS[f"spend_mean_{_window}d"] = f"Mean purchase amount in the {_window} days (0 with none)."
    COLUMN_DESCRIPTIONS[f"txn_count_{_window}d"] = f"Number of purchases in the {_window} days up to the as-of day."


def column_schema(frame: pd.DataFrame) -> TableSchema:
    return TableSchema(
        columns=[
            TableColumn(name=str(c), type=str(t), description=COLUMN_DESCRIPTIONS.get(str(c)))
            for c, t in frame.dtypes.items()
        ]
    )


def _cells(column: pd.Series) -> list[str]:
    if pd.api.types.is_float_dtype(column.dtype):
        return [f"{value:g}" for value in column.to_numpy(dtype="float64", na_value=np.nan)]
    return column.astype(str).str.replace("|", "\\|", regex=False).tolist()


def previews(frame: pd.DataFrame, ranges: Mapping[str, tuple[int, int]], rows: int = 5) -> dict[str, MetadataValue]:
    """Per key, a markdown table of the first ``rows`` rows of its row range in ``frame``: the cells of every
    table formatted in one pass (a range run has one table per day)."""
    heads = {key: (start, min(end, start + rows)) for key, (start, end) in ranges.items()}
    taken = [np.arange(start, end) for start, end in heads.values()]
    head = frame.iloc[np.concatenate(taken) if taken else []]
    cells = [_cells(head[column]) for column in head.columns]
    alignments = ["---:" if pd.api.types.is_numeric_dtype(dtype) else ":---" for dtype in frame.dtypes]
    header = "| " + " | ".join(map(str, frame.columns)) + " |\n|" + "|".join(alignments) + "|\n"
    tables, offset = {}, 0
    for key, (start, end) in heads.items():
        lines = ["| " + " | ".join(column[i] for column in cells) + " |" for i in range(offset, offset + end - start)]
        tables[key] = MetadataValue.md(header + "\n".join(lines) if lines else "(empty)")
        offset += end - start
    return tables


def preview(frame: pd.DataFrame, rows: int = 5) -> MetadataValue:
    return previews(frame, {"": (0, len(frame))}, rows)[""]


def table_metadata(frame: pd.DataFrame, path: Path | str | None = None, preview_rows: int = 5) -> dict:
    metadata = {
        "dagster/row_count": len(frame),
        "dagster/column_schema": column_schema(frame),
        "preview": preview(frame, preview_rows),
    }
    if path is not None:
        metadata["file"] = MetadataValue.path(str(path))  # not "path": the IO manager writes its own
    return metadata
