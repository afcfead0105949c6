"""The test database: a fresh database on TEST_DATABASE_URL's server, or on an embedded PostgreSQL."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg

from backend.core.config import normalize_database_url


def _libpq(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://", 1)


def server_url(tmp_root: Path) -> str:
    """A libpq URL of a PostgreSQL server we may create databases on."""
    url = os.environ.get("TEST_DATABASE_URL")
    if url:
        return _libpq(normalize_database_url(url))
    from backend.core.embedded import embedded_database_url

    return _libpq(embedded_database_url(tmp_root))


def create_database(server: str) -> tuple[str, str | None]:
    """Create `ta_test_<random>` next to `server`'s database; fall back to `server` itself."""
    name = "ta_test_" + secrets.token_hex(4)
    try:
        with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.Error:
        return server, None  # no CREATEDB right: use the given database as it is
    parts = urlsplit(server)
    return urlunsplit(parts._replace(path="/" + name)), name


def drop_database(server: str, name: str) -> None:
    with psycopg.connect(server, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
