"""The FastAPI app: /predict, /health, /metrics, /docs. The champion loads when the app starts.

Every answered id is appended to the request log (``request_log``), which monitoring reads.
"""

from __future__ import annotations

import json
import logging
import math
import time
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from fti_assets.serving.api import (
    ErrorBody,
    PredictRequest,
    PredictResponse,
    ServiceError,
    ValidationErrorBody,
    bearer_token_dependency,
    install_error_handlers,
    parse_predict,
)
from fti_assets.serving.body import BodyLimitMiddleware
from fti_assets.serving.metrics import MetricsMiddleware, ServiceMetrics
from fti_assets.serving.request_log import RequestLog
from fti_assets.serving.settings import ServiceSettings
from fti_assets.serving.sqlite_file import locked
from fti_assets.serving.store_guard import OffLoopReads, OnlineStoreGuard
from fti_assets.serving.watcher import ChampionWatcher

log = logging.getLogger(__name__)


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def create_app(settings: ServiceSettings) -> FastAPI:
    """The FastAPI app: /predict, /health, /metrics, /docs. The champion loads when the app starts."""
    metrics = ServiceMetrics()
    request_log = RequestLog(settings.request_log_dir, settings.request_log_writer)
    token = settings.bearer_token.get_secret_value() if settings.bearer_token else None
    max_ids = settings.max_ids

    def check_store() -> bool:
        """A real one-entity read through the served feature service (what /health and the guard's re-reads
        do); raises when it fails. True when a writer holds the SQLite file: reachable, and not waited for."""
        bundle = watcher.bundle
        if bundle is None:
            raise RuntimeError("no model loaded: no feature service to read through")
        if bundle.reader.local:
            return bundle.reader.read_now(["__health__"]) is None
        bundle.reader.read(["__health__"])
        return False

    guard = OnlineStoreGuard(check_store)
    watcher = ChampionWatcher(settings, metrics, on_store_error=guard.failed)
    reads = OffLoopReads()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Blocking on purpose: the server accepts requests once the first champion load was tried.
        watcher.start()
        try:
            yield
        finally:
            watcher.stop()
            guard.stop()
            reads.close()
            request_log.close()

    app = FastAPI(
        title="fti-assets churn service",
        description="Churn scores from the MLflow `champion` model and Feast online features.",
        version="1",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.watcher = watcher
    app.state.metrics = metrics
    app.state.request_log = request_log
    app.state.online_store_guard = guard

    install_error_handlers(app, metrics.errors)
    # No dependency at all without a token: nothing to resolve per request.
    guarded = [bearer_token_dependency(token)] if token is not None else []

    @app.post(
        "/predict",
        response_model=PredictResponse,
        dependencies=guarded,
        # The body is parsed by the route itself (parse_predict): documented here.
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": PredictRequest.model_json_schema()}},
            }
        },
        responses={
            401: {"model": ErrorBody, "description": "Bearer token missing or wrong (when one is configured)"},
            413: {"model": ErrorBody, "description": "More customer ids than max_ids"},
            422: {"model": ValidationErrorBody, "description": "Not a valid body: the reason per error"},
            503: {"model": ErrorBody, "description": "No champion model, or the online store unavailable or too slow"},
        },
    )
    async def predict(request: Request) -> Response:
        """Churn probability per customer id. Ids the online store has no features for come back
        ``known: false`` with null score and label."""
        # Runs on the event loop, not in the thread pool: the work is CPU-bound under the GIL, and the hop
        # to a worker thread and back cost more than the whole 1-id request (measured). Only a read that
        # would wait on the store (a locked SQLite file, Redis) goes to a thread, with a deadline.
        body = parse_predict(await request.body(), request.headers.get("content-type"))
        n = len(body.customer_ids)
        if n > max_ids:
            raise ServiceError(413, "too_many_ids", f"{n} customer_ids, at most {max_ids} per request: split it")
        bundle = watcher.bundle  # this request's bundle, whatever the poller swaps in meanwhile
        if bundle is None:
            reason = watcher.last_error["message"] if watcher.last_error else "not loaded yet"
            raise ServiceError(503, "no_champion", f"no champion model to serve: {reason}")
        down = guard.down
        if down is not None:
            raise ServiceError(
                503,
                "online_store_unavailable",
                f"online store unavailable since {down['since']}: {down['error']} (re-checked every "
                f"{guard.probe_seconds:g} s)",
            )
        ids = [i if isinstance(i, str) else str(i) for i in body.customer_ids]
        reader = bundle.reader
        bound = settings.sqlite_lock_wait_seconds if reader.local else settings.store_timeout_seconds
        try:
            online = reader.read_now(ids) if reader.local else None
            if online is None:
                online = await reads.run(reader.read, ids, bound)
        except Exception as exc:
            if locked(exc):  # a writer held the file longer than the wait: busy, not down
                raise ServiceError(
                    503, "online_store_unavailable", f"online store locked by a writer for over {bound:g} s: {exc}"
                ) from exc
            guard.failed(exc)
            raise ServiceError(
                503, "online_store_unavailable", f"online store unavailable: {type(exc).__name__}: {exc}"
            ) from exc
        matrix, known, event_seconds = online.matrix, online.known, online.event_seconds
        scores = np.full(n, math.nan)
        n_known = int(known.sum())
        if n_known:
            try:
                scored = bundle.scorer(matrix if n_known == n else matrix[known])
            except Exception as exc:
                log.exception(f"model v{bundle.version} failed to score {n_known} rows")
                raise ServiceError(500, "model_error", f"model v{bundle.version} failed: {type(exc).__name__}") from exc
            if scored.shape != (n_known,) or not np.isfinite(scored).all():
                raise ServiceError(500, "model_error", f"model v{bundle.version} returned no finite score per row")
            scores[known] = scored
        threshold = bundle.threshold
        now = datetime.now(UTC)
        event_iso: dict = {}
        predictions = []
        for i, customer_id in enumerate(ids):
            seconds = event_seconds[i]
            if seconds not in event_iso:
                event_iso[seconds] = _iso(seconds)
            if known[i]:
                score = float(scores[i])
                label = int(score >= threshold)
            else:
                score = label = None
            predictions.append(
                {
                    "customer_id": customer_id,
                    "known": bool(known[i]),
                    "churn_probability": score,
                    "predicted_label": label,
                    "feature_event_time": event_iso[seconds],
                }
            )
        lines = bundle.log_format.lines(
            now.isoformat().replace("+00:00", "Z"), predictions, matrix.tolist(), ~np.isfinite(matrix).all(axis=1)
        )
        try:
            request_log.append(now.date().isoformat(), lines)
        except OSError as exc:
            # Every answered prediction is in the log: without it, no answer.
            raise ServiceError(503, "request_log_unavailable", f"request log not writable: {exc}") from exc
        metrics.predicted_ids.labels(known="true").inc(n_known)
        if n_known < n:
            metrics.predicted_ids.labels(known="false").inc(n - n_known)
        payload = {
            "model_version": bundle.version,
            "feature_service": bundle.feature_service_name,
            "threshold": threshold,
            "predictions": predictions,
        }
        return Response(json.dumps(payload, separators=(",", ":")), media_type="application/json")

    @app.get(
        "/health",
        responses={
            503: {
                "description": "Unavailable: no champion loaded, or the online store unreachable (the same body)",
                "content": {"application/json": {"schema": {"type": "object"}}},
            }
        },
    )
    def health() -> JSONResponse:
        """The model served, the last refresh error, and a real one-entity read of the online store."""
        bundle = watcher.bundle
        store: dict[str, Any] = {"type": settings.feast.online_store, "reachable": None}
        if bundle is not None and guard.down is not None:
            # Known down: the probe thread re-reads every second; do not wait on the store here too.
            store.update(reachable=False, error=guard.down["error"], down_since=guard.down["since"])
        elif bundle is not None:
            started = time.perf_counter()
            try:
                store["locked_by_writer"] = check_store()
                store["reachable"] = True
                guard.recovered()
            except Exception as exc:
                store["reachable"] = False
                store["error"] = f"{type(exc).__name__}: {exc}"
                guard.failed(exc)
            store["read_ms"] = round((time.perf_counter() - started) * 1000, 3)
            if guard.down is not None:
                store["down_since"] = guard.down["since"]
        else:
            store["error"] = "no model loaded: no feature service to read through"
        ok = bundle is not None and store["reachable"] is True
        body = {
            "status": "ok" if ok else "unavailable",
            "model_name": settings.registry.model_name,
            "model_version": bundle.version if bundle else None,
            "feature_service": bundle.feature_service_name if bundle else None,
            "feature_schema_hash": bundle.feature_schema_hash if bundle else None,
            "threshold": bundle.threshold if bundle else None,
            "model_loaded_at": bundle.loaded_at if bundle else None,
            "scoring_path": bundle.scoring_path if bundle else None,
            "read_path": bundle.reader.path if bundle else None,
            "online_store": store,
            "last_poll": watcher.last_poll,
            "poll_seconds": settings.poll_seconds,
            "last_error": watcher.last_error,
        }
        return JSONResponse(body, status_code=200 if ok else 503)

    @app.get(
        "/metrics",
        dependencies=guarded,
        response_class=Response,
        responses={
            200: {"content": {CONTENT_TYPE_LATEST.split(";", 1)[0]: {}}},
            401: {"model": ErrorBody, "description": "Bearer token missing or wrong (when one is configured)"},
        },
    )
    def prometheus_metrics() -> Response:
        """Prometheus text exposition of the service's metrics."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # Innermost first: the body limit, then the metrics (which count its 413s), then CORS.
    app.add_middleware(
        BodyLimitMiddleware,
        max_body_bytes=settings.max_body_bytes,
        on_refused=lambda: metrics.errors.labels("/predict", "too_many_ids").inc(),
    )
    app.add_middleware(MetricsMiddleware, metrics=metrics)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app
