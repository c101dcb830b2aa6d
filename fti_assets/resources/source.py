"""The source system: any SQLAlchemy database, or a CSV/parquet drop, read with its own column names."""

from __future__ import annotations

from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from fti_assets.settings import CustomerColumns, TransactionColumns


class SourceResource(ConfigurableResource):
    """Reads purchase transactions (and customers, when the source has them) for a range of days."""

    url: str | None = Field(default=None, description="SQLAlchemy URL; wins over `path`.")
    path: str | None = Field(default=None, description="CSV or parquet file, read whole.")
    transactions_table: str = "transactions"
    columns: TransactionColumns
    customers: CustomerColumns | None = None
    timezone: str = "UTC"

    _file_cache: pd.DataFrame | None = PrivateAttr(default=None)
    _engine_cache: object | None = PrivateAttr(default=None)

    @property
    def is_file(self) -> bool:
        return not self.url

    @property
    def description(self) -> str:
        return f"file {self.path}" if self.is_file else f"table {self.transactions_table} at {self._safe_url}"

    @property
    def _safe_url(self) -> str:
        from sqlalchemy.engine import make_url

        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def _engine(self):
        if self._engine_cache is None:
            from sqlalchemy import create_engine

            self._engine_cache = create_engine(self.url)
        return self._engine_cache

    def read_transactions(self, first: date, end: date) -> pd.DataFrame:
        """Source rows of the local days [first, end). A file is read whole (the caller filters by day)."""
        if self.is_file:
            return self._read_file()
        from sqlalchemy import MetaData, Table, select

        with self._engine.connect() as conn:
            table = Table(self.transactions_table, MetaData(), autoload_with=conn)
            ts = table.c[self.columns.timestamp]
            start, stop = self._bounds(ts, first, end)
            # Parameterized: bounds travel as bind parameters, names are quoted by SQLAlchemy.
            query = select(table).where(ts >= start, ts < stop)
            return pd.read_sql(query, conn)

    def latest_day(self, now: datetime) -> date | None:
        """The local day of the newest source row that is not in the future (dated rows beyond now are bad)."""
        from fti_assets.ingestion.standardize import parse_timestamps

        if self.is_file:
            ts = parse_timestamps(self._read_file()[self.columns.timestamp], self.timezone)
        else:
            from sqlalchemy import MetaData, Table, func, select

            with self._engine.connect() as conn:
                table = Table(self.transactions_table, MetaData(), autoload_with=conn)
                column = table.c[self.columns.timestamp]
                local_now = now.astimezone(ZoneInfo(self.timezone)).replace(tzinfo=None)
                bound, _ = self._bounds(column, local_now.date(), local_now.date())
                bound = local_now if not isinstance(bound, str) else local_now.isoformat(sep=" ")
                value = conn.execute(select(func.max(column)).where(column <= bound)).scalar_one()
            ts = parse_timestamps(pd.Series([value]), self.timezone)
        ts = ts[ts <= pd.Timestamp(now)]
        return None if ts.empty or pd.isna(ts.max()) else ts.max().tz_convert(self.timezone).date()

    def last_complete_day(self, now: datetime, last_day: date) -> date | None:
        """The newest day that is complete: the source holds a later day, or it is the configured last day."""
        latest = self.latest_day(now)
        if latest is None:
            return None
        return last_day if latest >= last_day else latest - timedelta(days=1)

    def count_outside_range(self, first: date, end: date) -> int:
        """Source rows no day partition of [first, end) will ever read: no timestamp, or a time outside
        the range (a purchase dated 2099, say). Reported, so that nothing is left out silently."""
        if self.is_file:
            from fti_assets.ingestion.standardize import parse_timestamps

            ts = parse_timestamps(self._read_file()[self.columns.timestamp], self.timezone)
            day = ts.dt.tz_convert(self.timezone).dt.date
            # Unparsable times are quarantined (a file is read whole), so only placeable rows count here.
            return int((ts.notna() & ((day < first) | (day >= end))).sum())
        from sqlalchemy import MetaData, Table, func, or_, select

        with self._engine.connect() as conn:
            table = Table(self.transactions_table, MetaData(), autoload_with=conn)
            ts = table.c[self.columns.timestamp]
            start, stop = self._bounds(ts, first, end)
            query = select(func.count()).select_from(table).where(or_(ts.is_(None), ts < start, ts >= stop))
            return int(conn.execute(query).scalar_one())

    @staticmethod
    def _bounds(ts, first: date, end: date) -> tuple:
        """Day bounds as local midnights, in the form the column compares with."""
        from sqlalchemy import DateTime

        start, stop = datetime.combine(first, time()), datetime.combine(end, time())
        if not isinstance(ts.type, DateTime):
            # Text timestamps compare as ISO strings; bound values must be strings of that form.
            return start.isoformat(sep=" "), stop.isoformat(sep=" ")
        return start, stop

    def read_customers(self) -> pd.DataFrame | None:
        """The customer table as the source names it, or None when the source has none."""
        if self.customers is None:
            return None
        if self.is_file:
            raise ValueError("a file source has no customer table: leave `customers` out of the settings")
        from sqlalchemy import MetaData, Table, select

        with self._engine.connect() as conn:
            table = Table(self.customers.table, MetaData(), autoload_with=conn)
            return pd.read_sql(select(table), conn)

    def _read_file(self) -> pd.DataFrame:
        if self._file_cache is None:
            path = Path(self.path or "")
            if not path.exists():
                raise FileNotFoundError(f"source file not found: {path}")
            if path.suffix == ".parquet":
                frame = pd.read_parquet(path)
            else:
                # Everything as text: ids keep their form and bad values reach validation as they are.
                frame = pd.read_csv(path, dtype=str, keep_default_na=False, na_values=[""])
            self._file_cache = frame
        return self._file_cache
