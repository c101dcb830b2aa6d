"""Online inference: an HTTP service that scores customers with the MLflow `champion` and Feast online features.

``python -m fti_assets.inference.service`` (``--host``, ``--port``, ``--config``) serves on 127.0.0.1:8000:

- ``POST /predict`` ``{"customer_ids": [...]}``: churn probability and label per id, from the features the
  Feast online store holds for it (read through the feature service recorded on the model version) and the
  champion pyfunc model. An id the online store has no row for is answered ``known: false`` with no score.
- ``GET /health``: the model being served, the last refresh error, and a real read of the online store.
- ``GET /metrics``: Prometheus text (its own registry). ``/docs``: the OpenAPI UI.

The champion is read from the registry by alias at start; a background thread polls the alias and loads a
new version off the request path, then swaps one immutable bundle (version, model, feature service,
threshold) in with a single reference assignment: a request keeps the bundle it started with. A version
that fails to load, or whose ``feature_schema_hash`` tag differs from what the feature service serves now,
is refused and the previous bundle keeps serving.

Every answered id is appended to a request log (one JSON line per id, one file per UTC day) that
monitoring reads with :func:`read_request_log`.

Independence: this module reaches models only through the registry (``ModelRegistryResource``) and
features only through Feast (``FeastResource``); it imports neither the training nor the ingestion code.
"""

from __future__ import annotations

import argparse
import gc
import hmac
import inspect
import json
import logging
import math
import os
import sys
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from fastapi import Depends, FastAPI, Request
from fastapi.exception_handlers import request_validation_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

# Before anything imports Feast: feast.metrics (imported by every online read) sets PROMETHEUS_MULTIPROC_DIR,
# and prometheus_client picks file-backed multi-process values if that is set when it is first imported.
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import BaseModel, ConfigDict, Field, SecretStr, StrictInt, StringConstraints

from fti_assets.resources.feast import FeastResource
from fti_assets.resources.mlflow import ModelRegistryResource

log = logging.getLogger(__name__)

REQUEST_LOG_PREFIX = "requests-"
REQUEST_LOG_COLUMNS = [
    "time",
    "customer_id",
    "known",
    "churn_probability",
    "predicted_label",
    "model_version",
    "feature_service",
    "feature_event_time",
]
# Paths with their own metric labels; anything else is counted as "other" (bounded label cardinality).
ENDPOINTS = ("/predict", "/health", "/metrics", "/docs", "/openapi.json")


# --------------------------------------------------------------------------------------------- settings


def resolve_env_vars(resource):
    """A copy of a Dagster resource with every ``EnvVar`` field replaced by the variable's value.

    ``build_resources`` passes URLs as ``EnvVar`` (resolved by Dagster at run time); outside a Dagster run
    the field holds the variable's *name*, so the service resolves them itself, from ``os.environ``.
    """
    from dagster import EnvVar

    values, changed = {}, False
    for name in type(resource).model_fields:
        value = getattr(resource, name)
        if isinstance(value, EnvVar):
            resolved = os.environ.get(value.env_var_name)
            if resolved is None:
                raise ValueError(
                    f"{type(resource).__name__}.{name}: environment variable {value.env_var_name} is unset"
                )
            value, changed = resolved, True
        values[name] = value
    return type(resource)(**values) if changed else resource


