"""The process's long-lived parts, typed, and the request dependencies that hand them out.

The lifespan (`backend.main`) builds one `AppState` and yields it as the app's lifespan state;
Starlette gives every request its own view of it (`request.scope["state"]`). Routes take what
they need through the `Annotated` aliases below, and nothing else reads process state.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any

import aiohttp
from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker
from starlette.types import Scope

from backend.config import Settings

if TYPE_CHECKING:
    from mcp.server.mcpserver import MCPServer

    from backend.auth.verifier import TokenVerifier
    from backend.chat.turn import ChatRuntime
    from backend.chatkit.server import TaskChatKitServer
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
    """Real transactions: REST task writes, tool calls with their journal records, MCP tools."""
    http: aiohttp.ClientSession
    """The one outbound HTTP pool (`backend.http`)."""
    verifier: TokenVerifier
    chat: ChatRuntime
    chatkit: TaskChatKitServer
    mcp: MCPServer
    rate_limits: RateLimits
    idempotency: IdempotencyStore


def state_of(scope: Scope) -> AppState:
    """The app state in a request's scope (for ASGI code outside FastAPI's dependencies)."""
    state: AppState = scope["state"][STATE_KEY]
    return state


def app_state(request: Request) -> AppState:
    return state_of(request.scope)


def _settings(request: Request) -> Settings:
    return app_state(request).settings


def _chat(request: Request) -> ChatRuntime:
    return app_state(request).chat


StateDep = Annotated[AppState, Depends(app_state)]
SettingsDep = Annotated[Settings, Depends(_settings)]
ChatDep = Annotated["ChatRuntime", Depends(_chat)]


def lifespan_state(state: AppState) -> dict[str, Any]:
    """What the lifespan yields: Starlette copies it into every request's scope."""
    return {STATE_KEY: state}
