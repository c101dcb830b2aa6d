"""Keeps the serving bundle on the registry's `champion` alias.

The champion is read by alias at start; a background thread polls the alias and loads a new version off
the request path, then swaps one immutable bundle (version, model, feature service, threshold) in with a
single reference assignment: a request keeps the bundle it started with. A version that fails to load,
fails its probe, or whose ``feature_schema_hash`` tag differs from what the feature service serves now, is
refused (``last_error`` in /health names it and why) and the previous bundle keeps serving.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime

from fti_assets.serving.bundle import ModelBundle, ModelRefused, load_bundle, probe_bundle
from fti_assets.serving.metrics import ServiceMetrics
from fti_assets.serving.settings import ServiceSettings

log = logging.getLogger(__name__)


class ChampionWatcher:
    """Holds the serving bundle and keeps it on the registry's champion, polling off the request path."""

    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics, on_store_error: Callable):
        self.settings = settings
        self.metrics = metrics
        self.on_store_error = on_store_error  # the online store failed while probing a version
        self.bundle: ModelBundle | None = None  # replaced by one assignment, never mutated
        self.last_error: dict | None = None
        self.last_poll: str | None = None
        self._failed: tuple | None = None  # (version, tag hash, served hash) that failed: not retried as is
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()

    def refresh(self) -> None:
        """Point the bundle at the alias's version if it changed and the version is servable."""
        with self._refresh_lock:
            self.last_poll = datetime.now(UTC).isoformat(timespec="seconds")
            champion = self.settings.registry.champion()
            if champion is None:
                self._error(None, f"no `champion` alias on {self.settings.registry.model_name}")
                return
            version = str(champion.version)
            current = self.bundle
            if current is not None and current.version == version:
                self._check_schema(current)
                return
            try:
                served = self.settings.feast.feature_schema_hash(champion.tags.get("feature_service", ""))
            except Exception:
                served = None
            key = (version, champion.tags.get("feature_schema_hash"), served)
            if key == self._failed:
                return  # refused before and nothing it depends on changed
            started = time.perf_counter()
            try:
                bundle = load_bundle(self.settings, champion)
                probe_bundle(bundle, self.settings.probe_rows, self.on_store_error)
            except ModelRefused as exc:
                self._failed = key
                self.metrics.model_loads.labels(result="refused").inc()
                self._error(version, str(exc))
                return
            except Exception as exc:
                self._failed = key
                self.metrics.model_loads.labels(result="failed").inc()
                self._error(version, f"{type(exc).__name__}: {exc}", exc)
                return
            self.bundle = bundle  # the swap: one reference assignment
            # Everything loaded so far (libraries, registry clients, this model: over 600k objects) leaves the
            # cyclic collector's view: a full collection of it stalls every request for a few hundred ms.
            # Reference counting still frees a replaced model.
            gc.freeze()
            self._failed = None
            self.last_error = None
            self.metrics.model_loads.labels(result="loaded").inc()
            self.metrics.set_model(bundle.version, bundle.feature_service_name)
            log.info(
                f"serving {self.settings.registry.model_name} v{version} ({bundle.feature_service_name}, "
                f"{bundle.scoring_path}) loaded in {time.perf_counter() - started:.2f} s"
                + (f", replacing v{current.version}" if current else "")
            )

    def _check_schema(self, current: ModelBundle) -> None:
        """The alias agrees with what serves: clear a stale error, unless the feature service's schema changed
        under the served model; then stop serving it (a model never scores features of another schema)."""
        served = self.settings.feast.feature_schema_hash(current.feature_service_name)
        if served == current.feature_schema_hash:
            self.last_error = None
            return
        self.bundle = None
        self.metrics.clear_model()
        self._error(
            current.version,
            f"{current.feature_service_name} now serves feature schema {served}, but model version "
            f"{current.version} was trained on {current.feature_schema_hash}: no longer served",
        )

    def _error(self, version: str | None, message: str, exc: BaseException | None = None) -> None:
        if self.last_error is None or self.last_error.get("message") != message:
            log.error(message + ("\n" + "".join(traceback.format_exception(exc)) if exc else ""))
        self.last_error = {
            "version": version,
            "message": message,
            "at": datetime.now(UTC).isoformat(timespec="seconds"),
            "serving": self.bundle.version if self.bundle else None,
        }

    def _loop(self) -> None:
        while not self._stop.wait(self.settings.poll_seconds):
            try:
                self.refresh()
            except Exception as exc:  # never let the poller die
                self._error(None, f"champion poll failed: {type(exc).__name__}: {exc}", exc)

    def start(self) -> None:
        try:
            self.refresh()
        except Exception as exc:
            self._error(None, f"champion load at start failed: {type(exc).__name__}: {exc}", exc)
        self._thread = threading.Thread(target=self._loop, name="champion-poller", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