class ServiceSettings(BaseModel):
    """Everything the online service needs; ``from_project`` builds it from the project settings."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    feast: FeastResource = Field(description="Feast store (online store + registry) the features are read from.")
    registry: ModelRegistryResource = Field(description="MLflow registry the champion alias is read from.")
    host: str = Field(default="127.0.0.1", description="Bind address; loopback unless configured.")
    port: int = Field(default=8000, ge=0, le=65535)
    poll_seconds: float = Field(default=5.0, gt=0, description="How often the champion alias is polled.")
    bearer_token: SecretStr | None = Field(
        default_factory=lambda: (
            SecretStr(os.environ["FTI_SERVICE_TOKEN"]) if os.environ.get("FTI_SERVICE_TOKEN") else None
        ),
        description="When set, /predict and /metrics need `Authorization: Bearer <token>` (FTI_SERVICE_TOKEN).",
    )
    cors_origins: list[str] = Field(default_factory=list, description="No CORS middleware unless set.")
    request_log_dir: Path = Field(description="Folder of the request log (one JSON-lines file per UTC day).")
    max_ids: int = Field(default=1000, ge=1, description="Most customer ids in one /predict request (else 413).")
    request_log_writer: str | None = Field(
        default=None, description="Suffix of this process's request log files (set per worker with --workers)."
    )
    model_threads: int | None = Field(
        default=1,
        ge=1,
        description="torch intra-op threads when the model uses torch (None leaves torch's default): small "
        "batches gain nothing from more, and the server's threads need the cores.",
    )

    @classmethod
    def from_project(cls, project, **overrides: Any) -> ServiceSettings:
        """Settings from the project's settings (``fti_assets.settings.load_settings()``) and the same
        environment variables the Dagster definitions read (FTI_ONLINE_STORE, FTI_REDIS_URL,
        FTI_MLFLOW_TRACKING_URI)."""
        from fti_assets.definitions import build_resources

        resources = build_resources(project)
        values: dict[str, Any] = {
            "feast": resolve_env_vars(resources["feast"]),
            "registry": resolve_env_vars(resources["registry"]),
            "request_log_dir": project.path("request_log"),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


# ------------------------------------------------------------------------------------------ request log


class RequestLog:
    """Append-only JSON lines, one file per UTC day, written and flushed under a lock.

    ``writer`` names the process when several serve (``--workers``): each appends to its own
    ``requests-<day>.<writer>.jsonl``, so lines of two processes never interleave.
    """

    def __init__(self, folder: Path, writer: str | None = None):
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.writer = writer
        self._lock = threading.Lock()
        self._day: str | None = None
        self._file = None

    def path_of(self, day: str) -> Path:
        suffix = f".{self.writer}" if self.writer else ""
        return self.folder / f"{REQUEST_LOG_PREFIX}{day}{suffix}.jsonl"

    def append(self, day: str, text: str) -> None:
        with self._lock:
            if day != self._day or self._file is None:
                if self._file is not None:
                    self._file.close()
                self._file = open(self.path_of(day), "a", encoding="utf-8")  # noqa: SIM115 (kept open)
                self._day = day
            self._file.write(text)
            self._file.flush()

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.close()
                self._file, self._day = None, None


def read_request_log(request_log_dir: str | os.PathLike, days: list[str] | None = None) -> pd.DataFrame:
    """The request log as a frame: one row per answered id, the metadata columns
    (``REQUEST_LOG_COLUMNS``, ``time`` and ``feature_event_time`` as UTC datetimes) then one column per
    feature. ``days`` (``YYYY-MM-DD``) limits it to those days' files. A torn last line (a crash while
    writing) is skipped."""
    folder = Path(request_log_dir)
    paths = sorted(folder.glob(f"{REQUEST_LOG_PREFIX}*.jsonl")) if folder.is_dir() else []
    if days is not None:
        wanted = {f"{REQUEST_LOG_PREFIX}{day}" for day in days}
        paths = [p for p in paths if p.name.removesuffix(".jsonl").split(".")[0] in wanted]
    records: list[dict] = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue
                features = record.pop("features", None) or {}
                records.append({**record, **features})
    frame = pd.DataFrame.from_records(records)
    if frame.empty:
        return pd.DataFrame(columns=REQUEST_LOG_COLUMNS)
    frame = frame[REQUEST_LOG_COLUMNS + [c for c in frame.columns if c not in REQUEST_LOG_COLUMNS]]
    frame["time"] = pd.to_datetime(frame["time"], utc=True, format="ISO8601")
    if len(paths) > 1:  # several days or several writers: one timeline
        frame = frame.sort_values("time", kind="stable", ignore_index=True)
    frame["feature_event_time"] = pd.to_datetime(frame["feature_event_time"], utc=True, format="ISO8601")
    frame["predicted_label"] = frame["predicted_label"].astype("Int64")
    frame["customer_id"] = frame["customer_id"].astype(str)
    frame["model_version"] = frame["model_version"].astype(str)
    return frame


# ------------------------------------------------------------------------------------------ model bundle


class ModelRefused(Exception):
    """A registry version the service will not serve (the previous one keeps serving)."""


@dataclass(frozen=True, slots=True)
class ModelBundle:
    """What one request needs, swapped as a whole: never mutated once built."""

    version: str
    model: Any
    feature_service_name: str
    reader: Any  # OnlineFeatureReader of the feature service's views, for the model's inputs
    features_template: str  # the request log's features object, with %r for each input (finite values)
    threshold: float
    input_names: tuple[str, ...]
    feature_schema_hash: str
    scorer: Callable[[np.ndarray], np.ndarray]
    scoring_path: str
    loaded_at: str


def _pyfunc_scorer(model, input_names: tuple[str, ...]) -> tuple[Callable[[np.ndarray], np.ndarray], str]:
    """A function float64 matrix (n x inputs) -> probabilities.

    Fast paths, used only when they give the same scores as ``pyfunc.predict`` on probe rows: the model's own
    ``predict_matrix`` on the matrix (the project's scorer has one), else its PythonModel.predict on a frame
    with exactly the signature's columns, skipping MLflow's per-call schema enforcement (the service enforces
    columns and float64 itself). Otherwise ``pyfunc.predict``.
    """
    columns = list(input_names)

    def full(x: np.ndarray) -> np.ndarray:
        return np.asarray(model.predict(pd.DataFrame(x, columns=columns)), dtype="float64").reshape(-1)

    rng = np.random.default_rng(0)
    probe = np.vstack([np.zeros(len(columns)), rng.gamma(2.0, 50.0, size=(7, len(columns)))])
    probe[1, 0] = np.nan
    expected = full(probe)
    for path, scorer in _direct_scorers(model, columns):
        try:
            if np.allclose(scorer(probe), expected, rtol=0, atol=1e-12, equal_nan=True):
                return scorer, path
            log.warning(f"the model's {path} differs from pyfunc.predict: not used")
        except Exception as exc:  # not this model's interface
            log.info(f"scoring path {path} unavailable ({type(exc).__name__}: {exc})")
    return full, "pyfunc"


def _direct_scorers(model, columns: list[str]):
    """(name, scorer) candidates that skip MLflow's wrapper, fastest first."""
    try:
        python_model = model.unwrap_python_model()
    except Exception:
        return
    features = getattr(python_model, "features", None)
    if hasattr(python_model, "predict_matrix") and features is not None and set(features) == set(columns):
        order = [columns.index(name) for name in features]
        same_order = order == list(range(len(columns)))

        def matrix(x: np.ndarray) -> np.ndarray:
            out = python_model.predict_matrix(x if same_order else x[:, order])
            return np.asarray(out, dtype="float64").reshape(-1)

        yield "predict_matrix", matrix
    takes_context = "context" in inspect.signature(python_model.predict).parameters

    def frame(x: np.ndarray) -> np.ndarray:
        data = pd.DataFrame(x, columns=columns)
        out = python_model.predict(None, data) if takes_context else python_model.predict(data)
        return np.asarray(out, dtype="float64").reshape(-1)

    yield "python_model", frame


def _with_torch_threads(scorer: Callable, torch, threads: int) -> Callable:
    """The scorer with torch's intra-op threads set in whichever thread calls it: the setting is per
    calling thread (OpenMP), and the server scores in its worker threads, not the one that loaded the model.
    Without it each worker thread fans a one-row batch out to every core and they spin against each other."""
    local = threading.local()

    def scorer_in_thread(x: np.ndarray) -> np.ndarray:
        if getattr(local, "threads", None) != threads:
            torch.set_num_threads(threads)
            local.threads = threads
        return scorer(x)

    return scorer_in_thread


def load_bundle(settings: ServiceSettings, model_version) -> ModelBundle:
    """Load and check one registry version; raises ModelRefused with the reason when it must not serve."""
    version = str(model_version.version)
    tags = dict(model_version.tags or {})
    service_name = tags.get("feature_service")
    if not service_name:
        raise ModelRefused(f"model version {version} has no feature_service tag")
    expected_hash = tags.get("feature_schema_hash")
    try:
        served_hash = settings.feast.feature_schema_hash(service_name)
    except Exception as exc:
        raise ModelRefused(f"feature service {service_name} of version {version} is not in Feast: {exc}") from exc
    if expected_hash != served_hash:
        raise ModelRefused(
            f"model version {version} was trained on feature schema {expected_hash}, but {service_name} "
            f"serves {served_hash}"
        )
    try:
        threshold = float(tags.get("threshold", 0.5))
    except ValueError as exc:
        raise ModelRefused(f"model version {version}: threshold tag {tags['threshold']!r} is not a number") from exc

    from fti_assets.inference.online_read import OnlineFeatureReader

    store = settings.feast.store()
    service = store.get_feature_service(service_name)
    model = settings.registry.load_model(version)
    schema = model.metadata.get_input_schema()
    if schema is None:
        raise ModelRefused(f"model version {version} has no input signature")
    input_names = tuple(schema.input_names())
    try:
        reader = OnlineFeatureReader(store, service, input_names)
    except ValueError as exc:
        raise ModelRefused(f"model version {version} cannot be served through {service_name}: {exc}") from exc
    scorer, path = _pyfunc_scorer(model, input_names)
    if settings.model_threads and "torch" in sys.modules:
        scorer = _with_torch_threads(scorer, sys.modules["torch"], settings.model_threads)
    return ModelBundle(
        version=version,
        model=model,
        feature_service_name=service_name,
        reader=reader,
        # repr is json's own float format: one %-format per row instead of encoding a dict.
        features_template="{" + ",".join(f"{json.dumps(name)}:%r" for name in input_names) + "}",
        threshold=threshold,
        input_names=input_names,
        feature_schema_hash=served_hash,
        scorer=scorer,
        scoring_path=path,
        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


class ChampionWatcher:
    """Holds the serving bundle and keeps it on the registry's champion, polling off the request path."""

    def __init__(self, settings: ServiceSettings, metrics: ServiceMetrics):
        self.settings = settings
        self.metrics = metrics
        self.bundle: ModelBundle | None = None  # replaced by one assignment, never mutated
        self.last_error: dict | None = None
        self.last_poll: str | None = None
        self._failed: tuple | None = None  # (version, tag hash, served hash) that failed: not retried as is
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._refresh_lock = threading.Lock()
        self.on_store_error: Callable[[BaseException], None] | None = None  # set by create_app: the guard

    def refresh(self) -> None:
        """Point the bundle at the alias's version if it changed and the version is servable."""
        with self._refresh_lock:
            self.last_poll = datetime.now(UTC).isoformat(timespec="seconds")
            champion = self.settings.registry.champion()
            if champion is None:
                self._error(
                    None, f"no `champion` alias on {self.settings.registry.model_name} (or registry unreachable)"
                )
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
                self._warm(bundle)
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
            self.metrics.set_model(bundle)
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

    def _warm(self, bundle: ModelBundle) -> None:
        """One online read and one prediction before the bundle serves, so the first request is not slow."""
        try:
            bundle.reader.read(["__warmup__"])
        except Exception as exc:  # the store being down does not refuse a model; /predict reports it
            log.warning(f"online store not reachable while warming v{bundle.version}: {exc}")
            if self.on_store_error is not None:
                self.on_store_error(exc)
        bundle.scorer(np.zeros((1, len(bundle.input_names))))

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


class OnlineStoreGuard:
    """Fails requests fast while the online store is known to be down.

    The first read that fails marks the store down (that request waits out the client's own timeouts and
    retries: redis-py's default retries take about 6 s on a refused connection). While down, /predict
    answers 503 at once instead of blocking on the store again; a background thread re-reads every
    ``probe_seconds`` and marks it up when a read succeeds (so does a successful /health read).
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


# -------------------------------------------------------------------------------------------- metrics


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
        self._children: dict[tuple, tuple] = {}
        self._model_labels: tuple[str, str] | None = None

    def set_model(self, bundle: ModelBundle) -> None:
        labels = (bundle.version, bundle.feature_service_name)  # the gauge's label order
        if self._model_labels is not None and self._model_labels != labels:
            self.model_info.remove(*self._model_labels)
        self.model_info.labels(*labels).set(1)
        self._model_labels = labels
        with suppress(ValueError):  # a version that is not a number has only the info metric
            self.model_version.set(float(bundle.version))

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

    def __init__(self, app, metrics: ServiceMetrics, max_body_bytes: int):
        self.app = app
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        path = scope["path"]
        endpoint = path if path in ENDPOINTS else "other"
        status = [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            if endpoint == "/predict" and self._too_large(scope):
                # Refuse before the body is read and parsed: a body this large cannot be within max_ids.
                self.metrics.errors.labels(endpoint, "too_many_ids").inc()
                response = JSONResponse(
                    {"detail": f"request body larger than {self.max_body_bytes} bytes", "reason": "too_many_ids"},
                    status_code=413,
                )
                await response(scope, receive, send_status)
            else:
                await self.app(scope, receive, send_status)
        finally:
            self.metrics.observe(endpoint, scope["method"], status[0], time.perf_counter() - started)

    def _too_large(self, scope) -> bool:
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    return int(value) > self.max_body_bytes
                except ValueError:
                    return False
        return False


# ------------------------------------------------------------------------------------------------ API

CustomerId = Annotated[str, StringConstraints(strict=True, min_length=1, max_length=256)] | StrictInt


class PredictRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_ids: list[CustomerId] = Field(
        min_length=1, description="Customer ids (strings or integers); at most max_ids (else 413)."
    )


class Prediction(BaseModel):
    customer_id: str
    known: bool = Field(description="False when the online store has no features for the id: then no score.")
    churn_probability: float | None
    predicted_label: int | None
    feature_event_time: datetime | None = Field(description="Event time of the features the score used.")


class PredictResponse(BaseModel):
    model_version: str
    feature_service: str
    threshold: float
    predictions: list[Prediction]


_BEARER = HTTPBearer(auto_error=False, description="FTI_SERVICE_TOKEN, when the service is configured with one.")


class ServiceError(Exception):
    """An error answered as JSON ``{"detail", "reason"}`` with a status code (never a stack trace)."""

    def __init__(self, status: int, reason: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.reason, self.detail, self.headers = status, reason, detail, headers


_ENCODER = json.JSONEncoder(separators=(",", ":"), allow_nan=False)


def _float_json(value: float) -> str:
    return repr(value) if math.isfinite(value) else "null"


def _iso(seconds: float | None) -> str | None:
    if seconds is None:
        return None
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def create_app(settings: ServiceSettings) -> FastAPI:
    """The FastAPI app: /predict, /health, /metrics, /docs. The champion loads when the app starts."""
    metrics = ServiceMetrics()
    watcher = ChampionWatcher(settings, metrics)
    request_log = RequestLog(settings.request_log_dir, settings.request_log_writer)
    token = settings.bearer_token.get_secret_value().encode() if settings.bearer_token else None
    max_ids = settings.max_ids

    def read_one(entity: str = "__health__") -> object:
        """A real one-entity read through the served feature service: what /health and the probe do."""
        bundle = watcher.bundle
        if bundle is None:
            raise RuntimeError("no model loaded: no feature service to read through")
        return bundle.reader.read([entity])

    guard = OnlineStoreGuard(read_one)
    watcher.on_store_error = guard.failed

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        # Blocking on purpose: the server accepts requests once the first champion load was tried.
        watcher.start()
        try:
            yield
        finally:
            watcher.stop()
            guard.stop()
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

    def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        if token is None:
            return
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, token):
            raise ServiceError(
                401,
                "unauthorized",
                "missing or wrong bearer token",
                headers={"WWW-Authenticate": "Bearer"},
            )

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        metrics.errors.labels(_endpoint(request), exc.reason).inc()
        return JSONResponse({"detail": exc.detail, "reason": exc.reason}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        metrics.errors.labels(_endpoint(request), "invalid_request").inc()
        return await request_validation_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        error_id = uuid.uuid4().hex[:12]
        log.error(f"internal error {error_id} on {request.url.path}", exc_info=exc)
        metrics.errors.labels(_endpoint(request), "internal").inc()
        return JSONResponse({"detail": f"internal error (id {error_id})", "reason": "internal"}, status_code=500)

    # No dependency at all without a token: nothing to resolve per request.
    guarded = [Depends(authorized)] if token is not None else []

    @app.post(
        "/predict",
        response_model=PredictResponse,
        dependencies=guarded,
        responses={
            401: {"description": "Bearer token missing or wrong (when one is configured)"},
            413: {"description": "More customer ids than max_ids"},
            503: {"description": "No champion model, or the online store is unreachable"},
        },
    )
    async def predict(body: PredictRequest) -> Response:
        """Churn probability per customer id. Ids the online store has no features for come back
        ``known: false`` with null score and label."""
        # Runs on the event loop, not in the thread pool: the work is CPU-bound under the GIL, and the hop
        # to a worker thread and back cost more than the whole 1-id request (measured). A store that hangs
        # would stall the loop: give Redis a socket_timeout in its connection string.
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
        try:
            online = bundle.reader.read(ids)
        except Exception as exc:
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
        stamp = now.isoformat().replace("+00:00", "Z")
        event_iso: dict = {}
        predictions, lines = [], []
        head = (
            f'"model_version":{json.dumps(bundle.version)},"feature_service":{json.dumps(bundle.feature_service_name)}'
        )
        names, template = bundle.input_names, bundle.features_template
        rows = matrix.tolist()
        has_null = ~np.isfinite(matrix).all(axis=1)
        for i, customer_id in enumerate(ids):
            seconds = event_seconds[i]
            if seconds not in event_iso:
                event_iso[seconds] = _iso(seconds)
            event_time = event_iso[seconds]
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
                    "feature_event_time": event_time,
                }
            )
            if has_null[i]:
                features = _ENCODER.encode(
                    {name: v if math.isfinite(v) else None for name, v in zip(names, rows[i], strict=True)}
                )
            else:
                features = template % tuple(rows[i])
            lines.append(
                f'{{"time":"{stamp}","customer_id":{json.dumps(customer_id)},"known":{"true" if known[i] else "false"},'
                f'"churn_probability":{"null" if score is None else _float_json(score)},'
                f'"predicted_label":{"null" if label is None else label},{head},'
                f'"feature_event_time":{"null" if event_time is None else json.dumps(event_time)},'
                f'"features":{features}}}\n'
            )
        try:
            request_log.append(now.date().isoformat(), "".join(lines))
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

    @app.get("/health")
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
                read_one()
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

    @app.get("/metrics", dependencies=guarded, response_class=Response)
    def prometheus_metrics() -> Response:
        """Prometheus text exposition of the service's metrics."""
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    # A body of max_ids ids is well under this; anything larger is refused before it is parsed.
    app.add_middleware(MetricsMiddleware, metrics=metrics, max_body_bytes=max_ids * 300 + 4096)
    if settings.cors_origins:
        from fastapi.middleware.cors import CORSMiddleware

        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization", "Content-Type"],
        )
    return app


def _endpoint(request: Request) -> str:
    path = request.url.path
    return path if path in ENDPOINTS else "other"


# ----------------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default=None, help="bind address (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=None, help="port (default 8000)")
    parser.add_argument("--config", help="settings YAML (default: FTI_CONFIG or configs/simulated.yaml)")
    parser.add_argument("--poll-seconds", type=float, default=None, help="champion alias poll interval (default 5)")
    parser.add_argument("--cors-origin", action="append", default=None, help="allowed CORS origin (repeatable)")
    parser.add_argument("--request-log-dir", default=None, help="request log folder (default: <data_dir>/request_log)")
    parser.add_argument(
        "--workers",
        type=int,
        default=1,
        help="server processes (default 1); each loads the champion, polls the alias and writes its own log file",
    )
    parser.add_argument("--log-level", default="info")
    args = parser.parse_args(argv)
    if args.workers < 1:
        parser.error("--workers must be at least 1")

    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    os.environ.setdefault("DAGSTER_DISABLE_TELEMETRY", "true")
    if args.config:
        # fti_assets.definitions builds its Definitions from FTI_CONFIG when imported: the same file.
        os.environ["FTI_CONFIG"] = str(Path(args.config).resolve())
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    import uvicorn

    from fti_assets.settings import load_settings

    settings = ServiceSettings.from_project(
        load_settings(args.config),
        host=args.host,
        port=args.port,
        poll_seconds=args.poll_seconds,
        cors_origins=args.cors_origin,
        request_log_dir=args.request_log_dir,
    )
    log.info(
        f"serving on http://{settings.host}:{settings.port} (docs /docs) with {args.workers} process(es), request "
        f"log {settings.request_log_dir}, token {'required' if settings.bearer_token else 'not configured'}"
    )
    options = dict(
        host=settings.host, port=settings.port, log_level=args.log_level, access_log=False, server_header=False
    )
    if args.workers == 1:
        uvicorn.run(create_app(settings), **options)
        return 0
    # Worker processes import the app: they rebuild these settings from the same sources (the token, if
    # any, stays in FTI_SERVICE_TOKEN and is never written out).
    os.environ[_WORKER_SPEC] = json.dumps(
        {
            "config": os.environ.get("FTI_CONFIG"),
            "poll_seconds": settings.poll_seconds,
            "cors_origins": settings.cors_origins,
            "request_log_dir": str(settings.request_log_dir),
            "max_ids": settings.max_ids,
        }
    )
    uvicorn.run(f"{__name__}:app_for_worker", factory=True, workers=args.workers, **options)
    return 0


_WORKER_SPEC = "FTI_SERVICE_WORKER_SPEC"


def app_for_worker() -> FastAPI:
    """The app of one ``--workers`` process (uvicorn factory), from the spec ``main`` put in the environment."""
    from fti_assets.settings import load_settings

    spec = json.loads(os.environ[_WORKER_SPEC])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = ServiceSettings.from_project(
        load_settings(spec.pop("config")), request_log_writer=f"worker{os.getpid()}", **spec
    )
    return create_app(settings)


if __name__ == "__main__":
    sys.exit(main())
