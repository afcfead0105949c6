"""Database access: the async engine (psycopg 3), its pool rules, sessions, and the metadata's
naming convention.

What sits in front of PostgreSQL (DATABASE_POOLER) decides how the engine connects:

- `none`, a direct connection: the statement timeout is a startup option
  (`options=-c statement_timeout=N`), so it holds for every statement of the session, and psycopg
  prepares statements it runs often on the server.
- `transaction`, PgBouncer (or another pooler) in transaction mode: each transaction (each
  statement, in autocommit) may run on a different server connection, shared with other clients.
  PgBouncer refuses a startup `options` ("unsupported startup parameter: options"), and before
  1.21 (Debian 12 ships 1.18) it does not track protocol-level prepared statements, so psycopg
  must not prepare (`prepare_threshold=None`). See `apply_statement_timeout_per_transaction` for
  where the timeout goes then.
"""

from __future__ import annotations

import logging
import re
import select
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
    timeout_ms = settings.database_statement_timeout_ms
    pooled = settings.database_pooler == "transaction"
    connect_args: dict[str, Any] = {
        "connect_timeout": max(1, int(settings.database_connect_timeout)),
        "application_name": "task-assistant",  # a startup parameter PgBouncer passes on
    }
    if pooled:
        connect_args["prepare_threshold"] = None  # no server-side prepared statements
    elif timeout_ms:
        connect_args["options"] = f"-c statement_timeout={timeout_ms}"
    engine = create_async_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout=settings.database_connect_timeout,
        pool_pre_ping=False,  # see ping_idle_connections: checked without a round trip
        pool_recycle=1800,
        connect_args=connect_args,
        hide_parameters=True,  # error logs never print message text or task titles
        json_serializer=_json_dumps,
        json_deserializer=orjson.loads,
    )
    ping_idle_connections(engine, settings.database_ping_idle_seconds)
    log_connection_failures(engine)
    if pooled and timeout_ms:
        apply_statement_timeout_per_transaction(engine, timeout_ms)
    return engine


def apply_statement_timeout_per_transaction(engine: AsyncEngine, timeout_ms: int) -> None:
    """Behind a transaction pooler: `SET LOCAL statement_timeout` opens every transaction, and
    single statements get the role's default (checked once; a warning when it is missing).

    Where a transaction pooler keeps a setting:
    - A session `SET statement_timeout` (on connect, on checkout, at `begin`) is NOT safe: it runs
      on whichever server connection the pooler lends for that one statement, stays there for the
      next client that borrows it (PgBouncer resets nothing between transactions in this mode),
      and our own next transaction may get another server connection that never saw it.
    - `SET LOCAL` lasts exactly one transaction, and a transaction stays on one server
      connection: a transaction pooler keeps it. It costs one round trip per transaction. It
      does nothing outside a transaction block, so AUTOCOMMIT connections (the app's
      single-statement engine) skip it.
    - Those single statements get the server's default for the role (or the database),
      `ALTER ROLE app SET statement_timeout = ...`: PostgreSQL applies it whenever the pooler
      opens a server connection, the pooler never changes it, and it costs nothing per
      statement. The app does not set it for its role itself (a persistent change, shared with
      every other client of the role: a deployment's decision); it reads it on its first
      connection, warns when it is missing or longer, and when it is already as short as
      DATABASE_STATEMENT_TIMEOUT_MS it covers transactions too, so `SET LOCAL` is skipped.
    """
    statement = f"SET LOCAL statement_timeout = {int(timeout_ms)}"
    per_transaction = True

    @event.listens_for(engine.sync_engine, "first_connect")
    def _check_role_default(dbapi_connection: Any, record: Any) -> None:
        nonlocal per_transaction
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(
                "SELECT current_user, setting::int FROM pg_settings "
                "WHERE name = 'statement_timeout'"
            )
            user, role_ms = cursor.fetchone()
        except Exception as exc:  # a check only: the first real statement reports failures
            log.debug("statement_timeout not checked: %s", describe_db_error(exc))
            return
        finally:
            cursor.close()
            if not dbapi_connection.autocommit:
                dbapi_connection.rollback()
        if 0 < role_ms <= timeout_ms:
            per_transaction = False
            return
        log.warning(
            "behind the transaction pooler, transactions get statement_timeout=%d ms (SET LOCAL) "
            "but single statements get the role's default, %s; set it once with "
            "ALTER ROLE %s SET statement_timeout = %d",
            timeout_ms,
            f"{role_ms} ms" if role_ms else "none",
            _quote_ident(user),
            timeout_ms,
        )

    @event.listens_for(engine.sync_engine, "begin")
    def _set_local_timeout(conn: Any) -> None:
        if not per_transaction:
            return
        if conn.connection.dbapi_connection.autocommit:
            return
        # SQLAlchemy does not autobegin again inside `begin`; psycopg sends BEGIN first, so this
        # is the transaction's first statement. Through the Connection, a failure is wrapped
        # (and a dead connection invalidated) like any statement's.
        conn.exec_driver_sql(statement)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


