"""Connection hygiene over real sockets: slow, idle, huge and over-long requests are cut off."""

from __future__ import annotations

import asyncio
import pickle
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import orjson
import pytest

from backend.core.config import Settings
from backend.main import create_app
from backend.server.httpserver import uvicorn_limits
from tests.support.app import make_settings, serving

TIMEOUT = 1.0
MAX_BODY = 100_000


@pytest.fixture
def limited_settings(database_url: str, data_dir: Path) -> Settings:
    return make_settings(
        database_url,
        data_dir,
        request_read_timeout_seconds=TIMEOUT,
        keep_alive_timeout_seconds=0.5,
        max_body_bytes=MAX_BODY,
    )


@pytest.fixture
async def server(limited_settings: Settings) -> AsyncIterator[tuple[str, int]]:
    """(host, port) of the app served like `task-assistant serve` serves it."""
    app = create_app(limited_settings)
    async with serving(app, **uvicorn_limits(limited_settings, in_process=True)) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


class Conn:
    """A raw HTTP/1.1 client connection."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def open(cls, server: tuple[str, int]) -> Conn:
        return cls(*await asyncio.open_connection(*server))

    async def send(self, data: bytes) -> bool:
        """False once the server has closed the connection."""
        try:
            self.writer.write(data)
            await self.writer.drain()
        except (ConnectionError, OSError):
            return False
        return True

    async def response(self, within: float = 5.0) -> tuple[int, dict[str, str], bytes]:
        async with asyncio.timeout(within):
            head = await self.reader.readuntil(b"\r\n\r\n")
        status_line, *lines = head.decode("latin-1").split("\r\n")
        headers = dict(line.split(": ", 1) for line in lines if line)
        headers = {k.lower(): v for k, v in headers.items()}
        body = await self.reader.readexactly(int(headers.get("content-length", "0")))
        return int(status_line.split()[1]), headers, body

    async def closed_within(self, seconds: float) -> bool:
        """True if the server closes the connection within `seconds` (reading what it sends)."""
        try:
            async with asyncio.timeout(seconds):
                while await self.reader.read(65536):
                    pass
        except TimeoutError:
            return False
        except (ConnectionError, OSError):
            pass
        return True

    def close(self) -> None:
        self.writer.close()


def _request(method: str, path: str, *headers: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: testserver", *headers]
    if body:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def test_slowloris_heads_are_closed_within_the_timeout(server: tuple[str, int]) -> None:
    conns = [await Conn.open(server) for _ in range(50)]
    started = time.monotonic()
    for conn in conns:
        await conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")

    async def trickle(conn: Conn) -> None:
        for _ in range(50):
            if not await conn.send(b"X-Slow: 1\r\n"):
                return
            await asyncio.sleep(0.2)

    tricklers = [asyncio.create_task(trickle(c)) for c in conns]
    closed = await asyncio.gather(*(c.closed_within(TIMEOUT + 2) for c in conns))
    elapsed = time.monotonic() - started
    for task in tricklers:
        task.cancel()
    assert all(closed)
    assert TIMEOUT * 0.9 <= elapsed < TIMEOUT + 1.5
    # and the server still answers
    conn = await Conn.open(server)
    await conn.send(_request("GET", "/health"))
    assert (await conn.response())[0] == 200
    conn.close()


async def test_half_sent_head_gets_408(server: tuple[str, int]) -> None:
    conn = await Conn.open(server)
    await conn.send(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    status, headers, body = await conn.response(within=TIMEOUT + 2)
    assert status == 408
    assert orjson.loads(body)["code"] == "request_timeout"
    assert headers["connection"] == "close" and headers["x-request-id"]
    assert await conn.closed_within(1)


async def test_idle_connections_are_closed(server: tuple[str, int]) -> None:
    never_sent = await Conn.open(server)
    assert await never_sent.closed_within(TIMEOUT + 1)
    # keep-alive: a second request on the same connection is fine, then idleness closes it
    conn = await Conn.open(server)
    for _ in range(2):
        await conn.send(_request("GET", "/health"))
        assert (await conn.response())[0] == 200
        await asyncio.sleep(0.2)
    started = time.monotonic()
    assert await conn.closed_within(2)
    assert time.monotonic() - started < 1.0  # KEEP_ALIVE_TIMEOUT_SECONDS=0.5


async def test_slow_body_gets_408_and_the_connection_closes(
    server: tuple[str, int], alice: dict[str, str]
) -> None:
    conn = await Conn.open(server)
    head = _request(
        "POST",
        "/api/tasks",
        f"Authorization: {alice['Authorization']}",
        "Content-Type: application/json",
        "Content-Length: 100",
    )
    started = time.monotonic()
    await conn.send(head + b'{"title": "slo')
    status, headers, body = await conn.response(within=TIMEOUT + 2)
    assert status == 408
    assert TIMEOUT * 0.9 <= time.monotonic() - started < TIMEOUT + 1
    assert orjson.loads(body) == {
        "detail": "Request body not received in time",
        "code": "request_timeout",
    }
    assert headers["x-request-id"] and headers["x-content-type-options"] == "nosniff"
    assert await conn.closed_within(1)


async def test_unread_body_trickling_after_the_answer_is_cut_off(server: tuple[str, int]) -> None:
    # /mcp answers 401 without reading the body; the client keeps sending it a byte at a time
    conn = await Conn.open(server)
    await conn.send(_request("POST", "/mcp", "Content-Length: 100000") + b"{")
    assert (await conn.response())[0] == 401

    async def trickle() -> None:
        for _ in range(50):
            if not await conn.send(b" "):
                return
            await asyncio.sleep(0.2)

    sender = asyncio.create_task(trickle())
    assert await conn.closed_within(TIMEOUT + 1)
    sender.cancel()


@pytest.mark.parametrize(
    "header_block",
    [
        "X-Big: " + "a" * 1_000_000,
        "Authorization: Bearer " + "a" * 8_000_000,
        "\r\n".join(f"X-Many-{i}: {'b' * 100}" for i in range(200)),  # 22 kB in small headers
    ],
    ids=["1-MB-header", "8-MB-authorization", "22-kB-of-headers"],
)
async def test_huge_heads_are_refused_without_reading_them(
    server: tuple[str, int], header_block: str
) -> None:
    conn = await Conn.open(server)
    head = b"GET /api/tasks HTTP/1.1\r\nHost: x\r\n" + header_block.encode() + b"\r\n\r\n"
    sender = asyncio.create_task(conn.send(head))
    status, headers, body = await conn.response()
    assert status == 431
    assert orjson.loads(body)["code"] == "headers_too_large"
    assert headers["connection"] == "close"
    assert await conn.closed_within(2)
    await sender


@pytest.mark.parametrize(
    ("headers", "detail"),
    [
        ([f"X-H{i}: v" for i in range(120)], "Too many request headers"),
        (["X-One: " + "c" * 9000], "A request header is too large"),
    ],
    ids=["120-headers", "9-kB-header"],
)
async def test_header_count_and_field_size_limits(
    server: tuple[str, int], headers: list[str], detail: str
) -> None:
    conn = await Conn.open(server)
    await conn.send(_request("GET", "/health", *headers))
    status, response_headers, body = await conn.response()
    assert status == 431
    assert orjson.loads(body) == {"detail": detail, "code": "headers_too_large"}
    assert response_headers["x-request-id"]
    conn.close()


@pytest.mark.parametrize("path", ["/api/tasks", "/api/chat", "/api/chatkit", "/mcp"])
async def test_chunked_body_over_the_limit_is_413(
    server: tuple[str, int], alice: dict[str, str], path: str
) -> None:
    conn = await Conn.open(server)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: {alice['Authorization']}\r\n"
        "Content-Type: application/json\r\nAccept: application/json, text/event-stream\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
    ).encode()
    chunk = b'{"title": "' + b"x" * 20_000 + b'"}'

    async def send_chunks() -> None:
        if not await conn.send(head):
            return
        for _ in range(20):  # 400 kB in all, MAX_BODY_BYTES is 100 kB
            if not await conn.send(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"):
                return
            await asyncio.sleep(0.01)
        await conn.send(b"0\r\n\r\n")

    sender = asyncio.create_task(send_chunks())
    status, headers, body = await conn.response()
    assert status == 413, body
    assert orjson.loads(body) == {"detail": "Request body too large", "code": "payload_too_large"}
    assert headers["x-request-id"] and headers["connection"] == "close"
    await sender
    conn.close()


async def test_ordinary_requests_are_unaffected(
    server: tuple[str, int], token_for: Callable[..., str]
) -> None:
    conn = await Conn.open(server)
    body = orjson.dumps({"title": "normal", "description": "y" * 2000})
    auth = f"Authorization: Bearer {token_for('dana')}"
    await conn.send(
        _request("POST", "/api/tasks", auth, "Content-Type: application/json", body=body)
    )
    assert (await conn.response())[0] == 201
    await conn.send(_request("GET", "/api/tasks", auth))
    status, _, listed = await conn.response()
    assert status == 200 and len(orjson.loads(listed)["tasks"]) == 1
    conn.close()


def test_serve_names_the_protocol_so_workers_can_load_it(limited_settings: Settings) -> None:
    from uvicorn.importer import import_from_string

    from backend.server.httpserver import LimitedHttpProtocol

    limits = uvicorn_limits(limited_settings)
    assert import_from_string(limits["http"]) is LimitedHttpProtocol
    assert pickle.loads(pickle.dumps(limits)) == limits  # what --workers N sends each worker
    assert limits["timeout_keep_alive"] == 0.5
