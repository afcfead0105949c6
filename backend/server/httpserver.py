"""How `task-assistant serve` runs uvicorn: the limits that must hold before a request exists.

uvicorn (with httptools) buffers request heads of any size and waits for them forever: an idle
socket, or one that sends a header a byte at a time (slowloris), stays open, and an 8 MB header
is parsed. `LimitedHttpProtocol` closes a connection whose request head is not complete within
REQUEST_READ_TIMEOUT_SECONDS (408, or silently if nothing was sent), or whose request body is
still arriving that long after the answer was sent without reading it (a 401, say), and refuses
a head over MAX_HEADER_BYTES (431). What follows the head (per-header limits, the body's size and deadline)
is checked in `middleware.RequestContextMiddleware`, where the answer carries our headers.

Answers have a deadline too. A response is written to the transport whole (or a chunk at a time
while the transport keeps up); what the client does not read waits in the transport's buffer,
and asyncio's `close()` (uvicorn's keep-alive timeout) waits for it to be sent, forever if the
client never reads. When the buffer stays above its high-water mark (`pause_writing` without
`resume_writing`) for RESPONSE_WRITE_TIMEOUT_SECONDS, the connection is aborted: the buffer is
dropped at once, and a streaming answer's `send` returns (the client is gone). Meanwhile the
connection's next request (pipelined, or sent without reading) waits to start until the client
reads, so a connection holds at most one unread answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import uuid
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from backend.core.config import Settings, get_settings
from backend.observability import metrics
from backend.web.headers import SECURITY_HEADERS

_RESET_ON_CLOSE = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() discards and resets
PROTOCOL = "backend.server.httpserver:LimitedHttpProtocol"
"""By import path: `--workers N` pickles uvicorn's config into each worker process."""


def error_head(status: int, reason: str, detail: str, code: str) -> bytes:
    """A complete HTTP/1.1 error response in our JSON shape, closing the connection."""
    body = orjson.dumps({"detail": detail, "code": code})
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        (b"connection", b"close"),
        (b"x-request-id", uuid.uuid4().hex.encode()),
        *SECURITY_HEADERS,
    ]
    lines = [f"HTTP/1.1 {status} {reason}".encode()] + [k + b": " + v for k, v in headers]
    return b"\r\n".join(lines) + b"\r\n\r\n" + body


class LimitedHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with a deadline and a size cap on each request head, and a
    deadline on a response the client does not read."""

    max_head_bytes: int | None = None
    """None: MAX_HEADER_BYTES from the environment (get_settings())."""
    head_timeout: float | None = None
    """None: REQUEST_READ_TIMEOUT_SECONDS from the environment."""
    write_timeout: float | None = None
    """None: RESPONSE_WRITE_TIMEOUT_SECONDS from the environment."""
    linger_seconds = 2.0
    """After refusing, how long we keep reading (and dropping) what the client still sends, so
    that closing does not reset the connection before the client has read our answer."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        settings = get_settings()  # cached: read from the environment once per process
        self._max_head_bytes = self.max_head_bytes or settings.max_header_bytes
        self._head_timeout = self.head_timeout or settings.request_read_timeout_seconds
        self._write_timeout = self.write_timeout or settings.response_write_timeout_seconds
        self._write_timer: asyncio.TimerHandle | None = None
        self._next_request: tuple[Any, Any] | None = None
        """(cycle, app) of a request that waits for the client to read the last answer."""
        self._in_head = True  # between requests, or inside a head: not inside a request body
        self._head_bytes = 0
        self._head_timer: asyncio.TimerHandle | None = None
        self._refused = False

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_head_timer()  # a connection that never sends a byte is closed too

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        if self._in_head:
            if self._head_timer is None:
                self._arm_head_timer()  # the first bytes of the next request on this connection
            self._head_bytes += len(data)
        super().data_received(data)
        # Checked after parsing: the chunk may also hold the end of the head and some body.
        if self._in_head and self._head_bytes > self._max_head_bytes:
            self._refuse(
                error_head(
                    431,
                    "Request Header Fields Too Large",
                    "Request headers too large",
                    "headers_too_large",
                )
            )

    def on_headers_complete(self) -> None:
        self._in_head = False
        self._head_bytes = 0
        self._disarm_head_timer()
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head = True  # the head timer starts with the next request's first byte
        self._disarm_head_timer()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self._in_head and not self.transport.is_closing():
            self._arm_head_timer()  # answered without reading the whole body: it gets a deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm_head_timer()
        self._disarm_write_timer()
        self._next_request = None  # never started: nothing to cancel
        super().connection_lost(exc)

    def pause_writing(self) -> None:
        """The transport's buffer passed its high-water mark: the client must read within the
        write deadline (from now until `resume_writing`, however much it reads meanwhile)."""
        super().pause_writing()
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self._write_timeout, self._write_timed_out)

    def resume_writing(self) -> None:
        self._disarm_write_timer()
        super().resume_writing()
        if self._next_request is not None and not self.transport.is_closing():
            cycle, app = self._next_request
            self._next_request = None
            self.flow.resume_reading()
            super()._start_asgi_task(cycle, app)

    def _start_asgi_task(self, cycle: Any, app: Any) -> None:
        """uvicorn starts each request here (the next pipelined one when an answer is complete):
        while the client leaves the last answer unread, the next one is not rendered beside it."""
        if self.flow.write_paused and not self.transport.is_closing():
            self._next_request = (cycle, app)
            self.flow.pause_reading()
            return
        super()._start_asgi_task(cycle, app)

    def _disarm_write_timer(self) -> None:
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _write_timed_out(self) -> None:
        # Also when the transport is closing already: close() would wait for the client to read.
        self._write_timer = None
        metrics.slow_reader_dropped()
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            # Reset, not FIN: a FIN would queue behind what the kernel still holds for the
            # client, and the orphaned socket would keep it until the kernel gives up.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _RESET_ON_CLOSE)
        self.transport.abort()

    def _arm_head_timer(self) -> None:
        self._head_timer = self.loop.call_later(self._head_timeout, self._head_timed_out)

    def _disarm_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.transport.is_closing():
            return
        if self._in_head and self._head_bytes:
            self._refuse(
                error_head(
                    408, "Request Timeout", "Request not received in time", "request_timeout"
                )
            )
        else:
            self.transport.close()

    def _refuse(self, response: bytes) -> None:
        self._disarm_head_timer()
        if self._refused or self.transport.is_closing():
            return
        self._refused = True
        self.transport.write(response)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(self.linger_seconds, self.transport.close)


def limited_http_protocol(settings: Settings) -> type[LimitedHttpProtocol]:
    """`LimitedHttpProtocol` with the limits of `settings` (for a server run in this process)."""
    return type(
        "ConfiguredLimitedHttpProtocol",
        (LimitedHttpProtocol,),
        {
            "max_head_bytes": settings.max_header_bytes,
            "head_timeout": settings.request_read_timeout_seconds,
            "write_timeout": settings.response_write_timeout_seconds,
        },
    )


def uvicorn_limits(settings: Settings, *, in_process: bool = False) -> dict[str, Any]:
    """The uvicorn.run / uvicorn.Config arguments that bound connections.

    `task-assistant serve` names the protocol by import path, so each worker reads the limits
    from the same environment; `in_process` passes a class configured from `settings` instead.
    """
    return {
        "http": limited_http_protocol(settings) if in_process else PROTOCOL,
        "timeout_keep_alive": settings.keep_alive_timeout_seconds,
    }
