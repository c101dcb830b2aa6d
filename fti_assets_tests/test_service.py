"""The online service over real HTTP: a real uvicorn server on 127.0.0.1, fed by the demo's registry and store.

One run of the demo on the small simulated source gives an MLflow registry with a champion and a Feast
online store; the service is started against them in a background thread and exercised with httpx.
Tests that move the champion alias run last, and put it back.
"""

import socket
import threading
import time
import uuid
from datetime import timedelta
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fti_assets.demo import run_demo
from fti_assets_tests.conftest import dagster_instance, server_url, small_settings

pytestmark = pytest.mark.slow

httpx = pytest.importorskip("httpx")
uvicorn = pytest.importorskip("uvicorn")

POLL_SECONDS = 0.2
# The service the demo's champion is trained on (the embedded settings' feature_service).
SERVICE = small_settings(Path("unused")).feature_service
VIEW = small_settings(Path("unused")).all_feature_services[SERVICE].view
SWAP_DEADLINE_SECONDS = 60  # a model load takes about a second; this bounds a test, not a target


class RunningService:
    """A uvicorn.Server on 127.0.0.1 (port chosen by the OS) serving ``create_app(settings)`` in a thread."""

    def __init__(self, settings):
        from fti_assets.serving.app import create_app

        self.app = create_app(settings)
        config = uvicorn.Config(self.app, host="127.0.0.1", port=0, log_level="warning", access_log=False)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="uvicorn-under-test", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 120
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the service did not start")
            time.sleep(0.05)
        port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.client = httpx.Client(base_url=self.url, timeout=30)
        # It answers (200 or 503: both are answers) before any test talks to it.
        while True:
            try:
                self.client.get("/health")
                break
            except httpx.TransportError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def stop(self) -> None:
        self.client.close()
        self.server.should_exit = True
        self.thread.join(timeout=30)


def service_settings(feast, registry, log_dir: Path, **overrides):
    from fti_assets.serving.settings import ServiceSettings

    values = dict(
        feast=feast,
        registry=registry,
        request_log_dir=log_dir,
        poll_seconds=POLL_SECONDS,
        bearer_token=None,  # not whatever FTI_SERVICE_TOKEN the environment has
    )
    values.update(overrides)
    return ServiceSettings(**values)


def unused_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """The demo, materialized once: (settings, feast, registry, last day's features)."""
    from fti_assets.resources.build import build_resources, resolve_env_vars

    data = tmp_path_factory.mktemp("service")
    settings = small_settings(data)
    instance = dagster_instance(data / "dagster_home")
    run_demo(settings, instance, out=lambda line: None)
    instance.dispose()
    resources = build_resources(settings)
    feast, registry = resolve_env_vars(resources["feast"]), resolve_env_vars(resources["registry"])
    last_file = sorted(settings.path("lake", "customer_features").glob("*.parquet"))[-1]
    return settings, feast, registry, pd.read_parquet(last_file)


@pytest.fixture(scope="module")
def service(demo, tmp_path_factory):
    _, feast, registry, _ = demo
    running = RunningService(service_settings(feast, registry, tmp_path_factory.mktemp("request_log")))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def known_ids(demo) -> list[str]:
    """Customers in the online store: the active ones of the last materialized day."""
    *_, last_day = demo
    return [str(c) for c in last_day["customer_id"].sample(8, random_state=1)]


def direct_scores(feast, registry, ids: list[str]) -> tuple[np.ndarray, pd.DataFrame, object]:
    """What the champion gives the same online features, without the service: pyfunc.predict on Feast's frame."""
    import mlflow

    champion = registry.champion()
    store = feast.store()
    online = store.get_online_features(
        features=store.get_feature_service(champion.tags["feature_service"]),
        entity_rows=[{"customer_id": i} for i in ids],
        full_feature_names=False,
    ).to_df()
    mlflow.set_tracking_uri(registry.tracking_uri)
    mlflow.set_registry_uri(registry.tracking_uri)
    model = registry.load_model(champion.version)
    inputs = online[model.metadata.get_input_schema().input_names()].astype("float64")
    return np.asarray(model.predict(inputs), dtype="float64"), online, champion


