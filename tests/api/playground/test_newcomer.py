"""What a newcomer meets first: `curl -I` answers like GET, one development-token lifetime.

HEAD is answered by `backend.web.head` for every GET route, in process and over a real socket;
the OpenAPI schema does not grow a HEAD operation for each.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import jwt
import pytest

from backend.auth.devkeys import DEV_TOKEN_TTL_SECONDS, load_or_create_dev_key, mint_token
from backend.main import create_app
from tests.support.app import make_settings, running_app, serving
from tests.support.devsignin import TOKEN_PATH, reached_at
from tests.support.prometheus import parse

# Headers that differ between any two answers.
PER_RESPONSE = {"date", "x-request-id"}
GET_ROUTES = [
    "/",
    "/static/app.js",
    "/static/app.css",
    "/static/icon.svg",
    "/health",
    "/health/ready",
    "/openapi.json",
    "/docs",
    "/api/tasks",
    "/api/tasks?status=pending",
    "/api/conversations",
    "/api/tasks/1",  # 404 as the GET
    "/static/nope.js",  # 404 as the GET
]


def _same_head(head: httpx.Response, get: httpx.Response) -> None:
    assert head.status_code == get.status_code, (head.request.url, get.text)
    assert {k: v for k, v in head.headers.items() if k not in PER_RESPONSE} == {
        k: v for k, v in get.headers.items() if k not in PER_RESPONSE
    }
    assert head.content == b""


@pytest.mark.parametrize("path", GET_ROUTES)
async def test_head_answers_like_get_without_a_body(
    client: httpx.AsyncClient, alice: dict[str, str], path: str
) -> None:
    get = await client.get(path, headers=alice)
    head = await client.head(path, headers=alice)
    _same_head(head, get)
    if get.status_code == 200:
        assert int(head.headers["content-length"]) == len(get.content) > 0


async def test_head_refused_where_get_is_refused(
    client: httpx.AsyncClient, alice: dict[str, str]
) -> None:
    # No token: 401 with its WWW-Authenticate, as the GET.
    _same_head(await client.head("/api/tasks"), await client.get("/api/tasks"))
    # A POST-only route answers HEAD as it answers GET: 405, naming what it allows.
    head = await client.head("/api/chat", headers=alice)
    _same_head(head, await client.get("/api/chat", headers=alice))
    assert head.status_code == 405 and head.headers["allow"] == "POST"


async def test_head_is_logged_and_counted_as_head_under_the_route_template(
    database_url: str, data_dir: Path, alice: dict[str, str]
) -> None:
    token = "metrics-" + "m" * 24
    settings = make_settings(database_url, data_dir, metrics_token=token)
    async with running_app(create_app(settings)) as client:
        assert (await client.head("/api/tasks/12345", headers=alice)).status_code == 404
        scrape = await client.get("/metrics", headers={"Authorization": f"Bearer {token}"})
    samples = parse(scrape.text)
    counted = {
        (labels["method"], labels["route"], labels["status"])
        for name, labels in ((name, dict(labels)) for name, labels in samples)
        if name == "task_assistant_http_requests_total"
    }
    assert ("HEAD", "/api/tasks/{task_id}", "404") in counted


async def test_openapi_has_no_head_operations(client: httpx.AsyncClient) -> None:
    paths = (await client.get("/openapi.json")).json()["paths"]
    assert paths and "/api/tasks" in paths
    assert [p for p, operations in paths.items() if "head" in operations] == []


async def test_head_over_a_real_socket_keeps_content_length_and_sends_no_body(
    database_url: str, data_dir: Path
) -> None:
    app = create_app(make_settings(database_url, data_dir))
    async with serving(app) as base, httpx.AsyncClient(base_url=base) as http:
        for path in ("/", "/health", "/openapi.json", "/static/app.js"):
            get = await http.get(path)
            head = await http.head(path)
            _same_head(head, get)
            assert int(head.headers["content-length"]) == len(get.content)
        # The connection is still in step: the next request on it is answered as usual.
        assert (await http.get("/health")).json()["status"] == "ok"


def _lifetime(token: str) -> int:
    claims = jwt.decode(token, options={"verify_signature": False})
    return int(claims["exp"]) - int(claims["iat"])


async def test_one_development_token_lifetime(database_url: str, data_dir: Path) -> None:
    assert DEV_TOKEN_TTL_SECONDS == 8 * 3600
    assert _lifetime(mint_token(load_or_create_dev_key(data_dir), "alice")) == (
        DEV_TOKEN_TTL_SECONDS
    )
    app = create_app(make_settings(database_url, data_dir))
    async with reached_at(app, "http://127.0.0.1:8000") as client:
        signed = (await client.post(TOKEN_PATH, json={"user": "alice"})).json()
    assert _lifetime(signed["token"]) == DEV_TOKEN_TTL_SECONDS
    assert (
        abs(
            jwt.decode(signed["token"], options={"verify_signature": False})["exp"]
            - (time.time() + DEV_TOKEN_TTL_SECONDS)
        )
        < 60
    )
