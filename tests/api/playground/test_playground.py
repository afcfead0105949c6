"""The playground page and the development token endpoint, in-process (the browser tests are apart).

The token endpoint's refusals are the point here: dev auth mode only, loopback only, no proxy
headers, a loopback Host and Origin, and a printable user name.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest

from backend.main import create_app
from backend.web.playground import ASSETS, STATIC_DIR
from tests.support.app import make_settings
from tests.support.devsignin import TOKEN_PATH, reached_at


async def test_page_and_assets_are_served_under_a_self_only_csp(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = page.headers["content-security-policy"]
    assert "script-src 'self'" in csp and "connect-src 'self'" in csp
    assert "unsafe-inline" not in csp and "unsafe-eval" not in csp
    html = page.text
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", html, flags=re.S)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert not re.search(r"\son[a-z]+=", html), "inline event handlers would need unsafe-inline"
    assert " style=" not in html
    assert "http://" not in html and "https://" not in html, "no CDN"

    sizes = 0
    for name, media_type in ASSETS.items():
        asset = await client.get(f"/static/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"] == media_type
        assert "script-src 'self'" in asset.headers["content-security-policy"]
        if name != "icon.svg":
            sizes += len(asset.content)
    assert sizes < 60_000, f"JS + CSS are {sizes} bytes"

    # API paths keep their own, stricter policy.
    api = await client.get("/api/tasks")
    assert api.headers["content-security-policy"].startswith("default-src 'none'")


@pytest.mark.parametrize("name", ["nope.js", "index.html", "..%2Fweb%2Frouter.py", "%2e%2e"])
async def test_only_the_listed_assets_are_served(client: httpx.AsyncClient, name: str) -> None:
    r = await client.get(f"/static/{name}")
    assert r.status_code == 404
    assert r.json()["code"] == "not_found"


def test_the_page_references_only_its_own_assets() -> None:
    html = (STATIC_DIR / "index.html").read_text()
    referenced = set(re.findall(r'(?:src|href)="/static/([^"]+)"', html))
    assert referenced == set(ASSETS)


async def test_dev_token_signs_for_the_user(database_url: str, data_dir: Path) -> None:
    app = create_app(make_settings(database_url, data_dir))
    async with reached_at(app, "http://127.0.0.1:8000") as client:
        r = await client.post(TOKEN_PATH, json={"user": "alice"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["user"] == "alice" and body["token_type"] == "Bearer"
        expires = datetime.fromisoformat(body["expires_at"])
        assert timedelta(hours=7) < expires - datetime.now(UTC) <= timedelta(hours=8)

        auth = {"Authorization": f"Bearer {body['token']}"}
        created = await client.post(
            "/api/tasks", json={"title": "From the dev token"}, headers=auth
        )
        assert created.status_code == 201
        other = await client.post(TOKEN_PATH, json={"user": "bob"})
        bob = {"Authorization": f"Bearer {other.json()['token']}"}
        assert (await client.get("/api/tasks", headers=bob)).json()["tasks"] == []
        assert [
            t["title"] for t in (await client.get("/api/tasks", headers=auth)).json()["tasks"]
        ] == ["From the dev token"]
        assert TOKEN_PATH in (await client.get("/openapi.json")).json()["paths"]


async def test_dev_token_accepts_localhost_and_a_loopback_origin(
    database_url: str, data_dir: Path
) -> None:
    app = create_app(make_settings(database_url, data_dir))
    async with reached_at(app, "http://localhost:8000") as client:
        r = await client.post(
            TOKEN_PATH, json={"user": "alice"}, headers={"Origin": "http://localhost:8000"}
        )
        assert r.status_code == 200, r.text


@pytest.mark.parametrize(
    "auth",
    [
        {"jwt_secret": "x" * 32, "jwt_require_issuer_audience": False},
        {"better_auth_url": "https://auth.example.com"},
        {"better_auth_jwks_url": "https://auth.example.com/api/auth/jwks"},
    ],
)
async def test_dev_token_does_not_exist_outside_dev_auth_mode(
    database_url: str, data_dir: Path, auth: dict[str, str]
) -> None:
    app = create_app(make_settings(database_url, data_dir, **auth))
    async with reached_at(app, "http://127.0.0.1:8000") as client:
        r = await client.post(TOKEN_PATH, json={"user": "alice"})
        assert r.status_code == 404
        assert r.json() == {"detail": "Not Found", "code": "not_found"}
        paths = (await client.get("/openapi.json")).json()["paths"]
        assert TOKEN_PATH not in paths and "/api/tasks" in paths
        assert (await client.get("/")).status_code == 200, "the page itself is served in every mode"


@pytest.mark.parametrize(
    "base_url", ["http://192.0.2.10:8000", "http://testserver", "http://[2001:db8::1]:8000"]
)
async def test_dev_token_refuses_a_server_not_on_loopback(
    database_url: str, data_dir: Path, base_url: str
) -> None:
    app = create_app(make_settings(database_url, data_dir))
    async with reached_at(app, base_url) as client:
        r = await client.post(TOKEN_PATH, json={"user": "alice"})
        assert r.status_code == 404
        assert r.json()["code"] == "not_found"
        # refused before the body is even looked at
        assert (await client.post(TOKEN_PATH, json={})).status_code == 404


@pytest.mark.parametrize(
    "header",
    [
        {"Forwarded": "for=192.0.2.1;proto=https"},
        {"X-Forwarded-For": "192.0.2.1"},
        {"X-Forwarded-For": "127.0.0.1"},
        {"X-Forwarded-Host": "app.example.com"},
        {"X-Real-IP": "192.0.2.1"},
    ],
)
async def test_dev_token_refuses_proxied_requests(
    database_url: str, data_dir: Path, header: dict[str, str]
) -> None:
    app = create_app(make_settings(database_url, data_dir))
    async with reached_at(app, "http://127.0.0.1:8000") as client:
        r = await client.post(TOKEN_PATH, json={"user": "alice"}, headers=header)
        assert r.status_code == 403
        assert r.json() == {
            "detail": "The development token endpoint refuses proxied requests",
            "code": "forbidden",
        }


@pytest.mark.parametrize(
    ("header", "value"),
    [
        ("Host", "rebound.example.com:8000"),  # DNS rebinding: a public name resolving to 127.0.0.1
        ("Origin", "https://evil.example"),
        ("Origin", "null"),
    ],
)
async def test_dev_token_refuses_foreign_host_or_origin(
    database_url: str, data_dir: Path, header: str, value: str
) -> None:
    app = create_app(make_settings(database_url, data_dir))
    async with reached_at(app, "http://127.0.0.1:8000") as client:
        r = await client.post(TOKEN_PATH, json={"user": "alice"}, headers={header: value})
        assert r.status_code == 403
        assert r.json()["code"] == "forbidden"


@pytest.mark.parametrize(
    "user",
    ["", "   ", " alice", "alice ", "a" * 256, "al\nice", "al\x07ice", "al\x00ice", "a\u200bb", 42],
)
async def test_dev_token_refuses_unprintable_or_bad_users(
    database_url: str, data_dir: Path, user: object
) -> None:
    app = create_app(make_settings(database_url, data_dir))
    async with reached_at(app, "http://127.0.0.1:8000") as client:
        r = await client.post(TOKEN_PATH, json={"user": user})
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["code"] == "invalid_input"
        assert [e["field"] for e in body["errors"]] == ["user"]
        assert (await client.post(TOKEN_PATH, json={"user": "ü" * 255})).status_code == 200
        extra = await client.post(TOKEN_PATH, json={"user": "alice", "sub": "root"})
        assert extra.status_code == 422
