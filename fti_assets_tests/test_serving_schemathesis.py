"""The service's HTTP contract under generated requests: every answer is one its OpenAPI document declares.

schemathesis generates requests from the service's own /openapi.json, valid and malformed ones, for every
operation; they go over real HTTP to a uvicorn server on 127.0.0.1 (``test_service.RunningService``), and each
answer is checked against the document: status code declared, content type declared, body valid against the
declared schema. Bounded and reproducible: at most MAX_EXAMPLES requests per operation and mode, derandomized
(the same requests on every run, CI included), no shrinking.

Two services: the small demo's champion serving (no 5xx at all), and one with a bearer token and no champion
(its refusals, 401 and 503, declared too). The second found two undeclared answers: 503 from /health and 401
from /metrics.
"""

from __future__ import annotations

import json
import time
from collections import Counter

import jsonschema_rs
import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import positive_data_acceptance

from fti_assets.resources.build import build_resources, resolve_env_vars
from fti_assets_tests.conftest import small_settings
from fti_assets_tests.test_service import RunningService, service_settings

pytestmark = pytest.mark.slow

MAX_EXAMPLES = 40
TOKEN = "schemathesis-token"
PREDICT = "POST /predict"
BOUNDED = settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    derandomize=True,
    database=None,  # nothing written to .hypothesis/, nothing replayed from an earlier run
    phases=[Phase.explicit, Phase.generate],  # no shrinking: a failure reports the first failing request
    suppress_health_check=list(HealthCheck),  # slow generation is fine; the bound is MAX_EXAMPLES
)


@pytest.fixture(scope="module")
def served(e2e, tmp_path_factory):
    """The service on the session's demo (conftest ``e2e``): its champion and Feast online store, no token."""
    settings_, *_ = e2e
    resources = build_resources(settings_)
    feast, registry = resolve_env_vars(resources["feast"]), resolve_env_vars(resources["registry"])
    running = RunningService(service_settings(feast, registry, tmp_path_factory.mktemp("request_log")))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def refusing(tmp_path_factory):
    """The service with a bearer token and an empty MLflow registry: no champion, so nothing to serve."""
    folder = tmp_path_factory.mktemp("no_champion")
    resources = build_resources(small_settings(folder))
    feast, registry = resolve_env_vars(resources["feast"]), resolve_env_vars(resources["registry"])
    running = RunningService(service_settings(feast, registry, folder / "request_log", bearer_token=TOKEN))
    yield running
    running.stop()


def load_schema(service):
    # An explicit default Config: no schemathesis.toml from whatever folder pytest runs in.
    return schemathesis.openapi.from_url(f"{service.url}/openapi.json", config=schemathesis.Config())


def request_body_validator(schema):
    """The documented /predict body schema, as a validator independent of the service's own pydantic model."""
    declared = schema.raw_schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]
    return jsonschema_rs.validator_for(declared["schema"])


def sent_json(response):
    """The body as it went over the wire, parsed; None when it is not JSON at all."""
    body = response.request.body
    try:
        return json.loads(body) if body else None
    except (UnicodeDecodeError, ValueError):
        return None


def bounded(operation, mode, call):
    """A Hypothesis test of ``operation``: ``call(case, mode)`` on each case it generates, under BOUNDED."""

    @BOUNDED
    @given(case=operation.as_strategy(generation_mode=mode))
    def run(case):
        call(case, mode)

    return run


def explore(schema, call) -> set[str]:
    """``call(case)`` on MAX_EXAMPLES generated cases of every operation, valid and malformed; returns the
    operations with nothing to malform (Hypothesis says Unsatisfiable: no parameter, no body, no credential)."""
    nothing_to_malform = set()
    for result in schema.get_all_operations():
        operation = result.ok()
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                bounded(operation, mode, call)()
            except Unsatisfiable:
                assert mode is GenerationMode.NEGATIVE, operation.label
                nothing_to_malform.add(operation.label)
    return nothing_to_malform


