"""Dagster's SQLite event log, written in batches: a range run's per-day events cost one commit, not one each.

A range run reports each day as if it had run alone (``fti_assets.partitions``): at 180 days the features
stage emits about 930 events. Dagster's SQLite event log stores each in its own transaction on a newly
created SQLAlchemy engine (so its statement cache starts empty every time), and profiled at the demo's size
that took more time than computing the features. Dagster already hands a partitioned output's events, and a
run's planned events, to ``EventLogStorage.store_event_batch`` when ``DAGSTER_EVENT_BATCH_SIZE`` is set;
PostgreSQL's storage writes such a batch in one statement, SQLite's stores the events one by one. A check's
per-day results are not batched by Dagster at all.

``install_batched_event_log`` closes that gap narrowly:

- ``SqliteEventLogStorage.store_event_batch`` stores every event of a batch through the same ``store_event``
  (the same rows), inside one transaction per database file, committed at the end. If anything fails, the
  transaction rolls back whole and Dagster stores the events one by one instead: nothing is half-written.
- Within a batch, the asset's own row (its latest event of each kind) is written for the last event of each
  asset and kind only, as PostgreSQL's batch does: the row ends as the events one by one leave it, once.
- A check's per-day results (``in_one_batch``, from ``partitions.day_check_evaluations``) are handed over as
  one batch too, when the instance's event log is this SQLite one: Dagster's ``DagsterEvent.from_step`` gives
  each the batch's metadata. (PostgreSQL's batch takes only the kinds of event Dagster batches itself.)
- ``has_table`` remembers the tables it found (Dagster adds tables, never drops them): every check result
  asked it afresh, on a new engine, whether the checks' table exists.
- Each database file keeps one engine (NullPool: a fresh SQLite connection per use, as before, but the
  compiled statements are kept).
- ``DAGSTER_EVENT_BATCH_SIZE`` defaults to ``EVENT_BATCH_SIZE`` where the environment does not set it (0
  turns batching off).

The UI reads the same rows; only the number of commits changes. A test runs a range job with and without
batching and compares what the instance holds, and fails if a Dagster upgrade moves what is wrapped.
"""

from __future__ import annotations

import inspect
import os
import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

# Events held before a write: a run's planned events (one per asset and day) over years of days
# go in one transaction.
EVENT_BATCH_SIZE = 10_000
# Engines kept per process: the index file, and the files of the latest runs.
ENGINES_KEPT = 16


def in_one_batch(instance, evaluations: list) -> list:
    """``evaluations``, marked to be stored as one batch: a step yields them together, in this order (the last
    one ends the batch). Unmarked where the instance's event log is not the SQLite one batched here."""
    from dagster._core.events import DagsterEventBatchMetadata, generate_event_batch_id
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    storage = instance.event_log_storage
    if len(evaluations) < 2 or not isinstance(storage, SqliteEventLogStorage) or not _batched(storage):
        return evaluations
    batch_id = generate_event_batch_id()
    with _marks_lock:
        for i, evaluation in enumerate(evaluations):
            _marks[id(evaluation)] = (evaluation, DagsterEventBatchMetadata(batch_id, i == len(evaluations) - 1))
    return evaluations


def _batched(storage) -> bool:
    return getattr(storage, "_fti_batched", False) and int(os.environ.get("DAGSTER_EVENT_BATCH_SIZE", "0")) > 0


# Check results marked by in_one_batch and not yet turned into events, by id (the object is kept: its id cannot
# be reused while it waits).
_marks: dict[int, tuple] = {}
_marks_lock = threading.Lock()


