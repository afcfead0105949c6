"""The turn engine: one chat turn from claim to final state, for every front door.

`POST /api/chat` (plain and SSE) and `/api/chatkit` call `begin`, then `execute` (one answer)
or `TurnEvents` (the events as they happen); they only translate. Stateless: a conversation lives
in PostgreSQL, so any replica can continue it; no connection is held while the model thinks.

Each front door builds one `TurnRequest`. What a turn leaves in its conversation, step by
step and on every failure, is the turn journal's promise: see `chat.journal`. A failure (model
error, timeout, database outage, the client stopping a ChatKit stream) is closed there; if the
database is down at that moment, the close is retried in the background, and a turn whose
process died reads as interrupted once its claim lapses. With an Idempotency-Key, the repeat of
a finished or interrupted turn returns the turn as recorded (`failures.recorded_body`), and only
a turn that committed nothing runs again.

Admission: `begin` takes a process-wide turn slot first (else 503 `server_busy`); every end
gives it back: `begin` failing, `execute` ending, `TurnEvents`' task ending (even unstarted).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, NoReturn, cast

from agents import MaxTurnsExceeded, Runner, RunResult, RunResultStreaming
from sqlalchemy.exc import SQLAlchemyError

from backend.agent.context import TurnContext
from backend.agent.items import text_of
from backend.auth.user import User
from backend.chat import claim, journal, repository
from backend.chat.failures import classify, failure_fields, note, recorded_body
from backend.chat.history import count_tokens_async, title_from, to_input_items
from backend.chat.journal import RecordedTurn, TurnJournal
from backend.chat.runtime import ChatRuntime, TurnSlot
from backend.chat.schemas import ChatResponse, ToolCall
from backend.core.errors import (
    AppError,
    DatabaseUnavailable,
    ServiceUnavailable,
    is_connectivity_error,
)
from backend.core.logging import log_value
from backend.core.text import clean_text
from backend.observability import metrics
from backend.reliability.idempotency import IdempotencyClaim

log = logging.getLogger(__name__)

MAX_TURNS_REPLY = "I couldn't finish that within my step limit. Please try a simpler request."


@dataclass(frozen=True, slots=True)
class ChatKitInput:
    """What a ChatKit turn adds: its own item for the user message, or a retry (`adopt`) that
    answers a user message stored earlier."""

    user_item_id: str | None = None
    user_item: dict[str, Any] | None = None
    adopt: bool = False


@dataclass(frozen=True, slots=True)
class TurnRequest:
    """One front door's request for a turn: what `begin` needs, built from the verified caller."""

    user: User
    message: str
    conversation_id: uuid.UUID | None = None
    """None starts a new conversation."""
    create: bool = False
    """Create the conversation with the given id (ChatKit picks thread ids)."""
    key: IdempotencyClaim | None = None
    chatkit: ChatKitInput | None = None
    field_name: str = "message"
    """The request field the message came from, for 422 errors."""


@dataclass
class Turn:
    """One chat turn in progress."""

    user: User
    message: str
    conversation_id: uuid.UUID
    created: bool
    """This turn created the conversation (a failure that committed nothing removes it)."""
    journal: TurnJournal
    reply_item_id: str
    title: str | None
    history: list[dict[str, Any]]
    context: TurnContext
    key: IdempotencyClaim | None = None
    started: float = field(default_factory=time.perf_counter)
    interrupted: RecordedTurn | None = None
    """Set when the turn failed after its tools committed: what the conversation now shows."""
    slot: TurnSlot = field(default_factory=TurnSlot)  # its place among the running turns

    @property
    def id(self) -> uuid.UUID:
        return self.journal.turn

    @property
    def reply_row(self) -> int:
        return self.journal.reply_row

    @property
    def rows(self) -> dict[str, Any]:
        """The turn's identity in the journal's statements."""
        j = self.journal
        return {
            "user_id": self.user.id,
            "conversation_id": self.conversation_id,
            "turn": j.turn,
            "user_row": j.user_row,
            "reply_row": j.reply_row,
        }


