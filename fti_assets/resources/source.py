"""The source system: any SQLAlchemy database, or a CSV/parquet drop, read with its own column names."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date, datetime, time, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field, PrivateAttr

from fti_assets.settings import CustomerColumns, TransactionColumns


def _decode_text(value: bytes) -> str:
    """SQLite text as str; bytes that are not UTF-8 are kept as lone surrogates, for standardization to
    quarantine the row, instead of failing the whole read ("Could not decode to UTF-8 column")."""
    return value.decode("utf-8", "surrogateescape")


class SourceUnavailable(ConnectionError):
    """The source database could not be connected to: names it (password hidden) and the driver's reason."""


class SourceResource(ConfigurableResource):
    """Reads purchase transactions (and customers, when the source has them) for a range of days."""

    url: str | None = Field(default=None, description="SQLAlchemy URL; wins over `path`.")
    path: str | None = Field(default=None, description="CSV or parquet file, read whole.")
    transactions_table: str = "transactions"
    columns: TransactionColumns
    customers: CustomerColumns | None = None
    timezone: str = "UTC"
    connect_timeout_seconds: int = Field(
        default=10,
        ge=2,  # libpq rounds anything less up to 2 s
        description="Longest wait for a PostgreSQL source to answer a connection (libpq connect_timeout; a "
        "connect_timeout in the URL wins). Without it, a server that accepts but never answers hangs the run.",
    )

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
            from sqlalchemy import create_engine, event
            from sqlalchemy.engine import make_url

            url = make_url(self.url)
            database = url.database or ""
            on_disk = url.get_backend_name() == "sqlite" and database not in ("", ":memory:")
            # SQLite would create an empty database at a wrong path, and every check would read nothing.
            if on_disk and not database.startswith("file:") and not Path(database).exists():
                raise FileNotFoundError(
                    f"source database not found: {database} (source.url or FTI_SOURCE_URL {self._safe_url})"
                )
            connect_args = {}
            if url.get_driver_name() in ("psycopg2", "psycopg") and "connect_timeout" not in url.query:
                connect_args["connect_timeout"] = self.connect_timeout_seconds
            engine = create_engine(url, connect_args=connect_args)
            if url.get_backend_name() == "sqlite":
                event.listen(engine, "connect", lambda connection, _: setattr(connection, "text_factory", _decode_text))
            self._engine_cache = engine
        return self._engine_cache

    @contextmanager
    def _connect(self) -> Iterator:
        """A connection to the source. One that cannot be made fails with the (redacted) URL and the driver's
        reason; a driver error while reading gets a note naming the source."""
        from sqlalchemy.exc import DBAPIError

        try:
            conn = self._engine.connect()
        except DBAPIError as exc:
            reason = " ".join(str(exc.orig).split())  # libpq's text names host, port and cause, over lines
            raise SourceUnavailable(
                f"cannot connect to the source database {self._safe_url} (source.url or FTI_SOURCE_URL): {reason}"
            ) from exc
        with conn:
            try:
                yield conn
            except DBAPIError as exc:
                # The driver's text ("file is not a database") does not say which database: the note does.
                exc.add_note(f"while reading the source database {self._safe_url}")
                raise

    def _transactions(self, conn):
        """The transaction table and its timestamp column; a missing column names the setting to fix."""
        from sqlalchemy import MetaData, Table

        table = Table(self.transactions_table, MetaData(), autoload_with=conn)
        if self.columns.timestamp not in table.c:
            raise KeyError(
                f"table {self.transactions_table} has no column {self.columns.timestamp!r} "
                f"(source.columns.timestamp); it has {list(table.c.keys())}"
            )
        return table, table.c[self.columns.timestamp]

    def read_transactions(self, first: date, end: date, now: datetime | None = None) -> pd.DataFrame:
        """Source rows of the local days [first, end). A file is read whole (the caller filters by day).

        With ``now``, a database read also brings the rows no day range reads: without a time, or dated
        after ``now`` (standardization quarantines both).
        """
        if self.is_file:
            return self._read_file()
        from sqlalchemy import DateTime, String, or_, select, type_coerce

        with self._connect() as conn:
            table, ts = self._transactions(conn)
            self._check_text_order(conn, ts)
            start, stop = self._bounds(ts, first, end, margin=True)
            wanted = (ts >= start) & (ts < stop)
            if now is not None:
                wanted = or_(wanted, ts.is_(None), ts > self._column_value(ts, self._local(now)))
            # SQLite keeps any text in a DATETIME column; read it as text, so one bad value is one
            # quarantined row instead of a failed read ("Invalid isoformat string").
            selected = [
                type_coerce(c, String).label(c.name)
                if conn.dialect.name == "sqlite" and isinstance(c.type, DateTime)
                else c
                for c in table.c
            ]
            # Parameterized: bounds travel as bind parameters, names are quoted by SQLAlchemy.
            return pd.read_sql(select(*selected).where(wanted), conn)

    def _check_text_order(self, conn, ts) -> None:
        """Days are selected with ISO bounds; where the database compares times as text, that needs text
        that sorts as time (ISO 8601), which day-first or month-first text does not."""
        from sqlalchemy import DateTime

        form = self.columns.timestamp_format
        textual = conn.dialect.name == "sqlite" or not isinstance(ts.type, DateTime)
        if textual and form is not None and form != "ISO8601" and not form.startswith("%Y-%m-%d"):
            raise ValueError(
                f"source.columns.timestamp_format {form!r}: column {ts.name!r} of table {self.transactions_table} is "
                "compared as text, and a range of days can only be selected from text that sorts as time. Store "
                "ISO 8601 text or a timestamp type; a format other than ISO 8601 fits a file source."
            )

    def is_empty(self) -> bool:
        """Whether the source holds no transaction at all (an empty table or file is an outage, not data)."""
        if self.is_file:
            return self._read_file().empty
        from sqlalchemy import literal, select

        with self._connect() as conn:
            table, _ = self._transactions(conn)
            return conn.execute(select(literal(1)).select_from(table).limit(1)).first() is None

    def latest_day(self, now: datetime) -> date | None:
        """The local day of the newest source row that is not in the future (dated rows beyond now are bad)."""
        from fti_assets.ingestion.standardize import parse_timestamps

        if self.is_file:
            ts = self._file_timestamps()
        else:
            from sqlalchemy import func, select

            with self._connect() as conn:
                _, column = self._transactions(conn)
                bound = self._column_value(column, self._local(now))
                value = conn.execute(select(func.max(column)).where(column <= bound)).scalar_one()
            ts = parse_timestamps(pd.Series([value]), self.timezone, self.columns.timestamp_format)
        ts = ts[ts <= pd.Timestamp(now)]
        return None if ts.empty or pd.isna(ts.max()) else ts.max().tz_convert(self.timezone).date()

    def last_complete_day(self, now: datetime, last_day: date) -> date | None:
        """The newest day that is complete: the source holds a later day, or it is the configured last day."""
        latest = self.latest_day(now)
        if latest is None:
            return None
        return last_day if latest >= last_day else latest - timedelta(days=1)

    def count_outside_range(self, first: date, end: date) -> int:
        """Source rows with a time outside [first, end): no day partition reads them (a purchase dated 2099,
        say). Reported, so that nothing is left out silently; rows without a time are read and quarantined."""
        if self.is_file:
            ts = self._file_timestamps()
            day = ts.dt.tz_convert(self.timezone).dt.date
            return int((ts.notna() & ((day < first) | (day >= end))).sum())
        from sqlalchemy import func, or_, select

        with self._connect() as conn:
            table, ts = self._transactions(conn)
            start, stop = self._bounds(ts, first, end)
            query = select(func.count()).select_from(table).where(or_(ts < start, ts >= stop))
            return int(conn.execute(query).scalar_one())

    def _local(self, moment: datetime) -> datetime:
        """A moment as the source's naive local time."""
        return moment.astimezone(ZoneInfo(self.timezone)).replace(tzinfo=None)

    @staticmethod
    def _column_value(ts, moment: datetime):
        """A naive local time in the form the column compares with: text timestamps compare as ISO strings."""
        from sqlalchemy import DateTime

        return moment if isinstance(ts.type, DateTime) else moment.isoformat(sep=" ")

    @classmethod
    def _bounds(cls, ts, first: date, end: date, margin: bool = False) -> tuple:
        """Day bounds as local midnights. With ``margin``, a text column gets a day more on each side: a text
        time may carry a UTC offset that moves it to the day before or after, and standardization keeps the
        rows of the range's own local days."""
        from sqlalchemy import DateTime

        extra = timedelta(days=1 if margin and not isinstance(ts.type, DateTime) else 0)
        start, stop = datetime.combine(first, time()) - extra, datetime.combine(end, time()) + extra
        return cls._column_value(ts, start), cls._column_value(ts, stop)

    def read_customers(self) -> pd.DataFrame | None:
        """The customer table as the source names it, or None when the source has none."""
        if self.customers is None:
            return None
        if self.is_file:
            raise ValueError("a file source has no customer table: leave `customers` out of the settings")
        from sqlalchemy import MetaData, Table, select

        with self._connect() as conn:
            table = Table(self.customers.table, MetaData(), autoload_with=conn)
            return pd.read_sql(select(table), conn)

    def read_customer_ids(self) -> pd.Series | None:
        """The ids of the customer table (one column, for checking transactions against it), or None."""
        if self.customers is None or self.is_file:
            return None
        from sqlalchemy import MetaData, Table, select

        with self._connect() as conn:
            table = Table(self.customers.table, MetaData(), autoload_with=conn)
            if self.customers.customer_id not in table.c:
                raise KeyError(
                    f"table {self.customers.table} has no column {self.customers.customer_id!r} "
                    f"(source.customers.customer_id); it has {list(table.c.keys())}"
                )
            return pd.read_sql(select(table.c[self.customers.customer_id]), conn).iloc[:, 0]

    def _file_timestamps(self) -> pd.Series:
        from fti_assets.ingestion.standardize import parse_timestamps

        frame = self._read_file()
        if self.columns.timestamp not in frame:
            raise KeyError(
                f"{self.description} has no column {self.columns.timestamp!r} (source.columns.timestamp); "
                f"it has {list(frame.columns)}"
            )
        return parse_timestamps(frame[self.columns.timestamp], self.timezone, self.columns.timestamp_format)

    def _read_file(self) -> pd.DataFrame:
        if self._file_cache is None:
            path = Path(self.path or "")
            if not path.exists():
                raise FileNotFoundError(f"source file not found: {path} (source.path)")
            if path.suffix == ".parquet":
                frame = pd.read_parquet(path)
            elif path.stat().st_size == 0:
                frame = pd.DataFrame()  # an empty file: the ingestion refuses it, as an empty source
            else:
                # Everything as text: ids keep their form and bad values reach validation as they are. Bytes
                # that are not UTF-8 are kept (as lone surrogates), so only their rows are quarantined.
                frame = pd.read_csv(
                    path, dtype=str, keep_default_na=False, na_values=[""], encoding_errors="surrogateescape"
                )
            self._file_cache = frame
        return self._file_cache
