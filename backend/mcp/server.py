"""The MCP server: the agent's five task tools, served statelessly over Streamable HTTP at `/mcp`.

Every request is authenticated with the same bearer tokens as `/api/*` before any MCP handling;
the user reaches the tools only through a context variable set from the verified token. Tool
schemas are the agent's own (`TOOL_SPECS`): no user parameter. A failed action (unknown task,
invalid title) is an MCP tool error (`isError: true`) with the same message the agent sees.
"""

from __future__ import annotations

from contextvars import ContextVar
from typing import Any

from fastapi import FastAPI
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from mcp.server.transport_security import TransportSecuritySettings
from starlette.types import Receive, Scope, Send

from backend.agent.tools import TOOL_SPECS
from backend.auth import TokenVerifier, User
from backend.errors import AppError, Unauthorized, error_response
from backend.tasks import actions

_current_user: ContextVar[User] = ContextVar("mcp_user")


def build_mcp_server(app: FastAPI) -> MCPServer:
    server = MCPServer(
        name="task-assistant",
        instructions="Manage the signed-in user's to-do list: add, list, complete, update and delete tasks.",
    )

    async def call(name: str, **arguments: Any) -> dict[str, Any]:
        user = _current_user.get()
        try:
            return await actions.ACTIONS[name](app.state.sessions, user.id, **arguments)
        except AppError as exc:
            raise ToolError(exc.detail) from None

    async def add_task(title: str, description: str | None = None) -> dict[str, Any]:
        return await call("add_task", title=title, description=description)

    async def list_tasks(status: str = "all") -> dict[str, Any]:
        return await call("list_tasks", status=status)

    async def complete_task(task_id: int) -> dict[str, Any]:
        return await call("complete_task", task_id=task_id)

    async def update_task(
        task_id: int, title: str | None = None, description: str | None = None
    ) -> dict[str, Any]:
        return await call("update_task", task_id=task_id, title=title, description=description)

    async def delete_task(task_id: int) -> dict[str, Any]:
        return await call("delete_task", task_id=task_id)

    for fn in (add_task, list_tasks, complete_task, update_task, delete_task):
        spec = TOOL_SPECS[fn.__name__]
        server.add_tool(
            fn, name=fn.__name__, description=spec["description"], structured_output=False
        )
        # Publish the agent's hand-written schema (plain types, descriptions, no user parameter).
        tool = server._tool_manager.get_tool(fn.__name__)
        assert tool is not None
        tool.parameters = spec["parameters"]
    # Bearer tokens, not cookies, authenticate every request, so DNS rebinding gains an
    # attacker nothing; the Host check would only break deployments behind real domains.
    server.streamable_http_app(
        stateless_http=True,
        json_response=True,
        transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
    )
    return server


class MCPEndpoint:
    """ASGI endpoint for `/mcp`: verify the bearer token, then hand over to the MCP transport."""

    def __init__(self, app: FastAPI) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        verifier: TokenVerifier = self.app.state.verifier
        token = _bearer(scope)
        try:
            if not token:
                raise Unauthorized("Missing bearer token")
            user = await verifier.verify(token)
        except AppError as exc:
            response = error_response(exc.status, exc.body(), exc.headers)
            await response(scope, receive, send)
            return
        scope.setdefault("state", {})["user_id"] = user.id
        reset = _current_user.set(user)
        try:
            server: MCPServer = self.app.state.mcp
            await server.session_manager.handle_request(scope, receive, send)
        finally:
            _current_user.reset(reset)


def _bearer(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    return None
