"""The events of a streamed chat turn, as the API documents them (`POST /api/chat/stream`).

Each Server-Sent Event's `data:` line is one JSON object, chosen by `type`: `conversation`
first, then `text.delta`, `tool_call` and `tool_result` as they happen, and last `done` or
`error`. The engine builds them as plain dicts (`turn.TurnEvents`, the task tools'
`tool_call`/`tool_result`, the web layer's `conversation`); these TypedDicts are their shape,
for the OpenAPI schema and for the tests that hold the wire to it. A key marked NotRequired is
absent, never null, when it does not apply.
"""

from __future__ import annotations

import uuid
from typing import Annotated, Any, Literal, NotRequired

from pydantic import Field
from typing_extensions import TypedDict

from backend.chat.schemas import ChatResponse, ToolCall
from backend.core.errors import FieldError


class ConversationEvent(TypedDict):
    """First: the conversation the turn is in (new when the request named none)."""

    type: Literal["conversation"]
    conversation_id: uuid.UUID


class TextDeltaEvent(TypedDict):
    """The next piece of the reply's text; the pieces joined are `done`'s `response`."""

    type: Literal["text.delta"]
    delta: str


class ToolCallEvent(TypedDict):
    """The agent calls a task tool."""

    type: Literal["tool_call"]
    tool: str
    arguments: dict[str, Any]


class ToolResultEvent(TypedDict):
    """A task tool's result (`{"error": ...}` when it failed)."""

    type: Literal["tool_result"]
    tool: str
    result: dict[str, Any]


class DoneEvent(TypedDict):
    """Last, on success: the stored turn, as `POST /api/chat` answers it."""

    type: Literal["done"]
    conversation_id: uuid.UUID
    message_id: int
    response: str
    tool_calls: list[ToolCall]
    interrupted: bool


class ErrorEvent(TypedDict):
    """Last, on failure: what the HTTP error would have been (`status`, `detail`, `code`)."""

    type: Literal["error"]
    status: int
    detail: str
    code: str
    errors: NotRequired[list[FieldError]]
    """The fields at fault, for an invalid input."""
    retry_after: NotRequired[int]
    """Seconds to wait before retrying, when the AI service is rate limited."""
    interrupted: NotRequired[ChatResponse]
    """When the turn failed after its tools took effect: the turn as the conversation now
    records it (the same answer a repeat with the Idempotency-Key gets)."""


ChatStreamEvent = Annotated[
    ConversationEvent | TextDeltaEvent | ToolCallEvent | ToolResultEvent | DoneEvent | ErrorEvent,
    Field(discriminator="type"),
]
"""One streamed chat event, chosen by `type`."""
