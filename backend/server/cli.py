"""The `task-assistant` command: serve, migrate, check the model and the database, and mint
development tokens.

`--help` and `--version` must answer at once: this module imports only the standard library at
the top; each subcommand imports what it needs (settings, SQLAlchemy, uvicorn, the app) when it runs.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import secrets
import signal
import socket
import sys
import time
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backend.core.config import Settings
    from backend.core.errors import ProviderError
    from backend.core.schema import ALEMBIC_INI  # at run time through `__getattr__` below

__all__ = ["ALEMBIC_INI", "main", "migrate"]

DESCRIPTION = (
    "task-assistant: a stateless, JWT-authenticated task-assistant chat API on PostgreSQL.\n\n"
    "`serve` starts it (with DATABASE_URL unset, on an embedded PostgreSQL in DATA_DIR, which it "
    "starts and stops); `migrate` brings the database's schema up to this code's; `check` says "
    "whether the model and the database work; `token` mints a development token for curl."
)
EPILOG = (
    "Settings are read from the environment, then from a .env file in the current directory (the "
    "environment wins; an empty value means the default). Those a first run meets: DATABASE_URL "
    "(unset: the embedded PostgreSQL), DATA_DIR (default ./.data), LLM_API_KEY, LLM_BASE_URL and "
    "LLM_MODEL, or GEMINI_API_KEY (unset: the built-in offline model), BETTER_AUTH_URL or "
    "JWT_SECRET (unset: development auth, with tokens from `token`), LOG_LEVEL, WORKERS, "
    "MIGRATE_ON_START. Every setting, its default and its limits: docs/configuration.md.\n\n"
    "`task-assistant COMMAND --help` describes each command."
)
DEV_TOKEN_HOURS = "8 h"  # DEV_TOKEN_TTL_SECONDS for --help, unimported (test_cli holds them equal)


def __getattr__(name: str) -> Any:  # ALEMBIC_INI, importable from here, not imported for --help
    if name == "ALEMBIC_INI":
        from backend.core.schema import ALEMBIC_INI

        return ALEMBIC_INI
    raise AttributeError(name)


def migrate(url: str | None = None) -> None:
    """`alembic upgrade head` on `url`, or on the configured (or embedded) database."""
    from backend.core.config import get_settings
    from backend.core.embedded import resolve_database_url
    from backend.core.schema import migrate as migrate_url

    migrate_url(url or resolve_database_url(get_settings()))


def _database_where(settings: Settings, url: str) -> str:
    """The database in words, without credentials: `host:port/name` or the embedded one."""
    from sqlalchemy.engine import make_url

    if not settings.database_url:
        return f"the embedded PostgreSQL in {settings.data_dir}"
    parsed = make_url(url)
    host = str(parsed.host or parsed.query.get("host") or "localhost")
    if host.startswith("/"):
        return f"{parsed.database} (socket in {host})"
    return f"{host}:{parsed.port or 5432}/{parsed.database}"


def _migrate(args: argparse.Namespace) -> None:
    """`alembic upgrade head`, then one sentence: from which revision to which, or none to do."""
    settings = _settings_or_exit()
    from backend.core.embedded import resolve_database_url

    try:
        url = resolve_database_url(settings)
    except Exception as exc:
        sys.exit(f"error: the embedded PostgreSQL did not start ({exc})")
    ok, said = asyncio.run(_migrate_saying(settings, url))
    if not ok:
        sys.exit(f"error: {said}")
    print(said, flush=True)


async def _migrate_saying(settings: Settings, url: str) -> tuple[bool, str]:
    from sqlalchemy.ext.asyncio import create_async_engine

    from backend.core.db import describe_db_error
    from backend.core.schema import code_revisions, database_revision
    from backend.core.schema import migrate as migrate_url

    where = _database_where(settings, url)
    engine = create_async_engine(url)  # a plain one, as migrations/env.py's: no failure logging
    try:
        before = await database_revision(engine)
        await asyncio.to_thread(migrate_url, url)
        after = await database_revision(engine)
    except Exception as exc:
        return False, f"could not migrate {where}: {describe_db_error(exc, engine.url.password)}"
    finally:
        await engine.dispose()
    head, _ = await asyncio.to_thread(code_revisions)
    at = f"{after} (head)" if after == head else f"{after} (this code's head is {head})"
    if before == after:
        return True, f"Already at revision {at}: {where}, nothing to migrate."
    return True, f"Migrated {where} from revision {before or 'none (empty database)'} to {at}."


def _token(args: argparse.Namespace) -> None:
    from backend.auth.devkeys import DEV_TOKEN_TTL_SECONDS, load_or_create_dev_key, mint_token
    from backend.core.config import get_settings

    settings = get_settings()
    if not settings.dev_auth:
        sys.exit(
            "error: `token` signs with the development key, which the service only trusts when "
            "neither BETTER_AUTH_URL nor JWT_SECRET is set"
        )
    key = load_or_create_dev_key(settings.data_dir)
    print(mint_token(key, args.user, ttl_seconds=args.ttl or DEV_TOKEN_TTL_SECONDS))


def _settings_or_exit() -> Settings:
    from pydantic import ValidationError

    from backend.core.config import get_settings

    try:
        return get_settings()
    except ValidationError as exc:
        problems = (str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        sys.exit("error: invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))


def _check(args: argparse.Namespace) -> None:
    """One tiny model call and one database round trip; a sentence each; exit 1 if either fails."""
    settings = _settings_or_exit()
    model_ok, model_said = asyncio.run(_check_model(settings))
    print(model_said, flush=True)
    database_ok, database_said = asyncio.run(_check_database(settings))
    print(database_said, flush=True)
    sys.exit(0 if model_ok and database_ok else 1)


def _key_setting(settings: Settings) -> str:
    if settings.llm_api_key:
        return "LLM_API_KEY"
    return "GEMINI_API_KEY" if settings.gemini_api_key else "LLM_API_KEY (not set)"


def _provider_sentence(settings: Settings, where: str, exc: ProviderError) -> str:
    said = f": {exc.message}" if exc.message else ""
    if exc.auth_failed:
        return (
            f"The model does not work: {where} refused the API key in {_key_setting(settings)} "
            f"(HTTP {exc.status}{said})."
        )
    if exc.model_not_found:
        setting = "LLM_MODEL" if settings.llm_model or not settings.gemini_model else "GEMINI_MODEL"
        return (
            f"The model does not work: {where} has no model {settings.model_name!r} "
            f"(HTTP {exc.status}{said}); check {setting} (and LLM_BASE_URL)."
        )
    if exc.status is None:
        return f"The model does not work: {exc.message or f'no answer from {where}'}."
    return f"The model does not work: {where} answered HTTP {exc.status}{said}."


async def _check_model(settings: Settings) -> tuple[bool, str]:
    from agents import ModelSettings, ModelTracing

    from backend.agent.factory import build_model
    from backend.core.config import OPENAI_BASE_URL
    from backend.core.errors import ProviderError
    from backend.core.http import create_http_session

    if not settings.uses_remote_model:
        return True, (
            "The model works: it is the built-in offline model (rule-based, not an LLM), as no "
            "LLM is configured (set LLM_API_KEY/LLM_BASE_URL/LLM_MODEL or GEMINI_API_KEY)."
        )
    where = settings.model_base_url or OPENAI_BASE_URL
    http = create_http_session(settings)
    started = time.perf_counter()
    try:
        model = build_model(settings, http)
        async with asyncio.timeout(settings.chat_timeout_seconds):
            await model.get_response(
                None,
                "Reply with the single word OK.",
                ModelSettings(),
                [],
                None,
                [],
                ModelTracing.DISABLED,
                previous_response_id=None,
                conversation_id=None,
                prompt=None,
            )
    except ProviderError as exc:
        return False, _provider_sentence(settings, where, exc)
    except TimeoutError:
        return False, (
            f"The model does not work: {where} did not answer within "
            f"CHAT_TIMEOUT_SECONDS ({settings.chat_timeout_seconds:g} s)."
        )
    except Exception as exc:
        return False, f"The model does not work: {type(exc).__name__}: {exc}."
    finally:
        await http.close()
    elapsed = time.perf_counter() - started
    return True, (f"The model works: {settings.model_name} at {where} answered in {elapsed:.1f} s.")


async def _check_database(settings: Settings) -> tuple[bool, str]:
    from sqlalchemy import text

    from backend.core.db import create_engine
    from backend.core.embedded import resolve_database_url
    from backend.core.schema import code_revisions, database_revision

    try:
        url = await asyncio.to_thread(resolve_database_url, settings)
    except Exception as exc:
        return False, f"The database does not work: the embedded PostgreSQL did not start ({exc})."
    where = _database_where(settings, url)
    engine = create_engine(url, settings)
    started = time.perf_counter()
    try:
        async with asyncio.timeout(settings.database_connect_timeout + 10):
            async with engine.connect() as conn:
                version = (await conn.execute(text("SHOW server_version"))).scalar()
            elapsed = time.perf_counter() - started
            revision = await database_revision(engine)
    except Exception as exc:
        said = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        return False, (
            f"The database does not work: {where} did not answer "
            f"({type(exc).__name__}{': ' + said if said else ''})."
        )
    finally:
        await engine.dispose()
    head, _ = await asyncio.to_thread(code_revisions)
    schema = (
        "its schema is up to date"
        if revision == head
        else f"its schema is at {revision or 'no revision'}, this code needs {head}: "
        "run `task-assistant migrate`"
    )
    return True, (
        f"The database works: PostgreSQL {version} at {where} answered in "
        f"{elapsed * 1000:.0f} ms; {schema}."
    )


class _Terminated(BaseException):
    """SIGTERM arrived: unwind through `finally` blocks instead of dying on the spot."""


def _raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise _Terminated


def _check_port_free(host: str, port: int) -> None:
    """Bind and release `host:port` as uvicorn will, so a taken port fails before anything starts."""
    family, kind, proto, _, address = socket.getaddrinfo(
        host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
    )[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        sock.bind(address)


async def _check_schema(url: str, settings: Settings) -> None:
    from backend.core.db import create_engine
    from backend.core.schema import check_schema

    engine = create_engine(url, settings)
    try:
        await check_schema(engine, url, migrate_on_start=settings.migrates_on_start)
    finally:
        await engine.dispose()


def _serve(args: argparse.Namespace) -> None:
    """Fail fast (port, embedded database, schema), serve, and stop the embedded database after.

    uvicorn re-raises SIGTERM (and SIGINT) once it has shut down; by default the process would die
    of it, `finally` blocks unrun, and its parent (`make run`, a supervisor) see it killed. Here it
    is an exception, as SIGINT is: the embedded PostgreSQL is stopped, and the exit code is 0.
    """
    from backend.core.config import get_settings

    if args.migrate is not None:  # the environment carries it to the workers too
        os.environ["MIGRATE_ON_START"] = "true" if args.migrate else "false"
        get_settings.cache_clear()
    # The refusals that need no database and no app come first, before the app's modules are
    # imported (seconds on a small machine): bad settings, a taken port.
    settings = _settings_or_exit()
    try:
        _check_port_free(args.host, args.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            sys.exit(f"error: {args.host}:{args.port} is already in use (another server running?)")
        sys.exit(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")

    from backend.core.embedded import EmbeddedDatabaseBusy, embedded_database_url, stop_embedded
    from backend.core.schema import SchemaBehind

    signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        url = settings.database_url or embedded_database_url(settings.data_dir, exclusive=True)
        asyncio.run(_check_schema(url, settings))
        import uvicorn

        from backend.auth.devlogin import ADDRESS_ENV, START_ENV, base_url
        from backend.server.httpserver import uvicorn_limits

        # One start: its workers inherit these, so they share the development login secret and
        # name the address in the start log (see backend.auth.devlogin).
        os.environ[START_ENV] = secrets.token_urlsafe(16)
        os.environ[ADDRESS_ENV] = base_url(args.host, args.port)
        uvicorn.run(
            "backend.main:app",
            host=args.host,
            port=args.port,
            workers=args.workers or settings.workers,
            log_level=settings.log_level.lower(),
            access_log=False,  # our middleware logs each request with its id
            proxy_headers=True,
            **uvicorn_limits(settings),
        )
    except (EmbeddedDatabaseBusy, SchemaBehind) as exc:
        sys.exit(f"error: {exc}")
    except (_Terminated, KeyboardInterrupt):
        pass  # SIGTERM or SIGINT (Ctrl-C): uvicorn has shut down; exit 0 once cleaned up
    finally:
        if not settings.database_url:
            stop_embedded(settings.data_dir)


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default in its help (none shown where the help says where it comes from);
    the description's and epilog's lines each wrapped on their own (argparse joins them)."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        import textwrap

        return "\n".join(
            textwrap.fill(line, width, initial_indent=indent, subsequent_indent=indent)
            for line in text.splitlines()
        )

    def _get_help_string(self, action: argparse.Action) -> str | None:
        return action.help if action.default is None else super()._get_help_string(action)


def _parser() -> argparse.ArgumentParser:
    from importlib.metadata import PackageNotFoundError, version

    try:
        number = version("task-assistant")
    except PackageNotFoundError:  # run from a checkout that was never installed
        number = "unknown (not installed)"
    parser = argparse.ArgumentParser(
        prog="task-assistant",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=_HelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {number}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, summary: str, details: str = "") -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=summary,
            description=f"{summary[0].upper()}{summary[1:]}.\n\n{details}".rstrip(),
            epilog="Settings: the environment or .env (see `task-assistant --help` and "
            "docs/configuration.md).",
            formatter_class=_HelpFormatter,
        )

    serve = command(
        "serve",
        "check (and when configured, migrate) the database, then serve the API",
        "With DATABASE_URL unset it starts an embedded PostgreSQL in DATA_DIR and stops it on "
        "exit. SIGTERM or Ctrl-C stops it gracefully, with exit code 0.",
    )
    serve.add_argument("--host", default="127.0.0.1", help="the address to listen on")
    serve.add_argument("--port", type=int, default=8000, help="the port to listen on")
    serve.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes (default: the WORKERS setting, 1); one per core is a good start",
    )
    serve.add_argument(
        "--migrate",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="apply pending migrations first (default: MIGRATE_ON_START; unset, only for the "
        "embedded database); without, a database behind the code refuses to start",
    )
    serve.set_defaults(func=_serve)

    command(
        "migrate",
        "apply Alembic migrations (alembic upgrade head) and say from which revision to which",
        "The database: DATABASE_URL, or with it unset the embedded PostgreSQL in DATA_DIR.",
    ).set_defaults(func=_migrate)
    command(
        "check",
        "make one tiny model call and one database round trip, and say whether each works "
        "(exit code 1 if not)",
    ).set_defaults(func=_check)

    tok = command(
        "token",
        "print a development token for USER (dev auth mode only)",
        f"Signed with the development key in DATA_DIR and valid {DEV_TOKEN_HOURS}, as a token from "
        "the playground's sign-in (POST /api/dev/token). Development auth mode only: neither "
        "BETTER_AUTH_URL nor JWT_SECRET set.",
    )
    tok.add_argument("user", help="the user id (the token's `sub`)")
    tok.add_argument(
        "--ttl",
        type=int,
        default=None,
        metavar="SECONDS",
        help=f"lifetime in seconds (default: {DEV_TOKEN_HOURS}, as the playground's sign-in)",
    )
    tok.set_defaults(func=_token)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = _parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
