"""The one Chat Completions model behind the Agents SDK's `Model` interface, plain and streamed.

Profiling showed the stock adapter stack (the SDK's converter plus the OpenAI client's request
and response machinery) as the largest share of a turn's CPU, and streamed turns paid for it
twice. For the shapes this service sends (system prompt, user/assistant text, function calls
and their outputs, function tools) this model builds the request itself, posts it with orjson
over the process's one aiohttp pool (`backend.core.http`), and turns the answer into the SDK's
output items:

- `get_response` reads one JSON answer;
- `stream_response` parses the SSE chunk stream as it arrives: text deltas go out at once,
  tool-call deltas are assembled by index, usage comes from the final chunk
  (`stream_options.include_usage`), and the SDK gets only the events it reads (text deltas,
  message starts, the completed response) instead of the full Responses event set.

Failures become `ProviderError`: an HTTP error, a cut connection, or an error object inside the
stream. Retries with backoff on 429/5xx/connection errors are bounded by LLM_MAX_RETRIES, and a
stream is retried only before its first byte (the turn's own timeout bounds the total).

Gemini: a tool call's `extra_content.google.thought_signature` is kept as the item's
`provider_data.thought_signature` and sent back on later requests to gemini-* models.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from agents import FunctionTool, Model, ModelResponse, ModelSettings
from agents.items import TResponseStreamEvent

from backend.agent.events import (
    call_item,
    completed,
    ids,
    message_item,
    message_started,
    text_delta,
    usage_of,
)
from backend.agent.items import text_of
from backend.core.errors import MAX_PROVIDER_MESSAGE, ProviderError, provider_error

_RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}
_MAX_ERROR_BODY = 16 * 1024


def to_messages(items: list[Any], gemini: bool) -> list[dict[str, Any]]:
    """Responses-style input items -> Chat Completions messages."""
    messages: list[dict[str, Any]] = []
    for item in items:
        kind = item.get("type")
        if kind == "function_call":
            call: dict[str, Any] = {
                "id": item["call_id"],
                "type": "function",
                "function": {"name": item["name"], "arguments": item.get("arguments") or "{}"},
            }
            signature = (item.get("provider_data") or {}).get("thought_signature")
            if gemini and signature:
                call["extra_content"] = {"google": {"thought_signature": signature}}
            last = messages[-1] if messages else None
            if last is not None and last["role"] == "assistant" and "tool_calls" in last:
                last["tool_calls"].append(call)
            elif (
                last is not None and last["role"] == "assistant" and last.get("content") is not None
            ):
                last["tool_calls"] = [call]
            else:
                messages.append({"role": "assistant", "content": None, "tool_calls": [call]})
        elif kind == "function_call_output":
            output = item.get("output")
            messages.append(
                {
                    "role": "tool",
                    "tool_call_id": item["call_id"],
                    "content": output if isinstance(output, str) else orjson.dumps(output).decode(),
                }
            )
        elif item.get("role") in ("user", "system", "developer"):
            messages.append({"role": item["role"], "content": text_of(item.get("content"))})
        elif item.get("role") == "assistant":
            messages.append({"role": "assistant", "content": text_of(item.get("content"))})
    return messages


def _settings_body(settings: ModelSettings) -> dict[str, Any]:
    body: dict[str, Any] = {}
    for name in ("temperature", "top_p", "frequency_penalty", "presence_penalty", "max_tokens"):
        value = getattr(settings, name)
        if value is not None:
            body[name] = value
    if isinstance(settings.tool_choice, str):
        body["tool_choice"] = settings.tool_choice
    if settings.parallel_tool_calls is not None:
        body["parallel_tool_calls"] = settings.parallel_tool_calls
    if isinstance(settings.extra_body, dict):
        body.update(settings.extra_body)
    body.update(settings.extra_args or {})
    return body


class _Call:
    """One tool call, assembled from its deltas."""

    __slots__ = ("arguments", "id", "name", "signature")

    def __init__(self) -> None:
        self.id = ""
        self.name = ""
        self.arguments: list[str] = []
        self.signature: str | None = None

    def add(self, delta: dict[str, Any]) -> None:
        if delta.get("id"):
            self.id = delta["id"]
        function = delta.get("function") or {}
        if function.get("name"):
            self.name = function["name"]
        if function.get("arguments"):
            self.arguments.append(function["arguments"])
        signature = _signature(delta)
        if signature:
            self.signature = signature

    def as_message(self) -> dict[str, Any]:
        call: dict[str, Any] = {
            "id": self.id,
            "function": {"name": self.name, "arguments": "".join(self.arguments)},
        }
        if self.signature:
            call["extra_content"] = {"google": {"thought_signature": self.signature}}
        return call


def _signature(call: dict[str, Any]) -> str | None:
    signature = ((call.get("extra_content") or {}).get("google") or {}).get("thought_signature")
    return signature if isinstance(signature, str) else None


class ChatCompletionsModel(Model):
    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str,
        http: aiohttp.ClientSession,
        max_retries: int = 2,
    ) -> None:
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.api_key = api_key
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.http = http
        self.max_retries = max_retries
        self.gemini = "gemini" in model.lower()
        self._tools_cache: tuple[tuple[int, ...], list[dict[str, Any]]] = ((), [])

    def _tools(self, tools: list[Any]) -> list[dict[str, Any]]:
        key = tuple(id(t) for t in tools)
        if self._tools_cache[0] != key:
            self._tools_cache = (
                key,
                [
                    {
                        "type": "function",
                        "function": {
                            "name": t.name,
                            "description": t.description,
                            "parameters": t.params_json_schema,
                        },
                    }
                    for t in tools
                    if isinstance(t, FunctionTool)
                ],
            )
        return self._tools_cache[1]

    def _body(
        self,
        system_instructions: str | None,
        input: Any,
        model_settings: ModelSettings,
        tools: list[Any],
        stream: bool,
    ) -> bytes:
        items = [{"role": "user", "content": input}] if isinstance(input, str) else input
        messages = to_messages(items, self.gemini)
        if system_instructions:
            messages.insert(0, {"role": "system", "content": system_instructions})
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        converted = self._tools(tools)
        if converted:
            body["tools"] = converted
        body.update(_settings_body(model_settings))
        if stream:
            body["stream"] = True
            body["stream_options"] = {"include_usage": True}
        return orjson.dumps(body)

    async def get_response(
        self,
        system_instructions: str | None,
        input: Any,
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: Any,
        **kwargs: Any,
    ) -> ModelResponse:
        payload = self._body(system_instructions, input, model_settings, tools, stream=False)
        response = await self._open(payload)
        try:
            raw = await response.read()
        except (aiohttp.ClientError, ConnectionError) as exc:
            raise self._connection_error("the answer was cut off", exc) from None
        finally:
            response.release()
        data: dict[str, Any] = orjson.loads(raw)
        choices = data.get("choices") or []
        message = (choices[0].get("message") or {}) if choices else {}
        calls = [
            {**call, "function": call.get("function") or {}}
            for call in message.get("tool_calls") or []
        ]
        usage = data.get("usage") or {}
        return ModelResponse(
            output=self._output(message.get("content") or "", calls, f"msg_{next(ids)}"),
            usage=usage_of(usage),
            response_id=None,
        )

    async def stream_response(  # type: ignore[override]
        self,
        system_instructions: str | None,
        input: Any,
        model_settings: ModelSettings,
        tools: list[Any],
        output_schema: Any,
        handoffs: list[Any],
        tracing: Any,
        **kwargs: Any,
    ) -> AsyncIterator[TResponseStreamEvent]:
        payload = self._body(system_instructions, input, model_settings, tools, stream=True)
        response = await self._open(payload)
        message_id = f"msg_{next(ids)}"
        seq = itertools.count()
        text: list[str] = []
        calls: dict[int, _Call] = {}
        usage: dict[str, Any] = {}
        finished = False
        try:
            async for line in response.content:
                if not line.startswith(b"data:"):
                    continue
                data = line[5:].strip()
                if data == b"[DONE]":
                    finished = True
                    break
                chunk = orjson.loads(data)
                if "error" in chunk:
                    raise provider_error(
                        _error_status(chunk["error"]),
                        chunk,
                        api_key=self.api_key,
                        model=self.model,
                    )
                usage = chunk.get("usage") or usage
                for choice in chunk.get("choices") or ():
                    if choice.get("finish_reason"):
                        finished = True
                    delta = choice.get("delta") or {}
                    content = delta.get("content")
                    if content:
                        if not text:
                            yield message_started(message_id, next(seq))
                        text.append(content)
                        yield text_delta(message_id, content, next(seq))
                    for call_delta in delta.get("tool_calls") or ():
                        index = call_delta.get("index", len(calls))
                        calls.setdefault(index, _Call()).add(call_delta)
        except (aiohttp.ClientError, ConnectionError, asyncio.IncompleteReadError) as exc:
            raise self._connection_error("the stream was cut off", exc) from None
        finally:
            response.release()
        if not finished:
            raise ProviderError(
                None, message="the stream ended without [DONE] or a finish reason", model=self.model
            )
        output = self._output(
            "".join(text), [calls[i].as_message() for i in sorted(calls)], message_id
        )
        yield completed(self.model, output, usage, next(seq))

    async def _open(self, payload: bytes) -> aiohttp.ClientResponse:
        """Send the request; a 2xx response whose body is still to be read. Retries (bounded)."""
        delay = 0.5
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                response = await self.http.post(self.url, data=payload, headers=self.headers)
            except (aiohttp.ClientError, ConnectionError) as exc:
                if last:
                    raise self._connection_error(f"could not reach {self.url}", exc) from None
            else:
                if response.status < 300:
                    return response
                status = response.status
                retry_after = response.headers.get("retry-after")
                if last or status not in _RETRY_STATUSES:
                    try:
                        body = await response.content.read(_MAX_ERROR_BODY)
                    except (aiohttp.ClientError, ConnectionError):
                        body = b""
                    finally:
                        response.release()
                    raise provider_error(
                        status,
                        body,
                        retry_after=retry_after,
                        api_key=self.api_key,
                        model=self.model,
                    )
                response.release()
                if retry_after and retry_after.isdigit():
                    delay = max(delay, min(float(retry_after), 10.0))
            await asyncio.sleep(delay)
            delay *= 2
        raise ProviderError(None, model=self.model)

    def _connection_error(self, what: str, exc: BaseException) -> ProviderError:
        said = str(exc).replace(self.api_key, "[API key]") if self.api_key else str(exc)
        message = f"{what}: {type(exc).__name__}" + (f": {said}" if said else "")
        return ProviderError(None, message=message[:MAX_PROVIDER_MESSAGE], model=self.model)

    def _output(self, content: str, calls: list[dict[str, Any]], message_id: str) -> list[Any]:
        output: list[Any] = []
        if content:
            output.append(message_item(content, message_id))
        for call in calls:
            function = call.get("function") or {}
            call_id = str(call.get("id") or f"call_{next(ids)}")
            if self.gemini and "__thought__" in call_id:
                call_id = call_id.split("__thought__")[0]
            arguments = function.get("arguments") or "{}"
            output.append(call_item(call_id, function.get("name", ""), arguments, _signature(call)))
        return output

    async def close(self) -> None:
        """The HTTP pool belongs to the process (`backend.core.http`), not to the model."""


def _error_status(error: Any) -> int:
    code = error.get("code") if isinstance(error, dict) else None
    return code if isinstance(code, int) and 400 <= code < 600 else 502
