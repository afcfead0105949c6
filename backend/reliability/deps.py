"""FastAPI glue: the chat rate-limit dependency and the Idempotency-Key helper for routes."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any

from fastapi import Depends, Request
from pydantic import BaseModel

from backend.auth import CurrentUser, User
from backend.reliability.idempotency import (
    HEADER,
    IdempotencyClaim,
    IdempotencyStore,
    Replay,
    request_hash,
)
from backend.reliability.ratelimit import RateLimiter
from backend.responses import FastJSONResponse


async def chat_rate_limit(request: Request, user: CurrentUser) -> User:
    """Count one chat turn against the caller's limit (429 with Retry-After when over)."""
    limiter: RateLimiter = request.app.state.rate_limiter
    await limiter.hit(user.id)
    return user


RateLimitedUser = Annotated[User, Depends(chat_rate_limit)]


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
    store: IdempotencyStore = request.app.state.idempotency
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
