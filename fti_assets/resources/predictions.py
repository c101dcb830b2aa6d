"""The predictions table: batch scores per day, replaced whole when a day is scored again."""

from __future__ import annotations

import numpy as np
import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from fti_assets.settings import MAX_ID_LENGTH

PREDICTION_COLUMNS = [
    "customer_id",
    "as_of_day",
    "event_timestamp",
    "score",
    "predicted_label",
    "model_version",
    "feature_service",
    "run_id",
]
# Rows bound and inserted per executemany into SQLite (within one transaction).
SQLITE_INSERT_BATCH = 100_000


class PredictionStoreResource(ConfigurableResource):
    """Any SQLAlchemy database (SQLite file by default; FTI_PREDICTIONS_URL for a server)."""

    url: str = Field(description="SQLAlchemy URL of the predictions database.")
    table: str = "churn_predictions"

    _engine: object | None = PrivateAttr(default=None)

    @property
    def safe_url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    def engine(self):
        if self._engine is None:
            from sqlalchemy import create_engine

            self._engine = create_engine(self.url)
        return self._engine

    def _table(self):
        from sqlalchemy import Column, DateTime, Float, Index, Integer, MetaData, String, Table

        metadata = MetaData()
        table = Table(
            self.table,
            metadata,
            Column("customer_id", String(MAX_ID_LENGTH), nullable=False),  # longer ids are quarantined at ingestion
            Column("as_of_day", String(10), nullable=False),
            Column("event_timestamp", DateTime(timezone=True), nullable=False),
            Column("score", Float, nullable=False),
            Column("predicted_label", Integer, nullable=False),
            Column("model_version", String(32), nullable=False),
            Column("feature_service", String(128), nullable=False),
            Column("run_id", String(64), nullable=False),
            Index(f"ix_{self.table}_day_customer", "as_of_day", "customer_id", unique=True),
        )
        metadata.create_all(self.engine())
        return table

    def replace_days(self, frame: pd.DataFrame, days: list[str]) -> int:
        """Delete the given days and insert ``frame`` in one transaction: a re-run replaces, never appends."""
        table = self._table()
        rows = frame[PREDICTION_COLUMNS]
        with self.engine().begin() as conn:
            conn.execute(table.delete().where(table.c.as_of_day.in_(days)))
            if len(rows) and conn.dialect.name == "sqlite":
                # The DB-API's executemany over plain tuples, each value bound as SQLAlchemy binds it: the
                # same stored values, 3-4x faster than Core's executemany over one dict per row. A batch of
                # tuples at a time: a million rows' tuples are most of a gigabyte.
                insert = str(table.insert().compile(dialect=conn.dialect))
                for start in range(0, len(rows), SQLITE_INSERT_BATCH):
                    batch = rows.iloc[start : start + SQLITE_INSERT_BATCH]
                    columns = [_bound_values(table.c[name], batch[name], conn.dialect) for name in PREDICTION_COLUMNS]
                    conn.exec_driver_sql(insert, list(zip(*columns, strict=True)))
            elif len(rows):
                conn.execute(table.insert(), rows.to_dict(orient="records"))
        return len(rows)

    def read_days(self, days: list[str], columns: list[str] | None = None) -> pd.DataFrame:
        from sqlalchemy import select

        table = self._table()
        selected = [table.c[name] for name in columns] if columns else [table]
        query = select(*selected).where(table.c.as_of_day.in_(days)).order_by(table.c.as_of_day, table.c.customer_id)
        with self.engine().connect() as conn:
            return pd.read_sql(query, conn)


def _bound_values(column, values: pd.Series, dialect) -> list:
    """Python values of a column as the dialect stores them, converted once per distinct value."""
    bind = column.type.dialect_impl(dialect).bind_processor(dialect)
    if bind is None:
        return values.tolist()
    codes, uniques = pd.factorize(values, use_na_sentinel=False)
    return np.asarray([bind(v) for v in uniques.tolist()], dtype=object)[codes].tolist()
