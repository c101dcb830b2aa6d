"""A catalogue of bad source rows, each with its verdict, read through the real readers.

Every class is one source row written beside a good one into a CSV file, a SQLite table and (with
FTI_TEST_POSTGRES_URL) a PostgreSQL table, read by `SourceResource` and standardized as the ingestion
does. Its verdict is one of: quarantined with a named reason (the good row still accepted), accepted
(normalized), or a clear error that names the column and the setting to fix. A few run through the
real ingestion job at the end.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import uuid
from dataclasses import dataclass, field
from datetime import date

import pandas as pd
import pytest
from dagster import DagsterInstance, materialize

from fti_assets.ingestion.assets import QUARANTINE, build_ingestion_assets
from fti_assets.ingestion.standardize import QUARANTINE_REASONS, standardize_transactions
from fti_assets.resources.lake import LakeResource
from fti_assets.resources.source import SourceResource
from fti_assets.settings import TransactionColumns
from fti_assets_tests.conftest import small_settings

NOW = pd.Timestamp("2026-06-01 12:00", tz="UTC")
FIRST, END = date(2026, 1, 5), date(2026, 1, 8)  # the run's days: 5, 6 and 7 January
HEADER = ["txn", "cust", "at", "total", "country", "note"]
GOOD = {"txn": "g1", "cust": "c1", "at": "2026-01-05 10:00:00", "total": "10.5", "country": "UK", "note": "ok"}
SOURCES = ("csv", "sqlite", "postgres")
TEXT_SOURCES = ("csv", "sqlite")  # PostgreSQL stores valid UTF-8 only


@dataclass(frozen=True)
class Case:
    """One class of bad row: the fields it changes in a good row, and what must happen to it."""

    name: str
    row: dict
    verdict: str  # a quarantine reason, "accepted", "beyond_range:<reason>", or "error"
    error: str = ""  # what the error message must say
    settings: dict = field(default_factory=dict)
    expect: dict = field(default_factory=dict)  # accepted values of the bad row, by standard column
    sources: tuple[str, ...] = SOURCES
    before: dict | None = None  # a first row replacing the good one (duplicates)


CASES = [
    # Ids
    Case("empty transaction id", {"txn": ""}, "missing_transaction_id"),
    Case("blank transaction id", {"txn": "   "}, "missing_transaction_id"),
    Case("'nan' as a transaction id", {"txn": "nan"}, "missing_transaction_id"),
    Case("transaction id of 100,000 characters", {"txn": "x" * 100_000}, "transaction_id_too_long"),
    Case("transaction id of 65 characters", {"txn": "x" * 65}, "transaction_id_too_long"),
    Case("transaction id of 64 characters is kept", {"txn": "x" * 64}, "accepted", expect={"transaction_id": "x" * 64}),
    Case("empty customer id", {"cust": ""}, "missing_customer_id"),
    Case("'None' as a customer id", {"cust": "None"}, "missing_customer_id"),
    Case("customer id of 100,000 characters", {"cust": "7" * 100_000}, "customer_id_too_long"),
    Case("customer id through a float column", {"cust": "17850.0"}, "accepted", expect={"customer_id": "17850"}),
    Case("duplicate row", {}, "duplicate_transaction_id", before={"txn": "t1"}),
    Case("same id, other content", {"total": "99"}, "duplicate_transaction_id", before={"txn": "t1"}),
    # Timestamps
    Case("missing timestamp", {"at": ""}, "missing_timestamp"),
    Case("garbage timestamp", {"at": "not a time"}, "unparsable_timestamp"),
    Case("garbage inside the range", {"at": "2026-01-05 garbage"}, "unparsable_timestamp"),
    Case(
        "31 February",
        {"at": "2026-02-31 10:00:00"},
        "unparsable_timestamp",
        before={"at": "2026-02-28 10:00:00"},
        settings={"range": (date(2026, 2, 28), date(2026, 3, 1))},  # the days a database read finds it in
    ),
    Case("hour 25", {"at": "2026-01-05T25:61:00"}, "unparsable_timestamp"),
    Case("year 9999", {"at": "9999-01-05 10:00:00"}, "unparsable_timestamp"),
    Case(
        "in a day of the run, after now",
        {"at": "2026-01-06 10:00:00"},
        "future_timestamp",
        settings={"now": "2026-01-06 09:00"},
    ),
    Case("dated 2099", {"at": "2099-01-05 10:00:00"}, "beyond_range:future_timestamp"),
    Case(
        "offsets mixed in a column",
        {"at": "2026-01-05T11:00:00+02:00"},
        "accepted",
        expect={"ts": pd.Timestamp("2026-01-05 09:00", tz="UTC")},
        before={"at": "2026-01-05T11:00:00Z"},
    ),
    Case(
        "offset that moves the local day",
        {"at": "2026-01-05T23:30:00-05:00"},
        "accepted",
        expect={"day": "2026-01-06"},
    ),
    Case(
        "local time in the spring-forward gap",
        {"at": "2026-03-29 01:30:00"},
        "accepted",
        expect={"ts": pd.Timestamp("2026-03-29 01:00", tz="UTC")},
        before={"at": "2026-03-28 10:00:00"},
        settings={"timezone": "Europe/London", "range": (date(2026, 3, 28), date(2026, 3, 30))},
    ),
    Case(
        "day-first date without a format",
        {"at": "02/01/2026 10:00"},
        "error",
        error="'at' has 1 numeric dates such as '02/01/2026 10:00' whose day and month can swap: set "
        "source.columns.timestamp_format",
        sources=("csv",),  # a database selects days by ISO text: such a row is outside every range
    ),
    Case(
        "day-first format for a database's text times",
        {},
        "error",
        error="source.columns.timestamp_format 'dayfirst': column 'at' of table",
        settings={"timestamp_format": "dayfirst"},
        sources=("sqlite", "postgres"),
    ),
    Case(
        "day-first date read day-first",
        {"at": "06/01/2026 10:00"},
        "accepted",
        expect={"day": "2026-01-06"},
        settings={"timestamp_format": "dayfirst"},
        sources=("csv",),
    ),
    Case(
        "day-first date in a column declared ISO 8601",
        {"at": "06/01/2026 10:00"},
        "unparsable_timestamp",
        settings={"timestamp_format": "ISO8601"},
        sources=("csv",),
    ),
    Case(
        "text that a strftime format does not read",
        {"at": "2026-01-05 10:00:00"},
        "unparsable_timestamp",
        settings={"timestamp_format": "%d/%m/%Y %H:%M"},
        before={"at": "05/01/2026 10:00"},
        sources=("csv",),
    ),
    # Amounts
    Case("missing amount", {"total": ""}, "missing_amount"),
    Case("amount that is not a number", {"total": "abc"}, "unparsable_amount"),
    Case("decimal comma", {"total": "10,5"}, "unparsable_amount"),
    Case("amount 'inf'", {"total": "inf"}, "non_finite_amount"),
    Case("amount 1e300", {"total": "1e300"}, "amount_too_large"),
    Case("amount over a configured maximum", {"total": "5000"}, "amount_too_large", settings={"max_amount": 1000}),
    Case("zero amount", {"total": "0"}, "zero_amount"),
    Case("zero amount, accepted by setting", {"total": "0"}, "accepted", settings={"accept_zero_amount": True}),
    Case("negative amount", {"total": "-3"}, "negative_amount"),
    Case("amount with spaces", {"total": " 12.5 "}, "accepted", expect={"amount": 12.5}),
    # Bytes that are not UTF-8
    Case("latin-1 byte in a customer id", {"cust": b"caf\xe9"}, "invalid_encoding", sources=TEXT_SOURCES),
    Case("latin-1 byte in a transaction id", {"txn": b"t\xff1"}, "invalid_encoding", sources=TEXT_SOURCES),
    Case("latin-1 byte in the country", {"country": b"Espa\xf1a"}, "invalid_encoding", sources=TEXT_SOURCES),
    Case("latin-1 byte in a column not used", {"note": b"caf\xe9"}, "accepted", sources=TEXT_SOURCES),
    # Settings that do not fit the source: clear errors naming the column and the setting
    Case(
        "amount column renamed",
        {},
        "error",
        error="source.columns.amount 'total_gbp' names 'total_gbp', which is not a source column",
        settings={"amount": "total_gbp"},
    ),
    Case(
        "amount expression naming a missing column",
        {},
        "error",
        error="names 'qty', which is not a source column",
        settings={"amount": "total * qty"},
    ),
    Case(
        "timestamp column renamed",
        {},
        "error",
        error="no column 'purchased_at' (source.columns.timestamp)",
        settings={"timestamp": "purchased_at"},
    ),
    Case(
        "customer column renamed",
        {},
        "error",
        error="no column 'customer' (source.columns.customer_id)",
        settings={"customer_id": "customer"},
    ),
    Case(
        "transaction id column renamed",
        {},
        "error",
        error="no column 'txn_id' (source.columns.transaction_id)",
        settings={"transaction_id": "txn_id"},
    ),
]


def _columns(case: Case) -> TransactionColumns:
    names = {"transaction_id": "txn", "customer_id": "cust", "timestamp": "at", "amount": "total", "country": "country"}
    options = {k: v for k, v in case.settings.items() if k not in ("now", "timezone", "range")}
    return TransactionColumns(**{**names, **options})


def _rows(case: Case) -> list[dict]:
    """The first row (good, unless ``before`` makes it the first of a duplicated id) and the bad one."""
    before = case.before or {}
    return [{**GOOD, **before}, {**GOOD, "txn": "t1", **before, **case.row}]


def _write_csv(path, rows: list[dict]) -> None:
    with open(path, "w", newline="", encoding="utf-8", errors="surrogateescape") as out:
        writer = csv.DictWriter(out, HEADER)
        writer.writeheader()
        for row in rows:
            writer.writerow(
                {k: v.decode("utf-8", "surrogateescape") if isinstance(v, bytes) else v for k, v in row.items()}
            )


def _write_sqlite(path, rows: list[dict]) -> None:
    # Declared as SQLAlchemy and the simulator declare them; SQLite stores whatever it is given.
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE tx (txn TEXT, cust TEXT, at DATETIME, total REAL, country TEXT, note TEXT)")
        conn.executemany(
            # CAST: bytes stay text (invalid UTF-8 and all), not a BLOB; numbers still take REAL affinity.
            "INSERT INTO tx VALUES (" + ", ".join(["CAST(? AS TEXT)"] * len(HEADER)) + ")",
            [[None if row[k] == "" else row[k] for k in HEADER] for row in rows],
        )
    conn.close()


@pytest.fixture(scope="module")
def postgres_tables():
    """PostgreSQL tables created by the cases, dropped at the end; skipped without a server."""
    url = os.environ.get("FTI_TEST_POSTGRES_URL")
    if not url:
        if os.environ.get("FTI_REQUIRE_SERVERS"):
            pytest.fail("FTI_REQUIRE_SERVERS is set but FTI_TEST_POSTGRES_URL is not")
        pytest.skip("FTI_TEST_POSTGRES_URL is not set: no PostgreSQL server to test against")
    from sqlalchemy import create_engine, text

    engine = create_engine(url)
    created: list[str] = []
    yield url, engine, created
    with engine.begin() as conn:
        for name in created:
            conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
    engine.dispose()


def _source(kind: str, case: Case, tmp_path, request) -> SourceResource:
    rows, columns = _rows(case), _columns(case)
    timezone = case.settings.get("timezone", "UTC")
    if kind == "csv":
        _write_csv(tmp_path / "source.csv", rows)
        return SourceResource(path=str(tmp_path / "source.csv"), columns=columns, timezone=timezone)
    if kind == "sqlite":
        _write_sqlite(tmp_path / "source.db", rows)
        return SourceResource(
            url=f"sqlite:///{tmp_path / 'source.db'}", transactions_table="tx", columns=columns, timezone=timezone
        )
    url, engine, created = request.getfixturevalue("postgres_tables")
    table = f"fti_bad_{uuid.uuid4().hex[:10]}"
    created.append(table)
    frame = pd.DataFrame(rows, columns=HEADER).replace("", None)
    frame.to_sql(table, engine, index=False)  # every column text: what a loose staging table holds
    return SourceResource(url=url, transactions_table=table, columns=columns, timezone=timezone)


def _not_strict_json(constant: str) -> None:
    pytest.fail(f"not strict JSON: {constant}")


@pytest.mark.parametrize(
    ("case", "kind"), [pytest.param(c, kind, id=f"{kind}: {c.name}") for c in CASES for kind in c.sources]
)
def test_every_class_of_bad_row_gets_its_verdict(case: Case, kind: str, tmp_path, request):
    now = pd.Timestamp(case.settings["now"], tz="UTC") if "now" in case.settings else NOW
    first, end = case.settings.get("range", (FIRST, END))
    source = _source(kind, case, tmp_path, request)

    def ingest():
        frame = source.read_transactions(first, end, now.to_pydatetime())
        return standardize_transactions(frame, source.columns, source.timezone, now, day_range=(first, end))

    if case.verdict == "error":
        with pytest.raises((KeyError, ValueError)) as raised:
            ingest()
        assert case.error in str(raised.value)
        return
    batch = ingest()
    assert len(batch.accepted) + len(batch.quarantined) == batch.rows_read  # nothing dropped silently
    for row in [*batch.quarantined["source_row"], *batch.beyond_range["source_row"]]:
        json.loads(row, parse_constant=_not_strict_json)
    if case.verdict == "accepted":
        assert batch.quarantined.empty, batch.quarantined[["reason", "source_row"]].to_dict("records")
        assert len(batch.accepted) == 2
        bad = batch.accepted.iloc[1]  # in the order read
        for column, value in case.expect.items():
            assert bad[column] == value, column
        return
    where, reason = case.verdict.split(":") if ":" in case.verdict else ("quarantined", case.verdict)
    flagged = getattr(batch, where)
    assert flagged["reason"].tolist() == [reason]
    assert len(batch.accepted) == 1  # the good row (or the first of a duplicated id) is still accepted


def test_the_catalogue_holds_at_least_thirty_classes_of_bad_rows():
    bad = [c for c in CASES if c.verdict != "accepted"]
    assert len(bad) >= 30
    # Every reason the standardizer can give, and a clear failure naming the column.
    assert {c.verdict.split(":")[-1] for c in bad} >= {*QUARANTINE_REASONS, "error"}


# Database-only failures: what a reader must say instead of a stack trace deep in a driver.


def test_a_sqlite_url_naming_a_missing_file_fails_instead_of_creating_an_empty_database(tmp_path):
    missing = tmp_path / "nowhere" / "source.db"
    source = SourceResource(url=f"sqlite:///{missing}", columns=_columns(CASES[0]))
    with pytest.raises(FileNotFoundError, match="source database not found: .*nowhere/source.db"):
        source.read_transactions(FIRST, END)
    assert not missing.exists()


def test_a_renamed_timestamp_column_on_sql_names_the_setting(tmp_path):
    _write_sqlite(tmp_path / "source.db", [GOOD])
    columns = _columns(Case("", {}, "", settings={"timestamp": "purchased_at"}))
    source = SourceResource(url=f"sqlite:///{tmp_path / 'source.db'}", transactions_table="tx", columns=columns)
    for read in (lambda: source.read_transactions(FIRST, END), lambda: source.count_outside_range(FIRST, END)):
        with pytest.raises(KeyError, match=r"no column 'purchased_at' \(source.columns.timestamp\)"):
            read()


def test_sql_rows_outside_the_range_are_read_only_when_bad(tmp_path):
    """NULL times, garbage that sorts after now and future rows come with any read; good rows of other days do not."""
    rows = [
        GOOD,
        {**GOOD, "txn": "other day", "at": "2026-02-01 10:00:00"},
        {**GOOD, "txn": "no time", "at": ""},
        {**GOOD, "txn": "garbage", "at": "zzz"},
        {**GOOD, "txn": "2099", "at": "2099-01-01 10:00:00"},
    ]
    _write_sqlite(tmp_path / "source.db", rows)
    source = SourceResource(
        url=f"sqlite:///{tmp_path / 'source.db'}", transactions_table="tx", columns=_columns(CASES[0])
    )
    frame = source.read_transactions(FIRST, END, NOW.to_pydatetime())
    batch = standardize_transactions(frame, source.columns, "UTC", NOW, day_range=(FIRST, END))
    assert sorted(frame["txn"]) == ["2099", "g1", "garbage", "no time"]
    assert batch.quarantined.set_index("transaction_id")["reason"].to_dict() == {
        "no time": "missing_timestamp",
        "garbage": "unparsable_timestamp",
    }
    assert batch.beyond_range["reason"].tolist() == ["future_timestamp"]
    # Counted as the database compares: 2026-02-01, 2099, and the garbage, which sorts after any date.
    assert source.count_outside_range(FIRST, END) == 3


# Through the real ingestion job.


@pytest.fixture
def dirty_sqlite(tmp_path):
    """Three days of good rows in SQLite with one row of several bad classes in them."""
    good = [
        {**GOOD, "txn": f"g{i}", "cust": f"c{i % 7}", "at": f"2026-01-0{5 + i % 3} 1{i % 10}:00:00"} for i in range(60)
    ]
    bad = [
        {**GOOD, "txn": "b1", "at": "2026-01-06 garbage"},
        {**GOOD, "txn": "b2", "cust": b"caf\xe9"},
        {**GOOD, "txn": "b3", "at": "2026-01-06T11:00:00+02:00"},
        {**GOOD, "txn": "b4", "at": "2026-01-06T11:00:00Z"},
        {**GOOD, "txn": "b5", "total": "1e300"},
        {**GOOD, "txn": "b6", "at": ""},
        {**GOOD, "txn": "b7", "at": "2099-01-06 10:00:00"},
        {**GOOD, "txn": "g1"},
    ]
    _write_sqlite(tmp_path / "source.db", good + bad)
    return tmp_path


def test_the_ingestion_job_quarantines_bad_rows_and_ingests_the_rest(dirty_sqlite):
    settings = small_settings(dirty_sqlite, start_date="2026-01-05", end_date="2026-01-07")
    source = SourceResource(
        url=f"sqlite:///{dirty_sqlite / 'source.db'}", transactions_table="tx", columns=_columns(CASES[0])
    )
    lake = LakeResource(root=str(dirty_sqlite / "lake"))
    result = materialize(
        build_ingestion_assets(settings)[:1],
        resources={"source": source, "lake": lake},
        instance=DagsterInstance.ephemeral(),
        tags={"dagster/asset_partition_range_start": "2026-01-05", "dagster/asset_partition_range_end": "2026-01-07"},
    )
    assert result.success
    accepted = lake.read_days("raw_transactions", FIRST, END)
    quarantined = lake.read_days(QUARANTINE, FIRST, END)
    stray = pd.read_parquet(lake.table_path(f"{QUARANTINE}_unplaceable"))
    assert len(accepted) == 62  # 60 good rows and the two offsets, converted to UTC
    assert set(accepted.loc[accepted["transaction_id"].isin(["b3", "b4"]), "ts"]) == {
        pd.Timestamp("2026-01-06 09:00", tz="UTC"),
        pd.Timestamp("2026-01-06 11:00", tz="UTC"),
    }
    assert sorted(quarantined["reason"]) == ["amount_too_large", "duplicate_transaction_id", "invalid_encoding"]
    assert quarantined.loc[quarantined["reason"] == "invalid_encoding", "customer_id"].tolist() == ["caf\\xe9"]
    assert sorted(stray["reason"]) == ["future_timestamp", "missing_timestamp", "unparsable_timestamp"]
    checks = {(e.check_name, e.partition): e.passed for e in result.get_asset_check_evaluations()}
    assert checks and all(checks.values())
