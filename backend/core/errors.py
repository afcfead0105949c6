"""Errors: the exceptions services raise and the one JSON shape clients see.

    AppError                      any expected failure; `status` and `code` pick the response
     ├── BadRequest               400 malformed request the schema cannot express
     ├── Unauthorized             401 expired or invalid token (WWW-Authenticate with error=)
     │    └── MissingToken        401 no credentials at all (WWW-Authenticate: Bearer, no error)
     ├── Forbidden                403 authenticated, but not allowed
     ├── NotFound                 404 unknown, or another user's, object
     ├── Conflict                 409 e.g. a turn already running in this conversation
     ├── PayloadTooLarge          413 body over MAX_BODY_BYTES
     ├── UnsupportedMediaType     415 a body that is not JSON where only JSON is read (/mcp)
     ├── InvalidInput             422 a field breaks a rule (names the field)
     ├── RateLimited              429 with Retry-After
     ├── BadGateway               502 the model provider refused the request: the server's
     │    │                           configuration is wrong, retrying will not help
     │    ├── AIProviderAuthFailed    it refused the API key (LLM_API_KEY / GEMINI_API_KEY)
     │    └── AIModelNotFound         it has no model by the configured name (LLM_MODEL)
     ├── ServiceUnavailable       503 database or model provider unavailable
     └── GatewayTimeout           504 the model did not answer in time

`ProviderError` is not one of them: the model client raises it with what the provider answered
(status, message, code), and `chat.failures` decides which of the above the client sees.

Every error response is `{"detail": str, "code": str}`, plus `"errors": [{"field", "message"}]`
for validation failures. No internal message or stack trace ever reaches a client.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError

log = logging.getLogger(__name__)


class FieldError(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    """The body of every error response."""

    detail: str
    code: str
    errors: list[FieldError] | None = None


class AppError(Exception):
    status = 400
    code = "bad_request"
    detail = "Bad request"

    def __init__(self, detail: str | None = None, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail or self.detail)
        self.detail = detail or self.detail
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return {"detail": self.detail, "code": self.code}


class BadRequest(AppError):
    pass


class Unauthorized(AppError):
    status = 401
    code = "unauthorized"
    detail = "Invalid token"

    challenge = 'Bearer error="invalid_token"'

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"WWW-Authenticate": self.challenge})


class MissingToken(Unauthorized):
    """No credentials at all: RFC 6750 §3.1 leaves the error code out of the challenge."""

    detail = "Missing bearer token"
    challenge = "Bearer"


class Forbidden(AppError):
    status = 403
    code = "forbidden"
    detail = "Forbidden"


class NotFound(AppError):
    status = 404
    code = "not_found"
    detail = "Not found"


class Conflict(AppError):
    status = 409
    code = "conflict"
    detail = "Conflict"

    def __init__(self, detail: str | None = None, *, retry_after: int = 1) -> None:
        # Every conflict here is "something of yours is still running": worth a retry shortly.
        super().__init__(detail, headers={"Retry-After": str(max(1, retry_after))})


class PayloadTooLarge(AppError):
    status = 413
    code = "payload_too_large"
    detail = "Request body too large"


class UnsupportedMediaType(AppError):
    status = 415
    code = "unsupported_media_type"
    detail = "Content-Type must be application/json"


class InvalidInput(AppError):
    status = 422
    code = "invalid_input"

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def body(self) -> dict[str, Any]:
        return {**super().body(), "errors": [{"field": self.field, "message": self.message}]}


class RateLimited(AppError):
    status = 429
    code = "rate_limited"
    detail = "Too many requests"

    def __init__(self, detail: str | None = None, *, retry_after: int | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": str(retry_after)} if retry_after else None)
        self.retry_after = retry_after


class BadGateway(AppError):
    status = 502
    code = "bad_gateway"
    detail = "The AI provider refused the request"


class AIProviderAuthFailed(BadGateway):
    code = "ai_provider_auth_failed"
    detail = (
        "The AI provider refused this server's API key: its operator must check LLM_API_KEY "
        "(or GEMINI_API_KEY)"
    )


class AIModelNotFound(BadGateway):
    code = "ai_model_not_found"
    detail = (
        "The AI provider has no model by the configured name: this server's operator must check "
        "LLM_MODEL (and LLM_BASE_URL)"
    )


class ServiceUnavailable(AppError):
    status = 503
    code = "service_unavailable"
    detail = "Service temporarily unavailable"


class DatabaseUnavailable(ServiceUnavailable):
    code = "database_unavailable"
    detail = "Database temporarily unavailable"

    def __init__(self, detail: str | None = None) -> None:
        super().__init__(detail, headers={"Retry-After": "5"})


class GatewayTimeout(AppError):
    status = 504
    code = "timeout"
    detail = "The AI service did not answer in time"


# --- the model provider's failures, as the model client (backend.agent.chat_model) reports them

MAX_PROVIDER_MESSAGE = 300
_AUTH_REASONS = {"API_KEY_INVALID", "INVALID_API_KEY", "UNAUTHENTICATED"}


class ProviderError(Exception):
    """The model provider failed; `status` is None for connection failures.

    `message` is what the provider said (its error object's `message`, or the start of a body
    that is not one; for a connection failure, what failed), with the API key blanked out and at
    most 300 characters: for the log, never for a client. `reason` is its machine-readable code
    (`invalid_api_key`, `model_not_found`, Gemini's `API_KEY_INVALID`), `model` the model asked.
    """

    def __init__(
        self,
        status: int | None,
        retry_after: str | None = None,
        *,
        message: str | None = None,
        reason: str | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(f"model provider error {status}" + (f": {message}" if message else ""))
        self.status = status
        self.retry_after = retry_after
        self.message = message
        self.reason = reason
        self.model = model

    @property
    def auth_failed(self) -> bool:
        """The provider refused the API key (Gemini says so with a 400 and `API_KEY_INVALID`)."""
        return self.status in (401, 403) or (self.reason or "").upper() in _AUTH_REASONS

    @property
    def model_not_found(self) -> bool:
        return not self.auth_failed and (self.status == 404 or self.reason == "model_not_found")


def provider_error(
    status: int | None,
    body: bytes | Any,
    *,
    retry_after: str | None = None,
    api_key: str | None = None,
    model: str | None = None,
) -> ProviderError:
    """The `ProviderError` for an error answer: `body` is the raw answer or its `error` object."""
    message: str | None = None
    reason: str | None = None
    error: Any = body
    if isinstance(body, bytes):
        try:
            error = orjson.loads(body)
        except orjson.JSONDecodeError:
            error = None
            message = body.decode("utf-8", "replace").strip() or None
    if isinstance(error, list) and error:  # Gemini's OpenAI endpoint: [{"error": {...}}]
        error = error[0]
    if isinstance(error, dict) and isinstance(error.get("error"), dict | str):
        error = error["error"]
    if isinstance(error, str):
        message = error
    elif isinstance(error, dict):
        if isinstance(error.get("message"), str):
            message = error["message"]
        details: Any = error.get("details")
        reasons = (
            [d.get("reason") for d in details if isinstance(d, dict)]
            if isinstance(details, list)
            else []
        )
        reasons += [error.get("code"), error.get("status"), error.get("type")]
        reason = next((r for r in reasons if isinstance(r, str) and r), None)
    if message:
        if api_key and len(api_key) >= 4:
            message = message.replace(api_key, "[API key]")
        message = " ".join(message.split())[:MAX_PROVIDER_MESSAGE]
    return ProviderError(status, retry_after, message=message, reason=reason, model=model)


def is_connectivity_error(exc: BaseException) -> bool:
    """True for failures that mean "the database is not reachable", not "the query is wrong"."""
    if isinstance(exc, (PoolTimeoutError, DisconnectionError, OSError, ConnectionError)):
        return True
    if isinstance(exc, DBAPIError):
        return bool(exc.connection_invalidated) or isinstance(
            exc, (OperationalError, InterfaceError)
        )
    return False
