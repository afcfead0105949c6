"""One pure-ASGI middleware for every request: request id, access log, request metrics, body
limit, security headers.

Pure ASGI (not BaseHTTPMiddleware) so streaming responses pass through untouched and the
per-request overhead stays small.
"""

from __future__ import annotations

import logging
import re
import time
import uuid
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from backend.logging import request_id_var
from backend.observability import metrics

log = logging.getLogger("backend.access")

_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
_SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"strict-transport-security", b"max-age=31536000; includeSubDomains"),
]
_API_HEADERS = [
    (b"cache-control", b"no-store"),
    (b"content-security-policy", b"default-src 'none'; frame-ancestors 'none'"),
]
# The playground (backend/web): its own scripts, styles and API only; no inline script or style.
_PAGE_HEADERS = [
    (b"cache-control", b"no-cache"),
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        b"img-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
]
# The API documentation pages load only their own scripts and styles (served by this app, see
# apidocs.py); ReDoc and Swagger UI set inline styles, and ReDoc runs its search in a blob worker.
_DOCS_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
        b"img-src 'self' data:; font-src 'self' data:; connect-src 'self'; "
        b"worker-src 'self' blob:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'",
    ),
]
_DOCS_PREFIXES = ("/docs", "/redoc")


class _BodyTooLarge(Exception):
    pass


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

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
            extra_headers = _SECURITY_HEADERS + _DOCS_HEADERS
        elif path == "/" or path.startswith("/static/"):
            extra_headers = _SECURITY_HEADERS + _PAGE_HEADERS
        else:
            extra_headers = _SECURITY_HEADERS + _API_HEADERS
        status_holder = [0]
        limit = self.max_body_bytes

        declared = _header(scope, b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > limit):
            await _send_error(send, 413 if declared.isdigit() else 400, request_id, extra_headers)
            self._log(scope, 413, started)
            request_id_var.reset(token)
            return

        received = 0

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise _BodyTooLarge
            return message

        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_holder[0] = message["status"]
                headers = list(message.get("headers", []))
                headers.append((b"x-request-id", request_id.encode()))
                present = {k.lower() for k, _ in headers}
                headers.extend(h for h in extra_headers if h[0] not in present)
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, limited_receive, send_with_headers)
        except _BodyTooLarge:
            if not response_started:
                await _send_error(send, 413, request_id, extra_headers)
            status_holder[0] = 413
        finally:
            self._log(scope, status_holder[0], started)
            request_id_var.reset(token)

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
            scope.get("path"),
            status,
            elapsed * 1000,
            state.get("user_id", "-"),
        )


def _is_docs(path: str) -> bool:
    return any(path == p or path.startswith(p + "/") for p in _DOCS_PREFIXES)


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


async def _send_error(
    send: Send, status: int, request_id: str, extra: list[tuple[bytes, bytes]]
) -> None:
    detail = "Request body too large" if status == 413 else "Invalid Content-Length"
    code = "payload_too_large" if status == 413 else "bad_request"
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
