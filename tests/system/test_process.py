"""`task-assistant serve` as an operator runs it: stopped by signals, refusing clashes up front.

Real processes with the embedded PostgreSQL (DATABASE_URL unset) in a temporary DATA_DIR; what a
test looks for afterwards is what `ps` would show: a postgres process still using that directory.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from bench.env import isolated_env
from tests.support import ROOT
from tests.support.embedded_pg import postgres_data_dir, postgres_using

CLI = Path(sys.executable).with_name("task-assistant")
START_TIMEOUT = 120  # imports alone take seconds on a loaded two-core machine


@pytest.fixture
def pg_data_dir() -> Iterator[Path]:
    """A DATA_DIR the embedded PostgreSQL can always reach (see `postgres_data_dir`)."""
    with postgres_data_dir() as path:
        yield path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _env(data_dir: Path) -> dict[str, str]:
    env = isolated_env()
    env.pop("DATABASE_URL", None)
    env.pop("MIGRATE_ON_START", None)
    env.update(DATA_DIR=str(data_dir), LOG_LEVEL="WARNING")
    return env


def _serve(data_dir: Path, port: int, *extra: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [str(CLI), "serve", "--port", str(port), *extra],
        env=_env(data_dir),
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def _serve_expecting_failure(data_dir: Path, port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(CLI), "serve", "--port", str(port)],
        env=_env(data_dir),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )


def _wait_ready(proc: subprocess.Popen[str], port: int) -> None:
    """Until /health/ready answers 200 (the database is reachable through the app)."""
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            out = proc.stdout.read() if proc.stdout else ""
            pytest.fail(f"server exited with {proc.returncode}:\n{out}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    pytest.fail("server did not become ready")


def _stop(proc: subprocess.Popen[str], sig: signal.Signals) -> int:
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise


def _wait_no_postgres(data_dir: Path, seconds: float = 5) -> list[int]:
    deadline = time.monotonic() + seconds
    while (pids := postgres_using(data_dir)) and time.monotonic() < deadline:
        time.sleep(0.1)
    return pids


Start = Callable[..., subprocess.Popen[str]]


@pytest.fixture
def start_server() -> Iterator[Start]:
    """`start_server(data_dir, port, *args)`: a ready server; any left running at the end is killed."""
    procs: list[subprocess.Popen[str]] = []

    def start(data_dir: Path, port: int, *extra: str) -> subprocess.Popen[str]:
        proc = _serve(data_dir, port, *extra)
        procs.append(proc)
        _wait_ready(proc, port)
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)


def test_sigterm_stops_embedded_postgres_and_a_second_server_fails_fast(
    pg_data_dir: Path, start_server: Start
) -> None:
    port = _free_port()
    first = start_server(pg_data_dir, port)
    assert postgres_using(pg_data_dir), "the embedded PostgreSQL should run under DATA_DIR"

    # A second server on the same DATA_DIR (another port) refuses before touching the database.
    started = time.monotonic()
    second = _serve_expecting_failure(pg_data_dir, _free_port())
    assert second.returncode != 0
    lines = second.stderr.strip().splitlines()
    assert lines[-1].startswith("error: the embedded PostgreSQL in"), second.stderr
    assert f"pid {first.pid}" in lines[-1]
    assert (
        time.monotonic() - started < 120
    )  # fails at once, never waits on a lock (loose: CI is shared)
    # ...and the first server's database is untouched.
    assert httpx.get(f"http://127.0.0.1:{port}/health/ready", timeout=5).status_code == 200

    code = _stop(first, signal.SIGTERM)
    assert code == 0  # a clean stop: uvicorn's re-raised SIGTERM is caught, cleaned up after
    assert _wait_no_postgres(pg_data_dir) == []
    assert not (pg_data_dir / "pg" / "postmaster.pid").exists()


def test_killed_server_leaves_postgres_the_next_one_adopts_and_stops(
    pg_data_dir: Path, start_server: Start
) -> None:
    port = _free_port()
    crashed = start_server(pg_data_dir, port)
    crashed.kill()  # SIGKILL: nothing can clean up
    crashed.wait(10)
    orphans = postgres_using(pg_data_dir)
    assert orphans, "a SIGKILLed server cannot stop its PostgreSQL"

    # Its owner is gone, so the next server (here with two workers) adopts the running server
    # instead of refusing, and SIGINT (Ctrl-C) stops it with the server.
    nxt = start_server(pg_data_dir, port, "--workers", "2")
    assert postgres_using(pg_data_dir) == orphans
    assert _stop(nxt, signal.SIGINT) == 0
    assert _wait_no_postgres(pg_data_dir) == []


def test_taken_port_fails_before_postgres_starts(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        result = _serve_expecting_failure(tmp_path, port)
    assert result.returncode != 0
    assert (
        result.stderr.strip()
        == f"error: 127.0.0.1:{port} is already in use (another server running?)"
    )
    assert (
        time.monotonic() - started < 120
    )  # fails at once, never waits on a lock (loose: CI is shared)
    assert not (tmp_path / "pg").exists(), "nothing should start before the port is known free"
    assert os.listdir(tmp_path) == []
