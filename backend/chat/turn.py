"""The chat turn: claim the conversation, load its history, run the agent, store the turn.

Stateless: everything about a conversation lives in PostgreSQL, so any replica can continue
it. No database connection is held while the model thinks; the conversation's `active_turn`
claim (with an expiry) keeps two turns of one conversation from interleaving.

What is stored when something fails:
- the model fails before any tool ran: nothing (the conversation reads as if the message
  was never sent; retrying is safe);
- it fails after tools changed tasks: the whole turn, i.e. the user message, the tool calls
  with their results and an assistant note that the reply was interrupted, so the history
  matches the task list and a retry does not repeat the changes;
- storing the turn itself fails: nothing (one transaction).
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast

import openai
import orjson
from agents import Agent, MaxTurnsExceeded, Runner, RunResult, RunResultStreaming
from agents.exceptions import AgentsException, ModelBehaviorError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.agent.chat_model import ProviderError
from backend.agent.context import TurnContext
from backend.auth import User
from backend.chat import repository
from backend.chat.history import count_tokens, title_from, to_input_items
from backend.chat.schemas import ChatResponse, ToolCall
from backend.config import Settings
from backend.errors import AppError, GatewayTimeout, RateLimited, ServiceUnavailable
from backend.observability import metrics
from backend.textrules import clean_text

log = logging.getLogger(__name__)

AI_UNAVAILABLE = "AI service temporarily unavailable"
MAX_TURNS_REPLY = "I couldn't finish that within my step limit. Please try a simpler request."


@dataclass
class ChatRuntime:
    """What a turn needs from the process: built once in the lifespan."""

    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    agent: Agent[TurnContext]
    background: set[asyncio.Task[None]] = field(default_factory=set)
    """Streaming turns still running (kept referenced; awaited at shutdown)."""

    def agent_for_run(self) -> Agent[TurnContext]:
        """A shallow clone for one run: the same tools and model, its own identity.

        The SDK checks every concurrent run of one Agent object against all the others (to detect
        tools changing mid-run), which costs O(concurrent runs) per step; a clone per run keeps
        that check O(1). The clone holds nothing per user.
        """
        return self.agent.clone()


@dataclass
class Turn:
    """One chat turn in progress."""

    user: User
    message: str
    conversation_id: uuid.UUID
    id: uuid.UUID = field(default_factory=uuid.uuid4)
    history: list[dict[str, Any]] = field(default_factory=list)
    context: TurnContext | None = None
    started: float = field(default_factory=time.perf_counter)


def clean_message(message: str, max_chars: int) -> str:
    return clean_text("message", message, max_chars)


async def begin_turn(
    rt: ChatRuntime, user: User, message: str, conversation_id: uuid.UUID | None
) -> Turn:
    """Validate, then claim (or create) the conversation and load its history window."""
    settings = rt.settings
    text = clean_message(message, settings.max_message_chars)
    turn = Turn(user=user, message=text, conversation_id=conversation_id or uuid.uuid4())
    if conversation_id is None:
        await repository.create_conversation(
            rt.engine,
            user_id=user.id,
            conversation_id=turn.conversation_id,
            title=title_from(text),
            turn=turn.id,
            lock_seconds=settings.turn_lock_seconds,
        )
        rows: list[repository.HistoryRow] = []
    else:
        rows = await repository.claim_conversation(
            rt.engine,
            user_id=user.id,
            conversation_id=conversation_id,
            turn=turn.id,
            lock_seconds=settings.turn_lock_seconds,
            max_messages=settings.history_max_messages,
            token_budget=settings.history_token_budget,
        )
    turn.history = [*to_input_items(rows), {"role": "user", "content": text}]
    turn.context = TurnContext(user_id=user.id, sessions=rt.sessions, token=user.token)
    return turn


def provider_error(exc: BaseException) -> AppError:
    """Map a model-provider failure to what the client sees."""
    if isinstance(exc, TimeoutError):
        return GatewayTimeout()
    if isinstance(exc, ProviderError):
        if exc.status == 429 and exc.retry_after and exc.retry_after.strip().isdigit():
            return RateLimited(
                "The AI service is rate limited; retry later",
                retry_after=max(1, int(exc.retry_after)),
            )
        return ServiceUnavailable(AI_UNAVAILABLE)
    if isinstance(exc, openai.RateLimitError):
        retry_after = exc.response.headers.get("retry-after") if exc.response is not None else None
        if retry_after and retry_after.strip().isdigit():
            return RateLimited(
                "The AI service is rate limited; retry later", retry_after=max(1, int(retry_after))
            )
        return ServiceUnavailable(AI_UNAVAILABLE)
    return ServiceUnavailable(AI_UNAVAILABLE)


def _is_provider_failure(exc: BaseException) -> bool:
    return isinstance(
        exc, (openai.OpenAIError, ProviderError, TimeoutError, ModelBehaviorError, AgentsException)
    )


def synthetic_items(tool_calls: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Function-call items for tools that ran in a turn whose model output was lost."""
    items: list[dict[str, Any]] = []
    for n, call in enumerate(tool_calls):
        call_id = f"call_interrupted_{n}"
        items.append(
            {
                "type": "function_call",
                "call_id": call_id,
                "name": call["tool"],
                "arguments": orjson.dumps(call["arguments"]).decode(),
            }
        )
        items.append(
            {
                "type": "function_call_output",
                "call_id": call_id,
                "output": orjson.dumps(call["result"]).decode(),
            }
        )
    return items


