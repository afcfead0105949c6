"""ChatKit's `Store` over the service's own tables (thread = conversation, item = message).

A thin adapter: every read and write goes through `chat.repository`, the same functions the
REST conversations API and the turn engine use, so both APIs show the same conversation under
the same rules (unlisted conversations are not listed, an interrupted turn reads the same, an
unknown or foreign thread or cursor is not found). Rows without ChatKit JSON (replies, rows
written by /api/chat) are rebuilt from role and content.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
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
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.chat import repository
from backend.chat.history import count_tokens_async
from backend.chatkit.context import ChatKitContext
from backend.core.errors import BadRequest

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


def thread_uuid(thread_id: str) -> uuid.UUID:
    try:
        return uuid.UUID(thread_id)
    except (ValueError, AttributeError, TypeError):
        raise NotFoundError(f"Thread {thread_id} not found") from None


def item_text(item: Any) -> str:
    content = getattr(item, "content", None)
    if isinstance(content, list):
        return "".join(getattr(part, "text", "") for part in content)
    return content if isinstance(content, str) else ""


def _role(item: ThreadItem) -> str:
    return {"user_message": "user", "assistant_message": "assistant"}.get(item.type, "event")


class PostgresStore(Store[ChatKitContext]):
    def __init__(self, autocommit_engine: AsyncEngine) -> None:
        self.engine = autocommit_engine

    # --- ids: 128 random bits (the default carries only 32) ---
    def generate_thread_id(self, context: ChatKitContext) -> str:
        return str(uuid.uuid4())

    def generate_item_id(
        self, item_type: StoreItemType, thread: ThreadMetadata, context: ChatKitContext
    ) -> str:
        return f"{_PREFIXES.get(item_type, 'itm')}_{uuid.uuid4().hex}"

    # --- threads ---
    async def load_thread(self, thread_id: str, context: ChatKitContext) -> ThreadMetadata:
        try:
            row = await repository.get_conversation(
                self.engine, user_id=context.user.id, conversation_id=thread_uuid(thread_id)
            )
        except repository.ConversationNotFound:
            raise NotFoundError(f"Thread {thread_id} not found") from None
        return ThreadMetadata(id=str(row.id), title=row.title, created_at=row.created_at)

    async def save_thread(self, thread: ThreadMetadata, context: ChatKitContext) -> None:
        created = (
            thread.created_at if thread.created_at.tzinfo else thread.created_at.astimezone(UTC)
        )
        try:
            await repository.save_thread(
                self.engine,
                user_id=context.user.id,
                conversation_id=thread_uuid(thread.id),
                title=thread.title[:200] if thread.title else None,
                created_at=created,
            )
        except repository.ConversationNotFound:
            raise NotFoundError(f"Thread {thread.id} not found") from None

    async def load_threads(
        self, limit: int, after: str | None, order: str, context: ChatKitContext
    ) -> Page[ThreadMetadata]:
        try:
            rows, next_cursor = await repository.list_conversations(
                self.engine,
                user_id=context.user.id,
                limit=limit,
                after=thread_uuid(after) if after else None,
                descending=order != "asc",
            )
        except repository.ConversationNotFound:
            raise NotFoundError(f"Thread {after} not found") from None
        threads = [
            ThreadMetadata(id=str(r.id), title=r.title, created_at=r.created_at) for r in rows
        ]
        return Page(
            data=threads,
            has_more=next_cursor is not None,
            after=str(next_cursor) if next_cursor else None,
        )

    async def delete_thread(self, thread_id: str, context: ChatKitContext) -> None:
        try:
            await repository.delete_conversation(
                self.engine, user_id=context.user.id, conversation_id=thread_uuid(thread_id)
            )
        except repository.ConversationNotFound:
            raise NotFoundError(f"Thread {thread_id} not found") from None

    # --- items ---
    async def add_thread_item(
        self, thread_id: str, item: ThreadItem, context: ChatKitContext
    ) -> None:
        """An upsert: ChatKit may add the same item twice."""
        role = _role(item)
        content = item_text(item) if role != "event" else ""
        try:
            await repository.upsert_message(
                self.engine,
                user_id=context.user.id,
                conversation_id=thread_uuid(thread_id),
                role=role,
                content=content,
                tokens=await count_tokens_async(content) if role != "event" else 0,
                item_id=item.id,
                item=item.model_dump(mode="json"),
            )
        except repository.ConversationNotFound:
            raise NotFoundError(f"Thread {thread_id} not found") from None

    async def save_item(self, thread_id: str, item: ThreadItem, context: ChatKitContext) -> None:
        await self.add_thread_item(thread_id, item, context)

    async def load_item(self, thread_id: str, item_id: str, context: ChatKitContext) -> ThreadItem:
        row = await repository.load_message(
            self.engine,
            user_id=context.user.id,
            conversation_id=thread_uuid(thread_id),
            item_id=item_id,
        )
        if row is None:
            raise NotFoundError(f"Item {item_id} not found")
        return to_item(row, thread_id)

    async def load_thread_items(
        self, thread_id: str, after: str | None, limit: int, order: str, context: ChatKitContext
    ) -> Page[ThreadItem]:
        await self.load_thread(thread_id, context)  # 404 for someone else's thread
        rows, has_more = await repository.list_messages(
            self.engine,
            user_id=context.user.id,
            conversation_id=thread_uuid(thread_id),
            limit=limit,
            after_item=after,
            descending=order == "desc",
        )
        items = [to_item(r, thread_id) for r in rows]
        return Page(
            data=items, has_more=has_more, after=items[-1].id if has_more and items else None
        )

    async def delete_thread_item(
        self, thread_id: str, item_id: str, context: ChatKitContext
    ) -> None:
        await repository.delete_message(
            self.engine,
            user_id=context.user.id,
            conversation_id=thread_uuid(thread_id),
            item_id=item_id,
        )

    # --- attachments: not supported ---
    async def save_attachment(self, attachment: Attachment, context: ChatKitContext) -> None:
        raise AttachmentsNotSupported()

    async def load_attachment(self, attachment_id: str, context: ChatKitContext) -> Attachment:
        raise AttachmentsNotSupported()

    async def delete_attachment(self, attachment_id: str, context: ChatKitContext) -> None:
        raise AttachmentsNotSupported()


def to_item(row: repository.MessageRow, thread_id: str) -> ThreadItem:
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
