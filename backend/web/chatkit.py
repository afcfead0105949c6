"""POST /api/chatkit: the ChatKit protocol, authenticated with the same bearer tokens.

Checks that ChatKit itself would only report inside a 200 stream happen here first, as HTTP
errors: a malformed body (400), an unknown or foreign thread (404), invalid text (422), a turn
already running in the thread (409), the rate limit (429: turns spend the chat budget, thread
updates, deletes and feedback the write budget, everything else the read budget, as the REST
routes do), unsupported operations such as attachments (400).

Turns go through the one turn engine (`chatkit.server.start_turn`), which runs each turn in
its own task; when the client goes away (ChatKit's stop button aborts the request) the turn is
stopped and closed by the engine's rules.
"""

from __future__ import annotations

import logging
from typing import Any

from chatkit.server import StreamingResult
from chatkit.store import NotFoundError
from chatkit.types import (
    AttachmentsCreateReq,
    AttachmentsDeleteReq,
    ChatKitReq,
    InputTranscribeReq,
    ItemsFeedbackReq,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsAddUserMessageReq,
    ThreadsCreateReq,
    ThreadsCustomActionReq,
    ThreadsDeleteReq,
    ThreadsRetryAfterItemReq,
    ThreadsSyncCustomActionReq,
    ThreadsUpdateReq,
)
from fastapi import APIRouter, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import TypeAdapter, ValidationError

from backend.chat.conversations import clean_title
from backend.chat.repository import ConversationNotFound
from backend.chatkit.context import ChatKitContext
from backend.chatkit.limits import check_request
from backend.chatkit.server import start_turn
from backend.chatkit.store import AttachmentsNotSupported
from backend.core.errors import BadRequest, NotFound
from backend.web.apidocs import (
    CHATKIT_ANSWER_REF,
    CHATKIT_REQUEST_REF,
    CHATKIT_STREAM_EVENT_REF,
    sse_frames,
)
from backend.web.deps import ChatDep, ChatKitDep, CurrentUser, SettingsDep
from backend.web.errors import error_responses
from backend.web.limits import chat_rate_limit, limit_reads, limit_writes

log = logging.getLogger(__name__)

router = APIRouter(
    prefix="/api/chatkit",
    tags=["chatkit"],
    responses=error_responses(401, 503),
)

_REQUEST = TypeAdapter[Any](ChatKitReq)
_UNSUPPORTED = (
    AttachmentsCreateReq,
    AttachmentsDeleteReq,
    InputTranscribeReq,
    ItemsFeedbackReq,
    ThreadsAddClientToolOutputReq,
    ThreadsAddStructuredInputReq,
    ThreadsCustomActionReq,
    ThreadsSyncCustomActionReq,
)
_TURNS = (ThreadsCreateReq, ThreadsAddUserMessageReq, ThreadsRetryAfterItemReq)
_WRITES = (ThreadsUpdateReq, ThreadsDeleteReq, ItemsFeedbackReq)
"""Spend the write budget, as REST's changes do; every other request a read."""


class ThreadNotFound(NotFound):
    code = "thread_not_found"
    detail = "Thread not found"


@router.post(
    "",
    summary="The ChatKit protocol endpoint (point ChatKit's api.url here)",
    responses={
        200: {
            "description": "JSON for reads and updates; Server-Sent Events (ChatKit's "
            "`ThreadStreamEvent`s) for `threads.create`, `threads.add_user_message` and "
            "`threads.retry_after_item`",
            "content": {
                "application/json": {"schema": {"$ref": CHATKIT_ANSWER_REF}},
                "text/event-stream": {"schema": sse_frames(CHATKIT_STREAM_EVENT_REF)},
            },
        },
        **error_responses(400, 404, 409, 413, 422, 429),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {"application/json": {"schema": {"$ref": CHATKIT_REQUEST_REF}}},
        }
    },
)
async def chatkit(
    request: Request, user: CurrentUser, runtime: ChatDep, server: ChatKitDep
) -> Response:
    body = await request.body()
    try:
        req = _REQUEST.validate_json(body)
    except ValidationError:
        raise BadRequest("Malformed ChatKit request") from None
    if isinstance(req, _UNSUPPORTED):
        if isinstance(req, (AttachmentsCreateReq, AttachmentsDeleteReq)):
            raise AttachmentsNotSupported()
        raise BadRequest(f"{req.type} is not supported by this server")
    check_request(req, runtime.settings.max_message_chars)
    try:
        if isinstance(req, _TURNS):
            await chat_rate_limit(request, user)
            stream = await start_turn(runtime, req, user)  # type: ignore[arg-type]
            return StreamingResponse(
                stream,
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        if isinstance(req, ThreadsUpdateReq):
            req.params.title = clean_title(req.params.title)
            body = req.model_dump_json().encode()
        # After the checks, like every other route: a refused request spends nothing.
        await (limit_writes if isinstance(req, _WRITES) else limit_reads)(request, user)
        result = await server.process(body, ChatKitContext(user=user))
    except (NotFoundError, ConversationNotFound):
        raise ThreadNotFound() from None
    if isinstance(result, StreamingResult):  # pragma: no cover - every streaming op is a turn
        return StreamingResponse(result, media_type="text/event-stream")
    return Response(result.json, media_type="application/json")


@router.get("/health", summary="ChatKit endpoint health", responses=error_responses(429))
async def chatkit_health(
    request: Request, user: CurrentUser, settings: SettingsDep
) -> dict[str, str]:
    await limit_reads(request, user)  # authenticated, so it spends the read budget like any GET
    return {"store": "postgres", "model": settings.model_name, "status": "ok"}
