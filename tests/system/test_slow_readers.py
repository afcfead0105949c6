"""A response nobody reads is dropped after RESPONSE_WRITE_TIMEOUT_SECONDS (real sockets)."""

from __future__ import annotations

import asyncio
import socket
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import psycopg
import pytest

from backend.main import create_app
from backend.observability import metrics
from backend.server.httpserver import uvicorn_limits
from tests.support.app import make_settings, serving

DEADLINE = 1.5
MESSAGES, MESSAGE_CHARS = 16, 500_000  # an 8 MB page: more than the kernel's buffers hold
TCP_CLOSE = 7  # tcpi_state once the peer's reset arrived


@pytest.fixture
def conversation(database_url: str) -> str:
    """Alice's conversation of large messages, written straight into the database."""
    cid = uuid.uuid4()
    with psycopg.connect(database_url.replace("+psycopg", "")) as conn:
        conn.execute(
            "INSERT INTO conversations (id, user_id, title) VALUES (%s, 'alice', 'big')", (cid,)
        )
        conn.cursor().executemany(
            "INSERT INTO messages (conversation_id, user_id, role, content) "
            "VALUES (%s, 'alice', %s, %s)",
            [
                (cid, ("user", "assistant")[n % 2], f"{n:02d}" + "x" * MESSAGE_CHARS)
                for n in range(MESSAGES)
            ],
        )
    return str(cid)


@pytest.fixture
async def server(database_url: str, data_dir: Path) -> AsyncIterator[tuple[str, int]]:
    settings = make_settings(
        database_url,
        data_dir,
        response_write_timeout_seconds=DEADLINE,
        max_page_bytes=20_000_000,
        keep_alive_timeout_seconds=0.5,  # its close() alone would wait for the client forever
    )
    async with serving(create_app(settings), **uvicorn_limits(settings, in_process=True)) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


def page_request(conversation: str, authorization: str) -> bytes:
    return (
        f"GET /api/conversations/{conversation}?limit=200 HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        f"Authorization: {authorization}\r\n\r\n"
    ).encode()


def never_reading(server: tuple[str, int], request: bytes) -> socket.socket:
    """A client that sends `request` and reads nothing (with a small receive window)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(server)
    sock.sendall(request)
    return sock


def tcp_state(sock: socket.socket) -> int:
    return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 8)[0]


async def poll(done: Callable[[], bool], within: float) -> bool:
    deadline = time.monotonic() + within
    while not done():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


def drain(sock: socket.socket) -> int:
    """Read what is left on a dropped connection: the bytes, up to the reset (already there:
    this blocks the event loop, and the server, only as long as the kernel's copy takes)."""
    sock.settimeout(1)
    got = 0
    try:
        while chunk := sock.recv(1 << 16):
            got += len(chunk)
    except ConnectionResetError:
        pass
    return got


def dropped() -> float:
    return metrics.SLOW_READERS_DROPPED._value.get()  # type: ignore[attr-defined, no-any-return]


async def test_clients_that_never_read_a_large_page_are_dropped(
    server: tuple[str, int], conversation: str, alice: dict[str, str]
) -> None:
    request = page_request(conversation, alice["Authorization"])
    before = dropped()
    started = time.monotonic()
    # Two ask for the page once, two three times on one connection (pipelined).
    stalled = [never_reading(server, request * n) for n in (1, 1, 3, 3)]
    try:
        # Meanwhile a client that reads late, but within the deadline, gets every answer (the
        # second request waited for it to read the first).
        reader, writer = await asyncio.open_connection(*server)
        writer.write(request * 2)
        await asyncio.sleep(DEADLINE / 4)
        async with asyncio.timeout(DEADLINE * 3):
            for _ in range(2):
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                page = orjson.loads(await reader.readexactly(length))
                assert head.startswith(b"HTTP/1.1 200") and len(page["messages"]) == MESSAGES
        writer.close()

        assert await poll(lambda: all(tcp_state(s) == TCP_CLOSE for s in stalled), DEADLINE + 5)
        elapsed = time.monotonic() - started
        assert DEADLINE * 0.9 <= elapsed < DEADLINE + 5
        assert dropped() - before == len(stalled)
        for sock in stalled:
            assert drain(sock) < length // 2  # the rest was thrown away, not kept for them
    finally:  # a failure must not leave uvicorn waiting for them at shutdown
        for sock in stalled:
            sock.close()
    # and the server answers as before
    reader, writer = await asyncio.open_connection(*server)
    writer.write(b"GET /health HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    async with asyncio.timeout(5):
        assert (await reader.readuntil(b"\r\n")).startswith(b"HTTP/1.1 200")
    writer.close()
