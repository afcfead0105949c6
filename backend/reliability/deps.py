"""FastAPI glue: the rate-limit calls and the Idempotency-Key helper for routes.

Rate limits are spent only by requests that will do work: after authentication and after
FastAPI has validated the request. A dependency runs before the endpoint's own parameters are
validated, so routes call `limit_reads` / `limit_writes` as their first statement instead, and
the chat dependency declares the chat body itself (FastAPI then validates it first).
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel

from backend.auth import CurrentUser, User
from backend.chat.schemas import ChatRequest
from backend.config import Settings
from backend.deps import app_state
from backend.reliability.idempotency import (
    HEADER,
    IdempotencyClaim,
    IdempotencyStore,
    Replay,
    request_hash,
)
from backend.reliability.ratelimit import RateLimits
from backend.responses import FastJSONResponse
from backend.textrules import clean_text


def _limits(request: Request) -> RateLimits:
    limits: RateLimits = app_state(request).rate_limits
    return limits


async def chat_rate_limit(request: Request, user: User) -> User:
    """Count one chat turn against the caller's limit (429 with Retry-After when over)."""
    await _limits(request).chat.hit(user.id)
    return user


async def limit_writes(request: Request, user: User) -> None:
    """Count one write (REST task change or MCP tool call); 429 with Retry-After when over."""
    await _limits(request).write.hit(user.id)


async def limit_reads(request: Request, user: User) -> None:
    """Count one read (a GET); 429 with Retry-After when over."""
    await _limits(request).read.hit(user.id)


async def counted_chat_turn(request: Request, user: CurrentUser, body: ChatRequest) -> User:
    """Check the turn's message (422), then count the turn: invalid turns never spend the budget.

    As a dependency, `body` has the name and type of the chat route's body, so FastAPI shares
    one body field and validates it before calling this.
    """
    settings: Settings = app_state(request).settings
    clean_text("message", body.message, settings.max_message_chars)
    return await chat_rate_limit(request, user)


RateLimitedUser = Annotated[User, Depends(counted_chat_turn)]
"""The caller of a chat turn, counted once the turn's body is valid."""


def replay_response(replay: Replay) -> FastJSONResponse:
    return FastJSONResponse(
        replay.body, status_code=replay.status_code, headers={"Idempotent-Replayed": "true"}
    )


async def claim_idempotency_key(
    request: Request,
    user: User,
    body: BaseModel,
    *,
    turn_id: uuid.UUID | None = None,
    wait: bool = True,
) -> IdempotencyClaim | Replay | None:
    """None when the request has no Idempotency-Key header."""
    key = request.headers.get(HEADER)
    if key is None:
        return None
    store: IdempotencyStore = app_state(request).idempotency
    fingerprint = request_hash(request.method, request.url.path, body.model_dump(mode="json"))
    return await store.begin(user.id, key, fingerprint, turn_id=turn_id, wait=wait)


async def idempotent(
    request: Request,
    user: User,
    body: BaseModel,
    run: Callable[[], Awaitable[BaseModel]],
    status_code: int = 200,
) -> Any:
    """Run `run()` once per Idempotency-Key (if the request has one) and store its answer."""
    claim = await claim_idempotency_key(request, user, body)
    if isinstance(claim, Replay):
        return replay_response(claim)
    try:
        result = await run()
    except BaseException:
        if claim is not None:
            await claim.release()
        raise
    if claim is not None:
        await claim.complete(status_code, result.model_dump(mode="json"))
    return result
