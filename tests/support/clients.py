"""Protocol clients the tests share: ChatKit requests and their SSE events parsed back into
`chatkit.types`, and an MCP client session over Streamable HTTP."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
from chatkit.types import (
    InferenceOptions,
    ItemsListParams,
    ItemsListReq,
    Page,
    Thread,
    ThreadAddUserMessageParams,
    ThreadItem,
    ThreadsAddUserMessageReq,
    ThreadStreamEvent,
    UserMessageInput,
    UserMessageTextContent,
)
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.types import CallToolResult
from pydantic import BaseModel, TypeAdapter

EVENTS = TypeAdapter[Any](ThreadStreamEvent)
ITEMS = TypeAdapter[Any](Page[ThreadItem])
THREADS = TypeAdapter[Any](Page[Thread])


def user_input(text: str) -> UserMessageInput:
    return UserMessageInput(
        content=[UserMessageTextContent(text=text)],
        attachments=[],
        inference_options=InferenceOptions(),
    )


async def stream(client: httpx.AsyncClient, req: BaseModel, headers: dict[str, str]) -> list[Any]:
    r = await client.post(
        "/api/chatkit",
        content=req.model_dump_json(),
        headers={**headers, "content-type": "application/json"},
    )
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/event-stream")
    return [
        EVENTS.validate_json(line[6:]) for line in r.text.splitlines() if line.startswith("data: ")
    ]


async def call(
    client: httpx.AsyncClient, req: BaseModel, headers: dict[str, str]
) -> httpx.Response:
    return await client.post(
        "/api/chatkit",
        content=req.model_dump_json(),
        headers={**headers, "content-type": "application/json"},
    )


def done_items(events: list[Any], kind: str) -> list[Any]:
    return [e.item for e in events if e.type == "thread.item.done" and e.item.type == kind]


def add_message(thread_id: str, text: str) -> ThreadsAddUserMessageReq:
    return ThreadsAddUserMessageReq(
        params=ThreadAddUserMessageParams(thread_id=thread_id, input=user_input(text))
    )


async def list_items(client: httpx.AsyncClient, thread_id: str, headers: dict[str, str]) -> Any:
    req = ItemsListReq(params=ItemsListParams(thread_id=thread_id, order="asc"))
    return ITEMS.validate_json((await call(client, req, headers)).text).data


@asynccontextmanager
async def mcp_session(
    base_url: str, token: str, path: str = "/mcp"
) -> AsyncIterator[ClientSession]:
    http = httpx2.AsyncClient(headers={"Authorization": f"Bearer {token}"}, timeout=30)
    async with http, streamable_http_client(f"{base_url}{path}", http_client=http) as streams:
        read, write = streams[0], streams[1]
        async with ClientSession(read, write) as session:
            await session.initialize()
            yield session


def ok(result: CallToolResult) -> Any:
    """A successful call's result dict: the same as JSON text and as structured content."""
    assert not result.is_error, result.content
    assert json.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
    return result.structured_content


def error(result: CallToolResult) -> str:
    assert result.is_error and result.structured_content is None
    return result.content[0].text  # type: ignore[union-attr,no-any-return]
