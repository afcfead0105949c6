"""What a failed turn means: the error a client sees, the note the conversation keeps, and the
answer a repeat of a recorded turn gets. Beside the engine (`chat.turn`), which calls them."""

from __future__ import annotations

from typing import Any

import openai
from agents.exceptions import AgentsException, ModelBehaviorError
from sqlalchemy.exc import SQLAlchemyError

from backend.chat.journal import RecordedTurn
from backend.chat.schemas import ChatResponse, ToolCall
from backend.core.errors import (
    AIModelNotFound,
    AIProviderAuthFailed,
    AppError,
    DatabaseUnavailable,
    GatewayTimeout,
    ProviderError,
    RateLimited,
    ServiceUnavailable,
    is_connectivity_error,
)
from backend.core.logging import log_value

AI_UNAVAILABLE = "AI service temporarily unavailable"
AI_RATE_LIMITED = "The AI service is rate limited; retry later"
PROVIDER_RETRY_SECONDS = 10
"""Retry-After of a 503 for the provider's 429 that named no delay."""


def _causes(exc: BaseException) -> list[BaseException]:
    """The exception and what caused it (the SDK wraps errors raised inside tools)."""
    seen: list[BaseException] = []
    current: BaseException | None = exc
    while current is not None and current not in seen and len(seen) < 10:
        seen.append(current)
        implicit = None if current.__suppress_context__ else current.__context__
        current = current.__cause__ or implicit
    return seen


def classify(exc: BaseException) -> AppError | None:
    """What the client sees for a failed turn; None for errors that are not the model's or the
    database's (they propagate as they are)."""
    causes = _causes(exc)
    if any(isinstance(e, SQLAlchemyError) and is_connectivity_error(e) for e in causes):
        return DatabaseUnavailable()
    if isinstance(exc, AppError):
        return exc
    if isinstance(exc, TimeoutError):
        return GatewayTimeout()
    provider = _provider_error(causes)
    if provider is not None:
        return _provider_fault(provider)
    if any(
        isinstance(e, (openai.OpenAIError, ModelBehaviorError, AgentsException)) for e in causes
    ):
        return ServiceUnavailable(AI_UNAVAILABLE)
    return None


def _provider_error(causes: list[BaseException]) -> ProviderError | None:
    return next((e for e in causes if isinstance(e, ProviderError)), None)


def _provider_fault(error: ProviderError) -> AppError:
    """The provider's answer decides: its configuration refused (502, retrying will not help),
    rate limited (429, or 503 when it named no delay), or down (503)."""
    said = f" (the provider answered HTTP {error.status})" if error.status else ""
    if error.auth_failed:
        return AIProviderAuthFailed(AIProviderAuthFailed.detail + said)
    if error.model_not_found:
        return AIModelNotFound(AIModelNotFound.detail + said)
    if error.status == 429:
        if error.retry_after and error.retry_after.strip().isdigit():
            return RateLimited(AI_RATE_LIMITED, retry_after=max(1, int(error.retry_after)))
        return ServiceUnavailable(
            AI_RATE_LIMITED, headers={"Retry-After": str(PROVIDER_RETRY_SECONDS)}
        )
    return ServiceUnavailable(AI_UNAVAILABLE)


def failure_fields(exc: BaseException) -> str:
    """The log fields of a failed turn: what was raised, the error the client got, and when the
    model provider failed, its status, code and message (quoted: it is the provider's text)."""
    error = classify(exc)
    fields = [f"error={type(exc).__name__}", f"code={error.code if error else 'internal_error'}"]
    provider = _provider_error(_causes(exc))
    if provider is not None:
        fields.append(f"provider_status={provider.status or 'none'}")
        if provider.reason:
            fields.append(f"provider_code={log_value(provider.reason)}")
        if provider.model:
            fields.append(f"model={log_value(provider.model)}")
        fields.append(f"provider_message={log_value(provider.message or '')}")
    return " ".join(fields)


_REASONS = {
    "timeout": "the AI service did not answer in time",
    "database_unavailable": "the database was unavailable",
    "ai_provider_auth_failed": "the AI provider refused this server's API key",
    "ai_model_not_found": "the AI provider does not know the configured model",
    "stopped": "stopped",
}


def note(reason: str) -> str:
    text = _REASONS.get(reason, "the AI service failed")
    return f"(My reply was interrupted: {text}. The task changes listed above were made.)"


def recorded_body(recorded: RecordedTurn) -> dict[str, Any]:
    """The answer a repeat of an interrupted (or finished) turn gets: the turn as recorded."""
    return ChatResponse(
        conversation_id=recorded.conversation_id,
        message_id=recorded.message_id,
        response=recorded.reply,
        tool_calls=[ToolCall.model_validate(c) for c in recorded.tool_calls],
        interrupted=recorded.interrupted,
    ).model_dump(mode="json")
