"""What a failed turn means: the error a client sees, the note the conversation keeps, and the
answer a repeat of a recorded turn gets. Beside the engine (`chat.turn`), which calls them."""

from __future__ import annotations

from typing import Any

import openai
from agents.exceptions import AgentsException, ModelBehaviorError
from sqlalchemy.exc import SQLAlchemyError

from backend.agent.chat_model import ProviderError
from backend.chat.journal import RecordedTurn
from backend.chat.schemas import ChatResponse, ToolCall
from backend.core.errors import (
    AppError,
    DatabaseUnavailable,
    GatewayTimeout,
    RateLimited,
    ServiceUnavailable,
    is_connectivity_error,
)

AI_UNAVAILABLE = "AI service temporarily unavailable"


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
    for cause in causes:
        if isinstance(cause, ProviderError):
            if cause.status == 429 and cause.retry_after and cause.retry_after.strip().isdigit():
                return RateLimited(
                    "The AI service is rate limited; retry later",
                    retry_after=max(1, int(cause.retry_after)),
                )
            return ServiceUnavailable(AI_UNAVAILABLE)
    if any(
        isinstance(e, (openai.OpenAIError, ModelBehaviorError, AgentsException)) for e in causes
    ):
        return ServiceUnavailable(AI_UNAVAILABLE)
    return None


_REASONS = {
    "timeout": "the AI service did not answer in time",
    "database_unavailable": "the database was unavailable",
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
