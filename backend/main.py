"""The FastAPI application: `create_app()` wires routers, middleware and the lifespan.

The lifespan owns every long-lived resource (database engine, HTTP clients, the token verifier,
the model client); nothing else keeps state between requests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from typing import Any

import aiohttp
from agents import Model
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Route

from backend.agent.factory import build_agent, build_model, configure_tracing
from backend.auth.devkeys import UNKNOWN_KEY_DETAIL, load_or_create_dev_key, public_jwk
from backend.auth.jwks import JWKSCache
from backend.auth.user import User
from backend.auth.verifier import TokenVerifier
from backend.chat import history, journal, repository
from backend.chat.failures import recorded_body
from backend.chat.runtime import ChatRuntime
from backend.chatkit.server import TaskChatKitServer
from backend.chatkit.store import PostgresStore
from backend.core.config import Settings, get_settings
from backend.core.db import create_engine, session_factory
from backend.core.embedded import app_database_url
from backend.core.http import create_http_session
from backend.core.logging import configure_logging
from backend.core.schema import check_schema
from backend.mcp.server import McpRuntime, build_mcp_server
from backend.observability import metrics
from backend.observability.metered_model import MeteredModel
from backend.reliability import prepaid
from backend.reliability.idempotency import IdempotencyStore, Recorded
from backend.reliability.ratelimit import (
    FallbackRateLimiter,
    Limiter,
    PostgresRateLimiter,
    RateLimits,
    build_rate_limits,
)
from backend.web import health
from backend.web import metrics as metrics_endpoint
from backend.web.apidocs import install_api_docs
from backend.web.chat import router as chat_router
from backend.web.chatkit import router as chatkit_router
from backend.web.errors import install_error_handlers
from backend.web.head import HeadAsGet
from backend.web.mcp import MCPEndpoint
from backend.web.middleware import AnonymousGuard, RequestContextMiddleware
from backend.web.playground import build_router as build_web_router
from backend.web.playground import log_addresses
from backend.web.state import AppState, lifespan_state
from backend.web.tasks import router as tasks_router

log = logging.getLogger("backend")

GC_THRESHOLDS = (1_000, 20, 100)
"""The cyclic collector's thresholds once serving. Its pauses are what a request waits for when it
lands on one: a young generation of 20,000 objects (the setting before) took 11-47 ms a pass
under W10's crowd; one of 1,000 takes ~2 ms, and every 20th pass, of the middle generation,
~10-15 ms, for the same total CPU (3-4 %). A full pass (tens of ms) comes after 100 middle ones,
minutes apart under load, and only once the long-lived objects grew by a quarter (the
interpreter's own rule; the start-up objects are frozen and never counted)."""


def build_verifier(settings: Settings, http: aiohttp.ClientSession) -> TokenVerifier:
    if settings.dev_auth:
        key = load_or_create_dev_key(settings.data_dir)
        jwks = JWKSCache(None, None, static_keys=[public_jwk(key)])
        log.warning(
            "DEVELOPMENT AUTH: trusting the local development key in %s "
            "(set BETTER_AUTH_URL or JWT_SECRET for real users); "
            "mint a token with `task-assistant token <user>`",
            settings.data_dir,
        )
    elif settings.jwks_url:
        jwks = JWKSCache(
            settings.jwks_url,
            http,
            cache_seconds=settings.jwks_cache_seconds,
            cooldown_seconds=settings.jwks_refetch_cooldown_seconds,
            refetch_budget=settings.jwks_refetch_budget,
        )
        log.info("verifying Better Auth tokens against %s", settings.jwks_url)
    else:
        jwks = None
    if settings.jwt_secret:
        log.info("accepting HS256 tokens signed with JWT_SECRET")
    return TokenVerifier(
        jwks=jwks,
        secret=settings.jwt_secret,
        issuer=settings.expected_issuer,
        audience=settings.expected_audience,
        leeway=settings.jwt_leeway_seconds,
        unknown_key_detail=UNKNOWN_KEY_DETAIL if settings.dev_auth else "Invalid token",
        max_lifetime=settings.max_token_lifetime_seconds,
    )


async def _purge_periodically(
    store: IdempotencyStore, autocommit_engine: AsyncEngine, every_seconds: float = 900
) -> None:
    """Expired idempotency keys, and conversations whose only turn died having done nothing."""
    while True:
        await asyncio.sleep(every_seconds)
        try:
            await store.purge_expired()
            await repository.purge_unlisted(autocommit_engine)
        except Exception:
            log.warning("could not purge expired rows", exc_info=True)


def _reads_on(limits: RateLimits, read_engine: AsyncEngine, batch: int) -> RateLimits:
    """`limits` with the read budget checked on the reads' own pool (its PostgreSQL part), and
    spent `batch` reads at a time (`PrepaidReads`)."""
    read = limits.read
    if isinstance(read, FallbackRateLimiter):
        postgres = PostgresRateLimiter(read_engine, read.postgres.budget)
        read = FallbackRateLimiter(read.redis, postgres, read.circuit)
    elif isinstance(read, PostgresRateLimiter):
        read = PostgresRateLimiter(read_engine, read.budget)
    if isinstance(read, Limiter) and prepaid.applies(read.budget, batch):
        read = prepaid.PrepaidReads(read, read.budget, batch)
    return dataclasses.replace(limits, read=read)


def _recorded_turns(autocommit_engine: AsyncEngine) -> Recorded:
    async def recorded(user_id: str, turn_id: uuid.UUID) -> dict[str, Any] | None:
        turn = await journal.recorded_turn(autocommit_engine, user_id=user_id, turn=turn_id)
        return recorded_body(turn) if turn is not None else None

    return recorded


@asynccontextmanager
async def run_in_own_task(context: AbstractAsyncContextManager[Any]) -> AsyncIterator[None]:
    """Enter and exit `context` in one dedicated task.

    The MCP session manager holds an anyio task group, which must be exited by the task that
    entered it; lifespans are not always entered and exited by the same task (test fixtures).
    """
    entered: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    stop = asyncio.Event()

    async def hold() -> None:
        try:
            async with context:
                entered.set_result(None)
                await stop.wait()
        except BaseException as exc:
            if not entered.done():
                entered.set_exception(exc)
            raise

    task = asyncio.create_task(hold())
    await entered
    try:
        yield
    finally:
        stop.set()
        await task


async def _drain(tasks: set[asyncio.Task[None]], grace_seconds: float = 30.0) -> None:
    """At shutdown, let streaming turns whose clients left finish and store their turn."""
    if tasks:
        await asyncio.wait(set(tasks), timeout=grace_seconds)


def create_app(
    settings: Settings | None = None, *, model: Model | None = None, serving: bool = False
) -> FastAPI:
    """Build the app. `model` replaces the configured model (tests pass a scripted one).

    `serving`: this process exists to serve this app (`backend.main:app`, which `serve` and
    uvicorn load): its lifespan also tunes the process-wide garbage collector. An app a test
    builds leaves the process as it found it."""
    settings = settings or get_settings()
    configure_logging(settings.log_level, settings.log_format)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with AsyncExitStack() as stack:
            url = await stack.enter_async_context(app_database_url(settings))
            engine = create_engine(url, settings)
            stack.push_async_callback(engine.dispose)
            await check_schema(engine, url, migrate_on_start=settings.migrates_on_start)
            metrics.watch_pool(engine)
            stack.callback(metrics_endpoint.process_exiting)
            http = create_http_session(settings)
            stack.push_async_callback(http.close)
            sessions = session_factory(engine)
            # Single-statement units (each CTE is atomic on its own) skip BEGIN/COMMIT round
            # trips (measured: ~30 % less client CPU per statement). Never used with .begin().
            autocommit_engine = engine.execution_options(isolation_level="AUTOCOMMIT")
            # Reads get a pool of their own (why: `AppState.read_engine`).
            read_pool = create_engine(
                url,
                settings.model_copy(
                    update={
                        "database_pool_size": settings.database_read_pool_size,
                        "database_max_overflow": 0,
                    }
                ),
            )
            stack.push_async_callback(read_pool.dispose)
            read_engine = read_pool.execution_options(isolation_level="AUTOCOMMIT")
            configure_tracing(settings)
            agent_model = MeteredModel(model or build_model(settings, http))
            chat = ChatRuntime(
                settings=settings,
                autocommit_engine=autocommit_engine,
                agent=build_agent(settings, agent_model, http),
            )
            rate_limits = _reads_on(
                await build_rate_limits(settings, autocommit_engine, stack),
                read_engine,
                settings.read_budget_batch,
            )

            async def spend_write(user: User) -> None:
                await rate_limits.write.hit(user.id)

            mcp = build_mcp_server(
                app.title,
                app.version,
                McpRuntime(
                    engine=autocommit_engine,
                    max_tasks=settings.max_tasks_per_user,
                    max_output_chars=settings.max_tool_output_chars,
                    spend_write=spend_write,
                ),
            )
            await stack.enter_async_context(run_in_own_task(mcp.session_manager.run()))
            idempotency = IdempotencyStore(
                autocommit_engine,
                ttl_seconds=settings.idempotency_ttl_seconds,
                lock_seconds=settings.turn_lock_seconds,
                recorded=_recorded_turns(autocommit_engine),
            )
            state = AppState(
                settings=settings,
                engine=engine,
                autocommit_engine=autocommit_engine,
                sessions=sessions,
                read_engine=read_engine,
                read_sessions=session_factory(read_engine),
                http=http,
                verifier=build_verifier(settings, http),
                chat=chat,
                chat_reads=dataclasses.replace(chat, autocommit_engine=read_engine),
                chatkit=TaskChatKitServer(PostgresStore(autocommit_engine)),
                mcp=mcp,
                rate_limits=rate_limits,
                idempotency=idempotency,
            )
            purger = asyncio.create_task(_purge_periodically(idempotency, autocommit_engine))
            stack.callback(purger.cancel)
            stack.push_async_callback(_drain, chat.background)
            await asyncio.to_thread(history.warm_up)
            if serving:
                # Start-up objects are permanent: keep the collector from rescanning them.
                gc.freeze()
                gc.set_threshold(*GC_THRESHOLDS)
            if settings.uses_remote_model:
                log.info(
                    "model: %s at %s", settings.model_name, settings.model_base_url or "OpenAI"
                )
            else:
                log.warning(
                    "model: %s, the built-in OFFLINE model (rule-based, not an LLM); "
                    "set LLM_API_KEY/LLM_BASE_URL/LLM_MODEL or GEMINI_API_KEY for a real one",
                    settings.model_name,
                )
            log_addresses(settings, log)
            yield lifespan_state(state)

    app = FastAPI(
        title="task-assistant",
        summary="A stateless, JWT-authenticated task-assistant chat API on PostgreSQL.",
        version="0.1.0",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
    )
    install_error_handlers(app)
    install_api_docs(app)
    # The module routers' routes are built once per process, when their modules are imported;
    # every app serves those same route objects (they hold no state of an app: handlers reach
    # it through the request). `include_router` would rebuild each route for each app, at its
    # first request (~3 ms a route).
    for router in (
        health.router,
        metrics_endpoint.router,
        tasks_router,
        chat_router,
        chatkit_router,
    ):
        app.router.routes.extend(router.routes)
    app.include_router(build_web_router(settings))
    mcp_endpoint = MCPEndpoint()
    for path in ("/mcp", "/mcp/"):
        app.router.routes.append(
            Route(path, mcp_endpoint, methods=["POST"], include_in_schema=False)
        )
    app.add_middleware(HeadAsGet)  # innermost: the layers outside see HEAD (see backend.web.head)
    app.add_middleware(AnonymousGuard)  # innermost of the three: CORS answers for it
    if settings.cors_origins:
        wildcard = settings.cors_origins == ["*"]
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            # Credentials with `*` would let any site act with a user's cookies; tokens go in headers.
            allow_credentials=not wildcard,
            allow_methods=["GET", "POST", "PATCH", "DELETE", "OPTIONS"],
            allow_headers=[
                "Authorization",
                "Content-Type",
                "Idempotency-Key",
                "X-Request-ID",
                "Accept",
                # Browser MCP clients (Streamable HTTP) send these.
                "Mcp-Protocol-Version",
                "Mcp-Session-Id",
                "Last-Event-ID",
            ],
            expose_headers=[
                "Retry-After",
                "X-Request-ID",
                "WWW-Authenticate",
                "Idempotent-Replayed",
                "Mcp-Session-Id",
                "Mcp-Protocol-Version",
            ],
            max_age=600,
        )
    app.add_middleware(
        RequestContextMiddleware,
        max_body_bytes=settings.max_body_bytes,
        read_timeout_seconds=settings.request_read_timeout_seconds,
        max_header_count=settings.max_header_count,
        max_header_field_bytes=settings.max_header_field_bytes,
    )
    return app


_app: FastAPI | None = None


def __getattr__(name: str) -> Any:
    # `backend.main:app` for uvicorn, built on first access so importing this module is cheap.
    global _app
    if name == "app":
        if _app is None:
            _app = create_app(serving=True)
        return _app
    raise AttributeError(name)
