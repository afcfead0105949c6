"""An OpenAI-compatible Chat Completions stub server, reached over real HTTP.

Tests use it to check the exact request the service sends (system prompt, history, tool
schemas, tool results) and to inject provider faults; the benchmark runs it as a separate
process with a configurable latency. With nothing scripted it behaves like a tool-using model:
a user message gets an `add_task` call ("list my tasks" a `list_tasks` call), a tool result gets
a short text.

    async with StubLLM() as stub:                  # in-process, on a free port
        stub.script({"tool_calls": [{"name": "list_tasks", "arguments": {}}]}, {"text": "Here."})
        ... LLM_BASE_URL=stub.base_url ...
        stub.requests[-1]["messages"]

    python -m tests.support.stub_llm --port 9100 --latency-ms 500   # a separate process

Script entries, answered in order (then the default model again):

    "some text" or {"text": str}                       an assistant message
    {"tool_calls": [{"name", "arguments", "id"?, "extra_content"?}]}
                                                       tool calls (`extra_content` is passed
                                                       through, e.g. Gemini thought signatures)
    {"status": int, "body"?: dict, "headers"?: dict}   an HTTP error
    {"hang": seconds}                                  sleep, then answer (outlive a timeout)
    {"drop": True}                                     close the connection without answering
    {..., "stream_error": {"message", ...}}            streamed: an error object after the
                                                       first chunk (no [DONE])
    {..., "cut_stream": True}                          streamed: drop the connection halfway

An entry may carry both "text" and "tool_calls" (text first, as Gemini sends "I'll add it").
`PUT /v1/_control {"latency_ms": N}` changes the latency of a running stub; `GET /v1/models`
lists one model.

It is a small HTTP/1.1 server on asyncio streams rather than an ASGI app: a dropped connection
must really be dropped (an ASGI server answers 500 instead), and the benchmark's stub must stay
cheap next to the server it measures on the same cores.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import time
from collections import deque
from http import HTTPStatus
from typing import Any

import orjson

_ids = itertools.count(1)
_USAGE = {"prompt_tokens": 50, "completion_tokens": 10, "total_tokens": 60}
_MAX_HEAD = 64 * 1024


class StubLLM:
    """The stub server. Everything it was asked is kept in `requests` (unless `record` is off)."""

    def __init__(self, latency_ms: float = 0.0, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.latency_ms = latency_ms
        """Added before every chat completion; change it at any time."""
        self.requests: list[dict[str, Any]] = []
        """The JSON body of every chat completion request, in arrival order."""
        self.request_headers: list[dict[str, str]] = []
        """Their headers (lower-case names), parallel to `requests`."""
        self.record = True
        """Off in the benchmark's process, so a long run does not grow memory."""
        self.host = host
        self.port = port
        self._script: deque[dict[str, Any]] = deque()
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    # --- scripting -------------------------------------------------------------------
    def script(self, *entries: dict[str, Any] | str) -> None:
        """Queue answers for the next chat completion requests (see the module docstring)."""
        self._script.extend({"text": e} if isinstance(e, str) else e for e in entries)

    @property
    def pending(self) -> int:
        """Scripted answers not yet used."""
        return len(self._script)

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @staticmethod
    def default_answer(request: dict[str, Any]) -> dict[str, Any]:
        """A tool-using model: a user message -> `add_task` with its text ("list my tasks" ->
        `list_tasks`); anything else -> text."""
        last = request["messages"][-1]
        if last.get("role") != "user":
            return {"text": "Done: added it."}
        content = last.get("content")
        if isinstance(content, str):
            text = content
        else:
            text = " ".join(p.get("text", "") for p in content or [] if isinstance(p, dict))
        if text == "list my tasks":
            return {"tool_calls": [{"name": "list_tasks", "arguments": {"status": "all"}}]}
        return {"tool_calls": [{"name": "add_task", "arguments": {"title": text[:200] or "task"}}]}

    # --- running -----------------------------------------------------------------------
    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._connection, self.host, self.port, backlog=4096, limit=_MAX_HEAD
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        # Handlers may be sleeping in a `hang`; do not wait for them.
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)
        if self._server is not None:
            await self._server.wait_closed()

    async def __aenter__(self) -> StubLLM:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def serve_forever(self) -> None:
        await self.start()
        assert self._server is not None
        async with self._server:
            await self._server.serve_forever()

    # --- HTTP ------------------------------------------------------------------------------
    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        try:
            while await self._exchange(reader, writer):
                pass
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError):
            pass
        except asyncio.CancelledError:
            # Only `stop()` cancels handlers. Ending normally: Python 3.11's start_server callback
            # logs a traceback for a handler task that ends cancelled.
            pass
        finally:
            self._handlers.discard(task)
            writer.close()

    async def _exchange(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        """Serve one request; False when the connection is to be closed."""
        head = await reader.readuntil(b"\r\n\r\n")
        request_line, *lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = await _read_chunked(reader)
        else:
            body = await reader.readexactly(int(headers.get("content-length") or 0))
        keep_alive = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
        path = target.split("?", 1)[0].rstrip("/")
        if method == "POST" and path.endswith("/chat/completions"):
            return await self._chat(writer, body, headers) and keep_alive
        if method == "GET" and path.endswith("/models"):
            models = {"object": "list", "data": [_model("stub-model")]}
            await _send_json(writer, 200, models)
        elif method == "PUT" and path.endswith("/_control"):
            self.latency_ms = float(orjson.loads(body or b"{}").get("latency_ms", self.latency_ms))
            await _send_json(writer, 200, {"latency_ms": self.latency_ms})
        else:
            await _send_json(writer, 404, _error(f"no route for {method} {path}", "not_found"))
        return keep_alive

    async def _chat(
        self, writer: asyncio.StreamWriter, body: bytes, headers: dict[str, str]
    ) -> bool:
        try:
            request = orjson.loads(body)
        except orjson.JSONDecodeError:
            request = None
        if not isinstance(request, dict) or not request.get("messages"):
            await _send_json(writer, 400, _error("expected a JSON body with messages", "invalid"))
            return True
        if self.record:
            self.requests.append(request)
            self.request_headers.append(headers)
        entry = self._script.popleft() if self._script else self.default_answer(request)
        if self.latency_ms:
            await asyncio.sleep(self.latency_ms / 1000)
        if "hang" in entry:
            await asyncio.sleep(entry["hang"])
        if entry.get("drop"):
            writer.transport.abort()
            return False
        if "status" in entry:
            status = entry["status"]
            error = entry.get("body") or _error(f"stub error {status}", "stub_error")
            await _send_json(writer, status, error, entry.get("headers"))
            return True
        model = request.get("model") or "stub-model"
        if request.get("stream"):
            usage = bool((request.get("stream_options") or {}).get("include_usage"))
            await _send_stream(writer, entry, model, usage)
        else:
            await _send_json(writer, 200, _completion(entry, model))
        return True


# --- response bodies ------------------------------------------------------------------------
def _model(name: str) -> dict[str, Any]:
    return {"id": name, "object": "model", "created": 0, "owned_by": "stub"}


def _error(message: str, kind: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": kind, "param": None, "code": kind}}


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


def _completion(entry: dict[str, Any], model: str) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": entry.get("text"), "refusal": None}
    finish = "stop"
    if "tool_calls" in entry:
        message["tool_calls"] = _tool_calls(entry)
        finish = "tool_calls"
    return {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
        "usage": _USAGE,
    }


def _chunks(entry: dict[str, Any], model: str, include_usage: bool) -> list[dict[str, Any]]:
    """The chat.completion.chunk sequence a real server sends, arguments split across deltas."""
    base = {
        "id": f"chatcmpl-{next(_ids)}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": model,
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

    out = [chunk({"role": "assistant", "content": ""})]
    text = entry.get("text") or ""
    out += [chunk({"content": text[i : i + 8]}) for i in range(0, len(text), 8)]
    if "tool_calls" in entry:
        for index, call in enumerate(_tool_calls(entry)):
            arguments = call["function"]["arguments"]
            first = {**call, "function": {"name": call["function"]["name"], "arguments": ""}}
            out.append(chunk({"tool_calls": [{"index": index, **first}]}))
            for start in range(0, len(arguments), 16):
                piece = {"arguments": arguments[start : start + 16]}
                out.append(chunk({"tool_calls": [{"index": index, "function": piece}]}))
        finish = "tool_calls"
    else:
        finish = "stop"
    out.append(chunk({}, finish))
    if include_usage:
        out.append({**base, "choices": [], "usage": _USAGE})
    return out


# --- HTTP/1.1 framing ------------------------------------------------------------------------
async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = bytearray()
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            await reader.readuntil(b"\r\n")  # no trailers expected
            return bytes(body)
        body += await reader.readexactly(size)
        await reader.readexactly(2)


def _head(status: int, headers: dict[str, str]) -> bytes:
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Unknown"
    lines = [f"HTTP/1.1 {status} {reason}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


async def _send_json(
    writer: asyncio.StreamWriter, status: int, body: Any, headers: dict[str, Any] | None = None
) -> None:
    payload = orjson.dumps(body)
    all_headers = {"content-type": "application/json", "content-length": str(len(payload))}
    all_headers.update({k.lower(): str(v) for k, v in (headers or {}).items()})
    writer.write(_head(status, all_headers) + payload)
    await writer.drain()


async def _send_stream(
    writer: asyncio.StreamWriter, entry: dict[str, Any], model: str, include_usage: bool
) -> None:
    headers = {
        "content-type": "text/event-stream; charset=utf-8",
        "cache-control": "no-cache",
        "transfer-encoding": "chunked",
    }
    writer.write(_head(200, headers))
    chunks = _chunks(entry, model, include_usage)
    if "stream_error" in entry:  # an error object after the first chunks, then the end
        chunks = [*chunks[:2], {"error": entry["stream_error"]}]
    events = [b"data: " + orjson.dumps(c) + b"\n\n" for c in chunks]
    if "stream_error" not in entry:
        events.append(b"data: [DONE]\n\n")
    for n, event in enumerate(events):
        if entry.get("cut_stream") and n == len(events) // 2:
            writer.transport.abort()  # the connection drops mid-stream
            return
        writer.write(b"%x\r\n%s\r\n" % (len(event), event))
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()


def main() -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.stub_llm",
        description="OpenAI-compatible Chat Completions stub",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    stub = StubLLM(latency_ms=args.latency_ms, host=args.host, port=args.port)
    stub.record = False  # a long benchmark must not grow memory
    try:
        import uvloop  # installed with uvicorn[standard]; the stub's CPU shares the bench machine
    except ImportError:
        run = asyncio.run
    else:
        run = uvloop.run
    with contextlib.suppress(KeyboardInterrupt):
        run(stub.serve_forever())


if __name__ == "__main__":
    main()