async def finish_turn(
    rt: ChatRuntime, turn: Turn, reply: str, items: list[dict[str, Any]]
) -> ChatResponse:
    assert turn.context is not None
    tool_calls = turn.context.tool_calls
    message_id = await repository.store_turn(
        rt.engine,
        user_id=turn.user.id,
        conversation_id=turn.conversation_id,
        turn=turn.id,
        user_content=turn.message,
        user_tokens=count_tokens(turn.message),
        reply=reply,
        reply_tokens=count_tokens(reply, items),
        tool_calls=tool_calls,
        items=items,
    )
    return ChatResponse(
        conversation_id=turn.conversation_id,
        message_id=message_id,
        response=reply,
        tool_calls=[ToolCall.model_validate(c) for c in tool_calls],
    )


async def fail_turn(rt: ChatRuntime, turn: Turn, reason: str) -> None:
    """Leave the conversation consistent after a failed run (see the module docstring)."""
    assert turn.context is not None
    try:
        if turn.context.tool_calls:
            note = f"(My reply was interrupted: {reason}. The task changes listed above were made.)"
            await finish_turn(rt, turn, note, synthetic_items(turn.context.tool_calls))
        else:
            await repository.release_conversation(
                rt.engine, conversation_id=turn.conversation_id, turn=turn.id
            )
    except Exception:
        # The claim expires on its own; the client still gets the original error.
        log.warning("could not clean up failed turn %s", turn.id, exc_info=True)


def new_items_as_input(new_items: list[Any]) -> list[dict[str, Any]]:
    items = []
    for item in new_items:
        raw = item.to_input_item()
        items.append(raw if isinstance(raw, dict) else dict(raw))
    return items


async def execute_turn(
    rt: ChatRuntime, turn: Turn, emit: Callable[[dict[str, Any]], None] | None = None
) -> ChatResponse:
    """Run the agent for a begun turn and store it. With `emit`, reply text streams as it comes."""
    ctx = turn.context
    assert ctx is not None
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
                async for event in result.stream_events():
                    if (
                        event.type == "raw_response_event"
                        and event.data.type == "response.output_text.delta"
                    ):
                        emit({"type": "text.delta", "delta": event.data.delta})
        reply = str(result.final_output or "")
        items = new_items_as_input(result.new_items)
        usage = result.context_wrapper.usage
    except MaxTurnsExceeded as exc:
        items = new_items_as_input(exc.run_data.new_items) if exc.run_data else []
        reply, usage = MAX_TURNS_REPLY, None
    except BaseException as exc:
        metrics.turn_finished(turn.started, exc)
        timed_out = isinstance(exc, TimeoutError)
        reason = "the AI service did not answer in time" if timed_out else "the AI service failed"
        await asyncio.shield(fail_turn(rt, turn, reason))
        if _is_provider_failure(exc):
            log.warning(
                "chat turn failed: user=%s conversation=%s error=%s",
                turn.user.id,
                turn.conversation_id,
                type(exc).__name__,
            )
            raise provider_error(exc) from None
        raise
    try:
        response = await finish_turn(rt, turn, reply, items)
    except BaseException as exc:
        metrics.turn_finished(turn.started, exc)
        await asyncio.shield(fail_turn_release(rt, turn))
        raise
    metrics.turn_finished(turn.started)
    log.info(
        "chat turn user=%s conversation=%s tools=%s input_tokens=%s output_tokens=%s latency=%.0fms",
        turn.user.id,
        turn.conversation_id,
        ",".join(c["tool"] for c in ctx.tool_calls) or "-",
        usage.input_tokens if usage else "-",
        usage.output_tokens if usage else "-",
        (time.perf_counter() - turn.started) * 1000,
    )
    return response


async def run_turn(
    rt: ChatRuntime, user: User, message: str, conversation_id: uuid.UUID | None
) -> ChatResponse:
    """The non-streaming turn: the whole reply at once."""
    return await execute_turn(rt, await begin_turn(rt, user, message, conversation_id))


async def stream_turn(
    rt: ChatRuntime,
    turn: Turn,
    on_finish: Callable[[ChatResponse | None], Awaitable[None]] | None = None,
) -> AsyncIterator[dict[str, Any]]:
    """Events of a begun turn: conversation, text.delta, tool_call, tool_result, then done or error.

    The turn runs in its own task, so a client that disconnects mid-stream does not cut it in
    half: it completes and is stored (or fails and is cleaned up) exactly as without streaming.
    """
    assert turn.context is not None
    queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    turn.context.events = queue.put_nowait

    async def produce() -> None:
        response: ChatResponse | None = None
        try:
            response = await execute_turn(rt, turn, emit=queue.put_nowait)
            queue.put_nowait({"type": "done", **response.model_dump(mode="json")})
        except AppError as exc:
            queue.put_nowait({"type": "error", "status": exc.status, **exc.body()})
        except Exception:
            log.exception("streaming turn %s failed", turn.id)
            queue.put_nowait(
                {
                    "type": "error",
                    "status": 500,
                    "detail": "Internal server error",
                    "code": "internal_error",
                }
            )

    task = asyncio.create_task(produce())
    rt.background.add(task)
    task.add_done_callback(rt.background.discard)
    yield {"type": "conversation", "conversation_id": str(turn.conversation_id)}
    while True:
        event = await queue.get()
        yield event
        if event["type"] in ("done", "error"):
            return


async def fail_turn_release(rt: ChatRuntime, turn: Turn) -> None:
    try:
        await repository.release_conversation(
            rt.engine, conversation_id=turn.conversation_id, turn=turn.id
        )
    except Exception:
        log.warning("could not release turn %s", turn.id, exc_info=True)
