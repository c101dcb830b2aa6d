"""The source goes down and comes back: the ingestion job fails fast and clearly, changes nothing, then recovers.

The project's own `ingestion_job` (``build_definitions``), with the source URL from FTI_SOURCE_URL as a deployment
sets it, against a real PostgreSQL server (FTI_TEST_POSTGRES_URL) holding simulated data; every fault is on
127.0.0.1: a closed port, and a listener that accepts connections and never answers. A SQLite source file that
stops being a database is the cheap third case.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time
import uuid
from datetime import date, timedelta

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance
from sqlalchemy import create_engine, text

from fti_assets.definitions import build_definitions
from fti_assets.demo import fill_simulated_source
from fti_assets.ingestion.assets import QUARANTINE
from fti_assets.monitoring.sensors import PARTITION_RANGE_END, PARTITION_RANGE_START
from fti_assets.simulate import simulate, write_source
from fti_assets_tests.conftest import small_settings

FIRST, LAST = date(2026, 1, 1), date(2026, 1, 10)
EARLY_LAST = date(2026, 1, 5)  # ingested before the outage; the days after it are not, yet
SECRET = "not-this-secret"
FAIL_FAST_SECONDS = 15  # a refused connection is answered in milliseconds; the rest is Dagster's run overhead
CONNECT_TIMEOUT = 10  # SourceResource.connect_timeout_seconds' default


def days(first: date, last: date) -> list[str]:
    return [(first + timedelta(days=i)).isoformat() for i in range((last - first).days + 1)]


def unused_loopback_port() -> int:
    """A port on 127.0.0.1 that nothing listens on: bound by the OS, then closed (a connect is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ingest(settings, instance, first: date, last: date):
    """One run of the project's ingestion_job over [first, last]: (result, seconds the run took)."""
    # Built per run: the source URL is read from FTI_SOURCE_URL as the deployment's definitions read it.
    job = build_definitions(settings).resolve_job_def("ingestion_job")
    started = time.monotonic()
    result = job.execute_in_process(
        instance=instance,
        tags={PARTITION_RANGE_START: first.isoformat(), PARTITION_RANGE_END: last.isoformat()},
        raise_on_error=False,
    )
    return result, time.monotonic() - started


def lake_files(settings) -> dict[str, str]:
    folder = settings.path("lake")
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.rglob("*.parquet")}


def published_versions(instance) -> dict[str, int]:
    """The storage id of each day's latest raw_transactions materialization (a new version changes it)."""
    records = instance.fetch_materializations(AssetKey("raw_transactions"), limit=1000).records
    latest: dict[str, int] = {}
    for record in records:
        latest[record.partition_key] = max(latest.get(record.partition_key, 0), record.storage_id)
    return latest


def failure_text(result) -> str:
    """Every message of the failed step's error and of the exceptions behind it."""
    texts = []
    for event in result.all_events:
        if event.event_type_value == "STEP_FAILURE":
            error = event.step_failure_data.error
            while error is not None:
                texts.append(error.message)
                error = error.cause or error.context
    return "\n".join(texts)


def assert_nothing_published(result, instance, settings, files_before, versions_before) -> None:
    assert not result.success
    assert not result.get_asset_materialization_events()
    assert lake_files(settings) == files_before  # the same files, byte for byte
    assert published_versions(instance) == versions_before


@pytest.fixture(scope="module")
def postgres_source(postgres_url):
    """Twelve simulated days in two tables of their own on the test server."""
    prefix = f"fti_outage_{os.getpid()}_{uuid.uuid4().hex[:6]}"
    tables = {"transactions": f"{prefix}_transactions", "customers": f"{prefix}_customers"}
    data = simulate(n_customers=300, days=12, start=FIRST, seed=11)
    write_source(postgres_url, data, customers_table=tables["customers"], transactions_table=tables["transactions"])
    yield tables
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        for name in tables.values():
            conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
    engine.dispose()


@pytest.fixture
def world(postgres_url, postgres_source, tmp_path, monkeypatch):
    """Settings naming the PostgreSQL source, a lake where the days up to EARLY_LAST are already ingested."""
    monkeypatch.delenv("FTI_SOURCE_URL", raising=False)
    source = small_settings(tmp_path).source.model_dump()
    source.update(url=postgres_url, transactions_table=postgres_source["transactions"])
    source["customers"]["table"] = postgres_source["customers"]
    settings = small_settings(tmp_path, source=source, start_date=FIRST.isoformat(), end_date=LAST.isoformat())
    instance = DagsterInstance.ephemeral()
    result, _ = ingest(settings, instance, FIRST, EARLY_LAST)
    assert result.success, failure_text(result)
    assert sorted(published_versions(instance)) == days(FIRST, EARLY_LAST)
    yield settings, instance
    instance.dispose()


