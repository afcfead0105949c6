"""backend.core.errors and backend.web.errors: the one JSON error shape, its headers, what counts as
"the database is unreachable", and the OpenAPI entries that document it. No app is started: the
handlers are called directly."""

from __future__ import annotations

import logging
from typing import Any

import orjson
import pytest
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import (
    DBAPIError,
    DisconnectionError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    ProgrammingError,
)
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.core import errors
from backend.core.errors import (
    AppError,
    Conflict,
    DatabaseUnavailable,
    ErrorBody,
    InvalidInput,
    MissingToken,
    RateLimited,
    Unauthorized,
    is_connectivity_error,
)
from backend.web import errors as web_errors
from backend.web.errors import error_responses, error_responses_schema


@pytest.mark.parametrize(
    ("cls", "status", "code"),
    [
        (errors.BadRequest, 400, "bad_request"),
        (errors.Unauthorized, 401, "unauthorized"),
        (errors.MissingToken, 401, "unauthorized"),
        (errors.Forbidden, 403, "forbidden"),
        (errors.NotFound, 404, "not_found"),
        (errors.Conflict, 409, "conflict"),
        (errors.PayloadTooLarge, 413, "payload_too_large"),
        (errors.UnsupportedMediaType, 415, "unsupported_media_type"),
        (errors.RateLimited, 429, "rate_limited"),
        (errors.ServiceUnavailable, 503, "service_unavailable"),
        (errors.DatabaseUnavailable, 503, "database_unavailable"),
        (errors.GatewayTimeout, 504, "timeout"),
    ],
)
def test_each_error_answers_its_status_and_code_in_the_one_shape(
    cls: type[AppError], status: int, code: str
) -> None:
    error = cls()
    assert error.status == status
    body = error.body()
    assert body == {"detail": error.detail, "code": code}
    assert body["detail"]  # every class has a default message
    ErrorBody.model_validate(body)
    custom = cls("Something specific")
    assert custom.body() == {"detail": "Something specific", "code": code}
    assert str(custom) == "Something specific"


def test_invalid_input_names_the_field_in_errors() -> None:
    error = InvalidInput("title", "must not be empty")
    assert error.status == 422
    assert error.body() == {
        "detail": "title: must not be empty",
        "code": "invalid_input",
        "errors": [{"field": "title", "message": "must not be empty"}],
    }
    assert ErrorBody.model_validate(error.body()).errors[0].field == "title"  # type: ignore[index]


@pytest.mark.parametrize(
    ("error", "challenge"),
    [
        (Unauthorized(), 'Bearer error="invalid_token"'),
        (Unauthorized("Token expired"), 'Bearer error="invalid_token"'),
        (MissingToken(), "Bearer"),  # RFC 6750 §3.1: no error code without credentials
    ],
)
def test_401s_carry_the_bearer_challenge(error: Unauthorized, challenge: str) -> None:
    assert error.headers == {"WWW-Authenticate": challenge}


def test_missing_token_is_an_unauthorized_with_its_own_message() -> None:
    assert isinstance(MissingToken(), Unauthorized)
    assert MissingToken().detail == "Missing bearer token"
    assert Unauthorized().detail == "Invalid token"


@pytest.mark.parametrize(("retry_after", "header"), [(None, None), (0, None), (1, "1"), (37, "37")])
def test_rate_limited_sends_retry_after_only_when_known(
    retry_after: int | None, header: str | None
) -> None:
    error = RateLimited(retry_after=retry_after)
    assert error.headers.get("Retry-After") == header
    assert error.retry_after == retry_after


@pytest.mark.parametrize(("retry_after", "header"), [(1, "1"), (5, "5"), (0, "1"), (-3, "1")])
def test_a_conflict_always_says_when_to_retry_at_least_one_second(
    retry_after: int, header: str
) -> None:
    assert Conflict(retry_after=retry_after).headers == {"Retry-After": header}


def test_database_unavailable_says_retry_in_five_seconds() -> None:
    assert DatabaseUnavailable().headers == {"Retry-After": "5"}


def test_errors_without_headers_have_none() -> None:
    assert errors.NotFound().headers == {}
    assert InvalidInput("x", "y").headers == {}


def _dbapi(cls: type[DBAPIError], *, invalidated: bool = False) -> DBAPIError:
    return cls("SELECT 1", {}, Exception("driver said no"), connection_invalidated=invalidated)


@pytest.mark.parametrize(
    "exc",
    [
        OSError("network unreachable"),
        ConnectionRefusedError(),
        ConnectionResetError(),
        TimeoutError(),  # an OSError subclass
        PoolTimeoutError("pool exhausted"),
        DisconnectionError("gone"),
        _dbapi(OperationalError),
        _dbapi(InterfaceError),
        _dbapi(DBAPIError, invalidated=True),
        _dbapi(ProgrammingError, invalidated=True),
    ],
    ids=lambda e: type(e).__name__,
)
def test_connectivity_failures_are_recognised(exc: BaseException) -> None:
    assert is_connectivity_error(exc)


