"""The ChatKit front door: turns go through the one turn engine; everything else through ChatKit.

Requests that run a turn (`threads.create`, `threads.add_user_message`,
`threads.retry_after_item`) call `chat.turn.begin` and translate the turn's events into
ChatKit thread events: text deltas into an assistant message, tool calls into progress
updates, the end into `thread.item.done` or an error event. The turn's rules are the engine's
(see `chat.turn`): a turn that fails before any tool leaves nothing (the user message is
removed again with `thread.item.removed`), one that fails after a tool committed leaves the
tool calls under a note, and the client's stop button stops the turn the same way.

Requests that do not run a turn (threads.list, items.list, threads.update, ...) go to ChatKit's
own `ChatKitServer.process`, over the Postgres store.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterable
from datetime import UTC, datetime
from typing import Any

import orjson
from chatkit.server import ChatKitServer
from chatkit.store import NotFoundError
from chatkit.types import (
    AssistantMessageContent,
    AssistantMessageContentPartAdded,
    AssistantMessageItem,
    ErrorEvent,
    Page,
    ProgressUpdateEvent,
    StreamOptions,
    StreamOptionsEvent,
    Thread,
    ThreadCreatedEvent,
    ThreadItemAddedEvent,
    ThreadItemDoneEvent,
    ThreadItemRemovedEvent,
    ThreadItemUpdatedEvent,
    ThreadMetadata,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsRetryAfterItemReq,
    ThreadStreamEvent,
    UserMessageInput,
    UserMessageItem,
)
from pydantic import BaseModel

from backend.auth.user import User
from backend.chat import repository, turn
from backend.chat.runtime import ChatRuntime
from backend.chatkit.context import ChatKitContext
from backend.chatkit.store import item_text, thread_uuid
from backend.tasks.registry import ACTIONS

NOT_SAVED = " Your message was not saved; please send it again."

ChatKitTurn = ThreadsCreateReq | ThreadsAddUserMessageReq | ThreadsRetryAfterItemReq


class TaskChatKitServer(ChatKitServer[ChatKitContext]):
    """ChatKit's request handling for everything but turns (those never reach `respond`)."""

    async def respond(  # pragma: no cover - turns are routed to `start_turn`
        self,
        thread: ThreadMetadata,
        input_user_message: UserMessageItem | None,
        context: ChatKitContext,
    ) -> AsyncIterator[ThreadStreamEvent]:
        raise NotImplementedError("turns go through backend.chatkit.server.start_turn")
        yield  # an async generator, as ChatKit expects


def _sse(event: BaseModel) -> bytes:
    return (
        b"data: "
        + event.model_dump_json(
            by_alias=True, exclude_none=True, context={"exclude_metadata": True}
        ).encode()
        + b"\n\n"
    )


def _user_item(message: UserMessageInput, thread_id: str) -> UserMessageItem:
    return UserMessageItem(
        id="msg_" + uuid.uuid4().hex,
        thread_id=thread_id,
        created_at=datetime.now(UTC),
        content=message.content,
        attachments=[],
        quoted_text=message.quoted_text,
        inference_options=message.inference_options,
    )


async def start_turn(runtime: ChatRuntime, req: ChatKitTurn, user: User) -> AsyncIterator[bytes]:
    """Begin the turn (HTTP errors happen here, before streaming); its ChatKit event stream."""
    prelude: list[BaseModel] = []
    adopt = False
    if isinstance(req, ThreadsRetryAfterItemReq):
        thread_id = req.params.thread_id
        cid = thread_uuid(thread_id)
        asked = await repository.load_message(
            runtime.autocommit_engine,
            user_id=user.id,
            conversation_id=cid,
            item_id=req.params.item_id,
        )
        if asked is None or asked.role != "user":
            raise NotFoundError(f"Item {req.params.item_id} not found")
        await repository.delete_after_message(
            runtime.autocommit_engine, user_id=user.id, conversation_id=cid, item_id=asked.item_id
        )
        text, user_item, adopt = asked.content, None, True
        turn_ = await turn.begin(
            runtime,
            turn.TurnRequest(
                user, text, cid, chatkit=turn.ChatKitInput(adopt=True), field_name="input.content"
            ),
        )
    else:
        create = isinstance(req, ThreadsCreateReq)
        thread_id = str(uuid.uuid4()) if create else req.params.thread_id  # type: ignore[union-attr]
        cid = thread_uuid(thread_id)
        user_item = _user_item(req.params.input, thread_id)
        chatkit = turn.ChatKitInput(user_item.id, user_item.model_dump(mode="json"))
        turn_ = await turn.begin(
            runtime,
            turn.TurnRequest(
                user,
                item_text(user_item),
                cid,
                create=create,
                chatkit=chatkit,
                field_name="input.content",
            ),
        )
        if create:
            thread = Thread(
                id=thread_id, title=turn_.title, created_at=datetime.now(UTC), items=Page()
            )
            prelude.append(ThreadCreatedEvent(thread=thread))
        prelude.append(ThreadItemDoneEvent(item=user_item))
    prelude.append(StreamOptionsEvent(stream_options=StreamOptions(allow_cancel=True)))
    events = turn.TurnEvents(runtime, turn_)
    translated = _translate(turn_, events, thread_id, None if adopt else user_item)
    return _relay(prelude, translated, events)


