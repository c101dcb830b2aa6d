"""The online service under faults: broken champions, a replaced or locked SQLite file, a silent Redis, and
hostile bodies. Each test fails on the service as it was before its fix (the docstrings say how).

Served like ``test_service``: a real uvicorn server on 127.0.0.1 against the small demo's registry and store.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import sqlite3
import threading
import time

import numpy as np
import pytest
from mlflow.pyfunc import PythonModel

from fti_assets.features.transform import FEATURE_COLUMNS
from fti_assets.probe import probe_failure
from fti_assets.resources.feast import FeastResource
from fti_assets_tests import test_online_read, test_online_write, test_service
from fti_assets_tests.test_online_write import SERVICE
from fti_assets_tests.test_service import (
    POLL_SECONDS,
    SWAP_DEADLINE_SECONDS,
    RunningService,
    _set_alias,
    httpx,
    predict,
    service_settings,
)

# Fixtures of those modules, used here by name (a module-scoped one runs once for this module too).
demo, known_ids, service = test_service.demo, test_service.known_ids, test_service.service
filled, stores, redis_url = test_online_read.filled, test_online_write.stores, test_online_write.redis_url

slow = pytest.mark.slow
JSON = {"content-type": "application/json"}


def copy_of_store(feast, folder, **overrides) -> FeastResource:
    """The demo's Feast registry with a copy of its SQLite online store (or ``overrides``) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    copy = folder / "online_store.db"
    shutil.copy(feast.sqlite_path, copy)
    values = dict(
        repo_path=feast.repo_path,
        lake_root=feast.lake_root,
        registry_path=feast.registry_path,
        project=feast.project,
        sqlite_path=str(copy),
    )
    return FeastResource(**{**values, **overrides})


# ---------------------------------------------------------------------------------------- broken models


@pytest.mark.parametrize(
    ("scores", "rows", "reason"),
    [
        ([0.0, 0.25, 1.0], 3, None),
        ([0.2, math.nan], 2, "1 of 2 probe scores are not finite"),
        ([math.inf], 1, "not finite"),
        ([0.2, 1.5, -0.1], 3, "2 of 3 probe scores are outside [0, 1]"),
        ([0.5], 2, "returned 1 scores for 2 probe rows"),
        (np.array([0.5, 0.5]), 2, None),
    ],
)
def test_probe_failure_names_what_cannot_be_served(scores, rows, reason):
    failure = probe_failure(scores, rows)
    assert failure is None if reason is None else reason in failure


def test_probe_rows_are_entities_the_store_holds(filled):
    """On SQLite and on Redis (FTI_TEST_REDIS_URL): the ids a new model is probed with are stored ids."""
    from fti_assets.serving.features import OnlineFeatureReader

    store, frame = filled
    reader = OnlineFeatureReader(store, store.get_feature_service(SERVICE), tuple(FEATURE_COLUMNS))
    some = reader.sample_ids(5)
    assert len(some) == len(set(some)) == 5 and set(some) <= set(frame["customer_id"])
    assert sorted(reader.sample_ids(10_000)) == sorted(frame["customer_id"])  # every one, the non-ASCII id too
    assert reader.read(some).known.sum() >= 4  # one stored entity may hold only nulls


class ConstantModel(PythonModel):
    """A pyfunc model that loads and scores every row ``value``: a broken version the registry accepts."""

    def __init__(self, value: float):
        self.value = value

    def predict(self, context, model_input, params=None):
        return np.full(len(model_input), self.value)


def register_constant_model(registry, like, value: float, folder) -> str:
    """A new version of the registered model, tagged like ``like`` (same feature service and schema), whose
    model answers ``value`` for every row. Through the registry's own client: no process-wide MLflow URI."""
    import mlflow.pyfunc

    signature = registry.load_model(like.version).metadata.signature
    model = ConstantModel(value)
    mlflow.pyfunc.save_model(folder, python_model=model, signature=signature, pip_requirements=["mlflow"])
    tags = {**like.tags, "registered_by": "test_serving_reliability"}
    return str(registry.client().create_model_version(registry.model_name, source=str(folder), tags=tags).version)


def refused_loads(service) -> float:
    """The service's count of refused versions. Compared before and after, not as a total: a pytest process
    that imported Feast before prometheus_client has it count in multi-process mode, where the apps of one
    process (test_service's, too) add to the same values."""
    prefix = 'fti_service_model_loads_total{result="refused"} '
    (line,) = [line for line in service.client.get("/metrics").text.splitlines() if line.startswith(prefix)]
    return float(line.removeprefix(prefix))


@pytest.fixture(scope="module", autouse=True)
def mlflow_registry_uri_unset():
    """MLflow's registry URI is process-wide, and test_service (run before this module) points it, and the
    MLFLOW_REGISTRY_URI variable, at its own demo's database: this module's demo would register there."""
    import mlflow

    mlflow.set_registry_uri("")
    os.environ.pop("MLFLOW_REGISTRY_URI", None)


