"""Conversation rules for the REST API: list (cursor-paginated), read with messages, rename,
delete. Owner only; the SQL is in `chat.repository`, shared with ChatKit's store."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from backend.chat import repository
from backend.core.errors import InvalidInput
from backend.core.text import clean_text


def clean_title(title: Any) -> str:
    if not isinstance(title, str):
        raise InvalidInput("title", "must not be empty")
    return clean_text("title", " ".join(title.split()), 200)


async def list_conversations(
    engine: AsyncEngine, user_id: str, *, limit: int, after: uuid.UUID | None
) -> tuple[list[repository.ConversationRow], uuid.UUID | None]:
    """Newest activity first; `after` is the last id of the previous page."""
    return await repository.list_conversations(engine, user_id=user_id, limit=limit, after=after)


async def get_conversation(
    engine: AsyncEngine,
    user_id: str,
    conversation_id: uuid.UUID,
    *,
    limit: int,
    after: int | None,
    max_bytes: int = repository.MAX_PAGE_BYTES,
) -> tuple[repository.ConversationRow, list[repository.MessageRow], int | None]:
    """The conversation and a page of its messages, oldest first; the next page's cursor."""
    conversation = await repository.get_conversation(
        engine, user_id=user_id, conversation_id=conversation_id
    )
    messages, has_more = await repository.list_messages(
        engine,
        user_id=user_id,
        conversation_id=conversation_id,
        limit=limit,
        after_id=after,
        max_bytes=max_bytes,
    )
    return conversation, messages, (messages[-1].id if has_more else None)


async def rename_conversation(
    engine: AsyncEngine, user_id: str, conversation_id: uuid.UUID, title: Any
) -> repository.ConversationRow:
    return await repository.rename_conversation(
        engine, user_id=user_id, conversation_id=conversation_id, title=clean_title(title)
    )


async def delete_conversation(
    engine: AsyncEngine, user_id: str, conversation_id: uuid.UUID
) -> None:
    await repository.delete_conversation(engine, user_id=user_id, conversation_id=conversation_id)
