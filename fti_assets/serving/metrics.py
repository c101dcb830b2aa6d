"""Prometheus metrics of the service, and the middleware that counts and times every request.

Import this before anything imports Feast: feast.metrics (imported by every online read) sets
PROMETHEUS_MULTIPROC_DIR, and prometheus_client picks file-backed multi-process values if that is set when
it is first imported.
"""

from __future__ import annotations

import time
from contextlib import suppress

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Paths with their own metric labels; anything else is counted as "other" (bounded label cardinality).
ENDPOINTS = ("/predict", "/health", "/metrics", "/docs", "/openapi.json")


def endpoint_of(path: str) -> str:
    return path if path in ENDPOINTS else "other"


class ServiceMetrics:
    """Prometheus metrics on the service's own registry (not the process-global one)."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "fti_service_requests",
            "HTTP requests by endpoint, method and status",
            ["endpoint", "method", "status"],
            registry=self.registry,
        )
        self.errors = Counter(
            "fti_service_errors",
            "Requests answered with an error, by reason",
            ["endpoint", "reason"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "fti_service_request_seconds",
            "Request latency in the server, by endpoint",
            ["endpoint"],
            buckets=(0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.012, 0.02, 0.05, 0.1, 0.25, 1.0, 5.0),
            registry=self.registry,
        )
        self.predicted_ids = Counter(
            "fti_service_predicted_ids",
            "Customer ids answered by /predict, by whether the store knew them",
            ["known"],
            registry=self.registry,
        )
        self.model_info = Gauge(
            "fti_service_model_info",
            "The model being served (value 1)",
            ["model_version", "feature_service"],
            registry=self.registry,
        )
        self.model_version = Gauge(
            "fti_service_model_version", "Registry version number of the model being served", registry=self.registry
        )
        self.model_loads = Counter(
            "fti_service_model_loads",
            "Champion versions loaded, refused or failed",
            ["result"],
            registry=self.registry,
        )
        for result in ("loaded", "refused", "failed"):  # every series from the start: 0 until it happens
            self.model_loads.labels(result=result)
        self._children: dict[tuple, tuple] = {}
        self._model_labels: tuple[str, str] | None = None

    def set_model(self, version: str, feature_service: str) -> None:
        labels = (version, feature_service)  # the gauge's label order
        if self._model_labels is not None and self._model_labels != labels:
            self.model_info.remove(*self._model_labels)
        self.model_info.labels(*labels).set(1)
        self._model_labels = labels
        with suppress(ValueError):  # a version that is not a number has only the info metric
            self.model_version.set(float(version))

    def clear_model(self) -> None:
        if self._model_labels is not None:
            self.model_info.remove(*self._model_labels)
            self._model_labels = None
        self.model_version.set(float("nan"))

    def observe(self, endpoint: str, method: str, status: int, seconds: float) -> None:
        key = (endpoint, method, status)
        children = self._children.get(key)
        if children is None:
            children = (self.requests.labels(endpoint, method, str(status)), self.latency.labels(endpoint))
            self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


class MetricsMiddleware:
    """Pure ASGI middleware (no per-request task or body copy): counts and times every HTTP request."""

    def __init__(self, app, metrics: ServiceMetrics):
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(endpoint_of(scope["path"]), scope["method"], status[0], time.perf_counter() - started)
