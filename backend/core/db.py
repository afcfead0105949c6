"""Database access: the async engine (psycopg 3), its pool rules, sessions, and the metadata's
naming convention."""

from __future__ import annotations

import logging
import time
from typing import Any

import orjson
from sqlalchemy import MetaData, event
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlmodel import SQLModel

from backend.core.config import Settings

log = logging.getLogger(__name__)

# Alembic and the models share this naming convention, so constraint names are stable.
SQLModel.metadata.naming_convention = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
metadata: MetaData = SQLModel.metadata


def create_engine(url: str, settings: Settings) -> AsyncEngine:
    connect_args: dict[str, Any] = {
        "connect_timeout": max(1, int(settings.database_connect_timeout)),
        "application_name": "task-assistant",
    }
    if settings.database_statement_timeout_ms:
        connect_args["options"] = f"-c statement_timeout={settings.database_statement_timeout_ms}"
    engine = create_async_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_connect_timeout,
        pool_pre_ping=False,  # pinged only after idling: see ping_idle_connections
        pool_recycle=1800,
        connect_args=connect_args,
        hide_parameters=True,  # error logs never print message text or task titles
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )
    ping_idle_connections(engine, settings.database_ping_idle_seconds)
    return engine


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def ping_idle_connections(engine: AsyncEngine, idle_seconds: float) -> None:
    """Check a pooled connection that sat idle before handing it out; replace it if dead.

    A database restart (or a proxy's idle timeout) kills idle connections silently, and the
    first statement on one would fail. Pinging every checkout costs a round trip per unit of
    work; a connection in steady use (idle for less than `idle_seconds`) is not pinged.
    """
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            sync_engine.dialect.do_ping(dbapi_connection)
        except Exception:
            raise DisconnectionError("pooled connection is dead") from None  # pool reconnects


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
