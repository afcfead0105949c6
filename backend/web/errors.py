"""The HTTP face of errors: the exception handlers that render `AppError` (and everything
else) as the one JSON error shape, and the OpenAPI entries that document it."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy.exc import DBAPIError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from backend.core.errors import AppError, DatabaseUnavailable, ErrorBody, is_connectivity_error
from backend.web.responses import FastJSONResponse

log = logging.getLogger("backend.core.errors")


def error_response(
    status: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> FastJSONResponse:
    return FastJSONResponse(body, status_code=status, headers=headers)


def _field_name(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or "body"


async def _app_error(_: Request, exc: Exception) -> FastJSONResponse:
    assert isinstance(exc, AppError)
    return error_response(exc.status, exc.body(), exc.headers)


async def _validation_error(_: Request, exc: Exception) -> FastJSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = []
    for err in exc.errors():
        field = _field_name(tuple(err.get("loc", ())))
        msg = str(err.get("msg", "invalid value"))
        if err.get("type") == "json_invalid":
            field, msg = "body", "Request body is not valid JSON"
        errors.append({"field": field, "message": msg})
    detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors) or "Invalid request"
    return error_response(422, {"detail": detail, "code": "invalid_input", "errors": errors})


_HTTP_CODES = {
    400: "bad_request",
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
}


async def _http_error(_: Request, exc: Exception) -> FastJSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    code = _HTTP_CODES.get(exc.status_code, "error")
    detail = exc.detail if isinstance(exc.detail, str) else "Error"
    return error_response(exc.status_code, {"detail": detail, "code": code}, exc.headers)


async def unexpected_error_response(exc: Exception) -> FastJSONResponse:
    """The answer to an exception nothing else handled: 503 if the database is unreachable, else
    a logged 500. `RequestContextMiddleware` calls this, so the answer still gets our headers."""
    if is_connectivity_error(exc):
        log.warning("database unavailable: %s", type(exc).__name__)
        err: AppError = DatabaseUnavailable()
        return error_response(err.status, err.body(), {"Retry-After": "5"})
    log.exception("unhandled error", exc_info=exc)
    return error_response(500, {"detail": "Internal server error", "code": "internal_error"})


async def _unexpected(_: Request, exc: Exception) -> FastJSONResponse:
    return await unexpected_error_response(exc)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    # Database errors are answered inside the app, so CORS headers reach the client too.
    app.add_exception_handler(DBAPIError, _unexpected)
    app.add_exception_handler(PoolTimeoutError, _unexpected)
    # Starlette answers this one outside every middleware; RequestContextMiddleware gets there
    # first (so the 500 has our headers), this stays for an app mounted without it.
    app.add_exception_handler(Exception, _unexpected)


_DESCRIPTIONS = {
    400: "Malformed request",
    401: "Missing, expired or invalid bearer token",
    403: "Not allowed",
    404: "Not found (or owned by another user)",
    405: "Method not allowed",
    409: "Conflict: something of yours is still running; retry after `Retry-After` seconds",
    413: "Request body too large (over MAX_BODY_BYTES)",
    415: "`Content-Type` must be application/json",
    422: "Invalid input; `errors` names the fields",
    429: "Rate limited; retry after `Retry-After` seconds",
    502: "The AI provider refused this server's configuration: `ai_provider_auth_failed` (its API "
    "key) or `ai_model_not_found` (its model name); retrying will not help",
    503: "Database, auth server or AI service temporarily unavailable",
    504: "The AI service did not answer in time",
}
_SECONDS = {"type": "integer", "minimum": 1}
_HEADERS: dict[int, dict[str, dict[str, Any]]] = {
    401: {
        "WWW-Authenticate": {
            "description": '`Bearer` when no token was sent; `Bearer error="invalid_token"` '
            "when the token was refused (RFC 6750 §3)",
            "required": True,
            "schema": {"type": "string"},
        }
    },
    409: {"Retry-After": {"description": "Seconds to wait", "required": True, "schema": _SECONDS}},
    429: {"Retry-After": {"description": "Seconds to wait", "required": True, "schema": _SECONDS}},
    503: {"Retry-After": {"description": "Seconds to wait, when known", "schema": _SECONDS}},
}


def _error_response(status: int) -> dict[str, Any]:
    doc: dict[str, Any] = {"description": _DESCRIPTIONS.get(status, "Error")}
    if status in _HEADERS:
        doc["headers"] = _HEADERS[status]
    return doc


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses=` entries documenting the error shape (and headers) for the statuses."""
    return {s: {"model": ErrorBody, **_error_response(s)} for s in statuses}


def error_responses_schema(*statuses: int) -> dict[str, dict[str, Any]]:
    """The same entries as finished OpenAPI, for operations FastAPI does not generate (`/mcp`)."""
    body = {"application/json": {"schema": {"$ref": "#/components/schemas/ErrorBody"}}}
    return {str(s): {**_error_response(s), "content": body} for s in statuses}
