"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Any

from fastapi import APIRouter
from pydantic import BaseModel
from sqlalchemy import text

from backend.core.db import describe_db_error
from backend.web.deps import StateDep
from backend.web.responses import FastJSONResponse

router = APIRouter(tags=["health"])

READY_TIMEOUT_SECONDS = 2.0


class Readiness(BaseModel):
    status: str
    """`ok`, `degraded` (working without an optional dependency) or `unavailable`."""
    model: str
    """The model the agent uses (`offline-rules` for the built-in offline model)."""
    database: str
    """`ok`, `timeout` or `unreachable`."""
    redis: str | None = None
    """With REDIS_URL: `ok`, or `unavailable` (rate limits then run on PostgreSQL: degraded)."""
    reason: str | None = None
    """Why the service is not ready (only when it is not)."""


@router.get("/health", summary="Liveness: the process answers (no database)")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/health/ready",
    summary="Readiness: the database answers within 2 s (Redis is reported, not required)",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: `reason` says why"}},
)
async def ready(state: StateDep) -> FastJSONResponse:
    body: dict[str, Any] = {"model": state.settings.model_name, "database": "ok"}
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            async with state.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
    except TimeoutError:
        body.update(
            status="unavailable", database="timeout", reason="database did not answer within 2 s"
        )
        return FastJSONResponse(body, status_code=503)
    except Exception as exc:  # any failure to reach the database means "not ready"
        # The server's (or driver's) own words: a refused connection, a wrong password, a
        # pooler refusing a startup parameter... never the password itself.
        reason = describe_db_error(exc, state.engine.url.password)
        body.update(
            status="unavailable", database="unreachable", reason=f"database unreachable: {reason}"
        )
        return FastJSONResponse(body, status_code=503)
    body["status"] = "ok"
    redis = state.rate_limits.redis
    if redis is not None:
        # Redis only speeds rate limits up: without it they run on PostgreSQL and the service
        # works, so it is named here (status `degraded`) but keeps the replica in rotation.
        body["redis"] = await redis.status()
        if body["redis"] != "ok":
            body["status"] = "degraded"
    return FastJSONResponse(body)
