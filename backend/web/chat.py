"""Chat and conversation endpoints: parse, call the chat services, return."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse

from backend.auth.user import User
from backend.chat import conversations as service
from backend.chat import turn
from backend.chat.runtime import ChatRuntime
from backend.chat.schemas import (
    ChatRequest,
    ChatResponse,
    ConversationDetail,
    ConversationList,
    ConversationSummary,
    ConversationUpdate,
    MessageRead,
)
from backend.core.errors import Forbidden
from backend.reliability.idempotency import Replay
from backend.web.apidocs import IDEMPOTENCY_KEY, STREAM_EVENT_REF, sse_frames
from backend.web.deps import ChatDep, CurrentUser, RateLimitedUser, counted_chat_turn
from backend.web.errors import error_responses
from backend.web.limits import claim_idempotency_key, limit_reads, limit_writes, replay_response

router = APIRouter(prefix="/api", responses=error_responses(400, 401, 422, 503))

_CHAT_ERRORS = error_responses(404, 409, 413, 429, 502, 504)


_STREAM_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Server-Sent Events: each `data:` line is one JSON event, chosen by `type`: "
        "`conversation` first, then `text.delta`, `tool_call` and `tool_result` as they happen, "
        "and last `done` (the answer `POST /api/chat` gives) or `error`.",
        "content": {"text/event-stream": {"schema": sse_frames(STREAM_EVENT_REF)}},
    }
}


def _sse(batches: AsyncIterator[list[dict[str, Any]]]) -> AsyncIterator[bytes]:
    """Server-Sent Events; the events ready together go out in one write."""

    async def encode() -> AsyncIterator[bytes]:
        async for batch in batches:
            yield b"".join(b"data: " + orjson.dumps(event) + b"\n\n" for event in batch)

    return encode()


@router.post(
    "/chat",
    response_model=ChatResponse,
    tags=["chat"],
    responses=_CHAT_ERRORS,
    openapi_extra={"parameters": [IDEMPOTENCY_KEY]},
)
async def chat(body: ChatRequest, user: RateLimitedUser, request: Request, runtime: ChatDep) -> Any:
    """Send a message; the agent answers, using task tools as needed.

    Send `Idempotency-Key` to make retries safe: a repeat returns the first answer (or, if that
    turn was interrupted, the turn as recorded) and never runs a tool twice.

    With `stream: true` or `Accept: text/event-stream` the answer is the event stream of
    `POST /api/chat/stream` instead (documented there, so that this operation has one answer type).
    """
    streaming = body.stream or "text/event-stream" in request.headers.get("accept", "")
    return await _answer(body, user, request, runtime, streaming=streaming)


@router.post(
    "/chat/stream",
    tags=["chat"],
    response_class=Response,  # no JSON body to document: the 200 is the event stream alone
    responses={**_CHAT_ERRORS, **_STREAM_DOC},
    openapi_extra={"parameters": [IDEMPOTENCY_KEY]},
)
async def chat_stream(
    body: ChatRequest, user: RateLimitedUser, request: Request, runtime: ChatDep
) -> Response:
    """`POST /api/chat`, answered as Server-Sent Events (whatever `stream` says).

    Errors found before the turn starts (invalid input, unknown conversation, rate limit, a turn
    already running) are HTTP errors, as for `POST /api/chat`; once the stream has started, a
    failure is its last event, `error`. A repeat with the same `Idempotency-Key` streams the
    recorded answer (`conversation`, then `done`).
    """
    return await _answer(body, user, request, runtime, streaming=True)


async def _answer(
    body: ChatRequest, user: User, request: Request, runtime: ChatRuntime, *, streaming: bool
) -> Any:
    claim = await claim_idempotency_key(
        request, user, body, turn_id=uuid.uuid4(), wait=not streaming
    )
    if isinstance(claim, Replay):
        if not streaming:
            return replay_response(claim)
        done = {"type": "done", **claim.body}
        events = [{"type": "conversation", "conversation_id": claim.body["conversation_id"]}, done]
        return _stream(_replayed(events), headers={"Idempotent-Replayed": "true"})
    turn_ = await turn.begin(
        runtime, turn.TurnRequest(user, body.message, body.conversation_id, key=claim)
    )
    if not streaming:
        return await turn.execute(runtime, turn_)
    return _stream(_with_conversation(turn_, turn.TurnEvents(runtime, turn_)))


async def _with_conversation(
    turn_: turn.Turn, events: turn.TurnEvents
) -> AsyncIterator[list[dict[str, Any]]]:
    yield [{"type": "conversation", "conversation_id": str(turn_.conversation_id)}]
    async for batch in events.batches():
        yield batch


async def _replayed(events: list[dict[str, Any]]) -> AsyncIterator[list[dict[str, Any]]]:
    yield events


def _stream(
    batches: AsyncIterator[list[dict[str, Any]]], headers: dict[str, str] | None = None
) -> StreamingResponse:
    return StreamingResponse(
        _sse(batches),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no", **(headers or {})},
    )


@router.post(
    "/{user_id}/chat",
    response_model=ChatResponse,
    tags=["chat"],
    responses={**_CHAT_ERRORS, **error_responses(403)},
    openapi_extra={"parameters": [IDEMPOTENCY_KEY]},
)
async def chat_for_user(
    user_id: str, body: ChatRequest, user: CurrentUser, request: Request, runtime: ChatDep
) -> ChatResponse:
    """The same as `POST /api/chat` (`stream: true` streams too), for frontends that put the
    user id in the path."""
    if user_id != user.id:
        raise Forbidden("The user in the path is not the token's user")
    return await chat(
        body, await counted_chat_turn(request, user, body, runtime.settings), request, runtime
    )


@router.get(
    "/conversations",
    response_model=ConversationList,
    tags=["conversations"],
    responses=error_responses(404, 429),
)
async def list_conversations(
    user: CurrentUser,
    request: Request,
    runtime: ChatDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    after: uuid.UUID | None = None,
) -> ConversationList:
    await limit_reads(request, user)
    rows, next_cursor = await service.list_conversations(
        runtime.autocommit_engine, user.id, limit=limit, after=after
    )
    return ConversationList(
        conversations=[ConversationSummary.model_validate(c) for c in rows], next_cursor=next_cursor
    )


@router.get(
    "/conversations/{conversation_id}",
    response_model=ConversationDetail,
    tags=["conversations"],
    responses=error_responses(404, 429),
)
async def get_conversation(
    conversation_id: uuid.UUID,
    user: CurrentUser,
    request: Request,
    runtime: ChatDep,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    after: Annotated[int | None, Query(ge=0, le=2**63 - 1)] = None,
) -> ConversationDetail:
    await limit_reads(request, user)
    conversation, messages, next_cursor = await service.get_conversation(
        runtime.autocommit_engine,
        user.id,
        conversation_id,
        limit=limit,
        after=after,
        max_bytes=runtime.settings.max_page_bytes,
    )
    return ConversationDetail(
        **ConversationSummary.model_validate(conversation).model_dump(),
        messages=[MessageRead.model_validate(m) for m in messages],
        next_cursor=next_cursor,
    )


@router.patch(
    "/conversations/{conversation_id}",
    response_model=ConversationSummary,
    tags=["conversations"],
    responses=error_responses(404, 413, 429),
)
async def rename_conversation(
    conversation_id: uuid.UUID,
    body: ConversationUpdate,
    user: CurrentUser,
    request: Request,
    runtime: ChatDep,
) -> ConversationSummary:
    await limit_writes(request, user)
    conversation = await service.rename_conversation(
        runtime.autocommit_engine, user.id, conversation_id, body.title
    )
    return ConversationSummary.model_validate(conversation)


@router.delete(
    "/conversations/{conversation_id}",
    status_code=204,
    tags=["conversations"],
    responses=error_responses(404, 429),
)
async def delete_conversation(
    conversation_id: uuid.UUID, user: CurrentUser, request: Request, runtime: ChatDep
) -> Response:
    await limit_writes(request, user)
    await service.delete_conversation(runtime.autocommit_engine, user.id, conversation_id)
    return Response(status_code=204)
