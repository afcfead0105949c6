"""A lean Chat Completions model behind the Agents SDK's `Model` interface (non-streaming turns).

Profiling showed the stock adapter stack (the SDK's converter plus the OpenAI client's request
and response machinery) as the largest share of a turn's CPU. For the plain shapes this service
sends — system prompt, user/assistant text, function calls and their outputs, function tools —
this adapter builds the request itself, posts it with orjson over one shared aiohttp pool, and
turns the answer into the SDK's output items. (aiohttp, not httpx: httpcore's pool scans every
connection for every request, which at a few hundred concurrent turns costs more CPU than the
turns themselves.) Retries with backoff on 429/5xx/connection errors
stay bounded by LLM_MAX_RETRIES (the turn's own timeout bounds the total). Streaming turns go to
the stock `OpenAIChatCompletionsModel`, which already streams well.

Gemini: a tool call's `extra_content.google.thought_signature` is kept as the item's
`provider_data.thought_signature` and sent back on later requests to gemini-* models, as the SDK does.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import orjson
from agents import FunctionTool, Model, ModelResponse, ModelSettings, Usage
from agents.items import TResponseStreamEvent
from openai.types.responses import (
    ResponseFunctionToolCall,
    ResponseOutputMessage,
    ResponseOutputText,
)

from backend.agent.items import text_of

_ids = itertools.count(1)
_RETRY_STATUSES = {408, 409, 429, 500, 502, 503, 504}


class ProviderError(Exception):
    """The model provider failed; `status` is None for connection failures."""

    def __init__(self, status: int | None, retry_after: str | None = None) -> None:
        super().__init__(f"model provider error {status}")
        self.status = status
        self.retry_after = retry_after


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
                last is not None
                and last["role"] == "assistant"
                and last.get("content") is not None
                and not last.get("_closed")
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


class LeanChatCompletionsModel(Model):
    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str,
        http: aiohttp.ClientSession,
        streaming: Model,
        max_retries: int = 2,
    ) -> None:
        self.model = model
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.headers = {"Authorization": f"Bearer {api_key}", "Content-Type": "application/json"}
        self.http = http
        self.streaming = streaming
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
        items = [{"role": "user", "content": input}] if isinstance(input, str) else input
        messages = to_messages(items, self.gemini)
        if system_instructions:
            messages.insert(0, {"role": "system", "content": system_instructions})
        body: dict[str, Any] = {"model": self.model, "messages": messages}
        converted = self._tools(tools)
        if converted:
            body["tools"] = converted
        body.update(_settings_body(model_settings))
        data = await self._post(orjson.dumps(body))
        return self._response(data)

    async def _post(self, payload: bytes) -> dict[str, Any]:
        delay = 0.5
        for attempt in range(self.max_retries + 1):
            last = attempt == self.max_retries
            try:
                async with self.http.post(self.url, data=payload, headers=self.headers) as response:
                    status = response.status
                    retry_after = response.headers.get("retry-after")
                    raw = await response.read()
            except (aiohttp.ClientError, ConnectionError):
                if last:
                    raise ProviderError(None) from None
            else:
                if status < 300:
                    result: dict[str, Any] = orjson.loads(raw)
                    return result
                if last or status not in _RETRY_STATUSES:
                    raise ProviderError(status, retry_after)
                if retry_after and retry_after.isdigit():
                    delay = max(delay, min(float(retry_after), 10.0))
            await asyncio.sleep(delay)
            delay *= 2
        raise ProviderError(None)

    def _response(self, data: dict[str, Any]) -> ModelResponse:
        choices = data.get("choices") or []
        message = choices[0].get("message") or {} if choices else {}
        output: list[Any] = []
        content = message.get("content")
        if content:
            output.append(
                ResponseOutputMessage.model_construct(
                    id=f"msg_{next(_ids)}",
                    type="message",
                    role="assistant",
                    status="completed",
                    content=[
                        ResponseOutputText.model_construct(
                            type="output_text", text=content, annotations=[], logprobs=[]
                        )
                    ],
                )
            )
        for call in message.get("tool_calls") or []:
            function = call.get("function") or {}
            call_id = str(call.get("id") or f"call_{next(_ids)}")
            if self.gemini and "__thought__" in call_id:
                call_id = call_id.split("__thought__")[0]
            fields: dict[str, Any] = {
                "id": "__fake_id__",
                "call_id": call_id,
                "name": function.get("name", ""),
                "arguments": function.get("arguments") or "{}",
                "type": "function_call",
            }
            signature = ((call.get("extra_content") or {}).get("google") or {}).get(
                "thought_signature"
            )
            if signature:
                fields["provider_data"] = {"thought_signature": signature}
            output.append(ResponseFunctionToolCall(**fields))
        usage = data.get("usage") or {}
        return ModelResponse(
            output=output,
            usage=Usage(
                requests=1,
                input_tokens=usage.get("prompt_tokens") or 0,
                output_tokens=usage.get("completion_tokens") or 0,
                total_tokens=usage.get("total_tokens") or 0,
            ),
            response_id=None,
        )

    def stream_response(self, *args: Any, **kwargs: Any) -> AsyncIterator[TResponseStreamEvent]:
        return self.streaming.stream_response(*args, **kwargs)

    async def close(self) -> None:
        await self.http.close()
