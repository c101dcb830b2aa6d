"""The predictions table: batch scores per day, replaced whole when a day is scored again."""

from __future__ import annotations

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

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
            Column("customer_id", String(64), nullable=False),
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
        rows = frame[PREDICTION_COLUMNS].to_dict(orient="records")
        with self.engine().begin() as conn:
            conn.execute(table.delete().where(table.c.as_of_day.in_(days)))
            if rows:
                conn.execute(table.insert(), rows)
        return len(rows)

    def read_days(self, days: list[str]) -> pd.DataFrame:
        from sqlalchemy import select

        table = self._table()
        query = select(table).where(table.c.as_of_day.in_(days)).order_by(table.c.as_of_day, table.c.customer_id)
        with self.engine().connect() as conn:
            return pd.read_sql(query, conn)