def test_generated_requests_get_documented_answers_and_never_a_5xx(served):
    schema = load_schema(served)
    body_schema = request_body_validator(schema)
    max_ids = 1000  # ServiceSettings' default: a valid body with more ids is answered 413
    seen: Counter = Counter()
    session = requests.Session()
    started = time.monotonic()

    def call(case, mode):
        response = case.call(base_url=served.url, session=session, timeout=10)
        label = case.operation.label
        seen[label, mode.value, response.status_code] += 1
        assert response.status_code < 500, (label, response.status_code, response.text[:500])
        # Every built-in check: status code, content type and body as declared, malformed data refused, valid
        # data accepted.
        case.validate_response(response)
        if label == PREDICT:
            # The declared schema is the oracle: what it refuses must get the declared 422, what it accepts a 200.
            body = sent_json(response)
            valid = body is not None and body_schema.is_valid(body)
            expected = 422 if not valid else 413 if len(body["customer_ids"]) > max_ids else 200
            assert response.status_code == expected, (mode.value, response.request.body[:300], response.text[:300])

    with session:
        nothing_to_malform = explore(schema, call)
    elapsed = time.monotonic() - started

    assert nothing_to_malform == {"GET /health", "GET /metrics"}  # neither takes a parameter or a body
    # Enough of each kind reached the service for the checks above to mean something.
    assert seen[PREDICT, "positive", 200] >= MAX_EXAMPLES // 2, seen
    assert seen[PREDICT, "negative", 422] >= MAX_EXAMPLES // 2, seen
    assert seen["GET /health", "positive", 200] and seen["GET /metrics", "positive", 200], seen
    assert elapsed < 60, f"{sum(seen.values())} requests took {elapsed:.1f} s"


def test_with_a_token_and_no_champion_every_refusal_is_documented(refusing):
    """Before: /health answered 503 and /metrics 401, neither declared (schemathesis: Undocumented status code)."""
    schema = load_schema(refusing)
    seen: Counter = Counter()
    session = requests.Session()
    # 503 is this service's declared answer (no champion), and valid bodies cannot be accepted: both checks
    # would fail on purpose. Every other check runs, and a 5xx other than 503 fails below.
    degraded = [not_a_server_error, positive_data_acceptance]

    def call(case, mode):
        label = case.operation.label
        # Each case twice: with the credentials schemathesis generated (wrong, or none), and with the token.
        for credentials in ("generated", "token"):
            headers = {"Authorization": f"Bearer {TOKEN}"} if credentials == "token" else None
            response = case.call(base_url=refusing.url, session=session, headers=headers, timeout=10)
            seen[label, credentials, response.status_code] += 1
            assert response.status_code < 500 or response.status_code == 503, (label, response.text[:500])
            case.validate_response(response, excluded_checks=degraded, headers=headers)
            if label != "GET /health" and credentials == "generated":
                assert response.status_code == 401, (label, case.headers, response.text[:300])
                assert response.headers["www-authenticate"] == ["Bearer"]
            if response.status_code == 503:  # for the documented reason, not any
                field, value = ("reason", "no_champion") if label == PREDICT else ("status", "unavailable")
                assert response.json()[field] == value, response.text[:300]

    with session:
        nothing_to_malform = explore(schema, call)

    assert nothing_to_malform == {"GET /health"}  # /metrics has a credential to malform now
    assert seen[PREDICT, "token", 503] >= MAX_EXAMPLES // 2, seen  # valid bodies: no champion to score them
    assert seen[PREDICT, "token", 422] >= MAX_EXAMPLES // 2, seen  # malformed ones: refused before that
    assert seen[PREDICT, "generated", 401] and seen["GET /metrics", "generated", 401], seen
    assert seen["GET /metrics", "token", 200] and seen["GET /health", "generated", 503], seen
