"""Every `Annotated` dependency a route takes: the verified caller, a session, the runtimes.

Routes name what they need in their signatures (`user: CurrentUser`, `settings: SettingsDep`);
nothing else in a handler reads process state.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from backend.auth.user import User
from backend.chat.runtime import ChatRuntime
from backend.chat.schemas import ChatRequest
from backend.chatkit.server import TaskChatKitServer
from backend.core.config import Settings
from backend.core.errors import MissingToken
from backend.core.text import clean_text
from backend.web.limits import chat_rate_limit
from backend.web.state import AppState, state_of

# auto_error=False: we raise our own 401 with the standard error body and WWW-Authenticate.
bearer_scheme = HTTPBearer(auto_error=False, description="A Better Auth JWT (or HS256 / dev token)")


async def app_state(request: Request) -> AppState:
    return state_of(request.scope)


StateDep = Annotated[AppState, Depends(app_state)]


async def current_user(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
) -> User:
    """The verified caller of every `/api/*` route."""
    if credentials is None or not credentials.credentials.strip():
        raise MissingToken()
    user = await state_of(request.scope).verifier.verify(credentials.credentials.strip())
    request.state.user_id = user.id  # for the access log
    return user


CurrentUser = Annotated[User, Depends(current_user)]


async def get_session(request: Request, state: StateDep) -> AsyncIterator[AsyncSession]:
    """One session per request; the dependency owns the transaction (commit on success).

    A GET's session uses the reads' own pool (`AppState.read_engine`), so reads never wait for
    a connection behind chat turns."""
    sessions = state.read_sessions if request.method == "GET" else state.sessions
    async with sessions() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": commit before the response is sent, so a failed commit is never reported as success.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]


async def _settings(state: StateDep) -> Settings:
    return state.settings


async def _sessions(state: StateDep) -> async_sessionmaker[AsyncSession]:
    return state.sessions


async def _engine(state: StateDep) -> AsyncEngine:
    return state.engine


async def _chat(request: Request, state: StateDep) -> ChatRuntime:
    # GETs (conversation reads) run on the reads' own pool; everything else on the main one.
    return state.chat_reads if request.method == "GET" else state.chat


async def _chatkit(state: StateDep) -> TaskChatKitServer:
    return state.chatkit


SettingsDep = Annotated[Settings, Depends(_settings)]
SessionsDep = Annotated[async_sessionmaker[AsyncSession], Depends(_sessions)]
"""For routes that run their own transaction (committed before an idempotent answer is stored)."""
EngineDep = Annotated[AsyncEngine, Depends(_engine)]
ChatDep = Annotated[ChatRuntime, Depends(_chat)]
ChatKitDep = Annotated[TaskChatKitServer, Depends(_chatkit)]


async def counted_chat_turn(
    request: Request, user: CurrentUser, body: ChatRequest, settings: SettingsDep
) -> User:
    """Check the turn's message (422), then count the turn: invalid turns never spend the budget.

    As a dependency, `body` has the name and type of the chat route's body, so FastAPI shares
    one body field and validates it before calling this.
    """
    clean_text("message", body.message, settings.max_message_chars)
    return await chat_rate_limit(request, user)


RateLimitedUser = Annotated[User, Depends(counted_chat_turn)]
"""The caller of a chat turn, counted once the turn's body is valid."""
