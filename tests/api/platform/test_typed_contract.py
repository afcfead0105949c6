"""The typed contract: what a TypeScript frontend gets from /openapi.json compiles as it should.

`openapi-typescript` 7 turns the app's schema into types and `tsc --strict` checks
`tests/contract/usage.ts` against them: `POST /api/chat` answers a `ChatResponse` (no media-type
union), listing tasks reads `data.tasks[i].title`, ChatKit's JSON answers are typed, `stream` is
not demanded, and the streamed events are one union narrowed by `type`. The tools come from
`tests/contract/package-lock.json` (`npm ci`, once, again only when the lock changes).

The events a real stream sends are checked against the documented schemas, so the types do not
drift from the wire.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from agents.testing import ScriptedModel, assistant_message, function_call
from jsonschema import Draft202012Validator
from pydantic import TypeAdapter

from backend.chat.events import ChatStreamEvent
from backend.core.config import Settings
from backend.main import create_app
from tests.support.app import running_app

CONTRACT = Path(__file__).resolve().parents[2] / "contract"
NODE_MODULES = CONTRACT / "node_modules"
STAMP = NODE_MODULES / ".installed-lock.sha256"


def _node_tools() -> Path:
    """`tests/contract/node_modules`, installed by `npm ci` when missing or the lock changed."""
    missing = [tool for tool in ("node", "npm") if shutil.which(tool) is None]
    if missing:
        pytest.skip(f"{' and '.join(missing)} not on PATH: the TypeScript contract is not checked")
    lock = hashlib.sha256((CONTRACT / "package-lock.json").read_bytes()).hexdigest()
    if not STAMP.exists() or STAMP.read_text() != lock:
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"],
            cwd=CONTRACT,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, f"npm ci failed:\n{done.stdout}\n{done.stderr}"
        STAMP.write_text(lock)
    return NODE_MODULES


def _node(work: Path, script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["node", str(NODE_MODULES / script), *args],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "NO_COLOR": "1", "FORCE_COLOR": "0"},
    )


def typecheck(schema: dict[str, Any], work: Path) -> subprocess.CompletedProcess[str]:
    """Generate `api.ts` from `schema` next to a copy of usage.ts; run `tsc --noEmit --strict`."""
    (work / "node_modules").symlink_to(_node_tools(), target_is_directory=True)
    (work / "openapi.json").write_text(json.dumps(schema))
    shutil.copy(CONTRACT / "usage.ts", work / "usage.ts")
    generated = _node(work, "openapi-typescript/bin/cli.js", "openapi.json", "--output", "api.ts")
    assert generated.returncode == 0, generated.stdout + generated.stderr
    return _node(
        work,
        "typescript/bin/tsc",
        "--noEmit",
        "--strict",
        "--skipLibCheck",
        "--target",
        "es2022",
        "--lib",
        "es2022,dom,dom.iterable",
        "--module",
        "esnext",
        "--moduleResolution",
        "bundler",
        "usage.ts",
    )


async def test_the_generated_types_compile_a_frontend(
    client: httpx.AsyncClient, tmp_path: Path
) -> None:
    schema = (await client.get("/openapi.json")).json()
    checked = typecheck(schema, tmp_path)
    assert checked.returncode == 0, "usage.ts does not compile:\n" + checked.stdout + checked.stderr


def _events(body: str) -> list[dict[str, Any]]:
    return [json.loads(line[6:]) for line in body.splitlines() if line.startswith("data: ")]


async def test_streamed_events_are_the_documented_ones(
    settings: Settings, alice: dict[str, str]
) -> None:
    model = ScriptedModel(
        [
            [function_call("add_task", {"title": "Buy milk"}, call_id="c1")],
            [assistant_message("Added Buy milk.")],
            [assistant_message("Still here.")],
            RuntimeError("boom"),
        ]
    )
    async with running_app(create_app(settings, model=model)) as client:
        schema = (await client.get("/openapi.json")).json()
        components = schema["components"]["schemas"]
        union = components["ChatStreamEvent"]
        documented = {
            kind: components[ref.rsplit("/", 1)[1]]
            for kind, ref in union["discriminator"]["mapping"].items()
        }
        assert set(documented) == {
            "conversation",
            "text.delta",
            "tool_call",
            "tool_result",
            "done",
            "error",
        }
        stream_doc = schema["paths"]["/api/chat/stream"]["post"]["responses"]["200"]["content"]
        frames = stream_doc["text/event-stream"]["schema"]  # `data` of each frame: one event
        assert set(stream_doc) == {"text/event-stream"}
        assert frames["properties"]["data"]["contentSchema"] == {
            "$ref": "#/components/schemas/ChatStreamEvent"
        }
        assert set(schema["paths"]["/api/chat"]["post"]["responses"]["200"]["content"]) == {
            "application/json"
        }

        first = await client.post("/api/chat/stream", json={"message": "add milk"}, headers=alice)
        assert first.headers["content-type"].startswith("text/event-stream")
        events = _events(first.text)
        conversation = events[0]["conversation_id"]
        # The old way still streams: `stream: true` on POST /api/chat.
        again = await client.post(
            "/api/chat",
            json={"message": "again", "conversation_id": conversation, "stream": True},
            headers=alice,
        )
        events += _events(again.text)
        failed = await client.post(
            "/api/chat/stream",
            json={"message": "fail", "conversation_id": conversation},
            headers=alice,
        )
        events += _events(failed.text)

    seen = [e["type"] for e in events]
    assert set(seen) == set(documented), seen
    adapter = TypeAdapter[Any](ChatStreamEvent)
    valid = _validator(schema, "ChatStreamEvent")
    for event in events:
        adapter.validate_python(event)
        valid(event)
        assert set(event) <= set(documented[event["type"]]["properties"]), event


def _validator(schema: dict[str, Any], name: str) -> Callable[[Any], None]:
    """Validates a body against a component of the published schema (`discriminator` aside)."""
    root = {"$ref": f"#/components/schemas/{name}", "components": schema["components"]}
    return Draft202012Validator(root).validate


async def test_chatkit_answers_are_the_documented_ones(
    settings: Settings, alice: dict[str, str]
) -> None:
    model = ScriptedModel(
        [
            [function_call("add_task", {"title": "Buy milk"}, call_id="c1")],
            [assistant_message("Added Buy milk.")],
        ]
    )
    async with running_app(create_app(settings, model=model)) as client:
        schema = (await client.get("/openapi.json")).json()
        request = _validator(schema, "ChatKitReq")
        answer = _validator(schema, "ChatKitJSONAnswer")
        event = _validator(schema, "ChatKitThreadStreamEvent")

        async def post(body: dict[str, Any]) -> httpx.Response:
            request(body)  # the smallest body the schema asks for is one the server takes
            r = await client.post("/api/chatkit", json=body, headers=alice)
            assert r.status_code == 200, r.text
            if r.headers["content-type"].startswith("application/json"):
                answer(r.json())
            else:
                for one in _events(r.text):
                    event(one)
            return r

        text = {"type": "input_text", "text": "add milk"}
        user_input = {"content": [text], "attachments": [], "inference_options": {}}
        created = await post({"type": "threads.create", "params": {"input": user_input}})
        thread = _events(created.text)[0]["thread"]["id"]
        await post({"type": "threads.list", "params": {}})
        await post({"type": "threads.get_by_id", "params": {"thread_id": thread}})
        await post({"type": "items.list", "params": {"thread_id": thread}})
        await post({"type": "threads.update", "params": {"thread_id": thread, "title": "Milk"}})
        await post({"type": "threads.delete", "params": {"thread_id": thread}})
        assert (await post({"type": "threads.list", "params": {}})).json()["data"] == []
