"""The API documentation: Swagger UI at `/docs`, ReDoc at `/redoc`, and the finished OpenAPI schema.

The pages load their scripts and styles from this app (`/docs/assets/…`, the files shipped in the
`fastapi-offline` package), never from a CDN, so they work offline and under the strict CSP the
middleware sends for them (no inline script: the Swagger UI start-up is `swagger-init.js`).

FastAPI derives most of the schema from the routes. `openapi()` here adds what it cannot see:
the `/mcp` endpoint (mounted as a plain ASGI route), the streamed chat events (`ChatStreamEvent`,
one schema per event, chosen by `type`), ChatKit's schemas (the request union from
`chatkit.types`, validated by hand in the router, its JSON answers and its stream events), and
the `X-Request-ID` header that the middleware puts on every response. Last, it states which keys
a body must have in the terms code generators read (`_settle_defaults`): the contract that
tests/contract/usage.ts compiles against.
"""

from __future__ import annotations

import copy
import functools
import json
import warnings
from html import escape
from typing import Any, Literal

from chatkit.types import ChatKitReq, Page, Thread, ThreadItem, ThreadStreamEvent
from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, Response
from pydantic import TypeAdapter
from pydantic.json_schema import GenerateJsonSchema
from starlette.staticfiles import StaticFiles

from backend.chat.events import ChatStreamEvent
from backend.tasks.registry import ACTIONS
from backend.web.errors import error_responses_schema

ASSETS = "/docs/assets"
_REF = "#/components/schemas/"
CHATKIT_REQUEST_REF = f"{_REF}ChatKitReq"
CHATKIT_ANSWER_REF = f"{_REF}ChatKitJSONAnswer"
CHATKIT_STREAM_EVENT_REF = f"{_REF}ChatKitThreadStreamEvent"
STREAM_EVENT_REF = f"{_REF}ChatStreamEvent"
"""The streamed chat events' union (`chat.events.ChatStreamEvent`)."""


def sse_frames(event_ref: str) -> dict[str, Any]:
    """The schema of a `text/event-stream` answer: each frame's `data` is one event's JSON text,
    of the schema `event_ref` (`contentMediaType` + `contentSchema`, as JSON Schema states an
    encoded string; the event schemas themselves are components, for generated clients)."""
    return {
        "type": "object",
        "required": ["data"],
        "properties": {
            "data": {
                "type": "string",
                "contentMediaType": "application/json",
                "contentSchema": {"$ref": event_ref},
            }
        },
    }


IDEMPOTENCY_KEY: dict[str, Any] = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "description": "Makes retries safe: a repeat with the same key and body returns the first "
    "answer (with `Idempotent-Replayed: true`) instead of running again; the same key with "
    "another body answers 422; a repeat while the first still runs answers 409. Kept 24 h.",
    "schema": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": "^[!-~]+$"},
}
"""The `Idempotency-Key` request header, for `openapi_extra={"parameters": [...]}`."""

_REQUEST_ID = {
    "description": "The request's id (the client's `X-Request-ID` if it was safe, else a new "
    "one); every log line about the request carries it.",
    "schema": {"type": "string"},
}

_SWAGGER_INIT = b"""\
// Swagger UI start-up, in a file of its own so the page needs no inline script.
const root = document.getElementById("swagger-ui");
window.ui = SwaggerUIBundle({
  url: root.dataset.openapiUrl,
  dom_id: "#swagger-ui",
  layout: "BaseLayout",
  deepLinking: true,
  showExtensions: true,
  showCommonExtensions: true,
  validatorUrl: null,
  presets: [SwaggerUIBundle.presets.apis, SwaggerUIBundle.SwaggerUIStandalonePreset],
});
"""


def _page(title: str, head: str, body: str) -> str:
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{escape(title)}</title>\n{head}</head>\n<body>\n{body}</body>\n</html>\n"
    )


