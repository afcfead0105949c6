"""TOOLS_TRANSPORT=mcp: the agent's tools run on an MCP server instead of in-process.

The caller's bearer token is forwarded with every call, so the MCP server (ours, at
MCP_SERVER_URL) verifies it and acts for the same user; nothing else changes for the agent.
Our server is stateless, so each call is one JSON-RPC `tools/call` POST over the process's
shared HTTP pool (no session, no `initialize` round trip). The task change commits on the MCP
server; the turn's journal records it right after, in a statement of ours.
"""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp
import orjson

from backend.agent.context import Call, TurnContext
from backend.core.errors import AppError, ServiceUnavailable
from backend.tasks.registry import cap_output

_ids = itertools.count(1)
# The newest version with the classic request shape (2026-07-28 wants a `_meta` envelope).
PROTOCOL_VERSION = "2025-11-25"


class RemoteToolError(AppError):
    """The MCP server answered the call with a tool error (unknown task, invalid title...)."""


class McpToolClient:
    def __init__(self, url: str, http: aiohttp.ClientSession, timeout: float = 15.0) -> None:
        self.url = url
        self.http = http
        self.timeout = aiohttp.ClientTimeout(total=timeout)

    async def __call__(self, ctx: TurnContext, call: Call, max_output_chars: int) -> str:
        request = {
            "jsonrpc": "2.0",
            "id": next(_ids),
            "method": "tools/call",
            "params": {"name": call.name, "arguments": call.arguments},
        }
        headers = {
            "Authorization": f"Bearer {ctx.token}",
            "Content-Type": "application/json",
            "Accept": "application/json, text/event-stream",
            "MCP-Protocol-Version": PROTOCOL_VERSION,
        }
        try:
            async with self.http.post(
                self.url, data=orjson.dumps(request), headers=headers, timeout=self.timeout
            ) as response:
                raw = await response.read()
                if response.status != 200:
                    raise ServiceUnavailable("Task tools temporarily unavailable")
                answer = _json_rpc_result(raw, response.content_type)
        except (aiohttp.ClientError, ConnectionError, TimeoutError, ValueError) as exc:
            raise ServiceUnavailable("Task tools temporarily unavailable") from exc
        text = "".join(
            part.get("text", "") for part in answer.get("content") or [] if isinstance(part, dict)
        )
        if answer.get("isError"):
            raise RemoteToolError(text)
        parsed = orjson.loads(text)
        outcome = parsed if isinstance(parsed, dict) else {"result": parsed}
        output = orjson.dumps(cap_output(outcome, max_output_chars)).decode()
        await ctx.journal.record(call, output)
        return output


def _json_rpc_result(raw: bytes, content_type: str) -> dict[str, Any]:
    """The `result` of a JSON-RPC answer, sent as JSON or as one SSE `message` event."""
    if content_type == "text/event-stream":
        lines = [line[5:].strip() for line in raw.splitlines() if line.startswith(b"data:")]
        raw = lines[-1] if lines else b"{}"
    message = orjson.loads(raw)
    if not isinstance(message, dict) or not isinstance(message.get("result"), dict):
        raise ValueError("not a JSON-RPC result")
    result: dict[str, Any] = message["result"]
    return result