def predict(service, ids, **kwargs):
    return service.client.post("/predict", json={"customer_ids": ids}, **kwargs)


# ------------------------------------------------------------------------------------------ predictions


def test_known_ids_score_like_the_champion_on_the_same_online_features(demo, service, known_ids):
    _, feast, registry, last_day = demo
    response = predict(service, known_ids)
    assert response.status_code == 200, response.text
    body = response.json()
    expected, online, champion = direct_scores(feast, registry, known_ids)
    assert body["model_version"] == str(champion.version)
    assert body["feature_service"] == champion.tags["feature_service"] == SERVICE
    threshold = float(champion.tags["threshold"])
    assert body["threshold"] == threshold
    answers = body["predictions"]
    assert [a["customer_id"] for a in answers] == known_ids
    assert all(a["known"] for a in answers)
    scores = np.array([a["churn_probability"] for a in answers])
    assert ((scores >= 0) & (scores <= 1)).all()
    np.testing.assert_allclose(scores, expected, rtol=0, atol=1e-12)
    assert [a["predicted_label"] for a in answers] == [int(s >= threshold) for s in scores]
    # The event time of the features used: the end of the last materialized day.
    event_time = pd.Timestamp(last_day["event_timestamp"].max())
    event_time = (event_time.tz_localize("UTC") if event_time.tz is None else event_time.tz_convert("UTC")).floor("s")
    assert {pd.Timestamp(a["feature_event_time"]) for a in answers} == {event_time}


def test_integer_ids_are_the_same_customers(service, known_ids):
    as_int = [int(i) for i in known_ids[:3]]
    by_int = predict(service, as_int).json()["predictions"]
    by_str = predict(service, known_ids[:3]).json()["predictions"]
    assert by_int == by_str


def test_an_unknown_id_is_flagged_with_no_score(service, known_ids):
    response = predict(service, ["no-such-customer", known_ids[0], "999999"])
    assert response.status_code == 200
    unknown, known, other = response.json()["predictions"]
    for answer in (unknown, other):
        assert answer["known"] is False
        assert answer["churn_probability"] is None and answer["predicted_label"] is None
        assert answer["feature_event_time"] is None
    assert known["known"] is True and 0 <= known["churn_probability"] <= 1


def test_every_answered_id_is_in_the_request_log(demo, service, known_ids):
    from fti_assets.serving.request_log import read_request_log

    _, feast, _, _ = demo
    log_dir = service.app.state.settings.request_log_dir
    before = len(read_request_log(log_dir))
    ids = [known_ids[1], "not-a-customer"]
    body = predict(service, ids).json()
    log = read_request_log(log_dir)
    assert len(log) == before + 2
    new = log.tail(2).set_index("customer_id")
    assert list(new.index) == ids
    assert set(new["model_version"]) == {body["model_version"]}
    assert set(new["feature_service"]) == {SERVICE}
    assert new.loc[ids[0], "known"] and not new.loc[ids[1], "known"]
    assert new.loc[ids[0], "churn_probability"] == body["predictions"][0]["churn_probability"]
    assert pd.isna(new.loc[ids[1], "churn_probability"])
    # The features logged are the online features the score used.
    store = feast.store()
    online = store.get_online_features(
        features=store.get_feature_service(SERVICE),
        entity_rows=[{"customer_id": ids[0]}],
        full_feature_names=False,
    ).to_dict()
    for name in ("spend_sum_30d", "txn_count_90d", "days_since_last_purchase"):
        assert new.loc[ids[0], name] == online[name][0], name
    assert new.loc[ids[1], ["spend_sum_30d", "tenure_days"]].isna().all()
    assert list(Path(log_dir).glob("requests-*.jsonl"))


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "content",
    [
        b'{"customer_ids": []}',
        b'{"ids": ["1"]}',
        b'{"customer_ids": "1"}',
        b'{"customer_ids": [1.5]}',
        b'{"customer_ids": [true]}',
        b'{"customer_ids": [""]}',
        b'{"customer_ids": [null]}',
        b"{not json",
        b"",
    ],
)
def test_a_malformed_body_is_a_422_with_the_reason(service, content):
    response = service.client.post("/predict", content=content, headers={"content-type": "application/json"})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail and all("msg" in d and "loc" in d for d in detail)


