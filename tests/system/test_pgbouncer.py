"""Behind PgBouncer as it ships (Debian's package, transaction mode, default settings).

A real `pgbouncer` sits on a free port in front of the test database: with
DATABASE_POOLER=transaction the service's flows pass through it and a long statement is cancelled;
with DATABASE_POOLER=none readiness repeats PgBouncer's refusal of the startup `options`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import psycopg
import pytest
from psycopg import errors
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from backend.core.config import Settings
from backend.core.db import create_engine, describe_db_error, session_factory
from backend.main import create_app
from tests.support.app import make_settings, running_app

PGBOUNCER = shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/sbin")
RUN_AS = "postgres"  # PgBouncer refuses to run as root

pytestmark = pytest.mark.skipif(
    PGBOUNCER is None, reason="pgbouncer is not installed (apt-get install -y pgbouncer)"
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgBouncer:
    """`pgbouncer` in transaction mode, otherwise default settings, on a free port."""

    def __init__(self, server_url: str) -> None:
        url = make_url(server_url)
        if not url.host or url.host.startswith("/") or url.query.get("host"):
            pytest.skip("PgBouncer reaches PostgreSQL over TCP here: set TEST_DATABASE_URL")
        self.server = url
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="pgbouncer-"))
        self.process: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None

    def url(self, password: str | None = None) -> str:
        """The service's DATABASE_URL through PgBouncer."""
        return self.server.set(
            host="127.0.0.1", port=self.port, password=password
        ).render_as_string(hide_password=False)

    def start(self) -> None:
        user = self.server.username or "postgres"
        (self.dir / "userlist.txt").write_text(f'"{user}" ""\n')
        (self.dir / "pgbouncer.ini").write_text(
            "[databases]\n"
            f"* = host={self.server.host} port={self.server.port or 5432}\n"
            "[pgbouncer]\n"
            "listen_addr = 127.0.0.1\n"
            f"listen_port = {self.port}\n"
            "unix_socket_dir =\n"
            "auth_type = trust\n"
            f"auth_file = {self.dir / 'userlist.txt'}\n"
            "pool_mode = transaction\n"
        )
        self.dir.chmod(0o755)
        for f in self.dir.iterdir():
            f.chmod(0o644)
        command = [str(PGBOUNCER), str(self.dir / "pgbouncer.ini")]
        as_user: dict[str, Any] = {}
        if os.geteuid() == 0:  # as `runuser -u postgres --` would, minus its 2 s wait on SIGTERM
            try:
                account = pwd.getpwnam(RUN_AS)
            except KeyError:
                pytest.skip(f"running as root and there is no `{RUN_AS}` user to run PgBouncer as")
            as_user = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        self.log = open(self.dir / "stderr.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen(
            command, stdout=self.log, stderr=subprocess.STDOUT, cwd=self.dir, **as_user
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"pgbouncer exited: {self.output()}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port)):
                return
            time.sleep(0.02)
        raise RuntimeError(f"pgbouncer did not listen within 10 s: {self.output()}")

    def output(self) -> str:
        return (self.dir / "stderr.log").read_text(errors="replace")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.log is not None:
            self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


@pytest.fixture
def pgbouncer(database_url: str) -> Iterator[PgBouncer]:
    bouncer = PgBouncer(database_url)
    try:
        bouncer.start()
        yield bouncer
    finally:
        bouncer.stop()


def pooled_settings(bouncer: PgBouncer, data_dir: Path, **values: Any) -> Settings:
    return make_settings(bouncer.url(), data_dir, database_pooler="transaction", **values)


async def test_flows_through_pgbouncer(
    pgbouncer: PgBouncer, data_dir: Path, alice: dict[str, str]
) -> None:
    app = create_app(pooled_settings(pgbouncer, data_dir))
    async with running_app(app) as client:
        assert (await client.get("/health/ready")).json()["status"] == "ok"

        ids = []
        for i in range(8):
            r = await client.post("/api/tasks", json={"title": f"task {i}"}, headers=alice)
            assert r.status_code == 201, r.text
            ids.append(r.json()["id"])
        for _ in range(8):
            r = await client.get("/api/tasks", headers=alice)
            assert r.status_code == 200 and len(r.json()["tasks"]) == 8
        r = await client.patch(f"/api/tasks/{ids[0]}", json={"completed": True}, headers=alice)
        assert r.status_code == 200 and r.json()["completed"] is True
        assert (await client.delete(f"/api/tasks/{ids[1]}", headers=alice)).status_code == 204
        assert (await client.get(f"/api/tasks/{ids[1]}", headers=alice)).status_code == 404

        # a chat turn with a tool (the built-in offline model), repeated with its Idempotency-Key
        headers = {**alice, "Idempotency-Key": "through-pgbouncer"}
        first = await client.post("/api/chat", json={"message": "add buy milk"}, headers=headers)
        assert first.status_code == 200, first.text
        assert [c["tool"] for c in first.json()["tool_calls"]] == ["add_task"]
        again = await client.post("/api/chat", json={"message": "add buy milk"}, headers=headers)
        assert again.status_code == 200 and again.json() == first.json()
        assert again.headers["idempotent-replayed"] == "true"
        titles = [
            t["title"] for t in (await client.get("/api/tasks", headers=alice)).json()["tasks"]
        ]
        assert titles.count("Buy milk") == 1

        # the journal: the conversation shows the turn and its tool call
        cid = first.json()["conversation_id"]
        conv = (await client.get(f"/api/conversations/{cid}", headers=alice)).json()
        user, assistant = conv["messages"]
        assert (user["role"], user["content"]) == ("user", "add buy milk")
        assert assistant["role"] == "assistant"
        assert assistant["tool_calls"] == first.json()["tool_calls"]

        # another turn in the same conversation, then the list of conversations
        more = await client.post(
            "/api/chat", json={"message": "show me my tasks", "conversation_id": cid}, headers=alice
        )
        assert [c["tool"] for c in more.json()["tool_calls"]] == ["list_tasks"]
        listed = (await client.get("/api/conversations", headers=alice)).json()
        assert cid in str(listed)


async def test_statement_timeout_through_pgbouncer(
    pgbouncer: PgBouncer, database_url: str, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    settings = pooled_settings(pgbouncer, data_dir, database_statement_timeout_ms=200)
    assert settings.database_url is not None
    engine = create_engine(settings.database_url, settings)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    try:
        with caplog.at_level(logging.WARNING, "backend.core.db"):
            # a transaction (a session, or engine.connect()'s implicit one): SET LOCAL
            async with session_factory(engine)() as session:
                with pytest.raises(DBAPIError) as caught:
                    await session.execute(text("SELECT pg_sleep(3)"))
                assert isinstance(caught.value.orig, errors.QueryCanceled)
            async with engine.connect() as conn:
                shown = (await conn.execute(text("SHOW statement_timeout"))).scalar()
                assert shown == "200ms"
        # the role has no default here: single (autocommit) statements run without one, and
        # the first connection said so
        assert "ALTER ROLE" in caplog.text and "single statements" in caplog.text
        async with autocommit.connect() as conn:
            assert (await conn.execute(text("SHOW statement_timeout"))).scalar() == "0"
    finally:
        await engine.dispose()


async def test_no_server_side_prepared_statements(pgbouncer: PgBouncer, data_dir: Path) -> None:
    """Two client connections each run a statement often enough for psycopg to prepare it (5
    times); PgBouncer 1.18 lends them the same server connection, where the second one's
    `_pg3_0` collides with the first's. DATABASE_POOLER=transaction does not prepare."""

    async def interleave(engine: AsyncEngine) -> None:
        try:
            async with engine.connect() as one, engine.connect() as two:
                for conn, cast in ((one, "int"), (two, "text"), (one, "int")):
                    for i in range(7):
                        await conn.execute(text(f"SELECT CAST(:i AS {cast})"), {"i": i})
        finally:
            await engine.dispose()

    settings = pooled_settings(pgbouncer, data_dir, database_statement_timeout_ms=0)
    assert settings.database_url is not None
    await interleave(
        create_engine(settings.database_url, settings).execution_options(
            isolation_level="AUTOCOMMIT"
        )
    )
    preparing = create_async_engine(settings.database_url, isolation_level="AUTOCOMMIT")
    with pytest.raises(DBAPIError) as caught:  # psycopg's default, for contrast
        await interleave(preparing)
    assert isinstance(caught.value.orig, errors.DuplicatePreparedStatement)


async def test_role_default_covers_single_statements(
    pgbouncer: PgBouncer, database_url: str, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The README's advice for single statements, through the pooler (here per database, 150
    ms): autocommit statements are cancelled too, and transactions need no SET LOCAL."""
    server = database_url.replace("postgresql+psycopg://", "postgresql://", 1)
    name = make_url(database_url).database
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'ALTER DATABASE "{name}" SET statement_timeout = 150')
    settings = pooled_settings(pgbouncer, data_dir, database_statement_timeout_ms=200)
    assert settings.database_url is not None
    engine = create_engine(settings.database_url, settings)
    autocommit = engine.execution_options(isolation_level="AUTOCOMMIT")
    started = time.monotonic()
    try:
        with caplog.at_level(logging.WARNING, "backend.core.db"):
            async with autocommit.connect() as conn:
                with pytest.raises(DBAPIError) as caught:
                    await conn.execute(text("SELECT pg_sleep(3)"))
                assert isinstance(caught.value.orig, errors.QueryCanceled)
            async with session_factory(engine)() as session:
                shown = (await session.execute(text("SHOW statement_timeout"))).scalar()
                assert shown == "150ms"  # the role's default: SET LOCAL skipped
                with pytest.raises(DBAPIError) as caught:
                    await session.execute(text("SELECT pg_sleep(3)"))
                assert isinstance(caught.value.orig, errors.QueryCanceled)
        assert "ALTER ROLE" not in caplog.text
        assert time.monotonic() - started < 2
    finally:
        await engine.dispose()
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'ALTER DATABASE "{name}" RESET statement_timeout')


async def test_no_pooler_setting_against_pgbouncer_says_why(
    pgbouncer: PgBouncer, data_dir: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """DATABASE_POOLER=none sends the timeout as a startup option, which PgBouncer refuses."""
    url = pgbouncer.url(password="s3cret-pw")
    app = create_app(make_settings(url, data_dir, database_connect_timeout=2))
    with caplog.at_level(logging.WARNING):
        async with running_app(app) as client:
            r = await client.get("/health/ready")
    assert r.status_code == 503
    body = r.json()
    assert body["database"] == "unreachable"
    assert "unsupported startup parameter: options" in body["reason"], body
    assert body["reason"].startswith("database unreachable: OperationalError: ")
    assert any(  # the log says it too, once per reason and minute
        record.name == "backend.core.db"
        and "unsupported startup parameter: options" in record.getMessage()
        for record in caplog.records
    )
    assert "s3cret-pw" not in body["reason"] and "s3cret-pw" not in caplog.text


def test_error_descriptions_hide_credentials() -> None:
    error = psycopg.OperationalError(
        'connection to "postgresql://app:hunter2@db:5432/x" failed: password=hunter2 '
        "password = 'a b' and the password hunter3\nFATAL:  nope"
    )
    described = describe_db_error(error, password="hunter3")
    assert "hunter" not in described and "a b" not in described
    assert described.startswith("OperationalError: connection to ")
    assert "postgresql://app:***@db:5432/x" in described and described.endswith("FATAL: nope")


async def test_many_concurrent_requests_through_pgbouncer(
    pgbouncer: PgBouncer, data_dir: Path, alice: dict[str, str]
) -> None:
    """Forty requests at once over 20 client connections: transactions interleave on the
    server connections PgBouncer lends."""
    app = create_app(pooled_settings(pgbouncer, data_dir, database_pool_size=20))
    async with running_app(app) as client:
        rs = await asyncio.gather(
            *(client.post("/api/tasks", json={"title": f"t{i}"}, headers=alice) for i in range(40))
        )
        assert [r.status_code for r in rs] == [201] * 40
        tasks = (await client.get("/api/tasks", headers=alice)).json()["tasks"]
        assert len(tasks) == 40
