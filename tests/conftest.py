"""Shared fixtures, all opt-in: a real PostgreSQL database per test session (one per xdist
worker) migrated by Alembic, the app, tokens for two users. A unit test requests none of them
and never touches a database; the api and system tiers start every test on empty tables."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from backend.auth.devkeys import load_or_create_dev_key, mint_token

if TYPE_CHECKING:
    import httpx
    from fastapi import FastAPI

    from backend.core.config import Settings

# The app's modules are imported by the fixtures that need them: the unit tier never pays for
# importing the whole web stack.

# Nothing from the developer's shell or .env may point the tests at a real model or database.
for _var in list(os.environ):
    if _var.startswith(
        ("LLM_", "GEMINI_", "OPENAI_", "BETTER_AUTH_", "JWT_", "DATABASE_", "REDIS_")
    ):
        del os.environ[_var]
os.environ["OPENAI_AGENTS_DISABLE_TRACING"] = "1"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """On xdist workers, the system tier first: its tests take seconds each, and a long one
    dealt out last would leave the other worker idle at the end."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        items.sort(key=lambda item: "/tests/system/" not in str(item.path))


@pytest.fixture(scope="session")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("data")


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Async URL of a freshly created, migrated database (dropped at the end)."""
    from backend.core.config import normalize_database_url
    from backend.server.cli import migrate
    from tests.support.db import create_database, drop_database, server_url

    server = server_url(tmp_path_factory.mktemp("pg"))
    url, name = create_database(server)
    async_url = normalize_database_url(url)
    migrate(async_url)
    yield async_url
    if name:
        drop_database(server, name)


@pytest.fixture
def settings(database_url: str, data_dir: Path) -> Settings:
    from tests.support.app import make_settings

    return make_settings(database_url, data_dir)


@pytest.fixture(scope="session")
def _truncate(database_url: str) -> Iterator[Callable[[], None]]:
    """Empties every table of the worker's database and restarts its identities: one round trip
    on one kept connection. DELETE, not TRUNCATE: on tables this small TRUNCATE's new files cost
    ~15 ms a test, DELETE ~1 ms."""
    import psycopg

    with psycopg.connect(database_url.replace("+psycopg", ""), autocommit=True) as conn:
        tables = [
            t
            for (t,) in conn.execute(
                "SELECT quote_ident(tablename) FROM pg_tables "
                "WHERE schemaname = 'public' AND tablename <> 'alembic_version'"
            )
        ]
        sequences = [
            s
            for (s,) in conn.execute(
                "SELECT pg_get_serial_sequence(quote_ident(table_name), column_name) "
                "FROM information_schema.columns "
                "WHERE table_schema = 'public' AND (is_identity = 'YES' OR "
                "column_default LIKE 'nextval(%')"
            )
        ]
        statement = "; ".join(
            [f"DELETE FROM {t}" for t in tables]
            + [f"SELECT setval('{s}', 1, false)" for s in sequences]
        )
        yield lambda: conn.execute(f"BEGIN; {statement}; COMMIT") if statement else None


@pytest.fixture
def clean_database(_truncate: Callable[[], None]) -> Iterator[None]:
    """Opt-in per-test isolation (the api and system tiers use it for every test): the test
    starts on empty tables. Truncating, not a rolled-back transaction: the app's autocommit
    engine commits each statement on its own, outside any transaction a test could hold."""
    _truncate()
    yield


@pytest.fixture
async def app(settings: Settings) -> FastAPI:
    from backend.main import create_app

    return create_app(settings)


@pytest.fixture
async def client(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    from tests.support.app import running_app

    async with running_app(app) as client:
        yield client


@pytest.fixture
async def stub() -> AsyncIterator[Any]:
    """The OpenAI-compatible stub model on a free port (tests/support/stub_llm.py), over real HTTP."""
    from tests.support.stub_llm import StubLLM

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
