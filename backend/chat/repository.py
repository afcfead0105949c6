"""The `conversations` and `messages` tables outside a turn: every other read and write of them.

The REST conversations API and the ChatKit store call these functions; none of them writes SQL of
its own. Each function is one statement (one round trip) on the autocommit engine. A turn's own
rows are written by the turn journal (`chat.journal`).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.chat.history import INTERRUPTED_NOTE
from backend.core.errors import NotFound

MAX_PAGE_BYTES = 1_000_000
"""The default of MAX_PAGE_BYTES: a page of messages stops before this many bytes."""
_JSONB_OR_NULL = JSONB(none_as_null=True)  # None is SQL NULL (COALESCE keeps the stored value)


class ConversationNotFound(NotFound):
    code = "conversation_not_found"
    detail = "Conversation not found"


@dataclass(slots=True)
class ConversationRow:
    id: uuid.UUID
    title: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(slots=True)
class MessageRow:
    id: int
    item_id: str
    role: str
    content: str
    tool_calls: list[dict[str, Any]] | None
    item: dict[str, Any] | None
    status: str
    created_at: datetime


# --- conversations ------------------------------------------------------------------------

_CONVERSATION_COLUMNS = "c.id, c.title, c.created_at, c.updated_at"
_GET_CONVERSATION = text(
    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c WHERE c.id = :cid AND c.user_id = :uid"
)
_RENAME = text(
    f"""
    UPDATE conversations c SET title = :title, updated_at = now()
     WHERE c.id = :cid AND c.user_id = :uid
    RETURNING {_CONVERSATION_COLUMNS}
    """
)
_DELETE_CONVERSATION = text(
    "DELETE FROM conversations WHERE id = :cid AND user_id = :uid RETURNING id"
)
_SAVE_THREAD = text(
    """
    INSERT INTO conversations AS c (id, user_id, title, created_at, updated_at)
    VALUES (:cid, :uid, :title, :created_at, now())
    ON CONFLICT (user_id, id) DO UPDATE SET title = EXCLUDED.title, updated_at = now()
    RETURNING id
    """
)
_PURGE_UNLISTED = text(
    """
    DELETE FROM conversations
     WHERE NOT listed AND (active_turn IS NULL OR active_turn_expires_at < now())
       AND updated_at < now() - interval '1 hour'
    """
)


async def one_row(engine: AsyncEngine, statement: Any, params: dict[str, Any]) -> Any:
    """The statement's first row; a user's conversation that is not there is a 404."""
    async with engine.connect() as conn:
        row = (await conn.execute(statement, params)).first()
    if row is None:
        raise ConversationNotFound()
    return row


def _conversation(row: Any) -> ConversationRow:
    return ConversationRow(row.id, row.title, row.created_at, row.updated_at)


async def get_conversation(
    engine: AsyncEngine, *, user_id: str, conversation_id: uuid.UUID
) -> ConversationRow:
    params = {"cid": conversation_id, "uid": user_id}
    return _conversation(await one_row(engine, _GET_CONVERSATION, params))


async def list_conversations(
    engine: AsyncEngine,
    *,
    user_id: str,
    limit: int,
    after: uuid.UUID | None,
    descending: bool = True,
) -> tuple[list[ConversationRow], uuid.UUID | None]:
    """Listed conversations by last activity; `after` is the last id of the previous page.

    An `after` that is not one of the user's conversations is a 404.
    """
    cmp, direction = ("<", "DESC") if descending else (">", "ASC")
    params: dict[str, Any] = {"uid": user_id, "limit": limit + 1}
    cursor = ""
    async with engine.connect() as conn:
        if after is not None:
            if (
                await conn.execute(_GET_CONVERSATION, {"cid": after, "uid": user_id})
            ).first() is None:
                raise ConversationNotFound()
            params["after"] = after
            cursor = (
                f"AND (c.updated_at, c.id) {cmp} "
                "(SELECT updated_at, id FROM conversations WHERE id = :after AND user_id = :uid)"
            )
        query = text(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations c "
            f"WHERE c.user_id = :uid AND c.listed {cursor} "
            f"ORDER BY c.updated_at {direction}, c.id {direction} LIMIT :limit"
        )
        rows = (await conn.execute(query, params)).all()
    page = [_conversation(r) for r in rows[:limit]]
    return page, (page[-1].id if len(rows) > limit else None)


async def rename_conversation(
    engine: AsyncEngine, *, user_id: str, conversation_id: uuid.UUID, title: str | None
) -> ConversationRow:
    params = {"cid": conversation_id, "uid": user_id, "title": title}
    return _conversation(await one_row(engine, _RENAME, params))


async def delete_conversation(
    engine: AsyncEngine, *, user_id: str, conversation_id: uuid.UUID
) -> None:
    await one_row(engine, _DELETE_CONVERSATION, {"cid": conversation_id, "uid": user_id})


async def save_thread(
    engine: AsyncEngine,
    *,
    user_id: str,
    conversation_id: uuid.UUID,
    title: str | None,
    created_at: datetime,
) -> None:
    """Create or retitle the user's conversation (ChatKit's save_thread). Conversation ids are
    per user: another user's conversation with the same id is a different conversation."""
    params = {"cid": conversation_id, "uid": user_id, "title": title, "created_at": created_at}
    await one_row(engine, _SAVE_THREAD, params)


