"""One registry version made ready to serve: checked, loaded, given a fast scorer, and probed.

A version is refused (``ModelRefused``, with the reason) when its feature schema differs from what its
feature service serves now, when it cannot be read through that service, or when its scores on probe rows
are not finite probabilities: a model that answers NaN would turn every /predict into a 500.
"""

from __future__ import annotations

import inspect
import logging
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pandas as pd

from fti_assets.probe import probe_failure
from fti_assets.serving.request_log import LineFormat
from fti_assets.serving.settings import ServiceSettings

log = logging.getLogger(__name__)


class ModelRefused(Exception):
    """A registry version the service will not serve (the previous one keeps serving)."""


@dataclass(frozen=True, slots=True)
class ModelBundle:
    """What one request needs, swapped as a whole: never mutated once built."""

    version: str
    model: Any
    feature_service_name: str
    reader: Any  # OnlineFeatureReader of the feature service's views, for the model's inputs
    log_format: LineFormat
    threshold: float
    input_names: tuple[str, ...]
    feature_schema_hash: str
    scorer: Callable[[np.ndarray], np.ndarray]
    scoring_path: str
    loaded_at: str


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

    from fti_assets.serving.features import OnlineFeatureReader
    from fti_assets.serving.store_guard import bound_redis_client

    store = settings.feast.store()
    bound_redis_client(store, settings.store_timeout_seconds)
    service = store.get_feature_service(service_name)
    model = settings.registry.load_model(version)
    schema = model.metadata.get_input_schema()
    if schema is None:
        raise ModelRefused(f"model version {version} has no input signature")
    input_names = tuple(schema.input_names())
    try:
        reader = OnlineFeatureReader(store, service, input_names, lock_wait=settings.sqlite_lock_wait_seconds)
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
        log_format=LineFormat(version, service_name, input_names),
        threshold=threshold,
        input_names=input_names,
        feature_schema_hash=served_hash,
        scorer=scorer,
        scoring_path=path,
        loaded_at=datetime.now(UTC).isoformat(timespec="seconds"),
    )


def probe_bundle(bundle: ModelBundle, rows: int, on_store_error: Callable[[BaseException], None]) -> None:
    """Score up to ``rows`` entities of the online store before the bundle serves; ModelRefused unless every
    score is a finite probability. Also warms the read and scoring paths, so the first request is not slow.

    Zeros stand in for real rows only when the store holds none, or cannot be read now: an online store
    that is down does not refuse a model (/predict reports the store), the model is still probed.
    """
    try:
        online = bundle.reader.read(bundle.reader.sample_ids(rows))
        matrix = online.matrix[online.known]
    except Exception as exc:
        log.warning(f"online store not readable while probing v{bundle.version}: {type(exc).__name__}: {exc}")
        on_store_error(exc)
        matrix = np.empty((0, len(bundle.input_names)))
    source = "online store rows"
    if not len(matrix):
        matrix, source = np.zeros((1, len(bundle.input_names))), "an all-zero row"
    try:
        scores = bundle.scorer(matrix)
    except Exception as exc:
        raise ModelRefused(
            f"model version {bundle.version} failed to score {source}: {type(exc).__name__}: {exc}"
        ) from exc
    failure = probe_failure(scores, len(matrix))
    if failure is not None:
        raise ModelRefused(f"model version {bundle.version} {failure} ({len(matrix)} {source}): not served")


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
