"""One pure-ASGI middleware for every request: request id, access log, request metrics, request
limits, security headers.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses pass through untouched and the
per-request overhead stays small. It is the outermost layer of the app, so every response,
including the 500 for an unexpected exception (rendered here, not by Starlette's
ServerErrorMiddleware, which sits outside and would skip our headers), carries `X-Request-ID`
and the security headers.

Request limits checked here (the request head's deadline and total size are enforced below the
app, in `httpserver`): at most MAX_HEADER_COUNT headers and MAX_HEADER_FIELD_BYTES per header
(431), a body of at most MAX_BODY_BYTES whether declared or chunked (413), and a body that
arrives within REQUEST_READ_TIMEOUT_SECONDS (408). The body errors are Starlette
HTTPExceptions so FastAPI passes them through its body parsing instead of answering 400.

Anonymous callers are turned away here, before anything is read or rendered for them:
- a request with a body to `/api/*` (but `/api/dev/`, which has its own guard) or `/mcp` whose
  `Authorization` is not `Bearer <something shaped like a JWT>` answers 401 at once and its body
  is never read (FastAPI reads a body before it runs the route's dependencies, so without this an
  anonymous 1 MB body would be buffered before the token is looked at). Only the header's shape
  is checked: the token is verified by the route's dependency (`deps.current_user`, `mcp.py`).
- `GET /metrics` without a bearer token answers 401 unless METRICS_PUBLIC (the endpoint checks
  the token itself; this only spares the app's routing for a flood of anonymous scrapes).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
from typing import Any

import orjson
from starlette.exceptions import HTTPException
from starlette.routing import Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.core.logging import log_value, request_id_var
from backend.observability import metrics
from backend.web.errors import unexpected_error_response
from backend.web.headers import API_HEADERS, DOCS_HEADERS, PAGE_HEADERS, SECURITY_HEADERS
from backend.web.state import STATE_KEY, AppState

log = logging.getLogger("backend.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_DOCS_PREFIXES = ("/docs", "/redoc")
_OWN_GUARD_PREFIXES = ("/api/dev/",)  # loopback-only development routes: no bearer token
_JWT_SHAPE = re.compile(rb"^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$")
_MISSING_TOKEN = [(b"www-authenticate", b"Bearer")]
_INVALID_TOKEN = [(b"www-authenticate", b'Bearer error="invalid_token"')]
_CLOSE = {"Connection": "close"}  # the rest of the body is never read: end the connection


class BodyTooLarge(HTTPException):
    def __init__(self) -> None:
        super().__init__(413, "Request body too large", headers=_CLOSE)


class BodyTimeout(HTTPException):
    def __init__(self) -> None:
        super().__init__(408, "Request body not received in time", headers=_CLOSE)


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        max_body_bytes: int,
        read_timeout_seconds: float = 15.0,
        max_header_count: int = 100,
        max_header_field_bytes: int = 8192,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.read_timeout = read_timeout_seconds
        self.max_header_count = max_header_count
        self.max_header_field_bytes = max_header_field_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = _header(scope, b"x-request-id")
        request_id = incoming if incoming and _SAFE_REQUEST_ID.match(incoming) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        scope.setdefault("state", {})["request_id"] = request_id
        path: str = scope.get("path", "")
        if _is_docs(path):
            extra_headers = SECURITY_HEADERS + DOCS_HEADERS
        elif path == "/" or path.startswith("/static/"):
            extra_headers = SECURITY_HEADERS + PAGE_HEADERS
        else:
            extra_headers = SECURITY_HEADERS + API_HEADERS
        status_holder = [0]

        refusal = self._refusal(scope)
        if refusal is not None:
            status, detail, code = refusal
            await _send_error(send, status, detail, code, request_id, extra_headers)
            self._log(scope, status, started)
            request_id_var.reset(token)
            return

        limit = self.max_body_bytes
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.read_timeout
        received = 0
        body_done = False

        async def guarded_receive() -> Message:
            nonlocal received, body_done
            if body_done:  # afterwards the app only waits for http.disconnect: no deadline
                return await receive()
            try:
                async with asyncio.timeout_at(deadline):
                    message = await receive()
            except TimeoutError:
                raise BodyTimeout() from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLarge()
                body_done = not message.get("more_body", False)
            else:
                body_done = True
            return message

        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                if b"x-request-id" not in present:
                    headers.append((b"x-request-id", request_id.encode()))
                headers.extend(h for h in extra_headers if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, guarded_receive, send_with_headers)
        except (BodyTooLarge, BodyTimeout) as exc:  # from routes that read the body themselves
            if not response_started:
                code = "payload_too_large" if exc.status_code == 413 else "request_timeout"
                await _send_error(
                    send, exc.status_code, exc.detail, code, request_id, extra_headers
                )
            status_holder[0] = exc.status_code
        except Exception as exc:
            if response_started:
                raise  # mid-stream: nothing left to answer with; the server closes the connection
            response = await unexpected_error_response(exc)
            await response(scope, guarded_receive, send_with_headers)
        finally:
            self._log(scope, status_holder[0], started)
            request_id_var.reset(token)

    def _refusal(self, scope: Scope) -> tuple[int, str, str] | None:
        """Why the request is refused before the app sees it: (status, detail, code), or None."""
        headers: list[tuple[bytes, bytes]] = scope.get("headers", [])
        if len(headers) > self.max_header_count:
            return 431, "Too many request headers", "headers_too_large"
        if any(len(k) + len(v) > self.max_header_field_bytes for k, v in headers):
            return 431, "A request header is too large", "headers_too_large"
        declared = _header(scope, b"content-length")
        if declared is not None and not declared.isdigit():
            return 400, "Invalid Content-Length", "bad_request"
        if declared is not None and int(declared) > self.max_body_bytes:
            return 413, "Request body too large", "payload_too_large"
        return None

    @staticmethod
    def _log(scope: Scope, status: int, started: float) -> None:
        elapsed = time.perf_counter() - started
        route = scope.get("route")
        # The route's template, never the raw path: ids in paths would make one series per id.
        template = getattr(route, "path", None) or "unmatched"
        metrics.request_done(scope.get("method", ""), template, status, elapsed)
        if not log.isEnabledFor(logging.INFO):
            return
        state: dict[str, Any] = scope.get("state", {})
        log.info(
            "%s %s %s %.1fms user=%s",
            scope.get("method"),
            log_value(scope.get("path", "")),
            status,
            elapsed * 1000,
            log_value(state.get("user_id", "-")),
        )


class AnonymousGuard:
    """Refuses an anonymous caller before its body is read or a metrics render is made (see the
    module docstring). It sits inside the CORS middleware, so a browser's script can read the 401
    and its `WWW-Authenticate`, and inside `RequestContextMiddleware`, which logs it."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            anonymous = _anonymous_refusal(scope, scope.get("path", ""))
            if anonymous is not None:
                (status, detail, code), challenge = anonymous
                scope["route"] = _route_of(scope)  # the metrics count it under its route
                await _send_error(send, status, detail, code, request_id_var.get(), challenge)
                return
        await self.app(scope, receive, send)


