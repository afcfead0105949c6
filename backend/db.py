"""Database access: the async engine (psycopg 3), sessions, and the embedded PostgreSQL for local runs."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import Depends, Request
from sqlalchemy import MetaData
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)
from sqlmodel import SQLModel

from backend.config import Settings

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


def embedded_database_url(data_dir: Path) -> str:
    """Start (or join) the embedded PostgreSQL under `data_dir` and return its async URL.

    Blocking (initdb takes a few seconds the first time): call it from a thread in async code.
    """
    import pgserver  # imported lazily: only local runs need it

    logging.getLogger("pgserver").setLevel(logging.WARNING)

    pgdata = (data_dir / "pg").resolve()
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    pgserver.get_server(pgdata, cleanup_mode="stop")  # stops when the last process using it exits
    log.info("embedded PostgreSQL running in %s", pgdata)
    return f"postgresql+psycopg://postgres@/postgres?host={quote(str(pgdata), safe='')}"


def resolve_database_url(settings: Settings) -> str:
    """The configured DATABASE_URL, or the embedded server's (blocking; see above)."""
    return settings.database_url or embedded_database_url(settings.data_dir)


def create_engine(url: str, settings: Settings) -> AsyncEngine:
    connect_args: dict[str, Any] = {
        "connect_timeout": max(1, int(settings.database_connect_timeout)),
        "application_name": "task-assistant",
    }
    if settings.database_statement_timeout_ms:
        connect_args["options"] = f"-c statement_timeout={settings.database_statement_timeout_ms}"
    return create_async_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_connect_timeout,
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args=connect_args,
        # Parameters carry message text and task titles: never print them in error logs.
        hide_parameters=True,
    )


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)


async def get_session(request: Request) -> AsyncIterator[AsyncSession]:
    """One session per request; the dependency owns the transaction (commit on success)."""
    factory: async_sessionmaker[AsyncSession] = request.app.state.sessions
    async with factory() as session:
        try:
            yield session
            await session.commit()
        except BaseException:
            await session.rollback()
            raise


# scope="function": commit before the response is sent, so a failed commit is never reported as success.
SessionDep = Annotated[AsyncSession, Depends(get_session, scope="function")]
