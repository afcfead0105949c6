"""Development sign-in needs the secret the server prints at start (`/?login=<secret>`): without
it, even a loopback request with loopback `Host` and `Origin` (what a same-host reverse proxy
sends) gets no token."""

from __future__ import annotations

import logging
import re
import sys
from pathlib import Path

import httpx
import pytest

from backend.auth import devlogin
from backend.auth.devkeys import load_or_create_dev_key
from backend.auth.devlogin import login_secret
from backend.core.config import Settings
from backend.main import create_app
from backend.web.devtoken import LOGIN_HEADER
from tests.support.app import serving
from tests.support.devsignin import TOKEN_PATH


def secret(settings: Settings) -> str:
    return login_secret(load_or_create_dev_key(settings.data_dir))


async def test_a_loopback_request_without_the_secret_gets_no_token(settings: Settings) -> None:
    app = create_app(settings)
    async with serving(app) as base, httpx.AsyncClient(base_url=base) as client:
        loopback: dict[str, str | bytes] = {"Host": base.removeprefix("http://"), "Origin": base}
        for refused in (
            {},
            {LOGIN_HEADER: ""},
            {LOGIN_HEADER: "x" * 24},
            {LOGIN_HEADER: "é".encode()},
        ):
            r = await client.post(TOKEN_PATH, json={"user": "alice"}, headers=loopback | refused)
            assert r.status_code == 403, (refused, r.text)
            assert r.json()["code"] == "forbidden"
            assert "token" not in r.json()
            assert "login secret" in r.json()["detail"]
        right = {LOGIN_HEADER: secret(settings)}
        r = await client.post(TOKEN_PATH, json={"user": "alice"}, headers=loopback | right)
        assert r.status_code == 200, r.text
        token = r.json()["token"]
        tasks = await client.get("/api/tasks", headers={"Authorization": f"Bearer {token}"})
        assert tasks.status_code == 200


async def test_the_secret_is_checked_before_the_body(settings: Settings) -> None:
    app = create_app(settings)
    async with serving(app) as base, httpx.AsyncClient(base_url=base) as client:
        r = await client.post(TOKEN_PATH, content=b"not json")
        assert r.status_code == 403


def test_the_secret_is_long_url_safe_and_new_for_each_start(data_dir: Path) -> None:
    key = load_or_create_dev_key(data_dir)
    this = login_secret(key)
    assert len(this) >= 16 and re.fullmatch(r"[A-Za-z0-9_-]+", this)
    assert login_secret(key) == this == login_secret(key, devlogin.start_id())
    assert login_secret(key, "serve:another-start") != this
    assert login_secret(key, "serve:a") != login_secret(key, "serve:b")


async def test_the_start_log_prints_the_playground_with_the_secret_and_the_docs(
    settings: Settings, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(devlogin.ADDRESS_ENV, "http://127.0.0.1:8123")
    caplog.set_level(logging.INFO)
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        pass
    (line,) = [r.getMessage() for r in caplog.records if "playground: " in r.getMessage()]
    assert f"http://127.0.0.1:8123/?login={secret(settings)} " in line
    assert "API docs: http://127.0.0.1:8123/docs" in line


@pytest.mark.parametrize(
    ("host", "port", "address"),
    [
        ("127.0.0.1", 8000, "http://127.0.0.1:8000"),
        ("0.0.0.0", 9000, "http://127.0.0.1:9000"),
        ("::", 80, "http://[::1]:80"),
        ("localhost", 8001, "http://localhost:8001"),
    ],
)
def test_start_address(host: str, port: int, address: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(devlogin.ADDRESS_ENV, raising=False)
    monkeypatch.setattr(
        sys, "argv", ["/venv/bin/uvicorn", "backend.main:app", "--host", host, f"--port={port}"]
    )
    assert devlogin.start_address() == address
    assert devlogin.base_url(host, port) == address
