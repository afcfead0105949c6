"""What a stranger can cost us or learn: page sizes as sent, anonymous bodies, `/metrics`."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from backend.auth.devkeys import load_or_create_dev_key
from backend.auth.devlogin import login_secret
from backend.main import create_app
from backend.server.httpserver import uvicorn_limits
from backend.web.devtoken import LOGIN_HEADER
from tests.support.app import make_settings, running_app, serving

PAGE_BYTES = 10_000
READ_TIMEOUT = 10.0  # a 401 that waited for the body would come after this


# --- pages count the bytes of the JSON as sent ----------------------------------------------


async def seed(engine: AsyncEngine, rows: list[tuple[str, str | None]]) -> uuid.UUID:
    """Alice's conversation holding these (content, tool_calls JSON) messages."""
    cid = uuid.uuid4()
    async with engine.begin() as conn:
        await conn.execute(
            text("INSERT INTO conversations (id, user_id, title) VALUES (:c, 'alice', 'odd')"),
            {"c": cid},
        )
        for n, (content, calls) in enumerate(rows):
            await conn.execute(
                text(
                    "INSERT INTO messages (conversation_id, user_id, role, content, tool_calls) "
                    "VALUES (:c, 'alice', :role, :content, CAST(:calls AS jsonb))"
                ),
                {
                    "c": cid,
                    "role": "user" if n % 2 == 0 else "assistant",
                    "content": content,
                    "calls": calls,
                },
            )
    return cid


def sent_bytes(message: dict[str, object]) -> int:
    return len(orjson.dumps(message["content"])) + len(orjson.dumps(message["tool_calls"] or ""))


async def test_a_page_stops_at_max_page_bytes_of_json_as_sent(
    database_url: str, data_dir: Path, engine: AsyncEngine, alice: dict[str, str]
) -> None:
    # 2,000 stored bytes each, but 12,000 (\u0001) and 4,000 ("\"") in the answer, and a tool
    # call whose result is full of newlines and backslashes (~4,000 bytes as JSON).
    call = orjson.dumps([{"tool": "add_task", "arguments": {}, "result": {"t": "\n\\" * 1000}}])
    rows: list[tuple[str, str | None]] = []
    for n in range(4):
        rows += [(f"{n}" + "\x01" * 1999, None), (f"{n}" + '"' * 1999, None), ("ok", call.decode())]
    cid = await seed(engine, rows)
    settings = make_settings(database_url, data_dir, max_page_bytes=PAGE_BYTES)
    pages: list[list[dict[str, object]]] = []
    async with running_app(create_app(settings)) as client:
        after = None
        while True:
            url = f"/api/conversations/{cid}?limit=200" + (f"&after={after}" if after else "")
            r = await client.get(url, headers=alice)
            assert r.status_code == 200
            pages.append(r.json()["messages"])
            after = r.json()["next_cursor"]
            if after is None:
                break
    assert [m["content"] for page in pages for m in page] == [c for c, _ in rows]
    for page in pages:
        # Every message but the last fits under the limit, counted as it was sent.
        assert sum(sent_bytes(m) for m in page[:-1]) < PAGE_BYTES
    largest = max(sum(sent_bytes(m) for m in page) for page in pages)
    assert largest < PAGE_BYTES + 12_100  # the limit plus one message (it crossed it)
    # Counting stored bytes, the first page would have held 5 messages (~36 kB as sent).
    assert [len(page) for page in pages] == [1, 3, 3, 3, 2]


# --- anonymous bodies are refused before they are read --------------------------------------


@pytest.fixture
async def server(database_url: str, data_dir: Path) -> AsyncIterator[tuple[str, int]]:
    settings = make_settings(
        database_url, data_dir, request_read_timeout_seconds=READ_TIMEOUT, max_body_bytes=2_000_000
    )
    async with serving(create_app(settings), **uvicorn_limits(settings, in_process=True)) as url:
        host, port = url.removeprefix("http://").split(":")
        yield host, int(port)