def test_too_many_ids_is_a_413_with_a_message(service):
    max_ids = service.app.state.settings.max_ids
    response = predict(service, [str(i) for i in range(max_ids + 1)])
    assert response.status_code == 413
    assert f"at most {max_ids}" in response.json()["detail"]
    # A body far too large is refused before it is parsed.
    huge = b'{"customer_ids": ["' + b"x" * (max_ids * 400) + b'"]}'
    response = service.client.post("/predict", content=huge, headers={"content-type": "application/json"})
    assert response.status_code == 413


def test_no_error_answer_carries_a_stack_trace(service):
    for response in (
        service.client.post("/predict", content=b"{", headers={"content-type": "application/json"}),
        service.client.get("/nope"),
        service.client.get("/predict"),
    ):
        assert response.status_code in (404, 405, 422)
        assert "Traceback" not in response.text and 'File "' not in response.text


# ------------------------------------------------------------------------------ health, metrics, docs


def test_health_names_the_model_and_reads_the_online_store(demo, service):
    _, _, registry, _ = demo
    response = service.client.get("/health")
    assert response.status_code == 200, response.text
    health = response.json()
    assert health["status"] == "ok"
    assert health["model_version"] == str(registry.champion().version)
    assert health["feature_service"] == SERVICE
    assert health["online_store"]["reachable"] is True
    assert health["last_error"] is None
    # The fast paths, each checked against its slow equivalent when the model loaded.
    assert (health["scoring_path"], health["read_path"]) == ("predict_matrix", "sqlite_select")
    # What the load left in memory is out of the cyclic collector's sight (no stall of a full collection).
    import gc

    assert gc.get_freeze_count() > 100_000


def test_metrics_count_requests_and_name_the_model_version(service, known_ids):
    predict(service, known_ids[:1])
    service.client.post("/predict", json={"customer_ids": []})
    text = service.client.get("/metrics").text
    version = service.client.get("/health").json()["model_version"]
    assert 'fti_service_requests_total{endpoint="/predict",method="POST",status="200"}' in text
    assert 'fti_service_requests_total{endpoint="/predict",method="POST",status="422"}' in text
    assert 'fti_service_errors_total{endpoint="/predict",reason="invalid_request"}' in text
    assert 'fti_service_request_seconds_bucket{endpoint="/predict",le="0.003"}' in text
    assert f'fti_service_model_info{{feature_service="{SERVICE}",model_version="{version}"}} 1.0' in text
    assert f"fti_service_model_version {float(version)}" in text
    assert 'fti_service_predicted_ids_total{known="true"}' in text


def test_docs_are_served(service):
    assert service.client.get("/docs").status_code == 200
    spec = service.client.get("/openapi.json").json()
    assert "/predict" in spec["paths"] and "/health" in spec["paths"]


# --------------------------------------------------------------------------------- other configurations


def test_a_bearer_token_is_required_when_configured(demo, tmp_path, known_ids):
    _, feast, registry, _ = demo
    running = RunningService(service_settings(feast, registry, tmp_path, bearer_token="s3cret-token"))
    try:
        client = running.client
        missing = client.post("/predict", json={"customer_ids": known_ids[:1]})
        assert missing.status_code == 401 and missing.headers["www-authenticate"] == "Bearer"
        wrong = client.post(
            "/predict", json={"customer_ids": known_ids[:1]}, headers={"Authorization": "Bearer s3cret-tokem"}
        )
        assert wrong.status_code == 401
        assert (
            client.post(
                "/predict", json={"customer_ids": known_ids[:1]}, headers={"Authorization": "Basic s3cret-token"}
            ).status_code
            == 401
        )
        right = client.post(
            "/predict", json={"customer_ids": known_ids[:1]}, headers={"Authorization": "Bearer s3cret-token"}
        )
        assert right.status_code == 200
        assert client.get("/metrics").status_code == 401
        assert client.get("/metrics", headers={"Authorization": "Bearer s3cret-token"}).status_code == 200
        assert client.get("/health").status_code == 200  # probes need no token
        # No CORS unless configured.
        preflight = client.options(
            "/predict", headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"}
        )
        assert "access-control-allow-origin" not in preflight.headers
    finally:
        running.stop()