@slow
def test_a_champion_scoring_nan_or_outside_0_1_is_refused_and_the_old_one_keeps_serving(
    demo, service, known_ids, tmp_path
):
    """Before: the load-time warm-up ignored its score, so the NaN version went live (and /predict answered 500
    while /health said ok)."""
    _, _, registry, _ = demo
    serving = registry.champion()
    good = str(serving.version)
    refused_before = refused_loads(service)
    try:
        for value, reason in ((math.nan, "not finite"), (1.5, "outside [0, 1]")):
            broken = register_constant_model(registry, serving, value, tmp_path / f"model-{value}")
            _set_alias(registry, broken)
            deadline = time.monotonic() + SWAP_DEADLINE_SECONDS
            health = service.client.get("/health").json()
            while health["model_version"] == good and (health["last_error"] or {}).get("version") != broken:
                assert time.monotonic() < deadline, health
                time.sleep(POLL_SECONDS)
                health = service.client.get("/health").json()
            assert health["model_version"] == good and health["status"] == "ok", health
            assert health["last_error"]["version"] == broken
            message = health["last_error"]["message"]
            assert reason in message and "online store rows" in message and "not served" in message
            response = predict(service, known_ids[:2])
            assert response.status_code == 200 and response.json()["model_version"] == good
    finally:
        _set_alias(registry, good)
    assert refused_loads(service) == refused_before + 2


# ----------------------------------------------------------------------------------------- online store


def _delete_entity(path, customer_id: str) -> None:
    """Remove one customer's rows from every table of a Feast SQLite online store."""
    from feast.infra.key_encoding_utils import serialize_entity_key
    from feast.protos.feast.types.EntityKey_pb2 import EntityKey
    from feast.protos.feast.types.Value_pb2 import Value

    key = serialize_entity_key(
        EntityKey(join_keys=["customer_id"], entity_values=[Value(string_val=customer_id)]),
        entity_key_serialization_version=3,
    )
    with sqlite3.connect(path) as conn:
        tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        deleted = sum(conn.execute(f'DELETE FROM "{t}" WHERE entity_key = ?', (key,)).rowcount for t in tables)
    assert deleted > 0


@slow
def test_a_replaced_online_store_file_is_read_from_the_new_file(demo, tmp_path, known_ids):
    """The store file replaced while serving (a rebuilt file renamed over it), then removed. Before: each
    thread's connection stayed on the unlinked old file, serving its features and /health said reachable."""
    _, feast, registry, _ = demo
    local = copy_of_store(feast, tmp_path / "store")
    running = RunningService(service_settings(local, registry, tmp_path / "log"))
    try:
        gone, kept = known_ids[0], known_ids[1]
        before = running.client.post("/predict", json={"customer_ids": [gone, kept]})
        assert [p["known"] for p in before.json()["predictions"]] == [True, True]
        # Scored alone, as it is below: an MLP's float32 scores (alone or in an ensemble) can differ in the
        # last bits with the rows scored beside them.
        kept_before = running.client.post("/predict", json={"customer_ids": [kept]}).json()["predictions"][0]

        replacement = tmp_path / "replacement.db"
        shutil.copy(local.sqlite_path, replacement)
        _delete_entity(replacement, gone)
        os.replace(replacement, local.sqlite_path)
        after = running.client.post("/predict", json={"customer_ids": [gone, kept]})
        assert after.status_code == 200, after.text
        assert [p["known"] for p in after.json()["predictions"]] == [False, True]
        assert after.json()["predictions"][1] == kept_before
        assert running.client.get("/health").json()["online_store"]["reachable"] is True

        os.remove(local.sqlite_path)
        removed = running.client.post("/predict", json={"customer_ids": [kept]})
        assert removed.status_code == 503 and removed.json()["reason"] == "online_store_unavailable"
        assert "FileNotFoundError" in removed.json()["detail"]
        assert running.client.get("/health").json()["online_store"]["reachable"] is False
    finally:
        running.stop()


@slow
def test_a_locked_online_store_is_waited_for_off_the_event_loop_then_a_503(demo, tmp_path, known_ids):
    """A writer holds the SQLite file exclusively, as a long online_features write does. Before: the read
    waited out sqlite3's 5 s busy timeout on the event loop, and every other request waited behind it."""
    _, feast, registry, _ = demo
    local = copy_of_store(feast, tmp_path / "store")
    settings = service_settings(local, registry, tmp_path / "log", sqlite_lock_wait_seconds=1.0)
    running = RunningService(settings)
    holder = sqlite3.connect(local.sqlite_path, isolation_level=None)
    ids = known_ids[:2]
    try:
        assert running.client.post("/predict", json={"customer_ids": ids}).status_code == 200

        # A write that ends while a request waits for it: the request is answered, later, not failed.
        holder.execute("BEGIN EXCLUSIVE")
        answered: dict = {}

        def waiting_predict():
            with httpx.Client(base_url=running.url, timeout=30) as client:
                answered["response"] = client.post("/predict", json={"customer_ids": ids})

        waiting = threading.Thread(target=waiting_predict)
        waiting.start()
        time.sleep(0.2)  # the request is waiting for the lock now
        metrics = running.client.get("/metrics")
        assert metrics.status_code == 200 and "response" not in answered  # answered while the predict waits
        started = time.perf_counter()
        health = running.client.get("/health")
        assert time.perf_counter() - started < 0.5 and "response" not in answered
        assert health.status_code == 200, health.text
        assert health.json()["online_store"] | {"read_ms": 0} == {
            "type": "sqlite",
            "reachable": True,
            "locked_by_writer": True,
            "read_ms": 0,
        }
        holder.execute("COMMIT")
        waiting.join(timeout=30)
        assert answered["response"].status_code == 200, answered["response"].text

        # A write that outlasts the wait: a 503 that names the lock, after the wait; then served again at once
        # (a busy store is not a down one).
        holder.execute("BEGIN EXCLUSIVE")
        started = time.perf_counter()
        response = running.client.post("/predict", json={"customer_ids": ids})
        assert time.perf_counter() - started < 3.0
        assert response.status_code == 503 and response.json()["reason"] == "online_store_unavailable"
        assert "locked by a writer for over 1 s" in response.json()["detail"], response.text
        holder.execute("COMMIT")
        assert running.client.post("/predict", json={"customer_ids": ids}).status_code == 200
    finally:
        holder.close()
        running.stop()


