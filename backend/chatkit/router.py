"""POST /api/chatkit: the ChatKit protocol, authenticated with the same bearer tokens.

Checks that ChatKit itself would only report inside a 200 stream happen here first, as HTTP
errors: a malformed body (400), an unknown or foreign thread (404), invalid text (422), a turn
already running in the thread (409), the rate limit (429), unsupported operations such as
attachments (400).

A streamed turn runs in its own task and the response relays its events. When the client goes
away (ChatKit's stop button aborts the request) the task is cancelled once, so ChatKit's own
cancellation handling and ours (keeping what the tools did, releasing the thread) run to the end
instead of being cancelled again at every await by the server's disconnect handling.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

from chatkit.server import StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (
    AttachmentsCreateReq,
    AttachmentsDeleteReq,
    ChatKitReq,
    ErrorCode,
    ErrorEvent,
    InputTranscribeReq,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsCustomActionReq,
    ThreadsRetryAfterItemReq,
    ThreadsSyncCustomActionReq,
    ThreadsUpdateReq,
    UserMessageInput,
)
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter, ValidationError

from backend.auth import CurrentUser
from backend.chat import repository
from backend.chat.conversations import clean_title
from backend.chat.turn import ChatRuntime
from backend.chatkit.context import ChatKitContext
from backend.chatkit.server import TaskChatKitServer
from backend.chatkit.store import AttachmentsNotSupported
from backend.errors import BadRequest, NotFound, error_responses
from backend.reliability.deps import chat_rate_limit
from backend.textrules import clean_text

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/chatkit",
    tags=["chatkit"],
    responses=error_responses(400, 401, 404, 409, 422, 429, 503),
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
_STREAM_FAILED = (
    b"data: "
    + ErrorEvent(code=ErrorCode.STREAM_ERROR, allow_retry=False).model_dump_json().encode()
    + b"\n\n"
)


class ThreadNotFound(NotFound):
    code = "thread_not_found"
    detail = "Thread not found"


def _check_input(message: UserMessageInput, max_chars: int) -> None:
    """The same rules as /api/chat's message: not empty, not too long, storable."""
    if message.attachments:
        raise AttachmentsNotSupported()
    clean_text("input.content", "".join(part.text for part in message.content), max_chars)


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
    context = ChatKitContext(user=user, lock_seconds=runtime.settings.turn_lock_seconds)
    if isinstance(req, ThreadsUpdateReq):
        req.params.title = clean_title(req.params.title)
        body = req.model_dump_json().encode()
    if isinstance(req, (ThreadsCreateReq, ThreadsAddUserMessageReq)):
        _check_input(req.params.input, runtime.settings.max_message_chars)
        context.owns_input = True
    if isinstance(req, _TURNS):
        await chat_rate_limit(request, user)
        context.turn = uuid.uuid4()  # a new thread is claimed when it is stored
    thread_id: str | None = getattr(req.params, "thread_id", None)
    if thread_id is not None:
        try:
            await server.store.load_thread(thread_id, context)
        except NotFoundError:
            raise ThreadNotFound() from None
        if context.turn is not None:
            await repository.claim_conversation(
                runtime.engine,
                user_id=user.id,
                conversation_id=uuid.UUID(thread_id),
                turn=context.turn,
                lock_seconds=context.lock_seconds,
                max_messages=1,
                token_budget=0,
            )
            context.claimed = uuid.UUID(thread_id)
    try:
        result = await server.process(body, context)
    except NotFoundError:
        await _release(runtime, context)
        raise ThreadNotFound() from None
    except BaseException:
        await _release(runtime, context)
        raise
    if isinstance(result, StreamingResult):
        return StreamingResponse(
            _in_own_task(result, runtime, context),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        )
    return Response(result.json, media_type="application/json")


def _in_own_task(
    stream: StreamingResult, runtime: ChatRuntime, context: ChatKitContext
) -> AsyncIterator[bytes]:
    """Start the ChatKit stream in its own task now; relay it, cancelling it once if the client leaves.

    Started before the response is: a client gone before the first byte still gets its turn run
    and the thread released, as with /api/chat.
    """
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()

    async def produce() -> None:
        try:
            async for chunk in stream:
                queue.put_nowait(chunk)
        except Exception:
            # Raised outside respond() (ChatKit has logged it): end the stream with an error event.
            queue.put_nowait(_STREAM_FAILED)
        finally:
            await _release(runtime, context)
            queue.put_nowait(None)

    task = asyncio.create_task(produce())
    runtime.background.add(task)  # awaited at shutdown
    task.add_done_callback(runtime.background.discard)

    async def relay() -> AsyncIterator[bytes]:
        finished = False
        try:
            while (chunk := await queue.get()) is not None:
                yield chunk
            finished = True
        finally:
            if not finished:
                task.cancel()

    return relay()


async def _release(runtime: ChatRuntime, context: ChatKitContext) -> None:
    if context.turn is None or context.claimed is None:
        return
    try:
        await repository.release_conversation(
            runtime.engine, conversation_id=context.claimed, turn=context.turn
        )
    except Exception:
        # The claim expires on its own; the client's answer does not depend on this.
        log.warning("could not release chatkit turn %s", context.turn, exc_info=True)


@router.get("/health", summary="ChatKit endpoint health")
async def chatkit_health(request: Request, user: CurrentUser) -> dict[str, str]:
    return {"store": "postgres", "model": request.app.state.settings.model_name, "status": "ok"}
