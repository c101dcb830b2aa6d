"""Read-only connections to the SQLite online store, one per thread, that follow the file when it is replaced."""

from __future__ import annotations

import os
import sqlite3
import threading


class SqliteFile:
    """Per-thread read-only connections to ``path``: one that waits up to ``timeout`` for a writer's lock,
    one that never waits (``SQLITE_BUSY`` at once).

    A connection stays on the file it opened: if the file is replaced (a new file renamed over it, as a
    rebuilt store is put in place) it would keep reading the unlinked old one. So every use compares the
    path's inode with the one the thread's connections were opened on, and reopens them when it changed;
    a file removed without a replacement fails the read. Writes into the same file keep its inode and
    need nothing: SQLite sees them through the same connection.
    """

    def __init__(self, path: str, timeout: float):
        self.path = path
        self.timeout = timeout
        self._local = threading.local()

    def connection(self, wait: bool) -> sqlite3.Connection:
        status = os.stat(self.path)  # FileNotFoundError when the file is gone: the store is unreachable
        identity = (status.st_dev, status.st_ino)
        local = self._local
        if getattr(local, "identity", None) != identity:
            for conn in getattr(local, "connections", {}).values():
                conn.close()
            local.identity, local.connections = identity, {}
        conn = local.connections.get(wait)
        if conn is None:
            # Read-only, no type detection: event_ts comes back as the stored epoch seconds.
            conn = sqlite3.connect(
                f"file:{self.path}?mode=ro",
                uri=True,
                timeout=self.timeout if wait else 0,
                check_same_thread=False,
            )
            local.connections[wait] = conn
        return conn


def locked(exc: BaseException) -> bool:
    """The error of a read that found a writer holding the file (at once, or after waiting its bound): the
    store is busy, not down."""
    return isinstance(exc, sqlite3.OperationalError) and exc.sqlite_errorcode == sqlite3.SQLITE_BUSY