@slow
def test_a_silent_redis_is_a_fast_503(demo, tmp_path, known_ids):
    """A Redis that accepts connections and never answers. Before: no socket timeout, so the read that
    warmed the model at start never returned and the service never came up."""
    _, feast, registry, _ = demo
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(64)  # the kernel completes the handshakes; nothing ever reads or answers
        host, port = silent.getsockname()
        local = copy_of_store(feast, tmp_path / "store", online_store="redis", redis_connection_string=f"{host}:{port}")
        running = RunningService(service_settings(local, registry, tmp_path / "log"))
        try:
            for _ in range(2):
                started = time.perf_counter()
                response = running.client.post("/predict", json={"customer_ids": known_ids[:2]})
                assert time.perf_counter() - started < 3.0
                assert response.status_code == 503 and response.json()["reason"] == "online_store_unavailable"
                assert "Timeout" in response.json()["detail"], response.text
            started = time.perf_counter()
            health = running.client.get("/health")
            assert time.perf_counter() - started < 3.0
            assert health.status_code == 503 and health.json()["online_store"]["reachable"] is False
            assert health.json()["model_version"] is not None  # the model was probed (on zeros) and serves
        finally:
            running.stop()


# ----------------------------------------------------------------------------------------------- bodies


@slow
def test_a_lone_surrogate_id_is_a_422_with_the_reason(service, known_ids):
    """Before: the 422 handler failed to encode the id as UTF-8: a 500 and a reset connection."""
    for content in (b'{"customer_ids": ["\\ud800"]}', b'{"customer_ids": ["ok\\udfff"]}'):
        response = service.client.post("/predict", content=content, headers=JSON)
        assert response.status_code == 422, response.text
        assert response.json()["reason"] == "invalid_request"
        assert "surrogate" in response.json()["detail"][0]["msg"] or "escape" in response.json()["detail"][0]["msg"]
    # The same connection answers the next request.
    assert predict(service, known_ids[:1]).status_code == 200


@slow
@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"[" * 100_000, "recursion"),
        (b'{"customer_ids": [' * 5_000, "recursion"),
        (b'{"customer_ids": ["\xff\xfe"]}', "unicode"),
    ],
)
def test_a_deeply_nested_or_non_utf8_body_is_a_422_with_the_reason(service, content, says):
    """Before: 400 "There was an error parsing the body", with no reason."""
    response = service.client.post("/predict", content=content, headers=JSON)
    assert response.status_code == 422, response.text
    assert response.json()["reason"] == "invalid_request"
    assert says in response.json()["detail"][0]["msg"].lower()


@slow
def test_a_streamed_body_over_the_limit_is_refused_as_it_arrives(service, known_ids):
    """A chunked body (no Content-Length) that passes the limit and is never finished. Before: the limit
    looked only at Content-Length, so the whole body was read (and parsed) first: here, no answer at all."""
    limit = service.app.state.settings.max_body_bytes
    port = int(service.url.rsplit(":", 1)[1])
    # limit + 1 bytes of ids: the server reads every byte sent (none is left unread when it closes).
    body = (b'{"customer_ids": [' + b'"1234567",' * (limit // 10 + 1))[: limit + 1]
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n"
        )
        for start in range(0, len(body), 16384):
            chunk = body[start : start + 16384]
            conn.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
        # No last chunk: the body never ends, so only an answer given as the bytes arrive comes back.
        answer = b""
        while b"too_many_ids" not in answer and (data := conn.recv(65536)):
            answer += data
    assert answer.startswith(b"HTTP/1.1 413"), answer[:300]
    assert b"too_many_ids" in answer
    # A chunked body within the limit is read whole and answered.
    body = [b'{"customer_ids": ', f'["{known_ids[0]}", '.encode(), f'"{known_ids[1]}"]}}'.encode()]
    response = service.client.post("/predict", content=iter(body), headers=JSON)
    assert response.status_code == 200, response.text
    assert [p["customer_id"] for p in response.json()["predictions"]] == known_ids[:2]
