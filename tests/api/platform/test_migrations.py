"""Alembic owns the schema: migrations run on an empty database and match the models exactly."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect, text

from backend.core.config import normalize_database_url
from backend.server.cli import ALEMBIC_INI, migrate
from backend.server.tables import metadata
from tests.support.db import create_database, drop_database, server_url


@pytest.fixture
def empty_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    server = server_url(tmp_path_factory.mktemp("pg-migrations"))
    url, name = create_database(server)
    if name is None:
        pytest.skip("the test server does not allow CREATE DATABASE")
    yield normalize_database_url(url)
    drop_database(server, name)


def _diff(url: str) -> list[object]:
    engine = create_engine(url.replace("+psycopg", "+psycopg", 1))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(conn, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_upgrade_from_empty_matches_models(empty_database: str) -> None:
    migrate(empty_database)
    assert _diff(empty_database) == []
    engine = create_engine(empty_database)
    try:
        tables = set(inspect(engine).get_table_names())
    finally:
        engine.dispose()
    assert {"tasks", "conversations", "messages", "alembic_version"} <= tables


def test_downgrade_to_base_and_back(empty_database: str) -> None:
    cfg = Config(str(ALEMBIC_INI))
    cfg.attributes["configure_logging"] = False
    cfg.attributes["url"] = empty_database
    command.upgrade(cfg, "head")
    command.downgrade(cfg, "base")
    engine = create_engine(empty_database)
    try:
        assert set(inspect(engine).get_table_names()) <= {"alembic_version"}
    finally:
        engine.dispose()
    command.upgrade(cfg, "head")
    assert _diff(empty_database) == []


def test_every_migration_has_a_downgrade() -> None:
    for path in (Path(ALEMBIC_INI).parent / "migrations" / "versions").glob("*.py"):
        source = path.read_text()
        assert (
            "def downgrade" in source and "pass\n" not in source.split("def downgrade")[1][:40]
        ), path


def test_task_counts_are_filled_from_the_tasks_present(empty_database: str) -> None:
    """0007 counts each user's existing tasks: the limit holds for data from before it."""
    cfg = Config(str(ALEMBIC_INI))
    cfg.attributes["configure_logging"] = False
    cfg.attributes["url"] = empty_database
    command.upgrade(cfg, "0006")
    engine = create_engine(empty_database)
    try:
        with engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO tasks (user_id, title) VALUES ('alice', 'a'), ('alice', 'b'), ('bob', 'c')"
                )
            )
        command.upgrade(cfg, "head")
        with engine.connect() as conn:
            counts = dict(conn.execute(text("SELECT user_id, tasks FROM task_counts")).all())
    finally:
        engine.dispose()
    assert counts == {"alice": 2, "bob": 1}
