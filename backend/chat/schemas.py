"""Request and response bodies of the chat and conversation endpoints."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    message: str = Field(description="The user's message (1 to MAX_MESSAGE_CHARS characters).")
    conversation_id: uuid.UUID | None = Field(
        default=None, description="Continue this conversation; null starts a new one."
    )
    stream: bool = Field(
        default=False,
        description="Answer as Server-Sent Events, the events of `POST /api/chat/stream` "
        "(which streams whatever this says).",
    )


class ToolCall(BaseModel):
    tool: str
    arguments: dict[str, Any]
    result: dict[str, Any]


class ChatResponse(BaseModel):
    conversation_id: uuid.UUID
    message_id: int
    response: str
    tool_calls: list[ToolCall]
    interrupted: bool = Field(
        default=False,
        description="True when the reply was cut off (the tool calls listed took effect).",
    )


class ConversationSummary(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    title: str | None
    created_at: datetime
    updated_at: datetime


class ConversationList(BaseModel):
    conversations: list[ConversationSummary]
    next_cursor: uuid.UUID | None = Field(
        description="Pass as `after` for the next page; null at the end."
    )


class MessageRead(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    role: str
    content: str
    tool_calls: list[ToolCall] | None
    created_at: datetime


class ConversationDetail(ConversationSummary):
    messages: list[MessageRead]
    next_cursor: int | None = Field(description="Pass as `after` for the next page of messages.")


class ConversationUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    title: str