async def begin(rt: ChatRuntime, request: TurnRequest) -> Turn:
    """Validate, claim (or create) the conversation, journal the turn's start, load history.

    On any failure here the idempotency key is released: nothing ran.
    """
    settings, user, key = rt.settings, request.user, request.key
    chatkit = request.chatkit or ChatKitInput()
    create, conversation_id = request.create, request.conversation_id
    slot = TurnSlot()  # none yet
    try:
        text = clean_text(request.field_name, request.message, settings.max_message_chars)
        slot = rt.admit()  # before any database work: a refused turn costs nothing
        if conversation_id is None:
            conversation_id, create = uuid.uuid4(), True
        turn_id = key.turn_id if key is not None and key.turn_id else uuid.uuid4()
        title = title_from(text) if create else None
        reply_item_id = repository.new_item_id()
        started = await claim.start_turn(
            rt.autocommit_engine,
            user_id=user.id,
            conversation_id=conversation_id,
            create=create,
            title=title,
            turn=turn_id,
            lock_seconds=settings.turn_lock_seconds,
            user_content=text,
            user_tokens=await count_tokens_async(text),
            user_item_id=chatkit.user_item_id,
            user_item=chatkit.user_item,
            reply_item_id=reply_item_id,
            adopt=chatkit.adopt,
            max_messages=settings.history_max_messages,
            token_budget=settings.history_token_budget,
            max_active=settings.max_active_turns_per_user,
        )
    except BaseException as exc:
        slot.release()
        if key is not None:
            await asyncio.shield(_settle_key(rt, key, None))
        if isinstance(exc, SQLAlchemyError) and is_connectivity_error(exc):
            raise DatabaseUnavailable() from None
        raise
    history = to_input_items(started.history)
    if not chatkit.adopt:
        history.append({"role": "user", "content": text})
    journal = TurnJournal(
        engine=rt.autocommit_engine,
        user_id=user.id,
        max_tasks=settings.max_tasks_per_user,
        conversation_id=conversation_id,
        turn=turn_id,
        user_row=started.user_row,
        reply_row=started.reply_row,
    )
    begun = Turn(
        user=user,
        message=text,
        conversation_id=conversation_id,
        created=create,
        journal=journal,
        reply_item_id=reply_item_id,
        title=title,
        history=history,
        context=TurnContext(user_id=user.id, journal=journal, token=user.token),
        key=key,
        slot=slot,
    )
    return slot.kept_by(begun)


# --- running a turn -------------------------------------------------------------------------


def reply_text(items: list[dict[str, Any]]) -> str:
    """The turn's reply: every assistant message of the run, in order (text, tools, more text)."""
    texts = [
        text_of(i.get("content"))
        for i in items
        if i.get("role") == "assistant" and i.get("type", "message") == "message"
    ]
    return "\n\n".join(t for t in texts if t)


async def _relay_text(result: RunResultStreaming, emit: Callable[[dict[str, Any]], None]) -> None:
    """Text deltas as they come; messages of one turn are separated as `reply_text` joins them."""
    said = False  # text already sent
    new_message = False
    try:
        async for event in result.stream_events():
            if event.type != "raw_response_event":
                continue
            data: Any = event.data
            kind = data.type
            if kind == "response.output_text.delta":
                delta = data.delta
                if not delta:
                    continue
                if said and new_message:
                    delta = "\n\n" + delta
                said, new_message = True, False
                emit({"type": "text.delta", "delta": delta})
            elif kind == "response.output_item.added":
                new_message = True
    finally:
        result.cancel()  # a no-op when complete; stops the run if we were cut off


def new_items_as_input(new_items: list[Any]) -> list[dict[str, Any]]:
    items = []
    for item in new_items:
        raw = item.to_input_item()
        items.append(raw if isinstance(raw, dict) else dict(raw))
    return items


