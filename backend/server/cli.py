"""The `task-assistant` command: serve, migrate, and mint development tokens."""

from __future__ import annotations

import argparse
import asyncio
import errno
import os
import signal
import socket
import sys
from types import FrameType

from backend.core.config import Settings, get_settings
from backend.core.schema import ALEMBIC_INI
from backend.core.schema import migrate as migrate_url

__all__ = ["ALEMBIC_INI", "main", "migrate"]


def migrate(url: str | None = None) -> None:
    """`alembic upgrade head` on `url`, or on the configured (or embedded) database."""
    from backend.core.embedded import resolve_database_url

    migrate_url(url or resolve_database_url(get_settings()))


def _token(args: argparse.Namespace) -> None:
    from backend.auth.devkeys import load_or_create_dev_key, mint_token

    settings = get_settings()
    if not settings.dev_auth:
        sys.exit(
            "error: `token` signs with the development key, which the service only trusts when "
            "neither BETTER_AUTH_URL nor JWT_SECRET is set"
        )
    key = load_or_create_dev_key(settings.data_dir)
    print(mint_token(key, args.user, ttl_seconds=args.ttl))


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

    uvicorn re-raises SIGTERM once it has shut down; with the default handler the process would
    die there, `finally` blocks and `atexit` hooks unrun. `_raise_terminated` turns it into an
    exception, the embedded PostgreSQL is stopped, then the signal is re-raised as uvicorn meant.
    """
    import uvicorn
    from pydantic import ValidationError

    from backend.core.embedded import EmbeddedDatabaseBusy, embedded_database_url, stop_embedded
    from backend.core.schema import SchemaBehind
    from backend.server.httpserver import uvicorn_limits

    if args.migrate is not None:  # the environment carries it to the workers too
        os.environ["MIGRATE_ON_START"] = "true" if args.migrate else "false"
        get_settings.cache_clear()
    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = (str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        sys.exit("error: invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))
    try:
        _check_port_free(args.host, args.port)
    except OSError as exc:
        if exc.errno == errno.EADDRINUSE:
            sys.exit(f"error: {args.host}:{args.port} is already in use (another server running?)")
        sys.exit(f"error: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}")

    signal.signal(signal.SIGTERM, _raise_terminated)
    terminated = False
    try:
        url = settings.database_url or embedded_database_url(settings.data_dir, exclusive=True)
        asyncio.run(_check_schema(url, settings))
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
    except _Terminated:
        terminated = True
    except KeyboardInterrupt:
        pass
    finally:
        if not settings.database_url:
            stop_embedded(settings.data_dir)
    if terminated:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        signal.raise_signal(signal.SIGTERM)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="task-assistant")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser(
        "serve", help="check (and when configured, migrate) the database, then serve the API"
    )
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
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

    mig = sub.add_parser("migrate", help="apply Alembic migrations (alembic upgrade head)")
    mig.set_defaults(func=lambda _: migrate())

    tok = sub.add_parser("token", help="print a development token for USER (dev auth mode only)")
    tok.add_argument("user")
    tok.add_argument(
        "--ttl", type=int, default=12 * 3600, help="lifetime in seconds (default 12 h)"
    )
    tok.set_defaults(func=_token)

    args = parser.parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    main()
