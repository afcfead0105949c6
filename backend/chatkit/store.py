"""A PostgreSQL ChatKit `Store` over the service's own tables: thread = conversation, item = message.

Every method is scoped to the request's user; another user's thread or item is reported as not
found. Rows written by /api/chat have no ChatKit JSON and are rebuilt from role and content, so
one conversation shows the same in both APIs. Items that are not messages (workflows, widgets,
hidden context) are rows with role "event" and no text, which the chat history skips. Items are
ordered by the message's identity column (monotonic), never by time.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from chatkit.store import NotFoundError, Store, StoreItemType
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    Attachment,
    InferenceOptions,
    Page,
    ThreadItem,
    ThreadMetadata,
    UserMessageItem,
    UserMessageTextContent,
)
from pydantic import TypeAdapter
from sqlalchemy import Uuid, bindparam, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.chat.history import count_tokens
from backend.chatkit.context import ChatKitContext
from backend.errors import BadRequest

_ITEM = TypeAdapter[ThreadItem](ThreadItem)
_PREFIXES = {
    "thread": "thr",
    "message": "msg",
    "tool_call": "tc",
    "workflow": "wf",
    "task": "tsk",
    "attachment": "atc",
    "sdk_hidden_context": "shcx",
}


class AttachmentsNotSupported(BadRequest):
    code = "attachments_not_supported"
    detail = "Attachments are not supported"


def _thread_uuid(thread_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(thread_id)
    except (ValueError, AttributeError, TypeError):
        raise NotFoundError(f"Thread {thread_id} not found") from None


def item_text(item: ThreadItem) -> str:
    content = getattr(item, "content", None)
    if isinstance(content, list):
        return "".join(getattr(part, "text", "") for part in content)
    return content if isinstance(content, str) else ""


def _role(item: ThreadItem) -> str:
    return {"user_message": "user", "assistant_message": "assistant"}.get(item.type, "event")


_THREAD = text("SELECT id, title, created_at FROM conversations WHERE id = :cid AND user_id = :uid")
_JSONB_OR_NULL = JSONB(none_as_null=True)  # None is SQL NULL (COALESCE keeps the stored value)

# A new thread is created already claimed by the turn that creates it (like /api/chat does), so
# no other turn can slip in between `thread.created` and the reply.
_SAVE_THREAD = text(
    """
    INSERT INTO conversations AS c (id, user_id, title, created_at, updated_at, active_turn, active_turn_expires_at)
    VALUES (:cid, :uid, :title, :created_at, now(), :turn,
            CASE WHEN CAST(:turn AS uuid) IS NULL THEN NULL ELSE now() + :lock END)
    ON CONFLICT (id) DO UPDATE SET title = EXCLUDED.title, updated_at = now()
     WHERE c.user_id = EXCLUDED.user_id
    RETURNING id, (xmax = 0) AS inserted
    """
).bindparams(bindparam("turn", type_=Uuid))
_UPSERT_ITEM = text(
    """
    WITH c AS (
        UPDATE conversations SET updated_at = now() WHERE id = :cid AND user_id = :uid RETURNING id, user_id
    )
    INSERT INTO messages AS m (conversation_id, user_id, role, content, tool_calls, items, token_count, item_id, item, created_at)
    SELECT c.id, c.user_id, :role, :content, :tool_calls, :items, :tokens, :item_id, :item, now() FROM c
    ON CONFLICT (item_id) DO UPDATE
       SET role = EXCLUDED.role, content = EXCLUDED.content, item = EXCLUDED.item,
           tool_calls = COALESCE(EXCLUDED.tool_calls, m.tool_calls),
           items = COALESCE(EXCLUDED.items, m.items),
           token_count = CASE WHEN EXCLUDED.items IS NULL AND m.items IS NOT NULL
                              THEN m.token_count ELSE EXCLUDED.token_count END
     WHERE m.conversation_id = EXCLUDED.conversation_id AND m.user_id = EXCLUDED.user_id
    RETURNING id
    """
).bindparams(
    bindparam("item", type_=JSONB),
    bindparam("tool_calls", type_=_JSONB_OR_NULL),
    bindparam("items", type_=_JSONB_OR_NULL),
)
_ITEM_COLUMNS = "m.id, m.item_id, m.role, m.content, m.item, m.created_at"
_LOAD_ITEM = text(
    f"SELECT {_ITEM_COLUMNS} FROM messages m WHERE m.item_id = :item_id "
    "AND m.conversation_id = :cid AND m.user_id = :uid"
)
_DELETE_THREAD = text("DELETE FROM conversations WHERE id = :cid AND user_id = :uid RETURNING id")
_DELETE_ITEM = text(
    "DELETE FROM messages WHERE item_id = :item_id AND conversation_id = :cid AND user_id = :uid"
)
_ATTACH_TOOL_CALLS = text(
    "UPDATE messages SET tool_calls = :tool_calls, items = :items, token_count = token_count + :extra "
    "WHERE item_id = :item_id AND conversation_id = :cid AND user_id = :uid"
).bindparams(bindparam("tool_calls", type_=JSONB), bindparam("items", type_=JSONB))


class PostgresStore(Store[ChatKitContext]):
    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # --- ids: 128 random bits (the default carries only 32) ---
    def generate_thread_id(self, context: ChatKitContext) -> str:
        return str(uuid.uuid4())

    def generate_item_id(
        self, item_type: StoreItemType, thread: ThreadMetadata, context: ChatKitContext
    ) -> str:
        return f"{_PREFIXES.get(item_type, 'itm')}_{uuid.uuid4().hex}"

    # --- threads ---
    async def load_thread(self, thread_id: str, context: ChatKitContext) -> ThreadMetadata:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    _THREAD, {"cid": _thread_uuid(thread_id), "uid": context.user.id}
                )
            ).first()
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")
        return ThreadMetadata(id=str(row.id), title=row.title, created_at=row.created_at)

    async def save_thread(self, thread: ThreadMetadata, context: ChatKitContext) -> None:
        created = (
            thread.created_at if thread.created_at.tzinfo else thread.created_at.astimezone(UTC)
        )
        title = thread.title[:200] if thread.title else None
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    _SAVE_THREAD,
                    {
                        "cid": _thread_uuid(thread.id),
                        "uid": context.user.id,
                        "title": title,
                        "created_at": created,
                        "turn": context.turn,
                        "lock": timedelta(seconds=context.lock_seconds),
                    },
                )
            ).first()
        if row is None:
            raise NotFoundError(f"Thread {thread.id} not found")
        if row.inserted and context.turn is not None:
            context.claimed = row.id

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: ChatKitContext
    ) -> Page[ThreadMetadata]:
        desc = order != "asc"
        cmp, direction = ("<", "DESC") if desc else (">", "ASC")
        params: dict[str, Any] = {"uid": context.user.id, "limit": limit + 1}
        cursor = ""
        if after:
            params["after"] = _thread_uuid(after)
            cursor = (
                f"AND (c.updated_at, c.id) {cmp} "
                "(SELECT updated_at, id FROM conversations WHERE id = :after AND user_id = :uid)"
            )
        query = text(
            f"SELECT c.id, c.title, c.created_at FROM conversations c WHERE c.user_id = :uid {cursor} "
            f"ORDER BY c.updated_at {direction}, c.id {direction} LIMIT :limit"
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query, params)).all()
        threads = [
            ThreadMetadata(id=str(r.id), title=r.title, created_at=r.created_at)
            for r in rows[:limit]
        ]
        has_more = len(rows) > limit
        return Page(
            data=threads, has_more=has_more, after=threads[-1].id if has_more and threads else None
        )

    async def delete_thread(self, thread_id: str, context: ChatKitContext) -> None:
        async with self.engine.begin() as conn:
            row = (
                await conn.execute(
                    _DELETE_THREAD,
                    {"cid": _thread_uuid(thread_id), "uid": context.user.id},
                )
            ).first()
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")

    # --- items ---
    async def add_thread_item(
        self, thread_id: str, item: ThreadItem, context: ChatKitContext
    ) -> None:
        """An upsert: ChatKit may add the same item twice."""
        await self.add_reply(thread_id, item, context)

    async def add_reply(
        self,
        thread_id: str,
        item: ThreadItem,
        context: ChatKitContext,
        tool_calls: list[dict[str, Any]] | None = None,
        items: list[dict[str, Any]] | None = None,
    ) -> None:
        """Upsert an item; for a reply, with its turn's tool calls and model items in the same row."""
        role = _role(item)
        content = item_text(item) if role != "event" else ""
        params = {
            "cid": _thread_uuid(thread_id),
            "uid": context.user.id,
            "role": role,
            "content": content,
            "tool_calls": tool_calls,
            "items": items,
            "tokens": count_tokens(content, items) if role != "event" else 0,
            "item_id": item.id,
            "item": item.model_dump(mode="json"),
        }
        async with self.engine.begin() as conn:
            row = (await conn.execute(_UPSERT_ITEM, params)).first()
        if row is None:
            raise NotFoundError(f"Thread {thread_id} not found")

    async def save_item(self, thread_id: str, item: ThreadItem, context: ChatKitContext) -> None:
        await self.add_thread_item(thread_id, item, context)

    async def load_item(self, thread_id: str, item_id: str, context: ChatKitContext) -> ThreadItem:
        async with self.engine.connect() as conn:
            row = (
                await conn.execute(
                    _LOAD_ITEM,
                    {"item_id": item_id, "cid": _thread_uuid(thread_id), "uid": context.user.id},
                )
            ).first()
        if row is None:
            raise NotFoundError(f"Item {item_id} not found")
        return _to_item(row, thread_id)

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: ChatKitContext
    ) -> Page[ThreadItem]:
        await self.load_thread(thread_id, context)  # 404 for someone else's thread
        desc = order == "desc"
        cmp, direction = ("<", "DESC") if desc else (">", "ASC")
        params: dict[str, Any] = {
            "cid": _thread_uuid(thread_id),
            "uid": context.user.id,
            "limit": limit + 1,
        }
        cursor = ""
        if after:
            params["after"] = after
            cursor = f"AND m.id {cmp} (SELECT id FROM messages WHERE item_id = :after AND conversation_id = :cid)"
        query = text(
            f"SELECT {_ITEM_COLUMNS} FROM messages m WHERE m.conversation_id = :cid AND m.user_id = :uid "
            f"{cursor} ORDER BY m.id {direction} LIMIT :limit"
        )
        async with self.engine.connect() as conn:
            rows = (await conn.execute(query, params)).all()
        items = [_to_item(r, thread_id) for r in rows[:limit]]
        has_more = len(rows) > limit
        return Page(
            data=items, has_more=has_more, after=items[-1].id if has_more and items else None
        )

    async def delete_thread_item(
        self, thread_id: str, item_id: str, context: ChatKitContext
    ) -> None:
        async with self.engine.begin() as conn:
            await conn.execute(
                _DELETE_ITEM,
                {"item_id": item_id, "cid": _thread_uuid(thread_id), "uid": context.user.id},
            )

    async def attach_tool_calls(
        self,
        thread_id: str,
        item_id: str,
        tool_calls: list[dict[str, Any]],
        items: list[dict[str, Any]],
        context: ChatKitContext,
    ) -> None:
        """Give a ChatKit reply its turn's tool calls, as /api/chat stores them (for later history)."""
        async with self.engine.begin() as conn:
            await conn.execute(
                _ATTACH_TOOL_CALLS,
                {
                    "tool_calls": tool_calls,
                    "items": items,
                    "extra": count_tokens("", items),
                    "item_id": item_id,
                    "cid": _thread_uuid(thread_id),
                    "uid": context.user.id,
                },
            )

    # --- attachments: not supported ---
    async def save_attachment(self, attachment: Attachment, context: ChatKitContext) -> None:
        raise AttachmentsNotSupported()

    async def load_attachment(self, attachment_id: str, context: ChatKitContext) -> Attachment:
        raise AttachmentsNotSupported()

    async def delete_attachment(self, attachment_id: str, context: ChatKitContext) -> None:
        raise AttachmentsNotSupported()


def _to_item(row: Any, thread_id: str) -> ThreadItem:
    created = row.created_at if isinstance(row.created_at, datetime) else datetime.now(UTC)
    if row.item is not None:
        data = dict(row.item)
        data.update(id=row.item_id, thread_id=thread_id)
        return _ITEM.validate_python(data)
    if row.role == "user":
        return UserMessageItem(
            id=row.item_id,
            thread_id=thread_id,
            created_at=created,
            content=[UserMessageTextContent(text=row.content)],
            inference_options=InferenceOptions(),
        )
    return AssistantMessageItem(
        id=row.item_id,
        thread_id=thread_id,
        created_at=created,
        content=[AssistantMessageContent(text=row.content)],
    )