async def execute(
    rt: ChatRuntime, turn: Turn, emit: Callable[[dict[str, Any]], None] | None = None
) -> ChatResponse:
    """Run the agent for a begun turn, store it, free its slot. `emit`: stream the reply text."""
    try:
        return await _execute(rt, turn, emit)
    finally:
        turn.slot.release()


async def _execute(
    rt: ChatRuntime, turn: Turn, emit: Callable[[dict[str, Any]], None] | None
) -> ChatResponse:
    ctx = turn.context
    settings = rt.settings
    metrics.turn_started()
    try:
        async with asyncio.timeout(settings.chat_timeout_seconds):
            if emit is None:
                result: RunResult | RunResultStreaming = await Runner.run(
                    rt.agent_for_run(),
                    cast(Any, turn.history),
                    context=ctx,
                    max_turns=settings.agent_max_turns,
                )
            else:
                result = Runner.run_streamed(
                    rt.agent_for_run(),
                    cast(Any, turn.history),
                    context=ctx,
                    max_turns=settings.agent_max_turns,
                )
                await _relay_text(result, emit)
        items = new_items_as_input(result.new_items)
        reply = reply_text(items) or str(result.final_output or "")
        usage = result.context_wrapper.usage
    except MaxTurnsExceeded as exc:
        items = new_items_as_input(exc.run_data.new_items) if exc.run_data else []
        reply, usage = MAX_TURNS_REPLY, None
        if emit is not None:
            emit({"type": "text.delta", "delta": "\n\n" + MAX_TURNS_REPLY})
    except BaseException as exc:
        metrics.turn_finished(turn.started, exc)
        await _fail(rt, turn, exc)
        _raise_classified(exc)
    try:
        await journal.finish_turn(
            rt.autocommit_engine,
            **turn.rows,
            reply=reply,
            reply_tokens=await count_tokens_async(reply, items),
            tool_calls=ctx.tool_calls,
            items=items,
        )
    except BaseException as exc:
        metrics.turn_finished(turn.started, exc)
        await _fail(rt, turn, exc)
        _raise_classified(exc)
    response = ChatResponse(
        conversation_id=turn.conversation_id,
        message_id=turn.reply_row,
        response=reply,
        tool_calls=[ToolCall.model_validate(c) for c in ctx.tool_calls],
    )
    metrics.turn_finished(turn.started)
    if turn.key is not None:
        await asyncio.shield(_settle_key(rt, turn.key, response.model_dump(mode="json")))
    log.info(
        "chat turn user=%s conversation=%s tools=%s input_tokens=%s output_tokens=%s latency=%.0fms",
        log_value(turn.user.id),
        turn.conversation_id,
        log_value(",".join(c["tool"] for c in ctx.tool_calls) or "-"),
        usage.input_tokens if usage else "-",
        usage.output_tokens if usage else "-",
        (time.perf_counter() - turn.started) * 1000,
    )
    return response


def _raise_classified(exc: BaseException) -> NoReturn:
    error = None if isinstance(exc, asyncio.CancelledError) else classify(exc)
    if error is None or error is exc:
        raise exc
    raise error from None


async def _fail(rt: ChatRuntime, turn: Turn, exc: BaseException) -> None:
    """Leave the conversation and the idempotency key consistent, then let `exc` propagate."""
    if isinstance(exc, asyncio.CancelledError):
        reason = "stopped"
    else:
        error = classify(exc)
        reason = error.code if error is not None else "failed"
        log.warning(
            "chat turn failed: user=%s conversation=%s %s",
            log_value(turn.user.id),
            turn.conversation_id,
            failure_fields(exc),
        )
    await asyncio.shield(_close_failed(rt, turn, reason, first_try=True))


