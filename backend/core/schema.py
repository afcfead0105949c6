"""The schema revision at start-up: one query, a migration when configured, or a clear refusal.

However the app starts (`task-assistant serve`, plain `uvicorn backend.main:app`, a test), its
lifespan calls `check_schema`: at Alembic's head it logs the revision and goes on; behind head it
migrates when MIGRATE_ON_START says so, and otherwise refuses to start, naming the command to run.
"""

from __future__ import annotations

import asyncio
import logging
from functools import lru_cache
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.exc import InterfaceError, OperationalError, ProgrammingError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.core.db import describe_db_error

log = logging.getLogger(__name__)

ALEMBIC_INI = Path(__file__).resolve().parents[2] / "alembic.ini"


class SchemaBehind(RuntimeError):
    """The database's schema is older than this code's and migrating at start-up is off."""


def migrate(url: str) -> None:
    """`alembic upgrade head` on `url` (blocking; safe from several processes at once)."""
    from alembic import command
    from alembic.config import Config

    cfg = Config(str(ALEMBIC_INI))
    cfg.attributes["configure_logging"] = False
    cfg.attributes["url"] = url
    command.upgrade(cfg, "head")


@lru_cache
def code_revisions() -> tuple[str, frozenset[str]]:
    """This code's head revision and every revision it knows (read once per process)."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(Config(str(ALEMBIC_INI)))
    head = script.get_current_head()
    assert head is not None, "migrations/versions holds no revision"
    return head, frozenset(rev.revision for rev in script.walk_revisions())


async def database_revision(engine: AsyncEngine) -> str | None:
    """The revision recorded in `alembic_version`; None for a database never migrated."""
    async with engine.connect() as conn:
        try:
            return (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar()
        except ProgrammingError as exc:
            if getattr(exc.orig, "sqlstate", None) == "42P01":  # undefined_table
                return None
            raise


async def check_schema(engine: AsyncEngine, url: str, *, migrate_on_start: bool) -> None:
    """Log the database's revision; migrate it, or raise SchemaBehind, when it is behind head.

    An unreachable database is only logged: the app starts, answers 503, and recovers by itself.
    """
    head, known = await asyncio.to_thread(code_revisions)
    try:
        current = await database_revision(engine)
    except (OperationalError, InterfaceError, PoolTimeoutError, OSError) as exc:
        log.warning(
            "schema revision not checked: database unreachable (%s)",
            describe_db_error(exc, engine.url.password),
        )
        return
    if current == head:
        log.info("database schema at revision %s (head)", current)
        return
    if current is not None and current not in known:
        log.warning(
            "database schema at revision %s, which this code does not know (newer code migrated "
            "it?); this code expects %s",
            current,
            head,
        )
        return
    if not migrate_on_start:
        raise SchemaBehind(
            f"database schema at revision {current or 'none (empty database)'}, this code needs "
            f"{head}: run `task-assistant migrate` (or set MIGRATE_ON_START=true)"
        )
    log.info("database schema at revision %s; migrating to %s", current or "none", head)
    await asyncio.to_thread(migrate, url)
    log.info("database schema at revision %s (head)", await database_revision(engine))
