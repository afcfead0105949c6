"""POST /api/chatkit: the ChatKit protocol, authenticated with the same bearer tokens.

Checks that ChatKit itself would only report inside a 200 stream happen here first, as HTTP
errors: a malformed body (400), an unknown or foreign thread (404), a turn already running in
the thread (409), the rate limit (429), unsupported operations such as attachments (400).
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

from chatkit.server import StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (
    AttachmentsCreateReq,
    AttachmentsDeleteReq,
    ChatKitReq,
    InputTranscribeReq,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsCustomActionReq,
    ThreadsRetryAfterItemReq,
    ThreadsSyncCustomActionReq,
)
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter, ValidationError

from backend.auth import CurrentUser
from backend.chat import repository
from backend.chat.turn import ChatRuntime
from backend.chatkit.server import TaskChatKitServer
from backend.chatkit.store import AttachmentsNotSupported, ChatKitContext
from backend.errors import BadRequest, NotFound, error_responses
from backend.reliability.ratelimit import RateLimiter

router = APIRouter(
    prefix="/api/chatkit", tags=["chatkit"], responses=error_responses(400, 401, 404, 409, 429, 503)
)

_REQUEST = TypeAdapter[Any](ChatKitReq)
_UNSUPPORTED = (
    AttachmentsCreateReq,
    AttachmentsDeleteReq,
    InputTranscribeReq,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsCustomActionReq,
    ThreadsSyncCustomActionReq,
)
_TURNS = (ThreadsCreateReq, ThreadsAddUserMessageReq, ThreadsRetryAfterItemReq)


class ThreadNotFound(NotFound):
    code = "thread_not_found"
    detail = "Thread not found"


@router.post(
    "",
    summary="The ChatKit protocol endpoint (point ChatKit's api.url here)",
    responses={200: {"description": "JSON, or Server-Sent Events for streaming requests"}},
)
async def chatkit(request: Request, user: CurrentUser) -> Response:
    body = await request.body()
    try:
        req = _REQUEST.validate_json(body)
    except ValidationError:
        raise BadRequest("Malformed ChatKit request") from None
    if isinstance(req, _UNSUPPORTED):
        if isinstance(req, (AttachmentsCreateReq, AttachmentsDeleteReq)):
            raise AttachmentsNotSupported()
        raise BadRequest(f"{req.type} is not supported by this server")
    server: TaskChatKitServer = request.app.state.chatkit
    runtime: ChatRuntime = request.app.state.chat
    context = ChatKitContext(user=user)
    if isinstance(req, _TURNS):
        if getattr(getattr(req.params, "input", None), "attachments", None):
            raise AttachmentsNotSupported()
        limiter: RateLimiter = request.app.state.rate_limiter
        await limiter.hit(user.id)
    thread_id: str | None = getattr(req.params, "thread_id", None)
    if thread_id is not None:
        try:
            await server.store.load_thread(thread_id, context)
        except NotFoundError:
            raise ThreadNotFound() from None
    if isinstance(req, (ThreadsAddUserMessageReq, ThreadsRetryAfterItemReq)):
        assert thread_id is not None
        context.turn = uuid.uuid4()
        await repository.claim_conversation(
            runtime.engine,
            user_id=user.id,
            conversation_id=uuid.UUID(thread_id),
            turn=context.turn,
            lock_seconds=runtime.settings.turn_lock_seconds,
            max_messages=1,
            token_budget=0,
        )
    try:
        result = await server.process(body, context)
    except NotFoundError:
        await _release(runtime, thread_id, context)
        raise ThreadNotFound() from None
    except BaseException:
        await _release(runtime, thread_id, context)
        raise
    if isinstance(result, StreamingResult):
        return StreamingResponse(
            _then_release(result, runtime, thread_id, context),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return Response(result.json, media_type="application/json")


async def _then_release(
    stream: StreamingResult, runtime: ChatRuntime, thread_id: str | None, context: ChatKitContext
) -> AsyncIterator[bytes]:
    try:
        async for chunk in stream:
            yield chunk
    finally:
        await _release(runtime, thread_id, context)


async def _release(runtime: ChatRuntime, thread_id: str | None, context: ChatKitContext) -> None:
    if context.turn is not None and thread_id is not None:
        await repository.release_conversation(
            runtime.engine, conversation_id=uuid.UUID(thread_id), turn=context.turn
        )


@router.get("/health", summary="ChatKit endpoint health")
async def chatkit_health(request: Request, user: CurrentUser) -> dict[str, str]:
    return {"store": "postgres", "model": request.app.state.settings.model_name, "status": "ok"}
