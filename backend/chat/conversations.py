"""Conversation rules: list (cursor-paginated), read with messages, rename, delete. Owner only."""

from __future__ import annotations

import uuid
from typing import Any

from sqlalchemy import Text, and_, cast, delete, func, or_, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from backend.chat.models import Conversation, Message
from backend.chat.repository import ConversationNotFound
from backend.errors import InvalidInput
from backend.textrules import clean_text
from backend.timeutil import utcnow

C: Any = Conversation
M: Any = Message


def clean_title(title: Any) -> str:
    if not isinstance(title, str):
        raise InvalidInput("title", "must not be empty")
    return clean_text("title", " ".join(title.split()), 200)


async def get_conversation(
    session: AsyncSession, user_id: str, conversation_id: uuid.UUID
) -> Conversation:
    result = await session.execute(select(C).where(C.id == conversation_id, C.user_id == user_id))
    conversation = result.scalar_one_or_none()
    if conversation is None:
        raise ConversationNotFound()
    return conversation


async def list_conversations(
    session: AsyncSession, user_id: str, *, limit: int, after: uuid.UUID | None
) -> tuple[list[Conversation], uuid.UUID | None]:
    """Newest activity first; `after` is the last id of the previous page."""
    query = select(C).where(C.user_id == user_id)
    if after is not None:
        cursor = await get_conversation(session, user_id, after)
        query = query.where(
            or_(
                C.updated_at < cursor.updated_at,
                and_(C.updated_at == cursor.updated_at, C.id < cursor.id),
            )
        )
    rows = list(
        (
            await session.execute(query.order_by(C.updated_at.desc(), C.id.desc()).limit(limit + 1))
        ).scalars()
    )
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return rows[:limit], next_cursor


MAX_PAGE_BYTES = 1_000_000
"""The default of MAX_PAGE_BYTES (used when a session carries no limit)."""


async def list_messages(
    session: AsyncSession, conversation_id: uuid.UUID, *, limit: int, after: int | None
) -> tuple[list[Message], int | None]:
    """Oldest first; `after` is the last message id of the previous page.

    A page holds at most `limit` messages and stops once their text and tool calls reach
    MAX_PAGE_BYTES (always at least one message), so a page of tool-heavy turns stays small.
    The running size is summed by the database, which sends only the rows of the page.
    """
    max_bytes = int(session.info.get("max_page_bytes", MAX_PAGE_BYTES))
    size = func.octet_length(M.content) + func.coalesce(
        func.octet_length(cast(M.tool_calls, Text)), 0
    )
    window = select(
        M.id.label("id"),
        (func.sum(size).over(order_by=M.id) - size).label("before"),
        func.lead(M.id).over(order_by=M.id).label("next_id"),
    ).where(M.conversation_id == conversation_id)
    if after is not None:
        window = window.where(M.id > after)
    page = window.order_by(M.id).limit(limit).subquery()
    query = (
        select(M, page.c.next_id)
        .join(page, M.id == page.c.id)
        .where(page.c.before < max_bytes)
        .order_by(M.id)
    )
    rows = (await session.execute(query)).all()
    messages = [row[0] for row in rows]
    next_cursor = messages[-1].id if rows and rows[-1][1] is not None else None
    return messages, next_cursor


async def rename_conversation(
    session: AsyncSession, user_id: str, conversation_id: uuid.UUID, title: Any
) -> Conversation:
    result = await session.execute(
        update(C)
        .where(C.id == conversation_id, C.user_id == user_id)
        .values(title=clean_title(title), updated_at=utcnow())
        .returning(C)
        .execution_options(synchronize_session=False)
    )
    conversation = result.scalar_one_or_none()
    if conversation is None:
        raise ConversationNotFound()
    return conversation


async def delete_conversation(
    session: AsyncSession, user_id: str, conversation_id: uuid.UUID
) -> None:
    result = await session.execute(
        delete(C).where(C.id == conversation_id, C.user_id == user_id).returning(C.id)
    )
    if result.scalar_one_or_none() is None:
        raise ConversationNotFound()