def _route_of(scope: Scope) -> Any:
    """The app's route that `scope` would reach (routing has not run yet), or None."""
    for route in getattr(getattr(scope.get("app"), "router", None), "routes", ()):
        if route.matches(scope)[0] is Match.FULL:
            return route
    return None


def _anonymous_refusal(
    scope: Scope, path: str
) -> tuple[tuple[int, str, str], list[tuple[bytes, bytes]]] | None:
    """The 401 (and its challenge) for an anonymous caller that must not cost us a body or a
    render, or None."""
    if path == "/metrics":
        state: AppState | None = scope.get("state", {}).get(STATE_KEY)
        if state is None or state.settings.metrics_public or _bearer(scope) is not None:
            return None  # the endpoint decides
        return (401, "Missing metrics token", "unauthorized"), _MISSING_TOKEN
    if not (path.startswith("/api/") or path in ("/api", "/mcp", "/mcp/")):
        return None
    if path.startswith(_OWN_GUARD_PREFIXES) or scope.get("method") == "OPTIONS":
        return None
    if not _has_body(scope):
        return None  # the route's dependency answers, as cheaply, with nothing buffered
    token = _bearer(scope)
    if token is None:
        return (401, "Missing bearer token", "unauthorized"), _MISSING_TOKEN
    if not _JWT_SHAPE.match(token):
        return (401, "Invalid token", "unauthorized"), _INVALID_TOKEN
    return None


def _bearer(scope: Scope) -> bytes | None:
    """The credentials of `Authorization: Bearer <credentials>`, or None (absent, another
    scheme, empty), as `HTTPBearer` reads the header."""
    for key, value in scope.get("headers", []):
        if key == b"authorization":
            scheme, _, credentials = value.partition(b" ")
            credentials = credentials.strip()
            return credentials if scheme.lower() == b"bearer" and credentials else None
    return None


def _has_body(scope: Scope) -> bool:
    for key, value in scope.get("headers", []):
        if key == b"transfer-encoding" or (key == b"content-length" and value.strip(b" 0")):
            return True
    return False


def _is_docs(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in _DOCS_PREFIXES)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_error(
    send: Send,
    status: int,
    detail: str,
    code: str,
    request_id: str,
    extra: list[tuple[bytes, bytes]],
) -> None:
    body = orjson.dumps({"detail": detail, "code": code})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"x-request-id", request_id.encode()),
        (b"connection", b"close"),
        *extra,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})
