"""backend.server.httpserver without a server: the raw HTTP error answers the connection guard
writes, and the uvicorn limits built from the settings."""

from __future__ import annotations

import re
from typing import Any

import orjson
import pytest

from backend.core.config import Settings
from backend.server.httpserver import PROTOCOL, LimitedHttpProtocol, error_head, uvicorn_limits
from backend.web.middleware import SECURITY_HEADERS


def _parse(raw: bytes) -> tuple[str, dict[str, str], bytes]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status, *lines = head.decode().split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines)
    return status, headers, body


@pytest.mark.parametrize(
    ("status", "reason", "detail", "code"),
    [
        (431, "Request Header Fields Too Large", "Request headers too large", "headers_too_large"),
        (408, "Request Timeout", "Request not received in time", "request_timeout"),
    ],
)
def test_error_head_is_a_complete_closing_response_in_our_json_shape(
    status: int, reason: str, detail: str, code: str
) -> None:
    line, headers, body = _parse(error_head(status, reason, detail, code))
    assert line == f"HTTP/1.1 {status} {reason}"
    assert orjson.loads(body) == {"detail": detail, "code": code}
    assert headers["content-length"] == str(len(body))
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    assert re.fullmatch(r"[0-9a-f]{32}", headers["x-request-id"])
    for name, value in SECURITY_HEADERS:
        assert headers[name.decode()] == value.decode()


def test_error_head_counts_the_body_in_bytes() -> None:
    _, headers, body = _parse(error_head(400, "Bad Request", "Zeichen: äöü", "bad_request"))
    assert int(headers["content-length"]) == len(body) > len(body.decode())


def test_every_error_head_has_its_own_request_id() -> None:
    ids = {
        _parse(error_head(408, "Request Timeout", "x", "y"))[1]["x-request-id"] for _ in range(5)
    }
    assert len(ids) == 5


def _settings(**values: Any) -> Settings:
    return Settings(_env_file=None, **values)  # type: ignore[call-arg]


def test_served_workers_name_the_protocol_by_import_path() -> None:
    limits = uvicorn_limits(_settings(keep_alive_timeout_seconds=2.5))
    assert limits == {"http": PROTOCOL, "timeout_keep_alive": 2.5}
    module, _, name = PROTOCOL.partition(":")
    assert getattr(__import__(module, fromlist=[name]), name) is LimitedHttpProtocol


def test_an_in_process_server_gets_a_protocol_configured_from_its_settings() -> None:
    settings = _settings(max_header_bytes=4096, request_read_timeout_seconds=1.5)
    limits = uvicorn_limits(settings, in_process=True)
    protocol = limits["http"]
    assert issubclass(protocol, LimitedHttpProtocol)
    assert protocol.max_head_bytes == 4096
    assert protocol.head_timeout == 1.5
    assert LimitedHttpProtocol.max_head_bytes is None  # the shared class is left alone
    assert limits["timeout_keep_alive"] == settings.keep_alive_timeout_seconds
