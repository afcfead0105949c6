"""An OpenAI-compatible Chat Completions stub server, reached over real HTTP.

Tests use it to check the exact request the service sends (system prompt, history, tool
schemas, tool results) and to inject provider faults; the benchmark runs it as a separate
process with a configurable latency. With nothing scripted it behaves like a tool-using model:
a user message gets an `add_task` call, a tool result gets a short text.

    async with StubLLM() as stub:                  # in-process, on a free port
        stub.script({"tool_calls": [{"name": "list_tasks", "arguments": {}}]}, {"text": "Here."})
        ... LLM_BASE_URL=stub.base_url ...
        stub.requests[-1]["messages"]

    python -m bench.stub_llm --port 9100 --latency-ms 500   # a separate process

`PUT /v1/_control {"latency_ms": N}` changes the latency of a running stub.

Script entries: {"text": str} | {"tool_calls": [{"name", "arguments", "id"?, "extra_content"?}]}
| {"status": int, "body"?: dict, "headers"?: dict} | {"hang": seconds} | {"drop": True}.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import socket
import time
from collections import deque
from typing import Any

import orjson
import uvicorn

_ids = itertools.count(1)


class StubLLM:
    def __init__(self, latency_ms: float = 0.0) -> None:
        self.latency_ms = latency_ms
        self.requests: list[dict[str, Any]] = []
        self.record = True
        self._script: deque[dict[str, Any]] = deque()
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None
        self.port = 0

    # --- scripting -----------------------------------------------------------------
    def script(self, *entries: dict[str, Any]) -> None:
        self._script.extend(entries)

    @property
    def pending(self) -> int:
        return len(self._script)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    # --- the ASGI app ----------------------------------------------------------------
    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        path = scope["path"]
        if scope["method"] == "PUT" and path.rstrip("/").endswith("/_control"):
            self.latency_ms = float(orjson.loads(body).get("latency_ms", self.latency_ms))
            await _json(send, 200, {"latency_ms": self.latency_ms})
            return
        if scope["method"] == "GET" and path.rstrip("/").endswith("/models"):
            await _json(
                send, 200, {"object": "list", "data": [{"id": "stub-model", "object": "model"}]}
            )
            return
        if scope["method"] != "POST" or not path.rstrip("/").endswith("/chat/completions"):
            await _json(send, 404, {"error": {"message": "not found"}})
            return
        request = orjson.loads(body)
        if self.record:
            self.requests.append(request)
        entry = self._script.popleft() if self._script else self._default(request)
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if "hang" in entry:
            await asyncio.sleep(entry["hang"])
        if entry.get("drop"):
            raise ConnectionResetError("stub dropped the connection")
        if "status" in entry:
            headers = entry.get("headers", {})
            error = entry.get(
                "body", {"error": {"message": f"stub error {entry['status']}", "type": "stub"}}
            )
            await _json(send, entry["status"], error, headers)
            return
        model = request.get("model", "stub-model")
        if request.get("stream"):
            await _stream(
                send, entry, model, bool((request.get("stream_options") or {}).get("include_usage"))
            )
        else:
            await _json(send, 200, _completion(entry, model))

    @staticmethod
    def _default(request: dict[str, Any]) -> dict[str, Any]:
        last = request["messages"][-1]
        if last.get("role") == "tool":
            return {"text": "Done: added it."}
        content = last.get("content")
        text = (
            content
            if isinstance(content, str)
            else " ".join(p.get("text", "") for p in content or [])
        )
        return {"tool_calls": [{"name": "add_task", "arguments": {"title": text[:200] or "task"}}]}

    # --- running in-process ----------------------------------------------------------
    async def __aenter__(self) -> StubLLM:
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self._server = uvicorn.Server(uvicorn.Config(self, log_level="warning", lifespan="off"))
        self._task = asyncio.create_task(self._server.serve(sockets=[sock]))
        while not self._server.started:
            if self._task.done():
                self._task.result()
            await asyncio.sleep(0.01)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None and self._task is not None
        self._server.should_exit = True
        self._server.force_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


def _tool_calls(entry: dict[str, Any]) -> list[dict[str, Any]]:
    calls = []
    for call in entry["tool_calls"]:
        item: dict[str, Any] = {
            "id": call.get("id") or f"call_{next(_ids)}",
            "type": "function",
            "function": {
                "name": call["name"],
                "arguments": orjson.dumps(call.get("arguments", {})).decode(),
            },
        }
        if "extra_content" in call:
            item["extra_content"] = call["extra_content"]
        calls.append(item)
    return calls


_USAGE = {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}


def _completion(entry: dict[str, Any], model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": entry.get("text")}
    finish = "stop"
    if "tool_calls" in entry:
        message["tool_calls"] = _tool_calls(entry)
        finish = "tool_calls"
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish}],
        "usage": _USAGE,
    }


async def _stream(send: Any, entry: dict[str, Any], model: str, include_usage: bool) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"text/event-stream"), (b"cache-control", b"no-cache")],
        }
    )
    base = {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    async def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> None:
        data = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra}
        await send(
            {
                "type": "http.response.body",
                "body": b"data: " + orjson.dumps(data) + b"\n\n",
                "more_body": True,
            }
        )

    await chunk({"role": "assistant", "content": ""})
    if "tool_calls" in entry:
        for index, call in enumerate(_tool_calls(entry)):
            await chunk({"tool_calls": [{"index": index, **call}]})
        finish = "tool_calls"
    else:
        text = entry.get("text") or ""
        for start in range(0, len(text), 8):
            await chunk({"content": text[start : start + 8]})
        finish = "stop"
    await chunk({}, finish)
    if include_usage:
        data = {**base, "choices": [], "usage": _USAGE}
        await send(
            {
                "type": "http.response.body",
                "body": b"data: " + orjson.dumps(data) + b"\n\n",
                "more_body": True,
            }
        )
    await send({"type": "http.response.body", "body": b"data: [DONE]\n\n"})


async def _json(send: Any, status: int, body: Any, headers: dict[str, str] | None = None) -> None:
    payload = orjson.dumps(body)
    raw_headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(payload)).encode()),
    ]
    raw_headers += [(k.lower().encode(), str(v).encode()) for k, v in (headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": raw_headers})
    await send({"type": "http.response.body", "body": payload})


def main() -> None:
    parser = argparse.ArgumentParser(description="OpenAI-compatible Chat Completions stub")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    stub = StubLLM(latency_ms=args.latency_ms)
    stub.record = False  # a long benchmark must not grow memory
    uvicorn.run(
        stub, host=args.host, port=args.port, log_level="warning", lifespan="off", backlog=4096
    )


if __name__ == "__main__":
    main()
