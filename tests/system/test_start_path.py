"""One start path: every start checks the schema revision, and development tokens explain a new key."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
from alembic import command
from alembic.config import Config
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import create_engine, inspect, text

from backend.auth.devkeys import load_or_create_dev_key, mint_token, public_jwk
from backend.auth.jwks import JWKSCache
from backend.auth.verifier import TokenVerifier
from backend.core.config import DEV_ISSUER, Settings, normalize_database_url
from backend.core.errors import Unauthorized
from backend.core.schema import ALEMBIC_INI, SchemaBehind, code_revisions
from backend.main import create_app
from tests.support.app import make_settings, running_app
from tests.support.db import create_database, drop_database, server_url
from tests.support.embedded_pg import postgres_data_dir, postgres_using

HEAD = code_revisions()[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> str:
    return server_url(tmp_path_factory.mktemp("pg-start"))


@pytest.fixture
def database_at(server: str) -> Iterator[Callable[[str | None], str]]:
    """`database_at(revision)`: a new database migrated to `revision` (None: left empty).

    Alembic runs its own event loop: call it through `asyncio.to_thread` from async tests.
    """
    names: list[str] = []

    def make(revision: str | None) -> str:
        url, name = create_database(server)
        if name is None:
            pytest.skip("the test server does not allow CREATE DATABASE")
        names.append(name)
        async_url = normalize_database_url(url)
        if revision:
            cfg = Config(str(ALEMBIC_INI))
            cfg.attributes["configure_logging"] = False
            cfg.attributes["url"] = async_url
            command.upgrade(cfg, revision)
        return async_url

    yield make
    for name in names:
        drop_database(server, name)


def _revision(url: str) -> str | None:
    engine = create_engine(url)
    try:
        if "alembic_version" not in inspect(engine).get_table_names():
            return None
        with engine.connect() as conn:
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


@pytest.mark.parametrize(("revision", "shown"), [("0003", "0003"), (None, "none (empty database)")])
async def test_database_behind_head_refuses_to_start(
    database_at: Callable[[str | None], str],
    data_dir: Path,
    revision: str | None,
    shown: str,
) -> None:
    url = await asyncio.to_thread(database_at, revision)
    app = create_app(make_settings(url, data_dir))  # DATABASE_URL set: no migration by default
    with pytest.raises(SchemaBehind) as refused:
        async with running_app(app):
            pass
    message = str(refused.value)
    assert f"revision {shown}, this code needs {HEAD}" in message
    assert "run `task-assistant migrate`" in message
    assert _revision(url) == revision  # untouched


async def test_migrate_on_start_brings_the_database_to_head(
    database_at: Callable[[str | None], str],
    data_dir: Path,
    alice: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = await asyncio.to_thread(database_at, "0003")
    caplog.set_level(logging.INFO, logger="backend.core.schema")
    app = create_app(make_settings(url, data_dir, migrate_on_start=True))
    async with running_app(app) as client:
        # 0004 made the rate-limit and idempotency tables a chat turn needs
        r = await client.post(
            "/api/chat",
            json={"message": "add a task to buy milk"},
            headers={**alice, "Idempotency-Key": "k-1"},
        )
        assert r.status_code == 200, r.text
    assert _revision(url) == HEAD
    logged = [r.getMessage() for r in caplog.records if r.name == "backend.core.schema"]
    assert f"database schema at revision 0003; migrating to {HEAD}" in logged
    assert f"database schema at revision {HEAD} (head)" in logged


async def test_every_start_logs_the_revision(
    settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="backend.core.schema")
    async with running_app(create_app(settings)) as client:
        assert (await client.get("/health/ready")).status_code == 200
    assert f"database schema at revision {HEAD} (head)" in caplog.messages


async def test_a_newer_schema_starts_with_a_warning(
    database_at: Callable[[str | None], str], data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    url = await asyncio.to_thread(database_at, "head")
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE alembic_version SET version_num = '9999_from_the_future'"))
    engine.dispose()
    async with running_app(create_app(make_settings(url, data_dir))) as client:
        assert (await client.get("/health/ready")).status_code == 200
    assert any("9999_from_the_future, which this code does not know" in m for m in caplog.messages)


def test_migrate_on_start_defaults() -> None:
    assert Settings(_env_file=None).migrates_on_start is True  # type: ignore[call-arg]
    url = "postgresql://u@db/x"
    assert Settings(_env_file=None, database_url=url).migrates_on_start is False  # type: ignore[call-arg]
    assert Settings(_env_file=None, database_url=url, migrate_on_start=True).migrates_on_start  # type: ignore[call-arg]
    assert not Settings(_env_file=None, migrate_on_start=False).migrates_on_start  # type: ignore[call-arg]


async def test_plain_app_start_migrates_the_embedded_database_and_stops_it() -> None:
    """`uvicorn backend.main:app` path: no DATABASE_URL, nothing run before the app."""
    with postgres_data_dir() as data_dir:
        settings = Settings(_env_file=None, data_dir=data_dir)  # type: ignore[call-arg]
        async with running_app(create_app(settings)) as client:
            assert postgres_using(data_dir)
            token = mint_token(load_or_create_dev_key(data_dir), "alice")
            r = await client.post(
                "/api/tasks", json={"title": "milk"}, headers={"Authorization": f"Bearer {token}"}
            )
            assert r.status_code == 201, r.text
        assert postgres_using(data_dir) == []


async def test_token_from_a_deleted_dev_key_says_to_mint_a_new_one(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    old_key = Ed25519PrivateKey.generate()  # the key of a DATA_DIR since deleted
    stale = {"Authorization": f"Bearer {mint_token(old_key, 'alice')}"}
    r = await client.get("/api/tasks", headers=stale)
    assert r.status_code == 401
    assert r.json()["code"] == "unauthorized"
    assert "no longer exists" in r.json()["detail"]
    assert "`task-assistant token <user>`" in r.json()["detail"]
    assert (await client.get("/api/tasks", headers=alice)).status_code == 200


async def test_unknown_key_outside_dev_auth_stays_terse() -> None:
    """The hint is for development auth only; a JWKS-verifying service says no more than before."""
    current = Ed25519PrivateKey.generate()
    verifier = TokenVerifier(
        jwks=JWKSCache(None, None, static_keys=[public_jwk(current)]),
        secret=None,
        issuer=DEV_ISSUER,
        audience=DEV_ISSUER,
    )
    assert (await verifier.verify(mint_token(current, "alice"))).id == "alice"
    with pytest.raises(Unauthorized) as refused:
        await verifier.verify(mint_token(Ed25519PrivateKey.generate(), "alice"))
    assert refused.value.detail == "Invalid token"


def test_processes_starting_together_share_one_new_dev_key(tmp_path: Path) -> None:
    """Replicas or workers starting on a fresh DATA_DIR all trust the same key, none fails."""
    barrier = threading.Barrier(8)

    def load() -> str:
        barrier.wait()
        return str(public_jwk(load_or_create_dev_key(tmp_path))["kid"])

    with ThreadPoolExecutor(8) as pool:
        kids = list(pool.map(lambda _: load(), range(8)))
    assert len(set(kids)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["dev-jwt-ed25519.pem"]
    assert (tmp_path / "dev-jwt-ed25519.pem").stat().st_mode & 0o777 == 0o600