_URL_CREDENTIALS = re.compile(r"(://[^:/@\s]*):[^@\s]*@")
_PASSWORD_PARAM = re.compile(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", re.IGNORECASE)
_SQLALCHEMY_BACKGROUND = re.compile(r"\s*\(Background on this error at: [^)]*\)")


def describe_db_error(exc: BaseException, password: str | None = None, limit: int = 400) -> str:
    """`exc` in the database's (or driver's) own words, on one line, without credentials.

    E.g. `OperationalError: connection failed: connection to server at "127.0.0.1", port 6432
    failed: FATAL: unsupported startup parameter: options`. SQLAlchemy's wrapper (with its SQL
    text) is dropped for the driver's error it wraps; a password, given or in a URL or a
    `password=` parameter, never shows.
    """
    orig = getattr(exc, "orig", None)
    error = orig if isinstance(orig, BaseException) else exc
    message = " ".join(str(error).split())
    message = _SQLALCHEMY_BACKGROUND.sub("", message)
    message = _URL_CREDENTIALS.sub(r"\1:***@", message)
    message = _PASSWORD_PARAM.sub(r"\1***", message)
    if password:
        message = message.replace(password, "***")
    described = f"{type(error).__name__}: {message}" if message else type(error).__name__
    return described if len(described) <= limit else described[: limit - 1] + "…"


def log_connection_failures(engine: AsyncEngine, every_seconds: float = 60.0) -> None:
    """Log why a new connection failed: each new reason at once, a repeated one once a minute."""
    password = engine.url.password
    last: dict[str, float] = {}

    @event.listens_for(engine.sync_engine, "handle_error")
    def _log(context: Any) -> None:
        if context.connection is not None:  # a statement's error: the caller handles it
            return
        reason = describe_db_error(context.original_exception, password)
        now = time.monotonic()
        logged = last.get(reason)
        if logged is not None and now - logged < every_seconds:
            return
        if len(last) > 100:
            last.clear()
        last[reason] = now
        log.warning("database connection failed: %s", reason)


def _json_dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def ping_idle_connections(engine: AsyncEngine, idle_seconds: float) -> None:
    """Hand out only live connections: one the database dropped is replaced before use.

    A database restart, `pg_terminate_backend`, a pooler restart or an idle timeout kill pooled
    connections; the first statement on one would fail and its request answer 503. SQLAlchemy's
    `pool_pre_ping` would cost a round trip per checkout (per unit of work). Instead, at every
    checkout (a `checkout` listener raising `DisconnectionError`, on which the pool invalidates
    that connection and tries once more on a fresh one):

    - no round trip: when the server closes a connection it sends the reason (FATAL 57P01 and
      the like) and then closes the socket, so an idle connection whose socket is readable, or
      that psycopg knows is closed or broken, is dead (`server_dropped`, one `poll` call);
    - a round trip only for a connection idle longer than `idle_seconds`, whose death the socket
      may not show yet (a proxy that answers only when spoken to); a connection in steady use is
      never pinged.

    Why here and not by retrying a failed statement: a statement that failed with a disconnect
    may have reached the server and committed (the app's single-statement units commit as they
    run), and a retry would apply it twice. A connection found dead at checkout has been sent
    nothing, so replacing it is safe for every statement, read or write, autocommit or not.
    What is left is the database dropping the connection in the microseconds between this check
    and the statement, or a silent network drop: such a statement fails (503 with Retry-After)
    and is never retried, and SQLAlchemy then recycles the pool's other connections.
    """
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "checkin")
    def _idle_from(dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(sync_engine, "checkout")
    def _check_live(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if server_dropped(dbapi_connection):
            raise DisconnectionError("the database closed this pooled connection")
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return
        try:
            sync_engine.dialect.do_ping(dbapi_connection)
        except Exception:
            raise DisconnectionError("pooled connection is dead") from None  # pool reconnects


def server_dropped(dbapi_connection: Any) -> bool:
    """True when an idle connection is known dead without sending anything on it.

    Between statements the server sends nothing on its own to this app (no LISTEN), except when
    it ends the connection: a readable socket means a FATAL message and/or the close are waiting.
    A rare harmless message (a NOTICE, a reported setting changing at reload) reads as dead too;
    that only costs one reconnect.
    """
    conn = getattr(dbapi_connection, "driver_connection", dbapi_connection)  # psycopg's own
    pgconn = getattr(conn, "pgconn", None)
    if pgconn is None:  # not psycopg: nothing to check
        return False
    if conn.closed or getattr(conn, "broken", False):
        return True
    try:
        fd = pgconn.socket
    except Exception:  # libpq has no socket for it any more
        return True
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLPRI)
    return bool(poller.poll(0))  # POLLHUP and POLLERR are reported whatever was asked


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    return async_sessionmaker(engine, expire_on_commit=False, autoflush=False)
