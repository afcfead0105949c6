"""The OpenAPI schema says what each route really answers, and the docs pages work offline."""

from __future__ import annotations

import inspect
import re
from html.parser import HTMLParser
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute, iter_route_contexts

from backend.core.config import Settings
from backend.main import create_app
from backend.web.deps import counted_chat_turn, current_user, get_session
from backend.web.limits import chat_rate_limit, limit_reads, limit_writes

RATE_LIMITERS = {chat_rate_limit, counted_chat_turn, limit_reads, limit_writes}
# Limited or database-bound inside the handler rather than through a dependency.
RATE_LIMITED_IN_HANDLER = {("POST", "/api/chatkit"), ("POST", "/api/{user_id}/chat")}
DATABASE_IN_HANDLER = {
    ("GET", "/health/ready"),
    ("POST", "/api/tasks"),
    ("POST", "/api/chat"),
    ("POST", "/api/{user_id}/chat"),
    ("POST", "/api/chatkit"),
    ("POST", "/mcp"),
}
# The MCP SDK answers malformed JSON-RPC with 400 or a JSON-RPC error, never 422.
NO_422 = {("POST", "/mcp")}


@pytest.fixture(scope="module")
def offline_app() -> FastAPI:
    return create_app(Settings(_env_file=None, database_url="postgresql://unused/x"))  # type: ignore[call-arg]


def _calls(dependant: Any) -> set[Any]:
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found


def _facts(app: FastAPI) -> dict[tuple[str, str], set[Any]]:
    """(method, path) -> every dependency callable the route resolves, plus the budget
    functions its handler calls itself (`limit_reads`, `limit_writes`)."""
    facts = {}
    for context in iter_route_contexts(app.routes):
        route = context.original_route
        if isinstance(route, APIRoute) and route.include_in_schema:
            source = inspect.getsource(route.endpoint)
            called = {f for f in (limit_reads, limit_writes) if f"{f.__name__}(" in source}
            for method in route.methods:
                facts[(method, context.path or route.path)] = _calls(route.dependant) | called
    return facts


def _operations(schema: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, op)
        for path, ops in schema["paths"].items()
        for method, op in ops.items()
    ]


def test_every_route_declares_its_real_statuses(offline_app: FastAPI) -> None:
    schema = offline_app.openapi()
    facts = _facts(offline_app)
    assert ("POST", "/api/chat") in facts and ("GET", "/api/tasks/{task_id}") in facts
    missing: list[str] = []
    for method, path, op in _operations(schema):
        key = (method, path)
        declared = set(op["responses"])
        deps = facts.get(key, set())
        secured = bool(op.get("security"))
        takes_input = bool(
            [p for p in op.get("parameters", []) if p["in"] in ("path", "query")]
            or "requestBody" in op
        )
        rules = {
            "401": secured,
            "422": takes_input and key not in NO_422,
            "413": "requestBody" in op,
            "429": bool(deps & RATE_LIMITERS) or key in RATE_LIMITED_IN_HANDLER,
            # Every authenticated route can meet an unreachable JWKS, hence 503 too.
            "503": secured or get_session in deps or key in DATABASE_IN_HANDLER,
        }
        for status, required in rules.items():
            if required and status not in declared:
                missing.append(f"{method} {path} lacks {status}")
            if status == "429" and not required and status in declared:
                missing.append(f"{method} {path} declares 429 but is not rate limited")
        if current_user in deps and not secured:
            missing.append(f"{method} {path} needs a token but declares no security")
        for status, response in op["responses"].items():
            headers = response.get("headers", {})
            if "X-Request-ID" not in headers:
                missing.append(f"{method} {path} {status} lacks X-Request-ID")
            needed = {"401": "WWW-Authenticate", "409": "Retry-After", "429": "Retry-After"}
            if status in needed and needed[status] not in headers:
                missing.append(f"{method} {path} {status} lacks {needed[status]}")
    assert not missing, "\n".join(missing)


def test_specific_documentation_gaps_are_closed(offline_app: FastAPI) -> None:
    schema = offline_app.openapi()
    paths = schema["paths"]

    ready = paths["/health/ready"]["get"]["responses"]
    assert {"200", "503"} <= set(ready)

    chatkit_health = set(paths["/api/chatkit/health"]["get"]["responses"])
    assert not chatkit_health & {"404", "409"}
    assert "429" in chatkit_health  # it spends the read budget

    body = paths["/api/chatkit"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    chatkit_req = schema["components"]["schemas"][body["$ref"].rsplit("/", 1)[1]]
    kinds = set(chatkit_req["discriminator"]["mapping"])
    assert {"threads.create", "threads.add_user_message", "items.list"} <= kinds
    for ref in chatkit_req["discriminator"]["mapping"].values():  # every $ref resolves
        assert ref.rsplit("/", 1)[1] in schema["components"]["schemas"]

    mcp = paths["/mcp"]["post"]
    assert mcp["requestBody"]["content"]["application/json"]["schema"]["required"] == [
        "jsonrpc",
        "method",
    ]
    assert {"200", "401", "406", "415"} <= set(mcp["responses"])
    assert set(paths["/mcp"]["get"]["responses"]) == {"405"}

    for method, path in (("post", "/api/tasks"), ("patch", "/api/tasks/{task_id}")):
        assert "413" in paths[path][method]["responses"]
    for path in ("/api/tasks", "/api/chat", "/api/chat/stream"):
        names = [p["name"] for p in paths[path]["post"].get("parameters", [])]
        assert "Idempotency-Key" in names


async def test_declared_401_is_what_an_anonymous_caller_gets(client: httpx.AsyncClient) -> None:
    """Every operation that declares bearer security refuses a request without a token."""
    schema = (await client.get("/openapi.json")).json()
    for method, path, op in _operations(schema):
        if not op.get("security"):
            continue
        url = path.format(task_id=1, conversation_id="0" * 32, user_id="alice")
        r = await client.request(method, url, json={}, headers={"Content-Type": "application/json"})
        assert r.status_code == 401, (method, path, r.text)
        assert r.headers["www-authenticate"] == "Bearer", (method, path)


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.inline_scripts = 0
        self._in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        for name in ("src", "href", "spec-url", "data-openapi-url"):
            if values.get(name):
                self.refs.append(str(values[name]))
        self._in_script = tag == "script" and not values.get("src")

    def handle_data(self, data: str) -> None:
        if self._in_script and data.strip():
            self.inline_scripts += 1

    def handle_endtag(self, tag: str) -> None:
        self._in_script = False


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_everything_from_this_app(
    client: httpx.AsyncClient, page: str
) -> None:
    r = await client.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    # No URL to any other host anywhere in the page (a CDN would leave it blank offline).
    assert not re.findall(r"https?://", r.text), r.text
    csp = r.headers["content-security-policy"]
    directives = {d.split()[0]: d.split()[1:] for d in csp.split(";") if d.strip()}
    assert directives["script-src"] == ["'self'"] and directives["default-src"] == ["'none'"]
    parser = _Refs()
    parser.feed(r.text)
    assert parser.inline_scripts == 0  # the CSP would block them
    assets = [ref for ref in parser.refs if ref.startswith("/docs/assets/")]
    assert len(assets) >= 2, parser.refs
    for ref in parser.refs:
        assert ref.startswith("/"), ref
        asset = await client.get(ref)
        assert asset.status_code == 200, ref
        assert len(asset.content) > 0
    scripts = [ref for ref in assets if ref.endswith(".js")]
    for ref in scripts:
        assert "javascript" in (await client.get(ref)).headers["content-type"]
