"""Keeps a slow or failing online store from stalling the service.

- Reads that may wait (a SQLite file locked by a writer, any Redis read) run on threads of their own, never
  on the event loop, and the request waits for them at most a deadline: other requests and /health go on.
- The Redis client gives up after ``timeout`` (redis-py's default waits forever on a silent server and
  retries a refused connection for about 9 s).
- Once a read failed, requests are answered 503 at once until a background re-read succeeds. A SQLite
  file locked by a writer is not a failure: it is reachable, and reads wait for the writer (bounded).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

log = logging.getLogger(__name__)

READ_THREADS = 4
# The store client's own timeout ends a read first and names the cause; the margin covers a read that
# waited for a free thread.
DEADLINE_MARGIN_SECONDS = 0.25


class StoreTimeout(Exception):
    """The online store did not answer within the read deadline."""


class OffLoopReads:
    """Runs store reads on a small thread pool, each awaited for at most its client's bound + a margin."""

    def __init__(self):
        self._pool = ThreadPoolExecutor(max_workers=READ_THREADS, thread_name_prefix="online-read")

    async def run(self, read: Callable, ids: list[str], bound: float):
        deadline = bound + DEADLINE_MARGIN_SECONDS
        try:
            return await asyncio.wait_for(asyncio.wrap_future(self._pool.submit(read, ids)), deadline)
        except TimeoutError as exc:
            raise StoreTimeout(f"no answer within {deadline:g} s") from exc

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)


def bound_redis_client(store, timeout: float) -> None:
    """Give a Feast store on Redis a client that waits at most ``timeout`` per connect and per reply and
    does not retry (parameters in the connection string win). Redis clusters and sentinels keep Feast's."""
    config = store.config.online_store
    if config.type != "redis" or config.redis_type != "redis":
        return
    from redis import Redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    online = store._get_provider().online_store
    nodes, params = online._parse_connection_string(config.connection_string)
    params.setdefault("socket_timeout", timeout)
    params.setdefault("socket_connect_timeout", timeout)
    # Feast creates its client on first use and keeps it: this one is used from now on.
    online._client = Redis(host=nodes[0]["host"], port=nodes[0]["port"], retry=Retry(NoBackoff(), 0), **params)


class OnlineStoreGuard:
    """Fails requests fast while the online store is known to be down.

    The first read that fails marks the store down. While down, /predict answers 503 at once instead of
    waiting on the store again; a background thread re-reads every ``probe_seconds`` and marks it up when
    a read succeeds (so does a successful /health read).
    """

    def __init__(self, read: Callable[[], object], probe_seconds: float = 1.0):
        self._read = read
        self.probe_seconds = probe_seconds
        self.down: dict | None = None  # {"since", "error"} while down
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def failed(self, exc: BaseException) -> None:
        with self._lock:
            if self.down is None:
                log.error(f"online store unavailable: {type(exc).__name__}: {exc}")
                self.down = {
                    "since": datetime.now(UTC).isoformat(timespec="seconds"),
                    "error": f"{type(exc).__name__}: {exc}",
                }
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._probe, name="online-store-probe", daemon=True)
                self._thread.start()

    def recovered(self) -> None:
        if self.down is not None:
            log.info(f"online store reachable again (down since {self.down['since']})")
            self.down = None

    def _probe(self) -> None:
        while self.down is not None and not self._stop.wait(self.probe_seconds):
            try:
                self._read()
            except Exception as exc:
                self.down = {**(self.down or {}), "error": f"{type(exc).__name__}: {exc}"}
                continue
            self.recovered()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