def install_batched_event_log() -> None:
    """Idempotent; see the module's docstring."""
    from dagster._core.events import DagsterEvent
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import (
        SQLITE_BUSY_TIMEOUT_SECONDS,
        SqliteEventLogStorage,
    )
    from sqlalchemy import create_engine
    from sqlalchemy.pool import NullPool

    os.environ.setdefault("DAGSTER_EVENT_BATCH_SIZE", str(EVENT_BATCH_SIZE))
    if getattr(SqliteEventLogStorage, "_fti_batched", False):
        return
    # What is replaced must still be what every read and write of the storage goes through.
    for name in ("_connect", "_initdb", "conn_string_for_shard", "_store_asset_event", "has_table"):
        if not hasattr(SqliteEventLogStorage, name):
            raise RuntimeError(f"Dagster's SqliteEventLogStorage has no {name}: fti_assets.event_log needs a review")
    if "batch_metadata" not in inspect.signature(DagsterEvent.from_step).parameters:
        raise RuntimeError(
            "Dagster's DagsterEvent.from_step takes no batch_metadata: fti_assets.event_log needs a review"
        )

    engines: OrderedDict[str, object] = OrderedDict()
    engines_lock = threading.Lock()

    def engine_for(storage, shard: str):
        """The shard's engine, its database created on first use; the caller holds the storage's lock."""
        conn_string = storage.conn_string_for_shard(shard)
        with engines_lock:
            engine = engines.pop(conn_string, None) or create_engine(
                conn_string, poolclass=NullPool, connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
            )
            engines[conn_string] = engine
            while len(engines) > ENGINES_KEPT:
                engines.popitem(last=False)[1].dispose()
        if shard not in storage._initialized_dbs:
            storage._initdb(engine)
            storage._initialized_dbs.add(shard)
        return engine

    @contextmanager
    def connect(self, shard: str) -> Iterator:
        batch = _open_batches.__dict__.get(id(self))
        if batch is not None:
            yield batch.connection(shard)
            return
        with self._db_lock, engine_for(self, shard).connect() as conn, conn.begin():
            yield conn

    def store_event_batch(self, events: Sequence) -> None:
        # This thread's writes to the storage share the batch's transactions; other threads keep their own
        # connections, and SQLite's file lock orders them.
        def locked_engine_for(shard: str):
            # The lock only to create a database: a batch holding SQLite's write lock never waits for a thread
            # that holds the storage's lock while it waits for SQLite's.
            if shard in self._initialized_dbs:
                return engine_for(self, shard)
            with self._db_lock:
                return engine_for(self, shard)

        batch = _open_batches.__dict__[id(self)] = _Batch(locked_engine_for, events)
        try:
            for event in events:
                self.store_event(event)
            batch.commit()
        finally:
            del _open_batches.__dict__[id(self)]
            batch.close()

    store_asset_row = SqliteEventLogStorage._store_asset_event

    def store_asset_row_once_per_batch(self, conn, event, event_id: int) -> None:
        batch = _open_batches.__dict__.get(id(self))
        if batch is None or batch.updates_asset_row(event):
            store_asset_row(self, conn, event, event_id)

    has_table = SqliteEventLogStorage.has_table

    def has_table_remembered(self, table_name: str) -> bool:
        found = self.__dict__.setdefault("_fti_tables_found", set())
        if table_name not in found and has_table(self, table_name):
            found.add(table_name)
        return table_name in found

    from_step = DagsterEvent.from_step

    def from_step_in_marked_batches(*args, **kwargs):
        data = kwargs.get("event_specific_data")
        if data is not None and kwargs.get("batch_metadata") is None and id(data) in _marks:
            with _marks_lock:
                marked, batch_metadata = _marks.pop(id(data), (None, None))
            if marked is data:
                kwargs["batch_metadata"] = batch_metadata
        return from_step(*args, **kwargs)

    DagsterEvent.from_step = staticmethod(from_step_in_marked_batches)
    SqliteEventLogStorage._connect = connect
    SqliteEventLogStorage.has_table = has_table_remembered
    SqliteEventLogStorage._store_asset_event = store_asset_row_once_per_batch
    SqliteEventLogStorage.store_event_batch = store_event_batch
    SqliteEventLogStorage._fti_batched = True


# Per thread: the batch each storage (by id) is writing, while it writes one.
_open_batches = threading.local()


class _Batch:
    """One open transaction per database file."""

    def __init__(self, engine_for, events: Sequence) -> None:
        self.engine_for = engine_for
        self.connections: dict[str, object] = {}
        # The last event of each asset and kind: the only ones whose values the asset's row keeps.
        last = {}
        for event in events:
            if event.dagster_event is not None:
                last[(event.dagster_event.asset_key, event.dagster_event.event_type_value)] = event
        self.asset_row_events = {id(event) for event in last.values()}

    def updates_asset_row(self, event) -> bool:
        return id(event) in self.asset_row_events

    def connection(self, shard: str):
        conn = self.connections.get(shard)
        if conn is None:
            conn = self.connections[shard] = self.engine_for(shard).connect()
            conn.begin()
        return conn

    def commit(self) -> None:
        for conn in self.connections.values():
            conn.commit()

    def close(self) -> None:
        # Closing a connection rolls back whatever it has not committed.
        for conn in self.connections.values():
            conn.close()