async def purge_unlisted(engine: AsyncEngine) -> None:
    """Conversations whose first turn died before committing anything (hidden; kept an hour)."""
    async with engine.connect() as conn:
        await conn.execute(_PURGE_UNLISTED)


# --- messages -----------------------------------------------------------------------------

# A running reply whose turn no longer holds the claim was cut off by a crash: it reads as
# interrupted (and is written so by the next turn's claim).
_MESSAGE_COLUMNS = """
    m.id, m.item_id, m.role, m.content, m.tool_calls, m.item, m.created_at,
    CASE WHEN m.status = 'running'
              AND NOT (c.active_turn IS NOT DISTINCT FROM m.turn_id
                       AND c.active_turn_expires_at > now())
         THEN 'interrupted' ELSE m.status END AS status
"""

_MESSAGES_FROM = """
      FROM conversations c JOIN messages m ON m.user_id = c.user_id AND m.conversation_id = c.id
     WHERE c.id = :cid AND c.user_id = :uid AND m.status <> 'pending'
"""

_LOAD_ITEM = text(f"SELECT {_MESSAGE_COLUMNS} {_MESSAGES_FROM} AND m.item_id = :item_id")
_DELETE_ITEM = text(
    "DELETE FROM messages WHERE item_id = :item_id AND conversation_id = :cid AND user_id = :uid"
)
_DELETE_AFTER_ITEM = text(
    """
    DELETE FROM messages
     WHERE conversation_id = :cid AND user_id = :uid
       AND id > (SELECT id FROM messages WHERE item_id = :item_id AND conversation_id = :cid
                    AND user_id = :uid AND role = 'user')
    RETURNING item_id
    """
)
_UPSERT_ITEM = text(
    """
    WITH c AS (
        UPDATE conversations SET updated_at = now() WHERE id = :cid AND user_id = :uid
        RETURNING id, user_id
    )
    INSERT INTO messages AS m (conversation_id, user_id, role, content, token_count, item_id,
                               item, created_at)
    SELECT c.id, c.user_id, :role, :content, :tokens, :item_id, :item, now() FROM c
    ON CONFLICT (user_id, item_id) DO UPDATE
       SET role = EXCLUDED.role, content = EXCLUDED.content, item = EXCLUDED.item
     WHERE m.conversation_id = EXCLUDED.conversation_id
    RETURNING id
    """
).bindparams(bindparam("item", type_=JSONB))


def _message(row: Any) -> MessageRow:
    content = row.content
    if row.status == "interrupted" and not content:
        content = INTERRUPTED_NOTE
    return MessageRow(
        row.id, row.item_id, row.role, content, row.tool_calls, row.item, row.status, row.created_at
    )


