"""What browser and MCP clients rely on: CORS for the MCP headers, RFC 6750 challenges."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from backend.main import create_app
from tests.support.app import make_settings, running_app

ORIGIN = "https://app.example.com"
PROTECTED = pytest.mark.parametrize(
    ("method", "path"), [("GET", "/api/tasks"), ("POST", "/api/chatkit"), ("POST", "/mcp")]
)


async def test_browser_preflight_to_mcp_allows_the_mcp_headers(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    settings = make_settings(database_url, data_dir, allowed_origins=ORIGIN)
    async with running_app(create_app(settings)) as client:
        preflight = await client.options(
            "/mcp",
            headers={
                "Origin": ORIGIN,
                "Access-Control-Request-Method": "POST",
                # What the MCP TypeScript SDK's browser transport asks for.
                "Access-Control-Request-Headers": "authorization,content-type,"
                "mcp-protocol-version,mcp-session-id,last-event-id",
            },
        )
        assert preflight.status_code == 200, preflight.text
        allowed = preflight.headers["access-control-allow-headers"].lower()
        for header in ("mcp-protocol-version", "mcp-session-id", "last-event-id"):
            assert header in allowed
        assert preflight.headers["access-control-allow-origin"] == ORIGIN

        refused = await client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
            headers={"Origin": ORIGIN},
        )
        assert refused.status_code == 401
        # The page's script can read why it was refused.
        exposed = refused.headers["access-control-expose-headers"].lower()
        assert "www-authenticate" in exposed

        listed = await client.post(
            "/mcp",
            json={"jsonrpc": "2.0", "id": 2, "method": "tools/list"},
            headers={
                **alice,
                "Origin": ORIGIN,
                "Accept": "application/json, text/event-stream",
                "MCP-Protocol-Version": "2025-11-25",
            },
        )
        assert listed.status_code == 200, listed.text
        assert listed.headers["access-control-allow-origin"] == ORIGIN


@PROTECTED
async def test_no_credentials_gets_a_challenge_without_an_error_code(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    """RFC 6750 §3.1: a request with no authentication information gets no error code."""
    r = await client.request(method, path, json={})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == "Bearer"
    assert r.json() == {"detail": "Missing bearer token", "code": "unauthorized"}


@PROTECTED
async def test_a_bad_token_is_an_invalid_token(
    client: httpx.AsyncClient, method: str, path: str
) -> None:
    r = await client.request(method, path, json={}, headers={"Authorization": "Bearer not.a.token"})
    assert r.status_code == 401
    assert r.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_mcp_refuses_a_body_that_is_not_json_in_the_error_shape(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    r = await client.post("/mcp", content=b"hello", headers={**alice, "Content-Type": "text/plain"})
    assert r.status_code == 415
    assert r.json() == {
        "detail": "Content-Type must be application/json",
        "code": "unsupported_media_type",
    }