@pytest.mark.parametrize(
    "exc",
    [
        _dbapi(IntegrityError),
        _dbapi(ProgrammingError),
        _dbapi(DBAPIError),
        ValueError("bad"),
        RuntimeError("bug"),
        KeyError("k"),
    ],
    ids=lambda e: type(e).__name__,
)
def test_query_errors_and_bugs_are_not_connectivity_failures(exc: BaseException) -> None:
    assert not is_connectivity_error(exc)


# --- backend.web.errors: the handlers, called directly ----------------------------------------


def _json(response: Any) -> Any:
    return orjson.loads(response.body)


async def test_an_app_error_renders_its_status_body_and_headers() -> None:
    response = await web_errors._app_error(None, RateLimited("Slow down", retry_after=9))  # type: ignore[arg-type]
    assert response.status_code == 429
    assert _json(response) == {"detail": "Slow down", "code": "rate_limited"}
    assert response.headers["retry-after"] == "9"
    assert response.headers["content-type"].startswith("application/json")


async def test_validation_errors_name_each_field_without_the_location_prefix() -> None:
    exc = RequestValidationError(
        [
            {"loc": ("body", "title"), "msg": "Field required", "type": "missing"},
            {"loc": ("query", "limit"), "msg": "Input should be ≤ 100", "type": "less_than"},
            {"loc": ("body",), "msg": "Input should be an object", "type": "dict_type"},
        ]
    )
    response = await web_errors._validation_error(None, exc)  # type: ignore[arg-type]
    assert response.status_code == 422
    body = _json(response)
    assert body["code"] == "invalid_input"
    assert body["errors"] == [
        {"field": "title", "message": "Field required"},
        {"field": "limit", "message": "Input should be ≤ 100"},
        {"field": "body", "message": "Input should be an object"},
    ]
    assert body["detail"] == (
        "title: Field required; limit: Input should be ≤ 100; body: Input should be an object"
    )


async def test_invalid_json_is_reported_plainly() -> None:
    exc = RequestValidationError(
        [{"loc": ("body", 12), "msg": "JSON decode error", "type": "json_invalid"}]
    )
    body = _json(await web_errors._validation_error(None, exc))  # type: ignore[arg-type]
    assert body["errors"] == [{"field": "body", "message": "Request body is not valid JSON"}]


@pytest.mark.parametrize(
    ("status", "code"),
    [(404, "not_found"), (405, "method_not_allowed"), (408, "request_timeout"), (418, "error")],
)
async def test_framework_http_errors_get_our_codes(status: int, code: str) -> None:
    exc = StarletteHTTPException(status, detail="Nope", headers={"Allow": "GET"})
    response = await web_errors._http_error(None, exc)  # type: ignore[arg-type]
    assert response.status_code == status
    assert _json(response) == {"detail": "Nope", "code": code}
    assert response.headers["allow"] == "GET"


async def test_an_unreachable_database_is_a_503_with_retry_after() -> None:
    response = await web_errors.unexpected_error_response(ConnectionRefusedError("db down"))
    assert response.status_code == 503
    assert _json(response) == {
        "detail": "Database temporarily unavailable",
        "code": "database_unavailable",
    }
    assert response.headers["retry-after"] == "5"


async def test_a_bug_is_a_500_that_leaks_nothing(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.CRITICAL, logger="backend.core.errors"):
        response = await web_errors.unexpected_error_response(
            RuntimeError("secret password=hunter2 in /srv/app.py")
        )
    assert response.status_code == 500
    assert _json(response) == {"detail": "Internal server error", "code": "internal_error"}
    assert b"hunter2" not in response.body


@pytest.mark.parametrize("status", [401, 404, 409, 422, 429, 503])
def test_error_responses_document_the_body_model_for_each_status(status: int) -> None:
    entry = error_responses(status)[status]
    assert entry["model"] is ErrorBody
    assert entry["description"]


@pytest.mark.parametrize(
    ("status", "header", "required"),
    [(401, "WWW-Authenticate", True), (409, "Retry-After", True), (429, "Retry-After", True)],
)
def test_error_responses_document_required_headers(
    status: int, header: str, required: bool
) -> None:
    headers = error_responses(status)[status]["headers"]
    assert headers[header]["required"] is required


def test_a_503_documents_retry_after_as_optional() -> None:
    header = error_responses(503)[503]["headers"]["Retry-After"]
    assert not header.get("required", False)
    assert header["schema"] == {"type": "integer", "minimum": 1}


def test_statuses_without_headers_document_none_and_unknown_ones_still_get_an_entry() -> None:
    entries = error_responses(404, 422, 418)
    assert set(entries) == {404, 422, 418}
    assert "headers" not in entries[404]
    assert "headers" not in entries[422]
    assert entries[418]["description"] == "Error"


def test_error_responses_schema_is_finished_openapi_with_string_keys() -> None:
    schema = error_responses_schema(401, 415)
    assert set(schema) == {"401", "415"}
    for entry in schema.values():
        assert entry["content"] == {
            "application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}
        }
        assert "model" not in entry
    assert "WWW-Authenticate" in schema["401"]["headers"]
    assert schema["415"]["description"] == error_responses(415)[415]["description"]