# The bytes a message takes in the JSON answer, not in storage: a control character is stored
# in one byte and sent as six (`\u0001`), a quote or backslash as two. `to_json` escapes text as
# the JSON encoders do; jsonb's text form is already escaped JSON (with a little more spacing).
_SIZE = "octet_length(to_json(m.content)::text) + COALESCE(octet_length(m.tool_calls::text), 0)"


async def list_messages(
    engine: AsyncEngine,
    *,
    user_id: str,
    conversation_id: uuid.UUID,
    limit: int,
    after_id: int | None = None,
    after_item: str | None = None,
    descending: bool = False,
    max_bytes: int = MAX_PAGE_BYTES,
) -> tuple[list[MessageRow], bool]:
    """Visible messages in order; `after_id` / `after_item` continue a page. (rows, has_more)

    A page holds at most `limit` messages and stops before its text and tool calls, counted
    as JSON-escaped bytes (as sent), pass `max_bytes` (always at least one message), so a page of tool-heavy turns stays small; the
    database sums the sizes and sends only the page's rows. The caller has checked the
    conversation is the user's (an empty page otherwise).
    """
    cmp, direction = ("<", "DESC") if descending else (">", "ASC")
    params: dict[str, Any] = {
        "cid": conversation_id,
        "uid": user_id,
        "limit": limit + 1,
        "max_bytes": max_bytes,
    }
    cursor = ""
    if after_id is not None:
        params["after"] = after_id
        cursor = f"AND m.id {cmp} :after"
    elif after_item is not None:
        params["after_item"] = after_item
        cursor = (
            f"AND m.id {cmp} (SELECT id FROM messages WHERE user_id = :uid "
            "AND item_id = :after_item AND conversation_id = :cid)"
        )
    query = text(
        f"""
        SELECT * FROM (
            SELECT {_MESSAGE_COLUMNS},
                   sum({_SIZE}) OVER (ORDER BY m.id {direction}) - ({_SIZE}) AS before,
                   count(*) OVER () AS fetched
              {_MESSAGES_FROM} {cursor}
             ORDER BY m.id {direction} LIMIT :limit
        ) AS window_ WHERE before < :max_bytes OR before = 0 ORDER BY id {direction}
        """
    )
    async with engine.connect() as conn:
        rows = (await conn.execute(query, params)).all()
    page = [_message(r) for r in rows[:limit]]
    return page, bool(rows) and rows[0].fetched > len(page)


async def load_message(
    engine: AsyncEngine, *, user_id: str, conversation_id: uuid.UUID, item_id: str
) -> MessageRow | None:
    params = {"cid": conversation_id, "uid": user_id, "item_id": item_id}
    async with engine.connect() as conn:
        row = (await conn.execute(_LOAD_ITEM, params)).first()
    return _message(row) if row is not None else None


async def upsert_message(
    engine: AsyncEngine,
    *,
    user_id: str,
    conversation_id: uuid.UUID,
    role: str,
    content: str,
    tokens: int,
    item_id: str,
    item: dict[str, Any],
) -> None:
    """Store a ChatKit item outside a turn (an upsert: ChatKit may add the same item twice)."""
    params = {
        "cid": conversation_id,
        "uid": user_id,
        "role": role,
        "content": content,
        "tokens": tokens,
        "item_id": item_id,
        "item": item,
    }
    await one_row(engine, _UPSERT_ITEM, params)


async def delete_message(
    engine: AsyncEngine, *, user_id: str, conversation_id: uuid.UUID, item_id: str
) -> None:
    params = {"cid": conversation_id, "uid": user_id, "item_id": item_id}
    async with engine.connect() as conn:
        await conn.execute(_DELETE_ITEM, params)


async def delete_after_message(
    engine: AsyncEngine, *, user_id: str, conversation_id: uuid.UUID, item_id: str
) -> list[str]:
    """Remove everything after a user message (a retry answers it again); the removed item ids."""
    params = {"cid": conversation_id, "uid": user_id, "item_id": item_id}
    async with engine.connect() as conn:
        return [r.item_id for r in (await conn.execute(_DELETE_AFTER_ITEM, params)).all()]


def new_item_id() -> str:
    return "msg_" + uuid.uuid4().hex
