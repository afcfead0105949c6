"""Starting what the benchmark measures: a fresh PostgreSQL database, processes that are
stopped with the run (the stub, uvicorn), and the tree of another git revision (`--baseline`)."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import psycopg

from backend.core.config import normalize_database_url
from backend.server.cli import migrate
from bench.env import isolated_env

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def database_server(tmp: Path) -> str:
    """BENCH_DATABASE_URL's server, or an embedded PostgreSQL (started on first use)."""
    server = os.environ.get("BENCH_DATABASE_URL")
    if server:
        return normalize_database_url(server).replace("postgresql+psycopg://", "postgresql://", 1)
    from backend.core.embedded import embedded_database_url

    return embedded_database_url(tmp).replace("postgresql+psycopg://", "postgresql://", 1)


@contextmanager
def database(tmp: Path, source: Path | None = None) -> Iterator[str]:
    """A fresh database on `database_server`, migrated by this tree (or by `source`'s tree)."""
    server = database_server(tmp)
    name = "bench_" + secrets.token_hex(4)
    with psycopg.connect(server, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base, _, query = server.partition("?")
    url = base.rsplit("/", 1)[0] + "/" + name + (("?" + query) if query else "")
    try:
        if source is None:
            migrate(normalize_database_url(url))
        else:  # the baseline's own migrations, run by its own alembic env
            env = {**isolated_env(), "DATABASE_URL": url, "PYTHONPATH": str(source)}
            alembic = [sys.executable, "-m", "alembic", "upgrade", "head"]
            subprocess.run(alembic, cwd=source, env=env, check=True, stdout=subprocess.DEVNULL)
        yield url
    finally:
        with psycopg.connect(server, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        if source is None and not os.environ.get("BENCH_DATABASE_URL"):
            # Stop the embedded server now: its atexit hook runs after `tmp` is deleted, when
            # `pg_ctl stop` can no longer find the data directory and postgres lingers.
            from backend.core.embedded import stop_embedded

            stop_embedded(tmp)


def start(
    cmd: list[str], env: dict[str, str], stack: ExitStack, cwd: Path = ROOT
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(cmd, env=env, cwd=cwd)

    def stop() -> None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()

    stack.callback(stop)
    return proc


def serve(
    env: dict[str, str], port: int, stack: ExitStack, workers: int = 1, source: Path = ROOT
) -> subprocess.Popen[bytes]:
    """The service (from the tree at `source`) with `workers` uvicorn workers on `port`, up and
    answering /health."""
    server = start(
        [
            *(sys.executable, "-m", "uvicorn", "backend.main:app"),
            *("--host", "127.0.0.1", "--port", str(port), "--workers", str(workers)),
            *("--no-access-log", "--log-level", "warning"),
        ],
        {**env, "PYTHONPATH": str(source)} if source != ROOT else env,
        stack,
        source,
    )
    wait_http(f"http://127.0.0.1:{port}/health", server)
    return server


def baseline_tree(rev: str, into: Path) -> Path:
    """The files of git revision `rev` of this repository, extracted into `into`."""
    into.mkdir(parents=True)
    archive = subprocess.run(
        ["git", "-C", str(ROOT), "archive", "--format=tar", rev],
        check=True,
        capture_output=True,
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(into)], input=archive, check=True)
    return into


def wait_http(url: str, proc: subprocess.Popen[bytes], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process for {url} exited with {proc.returncode}")
        try:
            httpx.get(url, timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not come up")
