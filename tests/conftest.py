"""Shared fixtures: a real PostgreSQL database migrated by Alembic, the app, tokens for two users."""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from backend.auth.devkeys import load_or_create_dev_key, mint_token
from backend.core.config import Settings, normalize_database_url
from backend.main import create_app
from backend.web.state import STATE_KEY, AppState
from tests.db import create_database, drop_database, server_url

# Nothing from the developer's shell or .env may point the tests at a real model or database.
for _var in list(os.environ):
    if _var.startswith(
        ("LLM_", "GEMINI_", "OPENAI_", "BETTER_AUTH_", "JWT_", "DATABASE_", "REDIS_")
    ):
        del os.environ[_var]
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Async URL of a freshly created, migrated database (dropped at the end)."""
    from backend.server.cli import migrate

    server = server_url(tmp_path_factory.mktemp("pg"))
    url, name = create_database(server)
    async_url = normalize_database_url(url)
    migrate(async_url)
    yield async_url
    if name:
        drop_database(server, name)


def make_settings(database_url: str, data_dir: Path, **values: Any) -> Settings:
    return Settings(_env_file=None, database_url=database_url, data_dir=data_dir, **values)  # type: ignore[call-arg]


@pytest.fixture
def settings(database_url: str, data_dir: Path) -> Settings:
    return make_settings(database_url, data_dir)


@pytest.fixture(autouse=True)
async def _clean_tables(database_url: str) -> AsyncIterator[None]:
    yield
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT string_agg(quote_ident(tablename), ', ') FROM pg_tables "
                    "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
                )
            )
        ).scalar_one()
        if tables:
            await conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))
    await engine.dispose()


def with_lifespan_state(app: FastAPI, state: Any) -> Any:
    """`app` as an ASGI server runs it: every request gets its own copy of the lifespan state."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        await app({**scope, "state": dict(state or {})}, receive, send)

    return asgi


LIVE_STATES: dict[FastAPI, AppState] = {}
"""The state of every app running under `running_app` (tests reach the runtime through it)."""


@contextlib.asynccontextmanager
async def running_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run `app`'s lifespan and yield a client that talks to it in-process.

    Like an ASGI server, it gives every request its own copy of the lifespan's state.
    """
    async with app.router.lifespan_context(app) as state:
        LIVE_STATES[app] = (state or {})[STATE_KEY]
        transport = httpx.ASGITransport(app=with_lifespan_state(app, state))
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver"
            ) as client:
                yield client
        finally:
            LIVE_STATES.pop(app, None)


@pytest.fixture
async def app(settings: Settings) -> FastAPI:
    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with running_app(app) as client:
        yield client


@pytest.fixture
async def stub() -> AsyncIterator[Any]:
    """The OpenAI-compatible stub model on a free port (bench/stub_llm.py), over real HTTP."""
    from bench.stub_llm import StubLLM

    async with StubLLM() as server:
        yield server


@pytest.fixture
def token_for(data_dir: Path) -> Callable[..., str]:
    """Mint a development-key EdDSA token for a user id."""
    key = load_or_create_dev_key(data_dir)

    def make(user: str, **kwargs: Any) -> str:
        return mint_token(key, user, **kwargs)

    return make


@pytest.fixture
def auth_for(token_for: Callable[..., str]) -> Callable[[str], dict[str, str]]:
    return lambda user: {"Authorization": f"Bearer {token_for(user)}"}


@pytest.fixture
def alice(auth_for: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return auth_for("alice")


@pytest.fixture
def bob(auth_for: Callable[[str], dict[str, str]]) -> dict[str, str]:
    return auth_for("bob")


@contextlib.asynccontextmanager
async def serving(app: FastAPI, **config: Any) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port (real HTTP); yield its base URL.

    `config`: more uvicorn.Config arguments (`httpserver.uvicorn_limits(settings)`, say).
    """
    import asyncio
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    LIVE_STATES[app] = server.lifespan.state[STATE_KEY]  # type: ignore[index]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
        LIVE_STATES.pop(app, None)
