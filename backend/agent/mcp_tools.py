"""TOOLS_TRANSPORT=mcp: the agent's tools run on an MCP server instead of in-process.

The caller's bearer token is forwarded with every call, so the MCP server (ours, at
MCP_SERVER_URL) verifies it and acts for the same user; nothing else changes for the agent.
Each call is one stateless MCP session (initialize + tools/call).
"""

from __future__ import annotations

import json
from contextlib import AsyncExitStack
from typing import Any

import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from backend.agent.context import TurnContext
from backend.agent.tools import Record
from backend.errors import AppError, ServiceUnavailable


class RemoteToolError(AppError):
    """The MCP server answered the call with a tool error (unknown task, invalid title...)."""


class McpToolClient:
    def __init__(self, url: str, timeout: float = 15.0) -> None:
        self.url = url
        self.timeout = timeout

    async def __call__(
        self, ctx: TurnContext, name: str, arguments: dict[str, Any], record: Record
    ) -> dict[str, Any]:
        http = httpx2.AsyncClient(
            headers={"Authorization": f"Bearer {ctx.token}"}, timeout=self.timeout
        )
        try:
            async with AsyncExitStack() as stack:
                await stack.enter_async_context(http)
                read, write = (
                    await stack.enter_async_context(
                        streamable_http_client(self.url, http_client=http)
                    )
                )[:2]
                session = await stack.enter_async_context(ClientSession(read, write))
                await session.initialize()
                result = await session.call_tool(name, arguments)
        except Exception as exc:  # the MCP server is unreachable or broke the protocol
            raise ServiceUnavailable("Task tools temporarily unavailable") from exc
        text = "".join(getattr(part, "text", "") for part in result.content)
        if result.is_error:
            raise RemoteToolError(text)
        parsed = json.loads(text)
        outcome = parsed if isinstance(parsed, dict) else {"result": parsed}
        # The change committed on the MCP server; its record follows in a transaction of ours.
        async with ctx.sessions.begin() as db:
            await record(db, outcome)
        return outcome
