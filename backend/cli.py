"""The `task-assistant` command: serve (migrating first), migrate, and mint development tokens."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from backend.config import get_settings

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def migrate(url: str | None = None) -> None:
    from alembic import command
    from alembic.config import Config

    from backend.db import resolve_database_url

    cfg = Config(str(ALEMBIC_INI))
    cfg.attributes["configure_logging"] = False
    cfg.attributes["url"] = url or resolve_database_url(get_settings())
    command.upgrade(cfg, "head")


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


def _serve(args: argparse.Namespace) -> None:
    import uvicorn
    from pydantic import ValidationError

    from backend.httpserver import uvicorn_limits

    try:
        settings = get_settings()
    except ValidationError as exc:
        problems = (str(e["msg"]).removeprefix("Value error, ") for e in exc.errors())
        sys.exit("error: invalid settings:\n" + "\n".join(f"  - {p}" for p in problems))
    if not args.no_migrate:
        migrate()
    uvicorn.run(
        "backend.main:app",
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=settings.log_level.lower(),
        access_log=False,  # our middleware logs each request with its id
        proxy_headers=True,
        **uvicorn_limits(settings),
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="task-assistant")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="migrate the database, then serve the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.add_argument("--no-migrate", action="store_true", help="skip `alembic upgrade head`")
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