def test_no_champion_is_a_503(demo, tmp_path):
    _, feast, registry, _ = demo
    from fti_assets.resources.mlflow import ModelRegistryResource

    nobody = ModelRegistryResource(tracking_uri=registry.tracking_uri, model_name="no_such_model")
    running = RunningService(service_settings(feast, nobody, tmp_path))
    try:
        response = running.client.post("/predict", json={"customer_ids": ["1"]})
        assert response.status_code == 503
        assert response.json()["reason"] == "no_champion" and "champion" in response.json()["detail"]
        health = running.client.get("/health")
        assert health.status_code == 503 and health.json()["model_version"] is None
    finally:
        running.stop()


def test_an_unreachable_online_store_is_a_503_with_the_reason(demo, tmp_path, known_ids):
    """The same registry and feature definitions, with the online store on a loopback port nothing listens on."""
    _, feast, registry, _ = demo
    from fti_assets.resources.feast import FeastResource

    down = FeastResource(
        repo_path=feast.repo_path,
        lake_root=feast.lake_root,
        registry_path=feast.registry_path,
        project=feast.project,
        online_store="redis",
        redis_connection_string=f"127.0.0.1:{unused_loopback_port()}",
    )
    running = RunningService(service_settings(down, registry, tmp_path))
    try:
        # The read that warmed the model at start found the store down: requests are answered at once
        # instead of each waiting out the Redis client's retries.
        started = time.perf_counter()
        first = running.client.post("/predict", json={"customer_ids": known_ids[:2]})
        assert time.perf_counter() - started < 1.0
        second = running.client.post("/predict", json={"customer_ids": known_ids[:2]})
        for response in (first, second):
            assert response.status_code == 503, response.text
            assert response.json()["reason"] == "online_store_unavailable"
            assert "unavailable since" in response.json()["detail"]
            assert "ConnectionError" in response.json()["detail"]
        health = running.client.get("/health")
        assert health.status_code == 503 and health.json()["online_store"]["reachable"] is False
        assert "Traceback" not in first.text + second.text + health.text
    finally:
        running.stop()


