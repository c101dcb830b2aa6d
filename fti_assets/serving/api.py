"""The HTTP contract: request and response models, the bearer token, and errors answered as JSON (never a
stack trace)."""

from __future__ import annotations

import hmac
import json
import logging
import uuid
from datetime import datetime
from typing import Annotated, Literal

from fastapi import Depends, FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError

from fti_assets.serving.metrics import endpoint_of

log = logging.getLogger(__name__)

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


class ErrorBody(BaseModel):
    """What an error answers (401, 413, 503): a message, and the reason a client can act on."""

    detail: str
    reason: str = Field(description="unauthorized, too_many_ids, no_champion, online_store_unavailable, ...")


class ValidationErrorItem(BaseModel):
    model_config = ConfigDict(extra="allow")  # pydantic adds `ctx` to some errors

    type: str
    loc: list[str | int] = Field(description="Where in the request: body, then the path into the JSON.")
    msg: str


class ValidationErrorBody(BaseModel):
    """The 422 of a body that is not a valid request: one entry per error, without the input itself."""

    detail: list[ValidationErrorItem]
    reason: Literal["invalid_request"]


class ServiceError(Exception):
    """An error answered as JSON ``{"detail", "reason"}`` with a status code (never a stack trace)."""

    def __init__(self, status: int, reason: str, detail: str, headers: dict | None = None):
        super().__init__(detail)
        self.status, self.reason, self.detail, self.headers = status, reason, detail, headers


def json_response(content: object, status_code: int, headers: dict | None = None) -> Response:
    """JSON with every non-ASCII character escaped: text the client sent (a lone surrogate included) can
    always be answered, where encoding it as UTF-8 would fail."""
    return Response(json.dumps(content), status_code=status_code, headers=headers, media_type="application/json")


def parse_predict(body: bytes, content_type: str | None) -> PredictRequest:
    """The /predict body, parsed and validated in one pass of pydantic's JSON parser (which rejects invalid
    UTF-8, lone surrogates and deep nesting with a reason); RequestValidationError when it is not one."""
    media = (content_type or "application/json").split(";", 1)[0].strip().lower()
    if media != "application/json" and not (media.startswith("application/") and media.endswith("+json")):
        raise RequestValidationError(
            [{"type": "content_type", "loc": ("body",), "msg": f"expected a JSON body, got Content-Type {media}"}]
        )
    try:
        return PredictRequest.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False, include_input=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from exc


def validation_response(exc: RequestValidationError) -> Response:
    """422 with each error's location and message; the input is left out (it may be megabytes, or text that
    cannot be encoded)."""
    errors = [{k: v for k, v in e.items() if k not in ("input", "url")} for e in exc.errors()]
    return json_response({"detail": jsonable_encoder(errors), "reason": "invalid_request"}, status_code=422)


_BEARER = HTTPBearer(auto_error=False, description="FTI_SERVICE_TOKEN, when the service is configured with one.")


def bearer_token_dependency(token: str):
    """A route dependency that answers 401 unless the request carries ``Authorization: Bearer <token>``."""
    expected = token.encode()

    def authorized(credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_BEARER)]) -> None:
        given = credentials.credentials.encode() if credentials is not None else b""
        if not hmac.compare_digest(given, expected):
            raise ServiceError(401, "unauthorized", "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"})

    return Depends(authorized)


def install_error_handlers(app: FastAPI, errors) -> None:
    """Every error answered as JSON with a reason, counted in ``errors`` (by endpoint and reason)."""

    @app.exception_handler(ServiceError)
    async def service_error(request: Request, exc: ServiceError):
        errors.labels(endpoint_of(request.url.path), exc.reason).inc()
        return json_response({"detail": exc.detail, "reason": exc.reason}, status_code=exc.status, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError):
        errors.labels(endpoint_of(request.url.path), "invalid_request").inc()
        return validation_response(exc)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        error_id = uuid.uuid4().hex[:12]
        log.error(f"internal error {error_id} on {request.url.path}", exc_info=exc)
        errors.labels(endpoint_of(request.url.path), "internal").inc()
        return json_response({"detail": f"internal error (id {error_id})", "reason": "internal"}, status_code=500)
