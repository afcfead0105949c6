"""The ChatKit server: runs the shared agent for a thread, streaming through ChatKit's converter.

History comes from our own loader (the same token-budgeted window as /api/chat, with assistant
content as plain strings, which avoids the SDK's second-turn `output_text` failure on the Chat
Completions path). Each tool call shows as a progress update, and each reply row keeps the tool
calls that led to it (`tool_calls` and `items`, as /api/chat stores them), so a later /api/chat
turn sees them. Models reuse item ids (Chat Completions models give every assistant item
"__fake_id__"); each assistant message gets an id of ours, so replies never overwrite each other.

What a turn leaves behind when it does not finish (the same rules as /api/chat):
- it fails before any tool ran: nothing; the user message is removed again (`thread.item.removed`)
  unless it was stored by an earlier request (threads.retry_after_item);
- it fails, or the client stops the stream, after tools changed tasks: the user message and a
  note carrying the tool calls, so the history matches the task list.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any, cast

from agents import MaxTurnsExceeded, Runner
from chatkit.agents import AgentContext, stream_agent_response
from chatkit.errors import CustomStreamError
from chatkit.server import ChatKitServer
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageItem,
    ProgressUpdateEvent,
    ThreadItem,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    ThreadItemReplacedEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadStreamEvent,
    UserMessageItem,
)

from backend.agent.context import TurnContext
from backend.chat import repository
from backend.chat.history import title_from, to_input_items
from backend.chat.turn import (
    MAX_TURNS_REPLY,
    ChatRuntime,
    new_items_as_input,
    provider_error,
    synthetic_items,
)
from backend.chatkit.context import AgentRun, ChatKitContext
from backend.chatkit.store import PostgresStore, item_text

log = logging.getLogger(__name__)

_PROGRESS = {
    "add_task": "Adding a task…",
    "list_tasks": "Looking at your tasks…",
    "complete_task": "Completing a task…",
    "update_task": "Updating a task…",
    "delete_task": "Deleting a task…",
}
INTERRUPTED_NOTE = "(My reply was interrupted. The task changes above were made.)"
STOPPED_NOTE = "(Stopped. The task changes above were made.)"
DONE_NOTE = "(The task changes above were made.)"
NOT_SAVED = " Your message was not saved; please send it again."


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
                text = _PROGRESS.get(event["tool"], "Working on your tasks…")
                await agent_context.stream(ProgressUpdateEvent(icon="check-circle", text=text))

        turn = TurnContext(
            user_id=context.user.id, sessions=rt.sessions, token=context.user.token, events=on_tool
        )
        result = Runner.run_streamed(
            rt.agent_for_run(),
            cast(Any, to_input_items(rows)),
            context=turn,
            max_turns=settings.agent_max_turns,
        )
        context.run = run = AgentRun(turn=turn, result=result)
        # A watchdog rather than asyncio.timeout: this generator yields to ChatKit between events,
        # and a timeout firing there would be taken for the client stopping the stream.
        timed_out = False

        def expire() -> None:
            nonlocal timed_out
            if not result.is_complete:  # a finished run may still be draining its last events
                timed_out = True
                result.cancel()

        timer = asyncio.get_running_loop().call_later(settings.chat_timeout_seconds, expire)
        pending: dict[str, str] = {}  # the model's id -> ours, for messages still streaming
        replies: list[str] = []
        failure: BaseException | None = None
        try:
            async for event in stream_agent_response(agent_context, result):
                event = self._with_real_ids(event, pending, thread, context)
                if isinstance(event, ThreadItemDoneEvent) and isinstance(
                    event.item, AssistantMessageItem
                ):
                    replies.append(event.item.id)
                yield event
            if timed_out:
                failure = TimeoutError()
        except MaxTurnsExceeded as exc:
            for item_id in pending.values():
                yield ThreadItemRemovedEvent(item_id=item_id)
            done = new_items_as_input(exc.run_data.new_items) if exc.run_data else []
            calls = [i for i in done if i.get("type") in ("function_call", "function_call_output")]
            yield await self._add_note(thread, MAX_TURNS_REPLY, turn.tool_calls, calls, context)
            run.stored = True
            return
        except Exception as exc:
            failure = exc
        finally:
            timer.cancel()
        if failure is None:
            note = await self._keep_tool_calls(thread, replies, run, context)
            if note is not None:
                yield note
            return

        result.cancel()
        log.warning(
            "chatkit turn failed: user=%s thread=%s error=%s",
            context.user.id,
            thread.id,
            type(failure).__name__,
        )
        for item_id in pending.values():  # a reply cut off mid-stream is not kept
            yield ThreadItemRemovedEvent(item_id=item_id)
        message = provider_error(failure).detail
        if turn.tool_calls:
            items = synthetic_items(turn.tool_calls)
            yield await self._add_note(thread, INTERRUPTED_NOTE, turn.tool_calls, items, context)
            run.stored = True
            raise CustomStreamError(message, allow_retry=False)
        if context.owns_input and input_user_message is not None:
            yield ThreadItemRemovedEvent(item_id=input_user_message.id)
            raise CustomStreamError(message + NOT_SAVED, allow_retry=False)
        raise CustomStreamError(message, allow_retry=True)

    async def handle_stream_cancelled(
        self, thread: ThreadMetadata, pending_items: list[ThreadItem], context: ChatKitContext
    ) -> None:
        """The client stopped the stream: stop the run, and keep what its tools did."""
        run = context.run
        if run is not None:
            run.result.cancel()
        await super().handle_stream_cancelled(thread, pending_items, context)
        if run is not None and run.turn.tool_calls and not run.stored:
            items = synthetic_items(run.turn.tool_calls)
            await self._add_note(thread, STOPPED_NOTE, run.turn.tool_calls, items, context)
            run.stored = True

    async def _add_note(
        self,
        thread: ThreadMetadata,
        text: str,
        tool_calls: list[dict[str, Any]],
        items: list[dict[str, Any]],
        context: ChatKitContext,
    ) -> ThreadItemDoneEvent:
        """Store an assistant message of ours carrying the turn's tool calls; its event for the UI."""
        note = AssistantMessageItem(
            id=self.store.generate_item_id("message", thread, context),
            thread_id=thread.id,
            created_at=datetime.now(UTC),
            content=[AssistantMessageContent(text=text)],
        )
        await self.pg_store.add_reply(
            thread.id, note, context, tool_calls=tool_calls, items=items or None
        )
        return ThreadItemDoneEvent(item=note)

    async def _keep_tool_calls(
        self, thread: ThreadMetadata, replies: list[str], run: AgentRun, context: ChatKitContext
    ) -> ThreadItemDoneEvent | None:
        """Put each tool call on the reply it led to, as /api/chat stores a turn.

        A run that called tools but said nothing gets a note to carry them (returned, to stream).
        """
        calls = run.turn.tool_calls
        note = None
        if calls:
            items = new_items_as_input(run.result.new_items)
            if not replies:
                note = await self._add_note(thread, DONE_NOTE, calls, items, context)
            for reply_id, reply_calls, reply_items in split_by_reply(items, calls, replies):
                await self.pg_store.attach_tool_calls(
                    thread.id, reply_id, reply_calls, reply_items, context
                )
        run.stored = True
        return note

    def _with_real_ids(
        self,
        event: ThreadStreamEvent,
        pending: dict[str, str],
        thread: ThreadMetadata,
        context: ChatKitContext,
    ) -> ThreadStreamEvent:
        """Give every assistant message an id of ours: models reuse ids ("__fake_id__", ...)."""
        if isinstance(event, (ThreadItemAddedEvent, ThreadItemDoneEvent, ThreadItemReplacedEvent)):
            item = event.item
            if isinstance(item, AssistantMessageItem):
                model_id = item.id
                if model_id not in pending:
                    pending[model_id] = self.store.generate_item_id("message", thread, context)
                item.id = pending[model_id]
                if isinstance(event, ThreadItemDoneEvent):
                    del pending[model_id]  # a later message reusing the id is a new message
        elif isinstance(event, ThreadItemUpdatedEvent) and event.item_id in pending:
            event.item_id = pending[event.item_id]
        return event