def test_an_online_store_failing_while_serving_is_a_503_and_serving_resumes_when_it_is_back(demo, tmp_path, known_ids):
    """A copy of the SQLite online store loses its feature table mid-serving, then gets it back."""
    import shutil
    import sqlite3

    from fti_assets.resources.feast import FeastResource

    _, feast, registry, _ = demo
    copy = tmp_path / "online_store.db"
    shutil.copy(feast.sqlite_path, copy)
    local = FeastResource(
        repo_path=feast.repo_path,
        lake_root=feast.lake_root,
        registry_path=feast.registry_path,
        project=feast.project,
        sqlite_path=str(copy),
    )
    running = RunningService(service_settings(local, registry, tmp_path / "log"))
    try:
        assert running.client.post("/predict", json={"customer_ids": known_ids[:2]}).status_code == 200
        with sqlite3.connect(copy) as conn:
            tables = [name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
            assert tables
            for table in tables:
                conn.execute(f'ALTER TABLE "{table}" RENAME TO "{table}_gone"')
        failed = running.client.post("/predict", json={"customer_ids": known_ids[:2]})
        assert failed.status_code == 503 and failed.json()["reason"] == "online_store_unavailable"
        assert "OperationalError" in failed.json()["detail"] and "Traceback" not in failed.text
        assert running.client.get("/health").json()["online_store"]["reachable"] is False
        with sqlite3.connect(copy) as conn:
            for table in tables:
                conn.execute(f'ALTER TABLE "{table}_gone" RENAME TO "{table}"')
        deadline = time.monotonic() + 30
        response = running.client.post("/predict", json={"customer_ids": known_ids[:2]})
        while response.status_code == 503 and time.monotonic() < deadline:
            time.sleep(0.2)
            response = running.client.post("/predict", json={"customer_ids": known_ids[:2]})
        assert response.status_code == 200, response.text
        assert running.client.get("/health").json()["online_store"]["reachable"] is True
    finally:
        running.stop()


def test_a_feature_schema_changed_under_the_served_model_stops_serving_it(demo, tmp_path, known_ids):
    """The feature service edited in place (on a copy of the Feast registry): the model is withdrawn, not fed
    features of another schema; the original definition back, it serves again."""
    import shutil

    from feast import FeatureService

    from fti_assets.resources.feast import FeastResource

    _, feast, registry, _ = demo
    shutil.copy(feast.registry_path, tmp_path / "registry.db")
    local = FeastResource(
        repo_path=feast.repo_path,
        lake_root=feast.lake_root,
        registry_path=str(tmp_path / "registry.db"),
        project=feast.project,
        sqlite_path=feast.sqlite_path,
    )
    original = {o.name: o for o in local.definitions()}
    running = RunningService(service_settings(local, registry, tmp_path / "log"))
    try:
        assert running.client.post("/predict", json={"customer_ids": known_ids[:1]}).status_code == 200
        view = original[VIEW]
        local.store().apply([FeatureService(name=SERVICE, features=[view[["spend_sum_7d"]]])])
        deadline = time.monotonic() + SWAP_DEADLINE_SECONDS
        reasons = []
        while time.monotonic() < deadline:
            response = running.client.post("/predict", json={"customer_ids": known_ids[:1]})
            reasons.append(response.json().get("reason", response.status_code))
            if reasons[-1] == "no_champion":
                break
            time.sleep(POLL_SECONDS / 4)
        # Until the poller withdraws the model, requests read the views resolved when it loaded: the schema it
        # was trained on. Then 503, never a score from the edited service.
        assert set(reasons) <= {200, "no_champion"} and reasons[-1] == "no_champion"
        assert response.status_code == 503, response.text
        assert "feature schema" in response.json()["detail"]
        assert running.client.get("/health").json()["model_version"] is None

        local.store().apply([original[SERVICE]])
        deadline = time.monotonic() + SWAP_DEADLINE_SECONDS
        while response.status_code == 503 and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            response = running.client.post("/predict", json={"customer_ids": known_ids[:1]})
        assert response.status_code == 200, response.text
    finally:
        running.stop()


@pytest.fixture(scope="module")
def redis_url() -> str:
    """FTI_TEST_REDIS_URL (host:port), checked before the demo is built."""
    return server_url("FTI_TEST_REDIS_URL", "Redis").removeprefix("redis://")


def test_redis_online_store_gives_the_same_answers(redis_url, demo, service, tmp_path, known_ids):
    """Features materialized into a real Redis (FTI_TEST_REDIS_URL) answer exactly what SQLite answers."""
    from fti_assets.resources.feast import FeastResource

    settings, feast, registry, last_day = demo
    redis_feast = FeastResource(
        repo_path=feast.repo_path,
        lake_root=feast.lake_root,
        registry_path=str(tmp_path / "feast" / "registry.db"),
        online_store="redis",
        redis_connection_string=redis_url,
        project=f"fti_test_{uuid.uuid4().hex[:10]}",  # its own key space in a shared Redis
    )
    store = redis_feast.store()
    store.apply(redis_feast.definitions())
    try:
        # The same window the online_features asset materializes: the last day's rows.
        end = pd.Timestamp(last_day["event_timestamp"].max()).to_pydatetime() + timedelta(seconds=1)
        store.materialize(start_date=end - timedelta(days=1), end_date=end)
        running = RunningService(service_settings(redis_feast, registry, tmp_path / "log"))
        try:
            ids = [*known_ids, "no-such-customer"]
            from_redis = running.client.post("/predict", json={"customer_ids": ids})
            from_sqlite = predict(service, ids)
            assert from_redis.status_code == from_sqlite.status_code == 200, from_redis.text
            assert from_redis.json() == from_sqlite.json()
            health = running.client.get("/health").json()
            assert health["online_store"]["type"] == "redis" and health["online_store"]["reachable"] is True
        finally:
            running.stop()
    finally:
        store.teardown()


# ------------------------------------------------------------------- champion changes (last: they move it)


def _register_copy(registry, champion, **tag_overrides) -> str:
    """A new registry version of the champion's own model, with its tags (some overridden)."""
    tags = {**champion.tags, "registered_by": "test_service", **tag_overrides}
    version = registry.client().create_model_version(
        registry.model_name, source=champion.source, run_id=champion.run_id, tags=tags
    )
    return str(version.version)


def _set_alias(registry, version: str) -> None:
    registry.client().set_registered_model_alias(registry.model_name, "champion", version)


def test_a_new_champion_is_swapped_in_while_requests_keep_succeeding(demo, service, known_ids):
    _, _, registry, _ = demo
    old = registry.champion()
    new_version = _register_copy(registry, old)
    seen: list[tuple[int, str | None]] = []
    stop = threading.Event()

    def traffic():
        with httpx.Client(base_url=service.url, timeout=30) as client:
            deadline = time.monotonic() + SWAP_DEADLINE_SECONDS
            while not stop.is_set() and len(seen) < 20_000 and time.monotonic() < deadline:
                response = client.post("/predict", json={"customer_ids": known_ids[:3]})
                seen.append(
                    (
                        response.status_code,
                        response.json().get("model_version") if response.status_code == 200 else None,
                    )
                )

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        while len(seen) < 20:
            time.sleep(0.01)
        _set_alias(registry, new_version)
        deadline = time.monotonic() + SWAP_DEADLINE_SECONDS
        while not any(v == new_version for _, v in seen[-50:]) and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
        after_swap = len(seen)
        while len(seen) < after_swap + 50 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        stop.set()
        sender.join(timeout=60)
    assert {status for status, _ in seen} == {200}, [s for s in seen if s[0] != 200][:5]
    versions = [v for _, v in seen]
    assert versions[0] == str(old.version) and versions[-1] == new_version
    # One switch, never back: every request ran on the bundle it started with.
    switched = versions.index(new_version)
    assert set(versions[:switched]) == {str(old.version)} and set(versions[switched:]) == {new_version}
    health = service.client.get("/health").json()
    assert health["model_version"] == new_version and health["last_error"] is None
    metrics = service.client.get("/metrics").text
    assert f"fti_service_model_version {float(new_version)}" in metrics
    assert f'fti_service_model_info{{feature_service="{SERVICE}",model_version="{new_version}"}} 1.0' in metrics
    assert f'model_version="{old.version}"' not in metrics


def test_a_version_with_another_feature_schema_is_refused_and_the_old_one_keeps_serving(demo, service, known_ids):
    _, _, registry, _ = demo
    serving = registry.champion()
    good = str(serving.version)
    broken = _register_copy(registry, serving, feature_schema_hash="0000000000000000")
    _set_alias(registry, broken)
    try:
        deadline = time.monotonic() + SWAP_DEADLINE_SECONDS
        health = service.client.get("/health").json()
        while (health["last_error"] or {}).get("version") != broken and time.monotonic() < deadline:
            time.sleep(POLL_SECONDS)
            health = service.client.get("/health").json()
        assert health["last_error"]["version"] == broken, health
        assert "feature schema 0000000000000000" in health["last_error"]["message"]
        assert health["model_version"] == good and health["status"] == "ok"
        response = predict(service, known_ids[:2])
        assert response.status_code == 200 and response.json()["model_version"] == good
        assert 'fti_service_model_loads_total{result="refused"}' in service.client.get("/metrics").text
    finally:
        _set_alias(registry, good)