def source_rows_by_day(url: str, table: str) -> dict[str, int]:
    """The source's own count of rows per day, straight from the database."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            # date(): a function of PostgreSQL and of SQLite alike (a date there, ISO text here).
            rows = conn.execute(text(f'SELECT date(purchased_at), COUNT(*) FROM "{table}" GROUP BY 1'))
            return {str(day)[:10]: count for day, count in rows}
    finally:
        engine.dispose()


def assert_days_complete(settings, source_counts: dict[str, int]) -> None:
    """Every day of the range is published, and its rows (accepted plus quarantined) are all the source's."""
    for day in days(FIRST, LAST):
        accepted = pd.read_parquet(settings.path("lake", "raw_transactions", f"{day}.parquet"))
        quarantined = settings.path("lake", QUARANTINE, f"{day}.parquet")
        held = len(pd.read_parquet(quarantined)) if quarantined.exists() else 0
        assert len(accepted) > 0 and len(accepted) + held == source_counts[day], day


@pytest.mark.postgres
def test_a_closed_port_fails_the_run_in_seconds_with_host_port_and_cause_and_the_job_recovers(
    world, postgres_url, postgres_source, monkeypatch
):
    settings, instance = world
    files, versions = lake_files(settings), published_versions(instance)
    port = unused_loopback_port()
    monkeypatch.setenv("FTI_SOURCE_URL", f"postgresql+psycopg2://fti_reader:{SECRET}@127.0.0.1:{port}/test")

    result, seconds = ingest(settings, instance, FIRST, LAST)

    assert seconds < FAIL_FAST_SECONDS
    why = failure_text(result)
    assert "SourceUnavailable" in why and f"fti_reader:***@127.0.0.1:{port}/test" in why, why
    assert f'connection to server at "127.0.0.1", port {port} failed: Connection refused' in why, why
    assert_nothing_published(result, instance, settings, files, versions)
    # Nowhere in the run's record: not its events, errors, tags or config.
    assert not [entry for entry in instance.all_logs(result.run_id) if SECRET in repr(entry)]
    assert SECRET not in repr(instance.get_run_by_id(result.run_id))

    # Back on the real database: the same job over the same range succeeds, and every day is whole.
    monkeypatch.delenv("FTI_SOURCE_URL")
    result, _ = ingest(settings, instance, FIRST, LAST)
    assert result.success, failure_text(result)
    assert sorted(published_versions(instance)) == days(FIRST, LAST)
    assert_days_complete(settings, source_rows_by_day(postgres_url, postgres_source["transactions"]))


@pytest.mark.postgres
def test_a_source_that_accepts_and_never_answers_fails_after_the_connect_timeout(world, monkeypatch):
    """Before: no connect_timeout, and libpq waited for the server's first reply forever (the run hung)."""
    settings, instance = world
    files, versions = lake_files(settings), published_versions(instance)
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nothing ever reads or answers
    port = silent.getsockname()[1]
    monkeypatch.setenv("FTI_SOURCE_URL", f"postgresql+psycopg2://fti_reader:{SECRET}@127.0.0.1:{port}/test")
    outcome: dict = {}
    # In a thread, so that a run that hangs fails this test instead of hanging it.
    runner = threading.Thread(target=lambda: outcome.update(run=ingest(settings, instance, FIRST, LAST)), daemon=True)
    try:
        runner.start()
        runner.join(timeout=CONNECT_TIMEOUT + 20)
        assert not runner.is_alive(), f"the run still waits on a silent source after {CONNECT_TIMEOUT + 20} s"
    finally:
        silent.close()  # a hung connect ends with the listener
        runner.join(timeout=30)

    result, seconds = outcome["run"]
    assert seconds < CONNECT_TIMEOUT + FAIL_FAST_SECONDS
    why = failure_text(result)
    assert f"fti_reader:***@127.0.0.1:{port}/test" in why and "timeout expired" in why, why
    assert SECRET not in why
    assert_nothing_published(result, instance, settings, files, versions)


def test_a_sqlite_source_file_that_is_no_longer_a_database_fails_naming_it_and_changes_nothing(tmp_path, monkeypatch):
    monkeypatch.delenv("FTI_SOURCE_URL", raising=False)
    settings = small_settings(
        tmp_path,
        simulator={"n_customers": 300, "days": 12, "start": FIRST.isoformat(), "seed": 11},
        start_date=FIRST.isoformat(),
        end_date=LAST.isoformat(),
    )
    fill_simulated_source(settings, fresh=True)
    instance = DagsterInstance.ephemeral()
    result, _ = ingest(settings, instance, FIRST, LAST)
    assert result.success, failure_text(result)
    files, versions = lake_files(settings), published_versions(instance)
    database = tmp_path / "source.db"
    shutil.copy(database, tmp_path / "source.db.good")
    database.write_bytes(b"\x00 overwritten by something else \xff" * 512)

    result, seconds = ingest(settings, instance, FIRST, LAST)

    assert seconds < FAIL_FAST_SECONDS
    why = failure_text(result)
    assert "file is not a database" in why and f"source database sqlite:///{database}" in why, why
    assert_nothing_published(result, instance, settings, files, versions)

    shutil.copy(tmp_path / "source.db.good", database)
    result, _ = ingest(settings, instance, FIRST, LAST)
    assert result.success, failure_text(result)
    assert_days_complete(settings, source_rows_by_day(settings.source_url, "transactions"))
    instance.dispose()