def install_api_docs(app: FastAPI) -> None:
    """Serve `/docs`, `/redoc` and their assets; finish `app.openapi()` (see the module docstring).

    The app must be built with `docs_url=None, redoc_url=None`.
    """
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = _finish(generate())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    def urls(request: Request) -> tuple[str, str]:
        root = request.scope.get("root_path", "").rstrip("/")
        return root + ASSETS, root + (app.openapi_url or "/openapi.json")

    @app.get("/docs", include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        assets, spec = urls(request)
        return HTMLResponse(
            _page(
                f"{app.title} - Swagger UI",
                f'<link rel="icon" type="image/png" href="{assets}/favicon.png">\n'
                f'<link rel="stylesheet" href="{assets}/swagger-ui.css">\n',
                f'<div id="swagger-ui" data-openapi-url="{escape(spec)}"></div>\n'
                f'<script src="{assets}/swagger-ui-bundle.js"></script>\n'
                f'<script src="{assets}/swagger-init.js"></script>\n',
            )
        )

    @app.get("/redoc", include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        assets, spec = urls(request)
        return HTMLResponse(
            _page(
                f"{app.title} - ReDoc",
                f'<link rel="icon" type="image/png" href="{assets}/favicon.png">\n',
                f'<redoc spec-url="{escape(spec)}"></redoc>\n'
                f'<script src="{assets}/redoc.standalone.js"></script>\n',
            )
        )

    @app.get(f"{ASSETS}/swagger-init.js", include_in_schema=False)
    async def swagger_init() -> Response:
        return Response(_SWAGGER_INIT, media_type="text/javascript")

    app.mount(ASSETS, StaticFiles(packages=[("fastapi_offline", "static")]), name="docs-assets")


def _finish(schema: dict[str, Any]) -> dict[str, Any]:
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    # The event and ChatKit parts are the same for every app: built once per process (~0.4 s).
    _add(components, copy.deepcopy(_event_schemas()))
    _add(components, copy.deepcopy(_chatkit_schemas()))
    schema["paths"]["/mcp"] = _mcp_path()
    for path in schema["paths"].values():
        for operation in path.values():
            for response in operation.get("responses", {}).values():
                response.setdefault("headers", {}).setdefault("X-Request-ID", _REQUEST_ID)
    _settle_defaults(schema)
    return schema


def _add(components: dict[str, Any], parts: dict[str, Any]) -> None:
    """Add schemas; one already there (FastAPI's `ChatResponse`, say) must be the same."""
    for name, part in parts.items():
        if components.setdefault(name, part) != part:
            raise RuntimeError(f"two different OpenAPI schemas named {name}")


@functools.cache
def _event_schemas() -> dict[str, Any]:
    """`ChatStreamEvent`, the union of the streamed chat events, and one schema per event."""
    schema = TypeAdapter[Any](ChatStreamEvent).json_schema(
        mode="serialization", ref_template="#/components/schemas/{model}"
    )
    parts = schema.pop("$defs", {})
    schema["description"] = (
        "One event of a streamed chat turn (`POST /api/chat/stream`), by `type`."
    )
    return {**parts, STREAM_EVENT_REF[len(_REF) :]: schema}


class _ChatKitNames(GenerateJsonSchema):
    """Short names for chatkit.types' generic pages: `Page[Thread]` and `Page[ThreadItem]`."""

    def normalize_name(self, name: str) -> str:
        if name == "Page[Thread]":
            return "ThreadPage"
        if name.startswith("Page[Annotated[Union[UserMessageItem"):
            return "ItemPage"
        return super().normalize_name(name)


_ChatKitInput = tuple[str, Literal["validation", "serialization"], Any]


@functools.cache
def _chatkit_schemas() -> dict[str, Any]:
    """ChatKit's request union, its JSON answers and its stream events, with their parts, as
    `ChatKit…` components (no name clashes with ours)."""
    inputs: list[_ChatKitInput] = [
        ("ChatKitReq", "validation", ChatKitReq),
        ("ChatKitJSONAnswer", "serialization", Thread | Page[Thread] | Page[ThreadItem]),
        ("ChatKitThreadStreamEvent", "serialization", ThreadStreamEvent),
    ]
    with warnings.catch_warnings():
        # A generic default (`~TType`) in chatkit.types has no JSON form; it is left out.
        warnings.simplefilter("ignore")
        by_key, defs = _ChatKitNames(ref_template=_REF + "ChatKit{model}").generate_definitions(
            [(name, mode, TypeAdapter[Any](kind).core_schema) for name, mode, kind in inputs]
        )
    parts = {f"ChatKit{name}": part for name, part in defs.items()}
    made = {name: by_key[(name, mode)] for name, mode, _ in inputs}
    made["ChatKitReq"]["description"] = (
        "A ChatKit request (`chatkit.types.ChatKitReq`), chosen by `type`."
    )
    made["ChatKitJSONAnswer"] = {
        "description": "ChatKit's JSON answer: `threads.get_by_id` and `threads.update` answer "
        "a thread (its first page of items), `threads.list` a page of threads (no items), "
        "`items.list` a page of items, `threads.delete` an empty object. (`anyOf`: an empty "
        "page is both kinds of page.)",
        "anyOf": [*made["ChatKitJSONAnswer"]["anyOf"], {"$ref": f"{_REF}ChatKitEmpty"}],
    }
    made["ChatKitEmpty"] = {"type": "object", "maxProperties": 0, "description": "Nothing."}
    made["ChatKitThreadStreamEvent"]["description"] = (
        "One streamed ChatKit event (`chatkit.types.ThreadStreamEvent`), chosen by `type`."
    )
    return {**parts, **made}


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"][len(_REF) :]} if str(node.get("$ref", "")).startswith(_REF) else set()
        return found.union(*(_refs(v) for v in node.values()))
    if isinstance(node, list):
        return set().union(*(_refs(v) for v in node))
    return set()


def _reachable(components: dict[str, Any], start: set[str]) -> set[str]:
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name not in seen and name in components:
            seen.add(name)
            todo.extend(_refs(components[name]))
    return seen


def _nullable(prop: dict[str, Any]) -> bool:
    kinds = [prop, *prop.get("anyOf", []), *prop.get("oneOf", [])]
    return any(k.get("type") == "null" or "null" in (k.get("type") or []) for k in kinds)


def _settle_defaults(schema: dict[str, Any]) -> None:
    """Say which keys a body must have, in the terms generators read.

    openapi-typescript (7, by default) types a property that has a `default` as always present.
    True of an answer, not of a request: there a defaulted property may be left out. So in the
    schemas requests use, `default` moves to the description and to `examples`, except for a
    constant (ChatKit's `type`), which becomes required, as the discriminator needs it. In the
    answers, a `default: null` is dropped (the key may be missing), and in ChatKit's answers,
    which leave out every None, each key that cannot be null is required.
    """
    components = schema["components"]["schemas"]
    operations = [op for path in schema["paths"].values() for op in path.values()]
    requests = _reachable(components, _refs([op.get("requestBody") for op in operations]))
    chatkit_answers = _reachable(
        components, {CHATKIT_ANSWER_REF[len(_REF) :], CHATKIT_STREAM_EVENT_REF[len(_REF) :]}
    )
    for name, part in components.items():
        props: dict[str, Any] = part.get("properties", {})
        required: list[str] = part.setdefault("required", [])
        for key, prop in props.items():
            if name in requests:
                if "default" not in prop:
                    continue
                default = prop.pop("default")
                if prop.get("const", default) == default and "const" in prop:
                    required.append(key) if key not in required else None
                    continue
                if default is None:  # optional and nullable says it all
                    continue
                note = f"Default: `{json.dumps(default)}`."
                prop["description"] = (
                    f"{prop['description']} {note}" if "description" in prop else note
                )
                prop.setdefault("examples", [default])
            elif name in chatkit_answers:
                prop.pop("default", None)
                if not _nullable(prop) and key not in required:
                    required.append(key)
            elif prop.get("default", ...) is None and key not in required:
                del prop["default"]
        if not required:
            del part["required"]


# The example call: the action that creates a task from a title (first in the registry).
_CREATE = next(a for a in ACTIONS.values() if a.required == ["title"])
_JSONRPC_REQUEST: dict[str, Any] = {
    "type": "object",
    "description": "A JSON-RPC 2.0 request (with `id`) or notification (without).",
    "required": ["jsonrpc", "method"],
    "properties": {
        "jsonrpc": {"type": "string", "enum": ["2.0"]},
        "id": {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        "method": {
            "type": "string",
            "description": "`initialize`, `tools/list`, `tools/call`, `ping`, `notifications/…`",
        },
        "params": {"type": "object"},
    },
    "example": {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "tools/call",
        "params": {"name": _CREATE.name, "arguments": {"title": "Buy milk"}},
    },
}
_JSONRPC_RESPONSE: dict[str, Any] = {
    "type": "object",
    "description": "A JSON-RPC 2.0 response: `result`, or `error` (`code`, `message`). A failed "
    "tool call is a result with `isError: true`.",
    "required": ["jsonrpc"],
    "properties": {
        "jsonrpc": {"type": "string"},
        "id": {"oneOf": [{"type": "string"}, {"type": "integer"}, {"type": "null"}]},
        "result": {"type": "object"},
        "error": {"type": "object"},
    },
}


def _mcp_problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": _JSONRPC_RESPONSE}},
    }


def _mcp_path() -> dict[str, Any]:
    not_served = {
        "tags": ["mcp"],
        "summary": "Not served: the MCP server is stateless (no event stream, no session)",
        "responses": error_responses_schema(405),
    }
    return {
        "post": {
            "tags": ["mcp"],
            "summary": "MCP (Streamable HTTP, stateless, JSON responses): the five task tools",
            "description": "One JSON-RPC message per POST, answered with JSON. Send "
            "`Accept: application/json, text/event-stream` and, after `initialize`, the "
            "negotiated `MCP-Protocol-Version`. The bearer token is checked before any MCP "
            "handling; the tools act on that user's tasks only. See docs/mcp.md.",
            "operationId": "mcp",
            "security": [{"HTTPBearer": []}],
            "parameters": [
                {
                    "name": "MCP-Protocol-Version",
                    "in": "header",
                    "required": False,
                    "description": "The version `initialize` negotiated, e.g. `2025-11-25`.",
                    "schema": {"type": "string"},
                }
            ],
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": _JSONRPC_REQUEST}},
            },
            "responses": {
                "200": _mcp_problem("The JSON-RPC response"),
                "202": {"description": "Accepted: the message was a notification or a response"},
                "400": _mcp_problem("Not JSON, not JSON-RPC, or an unsupported protocol version"),
                "404": _mcp_problem("Unknown `Mcp-Session-Id` (this server keeps no sessions)"),
                "406": _mcp_problem(
                    "`Accept` must list both application/json and text/event-stream"
                ),
                **error_responses_schema(401, 413, 415, 503),
            },
        },
        "get": {**not_served, "operationId": "mcp_get"},
        "delete": {**not_served, "operationId": "mcp_delete"},
    }