async def _translate(
    turn_: turn.Turn,
    events: turn.TurnEvents,
    thread_id: str,
    user_item: UserMessageItem | None,
) -> AsyncIterator[bytes]:
    """The turn's events as ChatKit thread events; those ready together go out in one write."""
    reply = _Reply(turn_.reply_item_id, thread_id, user_item)
    async for batch in events.batches():
        yield b"".join(chunk for event in batch for chunk in reply.translate(event))


class _Reply:
    """The assistant message a turn streams into, and how each turn event shows in ChatKit."""

    def __init__(self, item_id: str, thread_id: str, user_item: UserMessageItem | None) -> None:
        self.id = item_id
        self.thread_id = thread_id
        self.user_item = user_item
        self.started = False
        self._delta_prefix = (
            b'data: {"type":"thread.item.updated","item_id":'
            + orjson.dumps(item_id)
            + b',"update":{"type":"assistant_message.content_part.text_delta",'
            + b'"content_index":0,"delta":'
        )

    def item(self, text: str) -> AssistantMessageItem:
        return AssistantMessageItem(
            id=self.id,
            thread_id=self.thread_id,
            created_at=datetime.now(UTC),
            content=[AssistantMessageContent(text=text)] if text else [],
        )

    def translate(self, event: dict[str, Any]) -> Iterable[bytes]:
        kind = event["type"]
        if kind == "text.delta":
            if not self.started:
                self.started = True
                yield _sse(ThreadItemAddedEvent(item=self.item("")))
                part = AssistantMessageContentPartAdded(
                    content_index=0, content=AssistantMessageContent(text="")
                )
                yield _sse(ThreadItemUpdatedEvent(item_id=self.id, update=part))
            # The hot path: built directly (validating a model per delta costs more than the delta).
            yield self._delta_prefix + orjson.dumps(event["delta"]) + b"}}\n\n"
        elif kind == "tool_call":
            action = ACTIONS.get(event["tool"])
            text = action.progress if action is not None else "Working on your tasks…"
            yield _sse(ProgressUpdateEvent(icon="check-circle", text=text))
        elif kind == "done":
            yield _sse(ThreadItemDoneEvent(item=self.item(event["response"])))
        elif kind == "error":
            for item in self._failure(event):
                yield _sse(item)

    def _failure(self, event: dict[str, Any]) -> Iterable[BaseModel]:
        message = str(event.get("detail") or "Something went wrong")
        interrupted = event.get("interrupted")
        if interrupted is not None:  # the tool calls stay, under the note
            yield ThreadItemDoneEvent(item=self.item(interrupted["response"]))
            yield ErrorEvent(code="custom", message=message, allow_retry=False)
            return
        if self.started:
            yield ThreadItemRemovedEvent(item_id=self.id)
        if self.user_item is None:  # a retry: the message was stored before, and stays
            yield ErrorEvent(code="custom", message=message, allow_retry=True)
            return
        yield ThreadItemRemovedEvent(item_id=self.user_item.id)
        yield ErrorEvent(code="custom", message=message + NOT_SAVED, allow_retry=False)


def _relay(
    prelude: list[BaseModel], translated: AsyncIterator[bytes], events: turn.TurnEvents
) -> AsyncIterator[bytes]:
    """The response body. A client that goes away (ChatKit's stop button) stops the turn."""

    async def relay() -> AsyncIterator[bytes]:
        finished = False
        try:
            for event in prelude:
                yield _sse(event)
            async for chunk in translated:
                yield chunk
            finished = True
        finally:
            if not finished:
                events.cancel()
                await asyncio.sleep(0)

    return relay()


__all__ = ["ChatKitTurn", "TaskChatKitServer", "start_turn"]
