"""Bearer authentication for `/mcp`, in front of the MCP transport.

`MCPEndpoint` verifies the token exactly like `/api/*` and answers 401 (our JSON error shape,
`WWW-Authenticate: Bearer`) before the MCP SDK sees the request. The verified `User` travels in
the ASGI scope's state; the SDK hands each tool that request (`ctx.request_context.request`),
and `backend.mcp.server.caller` reads the user back. Nothing the client writes in MCP messages can change it.

Every authenticated request spends the caller's read budget (`initialize`, `tools/list`,
notifications, and tool calls, which spend the write budget too): over it, 429 with Retry-After
before the MCP SDK sees the request.
"""

from __future__ import annotations

from mcp.server.mcpserver import MCPServer
from starlette.types import Receive, Scope, Send

from backend.auth.verifier import TokenVerifier
from backend.core.errors import (
    AppError,
    MissingToken,
    UnsupportedMediaType,
)
from backend.web.errors import error_response
from backend.web.state import state_of


class MCPEndpoint:
    """ASGI endpoint for `/mcp`: verify the bearer token, then hand over to the MCP transport."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        app = state_of(scope)
        verifier: TokenVerifier = app.verifier
        token = _bearer(scope)
        try:
            if not token:
                raise MissingToken()
            user = await verifier.verify(token)
            if not _is_json(scope):  # the SDK would answer a bare text/plain 400
                raise UnsupportedMediaType()
            await app.rate_limits.read.hit(user.id)  # after the checks: a refusal spends nothing
        except AppError as exc:
            # Unauthorized, RateLimited, or ServiceUnavailable when the JWKS is down
            await error_response(exc.status, exc.body(), exc.headers)(scope, receive, send)
            return
        state = scope.setdefault("state", {})
        state["user"] = user
        state["user_id"] = user.id  # for the access log
        server: MCPServer = app.mcp
        await server.session_manager.handle_request(scope, receive, send)


def _is_json(scope: Scope) -> bool:
    for key, value in scope.get("headers", []):
        if key == b"content-type":
            return value.decode("latin-1").lower().startswith("application/json")
    return False


def _bearer(scope: Scope) -> str | None:
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            if scheme.lower() == "bearer" and credentials.strip():
                return credentials.strip()
    return None