async def head_only(
    server: tuple[str, int], path: str, *headers: str, length: int = 1_000_000
) -> tuple[int, dict[str, str], bytes, float]:
    """Send a request head that promises `length` bytes of body and send none of it: the answer
    (status, headers, body) and how long it took; the connection must then close."""
    reader, writer = await asyncio.open_connection(*server)
    lines = [f"POST {path} HTTP/1.1", "Host: 127.0.0.1", *headers]
    lines += ["Content-Type: application/json", "Accept: application/json, text/event-stream"]
    lines.append(f"Content-Length: {length}")
    started = time.monotonic()
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    async with asyncio.timeout(READ_TIMEOUT / 2):
        head = await reader.readuntil(b"\r\n\r\n")
        status_line, *rest = head.decode("latin-1").split("\r\n")
        found = dict(line.split(": ", 1) for line in rest if line)
        found = {k.lower(): v for k, v in found.items()}
        body = await reader.readexactly(int(found["content-length"]))
        elapsed = time.monotonic() - started
        assert await reader.read() == b""  # closed: the promised body is never read
    writer.close()
    return int(status_line.split()[1]), found, body, elapsed


@pytest.mark.parametrize("path", ["/api/chat", "/api/tasks", "/api/chatkit", "/mcp", "/api/nope"])
async def test_anonymous_bodies_get_401_before_a_byte_of_them(
    server: tuple[str, int], path: str
) -> None:
    status, headers, body, elapsed = await head_only(server, path)
    assert status == 401 and elapsed < 2
    assert orjson.loads(body) == {"detail": "Missing bearer token", "code": "unauthorized"}
    assert headers["www-authenticate"] == "Bearer"
    assert headers["connection"] == "close" and headers["x-request-id"]


@pytest.mark.parametrize(
    "authorization",
    ["Basic YWxpY2U6c2VjcmV0", "Bearer ", "Bearer not-a-jwt", "Bearer a.b", "Bearer a.b.c d"],
)
async def test_malformed_authorization_gets_401_before_the_body(
    server: tuple[str, int], authorization: str
) -> None:
    status, headers, body, elapsed = await head_only(
        server, "/api/chat", f"Authorization: {authorization}"
    )
    assert status == 401 and elapsed < 2
    missing = not authorization.startswith("Bearer ") or authorization == "Bearer "
    assert orjson.loads(body)["detail"] == ("Missing bearer token" if missing else "Invalid token")
    assert headers["www-authenticate"] == ("Bearer" if missing else 'Bearer error="invalid_token"')


async def test_a_token_shaped_header_is_still_verified(
    server: tuple[str, int], alice: dict[str, str]
) -> None:
    """The middleware checks only the shape; the route's dependency verifies the token."""
    forged = alice["Authorization"][:-4] + "AAAA"
    reader, writer = await asyncio.open_connection(*server)
    for authorization, expected in ((forged, 401), (alice["Authorization"], 201)):
        body = orjson.dumps({"title": "mine"})
        writer.write(
            (
                f"POST /api/tasks HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: {authorization}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
            ).encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        assert int(head.split()[1]) == expected
        length = next(
            int(line.split(b":")[1])
            for line in head.split(b"\r\n")
            if line.lower().startswith(b"content-length")
        )
        await reader.readexactly(length)
    writer.close()


async def test_what_needs_no_token_still_answers(server: tuple[str, int], data_dir: Path) -> None:
    secret = login_secret(load_or_create_dev_key(data_dir))
    async with httpx.AsyncClient(base_url=f"http://{server[0]}:{server[1]}") as client:
        # The development token endpoint (its own guards: loopback and the start's secret) takes
        # a body without a bearer token.
        r = await client.post(
            "/api/dev/token", json={"user": "carol"}, headers={LOGIN_HEADER: secret}
        )
        assert r.status_code == 200 and r.json()["user"] == "carol"
        # Requests without a body are the route's to answer (an unknown path stays a 404).
        assert (await client.get("/api/nope")).status_code == 404
        assert (await client.get("/api/tasks")).status_code == 401
        assert (await client.get("/health")).status_code == 200


# --- /metrics tells strangers nothing ------------------------------------------------------


async def test_anonymous_metrics_refused_by_default_and_allowed_with_the_token(
    database_url: str, data_dir: Path
) -> None:
    token = "metrics-" + "t" * 24
    for settings, scraper in (
        (make_settings(database_url, data_dir), None),
        (make_settings(database_url, data_dir, metrics_token=token), f"Bearer {token}"),
    ):
        async with running_app(create_app(settings)) as client:
            anonymous = await client.get("/metrics")
            assert anonymous.status_code == 401
            assert anonymous.headers["www-authenticate"] == "Bearer"
            assert "python" not in anonymous.text and "process_" not in anonymous.text
            if scraper is not None:
                r = await client.get("/metrics", headers={"Authorization": scraper})
                assert r.status_code == 200 and "task_assistant_http_requests" in r.text
