"""SQL for the chat turn: claim a conversation, load its history window, store a finished turn.

Each function is one statement (one round trip) on a short-lived connection: nothing here is
held open while the model thinks.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.errors import Conflict, NotFound


@dataclass(slots=True)
class HistoryRow:
    id: int
    role: str
    content: str
    items: list[dict[str, Any]] | None


class ConversationNotFound(NotFound):
    code = "conversation_not_found"
    detail = "Conversation not found"


class TurnInProgress(Conflict):
    code = "turn_in_progress"
    detail = "Another message in this conversation is still being answered; retry when it is done"


# The window: newest HISTORY_MAX_MESSAGES rows by index, then those whose running token sum
# (newest first) fits the budget. Bounded by the LIMIT, whatever the conversation's length.
_WINDOW = """
        SELECT id, role, content, items,
               sum(token_count) OVER (ORDER BY id DESC) AS running
          FROM (SELECT id, role, content, items, token_count
                  FROM messages
                 WHERE conversation_id = {conversation}
                 ORDER BY id DESC
                 LIMIT :max_messages) AS newest
"""

_CLAIM_AND_LOAD = text(
    """
    WITH claimed AS (
        UPDATE conversations
           SET active_turn = :turn, active_turn_expires_at = now() + :lock
         WHERE id = :cid AND user_id = :uid
           AND (active_turn IS NULL OR active_turn_expires_at < now())
        RETURNING id
    )
    SELECT w.id, w.role, w.content, w.items
      FROM claimed
      LEFT JOIN LATERAL ("""
    + _WINDOW.format(conversation="claimed.id")
    + """) AS w ON w.running <= :budget
     ORDER BY w.id
    """
)

_LOAD = text(
    "SELECT id, role, content, items FROM ("
    + _WINDOW.format(conversation=":cid")
    + ") AS w WHERE running <= :budget ORDER BY id"
)

_CREATE = text(
    """
    INSERT INTO conversations (id, user_id, title, created_at, updated_at, active_turn, active_turn_expires_at)
    VALUES (:cid, :uid, :title, now(), now(), :turn, now() + :lock)
    """
)

_EXISTS = text("SELECT 1 FROM conversations WHERE id = :cid AND user_id = :uid")

_STORE = text(
    """
    WITH stored AS (
        INSERT INTO messages (conversation_id, user_id, role, content, tool_calls, items, token_count, created_at)
        VALUES (:cid, :uid, 'user', :user_content, NULL, NULL, :user_tokens, now()),
               (:cid, :uid, 'assistant', :reply, :tool_calls, :items, :reply_tokens, now())
        RETURNING id
    ), touched AS (
        UPDATE conversations
           SET updated_at = now(),
               active_turn = CASE WHEN active_turn = :turn THEN NULL ELSE active_turn END,
               active_turn_expires_at = CASE WHEN active_turn = :turn THEN NULL ELSE active_turn_expires_at END
         WHERE id = :cid AND user_id = :uid
        RETURNING id
    )
    SELECT max(stored.id) FROM stored, touched
    """
).bindparams(bindparam("tool_calls", type_=JSONB), bindparam("items", type_=JSONB))

_RELEASE = text(
    """
    UPDATE conversations SET active_turn = NULL, active_turn_expires_at = NULL
     WHERE id = :cid AND active_turn = :turn
    """
)


async def claim_conversation(
    engine: AsyncEngine,
    *,
    user_id: str,
    conversation_id: uuid.UUID,
    turn: uuid.UUID,
    lock_seconds: float,
    max_messages: int,
    token_budget: int,
) -> list[HistoryRow]:
    """Claim the conversation for this turn and return its history window (oldest first)."""
    params = {
        "cid": conversation_id,
        "uid": user_id,
        "turn": turn,
        "lock": timedelta(seconds=lock_seconds),
        "max_messages": max_messages,
        "budget": token_budget,
    }
    async with engine.begin() as conn:
        rows = (await conn.execute(_CLAIM_AND_LOAD, params)).all()
        if not rows:
            exists = (await conn.execute(_EXISTS, params)).first()
            raise TurnInProgress() if exists else ConversationNotFound()
    return [HistoryRow(r.id, r.role, r.content, r.items) for r in rows if r.id is not None]


async def load_history(
    engine: AsyncEngine, *, conversation_id: uuid.UUID, max_messages: int, token_budget: int
) -> list[HistoryRow]:
    """The history window of a conversation the caller already owns (oldest first)."""
    params = {"cid": conversation_id, "max_messages": max_messages, "budget": token_budget}
    async with engine.connect() as conn:
        rows = (await conn.execute(_LOAD, params)).all()
    return [HistoryRow(r.id, r.role, r.content, r.items) for r in rows]


async def create_conversation(
    engine: AsyncEngine,
    *,
    user_id: str,
    conversation_id: uuid.UUID,
    title: str,
    turn: uuid.UUID,
    lock_seconds: float,
) -> None:
    async with engine.begin() as conn:
        await conn.execute(
            _CREATE,
            {
                "cid": conversation_id,
                "uid": user_id,
                "title": title,
                "turn": turn,
                "lock": timedelta(seconds=lock_seconds),
            },
        )


async def store_turn(
    engine: AsyncEngine,
    *,
    user_id: str,
    conversation_id: uuid.UUID,
    turn: uuid.UUID,
    user_content: str,
    user_tokens: int,
    reply: str,
    reply_tokens: int,
    tool_calls: list[dict[str, Any]],
    items: list[dict[str, Any]],
) -> int:
    """Store the user message and the reply (with its tool calls) atomically; release the claim.

    Returns the reply's message id.
    """
    params = {
        "cid": conversation_id,
        "uid": user_id,
        "turn": turn,
        "user_content": user_content,
        "user_tokens": user_tokens,
        "reply": reply,
        "reply_tokens": reply_tokens,
        "tool_calls": tool_calls,
        "items": items,
    }
    try:
        async with engine.begin() as conn:
            message_id = (await conn.execute(_STORE, params)).scalar_one()
    except IntegrityError:  # the conversation was deleted while the model was thinking
        raise ConversationNotFound() from None
    if message_id is None:
        raise ConversationNotFound()
    return int(message_id)


async def release_conversation(
    engine: AsyncEngine, *, conversation_id: uuid.UUID, turn: uuid.UUID
) -> None:
    async with engine.begin() as conn:
        await conn.execute(_RELEASE, {"cid": conversation_id, "turn": turn})


__all__ = [
    "ConversationNotFound",
    "HistoryRow",
    "TurnInProgress",
    "claim_conversation",
    "create_conversation",
    "load_history",
    "release_conversation",
    "store_turn",
]
