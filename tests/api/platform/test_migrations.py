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


def test_0009_numbers_each_users_tasks_in_their_order(empty_database: str) -> None:
    """0009: existing tasks keep their order as 1, 2, 3... per user; the counters start at each
    user's highest number; the downgrade gives global ids back, or refuses, changing nothing."""
    cfg = Config(str(ALEMBIC_INI))
    cfg.attributes["configure_logging"] = False
    cfg.attributes["url"] = empty_database
    command.upgrade(cfg, "0008")
    engine = create_engine(empty_database)
    tasks = "SELECT user_id, number, title FROM tasks ORDER BY user_id, number"
    try:
        with engine.begin() as conn:
            # made in this order (the ids of 0008 and the times say so); no counts: 0009 counts
            made = [("bob", "b1"), ("alice", "a1"), ("bob", "b2"), ("alice", "a2"), ("alice", "a3")]
            for n, (user, title) in enumerate(made):
                conn.execute(
                    text(
                        "INSERT INTO tasks (user_id, title, created_at) "
                        "VALUES (:u, :t, now() + make_interval(secs => :n))"
                    ),
                    {"u": user, "t": title, "n": n},
                )
            conn.execute(text("DELETE FROM tasks WHERE title = 'a2'"))
            conn.execute(
                text("INSERT INTO conversations (id, user_id) VALUES (:c, 'alice')"), {"c": _C}
            )
            conn.execute(
                text(
                    "INSERT INTO messages (conversation_id, user_id, role, content) "
                    "VALUES (:c, 'alice', 'user', 'hi')"
                ),
                {"c": _C},
            )
        command.upgrade(cfg, "head")
        with engine.begin() as conn:
            assert [tuple(r) for r in conn.execute(text(tasks))] == [
                ("alice", 1, "a1"),
                ("alice", 2, "a3"),
                ("bob", 1, "b1"),
                ("bob", 2, "b2"),
            ]
            counts = conn.execute(text("SELECT user_id, tasks, last_number FROM task_counts"))
            assert sorted(tuple(r) for r in counts) == [("alice", 2, 2), ("bob", 2, 2)]
            # bob may now hold a conversation with alice's id: the downgrade cannot keep both
            conn.execute(
                text("INSERT INTO conversations (id, user_id) VALUES (:c, 'bob')"), {"c": _C}
            )
        with pytest.raises(RuntimeError, match=r"Cannot downgrade 0009.*Nothing was changed"):
            command.downgrade(cfg, "0008")
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM conversations WHERE user_id = 'bob'"))
        command.downgrade(cfg, "0008")
        with engine.begin() as conn:
            ids = conn.execute(text("SELECT id, title FROM tasks ORDER BY id"))
            assert [tuple(r) for r in ids] == [(1, "b1"), (2, "a1"), (3, "b2"), (4, "a3")]
            new = conn.execute(
                text("INSERT INTO tasks (user_id, title) VALUES ('x', 'y') RETURNING id")
            )
            assert new.scalar() == 5
    finally:
        engine.dispose()


_C = "6a1b4c0e-0000-4000-8000-000000000001"
