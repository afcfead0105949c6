"""The ChatKit server: runs the shared agent for a thread, streaming through ChatKit's converter.

History comes from our own loader (the same token-budgeted window as /api/chat, with assistant
content as plain strings, which avoids the SDK's second-turn `output_text` failure on the Chat
Completions path). Each tool call shows as a progress update. The reply's tool calls are kept on
its message row so a later /api/chat turn sees them. Models reuse item ids (Chat Completions
models give every assistant item "__fake_id__"); each assistant message gets an id of ours, so
replies never overwrite each other.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

from agents import Runner
from chatkit.agents import AgentContext, stream_agent_response
from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    ProgressUpdateEvent,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemReplacedEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)

from backend.agent.context import TurnContext
from backend.chat import repository
from backend.chat.history import title_from, to_input_items
from backend.chat.turn import AI_UNAVAILABLE, ChatRuntime, new_items_as_input, provider_error
from backend.chatkit.store import ChatKitContext, PostgresStore, item_text

log = logging.getLogger(__name__)

_PROGRESS = {
    "add_task": "Adding a task…",
    "list_tasks": "Looking at your tasks…",
    "complete_task": "Completing a task…",
    "update_task": "Updating a task…",
    "delete_task": "Deleting a task…",
}


class TaskChatKitServer(ChatKitServer[ChatKitContext]):
    def __init__(self, store: PostgresStore, runtime: ChatRuntime) -> None:
        super().__init__(store)
        self.pg_store = store
        self.runtime = runtime

    async def respond(
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: ChatKitContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        rt = self.runtime
        settings = rt.settings
        if input_user_message is not None and not thread.title:
            thread.title = title_from(item_text(input_user_message)) or None  # ChatKit saves it
        rows = await repository.load_history(
            rt.engine,
            conversation_id=uuid.UUID(thread.id),
            max_messages=settings.history_max_messages,
            token_budget=settings.history_token_budget,
        )
        agent_context = AgentContext(thread=thread, store=self.store, request_context=context)

        async def on_tool(event: dict[str, Any]) -> None:
            if event["type"] == "tool_call":
                await agent_context.stream(
                    ProgressUpdateEvent(icon="check-circle", text=_PROGRESS[event["tool"]])
                )

        turn = TurnContext(
            user_id=context.user.id, sessions=rt.sessions, token=context.user.token, events=on_tool
        )
        result = Runner.run_streamed(
            rt.agent_for_run(),
            cast(Any, to_input_items(rows)),
            context=turn,
            max_turns=settings.agent_max_turns,
        )
        real_ids: dict[str, str] = {}
        reply_id: str | None = None
        try:
            async with asyncio.timeout(settings.chat_timeout_seconds):
                async for event in stream_agent_response(agent_context, result):
                    event = self._with_real_ids(event, real_ids, thread, context)
                    if isinstance(event, ThreadItemDoneEvent) and isinstance(
                        event.item, AssistantMessageItem
                    ):
                        reply_id = event.item.id
                    yield event
        except Exception as exc:
            result.cancel()
            log.warning(
                "chatkit turn failed: user=%s thread=%s error=%s",
                context.user.id,
                thread.id,
                type(exc).__name__,
            )
            if turn.tool_calls:  # keep what the tools did, like /api/chat does
                note = AssistantMessageItem(
                    id=self.store.generate_item_id("message", thread, context),
                    thread_id=thread.id,
                    created_at=datetime.now(UTC),
                    content=[
                        AssistantMessageContent(
                            text="(My reply was interrupted. The task changes above were made.)"
                        )
                    ],
                )
                yield ThreadItemDoneEvent(item=note)
                await self.pg_store.attach_tool_calls(
                    thread.id, note.id, turn.tool_calls, [], context
                )
            error = provider_error(exc)
            raise CustomStreamError(
                error.detail if error.detail else AI_UNAVAILABLE, allow_retry=True
            ) from None
        if reply_id is not None and turn.tool_calls:
            await self.pg_store.attach_tool_calls(
                thread.id, reply_id, turn.tool_calls, new_items_as_input(result.new_items), context
            )

    def _with_real_ids(
        self,
        event: ThreadStreamEvent,
        real_ids: dict[str, str],
        thread: ThreadMetadata,
        context: ChatKitContext,
    ) -> ThreadStreamEvent:
        """Give every assistant message an id of ours: models reuse ids ("__fake_id__", ...)."""
        if isinstance(event, (ThreadItemAddedEvent, ThreadItemDoneEvent, ThreadItemReplacedEvent)):
            item = event.item
            if isinstance(item, AssistantMessageItem):
                model_id = item.id
                if model_id not in real_ids:
                    real_ids[model_id] = self.store.generate_item_id("message", thread, context)
                item.id = real_ids[model_id]
                if isinstance(event, ThreadItemDoneEvent):
                    del real_ids[model_id]  # a later message reusing the id is a new message
        elif isinstance(event, ThreadItemUpdatedEvent) and event.item_id in real_ids:
            event.item_id = real_ids[event.item_id]
        return event
