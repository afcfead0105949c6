"""FastAPI glue: the rate-limit calls and the Idempotency-Key helper for routes.

Rate limits are spent only by requests that will do work: after authentication and after
FastAPI has validated the request. A dependency runs before the endpoint's own parameters are
validated, so routes call `limit_reads` / `limit_writes` as their first statement instead, and
the chat dependency (`backend.web.deps.RateLimitedUser`) declares the chat body itself.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from pydantic import BaseModel

from backend.auth.user import User
from backend.reliability.idempotency import (
    HEADER,
    IdempotencyClaim,
    IdempotencyStore,
    Replay,
    request_hash,
)
from backend.reliability.ratelimit import RateLimits
from backend.web.responses import FastJSONResponse
from backend.web.state import state_of


def _limits(request: Request) -> RateLimits:
    limits: RateLimits = state_of(request.scope).rate_limits
    return limits


async def chat_rate_limit(request: Request, user: User) -> User:
    """A chat turn's admission, for every front door: 503 `server_busy` with Retry-After at once
    when this process runs as many turns as it may (the refusal spends nothing, not even a
    database round trip), else one turn counted against the caller's chat budget (429 with
    Retry-After when over). `turn.begin` takes the slot itself; this spares the budget."""
    state_of(request.scope).chat.check_admission()
    await _limits(request).chat.hit(user.id)
    return user


async def limit_writes(request: Request, user: User) -> None:
    """Count one write (REST task change or MCP tool call); 429 with Retry-After when over."""
    await _limits(request).write.hit(user.id)


async def limit_reads(request: Request, user: User) -> None:
    """Count one read (a GET); 429 with Retry-After when over."""
    await _limits(request).read.hit(user.id)


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
    store: IdempotencyStore = state_of(request.scope).idempotency
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
