"""The embedded PostgreSQL (pgserver) for local runs: one process owns it and stops it.

pgserver counts the processes using a data directory and stops the server from an `atexit` hook
of the last one. uvicorn re-raises SIGTERM on its way out, so those hooks never run, and a killed
process stays counted forever: the server was left running with a stale pid file. Ownership is
an advisory lock instead. The process holding `DATA_DIR/pg.lock` (a `flock`, which the kernel
releases however the process ends) started the server, or adopted one a killed owner left
running, and stops it: at the end of the app's lifespan, after `task-assistant serve` returns,
or at exit. Other processes (the workers of `serve --workers N`, `task-assistant migrate` while a
server runs) only join and never stop it.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import fcntl
import logging
import os
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from backend.core.config import Settings

log = logging.getLogger(__name__)

LOCK_FILE = "pg.lock"


class EmbeddedDatabaseBusy(RuntimeError):
    """Another live process owns the embedded PostgreSQL in DATA_DIR."""

    def __init__(self, data_dir: Path, owner: str) -> None:
        super().__init__(
            f"the embedded PostgreSQL in {data_dir} belongs to another running process "
            f"(pid {owner or '?'}): stop it, or use another DATA_DIR or a DATABASE_URL"
        )


@dataclass
class _Owned:
    """The embedded server this process owns."""

    pgdata: Path
    lock: IO[str]
    """The open lock file; closing it releases ownership."""
    server: Any
    """pgserver's handle (it knows the system user the server runs as)."""


# Per process, like the server it describes: which data directories this process owns.
_owned: dict[Path, _Owned] = {}
_guard = threading.Lock()  # the lifespan starts and stops the server from worker threads


def _pgdata(data_dir: Path) -> Path:
    return (data_dir / "pg").resolve()


def _url(pgdata: Path) -> str:
    return f"postgresql+psycopg://postgres@/postgres?host={quote(str(pgdata), safe='')}"


def _try_lock(data_dir: Path) -> tuple[IO[str] | None, str]:
    """Take the ownership lock if it is free: (open lock file, "") or (None, the owner's pid)."""
    fh = open(data_dir / LOCK_FILE, "a+")  # noqa: SIM115 (held open for as long as we own)
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        fh.seek(0)
        owner = fh.read().strip()
        fh.close()
        return None, owner
    fh.seek(0)
    fh.truncate()
    fh.write(str(os.getpid()))
    fh.flush()
    return fh, ""


def embedded_database_url(data_dir: Path, *, exclusive: bool = False) -> str:
    """Start (or join) the embedded PostgreSQL under `data_dir` and return its async URL.

    The first process to get here owns the server. `exclusive` refuses to join one owned by
    another process (raises EmbeddedDatabaseBusy): a second `serve` on the same DATA_DIR would
    lose its database when the first one stops. Blocking (initdb takes a few seconds the first
    time): call it from a thread in async code.
    """
    import pgserver  # imported lazily: only local runs need it

    logging.getLogger("pgserver").setLevel(logging.WARNING)
    pgdata = _pgdata(data_dir)
    pgdata.parent.mkdir(parents=True, exist_ok=True)
    with _guard:
        if pgdata in _owned:
            return _url(pgdata)
        lock, owner = _try_lock(pgdata.parent)
        if lock is None and exclusive:
            raise EmbeddedDatabaseBusy(data_dir, owner)
        try:
            # cleanup_mode=None: pgserver's at-exit stop is replaced by the owner's stop below.
            server = pgserver.get_server(pgdata, cleanup_mode=None)
        except BaseException:
            if lock is not None:
                lock.close()
            raise
        if lock is not None:
            _owned[pgdata] = _Owned(pgdata, lock, server)
            log.info("embedded PostgreSQL running in %s (pid %s)", pgdata, server.get_pid())
        else:
            log.info("embedded PostgreSQL in %s joined (owned by pid %s)", pgdata, owner or "?")
    return _url(pgdata)


def stop_embedded(data_dir: Path, *, announce: bool = True) -> None:
    """Stop the embedded PostgreSQL under `data_dir` if this process owns it (idempotent)."""
    from pgserver import PostgresServer, pg_ctl  # type: ignore[attr-defined]

    pgdata = _pgdata(data_dir)
    with _guard:
        owned = _owned.pop(pgdata, None)
        if owned is None:
            return
        try:
            if (pgdata / "postmaster.pid").exists():
                # fast: roll back open transactions, disconnect clients, then a clean checkpoint.
                pg_ctl(["-w", "-m", "fast", "stop"], pgdata=pgdata, user=owned.server.system_user)
                if announce:
                    log.info("embedded PostgreSQL in %s stopped", pgdata)
        except Exception:
            log.warning("could not stop the embedded PostgreSQL in %s", pgdata, exc_info=True)
        finally:
            # Leave pgserver's list of processes using the directory, and forget its cached
            # handle: a later start in this process must start the server anew.
            with contextlib.suppress(OSError):  # its list lives in the directory
                owned.server._cleanup()
            PostgresServer._instances.pop(pgdata, None)
            owned.lock.close()


@atexit.register
def _stop_all() -> None:
    """A normal exit (a script, the test run) stops what this process owns; signals are handled
    by `serve` and the app's lifespan, which stop it explicitly."""
    for owned in list(_owned.values()):
        stop_embedded(owned.pgdata.parent, announce=False)  # log streams may be closed by now


def resolve_database_url(settings: Settings) -> str:
    """The configured DATABASE_URL, or the embedded server's (blocking: it may start it)."""
    return settings.database_url or embedded_database_url(settings.data_dir)


@asynccontextmanager
async def app_database_url(settings: Settings) -> AsyncIterator[str]:
    """The app's database URL for its lifespan; an embedded server this process owns stops with it.

    Stopping here, not at exit, is what makes SIGTERM stop it: uvicorn runs the lifespan's
    shutdown, then re-raises the signal, and the process dies without running `atexit` hooks.
    """
    if settings.database_url:
        yield settings.database_url
        return
    url = await asyncio.to_thread(embedded_database_url, settings.data_dir)
    try:
        yield url
    finally:
        await asyncio.to_thread(stop_embedded, settings.data_dir)