def split_by_reply(
    items: list[dict[str, Any]], tool_calls: list[dict[str, Any]], replies: list[str]
) -> list[tuple[str, list[dict[str, Any]], list[dict[str, Any]]]]:
    """Which reply row carries which tool calls and model items (only rows that had calls).

    A turn may say something, call tools, then answer ("Let me check…", list_tasks, "You have…"):
    each reply row keeps the calls made before it, so replaying the rows gives the model the turn
    in order, each message once. If the items cannot be matched to the replies, the last reply
    carries them all (the shape /api/chat stores).
    """
    segments: list[list[dict[str, Any]]] = []
    current: list[dict[str, Any]] = []
    for item in items:
        current.append(item)
        if item.get("role") == "assistant" and item.get("type", "message") == "message":
            segments.append(current)
            current = []
    if current and segments:
        segments[-1].extend(current)  # calls after the last message (the run stopped there)
    calls_per_segment = [sum(i.get("type") == "function_call" for i in s) for s in segments]
    if not replies:
        return []
    if len(segments) != len(replies) or sum(calls_per_segment) != len(tool_calls):
        return [(replies[-1], tool_calls, items)]
    out = []
    start = 0
    for reply_id, segment, count in zip(replies, segments, calls_per_segment, strict=True):
        if count:
            out.append((reply_id, tool_calls[start : start + count], segment))
        start += count
    return out
