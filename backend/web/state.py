"""The process's long-lived parts, typed: what the lifespan builds once and every request shares.

The lifespan (`backend.main`) builds one `AppState` and yields it as the app's lifespan state;
Starlette gives every request its own view of it (`request.scope["state"]`). It holds
infrastructure only (engines, the HTTP pool, settings, runtimes); routes get its parts through
the `Annotated` aliases of `backend.web.deps`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import aiohttp
from mcp.server.mcpserver import MCPServer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import Scope

from backend.auth.verifier import TokenVerifier
from backend.chat.runtime import ChatRuntime
from backend.chatkit.server import TaskChatKitServer
from backend.core.config import Settings
from backend.reliability.idempotency import IdempotencyStore
from backend.reliability.ratelimit import RateLimits

STATE_KEY = "app"


@dataclass(frozen=True, slots=True)
class AppState:
    """Everything a request may use that outlives it; built once per process."""

    settings: Settings
    engine: AsyncEngine
    """Transactions (`sessions`, `engine.begin()`)."""
    autocommit_engine: AsyncEngine
    """Single-statement units only (each commits on its own); never used with `.begin()`."""
    sessions: async_sessionmaker[AsyncSession]
    """Real transactions: REST task writes, MCP tools."""
    read_engine: AsyncEngine
    """Reads' own pool (DATABASE_READ_POOL_SIZE connections, autocommit): REST GETs (their
    sessions), conversation reads and the read budget's checks.

    Why a pool of their own rather than a priority scheme on one pool: SQLAlchemy's pool is a
    FIFO queue, so under a crowd of turns a read's checkout waits behind every turn statement
    queued before it (seconds, then a pool timeout: 503). A priority queue would still let
    turns hold every connection when the read arrives. A separate pool needs no change to the
    pool and guarantees reads DATABASE_READ_POOL_SIZE connections nobody else can take; the
    cost is those connections per process (idle ones are cheap in PostgreSQL). It runs in
    autocommit, like the conversation reads always have (a task GET is one statement): no
    BEGIN/COMMIT round trips.
    """
    read_sessions: async_sessionmaker[AsyncSession]
    """Sessions on `read_engine`, for GET routes (`backend.web.deps.get_session`)."""
    http: aiohttp.ClientSession
    """The one outbound HTTP pool (`backend.core.http`)."""
    verifier: TokenVerifier
    chat: ChatRuntime
    chat_reads: ChatRuntime
    """`chat` with `read_engine` as its engine: what GET routes get (`backend.web.deps`)."""
    chatkit: TaskChatKitServer
    mcp: MCPServer
    rate_limits: RateLimits
    idempotency: IdempotencyStore


def state_of(scope: Scope) -> AppState:
    """The app state in a request's scope (for ASGI code and `backend.web.deps`)."""
    state: AppState = scope["state"][STATE_KEY]
    return state


def lifespan_state(state: AppState) -> dict[str, Any]:
    """What the lifespan yields: Starlette copies it into every request's scope."""
    return {STATE_KEY: state}
