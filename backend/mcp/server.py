"""The MCP server: the agent's five task tools, served statelessly over Streamable HTTP at `/mcp`.

The tools are thin adapters over `tasks.actions`, like the agent's: same names, the agent's
hand-written schemas (`TOOL_SPECS`: plain JSON schema, no user parameter), the same result dicts
(as JSON text and as `structuredContent`) and the same error messages, as an MCP tool error
(`isError: true`) rather than a protocol error. The user comes only from the verified token
(`auth.caller`); tasks are read and written through the app state's `sessions`.
"""

from __future__ import annotations

from typing import Any

import orjson
from fastapi import FastAPI
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent
from starlette.requests import Request

from backend.agent.tools import TOOL_SPECS
from backend.deps import app_state
from backend.errors import AppError
from backend.mcp.auth import McpContext, caller
from backend.reliability.deps import limit_writes
from backend.tasks import actions

# Argument values are typed `Any` on purpose: the task service checks them (titles, ids, status)
# and words its errors the same way for the agent and for MCP clients. The published schemas
# come from TOOL_SPECS; only required-ness is enforced from these signatures.


async def add_task(ctx: McpContext, title: Any, description: Any = None) -> CallToolResult:
    return await _run(ctx, "add_task", title=title, description=description)


async def list_tasks(ctx: McpContext, status: Any = "all", search: Any = None) -> CallToolResult:
    return await _run(ctx, "list_tasks", status=status, search=search)


async def complete_task(ctx: McpContext, task_id: Any) -> CallToolResult:
    return await _run(ctx, "complete_task", task_id=task_id)


async def update_task(
    ctx: McpContext, task_id: Any, title: Any = None, description: Any = None
) -> CallToolResult:
    return await _run(ctx, "update_task", task_id=task_id, title=title, description=description)


async def delete_task(ctx: McpContext, task_id: Any) -> CallToolResult:
    return await _run(ctx, "delete_task", task_id=task_id)


async def _run(ctx: McpContext, name: str, **arguments: Any) -> CallToolResult:
    try:
        user = caller(ctx)
        settings = app_state(_request(ctx)).settings
        # The arguments are checked first: an invalid call spends nothing.
        actions.plan(name, user.id, arguments, settings.max_tasks_per_user)
        await limit_writes(_request(ctx), user)
        result = await actions.run_in_transaction(
            _sessions(ctx),
            name,
            user.id,
            arguments,
            max_tasks=settings.max_tasks_per_user,
            max_output_chars=settings.max_tool_output_chars,
        )
    except AppError as exc:
        # Returned, not raised: the SDK would prefix "Error executing tool <name>: ".
        return CallToolResult(content=[TextContent(type="text", text=exc.detail)], is_error=True)
    text = orjson.dumps(result).decode()
    return CallToolResult(content=[TextContent(type="text", text=text)], structured_content=result)


def _request(ctx: McpContext) -> Request:
    request = ctx.request_context.request
    assert request is not None  # caller() has checked it
    return request


def _sessions(ctx: McpContext) -> actions.Sessions:
    sessions: actions.Sessions = app_state(_request(ctx)).sessions
    return sessions


def _tool(fn: Any) -> Tool:
    spec = TOOL_SPECS[fn.__name__]
    tool = Tool.from_function(fn, description=spec["description"], structured_output=False)
    # Publish the agent's schema rather than the one pydantic derives from the signature.
    return tool.model_copy(update={"parameters": spec["parameters"]})


def build_mcp_server(app: FastAPI) -> MCPServer:
    """A fresh server per app: its session manager can run only once (started in the lifespan)."""
    server: MCPServer = MCPServer(
        name=app.title,
        version=app.version,
        instructions=(
            "Manage the signed-in user's to-do list: add, list, complete, update and delete tasks."
        ),
        tools=[_tool(fn) for fn in (add_task, list_tasks, complete_task, update_task, delete_task)],
    )
    # Stateless with JSON responses: no session to keep, so any replica can answer any request.
    server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        # Requests carry bearer tokens, never cookies, so DNS rebinding gains an attacker
        # nothing; the SDK's Host allow-list would only break deployments behind real domains.
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return server
