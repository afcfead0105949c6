"""A thinner path for Chat Completions requests, behind the SDK's stock model adapter.

Profiling the chat turn showed about half of the service's CPU in the OpenAI client's request
preparation (`async_maybe_transform` walking every history message against the params
TypedDicts). The Agents SDK already builds a well-formed request, so this wrapper sends it with
`client.post(...)`, skipping only that transform; retries with backoff, error types,
timeouts, streaming and response parsing are the OpenAI client's own, unchanged.
"""

from __future__ import annotations

from typing import Any

from openai import AsyncOpenAI, AsyncStream, NotGiven, Omit
from openai.types.chat import ChatCompletion, ChatCompletionChunk

_OPTIONS = {"extra_headers": "headers", "extra_query": "params", "timeout": "timeout"}


class _LeanCompletions:
    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client

    async def create(self, **kwargs: Any) -> ChatCompletion | AsyncStream[ChatCompletionChunk]:
        options: dict[str, Any] = {}
        body: dict[str, Any] = {}
        for key, value in kwargs.items():
            if isinstance(value, (Omit, NotGiven)) or (value is None and key in _OPTIONS):
                continue
            if key in _OPTIONS:
                options[_OPTIONS[key]] = value
            elif key == "extra_body":
                body.update(value or {})
            else:
                body[key] = value
        stream = bool(body.get("stream"))
        return await self._client.post(  # type: ignore[call-overload,no-any-return]
            "/chat/completions",
            body=body,
            cast_to=ChatCompletion,
            options=options,  # type: ignore[arg-type]
            stream=stream,
            stream_cls=AsyncStream[ChatCompletionChunk],
        )


class _LeanChat:
    def __init__(self, client: AsyncOpenAI) -> None:
        self.completions = _LeanCompletions(client)


class LeanChatCompletionsClient:
    """Looks like `AsyncOpenAI` to the SDK; `chat.completions.create` takes the thin path."""

    def __init__(self, client: AsyncOpenAI) -> None:
        self._client = client
        self.chat = _LeanChat(client)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)
