"""Running the app in tests: settings without the developer's environment, the app in process
(`running_app`, ASGI) or on a real socket (`serving`, uvicorn), and the live state of each."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
from fastapi import FastAPI

from backend.core.config import Settings
from backend.web.state import STATE_KEY, AppState


def make_settings(database_url: str, data_dir: Path, **values: Any) -> Settings:
    """Settings of an app a test runs in its own process, without the developer's environment.

    MAX_TURN_CPU is off unless a test sets it: the process is the test's too (its client, its
    checks), so its CPU share says nothing about the app's, and a turn refused for it would be
    a flaky test. `tests/unit/test_admission.py` tests the CPU bound with its own clocks."""
    values.setdefault("max_turn_cpu", 1.0)
    return Settings(_env_file=None, database_url=database_url, data_dir=data_dir, **values)  # type: ignore[call-arg]


def with_lifespan_state(app: FastAPI, state: Any) -> Any:
    """`app` as an ASGI server runs it: every request gets its own copy of the lifespan state."""

    async def asgi(scope: Any, receive: Any, send: Any) -> None:
        await app({**scope, "state": dict(state or {})}, receive, send)

    return asgi


LIVE_STATES: dict[FastAPI, AppState] = {}
"""The state of every app running under `running_app` (tests reach the runtime through it)."""


@contextlib.asynccontextmanager
async def running_app(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """Run `app`'s lifespan and yield a client that talks to it in-process.

    Like an ASGI server, it gives every request its own copy of the lifespan's state.
    """
    async with app.router.lifespan_context(app) as state:
        LIVE_STATES[app] = (state or {})[STATE_KEY]
        transport = httpx.ASGITransport(app=with_lifespan_state(app, state))
        try:
            async with httpx.AsyncClient(
                transport=transport, base_url="http://testserver"
            ) as client:
                yield client
        finally:
            LIVE_STATES.pop(app, None)


@contextlib.asynccontextmanager
async def serving(app: FastAPI, **config: Any) -> AsyncIterator[str]:
    """Serve `app` with uvicorn on a free 127.0.0.1 port (real HTTP); yield its base URL.

    `config`: more uvicorn.Config arguments (`httpserver.uvicorn_limits(settings)`, say).
    """
    import asyncio

    import uvicorn

    sock = listening_socket()
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="on", **config))
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    LIVE_STATES[app] = server.lifespan.state[STATE_KEY]  # type: ignore[index]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task
        sock.close()
        LIVE_STATES.pop(app, None)


def listening_socket() -> socket.socket:
    """A socket bound to a free 127.0.0.1 port, for `uvicorn.Server.serve(sockets=[...])`.

    With TCP_NODELAY, which the connections it accepts inherit: uvicorn sets it only on the
    sockets it creates itself. Without it each response's body waits for the client's delayed
    ACK of its head: 40 ms a request, where the app took 1.
    """
    sock = socket.socket()
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


def free_port() -> int:
    """A 127.0.0.1 port nothing listens on (now): for a server to start on, or to refuse."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