async def _close_failed(rt: ChatRuntime, turn: Turn, reason: str, *, first_try: bool) -> bool:
    """Write the failed turn's end; retried in the background while the database is down."""
    try:
        recorded = await journal.interrupt_turn(
            rt.autocommit_engine,
            **turn.rows,
            created=turn.created,
            note=note(reason),
        )
    except Exception:
        if first_try:
            log.warning("could not close failed turn %s; retrying in the background", turn.id)
            rt.spawn(_retry_close(rt, turn, reason))
        return False
    turn.interrupted = recorded  # the tool calls that took effect, under the note
    if turn.key is not None:
        await _settle_key(rt, turn.key, recorded_body(recorded) if recorded else None)
    return True


async def _retry_close(rt: ChatRuntime, turn: Turn, reason: str) -> None:
    deadline = time.monotonic() + rt.settings.turn_lock_seconds
    delay = 0.5
    while time.monotonic() < deadline:
        await asyncio.sleep(delay)
        delay = min(delay * 2, 5.0)
        if await _close_failed(rt, turn, reason, first_try=False):
            return
    log.warning("gave up closing turn %s; its claim lapses on its own", turn.id)


async def _settle_key(rt: ChatRuntime, key: IdempotencyClaim, body: dict[str, Any] | None) -> None:
    """Store the answer under the key, or release it (a repeat runs afresh)."""
    try:
        if body is None:
            await key.release()
        else:
            await key.complete(200, body)
    except Exception:
        # Left claimed: a repeat after the claim lapses consults the journal (see idempotency).
        log.warning("could not settle idempotency key for turn %s", key.turn_id)


async def run_turn(rt: ChatRuntime, request: TurnRequest) -> ChatResponse:
    """The non-streaming turn: the whole reply at once."""
    return await execute(rt, await begin(rt, request))


class TurnEvents:
    """A begun turn's events as they happen: text.delta, tool_call, tool_result, then done or error.

    The turn runs in its own task, so a client that goes away mid-stream does not cut it in
    half: it completes and is stored (or fails and is closed) exactly as without streaming.
    `cancel()` stops it on purpose (ChatKit's stop button).
    """

    def __init__(self, rt: ChatRuntime, turn: Turn) -> None:
        self.turn = turn
        self._queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        turn.context.events = self._queue.put_nowait
        self._task = rt.spawn(self._produce(rt))
        self._task.add_done_callback(
            lambda _: turn.slot.release()
        )  # even if cancelled before it ran

    async def _produce(self, rt: ChatRuntime) -> None:
        put = self._queue.put_nowait
        try:
            response = await execute(rt, self.turn, emit=put)
            put({"type": "done", **response.model_dump(mode="json")})
        except asyncio.CancelledError:
            put(self._error_event(ServiceUnavailable("Stopped")))
            raise
        except BaseException as exc:
            error = classify(exc)
            if error is None:
                log.exception("streaming turn %s failed", self.turn.id)
            put(self._error_event(error))

    def _error_event(self, error: AppError | None) -> dict[str, Any]:
        if error is None:
            event = {"type": "error", "status": 500, "detail": "Internal server error"}
            event["code"] = "internal_error"
        else:
            event = {"type": "error", "status": error.status, **error.body()}
            if "Retry-After" in error.headers:
                event["retry_after"] = int(error.headers["Retry-After"])
        if self.turn.interrupted is not None:
            event["interrupted"] = recorded_body(self.turn.interrupted)
        return event

    def cancel(self) -> None:
        self._task.cancel()

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        async for batch in self.batches():
            for event in batch:
                yield event

    async def batches(self) -> AsyncIterator[list[dict[str, Any]]]:
        """The events in the order they came, grouped as they are ready: a front door sends each
        group as one write (one trip through the ASGI stack instead of one per event)."""
        while True:
            batch = [await self._queue.get()]
            while not self._queue.empty():
                batch.append(self._queue.get_nowait())
            yield batch
            if batch[-1]["type"] in ("done", "error"):
                return
