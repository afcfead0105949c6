"""The MCP server: one tool per registered task action (`tasks.registry`), served statelessly over
Streamable HTTP at `/mcp`.

Same names, schemas (plain JSON schema, no user parameter), result dicts (as JSON text and as
`structuredContent`) and error messages as the agent's tools; a failure is an MCP tool error
(`isError: true`) rather than a protocol error. The user comes only from the verified token:
`backend.web.mcp` verifies it before the SDK sees the request and leaves the `User` in the
request's state, where `caller` reads it back.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, cast

import orjson
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.tools import Tool
from mcp.server.transport_security import TransportSecuritySettings
from mcp.types import CallToolResult, TextContent
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.requests import Request

from backend.agent.context import Call
from backend.auth.user import User
from backend.chat.journal import Unrecorded
from backend.core.errors import AppError, Unauthorized
from backend.tasks import registry
from backend.tasks.registry import Action

McpContext = Context[Any, Request]
"""What a tool receives: on Streamable HTTP its `request_context.request` is the HTTP request."""


@dataclass(frozen=True, slots=True)
class McpRuntime:
    """What the tools need from the process (built in the lifespan)."""

    engine: AsyncEngine
    """Autocommit: each write action is one statement."""
    max_tasks: int
    max_output_chars: int
    spend_write: Callable[[User], Awaitable[None]]
    """Counts one write against the caller's rate limit (429 when over)."""


def caller(ctx: McpContext) -> User:
    """The verified user of the MCP request a tool is serving; fails closed without one."""
    request = ctx.request_context.request
    user = getattr(request.state, "user", None) if request is not None else None
    if not isinstance(user, User):
        raise Unauthorized()
    return user


class TaskMCPServer(MCPServer):
    """The MCP server with what its tools need from the process."""

    def __init__(self, runtime: McpRuntime, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.runtime = runtime


@functools.cache
def _tool(action: Action) -> Tool:
    """Built once per action and process (pydantic models per tool are costly; every app of a
    test run shares them): the runtime comes from the server serving the call."""

    async def run(ctx: McpContext, **arguments: Any) -> CallToolResult:
        runtime: McpRuntime = cast(TaskMCPServer, ctx.mcp_server).runtime
        try:
            user = caller(ctx)
            call = Call(action.name, action.arguments(arguments), {})
            # The arguments are checked first: an invalid call spends nothing.
            if action.plan is not None:
                registry.plan(action.name, user.id, call.arguments, runtime.max_tasks)
            await runtime.spend_write(user)
            actions = Unrecorded(runtime.engine, user.id, runtime.max_tasks)
            text = await actions.run(call, runtime.max_output_chars)
        except AppError as exc:
            # Returned, not raised: the SDK would prefix "Error executing tool <name>: ".
            return CallToolResult(
                content=[TextContent(type="text", text=exc.detail)], is_error=True
            )
        result = orjson.loads(text)
        return CallToolResult(
            content=[TextContent(type="text", text=text)], structured_content=result
        )

    # Required-ness is enforced from this signature; values are typed `Any` on purpose: the task
    # service checks them and words its errors the same way for the agent and for MCP clients.
    properties = action.parameters.get("properties", {})
    parameters = [
        inspect.Parameter("ctx", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=McpContext)
    ]
    for name in properties:
        default = inspect.Parameter.empty if name in action.required else None
        parameters.append(
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=Any)
        )
    run.__signature__ = inspect.Signature(parameters, return_annotation=CallToolResult)  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in parameters} | {"return": CallToolResult}
    tool = Tool.from_function(
        run, name=action.name, description=action.description, structured_output=False
    )
    # Publish the registry's schema rather than the one pydantic derives from the signature.
    return tool.model_copy(update={"parameters": action.parameters})


def build_mcp_server(name: str, version: str, runtime: McpRuntime) -> MCPServer:
    """A fresh server per app: its session manager can run only once (started in the lifespan)."""
    server = TaskMCPServer(
        runtime,
        name=name,
        version=version,
        instructions=(
            "Manage the signed-in user's to-do list: add, list, complete, update and delete tasks."
        ),
        tools=[_tool(action) for action in registry.ACTIONS.values()],
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
